//! Knowing when the loop goes wrong, and stopping it: with a labelled probe set (`--probe FILE`)
//! the loop stops as soon as the probe's greedy accuracy falls below the best it has reached;
//! without one, when the label-free collapse rule fires on the sampled paths' signals. Either way
//! the best model so far is kept, and the report says so.
//!
//! The collapse rule ([`collapsed`]) compares the signals of later paths with those of the first
//! ones the loop sampled: it fires when the majority share has climbed to at least
//! [`COLLAPSE_MAJORITY_SHARE`] while the distinct answers per question fell and the answer
//! entropy fell to at most [`COLLAPSE_ENTROPY_RATIO`] of where it started: the model agreeing with
//! itself ever more, on ever fewer answers, which a majority-vote reward rewards whether or not
//! the answers are right.
//!
//! ```
//! use lmsi::signals::Signals;
//! use lmsi::stop_rule::{ProbeWatch, collapsed};
//!
//! let at = |share, distinct, entropy| Signals {
//!     majority_share: share, distinct_answers: distinct, answer_entropy: entropy,
//!     ..Signals::default()
//! };
//! assert!(collapsed(&at(0.63, 4.9, 1.5), &at(0.99, 1.1, 0.05)));
//! assert!(!collapsed(&at(0.63, 4.9, 1.5), &at(0.80, 3.0, 0.9)));
//!
//! let mut watch = ProbeWatch::new(0.40);
//! assert!(!watch.fell(0.55)); // a new best
//! assert!(!watch.fell(0.55)); // level is not a fall
//! assert!(watch.fell(0.50));
//! assert_eq!(watch.best(), 0.55);
//! ```

use crate::signals::Signals;

/// The majority share the collapse rule needs reached.
pub const COLLAPSE_MAJORITY_SHARE: f64 = 0.95;
/// The fraction of its first value the answer entropy must have fallen to.
pub const COLLAPSE_ENTROPY_RATIO: f64 = 0.5;

/// Whether the paths whose signals are `now` show the model collapsing onto one answer per
/// question, compared with the first paths the loop sampled (`first`).
pub fn collapsed(first: &Signals, now: &Signals) -> bool {
    now.majority_share >= COLLAPSE_MAJORITY_SHARE
        && now.majority_share > first.majority_share
        && now.distinct_answers < first.distinct_answers
        && now.answer_entropy <= COLLAPSE_ENTROPY_RATIO * first.answer_entropy
}

/// The probe's best accuracy so far, and whether a new one is a fall from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeWatch {
    best: f64,
}

impl ProbeWatch {
    /// Watching from the starting model's accuracy.
    pub fn new(start: f64) -> Self {
        Self { best: start }
    }

    /// Records `accuracy`; true when it is below the best so far.
    pub fn fell(&mut self, accuracy: f64) -> bool {
        if accuracy < self.best {
            return true;
        }
        self.best = accuracy;
        false
    }

    pub fn best(&self) -> f64 {
        self.best
    }
}

/// The mean of several steps' signals (a window of `ttrl` steps).
pub fn mean_signals(signals: &[Signals]) -> Signals {
    let n = signals.len().max(1) as f64;
    let mean = |f: fn(&Signals) -> f64| signals.iter().map(f).sum::<f64>() / n;
    Signals {
        majority_share: mean(|s| s.majority_share),
        distinct_answers: mean(|s| s.distinct_answers),
        answer_entropy: mean(|s| s.answer_entropy),
        answered: mean(|s| s.answered),
        mean_path_tokens: mean(|s| s.mean_path_tokens),
        mean_token_logprob: mean(|s| s.mean_token_logprob),
    }
}

/// Why and where a loop stopped early, and which model it kept.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stopped {
    /// The round it stopped in.
    pub round: usize,
    /// The `ttrl` step it stopped at, when it stopped inside the online loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    pub reason: String,
    /// The model kept: `round-N/model`, or `the starting model`.
    pub kept: String,
}
