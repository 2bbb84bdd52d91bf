//! `cargo xtask`: the project's tasks, written in Rust so they run wherever cargo does.
//!
//! - `cargo xtask test`: formatting check, clippy with warnings denied (all features), the kernels'
//!   compile check (`cargo xtask kernels --check`), and every test of the workspace with all features.
//!   This is the command CI runs (`.ci/run`). It installs the CUDA 13.0 compiler wheels (cached) for the
//!   kernel and NVRTC checks, and, when the shared tools are present (see [`shared_dir`]), fetches the
//!   real test model (SmolLM2-135M-Instruct, cached) so the real-model tests run; without them those
//!   tests skip and say why. Tests that need a GPU skip themselves where there is none. Last, every
//!   fuzz target runs for [`fuzz::CI_SECONDS`] seconds, as `cargo xtask fuzz` runs them.
//! - `cargo xtask kernels [--check]`: compiles the CUDA kernels with nvcc and prints their resource
//!   use, and regenerates (or, with `--check`, verifies) their Rust bindings; see [`kernels`].
//! - `cargo xtask fuzz [SECONDS]`: builds the cargo-fuzz targets in `fuzz/` (installing cargo-fuzz
//!   when it is absent) and runs each for SECONDS (default 60); fails when any finds a crash; see
//!   [`fuzz`].
//! - `cargo xtask seed-model`: trains the embedded seed model and writes it to `assets/seed-model`.
//! - `cargo xtask experiment NAME`: reproduces one of the paper's claims that needs more than one
//!   `lmsi run` (`mixed-formats`, `smollm2`, `model-size`); see [`experiment`].
//! - `cargo xtask bench [NAME...]`: the benchmarks in `benches/` (all, or the named ones), with the
//!   real model fetched the same way; `cargo xtask bench compare` runs lmsi beside llama.cpp and
//!   PyTorch; see [`compare`].
//! - `cargo xtask gpu-bundle [--out DIR] [--no-nvrtc]`: the `lmsi` program, the CUDA tests and the GPU
//!   benchmarks, built here and packed (at most 64 MiB) with a `run.sh` for a GPU machine without
//!   Rust; see [`gpu_bundle`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod compare;
mod experiment;
mod fuzz;
mod gpu_bundle;
mod kernels;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "lmsi project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check formatting, run clippy with warnings denied, run every test, then fuzz briefly.
    Test,
    /// Run every fuzz target (fuzz/) for SECONDS each; fail if any finds a crash.
    Fuzz {
        /// How long each target runs, in seconds (at least 1).
        #[arg(default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
    },
    /// Run criterion benchmarks (all of them, or the ones named); `compare` runs lmsi beside
    /// llama.cpp and PyTorch (installed into a cache the first time) and prints one table.
    Bench {
        /// Benchmark names (files in benches/benches/ without `.rs`), or `compare` alone.
        names: Vec<String>,
    },
    /// Train the embedded seed model (deterministic) and write it to assets/seed-model.
    SeedModel,
    /// Reproduce one of the paper's claims that needs more than one `lmsi run` (mixed-formats),
    /// under target/experiments/NAME.
    Experiment {
        /// The experiment: mixed-formats, smollm2 or model-size.
        name: String,
    },
    /// Compile the CUDA kernels with nvcc (sm_80, sm_90), print their registers, shared memory and
    /// spills, and regenerate the Rust bindings of the kernel headers.
    Kernels {
        /// Fail if the committed bindings differ from fresh ones, instead of writing them.
        #[arg(long)]
        check: bool,
    },
    /// Build lmsi, its CUDA tests and GPU benchmarks, and pack them (at most 64 MiB) with a run.sh
    /// for a GPU machine.
    GpuBundle {
        /// The folder to write (replaced) [default: target/gpu-bundle].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Leave NVRTC out without looking at it. It is left out anyway when it would take the
        /// bundle over 64 MiB (CUDA 13's is about 110 MB); the GPU machine's CUDA install or
        /// python3's nvidia-* packages provide it.
        #[arg(long)]
        no_nvrtc: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test => test(),
        Task::Fuzz { seconds } => fuzz::run(&workspace_root(), seconds),
        Task::Bench { names } => bench(&names),
        Task::Kernels { check } => kernels::run(check),
        Task::SeedModel => seed_model(),
        Task::Experiment { name } => experiment::run(&workspace_root(), &name),
        Task::GpuBundle { out, no_nvrtc } => gpu_bundle::run(out, !no_nvrtc),
    }
}

fn test() -> Result<()> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    kernels::run(true)?;
    let mut env = real_model_env()?;
    env.push(cuda_library_path()?);
    cargo(&["test", "--workspace", "--all-features"], &env)?;
    fuzz::run(&workspace_root(), fuzz::CI_SECONDS)
}

/// `LD_LIBRARY_PATH` with the CUDA wheel's libraries (NVRTC) first, so the NVRTC tests run; cudarc
/// opens CUDA libraries by name at run time.
fn cuda_library_path() -> Result<(String, PathBuf)> {
    let cu13 = kernels::toolchain(&workspace_root())?;
    let mut paths = vec![cu13.join("lib")];
    if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    Ok((
        "LD_LIBRARY_PATH".into(),
        std::env::join_paths(paths)?.into(),
    ))
}

