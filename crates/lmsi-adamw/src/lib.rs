//! AdamW for plain `f32` slices: the update of `torch.optim.AdamW`, learning-rate schedules with
//! warm-up, global-norm gradient clipping and gradient accumulation.
//!
//! The crate is a trainer a user can take alone. [`Trainer`] owns the optimizer state of one
//! model (each parameter's first and second moments, on the model's device, and the step
//! counter) and takes whole steps: it accumulates the gradients of several micro-batches, clips
//! their global norm, reads the learning rate from an [`LrSchedule`] (linear warm-up, then
//! constant, linear or cosine decay), applies AdamW with weight decay per tensor (parameter
//! groups), and saves and resumes its state as a safetensors file. It sees the model only through
//! the small [`Trainable`] trait: a list of tensors and a few operations on their device.
//! `lmsi_transformer::Model` implements it on the CPU, the simulated device and a GPU;
//! [`HostParams`] implements it for plain `Vec<f32>` tensors.
//!
//! The pieces are public for models that keep their own loop: [`adamw_update`] is the update of
//! a single tensor, with its arithmetic specified to the operation (see [`StepScalars::update`])
//! so that other implementations, such as a CUDA kernel, reproduce it bit for bit;
//! [`clip_global_norm`], [`global_norm`] and [`sum_squares`] measure and clip on host slices. Every
//! function here gives the same bits for any number of rayon threads. With the `cuda` feature,
//! `cuda::update` and `cuda::sum_squares` run the update and the norm's reduction on tensors that
//! live on a lmsi-cuda device, with the same results.
//!
//! # Example
//!
//! Minimise `f(x) = Σ_i (x_i - c_i)²` for a matrix `w` and a bias `b` (decayed and not), two
//! micro-batches per step whose gradients add up:
//!
//! ```
//! use lmsi_adamw::{AdamWConfig, HostParams, LrSchedule, ScheduleKind, TensorInfo, Trainer, TrainerConfig};
//!
//! let target = [vec![1.0f32, -1.0, 0.5, 2.0], vec![-0.5f32, 0.25]];
//! let mut model = HostParams::new(vec![
//!     (TensorInfo::new("w", vec![2, 2], true), vec![0.0; 4]),
//!     (TensorInfo::new("b", vec![2], false), vec![0.0; 2]),
//! ])?;
//! let config = TrainerConfig {
//!     adamw: AdamWConfig { weight_decay: 1e-4, ..AdamWConfig::default() },
//!     schedule: LrSchedule::new(ScheduleKind::Cosine, 0.05, 20, 400),
//!     max_grad_norm: Some(1.0),
//!     decay_all: false,
//! };
//! let mut trainer = Trainer::new(&model, config)?;
//! for _ in 0..400 {
//!     // Each half of the batch contributes half of the gradient.
//!     trainer.step(&mut model, [0.5f32, 0.5], |model, share, grads| {
//!         for ((g, x), c) in grads.iter_mut().zip(model.values()).zip(&target) {
//!             for ((g, x), c) in g.iter_mut().zip(x).zip(c) {
//!                 *g += share * 2.0 * (x - c);
//!             }
//!         }
//!         Ok(0.0)
//!     })?;
//! }
//! for (x, c) in model.values().iter().flatten().zip(target.iter().flatten()) {
//!     assert!((x - c).abs() < 1e-2, "{x} should be close to {c}");
//! }
//! # Ok::<(), lmsi_adamw::AdamWError>(())
//! ```

mod clip;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
mod schedule;
mod state;
mod trainable;
mod trainer;
mod update;

pub use clip::{clip_global_norm, global_norm, sum_squares};
pub use error::AdamWError;
pub use schedule::{LrSchedule, ScheduleKind};
pub use trainable::{HostParams, TensorInfo, Trainable};
pub use trainer::{StepStats, Trainer, TrainerConfig};
pub use update::{AdamWConfig, StepParams, StepScalars, adamw_update, adamw_update_with, widen};
