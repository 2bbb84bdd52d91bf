//! The "eval" stage: accuracy of a model on a labelled test set, by greedy chain-of-thought decoding or
//! by self-consistency (majority vote over sampled paths).

use std::str::FromStr;

use lmsi_data::Question;
use lmsi_sampler::SamplingParams;
use lmsi_transformer::{Backend, Model, Tokenizer};
use lmsi_voter::{Ballot, Extractor, Weighting, vote};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::generate::{GenerateOptions, generate_paths};
use crate::metrics::{SampleMetrics, Samples};

/// How answers are produced for evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalMode {
    /// One greedy (temperature 0) path per question.
    Greedy,
    /// The majority answer of several sampled paths (self-consistency).
    Sc,
}

impl EvalMode {
    /// Paths sampled per question when self-consistency samples `sc_paths`: one for greedy.
    ///
    /// ```
    /// use lmsi::eval::EvalMode;
    /// assert_eq!(EvalMode::Greedy.paths(16), 1);
    /// assert_eq!(EvalMode::Sc.paths(16), 16);
    /// ```
    pub fn paths(self, sc_paths: usize) -> usize {
        match self {
            EvalMode::Greedy => 1,
            EvalMode::Sc => sc_paths,
        }
    }
}

impl FromStr for EvalMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "greedy" => Ok(EvalMode::Greedy),
            "sc" => Ok(EvalMode::Sc),
            other => Err(format!("unknown mode {other:?} (expected greedy or sc)")),
        }
    }
}

/// One question's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalItem {
    pub id: String,
    pub gold: String,
    pub answer: Option<String>,
    pub correct: bool,
    /// Votes for the answer over paths with an answer (1 or 0 for greedy).
    pub confidence: f64,
    /// The sampled texts, in path order, so that a reader can see what the model said.
    #[serde(default)]
    pub texts: Vec<String>,
}

/// The evaluation report (`report.json` of `lmsi eval`); its keys are stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub mode: EvalMode,
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Wilson score interval of the accuracy at 95%.
    pub ci95: [f64; 2],
    pub paths: usize,
    pub temperature: f32,
    pub seconds: f64,
    /// In `sc` mode, what the samples say beyond the vote: maj@k and pass@k for every k, the mean
    /// accuracy of single samples, and the vote's calibration ([`crate::metrics`]).
    #[serde(default)]
    pub samples: Option<SampleMetrics>,
    pub items: Vec<EvalItem>,
}

impl EvalReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "{} accuracy {:.1}% ({}/{}), 95% CI [{:.1}%, {:.1}%]",
            match self.mode {
                EvalMode::Greedy => "greedy".to_string(),
                EvalMode::Sc => format!(
                    "self-consistency ({} paths, T={})",
                    self.paths, self.temperature
                ),
            },
            100.0 * self.accuracy,
            self.correct,
            self.n,
            100.0 * self.ci95[0],
            100.0 * self.ci95[1]
        )
    }
}

/// Evaluates on `questions`, which must all carry gold answers. `options` give the prompt, answer kind
/// and sampling; for greedy mode the sampling is replaced by temperature 0 and one path.
pub fn evaluate<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    questions: &[Question],
    mode: EvalMode,
    options: &GenerateOptions,
    on_path: &mut dyn FnMut(&lmsi_data::PathRecord),
) -> Result<EvalReport, Error> {
    evaluate_with_samples(model, tokenizer, questions, mode, options, on_path).map(|(r, _)| r)
}

