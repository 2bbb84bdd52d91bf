//! `lmsi-adamw`: one optimizer step over 135M parameters (the size of SmolLM2-135M), as 30
//! tensors of 4.5M elements, and the global gradient norm the trainer takes before it.
//!
//! Throughput is in bytes of memory traffic: a step reads the parameters, gradients and both
//! moments and writes the parameters and moments (7 × 4 bytes per parameter); the norm reads the
//! gradients (4 bytes per parameter). Criterion prints it in GiB/s.

use std::hint::black_box;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use lmsi_adamw::{AdamW, AdamWConfig, global_norm};

const TENSORS: usize = 30;
const SIZE: usize = 4_500_000;

/// Values in [-scale, scale), deterministic and cheap to make.
fn tensor(seed: usize, scale: f32) -> Vec<f32> {
    (0..SIZE)
        .map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 * scale - scale)
        .collect()
}

fn bench_adamw(c: &mut Criterion) {
    let mut params: Vec<Vec<f32>> = (0..TENSORS).map(|t| tensor(t, 0.05)).collect();
    let grads: Vec<Vec<f32>> = (0..TENSORS).map(|t| tensor(t + TENSORS, 1e-3)).collect();
    let grads: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    // Matrices are decayed, as the trainer does; alternate so both paths run.
    let decay: Vec<bool> = (0..TENSORS).map(|t| t % 3 != 0).collect();
    let mut opt = AdamW::new(AdamWConfig::default(), &vec![SIZE; TENSORS]);
    let elements = (TENSORS * SIZE) as u64;

    let mut group = c.benchmark_group("adamw_135m");
    // A step takes a large fraction of a second: flat sampling keeps the run short.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(elements * 7 * 4));
    group.bench_function("step", |b| {
        b.iter(|| {
            let mut p: Vec<&mut [f32]> = params.iter_mut().map(Vec::as_mut_slice).collect();
            opt.step(&mut p, black_box(&grads), &decay, 1e-4).unwrap();
        })
    });
    group.throughput(Throughput::Bytes(elements * 4));
    group.bench_function("global_norm", |b| b.iter(|| global_norm(black_box(&grads))));
    group.finish();
}

criterion_group!(benches, bench_adamw);
criterion_main!(benches);
