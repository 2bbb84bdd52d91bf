//! How each kernel is launched: its grid, block and dynamic shared memory, and the checks that its
//! parameters and buffers fit together.
//!
//! Both ways of running a kernel go through these functions: the CPU shim ([`crate::sim`]) and the
//! GPU (`crate::cuda`, feature `cuda`). Each takes the parameter struct and the length (in
//! elements) of every buffer argument, in the kernel's argument order, and returns the launch, or
//! `None` when there is no work (the kernel must not be launched: a CUDA grid cannot be empty), or
//! an [`Error::Invalid`] naming the first problem. A launch that passes cannot read or write past
//! the buffers it was checked with; indices stored *in* buffers (token ids, slots, block tables,
//! work items) are bounded by the kernels themselves.

use crate::Error;
use crate::params::*;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

/// Threads per block of the row-wise and element-wise kernels.
pub const THREADS: u32 = 256;
/// Threads per block of `sample_rows` (one block per row).
pub const SAMPLE_THREADS: u32 = 512;
/// Threads per block of `cross_entropy` (one block per row).
pub const CROSS_ENTROPY_THREADS: u32 = 512;
/// Threads per block of the attention kernels.
pub const ATTN_THREADS: u32 = LMSI_ATTN_WARPS * 32;
/// Elements per block of `sum_squares_partial`.
pub const SUM_SQUARES_CHUNK: u64 = 1 << 16;
/// Rows per block of `rmsnorm_backward` chosen by [`rmsnorm_params`], as the CPU reference's chunks.
pub const RMSNORM_ROWS_PER_BLOCK: u32 = 64;
/// Most blocks of a grid-stride kernel: enough to fill any current GPU several times over.
const MAX_STRIDE_BLOCKS: u64 = 8192;
/// Dynamic shared memory a block gets without opting in.
pub const DEFAULT_SHARED_BYTES: u32 = 48 * 1024;
/// The most dynamic shared memory a launch may ask for (sm_90's opt-in limit; sm_80's is 163 KiB).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// [`LmsiRmsnormParams`] for `rows` rows of `dim` with the default rows per backward block.
pub fn rmsnorm_params(rows: u32, dim: u32, eps: f32) -> LmsiRmsnormParams {
    LmsiRmsnormParams {
        rows,
        dim,
        eps,
        rows_per_block: RMSNORM_ROWS_PER_BLOCK,
    }
}

/// Rows of the partial weight gradient `rmsnorm_backward` writes (its `partial_dw` is this many
/// rows of `dim`).
pub fn rmsnorm_partial_rows(p: &LmsiRmsnormParams) -> u32 {
    p.rows.div_ceil(p.rows_per_block.max(1))
}

/// Partial sums `sum_squares_partial` writes for a tensor of `len` values.
pub fn sum_squares_blocks(len: u64) -> u32 {
    len.div_ceil(SUM_SQUARES_CHUNK) as u32
}

/// Length checks for one kernel.
struct Check {
    kernel: &'static str,
}

impl Check {
    fn that(&self, ok: bool, reason: impl FnOnce() -> String) -> Result<(), Error> {
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(self.kernel, reason()))
        }
    }

    /// Buffer `what` has `have` elements and needs `need`.
    fn len(&self, what: &str, have: usize, need: u64) -> Result<(), Error> {
        self.that(have as u64 >= need, || {
            format!("{what} has {have} elements, needs {need}")
        })
    }

    fn shape(&self, s: &LmsiAttnShape) -> Result<(), Error> {
        self.that(
            s.num_kv_heads > 0 && s.num_heads.is_multiple_of(s.num_kv_heads),
            || {
                format!(
                    "{} query heads cannot be split over {} kv heads",
                    s.num_heads, s.num_kv_heads
                )
            },
        )?;
        let group = s.num_heads / s.num_kv_heads;
        self.that((1..=LMSI_ATTN_QUERIES).contains(&group), || {
            format!("{group} query heads per kv head (supported: 1 to {LMSI_ATTN_QUERIES})")
        })?;
        self.that((1..=LMSI_MAX_HEAD_DIM).contains(&s.head_dim), || {
            format!(
                "head_dim {} (supported: 1 to {LMSI_MAX_HEAD_DIM})",
                s.head_dim
            )
        })
    }

    fn shared(&self, bytes: u64) -> Result<u32, Error> {
        self.that(bytes <= u64::from(MAX_SHARED_BYTES), || {
            format!("needs {bytes} bytes of shared memory (at most {MAX_SHARED_BYTES})")
        })?;
        Ok(bytes as u32)
    }
}

