//! Early stopping: deciding, one sampled answer at a time, that more paths would not change the vote.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::beta::regularized_incomplete_beta;
use crate::error::ParseError;

/// A rule that watches the answers of a question's paths as they are sampled and says when to stop.
///
/// Feed it every path in sampling order, including paths without an answer (`None`); stop at the
/// first `true`.
pub trait StoppingRule {
    /// Records the next path's answer key and returns `true` when sampling should stop now.
    fn observe(&mut self, answer: Option<&str>) -> bool;

    /// The number of answers observed so far (with or without an answer).
    fn observed(&self) -> usize;
}

/// Early-Stopping Self-Consistency (Li et al. 2024, "Escape Sky-high Cost: Early-stopping
/// Self-Consistency for Multi-step Reasoning").
///
/// Paths are taken in consecutive windows of `window` answers (paths `0..w`, `w..2w`, ...). When a
/// window is complete and all its answers are equal and valid, sampling stops: a unanimous window
/// means the distribution of answers is peaked enough that the majority is settled. So `observe`
/// can return `true` only on the last path of a window.
///
/// ```
/// use lmsi_voter::{EarlyStoppingSc, StoppingRule};
///
/// let mut esc = EarlyStoppingSc::new(3);
/// let answers = [Some("7"), Some("9"), Some("7"), Some("7"), Some("7"), Some("7")];
/// let stops: Vec<bool> = answers.iter().map(|a| esc.observe(*a)).collect();
/// assert_eq!(stops, [false, false, false, false, false, true]);
/// ```
#[derive(Clone, Debug)]
pub struct EarlyStoppingSc {
    window: usize,
    observed: usize,
    /// The first answer of the current window.
    first: Option<String>,
    /// Whether every answer of the current window so far is valid and equal to `first`.
    unanimous: bool,
}

impl EarlyStoppingSc {
    /// The window size used by default: 5 (one of the sizes the paper evaluates; small enough to
    /// save samples on easy questions, large enough that a unanimous window is rarely luck).
    pub const DEFAULT_WINDOW: usize = 5;

    /// A rule that stops after a unanimous window of `window` answers.
    ///
    /// # Panics
    ///
    /// If `window` is 0.
    pub fn new(window: usize) -> Self {
        assert!(
            window > 0,
            "the early-stopping window must hold at least one answer"
        );
        Self {
            window,
            observed: 0,
            first: None,
            unanimous: false,
        }
    }

    /// The window size.
    pub fn window(&self) -> usize {
        self.window
    }
}

impl Default for EarlyStoppingSc {
    fn default() -> Self {
        Self::new(Self::DEFAULT_WINDOW)
    }
}

impl StoppingRule for EarlyStoppingSc {
    fn observe(&mut self, answer: Option<&str>) -> bool {
        let position = self.observed % self.window;
        self.observed += 1;
        if position == 0 {
            self.first = answer.map(String::from);
            self.unanimous = answer.is_some();
        } else {
            self.unanimous &= answer.is_some() && answer == self.first.as_deref();
        }
        position + 1 == self.window && self.unanimous
    }

    fn observed(&self) -> usize {
        self.observed
    }
}

/// Adaptive-Consistency (Aggarwal et al. 2023, "Let's Sample Step by Step: Adaptive-Consistency
/// for Efficient Reasoning and Coding with LLMs"), with the paper's Beta stopping criterion.
///
/// After each answer, with `v1` the count of the most common answer and `v2` the count of the
/// second most common (0 if there is none), the probability that the leading answer is truly the
/// more likely of the two, under a uniform prior on the answer distribution, is
///
/// `P = P(p1 > p2 | v1, v2) = 1 - I_{1/2}(v1 + 1, v2 + 1)`
///
/// ([`majority_probability`]). Sampling stops when `P >= threshold` and at least `min_valid`
/// answers were valid. Answers that are `None` are observed but cast no vote.
///
/// With the default threshold 0.95, a unanimous question stops after 4 answers (P = 0.969); answers
/// split 5–1 are not enough (P = 0.9375) but 6–1 are (P = 0.965); a tie never stops (P = 0.5).
///
/// ```
/// use lmsi_voter::{AdaptiveConsistency, StoppingRule};
///
/// let mut rule = AdaptiveConsistency::default();
/// let stops: Vec<bool> = ["7", "7", "7", "7"].iter().map(|a| rule.observe(Some(a))).collect();
/// assert_eq!(stops, [false, false, false, true]);
/// ```
#[derive(Clone, Debug)]
pub struct AdaptiveConsistency {
    threshold: f64,
    min_valid: usize,
    counts: HashMap<String, usize>,
    observed: usize,
    valid: usize,
}

