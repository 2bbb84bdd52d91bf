//! The command line: every command's arguments (clap), the flag groups several commands share
//! (`DeviceArgs`, `ModelArgs`, `SamplingArgs`, `InputArgs`), and each group turned into its
//! configuration.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use lmsi::eval::EvalMode;
use lmsi::generate::{GenerateOptions, PromptKind};
use lmsi::objective::Objective;
use lmsi::run::RunConfig;
use lmsi::shard::ShardArg;
use lmsi::train::TrainOptions;
use lmsi::ttrl::TtrlOptions;
use lmsi::vote::{VoteControl, VoteOptions};
use lmsi_adamw::ScheduleKind;
use lmsi_cuda::SimConfig;
use lmsi_data::{BadLines, Dataset, ExemplarSet, parse_formats};
use lmsi_sampler::SamplingParams;
use lmsi_transformer::Dtype;
use lmsi_voter::{AnswerKind, EarlyStop, Weighting};

use crate::numbers::{
    at_least_one, fraction, held_out_fraction, non_negative, positive, probability_mass,
};

#[derive(Parser)]
#[command(
    name = "lmsi",
    version,
    about = "Language Model Self-Improvement: sample reasoning paths, vote, build data, fine-tune",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The whole loop: evaluate, generate, vote, build data, train, evaluate again (default: the
    /// embedded seed model and task).
    Run(Box<RunArgs>),
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
    /// Join the outputs of `generate --shard` or `eval --shard` into what the unsharded command writes.
    Merge(MergeArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Model to improve: a Hugging Face model directory or a GGUF file (default: the embedded seed
    /// model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Unlabelled questions, lmsi's JSONL or a benchmark dataset's file, whose fields tell the
    /// dataset (default: the embedded pool of the seed model's task).
    #[arg(long)]
    pub questions: Option<PathBuf>,
    /// Labelled test questions (default: the embedded test set).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// The dataset that --questions, --eval and --probe hold: gsm8k, svamp, aqua-rat, drop, arc,
    /// openbookqa, strategyqa, anli, mnli, rte or commonsenseqa (default: told by the pool's fields).
    #[arg(long)]
    pub format: Option<Dataset>,
    /// Run directory; running again with the same options resumes it.
    #[arg(long, default_value = "runs/default")]
    pub work_dir: PathBuf,
    /// Paths per question [default: 32; 16 for the embedded default].
    #[arg(long, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub paths: Option<usize>,
    /// Sampling temperature of generation and of the first self-consistency evaluation.
    #[arg(long, default_value_t = 0.7, value_parser = non_negative::<f32>, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sampling temperature of self-consistency evaluation after training [default: 1.2, the
    /// paper's; 0.7 for the embedded default].
    #[arg(long, value_parser = non_negative::<f32>, allow_negative_numbers = true)]
    pub eval_temperature: Option<f32>,
    /// Paths per test question for self-consistency evaluation [default: as --paths].
    #[arg(long, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub eval_paths: Option<usize>,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0, value_parser = probability_mass, allow_negative_numbers = true)]
    pub top_p: f32,
    #[arg(long, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub max_new_tokens: Option<usize>,
    /// Few-shot exemplars (JSONL) [default: the built-in set; its first two for the embedded
    /// default], or `self`: the model writes them (the paper's section 3.3: zero-shot "Let's think
    /// step by step." paths on pool questions, voted; the most consistent become the exemplars, as
    /// many as the default set has).
    #[arg(long)]
    pub exemplars: Option<PathBuf>,
    /// Training data formats: all (the paper's mixed formats) or a list, e.g. cot-fewshot (CoT only)
    /// [default: all; cot-fewshot for the embedded default].
    #[arg(long)]
    pub formats: Option<String>,
    /// Which answer each question's vote keeps: majority (the method), or random-vote (the
    /// spurious-vote control: a random one of its distinct sampled answers; a gain that survives it
    /// is not the vote's doing).
    #[arg(long, default_value = "majority")]
    pub control: VoteControl,
    /// Only questions whose vote confidence reaches this become training data.
    #[arg(long, default_value_t = 0.0, value_parser = fraction, allow_negative_numbers = true)]
    pub min_confidence: f64,
    /// What each round trains toward: sft (the paper: the paths that reach the vote), weighted
    /// (every answered path, weighted by its answer's vote share), scpo (DPO on pairs of a voted
    /// path against a less-voted one, weighted by the vote margin) or ttrl (online RL: sample,
    /// vote, reward agreement with the majority, policy-gradient step, repeat).
    #[arg(long, default_value = "sft")]
    pub objective: Objective,
    /// scpo: DPO's β, how far the model may move from the round's starting model.
    #[arg(long, default_value_t = 0.1, value_parser = positive::<f64>, allow_negative_numbers = true)]
    pub beta: f64,
    /// scpo: weight of the chosen path's length-normalised likelihood added to the DPO loss (IRPO's
    /// α; 0: DPO alone).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative::<f64>, allow_negative_numbers = true)]
    pub nll: f64,
    /// ttrl: sampling steps per round.
    #[arg(long, default_value_t = TtrlOptions::default().steps, value_parser = at_least_one::<u64>, allow_negative_numbers = true)]
    pub ttrl_steps: u64,
    /// ttrl: pool questions per step.
    #[arg(long, default_value_t = TtrlOptions::default().questions, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub ttrl_questions: usize,
    /// ttrl: paths per question per step (the group its reward is normalised in; at least 2).
    #[arg(long, default_value_t = TtrlOptions::default().paths, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub ttrl_paths: usize,
    /// ttrl: policy updates per sampled batch (after the first the clipped ratio matters).
    #[arg(long, default_value_t = TtrlOptions::default().updates, value_parser = at_least_one::<u64>, allow_negative_numbers = true)]
    pub ttrl_updates: u64,
    /// ttrl: PPO's clip ε of the probability ratio.
    #[arg(long, default_value_t = TtrlOptions::default().clip, value_parser = fraction, allow_negative_numbers = true)]
    pub clip: f64,
    /// A small labelled set (JSONL questions with answers, never trained on) whose greedy accuracy
    /// is measured after every round and every --probe-every ttrl steps: when it falls below its
    /// best, the loop stops and keeps the best model. Without it, a label-free rule stops the loop
    /// when the answers collapse (majority share near 1, fewer distinct answers, entropy halved).
    #[arg(long)]
    pub probe: Option<PathBuf>,
    /// ttrl: the stop rule looks every this many steps.
    #[arg(long, default_value_t = TtrlOptions::default().probe_every, value_parser = at_least_one::<u64>, allow_negative_numbers = true)]
    pub probe_every: u64,
    /// ttrl: weight of the KL penalty to the round's starting model (0: none).
    #[arg(long, default_value_t = TtrlOptions::default().kl, value_parser = non_negative::<f64>, allow_negative_numbers = true)]
    pub kl: f64,
    /// Learning rate [default: 5e-5, the paper's; 1e-4 for the embedded default; for ttrl, whose
    /// policy-gradient steps push probability away from paths as well as toward them, 1e-5 and
    /// 2e-5].
    #[arg(long, value_parser = positive::<f32>, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Examples per optimizer step [default: 32].
    #[arg(long, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub batch_size: Option<usize>,
    /// Optimizer steps [default: one epoch; 150 for the embedded default].
    #[arg(long, value_parser = at_least_one::<u64>, allow_negative_numbers = true)]
    pub steps: Option<u64>,
    /// Epochs over the training data, when --steps is not given [default: 1].
    #[arg(long, value_parser = positive::<f64>, allow_negative_numbers = true)]
    pub epochs: Option<f64>,
    /// Linear warm-up steps [default: 0; 10 for the embedded default].
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Repeat the loop with the improved model.
    #[arg(long, default_value_t = 1, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub rounds: usize,
    /// Round 1's paths, already sampled (by `lmsi generate`, or `lmsi merge` of its shards), instead
    /// of generating them: every pool question must have its paths there, and no other question.
    #[arg(long)]
    pub paths_from: Option<PathBuf>,
    /// Stop sampling a pool question early when more paths cannot change its vote (the generate
    /// stages; evaluations keep every path): esc[:WINDOW] or adaptive[:THRESHOLD]. A question's
    /// paths are decoded in waves the rule can stop.
    #[arg(long)]
    pub early_stop: Option<EarlyStop>,
    /// Distillation: train this (smaller) model, a directory or a GGUF file, on the paths of --model.
    #[arg(long)]
    pub student: Option<PathBuf>,
    /// The model also writes this many new questions of its own (kept when their vote is confident).
    #[arg(long, default_value_t = 0)]
    pub self_questions: usize,
    /// Which defaults fill the options not given: paper (the paper's settings; the default with
    /// --model) or embedded (sized for the seed model on a laptop, as the values in brackets say;
    /// the default without --model), e.g. for a seed model built with other recipe knobs.
    #[arg(long, value_enum)]
    pub settings: Option<SettingsKind>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this stage (e.g. round-1/generate); run again to continue.
    #[arg(long)]
    pub stop_after: Option<String>,
    /// When an input (model, questions, test set, student) changed since the run directory was
    /// started, redo the stages that read it; without this the run refuses to continue.
    #[arg(long)]
    pub redo_changed: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The defaults of `lmsi run --settings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SettingsKind {
    Paper,
    Embedded,
}

impl RunArgs {
    /// The run's configuration: every option given, the embedded default's (unpacked into the
    /// work directory) or the paper's for the rest.
    pub fn config(&self) -> Result<RunConfig> {
        let embedded = self.model.is_none();
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("creating {}", self.work_dir.display()))?;
        let model = match &self.model {
            Some(dir) => dir.clone(),
            None => lmsi::embedded::seed_model(&self.work_dir.join("seed-model"))?,
        };
        let (questions, eval) = match (&self.questions, &self.eval) {
            (Some(q), Some(e)) => (q.clone(), e.clone()),
            (q, e) => {
                let (pool, test) = lmsi::embedded::default_data(&self.work_dir)?;
                (q.clone().unwrap_or(pool), e.clone().unwrap_or(test))
            }
        };
        let defaults = match self.settings {
            Some(SettingsKind::Embedded) => lmsi::embedded::settings(),
            Some(SettingsKind::Paper) => lmsi::embedded::Settings::paper(),
            None if embedded => lmsi::embedded::settings(),
            None => lmsi::embedded::Settings::paper(),
        };
        let self_written = self.exemplars.as_deref() == Some(std::path::Path::new("self"));
        // The pool's dataset gives the answer kind and, for datasets other than arithmetic word
        // problems, the exemplars.
        let dataset = match self.format {
            Some(dataset) => dataset,
            None => lmsi_data::read_dataset(&questions, None, BadLines::Error)?.dataset,
        };
        let exemplars = match &self.exemplars {
            Some(path) if !self_written => ExemplarSet::load(path)?,
            _ if dataset.answer_kind() != AnswerKind::Number => dataset.exemplars(),
            _ => ExemplarSet::builtin().first(defaults.exemplars)?,
        };
        let paths = self.paths.unwrap_or(defaults.paths);
        let generate = GenerateOptions {
            prompt: PromptKind::Format(lmsi_data::PromptFormat::CotFewshot),
            exemplars,
            paths,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            max_new_tokens: self.max_new_tokens.unwrap_or(defaults.max_new_tokens),
            stop: None,
            max_batch: defaults.max_batch,
            answer: dataset.answer_kind(),
            early_stop: self.early_stop,
        };
        let train = TrainOptions {
            lr: self.lr.unwrap_or(match self.objective {
                Objective::Ttrl => defaults.ttrl_lr,
                _ => defaults.train.lr,
            }),
            batch_size: self.batch_size.unwrap_or(defaults.train.batch_size),
            steps: self.steps.or(defaults.train.steps),
            epochs: self.epochs.unwrap_or(defaults.train.epochs),
            warmup_steps: self.warmup_steps.unwrap_or(defaults.train.warmup_steps),
            seed: self.seed,
            beta: self.beta,
            nll: self.nll,
            ..defaults.train.clone()
        };
        let vote = VoteOptions {
            kind: dataset.answer_kind(),
            min_confidence: self.min_confidence,
            control: self.control,
            seed: self.seed,
            ..VoteOptions::default()
        };
        Ok(RunConfig {
            model,
            questions,
            eval,
            generate,
            eval_paths: self.eval_paths.unwrap_or(paths),
            eval_temperature: self.eval_temperature.unwrap_or(defaults.eval_temperature),
            vote,
            formats: parse_formats(self.formats.as_deref().unwrap_or(defaults.formats))?,
            train,
            rounds: self.rounds,
            student: self.student.clone(),
            self_questions: self.self_questions,
            self_question_confidence: 0.6,
            objective: self.objective,
            ttrl: TtrlOptions {
                steps: self.ttrl_steps,
                questions: self.ttrl_questions,
                paths: self.ttrl_paths,
                updates: self.ttrl_updates,
                clip: self.clip,
                kl: self.kl,
                probe_every: self.probe_every,
            },
            probe: self.probe.clone(),
            self_exemplars: self_written.then_some(defaults.exemplars),
            paths_from: self.paths_from.clone(),
            format: self.format,
        })
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data (JSONL: {"prompt", "completion", "format"}, and "weight" where an example's
    /// loss counts other than once), e.g. from `lmsi build-data`.
    #[arg(long, required_unless_present = "pairs", conflicts_with = "pairs")]
    pub data: Option<PathBuf>,
    /// Preference pairs instead (JSONL: {"prompt", "chosen", "rejected", "weight", "format"}, from
    /// `lmsi build-data --objective scpo`), trained with the DPO loss against the model as given.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// DPO's β for --pairs.
    #[arg(long, default_value_t = 0.1, value_parser = positive::<f64>, allow_negative_numbers = true)]
    pub beta: f64,
    /// The weight of the chosen completion's length-normalised likelihood added to --pairs' DPO
    /// loss (0: DPO alone).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative::<f64>, allow_negative_numbers = true)]
    pub nll: f64,
    /// Output model directory (Hugging Face layout), with optimizer state and loss log.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 5e-5, value_parser = positive::<f32>, allow_negative_numbers = true)]
    pub lr: f32,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 32, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Examples per forward/backward pass (gradients accumulate over a batch); default: the batch.
    #[arg(long, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub micro_batch_size: Option<usize>,
    /// Optimizer steps (default: --epochs passes over the data).
    #[arg(long, value_parser = at_least_one::<u64>, allow_negative_numbers = true)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 1.0, value_parser = positive::<f64>, allow_negative_numbers = true)]
    pub epochs: f64,
    #[arg(long, default_value_t = 0.01, value_parser = non_negative::<f32>, allow_negative_numbers = true)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Learning-rate schedule after warm-up: cosine, linear or constant.
    #[arg(long, default_value = "cosine")]
    pub schedule: ScheduleKind,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative::<f64>, allow_negative_numbers = true)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of the examples held out to report an evaluation loss.
    #[arg(long, default_value_t = 0.0, value_parser = held_out_fraction, allow_negative_numbers = true)]
    pub eval_split: f64,
    /// Evaluate the held-out loss every this many steps.
    #[arg(long, default_value_t = 50, value_parser = at_least_one::<u64>, allow_negative_numbers = true)]
    pub eval_every: u64,
    /// Recompute activations in the backward pass instead of keeping them (less memory, more time).
    #[arg(long)]
    pub recompute: bool,
    /// Weight decay on every tensor (default: matrices only, not norms, biases and embeddings).
    #[arg(long)]
    pub decay_all: bool,
    /// Leave out examples longer than this many tokens.
    #[arg(long, default_value_t = 2048, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Write a checkpoint every this many steps (always at the end).
    #[arg(long, value_parser = at_least_one::<u64>, allow_negative_numbers = true)]
    pub save_every: Option<u64>,
    /// Stop after this step, with a checkpoint; continue later with --resume.
    #[arg(long, value_parser = at_least_one::<u64>, allow_negative_numbers = true)]
    pub stop_after: Option<u64>,
    /// Continue the run whose checkpoint is in --out (same options and data).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub input: InputArgs,
}

impl TrainArgs {
    /// The training options the flags give.
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            lr: self.lr,
            batch_size: self.batch_size,
            micro_batch_size: self.micro_batch_size,
            steps: self.steps,
            epochs: self.epochs,
            weight_decay: self.weight_decay,
            warmup_steps: self.warmup_steps,
            schedule: self.schedule,
            grad_clip: self.grad_clip,
            seed: self.seed,
            eval_fraction: self.eval_split,
            eval_every: self.eval_every,
            recompute: self.recompute,
            decay_all: self.decay_all,
            max_tokens: self.max_tokens,
            beta: self.beta,
            nll: self.nll,
            save_every: self.save_every,
            stop_after: self.stop_after,
            resume: self.resume,
        }
    }
}

#[derive(Args)]
pub struct ModelArgs {
    /// Model: a directory in Hugging Face layout (config.json, model.safetensors, tokenizer.json) or a
    /// GGUF file (llama or qwen2; every tensor type dequantised to f32 on load).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Where models run: `--threads`, `--device` and `--dtype`, shared by every command that computes.
#[derive(Args)]
pub struct DeviceArgs {
    /// Worker threads, at least 1 (default: all cores).
    #[arg(long, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// Where the models run: cpu, cuda (GPU 0; cuda:N for another), auto (a GPU when one works,
    /// else the CPU) or sim (the CUDA backend on a simulated GPU on the CPU: very slow, for
    /// checking the GPU code path without a GPU; sim:SIZE, e.g. sim:24GiB, sets its memory,
    /// 80GiB by default).
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Element type of the CUDA backend's weight matrices and KV cache: f32, or bf16 (half the
    /// memory; products sum in f32, training keeps f32 master weights). The CPU computes in f32.
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,
}

/// `--device`: where models run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
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

/// How paths are sampled; shared by `generate` and `eval`.
#[derive(Args)]
pub struct SamplingArgs {
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7, value_parser = non_negative::<f32>, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = no limit).
    #[arg(long, default_value_t = 1.0, value_parser = probability_mass, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Random seed; the same seed gives the same paths.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most tokens sampled per path.
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub max_new_tokens: usize,
    /// Prompt: cot-fewshot, cot-zeroshot, direct-fewshot, direct-zeroshot, or raw (the question text as is).
    #[arg(long, default_value = "cot-fewshot")]
    pub prompt: PromptKind,
    /// Few-shot exemplars (JSONL); the built-in set when not given.
    #[arg(long)]
    pub exemplars: Option<PathBuf>,
    /// Stop a path before this string (repeatable; default: a blank line or a new "Q:", none for raw).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Paths decoded together in one batch.
    #[arg(long, default_value_t = 32, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub max_batch: usize,
    /// How to read an answer from a path: number, choice, yesno or text (default: the dataset's).
    #[arg(long)]
    pub answer: Option<AnswerKind>,
}

impl SamplingArgs {
    /// The generation options for questions of `dataset`, whose answer kind and exemplars are
    /// the defaults of --answer and --exemplars.
    pub fn options(&self, paths: usize, dataset: Dataset) -> Result<GenerateOptions> {
        Ok(GenerateOptions {
            prompt: self.prompt,
            exemplars: match &self.exemplars {
                Some(path) => ExemplarSet::load(path)?,
                None => dataset.exemplars(),
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
            answer: self.answer.unwrap_or(dataset.answer_kind()),
            early_stop: None,
        })
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Questions: lmsi's JSONL ({"id", "question", "answer"}; GSM8K files load unchanged) or a
    /// benchmark dataset's file in its published format (JSONL, JSON or parquet; see --format).
    #[arg(long)]
    pub questions: PathBuf,
    /// Paths file (JSONL) to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Paths per question.
    #[arg(long, default_value_t = 32, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub paths: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop sampling a question early when more paths cannot change its vote:
    /// esc[:WINDOW] (unanimous window) or adaptive[:THRESHOLD] (Beta stopping rule).
    #[arg(long)]
    pub early_stop: Option<EarlyStop>,
    /// Work on one shard of the questions: I/N (1-based; a split by question id), or auto (from a
    /// Slurm job array or a Kubernetes Indexed Job). Writes OUT.shard.json beside OUT for `lmsi merge`.
    #[arg(long)]
    pub shard: Option<ShardArg>,
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Labelled questions: lmsi's JSONL with answers, or a benchmark dataset's file in its
    /// published format (JSONL, JSON or parquet; see --format).
    #[arg(long, required_unless_present = "suite", conflicts_with = "suite")]
    pub dataset: Option<PathBuf>,
    /// A suite of datasets (JSON: a list of {"path", "name", "format", "prompt", "paths"}, only
    /// "path" required; or a .toml file with a [[dataset]] table each): each is evaluated greedy
    /// and by self-consistency, and --out gets one table (JSON, and Markdown beside it).
    #[arg(long, conflicts_with = "shard")]
    pub suite: Option<PathBuf>,
    /// Report (JSON) to write.
    #[arg(long)]
    pub out: PathBuf,
    /// greedy (one greedy path) or sc (self-consistency: majority of --paths sampled paths).
    #[arg(long, default_value = "greedy")]
    pub mode: EvalMode,
    /// Paths per question in sc mode.
    #[arg(long, default_value_t = 32, value_parser = at_least_one::<usize>, allow_negative_numbers = true)]
    pub paths: usize,
    /// sc mode: stop sampling a question early when more paths cannot change its vote, the vote
    /// taken over the paths sampled: esc[:WINDOW] or adaptive[:THRESHOLD].
    #[arg(long, conflicts_with = "suite")]
    pub early_stop: Option<EarlyStop>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Work on one shard of the questions: I/N (1-based; a split by question id), or auto (from a
    /// Slurm job array or a Kubernetes Indexed Job). Writes OUT.shard.json beside OUT for `lmsi merge`.
    #[arg(long)]
    pub shard: Option<ShardArg>,
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Args)]
pub struct MergeArgs {
    /// The merged file to write (paths JSONL, or an eval report).
    #[arg(long)]
    pub out: PathBuf,
    /// The shards' outputs, each with its OUT.shard.json beside it, in any order.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

#[derive(Args)]
pub struct InputArgs {
    /// Skip malformed input lines (and report how many) instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// The dataset the questions file holds: gsm8k, svamp, aqua-rat, drop, arc, openbookqa,
    /// strategyqa, anli, mnli, rte or commonsenseqa (default: told by its fields). JSONL, JSON and
    /// parquet files are read by their extension.
    #[arg(long)]
    pub format: Option<Dataset>,
}

impl InputArgs {
    pub fn bad_lines(&self) -> BadLines {
        if self.skip_bad {
            BadLines::Skip
        } else {
            BadLines::Error
        }
    }
}

#[derive(Args)]
pub struct VoteArgs {
    /// Paths file (JSONL) written by `lmsi generate`.
    #[arg(long)]
    pub paths: PathBuf,
    /// Votes file (JSONL) to write.
    #[arg(long)]
    pub out: PathBuf,
    /// How to read an answer from a path: number, choice, yesno or text.
    #[arg(long, default_value = "number")]
    pub answer: AnswerKind,
    /// Count each path once (uniform) or by exp of its mean token log-prob (logprob).
    #[arg(long, default_value = "uniform")]
    pub weighting: Weighting,
    /// Leave out questions whose vote confidence (votes / valid paths) is below this.
    #[arg(long, default_value_t = 0.0, value_parser = fraction, allow_negative_numbers = true)]
    pub min_confidence: f64,
    /// Which answer each question keeps: majority, or random-vote (the control: a random one of
    /// its distinct sampled answers, drawn with --seed).
    #[arg(long, default_value = "majority")]
    pub control: VoteControl,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub input: InputArgs,
}

impl VoteArgs {
    /// The voting options the flags give.
    pub fn options(&self) -> VoteOptions {
        VoteOptions {
            kind: self.answer,
            weighting: self.weighting,
            min_confidence: self.min_confidence,
            control: self.control,
            seed: self.seed,
        }
    }
}

#[derive(Args)]
pub struct BuildDataArgs {
    /// Votes file (JSONL) written by `lmsi vote`.
    #[arg(long)]
    pub votes: PathBuf,
    /// The paths file the votes were made from.
    #[arg(long)]
    pub paths: PathBuf,
    /// Training data file (JSONL) to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Which objective's data: sft (the paths that agree with the vote), weighted (every answered
    /// path with its answer's vote share as weight) or scpo (preference pairs for `lmsi train
    /// --pairs`).
    #[arg(long, default_value = "sft")]
    pub objective: Objective,
    /// `all` or a comma-separated list of cot-fewshot, direct-fewshot, cot-zeroshot, direct-zeroshot.
    #[arg(long, default_value = "all")]
    pub formats: String,
    /// Few-shot exemplars (JSONL); the built-in set when not given.
    #[arg(long)]
    pub exemplars: Option<PathBuf>,
    #[command(flatten)]
    pub input: InputArgs,
}