fn qkv_dim(s: &LmsiAttnShape) -> u64 {
    u64::from(s.num_heads + 2 * s.num_kv_heads) * u64::from(s.head_dim)
}

fn rows(n: u32, threads: u32) -> Option<Launch> {
    (n > 0).then_some(Launch {
        grid: (n, 1, 1),
        block: (threads, 1, 1),
        shared_bytes: 0,
    })
}

fn grid_stride(n: u64) -> Option<Launch> {
    (n > 0).then(|| Launch {
        grid: (
            n.div_ceil(u64::from(THREADS)).min(MAX_STRIDE_BLOCKS) as u32,
            1,
            1,
        ),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    })
}

/// `gather_rows(p, out, table, index)`.
pub fn gather_rows(
    p: &LmsiRowsParams,
    out: usize,
    table: usize,
    index: usize,
) -> Result<Option<Launch>, Error> {
    gather(
        Check {
            kernel: "gather_rows",
        },
        p,
        out,
        table,
        index,
    )
}

/// `gather_rows_bf16(p, out, table, index)`: as [`gather_rows`].
pub fn gather_rows_bf16(
    p: &LmsiRowsParams,
    out: usize,
    table: usize,
    index: usize,
) -> Result<Option<Launch>, Error> {
    gather(
        Check {
            kernel: "gather_rows_bf16",
        },
        p,
        out,
        table,
        index,
    )
}

fn gather(
    c: Check,
    p: &LmsiRowsParams,
    out: usize,
    table: usize,
    index: usize,
) -> Result<Option<Launch>, Error> {
    c.len("out", out, u64::from(p.rows) * u64::from(p.dim))?;
    c.len("table", table, u64::from(p.table_rows) * u64::from(p.dim))?;
    c.len("index", index, u64::from(p.rows))?;
    Ok(if p.dim == 0 {
        None
    } else {
        rows(p.rows, THREADS)
    })
}

/// `scatter_add_rows(p, table, src, index)`.
pub fn scatter_add_rows(
    p: &LmsiRowsParams,
    table: usize,
    src: usize,
    index: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "scatter_add_rows",
    };
    c.len("table", table, u64::from(p.table_rows) * u64::from(p.dim))?;
    c.len("src", src, u64::from(p.rows) * u64::from(p.dim))?;
    c.len("index", index, u64::from(p.rows))?;
    if p.rows == 0 || p.dim == 0 || p.table_rows == 0 {
        return Ok(None);
    }
    // Narrow tables give few column blocks: split the table rows over grid.y as well.
    Ok(Some(Launch {
        grid: (p.dim.div_ceil(THREADS), p.table_rows.min(32), 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    }))
}

/// `rmsnorm_forward(p, out, x, weight)`.
pub fn rmsnorm_forward(
    p: &LmsiRmsnormParams,
    out: usize,
    x: usize,
    weight: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "rmsnorm_forward",
    };
    norm(c, p, out, x, weight)
}

/// `rmsnorm_forward_bf16(p, out, x, weight)`: as [`rmsnorm_forward`].
pub fn rmsnorm_forward_bf16(
    p: &LmsiRmsnormParams,
    out: usize,
    x: usize,
    weight: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "rmsnorm_forward_bf16",
    };
    norm(c, p, out, x, weight)
}

fn norm(
    c: Check,
    p: &LmsiRmsnormParams,
    out: usize,
    x: usize,
    weight: usize,
) -> Result<Option<Launch>, Error> {
    let n = u64::from(p.rows) * u64::from(p.dim);
    c.len("out", out, n)?;
    c.len("x", x, n)?;
    c.len("weight", weight, u64::from(p.dim))?;
    Ok(if p.dim == 0 {
        None
    } else {
        rows(p.rows, THREADS)
    })
}

