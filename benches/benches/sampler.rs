//! `lmsi-sampler`: one decoding step of 32 paths over a 49,152-token vocabulary.
//!
//! Logits are LM-like (normal, standard deviation 2.5) and generated deterministically
//! from the crate's own Philox stream. Criterion's throughput is in rows: time per row is
//! the reported time divided by 32.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lmsi_sampler::{RowKey, SamplingParams, sample_batch, sequence_id, uniform};

const ROWS: usize = 32;
const VOCAB: usize = 49_152;

/// Normal(0, 2.5) logits by Box-Muller over `uniform`.
fn logits() -> Vec<f32> {
    (0..ROWS * VOCAB)
        .map(|i| {
            let (row, col) = ((i / VOCAB) as u64, 2 * (i % VOCAB) as u32);
            let u1 = 1.0 - uniform(9, row, col); // in (0, 1]: ln is finite
            let u2 = uniform(9, row, col + 1);
            2.5 * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

fn bench_sampler(c: &mut Criterion) {
    let logits = logits();
    let keys: Vec<RowKey> = (0..ROWS as u32)
        .map(|path| RowKey::new(sequence_id("bench", path), 17))
        .collect();
    let variants = [
        (
            "top_k40_t0.7",
            SamplingParams {
                temperature: 0.7,
                top_k: 40,
                top_p: 1.0,
                seed: 1,
            },
        ),
        (
            "top_p0.9_t0.7",
            SamplingParams {
                temperature: 0.7,
                top_k: 0,
                top_p: 0.9,
                seed: 1,
            },
        ),
        (
            "full_t1.0",
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 1,
            },
        ),
        ("greedy", SamplingParams::greedy()),
    ];
    let mut group = c.benchmark_group("sample_batch_32x49152");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, params) in variants {
        group.bench_function(name, |b| {
            b.iter(|| sample_batch(black_box(&logits), VOCAB, &params, &keys).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_sampler);
criterion_main!(benches);
