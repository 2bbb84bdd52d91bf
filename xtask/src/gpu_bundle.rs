//! `cargo xtask gpu-bundle [--out DIR] [--no-nvrtc]`: everything needed to check lmsi on a GPU
//! machine that has a driver but no Rust toolchain and no network, in one folder.
//!
//! Builds, in release and with the `cuda` features: the `lmsi` program, the CUDA test binaries (the
//! kernel tests of lmsi-cuda, which run every kernel through the CPU shim and on the GPU, and
//! lmsi-transformer's `cuda_backend` test, the CUDA backend against the CPU backend), and the
//! `generate` and `train` benchmarks. Copies them (without their debug information) into the folder
//! (default `target/gpu-bundle/`) with:
//!
//! - `lib/`: NVRTC from the CUDA 13.0 wheel (`scripts/cuda-toolchain.sh`), which compiles the
//!   kernels at run time; `--no-nvrtc` leaves it out (about 110 MB) for machines whose CUDA install
//!   has it;
//! - `assets/seed-model/`: the embedded seed model, which the `lmsi` checks and the benchmarks run
//!   (`LMSI_BENCH_MODEL` on the GPU machine points the benchmarks at a real model instead);
//! - `run.sh`: finds the CUDA libraries, runs every test, a CPU-against-GPU check of `lmsi generate`
//!   and `lmsi train`, and the benchmarks on the GPU and on the CPU, and prints a table (what,
//!   result, seconds), with each one's output in `logs/`. Without a GPU the tests skip their GPU
//!   parts and say so, and the `--device cuda` runs are listed as skipped.
//!
//! The binaries link only libc (cudarc opens the CUDA libraries at run time) and are built against
//! this machine's glibc (Debian 12, 2.36), so they run on any x86-64 Linux with that glibc or newer.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{kernels, workspace_root};

/// The script run on the GPU machine.
const RUN_SH: &str = include_str!("gpu_bundle_run.sh");

/// An executable cargo built.
struct Artifact {
    /// The target's name: the binary, test file or benchmark file without `.rs`.
    name: String,
    path: PathBuf,
}

pub fn run(out: Option<PathBuf>, nvrtc: bool) -> Result<()> {
    let root = workspace_root();
    let out = out.unwrap_or_else(|| root.join("target/gpu-bundle"));
    let cu13 = if nvrtc {
        Some(kernels::toolchain(&root)?)
    } else {
        None
    };

    let lmsi = build(&["build", "--release", "-p", "lmsi", "--bin", "lmsi"])?;
    let kernel_tests = build(&[
        "test",
        "--release",
        "--no-run",
        "-p",
        "lmsi-cuda",
        "--features",
        "cuda",
        "--test",
        "*",
    ])?;
    let backend_tests = build(&[
        "test",
        "--release",
        "--no-run",
        "-p",
        "lmsi-transformer",
        "--features",
        "cuda",
        "--test",
        "cuda_backend",
    ])?;
    let benches = build(&[
        "bench",
        "--no-run",
        "-p",
        "lmsi-benches",
        "--features",
        "cuda",
        "--bench",
        "generate",
        "--bench",
        "train",
    ])?;

    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    for dir in ["bin", "tests", "benches", "lib", "assets/seed-model"] {
        std::fs::create_dir_all(out.join(dir))?;
    }
    for a in &lmsi {
        install(&a.path, &out.join("bin").join(&a.name))?;
    }
    for (package, tests) in [
        ("lmsi-cuda", &kernel_tests),
        ("lmsi-transformer", &backend_tests),
    ] {
        for a in tests {
            install(
                &a.path,
                &out.join("tests").join(format!("{package}-{}", a.name)),
            )?;
        }
    }
    for a in &benches {
        install(&a.path, &out.join("benches").join(&a.name))?;
    }
    if let Some(cu13) = &cu13 {
        for name in nvrtc_files(&cu13.join("lib"))? {
            std::fs::copy(cu13.join("lib").join(&name), out.join("lib").join(&name))
                .with_context(|| format!("copying {name}"))?;
        }
    }
    let seed = root.join("assets/seed-model");
    if seed.join("model.safetensors").exists() {
        for entry in std::fs::read_dir(&seed)? {
            let path = entry?.path();
            if path.is_file() {
                let name = path.file_name().expect("a file has a name");
                std::fs::copy(&path, out.join("assets/seed-model").join(name))?;
            }
        }
    } else {
        eprintln!(
            "xtask: {} is missing (cargo xtask seed-model): the bundle's lmsi checks and benchmarks will skip",
            seed.display()
        );
    }
    let script = out.join("run.sh");
    std::fs::write(&script, RUN_SH)?;
    make_executable(&script)?;

    eprintln!(
        "xtask: wrote {} ({:.0} MB): {} test binaries, {} benchmarks, NVRTC {}; run it there with `{}/run.sh`",
        out.display(),
        dir_bytes(&out)? as f64 / 1e6,
        kernel_tests.len() + backend_tests.len(),
        benches.len(),
        if cu13.is_some() {
            "bundled"
        } else {
            "left out"
        },
        out.display()
    );
    Ok(())
}

/// Runs cargo with `args` in the workspace and returns the executables it built (the last
/// artifact of each target).
fn build(args: &[&str]) -> Result<Vec<Artifact>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let output = Command::new(&cargo)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {cargo}"))?;
    if !output.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), output.status);
    }
    let mut found: Vec<Artifact> = Vec::new();
    for line in String::from_utf8(output.stdout)?.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(path)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        found.retain(|a| a.name != name);
        found.push(Artifact {
            name: name.to_string(),
            path: PathBuf::from(path),
        });
    }
    if found.is_empty() {
        bail!("`cargo {}` built no executable", args.join(" "));
    }
    Ok(found)
}

/// Copies an executable, without its debug information when `strip` is there.
fn install(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    match Command::new("strip").arg("--strip-debug").arg(to).status() {
        Ok(status) if status.success() => {}
        _ => eprintln!("xtask: could not strip {} (copied as built)", to.display()),
    }
    make_executable(to)
}

fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

/// NVRTC's files in the wheel's `lib/`: the library (under its versioned name; `run.sh` gives it the
/// name cudarc opens) and the builtins it loads.
fn nvrtc_files(lib: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libnvrtc") && !n.contains(".alt."))
        .collect();
    names.sort();
    if !names.iter().any(|n| n.starts_with("libnvrtc.so")) {
        bail!("no libnvrtc.so* in {}", lib.display());
    }
    Ok(names)
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
