//! The primitive operations a model runs on, and the CPU reference implementation.
//!
//! The model ([`crate::Model`]) is written once over [`Backend`]: every tensor lives in a backend buffer
//! and every computation is one of the operations below. The CPU backend ([`CpuBackend`]) is the
//! reference; other backends (CUDA) must agree with it within stated tolerances on the same inputs.
//!
//! Conventions shared by every operation:
//! - Buffers hold f32 in row-major order. A matrix "`[m, n]`" is `m` rows of `n` values.
//! - Weights are stored as Hugging Face stores them, `[out_features, in_features]`, so a linear layer is
//!   `y = x · Wᵀ`.
//! - The q, k and v projections are fused into one matrix whose output row is `q | k | v`
//!   (`num_heads`, `num_kv_heads`, `num_kv_heads` heads of `head_dim`), and gate and up projections into
//!   one whose output row is `gate | up`.
//! - A step's tokens are packed: all sequences' new tokens one after the other, described by a
//!   [`BatchLayout`].

mod cpu;
mod cuda;

pub use cpu::CpuBackend;
pub use cuda::{CudaBackend, CudaBuf, Dtype};

use crate::Error;

/// A device that stores f32 buffers and runs the model's operations on them.
pub trait Backend: Send + Sync + Sized + 'static {
    /// An f32 buffer on the device.
    type Buf: Send + Sync;
    /// A [`BatchLayout`] made ready for the device (uploaded, for an accelerator).
    type Layout: Send + Sync;

    /// A short description of the device for logs, e.g. `cpu (2 threads)`.
    fn describe(&self) -> String;
    /// A new buffer holding `len` values of `src` from `start` on.
    fn copy_range(&self, src: &Self::Buf, start: usize, len: usize) -> Result<Self::Buf, Error>;

    /// Samples one token per key, key `i` from row `rows[i]` of `logits` (`[_, vocab]` row-major), with
    /// exactly the draws of [`lmsi_sampler::sample_row`]. An error names the position in `keys`.
    fn sample(
        &self,
        logits: &Self::Buf,
        rows: &[u32],
        vocab: usize,
        params: &lmsi_sampler::SamplingParams,
        keys: &[lmsi_sampler::RowKey],
    ) -> Result<Vec<lmsi_sampler::Sampled>, Error>;

    /// A zero-filled buffer of `len` values.
    fn zeros(&self, len: usize) -> Result<Self::Buf, Error>;
    /// A buffer holding a copy of `data`.
    fn upload(&self, data: &[f32]) -> Result<Self::Buf, Error>;
    /// A buffer holding a copy of `data`, a weight matrix of a model loaded for inference
    /// ([`crate::model::Storage::Inference`]). A backend may store it narrower than f32 (the CUDA
    /// backend at bf16 does); every operation still takes it where an f32 matrix goes, and
    /// [`Backend::download`] widens it back. By default, [`Backend::upload`].
    fn upload_matrix(&self, data: &[f32]) -> Result<Self::Buf, Error> {
        self.upload(data)
    }
    /// A zero-filled buffer of `len` values for a KV cache pool, which a backend may store
    /// narrower than f32 (the CUDA backend at bf16 does). By default, [`Backend::zeros`].
    fn kv_zeros(&self, len: usize) -> Result<Self::Buf, Error> {
        self.zeros(len)
    }
    /// A zero-filled buffer of `len` values for an activation that is read only as a matrix
    /// product's input (and, kept for training, by the backward pass): the normalised residual,
    /// the attention output and the SwiGLU output. A backend may store it narrower than f32 (the
    /// CUDA backend at bf16 does: its kernels write these already rounded for the product, so no
    /// f32 copy is kept). Operations that write or read these take either. By default,
    /// [`Backend::zeros`].
    fn operand_zeros(&self, len: usize) -> Result<Self::Buf, Error> {
        self.zeros(len)
    }
    /// The element type weight matrices and KV caches are stored at (f32 unless the backend says
    /// otherwise).
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    /// Checks that `plan` fits in the memory the backend has free, before it is allocated
    /// ([`crate::memory`]); a backend without a bound accepts every plan (the CPU refuses only one
    /// larger than the machine's RAM and swap).
    fn check_memory(&self, plan: &crate::memory::MemoryPlan) -> Result<(), Error> {
        let _ = plan;
        Ok(())
    }
    /// The contents of `buf`.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>, Error>;
    /// The number of values in `buf`.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Makes `layout` ready for the operations of one step.
    fn prepare(&self, layout: &BatchLayout) -> Result<Self::Layout, Error>;

    /// `out[t, :] = table[token_ids[t], :]` for every token of the layout; `table` is `[vocab, dim]`.
    fn embedding(
        &self,
        out: &mut Self::Buf,
        table: &Self::Buf,
        layout: &Self::Layout,
        dim: usize,
    ) -> Result<(), Error>;

    /// RMSNorm of each of `rows` rows of `x`: `out = x / sqrt(mean(x²) + eps) * weight`.
    fn rmsnorm(
        &self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        weight: &Self::Buf,
        rows: usize,
        eps: f32,
    ) -> Result<(), Error>;

    /// A linear layer over `rows` rows: `out[rows, out] (+)= x[rows, in] · Wᵀ (+ bias)`. With
    /// `accumulate` the product is added to `out` (a residual connection); otherwise `out` is
    /// overwritten.
    fn matmul(
        &self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        linear: &Linear<'_, Self::Buf>,
        rows: usize,
        accumulate: bool,
    ) -> Result<(), Error>;

    /// Rotates the q and k heads of the fused `qkv` rows in place by each token's position
    /// (Hugging Face's rotate-half convention: dimension `i` pairs with `i + head_dim / 2`).
    /// [`Rotation::Inverse`] rotates by minus each angle: the rotation's transpose, which is its
    /// backward pass, applied to the q and k gradients.
    fn rope(
        &self,
        qkv: &mut Self::Buf,
        layout: &Self::Layout,
        dims: &AttentionDims,
        inv_freq: &Self::Buf,
        rotation: Rotation,
    ) -> Result<(), Error>;

    /// Stores every token's k and v (from the fused `qkv` rows) in the paged cache of one layer, at the
    /// token's slot. A value cache is `[blocks, block_size, num_kv_heads, head_dim]`; a key cache holds
    /// each block transposed, `[blocks, num_kv_heads, head_dim, block_size]`, so that the scores of a
    /// block's positions are computed across positions.
    fn kv_store(
        &self,
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        qkv: &Self::Buf,
        layout: &Self::Layout,
        dims: &AttentionDims,
    ) -> Result<(), Error>;

    /// Causal attention of every token's query heads over its sequence's cached keys and values
    /// (positions `0..=position`, or the sliding window), read through the sequence's block table.
    /// `out` is `[tokens, num_heads * head_dim]`.
    fn paged_attention(
        &self,
        out: &mut Self::Buf,
        qkv: &Self::Buf,
        k_cache: &Self::Buf,
        v_cache: &Self::Buf,
        layout: &Self::Layout,
        dims: &AttentionDims,
    ) -> Result<(), Error>;

    /// `out[r, i] = silu(gate[r, i]) * up[r, i]` where `gate_up` rows are `gate | up`, each `inter` wide.
    fn swiglu(
        &self,
        out: &mut Self::Buf,
        gate_up: &Self::Buf,
        rows: usize,
        inter: usize,
    ) -> Result<(), Error>;

    /// `out[i, :] = x[layout.logit_rows[first + i], :]` for `i < count`: rows whose logits are wanted.
    fn gather_logit_rows(
        &self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        layout: &Self::Layout,
        rows: std::ops::Range<usize>,
        dim: usize,
    ) -> Result<(), Error>;

    /// Copies block `src` of a paged cache to block `dst` (copy-on-write of a shared, partly filled block).
    fn copy_block(
        &self,
        cache: &mut Self::Buf,
        src: usize,
        dst: usize,
        block_len: usize,
    ) -> Result<(), Error>;

    // ---- Training: the forward operations that keep what backward needs, and the backward passes.

    /// A new buffer holding a copy of `buf`.
    fn copy(&self, buf: &Self::Buf) -> Result<Self::Buf, Error>;

    /// Copies `src` into `dst`; both hold the same number of values.
    fn copy_into(&self, dst: &mut Self::Buf, src: &Self::Buf) -> Result<(), Error>;

    /// Sets every value of `buf` to zero.
    fn zero(&self, buf: &mut Self::Buf) -> Result<(), Error>;

    /// `x += y`, element-wise over the first `len` values.
    fn add_assign(&self, x: &mut Self::Buf, y: &Self::Buf, len: usize) -> Result<(), Error>;

    /// Causal self-attention within each sequence of the layout, whose tokens are all new and
    /// contiguous (a training batch: no cache). Also writes `lse[t, h]`, the log-sum-exp of each
    /// token's scores per head, which the backward pass uses to recompute the attention weights.
    fn causal_attention(
        &self,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
        qkv: &Self::Buf,
        layout: &Self::Layout,
        dims: &AttentionDims,
    ) -> Result<(), Error>;

    /// Backward of [`Backend::causal_attention`]: overwrites `d_qkv` with the gradients of q, k and v
    /// (after RoPE) given `d_out`, the forward's `out`, `lse` and `qkv`.
    fn causal_attention_backward(
        &self,
        d_qkv: &mut Self::Buf,
        d_out: &Self::Buf,
        forward: &AttentionSaved<'_, Self::Buf>,
        layout: &Self::Layout,
        dims: &AttentionDims,
    ) -> Result<(), Error>;

    /// Backward of [`Backend::rmsnorm`]: `d_x += ∂L/∂x` and `d_weight += ∂L/∂weight` given `d_out`.
    fn rmsnorm_backward(
        &self,
        grad: RmsNormGrad<'_, Self::Buf>,
        d_out: &Self::Buf,
        x: &Self::Buf,
        weight: &Self::Buf,
        rows: usize,
        eps: f32,
    ) -> Result<(), Error>;

    /// Backward of [`Backend::matmul`] for its input: `d_x[rows, in] (+)= d_out[rows, out] · W`
    /// (the bias plays no part).
    fn matmul_backward_input(
        &self,
        d_x: &mut Self::Buf,
        d_out: &Self::Buf,
        linear: &Linear<'_, Self::Buf>,
        rows: usize,
        accumulate: bool,
    ) -> Result<(), Error>;

    /// Backward of [`Backend::matmul`] for its weight and bias:
    /// `grad.weight[out, in] += d_out[rows, out]ᵀ · x[rows, in]` and
    /// `grad.bias[out] += Σ_i d_out[i, out]`.
    fn matmul_backward_weight(
        &self,
        grad: LinearGrad<'_, Self::Buf>,
        d_out: &Self::Buf,
        x: &Self::Buf,
        rows: usize,
    ) -> Result<(), Error>;

    /// Backward of [`Backend::swiglu`]: overwrites `d_gate_up` given `d_out` and the forward's `gate_up`.
    fn swiglu_backward(
        &self,
        d_gate_up: &mut Self::Buf,
        d_out: &Self::Buf,
        gate_up: &Self::Buf,
        rows: usize,
        inter: usize,
    ) -> Result<(), Error>;

    /// Backward of [`Backend::embedding`]: `d_table[token_ids[t], :] += d_out[t, :]` (in token order).
    fn embedding_backward(
        &self,
        d_table: &mut Self::Buf,
        d_out: &Self::Buf,
        layout: &Self::Layout,
        dim: usize,
    ) -> Result<(), Error>;

    /// `x[layout.logit_rows[first + i], :] += src[i, :]`: the backward of [`Backend::gather_logit_rows`].
    fn scatter_logit_rows(
        &self,
        x: &mut Self::Buf,
        src: &Self::Buf,
        layout: &Self::Layout,
        rows: std::ops::Range<usize>,
        dim: usize,
    ) -> Result<(), Error>;

    /// `Σ buf[i]²`, accumulated in f64 (the gradient norm's reduction).
    fn sum_squares(&self, buf: &Self::Buf) -> Result<f64, Error>;

    /// `buf[i] *= factor` (gradient clipping).
    fn scale(&self, buf: &mut Self::Buf, factor: f32) -> Result<(), Error>;

    /// One AdamW update of a parameter tensor and its moments, exactly
    /// [`lmsi_adamw::StepScalars::update`] element by element.
    fn adamw_update(
        &self,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        scalars: &lmsi_adamw::StepScalars,
    ) -> Result<(), Error>;

    /// Cross-entropy of logits rows against their targets (`layout.targets[rows]`, the next token of
    /// each logit row), with the gradient: replaces row `i` of `logits` by
    /// `scales[i] · (softmax(logits) - onehot(target))` and returns each row's loss
    /// `logsumexp(logits) - logits[target]` (unscaled). `scales` has one value per row: the weight
    /// of that token's loss in the gradient (a mean over tokens, a sequence's vote share, a
    /// policy-gradient advantage, any sign).
    fn cross_entropy(
        &self,
        logits: &mut Self::Buf,
        layout: &Self::Layout,
        rows: std::ops::Range<usize>,
        vocab: usize,
        scales: &[f32],
    ) -> Result<Vec<f32>, Error>;
}

