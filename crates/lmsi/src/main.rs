//! The `lmsi` command line program. See `lmsi --help` and the README.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lmsi::build_data::build_examples;
use lmsi::eval::{EvalMode, evaluate};
use lmsi::generate::{GenerateOptions, PromptKind, generate_paths};
use lmsi::train::TrainOptions;
use lmsi::vote::{VoteOptions, vote_paths};

use lmsi_adamw::ScheduleKind;
use lmsi_cuda::SimConfig;
use lmsi_data::{
    BadLines, ExemplarSet, Loaded, PathRecord, Question, TrainExample, VoteRecord, parse_formats,
    read_jsonl, read_questions, write_atomic, write_jsonl_atomic,
};
use lmsi_sampler::SamplingParams;
use lmsi_transformer::{Backend, CpuBackend, CudaBackend, Dtype, Model, Storage, Tokenizer};
use lmsi_voter::{AnswerKind, EarlyStop, Weighting};

#[derive(Parser)]
#[command(
    name = "lmsi",
    version,
    about = "Language Model Self-Improvement: sample reasoning paths, vote, build data, fine-tune",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole loop: evaluate, generate, vote, build data, train, evaluate again (default: the
    /// embedded seed model and task).
    Run(RunArgs),
    /// Sample chain-of-thought paths for every question.
    Generate(GenerateArgs),
    /// Vote over sampled reasoning paths: each question's majority answer and its confidence.
    Vote(VoteArgs),
    /// Turn the paths that agree with their vote into prompt/completion training data (mixed formats).
    BuildData(BuildDataArgs),
    /// Fine-tune a model on prompt/completion data (AdamW, loss on the completion only).
    Train(TrainArgs),
    /// Accuracy of a model on a labelled test set (greedy or self-consistency).
    Eval(EvalArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Model to improve (default: the embedded seed model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Unlabelled questions (default: the embedded pool of the seed model's task).
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Labelled test questions (default: the embedded test set).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Run directory; running again with the same options resumes it.
    #[arg(long, default_value = "runs/default")]
    work_dir: PathBuf,
    /// Paths per question [default: 32; 16 for the embedded default].
    #[arg(long)]
    paths: Option<usize>,
    /// Sampling temperature of generation and of the first self-consistency evaluation.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Sampling temperature of self-consistency evaluation after training [default: 1.2, the
    /// paper's; 0.7 for the embedded default].
    #[arg(long)]
    eval_temperature: Option<f32>,
    /// Paths per test question for self-consistency evaluation [default: as --paths].
    #[arg(long)]
    eval_paths: Option<usize>,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Few-shot exemplars (JSONL) [default: the built-in set; its first two for the embedded default].
    #[arg(long)]
    exemplars: Option<PathBuf>,
    /// Training data formats: all (the paper's mixed formats) or a list, e.g. cot-fewshot (CoT only)
    /// [default: all; cot-fewshot for the embedded default].
    #[arg(long)]
    formats: Option<String>,
    /// Only questions whose vote confidence reaches this become training data.
    #[arg(long, default_value_t = 0.0)]
    min_confidence: f64,
    /// Learning rate [default: 5e-5, the paper's; 1e-4 for the embedded default].
    #[arg(long)]
    lr: Option<f32>,
    /// Examples per optimizer step [default: 32].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Optimizer steps [default: one epoch; 150 for the embedded default].
    #[arg(long)]
    steps: Option<u64>,
    /// Epochs over the training data, when --steps is not given [default: 1].
    #[arg(long)]
    epochs: Option<f64>,
    /// Linear warm-up steps [default: 0; 10 for the embedded default].
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Repeat the loop with the improved model.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Distillation: train this (smaller) model on the paths of --model.
    #[arg(long)]
    student: Option<PathBuf>,
    /// The model also writes this many new questions of its own (kept when their vote is confident).
    #[arg(long, default_value_t = 0)]
    self_questions: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this stage (e.g. round-1/generate); run again to continue.
    #[arg(long)]
    stop_after: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the models run: cpu, cuda (GPU 0; cuda:N for another), auto (a GPU when one works,
    /// else the CPU) or sim (the CUDA backend on a simulated GPU on the CPU: very slow, for
    /// checking the GPU code path without a GPU; sim:SIZE, e.g. sim:24GiB, sets its memory,
    /// 80GiB by default).
    #[arg(long, default_value = "auto")]
    device: DeviceArg,
    /// Element type of the CUDA backend's weight matrices and KV cache: f32, or bf16 (half the
    /// memory; products sum in f32, training keeps f32 master weights). The CPU computes in f32.
    #[arg(long, default_value = "f32")]
    dtype: Dtype,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Training data (JSONL: {"prompt", "completion", "format"}), e.g. from `lmsi build-data`.
    #[arg(long)]
    data: PathBuf,
    /// Output model directory (Hugging Face layout), with optimizer state and loss log.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 5e-5)]
    lr: f32,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Examples per forward/backward pass (gradients accumulate over a batch); default: the batch.
    #[arg(long)]
    micro_batch_size: Option<usize>,
    /// Optimizer steps (default: --epochs passes over the data).
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f32,
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// Learning-rate schedule after warm-up: cosine, linear or constant.
    #[arg(long, default_value = "cosine")]
    schedule: ScheduleKind,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of the examples held out to report an evaluation loss.
    #[arg(long, default_value_t = 0.0)]
    eval_split: f64,
    /// Evaluate the held-out loss every this many steps.
    #[arg(long, default_value_t = 50)]
    eval_every: u64,
    /// Recompute activations in the backward pass instead of keeping them (less memory, more time).
    #[arg(long)]
    recompute: bool,
    /// Weight decay on every tensor (default: matrices only, not norms, biases and embeddings).
    #[arg(long)]
    decay_all: bool,
    /// Leave out examples longer than this many tokens.
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Write a checkpoint every this many steps (always at the end).
    #[arg(long)]
    save_every: Option<u64>,
    /// Stop after this step, with a checkpoint; continue later with --resume.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Continue the run whose checkpoint is in --out (same options and data).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
struct ModelArgs {
    /// Model directory in Hugging Face layout (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the models run: cpu, cuda (GPU 0; cuda:N for another), auto (a GPU when one works,
    /// else the CPU) or sim (the CUDA backend on a simulated GPU on the CPU: very slow, for
    /// checking the GPU code path without a GPU; sim:SIZE, e.g. sim:24GiB, sets its memory,
    /// 80GiB by default).
    #[arg(long, default_value = "auto")]
    device: DeviceArg,
    /// Element type of the CUDA backend's weight matrices and KV cache: f32, or bf16 (half the
    /// memory; products sum in f32, training keeps f32 master weights). The CPU computes in f32.
    #[arg(long, default_value = "f32")]
    dtype: Dtype,
}

/// `--device`: where models run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceArg {
    Cpu,
    /// The GPU of this ordinal; an error when it cannot be used.
    Cuda(usize),
    /// GPU 0 when it can be used, else the CPU (with a notice).
    Auto,
    /// The CUDA backend on the simulated device, with this many bytes of memory.
    Sim(u64),
}

impl std::str::FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(0)),
            "auto" => Ok(DeviceArg::Auto),
            "sim" => Ok(DeviceArg::Sim(SimConfig::default().memory_bytes)),
            _ => {
                if let Some(size) = s.strip_prefix("sim:") {
                    return parse_size(size).map(DeviceArg::Sim).ok_or_else(|| {
                        format!("--device {s}: expected a size such as 512MiB or 24GiB")
                    });
                }
                s.strip_prefix("cuda:")
                    .and_then(|n| n.parse().ok())
                    .map(DeviceArg::Cuda)
                    .ok_or_else(|| {
                        format!(
                            "unknown device {s:?} (expected cpu, cuda, cuda:N, auto, sim or sim:SIZE)"
                        )
                    })
            }
        }
    }
}

