//! [`Trainer`]: AdamW over a [`Trainable`] model, with its optimizer state on the model's device.

use serde::{Deserialize, Serialize};

use crate::error::AdamWError;
use crate::schedule::LrSchedule;
use crate::trainable::{TensorInfo, Trainable};
use crate::update::AdamWConfig;

/// How a [`Trainer`] steps: the optimizer, the learning rate per step, and clipping.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// AdamW's hyperparameters.
    pub adamw: AdamWConfig,
    /// The learning rate of each step.
    pub schedule: LrSchedule,
    /// Scale the gradients down to this global L2 norm when it is larger (`None`: never), as
    /// `torch.nn.utils.clip_grad_norm_`.
    pub max_grad_norm: Option<f64>,
    /// Weight decay on every tensor, not only those whose [`TensorInfo::decay`] says so.
    pub decay_all: bool,
}

impl TrainerConfig {
    /// Checks the optimizer, the schedule and a finite `max_grad_norm > 0`.
    pub fn validate(&self) -> Result<(), AdamWError> {
        self.adamw.validate()?;
        self.schedule.validate()?;
        match self.max_grad_norm {
            Some(norm) if !(norm > 0.0 && norm.is_finite()) => Err(AdamWError::Hyperparameter {
                name: "max_grad_norm",
                value: norm,
                expected: "finite max_grad_norm > 0",
            }),
            _ => Ok(()),
        }
    }
}

/// What one [`Trainer::step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// The step just taken (1 for the first).
    pub step: u64,
    /// Its learning rate.
    pub lr: f32,
    /// The sum of what the backward passes of its micro-batches returned.
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// AdamW training of one model: the gradients, the first and second moments of every parameter
/// (on the model's device) and the step counter, and one [`step`](Self::step) that accumulates
/// the gradients of several micro-batches, clips their global norm, reads the learning rate from
/// the schedule and updates every parameter. [`save_state`](Self::save_state) and
/// [`resume`](Self::resume) carry the state across processes.
///
/// The arithmetic is fixed by the model's [`Trainable`] operations, taken in tensor order, so a
/// run gives the same bits every time, and a resumed run the same as an uninterrupted one.
///
/// # Example
///
/// Minimise `f(x) = Σ_i (x_i - c_i)²` with a cosine schedule and clipping, on plain vectors:
///
/// ```
/// use lmsi_adamw::{AdamWConfig, HostParams, LrSchedule, ScheduleKind, TensorInfo, Trainer, TrainerConfig};
///
/// let target = [3.0f32, -2.0, 0.5];
/// let mut model = HostParams::new(vec![(TensorInfo::new("x", vec![3], false), vec![0.0; 3])])?;
/// let config = TrainerConfig {
///     adamw: AdamWConfig::default(),
///     schedule: LrSchedule::new(ScheduleKind::Cosine, 0.1, 10, 300),
///     max_grad_norm: Some(1.0),
///     decay_all: false,
/// };
/// let mut trainer = Trainer::new(&model, config)?;
/// for _ in 0..300 {
///     // One micro-batch: add f's gradient at the current x, return f.
///     trainer.step(&mut model, [()], |model, (), grads| {
///         let x = &model.values()[0];
///         let mut loss = 0.0;
///         for ((g, x), c) in grads[0].iter_mut().zip(x).zip(&target) {
///             *g += 2.0 * (x - c);
///             loss += f64::from((x - c) * (x - c));
///         }
///         Ok(loss)
///     })?;
/// }
/// for (x, c) in model.values()[0].iter().zip(&target) {
///     assert!((x - c).abs() < 1e-2, "{x} should be close to {c}");
/// }
/// # Ok::<(), lmsi_adamw::AdamWError>(())
/// ```
pub struct Trainer<M: Trainable> {
    config: TrainerConfig,
    tensors: Vec<TensorInfo>,
    step: u64,
    grads: M::Grads,
    moments: Vec<(M::Tensor, M::Tensor)>,
}

impl<M: Trainable> Trainer<M> {
    /// A trainer for `model` at step 0, with zeroed moments.
    ///
    /// # Errors
    ///
    /// [`AdamWError::Hyperparameter`] for an invalid config, or the model's error from allocating.
    pub fn new(model: &M, config: TrainerConfig) -> Result<Self, M::Error> {
        let tensors = model.tensor_info();
        let moments = tensors
            .iter()
            .map(|t| {
                let zeros = vec![0.0; t.numel()];
                Ok((model.upload(&zeros)?, model.upload(&zeros)?))
            })
            .collect::<Result<_, M::Error>>()?;
        Self::with_state(model, config, tensors, 0, moments)
    }