/// A linear layer, `y = x · Wᵀ + b`: its weight `[out_features, in_features]` (Hugging Face's
/// layout), its optional bias `[out_features]`, and its shape, which travels with it.
#[derive(Debug)]
pub struct Linear<'a, Buf> {
    pub weight: &'a Buf,
    pub bias: Option<&'a Buf>,
    pub in_features: usize,
    pub out_features: usize,
}

impl<'a, Buf> Linear<'a, Buf> {
    /// A layer without bias.
    pub fn new(weight: &'a Buf, in_features: usize, out_features: usize) -> Self {
        Self {
            weight,
            bias: None,
            in_features,
            out_features,
        }
    }

    /// The same layer with `bias`.
    pub fn with_bias(self, bias: Option<&'a Buf>) -> Self {
        Self { bias, ..self }
    }
}

/// Where the gradients of a [`Linear`]'s weight and bias are added, with its shape.
#[derive(Debug)]
pub struct LinearGrad<'a, Buf> {
    pub weight: &'a mut Buf,
    pub bias: Option<&'a mut Buf>,
    pub in_features: usize,
    pub out_features: usize,
}

/// What [`Backend::causal_attention`] was given and gave, which its backward pass reads: the fused
/// `qkv` rows, the output and each token's log-sum-exp per head.
#[derive(Debug)]
pub struct AttentionSaved<'a, Buf> {
    pub qkv: &'a Buf,
    pub out: &'a Buf,
    pub lse: &'a Buf,
}

