//! `lmsi-adamw`: one whole trainer step over 135M parameters (the size of SmolLM2-135M), as 30
//! tensors of 4.5M elements in `HostParams`, and the global gradient norm alone.
//!
//! The step is `Trainer::step` with one micro-batch whose backward adds a fixed gradient into the
//! trainer's gradients, clipping at norm 1 (the fixed gradient's norm is about 6.7, so every step
//! clips) and AdamW. Throughput is in bytes of memory traffic per parameter: zeroing the gradient
//! writes 4; the backward reads the fixed gradient and reads and writes the gradient, 12; the norm
//! reads the gradient, 4; clipping reads and writes it, 8; the update reads the parameter, gradient
//! and both moments and writes the parameter and moments, 28: 56 bytes per parameter in all. The
//! norm alone reads the gradients, 4 bytes per parameter. Criterion prints both in GiB/s.

use std::hint::black_box;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use lmsi_adamw::{
    AdamWConfig, HostParams, LrSchedule, TensorInfo, Trainer, TrainerConfig, global_norm,
};
use rayon::prelude::*;

const TENSORS: usize = 30;
const SIZE: usize = 4_500_000;
/// Elements per parallel work item of the backward's add, as the crate's own operations split.
const CHUNK: usize = 1 << 16;

/// Values in [-scale, scale), deterministic and cheap to make.
fn tensor(seed: usize, scale: f32) -> Vec<f32> {
    (0..SIZE)
        .map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 * scale - scale)
        .collect()
}

fn bench_adamw(c: &mut Criterion) {
    // Matrices are decayed, as the trainer does; alternate so both paths run.
    let mut model = HostParams::new(
        (0..TENSORS)
            .map(|t| {
                let info = TensorInfo::new(format!("t{t}"), vec![SIZE], t % 3 != 0);
                (info, tensor(t, 0.05))
            })
            .collect(),
    )
    .unwrap();
    let fixed: Vec<Vec<f32>> = (0..TENSORS).map(|t| tensor(t + TENSORS, 1e-3)).collect();
    let config = TrainerConfig {
        adamw: AdamWConfig::default(),
        schedule: LrSchedule::constant(1e-4),
        max_grad_norm: Some(1.0),
        decay_all: false,
    };
    let mut trainer = Trainer::new(&model, config).unwrap();
    let elements = (TENSORS * SIZE) as u64;

    let mut group = c.benchmark_group("adamw_135m");
    // A step takes a large fraction of a second: flat sampling keeps the run short.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(elements * 56));
    group.bench_function("step", |b| {
        b.iter(|| {
            trainer
                .step(&mut model, [black_box(&fixed)], |_, fixed, grads| {
                    for (g, f) in grads.iter_mut().zip(fixed) {
                        g.par_chunks_mut(CHUNK)
                            .zip(f.par_chunks(CHUNK))
                            .for_each(|(g, f)| g.iter_mut().zip(f).for_each(|(g, f)| *g += f));
                    }
                    Ok(0.0)
                })
                .unwrap()
        })
    });
    let grads: Vec<&[f32]> = fixed.iter().map(Vec::as_slice).collect();
    group.throughput(Throughput::Bytes(elements * 4));
    group.bench_function("global_norm", |b| b.iter(|| global_norm(black_box(&grads))));
    group.finish();
}

criterion_group!(benches, bench_adamw);
criterion_main!(benches);
