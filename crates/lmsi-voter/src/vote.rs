//! Self-consistency voting over the extracted answers of many sampled paths.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// How much each path's answer counts in a [`vote`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Weighting {
    /// Majority vote: every path with an answer counts 1.
    #[default]
    Uniform,
    /// Each path counts `exp(mean_logprob)`, the geometric mean of its token probabilities
    /// (0 when `mean_logprob` is NaN).
    LogProb,
}

impl Weighting {
    /// The names accepted by [`FromStr`] and written by [`Display`](fmt::Display).
    pub const NAMES: &str = "uniform, logprob";

    /// The weight of one path whose tokens have mean log-probability `mean_logprob`.
    ///
    /// Never NaN and never negative: a NaN log-probability weighs 0.
    pub fn weight(self, mean_logprob: f64) -> f64 {
        match self {
            Weighting::Uniform => 1.0,
            Weighting::LogProb if mean_logprob.is_nan() => 0.0,
            Weighting::LogProb => mean_logprob.exp(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Weighting::Uniform => "uniform",
            Weighting::LogProb => "logprob",
        }
    }
}

impl fmt::Display for Weighting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Weighting {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Weighting::Uniform, Weighting::LogProb]
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| ParseError::Unknown {
                what: "weighting",
                value: s.to_string(),
                expected: Self::NAMES,
            })
    }
}

/// One sampled path, as the vote sees it.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Ballot {
    /// The path's extracted answer key ([`Extractor::extract`](crate::Extractor::extract)), if any.
    pub answer: Option<String>,
    /// The mean log-probability of the path's generated tokens (used by [`Weighting::LogProb`]).
    pub mean_logprob: f64,
}

impl Ballot {
    /// A ballot for `answer` with mean token log-probability `mean_logprob`.
    pub fn new(answer: Option<String>, mean_logprob: f64) -> Self {
        Self {
            answer,
            mean_logprob,
        }
    }
}

/// The outcome of a [`vote`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Vote {
    /// The winning answer; `None` when no path has an answer.
    pub answer: Option<String>,
    /// The number of paths that gave `answer`.
    pub votes: usize,
    /// The summed weight of those paths (equal to `votes` for [`Weighting::Uniform`]).
    pub weight: f64,
    /// The number of paths with an extracted answer.
    pub valid: usize,
    /// The number of paths.
    pub total: usize,
    /// `votes / valid`, or 0 when `valid == 0`.
    pub confidence: f64,
    /// Indices into the ballots of the paths that gave `answer`, ascending.
    pub paths: Vec<usize>,
}

