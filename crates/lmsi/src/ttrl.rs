//! `ttrl`: online RL with a majority-vote reward (test-time RL, Zuo et al. 2025), sampling and
//! training one model in one process.
//!
//! Each step takes `questions` pool questions (shuffled once per epoch by the seed, as training
//! batches are), samples `paths` paths for each with the current model, votes, and rewards every
//! path 1 when its answer is the vote's (the majority, or under `--control random-vote` a random one
//! of the sampled answers) and 0 otherwise. Rewards are normalised within each question's group
//! (GRPO: `A = (r - mean) / std`; a group whose paths all agree, or all disagree, has no signal and
//! is not trained on), and each of `updates` policy updates minimises, per predicted token `t` of
//! path `s`,
//!
//! `-min(ρ_t A_s, clip(ρ_t, 1 - ε, 1 + ε) A_s) + kl · (e^(ref_t - lp_t) - (ref_t - lp_t) - 1)`
//!
//! averaged over the step's tokens, with `ρ_t = e^(lp_t - old_t)` the ratio of the current model's
//! token probability to the sampling model's, and the KL term the k3 estimator against the
//! starting model. The gradient of that is the weighted likelihood gradient with weight
//! `-(A_s ρ_t [not clipped]) - kl (e^(ref_t - lp_t) - 1)` on each token's log-probability, so one
//! forward pass for the current log-probabilities and one weighted forward and backward pass
//! ([`Model::weighted_loss_and_grads`]) make a step. With one update per sampled batch (the default)
//! the ratio is exactly 1 at the update, the clip never binds, and without KL the first forward pass
//! is skipped.
//!
//! A path is trained on as the prompt it was sampled from followed by its text and EOS, tokenised
//! again (so a path whose text tokenises differently from how it was sampled is trained on the
//! tokenizer's spelling). Generation's seed is drawn from the run's seed and the step, so the same
//! seed gives the same run.
//!
//! Every `probe_every` steps the stop rule ([`crate::stop_rule`]) looks at the model: with a probe
//! set, its greedy accuracy against the best so far; without one, the mean signals of the last
//! `probe_every` steps against those of the first. When it fires the loop stops and the model goes
//! back to the weights it had at its best check (the probe's best, or the end of the window before
//! the collapse), and the report says where and why. The stage writes the model, `ttrl_log.jsonl` (one line per step: the
//! reward, the label-free signals of its paths, the loss, the clipped fraction) and `signals.svg`;
//! a killed stage is redone from its start.

use std::path::Path;
use std::time::Instant;

use lmsi_adamw::Trainer;
use lmsi_data::{PathRecord, Question};
use lmsi_transformer::checkpoint::save_model;
use lmsi_transformer::{Backend, Model, Params, Tokenizer, TrainSequence};
use lmsi_voter::Extractor;
use serde::{Deserialize, Serialize};

use crate::eval::{EvalMode, evaluate};
use crate::generate::{GenerateOptions, generate_paths, prompt_texts};
use crate::losses::{per_token, token_losses};
use crate::plot::{Axes, Series, line_chart};
use crate::signals::Signals;
use crate::stop_rule::{ProbeWatch, collapsed, mean_signals};
use crate::train::{TrainOptions, at_step, batch_for_step, check_fresh_out, trainer_config};
use crate::vote::{VoteOptions, vote_paths};
use crate::{Error, check_option};

/// Settings of the online loop (the optimizer's come from [`TrainOptions`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TtrlOptions {
    /// Sampling steps.
    pub steps: u64,
    /// Questions per step.
    pub questions: usize,
    /// Paths per question (the group the reward is normalised in).
    pub paths: usize,
    /// Policy updates per sampled batch.
    pub updates: u64,
    /// PPO's ε: the ratio is clipped to `[1 - ε, 1 + ε]`.
    pub clip: f64,
    /// Weight of the KL penalty to the starting model (0: none).
    pub kl: f64,
    /// The stop rule looks every this many steps.
    #[serde(default = "default_probe_every")]
    pub probe_every: u64,
}

fn default_probe_every() -> u64 {
    10
}

impl Default for TtrlOptions {
    fn default() -> Self {
        Self {
            steps: 40,
            questions: 8,
            paths: 8,
            updates: 1,
            clip: 0.2,
            kl: 0.0,
            probe_every: default_probe_every(),
        }
    }
}

