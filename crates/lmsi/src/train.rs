//! The "train" stage: fine-tune a model on prompt/completion data with AdamW, loss on the completion
//! only, and write a checkpoint in Hugging Face layout.
//!
//! The optimizer step is lmsi-adamw's [`Trainer`]: it owns the AdamW moments (on the model's
//! device), the accumulation of micro-batch gradients, clipping, the schedule and the update, and
//! saves and resumes that state. This module wires the data to it: tokenizing, holding out,
//! batching, the loss scale, logs and checkpoints.
//!
//! - Batches: each optimizer step takes `batch_size` examples. Examples are packed one after another
//!   with no padding (attention stays within each example), so there are no length buckets and no
//!   wasted tokens. A batch can be split into micro-batches whose gradients accumulate.
//! - Order: examples are shuffled once per epoch by a counter-based RNG keyed by the seed and the epoch,
//!   so the examples of any step follow from `(seed, step)` alone — a resumed run sees the same batches
//!   as an uninterrupted one.
//! - The loss is the mean cross-entropy over the completion tokens of the batch (the completion ends
//!   with the tokenizer's EOS token, so the model learns to stop), each example's tokens weighted by
//!   its `weight` (1 unless the data says otherwise: the `weighted` objective's vote shares).
//!   [`train_pairs`] trains on preference pairs with the DPO loss instead (the `scpo` objective):
//!   [`crate::losses`] has both losses.
//! - Parameter groups: weight decay on matrices only, not on norms, biases and embeddings (or on all
//!   with `decay_all`).
//! - A non-finite loss or gradient norm stops training with an error naming the step; the output
//!   directory keeps its last good checkpoint (every write of it is an atomic directory exchange).
//! - The output directory holds the model (`config.json`, `model.safetensors`, tokenizer files), the
//!   optimizer state (`optimizer.safetensors`: each tensor's `exp_avg` and `exp_avg_sq`),
//!   `trainer_state.json`, the loss log `train_log.jsonl` and the loss curve `loss.svg`.

use std::path::Path;
use std::time::Instant;

use lmsi_adamw::{AdamWConfig, AdamWError, LrSchedule, ScheduleKind, Trainer, TrainerConfig};
use lmsi_data::{PreferencePair, TrainExample, write_jsonl_atomic};
use lmsi_transformer::checkpoint::save_model;
use lmsi_transformer::{Backend, MemoryPlan, Model, Tokenizer, TrainSequence};
use serde::{Deserialize, Serialize};

use crate::losses::{TokenPair, TrainItem, WeightedSequence, check_weights, reference_logprobs};
use crate::plot::{Axes, Series, line_chart};
use crate::{Error, check_option, read_json};

/// Settings of a training run. Those that shape the run (everything but `save_every`, `stop_after`
/// and `resume`) are stored in the checkpoint, and a resumed run must use the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub lr: f32,
    pub batch_size: usize,
    /// Examples per forward/backward pass; a batch is split into micro-batches of this size whose
    /// gradients accumulate (`None`: the whole batch at once).
    pub micro_batch_size: Option<usize>,
    /// Optimizer steps; when `None`, `epochs` passes over the data.
    pub steps: Option<u64>,
    pub epochs: f64,
    pub weight_decay: f32,
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    pub seed: u64,
    /// Fraction of the examples held out for an evaluation loss (0: none).
    pub eval_fraction: f64,
    /// Evaluate the held-out loss every this many steps (and at the end).
    pub eval_every: u64,
    /// Keep only each layer's input and recompute the rest in the backward pass (less memory).
    pub recompute: bool,
    /// Apply weight decay to every tensor, norms, biases and embeddings included.
    pub decay_all: bool,
    /// Examples longer than this many tokens are left out (and counted).
    pub max_tokens: usize,
    /// DPO's β for preference pairs (`scpo`): how far the policy may move from the reference.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// The weight of the chosen completion's length-normalised likelihood in the pairs' loss.
    #[serde(default = "default_nll")]
    pub nll: f64,
    #[serde(skip)]
    pub save_every: Option<u64>,
    #[serde(skip)]
    pub stop_after: Option<u64>,
    #[serde(skip)]
    pub resume: bool,
}

