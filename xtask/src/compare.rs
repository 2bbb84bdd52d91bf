//! `cargo xtask bench compare`: lmsi beside its peers on the same CPU workloads, in one run.
//!
//! - **generate** (`benches/benches/generate.rs`): SmolLM2-135M-Instruct in f32, a prompt of about
//!   380 tokens, 32 paths of 96 new tokens, T 0.7, top-k 40, the prompt shared by the paths; the
//!   peer is llama.cpp (llama-cpp-python, built from source here) on an F32 GGUF file that
//!   llama.cpp's own `convert_hf_to_gguf.py` makes from the same weights (`compare_llama_cpp.py`).
//! - **train** (`benches/benches/train.rs`): SmolLM2-135M-Instruct, batches of 8 x 256 tokens,
//!   forward, backward, clipping and AdamW; the peer is PyTorch with transformers
//!   (`compare_torch.py`).
//!
//! The peers are installed once, pinned, into a cache (`scripts/bench-peers.sh`). Each of
//! [`ROUNDS`] rounds runs lmsi's generate benchmark, llama.cpp, lmsi's train benchmark and PyTorch,
//! one after the other, so that a slow spell of the machine falls on both sides. The table gives
//! each side's median, min and max, the ratio of the medians, and the share of the GEMM peak (the
//! `gemm` crate's f32 speed, measured by each lmsi benchmark run) that lmsi's runs reach; it is
//! printed and written to `target/bench-compare/table.md`. Without the peers (no network, a failed
//! build) it runs lmsi alone and says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Alternation rounds; each runs every benchmark once.
const ROUNDS: usize = 3;

/// One line of the table: what it measures, lmsi's result name and its peer's, and whether the
/// values are shares (printed as percentages).
struct Row {
    workload: &'static str,
    lmsi: &'static str,
    peer: Option<(&'static str, &'static str)>,
    share: bool,
}

const ROWS: [Row; 5] = [
    Row {
        workload: "generate: sampled tokens/s",
        lmsi: "generate.cpu.f32.sampled_tokens_per_s",
        peer: Some(("llama.cpp", "generate.llama_cpp.f32.sampled_tokens_per_s")),
        share: false,
    },
    Row {
        workload: "train SmolLM2-135M: tokens/s",
        lmsi: "train.smollm2.cpu.f32.tokens_per_s",
        peer: Some(("PyTorch", "train.smollm2.torch.f32.tokens_per_s")),
        share: false,
    },
    Row {
        workload: "generate: share of the GEMM peak",
        lmsi: "generate.cpu.f32.gemm_peak_share",
        peer: None,
        share: true,
    },
    Row {
        workload: "train SmolLM2-135M: share of the GEMM peak",
        lmsi: "train.smollm2.cpu.f32.gemm_peak_share",
        peer: None,
        share: true,
    },
    Row {
        workload: "train, the seed model's shape: share of the GEMM peak",
        lmsi: "train.seed.cpu.f32.gemm_peak_share",
        peer: None,
        share: true,
    },
];

pub fn run(root: &Path, env: &[(String, PathBuf)]) -> Result<()> {
    let model = env
        .iter()
        .find(|(k, _)| k == "LMSI_BENCH_MODEL")
        .map(|(_, v)| v.clone())
        .context("no SmolLM2-135M-Instruct: the comparison needs shared/tools/fetch-smollm2.sh")?;
    let dir = root.join("target/bench-compare");
    std::fs::create_dir_all(&dir)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peers = match Peers::install(root, &model, &dir, threads) {
        Ok(peers) => Some(peers),
        Err(e) => {
            eprintln!("xtask: lmsi runs alone: its peers could not be installed: {e:#}");
            None
        }
    };
    crate::cargo(&["bench", "-p", "lmsi-benches", "--no-run"], env)?;

    let workload = dir.join("workload.json");
    let mut results = Results::default();
    // A peer that fails is dropped from the later rounds.
    let (mut llama_cpp, mut torch) = (peers.is_some(), peers.is_some());
    for round in 1..=ROUNDS {
        eprintln!("xtask: round {round} of {ROUNDS}");
        let mut generate_env = env.to_vec();
        generate_env.push(("LMSI_BENCH_PROMPT_OUT".into(), workload.clone()));
        results.add(&bench("generate", &generate_env)?);
        if let (true, Some(p)) = (llama_cpp, &peers) {
            llama_cpp = results.add_peer(p.llama_cpp(&workload));
        }
        results.add(&bench("train", env)?);
        if let (true, Some(p)) = (torch, &peers) {
            torch = results.add_peer(p.torch());
        }
    }
    let table = results.table();
    println!("\n{table}");
    std::fs::write(dir.join("table.md"), &table)?;
    Ok(())
}

/// The peers' Python environment and what they run on.
struct Peers {
    python: PathBuf,
    scripts: PathBuf,
    gguf: PathBuf,
    model: PathBuf,
    threads: usize,
}