/// `rmsnorm_backward(p, d_x, partial_dw, d_out, x, weight)`.
pub fn rmsnorm_backward(
    p: &LmsiRmsnormParams,
    d_x: usize,
    partial_dw: usize,
    d_out: usize,
    x: usize,
    weight: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "rmsnorm_backward",
    };
    c.that(p.rows_per_block > 0, || "rows_per_block is 0".into())?;
    let n = u64::from(p.rows) * u64::from(p.dim);
    let blocks = rmsnorm_partial_rows(p);
    c.len("d_x", d_x, n)?;
    c.len(
        "partial_dw",
        partial_dw,
        u64::from(blocks) * u64::from(p.dim),
    )?;
    c.len("d_out", d_out, n)?;
    c.len("x", x, n)?;
    c.len("weight", weight, u64::from(p.dim))?;
    Ok(if p.dim == 0 {
        None
    } else {
        rows(blocks, THREADS)
    })
}

/// `rmsnorm_backward_reduce(p, d_weight, partial_dw)`.
pub fn rmsnorm_backward_reduce(
    p: &LmsiRmsnormParams,
    d_weight: usize,
    partial_dw: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "rmsnorm_backward_reduce",
    };
    c.that(p.rows_per_block > 0, || "rows_per_block is 0".into())?;
    c.len("d_weight", d_weight, u64::from(p.dim))?;
    c.len(
        "partial_dw",
        partial_dw,
        u64::from(rmsnorm_partial_rows(p)) * u64::from(p.dim),
    )?;
    Ok(rows(p.dim.div_ceil(THREADS), THREADS))
}

/// `rope(p, qkv, positions, inv_freq)`.
pub fn rope(
    p: &LmsiRopeParams,
    qkv: usize,
    positions: usize,
    inv_freq: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check { kernel: "rope" };
    c.that(p.head_dim.is_multiple_of(2), || {
        format!("head_dim {} is odd", p.head_dim)
    })?;
    let row = u64::from(p.num_heads + 2 * p.num_kv_heads) * u64::from(p.head_dim);
    c.len("qkv", qkv, u64::from(p.tokens) * row)?;
    c.len("positions", positions, u64::from(p.tokens))?;
    c.len("inv_freq", inv_freq, u64::from(p.head_dim / 2))?;
    Ok(if p.head_dim == 0 {
        None
    } else {
        rows(p.tokens, 128)
    })
}

/// `swiglu_forward(p, out, gate_up)`.
pub fn swiglu_forward(
    p: &LmsiSwigluParams,
    out: usize,
    gate_up: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "swiglu_forward",
    };
    gate(c, p, out, gate_up)
}

/// `swiglu_forward_bf16(p, out, gate_up)`: as [`swiglu_forward`].
pub fn swiglu_forward_bf16(
    p: &LmsiSwigluParams,
    out: usize,
    gate_up: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "swiglu_forward_bf16",
    };
    gate(c, p, out, gate_up)
}

fn gate(
    c: Check,
    p: &LmsiSwigluParams,
    out: usize,
    gate_up: usize,
) -> Result<Option<Launch>, Error> {
    let n = u64::from(p.rows) * u64::from(p.inter);
    c.len("out", out, n)?;
    c.len("gate_up", gate_up, 2 * n)?;
    Ok(grid_stride(n))
}

/// `swiglu_backward(p, d_gate_up, d_out, gate_up)`.
pub fn swiglu_backward(
    p: &LmsiSwigluParams,
    d_gate_up: usize,
    d_out: usize,
    gate_up: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "swiglu_backward",
    };
    let n = u64::from(p.rows) * u64::from(p.inter);
    c.len("d_gate_up", d_gate_up, 2 * n)?;
    c.len("d_out", d_out, n)?;
    c.len("gate_up", gate_up, 2 * n)?;
    Ok(grid_stride(n))
}

/// `add_assign(p, x, y)`.
pub fn add_assign(p: &LmsiVecParams, x: usize, y: usize) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "add_assign",
    };
    c.len("x", x, p.len)?;
    c.len("y", y, p.len)?;
    Ok(grid_stride(p.len))
}

/// `f32_to_bf16(p, out, x)`.
pub fn f32_to_bf16(p: &LmsiVecParams, out: usize, x: usize) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "f32_to_bf16",
    };
    c.len("out", out, p.len)?;
    c.len("x", x, p.len)?;
    Ok(grid_stride(p.len))
}

/// `scale_assign(p, x)`.
pub fn scale_assign(p: &LmsiVecParams, x: usize) -> Result<Option<Launch>, Error> {
    Check {
        kernel: "scale_assign",
    }
    .len("x", x, p.len)?;
    Ok(grid_stride(p.len))
}

