//! Weights, truncation (top-k, top-p) and the draw for one row: steps 3 to 6 of the
//! crate docs.

use crate::SamplingParams;
use crate::math::{BLOCK, Cut, Weigher, key_index};
use crate::select::top_keys_below;

/// The first nucleus stage selects this many tokens (enough for a peaked distribution);
/// each later stage `STAGE_GROWTH` times more, so a flat one needs few passes.
const FIRST_STAGE: usize = 128;
const STAGE_GROWTH: usize = 8;

/// Reusable buffers for one row at a time (one per worker thread in a batch).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The kept set, as rank keys.
    kept: Vec<u64>,
    /// One stage of the nucleus search.
    stage: Vec<u64>,
    /// Kept weight per block of the row.
    blocks: Vec<u64>,
    /// Weights of a list of keys.
    weights: Vec<u64>,
}

/// A drawn token, its weight and the total weight of the kept set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Draw {
    pub(crate) token: u32,
    weight: u64,
    total: u64,
}

impl Draw {
    /// `ln(weight / total)`: the token's log-probability under the kept distribution.
    pub(crate) fn logprob(&self) -> f32 {
        (self.weight as f64 / self.total as f64).ln() as f32
    }
}

/// The top-p stopping rule: a prefix (in rank order) is enough once its weight reaches
/// `ceil(top_p · 2^32) / 2^32` of the total, compared exactly in integers.
struct Nucleus {
    need: u128,
}

impl Nucleus {
    fn new(top_p: f32, total: u64) -> Self {
        // Exact: top_p has 24 significant bits, 2^32 is a power of two.
        let p = (f64::from(top_p) * 4_294_967_296.0).ceil() as u128;
        Self {
            need: p * u128::from(total),
        }
    }

    /// Adds `weights` (of tokens in rank order) to `cum`, stopping at the first that
    /// makes the prefix enough; returns how many were taken if that happened.
    fn advance(&self, weights: &[u64], cum: &mut u64) -> Option<usize> {
        weights
            .iter()
            .position(|&weight| {
                *cum += weight;
                u128::from(*cum) << 32 >= self.need
            })
            .map(|i| i + 1)
    }
}

/// Draws a token from a row whose largest logit is `max`, with 64 random `bits`
/// (`params` valid and not greedy, the row checked by [`row_max`](crate::math::row_max)).
pub(crate) fn draw(
    logits: &[f32],
    max: f32,
    params: &SamplingParams,
    bits: u64,
    scratch: &mut Scratch,
) -> Draw {
    let w = Weigher::new(max, params.temperature);
    let vocab = logits.len();
    let nucleus = params.top_p < 1.0;
    let Scratch {
        kept,
        stage,
        blocks,
        weights,
    } = scratch;
    if params.top_k > 0 && params.top_k < vocab {
        top_keys_below(logits, params.top_k, u64::MAX, kept);
        if nucleus {
            w.weigh_keys(logits, kept, weights);
            let total = weights.iter().sum();
            let n = Nucleus::new(params.top_p, total)
                .advance(weights, &mut 0)
                .unwrap_or(kept.len());
            kept.truncate(n);
        }
        return draw_from_keys(logits, kept, &w, weights, bits);
    }
    w.block_totals(logits, Cut::ALL, blocks);
    if !nucleus {
        return draw_from_blocks(logits, Cut::ALL, blocks, &w, bits);
    }
    let total = blocks.iter().sum();
    // Grow the selection in stages (each below the last) until the prefix holds enough
    // mass, which happens at the latest with the whole row (`need <= 2^32 · total`).
    let rule = Nucleus::new(params.top_p, total);
    let (mut cum, mut bound, mut m) = (0, u64::MAX, FIRST_STAGE);
    kept.clear();
    loop {
        top_keys_below(logits, m, bound, stage);
        w.weigh_keys(logits, stage, weights);
        let taken = rule.advance(weights, &mut cum);
        kept.extend_from_slice(&stage[..taken.unwrap_or(stage.len())]);
        let exhausted = stage.len() < m;
        match stage.last() {
            Some(&last) if taken.is_none() && !exhausted => bound = last,
            _ => break,
        }
        m = m.saturating_mul(STAGE_GROWTH);
    }
    // Sorting a small kept set by index beats a pass over the row; a large one does not.
    match kept.last() {
        Some(&last) if kept.len().saturating_mul(8) > vocab => {
            let cut = Cut::at(logits, last);
            w.block_totals(logits, cut, blocks);
            draw_from_blocks(logits, cut, blocks, &w, bits)
        }
        _ => draw_from_keys(logits, kept, &w, weights, bits),
    }
}

/// Draws from the kept set given as rank keys (reordered here by token index), with
/// `weights` as scratch.
fn draw_from_keys(
    logits: &[f32],
    keys: &mut [u64],
    w: &Weigher,
    weights: &mut Vec<u64>,
    bits: u64,
) -> Draw {
    keys.sort_unstable_by_key(|&key| key_index(key));
    w.weigh_keys(logits, keys, weights);
    let total = weights.iter().sum();
    let weighted = keys
        .iter()
        .map(|&key| key_index(key))
        .zip(weights.iter().copied());
    walk(weighted, 0, total, bits)
}

