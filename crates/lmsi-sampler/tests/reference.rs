//! The fast sampler against a direct transcription of the crate docs' algorithm (full
//! sort, no staging, no scratch buffers): identical tokens and sampling log-probs.

use lmsi_sampler::{
    RowKey, SampleError, SamplingParams, WEIGHT_BITS, canonical_exp, log_softmax_at, random_u64,
    sample_batch, sample_row,
};
use proptest::prelude::*;

/// What the reference decides for one row.
#[derive(Debug)]
struct Expected {
    token: u32,
    sampling_logprob: f32,
    /// The kept set `S`, ascending (only the token for greedy).
    kept: Vec<u32>,
}

fn reference(
    logits: &[f32],
    params: &SamplingParams,
    key: RowKey,
) -> Result<Expected, SampleError> {
    if let Some(index) = logits.iter().position(|l| l.is_nan()) {
        return Err(SampleError::NanLogit { row: 0, index });
    }
    if let Some(index) = logits.iter().position(|&l| l == f32::INFINITY) {
        return Err(SampleError::InfiniteLogit { row: 0, index });
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return Err(SampleError::NoFiniteLogit { row: 0 });
    }
    if params.temperature == 0.0 {
        let token = logits.iter().position(|&l| l == max).unwrap() as u32;
        return Ok(Expected {
            token,
            sampling_logprob: 0.0,
            kept: vec![token],
        });
    }
    // Rank order: logit descending (partial_cmp: -0.0 == 0.0), then index ascending.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
    let inv = 1.0 / params.temperature;
    let weight = |i: usize| {
        let e = f64::from(canonical_exp((logits[i] - max) * inv));
        (e * (1u64 << WEIGHT_BITS) as f64).round_ties_even() as u64
    };
    if params.top_k > 0 && params.top_k < logits.len() {
        order.truncate(params.top_k);
    }
    if params.top_p < 1.0 {
        let total: u128 = order.iter().map(|&i| u128::from(weight(i))).sum();
        let need = (f64::from(params.top_p) * 2f64.powi(32)).ceil() as u128 * total;
        let mut cum = 0u128;
        let n = order.iter().position(|&i| {
            cum += u128::from(weight(i));
            cum << 32 >= need
        });
        order.truncate(n.unwrap() + 1);
    }
    order.sort_unstable();
    let total: u64 = order.iter().map(|&i| weight(i)).sum();
    let bits = random_u64(params.seed, key.sequence, key.step);
    let target = ((u128::from(bits) * u128::from(total)) >> 64) as u64;
    let mut cum = 0;
    let token = *order
        .iter()
        .find(|&&i| {
            cum += weight(i);
            cum > target
        })
        .unwrap();
    Ok(Expected {
        token: token as u32,
        sampling_logprob: (weight(token) as f64 / total as f64).ln() as f32,
        kept: order.iter().map(|&i| i as u32).collect(),
    })
}

fn check_row(logits: &[f32], params: &SamplingParams, key: RowKey) -> Result<(), TestCaseError> {
    let got = sample_row(logits, params, key);
    match reference(logits, params, key) {
        Err(e) => prop_assert_eq!(got, Err(e)),
        Ok(expected) => {
            let got = got.unwrap();
            prop_assert_eq!(got.token, expected.token);
            prop_assert_eq!(
                got.sampling_logprob.to_bits(),
                expected.sampling_logprob.to_bits()
            );
            prop_assert!(expected.kept.binary_search(&got.token).is_ok());
            prop_assert!(got.logprob <= 0.0 && got.sampling_logprob <= 0.0);
            prop_assert!(got.logprob.is_finite() && got.sampling_logprob.is_finite());
            prop_assert_eq!(got.logprob, log_softmax_at(logits, got.token));
        }
    }
    Ok(())
}

/// Logits with everything that matters: ties (including -0.0 vs 0.0), -inf, huge and
/// tiny magnitudes, ordinary spreads.
fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -30.0f32..30.0,
        2 => prop::sample::select(vec![-1.0f32, 0.0, -0.0, 0.5, 2.0]),
        1 => Just(f32::NEG_INFINITY),
        1 => prop::sample::select(vec![f32::MAX, -f32::MAX, 1e-40, -1e-40, f32::MIN_POSITIVE]),
    ]
}

fn params(max_k: usize) -> impl Strategy<Value = SamplingParams> {
    let temperature = prop_oneof![
        1 => Just(0.0f32),
        6 => 0.01f32..5.0,
        1 => prop::sample::select(vec![f32::MIN_POSITIVE, 1e-20, 1e20, 1.0 / f32::MIN_POSITIVE]),
    ];
    let top_p = prop_oneof![1 => Just(1.0f32), 3 => 1e-6f32..1.0, 1 => Just(1e-30f32)];
    (temperature, 0..max_k, top_p, any::<u64>()).prop_map(|(temperature, top_k, top_p, seed)| {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
        }
    })
}

fn key() -> impl Strategy<Value = RowKey> {
    (any::<u64>(), any::<u32>()).prop_map(|(sequence, step)| RowKey { sequence, step })
}

proptest! {
    #[test]
    fn small_rows_match_the_reference(
        logits in prop::collection::vec(logit(), 1..300),
        params in params(320),
        key in key(),
    ) {
        check_row(&logits, &params, key)?;
    }

    #[test]
    fn any_finite_logits_never_fail(
        logits in prop::collection::vec(-f32::MAX..f32::MAX, 1..200),
        params in params(220),
        key in key(),
    ) {
        check_row(&logits, &params, key)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Rows large enough for several nucleus stages and both ways of walking the kept set.
    #[test]
    fn large_rows_match_the_reference(
        spread in 0.5f32..40.0,
        vocab in 2000usize..6000,
        params in params(6500),
        seed in any::<u64>(),
        key in key(),
    ) {
        let logits: Vec<f32> = (0..vocab)
            .map(|i| {
                let u = lmsi_sampler::uniform(seed, i as u64, 0);
                // A few distinct levels give ties, the rest a smooth spread.
                if i % 5 == 0 { (u * 4.0).floor() } else { u * spread }
            })
            .collect();
        check_row(&logits, &params, key)?;
    }

    #[test]
    fn batches_match_rows_whatever_the_composition(
        rows in prop::collection::vec(prop::collection::vec(logit(), 37), 1..9),
        params in params(40),
        keys in prop::collection::vec(key(), 9),
    ) {
        let keys = &keys[..rows.len()];
        let flat: Vec<f32> = rows.concat();
        let batch = sample_batch(&flat, 37, &params, keys);
        let singles: Vec<_> = rows.iter().zip(keys).map(|(r, &k)| sample_row(r, &params, k)).collect();
        match singles.iter().position(Result::is_err) {
            Some(row) => {
                let expected = match singles[row].clone().unwrap_err() {
                    SampleError::NanLogit { index, .. } => SampleError::NanLogit { row, index },
                    SampleError::InfiniteLogit { index, .. } => SampleError::InfiniteLogit { row, index },
                    SampleError::NoFiniteLogit { .. } => SampleError::NoFiniteLogit { row },
                    other => other,
                };
                prop_assert_eq!(batch, Err(expected));
            }
            None => {
                let singles: Vec<_> = singles.into_iter().map(Result::unwrap).collect();
                prop_assert_eq!(batch.unwrap(), singles);
            }
        }
    }
}
