//! AdamW for plain `f32` slices: the update of `torch.optim.AdamW`, learning-rate schedules with
//! warm-up, global-norm gradient clipping and gradient accumulation.
//!
//! Parameters, gradients and moments are `&mut [f32]` / `&[f32]`, one slice per tensor, so the
//! crate works with any model representation. The pieces of one training step:
//!
//! - [`GradAccumulator`] sums the gradients of several micro-batches;
//! - [`clip_global_norm`] scales them to a maximum L2 norm (and [`global_norm`] measures it);
//! - [`LrSchedule`] gives the learning rate of the step: linear warm-up, then constant, linear
//!   or cosine decay;
//! - [`AdamW::step`] updates every tensor, with weight decay per tensor (parameter groups).
//!
//! [`adamw_update`] is the update of a single tensor; its arithmetic is specified to the
//! operation (see [`StepScalars::update`]) so that other implementations, such as a CUDA kernel,
//! can reproduce it bit for bit. Every function here gives the same bits for any number of rayon
//! threads. With the `cuda` feature, `cuda::update` and `cuda::sum_squares` run the update and the
//! norm's reduction on tensors that live on a GPU (lmsi-cuda's kernels), with the same results.
//!
//! # Example
//!
//! Minimise `f(x) = Σ_i (x_i - c_i)²` with AdamW, a cosine schedule and clipping:
//!
//! ```
//! use lmsi_adamw::{AdamW, AdamWConfig, LrSchedule, ScheduleKind, clip_global_norm};
//!
//! let target = [3.0f32, -2.0, 0.5];
//! let mut x = vec![0.0f32; 3];
//! let steps = 300;
//! let schedule = LrSchedule::new(ScheduleKind::Cosine, 0.1, 10, steps);
//! let config = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
//! let mut opt = AdamW::new(config, &[x.len()]);
//! for step in 1..=steps {
//!     let mut grad: Vec<f32> = x.iter().zip(&target).map(|(x, c)| 2.0 * (x - c)).collect();
//!     let norm = clip_global_norm(&mut [&mut grad], 1.0);
//!     assert!(norm.is_finite());
//!     opt.step(&mut [&mut x], &[&grad], &[true], schedule.lr(step))?;
//! }
//! for (x, c) in x.iter().zip(&target) {
//!     assert!((x - c).abs() < 1e-2, "{x} should be close to {c}");
//! }
//! # Ok::<(), lmsi_adamw::AdamWError>(())
//! ```

mod accumulate;
mod clip;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
mod optimizer;
mod schedule;
mod update;

pub use accumulate::GradAccumulator;
pub use clip::{clip_global_norm, global_norm};
pub use error::AdamWError;
pub use optimizer::{AdamW, TensorMoments};
pub use schedule::{LrSchedule, ScheduleKind};
pub use update::{AdamWConfig, StepParams, StepScalars, adamw_update, adamw_update_with, widen};
