//! `cargo xtask bench train`: training throughput (forward + backward + lmsi-adamw's trainer step:
//! the gradient norm, clipping and AdamW) on the CPU.
//!
//! Two models: SmolLM2-135M-Instruct (the real model, see `lmsi_benches::model_dir`) and the embedded
//! seed model (`assets/seed-model`). Batches of 8 sequences of 256 tokens (loss on every
//! token), 2 warm-up steps then 3 timed steps. Prints tokens/s and achieved GFLOP/s counted as
//! 6 × parameters × tokens per second, against the machine's f32 GEMM peak measured in the same run.
//!
//! `LMSI_BENCH_DEVICE=cuda` (with the crate's `cuda` feature) runs it on GPU 0 instead (no CPU peak
//! to compare with), with the matrix products at `LMSI_BENCH_DTYPE` (`f32`, the default, or `bf16`:
//! bf16 operands, f32 master weights), and also prints the TFLOP/s so counted.

use std::time::Instant;

use lmsi_adamw::{AdamWConfig, LrSchedule, Trainer, TrainerConfig};
use lmsi_benches::{
    Device, cpu_dtype_refused, device, dtype, gemm_peak_gflops, model_dir, result, seed_model_dir,
};
use lmsi_transformer::{Backend, CpuBackend, Model, TrainSequence};

const BATCH: usize = 8;
const SEQ_LEN: usize = 256;

fn main() {
    // As the `lmsi` program does, so that these numbers are what it gets.
    lmsi::allocator::keep_freed_memory();
    match device() {
        Device::Cpu => {
            if let Some(why) = cpu_dtype_refused() {
                eprintln!("train benchmark skipped: {why}");
                return;
            }
            let peak = gemm_peak_gflops();
            let threads = rayon::current_num_threads();
            println!(
                "train: batch {BATCH} x {SEQ_LEN} tokens, {threads} threads; f32 GEMM peak {peak:.1} GFLOP/s"
            );
            models(CpuBackend::new(), Some(peak));
        }
        Device::Cuda => gpu(),
    }
}

/// The benchmark on GPU 0, or why it cannot run (no GPU, or a build without `--features cuda`).
fn gpu() {
    match lmsi_benches::gpu() {
        Ok(gpu) => {
            println!(
                "train: batch {BATCH} x {SEQ_LEN} tokens, on {}",
                gpu.describe()
            );
            models(gpu, None);
        }
        Err(e) => eprintln!("train benchmark skipped: no usable GPU: {e}"),
    }
}

/// Both models on `backend`, those that are there.
fn models<B: Backend + Clone>(backend: B, peak: Option<f64>) {
    match model_dir() {
        Some(dir) => bench(
            "SmolLM2-135M-Instruct",
            "smollm2",
            Model::load_for_training(&dir, backend.clone()).unwrap(),
            peak,
        ),
        None => eprintln!(
            "SmolLM2 skipped: no model (set LMSI_BENCH_MODEL or run shared/tools/fetch-smollm2.sh)"
        ),
    }
    match seed_model_dir() {
        Some(dir) => bench(
            "the seed model",
            "seed",
            Model::load_for_training(&dir, backend).unwrap(),
            peak,
        ),
        None => {
            eprintln!("seed model skipped: assets/seed-model is not there (cargo xtask seed-model)")
        }
    }
}

/// One model's training steps; `key` names it in the result names.
fn bench<B: Backend>(name: &str, key: &str, mut model: Model<B>, peak: Option<f64>) {
    let vocab = model.config().vocab_size as u64;
    let batch: Vec<TrainSequence> = (0..BATCH as u64)
        .map(|s| {
            let tokens = (0..SEQ_LEN as u64)
                .map(|i| (lmsi_sampler::random_u64(7, s, i as u32) % vocab) as u32)
                .collect();
            TrainSequence::completion(tokens, 1)
        })
        .collect();
    let tokens = BATCH * (SEQ_LEN - 1);
    let params = model.config().parameter_count() as f64;
    let config = TrainerConfig {
        adamw: AdamWConfig::default(),
        schedule: LrSchedule::constant(1e-5),
        max_grad_norm: Some(1.0),
        decay_all: false,
    };
    let mut trainer = Trainer::new(&model, config).unwrap();
    let mut times = Vec::new();
    for step in 1..=5u64 {
        let start = Instant::now();
        trainer
            .step(&mut model, [&batch], |model, batch, grads| {
                Ok(model
                    .loss_and_grads(batch, grads, 1.0 / tokens as f32, false)?
                    .loss)
            })
            .unwrap();
        // A device may still be running the step: reading a parameter back waits for it all.
        let be = model.backend();
        let last = model.params().tensors()[0];
        be.download(&be.copy_range(last, 0, 1).unwrap()).unwrap();
        if step > 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let seconds = times.iter().sum::<f64>() / times.len() as f64;
    let gflops = 6.0 * params * tokens as f64 / seconds / 1e9;
    let of_peak = peak.map_or(String::new(), |p| {
        format!(" ({:.0}% of the GEMM peak)", 100.0 * gflops / p)
    });
    println!(
        "{name} ({:.1}M parameters, {}): {:.2} s per step, {:.0} tokens/s, {gflops:.1} GFLOP/s{of_peak}",
        params / 1e6,
        model.backend().describe(),
        seconds,
        tokens as f64 / seconds,
    );
    let key = format!("train.{key}.{}.{}", device().name(), dtype());
    result(&format!("{key}.tokens_per_s"), tokens as f64 / seconds);
    result(&format!("{key}.tflops"), gflops / 1e3);
    if let Some(peak) = peak {
        result(&format!("{key}.gemm_peak_share"), gflops / peak);
    }
}