/// [`evaluate`], also returning each question's [`Samples`] (what a sharded evaluation's merge needs).
pub fn evaluate_with_samples<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    questions: &[Question],
    mode: EvalMode,
    options: &GenerateOptions,
    on_path: &mut dyn FnMut(&lmsi_data::PathRecord),
) -> Result<(EvalReport, Vec<Samples>), Error> {
    if let Some(q) = questions.iter().find(|q| q.gold().is_none()) {
        return Err(Error::Input(format!(
            "question {:?} has no gold answer to evaluate against",
            q.id
        )));
    }
    let mut options = options.clone();
    options.paths = mode.paths(options.paths);
    if mode == EvalMode::Greedy {
        options.sampling = SamplingParams {
            seed: options.sampling.seed,
            ..SamplingParams::greedy()
        };
        options.early_stop = None;
    }
    let started = std::time::Instant::now();
    let (paths, _) = generate_paths(model, tokenizer, questions, &options, on_path)?;
    let mut items = Vec::with_capacity(questions.len());
    let mut samples = Vec::with_capacity(questions.len());
    let mut paths = paths.into_iter().peekable();
    for q in questions {
        let mut ballots = Vec::new();
        let mut texts = Vec::new();
        while let Some(p) = paths.next_if(|p| p.id == q.id) {
            ballots.push(Ballot::new(p.answer, p.logprob / p.tokens.max(1) as f64));
            texts.push(p.text);
        }
        let result = vote(&ballots, Weighting::Uniform);
        let extractor = match &q.choices {
            Some(c) => Extractor::new(options.answer).with_choices(c.clone()),
            None => Extractor::new(options.answer),
        };
        let gold_text = q.gold().expect("checked above");
        let correct = extractor.is_correct(result.answer.as_deref(), gold_text);
        let answers: Vec<Option<String>> = ballots.into_iter().map(|b| b.answer).collect();
        samples.push(Samples {
            correct: answers
                .iter()
                .map(|a| extractor.is_correct(a.as_deref(), gold_text))
                .collect(),
            answers,
        });
        items.push(EvalItem {
            id: q.id.clone(),
            gold: extractor.gold_key(gold_text),
            answer: result.answer,
            correct,
            confidence: result.confidence,
            texts,
        });
    }
    let report = EvalReport::from_items(
        mode,
        options.paths,
        options.sampling.temperature,
        started.elapsed().as_secs_f64(),
        items,
        &samples,
    );
    Ok((report, samples))
}

impl EvalReport {
    /// The report of questions' `items` with their `samples` (in the same order): accuracy, its
    /// interval and, in `sc` mode, the sample metrics.
    pub fn from_items(
        mode: EvalMode,
        paths: usize,
        temperature: f32,
        seconds: f64,
        items: Vec<EvalItem>,
        samples: &[Samples],
    ) -> Self {
        let n = items.len();
        let correct = items.iter().filter(|i| i.correct).count();
        let sample_metrics = (mode == EvalMode::Sc).then(|| {
            let confidence: Vec<f64> = items.iter().map(|i| i.confidence).collect();
            let right: Vec<bool> = items.iter().map(|i| i.correct).collect();
            SampleMetrics::of(samples, &confidence, &right)
        });
        EvalReport {
            mode,
            n,
            correct,
            accuracy: correct as f64 / n.max(1) as f64,
            ci95: wilson_interval(correct, n),
            paths,
            temperature,
            seconds,
            samples: sample_metrics,
            items,
        }
    }
}

/// The Wilson score interval for `successes` out of `n` at 95% confidence.
pub fn wilson_interval(successes: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    const Z: f64 = 1.959_963_984_540_054;
    let (n, p) = (n as f64, successes as f64 / n as f64);
    let denom = 1.0 + Z * Z / n;
    let center = (p + Z * Z / (2.0 * n)) / denom;
    let half = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt() / denom;
    [(center - half).max(0.0), (center + half).min(1.0)]
}

/// The change in accuracy between two evaluations of the same questions (`after − before`, as a
/// fraction), with its 95% interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    pub difference: f64,
    pub ci95: [f64; 2],
    /// Questions right after but not before, and right before but not after.
    pub gained: usize,
    pub lost: usize,
}

