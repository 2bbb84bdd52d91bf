//! Memory plans: what a model's weights, a generation run and a training run will hold on the
//! device, worked out from the configuration before anything is allocated, so that a run too
//! big for its device stops at once with the numbers instead of failing half way.
//!
//! A backend with bounded memory checks each plan against what it has free
//! ([`crate::Backend::check_memory`]; the CUDA backend, on a GPU or the simulated device, logs the
//! plan and refuses with the numbers), and the CPU backend refuses only a plan larger than the
//! machine's RAM and swap together. The plans follow
//! the buffers [`crate::Model`] allocates, operation by operation, and are upper bounds of what is
//! live at once; `tests/memory_plan.rs` holds them against the simulated device's measured peak.
//! A generation plan's arithmetic saturates, so a shape too big to count is too big to fit rather
//! than a wrapped, small number.
//!
//! ```
//! use lmsi_transformer::memory::{GenerationShape, MemoryPlan};
//! use lmsi_transformer::testing::TinyModel;
//! use lmsi_transformer::{Config, Dtype, Storage};
//!
//! let config = Config::from_json(&TinyModel::default().config_json().to_string())?;
//! let weights = MemoryPlan::weights(&config, Storage::Inference, Dtype::Bf16);
//! let f32_weights = MemoryPlan::weights(&config, Storage::Inference, Dtype::F32);
//! assert!(weights.total() < f32_weights.total());
//! let shape = GenerationShape { prompt_tokens: 300, question_tokens: 60, rows: 32, max_new_tokens: 96, block_size: 16 };
//! let generation = MemoryPlan::generation(&config, Dtype::Bf16, &shape);
//! println!("{generation}"); // generation: KV cache ... + activations ... = ...
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

pub use lmsi_cuda::human_bytes;

use crate::backend::Dtype;
use crate::config::Config;
use crate::model::Storage;
use crate::params::Params;

/// The parts of one allocation plan, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// What the plan is for, e.g. `generation`.
    pub what: &'static str,
    /// Each part's name and bytes, e.g. `("KV cache", 1 << 30)`.
    pub parts: Vec<(&'static str, u64)>,
}

/// The shape of a generation run, as [`crate::generate::generate`] sizes its KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationShape {
    /// Tokens of the shared prefix (the few-shot exemplars).
    pub prompt_tokens: usize,
    /// Tokens of the longest question.
    pub question_tokens: usize,
    /// Paths decoded together (the batch).
    pub rows: usize,
    pub max_new_tokens: usize,
    /// Positions per KV cache block.
    pub block_size: usize,
}

impl GenerationShape {
    /// KV cache blocks: the prefix, and per row its question and its longest path, each with a
    /// partial block copied on write (`usize::MAX` when that many cannot be counted).
    pub fn kv_blocks(&self) -> usize {
        let bs = self.block_size.max(1);
        let blocks = |positions: usize| positions.div_ceil(bs).saturating_add(1);
        let per_row = blocks(self.question_tokens).saturating_add(blocks(self.max_new_tokens));
        self.prompt_tokens
            .div_ceil(bs)
            .saturating_add(self.rows.saturating_mul(per_row))
    }
}

const F32: u64 = 4;

impl MemoryPlan {
    /// Bytes of every part together.
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0, |sum, (_, bytes)| sum.saturating_add(*bytes))
    }

    /// The parameters of a model stored for `storage` at `dtype`: weight matrices at `dtype` for
    /// inference, everything else (and everything for training) in f32.
    pub fn weights(config: &Config, storage: Storage, dtype: Dtype) -> Self {
        let matrix_bytes = match storage {
            Storage::Inference => dtype.bytes(),
            Storage::Training => F32,
        };
        let bytes = Params::layout(config)
            .tensors()
            .iter()
            .map(|spec| {
                let per_value = if spec.shape.len() == 2 {
                    matrix_bytes
                } else {
                    F32
                };
                spec.numel() as u64 * per_value
            })
            .sum::<u64>()
            + F32 * (config.head_dim as u64 / 2);
        MemoryPlan {
            what: "the model",
            parts: vec![("weights", bytes)],
        }
    }

    /// A generation run beside the loaded weights: its KV cache at `dtype` and the buffers of its
    /// largest step (the prefix prefilled alone, or questions prefilled beside decoding rows),
    /// with the next-token logits kept per question.
    pub fn generation(config: &Config, dtype: Dtype, shape: &GenerationShape) -> Self {
        let kv = product(&[
            2,
            config.num_layers as u64,
            shape.kv_blocks() as u64,
            shape.block_size as u64,
            config.kv_dim() as u64,
            dtype.bytes(),
        ]);
        // A step decodes up to `rows` rows and prefills up to `rows` questions beside them.
        let step_tokens = shape
            .prompt_tokens
            .max(
                shape
                    .rows
                    .saturating_mul(shape.question_tokens.saturating_add(1)),
            )
            .max(1);
        let logit_rows = shape.rows.saturating_mul(2);
        // The next-token logits of the prefix and of each question with paths still decoding.
        let kept_logits = product(&[
            (shape.rows as u64).saturating_add(1),
            config.vocab_size as u64,
            F32,
        ]);
        MemoryPlan {
            what: "generation",
            parts: vec![
                ("KV cache", kv),
                (
                    "activations",
                    forward_bytes(config, dtype, step_tokens, logit_rows),
                ),
                ("logits", kept_logits),
            ],
        }
    }

    /// A training run beside its f32 weights: gradients and the two AdamW moments (f32, one value
    /// per parameter each), and the buffers of one forward and backward pass over a micro-batch
    /// of `tokens` tokens, `recompute` keeping only each layer's input.
    pub fn training(config: &Config, dtype: Dtype, tokens: usize, recompute: bool) -> Self {
        let params = config.parameter_count() as u64;
        MemoryPlan {
            what: "training",
            parts: vec![
                ("gradients", params * F32),
                ("AdamW moments", 2 * params * F32),
                (
                    "activations",
                    training_bytes(config, dtype, tokens, recompute),
                ),
            ],
        }
    }
}

