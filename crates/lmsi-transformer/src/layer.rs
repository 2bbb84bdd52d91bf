//! One transformer layer, written once: generation runs it over the paged KV cache
//! ([`Model::forward`](crate::Model::forward)), training over whole sequences with its backward pass
//! ([`Model::loss_and_grads`](crate::Model::loss_and_grads)). Only the attention differs
//! ([`Attention`]); everything else is the same code, in the same order of arithmetic.
//!
//! ```text
//! x_mid = x     + o(attention(rope(qkv(rmsnorm(x)))))
//! out   = x_mid + down(swiglu(gate_up(rmsnorm(x_mid))))
//! ```

use crate::Error;
use crate::backend::{AttentionDims, AttentionSaved, Backend, RmsNormGrad, Rotation};
use crate::config::Config;
use crate::model::Model;
use crate::params::{LayerGrads, LayerParams};

/// How a layer's attention sees the other tokens of its sequence.
pub(crate) enum Attention<'a, Buf> {
    /// Generation: the step's keys and values are stored in the layer's paged cache, and each new
    /// token attends to its sequence's cached context.
    Paged {
        k_cache: &'a mut Buf,
        v_cache: &'a mut Buf,
    },
    /// Training: whole sequences at once, causally masked, keeping the log-sum-exp per head for
    /// the backward pass.
    Causal,
}

/// What a layer's forward pass writes beside its output, which is also what its backward pass
/// reads: kept per layer by training, reused from layer to layer by generation.
pub(crate) struct LayerActivations<Buf> {
    /// The residual stream after attention.
    pub x_mid: Buf,
    /// q|k|v after RoPE.
    pub qkv: Buf,
    /// The attention output (input of the output projection; [`Backend::operand_zeros`]).
    pub attn: Buf,
    /// The attention's log-sum-exp per token and head (written by [`Attention::Causal`] only).
    pub lse: Buf,
    /// gate|up before SwiGLU.
    pub gate_up: Buf,
}

impl<Buf> LayerActivations<Buf> {
    /// Zero-filled activations for `t` tokens.
    pub fn zeros<B: Backend<Buf = Buf>>(be: &B, c: &Config, t: usize) -> Result<Self, Error> {
        Ok(Self {
            x_mid: be.zeros(t * c.hidden_size)?,
            qkv: be.zeros(t * c.qkv_dim())?,
            attn: be.operand_zeros(t * c.attn_dim())?,
            lse: be.zeros(t * c.num_heads)?,
            gate_up: be.zeros(t * 2 * c.intermediate_size)?,
        })
    }
}

/// Working buffers every layer of a pass shares: a normalised residual and the MLP's activation,
/// both inputs of matrix products ([`Backend::operand_zeros`]).
pub(crate) struct Scratch<Buf> {
    h: Buf,
    act: Buf,
}

impl<Buf> Scratch<Buf> {
    /// Scratch buffers for `t` tokens.
    pub fn zeros<B: Backend<Buf = Buf>>(be: &B, c: &Config, t: usize) -> Result<Self, Error> {
        Ok(Self {
            h: be.operand_zeros(t * c.hidden_size)?,
            act: be.operand_zeros(t * c.intermediate_size)?,
        })
    }
}

/// One layer of a model in one pass over `t` tokens laid out as `layout`.
pub(crate) struct Layer<'a, B: Backend> {
    pub model: &'a Model<B>,
    pub params: &'a LayerParams<B::Buf>,
    pub layout: &'a B::Layout,
    pub dims: &'a AttentionDims,
    pub t: usize,
}

