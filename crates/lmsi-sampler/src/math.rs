//! The canonical arithmetic: row scan, exponential, fixed-point weights, rank keys,
//! log-softmax.
//!
//! Everything a draw depends on is computed with IEEE-754 binary32 operations rounded to
//! nearest (no fused multiply-add) or with integers, so another implementation (the CUDA
//! kernel) can reproduce it bit for bit.

use crate::{SampleError, simd};

/// Fractional bits of a token weight: the most likely token weighs exactly `2^39`.
pub const WEIGHT_BITS: u32 = 39;
const WEIGHT_SCALE: f64 = (1u64 << WEIGHT_BITS) as f64;
/// Adding and subtracting 2^52 rounds a non-negative `f64` below 2^52 to an integer.
const ROUND_F64: f64 = 4_503_599_627_370_496.0;
/// Weights are summed in `f64` blocks of this many tokens: at most `2^8 · 2^39 < 2^53`, so
/// every partial sum is an exact integer and the summation order does not matter.
pub(crate) const BLOCK: usize = 256;

/// Below this, [`canonical_exp`] is 0 (and weights are 0 far earlier, below about -28).
/// Keeping `e^x` normal (no subnormals) spares devices that flush them to zero.
const EXP_MIN: f32 = -86.0;
/// Adding 1.5·2^23 rounds an `f32` of magnitude below 2^22 to an integer (ties to even),
/// which then sits in the low mantissa bits.
const SHIFTER: f32 = 12_582_912.0;
// Cephes `expf`: Cody-Waite split of ln 2 and a degree-5 minimax polynomial, as exact bits.
const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b); // 1.44269504
const LN2_HI: f32 = f32::from_bits(0x3f31_8000); // 0.693359375 (exact in 9 bits)
const LN2_LO: f32 = f32::from_bits(0xb95e_8083); // -2.12194440e-4
const EXP_POLY: [f32; 6] = [
    f32::from_bits(0x3950_6967), // 1.9875691500e-4
    f32::from_bits(0x3ab7_43ce), // 1.3981999507e-3
    f32::from_bits(0x3c08_8908), // 8.3334519073e-3
    f32::from_bits(0x3d2a_a9c1), // 4.1665795894e-2
    f32::from_bits(0x3e2a_aaaa), // 1.6666665459e-1
    f32::from_bits(0x3f00_0000), // 0.5
];

/// `e^x` for `x <= 0`, defined operation by operation so that every device computes the
/// same bits. It is within 1 ulp of the true value and monotone (both checked over every
/// `f32` in `[-86, 0]`).
///
/// Positive inputs are treated as 0 (the sampler only exponentiates `logit - max`), inputs
/// below -86 (including `-inf`) give 0, NaN gives NaN. Otherwise, with
/// `n = round_half_even(x·LOG2E)`, `r = (x - n·LN2_HI) - n·LN2_LO`, `z = r·r`, the result
/// is `((((((P0·r + P1)·r + P2)·r + P3)·r + P4)·r + P5)·z + r) + 1` times `2^n`, each
/// operation rounded to `f32` separately; the constants are listed in the crate docs.
///
/// ```
/// use lmsi_sampler::canonical_exp;
///
/// assert_eq!(canonical_exp(0.0), 1.0);
/// assert_eq!(canonical_exp(f32::NEG_INFINITY), 0.0);
/// assert!((canonical_exp(-1.0) - (-1.0f32).exp()).abs() < 1e-7);
/// ```
#[inline]
pub fn canonical_exp(x: f32) -> f32 {
    if x.is_nan() {
        x
    } else {
        exp_non_positive(x.min(0.0))
    }
}

