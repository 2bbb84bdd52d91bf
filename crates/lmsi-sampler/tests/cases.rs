//! Edge cases of the public API, one behaviour per test.

use lmsi_sampler::{
    MAX_VOCAB, RowKey, SampleError, Sampled, SamplingParams, log_softmax_at, sample_batch,
    sample_row, sequence_id,
};

const NEG_INF: f32 = f32::NEG_INFINITY;

fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        seed: 99,
    }
}

fn draw(logits: &[f32], params: &SamplingParams, step: u32) -> Sampled {
    sample_row(logits, params, RowKey::new(sequence_id("case", 0), step)).unwrap()
}

fn tokens(logits: &[f32], params: &SamplingParams, steps: u32) -> Vec<u32> {
    (0..steps)
        .map(|step| draw(logits, params, step).token)
        .collect()
}

#[test]
fn greedy_takes_the_lowest_index_among_ties() {
    let g = SamplingParams::greedy();
    assert_eq!(draw(&[1.0, 3.0, 2.0, 3.0], &g, 0).token, 1);
    assert_eq!(draw(&[-0.0, 0.0, -1.0], &g, 0).token, 0);
    assert_eq!(draw(&[0.0, -0.0, -1.0], &g, 0).token, 0);
    assert_eq!(draw(&[NEG_INF, NEG_INF, -7.0, NEG_INF], &g, 0).token, 2);
}

#[test]
fn greedy_log_probs() {
    let logits = [0.5, 2.0, -1.0];
    let s = draw(&logits, &SamplingParams::greedy(), 0);
    assert_eq!(s.sampling_logprob, 0.0);
    assert_eq!(s.logprob, log_softmax_at(&logits, 1));
    assert!(s.logprob < 0.0);
}

#[test]
fn greedy_ignores_top_k_top_p_and_the_key() {
    let logits = [0.3, 0.1, 0.9, 0.8];
    for top_k in [0, 1, 2, 10] {
        for top_p in [1e-6, 0.5, 1.0] {
            let p = SamplingParams {
                seed: u64::from(top_k as u32),
                ..params(0.0, top_k, top_p)
            };
            assert!(tokens(&logits, &p, 20).iter().all(|&t| t == 2));
        }
    }
}

#[test]
fn top_k_one_is_the_argmax() {
    let logits = [0.0, 1.0, 5.0, 5.0, 4.99, NEG_INF];
    for temperature in [0.1, 1.0, 100.0] {
        let p = params(temperature, 1, 1.0);
        let all = tokens(&logits, &p, 200);
        assert!(all.iter().all(|&t| t == 2), "T = {temperature}");
        assert!(draw(&logits, &p, 0).sampling_logprob == 0.0);
    }
}

#[test]
fn top_k_at_least_vocab_is_no_limit() {
    let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
    let unlimited = tokens(&logits, &params(1.3, 0, 1.0), 300);
    assert_eq!(tokens(&logits, &params(1.3, 50, 1.0), 300), unlimited);
    assert_eq!(tokens(&logits, &params(1.3, 5000, 1.0), 300), unlimited);
    assert_ne!(tokens(&logits, &params(1.3, 49, 1.0), 300), unlimited);
}

#[test]
fn top_k_keeps_the_k_best_and_breaks_ties_by_index() {
    // Three tokens tie at 2.0: top-3 is the 3.0 and the two lower-indexed 2.0s (1 and 4).
    let logits = [0.5, 2.0, 3.0, -1.0, 2.0, 1.0, 2.0];
    let seen: std::collections::BTreeSet<u32> = tokens(&logits, &params(5.0, 3, 1.0), 2000)
        .into_iter()
        .collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2, 4]);
}