/// Bytes of one forward step over `t` tokens with `rows` logit rows ([`crate::Model::forward`]):
/// the layer buffers, the output layer's rows and logits. The products' input activations are
/// stored at `dtype` ([`crate::Backend::operand_zeros`]), everything else in f32.
fn forward_bytes(c: &Config, dtype: Dtype, t: usize, rows: usize) -> u64 {
    let (t, rows, d, i) = (
        t as u64,
        rows as u64,
        c.hidden_size as u64,
        c.intermediate_size as u64,
    );
    // x, x_mid, q|k|v, the attention's log-sum-exp, gate|up; the picked rows and logits.
    let f32_values = t
        .saturating_mul(2 * d + c.qkv_dim() as u64 + c.num_heads as u64 + 2 * i)
        .saturating_add(rows.saturating_mul(d + c.vocab_size as u64));
    // h, the attention output, SwiGLU's output; the final norm's rows.
    let operands = t
        .saturating_mul(d + c.attn_dim() as u64 + i)
        .saturating_add(rows.saturating_mul(d));
    F32.saturating_mul(f32_values)
        .saturating_add(dtype.bytes().saturating_mul(operands))
        .saturating_add(layout_bytes(t, rows))
}

/// The product of `factors`, `u64::MAX` when it does not fit.
fn product(factors: &[u64]) -> u64 {
    factors.iter().fold(1, |p, &f| p.saturating_mul(f))
}

/// Bytes of one forward and backward pass over `t` tokens ([`crate::Model::loss_and_grads`]):
/// what each layer keeps for its backward pass, the residual stream and its gradient, the larger
/// of a layer's forward and backward working buffers, and one chunk of output rows.
fn training_bytes(c: &Config, dtype: Dtype, t: usize, recompute: bool) -> u64 {
    let (d, i, h) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.num_heads as u64,
    );
    let (q, a) = (c.qkv_dim() as u64, c.attn_dim() as u64);
    let (t, layers) = (t as u64, c.num_layers as u64);
    // Both in f32 (an upper bound at bf16, where a few of them are narrower).
    // x_in, x_mid, q|k|v, the attention output and its log-sum-exp, gate|up.
    let saved = 2 * d + q + a + h + 2 * i;
    let kept = layers * if recompute { d } else { saved };
    let forward = d + i + d;
    let backward = (d + i + i + 2 * i + d + a + q + h)
        + d.div_ceil(64)
        + if recompute { saved + d } else { 0 };
    let rows = crate::train::LOGIT_CHUNK as u64;
    let output = rows * (4 * d + c.vocab_size as u64);
    let values = t * (kept + 2 * d + forward.max(backward)) + output;
    F32 * values + layout_bytes(t, t) + rounded_bytes(c, dtype, t.max(rows))
}

/// The step's uploaded layout and attention work items (a few 32-bit indices per token and row).
fn layout_bytes(tokens: u64, rows: u64) -> u64 {
    let indices = product(&[8, tokens]).saturating_add(product(&[2, rows]));
    F32.saturating_mul(indices.saturating_add(64))
}

/// At bf16, the f32 operands a training product rounds first: the output gradient (`t` rows of an
/// output width) of a weight or input gradient, and the largest weight matrix, kept in f32. (The
/// activations a product reads are stored in bf16 already.)
fn rounded_bytes(c: &Config, dtype: Dtype, t: u64) -> u64 {
    if dtype == Dtype::F32 {
        return 0;
    }
    let outer = [
        c.hidden_size,
        c.qkv_dim(),
        2 * c.intermediate_size,
        c.vocab_size,
    ];
    let widest = outer.iter().copied().max().unwrap_or(0) as u64;
    let largest_matrix = Params::layout(c)
        .tensors()
        .iter()
        .filter(|s| s.shape.len() == 2)
        .map(|s| s.numel() as u64)
        .max()
        .unwrap_or(0);
    dtype.bytes() * (t * widest + largest_matrix)
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.what)?;
        for (i, (name, bytes)) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{name} {}", human_bytes(*bytes))?;
        }
        if self.parts.len() > 1 {
            write!(f, " = {}", human_bytes(self.total()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_names_each_part_and_the_total() {
        let plan = MemoryPlan {
            what: "training",
            parts: vec![("gradients", 2 << 20), ("AdamW moments", 4 << 20)],
        };
        assert_eq!(
            plan.to_string(),
            "training: gradients 2.00 MiB + AdamW moments 4.00 MiB = 6.00 MiB"
        );
    }
}
