//! Causal attention of a training batch (no cache: every token's k and v are in the batch's fused
//! `qkv` rows) and its backward pass.
//!
//! Work is split by (sequence, key/value head): each task handles the query heads that share one
//! key/value head, one after another, with whole-sequence matrix products (`gemm`, one thread per
//! task): `S = scale·Q·Kᵀ` masked to the causal (and sliding) window, `P = softmax(S)`, `O = P·V`. The
//! forward keeps each token's log-sum-exp per head; the backward recomputes `P` from it (as flash
//! attention does) and forms `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ∘ (dP - rowsum(dO ∘ O))·scale`,
//! `dQ = dS·K`, `dK = dSᵀ·Q`, summing `dK` and `dV` over the heads of the group.

use std::ops::Range;

use ::gemm::Parallelism;

use super::gemm::{Strided, gemm_into};
use super::math::{dot, exp_sub_sum};
use crate::backend::AttentionDims;

/// A strided matrix view: (values, row stride); columns are contiguous.
type View<'a> = (&'a [f32], usize);

/// `out = (accumulate ? out : 0) + a · b` on the calling thread (one task per head group).
fn product(out: &mut [f32], a: Strided<'_>, b: Strided<'_>, accumulate: bool) {
    gemm_into(out, a, b, accumulate, Parallelism::None);
}

/// Where a sequence's heads are in the fused rows.
struct Heads<'a> {
    qkv: &'a [f32],
    start: usize,
    len: usize,
    d: &'a AttentionDims,
}

impl<'a> Heads<'a> {
    fn at(&self, head: usize) -> View<'a> {
        (
            &self.qkv[self.start * self.d.qkv_dim() + head * self.d.head_dim..],
            self.d.qkv_dim(),
        )
    }
    fn q(&self, h: usize) -> View<'a> {
        self.at(h)
    }
    fn k(&self, g: usize) -> View<'a> {
        self.at(self.d.num_heads + g)
    }
    fn v(&self, g: usize) -> View<'a> {
        self.at(self.d.num_heads + self.d.num_kv_heads + g)
    }
    /// Positions `i` may attend to, within the sequence.
    fn visible(&self, i: usize) -> Range<usize> {
        self.d.first_visible(i)..i + 1
    }
}

/// `scale·Q_h·K_gᵀ` as an `[len, len]` matrix.
fn scores(heads: &Heads<'_>, h: usize, g: usize) -> Vec<f32> {
    let (l, hd) = (heads.len, heads.d.head_dim);
    let mut s = vec![0.0f32; l * l];
    let (q, q_rs) = heads.q(h);
    let (k, k_rs) = heads.k(g);
    product(
        &mut s,
        Strided::rows(q, l, hd, q_rs),
        Strided::rows(k, l, hd, k_rs).t(),
        false,
    );
    s.iter_mut().for_each(|x| *x *= heads.d.scale);
    s
}

/// One task's outputs: a sequence's attention output and log-sum-exp for the heads of one group.
pub struct GroupForward {
    seq_start: usize,
    group: usize,
    /// `[heads_per_group][len, head_dim]`.
    out: Vec<Vec<f32>>,
    /// `[heads_per_group][len]`.
    lse: Vec<Vec<f32>>,
}

impl GroupForward {
    /// Writes this task's results into the batch's `out` (`[tokens, heads·head_dim]`) and `lse`.
    pub fn write(&self, out: &mut [f32], lse: &mut [f32], d: &AttentionDims) {
        let (hd, per_group) = (d.head_dim, d.num_heads / d.num_kv_heads);
        let attn_dim = d.num_heads * hd;
        for (hg, (o, l)) in self.out.iter().zip(&self.lse).enumerate() {
            let h = self.group * per_group + hg;
            for (i, (row, &value)) in o.chunks_exact(hd).zip(l).enumerate() {
                let t = self.seq_start + i;
                out[t * attn_dim + h * hd..][..hd].copy_from_slice(row);
                lse[t * d.num_heads + h] = value;
            }
        }
    }
}

/// Forward attention of one sequence (tokens `range`) for key/value group `g`.
pub fn forward_group(
    qkv: &[f32],
    range: Range<usize>,
    g: usize,
    d: &AttentionDims,
) -> GroupForward {
    let heads = Heads {
        qkv,
        start: range.start,
        len: range.len(),
        d,
    };
    let (l, hd, per_group) = (range.len(), d.head_dim, d.num_heads / d.num_kv_heads);
    let mut out = Vec::with_capacity(per_group);
    let mut lse = Vec::with_capacity(per_group);
    for hg in 0..per_group {
        let h = g * per_group + hg;
        let mut p = scores(&heads, h, g);
        let mut lse_h = vec![0.0f32; l];
        for (i, row) in p.chunks_exact_mut(l).enumerate() {
            let visible = heads.visible(i);
            let max = row[visible.clone()]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            let sum = exp_sub_sum(&mut row[visible.clone()], max);
            lse_h[i] = max + sum.ln();
            row[visible.clone()].iter_mut().for_each(|x| *x /= sum);
            row[..visible.start].fill(0.0);
            row[visible.end..].fill(0.0);
        }
        let mut o = vec![0.0f32; l * hd];
        let (v, v_rs) = heads.v(g);
        product(
            &mut o,
            Strided::rows(&p, l, l, l),
            Strided::rows(v, l, hd, v_rs),
            false,
        );
        out.push(o);
        lse.push(lse_h);
    }
    GroupForward {
        seq_start: range.start,
        group: g,
        out,
        lse,
    }
}