#[test]
fn tiny_top_p_is_the_argmax() {
    let logits = [0.2, 1.1, 1.1, 0.9, -3.0];
    for p in [
        params(1.0, 0, 1e-6),
        params(3.0, 4, 0.01),
        params(1.0, 0, 1e-30),
    ] {
        assert!(tokens(&logits, &p, 300).iter().all(|&t| t == 1), "{p:?}");
        assert_eq!(draw(&logits, &p, 0).sampling_logprob, 0.0);
    }
}

#[test]
fn top_p_keeps_the_smallest_sufficient_prefix() {
    // Probabilities 0.5, 0.25, 0.125, 0.125 at temperature 1.
    let ln = |p: f32| p.ln();
    let logits = [ln(0.125), ln(0.5), ln(0.125), ln(0.25)];
    let kept = |top_p: f32| -> Vec<u32> {
        let mut seen: Vec<u32> = tokens(&logits, &params(1.0, 0, top_p), 2000);
        seen.sort_unstable();
        seen.dedup();
        seen
    };
    assert_eq!(kept(0.4), [1]);
    assert_eq!(kept(0.7), [1, 3]);
    // 0.875 needs the first 0.125 in rank order: the lower index, 0.
    assert_eq!(kept(0.8), [0, 1, 3]);
    assert_eq!(kept(0.95), [0, 1, 2, 3]);
}

#[test]
fn top_p_reached_exactly_is_enough() {
    // Equal logits weigh exactly the same, so 2 of 4 hold exactly half of the mass.
    let logits = [1.0, 1.0, 1.0, 1.0];
    let mut seen = tokens(&logits, &params(1.0, 0, 0.5), 1000);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [0, 1]);
    let mut seen = tokens(&logits, &params(1.0, 0, 0.75), 1000);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [0, 1, 2]);
}

#[test]
fn minus_infinity_is_never_drawn() {
    let logits = [NEG_INF, 0.0, NEG_INF, -1.0, NEG_INF];
    for p in [
        params(50.0, 0, 1.0),
        params(50.0, 4, 1.0),
        params(50.0, 0, 0.999),
    ] {
        let all = tokens(&logits, &p, 2000);
        assert!(all.iter().all(|&t| t == 1 || t == 3), "{p:?}");
        assert!(all.contains(&3));
    }
    // More candidates than finite logits: top-k may hold -inf, but they weigh nothing.
    let all = tokens(&[NEG_INF, 2.0, NEG_INF], &params(1.0, 2, 1.0), 500);
    assert!(all.iter().all(|&t| t == 1));
}

#[test]
fn vocabulary_of_one() {
    for p in [
        SamplingParams::greedy(),
        params(0.7, 40, 0.9),
        params(2.0, 0, 1.0),
    ] {
        let s = draw(&[-4.0], &p, 3);
        assert_eq!(
            s,
            Sampled {
                token: 0,
                logprob: 0.0,
                sampling_logprob: 0.0
            }
        );
    }
}

#[test]
fn the_same_key_gives_the_same_token() {
    let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
    let p = params(1.0, 0, 1.0);
    let once = tokens(&logits, &p, 100);
    assert_eq!(once, tokens(&logits, &p, 100));
    let distinct: std::collections::HashSet<_> = once.iter().collect();
    assert!(distinct.len() > 30, "steps must give different draws");
    let other_seed = tokens(&logits, &SamplingParams { seed: 100, ..p }, 100);
    assert_ne!(once, other_seed);
}

#[test]
fn batch_rows_do_not_depend_on_their_neighbours() {
    let vocab = 64;
    let row = |r: usize| -> Vec<f32> {
        (0..vocab)
            .map(|i| ((i * (r + 3)) % 17) as f32 * 0.2)
            .collect()
    };
    let key = |r: usize| RowKey::new(sequence_id("batch", r as u32), 5);
    let p = params(0.9, 10, 0.95);
    let alone: Vec<Sampled> = (0..6)
        .map(|r| sample_row(&row(r), &p, key(r)).unwrap())
        .collect();
    for subset in [
        vec![0, 1, 2, 3, 4, 5],
        vec![5, 3, 1],
        vec![4],
        vec![2, 2, 0],
    ] {
        let logits: Vec<f32> = subset.iter().flat_map(|&r| row(r)).collect();
        let keys: Vec<RowKey> = subset.iter().map(|&r| key(r)).collect();
        let batch = sample_batch(&logits, vocab, &p, &keys).unwrap();
        let expected: Vec<Sampled> = subset.iter().map(|&r| alone[r]).collect();
        assert_eq!(batch, expected, "{subset:?}");
    }
}

