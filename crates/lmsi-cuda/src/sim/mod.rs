//! The kernels on the CPU: each `kernels/*.cu` file compiled as C++20 against the shim in
//! `kernels/sim/` and run on host slices, with the grid, block and shared memory of the real
//! launch ([`crate::launch`]).
//!
//! The shim runs every CUDA thread of a block as a fiber with a 64 KiB stack, a block's fibers on
//! one OS thread, blocks in parallel on a few OS threads. [`Schedule`] picks the order in which the
//! fibers run between barriers: a kernel missing a `__syncthreads` reads stale shared memory under
//! one of them. A barrier that only part of a block reaches, and a deadlock, are reported as
//! [`Error::Sim`] rather than hanging. See `kernels/sim/sim.h` for the whole model.
//!
//! ```
//! use lmsi_cuda::launch::rmsnorm_params;
//! use lmsi_cuda::sim::{Schedule, Sim};
//!
//! let x = [3.0f32, 4.0];
//! let mut out = [f32::NAN; 2];
//! Sim::new(Schedule::Reversed).rmsnorm_forward(&rmsnorm_params(1, 2, 0.0), &mut out, &x, &[1.0, 2.0])?;
//! // rms(3, 4) = sqrt(12.5)
//! assert!((out[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
//! assert!((out[1] - 8.0 / 12.5f32.sqrt()).abs() < 1e-6);
//! # Ok::<(), lmsi_cuda::Error>(())
//! ```

#[allow(non_camel_case_types, clippy::all)]
mod ffi_generated;
pub mod selftest;

use std::ffi::{CStr, c_int};

use crate::Error;
use crate::launch::{self, Launch};
use crate::params::*;
use ffi_generated as ffi;

/// Stack size of each simulated CUDA thread (fiber), in bytes; a guard page below each stack
/// turns an overflow into a fault.
pub const FIBER_STACK_BYTES: u32 = ffi::LMSI_SIM_STACK_BYTES;

/// The order in which the shim resumes a block's threads (fibers) between barriers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// By thread index, lowest first.
    #[default]
    InOrder,
    /// By thread index, highest first.
    Reversed,
    /// A new random order every round, from this seed (and the block index).
    Shuffled(u64),
}

/// Runs kernels through the CPU shim.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sim {
    schedule: Schedule,
    os_threads: u32,
}

impl Sim {
    /// A shim with the given fiber order, running blocks on one OS thread per core.
    pub fn new(schedule: Schedule) -> Self {
        Sim {
            schedule,
            os_threads: 0,
        }
    }

    /// Runs blocks on `n` OS threads (0: one per core).
    pub fn with_os_threads(self, n: u32) -> Self {
        Sim {
            os_threads: n,
            ..self
        }
    }

    /// The fiber order.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Runs `call` with the shim's description of `launch`; nothing when there is no work.
    fn run(
        &self,
        launch: Option<Launch>,
        call: impl FnOnce(*const ffi::LmsiSimLaunch) -> c_int,
    ) -> Result<(), Error> {
        let Some(l) = launch else {
            return Ok(());
        };
        let (schedule, seed) = match self.schedule {
            Schedule::InOrder => (ffi::LMSI_SIM_IN_ORDER, 0),
            Schedule::Reversed => (ffi::LMSI_SIM_REVERSED, 0),
            Schedule::Shuffled(seed) => (ffi::LMSI_SIM_SHUFFLED, seed),
        };
        let cfg = ffi::LmsiSimLaunch {
            grid: [l.grid.0, l.grid.1, l.grid.2],
            block: [l.block.0, l.block.1, l.block.2],
            shared_bytes: l.shared_bytes,
            schedule,
            seed,
            os_threads: self.os_threads,
        };
        if call(&cfg) == 0 {
            return Ok(());
        }
        // SAFETY: the shim returns a NUL-terminated thread-local string, valid until the next
        // launch on this thread; it is copied out at once.
        let message = unsafe { CStr::from_ptr(ffi::lmsi_sim_last_error()) };
        Err(Error::Sim(message.to_string_lossy().into_owned()))
    }

    // Every wrapper below checks the buffers with `crate::launch`, whose checks bound every access
    // the kernel makes to them: that is the SAFETY argument of each FFI call. The methods, their
    // arguments and their order are those of the kernels, and of `cuda::Device`.