impl TrainOptions {
    /// Checks every option against its range, naming the first that is out of it by its flag.
    pub fn check(&self) -> Result<(), Error> {
        const POSITIVE: &str = "a finite number greater than 0";
        const NON_NEGATIVE: &str = "a finite number of at least 0";
        const COUNT: &str = "at least 1";
        let count = |n: &u64| *n >= 1;
        check_option("--lr", self.lr, POSITIVE, |x| x.is_finite() && *x > 0.0)?;
        check_option("--batch-size", self.batch_size, COUNT, |n| *n >= 1)?;
        if let Some(micro) = self.micro_batch_size {
            check_option("--micro-batch-size", micro, COUNT, |n| *n >= 1)?;
        }
        if let Some(steps) = self.steps {
            check_option("--steps", steps, COUNT, count)?;
        }
        check_option("--epochs", self.epochs, POSITIVE, |x| {
            x.is_finite() && *x > 0.0
        })?;
        let non_negative = |x: &f64| x.is_finite() && *x >= 0.0;
        check_option(
            "--weight-decay",
            f64::from(self.weight_decay),
            NON_NEGATIVE,
            non_negative,
        )?;
        check_option("--grad-clip", self.grad_clip, NON_NEGATIVE, non_negative)?;
        let held_out = "a number from 0 up to (not including) 1";
        check_option("--eval-split", self.eval_fraction, held_out, |x| {
            (0.0..1.0).contains(x)
        })?;
        check_option("--eval-every", self.eval_every, COUNT, count)?;
        check_option("--max-tokens", self.max_tokens, COUNT, |n| *n >= 1)?;
        check_option("--beta", self.beta, POSITIVE, |x| x.is_finite() && *x > 0.0)?;
        check_option("--nll", self.nll, NON_NEGATIVE, non_negative)?;
        if let Some(every) = self.save_every {
            check_option("--save-every", every, COUNT, count)?;
        }
        if let Some(stop) = self.stop_after {
            check_option("--stop-after", stop, COUNT, count)?;
        }
        Ok(())
    }

    /// The options that shape the run (what a resumed run must repeat), without the per-invocation ones.
    fn shaping(&self) -> TrainOptions {
        TrainOptions {
            save_every: None,
            stop_after: None,
            resume: false,
            ..self.clone()
        }
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            lr: 5e-5,
            batch_size: 32,
            micro_batch_size: None,
            steps: None,
            epochs: 1.0,
            weight_decay: 0.01,
            warmup_steps: 0,
            schedule: ScheduleKind::Cosine,
            grad_clip: 1.0,
            seed: 0,
            eval_fraction: 0.0,
            eval_every: 50,
            recompute: false,
            decay_all: false,
            max_tokens: 2048,
            beta: default_beta(),
            nll: default_nll(),
            save_every: None,
            stop_after: None,
            resume: false,
        }
    }
}

fn default_beta() -> f64 {
    0.1
}

fn default_nll() -> f64 {
    1.0
}

/// One line of `train_log.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    /// The step's loss: per completion token (weighted), or per preference pair.
    pub loss: f64,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens processed (prompt and completion).
    pub tokens: usize,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The step the checkpoint is at.
    pub step: u64,
    pub total_steps: u64,
    pub train_examples: usize,
    pub eval_examples: usize,
    /// Examples left out for being longer than `max_tokens`.
    pub too_long: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub eval_loss: Option<f64>,
    /// Tokens per second of this run's steps (forward, backward and optimizer).
    pub tokens_per_second: f64,
    pub seconds: f64,
}

