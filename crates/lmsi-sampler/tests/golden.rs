//! Draws pinned by an independent implementation of the crate docs' algorithm (a Python
//! transcription with emulated `f32` arithmetic and exact integers, written from the docs
//! alone). Any change here changes which paths every user and the CUDA kernel sample.

use lmsi_sampler::{RowKey, SamplingParams, canonical_exp, sample_row, uniform};

const VOCAB: usize = 1000;

/// Row `r`: `-inf` at multiples of 11, a tie value 1.0 at other multiples of 7, otherwise
/// `uniform(5, r, i) · 16 - 8`.
fn row(r: u64) -> Vec<f32> {
    (0..VOCAB)
        .map(|i| match i {
            i if i % 11 == 0 => f32::NEG_INFINITY,
            i if i % 7 == 0 => 1.0,
            i => uniform(5, r, i as u32) * 16.0 - 8.0,
        })
        .collect()
}

/// `(temperature, top_k, top_p)`, tokens for steps 0..8 of sequence `1000 + case` with
/// seed 77, and their sampling log-probs (to 5 decimals).
#[allow(clippy::type_complexity)]
const GOLDEN: [((f32, usize, f32), [u32; 8], [f32; 8]); 7] = [
    (
        (0.7, 40, 1.0),
        [395, 648, 778, 915, 456, 648, 599, 648],
        [
            -3.59032, -3.54591, -3.70941, -3.33949, -3.64022, -3.54591, -4.03439, -3.54591,
        ],
    ),
    (
        (1.0, 0, 0.9),
        [51, 796, 904, 111, 439, 365, 355, 184],
        [
            -4.04913, -5.76184, -4.21909, -5.79568, -4.41884, -4.14309, -4.19373, -4.27334,
        ],
    ),
    (
        (1.3, 0, 1.0),
        [768, 453, 901, 977, 680, 947, 829, 624],
        [
            -5.50157, -4.53094, -4.32246, -5.14546, -4.48335, -7.72740, -4.94061, -4.47939,
        ],
    ),
    (
        (0.5, 100, 0.5),
        [610, 410, 410, 118, 926, 870, 410, 118],
        [
            -3.06671, -2.74005, -2.74005, -2.95192, -2.62510, -3.13486, -2.74005, -2.95192,
        ],
    ),
    (
        (2.0, 5, 0.95),
        [272, 360, 360, 779, 381, 381, 360, 381],
        [
            -1.61296, -1.60138, -1.60138, -1.60932, -1.62101, -1.62101, -1.60138, -1.62101,
        ],
    ),
    ((0.0, 0, 1.0), [145; 8], [0.0; 8]),
    (
        (0.9, 0, 0.3),
        [95, 141, 822, 923, 174, 856, 856, 94],
        [
            -2.81359, -2.75148, -2.75622, -2.86818, -2.97650, -2.93422, -2.93422, -3.01817,
        ],
    ),
];

#[test]
fn draws_match_the_independent_implementation() {
    for (case, ((temperature, top_k, top_p), tokens, logprobs)) in GOLDEN.into_iter().enumerate() {
        let logits = row(case as u64);
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 77,
        };
        for step in 0..8 {
            let s = sample_row(&logits, &params, RowKey::new(1000 + case as u64, step)).unwrap();
            let i = step as usize;
            assert_eq!(s.token, tokens[i], "case {case} step {step}");
            assert!(
                (s.sampling_logprob - logprobs[i]).abs() < 1e-5,
                "case {case} step {step}"
            );
        }
    }
}

/// `canonical_exp` bits from the same independent implementation.
#[test]
fn exponentials_match_the_independent_implementation() {
    let golden: [(f32, u32); 10] = [
        (-1e-8, 0x3f80_0000),
        (-0.1, 0x3f67_a36d),
        (-0.346_573_6, 0x3f35_04f3),
        (-0.5, 0x3f1b_4598),
        (-1.0, 0x3ebc_5ab2),
        (-2.5, 0x3da8_1c2e),
        (-10.0, 0x383e_6bce),
        (-27.7, 0x2b83_5b52),
        (-50.0, 0x1b69_2beb),
        (-85.9, 0x0186_98a0),
    ];
    for (x, bits) in golden {
        assert_eq!(canonical_exp(x).to_bits(), bits, "e^{x}");
    }
}