/// `512MiB`, `24GiB` or a plain count of bytes; `None` for anything else (or zero).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return None,
    };
    let n: u64 = digits.parse().ok().filter(|&n| n > 0)?;
    n.checked_mul(1 << shift)
}

/// A backend opened for `--device`.
enum Opened {
    Cpu,
    /// A GPU or the simulated device.
    Cuda(CudaBackend),
}

/// Opens the backend `device` asks for, storing at `dtype`: `cuda` without a usable GPU is an
/// error, `auto` falls back to the CPU and says so on stderr, and the CPU takes only f32.
fn open_device(device: DeviceArg, dtype: Dtype) -> Result<Opened> {
    match device {
        DeviceArg::Cpu if dtype != Dtype::F32 => bail!(
            "--dtype {dtype} needs the CUDA backend (--device cuda or sim); the CPU backend computes in f32"
        ),
        DeviceArg::Cpu => Ok(Opened::Cpu),
        DeviceArg::Cuda(ordinal) => open_cuda(ordinal, dtype).map_err(|e| match ordinal {
            0 => anyhow::anyhow!("--device cuda: {e}"),
            _ => anyhow::anyhow!("--device cuda:{ordinal}: {e}"),
        }),
        DeviceArg::Auto => Ok(open_cuda(0, dtype).unwrap_or_else(|e| {
            eprintln!("lmsi: no usable GPU ({e}); running on the CPU, in f32");
            Opened::Cpu
        })),
        DeviceArg::Sim(memory_bytes) => {
            eprintln!("lmsi: running the CUDA backend on the simulated device (slow)");
            let device = lmsi_cuda::Device::sim_with(SimConfig {
                memory_bytes,
                ..SimConfig::default()
            });
            Ok(Opened::Cuda(CudaBackend::on(device).with_dtype(dtype)))
        }
    }
}

