//! A step's [`BatchLayout`] on the GPU: every index array the kernels read, packed into one device
//! buffer and uploaded at once, with the attention kernels' work items.
//!
//! The work items depend on how many query heads share a kv head, which the layout does not say.
//! The backend remembers it from its last attention call and plans the items for it in the same
//! upload; a layout used with another head grouping plans (and uploads) its items on first use.

use std::ops::Range;
use std::sync::OnceLock;

use lmsi_cuda::cuda::Device;
use lmsi_cuda::cuda::cudarc::driver::{CudaSlice, CudaView};
use lmsi_cuda::params::LmsiAttnItem;
use lmsi_cuda::plan::{PagedPlan, key_items, query_items};

use super::cuda;
use crate::Error;
use crate::backend::BatchLayout;

/// `u32` values of one [`LmsiAttnItem`].
const ITEM_WORDS: usize = std::mem::size_of::<LmsiAttnItem>() / 4;

/// A [`BatchLayout`] uploaded for the CUDA backend.
pub struct CudaLayout {
    /// The layout as given: the host checks indices before kernels follow them.
    pub(super) host: BatchLayout,
    /// Each token's block table start (`seqs[token's sequence].table_start`).
    row_tables_host: Vec<u32>,
    data: CudaSlice<u32>,
    token_ids: Range<usize>,
    positions: Range<usize>,
    slots: Range<usize>,
    row_tables: Range<usize>,
    block_tables: Range<usize>,
    logit_rows: Range<usize>,
    targets: Range<usize>,
    /// Work items planned with the upload, for the grouping the backend expected.
    planned: Option<Planned>,
    /// Work items of another grouping, planned on first use.
    late: OnceLock<(CudaSlice<u32>, Planned)>,
}

/// Where one grouping's work items lie in a buffer of `u32`s.
#[derive(Clone, Debug)]
struct Planned {
    group: u32,
    paged_offsets: Range<usize>,
    paged_rows: Range<usize>,
    query_items: Range<usize>,
    key_items: Range<usize>,
}

/// The attention kernels' work items for one grouping, on the device.
pub(super) struct Items<'a> {
    data: Data<'a>,
    planned: Planned,
}

enum Data<'a> {
    Shared(&'a CudaSlice<u32>),
    /// Planned for a grouping other than the layout's cached ones (never in practice: a model has
    /// one), kept only for the call.
    Own(CudaSlice<u32>),
}

/// Host arrays packed one after another into one buffer.
#[derive(Default)]
struct Packer(Vec<u32>);

impl Packer {
    fn push(&mut self, values: impl IntoIterator<Item = u32>) -> Range<usize> {
        let start = self.0.len();
        self.0.extend(values);
        start..self.0.len()
    }

    fn plan(&mut self, host: &BatchLayout, row_tables: &[u32], group: u32) -> Planned {
        let paged = PagedPlan::new(row_tables, &host.block_tables, group);
        let seqs: Vec<Range<u32>> = host
            .seqs
            .iter()
            .map(|s| s.token_start..s.token_start + s.num_tokens)
            .collect();
        let words = |items: Vec<LmsiAttnItem>| {
            items
                .into_iter()
                .flat_map(|i| [i.first, i.count, i.seq_start, i.seq_end])
        };
        Planned {
            group,
            paged_offsets: self.push(paged.item_offsets),
            paged_rows: self.push(paged.item_rows),
            query_items: self.push(words(query_items(&seqs, group))),
            key_items: self.push(words(key_items(&seqs))),
        }
    }
}

