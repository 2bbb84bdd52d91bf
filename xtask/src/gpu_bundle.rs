//! `cargo xtask gpu-bundle [--out DIR] [--no-nvrtc]`: everything needed to check lmsi on a GPU
//! machine that has a driver but no Rust toolchain and no network, in one folder of at most
//! 64 MiB (checked: the task fails when it is larger).
//!
//! Builds, in release and with the `cuda` features: the `lmsi` program, the CUDA test binaries (the
//! kernel tests of lmsi-cuda, which run every kernel through the CPU shim and on the GPU, and
//! lmsi-transformer's `cuda_backend` and `cuda_bf16` tests, the CUDA backend against the CPU
//! backend), and the `generate` and `train` benchmarks. Copies them (without their debug
//! information) into the folder (default `target/gpu-bundle/`) with:
//!
//! - `assets/seed-model/`: the embedded seed model, which the `lmsi` checks and the tests run;
//! - `assets/smollm2-135m-instruct/`: SmolLM2-135M-Instruct's configuration and tokenizer, from the
//!   test-model cache (`shared/tools/fetch-smollm2.sh`), without its weights (540 MB in f32):
//!   `make_weights.py` makes seeded random ones of the same shapes on the GPU machine;
//! - `peer.py`: the generate benchmark's workload with PyTorch and transformers, for the ratio;
//! - `lib/`: NVRTC from the CUDA 13.0 wheel (`scripts/cuda-toolchain.sh`), when it fits in the
//!   64 MiB (CUDA 13's is about 110 MB, so in practice it is left out, as with `--no-nvrtc`, and
//!   `run.sh` takes NVRTC from the GPU machine: its CUDA install or PyTorch's `nvidia-*` packages);
//! - `run.sh OUTDIR`: finds the CUDA libraries, runs every test, a CPU-against-GPU check of `lmsi
//!   generate` and `lmsi train`, the benchmarks on the GPU in f32 and bf16 and the PyTorch peer,
//!   within a time budget, and prints one table (also `OUTDIR/table.md` and `table.json`), with
//!   each run's output in `OUTDIR/logs/`. Parts that cannot run there (no GPU, no torch) skip and
//!   say why.
//!
//! The binaries link only libc (cudarc opens the CUDA libraries at run time) and are built against
//! this machine's glibc (Debian 12, 2.36), so they run on any x86-64 Linux with that glibc or newer.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{kernels, workspace_root};

/// The scripts run on the GPU machine: (name in the bundle, text).
const SCRIPTS: [(&str, &str); 3] = [
    ("run.sh", include_str!("gpu_bundle_run.sh")),
    ("make_weights.py", include_str!("gpu_bundle_weights.py")),
    ("peer.py", include_str!("gpu_bundle_peer.py")),
];

/// The most the bundle may hold.
const LIMIT_BYTES: u64 = 64 << 20;

/// An executable cargo built.
struct Artifact {
    /// The target's name: the binary, test file or benchmark file without `.rs`.
    name: String,
    path: PathBuf,
}