/// The paired difference of two evaluations of the same questions, matched by question id
/// (questions in only one of them are left out). The interval is Newcombe's (1998, method 10; as
/// worked in Altman et al., *Statistics with Confidence*, 2000): each accuracy's Wilson interval,
/// combined through the (continuity-corrected) correlation of the two outcomes, so that it stays
/// inside [−1, 1] and is not zero-width when nothing changed.
pub fn paired_difference(before: &EvalReport, after: &EvalReport) -> PairedDifference {
    let after_by_id: std::collections::HashMap<&str, bool> = after
        .items
        .iter()
        .map(|i| (i.id.as_str(), i.correct))
        .collect();
    // Both right, only before, only after, neither.
    let mut table = [0usize; 4];
    for item in &before.items {
        if let Some(&now) = after_by_id.get(item.id.as_str()) {
            table[usize::from(!item.correct) * 2 + usize::from(!now)] += 1;
        }
    }
    let [both, lost, gained, neither] = table;
    let n = both + lost + gained + neither;
    let (p1, p2) = (
        (both + lost) as f64 / n.max(1) as f64,
        (both + gained) as f64 / n.max(1) as f64,
    );
    let ([l1, u1], [l2, u2]) = (
        wilson_interval(both + lost, n),
        wilson_interval(both + gained, n),
    );
    let margins = ((both + lost) * (gained + neither) * (both + gained) * (lost + neither)) as f64;
    let agreement = both as f64 * neither as f64 - lost as f64 * gained as f64;
    let corrected = if agreement > n as f64 / 2.0 {
        agreement - n as f64 / 2.0
    } else {
        agreement.min(0.0)
    };
    let phi = if margins > 0.0 {
        corrected / margins.sqrt()
    } else {
        0.0
    };
    let spread = |a: f64, b: f64| (a * a - 2.0 * phi * a * b + b * b).max(0.0).sqrt();
    let d = p2 - p1;
    PairedDifference {
        difference: d,
        ci95: [d - spread(p2 - l2, u1 - p1), d + spread(u2 - p2, p1 - l1)],
        gained,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(correct: &[bool]) -> EvalReport {
        let items = correct
            .iter()
            .enumerate()
            .map(|(i, &correct)| EvalItem {
                id: format!("q{i}"),
                gold: "1".into(),
                answer: None,
                correct,
                confidence: 1.0,
                texts: Vec::new(),
            })
            .collect();
        EvalReport {
            mode: EvalMode::Greedy,
            n: correct.len(),
            correct: correct.iter().filter(|&&c| c).count(),
            accuracy: 0.0,
            ci95: [0.0, 1.0],
            paths: 1,
            temperature: 0.0,
            seconds: 0.0,
            samples: None,
            items,
        }
    }

    #[test]
    fn the_paired_difference_counts_changes_and_brackets_them() {
        // 100 questions: 60 right in both, 5 lost, 15 gained, 20 wrong in both.
        let before: Vec<bool> = (0..100).map(|i| i < 65).collect();
        let after: Vec<bool> = (0..100).map(|i| i < 60 || (65..80).contains(&i)).collect();
        let d = paired_difference(&report(&before), &report(&after));
        assert_eq!((d.gained, d.lost), (15, 5));
        assert!((d.difference - 0.10).abs() < 1e-12);
        let [lo, hi] = d.ci95;
        assert!(lo > 0.0 && lo < 0.10 && hi > 0.10 && hi < 0.25, "{lo} {hi}");
        // The Wald interval of the mean paired difference, close to Newcombe's at this n.
        let var = (0.15 + 0.05) - 0.10 * 0.10;
        let half = 1.96 * (var / 100.0_f64).sqrt();
        assert!((lo - (0.10 - half)).abs() < 0.02 && (hi - (0.10 + half)).abs() < 0.02);
        // Swapping before and after mirrors the interval; no change is not a zero-width interval.
        let back = paired_difference(&report(&after), &report(&before));
        assert!((back.ci95[0] + hi).abs() < 1e-12 && (back.ci95[1] + lo).abs() < 1e-12);
        let same = paired_difference(&report(&before), &report(&before));
        assert!(same.difference == 0.0 && same.ci95[0] < 0.0 && same.ci95[1] > 0.0);
    }

    #[test]
    fn wilson_interval_matches_known_values() {
        // 8 of 10: the interval [0.4902, 0.9433] (Wilson 1927; as tabulated by e.g. statsmodels).
        let [lo, hi] = wilson_interval(8, 10);
        assert!(
            (lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson_interval(0, 0), [0.0, 1.0]);
        let [lo, hi] = wilson_interval(0, 20);
        assert!(lo == 0.0 && (hi - 0.1611).abs() < 1e-4, "{hi}");
    }
}