impl TtrlOptions {
    /// Checks every option, naming the first out of range by its flag.
    pub fn check(&self) -> Result<(), Error> {
        check_option("--ttrl-steps", self.steps, "at least 1", |n| *n >= 1)?;
        check_option("--ttrl-questions", self.questions, "at least 1", |n| {
            *n >= 1
        })?;
        check_option("--ttrl-paths", self.paths, "at least 2", |n| *n >= 2)?;
        check_option("--ttrl-updates", self.updates, "at least 1", |n| *n >= 1)?;
        let clip = "a number greater than 0 and below 1";
        check_option("--clip", self.clip, clip, |x| *x > 0.0 && *x < 1.0)?;
        let kl = "a finite number of at least 0";
        check_option("--kl", self.kl, kl, |x| x.is_finite() && *x >= 0.0)?;
        check_option("--probe-every", self.probe_every, "at least 1", |n| *n >= 1)
    }
}

/// One line of `ttrl_log.jsonl`: one sampling step and its updates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TtrlStepLog {
    pub step: u64,
    /// Mean reward: the share of the step's paths that agree with their question's vote.
    pub reward: f64,
    /// The label-free signals of the step's paths.
    pub signals: Signals,
    /// Questions whose paths had an answer, and their mean vote confidence.
    pub voted: usize,
    pub mean_confidence: f64,
    /// Accuracy of the step's votes against the pool's gold answers, when it has them (never
    /// read by the loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_accuracy: Option<f64>,
    /// Paths trained on (those of groups with a signal).
    pub trained_paths: usize,
    /// The clipped surrogate loss of the last update (per predicted token).
    pub loss: f64,
    /// The mean KL estimate to the starting model (when `kl > 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// Share of the trained tokens whose ratio was clipped, over the updates.
    pub clipped: f64,
    /// The probe's greedy accuracy after this step (every `probe_every` steps, with a probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_accuracy: Option<f64>,
    pub grad_norm: f64,
    pub lr: f32,
    pub sampled_tokens: usize,
    pub seconds: f64,
}

/// What the online loop did (`ttrl_report.json` beside the model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TtrlReport {
    pub steps: u64,
    pub paths: usize,
    pub trained_paths: usize,
    /// Votes taken (a question at a step with an answered path) and their mean confidence.
    pub voted: usize,
    pub mean_confidence: f64,
    pub first_reward: f64,
    pub last_reward: f64,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Mean accuracy of the steps' votes against gold answers, when the pool has them.
    pub vote_accuracy: Option<f64>,
    /// Signals of all the paths sampled.
    pub signals: Signals,
    /// Where the stop rule stopped the loop: the step, why, and the step whose weights the model
    /// went back to (0: the starting model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<(u64, String, u64)>,
    pub seconds: f64,
}

/// The probe set and the starting model's greedy accuracy on it.
pub type Probe<'a> = (&'a [Question], f64);

/// The online loop's stop rule: the best check so far and the weights the model had there.
struct Watch<'a> {
    probe: Option<(&'a [Question], ProbeWatch)>,
    first_window: Option<Signals>,
    kept: Params<Vec<f32>>,
    kept_step: u64,
}

impl<'a> Watch<'a> {
    fn new<B: Backend>(model: &Model<B>, probe: Option<Probe<'a>>) -> Result<Self, Error> {
        Ok(Self {
            probe: probe.map(|(questions, start)| (questions, ProbeWatch::new(start))),
            first_window: None,
            kept: model.params_to_host()?,
            kept_step: 0,
        })
    }

    /// After step `entry.step` (a multiple of `every`): why to stop, if the rule fires; otherwise
    /// the model's weights are kept as the best so far. Records the probe's accuracy in `entry`.
    fn check<B: Backend>(
        &mut self,
        model: &Model<B>,
        tokenizer: &Tokenizer,
        generate: &GenerateOptions,
        window: &[Signals],
        entry: &mut TtrlStepLog,
    ) -> Result<Option<String>, Error> {
        let window = mean_signals(window);
        let reason = match &mut self.probe {
            Some((questions, watch)) => {
                let greedy = EvalMode::Greedy;
                let report = evaluate(model, tokenizer, questions, greedy, generate, &mut |_| {})?;
                entry.probe_accuracy = Some(report.accuracy);
                let best = watch.best();
                watch.fell(report.accuracy).then(|| {
                    format!(
                        "the probe's accuracy fell from {:.1}% to {:.1}%",
                        100.0 * best,
                        100.0 * report.accuracy
                    )
                })
            }
            None => match &self.first_window {
                None => {
                    self.first_window = Some(window);
                    None
                }
                Some(first) => collapsed(first, &window).then(|| collapse_reason(first, &window)),
            },
        };
        if reason.is_none() {
            self.kept = model.params_to_host()?;
            self.kept_step = entry.step;
        }
        Ok(reason)
    }

