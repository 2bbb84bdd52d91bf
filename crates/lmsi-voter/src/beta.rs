//! The regularized incomplete beta function, for Adaptive-Consistency's stopping criterion.
//!
//! Continued fraction evaluated with the modified Lentz method (Numerical Recipes, `betai` and
//! `betacf`), and the log-gamma function by the Lanczos approximation (g = 7, 9 terms).

/// Relative accuracy at which the continued fraction stops.
const EPS: f64 = 1e-15;
/// Stand-in for zero in the Lentz recurrences, to avoid dividing by zero.
const TINY: f64 = 1e-300;
/// The continued fraction needs about `sqrt(max(a, b))` terms; this covers parameters far beyond
/// any sample count.
const MAX_TERMS: usize = 1_000_000;

/// The regularized incomplete beta function `I_x(a, b)`: the probability that a `Beta(a, b)`
/// random variable is at most `x`.
///
/// Returns NaN when `a` or `b` is not positive and finite or `x` is NaN; `x` outside `[0, 1]` is
/// clamped.
///
/// ```
/// use lmsi_voter::regularized_incomplete_beta;
///
/// // Beta(2, 1) has density 2x, so P(X <= 0.5) = 0.25.
/// assert!((regularized_incomplete_beta(0.5, 2.0, 1.0) - 0.25).abs() < 1e-15);
/// ```
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    let valid = |p: f64| p.is_finite() && p > 0.0;
    if !valid(a) || !valid(b) || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if a == b && x == 0.5 {
        // Exact by symmetry; ties in a vote land here and must not look like a slight lead.
        return 0.5;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (-x).ln_1p()).exp();
    // The continued fraction converges quickly for x < (a + 1) / (a + b + 2); use the symmetry
    // I_x(a, b) = 1 - I_{1-x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * continued_fraction(x, a, b) / a
    } else {
        1.0 - front * continued_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of `I_x(a, b)` (Numerical Recipes `betacf`).
fn continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=MAX_TERMS {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step of the recurrence.
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        // Odd step.
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx), positive for 0 < x < 1.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let series = COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(COEFFICIENTS[0], |acc, (i, c)| {
            acc + c / (x + i as f64 + 1.0)
        });
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact `I_{1/2}(a, b)` for integer `a, b >= 1`: `P(Binomial(a + b - 1, 1/2) >= a)`.
    fn binomial_oracle(a: u32, b: u32) -> f64 {
        let n = a + b - 1;
        let mut row = vec![1u128];
        for _ in 0..n {
            let mut next = vec![1u128; row.len() + 1];
            for k in 1..row.len() {
                next[k] = row[k - 1] + row[k];
            }
            row = next;
        }
        let tail: u128 = row[a as usize..].iter().sum();
        tail as f64 / 2f64.powi(n as i32)
    }

    fn assert_close(got: f64, want: f64, rel: f64, what: &str) {
        assert!(
            (got - want).abs() <= rel * want.abs(),
            "{what}: got {got:e}, want {want:e}"
        );
    }

    #[test]
    fn matches_the_binomial_sum_at_one_half() {
        for a in 1..=60 {
            for b in 1..=60 {
                let got = regularized_incomplete_beta(0.5, f64::from(a), f64::from(b));
                assert_close(
                    got,
                    binomial_oracle(a, b),
                    1e-12,
                    &format!("I(0.5; {a}, {b})"),
                );
            }
        }
    }

    #[test]
    fn closed_forms_away_from_one_half() {
        for x in [1e-6, 0.01, 0.3, 0.7, 0.99] {
            for p in [1.0, 2.5, 7.0, 40.0] {
                let f = |a, b| regularized_incomplete_beta(x, a, b);
                assert_close(f(p, 1.0), x.powf(p), 1e-12, "I_x(a, 1) = x^a");
                // 1 - (1 - x)^b, without the cancellation of computing it that way.
                let want = -(p * (-x).ln_1p()).exp_m1();
                assert_close(f(1.0, p), want, 1e-12, "I_x(1, b)");
                // I_x(1/2, 1/2) = (2 / pi) asin(sqrt x): checks non-integer parameters.
                let arcsine = 2.0 / std::f64::consts::PI * x.sqrt().asin();
                assert_close(f(0.5, 0.5), arcsine, 1e-12, "I_x(1/2, 1/2)");
                assert_close(
                    f(p, 3.5) + regularized_incomplete_beta(1.0 - x, 3.5, p),
                    1.0,
                    1e-13,
                    "symmetry",
                );
            }
        }
    }

    #[test]
    fn large_parameters_converge() {
        // Symmetric parameters at x = 1/2 give exactly 1/2 in theory.
        assert_close(
            regularized_incomplete_beta(0.5, 1e6, 1e6),
            0.5,
            1e-6,
            "I(0.5; 1e6, 1e6)",
        );
        let lopsided = regularized_incomplete_beta(0.5, 2000.0, 1000.0);
        assert!((0.0..1e-20).contains(&lopsided), "{lopsided:e}");
    }

    #[test]
    fn edges() {
        assert_eq!(regularized_incomplete_beta(0.0, 2.0, 3.0), 0.0);
        assert_eq!(regularized_incomplete_beta(-1.0, 2.0, 3.0), 0.0);
        assert_eq!(regularized_incomplete_beta(1.0, 2.0, 3.0), 1.0);
        assert_eq!(regularized_incomplete_beta(0.5, 3.0, 3.0), 0.5);
        assert!(regularized_incomplete_beta(0.5, 0.0, 3.0).is_nan());
        assert!(regularized_incomplete_beta(0.5, 1.0, f64::INFINITY).is_nan());
        assert!(regularized_incomplete_beta(f64::NAN, 1.0, 1.0).is_nan());
    }

    #[test]
    fn log_gamma_of_integers_is_log_factorial() {
        let mut factorial = 1.0f64;
        for n in 1..=30u32 {
            let (got, want) = (ln_gamma(f64::from(n)), factorial.ln());
            // ln Γ(1) = ln Γ(2) = 0, so the tolerance is absolute near zero.
            assert!(
                (got - want).abs() <= 1e-13 * want.max(1.0),
                "ln Γ({n}) = {got}, want {want}"
            );
            factorial *= f64::from(n);
        }
        assert_close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-13,
            "ln Γ(1/2)",
        );
    }
}