/// Votes over `ballots`: the answer with the highest summed weight wins.
///
/// Ties on weight go to the answer whose first path comes earliest. Paths without an answer count
/// in `total` only. Each answer's weights are summed in ascending order, so the sum — and the
/// winner — do not depend on the order of the paths except through that tie rule.
///
/// ```
/// use lmsi_voter::{Ballot, Weighting, vote};
///
/// let ballots = [
///     Ballot::new(Some("7".into()), -0.9),
///     Ballot::new(Some("9".into()), -0.1),
///     Ballot::new(None, -0.5),
///     Ballot::new(Some("7".into()), -0.8),
/// ];
/// let v = vote(&ballots, Weighting::Uniform);
/// assert_eq!(v.answer.as_deref(), Some("7"));
/// assert_eq!((v.votes, v.valid, v.total, v.paths.clone()), (2, 3, 4, vec![0, 3]));
/// assert!((v.confidence - 2.0 / 3.0).abs() < 1e-12);
///
/// // exp(-0.1) = 0.905 outweighs exp(-0.9) + exp(-0.8) = 0.856.
/// let v = vote(&ballots, Weighting::LogProb);
/// assert_eq!(v.answer.as_deref(), Some("9"));
/// ```
pub fn vote(ballots: &[Ballot], weighting: Weighting) -> Vote {
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, ballot) in ballots.iter().enumerate() {
        if let Some(answer) = &ballot.answer {
            groups.entry(answer.as_str()).or_default().push(i);
        }
    }
    let valid = groups.values().map(Vec::len).sum();
    let best = groups
        .into_iter()
        .map(|(answer, paths)| {
            let mut weights: Vec<f64> = paths
                .iter()
                .map(|&i| weighting.weight(ballots[i].mean_logprob))
                .collect();
            weights.sort_by(f64::total_cmp);
            (answer, paths, weights.into_iter().sum::<f64>())
        })
        // Highest weight first, then the earliest first path; `paths` are ascending and non-empty.
        .max_by(|a, b| a.2.total_cmp(&b.2).then(b.1[0].cmp(&a.1[0])));
    match best {
        Some((answer, paths, weight)) => Vote {
            answer: Some(answer.to_string()),
            votes: paths.len(),
            weight,
            valid,
            total: ballots.len(),
            confidence: paths.len() as f64 / valid as f64,
            paths,
        },
        None => Vote {
            answer: None,
            votes: 0,
            weight: 0.0,
            valid: 0,
            total: ballots.len(),
            confidence: 0.0,
            paths: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballots(answers: &[Option<&str>]) -> Vec<Ballot> {
        answers
            .iter()
            .map(|a| Ballot::new(a.map(String::from), 0.0))
            .collect()
    }

    #[test]
    fn majority_with_invalid_paths() {
        let v = vote(
            &ballots(&[Some("1"), None, Some("2"), Some("2"), None]),
            Weighting::Uniform,
        );
        assert_eq!(
            v,
            Vote {
                answer: Some("2".into()),
                votes: 2,
                weight: 2.0,
                valid: 3,
                total: 5,
                confidence: 2.0 / 3.0,
                paths: vec![2, 3],
            }
        );
    }

    #[test]
    fn no_answers() {
        for b in [ballots(&[None, None]), Vec::new()] {
            let v = vote(&b, Weighting::LogProb);
            assert_eq!(v.answer, None);
            assert_eq!(
                (v.votes, v.valid, v.total, v.confidence),
                (0, 0, b.len(), 0.0)
            );
            assert!(v.paths.is_empty());
        }
    }

    #[test]
    fn ties_go_to_the_earliest_first_path() {
        let v = vote(
            &ballots(&[Some("b"), Some("a"), Some("a"), Some("b")]),
            Weighting::Uniform,
        );
        assert_eq!((v.answer.as_deref(), v.paths), (Some("b"), vec![0, 3]));
        let v = vote(&ballots(&[None, Some("a"), Some("b")]), Weighting::LogProb);
        assert_eq!(v.answer.as_deref(), Some("a"));
    }

    #[test]
    fn logprob_weighting() {
        let b = vec![
            Ballot::new(Some("x".into()), (0.2f64).ln()),
            Ballot::new(Some("x".into()), (0.2f64).ln()),
            Ballot::new(Some("y".into()), (0.5f64).ln()),
        ];
        let v = vote(&b, Weighting::LogProb);
        assert_eq!((v.answer.as_deref(), v.votes), (Some("y"), 1));
        assert!((v.weight - 0.5).abs() < 1e-12);
        // Confidence counts paths, whatever their weights.
        assert!((v.confidence - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(vote(&b, Weighting::Uniform).answer.as_deref(), Some("x"));
    }

    #[test]
    fn nan_and_infinite_logprobs() {
        let b = vec![
            Ballot::new(Some("x".into()), f64::NAN),
            Ballot::new(Some("y".into()), f64::NEG_INFINITY),
            Ballot::new(Some("z".into()), -50.0),
        ];
        let v = vote(&b, Weighting::LogProb);
        assert_eq!(v.answer.as_deref(), Some("z"));
        assert_eq!(Weighting::LogProb.weight(f64::NAN), 0.0);
        let b = vec![
            Ballot::new(Some("x".into()), f64::NAN),
            Ballot::new(Some("y".into()), f64::NAN),
        ];
        let v = vote(&b, Weighting::LogProb);
        assert_eq!(
            (v.answer.as_deref(), v.weight, v.valid),
            (Some("x"), 0.0, 2)
        );
    }

    #[test]
    fn weighting_names() {
        for w in [Weighting::Uniform, Weighting::LogProb] {
            assert_eq!(w.to_string().parse::<Weighting>(), Ok(w));
        }
        assert_eq!(Weighting::default(), Weighting::Uniform);
        let err = "log".parse::<Weighting>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown weighting `log` (expected one of: uniform, logprob)"
        );
    }
}