/// [`canonical_exp`] for `x` in `[-inf, 0]` (not NaN): branch-free and conversion-free,
/// so that loops over it vectorize.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    // Clamped so the steps below stay in range.
    let xc = x.max(EXP_MIN);
    let shifted = xc * LOG2E + SHIFTER;
    let nf = shifted - SHIFTER;
    let n = shifted.to_bits().wrapping_sub(SHIFTER.to_bits());
    let r = (xc - nf * LN2_HI) - nf * LN2_LO;
    let z = r * r;
    let p = EXP_POLY
        .iter()
        .skip(1)
        .fold(EXP_POLY[0], |acc, &c| acc * r + c);
    let y = (p * z + r) + 1.0;
    // n is in [-124, 0]: 2^n is a normal float.
    let e = y * f32::from_bits(n.wrapping_add(127) << 23);
    // Below EXP_MIN the result is 0: clear every bit.
    f32::from_bits(e.to_bits() & 0u32.wrapping_sub(u32::from(x >= EXP_MIN)))
}

/// Maps a row's logits to token weights:
/// `round_half_even(canonical_exp((l - max) · (1/T)) · 2^39)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Weigher {
    max: f32,
    inv_t: f32,
}

impl Weigher {
    /// `max` is the row's largest logit; `temperature` is in `[2^-126, 2^126]`, so `1/T` is normal.
    pub(crate) fn new(max: f32, temperature: f32) -> Self {
        Self {
            max,
            inv_t: 1.0 / temperature,
        }
    }

    /// The weight of a logit `<= max` as an integer-valued `f64` in `[0, 2^39]`.
    #[inline(always)]
    fn weight_f64(&self, logit: f32) -> f64 {
        // Never NaN: logit <= max, and 1/T is positive and finite.
        round_weight(exp_non_positive((logit - self.max) * self.inv_t))
    }

    /// The weight of a logit `<= max`; exactly `2^39` for the max itself.
    #[inline]
    pub(crate) fn weight(&self, logit: f32) -> u64 {
        self.weight_f64(logit) as u64
    }

    /// Replaces `out` with the weights of the tokens whose rank keys are `keys`, in order.
    pub(crate) fn weigh_keys(&self, logits: &[f32], keys: &[u64], out: &mut Vec<u64>) {
        simd::dispatch(
            #[inline(always)]
            || self.weigh_keys_portable(logits, keys, out),
        )
    }

    #[inline(always)]
    fn weigh_keys_portable(&self, logits: &[f32], keys: &[u64], out: &mut Vec<u64>) {
        out.clear();
        out.reserve(keys.len());
        for chunk in keys.chunks(LANES) {
            // Gather, then exponentiate a full vector at once (padding with the max).
            let mut e = [self.max; LANES];
            for (l, &key) in e.iter_mut().zip(chunk) {
                *l = logits[key_index(key)];
            }
            for l in &mut e {
                *l = exp_non_positive((*l - self.max) * self.inv_t);
            }
            out.extend(e[..chunk.len()].iter().map(|&e| round_weight(e) as u64));
        }
    }

    /// Replaces `out` with the total weight of each [`BLOCK`] of the row, counting only
    /// the tokens `cut` keeps.
    pub(crate) fn block_totals(&self, logits: &[f32], cut: Cut, out: &mut Vec<u64>) {
        simd::dispatch(
            #[inline(always)]
            || self.block_totals_portable(logits, cut, out),
        )
    }

    #[inline(always)]
    fn block_totals_portable(&self, logits: &[f32], cut: Cut, out: &mut Vec<u64>) {
        out.clear();
        // A plain loop rather than iterator adapters, so that everything inlines into
        // the caller compiled for wider vectors (see `simd`).
        for (b, block) in logits.chunks(BLOCK).enumerate() {
            let start = b * BLOCK;
            // Only the block holding the cut token needs its index; the others compare
            // logits alone, which vectorizes.
            let total = if start + block.len() <= cut.index {
                self.block_total(block, |l| l >= cut.logit)
            } else if start > cut.index {
                self.block_total(block, |l| l > cut.logit)
            } else {
                let kept = block.iter().zip(start..).filter(|&(&l, i)| cut.keeps(l, i));
                kept.map(|(&l, _)| self.weight(l)).sum()
            };
            out.push(total);
        }
    }