#[test]
fn bad_logits_name_their_row() {
    let vocab = 3;
    let mut logits = vec![0.0f32; 4 * vocab];
    let keys = [RowKey::new(0, 0); 4];
    let p = SamplingParams::default();
    logits[2 * vocab + 1] = f32::NAN;
    logits[3 * vocab] = f32::NAN;
    assert_eq!(
        sample_batch(&logits, vocab, &p, &keys),
        Err(SampleError::NanLogit { row: 2, index: 1 })
    );
    logits[vocab + 2] = f32::INFINITY;
    assert_eq!(
        sample_batch(&logits, vocab, &p, &keys),
        Err(SampleError::InfiniteLogit { row: 1, index: 2 })
    );
    logits[..vocab].fill(NEG_INF);
    assert_eq!(
        sample_batch(&logits, vocab, &p, &keys),
        Err(SampleError::NoFiniteLogit { row: 0 })
    );
    assert_eq!(
        sample_row(&[1.0, f32::NAN], &p, keys[0]),
        Err(SampleError::NanLogit { row: 0, index: 1 })
    );
    // Greedy checks too.
    assert_eq!(
        sample_row(&[f32::NAN], &SamplingParams::greedy(), keys[0]),
        Err(SampleError::NanLogit { row: 0, index: 0 })
    );
}

#[test]
fn shape_and_parameter_errors() {
    let p = SamplingParams::default();
    let key = RowKey::new(1, 1);
    assert_eq!(
        sample_batch(&[0.0; 7], 3, &p, &[key, key]),
        Err(SampleError::Shape {
            len: 7,
            rows: 2,
            vocab: 3
        })
    );
    assert_eq!(sample_batch(&[], 0, &p, &[]), Err(SampleError::EmptyVocab));
    assert_eq!(sample_row(&[], &p, key), Err(SampleError::EmptyVocab));
    assert_eq!(
        sample_batch(&[], MAX_VOCAB + 1, &p, &[]),
        Err(SampleError::VocabTooLarge {
            vocab: MAX_VOCAB + 1,
            max: MAX_VOCAB
        })
    );
    assert_eq!(sample_batch(&[], 5, &p, &[]), Ok(vec![]));
    let bad = SamplingParams { top_p: 0.0, ..p };
    assert!(matches!(
        sample_row(&[1.0], &bad, key),
        Err(SampleError::InvalidParams(_))
    ));
    assert!(matches!(
        sample_batch(&[1.0], 1, &bad, &[key]),
        Err(SampleError::InvalidParams(_))
    ));
}

#[test]
fn extreme_temperatures() {
    let logits = [1.0, 1.5, 0.5, NEG_INF];
    // Tiny: every non-max token's weight underflows to 0.
    let cold = params(f32::MIN_POSITIVE, 0, 1.0);
    assert!(tokens(&logits, &cold, 200).iter().all(|&t| t == 1));
    // Huge: uniform over the finite logits.
    let hot = params(1.0 / f32::MIN_POSITIVE, 0, 1.0);
    let all = tokens(&logits, &hot, 3000);
    for t in 0..3 {
        let n = all.iter().filter(|&&x| x == t).count();
        assert!((850..1150).contains(&n), "token {t}: {n}");
    }
    assert!((draw(&logits, &hot, 0).sampling_logprob - (1.0f32 / 3.0).ln()).abs() < 1e-6);
    assert!(!all.contains(&3));
}
