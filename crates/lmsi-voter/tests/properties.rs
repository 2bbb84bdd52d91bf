//! Property tests: extraction never panics, keys are fixed points, voting does not depend on the
//! order of the paths, and the stopping rules agree with direct reference computations.

use std::collections::HashMap;

use lmsi_voter::{
    AdaptiveConsistency, AnswerKind, Ballot, EarlyStoppingSc, Extractor, StoppingRule, Vote,
    Weighting, majority_probability, normalize_text, vote,
};
use proptest::prelude::*;
use proptest::sample::select;

const KINDS: [AnswerKind; 4] = [
    AnswerKind::Number,
    AnswerKind::Choice,
    AnswerKind::YesNo,
    AnswerKind::Text,
];

/// Completion-like strings: the pieces the extractors look for, glued in random order.
fn completion() -> impl Strategy<Value = String> {
    let pieces = vec![
        "The answer is ",
        "answer:",
        "Answer is",
        "####",
        "#",
        "\\boxed{",
        "{",
        "}",
        "\\frac{",
        "\\dfrac{",
        "\\$",
        "$",
        "€",
        "-",
        "\u{2212}",
        "+",
        ".",
        ",",
        "/",
        "%",
        "0",
        "7",
        "12",
        "1,234",
        "999999999999999999999",
        "3/4",
        "(",
        ")",
        "A",
        "(B)",
        "b",
        "E)",
        "yes",
        "No",
        "true",
        " ",
        "\n",
        "\nQ:",
        "Q:",
        "Question:",
        "é",
        "答",
        "🙂",
        "option ",
        "the ",
        "Paris",
        ":",
        "*",
        "\\(",
        "=",
        "abc",
        "_",
    ];
    prop::collection::vec(select(pieces), 0..48).prop_map(|p| p.concat())
}

fn extractors() -> Vec<Extractor> {
    let mut all: Vec<Extractor> = KINDS.into_iter().map(Extractor::new).collect();
    all.push(
        Extractor::new(AnswerKind::Choice).with_choices(vec!["Paris".into(), "the 7 (B)".into()]),
    );
    all.push(Extractor::new(AnswerKind::Number).with_stop_markers(vec!["}".into(), "Q".into()]));
    all
}

proptest! {
    #[test]
    fn extract_never_panics_on_any_string(text in any::<String>()) {
        for extractor in extractors() {
            if let Some(key) = extractor.extract(&text) {
                prop_assert!(!key.is_empty());
            }
        }
    }

    #[test]
    fn extract_never_panics_on_completion_like_strings(text in completion()) {
        for extractor in extractors() {
            if let Some(key) = extractor.extract(&text) {
                prop_assert!(!key.is_empty());
            }
        }
    }

    /// A number, choice or yes/no key read back by the same extractor gives itself.
    #[test]
    fn keys_are_fixed_points(text in completion()) {
        for extractor in extractors() {
            if extractor.kind() == AnswerKind::Text {
                continue;
            }
            if let Some(key) = extractor.extract(&text) {
                prop_assert_eq!(extractor.extract(&key), Some(key.clone()), "{:?}", text);
            }
        }
    }

    #[test]
    fn normalisation_is_idempotent_and_tidy(text in any::<String>()) {
        let once = normalize_text(&text);
        prop_assert_eq!(normalize_text(&once), once.clone());
        prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
    }
}

fn mean_logprob() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -5.0..=0.0f64,
        1 => select(vec![f64::NAN, f64::NEG_INFINITY, 0.0, -1.0, -2.0]),
    ]
}

fn ballots() -> impl Strategy<Value = Vec<Ballot>> {
    let answer = prop::option::weighted(0.8, select(vec!["1", "2", "3", "4"]));
    prop::collection::vec((answer, mean_logprob()), 0..24).prop_map(|b| {
        b.into_iter()
            .map(|(a, lp)| Ballot::new(a.map(String::from), lp))
            .collect()
    })
}

fn weighting() -> impl Strategy<Value = Weighting> {
    select(vec![Weighting::Uniform, Weighting::LogProb])
}

/// A direct, quadratic restatement of the voting rule.
fn reference_vote(ballots: &[Ballot], weighting: Weighting) -> Vote {
    let valid = ballots.iter().filter(|b| b.answer.is_some()).count();
    let mut best: Option<(String, Vec<usize>, f64)> = None;
    for (first, ballot) in ballots.iter().enumerate() {
        let Some(answer) = &ballot.answer else {
            continue;
        };
        if ballots[..first]
            .iter()
            .any(|b| b.answer.as_ref() == Some(answer))
        {
            continue;
        }
        let paths: Vec<usize> = (first..ballots.len())
            .filter(|&i| ballots[i].answer.as_ref() == Some(answer))
            .collect();
        let mut weights: Vec<f64> = paths
            .iter()
            .map(|&i| weighting.weight(ballots[i].mean_logprob))
            .collect();
        weights.sort_by(f64::total_cmp);
        let weight: f64 = weights.iter().sum();
        // Answers come in order of their first path, so only a strictly heavier one takes over.
        if best.as_ref().is_none_or(|(_, _, w)| weight > *w) {
            best = Some((answer.clone(), paths, weight));
        }
    }
    let (answer, paths, weight) = match best {
        Some((a, p, w)) => (Some(a), p, w),
        None => (None, Vec::new(), 0.0),
    };
    let votes = paths.len();
    let confidence = if valid == 0 {
        0.0
    } else {
        votes as f64 / valid as f64
    };
    Vote {
        answer,
        votes,
        weight,
        valid,
        total: ballots.len(),
        confidence,
        paths,
    }
}