impl CudaLayout {
    /// Uploads `host`, with the attention work items for `group` query heads per kv head when
    /// given.
    pub(super) fn new(
        device: &Device,
        host: &BatchLayout,
        group: Option<u32>,
    ) -> Result<Self, Error> {
        let token_seq = host.token_seq();
        let row_tables_host: Vec<u32> = token_seq
            .iter()
            .map(|&s| host.seqs[s as usize].table_start)
            .collect();
        let mut pack = Packer::default();
        let token_ids = pack.push(host.token_ids.iter().copied());
        let positions = pack.push(host.positions.iter().copied());
        let slots = pack.push(host.slots.iter().copied());
        let row_tables = pack.push(row_tables_host.iter().copied());
        let block_tables = pack.push(host.block_tables.iter().copied());
        let logit_rows = pack.push(host.logit_rows.iter().copied());
        let targets = pack.push(host.targets.iter().copied());
        let planned = group.map(|g| pack.plan(host, &row_tables_host, g));
        let data = device.stream().clone_htod(&pack.0).map_err(cuda)?;
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
            planned,
            late: OnceLock::new(),
        })
    }

    fn view(&self, range: &Range<usize>) -> CudaView<'_, u32> {
        self.data.slice(range.clone())
    }

    pub(super) fn token_ids(&self) -> CudaView<'_, u32> {
        self.view(&self.token_ids)
    }

    pub(super) fn positions(&self) -> CudaView<'_, u32> {
        self.view(&self.positions)
    }

    pub(super) fn slots(&self) -> CudaView<'_, u32> {
        self.view(&self.slots)
    }

    pub(super) fn row_tables(&self) -> CudaView<'_, u32> {
        self.view(&self.row_tables)
    }

    pub(super) fn block_tables(&self) -> CudaView<'_, u32> {
        self.view(&self.block_tables)
    }

    /// `logit_rows[rows]`.
    pub(super) fn logit_rows(&self, rows: Range<usize>) -> CudaView<'_, u32> {
        self.view(&self.logit_rows).slice(rows)
    }

    /// `targets[rows]`.
    pub(super) fn targets(&self, rows: Range<usize>) -> CudaView<'_, u32> {
        self.view(&self.targets).slice(rows)
    }

    /// The work items for `group` query heads per kv head.
    pub(super) fn items(&self, device: &Device, group: u32) -> Result<Items<'_>, Error> {
        let shared = |data, planned: &Planned| Items {
            data: Data::Shared(data),
            planned: planned.clone(),
        };
        if let Some(planned) = self.planned.as_ref().filter(|p| p.group == group) {
            return Ok(shared(&self.data, planned));
        }
        if let Some((data, planned)) = self.late.get().filter(|(_, p)| p.group == group) {
            return Ok(shared(data, planned));
        }
        let mut pack = Packer::default();
        let planned = pack.plan(&self.host, &self.row_tables_host, group);
        let mut made = Some((device.stream().clone_htod(&pack.0).map_err(cuda)?, planned));
        let (data, planned) = self
            .late
            .get_or_init(|| made.take().expect("taken only here"));
        if planned.group == group {
            return Ok(shared(data, planned));
        }
        // The cache holds another grouping: these items serve this call only.
        let (data, planned) = made.expect("not taken when the cache was already set");
        Ok(Items {
            data: Data::Own(data),
            planned,
        })
    }
}

impl Items<'_> {
    fn data(&self) -> &CudaSlice<u32> {
        match &self.data {
            Data::Shared(data) => data,
            Data::Own(data) => data,
        }
    }

    /// `paged_attention`'s `item_offsets` (one more than its items).
    pub(super) fn paged_offsets(&self) -> CudaView<'_, u32> {
        self.data().slice(self.planned.paged_offsets.clone())
    }

    /// `paged_attention`'s `item_rows`.
    pub(super) fn paged_rows(&self) -> CudaView<'_, u32> {
        self.data().slice(self.planned.paged_rows.clone())
    }

    pub(super) fn num_paged(&self) -> usize {
        self.planned.paged_offsets.len().saturating_sub(1)
    }

    /// The query items of the training kernels.
    pub(super) fn query(&self) -> CudaView<'_, LmsiAttnItem> {
        self.attn_items(&self.planned.query_items)
    }

    pub(super) fn num_query(&self) -> usize {
        self.planned.query_items.len() / ITEM_WORDS
    }

    /// The key items of `causal_attention_backward_dkdv`.
    pub(super) fn keys(&self) -> CudaView<'_, LmsiAttnItem> {
        self.attn_items(&self.planned.key_items)
    }

    pub(super) fn num_keys(&self) -> usize {
        self.planned.key_items.len() / ITEM_WORDS
    }

    fn attn_items(&self, range: &Range<usize>) -> CudaView<'_, LmsiAttnItem> {
        let words = self.data().slice(range.clone());
        // SAFETY: `LmsiAttnItem` is `#[repr(C)]` of four `u32`s (bindgen asserts its size and
        // alignment), and the range holds whole items written field by field in that order.
        unsafe { words.transmute(range.len() / ITEM_WORDS) }.expect("the range holds whole items")
    }
}