    /// The total weight of the logits of `block` (at most [`BLOCK`]) that satisfy `keep`.
    #[inline(always)]
    fn block_total(&self, block: &[f32], keep: impl Fn(f32) -> bool) -> u64 {
        let mut lanes = [0.0f64; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            // Straight-line lanes, selection by masking: this is what vectorizes.
            let mut e = [0.0f32; LANES];
            for (e, &l) in e.iter_mut().zip(chunk) {
                *e = exp_non_positive((l - self.max) * self.inv_t);
            }
            for ((acc, e), &l) in lanes.iter_mut().zip(e).zip(chunk) {
                *acc += round_weight(e) * f64::from(u8::from(keep(l)));
            }
        }
        for &l in tail {
            if keep(l) {
                lanes[0] += self.weight_f64(l);
            }
        }
        // Exact integers below 2^53: the order of these additions is irrelevant.
        lanes.iter().sum::<f64>() as u64
    }
}

/// `round_half_even(e · 2^39)` as an integer-valued `f64`, for `e` in `[0, 1]`.
#[inline(always)]
fn round_weight(e: f32) -> f64 {
    (f64::from(e) * WEIGHT_SCALE + ROUND_F64) - ROUND_F64
}

/// The lowest-ranked token of a kept set that is a prefix of the rank order: token `i` is
/// kept if it ranks at or above token `index` with logit `logit`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cut {
    logit: f32,
    index: usize,
}

impl Cut {
    /// Keeps every token.
    pub(crate) const ALL: Cut = Cut {
        logit: f32::NEG_INFINITY,
        index: usize::MAX,
    };

    /// Keeps the tokens ranked at or above the one with this rank key.
    pub(crate) fn at(logits: &[f32], key: u64) -> Cut {
        let index = key_index(key);
        Cut {
            logit: logits[index],
            index,
        }
    }

    /// Whether token `index` with logit `logit` is kept (`==` treats -0.0 as 0.0, like the
    /// rank order).
    #[inline]
    pub(crate) fn keeps(&self, logit: f32, index: usize) -> bool {
        logit > self.logit || (logit == self.logit && index <= self.index)
    }
}

/// The rank key of token `index` with logit `logit`: a larger key ranks higher.
///
/// Orders by logit descending, then index ascending; `-0.0` counts as `+0.0` so that
/// numerically equal logits tie exactly. Keys are unique within a row.
#[inline]
pub(crate) fn rank_key(logit: f32, index: usize) -> u64 {
    let bits = (logit + 0.0).to_bits();
    // Flip negatives entirely and set the sign bit of positives: unsigned order = float order.
    let ordered = bits ^ (((bits as i32) >> 31) as u32 | 0x8000_0000);
    (u64::from(ordered) << 32) | u64::from(!(index as u32))
}

/// The token index inside a [`rank_key`].
#[inline]
pub(crate) fn key_index(key: u64) -> usize {
    !(key as u32) as usize
}

const LANES: usize = 16;

/// The row's largest logit, after checking the row has no NaN or `+inf` and at least one
/// finite logit.
pub(crate) fn row_max(logits: &[f32], row: usize) -> Result<f32, SampleError> {
    simd::dispatch(
        #[inline(always)]
        || row_max_portable(logits, row),
    )
}

#[inline(always)]
fn row_max_portable(logits: &[f32], row: usize) -> Result<f32, SampleError> {
    // Independent lanes let the compiler keep the loop in SIMD registers.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut bad = false;
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            bad |= is_bad(x);
            *m = if x > *m { x } else { *m };
        }
    }
    for &x in tail {
        bad |= is_bad(x);
        lanes[0] = if x > lanes[0] { x } else { lanes[0] };
    }
    if bad {
        let index = logits.iter().position(|&x| is_bad(x)).unwrap_or_default();
        return Err(if logits[index].is_nan() {
            SampleError::NanLogit { row, index }
        } else {
            SampleError::InfiniteLogit { row, index }
        });
    }
    let max = lanes
        .into_iter()
        .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    if max == f32::NEG_INFINITY {
        return Err(SampleError::NoFiniteLogit { row });
    }
    Ok(max)
}

