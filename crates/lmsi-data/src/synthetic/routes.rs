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
//!
//! [`write_in_columns`] is a slower, careful route for sums and differences: the working column by
//! column, ones first, in brackets between `=` and the result (`23 + 48 = [3 + 8 = 11, 2 + 4 + 1 = 7] 71`).
//! Each column is a one-digit fact, so a small model that cannot hold every two-digit sum gets these
//! right far more often than the equation written at once.

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

/// `reasoning` with the working of each sum and difference written column by column, ones first,
/// in brackets between `=` and the result (a carry is `+ 1` in the next column; a borrow adds 10 to
/// this column's digit and takes 1 from the next). Products and quotients are left as they are.
///
/// ```
/// assert_eq!(
///     lmsi_data::write_in_columns("so he has 23 + 48 = 71 coins, then 52 - 17 = 35 coins."),
///     "so he has 23 + 48 = [3 + 8 = 11, 2 + 4 + 1 = 7] 71 coins, then 52 - 17 = [12 - 7 = 5, 4 - 1 = 3] 35 coins."
/// );
/// ```
pub fn write_in_columns(reasoning: &str) -> String {
    let words: Vec<&str> = reasoning.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        match equation(&words[i..]) {
            Some((a, op @ ('+' | '-'), b, c, tail)) if a >= 0 && b >= 0 && c >= 0 => {
                let columns = columns(a, op, b);
                out.push(format!("{a} {op} {b} = [{}] {c}{tail}", columns.join(", ")));
                i += 5;
            }
            _ => {
                out.push(words[i].to_string());
                i += 1;
            }
        }
    }
    out.join(" ")
}

/// Every one-digit fact that [`write_in_columns`] can write (`x + y`, `x + y + 1`, `x - y` and, after
/// a borrow, `1x - y`), in a fixed order: the drill a small model needs to work in columns.
pub fn column_facts() -> Vec<String> {
    let mut facts = Vec::new();
    for x in 0..10 {
        for y in 0..10 {
            facts.push(format!("{x} + {y} = {}", x + y));
            facts.push(format!("{x} + {y} + 1 = {}", x + y + 1));
        }
    }
    for x in 0..20 {
        for y in 0..10 {
            // Without a borrow the digit is at least y; after one it is 10 plus a digit below y.
            if (x < 10 && x >= y) || (x >= 9 && x - 10 < y) {
                facts.push(format!("{x} - {y} = {}", x - y));
            }
        }
    }
    facts
}

/// The column equations of `a op b` (`op` is `+` or `-`, `a >= b` for `-`), ones first.
fn columns(a: i64, op: char, b: i64) -> Vec<String> {
    let digits = |mut n: i64| {
        let mut d = vec![n % 10];
        while n >= 10 {
            n /= 10;
            d.push(n % 10);
        }
        d
    };
    let (da, db) = (digits(a), digits(b));
    let width = da.len().max(db.len());
    let digit = |d: &[i64], i: usize| d.get(i).copied().unwrap_or(0);
    let mut carry = 0;
    let mut out = Vec::with_capacity(width);
    for i in 0..width {
        let (x, y) = (digit(&da, i), digit(&db, i));
        if op == '+' {
            let sum = x + y + carry;
            out.push(match carry {
                0 => format!("{x} + {y} = {sum}"),
                _ => format!("{x} + {y} + 1 = {sum}"),
            });
            carry = sum / 10;
        } else {
            let mut x = x - carry;
            carry = i64::from(x < y);
            x += 10 * carry;
            out.push(format!("{x} - {y} = {}", x - y));
        }
    }
    out
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

    /// 300 generated problems with numbers up to 60.
    fn problems() -> Vec<crate::SyntheticProblem> {
        generate(
            &TaskConfig {
                max_value: 60,
                ..TaskConfig::default()
            },
            300,
        )
        .unwrap()
    }

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
        let problems = problems();
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
    fn columns_carry_borrow_and_keep_the_text() {
        assert_eq!(
            write_in_columns("so he has 63 + 8 = 71 coins."),
            "so he has 63 + 8 = [3 + 8 = 11, 6 + 0 + 1 = 7] 71 coins."
        );
        assert_eq!(
            write_in_columns("so he has 95 + 7 = 102 coins."),
            "so he has 95 + 7 = [5 + 7 = 12, 9 + 0 + 1 = 10] 102 coins."
        );
        assert_eq!(
            write_in_columns("then 100 - 47 = 53 cups."),
            "then 100 - 47 = [10 - 7 = 3, 9 - 4 = 5, 0 - 0 = 0] 53 cups."
        );
        assert_eq!(
            write_in_columns("so 7 - 7 = 0, and 6 * 3 = 18 and 20 / 4 = 5."),
            "so 7 - 7 = [7 - 7 = 0] 0, and 6 * 3 = 18 and 20 / 4 = 5."
        );
        let problems = problems();
        for p in &problems {
            let written = write_in_columns(&p.reasoning);
            let outside: String = written
                .split('[')
                .map(|part| part.split_once(']').map_or(part, |(_, rest)| rest))
                .collect();
            assert_eq!(outside.replace("  ", " "), p.reasoning);
            // Every column equation is right.
            for inside in written.split('[').skip(1) {
                let work = inside.split_once(']').unwrap().0;
                for column in work.split(", ") {
                    let w: Vec<&str> = column.split(' ').collect();
                    let value = match (w.len(), w[1]) {
                        (5, "+") => w[0].parse::<i64>().unwrap() + w[2].parse::<i64>().unwrap(),
                        (5, "-") => w[0].parse::<i64>().unwrap() - w[2].parse::<i64>().unwrap(),
                        (7, "+") => w[0].parse::<i64>().unwrap() + w[2].parse::<i64>().unwrap() + 1,
                        _ => panic!("{column}"),
                    };
                    assert_eq!(value.to_string(), *w.last().unwrap(), "{written}");
                    assert!((0..=19).contains(&value), "{written}");
                }
            }
        }
    }

    #[test]
    fn the_column_facts_cover_every_column_written() {
        let facts: std::collections::HashSet<String> = column_facts().into_iter().collect();
        for a in 0..150 {
            for b in 0..150 {
                for (op, ok) in [('+', true), ('-', a >= b)] {
                    if ok {
                        for column in columns(a, op, b) {
                            assert!(facts.contains(&column), "{a} {op} {b}: {column}");
                        }
                    }
                }
            }
        }
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