/// Gradients of one sequence's q heads of one key/value group, and of that group's k and v.
pub struct GroupGrads {
    seq_start: usize,
    group: usize,
    /// `[heads_per_group][len, head_dim]`.
    dq: Vec<Vec<f32>>,
    /// `[len, head_dim]` each.
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl GroupGrads {
    /// Writes these gradients into their places in the fused `d_qkv` rows.
    pub fn write(&self, d_qkv: &mut [f32], d: &AttentionDims) {
        let (hd, per_group) = (d.head_dim, d.num_heads / d.num_kv_heads);
        let place = |d_qkv: &mut [f32], head: usize, values: &[f32]| {
            for (i, row) in values.chunks_exact(hd).enumerate() {
                let t = self.seq_start + i;
                d_qkv[t * d.qkv_dim() + head * hd..][..hd].copy_from_slice(row);
            }
        };
        for (hg, dq) in self.dq.iter().enumerate() {
            place(d_qkv, self.group * per_group + hg, dq);
        }
        place(d_qkv, d.num_heads + self.group, &self.dk);
        place(d_qkv, d.num_heads + d.num_kv_heads + self.group, &self.dv);
    }
}

/// Backward of one sequence (tokens `range`) for key/value group `g` and its query heads.
pub fn backward_group(
    d_out: &[f32],
    out: &[f32],
    lse: &[f32],
    qkv: &[f32],
    range: Range<usize>,
    g: usize,
    d: &AttentionDims,
) -> GroupGrads {
    let heads = Heads {
        qkv,
        start: range.start,
        len: range.len(),
        d,
    };
    let (l, hd, per_group) = (range.len(), d.head_dim, d.num_heads / d.num_kv_heads);
    let attn_dim = d.num_heads * hd;
    let mut dk = vec![0.0f32; l * hd];
    let mut dv = vec![0.0f32; l * hd];
    let mut dqs = Vec::with_capacity(per_group);
    for hg in 0..per_group {
        let h = g * per_group + hg;
        // P from the saved log-sum-exp.
        let mut p = scores(&heads, h, g);
        for (i, row) in p.chunks_exact_mut(l).enumerate() {
            let visible = heads.visible(i);
            exp_sub_sum(
                &mut row[visible.clone()],
                lse[(range.start + i) * d.num_heads + h],
            );
            row[..visible.start].fill(0.0);
            row[visible.end..].fill(0.0);
        }
        let d_o: View<'_> = (&d_out[range.start * attn_dim + h * hd..], attn_dim);
        let o: View<'_> = (&out[range.start * attn_dim + h * hd..], attn_dim);
        // dV += Pᵀ·dO.
        product(
            &mut dv,
            Strided::rows(&p, l, l, l).t(),
            Strided::rows(d_o.0, l, hd, d_o.1),
            true,
        );
        // dP = dO·Vᵀ, then dS = P ∘ (dP - D)·scale in place.
        let mut ds = vec![0.0f32; l * l];
        let (v, v_rs) = heads.v(g);
        product(
            &mut ds,
            Strided::rows(d_o.0, l, hd, d_o.1),
            Strided::rows(v, l, hd, v_rs).t(),
            false,
        );
        for i in 0..l {
            let big_d = dot(&d_o.0[i * d_o.1..][..hd], &o.0[i * o.1..][..hd]);
            let (ds_row, p_row) = (&mut ds[i * l..(i + 1) * l], &p[i * l..(i + 1) * l]);
            for (x, &pij) in ds_row.iter_mut().zip(p_row) {
                *x = pij * (*x - big_d) * d.scale;
            }
        }
        // dQ = dS·K, dK += dSᵀ·Q.
        let mut dq = vec![0.0f32; l * hd];
        let (k, k_rs) = heads.k(g);
        product(
            &mut dq,
            Strided::rows(&ds, l, l, l),
            Strided::rows(k, l, hd, k_rs),
            false,
        );
        let (q, q_rs) = heads.q(h);
        product(
            &mut dk,
            Strided::rows(&ds, l, l, l).t(),
            Strided::rows(q, l, hd, q_rs),
            true,
        );
        dqs.push(dq);
    }
    GroupGrads {
        seq_start: range.start,
        group: g,
        dq: dqs,
        dk,
        dv,
    }
}