    /// Puts the kept weights back into `model`.
    fn restore<B: Backend>(&self, model: &mut Model<B>) -> Result<(), Error> {
        let params = self.kept.try_map(|values| model.backend().upload(values))?;
        *model.params_mut() = params;
        Ok(())
    }
}

/// What the collapse rule saw, for the report.
pub fn collapse_reason(first: &Signals, now: &Signals) -> String {
    format!(
        "the label-free collapse rule fired: majority share {:.3} (from {:.3}), {:.2} distinct \
         answers (from {:.2}), answer entropy {:.3} bits (from {:.3})",
        now.majority_share,
        first.majority_share,
        now.distinct_answers,
        first.distinct_answers,
        now.answer_entropy,
        first.answer_entropy
    )
}

/// The reward-carrying paths of one step as training sequences, with their advantages.
struct Batch {
    seqs: Vec<TrainSequence>,
    advantages: Vec<f64>,
}

/// Runs the online loop on `model` (loaded from `source` for training), writing the trained model
/// to `out`. `reference` is the starting model for the KL penalty (needed when `options.kl > 0`).
#[allow(clippy::too_many_arguments)]
pub fn train_online<B: Backend>(
    model: &mut Model<B>,
    reference: Option<&Model<B>>,
    tokenizer: &Tokenizer,
    source: &Path,
    pool: &[Question],
    generate: &GenerateOptions,
    vote: &VoteOptions,
    train: &TrainOptions,
    options: &TtrlOptions,
    probe: Option<Probe<'_>>,
    out: &Path,
    on_step: &mut dyn FnMut(&TtrlStepLog, u64),
) -> Result<(TtrlReport, Vec<PathRecord>), Error> {
    options.check()?;
    train.check()?;
    check_fresh_out(out)?;
    if pool.is_empty() {
        return Err(Error::Input("ttrl: the pool has no questions".into()));
    }
    let reference = match (options.kl > 0.0, reference) {
        (true, None) => {
            return Err(Error::Input(
                "ttrl: --kl needs the starting model as reference".into(),
            ));
        }
        (true, Some(r)) => Some(r),
        (false, _) => None,
    };
    let started = Instant::now();
    let run = Online {
        tokenizer,
        pool,
        generate,
        vote,
        train,
        options,
        extractor: Extractor::new(vote.kind),
    };
    let total_steps = options.steps * options.updates;
    let mut trainer = Trainer::new(&*model, trainer_config(train, total_steps)?)?;
    let (mut log, mut all_paths) = (Vec::new(), Vec::new());
    let mut watch = Watch::new(model, probe)?;
    let mut stopped = None;
    for step in 1..=options.steps {
        let step_started = Instant::now();
        let (paths, batch, mut entry) = run.sample(model, step)?;
        if !batch.seqs.is_empty() {
            update(
                model,
                reference,
                &mut trainer,
                &batch,
                train,
                options,
                &mut entry,
            )
            .map_err(|e| at_step(step, out, e))?;
        }
        if step % options.probe_every == 0 {
            let window = last_signals(&log, &entry, options.probe_every as usize);
            if let Some(reason) = watch.check(model, tokenizer, generate, &window, &mut entry)? {
                watch.restore(model)?;
                stopped = Some((step, reason, watch.kept_step));
            }
        }
        entry.seconds = step_started.elapsed().as_secs_f64();
        on_step(&entry, options.steps);
        log.push(entry);
        all_paths.extend(paths);
        if stopped.is_some() {
            break;
        }
    }
    let extractor = &run.extractor;
    let mut report = summarise(&log, &all_paths, extractor, started.elapsed().as_secs_f64());
    report.stopped = stopped;
    write_model(model, source, out, &log, &report)?;
    Ok((report, all_paths))
}

