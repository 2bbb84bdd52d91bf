//! Equivalent routes through one computation, so that a reasoning can be written in more than one way.
//!
//! Self-consistency rests on a problem admitting several ways of reasoning that reach the same
//! answer; a model trained on one fixed way makes the same mistakes on every sample, and voting
//! cannot help it. [`vary_reasoning`] rewrites each equation of a reasoning as one of the routes to
//! its result, chosen at random:
//!
//! | equation | routes |
//! |---|---|
//! | `a + b = c` | `a + b = c`; `b + a = c`; tens then ones of `b` (`a + 10 = t and t + 4 = c`) |
//! | `a - b = c` | `a - b = c`; tens then ones of `b`; ones then tens of `b` |
//! | `a * b = c` | `a * b = c`; `b * a = c` |
//! | `a / b = c` | `a / b = c` |
//!
//! Splitting `b` needs it to have both tens and ones (`b >= 10` and `b % 10 != 0`). The text around
//! the equations is kept as it is.

use super::rng::SplitMix64;

/// `reasoning` with each equation `a op b = c` (numbers and operators separated by spaces, as the
/// generator writes them) replaced by one of its routes, chosen by a generator seeded with `seed`.
pub fn vary_reasoning(reasoning: &str, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    let words: Vec<&str> = reasoning.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if let Some((a, op, b, c, tail)) = equation(&words[i..]) {
            out.push(route(a, op, b, c, &mut rng) + tail);
            i += 5;
        } else {
            out.push(words[i].to_string());
            i += 1;
        }
    }
    out.join(" ")
}

/// `a op b = c` at the start of `words`; `tail` is the punctuation after `c`.
fn equation<'a>(words: &[&'a str]) -> Option<(i64, char, i64, i64, &'a str)> {
    let [a, op, b, eq, c, ..] = words else {
        return None;
    };
    let op = match *op {
        "+" => '+',
        "-" => '-',
        "*" => '*',
        "/" => '/',
        _ => return None,
    };
    if *eq != "=" {
        return None;
    }
    let digits = c.trim_end_matches(|ch: char| !ch.is_ascii_digit());
    let tail = &c[digits.len()..];
    Some((
        a.parse().ok()?,
        op,
        b.parse().ok()?,
        digits.parse().ok()?,
        tail,
    ))
}

fn route(a: i64, op: char, b: i64, c: i64, rng: &mut SplitMix64) -> String {
    let (tens, ones) = (b - b % 10, b % 10);
    let splittable = b >= 10 && ones != 0;
    match op {
        '+' => match rng.below(if splittable { 3 } else { 2 }) {
            0 => format!("{a} + {b} = {c}"),
            1 => format!("{b} + {a} = {c}"),
            _ => format!(
                "{a} + {tens} = {} and {} + {ones} = {c}",
                a + tens,
                a + tens
            ),
        },
        '-' if splittable => match rng.below(3) {
            0 => format!("{a} - {b} = {c}"),
            1 => format!(
                "{a} - {tens} = {} and {} - {ones} = {c}",
                a - tens,
                a - tens
            ),
            _ => format!(
                "{a} - {ones} = {} and {} - {tens} = {c}",
                a - ones,
                a - ones
            ),
        },
        '*' if rng.below(2) == 1 => format!("{b} * {a} = {c}"),
        _ => format!("{a} {op} {b} = {c}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TaskConfig, generate};

    /// Every `x op y = z` of a text, checked.
    fn check_arithmetic(text: &str) -> usize {
        let words: Vec<&str> = text.split(' ').collect();
        let mut n = 0;
        for w in words.windows(5) {
            if let Some((a, op, b, c, _)) = equation(w) {
                let value = match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ => a / b,
                };
                assert_eq!(value, c, "{text}");
                n += 1;
            }
        }
        n
    }

    #[test]
    fn routes_keep_every_equation_right_and_the_text_around_them() {
        let problems = generate(
            &TaskConfig {
                max_value: 60,
                ..TaskConfig::default()
            },
            300,
        )
        .unwrap();
        let mut changed = 0;
        for (i, p) in problems.iter().enumerate() {
            let varied = vary_reasoning(&p.reasoning, i as u64);
            assert!(check_arithmetic(&varied) >= p.steps);
            assert_eq!(
                varied,
                vary_reasoning(&p.reasoning, i as u64),
                "deterministic"
            );
            changed += usize::from(varied != p.reasoning);
            // The words that are not numbers or operators are the same, in order.
            let text = |s: &str| -> Vec<String> {
                s.split(' ')
                    .filter(|w| {
                        !w.starts_with(|c: char| c.is_ascii_digit())
                            && !matches!(*w, "+" | "-" | "*" | "/" | "=" | "and")
                    })
                    .map(str::to_string)
                    .collect()
            };
            assert_eq!(text(&varied), text(&p.reasoning));
        }
        assert!(
            changed > 100,
            "only {changed} of 300 reasonings were varied"
        );
    }

    #[test]
    fn each_route_appears() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200 {
            seen.insert(vary_reasoning("so he has 23 + 14 = 37 coins.", seed));
            seen.insert(vary_reasoning("so he has 37 - 14 = 23 coins.", seed));
        }
        for expected in [
            "so he has 23 + 14 = 37 coins.",
            "so he has 14 + 23 = 37 coins.",
            "so he has 23 + 10 = 33 and 33 + 4 = 37 coins.",
            "so he has 37 - 14 = 23 coins.",
            "so he has 37 - 10 = 27 and 27 - 4 = 23 coins.",
            "so he has 37 - 4 = 33 and 33 - 10 = 23 coins.",
        ] {
            assert!(seen.contains(expected), "{expected}");
        }
        assert_eq!(
            vary_reasoning("so she has 20 / 4 = 5 cups.", 3),
            "so she has 20 / 4 = 5 cups."
        );
    }
}