/// The lowest index whose logit equals `value` (`==`: -0.0 matches 0.0, as in the rank
/// order).
pub(crate) fn first_index_of(logits: &[f32], value: f32) -> Option<usize> {
    simd::dispatch(
        #[inline(always)]
        || first_index_of_portable(logits, value),
    )
}

#[inline(always)]
fn first_index_of_portable(logits: &[f32], value: f32) -> Option<usize> {
    // A whole vector compared at once, then the first hit inside it.
    for (c, chunk) in logits.chunks(LANES).enumerate() {
        let hits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |bits, (j, &l)| bits | (u32::from(l == value) << j));
        if hits != 0 {
            return Some(c * LANES + hits.trailing_zeros() as usize);
        }
    }
    None
}

/// NaN or `+inf`: a logit no softmax can take.
#[inline(always)]
fn is_bad(x: f32) -> bool {
    // `|`, not `||`: no branch, so the scan vectorizes.
    x.is_nan() | (x == f32::INFINITY)
}

/// `sum_i e^(l_i - max)` over a checked row, with `f32` exponentials accumulated in `f64`.
pub(crate) fn sum_exp(logits: &[f32], max: f32) -> f64 {
    simd::dispatch(
        #[inline(always)]
        || sum_exp_portable(logits, max),
    )
}

#[inline(always)]
fn sum_exp_portable(logits: &[f32], max: f32) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut e = [0.0f32; LANES];
        for (e, &l) in e.iter_mut().zip(chunk) {
            *e = exp_non_positive(l - max);
        }
        for (acc, e) in lanes.iter_mut().zip(e) {
            *acc += f64::from(e);
        }
    }
    for &x in tail {
        lanes[0] += f64::from(exp_non_positive(x - max));
    }
    lanes.iter().sum()
}

/// `log softmax` at a logit, given the row's max and [`sum_exp`].
#[inline]
pub(crate) fn log_softmax(logit: f32, max: f32, sum: f64) -> f32 {
    (f64::from(logit - max) - sum.ln()) as f32
}