/// The trained model in Hugging Face layout, with the loop's log, report and signals plot.
fn write_model<B: Backend>(
    model: &Model<B>,
    source: &Path,
    out: &Path,
    log: &[TtrlStepLog],
    report: &TtrlReport,
) -> Result<(), Error> {
    let lines: String = log
        .iter()
        .map(|l| serde_json::to_string(l).expect("log serialises") + "\n")
        .collect();
    let report = serde_json::to_vec_pretty(report).expect("report serialises");
    let files = [
        ("ttrl_log.jsonl", lines.into_bytes()),
        ("ttrl_report.json", report),
        ("signals.svg", signals_chart(log).into_bytes()),
    ];
    save_model(model, source, out, &files)?;
    Ok(())
}

/// What every step of one online loop reads.
struct Online<'a> {
    tokenizer: &'a Tokenizer,
    pool: &'a [Question],
    generate: &'a GenerateOptions,
    vote: &'a VoteOptions,
    train: &'a TrainOptions,
    options: &'a TtrlOptions,
    extractor: Extractor,
}

impl Online<'_> {
    /// Step `step`'s sampling: its questions' paths, the votes and rewards, the paths to train on,
    /// and the step's log line so far.
    fn sample<B: Backend>(
        &self,
        model: &Model<B>,
        step: u64,
    ) -> Result<(Vec<PathRecord>, Batch, TtrlStepLog), Error> {
        let (options, train) = (self.options, self.train);
        let questions: Vec<Question> =
            batch_for_step(self.pool, step, options.questions, train.seed)
                .into_iter()
                .cloned()
                .collect();
        let mut sampling = self.generate.clone();
        sampling.paths = options.paths;
        sampling.early_stop = None;
        sampling.sampling.seed = lmsi_sampler::random_u64(self.generate.sampling.seed, step, 0);
        let (paths, stats) =
            generate_paths(model, self.tokenizer, &questions, &sampling, &mut |_| {})?;
        let (votes, summary) = vote_paths(&paths, self.vote)?;
        let rewards = rewards(&paths, &votes, &self.extractor);
        let batch = training_batch(
            self.tokenizer,
            &questions,
            &sampling,
            &paths,
            &rewards,
            train,
        )?;
        let entry = TtrlStepLog {
            step,
            reward: rewards.iter().sum::<f64>() / rewards.len().max(1) as f64,
            signals: Signals::of(&paths, &self.extractor),
            voted: summary.voted,
            mean_confidence: summary.mean_confidence,
            vote_accuracy: summary.accuracy(),
            trained_paths: batch.seqs.len(),
            loss: 0.0,
            kl: None,
            clipped: 0.0,
            probe_accuracy: None,
            grad_norm: 0.0,
            lr: 0.0,
            sampled_tokens: stats.sampled_tokens,
            seconds: 0.0,
        };
        Ok((paths, batch, entry))
    }
}

/// 1 for each path whose answer is its question's vote, 0 otherwise (no answer, another answer,
/// or a question left without a vote).
fn rewards(
    paths: &[PathRecord],
    votes: &[lmsi_data::VoteRecord],
    extractor: &Extractor,
) -> Vec<f64> {
    let voted: std::collections::HashMap<&str, &str> = votes
        .iter()
        .filter_map(|v| Some((v.id.as_str(), v.answer.as_deref()?)))
        .collect();
    paths
        .iter()
        .map(|p| {
            let answer = extractor.extract(&p.text);
            let agrees = answer.is_some() && answer.as_deref() == voted.get(p.id.as_str()).copied();
            f64::from(u8::from(agrees))
        })
        .collect()
}

/// GRPO's advantages: each reward minus its question's mean, over its question's standard
/// deviation; 0 for a group without spread.
pub fn group_advantages(groups: &[usize], rewards: &[f64]) -> Vec<f64> {
    let mut stats: std::collections::HashMap<usize, (f64, f64, f64)> = Default::default();
    for (&g, &r) in groups.iter().zip(rewards) {
        let s = stats.entry(g).or_default();
        *s = (s.0 + 1.0, s.1 + r, s.2 + r * r);
    }
    groups
        .iter()
        .zip(rewards)
        .map(|(g, &r)| {
            let (n, sum, squares) = stats[g];
            let mean = sum / n;
            let std = (squares / n - mean * mean).max(0.0).sqrt();
            if std < 1e-9 { 0.0 } else { (r - mean) / std }
        })
        .collect()
}