/// `bias_add(p, out, bias)`.
pub fn bias_add(p: &LmsiBiasParams, out: usize, bias: usize) -> Result<Option<Launch>, Error> {
    let c = Check { kernel: "bias_add" };
    let n = u64::from(p.rows) * u64::from(p.dim);
    c.len("out", out, n)?;
    c.len("bias", bias, u64::from(p.dim))?;
    Ok(grid_stride(n))
}

/// `bias_grad(p, d_bias, d_out)`: one thread per column.
pub fn bias_grad(p: &LmsiBiasParams, d_bias: usize, d_out: usize) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "bias_grad",
    };
    c.len("d_bias", d_bias, u64::from(p.dim))?;
    c.len("d_out", d_out, u64::from(p.rows) * u64::from(p.dim))?;
    Ok(if p.rows == 0 {
        None
    } else {
        rows(p.dim.div_ceil(THREADS), THREADS)
    })
}

/// `cross_entropy(p, logits, losses, targets, scales)`.
pub fn cross_entropy(
    p: &LmsiCrossEntropyParams,
    logits: usize,
    losses: usize,
    targets: usize,
    scales: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "cross_entropy",
    };
    c.len("logits", logits, u64::from(p.rows) * u64::from(p.vocab))?;
    c.len("losses", losses, u64::from(p.rows))?;
    c.len("targets", targets, u64::from(p.rows))?;
    c.len("scales", scales, u64::from(p.rows))?;
    Ok(if p.vocab == 0 {
        None
    } else {
        rows(p.rows, CROSS_ENTROPY_THREADS)
    })
}

/// `adamw_update(p, param, m, v, grad)`.
pub fn adamw_update(
    p: &LmsiAdamwParams,
    param: usize,
    m: usize,
    v: usize,
    grad: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "adamw_update",
    };
    for (what, have) in [("param", param), ("m", m), ("v", v), ("grad", grad)] {
        c.len(what, have, p.len)?;
    }
    Ok(grid_stride(p.len))
}

/// `sum_squares_partial(p, partials, x)`.
pub fn sum_squares_partial(
    p: &LmsiSumSquaresParams,
    partials: usize,
    x: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "sum_squares_partial",
    };
    c.that(p.chunk > 0, || "chunk is 0".into())?;
    let blocks = p.len.div_ceil(p.chunk);
    c.that(blocks <= u64::from(u32::MAX), || format!("{blocks} blocks"))?;
    c.len("partials", partials, u64::from(p.first_partial) + blocks)?;
    c.len("x", x, p.len)?;
    Ok(rows(blocks as u32, THREADS))
}

/// `sum_partials(p, sum, partials)`: one block.
pub fn sum_partials(
    p: &LmsiNormParams,
    sum: usize,
    partials: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "sum_partials",
    };
    c.len("sum", sum, 1)?;
    c.len("partials", partials, u64::from(p.count))?;
    Ok(rows(1, THREADS))
}

/// `clip_scale(p, x, sum)`.
pub fn clip_scale(p: &LmsiNormParams, x: usize, sum: usize) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "clip_scale",
    };
    c.len("x", x, p.len)?;
    c.len("sum", sum, 1)?;
    Ok(grid_stride(p.len))
}

/// `sample_rows(p, tokens, logprobs, sampling_logprobs, status, logits, sequences, steps)`. Also
/// checks the sampling parameters as `lmsi_sampler::SamplingParams::validate` does.
#[allow(clippy::too_many_arguments)]
pub fn sample_rows(
    p: &LmsiSampleParams,
    tokens: usize,
    logprobs: usize,
    sampling_logprobs: usize,
    status: usize,
    logits: usize,
    sequences: usize,
    steps: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "sample_rows",
    };
    let t = p.temperature;
    c.that(
        t == 0.0 || (f32::MIN_POSITIVE..=1.0 / f32::MIN_POSITIVE).contains(&t),
        || format!("temperature {t} is neither 0 nor in [2^-126, 2^126]"),
    )?;
    c.that(p.top_p > 0.0 && p.top_p <= 1.0, || {
        format!("top_p {} is not in (0, 1]", p.top_p)
    })?;
    c.that((1..=1 << 24).contains(&p.vocab), || {
        format!("vocabulary of {} tokens (supported: 1 to 2^24)", p.vocab)
    })?;
    let r = u64::from(p.rows);
    for (what, have) in [
        ("tokens", tokens),
        ("logprobs", logprobs),
        ("sampling_logprobs", sampling_logprobs),
        ("status", status),
        ("sequences", sequences),
        ("steps", steps),
    ] {
        c.len(what, have, r)?;
    }
    c.len("logits", logits, r * u64::from(p.vocab))?;
    Ok(rows(p.rows, SAMPLE_THREADS))
}