/// The log-softmax of `logits` (temperature 1, no truncation) at `token`.
///
/// Computed as `(l_token - max) - ln(sum_i e^(l_i - max))`, the sum in `f64`, so it is
/// accurate to `f32` precision and never positive. The result is NaN if the logits
/// contain NaN or `+inf`, or are all `-inf`.
///
/// # Panics
///
/// If `token` is not an index into `logits`.
///
/// ```
/// use lmsi_sampler::log_softmax_at;
///
/// let lp = log_softmax_at(&[0.0, 0.0], 1);
/// assert!((lp - 0.5f32.ln()).abs() < 1e-6);
/// ```
pub fn log_softmax_at(logits: &[f32], token: u32) -> f32 {
    let logit = logits[token as usize];
    match row_max(logits, 0) {
        Ok(max) => log_softmax(logit, max, sum_exp(logits, max)),
        Err(_) => f32::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_exp_is_accurate_on_its_domain() {
        let mut worst = 0.0f64;
        let mut x = 0.0f32;
        while x > EXP_MIN {
            let exact = f64::from(x).exp();
            let rel = (f64::from(canonical_exp(x)) - exact).abs() / exact;
            worst = worst.max(rel);
            x -= 0.000_77;
        }
        // 1 ulp of f32 is at most 2^-23 relative.
        assert!(worst < 1.2e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn canonical_exp_edges() {
        assert_eq!(canonical_exp(0.0), 1.0);
        assert_eq!(canonical_exp(-0.0), 1.0);
        assert_eq!(canonical_exp(5.0), 1.0);
        assert_eq!(canonical_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(canonical_exp(-86.01), 0.0);
        assert!(canonical_exp(-86.0) > 0.0 && canonical_exp(-86.0).is_normal());
        assert!(canonical_exp(f32::NAN).is_nan());
    }

    #[test]
    fn shifter_rounds_half_to_even() {
        let mut x = 0.0f32;
        while x > EXP_MIN {
            let v = x * LOG2E;
            let shifted = v + SHIFTER;
            assert_eq!(shifted - SHIFTER, v.round_ties_even(), "{x}");
            assert_eq!(
                shifted.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32,
                v.round() as i32
            );
            x -= 0.013;
        }
        assert_eq!((-2.5f32 + SHIFTER) - SHIFTER, -2.0);
        assert_eq!((-3.5f32 + SHIFTER) - SHIFTER, -4.0);
    }

    #[test]
    fn weights_peak_at_the_max_and_round() {
        let w = Weigher::new(3.0, 0.5);
        assert_eq!(w.weight(3.0), 1 << WEIGHT_BITS);
        assert_eq!(w.weight(f32::NEG_INFINITY), 0);
        assert_eq!(w.weight(-100.0), 0);
        let half = w.weight(3.0 - 0.5 * std::f32::consts::LN_2);
        assert!(
            (half as i64 - (1i64 << (WEIGHT_BITS - 1))).abs() < 1 << 18,
            "{half}"
        );
        // e^-27.7 * 2^39 is about 0.52: rounds to 1, where truncation would give 0.
        let w1 = Weigher::new(0.0, 1.0);
        assert_eq!(w1.weight(-27.7), 1);
        assert_eq!(w1.weight(-28.5), 0);
    }

    #[test]
    fn weigh_keys_matches_weight() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 41) as f32 * -0.3).collect();
        let keys: Vec<u64> = (0..100).rev().map(|i| rank_key(logits[i], i)).collect();
        let w = Weigher::new(0.0, 0.9);
        for n in [0, 1, 15, 16, 17, 100] {
            let mut weights = vec![7];
            w.weigh_keys(&logits, &keys[..n], &mut weights);
            let expected: Vec<u64> = keys[..n]
                .iter()
                .map(|&k| w.weight(logits[key_index(k)]))
                .collect();
            assert_eq!(weights, expected);
            simd::assert_paths_agree(|| {
                let mut out = Vec::new();
                w.weigh_keys_portable(&logits, &keys[..n], &mut out);
                out
            });
        }
    }

    #[test]
    fn block_totals_are_exact_sums_of_kept_weights() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919 % 211) as f32) / -9.0)
            .collect();
        let w = Weigher::new(0.0, 0.7);
        let mut totals = Vec::new();
        for cut in [
            Cut::ALL,
            Cut {
                logit: -10.0,
                index: 500,
            },
            Cut {
                logit: 0.0,
                index: 0,
            },
        ] {
            w.block_totals(&logits, cut, &mut totals);
            assert_eq!(totals.len(), 1000usize.div_ceil(BLOCK));
            for (b, &total) in totals.iter().enumerate() {
                let expected: u64 = (b * BLOCK..((b + 1) * BLOCK).min(1000))
                    .filter(|&i| cut.keeps(logits[i], i))
                    .map(|i| w.weight(logits[i]))
                    .sum();
                assert_eq!(total, expected, "block {b}");
            }
        }
    }

    #[test]
    fn vector_paths_agree_bit_for_bit() {
        // Spread, ties, -inf, a NaN-free tail that is not a multiple of any vector width.
        let logits: Vec<f32> = (0..10_007u32)
            .map(|i| match i % 13 {
                0 => f32::NEG_INFINITY,
                1 => 0.25,
                _ => (i.wrapping_mul(2_654_435_761) >> 8) as f32 / 1e6 - 8.0,
            })
            .collect();
        let max = row_max_portable(&logits, 0).unwrap();
        simd::assert_paths_agree(|| row_max_portable(&logits, 0));
        simd::assert_paths_agree(|| sum_exp_portable(&logits, max).to_bits());
        for temperature in [0.3, 1.0, 7.0] {
            let w = Weigher::new(max, temperature);
            for cut in [
                Cut::ALL,
                Cut {
                    logit: 0.25,
                    index: 5000,
                },
                Cut {
                    logit: 3.0,
                    index: 9,
                },
            ] {
                simd::assert_paths_agree(|| {
                    let mut totals = Vec::new();
                    w.block_totals_portable(&logits, cut, &mut totals);
                    totals
                });
            }
        }
    }

    #[test]
    fn cut_keeps_a_rank_prefix() {
        let logits = [1.0, -0.0, 3.0, 0.0, 0.0, -2.0];
        let cut = Cut::at(&logits, rank_key(0.0, 3));
        let kept: Vec<usize> = (0..6).filter(|&i| cut.keeps(logits[i], i)).collect();
        assert_eq!(kept, [0, 1, 2, 3]);
        let boundary = rank_key(0.0, 3);
        for (i, &l) in logits.iter().enumerate() {
            assert_eq!(cut.keeps(l, i), rank_key(l, i) >= boundary, "{i}");
            assert!(Cut::ALL.keeps(l, i));
        }
        assert!(Cut::ALL.keeps(f32::NEG_INFINITY, usize::MAX));
    }

    #[test]
    fn rank_keys_order_by_logit_then_index() {
        assert!(rank_key(1.0, 5) > rank_key(0.5, 0));
        assert!(rank_key(1.0, 0) > rank_key(1.0, 1));
        assert!(rank_key(-1.0, 0) > rank_key(-2.0, 0));
        assert!(rank_key(-1.0, 9) > rank_key(f32::NEG_INFINITY, 0));
        assert!(rank_key(f32::MIN_POSITIVE, 9) > rank_key(0.0, 0));
        assert!(rank_key(-0.0, 0) > rank_key(0.0, 1));
        assert!(rank_key(0.0, 0) > rank_key(-0.0, 1));
        assert_eq!(key_index(rank_key(-3.5, 12345)), 12345);
    }

    #[test]
    fn row_max_reports_the_first_bad_logit() {
        assert_eq!(row_max(&[1.0, -2.0, 3.0], 0), Ok(3.0));
        let mut long = vec![0.0f32; 37];
        long[35] = 9.0;
        assert_eq!(row_max(&long, 0), Ok(9.0));
        long[20] = f32::INFINITY;
        long[30] = f32::NAN;
        assert_eq!(
            row_max(&long, 4),
            Err(SampleError::InfiniteLogit { row: 4, index: 20 })
        );
        long[10] = f32::NAN;
        assert_eq!(
            row_max(&long, 4),
            Err(SampleError::NanLogit { row: 4, index: 10 })
        );
        let dead = [f32::NEG_INFINITY; 11];
        assert_eq!(
            row_max(&dead, 2),
            Err(SampleError::NoFiniteLogit { row: 2 })
        );
    }

    #[test]
    fn first_index_of_finds_the_first_match_in_any_vector() {
        for len in [1, 15, 16, 17, 40, 100] {
            for (first, second) in [
                (0, len - 1),
                (len / 2, len - 1),
                ((len - 1).min(3), len - 1),
            ] {
                let mut logits = vec![-1.0f32; len];
                logits[second] = 2.0;
                logits[first] = 2.0;
                assert_eq!(first_index_of(&logits, 2.0), Some(first), "{len}");
                simd::assert_paths_agree(|| first_index_of_portable(&logits, 2.0));
            }
        }
        let mut signed = vec![-1.0f32; 40];
        signed[33] = 0.0;
        signed[21] = -0.0;
        assert_eq!(first_index_of(&signed, 0.0), Some(21));
        assert_eq!(first_index_of(&signed, 5.0), None);
    }

    #[test]
    fn log_softmax_matches_f64_reference() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let norm: f64 = logits
            .iter()
            .map(|&l| (f64::from(l) - f64::from(max)).exp())
            .sum();
        for token in [0u32, 17, 999] {
            let exact = f64::from(logits[token as usize]) - f64::from(max) - norm.ln();
            let got = log_softmax_at(&logits, token);
            assert!((f64::from(got) - exact).abs() < 1e-5, "{got} vs {exact}");
            assert!(got <= 0.0);
        }
        assert!(log_softmax_at(&[1.0, f32::NAN], 0).is_nan());
        assert_eq!(
            log_softmax_at(&[2.0, f32::NEG_INFINITY], 1),
            f32::NEG_INFINITY
        );
    }
}