impl Peers {
    /// Installs the peers (cached) and converts the model to an F32 GGUF file (cached in `dir`).
    fn install(root: &Path, model: &Path, dir: &Path, threads: usize) -> Result<Peers> {
        eprintln!("xtask: installing the peers (scripts/bench-peers.sh; minutes the first time)");
        let venv = crate::fetch_script(&root.join("scripts/bench-peers.sh"))?;
        let python = venv.join("bin/python");
        let gguf = dir.join("smollm2-135m-instruct-f32.gguf");
        if !gguf.exists() {
            let partial = gguf.with_extension("gguf.partial");
            let log = dir.join("convert.log");
            let log_file = std::fs::File::create(&log)?;
            let status = Command::new(&python)
                .arg(venv.join("llama.cpp/convert_hf_to_gguf.py"))
                .arg(model)
                .args(["--outtype", "f32", "--outfile"])
                .arg(&partial)
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .status()
                .context("could not run llama.cpp's convert_hf_to_gguf.py")?;
            if !status.success() {
                bail!(
                    "llama.cpp's convert_hf_to_gguf.py failed ({status}); see {}",
                    log.display()
                );
            }
            std::fs::rename(&partial, &gguf)?;
        }
        Ok(Peers {
            python,
            scripts: root.join("xtask/src"),
            gguf,
            model: model.to_path_buf(),
            threads,
        })
    }

    /// llama.cpp on the generate workload lmsi's benchmark wrote; an error says why it failed.
    fn llama_cpp(&self, workload: &Path) -> Result<String> {
        self.script("compare_llama_cpp.py", &[&self.gguf, workload])
    }

    /// PyTorch on the train workload.
    fn torch(&self) -> Result<String> {
        self.script("compare_torch.py", &[&self.model])
    }

    fn script(&self, name: &str, args: &[&Path]) -> Result<String> {
        let mut command = Command::new(&self.python);
        command
            .arg(self.scripts.join(name))
            .args(args)
            .arg(self.threads.to_string());
        captured(&mut command).with_context(|| format!("the peer {name}"))
    }
}

/// Runs one of lmsi's benchmarks; returns what it printed.
fn bench(name: &str, env: &[(String, PathBuf)]) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["bench", "-p", "lmsi-benches", "--bench", name])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(crate::workspace_root());
    captured(&mut command)
}

/// Runs `command` with its standard output captured, echoes it, and returns it; fails when the
/// command fails.
fn captured(command: &mut Command) -> Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{stdout}");
    if !output.status.success() {
        bail!("{command:?} failed ({})", output.status);
    }
    Ok(stdout)
}

/// Every run's `bench-result NAME VALUE` lines, by name.
#[derive(Default)]
struct Results(BTreeMap<String, Vec<f64>>);

impl Results {
    fn add(&mut self, output: &str) {
        for line in output.lines() {
            let mut words = line.split_whitespace();
            if let (Some("bench-result"), Some(name), Some(value)) =
                (words.next(), words.next(), words.next())
                && let Ok(value) = value.parse()
            {
                self.0.entry(name.into()).or_default().push(value);
            }
        }
    }

    /// Adds a peer's output; false, saying why, when it failed.
    fn add_peer(&mut self, output: Result<String>) -> bool {
        match output {
            Ok(output) => {
                self.add(&output);
                true
            }
            Err(e) => {
                eprintln!("xtask: {e:#}; dropped from the later rounds");
                false
            }
        }
    }

    /// The Markdown table: each row's lmsi and peer medians (min-max) and the ratio.
    fn table(&self) -> String {
        let mut table = String::from(
            "| workload | lmsi: median (min-max) | peer: median (min-max) | lmsi / peer |\n\
             |---|---|---|---|\n",
        );
        for row in &ROWS {
            let lmsi = self.0.get(row.lmsi).map(|v| Summary::of(v));
            let peer = row
                .peer
                .map(|(name, key)| (name, self.0.get(key).map(|v| Summary::of(v))));
            let ratio = match (&lmsi, &peer) {
                (Some(l), Some((_, Some(p)))) => format!("{:.2}x", l.median / p.median),
                _ => "-".into(),
            };
            let cell =
                |s: &Option<Summary>| s.as_ref().map_or("not run".into(), |s| s.cell(row.share));
            let peer = match &peer {
                Some((name, summary)) => format!("{name}: {}", cell(summary)),
                None => "-".into(),
            };
            table += &format!(
                "| {} | {} | {peer} | {ratio} |\n",
                row.workload,
                cell(&lmsi)
            );
        }
        table
    }
}

/// The median, min and max of one result's runs.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

impl Summary {
    fn of(values: &[f64]) -> Summary {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            runs: n,
        }
    }

    fn cell(&self, share: bool) -> String {
        let f = |v: f64| {
            if share {
                format!("{:.0}%", 100.0 * v)
            } else {
                format!("{v:.1}")
            }
        };
        format!(
            "{} ({}-{}, {} runs)",
            f(self.median),
            f(self.min),
            f(self.max),
            self.runs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_read_from_bench_result_lines_and_summarised() {
        let mut results = Results::default();
        for value in ["200", "250", "230"] {
            results.add(&format!(
                "generate: ...\nbench-result generate.cpu.f32.sampled_tokens_per_s {value}\n"
            ));
        }
        results.add("bench-result generate.llama_cpp.f32.sampled_tokens_per_s 115\nnot a result 3");
        let table = results.table();
        assert!(
            table.contains(
                "| 230.0 (200.0-250.0, 3 runs) | llama.cpp: 115.0 (115.0-115.0, 1 runs) | 2.00x |"
            ),
            "{table}"
        );
        assert!(table.contains("| PyTorch: not run | - |"), "{table}");
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(Summary::of(&[4.0, 1.0, 3.0, 2.0]).median, 2.5);
    }
}