pub fn run(out: Option<PathBuf>, nvrtc: bool) -> Result<()> {
    let root = workspace_root();
    let out = out.unwrap_or_else(|| root.join("target/gpu-bundle"));
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
        "--test",
        "cuda_bf16",
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
    for dir in ["bin", "tests", "benches", "lib", "assets"] {
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
    add_models_and_scripts(&root, &out)?;
    if dir_bytes(&out)? > LIMIT_BYTES {
        strip_symbols(&out)?;
    }
    let nvrtc = nvrtc && add_nvrtc(&root, &out)?;

    let bytes = dir_bytes(&out)?;
    eprintln!(
        "xtask: wrote {} ({:.1} MiB of at most {} MiB): {} test binaries, {} benchmarks, NVRTC {}; \
         copy it to the GPU machine and run `./run.sh OUTDIR` there",
        out.display(),
        bytes as f64 / (1 << 20) as f64,
        LIMIT_BYTES >> 20,
        kernel_tests.len() + backend_tests.len(),
        benches.len(),
        if nvrtc { "bundled" } else { "left out" },
    );
    if bytes > LIMIT_BYTES {
        bail!(
            "the bundle is {:.1} MiB, over the {} MiB limit: see the sizes above",
            bytes as f64 / (1 << 20) as f64,
            LIMIT_BYTES >> 20
        );
    }
    Ok(())
}

/// The seed model, SmolLM2's small files (without weights) and the scripts, into the bundle.
fn add_models_and_scripts(root: &Path, out: &Path) -> Result<()> {
    let seed = root.join("assets/seed-model");
    if seed.join("model.safetensors").exists() {
        copy_files(&seed, &out.join("assets/seed-model"), |_| true)?;
    } else {
        eprintln!(
            "xtask: {} is missing (cargo xtask seed-model): the bundle's lmsi checks will skip",
            seed.display()
        );
    }
    match smollm2_dir() {
        Some(dir) => copy_files(&dir, &out.join("assets/smollm2-135m-instruct"), |name| {
            !name.contains(".safetensors") && !name.ends_with(".bin")
        })?,
        None => eprintln!(
            "xtask: SmolLM2-135M-Instruct is not in the test-model cache (shared/tools/fetch-smollm2.sh): \
             the bundle's benchmarks will skip"
        ),
    }
    for (name, text) in SCRIPTS {
        let script = out.join(name);
        std::fs::write(&script, text)?;
        make_executable(&script)?;
    }
    Ok(())
}

/// Strips the executables' symbols too, when the bundle is too big with them: backtraces then
/// show addresses only (a panic still names its file and line).
fn strip_symbols(out: &Path) -> Result<()> {
    eprintln!(
        "xtask: {:.1} MiB with symbols, over {} MiB: stripping the executables' symbols",
        dir_bytes(out)? as f64 / (1 << 20) as f64,
        LIMIT_BYTES >> 20
    );
    for dir in ["bin", "tests", "benches"] {
        for entry in std::fs::read_dir(out.join(dir))? {
            let path = entry?.path();
            let status = Command::new("strip").arg("--strip-all").arg(&path).status();
            if !status.is_ok_and(|s| s.success()) {
                bail!("could not strip {}", path.display());
            }
        }
    }
    Ok(())
}

/// Copies NVRTC from the CUDA 13.0 wheel into `out/lib` when the bundle stays within
/// [`LIMIT_BYTES`]; says whether it did.
fn add_nvrtc(root: &Path, out: &Path) -> Result<bool> {
    let lib = kernels::toolchain(root)?.join("lib");
    let files = nvrtc_files(&lib)?;
    let mut nvrtc_bytes = 0;
    for name in &files {
        nvrtc_bytes += std::fs::metadata(lib.join(name))?.len();
    }
    let total = dir_bytes(out)? + nvrtc_bytes;
    if total > LIMIT_BYTES {
        eprintln!(
            "xtask: NVRTC left out: its {:.0} MiB would make the bundle {:.0} MiB, over {} MiB; \
             run.sh takes it from the GPU machine (CUDA install or python3's nvidia-* packages)",
            nvrtc_bytes as f64 / (1 << 20) as f64,
            total as f64 / (1 << 20) as f64,
            LIMIT_BYTES >> 20
        );
        return Ok(false);
    }
    for name in files {
        std::fs::copy(lib.join(&name), out.join("lib").join(&name))
            .with_context(|| format!("copying {name}"))?;
    }
    Ok(true)
}

/// SmolLM2-135M-Instruct's directory in the test-model cache (fetched when the shared tools are
/// there), if it is there.
fn smollm2_dir() -> Option<PathBuf> {
    let env = crate::real_model_env()
        .inspect_err(|e| eprintln!("xtask: {e:#}"))
        .ok()?;
    env.into_iter()
        .find(|(name, _)| name == "LMSI_BENCH_MODEL")
        .map(|(_, dir)| dir)
        .filter(|dir| dir.join("config.json").exists())
}

/// Copies the files of `from` whose names `keep` accepts into `to` (created).
fn copy_files(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .expect("a file has a name")
            .to_string_lossy();
        if path.is_file() && keep(&name) {
            std::fs::copy(&path, to.join(&*name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
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
