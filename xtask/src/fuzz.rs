//! `cargo xtask fuzz [SECONDS]`: builds the cargo-fuzz targets of `fuzz/` once, runs each for
//! SECONDS, and fails when any of them finds a crash, a panic, a hang or an allocation over
//! libFuzzer's limit. `cargo xtask test` runs them for [`CI_SECONDS`] each.
//!
//! cargo-fuzz is installed (pinned) when it is absent. Its build needs nightly flags, which
//! `RUSTC_BOOTSTRAP=1` unlocks on the stable toolchain. Each target reads and grows its corpus in
//! `fuzz/corpus/<target>/` (git ignores it) and also starts from the committed inputs in
//! `fuzz/seeds/<target>/`; a failing input is saved in `fuzz/artifacts/<target>/`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The cargo-fuzz release installed when `cargo fuzz` is not found.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds each target runs under `cargo xtask test`.
pub const CI_SECONDS: u64 = 15;

/// Seconds one input may take before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_S: u64 = 10;

/// Build options shared by `cargo fuzz build` and `cargo fuzz run` (different options would make
/// `run` build again). Sixteen codegen units instead of cargo-fuzz's one build the dependencies
/// (tokenizers, gemm) in a fraction of the time, for slightly slower fuzzing.
const BUILD_OPTIONS: &[&str] = &["--codegen-units", "16"];

/// Builds every target, runs each for `seconds`, and fails naming the targets that failed.
pub fn run(root: &Path, seconds: u64) -> Result<()> {
    install_cargo_fuzz()?;
    let mut build = vec!["build"];
    build.extend(BUILD_OPTIONS);
    cargo_fuzz(root, &build)?;
    let listed = cargo_fuzz_output(root, &["list"])?;
    let targets: Vec<&str> = listed.split_whitespace().collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` names no fuzz target");
    }
    let mut failed = Vec::new();
    for target in &targets {
        match run_target(root, target, seconds)? {
            Some(summary) => eprintln!("xtask: fuzz {target}: {summary}, nothing found"),
            None => failed.push(*target),
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/<target>/; fuzz/README.md says how \
             to replay one)",
            failed.join(", ")
        );
    }
    eprintln!(
        "xtask: fuzzed {} targets for {seconds} s each: nothing found",
        targets.len()
    );
    Ok(())
}

/// Runs one target for `seconds`, its output passed through but for libFuzzer's progress lines
/// (`#123 NEW ...`, thousands a minute); libFuzzer's closing "Done N runs in S second(s)" when it
/// found nothing, `None` when it failed.
fn run_target(root: &Path, target: &str, seconds: u64) -> Result<Option<String>> {
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("could not make {}", corpus.display()))?;
    let seeds = root.join("fuzz/seeds").join(target);
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(BUILD_OPTIONS.iter().map(|s| s.to_string()));
    args.extend([target.into(), corpus.display().to_string()]);
    if seeds.is_dir() {
        args.push(seeds.display().to_string());
    }
    args.extend([
        "--".into(),
        format!("-max_total_time={seconds}"),
        format!("-timeout={INPUT_TIMEOUT_S}"),
    ]);
    eprintln!("xtask: cargo fuzz {}", args.join(" "));
    let mut child = cargo_fuzz_command(root)
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .context("could not run cargo fuzz")?;
    let mut done = None;
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz's output")?;
        if let Some(summary) = line.strip_prefix("Done ") {
            done = Some(summary.to_string());
        } else if !line.starts_with('#') {
            eprintln!("{line}");
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    Ok(done.filter(|_| status.success()))
}

/// Installs the pinned cargo-fuzz unless `cargo fuzz` already runs.
fn install_cargo_fuzz() -> Result<()> {
    let found = Command::new(cargo())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz not found: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let status = Command::new(cargo())
        .args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ])
        .status()
        .context("could not run cargo install")?;
    if !status.success() {
        bail!(
            "`cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked` failed ({status})"
        );
    }
    Ok(())
}

fn cargo_fuzz(root: &Path, args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo fuzz {}", args.join(" "));
    let status = cargo_fuzz_command(root)
        .args(args)
        .status()
        .context("could not run cargo fuzz")?;
    if !status.success() {
        bail!("`cargo fuzz {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn cargo_fuzz_output(root: &Path, args: &[&str]) -> Result<String> {
    let out = cargo_fuzz_command(root)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo fuzz")?;
    if !out.status.success() {
        bail!("`cargo fuzz {}` failed ({})", args.join(" "), out.status);
    }
    String::from_utf8(out.stdout).context("cargo fuzz printed non-UTF-8")
}

/// `cargo fuzz` in the workspace root, with the nightly flags it needs unlocked on stable.
fn cargo_fuzz_command(root: &Path) -> Command {
    let mut command = Command::new(cargo());
    command
        .arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(root);
    command
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