/// The paths with a nonzero advantage, as prompt + text + EOS (those over `max_tokens` left out).
fn training_batch(
    tokenizer: &Tokenizer,
    questions: &[Question],
    sampling: &GenerateOptions,
    paths: &[PathRecord],
    rewards: &[f64],
    train: &TrainOptions,
) -> Result<Batch, Error> {
    let (prefix_text, question_texts) = prompt_texts(questions, sampling);
    let prefix = if prefix_text.is_empty() {
        Vec::new()
    } else {
        tokenizer.encode(&prefix_text, true)?
    };
    let index: std::collections::HashMap<&str, usize> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| (q.id.as_str(), i))
        .collect();
    let groups: Vec<usize> = paths.iter().map(|p| index[p.id.as_str()]).collect();
    let advantages = group_advantages(&groups, rewards);
    let eos = tokenizer.eos_ids().first().copied();
    let mut batch = Batch {
        seqs: Vec::new(),
        advantages: Vec::new(),
    };
    for ((path, &q), &advantage) in paths.iter().zip(&groups).zip(&advantages) {
        if advantage == 0.0 {
            continue;
        }
        let mut tokens = prefix.clone();
        tokens.extend(tokenizer.encode(&question_texts[q], prefix.is_empty())?);
        let loss_from = tokens.len();
        tokens.extend(tokenizer.encode(&path.text, false)?);
        tokens.extend(eos);
        if tokens.len() > train.max_tokens || tokens.len() == loss_from {
            continue;
        }
        batch
            .seqs
            .push(TrainSequence::completion(tokens, loss_from));
        batch.advantages.push(advantage);
    }
    Ok(batch)
}

/// The `updates` policy updates of one step, recording the loss, KL, clipped share, gradient norm
/// and learning rate in `entry`.
fn update<B: Backend>(
    model: &mut Model<B>,
    reference: Option<&Model<B>>,
    trainer: &mut Trainer<Model<B>>,
    batch: &Batch,
    train: &TrainOptions,
    options: &TtrlOptions,
    entry: &mut TtrlStepLog,
) -> Result<(), lmsi_transformer::Error> {
    let micro = train.micro_batch_size.unwrap_or(train.batch_size).max(1);
    let advantages = per_token(batch.seqs.iter().zip(batch.advantages.iter().copied()));
    let tokens = advantages.len() as f64;
    let reference = match reference {
        Some(r) => Some(token_losses(r, &batch.seqs, micro)?),
        None => None,
    };
    // The sampling model's token losses: needed only when an update can see another model.
    let needs_current = options.updates > 1 || reference.is_some();
    let old = if needs_current {
        Some(token_losses(model, &batch.seqs, micro)?)
    } else {
        None
    };
    let mut clipped = 0usize;
    for u in 0..options.updates {
        let current = match (&old, u) {
            (Some(old), 0) => Some(old.clone()),
            (Some(_), _) => Some(token_losses(model, &batch.seqs, micro)?),
            (None, _) => None,
        };
        let losses = old
            .as_deref()
            .zip(current.as_deref())
            .map(|(old, current)| UpdateLosses {
                old,
                current,
                reference: reference.as_deref(),
            });
        let step = surrogate(&advantages, losses.as_ref(), options.clip, options.kl);
        let micro_batches =
            batch
                .seqs
                .chunks(micro)
                .zip(chunk_like(&step.weights, &batch.seqs, micro));
        let stats = trainer.step(model, micro_batches, |model, (seqs, w), grads| {
            model.weighted_loss_and_grads(seqs, grads, w, train.recompute)?;
            Ok(0.0)
        })?;
        clipped += step.clipped;
        entry.loss = step.loss;
        entry.kl = reference.is_some().then_some(step.kl);
        entry.grad_norm = stats.grad_norm;
        entry.lr = stats.lr;
    }
    entry.clipped = clipped as f64 / (tokens * options.updates as f64);
    Ok(())
}

/// The token losses one update compares: the sampling model's, the current model's and, for the
/// KL penalty, the reference's.
pub struct UpdateLosses<'a> {
    pub old: &'a [f32],
    pub current: &'a [f32],
    pub reference: Option<&'a [f32]>,
}

