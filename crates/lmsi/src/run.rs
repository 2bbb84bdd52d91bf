//! `lmsi run`: the whole self-improvement loop, stage by stage, in a run directory.
//!
//! Stages of round `r` (files under `round-r/`):
//!
//! | stage | output |
//! |---|---|
//! | `self-exemplars` (round 1 only, with `--exemplars self`): the few-shot exemplars every later stage prompts with ([`crate::self_exemplars`]) | `self-exemplars.jsonl` |
//! | `eval-before-greedy`, `eval-before-sc` (round 1 only) | `eval-before-greedy.json`, `eval-before-sc.json` |
//! | `eval-before-matched` (round 1 only): the compute-matched baseline, self-consistency of the starting model with `rounds × paths + eval paths` paths per test question | `eval-before-matched.json` |
//! | `self-questions` (with `--self-questions N`) | `self-questions.jsonl` |
//! | `generate` | `paths.jsonl` |
//! | `vote` | `votes.jsonl` |
//! | `build` | `train.jsonl` (`sft`, `weighted`) or `pairs.jsonl` (`scpo`) |
//! | `train` | `model/` (a Hugging Face model directory) |
//! | `ttrl` (instead of generate, vote, build and train, with `--objective ttrl`) | `model/` with `ttrl_log.jsonl`, `signals.svg`; `paths.jsonl` (every path it sampled) |
//! | `eval-after-greedy`, `eval-after-sc` | `eval-after-greedy.json`, `eval-after-sc.json` |
//!
//! With `--probe FILE`, stage `round-1/probe-before` and, after each round, `round-r/probe`: the
//! greedy accuracy of the starting and the trained model on that small labelled set.
//!
//! then `report.json`, `report.md`, `accuracy.svg`, `signals.svg` (each round's label-free signals)
//! and `calibration.svg` at the top.
//!
//! The stop rule ([`crate::stop_rule`]): after each round, with a probe, the loop stops when the
//! probe's accuracy fell below its best so far, keeping the best model; without one, from round 2
//! on, when the collapse rule fires on the round's paths (sampled by the previous round's model)
//! compared with round 1's, keeping the model before the collapsed one. `ttrl` also applies it
//! inside its online loop. The report's `after` is the kept model's accuracy, and `stopped` says
//! where and why.
//!
//! Every output is written atomically, and `manifest.json` records each finished stage (with its time)
//! after its output is in place. Run again with the same options in the same directory and finished
//! stages are skipped; the generate stage also keeps each finished question's paths as it goes
//! (`paths.jsonl.partial`), so a killed generation resumes with the next question and, generation being
//! deterministic per question and path, ends with exactly the paths of an uninterrupted run.
//!
//! The pool's gold answers, when it has them, are never read by the loop: they only let the report
//! say how accurate the votes were.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lmsi_data::{
    BadLines, Dataset, ExemplarSet, PathRecord, PromptFormat, Question, VoteRecord, read_jsonl,
    read_paths, read_votes, write_atomic, write_jsonl_atomic,
};
use lmsi_transformer::{Backend, Model, Storage, Tokenizer};
use lmsi_voter::Extractor;
use serde::{Deserialize, Serialize};

use crate::build_data::build_for;
use crate::eval::{EvalMode, EvalReport, PairedDifference, evaluate, paired_difference};
use crate::fingerprint::{input_hashes, reads};
use crate::generate::{GenerateOptions, PromptKind, generate_paths, generate_paths_by_question};
use crate::metrics::{ConfidenceBin, calibration};
use crate::objective::Objective;
use crate::outputs::{Named, check_output};
use crate::plot::{Axes, Series, line_chart};
use crate::self_exemplars::{candidates, select_exemplars};
use crate::signals::Signals;
use crate::stop_rule::{ProbeWatch, Stopped, collapsed};
use crate::train::{TrainData, TrainOptions, train_data};
use crate::ttrl::{TtrlOptions, TtrlReport, collapse_reason, train_online};
use crate::vote::{VoteControl, VoteOptions, vote_paths};
use crate::{Error, check_option, read_json};

/// Everything a run depends on. Stored in the manifest: a run directory only resumes with the same
/// (compared as serialised).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// The model to improve (the embedded seed model, when it is the default run).
    pub model: PathBuf,
    /// Unlabelled questions (the "pool").
    pub questions: PathBuf,
    /// Labelled test questions.
    pub eval: PathBuf,
    pub generate: GenerateOptions,
    /// Paths per test question for self-consistency evaluation.
    pub eval_paths: usize,
    /// Sampling temperature of self-consistency evaluation after training (the paper: 1.2).
    pub eval_temperature: f32,
    pub vote: VoteOptions,
    pub formats: Vec<PromptFormat>,
    pub train: TrainOptions,
    pub rounds: usize,
    /// Distillation: train this model on the paths of `model`.
    pub student: Option<PathBuf>,
    /// Questions the model writes itself, added to the pool (0: none).
    pub self_questions: usize,
    /// Self-written questions are kept only when their vote is at least this confident.
    pub self_question_confidence: f64,
    /// What each round trains toward ([`crate::objective`]).
    #[serde(default)]
    pub objective: Objective,
    /// The online loop's settings (`ttrl` only).
    #[serde(default)]
    pub ttrl: TtrlOptions,
    /// A small labelled set whose greedy accuracy the stop rule watches (never trained on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<PathBuf>,
    /// `--exemplars self`: this many few-shot exemplars written by the model itself replace
    /// `generate.exemplars`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_exemplars: Option<usize>,
    /// Round 1's paths, sampled beforehand (a sharded `lmsi generate` merged), instead of its
    /// generate stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths_from: Option<PathBuf>,
    /// The dataset that the question, test and probe files hold (`--format`); `None` tells it by
    /// their fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Dataset>,
}

impl RunConfig {
    /// Checks every option against its range before any work, naming the first out of it by its
    /// flag.
    pub fn check(&self) -> Result<(), Error> {
        let count = |n: &usize| *n >= 1;
        check_option("--rounds", self.rounds, "at least 1", count)?;
        check_option("--eval-paths", self.eval_paths, "at least 1", count)?;
        let non_negative = |x: &f32| x.is_finite() && *x >= 0.0;
        let expected = "a finite number of at least 0";
        check_option(
            "--eval-temperature",
            self.eval_temperature,
            expected,
            non_negative,
        )?;
        self.vote.check()?;
        self.check_objective()?;
        self.generate.check()?;
        self.generate
            .sampling
            .validate()
            .map_err(|e| Error::Input(e.to_string()))?;
        self.train.check()
    }
}