fn open_cuda(ordinal: usize, dtype: Dtype) -> Result<Opened, String> {
    CudaBackend::new(ordinal)
        .map(|b| Opened::Cuda(b.with_dtype(dtype)))
        .map_err(|e| e.to_string())
}

/// Evaluates `$call`, a call of a generic function that takes the backend `$backend`, with the
/// backend `--device` picks: one line per command, compiled once per backend.
macro_rules! on_device {
    ($device:expr, $dtype:expr, $backend:ident => $call:expr) => {
        match open_device($device, $dtype)? {
            Opened::Cpu => {
                let $backend = CpuBackend::new();
                $call
            }
            Opened::Cuda(cuda) => {
                let $backend = cuda;
                $call
            }
        }
    };
}

impl ModelArgs {
    fn load<B: Backend>(&self, backend: B, storage: Storage) -> Result<(Model<B>, Tokenizer)> {
        set_threads(self.threads)?;
        let model = Model::load_for(&self.model, backend, storage)
            .with_context(|| format!("loading the model in {}", self.model.display()))?;
        let tokenizer = Tokenizer::load(&self.model, model.config())
            .with_context(|| format!("loading the tokenizer of {}", self.model.display()))?;
        tracing::info!(
            "{}: {} layers, {:.1}M parameters, on {}",
            self.model.display(),
            model.config().num_layers,
            model.config().parameter_count() as f64 / 1e6,
            model.backend().describe()
        );
        Ok((model, tokenizer))
    }
}

/// How paths are sampled; shared by `generate` and `eval`.
#[derive(Args)]
struct SamplingArgs {
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Keep only the k most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = no limit).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed; the same seed gives the same paths.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most tokens sampled per path.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Prompt: cot-fewshot, cot-zeroshot, direct-fewshot, direct-zeroshot, or raw (the question text as is).
    #[arg(long, default_value = "cot-fewshot")]
    prompt: PromptKind,
    /// Few-shot exemplars (JSONL); the built-in set when not given.
    #[arg(long)]
    exemplars: Option<PathBuf>,
    /// Stop a path before this string (repeatable; default: a blank line or a new "Q:", none for raw).
    #[arg(long)]
    stop: Vec<String>,
    /// Paths decoded together in one batch.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// How to read an answer from a path: number, choice, yesno or text.
    #[arg(long, default_value = "number")]
    answer: AnswerKind,
}