/// One update's clipped surrogate, per predicted token of the step.
#[derive(Debug)]
pub struct Surrogate {
    /// The weight of each token's loss in the gradient (the surrogate's derivative with respect to
    /// it), over the step's tokens.
    pub weights: Vec<f32>,
    /// The surrogate with the KL penalty, per token.
    pub loss: f64,
    /// The k3 estimate of the KL to the reference, per token (0 without one).
    pub kl: f64,
    /// Tokens whose ratio the clip held.
    pub clipped: usize,
}

/// The module's surrogate for per-token `advantages`, given the models' token losses (`None`: the
/// current model is the sampling model, ρ = 1, and there is no reference).
pub fn surrogate(
    advantages: &[f64],
    losses: Option<&UpdateLosses<'_>>,
    clip: f64,
    kl_weight: f64,
) -> Surrogate {
    let tokens = advantages.len().max(1) as f64;
    let mut out = Surrogate {
        weights: Vec::with_capacity(advantages.len()),
        loss: 0.0,
        kl: 0.0,
        clipped: 0,
    };
    for (t, &a) in advantages.iter().enumerate() {
        // Token losses are -log p: ρ = e^(old_loss - current_loss).
        let ratio = losses.map_or(1.0, |l| f64::from(l.old[t] - l.current[t]).exp());
        let clipped = (a > 0.0 && ratio > 1.0 + clip) || (a < 0.0 && ratio < 1.0 - clip);
        out.clipped += usize::from(clipped);
        out.loss -= (ratio * a).min(ratio.clamp(1.0 - clip, 1.0 + clip) * a);
        // d(-ρA)/d(loss_t) = ρA, as d(log p)/d(loss_t) = -1; the clip holds ρ constant.
        let mut w = if clipped { 0.0 } else { ratio * a };
        if let Some((current, reference)) = losses.and_then(|l| Some((l.current, l.reference?))) {
            let d = f64::from(current[t] - reference[t]); // log π_ref - log π
            out.kl += d.exp() - d - 1.0;
            w += kl_weight * (d.exp() - 1.0);
        }
        out.weights.push((w / tokens) as f32);
    }
    out.loss = (out.loss + kl_weight * out.kl) / tokens;
    out.kl /= tokens;
    out
}

/// `values` (one per predicted token) cut as `seqs.chunks(micro)` cuts the sequences.
fn chunk_like<'a>(values: &'a [f32], seqs: &[TrainSequence], micro: usize) -> Vec<&'a [f32]> {
    let mut rest = values;
    seqs.chunks(micro)
        .map(|chunk| {
            let n = chunk.iter().map(TrainSequence::target_count).sum();
            let (mine, tail) = rest.split_at(n);
            rest = tail;
            mine
        })
        .collect()
}

fn summarise(
    log: &[TtrlStepLog],
    paths: &[PathRecord],
    extractor: &Extractor,
    seconds: f64,
) -> TtrlReport {
    let (first, last) = (&log[0], &log[log.len() - 1]);
    let judged: Vec<f64> = log.iter().filter_map(|l| l.vote_accuracy).collect();
    TtrlReport {
        steps: log.len() as u64,
        paths: paths.len(),
        trained_paths: log.iter().map(|l| l.trained_paths).sum(),
        voted: log.iter().map(|l| l.voted).sum(),
        mean_confidence: log
            .iter()
            .map(|l| l.mean_confidence * l.voted as f64)
            .sum::<f64>()
            / log.iter().map(|l| l.voted).sum::<usize>().max(1) as f64,
        first_reward: first.reward,
        last_reward: last.reward,
        first_loss: first.loss,
        last_loss: last.loss,
        vote_accuracy: (!judged.is_empty())
            .then(|| judged.iter().sum::<f64>() / judged.len() as f64),
        signals: Signals::of(paths, extractor),
        stopped: None,
        seconds,
    }
}

/// The signals of the last `n` steps, `entry` the last of them.
fn last_signals(log: &[TtrlStepLog], entry: &TtrlStepLog, n: usize) -> Vec<Signals> {
    let earlier = log
        .iter()
        .rev()
        .take(n.saturating_sub(1))
        .map(|l| l.signals);
    earlier.chain([entry.signals]).collect()
}