impl<B: Backend> Layer<'_, B> {
    /// The layer up to the MLP's gate|up, reading the layer's input `x`: everything its output
    /// and its backward pass need.
    pub fn forward(
        &self,
        x: &B::Buf,
        attention: Attention<'_, B::Buf>,
        acts: &mut LayerActivations<B::Buf>,
        scratch: &mut Scratch<B::Buf>,
    ) -> Result<(), Error> {
        let (be, c, t) = (self.model.backend(), self.model.config(), self.t);
        let (linear, eps) = (self.params.linears(c), c.rms_norm_eps);
        be.rmsnorm(&mut scratch.h, x, &self.params.attn_norm, t, eps)?;
        be.matmul(&mut acts.qkv, &scratch.h, &linear.qkv, t, false)?;
        let rotation = Rotation::Forward;
        be.rope(
            &mut acts.qkv,
            self.layout,
            self.dims,
            self.model.inv_freq(),
            rotation,
        )?;
        self.attend(attention, acts)?;
        be.copy_into(&mut acts.x_mid, x)?;
        be.matmul(&mut acts.x_mid, &acts.attn, &linear.o, t, true)?;
        be.rmsnorm(&mut scratch.h, &acts.x_mid, &self.params.mlp_norm, t, eps)?;
        be.matmul(&mut acts.gate_up, &scratch.h, &linear.gate_up, t, false)
    }

    /// The layer's output after [`Layer::forward`]: `out = x_mid + down(swiglu(gate_up))`.
    pub fn output(
        &self,
        acts: &LayerActivations<B::Buf>,
        scratch: &mut Scratch<B::Buf>,
        out: &mut B::Buf,
    ) -> Result<(), Error> {
        let (be, c, t) = (self.model.backend(), self.model.config(), self.t);
        be.swiglu(&mut scratch.act, &acts.gate_up, t, c.intermediate_size)?;
        be.copy_into(out, &acts.x_mid)?;
        be.matmul(out, &scratch.act, &self.params.linears(c).down, t, true)
    }

    fn attend(
        &self,
        attention: Attention<'_, B::Buf>,
        acts: &mut LayerActivations<B::Buf>,
    ) -> Result<(), Error> {
        let (be, layout, dims) = (self.model.backend(), self.layout, self.dims);
        let LayerActivations { qkv, attn, lse, .. } = acts;
        match attention {
            Attention::Paged { k_cache, v_cache } => {
                be.kv_store(k_cache, v_cache, qkv, layout, dims)?;
                be.paged_attention(attn, qkv, k_cache, v_cache, layout, dims)
            }
            Attention::Causal => be.causal_attention(attn, lse, qkv, layout, dims),
        }
    }

    /// The layer's backward pass over a [`Layer::forward`] with [`Attention::Causal`] from `x`:
    /// adds the layer's parameter gradients to `g` and turns `dx`, the gradient of the layer's
    /// output, into the gradient of its input.
    pub fn backward(
        &self,
        g: &mut LayerParams<B::Buf>,
        x: &B::Buf,
        acts: &LayerActivations<B::Buf>,
        dx: &mut B::Buf,
        scratch: &mut Scratch<B::Buf>,
    ) -> Result<(), Error> {
        let (be, c, t, p) = (
            self.model.backend(),
            self.model.config(),
            self.t,
            self.params,
        );
        let (d, inter, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let linear = p.linears(c);
        let LayerGrads {
            attn_norm,
            mlp_norm,
            linear: grad,
        } = g.grads(c);
        let Scratch { h, act } = scratch;

        // MLP: out = x_mid + down(swiglu(gate_up(rmsnorm(x_mid)))).
        be.rmsnorm(h, &acts.x_mid, &p.mlp_norm, t, eps)?;
        be.swiglu(act, &acts.gate_up, t, inter)?;
        let mut d_act = be.zeros(t * inter)?;
        be.matmul_backward_input(&mut d_act, dx, &linear.down, t, false)?;
        be.matmul_backward_weight(grad.down, dx, act, t)?;
        let mut d_gate_up = be.zeros(t * 2 * inter)?;
        be.swiglu_backward(&mut d_gate_up, &d_act, &acts.gate_up, t, inter)?;
        let mut d_h = be.zeros(t * d)?;
        be.matmul_backward_input(&mut d_h, &d_gate_up, &linear.gate_up, t, false)?;
        be.matmul_backward_weight(grad.gate_up, &d_gate_up, h, t)?;
        let norm = RmsNormGrad {
            input: &mut *dx,
            weight: mlp_norm,
        };
        be.rmsnorm_backward(norm, &d_h, &acts.x_mid, &p.mlp_norm, t, eps)?;

        // Attention: x_mid = x + o(attention(rope(qkv(rmsnorm(x))))).
        let mut d_attn = be.zeros(t * c.attn_dim())?;
        be.matmul_backward_input(&mut d_attn, dx, &linear.o, t, false)?;
        be.matmul_backward_weight(grad.o, dx, &acts.attn, t)?;
        let mut d_qkv = be.zeros(t * c.qkv_dim())?;
        let forward = AttentionSaved {
            qkv: &acts.qkv,
            out: &acts.attn,
            lse: &acts.lse,
        };
        let (layout, dims) = (self.layout, self.dims);
        be.causal_attention_backward(&mut d_qkv, &d_attn, &forward, layout, dims)?;
        let inv_freq = self.model.inv_freq();
        be.rope(&mut d_qkv, layout, dims, inv_freq, Rotation::Inverse)?;
        be.rmsnorm(h, x, &p.attn_norm, t, eps)?;
        be.matmul_backward_input(&mut d_h, &d_qkv, &linear.qkv, t, false)?;
        be.matmul_backward_weight(grad.qkv, &d_qkv, h, t)?;
        let norm = RmsNormGrad {
            input: dx,
            weight: attn_norm,
        };
        be.rmsnorm_backward(norm, &d_h, x, &p.attn_norm, t, eps)
    }
}