#[derive(Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    total_steps: u64,
    options: TrainOptions,
    /// Fingerprint of the training examples, to refuse resuming on other data.
    data: String,
}

/// Fine-tunes `model` (loaded from `source`) on `examples` and writes checkpoints to `out`.
/// With `options.resume`, `model` must have been loaded from `out` and training continues at the
/// checkpoint's step.
pub fn train<B: Backend>(
    model: &mut Model<B>,
    tokenizer: &Tokenizer,
    source: &Path,
    examples: &[TrainExample],
    options: &TrainOptions,
    out: &Path,
    on_step: &mut dyn FnMut(&StepLog, u64),
) -> Result<TrainReport, Error> {
    options.check()?;
    check_weights(examples.iter().map(|e| e.weight))?;
    let (sequences, kept) = tokenize(tokenizer, examples, options.max_tokens)?;
    let too_long = examples.len() - kept.len();
    if sequences.is_empty() {
        return Err(no_examples_left(examples.len(), too_long, options));
    }
    let items = sequences
        .into_iter()
        .zip(kept)
        .map(|(seq, i)| WeightedSequence {
            seq,
            weight: examples[i].weight as f32,
        })
        .collect();
    let data = fingerprint(examples);
    let mut report = train_items(model, source, items, &data, options, out, on_step, None)?;
    report.too_long = too_long;
    Ok(report)
}

/// What a training run reads: examples (`sft`, `weighted`) or preference pairs (`scpo`).
#[derive(Clone, Debug, PartialEq)]
pub enum TrainData {
    Examples(Vec<TrainExample>),
    Pairs(Vec<PreferencePair>),
}

impl TrainData {
    pub fn len(&self) -> usize {
        match self {
            TrainData::Examples(e) => e.len(),
            TrainData::Pairs(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What its items are, for a summary line.
    pub fn items_name(&self) -> &'static str {
        match self {
            TrainData::Examples(_) => "examples",
            TrainData::Pairs(_) => "preference pairs",
        }
    }

    /// Writes it as JSONL, atomically.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        match self {
            TrainData::Examples(e) => write_jsonl_atomic(path, e)?,
            TrainData::Pairs(p) => write_jsonl_atomic(path, p)?,
        }
        Ok(())
    }
}

/// [`train`] on examples or [`train_pairs`] on pairs, as `data` is.
pub fn train_data<B: Backend>(
    model: &mut Model<B>,
    tokenizer: &Tokenizer,
    source: &Path,
    data: &TrainData,
    options: &TrainOptions,
    out: &Path,
    on_step: &mut dyn FnMut(&StepLog, u64),
) -> Result<TrainReport, Error> {
    match data {
        TrainData::Examples(examples) => {
            train(model, tokenizer, source, examples, options, out, on_step)
        }
        TrainData::Pairs(pairs) => {
            train_pairs(model, tokenizer, source, pairs, options, out, on_step)
        }
    }
}

fn no_examples_left(examples: usize, too_long: usize, options: &TrainOptions) -> Error {
    Error::Input(format!(
        "no training examples left ({examples} examples, {too_long} longer than {} tokens)",
        options.max_tokens
    ))
}

/// The reference log-probabilities of [`train_pairs`], kept in the checkpoint so that a resumed
/// run compares with the same reference.
const REFERENCE_FILE: &str = "reference_logprobs.json";