/// Majority share, answered share and answer entropy per step: a collapse onto one answer shows
/// as the share climbing to 1 while the entropy falls to 0 (the reward, agreement with the vote,
/// is the majority share when every path answers). The probe's accuracy where measured.
fn signals_chart(log: &[TtrlStepLog]) -> String {
    let series = |name, f: fn(&TtrlStepLog) -> f64| {
        Series::line(name, log.iter().map(|l| (l.step as f64, f(l))).collect())
    };
    let mut all = vec![
        series("majority share", |l| l.signals.majority_share),
        series("answered", |l| l.signals.answered),
        series("answer entropy (bits)", |l| l.signals.answer_entropy),
    ];
    let probe: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|l| Some((l.step as f64, l.probe_accuracy?)))
        .collect();
    if !probe.is_empty() {
        all.push(Series::line_and_markers("probe accuracy", probe));
    }
    let axes = Axes::new(
        "ttrl: label-free signals per step",
        "step",
        "share (entropy: bits)",
    );
    line_chart(&axes.whole_x(), &all)
}

#[cfg(test)]
mod tests {
    use lmsi_transformer::testing::{GradientCheck, TinyModel, assert_gradient};
    use lmsi_transformer::{Config, CpuBackend};

    use super::*;

    fn tiny(seed: u64) -> (Params<Vec<f32>>, Config) {
        let spec = TinyModel {
            hidden_size: 16,
            intermediate_size: 24,
            seed,
            ..TinyModel::default()
        };
        let config = Config::from_json(&spec.config_json().to_string()).unwrap();
        (spec.params(), config)
    }

    #[test]
    fn the_surrogate_gradient_matches_finite_differences() {
        // Old and reference token losses from other models, so that ratios differ from 1, some
        // are clipped and the KL term is not zero.
        let (host, config) = tiny(21);
        let model = |p: &Params<Vec<f32>>| Model::from_host(config.clone(), p, CpuBackend).unwrap();
        let seqs = vec![
            TrainSequence::completion(vec![256, 72, 105, 32, 116, 104], 3),
            TrainSequence::completion(vec![256, 50, 43, 50, 61, 52, 10], 4),
        ];
        let advantages: Vec<f64> = seqs
            .iter()
            .zip([1.3, -0.8])
            .flat_map(|(s, a)| std::iter::repeat_n(a, s.target_count()))
            .collect();
        let old = model(&tiny(22).0).token_losses(&seqs).unwrap();
        let reference = model(&tiny(23).0).token_losses(&seqs).unwrap();
        let (clip, kl) = (0.02, 0.3);
        let objective = |p: &Params<Vec<f32>>| {
            let current = model(p).token_losses(&seqs).unwrap();
            let losses = UpdateLosses {
                old: &old,
                current: &current,
                reference: Some(&reference),
            };
            surrogate(&advantages, Some(&losses), clip, kl)
        };
        let at = objective(&host);
        assert!(at.clipped > 0 && at.clipped < advantages.len(), "{at:?}");
        let m = model(&host);
        let mut grads = m.zero_grads().unwrap();
        m.weighted_loss_and_grads(&seqs, &mut grads, &at.weights, false)
            .unwrap();
        let check = GradientCheck {
            eps: 1e-3,
            picks: 4,
            offset: 5,
            abs: 1e-3,
            rel: 3e-2,
        };
        let loss = |p: &Params<Vec<f32>>| objective(p).loss;
        assert_gradient("surrogate", m.layout(), &host, &grads, loss, check);
    }

    #[test]
    fn on_policy_the_ratio_is_one_and_nothing_is_clipped() {
        let s = surrogate(&[0.5, 0.5, -2.0], None, 0.2, 0.0);
        assert_eq!(s.clipped, 0);
        assert_eq!(s.weights, vec![0.5 / 3.0, 0.5 / 3.0, -2.0 / 3.0]);
        assert!((s.loss - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn advantages_are_normalised_within_each_group() {
        let a = group_advantages(
            &[0, 0, 0, 0, 1, 1, 2, 2],
            &[1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
        );
        let third = 1.0 / 3f64.sqrt();
        let want = [third, third, third, -3.0 * third, 0.0, 0.0, -1.0, 1.0];
        for (got, want) in a.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{a:?}");
        }
    }
}