/// Draws from the tokens `cut` keeps, given their weight per block of the row
/// ([`Weigher::block_totals`]): skips whole blocks, then walks one.
fn draw_from_blocks(logits: &[f32], cut: Cut, blocks: &[u64], w: &Weigher, bits: u64) -> Draw {
    let total = blocks.iter().sum();
    let target = target(bits, total);
    let mut before = 0;
    let block = blocks
        .iter()
        .position(|&b| {
            before += b;
            before > target
        })
        .expect("target < total, the sum of the blocks");
    let start = block * BLOCK;
    let weighted = logits[start..(start + BLOCK).min(logits.len())]
        .iter()
        .zip(start..)
        .filter(|&(&logit, index)| cut.keeps(logit, index))
        .map(|(&logit, index)| (index, w.weight(logit)));
    walk(weighted, before - blocks[block], total, bits)
}

/// Step 6: `floor(bits · total / 2^64)`, always below `total`.
fn target(bits: u64, total: u64) -> u64 {
    ((u128::from(bits) * u128::from(total)) >> 64) as u64
}

/// Step 6: the first token, in ascending index order, whose running weight (starting
/// from `cum`) exceeds the target.
fn walk(
    mut weighted: impl Iterator<Item = (usize, u64)>,
    mut cum: u64,
    total: u64,
    bits: u64,
) -> Draw {
    let target = target(bits, total);
    let (index, weight) = weighted
        .find(|&(_, weight)| {
            cum += weight;
            cum > target
        })
        .expect("target < total, the sum of the walked weights");
    Draw {
        token: index as u32,
        weight,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature: 0.8,
            top_k,
            top_p,
            seed: 0,
        }
    }

    fn total(w: &Weigher, logits: &[f32]) -> u64 {
        logits.iter().map(|&l| w.weight(l)).sum()
    }

    fn row() -> Vec<f32> {
        (0..3000)
            .map(|i| ((i * 7919 % 997) as f32) / 90.0)
            .collect()
    }

    #[test]
    fn sorted_keys_and_blocks_draw_the_same() {
        let logits = row();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w = Weigher::new(max, 0.8);
        let (mut keys, mut blocks) = (Vec::new(), Vec::new());
        for m in [1, 5, 300, 2999, 3000] {
            top_keys_below(&logits, m, u64::MAX, &mut keys);
            let cut = Cut::at(&logits, *keys.last().unwrap());
            w.block_totals(&logits, cut, &mut blocks);
            for s in 0..200u64 {
                let bits = s.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                assert_eq!(
                    draw_from_keys(&logits, &mut keys.clone(), &w, &mut Vec::new(), bits),
                    draw_from_blocks(&logits, cut, &blocks, &w, bits),
                    "m {m} bits {bits:x}"
                );
            }
        }
    }

    #[test]
    fn extreme_bits_pick_the_first_and_last_weighted_token() {
        let logits = [f32::NEG_INFINITY, 1.0, 2.0, 0.5, f32::NEG_INFINITY];
        let w = Weigher::new(2.0, 1.0);
        let mut blocks = Vec::new();
        w.block_totals(&logits, Cut::ALL, &mut blocks);
        assert_eq!(draw_from_blocks(&logits, Cut::ALL, &blocks, &w, 0).token, 1);
        assert_eq!(
            draw_from_blocks(&logits, Cut::ALL, &blocks, &w, u64::MAX).token,
            3
        );
    }

    #[test]
    fn nucleus_stages_agree_with_one_full_sort() {
        // Flat logits need many stages; compare against the whole row sorted at once.
        let logits: Vec<f32> = (0..20_000)
            .map(|i| ((i * 31 % 211) as f32) / 400.0)
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w = Weigher::new(max, 0.8);
        let mut sorted = Vec::new();
        top_keys_below(&logits, logits.len(), u64::MAX, &mut sorted);
        let mut scratch = Scratch::default();
        for (top_p, s) in [
            (0.001, 1u64),
            (0.05, 2),
            (0.5, 3),
            (0.97, 4),
            (0.999_999, 5),
        ] {
            let bits = s.wrapping_mul(0xd1b5_4a32_d192_ed03);
            let mut prefix = sorted.clone();
            let weights: Vec<u64> = prefix
                .iter()
                .map(|&k| w.weight(logits[key_index(k)]))
                .collect();
            let n = Nucleus::new(top_p, total(&w, &logits))
                .advance(&weights, &mut 0)
                .unwrap();
            prefix.truncate(n);
            let expected = draw_from_keys(&logits, &mut prefix, &w, &mut Vec::new(), bits);
            let staged = draw(&logits, max, &params(0, top_p), bits, &mut scratch);
            assert_eq!(staged, expected, "top_p {top_p}");
        }
    }

    #[test]
    fn logprob_is_log_of_the_weight_share() {
        let d = Draw {
            token: 0,
            weight: 1 << 38,
            total: 1 << 40,
        };
        assert_eq!(d.logprob(), 0.25f32.ln());
        assert_eq!(
            Draw {
                token: 0,
                weight: 5,
                total: 5
            }
            .logprob(),
            0.0
        );
    }
}