/// `kv_store(p, k_cache, v_cache, qkv, slots)`.
pub fn kv_store(
    p: &LmsiKvStoreParams,
    k_cache: usize,
    v_cache: usize,
    qkv: usize,
    slots: usize,
) -> Result<Option<Launch>, Error> {
    store(
        Check { kernel: "kv_store" },
        p,
        k_cache,
        v_cache,
        qkv,
        slots,
    )
}

/// `kv_store_bf16(p, k_cache, v_cache, qkv, slots)`: as [`kv_store`].
pub fn kv_store_bf16(
    p: &LmsiKvStoreParams,
    k_cache: usize,
    v_cache: usize,
    qkv: usize,
    slots: usize,
) -> Result<Option<Launch>, Error> {
    store(
        Check {
            kernel: "kv_store_bf16",
        },
        p,
        k_cache,
        v_cache,
        qkv,
        slots,
    )
}

fn store(
    c: Check,
    p: &LmsiKvStoreParams,
    k_cache: usize,
    v_cache: usize,
    qkv: usize,
    slots: usize,
) -> Result<Option<Launch>, Error> {
    c.shape(&p.shape)?;
    c.that(p.shape.block_size > 0, || "block_size is 0".into())?;
    let cache = u64::from(p.cache_blocks)
        * u64::from(p.shape.block_size)
        * u64::from(p.shape.num_kv_heads * p.shape.head_dim);
    c.len("k_cache", k_cache, cache)?;
    c.len("v_cache", v_cache, cache)?;
    c.len("qkv", qkv, u64::from(p.tokens) * qkv_dim(&p.shape))?;
    c.len("slots", slots, u64::from(p.tokens))?;
    Ok(rows(p.tokens, 128))
}

/// `paged_attention(p, out, qkv, k_cache, v_cache, positions, row_tables, block_tables,
/// item_offsets, item_rows)`.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    p: &LmsiPagedAttentionParams,
    out: usize,
    qkv: usize,
    k_cache: usize,
    v_cache: usize,
    positions: usize,
    row_tables: usize,
    block_tables: usize,
    item_offsets: usize,
    item_rows: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "paged_attention",
    };
    paged(
        c,
        p,
        [
            out,
            qkv,
            k_cache,
            v_cache,
            positions,
            row_tables,
            block_tables,
            item_offsets,
            item_rows,
        ],
    )
}

/// `paged_attention_bf16(p, out, qkv, k_cache, v_cache, positions, row_tables, block_tables,
/// item_offsets, item_rows)`: as [`paged_attention`] (the caches' lengths are in elements).
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_bf16(
    p: &LmsiPagedAttentionParams,
    out: usize,
    qkv: usize,
    k_cache: usize,
    v_cache: usize,
    positions: usize,
    row_tables: usize,
    block_tables: usize,
    item_offsets: usize,
    item_rows: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "paged_attention_bf16",
    };
    paged(
        c,
        p,
        [
            out,
            qkv,
            k_cache,
            v_cache,
            positions,
            row_tables,
            block_tables,
            item_offsets,
            item_rows,
        ],
    )
}