impl RunConfig {
    /// Refuses the combinations an objective cannot run.
    fn check_objective(&self) -> Result<(), Error> {
        let refuse = |why: &'static str| {
            Err(Error::InvalidOption {
                option: "--objective",
                value: self.objective.to_string(),
                expected: why,
            })
        };
        match self.objective {
            Objective::Weighted if self.vote.control == VoteControl::RandomVote => refuse(
                "sft, scpo or ttrl with --control random-vote (weighted reads every answer's vote \
                 share, not the kept answer)",
            ),
            Objective::Ttrl if self.student.is_some() => refuse(
                "sft, weighted or scpo with --student (ttrl samples from the model it trains)",
            ),
            Objective::Ttrl if self.paths_from.is_some() => {
                refuse("sft, weighted or scpo with --paths-from (ttrl samples as it trains)")
            }
            Objective::Ttrl => self.ttrl.check(),
            _ if self.paths_from.is_some() && self.self_questions > 0 => {
                Err(Error::InvalidOption {
                    option: "--paths-from",
                    value: self.self_questions.to_string(),
                    expected: "used without --self-questions (the given paths cannot cover the questions \
                           the model writes)",
                })
            }
            _ => Ok(()),
        }
    }

    /// Paths the loop samples per pool question over all its rounds.
    fn loop_paths_per_question(&self, pool: usize) -> usize {
        match self.objective {
            Objective::Ttrl => {
                let t = &self.ttrl;
                let per_round = t.steps as usize * t.questions * t.paths;
                (self.rounds * per_round).div_ceil(pool.max(1))
            }
            _ => self.rounds * self.generate.paths,
        }
    }
}

/// What a run reports (`report.json`; stable keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub before: Accuracy,
    pub after: Accuracy,
    /// Accuracy of the first round's votes against the pool's gold answers (only when it has them;
    /// the loop never reads them).
    pub vote_accuracy: Option<f64>,
    /// Questions in the pool (self-written ones included).
    pub questions: usize,
    /// Paths sampled.
    pub paths: usize,
    /// Paths that agree with their question's vote and became training data.
    pub kept_paths: usize,
    pub train_examples: usize,
    /// Seconds per stage (`round-1/generate`, ...), as measured when each stage ran.
    pub seconds: BTreeMap<String, f64>,
    /// The compute-matched baseline: the starting model's self-consistency with as many paths per
    /// test question as the loop sampled per question.
    pub compute_matched: ComputeMatched,
    pub rounds: Vec<RoundReport>,
    /// The starting model's greedy accuracy on the probe set, with `--probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_before: Option<f64>,
    /// Where the stop rule stopped the loop, and the model it kept (whose accuracy `after` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
    /// `after` less `before`, question by question on the same test set, with paired intervals.
    #[serde(default)]
    pub greedy_gain: PairedDifference,
    #[serde(default)]
    pub sc_gain: PairedDifference,
    /// Round 1's votes on the pool: accuracy per tenth of vote confidence, with counts (only when
    /// the pool has gold answers; empty for `ttrl`, which votes at every step instead).
    #[serde(default)]
    pub calibration: Vec<ConfidenceBin>,
}

/// The starting model's self-consistency accuracy with `paths` paths per test question.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeMatched {
    pub paths: usize,
    pub sc_accuracy: f64,
    /// Wilson score interval at 95%.
    pub ci95: [f64; 2],
}

/// Greedy and self-consistency accuracy (fractions in [0, 1]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub greedy_accuracy: f64,
    pub sc_accuracy: f64,
    /// Wilson score intervals at 95%.
    #[serde(default)]
    pub greedy_ci95: [f64; 2],
    #[serde(default)]
    pub sc_ci95: [f64; 2],
}

/// One round's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: usize,
    pub after: Accuracy,
    pub questions: usize,
    pub paths: usize,
    pub voted: usize,
    pub mean_confidence: f64,
    pub vote_accuracy: Option<f64>,
    pub kept_paths: usize,
    pub train_examples: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Label-free signals of the round's sampled paths.
    #[serde(default)]
    pub signals: Signals,
    /// The trained model's greedy accuracy on the probe set, with `--probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_accuracy: Option<f64>,
    /// Where `ttrl`'s stop rule stopped its online loop, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

/// What the rounds of a run gave: their reports, the probe's accuracy before the first, where and
/// why the stop rule stopped the loop, and the round whose model it kept (0: the starting model).
struct Rounds {
    rounds: Vec<RoundReport>,
    probe_before: Option<f64>,
    stopped: Option<Stopped>,
    kept_round: usize,
}

/// Progress of a run, for the command line.
pub enum Event<'a> {
    /// A stage begins; `work` is how many units (paths, steps) it will report.
    Start { stage: &'a str, work: usize },
    /// One more unit of the running stage is done.
    Progress,
    /// A stage ended, with a one-line summary.
    Done {
        stage: &'a str,
        seconds: f64,
        summary: String,
    },
    /// A stage was already done in this run directory.
    Skipped { stage: &'a str },
}

#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    config: Option<RunConfig>,
    /// The content hash of each input when the run started ([`crate::fingerprint`]).
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    /// Finished stages and their wall time.
    stages: BTreeMap<String, f64>,
}

/// Loads a model directory on the run's backend, stored for inference or for training.
pub type Loader<'a, B> = &'a dyn Fn(&Path, Storage) -> Result<(Model<B>, Tokenizer), Error>;

/// How one invocation drives a run directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunControl<'a> {
    /// Stop after this stage (a name such as `round-1/generate`).
    pub stop_after: Option<&'a str>,
    /// When an input changed since the run started, redo the stages that read it instead of
    /// refusing ([`crate::fingerprint`]).
    pub redo_changed: bool,
}

