//! Helpers shared by the benchmarks in `benches/` (run them with `cargo xtask bench`).
//!
//! Besides their lines for people, the model benchmarks print each headline number once as
//! `bench-result NAME VALUE` ([`result`]), which the GPU bundle's `run.sh` reads into its table.

use std::path::PathBuf;
use std::time::Instant;

use lmsi_transformer::{CudaBackend, Dtype};

/// Where the model benchmarks (generate, train) run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// GPU 0, through the CUDA backend (needs this crate's `cuda` feature).
    Cuda,
}

impl Device {
    /// `cpu` or `cuda`, as `LMSI_BENCH_DEVICE` names it.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// `LMSI_BENCH_DEVICE`: `cpu` (the default) or `cuda`.
///
/// # Panics
///
/// On any other value.
pub fn device() -> Device {
    match std::env::var("LMSI_BENCH_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda,
        Ok("cpu") | Ok("") | Err(_) => Device::Cpu,
        Ok(other) => panic!("LMSI_BENCH_DEVICE={other}: expected cpu or cuda"),
    }
}

/// `LMSI_BENCH_DTYPE`: what the CUDA backend stores weight matrices and KV caches in, `f32` (the
/// default) or `bf16`.
///
/// # Panics
///
/// On any other value.
pub fn dtype() -> Dtype {
    match std::env::var("LMSI_BENCH_DTYPE").as_deref() {
        Ok("") | Err(_) => Dtype::F32,
        Ok(name) => name
            .parse()
            .unwrap_or_else(|e| panic!("LMSI_BENCH_DTYPE: {e}")),
    }
}

/// GPU 0 at [`dtype`], or why it cannot be opened (no GPU, or a build without the `cuda` feature).
pub fn gpu() -> Result<CudaBackend, String> {
    let gpu = CudaBackend::new(0).map_err(|e| e.to_string())?;
    Ok(gpu.with_dtype(dtype()))
}

/// Why a benchmark cannot run on the CPU at [`dtype`]: the CPU backend computes in f32 only.
pub fn cpu_dtype_refused() -> Option<String> {
    let dtype = dtype();
    (dtype != Dtype::F32).then(|| format!("LMSI_BENCH_DTYPE={dtype} is for the CUDA backend"))
}

/// Prints `bench-result NAME VALUE`, one headline number in a form a script reads.
pub fn result(name: &str, value: f64) {
    println!("bench-result {name} {value}");
}

/// The real model to benchmark on: `LMSI_BENCH_MODEL`, else the test-model cache's SmolLM2 directory.
pub fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LMSI_BENCH_MODEL")
        .map(PathBuf::from)
        .or_else(|| {
            let root = std::env::var_os("LMSI_TEST_MODELS")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".cache/lmsi-test-models"))
                })?;
            Some(root.join("smollm2-135m-instruct"))
        })?;
    dir.join("model.safetensors").exists().then_some(dir)
}

/// The embedded seed model's directory: `LMSI_BENCH_SEED_MODEL` (for a benchmark binary run away
/// from the workspace), else `assets/seed-model` in the workspace, when it has been made.
pub fn seed_model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LMSI_BENCH_SEED_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/seed-model"));
    dir.join("model.safetensors").exists().then_some(dir)
}

/// The machine's f32 matrix-product speed in GFLOP/s: the `gemm` crate on 1024 x 1024 x 1024, on all of
/// rayon's threads, best of several runs. The workspace enables `gemm`'s AVX-512 kernels, so on a
/// processor with AVX-512 this is the peak of its full vector width.
pub fn gemm_peak_gflops() -> f64 {
    let n = 1024;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut c = vec![0.0f32; n * n];
    let mut best = f64::MAX;
    for _ in 0..8 {
        let start = Instant::now();
        // SAFETY: all three matrices are n x n, row-major, and the strides say so.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}