/// The checks of both paged attention kernels, with the buffer lengths in argument order.
fn paged(
    c: Check,
    p: &LmsiPagedAttentionParams,
    lens: [usize; 9],
) -> Result<Option<Launch>, Error> {
    let [
        out,
        qkv,
        k_cache,
        v_cache,
        positions,
        row_tables,
        block_tables,
        item_offsets,
        item_rows,
    ] = lens;
    let s = &p.shape;
    c.shape(s)?;
    c.that(s.block_size > 0, || "block_size is 0".into())?;
    let t = u64::from(p.tokens);
    let dim = u64::from(s.head_dim);
    let cache =
        u64::from(p.cache_blocks) * u64::from(s.block_size) * u64::from(s.num_kv_heads) * dim;
    c.len("out", out, t * u64::from(s.num_heads) * dim)?;
    c.len("qkv", qkv, t * qkv_dim(s))?;
    c.len("k_cache", k_cache, cache)?;
    c.len("v_cache", v_cache, cache)?;
    c.len("positions", positions, t)?;
    c.len("row_tables", row_tables, t)?;
    c.len("block_tables", block_tables, u64::from(p.block_tables_len))?;
    c.len("item_offsets", item_offsets, u64::from(p.num_items) + 1)?;
    c.len("item_rows", item_rows, u64::from(p.item_rows_len))?;
    let tile = u64::from(s.block_size.min(LMSI_ATTN_KEYS));
    let shared = c.shared((u64::from(LMSI_ATTN_QUERIES) * dim + 2 * dim * tile) * 4)?;
    Ok(attention(p.num_items, s, shared))
}

fn attention(items: u32, s: &LmsiAttnShape, shared_bytes: u32) -> Option<Launch> {
    (items > 0).then_some(Launch {
        grid: (items, s.num_kv_heads, 1),
        block: (ATTN_THREADS, 1, 1),
        shared_bytes,
    })
}

/// Row stride of the kernels' transposed key tiles.
const KSTRIDE: u64 = LMSI_ATTN_KEYS as u64 + 1;

fn causal_common(
    c: &Check,
    p: &LmsiCausalAttentionParams,
    qkv: usize,
    items: usize,
) -> Result<(), Error> {
    c.shape(&p.shape)?;
    c.len("qkv", qkv, u64::from(p.tokens) * qkv_dim(&p.shape))?;
    c.len("items", items, u64::from(p.num_items))
}

/// `causal_attention_forward(p, out, lse, qkv, items)`, items from [`crate::plan::query_items`].
pub fn causal_attention_forward(
    p: &LmsiCausalAttentionParams,
    out: usize,
    lse: usize,
    qkv: usize,
    items: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "causal_attention_forward",
    };
    causal_forward(c, p, out, lse, qkv, items)
}

/// `causal_attention_forward_bf16(p, out, lse, qkv, items)`: as [`causal_attention_forward`].
pub fn causal_attention_forward_bf16(
    p: &LmsiCausalAttentionParams,
    out: usize,
    lse: usize,
    qkv: usize,
    items: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "causal_attention_forward_bf16",
    };
    causal_forward(c, p, out, lse, qkv, items)
}

fn causal_forward(
    c: Check,
    p: &LmsiCausalAttentionParams,
    out: usize,
    lse: usize,
    qkv: usize,
    items: usize,
) -> Result<Option<Launch>, Error> {
    causal_common(&c, p, qkv, items)?;
    let (t, h, dim) = (
        u64::from(p.tokens),
        u64::from(p.shape.num_heads),
        u64::from(p.shape.head_dim),
    );
    c.len("out", out, t * h * dim)?;
    c.len("lse", lse, t * h)?;
    let shared = c.shared(
        (u64::from(LMSI_ATTN_QUERIES) * dim + dim * KSTRIDE + u64::from(LMSI_ATTN_KEYS) * dim) * 4,
    )?;
    Ok(attention(p.num_items, &p.shape, shared))
}

/// `causal_attention_backward_delta(p, delta, d_out, out)`.
pub fn causal_attention_backward_delta(
    p: &LmsiCausalAttentionParams,
    delta: usize,
    d_out: usize,
    out: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "causal_attention_backward_delta",
    };
    delta_check(c, p, delta, d_out, out)
}

/// `causal_attention_backward_delta_bf16(p, delta, d_out, out)`: as
/// [`causal_attention_backward_delta`].
pub fn causal_attention_backward_delta_bf16(
    p: &LmsiCausalAttentionParams,
    delta: usize,
    d_out: usize,
    out: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "causal_attention_backward_delta_bf16",
    };
    delta_check(c, p, delta, d_out, out)
}

fn delta_check(
    c: Check,
    p: &LmsiCausalAttentionParams,
    delta: usize,
    d_out: usize,
    out: usize,
) -> Result<Option<Launch>, Error> {
    c.shape(&p.shape)?;
    let (t, h, dim) = (
        u64::from(p.tokens),
        u64::from(p.shape.num_heads),
        u64::from(p.shape.head_dim),
    );
    c.len("delta", delta, t * h)?;
    c.len("d_out", d_out, t * h * dim)?;
    c.len("out", out, t * h * dim)?;
    Ok(rows(p.tokens, ATTN_THREADS))
}

