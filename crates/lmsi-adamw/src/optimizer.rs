//! [`AdamW`]: the optimizer over a list of tensors, with its moments and step counter.

use rayon::prelude::*;

use crate::error::{AdamWError, require};
use crate::update::{AdamWConfig, CHUNK, StepScalars, update_serial};

/// AdamW over a fixed list of tensors: one `(m, v)` pair of moments per tensor and one step
/// counter, as `torch.optim.AdamW` keeps them (its per-parameter `step` is the same for every
/// parameter that always receives a gradient).
///
/// ```
/// use lmsi_adamw::{AdamW, AdamWConfig};
///
/// let mut weight = vec![1.0f32; 4];
/// let mut bias = vec![0.5f32; 2];
/// let mut opt = AdamW::new(AdamWConfig::default(), &[4, 2]);
/// let grads: [&[f32]; 2] = [&[0.1, -0.1, 0.2, 0.0], &[1.0, -1.0]];
/// // Decay the matrix, not the bias.
/// opt.step(&mut [&mut weight, &mut bias], &grads, &[true, false], 1e-3)?;
/// assert_eq!(opt.step_count(), 1);
/// assert!(weight[0] < 1.0 && bias[0] < 0.5 && bias[1] > 0.5);
/// # Ok::<(), lmsi_adamw::AdamWError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    config: AdamWConfig,
    step: u64,
    moments: Vec<TensorMoments>,
}

impl AdamW {
    /// An optimizer for tensors of `sizes` elements each, with zeroed moments, at step 0.
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> Self {
        let moments = sizes
            .iter()
            .map(|&n| (vec![0.0; n], vec![0.0; n]))
            .collect();
        Self {
            config,
            step: 0,
            moments,
        }
    }

    /// Resumes from a checkpoint: `step` updates already taken and the `(m, v)` moments of each
    /// tensor, as [`step_count`](Self::step_count) and [`moments`](Self::moments) returned them.
    /// The moments are checked by the next [`step`](Self::step).
    pub fn from_state(config: AdamWConfig, step: u64, moments: Vec<TensorMoments>) -> Self {
        Self {
            config,
            step,
            moments,
        }
    }

    /// One update of every tensor at learning rate `lr`. `decay[i]` says whether tensor `i` gets
    /// weight decay (usually matrices do; norms, biases and embeddings do not).
    ///
    /// The step counter is incremented first, so the first call is step 1. Everything is checked
    /// before anything changes: on error the parameters, moments and counter are untouched.
    /// Work is split into fixed chunks over all tensors and run on rayon's pool; the result is
    /// the same for any number of threads. Each tensor follows
    /// [`adamw_update`](crate::adamw_update) exactly.
    ///
    /// # Errors
    ///
    /// [`AdamWError::Count`] when `params`, `grads` or `decay` does not have one entry per tensor;
    /// [`AdamWError::Shape`] naming the first tensor whose parameter or gradient has the wrong
    /// length; [`AdamWError::Moments`] for moments of different lengths (from
    /// [`from_state`](Self::from_state)); [`AdamWError::Hyperparameter`] for an invalid config
    /// or `lr`.
    pub fn step(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        decay: &[bool],
        lr: f32,
    ) -> Result<(), AdamWError> {
        self.check(params, grads, decay)?;
        self.config.validate()?;
        require(lr >= 0.0 && lr.is_finite(), "lr", lr, "finite lr >= 0")?;

        self.step += 1;
        let decayed = self.config.step_params(lr, self.step, true).scalars();
        let not_decayed = self.config.step_params(lr, self.step, false).scalars();
        let mut work: Vec<Chunk<'_>> = Vec::new();
        for (((param, grad), (m, v)), &decay) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.moments)
            .zip(decay)
        {
            let scalars = if decay { &decayed } else { &not_decayed };
            work.extend(
                param
                    .chunks_mut(CHUNK)
                    .zip(grad.chunks(CHUNK))
                    .zip(m.chunks_mut(CHUNK))
                    .zip(v.chunks_mut(CHUNK))
                    .map(|(((p, g), m), v)| Chunk {
                        p,
                        g,
                        m,
                        v,
                        scalars,
                    }),
            );
        }
        work.into_par_iter()
            .for_each(|c| update_serial(c.p, c.g, c.m, c.v, c.scalars));
        Ok(())
    }

    /// The number of updates taken (0 before the first [`step`](Self::step)).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The `(m, v)` moments of each tensor, for checkpoints.
    pub fn moments(&self) -> &[TensorMoments] {
        &self.moments
    }

    /// The hyperparameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Changes the hyperparameters for the following steps (the moments are kept).
    pub fn set_config(&mut self, config: AdamWConfig) {
        self.config = config;
    }

    /// Consumes the optimizer, returning its state for a checkpoint: `(step, moments)`.
    pub fn into_state(self) -> (u64, Vec<TensorMoments>) {
        (self.step, self.moments)
    }

    fn check(
        &self,
        params: &[&mut [f32]],
        grads: &[&[f32]],
        decay: &[bool],
    ) -> Result<(), AdamWError> {
        let expected = self.moments.len();
        for got in [params.len(), grads.len(), decay.len()] {
            if got != expected {
                return Err(AdamWError::Count { expected, got });
            }
        }
        for (tensor, ((param, grad), (m, v))) in
            params.iter().zip(grads).zip(&self.moments).enumerate()
        {
            if m.len() != v.len() {
                return Err(AdamWError::Moments {
                    tensor,
                    m: m.len(),
                    v: v.len(),
                });
            }
            for got in [param.len(), grad.len()] {
                if got != m.len() {
                    return Err(AdamWError::Shape {
                        tensor,
                        expected: m.len(),
                        got,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The first and second moments `(m, v)` of one tensor, each as long as the tensor.
pub type TensorMoments = (Vec<f32>, Vec<f32>);

/// One unit of parallel work: matching chunks of a tensor's four arrays.
struct Chunk<'a> {
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    scalars: &'a StepScalars,
}
