//! Parsers of the numeric options: each says what the option must be, and clap names the option
//! (`invalid value '0' for '--save-every <SAVE_EVERY>': must be at least 1`). Options that take any
//! value of their type (`--seed`, `--top-k`, `--warmup-steps`) use clap's own parser.

use std::str::FromStr;

/// A whole number of at least 1 (a count of paths, steps, threads, ...).
pub fn at_least_one<T: FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    let value: T = s
        .parse()
        .map_err(|_| "must be a whole number of at least 1".to_string())?;
    if value < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(value)
}

/// A finite number greater than 0 (a learning rate, a number of epochs).
pub fn positive<T: FromStr + Copy + Into<f64>>(s: &str) -> Result<T, String> {
    finite_where(s, |x| x > 0.0, "a finite number greater than 0")
}

/// A finite number of at least 0 (a temperature, a weight decay, a gradient-norm bound).
pub fn non_negative<T: FromStr + Copy + Into<f64>>(s: &str) -> Result<T, String> {
    finite_where(s, |x| x >= 0.0, "a finite number of at least 0")
}

/// A fraction in [0, 1] (a confidence threshold).
pub fn fraction(s: &str) -> Result<f64, String> {
    finite_where(s, |x| (0.0..=1.0).contains(&x), "a number from 0 to 1")
}

/// A fraction in [0, 1) (a share of the data held out: all of it would leave nothing to train on).
pub fn held_out_fraction(s: &str) -> Result<f64, String> {
    finite_where(
        s,
        |x| (0.0..1.0).contains(&x),
        "a number from 0 up to (not including) 1",
    )
}

/// A probability mass in (0, 1] (top-p).
pub fn probability_mass(s: &str) -> Result<f32, String> {
    finite_where(
        s,
        |x| x > 0.0 && x <= 1.0,
        "a number greater than 0 and at most 1",
    )
}

fn finite_where<T: FromStr + Copy + Into<f64>>(
    s: &str,
    ok: impl Fn(f64) -> bool,
    expected: &str,
) -> Result<T, String> {
    let value: T = s.parse().map_err(|_| format!("must be {expected}"))?;
    let x: f64 = value.into();
    if !x.is_finite() || !ok(x) {
        return Err(format!("must be {expected}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_start_at_one() {
        assert_eq!(at_least_one::<u64>("3"), Ok(3));
        assert_eq!(at_least_one::<usize>("0"), Err("must be at least 1".into()));
        assert!(at_least_one::<usize>("-1").is_err());
        assert!(at_least_one::<usize>("1.5").is_err());
    }

    #[test]
    fn reals_are_finite_and_in_range() {
        assert_eq!(positive::<f64>("0.5"), Ok(0.5));
        for bad in ["0", "-1", "nan", "inf", "NaN", "x"] {
            assert!(positive::<f64>(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative::<f64>("0"), Ok(0.0));
        assert!(non_negative::<f64>("-1").is_err());
        assert!(non_negative::<f32>("nan").is_err());
        assert_eq!(fraction("1"), Ok(1.0));
        assert!(fraction("1.01").is_err());
        assert!(fraction("nan").is_err());
        assert!(held_out_fraction("1").is_err());
        assert_eq!(probability_mass("1"), Ok(1.0));
        assert!(probability_mass("0").is_err());
    }
}
