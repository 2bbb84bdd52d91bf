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
//!   with the tokenizer's EOS token, so the model learns to stop).
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
use lmsi_data::TrainExample;
use lmsi_transformer::checkpoint::save_model;
use lmsi_transformer::{Backend, MemoryPlan, Model, Tokenizer, TrainSequence};
use serde::{Deserialize, Serialize};

use crate::plot::{Series, line_chart};
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
            save_every: None,
            stop_after: None,
            resume: false,
        }
    }
}

/// One line of `train_log.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    /// Mean loss per completion token of the step's batch.
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
    let (sequences, too_long) = tokenize(tokenizer, examples, options.max_tokens)?;
    if sequences.is_empty() {
        return Err(Error::Input(format!(
            "no training examples left ({} examples, {too_long} longer than {} tokens)",
            examples.len(),
            options.max_tokens
        )));
    }
    let mut report = train_sequences(
        model,
        source,
        sequences,
        &fingerprint(examples),
        options,
        out,
        on_step,
    )?;
    report.too_long = too_long;
    Ok(report)
}

/// Refuses a run whose largest micro-batch (the `micro` longest sequences together) would not fit
/// the backend's memory beside the model, its gradients and AdamW moments.
fn check_memory<B: Backend>(
    model: &Model<B>,
    sequences: &[TrainSequence],
    micro: usize,
    recompute: bool,
) -> Result<(), Error> {
    let mut lens: Vec<usize> = sequences.iter().map(|s| s.tokens.len()).collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    let tokens = lens.iter().take(micro).sum();
    let plan = MemoryPlan::training(model.config(), model.backend().dtype(), tokens, recompute);
    Ok(model.backend().check_memory(&plan)?)
}

/// [`train`] on sequences that are already tokens. `data` identifies the data (a resumed run must
/// have the same).
pub fn train_sequences<B: Backend>(
    model: &mut Model<B>,
    source: &Path,
    sequences: Vec<TrainSequence>,
    data: &str,
    options: &TrainOptions,
    out: &Path,
    on_step: &mut dyn FnMut(&StepLog, u64),
) -> Result<TrainReport, Error> {
    options.check()?;
    if !options.resume {
        check_fresh_out(out)?;
    }
    let started = Instant::now();
    let (train_set, eval_set, total_steps) = split_and_count(sequences, options)?;
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
        let target_tokens: usize = batch.iter().map(|s| s.target_count()).sum();
        let stats = trainer
            .step(model, batch.chunks(micro), |model, micro, grads| {
                let micro: Vec<TrainSequence> = micro.iter().map(|s| (*s).clone()).collect();
                let scale = 1.0 / target_tokens as f32;
                Ok(model
                    .loss_and_grads(&micro, grads, scale, options.recompute)?
                    .loss)
            })
            .map_err(|e| at_step(step, out, e))?;
        let tokens: usize = batch.iter().map(|s| s.tokens.len() - 1).sum();
        let seconds = step_started.elapsed().as_secs_f64();
        (run_tokens, run_seconds) = (run_tokens + tokens, run_seconds + seconds);
        let mut entry = StepLog {
            step,
            loss: stats.loss / target_tokens as f64,
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
            write_checkpoint(model, &trainer, source, out, &state(step), &log)?;
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

/// The training and held-out sequences, and the steps to take.
fn split_and_count(
    sequences: Vec<TrainSequence>,
    options: &TrainOptions,
) -> Result<(Vec<TrainSequence>, Vec<TrainSequence>, u64), Error> {
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
fn trainer_config(options: &TrainOptions, total_steps: u64) -> Result<TrainerConfig, Error> {
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
fn check_fresh_out(out: &Path) -> Result<(), Error> {
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
fn at_step(step: u64, out: &Path, e: lmsi_transformer::Error) -> Error {
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

/// Tokenizes examples as prompt tokens followed by completion tokens and EOS; drops (and counts)
/// those longer than `max_tokens`.
pub fn tokenize(
    tokenizer: &Tokenizer,
    examples: &[TrainExample],
    max_tokens: usize,
) -> Result<(Vec<TrainSequence>, usize), Error> {
    let eos = tokenizer.eos_ids().first().copied();
    let mut out = Vec::with_capacity(examples.len());
    let mut too_long = 0;
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
            too_long += 1;
            continue;
        }
        out.push(TrainSequence::completion(tokens, loss_from));
    }
    Ok((out, too_long))
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

/// Holds out `fraction` of the sequences (chosen by the seed) for evaluation.
fn split(
    sequences: Vec<TrainSequence>,
    fraction: f64,
    seed: u64,
) -> (Vec<TrainSequence>, Vec<TrainSequence>) {
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
fn batch_for_step(
    train: &[TrainSequence],
    step: u64,
    batch_size: usize,
    seed: u64,
) -> Vec<&TrainSequence> {
    let per_epoch = train.len().div_ceil(batch_size) as u64;
    let (epoch, index) = ((step - 1) / per_epoch, ((step - 1) % per_epoch) as usize);
    let order = permutation(train.len(), seed, epoch);
    let end = ((index + 1) * batch_size).min(train.len());
    order[index * batch_size..end]
        .iter()
        .map(|&i| &train[i])
        .collect()
}

fn eval_loss<B: Backend>(
    model: &Model<B>,
    eval: &[TrainSequence],
    options: &TrainOptions,
) -> Result<f64, lmsi_transformer::Error> {
    let mut total = lmsi_transformer::LossSum::default();
    for chunk in eval.chunks(options.micro_batch_size.unwrap_or(options.batch_size)) {
        let loss = model.loss(chunk)?;
        total.loss += loss.loss;
        total.tokens += loss.tokens;
    }
    Ok(total.mean())
}

fn fingerprint(examples: &[TrainExample]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for ex in examples {
        for byte in ex
            .prompt
            .bytes()
            .chain([0xff])
            .chain(ex.completion.bytes())
            .chain([0xfe])
        {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("fnv1a64:{hash:016x}:{}", examples.len())
}

fn write_checkpoint<B: Backend>(
    model: &Model<B>,
    trainer: &Trainer<Model<B>>,
    source: &Path,
    out: &Path,
    state: &TrainerState,
    log: &[StepLog],
) -> Result<(), Error> {
    let log_lines: String = log
        .iter()
        .map(|l| serde_json::to_string(l).expect("log serialises") + "\n")
        .collect();
    let extra = [
        ("optimizer.safetensors", trainer.save_state(model)?),
        (
            "trainer_state.json",
            serde_json::to_vec_pretty(state).expect("state serialises"),
        ),
        ("train_log.jsonl", log_lines.into_bytes()),
        ("loss.svg", loss_curve(log).into_bytes()),
    ];
    save_model(model, source, out, &extra)?;
    Ok(())
}

/// The loss curve: training loss per step and held-out loss where measured.
pub fn loss_curve(log: &[StepLog]) -> String {
    let train: Vec<(f64, f64)> = log.iter().map(|l| (l.step as f64, l.loss)).collect();
    let eval: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|l| Some((l.step as f64, l.eval_loss?)))
        .collect();
    let mut series = vec![Series {
        name: "training loss",
        points: train,
        markers: false,
    }];
    if !eval.is_empty() {
        series.push(Series {
            name: "held-out loss",
            points: eval,
            markers: true,
        });
    }
    line_chart(
        "loss per completion token",
        "step",
        "cross-entropy",
        &series,
    )
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