/// Where the backward pass of [`Backend::rmsnorm`] adds the gradients of the norm's input and
/// weight.
#[derive(Debug)]
pub struct RmsNormGrad<'a, Buf> {
    pub input: &'a mut Buf,
    pub weight: &'a mut Buf,
}

/// Which way [`Backend::rope`] turns: by each position's angles, or back by minus them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The rotation of the forward pass.
    Forward,
    /// The inverse rotation: the backward pass of [`Rotation::Forward`].
    Inverse,
}

/// Head geometry of attention, shared by the attention operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDims {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Score scale, `1 / sqrt(head_dim)`.
    pub scale: f32,
    /// Keys older than this many positions are not attended to (Mistral's sliding window).
    pub window: Option<usize>,
    /// Positions per block of the paged cache.
    pub block_size: usize,
}

impl AttentionDims {
    /// Width of a fused q|k|v row.
    pub fn qkv_dim(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }

    /// Values per block of one layer's k (or v) cache.
    pub fn block_len(&self) -> usize {
        self.block_size * self.num_kv_heads * self.head_dim
    }

    /// The first position a token at `position` attends to.
    pub fn first_visible(&self, position: usize) -> usize {
        match self.window {
            Some(w) => (position + 1).saturating_sub(w),
            None => 0,
        }
    }
}

