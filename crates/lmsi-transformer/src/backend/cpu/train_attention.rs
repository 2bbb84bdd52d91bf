//! Causal attention of a training batch (no cache: every token's k and v are in the batch's fused
//! `qkv` rows) and its backward pass, flash-attention style: the forward keeps each token's
//! log-sum-exp per head, the backward recomputes the attention weights from it.

use super::math::{dot, exp_sub_sum};
use crate::backend::AttentionDims;

fn q_at<'a>(qkv: &'a [f32], t: usize, h: usize, d: &AttentionDims) -> &'a [f32] {
    &qkv[t * d.qkv_dim() + h * d.head_dim..][..d.head_dim]
}

fn k_at<'a>(qkv: &'a [f32], t: usize, g: usize, d: &AttentionDims) -> &'a [f32] {
    &qkv[t * d.qkv_dim() + (d.num_heads + g) * d.head_dim..][..d.head_dim]
}

fn v_at<'a>(qkv: &'a [f32], t: usize, g: usize, d: &AttentionDims) -> &'a [f32] {
    &qkv[t * d.qkv_dim() + (d.num_heads + d.num_kv_heads + g) * d.head_dim..][..d.head_dim]
}

/// Attention of token `t` (of a sequence starting at token `start`), all heads.
pub fn forward_token(
    out_row: &mut [f32],
    lse_row: &mut [f32],
    qkv: &[f32],
    start: usize,
    t: usize,
    d: &AttentionDims,
) {
    let hd = d.head_dim;
    let group = d.num_heads / d.num_kv_heads;
    let first = start + d.first_visible(t - start);
    let mut scores = vec![0.0f32; t + 1 - first];
    for h in 0..d.num_heads {
        let g = h / group;
        let q = q_at(qkv, t, h, d);
        for (s, j) in scores.iter_mut().zip(first..=t) {
            *s = dot(q, k_at(qkv, j, g, d)) * d.scale;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum = exp_sub_sum(&mut scores, max);
        lse_row[h] = max + sum.ln();
        let o = &mut out_row[h * hd..(h + 1) * hd];
        o.fill(0.0);
        for (&p, j) in scores.iter().zip(first..=t) {
            let w = p / sum;
            o.iter_mut()
                .zip(v_at(qkv, j, g, d))
                .for_each(|(o, v)| *o += w * v);
        }
    }
}

/// Gradients of one sequence's q heads of one key/value group, and of that group's k and v.
pub struct GroupGrads {
    tokens: std::ops::Range<usize>,
    group: usize,
    /// `[tokens, heads_per_group, head_dim]`.
    dq: Vec<f32>,
    /// `[tokens, head_dim]` each.
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl GroupGrads {
    /// Writes these gradients into their places in the fused `d_qkv` rows.
    pub fn write(&self, d_qkv: &mut [f32], d: &AttentionDims) {
        let hd = d.head_dim;
        let per_group = d.num_heads / d.num_kv_heads;
        for (i, t) in self.tokens.clone().enumerate() {
            let row = &mut d_qkv[t * d.qkv_dim()..(t + 1) * d.qkv_dim()];
            let q_from = self.group * per_group * hd;
            row[q_from..q_from + per_group * hd]
                .copy_from_slice(&self.dq[i * per_group * hd..(i + 1) * per_group * hd]);
            let k_from = (d.num_heads + self.group) * hd;
            row[k_from..k_from + hd].copy_from_slice(&self.dk[i * hd..(i + 1) * hd]);
            let v_from = (d.num_heads + d.num_kv_heads + self.group) * hd;
            row[v_from..v_from + hd].copy_from_slice(&self.dv[i * hd..(i + 1) * hd]);
        }
    }
}

/// Backward of one sequence (tokens `range`) for key/value group `g` and its query heads.
///
/// With `P[i, j] = exp(scale·q_i·k_j - lse_i)`, `D_i = dO_i·O_i` and `dS = P ∘ (dO·Vᵀ - D)`:
/// `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`, `dV = Pᵀ·dO`, summed over the group's heads for k and v.
pub fn backward_group(
    d_out: &[f32],
    out: &[f32],
    lse: &[f32],
    qkv: &[f32],
    range: std::ops::Range<usize>,
    g: usize,
    d: &AttentionDims,
) -> GroupGrads {
    let hd = d.head_dim;
    let per_group = d.num_heads / d.num_kv_heads;
    let attn_dim = d.num_heads * hd;
    let (start, len) = (range.start, range.len());
    let mut dq = vec![0.0f32; len * per_group * hd];
    let mut dk = vec![0.0f32; len * hd];
    let mut dv = vec![0.0f32; len * hd];
    let mut weights = vec![0.0f32; len];
    for hg in 0..per_group {
        let h = g * per_group + hg;
        for i in 0..len {
            let t = start + i;
            let first = d.first_visible(i);
            let q = q_at(qkv, t, h, d);
            let d_o = &d_out[t * attn_dim + h * hd..][..hd];
            let o = &out[t * attn_dim + h * hd..][..hd];
            let big_d = dot(d_o, o);
            let l = lse[t * d.num_heads + h];
            for (j, w) in weights.iter_mut().enumerate().take(i + 1).skip(first) {
                *w = (dot(q, k_at(qkv, start + j, g, d)) * d.scale - l).exp();
            }
            let dq_i = &mut dq[(i * per_group + hg) * hd..][..hd];
            for (j, &p) in weights.iter().enumerate().take(i + 1).skip(first) {
                let v = v_at(qkv, start + j, g, d);
                let ds = p * (dot(d_o, v) - big_d) * d.scale;
                let k = k_at(qkv, start + j, g, d);
                dq_i.iter_mut().zip(k).for_each(|(a, b)| *a += ds * b);
                dk[j * hd..(j + 1) * hd]
                    .iter_mut()
                    .zip(q)
                    .for_each(|(a, b)| *a += ds * b);
                dv[j * hd..(j + 1) * hd]
                    .iter_mut()
                    .zip(d_o)
                    .for_each(|(a, b)| *a += p * b);
            }
        }
    }
    GroupGrads {
        tokens: range,
        group: g,
        dq,
        dk,
        dv,
    }
}
