//! One launch method of [`Device`] per kernel, with the kernel's name and arguments.
//!
//! Each method takes the parameter struct and the kernel's buffers in its order (outputs first)
//! as any cudarc device memory (`CudaSlice`, `CudaView`, `CudaViewMut`), checks them with
//! [`crate::launch`], and enqueues the kernel on [`Device::stream`]; nothing is launched when there
//! is no work. The methods are [`Sim`](crate::sim::Sim)'s, with device buffers for host slices.

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::Device;
use crate::Error;
use crate::launch::{self, Launch};
use crate::params::*;

fn config(l: Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: l.grid,
        block_dim: l.block,
        shared_mem_bytes: l.shared_bytes,
    }
}

macro_rules! kernels {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($params:ty; $($out:ident: $out_ty:ty),+; $($input:ident: $in_ty:ty),*);
    )*) => {
        impl Device {
            $(
                $(#[$doc])*
                #[allow(clippy::too_many_arguments)]
                pub fn $name(
                    &self,
                    p: &$params,
                    $($out: &mut impl DevicePtrMut<$out_ty>,)+
                    $($input: &impl DevicePtr<$in_ty>,)*
                ) -> Result<(), Error> {
                    let Some(l) = launch::$name(p, $($out.len(),)+ $($input.len(),)*)? else {
                        return Ok(());
                    };
                    let function = self.function(stringify!($name), l.shared_bytes)?;
                    let stream: &CudaStream = self.stream();
                    // Each pointer comes with a guard that records the access once dropped,
                    // after the launch.
                    $(let $out = $out.device_ptr_mut(stream);)+
                    $(let $input = $input.device_ptr(stream);)*
                    let mut args = stream.launch_builder(&function);
                    args.arg(p);
                    $(args.arg(&$out.0);)+
                    $(args.arg(&$input.0);)*
                    // SAFETY: the arguments are the kernel's (its parameter struct by value, then
                    // one device pointer per buffer in the order of kernels/*.cu), and
                    // `launch::` checked every buffer against what the kernel touches.
                    unsafe { args.launch(config(l)) }?;
                    Ok(())
                }
            )*
        }
    };
}

kernels! {
    /// `out[i, :] = table[index[i], :]` (the embedding lookup, the logit-row gather).
    fn gather_rows(LmsiRowsParams; out: f32; table: f32, index: u32);
    /// `table[index[i], :] += src[i, :]` in order of `i` (the embedding backward, the logit-row
    /// scatter).
    fn scatter_add_rows(LmsiRowsParams; table: f32; src: f32, index: u32);
    /// RMSNorm of each row.
    fn rmsnorm_forward(LmsiRmsnormParams; out: f32; x: f32, weight: f32);
    /// RMSNorm backward, first pass: `d_x += ...` and per-block partial weight gradients
    /// ([`launch::rmsnorm_partial_rows`] rows of `dim`).
    fn rmsnorm_backward(LmsiRmsnormParams; d_x: f32, partial_dw: f32; d_out: f32, x: f32, weight: f32);
    /// RMSNorm backward, second pass: `d_weight +=` the partials, in block order.
    fn rmsnorm_backward_reduce(LmsiRmsnormParams; d_weight: f32; partial_dw: f32);
    /// Rotary embedding of the q and k heads of fused q|k|v rows, in place (`p.inverse`: backward).
    fn rope(LmsiRopeParams; qkv: f32; positions: u32, inv_freq: f32);
    /// `out = silu(gate) * up`.
    fn swiglu_forward(LmsiSwigluParams; out: f32; gate_up: f32);
    /// SwiGLU backward: overwrites `d_gate_up`.
    fn swiglu_backward(LmsiSwigluParams; d_gate_up: f32; d_out: f32, gate_up: f32);
    /// `x += y`.
    fn add_assign(LmsiVecParams; x: f32; y: f32);
    /// `x *= p.factor`.
    fn scale_assign(LmsiVecParams; x: f32;);
    /// `out[r, c] += bias[c]`: a linear layer's bias.
    fn bias_add(LmsiBiasParams; out: f32; bias: f32);
    /// `d_bias[c] +=` the sum of column `c` of `d_out`, in row order: the bias gradient.
    fn bias_grad(LmsiBiasParams; d_bias: f32; d_out: f32);
    /// Cross-entropy of each row against its target: the row becomes its scaled gradient.
    fn cross_entropy(LmsiCrossEntropyParams; logits: f32, losses: f32; targets: u32);
    /// One AdamW step of one tensor, in place.
    fn adamw_update(LmsiAdamwParams; param: f32, m: f32, v: f32; grad: f32);
    /// Per-block sums of squares of `x` into `partials[p.first_partial..]`.
    fn sum_squares_partial(LmsiSumSquaresParams; partials: f64; x: f32);
    /// `sum[0] =` the sum of `partials[..p.count]`.
    fn sum_partials(LmsiNormParams; sum: f64; partials: f64);
    /// Scales `x` so that the global norm `sqrt(sum[0])` is at most `p.max_norm`.
    fn clip_scale(LmsiNormParams; x: f32; sum: f64);
    /// Samples one token per row.
    fn sample_rows(
        LmsiSampleParams;
        tokens: u32, logprobs: f32, sampling_logprobs: f32, status: i32;
        logits: f32, sequences: u64, steps: u32
    );
    /// Stores every token's k and v in the paged caches at its slot.
    fn kv_store(LmsiKvStoreParams; k_cache: f32, v_cache: f32; qkv: f32, slots: u32);
    /// Attention of new tokens over the paged cache, with the work items of a
    /// [`PagedPlan`](crate::plan::PagedPlan) (its two arrays, uploaded).
    fn paged_attention(
        LmsiPagedAttentionParams;
        out: f32;
        qkv: f32, k_cache: f32, v_cache: f32, positions: u32, row_tables: u32, block_tables: u32,
        item_offsets: u32, item_rows: u32
    );
    /// Causal attention of a packed training batch with its log-sum-exp (`items`:
    /// [`plan::query_items`](crate::plan::query_items), uploaded).
    fn causal_attention_forward(LmsiCausalAttentionParams; out: f32, lse: f32; qkv: f32, items: LmsiAttnItem);
    /// `delta[t, h] = d_out[t, h] · out[t, h]`.
    fn causal_attention_backward_delta(LmsiCausalAttentionParams; delta: f32; d_out: f32, out: f32);
    /// The q part of `d_qkv` (`items`: [`plan::query_items`](crate::plan::query_items)).
    fn causal_attention_backward_dq(
        LmsiCausalAttentionParams;
        d_qkv: f32;
        d_out: f32, lse: f32, delta: f32, qkv: f32, items: LmsiAttnItem
    );
    /// The k and v parts of `d_qkv` (`items`: [`plan::key_items`](crate::plan::key_items)).
    fn causal_attention_backward_dkdv(
        LmsiCausalAttentionParams;
        d_qkv: f32;
        d_out: f32, lse: f32, delta: f32, qkv: f32, items: LmsiAttnItem
    );
}