impl AdaptiveConsistency {
    /// The default threshold, the paper's choice: 0.95.
    pub const DEFAULT_THRESHOLD: f64 = 0.95;

    /// The default minimum number of valid answers before stopping: 2, so that a single answer
    /// never decides a question, even with a threshold of 0.75 or lower (one answer gives P = 0.75).
    pub const DEFAULT_MIN_VALID: usize = 2;

    /// A rule that stops once the majority is the true one with probability at least `threshold`.
    ///
    /// # Panics
    ///
    /// Unless `0 < threshold <= 1`.
    pub fn new(threshold: f64) -> Self {
        assert!(
            threshold > 0.0 && threshold <= 1.0,
            "the adaptive-consistency threshold must be in (0, 1], got {threshold}"
        );
        Self {
            threshold,
            min_valid: Self::DEFAULT_MIN_VALID,
            counts: HashMap::new(),
            observed: 0,
            valid: 0,
        }
    }

    /// Sets the minimum number of valid answers before the rule may stop.
    pub fn with_min_valid(mut self, min_valid: usize) -> Self {
        self.min_valid = min_valid;
        self
    }

    /// The stopping threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The probability, given the answers so far, that the current leader is the true majority
    /// (0.5 before any valid answer).
    pub fn probability(&self) -> f64 {
        let (mut v1, mut v2) = (0, 0);
        for &count in self.counts.values() {
            if count > v1 {
                (v1, v2) = (count, v1);
            } else if count > v2 {
                v2 = count;
            }
        }
        majority_probability(v1, v2)
    }
}

impl Default for AdaptiveConsistency {
    fn default() -> Self {
        Self::new(Self::DEFAULT_THRESHOLD)
    }
}

impl StoppingRule for AdaptiveConsistency {
    fn observe(&mut self, answer: Option<&str>) -> bool {
        self.observed += 1;
        if let Some(answer) = answer {
            *self.counts.entry(answer.to_string()).or_default() += 1;
            self.valid += 1;
        }
        self.valid >= self.min_valid && self.probability() >= self.threshold
    }

    fn observed(&self) -> usize {
        self.observed
    }
}

/// `P(p1 > p2)` when `p1, p2` are the probabilities of two answers seen `v1` and `v2` times, under
/// the Beta posterior `Beta(v1 + 1, v2 + 1)` of `p1 / (p1 + p2)`: `1 - I_{1/2}(v1 + 1, v2 + 1)`,
/// which equals `I_{1/2}(v2 + 1, v1 + 1)`.
///
/// ```
/// use lmsi_voter::majority_probability;
///
/// assert_eq!(majority_probability(3, 3), 0.5);
/// assert!((majority_probability(4, 0) - 31.0 / 32.0).abs() < 1e-15);
/// ```
pub fn majority_probability(v1: usize, v2: usize) -> f64 {
    // The symmetric form keeps full relative precision when the probability is small.
    regularized_incomplete_beta(0.5, v2 as f64 + 1.0, v1 as f64 + 1.0)
}

/// Which early-stopping rule to use, as named on a command line.
///
/// Names: `esc` (window [`EarlyStoppingSc::DEFAULT_WINDOW`]), `esc:W` (window `W >= 1`), `adaptive`
/// (threshold [`AdaptiveConsistency::DEFAULT_THRESHOLD`]) and `adaptive:T` (`0 < T <= 1`).
///
/// ```
/// use lmsi_voter::EarlyStop;
///
/// assert_eq!("esc:8".parse(), Ok(EarlyStop::Esc { window: 8 }));
/// assert_eq!("adaptive".parse(), Ok(EarlyStop::Adaptive { threshold: 0.95 }));
/// let mut rule = "esc:1".parse::<EarlyStop>().unwrap().rule();
/// assert!(rule.observe(Some("42")));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum EarlyStop {
    /// [`EarlyStoppingSc`] with this window.
    Esc {
        /// Answers per window (at least 1).
        window: usize,
    },
    /// [`AdaptiveConsistency`] with this threshold.
    Adaptive {
        /// Stopping probability, in `(0, 1]`.
        threshold: f64,
    },
}

