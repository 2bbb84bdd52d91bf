//! The CPU reference backend: f32; the forward pass's matrix products through [`linear`] (whose rows
//! are independent of each other, so batching never changes a result), the backward pass's through
//! the `gemm` crate; everything else as
//! plain loops parallelised over rows with rayon. Uploaded buffers (the weights) and KV caches
//! are put in huge pages when large ([`huge_pages`]).

mod gemm;
mod huge_pages;
mod linear;
mod math;
mod train_attention;

pub use linear::linear;

pub use math::{dot, exp_sub_sum, key_scores, silu_mul, silu_mul_backward, weighted_rows};

use ::gemm::Parallelism;
use rayon::prelude::*;

use self::gemm::{Strided, gemm_into};
use super::{
    AttentionDims, AttentionSaved, Backend, BatchLayout, Linear, LinearGrad, RmsNormGrad, Rotation,
    check_table_rows,
};
use crate::Error;

/// The CPU backend. Work is spread over rayon's global thread pool.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

/// A [`BatchLayout`] with each token's sequence index worked out once per step.
pub struct CpuLayout {
    pub layout: BatchLayout,
    pub token_seq: Vec<u32>,
}

fn check_len(what: &str, buf: &[f32], needed: usize) -> Result<(), Error> {
    if buf.len() < needed {
        return Err(Error::Backend(format!(
            "{what}: buffer has {} values, needs {needed}",
            buf.len()
        )));
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Layout = CpuLayout;

    fn describe(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    /// The CPU has no device memory of its own; a plan larger than the machine's RAM and swap
    /// together cannot run, and is refused before it is allocated (where `/proc/meminfo` tells).
    fn check_memory(&self, plan: &crate::memory::MemoryPlan) -> Result<(), Error> {
        match host_memory() {
            Some(total) if plan.total() > total => Err(Error::OutOfMemory {
                plan: plan.to_string(),
                device: "the CPU (RAM and swap)".into(),
                free: total,
                total,
            }),
            _ => Ok(()),
        }
    }

    fn copy_range(&self, src: &Vec<f32>, start: usize, len: usize) -> Result<Vec<f32>, Error> {
        check_len("copied range", src, start + len)?;
        Ok(src[start..start + len].to_vec())
    }

    fn sample(
        &self,
        logits: &Vec<f32>,
        rows: &[u32],
        vocab: usize,
        params: &lmsi_sampler::SamplingParams,
        keys: &[lmsi_sampler::RowKey],
    ) -> Result<Vec<lmsi_sampler::Sampled>, Error> {
        if rows.len() != keys.len() {
            return Err(Error::Backend(format!(
                "sample: {} rows for {} keys",
                rows.len(),
                keys.len()
            )));
        }
        let mut gathered = Vec::with_capacity(rows.len() * vocab);
        for &r in rows {
            let start = r as usize * vocab;
            check_len("sampled logits", logits, start + vocab)?;
            gathered.extend_from_slice(&logits[start..start + vocab]);
        }
        Ok(lmsi_sampler::sample_batch(&gathered, vocab, params, keys)?)
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>, Error> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>, Error> {
        Ok(huge_pages::copy(data))
    }

    fn kv_zeros(&self, len: usize) -> Result<Vec<f32>, Error> {
        Ok(huge_pages::zeros(len))
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>, Error> {
        Ok(buf.clone())
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn prepare(&self, layout: &BatchLayout) -> Result<CpuLayout, Error> {
        Ok(CpuLayout {
            token_seq: layout.token_seq(),
            layout: layout.clone(),
        })
    }

    fn embedding(
        &self,
        out: &mut Vec<f32>,
        table: &Vec<f32>,
        layout: &CpuLayout,
        dim: usize,
    ) -> Result<(), Error> {
        let ids = &layout.layout.token_ids;
        check_len("embedding output", out, ids.len() * dim)?;
        check_table_rows("embedding", ids, table.len(), dim)?;
        for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
            row.copy_from_slice(&table[id as usize * dim..(id as usize + 1) * dim]);
        }
        Ok(())
    }

    fn rmsnorm(
        &self,
        out: &mut Vec<f32>,
        x: &Vec<f32>,
        weight: &Vec<f32>,
        rows: usize,
        eps: f32,
    ) -> Result<(), Error> {
        let dim = weight.len();
        check_len("rmsnorm input", x, rows * dim)?;
        check_len("rmsnorm output", out, rows * dim)?;
        out[..rows * dim]
            .par_chunks_mut(dim)
            .zip(x[..rows * dim].par_chunks(dim))
            .for_each(|(o, xr)| {
                let rstd = 1.0 / (dot(xr, xr) / dim as f32 + eps).sqrt();
                for ((o, &xv), &w) in o.iter_mut().zip(xr).zip(weight) {
                    *o = xv * rstd * w;
                }
            });
        Ok(())
    }

    fn matmul(
        &self,
        out: &mut Vec<f32>,
        x: &Vec<f32>,
        layer: &Linear<'_, Vec<f32>>,
        rows: usize,
        accumulate: bool,
    ) -> Result<(), Error> {
        let (w, bias) = (layer.weight, layer.bias);
        let (m, n, k) = (rows, layer.out_features, layer.in_features);
        check_len("matmul input", x, m * k)?;
        check_len("matmul weight", w, n * k)?;
        check_len("matmul output", out, m * n)?;
        let out = &mut out[..m * n];
        let mut read_dst = accumulate;
        if let Some(bias) = bias {
            check_len("matmul bias", bias, n)?;
            for row in out.chunks_exact_mut(n) {
                if accumulate {
                    row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
                } else {
                    row.copy_from_slice(&bias[..n]);
                }
            }
            read_dst = true;
        }
        linear(out, x, w, m, n, k, read_dst);
        Ok(())
    }

    fn rope(
        &self,
        qkv: &mut Vec<f32>,
        layout: &CpuLayout,
        dims: &AttentionDims,
        inv_freq: &Vec<f32>,
        rotation: Rotation,
    ) -> Result<(), Error> {
        let qkv_dim = dims.qkv_dim();
        let positions = &layout.layout.positions;
        check_len("rope input", qkv, positions.len() * qkv_dim)?;
        let rotated_heads = dims.num_heads + dims.num_kv_heads;
        qkv[..positions.len() * qkv_dim]
            .par_chunks_mut(qkv_dim)
            .zip(positions.par_iter())
            .for_each(|(row, &pos)| {
                let (cos, mut sin) = rope_angles(pos, inv_freq);
                if rotation == Rotation::Inverse {
                    // Negating is exact, so this is the forward formula with the signs swapped.
                    sin.iter_mut().for_each(|s| *s = -*s);
                }
                for head in row[..rotated_heads * dims.head_dim].chunks_exact_mut(dims.head_dim) {
                    rotate_half(head, &cos, &sin);
                }
            });
        Ok(())
    }

    fn kv_store(
        &self,
        k_cache: &mut Vec<f32>,
        v_cache: &mut Vec<f32>,
        qkv: &Vec<f32>,
        layout: &CpuLayout,
        dims: &AttentionDims,
    ) -> Result<(), Error> {
        let qkv_dim = dims.qkv_dim();
        let (hd, bs) = (dims.head_dim, dims.block_size);
        let kv_dim = dims.num_kv_heads * hd;
        let q_dim = dims.num_heads * hd;
        for (t, &slot) in layout.layout.slots.iter().enumerate() {
            let row = &qkv[t * qkv_dim..(t + 1) * qkv_dim];
            let (block, offset) = (slot as usize / bs, slot as usize % bs);
            check_len("k cache", k_cache, (block + 1) * dims.block_len())?;
            check_len("v cache", v_cache, (block + 1) * dims.block_len())?;
            // Keys transposed within the block: [kv_head][dim][offset].
            let k_block = &mut k_cache[block * dims.block_len()..(block + 1) * dims.block_len()];
            for (i, &k) in row[q_dim..q_dim + kv_dim].iter().enumerate() {
                k_block[i * bs + offset] = k;
            }
            let at = slot as usize * kv_dim;
            v_cache[at..at + kv_dim].copy_from_slice(&row[q_dim + kv_dim..]);
        }
        Ok(())
    }

    fn paged_attention(
        &self,
        out: &mut Vec<f32>,
        qkv: &Vec<f32>,
        k_cache: &Vec<f32>,
        v_cache: &Vec<f32>,
        layout: &CpuLayout,
        dims: &AttentionDims,
    ) -> Result<(), Error> {
        let attn_dim = dims.num_heads * dims.head_dim;
        let tokens = layout.layout.num_tokens();
        check_len("attention output", out, tokens * attn_dim)?;
        out[..tokens * attn_dim]
            .par_chunks_mut(attn_dim)
            .enumerate()
            .for_each(|(t, out_row)| {
                let seq = &layout.layout.seqs[layout.token_seq[t] as usize];
                let table = &layout.layout.block_tables[seq.table_start as usize..];
                let position = layout.layout.positions[t] as usize;
                let q_row = &qkv[t * dims.qkv_dim()..][..attn_dim];
                attend(out_row, q_row, k_cache, v_cache, table, position, dims);
            });
        Ok(())
    }

    fn swiglu(
        &self,
        out: &mut Vec<f32>,
        gate_up: &Vec<f32>,
        rows: usize,
        inter: usize,
    ) -> Result<(), Error> {
        check_len("swiglu input", gate_up, rows * 2 * inter)?;
        check_len("swiglu output", out, rows * inter)?;
        out[..rows * inter]
            .par_chunks_mut(inter)
            .zip(gate_up[..rows * 2 * inter].par_chunks(2 * inter))
            .for_each(|(o, gu)| silu_mul(o, &gu[..inter], &gu[inter..]));
        Ok(())
    }

    fn gather_logit_rows(
        &self,
        out: &mut Vec<f32>,
        x: &Vec<f32>,
        layout: &CpuLayout,
        rows: std::ops::Range<usize>,
        dim: usize,
    ) -> Result<(), Error> {
        let rows = &layout.layout.logit_rows[rows];
        check_len("gathered rows", out, rows.len() * dim)?;
        for (o, &r) in out.chunks_exact_mut(dim).zip(rows) {
            o.copy_from_slice(&x[r as usize * dim..(r as usize + 1) * dim]);
        }
        Ok(())
    }

    fn copy_block(
        &self,
        cache: &mut Vec<f32>,
        src: usize,
        dst: usize,
        block_len: usize,
    ) -> Result<(), Error> {
        check_len("cache", cache, (src.max(dst) + 1) * block_len)?;
        cache.copy_within(src * block_len..(src + 1) * block_len, dst * block_len);
        Ok(())
    }

    fn copy(&self, buf: &Vec<f32>) -> Result<Vec<f32>, Error> {
        Ok(buf.clone())
    }

    fn copy_into(&self, dst: &mut Vec<f32>, src: &Vec<f32>) -> Result<(), Error> {
        if dst.len() != src.len() {
            return Err(Error::Backend(format!(
                "copy: {} values into a buffer of {}",
                src.len(),
                dst.len()
            )));
        }
        dst.copy_from_slice(src);
        Ok(())
    }

    fn zero(&self, buf: &mut Vec<f32>) -> Result<(), Error> {
        buf.fill(0.0);
        Ok(())
    }

    fn add_assign(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<(), Error> {
        check_len("add input", y, len)?;
        check_len("add output", x, len)?;
        x[..len]
            .par_chunks_mut(4096)
            .zip(y[..len].par_chunks(4096))
            .for_each(|(a, b)| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            });
        Ok(())
    }

    fn causal_attention(
        &self,
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        qkv: &Vec<f32>,
        layout: &CpuLayout,
        dims: &AttentionDims,
    ) -> Result<(), Error> {
        let t = layout.layout.num_tokens();
        let attn_dim = dims.num_heads * dims.head_dim;
        check_len("attention input", qkv, t * dims.qkv_dim())?;
        check_len("attention output", out, t * attn_dim)?;
        check_len("attention log-sum-exp", lse, t * dims.num_heads)?;
        let groups: Vec<train_attention::GroupForward> = group_tasks(layout, dims)
            .par_iter()
            .map(|&(s, g)| train_attention::forward_group(qkv, seq_range(layout, s), g, dims))
            .collect();
        for group in groups {
            group.write(out, lse, dims);
        }
        Ok(())
    }

    fn causal_attention_backward(
        &self,
        d_qkv: &mut Vec<f32>,
        d_out: &Vec<f32>,
        forward: &AttentionSaved<'_, Vec<f32>>,
        layout: &CpuLayout,
        dims: &AttentionDims,
    ) -> Result<(), Error> {
        let (qkv, out, lse) = (forward.qkv, forward.out, forward.lse);
        let t = layout.layout.num_tokens();
        check_len("attention gradient", d_qkv, t * dims.qkv_dim())?;
        let parts: Vec<train_attention::GroupGrads> = group_tasks(layout, dims)
            .par_iter()
            .map(|&(s, g)| {
                let range = seq_range(layout, s);
                train_attention::backward_group(d_out, out, lse, qkv, range, g, dims)
            })
            .collect();
        for part in parts {
            part.write(d_qkv, dims);
        }
        Ok(())
    }

    fn rmsnorm_backward(
        &self,
        grad: RmsNormGrad<'_, Vec<f32>>,
        d_out: &Vec<f32>,
        x: &Vec<f32>,
        weight: &Vec<f32>,
        rows: usize,
        eps: f32,
    ) -> Result<(), Error> {
        let (d_x, d_weight) = (grad.input, grad.weight);
        let dim = weight.len();
        for (what, buf) in [
            ("input", &**x),
            ("output gradient", &**d_out),
            ("input gradient", &**d_x),
        ] {
            check_len(&format!("rmsnorm backward {what}"), buf, rows * dim)?;
        }
        // Rows in fixed chunks, each chunk's weight gradient summed on its own and the chunks added
        // in order: the result does not depend on the thread count.
        const CHUNK: usize = 64;
        let partials: Vec<Vec<f32>> = d_x[..rows * dim]
            .par_chunks_mut(CHUNK * dim)
            .zip(x[..rows * dim].par_chunks(CHUNK * dim))
            .zip(d_out[..rows * dim].par_chunks(CHUNK * dim))
            .map(|((dx, x), dy)| {
                let mut dw = vec![0.0f32; dim];
                for ((dx, x), dy) in dx
                    .chunks_exact_mut(dim)
                    .zip(x.chunks_exact(dim))
                    .zip(dy.chunks_exact(dim))
                {
                    let rstd = 1.0 / (dot(x, x) / dim as f32 + eps).sqrt();
                    let mut dyw_x = 0.0f32;
                    for i in 0..dim {
                        dyw_x += dy[i] * weight[i] * x[i];
                        dw[i] += dy[i] * x[i] * rstd;
                    }
                    let c = rstd * rstd * rstd * dyw_x / dim as f32;
                    for i in 0..dim {
                        dx[i] += rstd * dy[i] * weight[i] - c * x[i];
                    }
                }
                dw
            })
            .collect();
        for partial in partials {
            d_weight.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    fn matmul_backward_input(
        &self,
        d_x: &mut Vec<f32>,
        d_out: &Vec<f32>,
        linear: &Linear<'_, Vec<f32>>,
        rows: usize,
        accumulate: bool,
    ) -> Result<(), Error> {
        let w = linear.weight;
        let (m, n, k) = (rows, linear.out_features, linear.in_features);
        check_len("matmul backward output gradient", d_out, m * n)?;
        check_len("matmul backward weight", w, n * k)?;
        check_len("matmul backward input gradient", d_x, m * k)?;
        // d_x[m, k] = d_out[m, n] · w[n, k]: w read row-major as the right-hand side.
        gemm_into(
            &mut d_x[..m * k],
            Strided::rows(d_out, m, n, n),
            Strided::rows(w, n, k, k),
            accumulate,
            Parallelism::Rayon(0),
        );
        Ok(())
    }

    fn matmul_backward_weight(
        &self,
        grad: LinearGrad<'_, Vec<f32>>,
        d_out: &Vec<f32>,
        x: &Vec<f32>,
        rows: usize,
    ) -> Result<(), Error> {
        let (d_w, d_bias) = (grad.weight, grad.bias);
        let (m, n, k) = (rows, grad.out_features, grad.in_features);
        check_len("matmul backward output gradient", d_out, m * n)?;
        check_len("matmul backward input", x, m * k)?;
        check_len("matmul backward weight gradient", d_w, n * k)?;
        // d_w[n, k] += d_out[m, n]ᵀ · x[m, k]: the transpose read through strides.
        gemm_into(
            &mut d_w[..n * k],
            Strided::rows(d_out, m, n, n).t(),
            Strided::rows(x, m, k, k),
            true,
            Parallelism::Rayon(0),
        );
        if let Some(d_bias) = d_bias {
            check_len("matmul backward bias gradient", d_bias, n)?;
            for row in d_out[..m * n].chunks_exact(n) {
                d_bias.iter_mut().zip(row).for_each(|(b, g)| *b += g);
            }
        }
        Ok(())
    }

    fn swiglu_backward(
        &self,
        d_gate_up: &mut Vec<f32>,
        d_out: &Vec<f32>,
        gate_up: &Vec<f32>,
        rows: usize,
        inter: usize,
    ) -> Result<(), Error> {
        check_len("swiglu backward input", gate_up, rows * 2 * inter)?;
        check_len("swiglu backward output gradient", d_out, rows * inter)?;
        check_len(
            "swiglu backward input gradient",
            d_gate_up,
            rows * 2 * inter,
        )?;
        d_gate_up[..rows * 2 * inter]
            .par_chunks_mut(2 * inter)
            .zip(gate_up[..rows * 2 * inter].par_chunks(2 * inter))
            .zip(d_out[..rows * inter].par_chunks(inter))
            .for_each(|((dgu, gu), dy)| {
                let (dg, du) = dgu.split_at_mut(inter);
                silu_mul_backward(dg, du, dy, &gu[..inter], &gu[inter..]);
            });
        Ok(())
    }

    fn embedding_backward(
        &self,
        d_table: &mut Vec<f32>,
        d_out: &Vec<f32>,
        layout: &CpuLayout,
        dim: usize,
    ) -> Result<(), Error> {
        let ids = &layout.layout.token_ids;
        check_len("embedding output gradient", d_out, ids.len() * dim)?;
        check_table_rows("embedding gradient", ids, d_table.len(), dim)?;
        for (t, &id) in ids.iter().enumerate() {
            let row = &mut d_table[id as usize * dim..(id as usize + 1) * dim];
            row.iter_mut()
                .zip(&d_out[t * dim..(t + 1) * dim])
                .for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    fn scatter_logit_rows(
        &self,
        x: &mut Vec<f32>,
        src: &Vec<f32>,
        layout: &CpuLayout,
        rows: std::ops::Range<usize>,
        dim: usize,
    ) -> Result<(), Error> {
        let rows = &layout.layout.logit_rows[rows];
        check_len("scattered rows", src, rows.len() * dim)?;
        for (src, &r) in src.chunks_exact(dim).zip(rows) {
            let dst = &mut x[r as usize * dim..(r as usize + 1) * dim];
            dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    fn sum_squares(&self, buf: &Vec<f32>) -> Result<f64, Error> {
        Ok(lmsi_adamw::sum_squares(buf))
    }

    fn scale(&self, buf: &mut Vec<f32>, factor: f32) -> Result<(), Error> {
        buf.par_chunks_mut(1 << 16)
            .for_each(|c| c.iter_mut().for_each(|x| *x *= factor));
        Ok(())
    }

    fn adamw_update(
        &self,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        scalars: &lmsi_adamw::StepScalars,
    ) -> Result<(), Error> {
        let n = param.len();
        for (what, len) in [
            ("gradient", grad.len()),
            ("first moment", m.len()),
            ("second moment", v.len()),
        ] {
            if len != n {
                return Err(Error::Backend(format!(
                    "adamw: {what} has {len} values, parameter {n}"
                )));
            }
        }
        lmsi_adamw::adamw_update_with(param, grad, m, v, scalars);
        Ok(())
    }

    fn cross_entropy(
        &self,
        logits: &mut Vec<f32>,
        layout: &CpuLayout,
        rows: std::ops::Range<usize>,
        vocab: usize,
        scales: &[f32],
    ) -> Result<Vec<f32>, Error> {
        let targets = &layout.layout.targets[rows];
        check_len("cross-entropy logits", logits, targets.len() * vocab)?;
        check_len("cross-entropy row scales", scales, targets.len())?;
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Backend(format!(
                "cross-entropy: target {bad} is outside a row's {vocab} logits"
            )));
        }
        Ok(logits[..targets.len() * vocab]
            .par_chunks_mut(vocab)
            .zip(targets.par_iter().zip(scales))
            .map(|(row, (&target, &scale))| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let target_logit = row[target as usize];
                let sum = exp_sub_sum(row, max);
                let loss = sum.ln() + max - target_logit;
                let inv = scale / sum;
                row.iter_mut().for_each(|p| *p *= inv);
                row[target as usize] -= scale;
                loss
            })
            .collect())
    }
}

/// The (sequence, key/value head) pairs of a training batch, largest sequences first so that long
/// tasks start early.
fn group_tasks(layout: &CpuLayout, dims: &AttentionDims) -> Vec<(usize, usize)> {
    let mut seqs: Vec<usize> = (0..layout.layout.seqs.len()).collect();
    seqs.sort_by_key(|&s| std::cmp::Reverse(layout.layout.seqs[s].num_tokens));
    seqs.into_iter()
        .flat_map(|s| (0..dims.num_kv_heads).map(move |g| (s, g)))
        .collect()
}

fn seq_range(layout: &CpuLayout, s: usize) -> std::ops::Range<usize> {
    let seq = &layout.layout.seqs[s];
    seq.token_start as usize..(seq.token_start + seq.num_tokens) as usize
}

/// cos and sin of `position · inv_freq[i]` for each pair of a head's dimensions, in f32 like
/// Hugging Face's float32 rotary embedding.
pub fn rope_angles(position: u32, inv_freq: &[f32]) -> (Vec<f32>, Vec<f32>) {
    inv_freq
        .iter()
        .map(|&f| {
            let angle = position as f32 * f;
            (angle.cos(), angle.sin())
        })
        .unzip()
}

/// Rotate-half RoPE of one head: `(x1, x2) -> (x1·cos - x2·sin, x2·cos + x1·sin)` where `x1` is the
/// first half of the head and `x2` the second.
pub fn rotate_half(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = head.len() / 2;
    let (x1, x2) = head.split_at_mut(half);
    for i in 0..half {
        let (a, b) = (x1[i], x2[i]);
        x1[i] = a * cos[i] - b * sin[i];
        x2[i] = b * cos[i] + a * sin[i];
    }
}

/// One token's attention, all query heads, over its sequence's cache.
///
/// The query heads that share a key-value head run together through each block (their sums are
/// independent chains for the FMA units; each is the same chain it would be alone). Scores of a
/// block's keys are computed a dimension at a time across the block's positions (the keys are
/// stored transposed), which vectorises without horizontal sums; the weighted sum of values keeps
/// the heads' outputs in registers while it runs over a block's positions.
fn attend(
    out_row: &mut [f32],
    q_row: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    block_table: &[u32],
    position: usize,
    dims: &AttentionDims,
) {
    let (hd, bs) = (dims.head_dim, dims.block_size);
    let kv_dim = dims.num_kv_heads * hd;
    let group = dims.num_heads / dims.num_kv_heads;
    let first = dims.first_visible(position);
    let (first_block, last_block) = (first / bs, position / bs);
    // Each of a group's heads has a row of scores for whole blocks; only positions
    // first..=position are used.
    let width = (last_block + 1 - first_block) * bs;
    let mut scores = vec![0.0f32; group * width];
    let (lo, hi) = (first - first_block * bs, position + 1 - first_block * bs);
    for g in 0..dims.num_kv_heads {
        let qs = &q_row[g * group * hd..(g + 1) * group * hd];
        for (b, column) in (first_block..=last_block).zip((0..width).step_by(bs)) {
            let block = block_table[b] as usize;
            let keys = &k_cache[block * dims.block_len() + g * hd * bs..][..hd * bs];
            key_scores(&mut scores[column..], width, group, qs, keys, dims.scale);
        }
        for head_scores in scores.chunks_exact_mut(width) {
            let visible = &mut head_scores[lo..hi];
            let max = visible.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum = exp_sub_sum(visible, max);
            visible.iter_mut().for_each(|w| *w /= sum);
        }
        let out = &mut out_row[g * group * hd..(g + 1) * group * hd];
        out.fill(0.0);
        for (b, &block) in block_table
            .iter()
            .enumerate()
            .take(last_block + 1)
            .skip(first_block)
        {
            let from = (b * bs).max(first);
            let to = ((b + 1) * bs).min(position + 1);
            let weights = &scores[from - first_block * bs..];
            let start = (block as usize * bs + from % bs) * kv_dim + g * hd;
            weighted_rows(
                out,
                group,
                weights,
                width,
                to - from,
                &v_cache[start..],
                kv_dim,
            );
        }
    }
}

/// The machine's RAM and swap together, in bytes, from `/proc/meminfo` (`None` where it is absent).
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((kib("MemTotal:")? + kib("SwapTotal:").unwrap_or(0)) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn paged_attention_equals_plain_causal_attention() {
        for window in [None, Some(5)] {
            let dims = AttentionDims {
                num_heads: 4,
                num_kv_heads: 2,
                head_dim: 8,
                scale: 1.0 / 8f32.sqrt(),
                window,
                block_size: 4,
            };
            let lens = [7, 12];
            let l = crate::testing::scattered_prefill_layout(&lens, dims.block_size);
            let be = CpuBackend;
            let prepared = be.prepare(&l).unwrap();
            let t = l.num_tokens();
            let qkv = random(t * dims.qkv_dim(), 3);
            let mut k_cache = vec![0.0; 101 * dims.block_len()];
            let mut v_cache = k_cache.clone();
            be.kv_store(&mut k_cache, &mut v_cache, &qkv, &prepared, &dims)
                .unwrap();
            let mut out = vec![f32::NAN; t * 32];
            be.paged_attention(&mut out, &qkv, &k_cache, &v_cache, &prepared, &dims)
                .unwrap();

            let (hd, qd) = (dims.head_dim, dims.num_heads * dims.head_dim);
            let mut start = 0;
            for &len in &lens {
                for i in 0..len {
                    for h in 0..dims.num_heads {
                        let g = h / 2;
                        let q = &qkv[(start + i) * dims.qkv_dim() + h * hd..][..hd];
                        let k = |j: usize| &qkv[(start + j) * dims.qkv_dim() + qd + g * hd..][..hd];
                        let v = |j: usize| {
                            &qkv[(start + j) * dims.qkv_dim() + qd + 2 * hd + g * hd..][..hd]
                        };
                        let first = window.map_or(0, |w| (i + 1).saturating_sub(w));
                        let s: Vec<f64> = (first..=i)
                            .map(|j| {
                                q.iter().zip(k(j)).map(|(a, b)| (a * b) as f64).sum::<f64>()
                                    * dims.scale as f64
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::MIN, f64::max);
                        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                        for d in 0..hd {
                            let exact: f64 = (first..=i)
                                .zip(&s)
                                .map(|(j, x)| (x - m).exp() / z * v(j)[d] as f64)
                                .sum();
                            let got = out[(start + i) * qd + h * hd + d] as f64;
                            assert!(
                                (got - exact).abs() < 1e-5,
                                "window {window:?} token {i} head {h} dim {d}: {got} vs {exact}"
                            );
                        }
                    }
                }
                start += len;
            }
        }
    }

    #[test]
    fn rope_rotates_pairs_half_a_head_apart() {
        let dims = AttentionDims {
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 4,
            scale: 1.0,
            window: None,
            block_size: 4,
        };
        let l = BatchLayout {
            token_ids: vec![0],
            positions: vec![3],
            slots: vec![0],
            ..BatchLayout::default()
        };
        let inv_freq = vec![0.5, 0.01];
        let mut qkv = random(12, 9);
        let before = qkv.clone();
        CpuBackend
            .rope(
                &mut qkv,
                &CpuBackend.prepare(&l).unwrap(),
                &dims,
                &inv_freq,
                Rotation::Forward,
            )
            .unwrap();
        for head in [0, 4] {
            for i in 0..2 {
                let a = 3.0f32 * inv_freq[i];
                let (x1, x2) = (before[head + i], before[head + i + 2]);
                assert!((qkv[head + i] - (x1 * a.cos() - x2 * a.sin())).abs() < 1e-6);
                assert!((qkv[head + i + 2] - (x2 * a.cos() + x1 * a.sin())).abs() < 1e-6);
            }
        }
        assert_eq!(&qkv[8..], &before[8..], "v is not rotated");
    }
}
