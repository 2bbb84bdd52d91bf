//! The AdamW update of one tensor, and the exact arithmetic it follows.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{AdamWError, require};

/// Elements per parallel work item (256 KiB of each array). Every element is updated on its own,
/// so the split only sets the granularity of the work, never the result.
pub(crate) const CHUNK: usize = 1 << 16;

/// The hyperparameters of AdamW that stay fixed over a run. The learning rate is not here: it
/// changes every step, and comes from the [`LrSchedule`](crate::LrSchedule) of a
/// [`TrainerConfig`](crate::TrainerConfig).
///
/// The default is PyTorch's `torch.optim.AdamW`: `beta1 = 0.9`, `beta2 = 0.999`, `eps = 1e-8`,
/// `weight_decay = 0.01`. Missing fields deserialize to these defaults.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    /// Decay rate of the first moment (the running mean of the gradient), `0 <= beta1 < 1`.
    pub beta1: f32,
    /// Decay rate of the second moment (the running mean of the squared gradient), `0 <= beta2 < 1`.
    pub beta2: f32,
    /// Added to the denominator for numerical stability, finite and `>= 0`.
    pub eps: f32,
    /// Decoupled weight decay (multiplied by the learning rate), finite and `>= 0`.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// Checks the ranges PyTorch checks: `0 <= beta1, beta2 < 1`, `eps >= 0`, `weight_decay >= 0`
    /// (the last two also finite). NaN is always rejected.
    pub fn validate(&self) -> Result<(), AdamWError> {
        require(
            (0.0..1.0).contains(&self.beta1),
            "beta1",
            self.beta1,
            "0 <= beta1 < 1",
        )?;
        require(
            (0.0..1.0).contains(&self.beta2),
            "beta2",
            self.beta2,
            "0 <= beta2 < 1",
        )?;
        require(
            self.eps >= 0.0 && self.eps.is_finite(),
            "eps",
            self.eps,
            "finite eps >= 0",
        )?;
        require(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            "weight_decay",
            self.weight_decay,
            "finite weight_decay >= 0",
        )
    }

    /// The parameters of step `step` (1-based) at learning rate `lr`; `decay: false` sets the
    /// weight decay to 0 (for norms, biases and embeddings).
    pub fn step_params(&self, lr: f32, step: u64, decay: bool) -> StepParams {
        StepParams {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: if decay { self.weight_decay } else { 0.0 },
            step,
        }
    }
}

/// Everything one AdamW update of one tensor needs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepParams {
    /// Learning rate of this step, finite and `>= 0`.
    pub lr: f32,
    /// See [`AdamWConfig::beta1`].
    pub beta1: f32,
    /// See [`AdamWConfig::beta2`].
    pub beta2: f32,
    /// See [`AdamWConfig::eps`].
    pub eps: f32,
    /// Weight decay of this tensor (0 for tensors that are not decayed).
    pub weight_decay: f32,
    /// The step being taken, 1-based: the first update is step 1 (step 0 would divide by zero in
    /// the bias correction).
    pub step: u64,
}

impl StepParams {
    /// Checks the ranges of [`AdamWConfig::validate`], plus a finite `lr >= 0` and `step >= 1`.
    pub fn validate(&self) -> Result<(), AdamWError> {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
        .validate()?;
        require(
            self.lr >= 0.0 && self.lr.is_finite(),
            "lr",
            self.lr,
            "finite lr >= 0",
        )?;
        if self.step == 0 {
            return Err(AdamWError::Hyperparameter {
                name: "step",
                value: 0.0,
                expected: "step >= 1 (steps are 1-based)",
            });
        }
        Ok(())
    }

    /// The per-step constants of the update, computed in `f64` and rounded once to `f32`,
    /// as PyTorch computes them in Python floats:
    ///
    /// | constant | value |
    /// | --- | --- |
    /// | `decay` | `1 - lr·weight_decay` |
    /// | `one_minus_beta1` | `1 - beta1` |
    /// | `beta2` | `beta2` (unchanged) |
    /// | `one_minus_beta2` | `1 - beta2` |
    /// | `step_size` | `lr / (1 - beta1^step)` |
    /// | `bias_correction2_sqrt` | `sqrt(1 - beta2^step)` |
    /// | `eps` | `eps` (unchanged) |
    ///
    /// Each `f32` input is widened by [`widen`]: `0.999f32` becomes the `f64` nearest 0.999, as
    /// in PyTorch, whose hyperparameters are Python floats. `^` is `f64::powf` with `step as f64`
    /// (C's `pow`, as Python's `**` on floats); `sqrt` is the correctly rounded `f64` root.
    pub fn scalars(&self) -> StepScalars {
        let lr = widen(self.lr);
        let (beta1, beta2) = (widen(self.beta1), widen(self.beta2));
        let step = self.step as f64;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        StepScalars {
            decay: (1.0 - lr * widen(self.weight_decay)) as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: self.beta2,
            one_minus_beta2: (1.0 - beta2) as f32,
            step_size: (lr / bias_correction1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: self.eps,
        }
    }
}

/// Widens an `f32` hyperparameter to the `f64` nearest its shortest round-trip decimal form
/// (what `Display` prints, and what a config file says): `widen(0.999) == 0.999f64`.
///
/// Exact widening would keep the `f32` rounding error, which `1 - beta` magnifies: the `f32`
/// nearest 0.999 is 0.99900001287, so `1 - beta2` would be 1.3e-5 (relative) below 0.001, and
/// for `beta2 = 0.99999` off by 0.6%. Non-finite values stay as they are.
pub fn widen(x: f32) -> f64 {
    x.to_string()
        .parse()
        .expect("an f32's Display output is a valid f64")
}

/// The `f32` constants of one step, from [`StepParams::scalars`]. A device implementation (the
/// CUDA kernel) receives these values from the host rather than recomputing them, so it only has
/// to reproduce [`StepScalars::update`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScalars {
    /// Factor applied to the parameter before the step: `1 - lr·weight_decay`.
    pub decay: f32,
    /// Interpolation weight of the first moment: `1 - beta1`.
    pub one_minus_beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Weight of the new squared gradient: `1 - beta2`.
    pub one_minus_beta2: f32,
    /// `lr / (1 - beta1^step)`.
    pub step_size: f32,
    /// `sqrt(1 - beta2^step)`.
    pub bias_correction2_sqrt: f32,
    /// Added to the denominator.
    pub eps: f32,
}