/// The answers whose summed weight is the highest.
fn top_answers(ballots: &[Ballot], weighting: Weighting) -> Vec<String> {
    let mut weights: HashMap<&str, Vec<f64>> = HashMap::new();
    for b in ballots {
        if let Some(a) = &b.answer {
            weights
                .entry(a)
                .or_default()
                .push(weighting.weight(b.mean_logprob));
        }
    }
    let sums: Vec<(&str, f64)> = weights
        .into_iter()
        .map(|(a, mut w)| {
            w.sort_by(f64::total_cmp);
            (a, w.iter().sum())
        })
        .collect();
    let max = sums.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    sums.into_iter()
        .filter(|s| s.1 == max)
        .map(|s| s.0.to_string())
        .collect()
}

fn shuffled_ballots() -> impl Strategy<Value = (Vec<Ballot>, Vec<usize>)> {
    ballots().prop_flat_map(|b| {
        let order: Vec<usize> = (0..b.len()).collect();
        (Just(b), Just(order).prop_shuffle())
    })
}

proptest! {
    #[test]
    fn vote_matches_the_reference(b in ballots(), w in weighting()) {
        prop_assert_eq!(vote(&b, w), reference_vote(&b, w));
    }

    #[test]
    fn vote_is_invariant_to_the_order_of_paths((b, order) in shuffled_ballots(), w in weighting()) {
        // shuffled[j] is b[order[j]].
        let shuffled: Vec<Ballot> = order.iter().map(|&i| b[i].clone()).collect();
        let (before, after) = (vote(&b, w), vote(&shuffled, w));
        prop_assert_eq!((after.valid, after.total), (before.valid, before.total));
        let top = top_answers(&b, w);
        if top.len() <= 1 {
            let mut mapped: Vec<usize> = after.paths.iter().map(|&j| order[j]).collect();
            mapped.sort_unstable();
            prop_assert_eq!(&after.answer, &before.answer);
            prop_assert_eq!(after.votes, before.votes);
            prop_assert_eq!(after.weight.to_bits(), before.weight.to_bits());
            prop_assert_eq!(after.confidence.to_bits(), before.confidence.to_bits());
            prop_assert_eq!(mapped, before.paths);
        } else {
            // A tie on weight goes to the tied answer that appears first in each order.
            let first_tied = |ballots: &[Ballot]| {
                ballots.iter().find_map(|x| x.answer.clone().filter(|a| top.contains(a)))
            };
            prop_assert_eq!(before.answer, first_tied(&b));
            prop_assert_eq!(after.answer, first_tied(&shuffled));
        }
    }

    #[test]
    fn esc_matches_its_definition(
        answers in prop::collection::vec(prop::option::weighted(0.9, select(vec!["a", "b"])), 0..40),
        window in 1usize..6,
    ) {
        let mut rule = EarlyStoppingSc::new(window);
        for (n, answer) in answers.iter().enumerate() {
            let stop = rule.observe(*answer);
            let complete = (n + 1) % window == 0;
            let last = &answers[n + 1 - window.min(n + 1)..=n];
            let unanimous = last.iter().all(|a| a.is_some() && *a == last[0]);
            prop_assert_eq!(stop, complete && unanimous, "answer {}", n);
            prop_assert_eq!(rule.observed(), n + 1);
        }
    }

    #[test]
    fn adaptive_matches_its_definition(
        answers in prop::collection::vec(prop::option::weighted(0.9, select(vec!["a", "b", "c"])), 0..60),
        threshold in 0.6f64..0.99,
    ) {
        let mut rule = AdaptiveConsistency::new(threshold);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for answer in &answers {
            if let Some(a) = answer {
                *counts.entry(a).or_default() += 1;
            }
            let mut c: Vec<usize> = counts.values().copied().collect();
            c.sort_unstable_by(|x, y| y.cmp(x));
            let (v1, v2) = (c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0));
            let valid: usize = c.iter().sum();
            let want = valid >= AdaptiveConsistency::DEFAULT_MIN_VALID
                && majority_probability(v1, v2) >= threshold;
            prop_assert_eq!(rule.observe(*answer), want);
        }
    }

    /// Against the exact binomial tail: P(p1 > p2) = P(Binomial(v1 + v2 + 1, 1/2) <= v1).
    #[test]
    fn majority_probability_is_the_binomial_tail(v1 in 0usize..60, v2 in 0usize..60) {
        let n = v1 + v2 + 1;
        let mut row = vec![1u128];
        for _ in 0..n {
            let mut next = vec![1u128; row.len() + 1];
            for k in 1..row.len() {
                next[k] = row[k - 1] + row[k];
            }
            row = next;
        }
        let want = row[..=v1].iter().sum::<u128>() as f64 / 2f64.powi(n as i32);
        let got = majority_probability(v1, v2);
        prop_assert!((got - want).abs() <= 1e-12 * want, "({}, {}): {} vs {}", v1, v2, got, want);
        prop_assert!(majority_probability(v1 + 1, v2) >= got);
        prop_assert!(majority_probability(v1, v2 + 1) <= got);
    }
}
