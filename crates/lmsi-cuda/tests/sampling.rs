//! `sample_rows` through the CPU shim against `lmsi_sampler::sample_row`: the same token for every
//! row (greedy, temperature, top-k, top-p and their combinations, ties, `-inf` logits, signed
//! zeros), under every fiber schedule, and the same errors for rows with NaN or `+inf` logits.
//!
//! Tokens must be identical. Log-probabilities go through `ln` and an `f64` sum whose order
//! differs: `1e-6 + 1e-6·|x|`.

mod common;

use common::{Kernels, Rng, assert_close, runners};
use lmsi_cuda::params::*;
use lmsi_sampler::{RowKey, SampleError, SamplingParams, sample_row, sequence_id};

/// Runs `sample_rows` on `rows` rows of `vocab` logits; returns (tokens, logprobs,
/// sampling_logprobs, status).
fn sample(
    runner: &dyn Kernels,
    params: &SamplingParams,
    logits: &[f32],
    vocab: usize,
    keys: &[RowKey],
) -> (Vec<u32>, Vec<f32>, Vec<f32>, Vec<i32>) {
    let rows = keys.len();
    let p = LmsiSampleParams {
        seed: params.seed,
        rows: rows as u32,
        vocab: vocab as u32,
        temperature: params.temperature,
        top_p: params.top_p,
        top_k: params.top_k.min(u32::MAX as usize) as u32,
    };
    let mut tokens = vec![u32::MAX; rows];
    let mut logprobs = vec![f32::NAN; rows];
    let mut sampling = vec![f32::NAN; rows];
    let mut status = vec![-1; rows];
    let sequences: Vec<u64> = keys.iter().map(|k| k.sequence).collect();
    let steps: Vec<u32> = keys.iter().map(|k| k.step).collect();
    runner
        .sample_rows(
            &p,
            &mut tokens,
            &mut logprobs,
            &mut sampling,
            &mut status,
            logits,
            &sequences,
            &steps,
        )
        .unwrap();
    (tokens, logprobs, sampling, status)
}

/// Rows of logits of several kinds.
fn rows(rng: &mut Rng, vocab: usize) -> Vec<Vec<f32>> {
    let smooth = rng.values(vocab, 6.0);
    // Quantised: many exact ties, which the index must break.
    let ties: Vec<f32> = rng
        .values(vocab, 3.0)
        .iter()
        .map(|v| (v * 2.0).round() / 2.0)
        .collect();
    // A few -inf, and signed zeros at the top.
    let mut holes = rng.values(vocab, 4.0);
    for i in (0..vocab).step_by(3) {
        holes[i] = f32::NEG_INFINITY;
    }
    holes[vocab - 1] = 5.0;
    let mut zeros = rng
        .values(vocab, 2.0)
        .iter()
        .map(|v| v - 3.0)
        .collect::<Vec<f32>>();
    for i in (0..vocab).step_by(5) {
        zeros[i] = if i % 2 == 0 { 0.0 } else { -0.0 };
    }
    // Peaked: one token far above the rest.
    let mut peaked = rng.values(vocab, 1.0);
    peaked[vocab / 2] = 30.0;
    vec![smooth, ties, holes, zeros, peaked]
}

fn params_grid() -> Vec<SamplingParams> {
    let base = SamplingParams {
        temperature: 0.7,
        top_k: 0,
        top_p: 1.0,
        seed: 1234,
    };
    vec![
        SamplingParams::greedy(),
        base,
        SamplingParams { top_k: 40, ..base },
        SamplingParams { top_k: 1, ..base },
        SamplingParams {
            top_p: 0.9,
            temperature: 1.2,
            ..base
        },
        SamplingParams {
            top_k: 50,
            top_p: 0.5,
            ..base
        },
        SamplingParams {
            top_p: 1e-6,
            ..base
        },
        SamplingParams {
            temperature: 1e-3,
            top_p: 0.99,
            seed: 7,
            ..base
        },
        SamplingParams {
            temperature: 100.0,
            top_k: 3000,
            seed: u64::MAX,
            ..base
        },
    ]
}

