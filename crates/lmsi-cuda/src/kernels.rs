//! The one Rust table of the kernels: every kernel's name, parameter struct and buffers, grouped by
//! the file that defines it.
//!
//! [`for_each_kernel!`](crate::for_each_kernel) hands the table to a macro, which stamps out what
//! each kernel needs: the list of kernel files ([`crate::sources::FILES`]), the shim's host-slice
//! methods ([`crate::sim::Sim`]), the device methods ([`crate::Device`]) and the kernel tests'
//! harness. The C side has the matching list in `kernels/include/lmsi_kernels.h`. Adding a kernel
//! means: write it in `kernels/`, add one line to each list, write its checks in
//! [`crate::launch`] (the one place where its grid and buffer lengths are argued) and its test.
//!
//! A line reads `fn name(Params; outputs; inputs);`, each buffer `name: element type`, in the
//! kernel's argument order (outputs, which it writes, before inputs, which it only reads). A bf16
//! buffer (`half::bf16`) is the C side's `LmsiBf16`, the same 16 bits.

/// Calls `$callback!` with the whole kernel table:
/// `"file.cu" { /// doc \n fn name(Params; out: T, ...; input: T, ...); ... } ...`.
///
/// ```
/// macro_rules! count {
///     ($($file:literal { $($(#[$doc:meta])* fn $name:ident($($sig:tt)*);)* })*) => {
///         [$($(stringify!($name)),*),*].len()
///     };
/// }
/// assert_eq!(lmsi_cuda::for_each_kernel!(count), 32);
/// ```
#[macro_export]
macro_rules! for_each_kernel {
    ($callback:ident) => {
        $callback! {
            "adamw.cu" {
                /// One AdamW step of one tensor, in place.
                fn adamw_update(LmsiAdamwParams; param: f32, m: f32, v: f32; grad: f32);
                /// Per-block sums of squares of `x` into `partials[p.first_partial..]`.
                fn sum_squares_partial(LmsiSumSquaresParams; partials: f64; x: f32);
                /// `sum[0] =` the sum of `partials[..p.count]`.
                fn sum_partials(LmsiNormParams; sum: f64; partials: f64);
                /// Scales `x` so that the global norm `sqrt(sum[0])` is at most `p.max_norm`.
                fn clip_scale(LmsiNormParams; x: f32; sum: f64);
            }
            "attention.cu" {
                /// Stores every token's k and v in the paged caches at its slot.
                fn kv_store(LmsiKvStoreParams; k_cache: f32, v_cache: f32; qkv: f32, slots: u32);
                /// [`kv_store`](Self::kv_store) into bf16 caches, rounding to nearest even.
                fn kv_store_bf16(
                    LmsiKvStoreParams; k_cache: half::bf16, v_cache: half::bf16; qkv: f32, slots: u32
                );
                /// Attention of new tokens over the paged cache, with the work items of a
                /// [`PagedPlan`](crate::plan::PagedPlan) (`item_offsets`, `item_rows`).
                fn paged_attention(
                    LmsiPagedAttentionParams;
                    out: f32;
                    qkv: f32, k_cache: f32, v_cache: f32, positions: u32, row_tables: u32,
                    block_tables: u32, item_offsets: u32, item_rows: u32
                );
                /// [`paged_attention`](Self::paged_attention) over bf16 caches, writing bf16.
                fn paged_attention_bf16(
                    LmsiPagedAttentionParams;
                    out: half::bf16;
                    qkv: f32, k_cache: half::bf16, v_cache: half::bf16, positions: u32,
                    row_tables: u32, block_tables: u32, item_offsets: u32, item_rows: u32
                );
                /// Causal attention of a packed training batch, with its log-sum-exp (`items`:
                /// [`query_items`](crate::plan::query_items)).
                fn causal_attention_forward(
                    LmsiCausalAttentionParams; out: f32, lse: f32; qkv: f32, items: LmsiAttnItem
                );
                /// [`causal_attention_forward`](Self::causal_attention_forward) writing `out` in
                /// bf16.
                fn causal_attention_forward_bf16(
                    LmsiCausalAttentionParams; out: half::bf16, lse: f32; qkv: f32, items: LmsiAttnItem
                );
                /// `delta[t, h] = d_out[t, h] · out[t, h]`, the backward pass's first step.
                fn causal_attention_backward_delta(
                    LmsiCausalAttentionParams; delta: f32; d_out: f32, out: f32
                );
                /// [`causal_attention_backward_delta`](Self::causal_attention_backward_delta)
                /// of a bf16 `out`.
                fn causal_attention_backward_delta_bf16(
                    LmsiCausalAttentionParams; delta: f32; d_out: f32, out: half::bf16
                );
                /// The q part of `d_qkv` (`items`: [`query_items`](crate::plan::query_items)).
                fn causal_attention_backward_dq(
                    LmsiCausalAttentionParams;
                    d_qkv: f32;
                    d_out: f32, lse: f32, delta: f32, qkv: f32, items: LmsiAttnItem
                );
                /// The k and v parts of `d_qkv` (`items`: [`key_items`](crate::plan::key_items)).
                fn causal_attention_backward_dkdv(
                    LmsiCausalAttentionParams;
                    d_qkv: f32;
                    d_out: f32, lse: f32, delta: f32, qkv: f32, items: LmsiAttnItem
                );
            }
            "convert.cu" {
                /// `out = x` rounded to the nearest bf16, ties to even.
                fn f32_to_bf16(LmsiVecParams; out: half::bf16; x: f32);
            }
            "cross_entropy.cu" {
                /// Cross-entropy of each row against its target: the row becomes its gradient
                /// scaled by `scales[row]`, the loss goes to `losses`.
                fn cross_entropy(
                    LmsiCrossEntropyParams; logits: f32, losses: f32; targets: u32, scales: f32
                );
            }
            "embedding.cu" {
                /// `out[i, :] = table[index[i], :]` (the embedding lookup, the logit-row gather).
                fn gather_rows(LmsiRowsParams; out: f32; table: f32, index: u32);
                /// [`gather_rows`](Self::gather_rows) from a bf16 table, widened exactly.
                fn gather_rows_bf16(LmsiRowsParams; out: f32; table: half::bf16, index: u32);
                /// `table[index[i], :] += src[i, :]` in order of `i` (the embedding backward, the
                /// logit-row scatter).
                fn scatter_add_rows(LmsiRowsParams; table: f32; src: f32, index: u32);
            }
            "residual.cu" {
                /// `x += y`.
                fn add_assign(LmsiVecParams; x: f32; y: f32);
                /// `x *= p.factor`.
                fn scale_assign(LmsiVecParams; x: f32;);
                /// `out[r, c] += bias[c]`: a linear layer's bias.
                fn bias_add(LmsiBiasParams; out: f32; bias: f32);
                /// `d_bias[c] +=` the sum of column `c` of `d_out`, in row order: the bias
                /// gradient.
                fn bias_grad(LmsiBiasParams; d_bias: f32; d_out: f32);
            }
            "rmsnorm.cu" {
                /// RMSNorm of each row.
                fn rmsnorm_forward(LmsiRmsnormParams; out: f32; x: f32, weight: f32);
                /// [`rmsnorm_forward`](Self::rmsnorm_forward) writing bf16.
                fn rmsnorm_forward_bf16(LmsiRmsnormParams; out: half::bf16; x: f32, weight: f32);
                /// RMSNorm backward, first pass: `d_x += ...` and the per-block partial weight
                /// gradients ([`rmsnorm_partial_rows`](crate::launch::rmsnorm_partial_rows) rows
                /// of `dim`).
                fn rmsnorm_backward(
                    LmsiRmsnormParams; d_x: f32, partial_dw: f32; d_out: f32, x: f32, weight: f32
                );
                /// RMSNorm backward, second pass: `d_weight +=` the partials, in block order.
                fn rmsnorm_backward_reduce(LmsiRmsnormParams; d_weight: f32; partial_dw: f32);
            }
            "rope.cu" {
                /// Rotary embedding of the q and k heads of fused q|k|v rows, in place
                /// (`p.inverse`: backward).
                fn rope(LmsiRopeParams; qkv: f32; positions: u32, inv_freq: f32);
            }
            "sampling.cu" {
                /// Samples one token per row (see `kernels/sampling.cu`).
                fn sample_rows(
                    LmsiSampleParams;
                    tokens: u32, logprobs: f32, sampling_logprobs: f32, status: i32;
                    logits: f32, sequences: u64, steps: u32
                );
            }
            "swiglu.cu" {
                /// `out = silu(gate) * up`.
                fn swiglu_forward(LmsiSwigluParams; out: f32; gate_up: f32);
                /// [`swiglu_forward`](Self::swiglu_forward) writing bf16.
                fn swiglu_forward_bf16(LmsiSwigluParams; out: half::bf16; gate_up: f32);
                /// SwiGLU backward: overwrites `d_gate_up`.
                fn swiglu_backward(LmsiSwigluParams; d_gate_up: f32; d_out: f32, gate_up: f32);
            }
        }
    };
}
