//! Label-free signals of a round's sampled paths: what can be watched without any gold answer to
//! notice a loop going wrong (answers collapsing onto one, paths shrinking, the model growing
//! overconfident).
//!
//! ```
//! use lmsi::signals::Signals;
//! use lmsi_data::PathRecord;
//! use lmsi_voter::{AnswerKind, Extractor};
//!
//! let path = |k: usize, text: &str| PathRecord {
//!     id: "q".into(), question: "How many?".into(), path: k, text: text.into(),
//!     answer: None, logprob: -2.0, tokens: 4, gold: None,
//! };
//! let paths = [path(0, "The answer is 5."), path(1, "The answer is 5."), path(2, "The answer is 6."),
//!              path(3, "I do not know.")];
//! let s = Signals::of(&paths, &Extractor::new(AnswerKind::Number));
//! assert_eq!(s.majority_share, 2.0 / 3.0);
//! assert_eq!(s.distinct_answers, 2.0);
//! assert_eq!(s.answered, 0.75);
//! assert_eq!(s.mean_token_logprob, -0.5);
//! ```

use std::collections::BTreeMap;

use lmsi_data::PathRecord;
use lmsi_voter::Extractor;
use serde::{Deserialize, Serialize};

/// Per-question means over a set of paths (questions without any answered path count only in
/// `answered`, path length and log-probability). Sums run in the order of question ids and
/// answers, so that the same paths give the same bits in every run and in any order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// The most common answer's share of a question's answered paths, averaged over questions.
    pub majority_share: f64,
    /// Distinct answers per question.
    pub distinct_answers: f64,
    /// Shannon entropy of a question's answers, in bits.
    pub answer_entropy: f64,
    /// The share of paths with an answer.
    pub answered: f64,
    /// Tokens per path.
    pub mean_path_tokens: f64,
    /// Log-probability per sampled token, over all paths.
    pub mean_token_logprob: f64,
}

impl Signals {
    /// The signals of `paths`, answers read with `extractor`.
    pub fn of(paths: &[PathRecord], extractor: &Extractor) -> Self {
        let mut counts: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
        let mut answered = 0usize;
        for p in paths {
            let question = counts.entry(&p.id).or_default();
            if let Some(answer) = extractor.extract(&p.text) {
                *question.entry(answer).or_default() += 1;
                answered += 1;
            }
        }
        let voted: Vec<&BTreeMap<String, usize>> =
            counts.values().filter(|c| !c.is_empty()).collect();
        let mean = |f: &dyn Fn(&BTreeMap<String, usize>) -> f64| {
            voted.iter().map(|c| f(c)).sum::<f64>() / voted.len().max(1) as f64
        };
        let tokens: usize = paths.iter().map(|p| p.tokens).sum();
        Signals {
            majority_share: mean(&|c| {
                *c.values().max().unwrap_or(&0) as f64 / c.values().sum::<usize>() as f64
            }),
            distinct_answers: mean(&|c| c.len() as f64),
            answer_entropy: mean(&entropy_bits),
            answered: answered as f64 / paths.len().max(1) as f64,
            mean_path_tokens: tokens as f64 / paths.len().max(1) as f64,
            mean_token_logprob: paths.iter().map(|p| p.logprob).sum::<f64>() / tokens.max(1) as f64,
        }
    }
}

fn entropy_bits(counts: &BTreeMap<String, usize>) -> f64 {
    let n = counts.values().sum::<usize>() as f64;
    let sum = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            p * p.log2()
        })
        .sum::<f64>();
    // 0 - sum, not -sum: one answer gives 0, not -0.
    0.0 - sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_is_zero_for_agreement_and_one_bit_for_an_even_split() {
        let counts = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
            pairs.iter().map(|(a, k)| (a.to_string(), *k)).collect()
        };
        assert_eq!(
            entropy_bits(&counts(&[("5", 4)])).to_bits(),
            0.0f64.to_bits()
        );
        assert!((entropy_bits(&counts(&[("5", 2), ("6", 2)])) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_same_paths_in_another_order_give_the_same_bits() {
        let paths: Vec<PathRecord> = (0..600)
            .map(|k| PathRecord {
                id: format!("q{}", k % 50),
                question: "How many?".into(),
                path: k,
                text: format!("The answer is {}.", (k * k) % (3 + k % 7)),
                answer: None,
                logprob: -1.0,
                tokens: 4,
                gold: None,
            })
            .collect();
        let extractor = Extractor::new(lmsi_voter::AnswerKind::Number);
        let forward = Signals::of(&paths, &extractor);
        let reversed: Vec<PathRecord> = paths.into_iter().rev().collect();
        let backward = Signals::of(&reversed, &extractor);
        assert_eq!(
            forward.answer_entropy.to_bits(),
            backward.answer_entropy.to_bits()
        );
        assert_eq!(
            forward.majority_share.to_bits(),
            backward.majority_share.to_bits()
        );
    }

    #[test]
    fn no_paths_give_zeros_not_nan() {
        let s = Signals::of(&[], &Extractor::new(lmsi_voter::AnswerKind::Number));
        assert_eq!(s, Signals::default());
    }
}