/// Fine-tunes `model` on preference pairs with the DPO loss ([`crate::losses::TokenPair`], β
/// `options.beta`), the reference being `model` as it is before the first step (its
/// log-probabilities of every pair are computed once, before training, and saved in the
/// checkpoint as `reference_logprobs.json`). A pair either of whose sequences is longer than
/// `max_tokens` is left out. Otherwise as [`train`].
pub fn train_pairs<B: Backend>(
    model: &mut Model<B>,
    tokenizer: &Tokenizer,
    source: &Path,
    pairs: &[PreferencePair],
    options: &TrainOptions,
    out: &Path,
    on_step: &mut dyn FnMut(&StepLog, u64),
) -> Result<TrainReport, Error> {
    options.check()?;
    check_weights(pairs.iter().map(|p| p.weight))?;
    let kept = tokenize_pairs(tokenizer, pairs, options.max_tokens)?;
    let too_long = pairs.len() - kept.len();
    if kept.is_empty() {
        return Err(no_examples_left(pairs.len(), too_long, options));
    }
    let sequences: Vec<SequencePair> = kept.iter().map(|(_, s)| s.clone()).collect();
    let reference = reference_for(model, &sequences, options, out)?;
    let items = kept
        .iter()
        .zip(sequences)
        .zip(&reference)
        .map(|(((i, _), (chosen, rejected)), &reference)| TokenPair {
            chosen,
            rejected,
            weight: pairs[*i].weight,
            beta: options.beta,
            nll: options.nll,
            reference,
        })
        .collect();
    let extra = (
        REFERENCE_FILE,
        serde_json::to_vec(&reference).expect("numbers serialise"),
    );
    let data = pair_fingerprint(pairs);
    let mut report = train_items(
        model,
        source,
        items,
        &data,
        options,
        out,
        on_step,
        Some(extra),
    )?;
    report.too_long = too_long;
    Ok(report)
}

/// A preference pair's chosen and rejected sequences.
type SequencePair = (TrainSequence, TrainSequence);

/// Each pair's index and its chosen and rejected sequences, leaving out the pairs with a
/// sequence longer than `max_tokens`.
fn tokenize_pairs(
    tokenizer: &Tokenizer,
    pairs: &[PreferencePair],
    max_tokens: usize,
) -> Result<Vec<(usize, SequencePair)>, Error> {
    let halves = |pick: fn(&PreferencePair) -> &str| -> Vec<TrainExample> {
        pairs
            .iter()
            .map(|p| TrainExample {
                prompt: p.prompt.clone(),
                completion: pick(p).to_string(),
                format: p.format,
                weight: 1.0,
            })
            .collect()
    };
    let (chosen, indices) = tokenize(tokenizer, &halves(|p| &p.chosen), usize::MAX)?;
    let (rejected, _) = tokenize(tokenizer, &halves(|p| &p.rejected), usize::MAX)?;
    let fits = |s: &TrainSequence| s.tokens.len() <= max_tokens;
    Ok(indices
        .into_iter()
        .zip(chosen.into_iter().zip(rejected))
        .filter(|(_, (c, r))| fits(c) && fits(r))
        .collect())
}

/// DPO's reference log-probabilities of `pairs`: computed with `model` for a new run, read from
/// the checkpoint for a resumed one.
fn reference_for<B: Backend>(
    model: &Model<B>,
    pairs: &[SequencePair],
    options: &TrainOptions,
    out: &Path,
) -> Result<Vec<(f64, f64)>, Error> {
    let path = out.join(REFERENCE_FILE);
    let reference = if options.resume {
        read_json::<Vec<(f64, f64)>>(&path)?
    } else {
        let micro = options.micro_batch_size.unwrap_or(options.batch_size);
        reference_logprobs(model, pairs, micro)?
    };
    if reference.len() != pairs.len() {
        return Err(Error::Format {
            path,
            line: None,
            message: format!(
                "{} reference pairs for {} training pairs",
                reference.len(),
                pairs.len()
            ),
        });
    }
    Ok(reference)
}

/// Refuses a run whose largest micro-batch (the `micro` longest items together) would not fit
/// the backend's memory beside the model, its gradients and AdamW moments.
fn check_memory<B: Backend, I: TrainItem>(
    model: &Model<B>,
    items: &[I],
    micro: usize,
    recompute: bool,
) -> Result<(), Error> {
    let mut lens: Vec<usize> = items
        .iter()
        .map(|item| item.sequences().iter().map(|s| s.tokens.len()).sum())
        .collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    let tokens = lens.iter().take(micro).sum();
    let plan = MemoryPlan::training(model.config(), model.backend().dtype(), tokens, recompute);
    Ok(model.backend().check_memory(&plan)?)
}

