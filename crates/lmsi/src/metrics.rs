//! What one set of N sampled paths per question says about a model, beyond its majority vote:
//! maj@k for k = 1..N (the vote of each question's first k paths, with 95% intervals), the unbiased
//! pass@k of Chen et al. (2021), the mean accuracy of single samples, and the calibration of the
//! vote's confidence.
//!
//! maj@k reads the first k paths of each question, in path order, so it is one realisation of
//! sampling k paths, not an average over subsets; pass@k is the exact expectation over subsets:
//! `1 − C(n−c, k) / C(n, k)` for a question with c correct of n paths.
//!
//! ```
//! use lmsi::metrics::pass_at_k;
//! assert_eq!(pass_at_k(4, 0, 2), 0.0);
//! assert_eq!(pass_at_k(4, 1, 1), 0.25);
//! assert_eq!(pass_at_k(4, 1, 2), 0.5); // 1 − C(3, 2) / C(4, 2) = 1 − 3/6
//! assert_eq!(pass_at_k(4, 3, 2), 1.0);
//! ```

use lmsi_voter::{Ballot, Weighting, vote};
use serde::{Deserialize, Serialize};

use crate::eval::wilson_interval;
use crate::plot::{Axes, Series, line_chart};

/// One question's sampled paths, in path order: each path's answer key and whether it is correct.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub answers: Vec<Option<String>>,
    pub correct: Vec<bool>,
}

/// Accuracy at one k.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtK {
    pub k: usize,
    /// Accuracy of the majority vote of each question's first k paths.
    pub maj: f64,
    /// Wilson score interval of `maj` at 95%.
    pub maj_ci95: [f64; 2],
    /// The unbiased pass@k: the chance that at least one of k paths drawn from the n is correct.
    pub pass: f64,
}

/// Accuracy of the questions whose vote confidence falls in one bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceBin {
    /// The bin's confidence range, `[low, high)` (the last bin includes 1).
    pub range: [f64; 2],
    pub questions: usize,
    /// Accuracy in the bin (0 when it is empty).
    pub accuracy: f64,
    /// Wilson score interval of the accuracy at 95% ([0, 1] when the bin is empty).
    #[serde(default)]
    pub ci95: [f64; 2],
}

/// The metrics of a set of samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleMetrics {
    /// maj@k and pass@k for k = 1 ..= the fewest paths any question has.
    pub at_k: Vec<AtK>,
    /// The mean accuracy of single sampled paths (pass@1).
    pub mean_sample_accuracy: f64,
    /// The vote's confidence in five bins of 0.2.
    pub calibration: Vec<ConfidenceBin>,
}

impl SampleMetrics {
    /// The metrics of `questions`' samples; `confidence` is each question's vote confidence over
    /// all its paths, `correct` whether that vote is right.
    pub fn of(questions: &[Samples], confidence: &[f64], correct: &[bool]) -> Self {
        let n = questions.iter().map(|q| q.answers.len()).min().unwrap_or(0);
        let at_k = (1..=n).map(|k| at_k(questions, k)).collect();
        let sampled: usize = questions.iter().map(|q| q.correct.len()).sum();
        let right: usize = questions
            .iter()
            .map(|q| q.correct.iter().filter(|&&c| c).count())
            .sum();
        SampleMetrics {
            at_k,
            mean_sample_accuracy: right as f64 / sampled.max(1) as f64,
            calibration: calibration(confidence, correct, 5),
        }
    }
}

/// maj@k (with its 95% interval as two lines) and pass@k against k, as an SVG.
pub fn chart(metrics: &SampleMetrics) -> String {
    let points = |f: &dyn Fn(&AtK) -> f64| -> Vec<(f64, f64)> {
        metrics
            .at_k
            .iter()
            .map(|a| (a.k as f64, 100.0 * f(a)))
            .collect()
    };
    let maj_ci95 = metrics
        .at_k
        .iter()
        .map(|a| a.maj_ci95.map(|p| 100.0 * p))
        .collect();
    let axes = Axes::new(
        "accuracy from k sampled paths per question",
        "k (paths per question)",
        "accuracy (%)",
    );
    line_chart(
        &axes.whole_x(),
        &[
            Series::line_and_markers("maj@k (95% interval)", points(&|a| a.maj))
                .with_intervals(maj_ci95),
            Series::line_and_markers("pass@k", points(&|a| a.pass)),
        ],
    )
}