/// One sequence's part of a step: its new tokens and where its cached keys and values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqLayout {
    /// Index of the sequence's first new token in the packed step.
    pub token_start: u32,
    /// How many new tokens the sequence has in this step.
    pub num_tokens: u32,
    /// Length of the sequence after this step (cached positions plus the new tokens).
    pub context_len: u32,
    /// Start of the sequence's block table in [`BatchLayout::block_tables`].
    pub table_start: u32,
}

/// Where the tokens of one step come from and where their keys and values go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchLayout {
    pub token_ids: Vec<u32>,
    /// Position of each token in its sequence.
    pub positions: Vec<u32>,
    /// Cache slot (`block * block_size + offset`) where each token's key and value are stored.
    pub slots: Vec<u32>,
    pub seqs: Vec<SeqLayout>,
    /// The block tables of all sequences, one after the other.
    pub block_tables: Vec<u32>,
    /// Tokens whose logits the step returns, in order.
    pub logit_rows: Vec<u32>,
    /// In training, the token each logit row should predict (one per entry of `logit_rows`).
    pub targets: Vec<u32>,
}

/// Errs naming the first of `ids` outside a vocabulary of `vocab` tokens (`what` says what the ids
/// are): the one check of token ids against the model, made before a step reaches a backend.
pub fn check_token_ids(what: &str, ids: &[u32], vocab: usize) -> Result<(), Error> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(id) => Err(Error::Input(format!(
            "{what} {id} is outside the vocabulary ({vocab} tokens)"
        ))),
        None => Ok(()),
    }
}