/// [`train`] on sequences that are already tokens, each of weight 1. `data` identifies the data (a
/// resumed run must have the same).
pub fn train_sequences<B: Backend>(
    model: &mut Model<B>,
    source: &Path,
    sequences: Vec<TrainSequence>,
    data: &str,
    options: &TrainOptions,
    out: &Path,
    on_step: &mut dyn FnMut(&StepLog, u64),
) -> Result<TrainReport, Error> {
    let items = sequences
        .into_iter()
        .map(|seq| WeightedSequence { seq, weight: 1.0 })
        .collect();
    train_items(model, source, items, data, options, out, on_step, None)
}

/// The training loop over any objective's items; `extra` is one more file the checkpoint keeps.
#[allow(clippy::too_many_arguments)]
fn train_items<B: Backend, I: TrainItem>(
    model: &mut Model<B>,
    source: &Path,
    items: Vec<I>,
    data: &str,
    options: &TrainOptions,
    out: &Path,
    on_step: &mut dyn FnMut(&StepLog, u64),
    extra: Option<(&str, Vec<u8>)>,
) -> Result<TrainReport, Error> {
    options.check()?;
    if !options.resume {
        check_fresh_out(out)?;
    }
    let started = Instant::now();
    let (train_set, eval_set, total_steps) = split_and_count(items, options)?;
    let config = trainer_config(options, total_steps)?;
    let state = |step| TrainerState {
        step,
        total_steps,
        options: options.shaping(),
        data: data.to_string(),
    };
    let micro = options.micro_batch_size.unwrap_or(options.batch_size);
    check_memory(model, &train_set, micro, options.recompute)?;
    let (mut trainer, mut log) = if options.resume {
        resume(model, out, &state(0), config)?
    } else {
        (Trainer::new(&*model, config)?, Vec::new())
    };
    let (mut run_tokens, mut run_seconds) = (0usize, 0.0f64);
    let stop_at = options
        .stop_after
        .map_or(total_steps, |s| s.min(total_steps));
    while trainer.step_count() < stop_at {
        let step_started = Instant::now();
        let step = trainer.step_count() + 1;
        let batch = batch_for_step(&train_set, step, options.batch_size, options.seed);
        let norm = I::normaliser(&batch);
        let stats = trainer
            .step(model, batch.chunks(micro), |model, micro, grads| {
                I::loss_and_grads(model, micro, grads, norm, options.recompute)
            })
            .map_err(|e| at_step(step, out, e))?;
        let tokens: usize = batch.iter().map(|s| s.tokens()).sum();
        let seconds = step_started.elapsed().as_secs_f64();
        (run_tokens, run_seconds) = (run_tokens + tokens, run_seconds + seconds);
        let mut entry = StepLog {
            step,
            loss: stats.loss / norm,
            lr: stats.lr,
            grad_norm: stats.grad_norm,
            tokens,
            seconds,
            eval_loss: None,
        };
        if !eval_set.is_empty() && (step % options.eval_every == 0 || step == total_steps) {
            entry.eval_loss =
                Some(eval_loss(model, &eval_set, options).map_err(|e| at_step(step, out, e))?);
        }
        on_step(&entry, total_steps);
        log.push(entry);
        if options.save_every.is_some_and(|n| step % n == 0) || step == stop_at {
            let extra = extra
                .as_ref()
                .map(|(name, bytes)| (*name, bytes.as_slice()));
            write_checkpoint(model, &trainer, source, out, &state(step), &log, extra)?;
        }
    }
    let step = trainer.step_count();
    if log.is_empty() {
        return Err(Error::Input(format!(
            "{} is already at step {step} of {total_steps}",
            out.display()
        )));
    }
    Ok(TrainReport {
        step,
        total_steps,
        train_examples: train_set.len(),
        eval_examples: eval_set.len(),
        too_long: 0,
        first_loss: log[0].loss,
        last_loss: log[log.len() - 1].loss,
        eval_loss: log.iter().rev().find_map(|l| l.eval_loss),
        tokens_per_second: run_tokens as f64 / run_seconds.max(1e-9),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The training and held-out items, and the steps to take.
fn split_and_count<I>(
    sequences: Vec<I>,
    options: &TrainOptions,
) -> Result<(Vec<I>, Vec<I>, u64), Error> {
    let (train_set, eval_set) = split(sequences, options.eval_fraction, options.seed);
    if train_set.is_empty() {
        return Err(Error::Input(format!(
            "no training examples left after holding out {:.0}% for evaluation",
            100.0 * options.eval_fraction
        )));
    }
    let steps_per_epoch = train_set.len().div_ceil(options.batch_size) as u64;
    let total_steps = options
        .steps
        .unwrap_or_else(|| ((options.epochs * steps_per_epoch as f64).ceil() as u64).max(1));
    Ok((train_set, eval_set, total_steps))
}

/// The trainer's configuration the options give over `total_steps`, checked.
pub(crate) fn trainer_config(
    options: &TrainOptions,
    total_steps: u64,
) -> Result<TrainerConfig, Error> {
    let config = TrainerConfig {
        adamw: AdamWConfig {
            weight_decay: options.weight_decay,
            ..AdamWConfig::default()
        },
        schedule: LrSchedule::new(
            options.schedule,
            options.lr,
            options.warmup_steps,
            total_steps,
        ),
        max_grad_norm: (options.grad_clip > 0.0).then_some(options.grad_clip),
        decay_all: options.decay_all,
    };
    config.validate().map_err(|e| Error::Input(e.to_string()))?;
    Ok(config)
}

/// A new run's output directory may not exist yet or be empty of checkpoint files: writing
/// would replace a checkpoint that `--resume` could continue.
pub(crate) fn check_fresh_out(out: &Path) -> Result<(), Error> {
    let refuse = |why: &str| Error::Output {
        output: out.to_path_buf(),
        message: format!("--out {} {why}", out.display()),
    };
    match std::fs::metadata(out) {
        Err(_) => Ok(()),
        Ok(meta) if !meta.is_dir() => Err(refuse(
            "is not a directory; it names the checkpoint directory to write",
        )),
        Ok(_) => {
            let checkpoint = ["config.json", "model.safetensors", "trainer_state.json"];
            if checkpoint.iter().any(|f| out.join(f).exists()) {
                return Err(refuse(
                    "already holds a checkpoint; pass --resume to continue it, or choose another --out",
                ));
            }
            Ok(())
        }
    }
}

/// The trainer and log a checkpoint in `out` was saved with, after checking that it was trained
/// with `expected`'s options, data and total steps (its step is not compared).
fn resume<B: Backend>(
    model: &Model<B>,
    out: &Path,
    expected: &TrainerState,
    config: TrainerConfig,
) -> Result<(Trainer<Model<B>>, Vec<StepLog>), Error> {
    let state: TrainerState = read_json(&out.join("trainer_state.json"))?;
    let mut differ = Vec::new();
    if state.options != expected.options {
        differ.push(format!("options ({:?} then)", state.options));
    }
    if state.data != expected.data {
        differ.push("data".to_string());
    }
    if state.total_steps != expected.total_steps {
        differ.push(format!(
            "total steps ({} then, {} now)",
            state.total_steps, expected.total_steps
        ));
    }
    if !differ.is_empty() {
        return Err(Error::ResumeMismatch {
            path: out.to_path_buf(),
            what: format!(
                "was trained with other {}; resume with the same ones",
                differ.join(" and ")
            ),
        });
    }
    let path = out.join("optimizer.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let format = |message: String| Error::Format {
        path: path.clone(),
        line: None,
        message,
    };
    let trainer = Trainer::resume(model, config, &bytes).map_err(|e| match e {
        lmsi_transformer::Error::Optimizer(AdamWError::State(message)) => format(message),
        other => Error::Model(other),
    })?;
    if trainer.step_count() != state.step {
        return Err(format(format!(
            "it is at step {}, trainer_state.json at step {}",
            trainer.step_count(),
            state.step
        )));
    }
    let log = read_log(&out.join("train_log.jsonl"), state.step)?;
    Ok((trainer, log))
}

/// `e` of step `step`, as a divergence where it is one.
pub(crate) fn at_step(step: u64, out: &Path, e: lmsi_transformer::Error) -> Error {
    let what = match e {
        lmsi_transformer::Error::NonFinite(what) => format!("{what} is not finite"),
        lmsi_transformer::Error::Optimizer(AdamWError::NonFiniteGradient { norm, .. }) => {
            format!("the gradient norm is {norm}")
        }
        other => return Error::Model(other),
    };
    Error::Diverged {
        step,
        what,
        out: out.to_path_buf(),
    }
}

/// Tokenizes examples as prompt tokens followed by completion tokens and EOS; drops those longer
/// than `max_tokens`. Also gives the index of the example each sequence came from.
pub fn tokenize(
    tokenizer: &Tokenizer,
    examples: &[TrainExample],
    max_tokens: usize,
) -> Result<(Vec<TrainSequence>, Vec<usize>), Error> {
    let eos = tokenizer.eos_ids().first().copied();
    let mut out = Vec::with_capacity(examples.len());
    let mut kept = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        let mut tokens = tokenizer.encode(&ex.prompt, true)?;
        let loss_from = tokens.len();
        tokens.extend(tokenizer.encode(&ex.completion, false)?);
        tokens.extend(eos);
        if loss_from == 0 || tokens.len() == loss_from {
            return Err(Error::Input(format!(
                "training example {}: empty prompt or completion",
                i + 1
            )));
        }
        if tokens.len() > max_tokens {
            continue;
        }
        out.push(TrainSequence::completion(tokens, loss_from));
        kept.push(i);
    }
    Ok((out, kept))
}

/// A deterministic permutation of `0..n` for `(seed, stream)` (Fisher-Yates on counter-based draws).
pub fn permutation(n: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let r = lmsi_sampler::random_u64(seed, stream, i as u32);
        let j = (r % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Holds out `fraction` of the items (chosen by the seed) for evaluation.
fn split<I>(sequences: Vec<I>, fraction: f64, seed: u64) -> (Vec<I>, Vec<I>) {
    let held = ((sequences.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    let order = permutation(sequences.len(), seed, u64::MAX);
    let held_out: std::collections::HashSet<usize> = order[..held].iter().copied().collect();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (i, s) in sequences.into_iter().enumerate() {
        if held_out.contains(&i) {
            eval.push(s)
        } else {
            train.push(s)
        }
    }
    (train, eval)
}

/// The examples of step `step` (1-based): epochs follow each other, each in its own shuffled order.
pub(crate) fn batch_for_step<I>(train: &[I], step: u64, batch_size: usize, seed: u64) -> Vec<&I> {
    let per_epoch = train.len().div_ceil(batch_size) as u64;
    let (epoch, index) = ((step - 1) / per_epoch, ((step - 1) % per_epoch) as usize);
    let order = permutation(train.len(), seed, epoch);
    let end = ((index + 1) * batch_size).min(train.len());
    order[index * batch_size..end]
        .iter()
        .map(|&i| &train[i])
        .collect()
}

/// The held-out loss, normalised as the training loss is.
fn eval_loss<B: Backend, I: TrainItem>(
    model: &Model<B>,
    eval: &[I],
    options: &TrainOptions,
) -> Result<f64, lmsi_transformer::Error> {
    let (mut loss, mut norm) = (0.0, 0.0);
    for chunk in eval.chunks(options.micro_batch_size.unwrap_or(options.batch_size)) {
        let chunk: Vec<&I> = chunk.iter().collect();
        loss += I::loss(model, &chunk)?;
        norm += I::normaliser(&chunk);
    }
    Ok(loss / norm.max(1e-300))
}

/// FNV-1a over the examples' texts (and weights other than 1), so that resuming on other data
/// is refused.
fn fingerprint(examples: &[TrainExample]) -> String {
    let weight = |w: f64| {
        if w == 1.0 {
            String::new()
        } else {
            w.to_string()
        }
    };
    let texts = examples
        .iter()
        .map(|ex| [ex.prompt.clone(), ex.completion.clone(), weight(ex.weight)]);
    fnv1a(texts, examples.len())
}

fn pair_fingerprint(pairs: &[PreferencePair]) -> String {
    let texts = pairs.iter().map(|p| {
        let weight = p.weight.to_string();
        [
            p.prompt.clone(),
            p.chosen.clone(),
            p.rejected.clone(),
            weight,
        ]
    });
    fnv1a(texts, pairs.len())
}

fn fnv1a<const N: usize>(items: impl Iterator<Item = [String; N]>, count: usize) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |byte: u8| hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    for texts in items {
        // The separators of the first two texts are those of the format before weights existed,
        // so a checkpoint of unweighted data resumes across the change.
        for (text, sep) in texts.iter().zip([0xff, 0xfe, 0xfd, 0xfc]) {
            if text.is_empty() && sep < 0xfe {
                continue;
            }
            text.bytes().for_each(&mut eat);
            eat(sep);
        }
    }
    format!("fnv1a64:{hash:016x}:{count}")
}

fn write_checkpoint<B: Backend>(
    model: &Model<B>,
    trainer: &Trainer<Model<B>>,
    source: &Path,
    out: &Path,
    state: &TrainerState,
    log: &[StepLog],
    extra: Option<(&str, &[u8])>,
) -> Result<(), Error> {
    let log_lines: String = log
        .iter()
        .map(|l| serde_json::to_string(l).expect("log serialises") + "\n")
        .collect();
    let mut files = vec![
        ("optimizer.safetensors", trainer.save_state(model)?),
        (
            "trainer_state.json",
            serde_json::to_vec_pretty(state).expect("state serialises"),
        ),
        ("train_log.jsonl", log_lines.into_bytes()),
        ("loss.svg", loss_curve(log).into_bytes()),
    ];
    files.extend(extra.map(|(name, bytes)| (name, bytes.to_vec())));
    save_model(model, source, out, &files)?;
    Ok(())
}

/// The loss curve: training loss per step and held-out loss where measured.
pub fn loss_curve(log: &[StepLog]) -> String {
    let train: Vec<(f64, f64)> = log.iter().map(|l| (l.step as f64, l.loss)).collect();
    let eval: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|l| Some((l.step as f64, l.eval_loss?)))
        .collect();
    let mut series = vec![Series::line("training loss", train)];
    if !eval.is_empty() {
        series.push(Series::markers("held-out loss", eval));
    }
    let axes = Axes::new("loss per completion token", "step", "cross-entropy");
    line_chart(&axes, &series)
}

fn read_log(path: &Path, step: u64) -> Result<Vec<StepLog>, Error> {
    let loaded = lmsi_data::read_jsonl::<StepLog>(path, lmsi_data::BadLines::Error)?;
    Ok(loaded
        .items
        .into_iter()
        .filter(|l| l.step <= step)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_deterministic_and_complete() {
        let a = permutation(50, 3, 0);
        assert_eq!(a, permutation(50, 3, 0));
        assert_ne!(a, permutation(50, 3, 1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