impl SamplingArgs {
    fn options(&self, paths: usize) -> Result<GenerateOptions> {
        Ok(GenerateOptions {
            prompt: self.prompt,
            exemplars: match &self.exemplars {
                Some(path) => ExemplarSet::load(path)?,
                None => ExemplarSet::builtin(),
            },
            paths,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            max_new_tokens: self.max_new_tokens,
            stop: (!self.stop.is_empty()).then(|| self.stop.clone()),
            max_batch: self.max_batch,
            answer: self.answer,
            early_stop: None,
        })
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Questions (JSONL: {"id", "question", "answer"}; GSM8K files load unchanged).
    #[arg(long)]
    questions: PathBuf,
    /// Paths file (JSONL) to write.
    #[arg(long)]
    out: PathBuf,
    /// Paths per question.
    #[arg(long, default_value_t = 32)]
    paths: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop sampling a question early when more paths cannot change its vote:
    /// esc[:WINDOW] (unanimous window) or adaptive[:THRESHOLD] (Beta stopping rule).
    #[arg(long)]
    early_stop: Option<EarlyStop>,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Labelled questions (JSONL with answers; GSM8K files load unchanged).
    #[arg(long)]
    dataset: PathBuf,
    /// Report (JSON) to write.
    #[arg(long)]
    out: PathBuf,
    /// greedy (one greedy path) or sc (self-consistency: majority of --paths sampled paths).
    #[arg(long, default_value = "greedy")]
    mode: EvalMode,
    /// Paths per question in sc mode.
    #[arg(long, default_value_t = 32)]
    paths: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
struct InputArgs {
    /// Skip malformed input lines (and report how many) instead of stopping at the first one.
    #[arg(long)]
    skip_bad: bool,
}

impl InputArgs {
    fn bad_lines(&self) -> BadLines {
        if self.skip_bad {
            BadLines::Skip
        } else {
            BadLines::Error
        }
    }
}

#[derive(Args)]
struct VoteArgs {
    /// Paths file (JSONL) written by `lmsi generate`.
    #[arg(long)]
    paths: PathBuf,
    /// Votes file (JSONL) to write.
    #[arg(long)]
    out: PathBuf,
    /// How to read an answer from a path: number, choice, yesno or text.
    #[arg(long, default_value = "number")]
    answer: AnswerKind,
    /// Count each path once (uniform) or by exp of its mean token log-prob (logprob).
    #[arg(long, default_value = "uniform")]
    weighting: Weighting,
    /// Leave out questions whose vote confidence (votes / valid paths) is below this.
    #[arg(long, default_value_t = 0.0)]
    min_confidence: f64,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
struct BuildDataArgs {
    /// Votes file (JSONL) written by `lmsi vote`.
    #[arg(long)]
    votes: PathBuf,
    /// The paths file the votes were made from.
    #[arg(long)]
    paths: PathBuf,
    /// Training data file (JSONL) to write.
    #[arg(long)]
    out: PathBuf,
    /// `all` or a comma-separated list of cot-fewshot, direct-fewshot, cot-zeroshot, direct-zeroshot.
    #[arg(long, default_value = "all")]
    formats: String,
    /// Few-shot exemplars (JSONL); the built-in set when not given.
    #[arg(long)]
    exemplars: Option<PathBuf>,
    #[command(flatten)]
    input: InputArgs,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LMSI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {}", error_message(&error));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: the library errors already put the
/// operating system's words in their own message (`config.json: No such file or directory`).
fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_loop(args),
        Command::Generate(args) => generate(args),
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Vote(args) => vote(args),
        Command::BuildData(args) => build_data(args),
    }
}

/// Reads a JSONL file, reporting skipped lines on stderr.
fn load<T: serde::de::DeserializeOwned>(path: &Path, input: &InputArgs) -> Result<Vec<T>> {
    let Loaded { items, skipped } = read_jsonl(path, input.bad_lines())?;
    report_skipped(path, &skipped);
    Ok(items)
}

fn load_questions(path: &Path, input: &InputArgs) -> Result<Vec<Question>> {
    let Loaded { items, skipped } = read_questions(path, input.bad_lines())?;
    report_skipped(path, &skipped);
    Ok(items)
}

fn report_skipped(path: &std::path::Path, skipped: &[lmsi_data::SkippedLine]) {
    if !skipped.is_empty() {
        eprintln!(
            "skipped {} malformed line(s) of {}:",
            skipped.len(),
            path.display()
        );
        for line in skipped {
            eprintln!("  {}:{}: {}", path.display(), line.line, line.message);
        }
    }
}

fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {what} ({{per_sec}}, eta {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

fn generate(args: GenerateArgs) -> Result<()> {
    on_device!(args.model.device, args.model.dtype, backend => generate_on(&args, backend))
}

fn generate_on<B: Backend>(args: &GenerateArgs, backend: B) -> Result<()> {
    let questions = load_questions(&args.questions, &args.input)?;
    let mut options = args.sampling.options(args.paths)?;
    options.early_stop = args.early_stop;
    let (model, tokenizer) = args.model.load(backend, Storage::Inference)?;
    let bar = progress_bar(questions.len() * args.paths, "paths");
    let (paths, stats) = generate_paths(&model, &tokenizer, &questions, &options, &mut |_| {
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    write_jsonl_atomic(&args.out, &paths)?;
    let mut line = format!(
        "{} questions, {} paths; prompt {:.0} tokens/s, sampled {:.1} tokens/s ({} tokens in {:.1} s)",
        questions.len(),
        paths.len(),
        stats.prompt_tokens_per_second(),
        stats.sampled_tokens_per_second(),
        stats.sampled_tokens,
        stats.seconds
    );
    if args.early_stop.is_some() {
        line += &format!(", early stop saved {} paths", stats.paths_saved);
    }
    println!("{line} -> {}", args.out.display());
    Ok(())
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting the number of threads")?;
    }
    Ok(())
}

fn run_loop(args: RunArgs) -> Result<()> {
    use lmsi::run::{Event, RunConfig, VoteSettings};
    set_threads(args.threads)?;
    let embedded = args.model.is_none();
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let model = match &args.model {
        Some(dir) => dir.clone(),
        None => lmsi::embedded::seed_model(&args.work_dir.join("seed-model"))?,
    };
    let (questions, eval) = match (&args.questions, &args.eval) {
        (Some(q), Some(e)) => (q.clone(), e.clone()),
        (q, e) => {
            let (pool, test) = lmsi::embedded::default_data(&args.work_dir)?;
            (q.clone().unwrap_or(pool), e.clone().unwrap_or(test))
        }
    };
    let defaults = if embedded {
        lmsi::embedded::settings()
    } else {
        lmsi::embedded::Settings::paper()
    };
    let exemplars = match &args.exemplars {
        Some(path) => ExemplarSet::load(path)?,
        None => ExemplarSet::builtin().first(defaults.exemplars)?,
    };
    let paths = args.paths.unwrap_or(defaults.paths);
    let generate = GenerateOptions {
        prompt: PromptKind::Format(lmsi_data::PromptFormat::CotFewshot),
        exemplars,
        paths,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        max_new_tokens: args.max_new_tokens.unwrap_or(defaults.max_new_tokens),
        stop: None,
        max_batch: defaults.max_batch,
        answer: AnswerKind::Number,
        early_stop: None,
    };
    let train = TrainOptions {
        lr: args.lr.unwrap_or(defaults.train.lr),
        batch_size: args.batch_size.unwrap_or(defaults.train.batch_size),
        steps: args.steps.or(defaults.train.steps),
        epochs: args.epochs.unwrap_or(defaults.train.epochs),
        warmup_steps: args.warmup_steps.unwrap_or(defaults.train.warmup_steps),
        seed: args.seed,
        ..defaults.train.clone()
    };
    let vote = VoteOptions {
        min_confidence: args.min_confidence,
        ..VoteOptions::default()
    };
    let config = RunConfig {
        model,
        questions,
        eval,
        generate_summary: format!("{generate:?}"),
        generate,
        eval_paths: args.eval_paths.unwrap_or(paths),
        eval_temperature: args.eval_temperature.unwrap_or(defaults.eval_temperature),
        vote: VoteSettings::from_options(&vote),
        formats: parse_formats(args.formats.as_deref().unwrap_or(defaults.formats))?,
        train,
        rounds: args.rounds,
        student: args.student.clone(),
        self_questions: args.self_questions,
        self_question_confidence: 0.6,
    };
    let bar = ProgressBar::hidden();
    let mut current = String::new();
    let mut on_event = |event: lmsi::run::Event<'_>| match event {
        Event::Start { stage, work } => {
            current = stage.to_string();
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.reset();
            bar.set_length(work as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:28} {elapsed_precise} [{bar:30}] {pos}/{len}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(current.clone());
        }
        Event::Progress => bar.inc(1),
        Event::Done {
            stage,
            seconds,
            summary,
        } => {
            bar.finish_and_clear();
            println!("{stage:28} {seconds:7.1} s  {summary}");
        }
        Event::Skipped { stage } => println!(
            "{stage:28}    done  (resumed from {})",
            args.work_dir.display()
        ),
    };
    let stop_after = args.stop_after.as_deref();
    let report = on_device!(args.device, args.dtype, backend => {
        run_on(backend, &config, &args.work_dir, stop_after, &mut on_event)
    })?;
    let Some(report) = report else {
        println!(
            "stopped after {}; run the same command again to continue",
            args.stop_after.unwrap_or_default()
        );
        return Ok(());
    };
    let pct = |x: f64| format!("{:5.1}%", 100.0 * x);
    println!();
    println!("                     greedy   self-consistency");
    println!(
        "before               {}   {}",
        pct(report.before.greedy_accuracy),
        pct(report.before.sc_accuracy)
    );
    println!(
        "after                {}   {}",
        pct(report.after.greedy_accuracy),
        pct(report.after.sc_accuracy)
    );
    if let Some(v) = report.vote_accuracy {
        println!(
            "vote accuracy on the pool (gold read for this report only): {}",
            pct(v)
        );
    }
    println!(
        "{} seconds in all; report: {}",
        report.seconds.values().sum::<f64>().round(),
        args.work_dir.join("report.md").display()
    );
    Ok(())
}

/// Runs the loop with models loaded on `backend` (each model on its own handle of it).
fn run_on<B: Backend + Clone>(
    backend: B,
    config: &lmsi::run::RunConfig,
    work_dir: &Path,
    stop_after: Option<&str>,
    on_event: &mut dyn FnMut(lmsi::run::Event<'_>),
) -> Result<Option<lmsi::run::RunReport>> {
    let load =
        |dir: &Path, storage: Storage| -> std::result::Result<(Model<B>, Tokenizer), lmsi::Error> {
            let model = Model::load_for(dir, backend.clone(), storage)?;
            let tokenizer = Tokenizer::load(dir, model.config())?;
            Ok((model, tokenizer))
        };
    Ok(lmsi::run::run(
        config, work_dir, &load, stop_after, on_event,
    )?)
}

fn train(args: TrainArgs) -> Result<()> {
    let examples: Vec<TrainExample> = load(&args.data, &args.input)?;
    if examples.is_empty() {
        bail!("{}: no training examples", args.data.display());
    }
    let options = TrainOptions {
        lr: args.lr,
        batch_size: args.batch_size,
        micro_batch_size: args.micro_batch_size,
        steps: args.steps,
        epochs: args.epochs,
        weight_decay: args.weight_decay,
        warmup_steps: args.warmup_steps,
        schedule: args.schedule,
        grad_clip: args.grad_clip,
        seed: args.seed,
        eval_fraction: args.eval_split,
        eval_every: args.eval_every,
        recompute: args.recompute,
        decay_all: args.decay_all,
        max_tokens: args.max_tokens,
        save_every: args.save_every,
        stop_after: args.stop_after,
        resume: args.resume,
    };
    // A resumed run continues from the checkpoint's weights, not from --model's.
    let mut model_args = args.model;
    if args.resume {
        model_args.model = args.out.clone();
    }
    on_device!(model_args.device, model_args.dtype, backend => {
        train_on(&model_args, &examples, &options, &args.out, backend)
    })
}

fn train_on<B: Backend>(
    model_args: &ModelArgs,
    examples: &[TrainExample],
    options: &TrainOptions,
    out: &Path,
    backend: B,
) -> Result<()> {
    let (mut model, tokenizer) = model_args.load(backend, Storage::Training)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let report = lmsi::train::train(
        &mut model,
        &tokenizer,
        &model_args.model,
        examples,
        options,
        out,
        &mut |log, total| {
            bar.set_length(total);
            bar.set_position(log.step);
            bar.set_message(format!(
                "loss {:.4}, lr {:.2e}, {:.0} tokens/s",
                log.loss,
                log.lr,
                log.tokens as f64 / log.seconds.max(1e-9)
            ));
        },
    )?;
    bar.finish_and_clear();
    let mut line = format!(
        "step {}/{}: loss {:.4} -> {:.4}",
        report.step, report.total_steps, report.first_loss, report.last_loss
    );
    if let Some(eval) = report.eval_loss {
        line += &format!(
            ", held-out loss {eval:.4} ({} examples)",
            report.eval_examples
        );
    }
    if report.too_long > 0 {
        line += &format!(", {} examples over --max-tokens left out", report.too_long);
    }
    line += &format!(
        ", {:.0} tokens/s, {:.1} s",
        report.tokens_per_second, report.seconds
    );
    println!("{line} -> {}", out.display());
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    on_device!(args.model.device, args.model.dtype, backend => eval_on(&args, backend))
}

fn eval_on<B: Backend>(args: &EvalArgs, backend: B) -> Result<()> {
    let questions = load_questions(&args.dataset, &args.input)?;
    let options = args.sampling.options(args.paths)?;
    let (model, tokenizer) = args.model.load(backend, Storage::Inference)?;
    let paths = if args.mode == EvalMode::Greedy {
        1
    } else {
        args.paths
    };
    let bar = progress_bar(questions.len() * paths, "paths");
    let report = evaluate(
        &model,
        &tokenizer,
        &questions,
        args.mode,
        &options,
        &mut |_| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&args.out, json.as_bytes())?;
    println!("{} -> {}", report.summary(), args.out.display());
    Ok(())
}

fn vote(args: VoteArgs) -> Result<()> {
    let paths: Vec<PathRecord> = load(&args.paths, &args.input)?;
    let options = VoteOptions {
        kind: args.answer,
        weighting: args.weighting,
        min_confidence: args.min_confidence,
    };
    let (votes, summary) = vote_paths(&paths, &options)
        .with_context(|| format!("voting over {}", args.paths.display()))?;
    write_jsonl_atomic(&args.out, &votes)?;
    let mut line = format!(
        "{} questions, {} voted, mean confidence {:.3}",
        summary.questions, summary.voted, summary.mean_confidence
    );
    if summary.below_confidence > 0 {
        line += &format!(
            ", {} below --min-confidence left out",
            summary.below_confidence
        );
    }
    if let (Some(accuracy), Some((correct, n))) = (summary.accuracy(), summary.gold) {
        line += &format!(", vote accuracy {:.1}% ({correct}/{n})", 100.0 * accuracy);
    }
    println!("{line} -> {}", args.out.display());
    Ok(())
}

fn build_data(args: BuildDataArgs) -> Result<()> {
    let formats = parse_formats(&args.formats)?;
    let exemplars = match &args.exemplars {
        Some(path) => ExemplarSet::load(path)?,
        None => ExemplarSet::builtin(),
    };
    let votes: Vec<VoteRecord> = load(&args.votes, &args.input)?;
    let paths: Vec<PathRecord> = load(&args.paths, &args.input)?;
    let (examples, summary) = build_examples(&votes, &paths, &formats, &exemplars)
        .with_context(|| format!("building data from {}", args.votes.display()))?;
    write_jsonl_atomic(&args.out, &examples)?;
    let per_format: Vec<String> = summary
        .per_format
        .iter()
        .map(|(f, n)| format!("{f} {n}"))
        .collect();
    println!(
        "{} examples from {} paths of {} questions ({}) -> {}",
        summary.examples(),
        summary.kept_paths,
        summary.questions,
        per_format.join(", "),
        args.out.display()
    );
    Ok(())
}
