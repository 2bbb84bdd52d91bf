//! Partial selection of the highest-ranked tokens of a row, without sorting the row.

use std::cmp::Reverse;

use crate::math::{key_index, rank_key};
use crate::simd;

/// Logits are screened this many at a time before any key is computed.
const SCREEN: usize = 16;

/// Replaces `out` with the `m` highest [`rank_key`]s of the row that are below `bound`,
/// sorted from highest to lowest (fewer if fewer exist).
///
/// One pass over the row with a candidate buffer of `2m` keys: once the buffer fills, it
/// is cut back to its best `m` (a linear-time selection), and from then on only keys
/// above the `m`-th best so far are taken. O(V + m log m), no vocabulary-sized memory.
/// The row must hold no NaN.
pub(crate) fn top_keys_below(logits: &[f32], m: usize, bound: u64, out: &mut Vec<u64>) {
    simd::dispatch(
        #[inline(always)]
        || top_keys_below_portable(logits, m, bound, out),
    )
}

#[inline(always)]
fn top_keys_below_portable(logits: &[f32], m: usize, bound: u64, out: &mut Vec<u64>) {
    out.clear();
    if m == 0 {
        return;
    }
    let capacity = m.saturating_mul(2).max(m + 64);
    out.reserve(capacity.min(logits.len()));
    // Keys are unique, so "above the m-th best" is "at least one more than it". A logit
    // below the m-th best's logit cannot qualify: that test needs no key.
    let (mut floor, mut floor_logit) = (0u64, f32::NEG_INFINITY);
    for (c, chunk) in logits.chunks(SCREEN).enumerate() {
        // One bit per logit that reaches the floor's: a vector compare, then only the
        // (usually few, often no) candidates are visited.
        let mut candidates = chunk.iter().enumerate().fold(0u32, |bits, (j, &l)| {
            bits | (u32::from(l >= floor_logit) << j)
        });
        while candidates != 0 {
            let j = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            let key = rank_key(chunk[j], c * SCREEN + j);
            if key >= floor && key < bound {
                out.push(key);
                if out.len() == capacity {
                    out.select_nth_unstable_by_key(m - 1, |&k| Reverse(k));
                    out.truncate(m);
                    floor = out[m - 1] + 1;
                    floor_logit = logits[key_index(out[m - 1])];
                }
            }
        }
    }
    if out.len() > m {
        out.select_nth_unstable_by_key(m - 1, |&k| Reverse(k));
        out.truncate(m);
    }
    out.sort_unstable_by_key(|&k| Reverse(k));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(logits: &[f32], m: usize, bound: u64) -> Vec<u64> {
        let mut keys: Vec<u64> = (0..logits.len())
            .map(|i| rank_key(logits[i], i))
            .filter(|&k| k < bound)
            .collect();
        keys.sort_unstable_by_key(|&k| Reverse(k));
        keys.truncate(m);
        keys
    }

    #[test]
    fn matches_a_full_sort() {
        // Few distinct values: many ties, which the index must break.
        let logits: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let mut out = Vec::new();
        for m in [1, 2, 40, 64, 700, 4999, 5000, 6000] {
            top_keys_below(&logits, m, u64::MAX, &mut out);
            assert_eq!(out, brute_force(&logits, m, u64::MAX), "m = {m}");
        }
    }

    #[test]
    fn respects_the_bound() {
        let logits: Vec<f32> = (0..3000)
            .map(|i| ((i * 104_729) % 1009) as f32 * 0.01)
            .collect();
        let mut first = Vec::new();
        top_keys_below(&logits, 100, u64::MAX, &mut first);
        let bound = *first.last().unwrap();
        let mut next = Vec::new();
        top_keys_below(&logits, 300, bound, &mut next);
        assert_eq!(next, brute_force(&logits, 300, bound));
        assert!(next.iter().all(|&k| k < bound));
        let mut all = first.clone();
        all.extend(&next);
        assert_eq!(all, brute_force(&logits, 400, u64::MAX));
    }

    #[test]
    fn vector_paths_agree() {
        let logits: Vec<f32> = (0..9000)
            .map(|i| ((i * 7919) % 1013) as f32 * -0.01)
            .collect();
        for (m, bound) in [(40, u64::MAX), (128, rank_key(-3.0, 0)), (9000, u64::MAX)] {
            crate::simd::assert_paths_agree(|| {
                let mut out = Vec::new();
                top_keys_below_portable(&logits, m, bound, &mut out);
                out
            });
        }
    }

    #[test]
    fn zero_and_empty() {
        let mut out = vec![7];
        top_keys_below(&[1.0, 2.0], 0, u64::MAX, &mut out);
        assert!(out.is_empty());
        top_keys_below(&[], 3, u64::MAX, &mut out);
        assert!(out.is_empty());
    }
}