    /// `out[i, :] = table[index[i], :]` (the embedding lookup, the logit-row gather).
    pub fn gather_rows(
        &self,
        p: &LmsiRowsParams,
        out: &mut [f32],
        table: &[f32],
        index: &[u32],
    ) -> Result<(), Error> {
        let l = launch::gather_rows(p, out.len(), table.len(), index.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_gather_rows(c, *p, out.as_mut_ptr(), table.as_ptr(), index.as_ptr())
        })
    }

    /// `table[index[i], :] += src[i, :]` in order of `i` (the embedding backward, the logit-row
    /// scatter).
    pub fn scatter_add_rows(
        &self,
        p: &LmsiRowsParams,
        table: &mut [f32],
        src: &[f32],
        index: &[u32],
    ) -> Result<(), Error> {
        let l = launch::scatter_add_rows(p, table.len(), src.len(), index.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_scatter_add_rows(c, *p, table.as_mut_ptr(), src.as_ptr(), index.as_ptr())
        })
    }

    /// RMSNorm of each row.
    pub fn rmsnorm_forward(
        &self,
        p: &LmsiRmsnormParams,
        out: &mut [f32],
        x: &[f32],
        weight: &[f32],
    ) -> Result<(), Error> {
        let l = launch::rmsnorm_forward(p, out.len(), x.len(), weight.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_rmsnorm_forward(c, *p, out.as_mut_ptr(), x.as_ptr(), weight.as_ptr())
        })
    }

    /// RMSNorm backward, first pass: `d_x += ...` and the per-block partial weight gradients
    /// ([`launch::rmsnorm_partial_rows`] rows of `dim`).
    pub fn rmsnorm_backward(
        &self,
        p: &LmsiRmsnormParams,
        d_x: &mut [f32],
        partial_dw: &mut [f32],
        d_out: &[f32],
        x: &[f32],
        weight: &[f32],
    ) -> Result<(), Error> {
        let l = launch::rmsnorm_backward(
            p,
            d_x.len(),
            partial_dw.len(),
            d_out.len(),
            x.len(),
            weight.len(),
        )?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_rmsnorm_backward(
                c,
                *p,
                d_x.as_mut_ptr(),
                partial_dw.as_mut_ptr(),
                d_out.as_ptr(),
                x.as_ptr(),
                weight.as_ptr(),
            )
        })
    }

    /// RMSNorm backward, second pass: `d_weight += ` the partials, in block order.
    pub fn rmsnorm_backward_reduce(
        &self,
        p: &LmsiRmsnormParams,
        d_weight: &mut [f32],
        partial_dw: &[f32],
    ) -> Result<(), Error> {
        let l = launch::rmsnorm_backward_reduce(p, d_weight.len(), partial_dw.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_rmsnorm_backward_reduce(c, *p, d_weight.as_mut_ptr(), partial_dw.as_ptr())
        })
    }

    /// Rotary embedding of the q and k heads of fused q|k|v rows, in place (`p.inverse`: backward).
    pub fn rope(
        &self,
        p: &LmsiRopeParams,
        qkv: &mut [f32],
        positions: &[u32],
        inv_freq: &[f32],
    ) -> Result<(), Error> {
        let l = launch::rope(p, qkv.len(), positions.len(), inv_freq.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_rope(
                c,
                *p,
                qkv.as_mut_ptr(),
                positions.as_ptr(),
                inv_freq.as_ptr(),
            )
        })
    }

    /// `out = silu(gate) * up`.
    pub fn swiglu_forward(
        &self,
        p: &LmsiSwigluParams,
        out: &mut [f32],
        gate_up: &[f32],
    ) -> Result<(), Error> {
        let l = launch::swiglu_forward(p, out.len(), gate_up.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_swiglu_forward(c, *p, out.as_mut_ptr(), gate_up.as_ptr())
        })
    }

    /// SwiGLU backward: overwrites `d_gate_up`.
    pub fn swiglu_backward(
        &self,
        p: &LmsiSwigluParams,
        d_gate_up: &mut [f32],
        d_out: &[f32],
        gate_up: &[f32],
    ) -> Result<(), Error> {
        let l = launch::swiglu_backward(p, d_gate_up.len(), d_out.len(), gate_up.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_swiglu_backward(
                c,
                *p,
                d_gate_up.as_mut_ptr(),
                d_out.as_ptr(),
                gate_up.as_ptr(),
            )
        })
    }

    /// `x += y`.
    pub fn add_assign(&self, p: &LmsiVecParams, x: &mut [f32], y: &[f32]) -> Result<(), Error> {
        let l = launch::add_assign(p, x.len(), y.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_add_assign(c, *p, x.as_mut_ptr(), y.as_ptr())
        })
    }

    /// `x *= p.factor`.
    pub fn scale_assign(&self, p: &LmsiVecParams, x: &mut [f32]) -> Result<(), Error> {
        let l = launch::scale_assign(p, x.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_scale_assign(c, *p, x.as_mut_ptr())
        })
    }

    /// `out[r, c] += bias[c]`: a linear layer's bias.
    pub fn bias_add(&self, p: &LmsiBiasParams, out: &mut [f32], bias: &[f32]) -> Result<(), Error> {
        let l = launch::bias_add(p, out.len(), bias.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_bias_add(c, *p, out.as_mut_ptr(), bias.as_ptr())
        })
    }

    /// `d_bias[c] +=` the sum of column `c` of `d_out`, in row order: the bias gradient.
    pub fn bias_grad(
        &self,
        p: &LmsiBiasParams,
        d_bias: &mut [f32],
        d_out: &[f32],
    ) -> Result<(), Error> {
        let l = launch::bias_grad(p, d_bias.len(), d_out.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_bias_grad(c, *p, d_bias.as_mut_ptr(), d_out.as_ptr())
        })
    }

    /// Cross-entropy of each row against its target: the row becomes its scaled gradient, the
    /// loss goes to `losses`.
    pub fn cross_entropy(
        &self,
        p: &LmsiCrossEntropyParams,
        logits: &mut [f32],
        losses: &mut [f32],
        targets: &[u32],
    ) -> Result<(), Error> {
        let l = launch::cross_entropy(p, logits.len(), losses.len(), targets.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_cross_entropy(
                c,
                *p,
                logits.as_mut_ptr(),
                losses.as_mut_ptr(),
                targets.as_ptr(),
            )
        })
    }

    /// One AdamW step of one tensor, in place.
    pub fn adamw_update(
        &self,
        p: &LmsiAdamwParams,
        param: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        grad: &[f32],
    ) -> Result<(), Error> {
        let l = launch::adamw_update(p, param.len(), m.len(), v.len(), grad.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_adamw_update(
                c,
                *p,
                param.as_mut_ptr(),
                m.as_mut_ptr(),
                v.as_mut_ptr(),
                grad.as_ptr(),
            )
        })
    }

    /// Per-block sums of squares of `x` into `partials[p.first_partial..]`.
    pub fn sum_squares_partial(
        &self,
        p: &LmsiSumSquaresParams,
        partials: &mut [f64],
        x: &[f32],
    ) -> Result<(), Error> {
        let l = launch::sum_squares_partial(p, partials.len(), x.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_sum_squares_partial(c, *p, partials.as_mut_ptr(), x.as_ptr())
        })
    }

    /// `sum[0] = ` the sum of `partials[..p.count]`.
    pub fn sum_partials(
        &self,
        p: &LmsiNormParams,
        sum: &mut [f64],
        partials: &[f64],
    ) -> Result<(), Error> {
        let l = launch::sum_partials(p, sum.len(), partials.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_sum_partials(c, *p, sum.as_mut_ptr(), partials.as_ptr())
        })
    }

    /// Scales `x` so that the global norm `sqrt(sum[0])` is at most `p.max_norm`.
    pub fn clip_scale(&self, p: &LmsiNormParams, x: &mut [f32], sum: &[f64]) -> Result<(), Error> {
        let l = launch::clip_scale(p, x.len(), sum.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_clip_scale(c, *p, x.as_mut_ptr(), sum.as_ptr())
        })
    }

    /// Samples one token per row (see `kernels/sampling.cu`).
    #[allow(clippy::too_many_arguments)]
    pub fn sample_rows(
        &self,
        p: &LmsiSampleParams,
        tokens: &mut [u32],
        logprobs: &mut [f32],
        sampling_logprobs: &mut [f32],
        status: &mut [i32],
        logits: &[f32],
        sequences: &[u64],
        steps: &[u32],
    ) -> Result<(), Error> {
        let l = launch::sample_rows(
            p,
            tokens.len(),
            logprobs.len(),
            sampling_logprobs.len(),
            status.len(),
            logits.len(),
            sequences.len(),
            steps.len(),
        )?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_sample_rows(
                c,
                *p,
                tokens.as_mut_ptr(),
                logprobs.as_mut_ptr(),
                sampling_logprobs.as_mut_ptr(),
                status.as_mut_ptr(),
                logits.as_ptr(),
                sequences.as_ptr(),
                steps.as_ptr(),
            )
        })
    }

    /// Stores every token's k and v in the paged caches at its slot.
    pub fn kv_store(
        &self,
        p: &LmsiKvStoreParams,
        k_cache: &mut [f32],
        v_cache: &mut [f32],
        qkv: &[f32],
        slots: &[u32],
    ) -> Result<(), Error> {
        let l = launch::kv_store(p, k_cache.len(), v_cache.len(), qkv.len(), slots.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_kv_store(
                c,
                *p,
                k_cache.as_mut_ptr(),
                v_cache.as_mut_ptr(),
                qkv.as_ptr(),
                slots.as_ptr(),
            )
        })
    }

    /// Attention of new tokens over the paged cache, with the work items of a
    /// [`PagedPlan`](crate::plan::PagedPlan) (`item_offsets`, `item_rows`).
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention(
        &self,
        p: &LmsiPagedAttentionParams,
        out: &mut [f32],
        qkv: &[f32],
        k_cache: &[f32],
        v_cache: &[f32],
        positions: &[u32],
        row_tables: &[u32],
        block_tables: &[u32],
        item_offsets: &[u32],
        item_rows: &[u32],
    ) -> Result<(), Error> {
        let l = launch::paged_attention(
            p,
            out.len(),
            qkv.len(),
            k_cache.len(),
            v_cache.len(),
            positions.len(),
            row_tables.len(),
            block_tables.len(),
            item_offsets.len(),
            item_rows.len(),
        )?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_paged_attention(
                c,
                *p,
                out.as_mut_ptr(),
                qkv.as_ptr(),
                k_cache.as_ptr(),
                v_cache.as_ptr(),
                positions.as_ptr(),
                row_tables.as_ptr(),
                block_tables.as_ptr(),
                item_offsets.as_ptr(),
                item_rows.as_ptr(),
            )
        })
    }

    /// Causal attention of a packed training batch, with its log-sum-exp (`items`:
    /// [`query_items`](crate::plan::query_items)).
    pub fn causal_attention_forward(
        &self,
        p: &LmsiCausalAttentionParams,
        out: &mut [f32],
        lse: &mut [f32],
        qkv: &[f32],
        items: &[LmsiAttnItem],
    ) -> Result<(), Error> {
        let l = launch::causal_attention_forward(p, out.len(), lse.len(), qkv.len(), items.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_causal_attention_forward(
                c,
                *p,
                out.as_mut_ptr(),
                lse.as_mut_ptr(),
                qkv.as_ptr(),
                items.as_ptr(),
            )
        })
    }

    /// `delta[t, h] = d_out[t, h] · out[t, h]`, the backward pass's first step.
    pub fn causal_attention_backward_delta(
        &self,
        p: &LmsiCausalAttentionParams,
        delta: &mut [f32],
        d_out: &[f32],
        out: &[f32],
    ) -> Result<(), Error> {
        let l = launch::causal_attention_backward_delta(p, delta.len(), d_out.len(), out.len())?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_causal_attention_backward_delta(
                c,
                *p,
                delta.as_mut_ptr(),
                d_out.as_ptr(),
                out.as_ptr(),
            )
        })
    }

    /// The q part of `d_qkv` (`items`: [`query_items`](crate::plan::query_items)).
    #[allow(clippy::too_many_arguments)]
    pub fn causal_attention_backward_dq(
        &self,
        p: &LmsiCausalAttentionParams,
        d_qkv: &mut [f32],
        d_out: &[f32],
        lse: &[f32],
        delta: &[f32],
        qkv: &[f32],
        items: &[LmsiAttnItem],
    ) -> Result<(), Error> {
        let l = launch::causal_attention_backward_dq(
            p,
            d_qkv.len(),
            d_out.len(),
            lse.len(),
            delta.len(),
            qkv.len(),
            items.len(),
        )?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_causal_attention_backward_dq(
                c,
                *p,
                d_qkv.as_mut_ptr(),
                d_out.as_ptr(),
                lse.as_ptr(),
                delta.as_ptr(),
                qkv.as_ptr(),
                items.as_ptr(),
            )
        })
    }

    /// The k and v parts of `d_qkv` (`items`: [`key_items`](crate::plan::key_items)).
    #[allow(clippy::too_many_arguments)]
    pub fn causal_attention_backward_dkdv(
        &self,
        p: &LmsiCausalAttentionParams,
        d_qkv: &mut [f32],
        d_out: &[f32],
        lse: &[f32],
        delta: &[f32],
        qkv: &[f32],
        items: &[LmsiAttnItem],
    ) -> Result<(), Error> {
        let l = launch::causal_attention_backward_dkdv(
            p,
            d_qkv.len(),
            d_out.len(),
            lse.len(),
            delta.len(),
            qkv.len(),
            items.len(),
        )?;
        self.run(l, |c| unsafe {
            ffi::lmsi_sim_causal_attention_backward_dkdv(
                c,
                *p,
                d_qkv.as_mut_ptr(),
                d_out.as_ptr(),
                lse.as_ptr(),
                delta.as_ptr(),
                qkv.as_ptr(),
                items.as_ptr(),
            )
        })
    }
}