impl EarlyStop {
    /// The names accepted by [`FromStr`].
    pub const NAMES: &str = "esc, esc:WINDOW, adaptive, adaptive:THRESHOLD";

    /// A fresh rule (one per question).
    ///
    /// # Panics
    ///
    /// If the parameter is out of range, which [`FromStr`] never produces.
    pub fn rule(&self) -> Box<dyn StoppingRule + Send> {
        match *self {
            EarlyStop::Esc { window } => Box::new(EarlyStoppingSc::new(window)),
            EarlyStop::Adaptive { threshold } => Box::new(AdaptiveConsistency::new(threshold)),
        }
    }
}

impl fmt::Display for EarlyStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EarlyStop::Esc { window } => write!(f, "esc:{window}"),
            EarlyStop::Adaptive { threshold } => write!(f, "adaptive:{threshold}"),
        }
    }
}

impl FromStr for EarlyStop {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, parameter) = match s.split_once(':') {
            Some((name, parameter)) => (name, Some(parameter)),
            None => (s, None),
        };
        let invalid = |reason| ParseError::InvalidParameter {
            what: "early stopping rule",
            value: s.to_string(),
            reason,
        };
        match name {
            "esc" => {
                let window = match parameter {
                    None => EarlyStoppingSc::DEFAULT_WINDOW,
                    Some(p) => p
                        .parse::<usize>()
                        .ok()
                        .filter(|&w| w > 0)
                        .ok_or_else(|| invalid("the window must be a whole number >= 1"))?,
                };
                Ok(EarlyStop::Esc { window })
            }
            "adaptive" => {
                let threshold = match parameter {
                    None => AdaptiveConsistency::DEFAULT_THRESHOLD,
                    Some(p) => p
                        .parse::<f64>()
                        .ok()
                        .filter(|&t| t > 0.0 && t <= 1.0)
                        .ok_or_else(|| invalid("the threshold must be a number in (0, 1]"))?,
                };
                Ok(EarlyStop::Adaptive { threshold })
            }
            _ => Err(ParseError::Unknown {
                what: "early stopping rule",
                value: s.to_string(),
                expected: Self::NAMES,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: &mut dyn StoppingRule, answers: &[Option<&str>]) -> Vec<bool> {
        answers.iter().map(|a| rule.observe(*a)).collect()
    }

    #[test]
    fn esc_stops_only_on_a_unanimous_complete_window() {
        let mut esc = EarlyStoppingSc::new(2);
        let answers = [Some("1"), Some("2"), Some("3"), Some("3")];
        assert_eq!(run(&mut esc, &answers), [false, false, false, true]);
        assert_eq!(esc.observed(), 4);

        // Windows do not overlap: "2", "2" straddles the first two windows.
        let mut esc = EarlyStoppingSc::new(2);
        let answers = [Some("1"), Some("2"), Some("2"), Some("3")];
        assert_eq!(run(&mut esc, &answers), [false; 4]);
    }

    #[test]
    fn esc_needs_valid_answers() {
        let mut esc = EarlyStoppingSc::new(3);
        assert_eq!(run(&mut esc, &[None, None, None]), [false; 3]);
        assert_eq!(run(&mut esc, &[Some("a"), None, Some("a")]), [false; 3]);
        assert_eq!(
            run(&mut esc, &[Some("a"), Some("a"), Some("a")]),
            [false, false, true]
        );
        assert_eq!(EarlyStoppingSc::default().window(), 5);
    }

    #[test]
    fn esc_window_of_one_stops_at_the_first_valid_answer() {
        let mut esc = EarlyStoppingSc::new(1);
        assert_eq!(run(&mut esc, &[None, Some("x")]), [false, true]);
    }

    #[test]
    #[should_panic(expected = "at least one answer")]
    fn esc_rejects_an_empty_window() {
        EarlyStoppingSc::new(0);
    }

    #[test]
    fn majority_probability_values() {
        // Closed forms: 1 - I_{1/2}(v1 + 1, 1) = 1 - 2^-(v1 + 1).
        for v1 in 0..20 {
            let want = 1.0 - 0.5f64.powi(v1 as i32 + 1);
            assert!((majority_probability(v1, 0) - want).abs() < 1e-14);
        }
        // 5-1: P(Binomial(7, 1/2) <= 5) = 1 - 8/128.
        assert!((majority_probability(5, 1) - 120.0 / 128.0).abs() < 1e-14);
        for v in 0..10 {
            assert!((majority_probability(v, v) - 0.5).abs() < 1e-14);
        }
    }

    #[test]
    fn adaptive_stops_when_the_majority_is_settled() {
        let mut rule = AdaptiveConsistency::default();
        let answers = [
            Some("a"),
            Some("b"),
            Some("a"),
            Some("a"),
            Some("a"),
            Some("a"),
        ];
        // Counts after each: 1-0 .75, 1-1 .5, 2-1 .6875, 3-1 .8125, 4-1 .890625, 5-1 .9375.
        assert_eq!(run(&mut rule, &answers), [false; 6]);
        // 6-1: 1 - 9/256 = 0.96484375.
        assert!(rule.observe(Some("a")));
        assert_eq!(rule.observed(), 7);
    }

    #[test]
    fn adaptive_ignores_invalid_answers_and_needs_a_minimum() {
        let mut rule = AdaptiveConsistency::new(0.7);
        // One valid answer gives P = 0.75 >= 0.7, but the minimum is two valid answers.
        assert_eq!(run(&mut rule, &[None, Some("a"), None]), [false; 3]);
        assert!(rule.observe(Some("a")));
        assert_eq!(rule.observed(), 4);

        let mut rule = AdaptiveConsistency::new(0.7).with_min_valid(1);
        assert!(rule.observe(Some("a")));
    }

    #[test]
    fn adaptive_uses_the_top_two_counts() {
        let mut rule = AdaptiveConsistency::new(0.99);
        for a in ["a", "a", "a", "b", "c", "c"] {
            rule.observe(Some(a));
        }
        // 3 vs 2: P(Binomial(6, 1/2) <= 3) = 42/64.
        assert!((rule.probability() - 42.0 / 64.0).abs() < 1e-14);
        assert_eq!(AdaptiveConsistency::default().probability(), 0.5);
    }

    #[test]
    fn early_stop_names() {
        assert_eq!("esc".parse(), Ok(EarlyStop::Esc { window: 5 }));
        assert_eq!("esc:3".parse(), Ok(EarlyStop::Esc { window: 3 }));
        assert_eq!(
            "adaptive:0.9".parse(),
            Ok(EarlyStop::Adaptive { threshold: 0.9 })
        );
        for rule in [
            EarlyStop::Esc { window: 7 },
            EarlyStop::Adaptive { threshold: 0.8 },
        ] {
            assert_eq!(rule.to_string().parse(), Ok(rule));
        }
        for bad in [
            "esc:0",
            "esc:x",
            "esc:",
            "adaptive:0",
            "adaptive:1.5",
            "adaptive:NaN",
        ] {
            let err = bad.parse::<EarlyStop>().unwrap_err();
            assert!(
                matches!(err, ParseError::InvalidParameter { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        let err = "eager".parse::<EarlyStop>().unwrap_err().to_string();
        assert!(
            err.contains("`eager`") && err.contains("esc:WINDOW"),
            "{err}"
        );
    }

    #[test]
    fn rules_from_names_behave_like_the_types() {
        let mut rule = EarlyStop::Esc { window: 2 }.rule();
        assert_eq!(run(rule.as_mut(), &[Some("x"), Some("x")]), [false, true]);
        let mut rule = EarlyStop::Adaptive { threshold: 0.95 }.rule();
        assert_eq!(
            run(rule.as_mut(), &[Some("x"); 4]),
            [false, false, false, true]
        );
    }
}