fn bench(names: &[String]) -> Result<()> {
    if names.iter().any(|n| n == "compare") {
        if names.len() > 1 {
            bail!("`compare` runs alone: its own benchmarks are generate and train");
        }
        return compare::run(&workspace_root(), &real_model_env()?);
    }
    let mut args = vec!["bench", "-p", "lmsi-benches"];
    for name in names {
        args.extend(["--bench", name]);
    }
    let env = real_model_env()?;
    cargo(&args, &env)
}

/// Trains the seed model with the project's own trainer (`crates/lmsi/examples/seed_model.rs`, the
/// recipe in `lmsi::seed::SeedRecipe::default`) and copies the model files, its training log and loss
/// curve into `assets/seed-model`, which `lmsi` embeds.
fn seed_model() -> Result<()> {
    let root = workspace_root();
    let scratch = root.join("target/seed-model");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    let out = scratch.to_string_lossy().into_owned();
    cargo(
        &[
            "run",
            "--release",
            "-p",
            "lmsi",
            "--example",
            "seed_model",
            "--",
            "--out",
            &out,
        ],
        &[],
    )?;
    let assets = root.join("assets/seed-model");
    std::fs::create_dir_all(&assets)?;
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "train_log.jsonl",
        "loss.svg",
    ] {
        std::fs::copy(scratch.join(file), assets.join(file))
            .with_context(|| format!("copying {file} into {}", assets.display()))?;
    }
    eprintln!("xtask: wrote {}", assets.display());
    Ok(())
}

/// The folder of tools and data shared by the project's machines: `LMSI_SHARED`, else `../shared`
/// beside the workspace, else `/work/shared`.
fn shared_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LMSI_SHARED").map(PathBuf::from),
        Some(workspace_root().join("../shared")),
        Some(PathBuf::from("/work/shared")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join("tools/fetch-smollm2.sh").exists())
}

/// Fetches SmolLM2-135M-Instruct (cached) and returns the variables that point the real-model tests
/// and benchmarks at it and at the NumPy reference. Empty when the shared tools are absent.
fn real_model_env() -> Result<Vec<(String, PathBuf)>> {
    let Some(shared) = shared_dir() else {
        eprintln!("xtask: shared tools not found (set LMSI_SHARED): real-model tests will skip");
        return Ok(Vec::new());
    };
    let fetch = shared.join("tools/fetch-smollm2.sh");
    eprintln!("xtask: {} (cached after the first run)", fetch.display());
    let model = fetch_script(&fetch)?;
    let models_root = model.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut env = gguf_test_env();
    env.extend([
        ("LMSI_TEST_MODEL".into(), model.clone()),
        ("LMSI_BENCH_MODEL".into(), model),
        (
            "LMSI_TEST_PYTHON".into(),
            models_root.join(".venv/bin/python"),
        ),
        (
            "LMSI_NP_GENERATE".into(),
            shared.join("tools/realmodel/np_generate.py"),
        ),
        // Its data (GSM8K train) for the test that reads a published dataset file whole.
        ("LMSI_SHARED".into(), shared.clone()),
    ]);
    Ok(env)
}

/// `LMSI_TEST_GGUF` (SmolLM2-135M-Instruct's GGUF file, `scripts/fetch-smollm2-gguf.sh`) and
/// `LMSI_TEST_GGUF_VOCABS` (llama.cpp's tokenizer test vocabularies, `scripts/fetch-llama-vocabs.sh`),
/// each fetched once and cached. One that cannot be fetched is left out with a warning: its tests
/// then skip.
fn gguf_test_env() -> Vec<(String, PathBuf)> {
    [
        ("LMSI_TEST_GGUF", "scripts/fetch-smollm2-gguf.sh"),
        ("LMSI_TEST_GGUF_VOCABS", "scripts/fetch-llama-vocabs.sh"),
    ]
    .into_iter()
    .filter_map(|(var, script)| fetched(var, &workspace_root().join(script)))
    .collect()
}

/// Runs the fetch `script` and pairs `var` with the path it prints; `None`, with a warning, when it
/// fails.
fn fetched(var: &str, script: &Path) -> Option<(String, PathBuf)> {
    match fetch_script(script) {
        Ok(path) => Some((var.into(), path)),
        Err(e) => {
            eprintln!("xtask: {e:#} (the tests that need {var} will skip)");
            None
        }
    }
}

/// Runs a fetch `script` (it caches what it fetches) and returns the path it prints.
fn fetch_script(script: &Path) -> Result<PathBuf> {
    let output = Command::new("bash")
        .arg(script)
        .output()
        .with_context(|| format!("could not run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().into())
}

/// Runs cargo with `args` (and extra environment) in the workspace root, failing when it fails.
fn cargo(args: &[&str], env: &[(String, PathBuf)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("could not run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