/// Errs unless every one of `ids` is a row of a table of `table_len` values, `dim` per row: the
/// buffer check of an embedding gather or scatter (`what` names it), in every backend.
pub(crate) fn check_table_rows(
    what: &str,
    ids: &[u32],
    table_len: usize,
    dim: usize,
) -> Result<(), Error> {
    let rows = table_len.checked_div(dim).unwrap_or(0);
    match ids.iter().find(|&&id| id as usize >= rows) {
        Some(id) => Err(Error::Backend(format!(
            "{what}: row {id} is outside the table's {rows} rows"
        ))),
        None => Ok(()),
    }
}

impl BatchLayout {
    /// Checks the step against a model of `vocab` tokens before any backend runs it: every token
    /// id and target inside the vocabulary, a position for every token, every sequence's tokens
    /// and every logit row among the step's tokens, and a target per logit row where there are
    /// targets. Backends then check only their buffers. (A step's slots come from its KV cache,
    /// which hands out only its own.)
    pub fn check(&self, vocab: usize) -> Result<(), Error> {
        check_token_ids("token id", &self.token_ids, vocab)?;
        check_token_ids("target token", &self.targets, vocab)?;
        let tokens = self.num_tokens();
        let bad = |message: String| Err(Error::Input(format!("a step's layout: {message}")));
        if self.positions.len() != tokens {
            return bad(format!(
                "{} positions for {tokens} tokens",
                self.positions.len()
            ));
        }
        for (i, seq) in self.seqs.iter().enumerate() {
            if seq.token_start as usize + seq.num_tokens as usize > tokens {
                return bad(format!(
                    "sequence {i}'s tokens end past the step's {tokens}"
                ));
            }
        }
        if let Some(row) = self.logit_rows.iter().find(|&&r| r as usize >= tokens) {
            return bad(format!("logit row {row} is not one of its {tokens} tokens"));
        }
        if !self.targets.is_empty() && self.targets.len() != self.logit_rows.len() {
            return bad(format!(
                "{} targets for {} logit rows",
                self.targets.len(),
                self.logit_rows.len()
            ));
        }
        Ok(())
    }

    /// Number of tokens in the step.
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// The sequence each token belongs to.
    pub fn token_seq(&self) -> Vec<u32> {
        let mut owner = vec![0; self.num_tokens()];
        for (s, seq) in self.seqs.iter().enumerate() {
            let start = seq.token_start as usize;
            owner[start..start + seq.num_tokens as usize].fill(s as u32);
        }
        owner
    }
}