fn backward_common(
    c: &Check,
    p: &LmsiCausalAttentionParams,
    d_qkv: usize,
    d_out: usize,
    lse: usize,
    delta: usize,
) -> Result<(), Error> {
    let (t, h, dim) = (
        u64::from(p.tokens),
        u64::from(p.shape.num_heads),
        u64::from(p.shape.head_dim),
    );
    c.len("d_qkv", d_qkv, t * qkv_dim(&p.shape))?;
    c.len("d_out", d_out, t * h * dim)?;
    c.len("lse", lse, t * h)?;
    c.len("delta", delta, t * h)
}

/// `causal_attention_backward_dq(p, d_qkv, d_out, lse, delta, qkv, items)`, items from
/// [`crate::plan::query_items`].
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_backward_dq(
    p: &LmsiCausalAttentionParams,
    d_qkv: usize,
    d_out: usize,
    lse: usize,
    delta: usize,
    qkv: usize,
    items: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "causal_attention_backward_dq",
    };
    causal_common(&c, p, qkv, items)?;
    backward_common(&c, p, d_qkv, d_out, lse, delta)?;
    let dim = u64::from(p.shape.head_dim);
    let shared = c.shared((2 * u64::from(LMSI_ATTN_QUERIES) * dim + 2 * dim * KSTRIDE) * 4)?;
    Ok(attention(p.num_items, &p.shape, shared))
}

/// `causal_attention_backward_dkdv(p, d_qkv, d_out, lse, delta, qkv, items)`, items from
/// [`crate::plan::key_items`].
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_backward_dkdv(
    p: &LmsiCausalAttentionParams,
    d_qkv: usize,
    d_out: usize,
    lse: usize,
    delta: usize,
    qkv: usize,
    items: usize,
) -> Result<Option<Launch>, Error> {
    let c = Check {
        kernel: "causal_attention_backward_dkdv",
    };
    causal_common(&c, p, qkv, items)?;
    backward_common(&c, p, d_qkv, d_out, lse, delta)?;
    let dim = u64::from(p.shape.head_dim);
    let queries = u64::from(LMSI_ATTN_QUERIES);
    let shared = c.shared((2 * dim * KSTRIDE + 2 * queries * dim + 2 * queries * KSTRIDE) * 4)?;
    Ok(attention(p.num_items, &p.shape, shared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_are_named() {
        let p = LmsiRowsParams {
            rows: 3,
            dim: 4,
            table_rows: 10,
        };
        let err = gather_rows(&p, 11, 40, 3).unwrap_err().to_string();
        assert_eq!(err, "gather_rows: out has 11 elements, needs 12");
        assert!(gather_rows(&p, 12, 40, 3).unwrap().is_some());
        let empty = LmsiRowsParams { rows: 0, ..p };
        assert_eq!(gather_rows(&empty, 0, 40, 0).unwrap(), None);
    }

    #[test]
    fn attention_shapes_are_checked() {
        let shape = LmsiAttnShape {
            num_heads: 32,
            num_kv_heads: 1,
            head_dim: 64,
            block_size: 16,
            window: 0,
            scale: 0.125,
        };
        let p = LmsiCausalAttentionParams {
            shape,
            tokens: 1,
            num_items: 1,
        };
        let err = causal_attention_forward(&p, 1 << 20, 1 << 20, 1 << 20, 1).unwrap_err();
        assert!(
            err.to_string().contains("32 query heads per kv head"),
            "{err}"
        );
        let wide = LmsiCausalAttentionParams {
            shape: LmsiAttnShape {
                num_heads: 4,
                num_kv_heads: 2,
                head_dim: 320,
                ..shape
            },
            ..p
        };
        let err = causal_attention_forward(&wide, 1 << 20, 1 << 20, 1 << 20, 1).unwrap_err();
        assert!(err.to_string().contains("head_dim 320"), "{err}");
    }

    #[test]
    fn grid_stride_launches_are_capped() {
        let l = grid_stride(1 << 40).unwrap();
        assert_eq!(l.grid.0 as u64, MAX_STRIDE_BLOCKS);
        assert_eq!(grid_stride(257).unwrap().grid.0, 2);
        assert_eq!(grid_stride(0), None);
    }
}
