//! The optimizer step on a CUDA device (feature `cuda`: a [`lmsi_cuda::Device`], the simulated
//! one or a GPU), through lmsi-cuda's kernels: the fused AdamW
//! update ([`update`], bit for bit [`StepScalars::update`]) and the sum of squares behind the global
//! gradient norm ([`sum_squares`], two passes with no atomics, so the same bits on every run).
//!
//! ```
//! use lmsi_adamw::StepParams;
//! use lmsi_cuda::Device;
//!
//! let dev = Device::sim(); // or Device::gpu(0)?
//! let (mut p, g) = (dev.upload(&[1.0f32, -2.0])?, dev.upload(&[0.5f32, -0.25])?);
//! let (mut m, mut v) = (dev.zeros::<f32>(2)?, dev.zeros::<f32>(2)?);
//! let step =
//!     StepParams { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 };
//! let norm_sq = lmsi_adamw::cuda::sum_squares(&dev, [g.view()])?;
//! assert_eq!(norm_sq, 0.3125);
//! lmsi_adamw::cuda::update(&dev, &mut p, &g, &mut m, &mut v, &step.scalars())?;
//! let p = dev.download(&p)?;
//! assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use lmsi_cuda::launch::{SUM_SQUARES_CHUNK, sum_squares_blocks};
use lmsi_cuda::params::{LmsiAdamwParams, LmsiNormParams, LmsiSumSquaresParams};
use lmsi_cuda::{Device, View, ViewMut};

use crate::StepScalars;

/// What can go wrong on the GPU.
#[derive(Debug, thiserror::Error)]
pub enum CudaAdamWError {
    /// A gradient or moment differs in length from its parameter.
    #[error("{what} has {got} values, the parameter {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A CUDA call failed.
    #[error("CUDA: {0}")]
    Cuda(#[from] lmsi_cuda::Error),
}

/// One AdamW step of one tensor on `device`, in place: [`adamw_update_with`](crate::adamw_update_with)
/// with the tensors on the GPU, every element bit for bit as [`StepScalars::update`] computes it.
/// Enqueued on the device's stream; nothing waits for it.
pub fn update<'a>(
    device: &Device,
    param: impl Into<ViewMut<'a, f32>>,
    grad: impl Into<View<'a, f32>>,
    m: impl Into<ViewMut<'a, f32>>,
    v: impl Into<ViewMut<'a, f32>>,
    s: &StepScalars,
) -> Result<(), CudaAdamWError> {
    let (param, grad, m, v) = (param.into(), grad.into(), m.into(), v.into());
    let n = param.len();
    for (what, got) in [
        ("the gradient", grad.len()),
        ("the first moment", m.len()),
        ("the second moment", v.len()),
    ] {
        if got != n {
            return Err(CudaAdamWError::Length {
                what,
                expected: n,
                got,
            });
        }
    }
    let p = LmsiAdamwParams {
        len: n as u64,
        decay: s.decay,
        one_minus_beta1: s.one_minus_beta1,
        beta2: s.beta2,
        one_minus_beta2: s.one_minus_beta2,
        step_size: s.step_size,
        bias_correction2_sqrt: s.bias_correction2_sqrt,
        eps: s.eps,
    };
    device.adamw_update(&p, param, m, v, grad)?;
    Ok(())
}

/// `Σ x²` over all of `tensors`, accumulated in `f64`: the square of the global gradient norm
/// ([`global_norm`](crate::global_norm)), to within the order of the `f64` additions. One partial sum
/// per 65,536 values, then one sum of the partials; waits for the result.
pub fn sum_squares<'a>(
    device: &Device,
    tensors: impl IntoIterator<Item = View<'a, f32>>,
) -> Result<f64, CudaAdamWError> {
    let tensors: Vec<View<'a, f32>> = tensors.into_iter().collect();
    let blocks: Vec<u32> = tensors
        .iter()
        .map(|t| sum_squares_blocks(t.len() as u64))
        .collect();
    let count: u32 = blocks.iter().sum();
    if count == 0 {
        return Ok(0.0);
    }
    let mut partials = device.zeros::<f64>(count as usize)?;
    let mut first = 0;
    for (t, &b) in tensors.iter().zip(&blocks) {
        let p = LmsiSumSquaresParams {
            len: t.len() as u64,
            chunk: SUM_SQUARES_CHUNK,
            first_partial: first,
        };
        device.sum_squares_partial(&p, &mut partials, t.clone())?;
        first += b;
    }
    let mut sum = device.zeros::<f64>(1)?;
    let p = LmsiNormParams {
        len: 0,
        count,
        max_norm: 0.0,
    };
    device.sum_partials(&p, &mut sum, &partials)?;
    Ok(device.download(&sum)?[0])
}
