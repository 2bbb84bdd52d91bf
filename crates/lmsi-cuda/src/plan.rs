//! Work items of the attention kernels, planned on the host.
//!
//! A block of an attention kernel takes one work item per kv head: a set of query tokens
//! (`paged_attention`, `causal_attention_forward`, `causal_attention_backward_dq`) or of key tokens
//! (`causal_attention_backward_dkdv`). How tokens are grouped into items decides how often keys and
//! values are read, never the result.

use std::ops::Range;

use crate::params::{LMSI_ATTN_KEYS, LMSI_ATTN_QUERIES, LmsiAttnItem};

/// Query tokens per work item when `group` query heads share a kv head (each token brings `group`
/// query vectors, and an item holds [`LMSI_ATTN_QUERIES`]).
pub fn rows_per_item(group: u32) -> u32 {
    (LMSI_ATTN_QUERIES / group.max(1)).max(1)
}

/// The work items of `paged_attention`: `item_offsets` (one more than the items) delimits each
/// item's tokens in `item_rows`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PagedPlan {
    pub item_offsets: Vec<u32>,
    pub item_rows: Vec<u32>,
}

impl PagedPlan {
    /// Groups the step's tokens so that tokens reading the same cache blocks share an item: token
    /// `t` has block table `block_tables[row_tables[t]..]`. Tokens are ordered by the physical
    /// block holding their sequence's first position (siblings that share a prompt prefix share
    /// it), then by table (the tokens of one sequence), then by index; runs with the same first
    /// block are cut into items of [`rows_per_item`] tokens. Every token is in exactly one item.
    ///
    /// ```
    /// use lmsi_cuda::plan::PagedPlan;
    ///
    /// // Tokens 0 and 2 belong to two paths of one question (same first block 7); token 1 to
    /// // another sequence.
    /// let row_tables = [0, 2, 4];
    /// let block_tables = [7, 8, 3, 4, 7, 9];
    /// let plan = PagedPlan::new(&row_tables, &block_tables, 3);
    /// assert_eq!(plan.item_offsets, [0, 1, 3]);
    /// assert_eq!(plan.item_rows, [1, 0, 2]);
    /// ```
    pub fn new(row_tables: &[u32], block_tables: &[u32], group: u32) -> Self {
        let per_item = rows_per_item(group) as usize;
        let first_block = |t: usize| {
            block_tables
                .get(row_tables[t] as usize)
                .copied()
                .unwrap_or(u32::MAX)
        };
        let mut order: Vec<usize> = (0..row_tables.len()).collect();
        order.sort_by_key(|&t| (first_block(t), row_tables[t], t));
        let mut plan = PagedPlan {
            item_offsets: vec![0],
            item_rows: Vec::with_capacity(order.len()),
        };
        let mut in_item = 0;
        for (i, &t) in order.iter().enumerate() {
            let same_prefix = i > 0 && first_block(order[i - 1]) == first_block(t);
            if in_item == per_item || (in_item > 0 && !same_prefix) {
                plan.item_offsets.push(plan.item_rows.len() as u32);
                in_item = 0;
            }
            plan.item_rows.push(t as u32);
            in_item += 1;
        }
        if in_item > 0 {
            plan.item_offsets.push(plan.item_rows.len() as u32);
        }
        plan
    }

    /// Number of work items.
    pub fn num_items(&self) -> u32 {
        (self.item_offsets.len() - 1) as u32
    }
}

/// Query items of a packed training batch (`causal_attention_forward` and `_backward_dq`): each
/// sequence `seqs[i]` (a range of token indices) cut into runs of [`rows_per_item`] tokens.
///
/// ```
/// use lmsi_cuda::plan::query_items;
///
/// let items = query_items(&[0..5, 5..7], 4); // 4 heads per kv head: 4 tokens per item
/// let runs: Vec<(u32, u32)> = items.iter().map(|i| (i.first, i.count)).collect();
/// assert_eq!(runs, [(0, 4), (4, 1), (5, 2)]);
/// ```
pub fn query_items(seqs: &[Range<u32>], group: u32) -> Vec<LmsiAttnItem> {
    items(seqs, rows_per_item(group))
}

/// Key items of a packed training batch (`causal_attention_backward_dkdv`): each sequence cut into
/// runs of [`LMSI_ATTN_KEYS`] tokens.
pub fn key_items(seqs: &[Range<u32>]) -> Vec<LmsiAttnItem> {
    items(seqs, LMSI_ATTN_KEYS)
}

fn items(seqs: &[Range<u32>], per_item: u32) -> Vec<LmsiAttnItem> {
    seqs.iter()
        .flat_map(|seq| {
            seq.clone()
                .step_by(per_item as usize)
                .map(move |first| LmsiAttnItem {
                    first,
                    count: per_item.min(seq.end - first),
                    seq_start: seq.start,
                    seq_end: seq.end,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paged_plan_covers_every_token_once_and_respects_the_item_size() {
        // 40 decode rows: 4 questions x 10 paths, each question's paths sharing their first block.
        let row_tables: Vec<u32> = (0..40).map(|t| t * 3).collect();
        let block_tables: Vec<u32> = (0..40u32)
            .flat_map(|t| [100 + t % 4, 200 + t, 300 + t])
            .collect();
        let plan = PagedPlan::new(&row_tables, &block_tables, 3); // 5 rows per item
        let mut seen = plan.item_rows.clone();
        seen.sort();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        for w in plan.item_offsets.windows(2) {
            let rows = &plan.item_rows[w[0] as usize..w[1] as usize];
            assert!(!rows.is_empty() && rows.len() <= 5);
            let first = block_tables[row_tables[rows[0] as usize] as usize];
            assert!(
                rows.iter()
                    .all(|&t| block_tables[row_tables[t as usize] as usize] == first),
                "an item mixes prefixes"
            );
        }
        assert_eq!(plan.num_items(), 8);
    }

    #[test]
    fn key_items_cut_sequences_at_the_tile_size() {
        let items = key_items(&[0..70, 70..71]);
        let runs: Vec<(u32, u32, u32, u32)> = items
            .iter()
            .map(|i| (i.first, i.count, i.seq_start, i.seq_end))
            .collect();
        assert_eq!(
            runs,
            [
                (0, 32, 0, 70),
                (32, 32, 0, 70),
                (64, 6, 0, 70),
                (70, 1, 70, 71)
            ]
        );
    }
}
