//! A step's [`BatchLayout`] on the device: every index array the kernels read, packed into one
//! device buffer and uploaded at once, and the attention kernels' work items.
//!
//! The work items depend on how many query heads share a kv head, which the layout does not say:
//! they are planned and uploaded by the first attention call that uses the layout, for that call's
//! head grouping, and kept with the layout for the calls after it (every layer of a step). The
//! backend itself remembers nothing between calls.

use std::ops::{Deref, Range};
use std::sync::OnceLock;

use lmsi_cuda::params::LmsiAttnItem;
use lmsi_cuda::plan::{PagedPlan, key_items, query_items};
use lmsi_cuda::{Buffer, Device, View};

use super::cuda;
use crate::Error;
use crate::backend::BatchLayout;

/// A [`BatchLayout`] uploaded for the CUDA backend.
pub struct CudaLayout {
    /// The layout as given: the host checks indices before kernels follow them.
    pub(super) host: BatchLayout,
    /// Each token's block table start (`seqs[token's sequence].table_start`).
    row_tables_host: Vec<u32>,
    data: Buffer<u32>,
    token_ids: Range<usize>,
    positions: Range<usize>,
    slots: Range<usize>,
    row_tables: Range<usize>,
    block_tables: Range<usize>,
    logit_rows: Range<usize>,
    targets: Range<usize>,
    paged: OnceLock<PagedItems>,
    train: OnceLock<TrainItems>,
}

/// `paged_attention`'s work items for one head grouping: `item_offsets` then `item_rows`.
pub(super) struct PagedItems {
    group: u32,
    data: Buffer<u32>,
    offsets: Range<usize>,
}

/// The training attention kernels' work items for one head grouping.
pub(super) struct TrainItems {
    group: u32,
    /// The query items of the forward and of `causal_attention_backward_dq`.
    pub(super) query: Buffer<LmsiAttnItem>,
    /// The key items of `causal_attention_backward_dkdv`.
    pub(super) keys: Buffer<LmsiAttnItem>,
}

/// Work items kept with the layout, or planned for one call whose grouping differs from theirs
/// (never in practice: a model has one grouping).
pub(super) enum Items<'a, T> {
    Kept(&'a T),
    Once(T),
}

impl<T> Deref for Items<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Items::Kept(items) => items,
            Items::Once(items) => items,
        }
    }
}

/// The items in `cell` if planned for `group`, else planned now (and kept if the cell is empty).
fn kept_or_planned<T>(
    cell: &OnceLock<T>,
    group: u32,
    group_of: impl Fn(&T) -> u32,
    plan: impl FnOnce() -> Result<T, Error>,
) -> Result<Items<'_, T>, Error> {
    if let Some(items) = cell.get() {
        if group_of(items) == group {
            return Ok(Items::Kept(items));
        }
        return Ok(Items::Once(plan()?));
    }
    let planned = plan()?;
    match cell.set(planned) {
        Ok(()) => Ok(Items::Kept(cell.get().expect("just set"))),
        Err(planned) => Ok(Items::Once(planned)),
    }
}

impl CudaLayout {
    /// Uploads `host`'s index arrays.
    pub(super) fn new(device: &Device, host: &BatchLayout) -> Result<Self, Error> {
        let token_seq = host.token_seq();
        // A token outside every sequence (a layout for the embedding alone) reads table 0.
        let row_tables_host: Vec<u32> = token_seq
            .iter()
            .map(|&s| host.seqs.get(s as usize).map_or(0, |seq| seq.table_start))
            .collect();
        let mut packed = Vec::new();
        let mut push = |values: &[u32]| {
            let start = packed.len();
            packed.extend_from_slice(values);
            start..packed.len()
        };
        let token_ids = push(&host.token_ids);
        let positions = push(&host.positions);
        let slots = push(&host.slots);
        let row_tables = push(&row_tables_host);
        let block_tables = push(&host.block_tables);
        let logit_rows = push(&host.logit_rows);
        let targets = push(&host.targets);
        let data = device.upload(&packed).map_err(cuda)?;
        Ok(CudaLayout {
            host: host.clone(),
            row_tables_host,
            data,
            token_ids,
            positions,
            slots,
            row_tables,
            block_tables,
            logit_rows,
            targets,
            paged: OnceLock::new(),
            train: OnceLock::new(),
        })
    }

    fn view(&self, range: &Range<usize>) -> View<'_, u32> {
        self.data
            .slice(range.clone())
            .expect("the packed ranges lie in the buffer")
    }

    pub(super) fn token_ids(&self) -> View<'_, u32> {
        self.view(&self.token_ids)
    }

    pub(super) fn positions(&self) -> View<'_, u32> {
        self.view(&self.positions)
    }

    pub(super) fn slots(&self) -> View<'_, u32> {
        self.view(&self.slots)
    }

    pub(super) fn row_tables(&self) -> View<'_, u32> {
        self.view(&self.row_tables)
    }

    pub(super) fn block_tables(&self) -> View<'_, u32> {
        self.view(&self.block_tables)
    }

    /// `logit_rows[rows]`; the caller checked `rows` against the step's logit rows.
    pub(super) fn logit_rows(&self, rows: Range<usize>) -> Result<View<'_, u32>, Error> {
        self.view(&self.logit_rows).slice(rows).map_err(cuda)
    }

    /// `targets[rows]`; the caller checked `rows` against the step's targets.
    pub(super) fn targets(&self, rows: Range<usize>) -> Result<View<'_, u32>, Error> {
        self.view(&self.targets).slice(rows).map_err(cuda)
    }

    /// `paged_attention`'s work items for `group` query heads per kv head.
    pub(super) fn paged_items(
        &self,
        device: &Device,
        group: u32,
    ) -> Result<Items<'_, PagedItems>, Error> {
        kept_or_planned(
            &self.paged,
            group,
            |p| p.group,
            || {
                let plan = PagedPlan::new(&self.row_tables_host, &self.host.block_tables, group);
                let offsets = 0..plan.item_offsets.len();
                let mut words = plan.item_offsets;
                words.extend(plan.item_rows);
                Ok(PagedItems {
                    group,
                    data: device.upload(&words).map_err(cuda)?,
                    offsets,
                })
            },
        )
    }

    /// The training attention kernels' work items for `group` query heads per kv head.
    pub(super) fn train_items(
        &self,
        device: &Device,
        group: u32,
    ) -> Result<Items<'_, TrainItems>, Error> {
        kept_or_planned(
            &self.train,
            group,
            |t| t.group,
            || {
                let seqs: Vec<Range<u32>> = self
                    .host
                    .seqs
                    .iter()
                    .map(|s| s.token_start..s.token_start + s.num_tokens)
                    .collect();
                Ok(TrainItems {
                    group,
                    query: device.upload(&query_items(&seqs, group)).map_err(cuda)?,
                    keys: device.upload(&key_items(&seqs)).map_err(cuda)?,
                })
            },
        )
    }
}

impl PagedItems {
    /// `item_offsets` (one more than the items).
    pub(super) fn offsets(&self) -> View<'_, u32> {
        self.data
            .slice(self.offsets.clone())
            .expect("the offsets lie in the buffer")
    }

    /// `item_rows`.
    pub(super) fn rows(&self) -> View<'_, u32> {
        self.data
            .slice(self.offsets.end..self.data.len())
            .expect("the rows lie in the buffer")
    }

    pub(super) fn num_items(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
}