    pub(crate) fn with_state(
        model: &M,
        config: TrainerConfig,
        tensors: Vec<TensorInfo>,
        step: u64,
        moments: Vec<(M::Tensor, M::Tensor)>,
    ) -> Result<Self, M::Error> {
        config.validate()?;
        Ok(Self {
            config,
            tensors,
            step,
            grads: model.zero_grads()?,
            moments,
        })
    }

    /// One optimizer step. The gradients are zeroed, then `backward(model, micro_batch, grads)`
    /// runs for each of `micro_batches` in order, adding its gradient into `grads` and returning
    /// its loss (scale each micro-batch's gradient so that their sum is the batch's). Then the
    /// global norm is measured, the gradients are clipped to
    /// [`max_grad_norm`](TrainerConfig::max_grad_norm), and every parameter is updated at the
    /// schedule's rate for the step.
    ///
    /// # Errors
    ///
    /// The first error of `backward`; [`AdamWError::Count`] or [`AdamWError::Shape`] when
    /// `backward` left gradients of another number or size than the parameters;
    /// [`AdamWError::NonFiniteGradient`] when the gradient norm is NaN or infinite. In these cases
    /// no parameter has changed. Then the model's errors from its operations. The step counter
    /// advances only when the step succeeded.
    pub fn step<T>(
        &mut self,
        model: &mut M,
        micro_batches: impl IntoIterator<Item = T>,
        mut backward: impl FnMut(&M, T, &mut M::Grads) -> Result<f64, M::Error>,
    ) -> Result<StepStats, M::Error> {
        let step = self.step + 1;
        for g in M::grad_tensors_mut(&mut self.grads) {
            model.fill_zero(g)?;
        }
        let mut loss = 0.0;
        for batch in micro_batches {
            loss += backward(model, batch, &mut self.grads)?;
        }
        if let Err(e) = self.check_grads(model) {
            self.grads = model.zero_grads()?;
            return Err(e.into());
        }
        let grad_norm = self.clip(model, step)?;
        let lr = self.config.schedule.lr(step);
        let grads = M::grad_tensors(&self.grads);
        for (i, (g, (m, v))) in grads.into_iter().zip(&mut self.moments).enumerate() {
            let decay = self.config.decay_all || self.tensors[i].decay;
            let scalars = self.config.adamw.step_params(lr, step, decay).scalars();
            model.adamw_update(i, g, m, v, &scalars)?;
        }
        self.step = step;
        Ok(StepStats {
            step,
            lr,
            loss,
            grad_norm,
        })
    }

    /// Checks that the backward passes left one gradient per parameter, each of its size, so that
    /// a step updates every tensor or none.
    fn check_grads(&self, model: &M) -> Result<(), AdamWError> {
        let grads = M::grad_tensors(&self.grads);
        if grads.len() != self.tensors.len() {
            return Err(AdamWError::Count {
                expected: self.tensors.len(),
                got: grads.len(),
            });
        }
        for (tensor, (g, info)) in grads.into_iter().zip(&self.tensors).enumerate() {
            if model.numel(g) != info.numel() {
                return Err(AdamWError::Shape {
                    tensor,
                    expected: info.numel(),
                    got: model.numel(g),
                });
            }
        }
        Ok(())
    }

    /// Measures the global gradient norm and clips to it: the norm before clipping.
    fn clip(&mut self, model: &M, step: u64) -> Result<f64, M::Error> {
        let mut norm_sq = 0.0;
        for g in M::grad_tensors(&self.grads) {
            norm_sq += model.sum_squares(g)?;
        }
        let norm = norm_sq.sqrt();
        if !norm.is_finite() {
            return Err(AdamWError::NonFiniteGradient { step, norm }.into());
        }
        if let Some(max) = self.config.max_grad_norm {
            let coef = max / (norm + 1e-6);
            if coef < 1.0 {
                for g in M::grad_tensors_mut(&mut self.grads) {
                    model.scale(g, coef as f32)?;
                }
            }
        }
        Ok(norm)
    }

    /// The number of steps taken (0 before the first).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// How the trainer steps.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    pub(crate) fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub(crate) fn moments(&self) -> &[(M::Tensor, M::Tensor)] {
        &self.moments
    }
}