fn at_k(questions: &[Samples], k: usize) -> AtK {
    let mut right = 0;
    let mut pass = 0.0;
    for q in questions {
        let ballots: Vec<Ballot> = q.answers[..k]
            .iter()
            .map(|a| Ballot::new(a.clone(), 0.0))
            .collect();
        // The vote is right when the paths that gave its answer are.
        let voted = vote(&ballots, Weighting::Uniform).paths;
        right += usize::from(voted.first().is_some_and(|&i| q.correct[i]));
        let c = q.correct.iter().filter(|&&c| c).count();
        pass += pass_at_k(q.correct.len(), c, k);
    }
    let m = questions.len();
    AtK {
        k,
        maj: right as f64 / m.max(1) as f64,
        maj_ci95: wilson_interval(right, m),
        pass: pass / m.max(1) as f64,
    }
}

/// The unbiased pass@k for `c` correct of `n` paths (Chen et al. 2021): `1 − C(n−c, k) / C(n, k)`,
/// computed as a product so that it does not overflow.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - (n - c + 1..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// Accuracy per bin of confidence: `bins` equal bins of [0, 1] (the last includes 1), each with
/// its count and the Wilson interval of its accuracy.
pub fn calibration(confidence: &[f64], correct: &[bool], bins: usize) -> Vec<ConfidenceBin> {
    let mut counts = vec![(0usize, 0usize); bins];
    for (&x, &right) in confidence.iter().zip(correct) {
        let bin = ((x * bins as f64) as usize).min(bins - 1);
        counts[bin].0 += 1;
        counts[bin].1 += usize::from(right);
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(b, (n, right))| ConfidenceBin {
            range: [b as f64 / bins as f64, (b + 1) as f64 / bins as f64],
            questions: n,
            accuracy: right as f64 / n.max(1) as f64,
            ci95: wilson_interval(right, n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(answers: &[&str], gold: &str) -> Samples {
        Samples {
            correct: answers.iter().map(|a| *a == gold).collect(),
            answers: answers.iter().map(|a| Some(a.to_string())).collect(),
        }
    }

    #[test]
    fn maj_at_k_votes_over_the_first_k_paths() {
        let qs = [
            samples(&["3", "5", "5"], "5"),
            samples(&["2", "2", "9"], "9"),
        ];
        let m = SampleMetrics::of(&qs, &[2.0 / 3.0, 2.0 / 3.0], &[true, false]);
        let maj: Vec<f64> = m.at_k.iter().map(|a| a.maj).collect();
        // k = 1: "3" and "2", both wrong; k = 2: a tie broken by the first ("3"), and "2"; k = 3: "5".
        assert_eq!(maj, [0.0, 0.0, 0.5]);
        assert_eq!(m.mean_sample_accuracy, 3.0 / 6.0);
        assert!((m.at_k[0].pass - 0.5).abs() < 1e-12);
        assert_eq!(m.at_k[2].pass, 1.0);
        assert_eq!(m.calibration[3].questions, 2);
        assert_eq!(m.calibration[3].accuracy, 0.5);
    }

    #[test]
    fn pass_at_k_agrees_with_the_binomial_form() {
        let choose =
            |n: u64, k: u64| -> f64 { (1..=k).map(|i| (n + 1 - i) as f64 / i as f64).product() };
        for (n, c, k) in [(10, 3, 4), (16, 1, 8), (16, 15, 1), (5, 0, 5)] {
            let exact = 1.0 - choose((n - c) as u64, k as u64) / choose(n as u64, k as u64);
            assert!((pass_at_k(n, c, k) - exact).abs() < 1e-12, "{n} {c} {k}");
        }
    }
}