fn check(vocab: usize, seed: u64, params: &[SamplingParams]) {
    let mut rng = Rng::new(seed);
    let rows = rows(&mut rng, vocab);
    let logits: Vec<f32> = rows.concat();
    let keys: Vec<RowKey> = (0..rows.len())
        .map(|i| RowKey::new(sequence_id("q", i as u32), (i * 7) as u32))
        .collect();
    for p in params {
        let want: Vec<_> = rows
            .iter()
            .zip(&keys)
            .map(|(row, &key)| sample_row(row, p, key).unwrap())
            .collect();
        let want_tokens: Vec<u32> = want.iter().map(|s| s.token).collect();
        let want_lp: Vec<f32> = want.iter().map(|s| s.logprob).collect();
        let want_slp: Vec<f32> = want.iter().map(|s| s.sampling_logprob).collect();
        for runner in runners() {
            let (tokens, lp, slp, status) = sample(&*runner, p, &logits, vocab, &keys);
            let what = format!("vocab {vocab}, {p:?}, {:?}", runner.name());
            assert_eq!(tokens, want_tokens, "tokens, {what}");
            assert!(status.iter().all(|&s| s == LMSI_SAMPLE_OK as i32), "{what}");
            assert_close(
                &*runner,
                &format!("sample_rows logprob, {what}"),
                &lp,
                &want_lp,
                1e-6,
                1e-6,
            );
            assert_close(
                &*runner,
                &format!("sample_rows sampling logprob, {what}"),
                &slp,
                &want_slp,
                1e-6,
                1e-6,
            );
        }
    }
}

#[test]
fn small_vocabularies_draw_the_cpu_tokens() {
    for (vocab, seed) in [(7, 1), (100, 2), (1000, 3)] {
        check(vocab, seed, &params_grid());
    }
}

#[test]
fn a_large_vocabulary_draws_the_cpu_tokens() {
    let grid = params_grid();
    check(49_157, 4, &[grid[1], grid[2], grid[4], grid[5]]);
}

#[test]
fn a_one_token_vocabulary_always_draws_it() {
    for runner in runners() {
        for p in params_grid() {
            let (tokens, lp, slp, _) = sample(&*runner, &p, &[-3.0], 1, &[RowKey::new(1, 2)]);
            assert_eq!((tokens[0], lp[0], slp[0]), (0, 0.0, 0.0));
        }
    }
}

#[test]
fn many_keys_draw_the_cpu_tokens() {
    // The draw depends on (seed, sequence, step): 64 rows of one distribution, 64 keys.
    let mut rng = Rng::new(5);
    let row = rng.values(300, 3.0);
    let keys: Vec<RowKey> = (0..64)
        .map(|i| RowKey::new(i * 1_000_003, i as u32))
        .collect();
    let logits: Vec<f32> = keys.iter().flat_map(|_| row.iter().copied()).collect();
    let p = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.95,
        seed: 99,
    };
    let want: Vec<u32> = keys
        .iter()
        .map(|&k| sample_row(&row, &p, k).unwrap().token)
        .collect();
    for runner in runners() {
        let (tokens, ..) = sample(&*runner, &p, &logits, 300, &keys);
        assert_eq!(tokens, want);
    }
}

/// The error a row's status describes, as the CPU sampler words it for a single row.
fn as_error(status: i32, token: u32) -> Option<SampleError> {
    let index = token as usize;
    match status as u32 {
        LMSI_SAMPLE_OK => None,
        LMSI_SAMPLE_NAN => Some(SampleError::NanLogit { row: 0, index }),
        LMSI_SAMPLE_INF => Some(SampleError::InfiniteLogit { row: 0, index }),
        LMSI_SAMPLE_NO_FINITE => Some(SampleError::NoFiniteLogit { row: 0 }),
        other => panic!("unknown status {other}"),
    }
}

#[test]
fn bad_rows_report_what_the_cpu_sampler_reports() {
    let vocab = 600;
    let mut rng = Rng::new(6);
    let mut nan = rng.values(vocab, 1.0);
    nan[400] = f32::INFINITY;
    nan[321] = f32::NAN;
    let mut inf = rng.values(vocab, 1.0);
    inf[599] = f32::NAN;
    inf[17] = f32::INFINITY;
    let dead = vec![f32::NEG_INFINITY; vocab];
    let fine = rng.values(vocab, 1.0);
    let rows = [nan, inf, dead, fine];
    let logits = rows.concat();
    let keys: Vec<RowKey> = (0..4).map(|i| RowKey::new(i, 0)).collect();
    let p = SamplingParams::default();
    for runner in runners() {
        let (tokens, _, _, status) = sample(&*runner, &p, &logits, vocab, &keys);
        for (r, row) in rows.iter().enumerate() {
            let want = sample_row(row, &p, keys[r]).err();
            assert_eq!(as_error(status[r], tokens[r]), want, "row {r}");
        }
        assert_eq!(status[3], LMSI_SAMPLE_OK as i32);
    }
}