impl StepScalars {
    /// Updates one element: takes `(param, grad, m, v)`, returns the new `(param, m, v)`.
    ///
    /// Every operation is IEEE-754 binary32 rounded to nearest-even on its own, in this order,
    /// with no fused multiply-add (a CUDA port uses `__fmul_rn`/`__fadd_rn`/`__fsub_rn` or
    /// `-fmad=false`; its default `sqrtf` and `/` are correctly rounded like Rust's, and subnormals
    /// must not be flushed to zero, so no `-ftz=true` or `--use_fast_math`):
    ///
    /// ```text
    /// p1    = p * decay
    /// m1    = m + one_minus_beta1 * (g - m)              torch: exp_avg.lerp_(grad, 1 - beta1)
    /// v1    = beta2 * v + (one_minus_beta2 * g) * g      torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    /// denom = sqrt(v1) / bias_correction2_sqrt + eps
    /// p2    = p1 - (step_size * m1) / denom              torch: param.addcdiv_(exp_avg, denom, value=-step_size)
    /// ```
    ///
    /// The lerp form of `m1` is PyTorch's for weights below 0.5, which `1 - beta1` is for any
    /// `beta1 > 0.5`.
    #[inline(always)]
    pub fn update(&self, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        let p = p * self.decay;
        let m = m + self.one_minus_beta1 * (g - m);
        let v = self.beta2 * v + (self.one_minus_beta2 * g) * g;
        let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
        (p - (self.step_size * m) / denom, m, v)
    }
}

/// One AdamW step of one tensor, in place: `torch.optim.AdamW` with `foreach=False`,
/// `amsgrad=False`, `maximize=False`.
///
/// With `bc1 = 1 - beta1^step` and `bc2 = 1 - beta2^step`, every element does
///
/// ```text
/// p *= 1 - lr·wd
/// m  = m + (1 - beta1)·(g - m)
/// v  = beta2·v + (1 - beta2)·g²
/// p -= (lr / bc1)·m / (sqrt(v) / sqrt(bc2) + eps)
/// ```
///
/// The per-step constants are computed in `f64` and rounded once to `f32`
/// ([`StepParams::scalars`]); the per-element arithmetic is `f32` in the exact order of
/// [`StepScalars::update`]. Tensors larger than 65,536 elements are split into chunks updated in
/// parallel on rayon's pool; each element's result is the same whatever the number of threads.
///
/// Hyperparameters are not checked here (see [`StepParams::validate`]); step 0 divides by zero.
/// Non-finite gradients propagate into the moments and the parameters: skip the step instead
/// when [`global_norm`](crate::global_norm) is not finite.
///
/// # Panics
///
/// If `grad`, `m` or `v` differs in length from `param`.
///
/// ```
/// use lmsi_adamw::{StepParams, adamw_update};
///
/// let (mut p, g) = (vec![1.0f32, -2.0], vec![0.5f32, -0.25]);
/// let (mut m, mut v) = (vec![0.0f32; 2], vec![0.0f32; 2]);
/// let params =
///     StepParams { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 };
/// adamw_update(&mut p, &g, &mut m, &mut v, &params);
/// // The bias-corrected first step moves each parameter by lr against the gradient's sign.
/// assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6);
/// ```
pub fn adamw_update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], p: &StepParams) {
    adamw_update_with(param, grad, m, v, &p.scalars());
}

/// [`adamw_update`] with the per-step constants already computed.
///
/// # Panics
///
/// If `grad`, `m` or `v` differs in length from `param`.
pub fn adamw_update_with(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    s: &StepScalars,
) {
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adamw_update: param has {n} elements but grad, m, v have {}, {}, {}",
        grad.len(),
        m.len(),
        v.len()
    );
    if n <= CHUNK {
        update_serial(param, grad, m, v, s);
    } else {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| update_serial(p, g, m, v, s));
    }
}

/// The update on one thread. The slices are re-cut to one length so that the bounds checks go
/// and the loop vectorizes.
pub(crate) fn update_serial(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    s: &StepScalars,
) {
    let n = param.len();
    let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        (param[i], m[i], v[i]) = s.update(param[i], grad[i], m[i], v[i]);
    }
}