/// Runs (or resumes) the loop in `work_dir`, as `control` says.
pub fn run<B: Backend>(
    config: &RunConfig,
    work_dir: &Path,
    load: Loader<'_, B>,
    control: RunControl<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Option<RunReport>, Error> {
    config.check()?;
    std::fs::create_dir_all(work_dir).map_err(|e| Error::io(work_dir, e))?;
    check_outputs(config, work_dir)?;
    let manifest_path = work_dir.join("manifest.json");
    let mut manifest: Manifest = if manifest_path.exists() {
        read_json(&manifest_path)?
    } else {
        Manifest::default()
    };
    let same =
        |saved: &RunConfig| serde_json::to_value(saved).ok() == serde_json::to_value(config).ok();
    if let Some(saved) = manifest.config.as_ref().filter(|saved| !same(saved)) {
        return Err(Error::ResumeMismatch {
            path: work_dir.to_path_buf(),
            what: format!(
                "holds a run with other {}; use another --work-dir (or delete it) for this one",
                differences(saved, config)
            ),
        });
    }
    manifest.config = Some(config.clone());
    let inputs = input_hashes(config)?;
    let changed = changed_inputs(&manifest.inputs, &inputs);
    if !changed.is_empty() && !control.redo_changed {
        return Err(Error::ResumeMismatch {
            path: work_dir.to_path_buf(),
            what: format!(
                "holds a run computed from other inputs: {} changed since; pass --redo-changed \
                 to redo the stages that read them, or use another --work-dir",
                changed.join(", ")
            ),
        });
    }
    redo_stages(&mut manifest, &changed, work_dir)?;
    manifest.inputs = inputs;
    write_json(&manifest_path, &manifest)?;
    let mut runner = Runner {
        config,
        generate: config.generate.clone(),
        work_dir,
        load,
        manifest,
        manifest_path,
        on_event,
        stop_after: control.stop_after,
        stopped: false,
    };
    runner.all()
}

/// The inputs whose hash differs from the one recorded (none when the run recorded none: a new
/// run, or one started by an lmsi that did not record them).
fn changed_inputs(saved: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    if saved.is_empty() {
        return Vec::new();
    }
    now.iter()
        .filter(|(name, hash)| saved.get(*name) != Some(hash))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Forgets the finished stages that read a changed input, and the paths a redone generation
/// had kept, so that they run again.
fn redo_stages(manifest: &mut Manifest, changed: &[String], work_dir: &Path) -> Result<(), Error> {
    // Self-written exemplars come from the pool and go into every prompt.
    let prompts_changed = manifest.stages.contains_key(SELF_EXEMPLARS_STAGE)
        && changed.iter().any(|input| input == "questions");
    let redo: Vec<String> = manifest
        .stages
        .keys()
        .filter(|stage| prompts_changed || changed.iter().any(|input| reads(stage, input)))
        .cloned()
        .collect();
    for stage in &redo {
        manifest.stages.remove(stage);
    }
    for stage in redo.iter().filter(|s| s.ends_with("/generate")) {
        let partial = work_dir.join(stage).with_file_name("paths.jsonl.partial");
        if partial.exists() {
            std::fs::remove_file(&partial).map_err(|e| Error::io(&partial, e))?;
        }
    }
    Ok(())
}

/// Refuses a run whose outputs would overwrite one of its inputs (a question file inside a round's
/// directory, say), before any work.
fn check_outputs(config: &RunConfig, work_dir: &Path) -> Result<(), Error> {
    let mut inputs = vec![
        Named::file("--questions", &config.questions),
        Named::file("--eval", &config.eval),
        Named::dir("--model", &config.model),
    ];
    inputs.extend(
        config
            .student
            .as_deref()
            .map(|s| Named::dir("--student", s)),
    );
    inputs.extend(config.probe.as_deref().map(|p| Named::file("--probe", p)));
    let output = "the run's output";
    for r in 1..=config.rounds {
        check_output(
            Named::dir(output, &work_dir.join(format!("round-{r}"))),
            &inputs,
        )?;
    }
    for file in REPORT_FILES {
        check_output(Named::file(output, &work_dir.join(file)), &inputs)?;
    }
    Ok(())
}

/// The files a run writes at the top of its directory.
const REPORT_FILES: [&str; 6] = [
    "manifest.json",
    "report.json",
    "report.md",
    "accuracy.svg",
    "signals.svg",
    "calibration.svg",
];

struct Runner<'a, B: Backend> {
    config: &'a RunConfig,
    /// The generation options in force: the config's, with the self-written exemplars once
    /// `--exemplars self` has written them.
    generate: GenerateOptions,
    work_dir: &'a Path,
    load: Loader<'a, B>,
    manifest: Manifest,
    manifest_path: PathBuf,
    on_event: &'a mut dyn FnMut(Event<'_>),
    stop_after: Option<&'a str>,
    stopped: bool,
}

/// Why the loop stopped before its end: after `--stop-after`'s stage, or on an error.
enum Halt {
    Stopped,
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Failed(e)
    }
}

/// A stage's output, or why the loop halted.
type Step<T> = Result<T, Halt>;

