//! Token frequencies over many draws match the tempered, truncated softmax (computed here
//! independently in `f64`): Pearson's chi-square test, failing a correct sampler with
//! probability below 1e-6 (the seed is fixed, so the outcome is deterministic).

use lmsi_sampler::{RowKey, SamplingParams, sample_row, sequence_id};

const DRAWS: u32 = 20_000;
/// Rejection level: a correct sampler's statistic exceeds the critical value this rarely.
const ALPHA: f64 = 1e-6;

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error ~1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
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
    let x = x - 1.0;
    let t = x + 7.5;
    let series = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |s, (i, g)| s + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The regularized upper incomplete gamma function `Q(a, x)` (Numerical Recipes 6.2:
/// the series below `a + 1`, Lentz's continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    let prefactor = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-16 {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        1.0 - sum * prefactor
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { tiny } else { d };
            c = b + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        prefactor * h
    }
}

/// The probability that a chi-square variable with `df` degrees of freedom exceeds `x`.
fn chi_square_p_value(x: f64, df: usize) -> f64 {
    gamma_q(df as f64 / 2.0, x / 2.0)
}

#[test]
fn chi_square_p_values_match_closed_forms() {
    // df = 2: exp(-x/2). df = 1: erfc(sqrt(x/2)) (values from a correctly rounded erfc).
    for x in [0.1, 1.0, 5.0, 30.0, 80.0] {
        let p = chi_square_p_value(x, 2);
        assert!((p / (-x / 2.0).exp() - 1.0).abs() < 1e-12, "{x}");
    }
    for (x, erfc) in [
        (0.5, 0.479_500_122_186_953_5),
        (3.841_458_820_694_124, 0.05),
        (30.0, 4.320_463_057_827_492e-8),
    ] {
        assert!((chi_square_p_value(x, 1) / erfc - 1.0).abs() < 1e-10, "{x}");
    }
    // Even df: a Poisson tail. The 5% critical value for df = 10 is 18.307...
    assert!((chi_square_p_value(18.307_038_053_275_146, 10) - 0.05).abs() < 1e-12);
    assert!((chi_square_p_value(90.0, 40) / 1.023_704_644_107_924_6e-5 - 1.0).abs() < 1e-10);
}

/// `softmax(logits / temperature)` restricted to `kept`, in `f64`.
fn truncated_softmax(logits: &[f32], temperature: f64, kept: &[usize]) -> Vec<f64> {
    let max = kept
        .iter()
        .map(|&i| f64::from(logits[i]))
        .fold(f64::NEG_INFINITY, f64::max);
    let mut p = vec![0.0; logits.len()];
    for &i in kept {
        p[i] = ((f64::from(logits[i]) - max) / temperature).exp();
    }
    let sum: f64 = p.iter().sum();
    p.iter().map(|x| x / sum).collect()
}

/// Draws `DRAWS` tokens and checks them against `expected` (0 outside the kept set).
fn check_frequencies(logits: &[f32], params: &SamplingParams, expected: &[f64]) {
    let mut counts = vec![0u32; logits.len()];
    for step in 0..DRAWS {
        let s = sample_row(logits, params, RowKey::new(sequence_id("chi2", 1), step)).unwrap();
        counts[s.token as usize] += 1;
        let p = expected[s.token as usize];
        assert!(
            (f64::from(s.sampling_logprob) - p.ln()).abs() < 1e-5,
            "token {}",
            s.token
        );
    }
    let mut statistic = 0.0;
    let mut cells = 0;
    for (&count, &p) in counts.iter().zip(expected) {
        if p == 0.0 {
            assert_eq!(count, 0, "a token outside the kept set was drawn");
            continue;
        }
        let e = p * f64::from(DRAWS);
        assert!(
            e >= 5.0,
            "expected count {e} too small for the chi-square approximation"
        );
        statistic += (f64::from(count) - e).powi(2) / e;
        cells += 1;
    }
    let p_value = chi_square_p_value(statistic, cells - 1);
    assert!(
        p_value > ALPHA,
        "chi-square {statistic:.1} on {} df: p = {p_value:e}",
        cells - 1
    );
}

/// Logits in scrambled index order with `-inf` gaps, so the walk order matters.
fn scrambled() -> Vec<f32> {
    let values = [
        2.0, 1.5, 1.2, 0.8, 0.5, 0.3, 0.0, -0.4, -0.9, -1.5, -2.2, -3.0,
    ];
    let mut logits = vec![f32::NEG_INFINITY; 15];
    for (j, v) in values.into_iter().enumerate() {
        logits[(j * 7 + 3) % 15] = v;
    }
    logits
}

#[test]
fn plain_temperature_matches_softmax() {
    let logits = scrambled();
    let kept: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 0,
        top_p: 1.0,
        seed: 11,
    };
    check_frequencies(&logits, &params, &truncated_softmax(&logits, 0.8, &kept));
}

#[test]
fn top_k_matches_truncated_softmax() {
    // 1000 tokens, top 40: exercises the selection buffer; the kept set is known by
    // construction (the 40 tokens at index 25 * j).
    let logits: Vec<f32> = (0..1000)
        .map(|i| {
            if i % 25 == 0 {
                3.0 - (i / 25) as f32 * 0.05
            } else {
                ((i * 37) % 100) as f32 / 100.0
            }
        })
        .collect();
    let kept: Vec<usize> = (0..1000).step_by(25).collect();
    let params = SamplingParams {
        temperature: 1.3,
        top_k: 40,
        top_p: 1.0,
        seed: 12,
    };
    check_frequencies(&logits, &params, &truncated_softmax(&logits, 1.3, &kept));
}

#[test]
fn top_p_matches_truncated_softmax() {
    // 30 high tokens with geometric probabilities, 970 low ones holding ~0.4% of the mass.
    let logits: Vec<f32> = (0..1000)
        .map(|i| {
            if i % 33 == 0 && i / 33 < 30 {
                5.0 - (i / 33) as f32 * 0.1
            } else {
                -5.0
            }
        })
        .collect();
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.9,
        seed: 13,
    };
    let all: Vec<usize> = (0..1000).collect();
    let full = truncated_softmax(&logits, 1.0, &all);
    let mut order = all;
    order.sort_by(|&a, &b| full[b].total_cmp(&full[a]).then(a.cmp(&b)));
    let mut mass = 0.0;
    let n = order.iter().position(|&i| {
        mass += full[i];
        mass >= 0.9
    });
    let kept = &order[..n.unwrap() + 1];
    // Keep the boundary away from rounding: the prefix overshoots 0.9 clearly.
    assert!(mass - 0.9 > 1e-3 && mass - full[kept[kept.len() - 1]] < 0.9 - 1e-3);
    check_frequencies(&logits, &params, &truncated_softmax(&logits, 1.0, kept));
}

#[test]
fn top_k_and_top_p_together() {
    let logits = scrambled();
    let params = SamplingParams {
        temperature: 1.5,
        top_k: 8,
        top_p: 0.85,
        seed: 14,
    };
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order.truncate(8);
    let p = truncated_softmax(&logits, 1.5, &order);
    let mut mass = 0.0;
    let n = order.iter().position(|&i| {
        mass += p[i];
        mass >= 0.85
    });
    assert!(mass - 0.85 > 1e-3);
    check_frequencies(
        &logits,
        &params,
        &truncated_softmax(&logits, 1.5, &order[..n.unwrap() + 1]),
    );
}
