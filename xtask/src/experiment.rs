//! `cargo xtask experiment NAME`: the paper's claims that need more than one `lmsi run`, each
//! reproduced by one command. Everything goes under `target/experiments/NAME/`; a second run
//! reuses what the first finished (the seed model, and every run's finished stages).
//!
//! - `mixed-formats` (the paper's claim that training on its four prompt formats beats chain of
//!   thought alone): builds a seed model with the embedded recipe except that a quarter of its
//!   training documents are in the other three formats (`--other-formats 0.25`), then runs the loop
//!   on the embedded pool and test set with the embedded settings twice, training on
//!   chain-of-thought data only (`--formats cot-fewshot`) and on all four formats (`--formats
//!   all`), and prints both runs' accuracy with 95% intervals.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The share of the mixed seed model's documents in the three formats other than few-shot chain
/// of thought (so each is about 8% of the documents).
const OTHER_FORMATS: &str = "0.25";

pub fn run(root: &Path, name: &str) -> Result<()> {
    match name {
        "mixed-formats" => mixed_formats(root),
        other => bail!("unknown experiment {other:?} (expected mixed-formats)"),
    }
}

fn mixed_formats(root: &Path) -> Result<()> {
    let dir = root.join("target/experiments/mixed-formats");
    let seed = dir.join("seed-model");
    crate::cargo(
        &["build", "--release", "-p", "lmsi", "--bins", "--examples"],
        &[],
    )?;
    if !seed.join("model.safetensors").exists() {
        let example = root.join("target/release/examples/seed_model");
        let out = seed.to_string_lossy();
        run_logged(
            Command::new(example).args(["--out", &out, "--other-formats", OTHER_FORMATS]),
            &dir.join("seed-model.log"),
        )?;
    }
    let mut rows = Vec::new();
    for formats in ["cot-fewshot", "all"] {
        let work = dir.join(formats);
        let mut lmsi = Command::new(root.join("target/release/lmsi"));
        lmsi.args(["run", "--settings", "embedded", "--formats", formats])
            .arg("--model")
            .arg(&seed)
            .arg("--work-dir")
            .arg(&work);
        run_logged(&mut lmsi, &dir.join(format!("{formats}.log")))?;
        rows.push((formats, report_row(&work.join("report.json"))?));
    }
    println!("\nseed model trained with {OTHER_FORMATS} of its documents in the other formats");
    println!("| training formats | greedy before -> after | self-consistency before -> after |");
    println!("|---|---|---|");
    for (formats, row) in rows {
        println!("| {formats} | {row} |");
    }
    Ok(())
}

/// Runs `command`, its output appended to `log`, failing when it fails.
fn run_logged(command: &mut Command, log: &Path) -> Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    eprintln!("xtask: {command:?} (log: {})", log.display());
    let status = command
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("could not run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status}); see {}", log.display());
    }
    Ok(())
}

/// "greedy before -> after | sc before -> after" from an `lmsi run` report, with 95% intervals.
fn report_row(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let cell = |mode: &str| -> Result<String> {
        let value = |when: &str, key: &str| &report[when][key];
        let pct = |v: &serde_json::Value| -> Result<String> {
            let x = v
                .as_f64()
                .with_context(|| format!("{}: no {mode} accuracy", path.display()))?;
            Ok(format!("{:.1}%", 100.0 * x))
        };
        let ci = |when: &str| -> Result<String> {
            let ci = value(when, &format!("{mode}_ci95"));
            Ok(format!("[{}, {}]", pct(&ci[0])?, pct(&ci[1])?))
        };
        Ok(format!(
            "{} {} -> {} {}",
            pct(value("before", &format!("{mode}_accuracy")))?,
            ci("before")?,
            pct(value("after", &format!("{mode}_accuracy")))?,
            ci("after")?
        ))
    };
    Ok(format!("{} | {}", cell("greedy")?, cell("sc")?))
}