impl<B: Backend> Runner<'_, B> {
    /// The whole run, or `None` when it stopped after `--stop-after`'s stage.
    fn all(&mut self) -> Result<Option<RunReport>, Error> {
        match self.rounds() {
            Ok(report) => Ok(Some(report)),
            Err(Halt::Stopped) => Ok(None),
            Err(Halt::Failed(e)) => Err(e),
        }
    }

    fn rounds(&mut self) -> Step<RunReport> {
        let c = self.config;
        let pool = load_questions(&c.questions, c.format)?;
        let test = load_labelled(&c.eval, c.format)?;
        let trainee = c.student.clone().unwrap_or_else(|| c.model.clone());
        self.round_dir(1)?;
        if let Some(count) = c.self_exemplars {
            self.generate.exemplars = self.self_exemplars_stage(&pool, count)?;
        }
        let temperature = c.generate.sampling.temperature;
        let before = self.accuracy("round-1/eval-before", &trainee, &test, temperature)?;
        // The starting model given the samples the loop draws per question: each round's paths
        // and the final self-consistency evaluation's.
        let paths = c.loop_paths_per_question(pool.len()) + c.eval_paths;
        let spec = (EvalMode::Sc, temperature, paths);
        let matched = self.eval_stage("round-1/eval-before-matched", &trainee, &test, spec)?;
        let compute_matched = ComputeMatched {
            paths,
            sc_accuracy: matched.accuracy,
            ci95: matched.ci95,
        };
        let Rounds {
            rounds,
            probe_before,
            stopped,
            kept_round,
        } = self.rounds_until_stopped(&pool, &test, &trainee)?;
        let (greedy_gain, sc_gain) = (
            self.gain("greedy", kept_round)?,
            self.gain("sc", kept_round)?,
        );
        let report = RunReport {
            before,
            after: match kept_round {
                0 => before,
                k => rounds[k - 1].after,
            },
            vote_accuracy: rounds[0].vote_accuracy,
            questions: rounds[0].questions,
            paths: rounds.iter().map(|r| r.paths).sum(),
            kept_paths: rounds.iter().map(|r| r.kept_paths).sum(),
            train_examples: rounds.iter().map(|r| r.train_examples).sum(),
            seconds: self.manifest.stages.clone(),
            compute_matched,
            rounds,
            probe_before,
            stopped,
            greedy_gain,
            sc_gain,
            calibration: self.pool_calibration()?,
        };
        self.write_report(&report)?;
        Ok(report)
    }

    /// The kept model's accuracy (round `kept_round`'s; 0: the starting model's) less the starting
    /// model's, in evaluation `mode` (`greedy` or `sc`), question by question.
    fn gain(&self, mode: &str, kept_round: usize) -> Result<PairedDifference, Error> {
        let report = |stage: String| -> Result<EvalReport, Error> {
            read_json(&self.work_dir.join(format!("{stage}.json")))
        };
        let before = report(format!("round-1/eval-before-{mode}"))?;
        let after = match kept_round {
            0 => before.clone(),
            k => report(format!("round-{k}/eval-after-{mode}"))?,
        };
        Ok(paired_difference(&before, &after))
    }

    /// Round 1's vote accuracy per tenth of vote confidence, over the votes with gold answers.
    fn pool_calibration(&self) -> Result<Vec<ConfidenceBin>, Error> {
        if self.config.objective.is_online() {
            return Ok(Vec::new());
        }
        let votes = read_votes(&self.work_dir.join("round-1/votes.jsonl"), BadLines::Error)?.items;
        let extractor = Extractor::new(self.config.vote.kind);
        let (confidence, correct): (Vec<f64>, Vec<bool>) = votes
            .iter()
            .filter_map(|v| Some((v.confidence, gold_matches(v, &extractor)?)))
            .unzip();
        if correct.is_empty() {
            return Ok(Vec::new());
        }
        Ok(calibration(&confidence, &correct, 10))
    }

    /// Every round, or those until the stop rule fires.
    fn rounds_until_stopped(
        &mut self,
        pool: &[Question],
        test: &[Question],
        trainee: &Path,
    ) -> Step<Rounds> {
        let probe = match &self.config.probe {
            Some(path) => Some(load_labelled(path, self.config.format)?),
            None => None,
        };
        let probe_before = match &probe {
            Some(questions) => {
                Some(self.probe_stage("round-1/probe-before", trainee, questions)?)
            }
            None => None,
        };
        let mut watch = probe_before.map(ProbeWatch::new);
        // The round whose model is best so far (0: the starting model).
        let mut best_round = 0;
        let (mut rounds, mut stopped) = (Vec::<RoundReport>::new(), None);
        for r in 1..=self.config.rounds {
            let probe = probe.as_deref().zip(watch.map(|w| w.best()));
            let round = self.round(r, pool, test, trainee, probe)?;
            stopped =
                round
                    .stopped
                    .clone()
                    .or_else(|| match watch.as_mut().zip(round.probe_accuracy) {
                        Some((watch, accuracy)) => probe_fell(watch, accuracy, r, best_round),
                        None => collapse(&rounds, &round),
                    });
            if stopped.is_none() || round.stopped.is_some() {
                best_round = r;
            }
            rounds.push(round);
            if stopped.is_some() {
                break;
            }
        }
        let kept_round = match &stopped {
            Some(s) if s.step.is_none() => kept_round_of(&s.kept),
            _ => rounds.len(),
        };
        Ok(Rounds {
            rounds,
            probe_before,
            stopped,
            kept_round,
        })
    }

    /// Greedy accuracy of `model` on the probe set: stage `name`.
    fn probe_stage(&mut self, name: &str, model: &Path, probe: &[Question]) -> Step<f64> {
        let temperature = self.config.generate.sampling.temperature;
        let spec = (EvalMode::Greedy, temperature, 1);
        Ok(self.eval_stage(name, model, probe, spec)?.accuracy)
    }

    /// `round-r/`, created.
    fn round_dir(&self, r: usize) -> Result<PathBuf, Error> {
        let dir = self.work_dir.join(format!("round-{r}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// Round `r`: paths from the teacher, votes, training data, the trained model and its accuracy.
    fn round(
        &mut self,
        r: usize,
        pool: &[Question],
        test: &[Question],
        trainee: &Path,
        probe: Option<(&[Question], f64)>,
    ) -> Step<RoundReport> {
        let c = self.config;
        let dir = self.round_dir(r)?;
        // The model this round starts from, and the one that writes the paths.
        let start = if r == 1 {
            trainee.to_path_buf()
        } else {
            self.work_dir.join(format!("round-{}/model", r - 1))
        };
        let teacher = if c.student.is_some() {
            c.model.clone()
        } else {
            start.clone()
        };
        let mut questions = pool.to_vec();
        if c.self_questions > 0 {
            let name = format!("round-{r}/self-questions");
            questions.extend(self.self_questions_stage(&name, &teacher, pool)?);
        }
        if c.objective.is_online() {
            return self.online_round(r, &questions, test, &start, probe);
        }
        let stage = format!("round-{r}/generate");
        let paths = match (&c.paths_from, r) {
            (Some(file), 1) => self.given_paths_stage(&stage, file, &questions)?,
            _ => self.generate_stage(&stage, &teacher, &questions)?,
        };
        let votes = self.vote_stage(&format!("round-{r}/vote"), &paths)?;
        let data = self.build_stage(&format!("round-{r}/build"), &votes, &paths)?;
        let trained = dir.join("model");
        let loss = self.train_stage(&format!("round-{r}/train"), &start, &trained, &data)?;
        let (after, probe_accuracy) = self.evaluate_trained(r, &trained, test, probe)?;
        let extractor = Extractor::new(c.vote.kind);
        let summary = vote_summary(&votes, &extractor);
        Ok(RoundReport {
            round: r,
            after,
            questions: questions.len(),
            paths: paths.len(),
            voted: summary.0,
            mean_confidence: summary.1,
            vote_accuracy: summary.2,
            kept_paths: votes
                .iter()
                .filter(|v| v.answer.is_some())
                .map(|v| v.paths.len())
                .sum(),
            train_examples: data.len(),
            first_loss: loss.0,
            last_loss: loss.1,
            signals: Signals::of(&paths, &extractor),
            probe_accuracy,
            stopped: None,
        })
    }

    /// The accuracy of round `r`'s trained model, and its probe accuracy with a probe.
    fn evaluate_trained(
        &mut self,
        r: usize,
        trained: &Path,
        test: &[Question],
        probe: Option<(&[Question], f64)>,
    ) -> Step<(Accuracy, Option<f64>)> {
        let temperature = self.config.eval_temperature;
        let after = self.accuracy(&format!("round-{r}/eval-after"), trained, test, temperature)?;
        let probe_accuracy = match probe {
            Some((questions, _)) => {
                Some(self.probe_stage(&format!("round-{r}/probe"), trained, questions)?)
            }
            None => None,
        };
        Ok((after, probe_accuracy))
    }

    /// Round `r` of `ttrl`: the online loop from `start` over `questions`, then the trained model's
    /// accuracy.
    fn online_round(
        &mut self,
        r: usize,
        questions: &[Question],
        test: &[Question],
        start: &Path,
        probe: Option<(&[Question], f64)>,
    ) -> Step<RoundReport> {
        let trained = self.round_dir(r)?.join("model");
        let name = format!("round-{r}/ttrl");
        let report = self.ttrl_stage(&name, start, &trained, questions, probe)?;
        let (after, probe_accuracy) = self.evaluate_trained(r, &trained, test, probe)?;
        Ok(RoundReport {
            round: r,
            after,
            questions: questions.len(),
            paths: report.paths,
            voted: report.voted,
            mean_confidence: report.mean_confidence,
            vote_accuracy: report.vote_accuracy,
            kept_paths: report.trained_paths,
            train_examples: report.trained_paths,
            first_loss: report.first_loss,
            last_loss: report.last_loss,
            signals: report.signals,
            probe_accuracy,
            stopped: report.stopped.map(|(step, reason, kept)| Stopped {
                round: r,
                step: Some(step),
                reason,
                kept: match kept {
                    0 => format!("round-{r}/model (the weights it started the round with)"),
                    k => format!("round-{r}/model (the weights after step {k})"),
                },
            }),
        })
    }

    fn ttrl_stage(
        &mut self,
        name: &str,
        start: &Path,
        out: &Path,
        questions: &[Question],
        probe: Option<(&[Question], f64)>,
    ) -> Step<TtrlReport> {
        let c = self.config;
        let load = self.load;
        let generate = self.generate.clone();
        let report_path = out.join("ttrl_report.json");
        let paths_out = out.with_file_name("paths.jsonl");
        let steps = c.ttrl.steps as usize;
        self.stage(
            name,
            steps,
            || read_json(&report_path),
            |events| {
                // A model of a run killed before the manifest recorded this stage is redone.
                if out.exists() {
                    std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
                }
                let (mut model, tokenizer) = load(start, Storage::Training)?;
                let reference = match c.ttrl.kl > 0.0 {
                    true => Some(load(start, Storage::Inference)?.0),
                    false => None,
                };
                let (report, paths) = train_online(
                    &mut model,
                    reference.as_ref(),
                    &tokenizer,
                    start,
                    questions,
                    &generate,
                    &c.vote,
                    &c.train,
                    &c.ttrl,
                    probe,
                    out,
                    &mut |_, _| events(Event::Progress),
                )?;
                write_jsonl_atomic(&paths_out, &paths)?;
                let line = format!(
                    "{} steps, {} paths ({} trained on), reward {:.3} -> {:.3}",
                    report.steps,
                    report.paths,
                    report.trained_paths,
                    report.first_reward,
                    report.last_reward
                );
                Ok((report, line))
            },
        )
    }

    /// Greedy and self-consistency accuracy of `model` on `test`: stages `{prefix}-greedy` and
    /// `{prefix}-sc`.
    fn accuracy(
        &mut self,
        prefix: &str,
        model: &Path,
        test: &[Question],
        temperature: f32,
    ) -> Step<Accuracy> {
        let paths = self.config.eval_paths;
        let greedy = self.eval_stage(
            &format!("{prefix}-greedy"),
            model,
            test,
            (EvalMode::Greedy, temperature, paths),
        )?;
        let sc = self.eval_stage(
            &format!("{prefix}-sc"),
            model,
            test,
            (EvalMode::Sc, temperature, paths),
        )?;
        Ok(Accuracy {
            greedy_accuracy: greedy.accuracy,
            sc_accuracy: sc.accuracy,
            greedy_ci95: greedy.ci95,
            sc_ci95: sc.ci95,
        })
    }

    /// Runs `work` as stage `name` unless the manifest says it is done; `load` reads its output back.
    fn stage<T>(
        &mut self,
        name: &str,
        work_units: usize,
        load: impl FnOnce() -> Result<T, Error>,
        work: impl FnOnce(&mut dyn FnMut(Event<'_>)) -> Result<(T, String), Error>,
    ) -> Step<T> {
        if self.stopped {
            return Err(Halt::Stopped);
        }
        let result = if self.manifest.stages.contains_key(name) {
            (self.on_event)(Event::Skipped { stage: name });
            load()?
        } else {
            (self.on_event)(Event::Start {
                stage: name,
                work: work_units,
            });
            let started = Instant::now();
            let (value, summary) = work(&mut *self.on_event)?;
            let seconds = started.elapsed().as_secs_f64();
            self.manifest.stages.insert(name.to_string(), seconds);
            write_json(&self.manifest_path, &self.manifest)?;
            (self.on_event)(Event::Done {
                stage: name,
                seconds,
                summary,
            });
            value
        };
        if self.stop_after == Some(name) {
            self.stopped = true;
        }
        Ok(result)
    }

    fn eval_stage(
        &mut self,
        name: &str,
        model_dir: &Path,
        test: &[Question],
        (mode, temperature, paths): (EvalMode, f32, usize),
    ) -> Step<EvalReport> {
        let out = self.work_dir.join(format!("{name}.json"));
        let mut options = self.generate.clone();
        options.paths = paths;
        options.sampling.temperature = temperature;
        // Evaluations vote over every path, comparable from round to round.
        options.early_stop = None;
        let load = self.load;
        let units = test.len() * mode.paths(options.paths);
        self.stage(
            name,
            units,
            || read_json(&out),
            |events| {
                let (model, tokenizer) = load(model_dir, Storage::Inference)?;
                let report = evaluate(&model, &tokenizer, test, mode, &options, &mut |_| {
                    events(Event::Progress)
                })?;
                write_json(&out, &report)?;
                let summary = report.summary();
                Ok((report, summary))
            },
        )
    }

    /// `--exemplars self`: zero-shot paths of the model on some pool questions, voted, and the
    /// most consistent `count` as the few-shot exemplars.
    fn self_exemplars_stage(&mut self, pool: &[Question], count: usize) -> Step<ExemplarSet> {
        let name = SELF_EXEMPLARS_STAGE;
        let out = self.work_dir.join("round-1/self-exemplars.jsonl");
        let c = self.config;
        let load = self.load;
        let mut options = c.generate.clone();
        options.prompt = PromptKind::Format(PromptFormat::CotZeroshot);
        let candidates = candidates(pool, count, c.generate.sampling.seed);
        let vote = VoteOptions {
            control: VoteControl::Majority,
            ..c.vote.clone()
        };
        let units = candidates.len() * options.paths;
        let read = || Ok(ExemplarSet::load(&out)?);
        self.stage(name, units, read, |events| {
            let (model, tokenizer) = load(&c.model, Storage::Inference)?;
            let on_path = &mut |_: &PathRecord| events(Event::Progress);
            let (paths, _) = generate_paths(&model, &tokenizer, &candidates, &options, on_path)?;
            let (votes, _) = vote_paths(&paths, &vote)?;
            let set = select_exemplars(&paths, &votes, count)?;
            write_jsonl_atomic(&out, set.exemplars())?;
            let line = format!(
                "{} exemplars from zero-shot paths of {} pool questions",
                set.exemplars().len(),
                candidates.len()
            );
            Ok((set, line))
        })
    }

    fn self_questions_stage(
        &mut self,
        name: &str,
        model_dir: &Path,
        pool: &[Question],
    ) -> Step<Vec<Question>> {
        let out = self.work_dir.join(format!("{name}.jsonl"));
        let c = self.config;
        let load = self.load;
        self.stage(
            name,
            c.self_questions,
            || load_questions_or_empty(&out),
            |events| {
                let (model, tokenizer) = load(model_dir, Storage::Inference)?;
                let written =
                    write_questions(&model, &tokenizer, pool, c, &mut || events(Event::Progress))?;
                write_jsonl_atomic(&out, &written)?;
                let summary = format!(
                    "{} new questions from {} prompts",
                    written.len(),
                    c.self_questions
                );
                Ok((written, summary))
            },
        )
    }

    /// Round 1's generate stage from `--paths-from`: the file's paths, checked to be those of the
    /// pool's questions, in pool order.
    fn given_paths_stage(
        &mut self,
        name: &str,
        file: &Path,
        questions: &[Question],
    ) -> Step<Vec<PathRecord>> {
        let out = self.work_dir.join(name).with_file_name("paths.jsonl");
        let file = file.to_path_buf();
        self.stage(
            name,
            questions.len(),
            || Ok(read_paths(&out, BadLines::Error)?.items),
            |_| {
                let paths =
                    order_given_paths(&file, read_paths(&file, BadLines::Error)?.items, questions)?;
                write_jsonl_atomic(&out, &paths)?;
                let summary = format!(
                    "{} paths for {} questions, from {}",
                    paths.len(),
                    questions.len(),
                    file.display()
                );
                Ok((paths, summary))
            },
        )
    }

    fn generate_stage(
        &mut self,
        name: &str,
        model_dir: &Path,
        questions: &[Question],
    ) -> Step<Vec<PathRecord>> {
        let out = self
            .work_dir
            .join(format!("{name}.jsonl"))
            .with_file_name("paths.jsonl");
        let partial = out.with_file_name("paths.jsonl.partial");
        let options = self.generate.clone();
        let load = self.load;
        let units = questions.len() * options.paths;
        self.stage(
            name,
            units,
            || Ok(read_paths(&out, BadLines::Error)?.items),
            |events| {
                let done = read_partial(&partial)?;
                let done_ids: HashSet<&str> = done
                    .iter()
                    .flat_map(|q| q.first())
                    .map(|p| p.id.as_str())
                    .collect();
                for _ in done.iter().flatten() {
                    events(Event::Progress);
                }
                let remaining: Vec<Question> = questions
                    .iter()
                    .filter(|q| !done_ids.contains(q.id.as_str()))
                    .cloned()
                    .collect();
                let mut all: Vec<PathRecord> = done.iter().flatten().cloned().collect();
                let mut seconds_line = String::new();
                if !remaining.is_empty() {
                    let (model, tokenizer) = load(model_dir, Storage::Inference)?;
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&partial)
                        .map_err(|e| Error::io(&partial, e))?;
                    let (paths, stats) = generate_paths_by_question(
                        &model,
                        &tokenizer,
                        &remaining,
                        &options,
                        &mut |_| events(Event::Progress),
                        &mut |paths| {
                            let line =
                                serde_json::to_string(paths).expect("paths serialise") + "\n";
                            file.write_all(line.as_bytes())
                                .and_then(|_| file.flush())
                                .map_err(|e| Error::io(&partial, e))
                        },
                    )?;
                    all.extend(paths);
                    seconds_line = format!(
                        ", {:.0} sampled tokens/s",
                        stats.sampled_tokens_per_second()
                    );
                }
                let order: std::collections::HashMap<&str, usize> = questions
                    .iter()
                    .enumerate()
                    .map(|(i, q)| (q.id.as_str(), i))
                    .collect();
                all.sort_by_key(|p| {
                    (
                        order.get(p.id.as_str()).copied().unwrap_or(usize::MAX),
                        p.path,
                    )
                });
                write_jsonl_atomic(&out, &all)?;
                std::fs::remove_file(&partial).map_err(|e| Error::io(&partial, e))?;
                let summary = format!(
                    "{} paths for {} questions{seconds_line}",
                    all.len(),
                    questions.len()
                );
                Ok((all, summary))
            },
        )
    }

    fn vote_stage(&mut self, name: &str, paths: &[PathRecord]) -> Step<Vec<VoteRecord>> {
        let out = self.work_dir.join(name).with_file_name("votes.jsonl");
        let c = self.config;
        let options = c.vote.clone();
        self.stage(
            name,
            0,
            || Ok(read_votes(&out, BadLines::Error)?.items),
            |_| {
                let (mut votes, summary) = vote_paths(paths, &options)?;
                // Self-written questions count only when their vote is confident.
                votes.retain(|v| {
                    !v.id.starts_with(SELF_QUESTION_PREFIX)
                        || v.confidence >= c.self_question_confidence
                });
                write_jsonl_atomic(&out, &votes)?;
                let mut line = format!(
                    "{} questions, {} voted, mean confidence {:.3}",
                    summary.questions, summary.voted, summary.mean_confidence
                );
                if let Some(accuracy) = summary.accuracy() {
                    line += &format!(
                        ", vote accuracy {:.1}% (gold answers used for this report only)",
                        100.0 * accuracy
                    );
                }
                if options.control == VoteControl::RandomVote {
                    line += "; random-vote control: each question keeps a random sampled answer";
                }
                Ok((votes, line))
            },
        )
    }

    fn build_stage(
        &mut self,
        name: &str,
        votes: &[VoteRecord],
        paths: &[PathRecord],
    ) -> Step<TrainData> {
        let c = self.config;
        let exemplars = self.generate.exemplars.clone();
        let file = match c.objective {
            Objective::Scpo => "pairs.jsonl",
            _ => "train.jsonl",
        };
        let out = self.work_dir.join(name).with_file_name(file);
        let read = || -> Result<TrainData, Error> {
            Ok(match c.objective {
                Objective::Scpo => TrainData::Pairs(read_jsonl(&out, BadLines::Error)?.items),
                _ => TrainData::Examples(read_jsonl(&out, BadLines::Error)?.items),
            })
        };
        self.stage(name, 0, read, |_| {
            let extractor = Extractor::new(c.vote.kind);
            let (data, summary) = build_for(
                c.objective,
                votes,
                paths,
                &c.formats,
                &exemplars,
                &extractor,
            )?;
            data.write(&out)?;
            let what = data.items_name();
            let line = format!(
                "{} {what} from {} paths of {} questions",
                summary.examples(),
                summary.kept_paths,
                summary.questions
            );
            Ok((data, line))
        })
    }

    fn train_stage(
        &mut self,
        name: &str,
        start: &Path,
        out: &Path,
        data: &TrainData,
    ) -> Step<(f64, f64)> {
        let c = self.config;
        let load = self.load;
        let log_path = out.join("train_log.jsonl");
        let read_losses = || -> Result<(f64, f64), Error> {
            let log = read_jsonl::<crate::train::StepLog>(&log_path, BadLines::Error)?.items;
            match (log.first(), log.last()) {
                (Some(a), Some(b)) => Ok((a.loss, b.loss)),
                _ => Err(Error::Input(format!(
                    "{}: empty training log",
                    log_path.display()
                ))),
            }
        };
        self.stage(name, 0, read_losses, |events| {
            // A checkpoint of a run killed before the manifest recorded this stage is redone.
            if out.exists() {
                std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
            }
            let (mut model, tokenizer) = load(start, Storage::Training)?;
            let on_step = &mut |_: &_, _| events(Event::Progress);
            let report = train_data(&mut model, &tokenizer, start, data, &c.train, out, on_step)?;
            let line = format!(
                "{} steps, loss {:.4} -> {:.4}, {:.0} tokens/s",
                report.step, report.first_loss, report.last_loss, report.tokens_per_second
            );
            Ok(((report.first_loss, report.last_loss), line))
        })
    }

    fn write_report(&self, report: &RunReport) -> Result<(), Error> {
        write_json(&self.work_dir.join("report.json"), report)?;
        write_atomic(
            &self.work_dir.join("report.md"),
            markdown(report).as_bytes(),
        )?;
        write_atomic(
            &self.work_dir.join("accuracy.svg"),
            accuracy_chart(report).as_bytes(),
        )?;
        write_atomic(
            &self.work_dir.join("signals.svg"),
            signals_chart(report).as_bytes(),
        )?;
        // ttrl votes at every step instead, and its ttrl_log.jsonl has each step's confidence.
        if !self.config.objective.is_online() {
            write_atomic(
                &self.work_dir.join("calibration.svg"),
                calibration_chart(&report.calibration).as_bytes(),
            )?;
        }
        Ok(())
    }
}

const SELF_EXEMPLARS_STAGE: &str = "round-1/self-exemplars";

/// Ids of self-written questions start with this.
pub const SELF_QUESTION_PREFIX: &str = "self-";

/// Prompts the model with a few pool questions at a time ("Q: ...\n\n" each, then "Q:") to write new
/// questions; keeps new, well-formed ones (ending in "?", not already in the pool).
fn write_questions<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    pool: &[Question],
    c: &RunConfig,
    progress: &mut dyn FnMut(),
) -> Result<Vec<Question>, Error> {
    const SHOWN: usize = 3;
    let prompts: Vec<Question> = (0..c.self_questions)
        .map(|i| {
            let shown: String = (0..SHOWN)
                .map(|j| format!("Q: {}\n\n", pool[(i * SHOWN + j) % pool.len()].question))
                .collect();
            Question {
                id: format!("{SELF_QUESTION_PREFIX}{i}"),
                question: format!("{shown}Q:"),
                answer: None,
                choices: None,
            }
        })
        .collect();
    let options = GenerateOptions {
        prompt: PromptKind::Raw,
        paths: 1,
        stop: Some(vec!["\n".into()]),
        max_new_tokens: c.generate.max_new_tokens,
        early_stop: None,
        ..c.generate.clone()
    };
    let (texts, _) = generate_paths(model, tokenizer, &prompts, &options, &mut |_| progress())?;
    let mut seen: HashSet<String> = pool.iter().map(|q| q.question.clone()).collect();
    Ok(texts
        .into_iter()
        .filter_map(|p| {
            let text = p.text.trim().to_string();
            let keep = text.ends_with('?') && text.len() > 10 && seen.insert(text.clone());
            keep.then_some(Question {
                id: p.id,
                question: text,
                answer: None,
                choices: None,
            })
        })
        .collect())
}

/// Questions a loop stage reads, of dataset `format` (`None`: told by the file's fields): no usable
/// question is an error naming the file.
fn load_questions(path: &Path, format: Option<Dataset>) -> Result<Vec<Question>, Error> {
    let loaded = lmsi_data::read_dataset(path, format, BadLines::Error)?.questions;
    if loaded.items.is_empty() {
        return Err(Error::Input(format!(
            "{}: no usable question",
            path.display()
        )));
    }
    Ok(loaded.items)
}

/// Questions that must all carry a gold answer (a test or probe set).
fn load_labelled(path: &Path, format: Option<Dataset>) -> Result<Vec<Question>, Error> {
    let questions = load_questions(path, format)?;
    if questions.iter().any(|q| q.gold().is_none()) {
        return Err(Error::Input(format!(
            "{}: every question needs a gold answer (it is a test or probe set)",
            path.display()
        )));
    }
    Ok(questions)
}

/// The stop after round `r` when the probe's `accuracy` fell below its best (reached by round
/// `best_round`, 0 for the starting model).
fn probe_fell(
    watch: &mut ProbeWatch,
    accuracy: f64,
    r: usize,
    best_round: usize,
) -> Option<Stopped> {
    let best = watch.best();
    watch.fell(accuracy).then(|| Stopped {
        round: r,
        step: None,
        reason: format!(
            "the probe's accuracy fell from {:.1}% to {:.1}%",
            100.0 * best,
            100.0 * accuracy
        ),
        kept: kept_name(best_round),
    })
}

/// The stop after `round` (round 2 or later) when its paths, sampled by the previous round's model,
/// show the collapse rule against round 1's: the model before that one is kept.
fn collapse(earlier: &[RoundReport], round: &RoundReport) -> Option<Stopped> {
    let first = &earlier.first()?.signals;
    collapsed(first, &round.signals).then(|| Stopped {
        round: round.round,
        step: None,
        reason: format!(
            "{}, in the paths of round {}'s model",
            collapse_reason(first, &round.signals),
            round.round - 1
        ),
        kept: kept_name(round.round - 2),
    })
}

fn kept_name(round: usize) -> String {
    match round {
        0 => KEPT_START.to_string(),
        r => format!("round-{r}/model"),
    }
}

const KEPT_START: &str = "the starting model";

/// The round whose model `kept` names (0: the starting model).
fn kept_round_of(kept: &str) -> usize {
    kept.strip_prefix("round-")
        .and_then(|rest| rest.split('/').next()?.parse().ok())
        .unwrap_or(0)
}

fn load_questions_or_empty(path: &Path) -> Result<Vec<Question>, Error> {
    Ok(read_jsonl(path, BadLines::Error)?.items)
}

/// The finished questions of an interrupted generate stage: one JSON array of paths per line. A last
/// line cut short by the interruption is ignored (that question is generated again).
fn read_partial(path: &Path) -> Result<Vec<Vec<PathRecord>>, Error> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let done: Vec<Vec<PathRecord>> = complete
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Rewrite the file without the cut line, so appending continues cleanly.
    let cleaned: String = done
        .iter()
        .map(|q| serde_json::to_string(q).expect("paths serialise") + "\n")
        .collect();
    write_atomic(path, cleaned.as_bytes())?;
    Ok(done)
}

/// (voted questions, mean confidence, vote accuracy against gold when present).
fn vote_summary(votes: &[VoteRecord], extractor: &Extractor) -> (usize, f64, Option<f64>) {
    let voted: Vec<&VoteRecord> = votes.iter().filter(|v| v.answer.is_some()).collect();
    let mean = voted.iter().map(|v| v.confidence).sum::<f64>() / voted.len().max(1) as f64;
    let judged: Vec<bool> = voted
        .iter()
        .filter_map(|v| gold_matches(v, extractor))
        .collect();
    let accuracy = (!judged.is_empty())
        .then(|| judged.iter().filter(|&&c| c).count() as f64 / judged.len() as f64);
    (voted.len(), mean, accuracy)
}

/// Whether a vote is correct, for a voted question with a gold answer.
fn gold_matches(v: &VoteRecord, extractor: &Extractor) -> Option<bool> {
    let gold = v.gold.as_deref()?;
    v.answer.as_ref()?;
    Some(extractor.is_correct(v.answer.as_deref(), gold))
}

fn markdown(r: &RunReport) -> String {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let with_ci =
        |x: f64, [low, high]: [f64; 2]| format!("{} [{}, {}]", pct(x), pct(low), pct(high));
    let mut s = String::from(
        "# lmsi run\n\n| | greedy (95% interval) | self-consistency (95% interval) |\n|---|---|---|\n",
    );
    let row = |name: String, a: &Accuracy| {
        format!(
            "| {name} | {} | {} |\n",
            with_ci(a.greedy_accuracy, a.greedy_ci95),
            with_ci(a.sc_accuracy, a.sc_ci95)
        )
    };
    s += &row("before".into(), &r.before);
    for round in &r.rounds {
        s += &row(format!("after round {}", round.round), &round.after);
    }
    let m = &r.compute_matched;
    s += &format!(
        "| before, {} paths (compute-matched) | | {} |\n",
        m.paths,
        with_ci(m.sc_accuracy, m.ci95)
    );
    let gain = |g: &PairedDifference| {
        format!(
            "{:+.1} points [{:+.1}, {:+.1}] ({} questions gained, {} lost)",
            100.0 * g.difference,
            100.0 * g.ci95[0],
            100.0 * g.ci95[1],
            g.gained,
            g.lost
        )
    };
    s += &format!(
        "\nGain of the kept model, paired 95% interval: greedy {}; self-consistency {}.\n",
        gain(&r.greedy_gain),
        gain(&r.sc_gain)
    );
    s += &format!(
        "\n{} questions, {} paths, {} kept paths, {} training examples.\n",
        r.questions, r.paths, r.kept_paths, r.train_examples
    );
    if let Some(v) = r.vote_accuracy {
        s += &format!(
            "Vote accuracy on the pool (gold answers read for this report only): {}.\n",
            pct(v)
        );
    }
    if let Some(before) = r.probe_before {
        let after: Vec<String> = r
            .rounds
            .iter()
            .filter_map(|round| {
                Some(format!(
                    "round {} {}",
                    round.round,
                    pct(round.probe_accuracy?)
                ))
            })
            .collect();
        s += &format!(
            "Probe accuracy (greedy): before {}, {}.\n",
            pct(before),
            after.join(", ")
        );
    }
    if let Some(stop) = &r.stopped {
        let at = match stop.step {
            Some(step) => format!("round {}, step {step}", stop.round),
            None => format!("round {}", stop.round),
        };
        s += &format!(
            "\n**The stop rule fired** at {at}: {}. Kept {}; \"after\" is its accuracy.\n",
            stop.reason, stop.kept
        );
    }
    s += "\nLabel-free signals of each round's sampled paths (means per question):\n\n";
    s += "| round | majority share | distinct answers | answer entropy (bits) | answered | tokens per path | log-prob per token |\n";
    s += "|---|---|---|---|---|---|---|\n";
    for round in &r.rounds {
        let g = &round.signals;
        s += &format!(
            "| {} | {:.3} | {:.2} | {:.3} | {} | {:.1} | {:.3} |\n",
            round.round,
            g.majority_share,
            g.distinct_answers,
            g.answer_entropy,
            pct(g.answered),
            g.mean_path_tokens,
            g.mean_token_logprob
        );
    }
    if !r.calibration.is_empty() {
        s += "\nCalibration of round 1's votes on the pool (gold answers read for this report only):\n\n";
        s += "| vote confidence | questions | vote accuracy (95% interval) |\n|---|---|---|\n";
        for b in r.calibration.iter().filter(|b| b.questions > 0) {
            s += &format!(
                "| {:.1}–{:.1} | {} | {} |\n",
                b.range[0],
                b.range[1],
                b.questions,
                with_ci(b.accuracy, b.ci95)
            );
        }
    }
    s += "\n| stage | seconds |\n|---|---|\n";
    let mut stages: Vec<(&String, &f64)> = r.seconds.iter().collect();
    stages.sort_by_key(|(stage, _)| run_order(stage));
    for (stage, secs) in stages {
        s += &format!("| {stage} | {secs:.1} |\n");
    }
    s += &format!("| all | {:.1} |\n", r.seconds.values().sum::<f64>());
    s
}

/// Where `stage` (`round-N/name`) comes in a run: by round, then in the order the stages run.
fn run_order(stage: &str) -> (usize, usize) {
    const ORDER: [&str; 14] = [
        "self-exemplars",
        "eval-before-greedy",
        "eval-before-sc",
        "eval-before-matched",
        "probe-before",
        "self-questions",
        "generate",
        "vote",
        "build",
        "train",
        "ttrl",
        "eval-after-greedy",
        "eval-after-sc",
        "probe",
    ];
    let (round, name) = stage.split_once('/').unwrap_or(("", stage));
    let round = round
        .strip_prefix("round-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    let position = ORDER.iter().position(|s| *s == name).unwrap_or(ORDER.len());
    (round, position)
}

fn accuracy_chart(r: &RunReport) -> String {
    let pct = |[low, high]: [f64; 2]| [100.0 * low, 100.0 * high];
    let rounds =
        || std::iter::once((0, &r.before)).chain(r.rounds.iter().map(|x| (x.round, &x.after)));
    let series = |name, value: fn(&Accuracy) -> (f64, [f64; 2])| {
        let (points, intervals) = rounds()
            .map(|(round, a)| {
                let (y, ci95) = value(a);
                ((round as f64, 100.0 * y), pct(ci95))
            })
            .unzip();
        Series::line_and_markers(name, points).with_intervals(intervals)
    };
    let axes = Axes::new(
        "test accuracy before (round 0) and after each round, with 95% intervals",
        "round",
        "accuracy (%)",
    );
    line_chart(
        &axes.whole_x(),
        &[
            series("greedy", |a| (a.greedy_accuracy, a.greedy_ci95)),
            series("self-consistency", |a| (a.sc_accuracy, a.sc_ci95)),
        ],
    )
}

/// The label-free signals of each round's paths (shares, so they share one axis).
fn signals_chart(r: &RunReport) -> String {
    let series = |name, f: fn(&Signals) -> f64| {
        let points = r.rounds.iter().map(|x| (x.round as f64, f(&x.signals)));
        Series::line_and_markers(name, points.collect())
    };
    let axes = Axes::new(
        "label-free signals of each round's sampled paths",
        "round",
        "share (entropy: bits)",
    );
    line_chart(
        &axes.whole_x(),
        &[
            series("majority share", |s| s.majority_share),
            series("answered", |s| s.answered),
            series("answer entropy (bits)", |s| s.answer_entropy),
        ],
    )
}

/// Vote accuracy against vote confidence: each non-empty bin at its middle, with its 95% interval
/// and its count of questions.
fn calibration_chart(bins: &[ConfidenceBin]) -> String {
    let filled: Vec<&ConfidenceBin> = bins.iter().filter(|b| b.questions > 0).collect();
    let votes = Series::markers(
        "votes (95% interval, questions)",
        filled
            .iter()
            .map(|b| ((b.range[0] + b.range[1]) / 2.0, b.accuracy))
            .collect(),
    )
    .with_intervals(filled.iter().map(|b| b.ci95).collect())
    .with_labels(
        filled
            .iter()
            .map(|b| format!("n={}", b.questions))
            .collect(),
    );
    let axes = Axes::new(
        "vote confidence against vote accuracy (pool, round 1)",
        "confidence (votes / valid paths)",
        "accuracy of the vote",
    );
    line_chart(
        &axes,
        &[
            votes,
            Series::line("calibrated", vec![(0.0, 0.0), (1.0, 1.0)]),
        ],
    )
}

/// The settings in which two run configurations differ, by name:
/// `options: generate.paths (16, then 32)`.
fn differences(saved: &RunConfig, now: &RunConfig) -> String {
    let (Ok(a), Ok(b)) = (serde_json::to_value(saved), serde_json::to_value(now)) else {
        return "options".into();
    };
    let mut differ = Vec::new();
    diff_values("", &a, &b, &mut differ);
    format!("options: {}", differ.join(", "))
}

/// Appends `name (then, now)` for every leaf in which `a` and `b` differ, keys joined by dots.
fn diff_values(name: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let key = if name.is_empty() {
                    k.clone()
                } else {
                    format!("{name}.{k}")
                };
                diff_values(
                    &key,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{name} ({a}, then {b})")),
        _ => {}
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value).expect("reports serialise");
    Ok(write_atomic(path, &bytes)?)
}

/// The paths of `file` for `questions`, in question order and path order within a question.
/// Refuses a question without paths and a path of a question that is not in the pool.
fn order_given_paths(
    file: &Path,
    mut paths: Vec<PathRecord>,
    questions: &[Question],
) -> Result<Vec<PathRecord>, Error> {
    let order: std::collections::HashMap<&str, usize> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| (q.id.as_str(), i))
        .collect();
    if let Some(p) = paths.iter().find(|p| !order.contains_key(p.id.as_str())) {
        return Err(Error::Input(format!(
            "{}: paths of question {:?}, which is not in the pool",
            file.display(),
            p.id
        )));
    }
    let with_paths: HashSet<&str> = paths.iter().map(|p| p.id.as_str()).collect();
    if let Some(q) = questions
        .iter()
        .find(|q| !with_paths.contains(q.id.as_str()))
    {
        return Err(Error::Input(format!(
            "{}: no paths for pool question {:?} (--paths-from must hold every pool question's paths)",
            file.display(),
            q.id
        )));
    }
    paths.sort_by_key(|p| (order[p.id.as_str()], p.path));
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::run_order;

    #[test]
    fn stages_sort_in_the_order_they_run() {
        let mut stages = vec![
            "round-2/generate",
            "round-1/vote",
            "round-1/eval-after-sc",
            "round-10/build",
            "round-1/eval-before-greedy",
            "round-1/generate",
        ];
        stages.sort_by_key(|s| run_order(s));
        assert_eq!(
            stages,
            [
                "round-1/eval-before-greedy",
                "round-1/generate",
                "round-1/vote",
                "round-1/eval-after-sc",
                "round-2/generate",
                "round-10/build",
            ]
        );
    }
}
