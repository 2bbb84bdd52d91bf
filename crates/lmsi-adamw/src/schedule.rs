//! Learning-rate schedules with linear warm-up: constant, linear decay and cosine decay.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{AdamWError, require};
use crate::update::widen;

/// The shape of the learning rate after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Stays at the base rate.
    Constant,
    /// Falls linearly from the base rate to the minimum at the last step.
    Linear,
    /// Falls along half a cosine from the base rate to the minimum at the last step.
    Cosine,
}

impl ScheduleKind {
    /// The name used by [`FromStr`], [`Display`](fmt::Display) and serde.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Linear => "linear",
            Self::Cosine => "cosine",
        }
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ScheduleKind {
    type Err = AdamWError;

    /// Parses `constant`, `linear` or `cosine` (exactly, lower case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            _ => Err(AdamWError::UnknownSchedule(s.to_owned())),
        }
    }
}

/// A learning rate per step: linear warm-up from 0 to `base_lr`, then [`ScheduleKind`].
///
/// `step` is 1-based: `lr(s)` is the rate of the `s`-th update, the one about to be taken. With
/// `W = warmup_steps`, `T = total_steps`, `r = min_lr_ratio` and `min = r·base_lr`:
///
/// | step `s` | constant | linear | cosine |
/// | --- | --- | --- | --- |
/// | `s < W` | `base·s/W` | `base·s/W` | `base·s/W` |
/// | `W <= s <= T` | `base` | `min + (base-min)·(1-p)` | `min + (base-min)·½(1+cos(π·p))` |
/// | `s > T` | `base` | `min` | `min` |
///
/// where `p = (s - W) / max(1, T - W)` is the decay progress, 0 at the end of warm-up and 1 at
/// the last step. So the first step has rate `base/W` (never 0), step `W` has exactly `base`, and
/// step `T` has exactly `min`. Everything is computed in `f64` (from `base_lr` and
/// `min_lr_ratio` as [`widen`](crate::widen)ed) and rounded once to `f32`. (If
/// `T <= W` there is no decay phase: the rate peaks at step `W` and is `min` after it.)
///
/// # Relation to Hugging Face `transformers`
///
/// `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup` (`num_cycles = 0.5`) and
/// `get_constant_schedule_with_warmup` define a factor `λ(k)` of `k`, the number of finished
/// steps; their `Trainer` takes its `(k+1)`-th update at `base·λ(k)`, so its first update has rate
/// 0 when there is warm-up. This schedule is the same function, read at the step being taken:
///
/// ```text
/// lr(s) = base · λ(s)          (for r = 0 and s <= T)
/// ```
///
/// i.e. our step `s` uses the rate HF uses for its step `s + 1`: warm-up ends one step sooner and
/// the decay reaches its end at step `T` instead of `T + 1`. With `r > 0` the decay part equals
/// `get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate = r)`; for linear it is the same
/// rescaling `r + (1-r)·λ`. Past `T` we hold the final value, where HF's cosine would rise again.
///
/// ```
/// use lmsi_adamw::{LrSchedule, ScheduleKind};
///
/// let s = LrSchedule::new(ScheduleKind::Cosine, 1e-3, 10, 110);
/// assert!((s.lr(1) - 1e-4).abs() < 1e-10); // warm-up: base · 1/10
/// assert_eq!(s.lr(10), 1e-3); // the end of warm-up is the peak
/// assert!((s.lr(60) - 5e-4).abs() < 1e-9); // halfway down the cosine
/// assert_eq!(s.lr(110), 0.0); // the last step reaches min_lr
/// assert_eq!(s.lr(500), 0.0); // and stays there
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Shape after warm-up.
    pub kind: ScheduleKind,
    /// Peak learning rate, reached at the end of warm-up.
    pub base_lr: f32,
    /// Steps of linear warm-up (0 for none).
    pub warmup_steps: u64,
    /// The last step of the run, where linear and cosine reach the minimum.
    pub total_steps: u64,
    /// The final rate as a fraction of `base_lr`, in `[0, 1]`; 0 by default.
    #[serde(default)]
    pub min_lr_ratio: f32,
}

impl LrSchedule {
    /// A schedule that decays to 0 (`min_lr_ratio = 0`).
    pub fn new(kind: ScheduleKind, base_lr: f32, warmup_steps: u64, total_steps: u64) -> Self {
        Self {
            kind,
            base_lr,
            warmup_steps,
            total_steps,
            min_lr_ratio: 0.0,
        }
    }

    /// A constant rate with no warm-up.
    pub fn constant(base_lr: f32) -> Self {
        Self::new(ScheduleKind::Constant, base_lr, 0, 0)
    }

    /// Checks a finite `base_lr >= 0` and `0 <= min_lr_ratio <= 1`.
    pub fn validate(&self) -> Result<(), AdamWError> {
        require(
            self.base_lr >= 0.0 && self.base_lr.is_finite(),
            "base_lr",
            self.base_lr,
            "finite base_lr >= 0",
        )?;
        require(
            (0.0..=1.0).contains(&self.min_lr_ratio),
            "min_lr_ratio",
            self.min_lr_ratio,
            "0 <= min_lr_ratio <= 1",
        )
    }

    /// The learning rate of step `step` (1-based); see the table on [`LrSchedule`]. Step 0 (no
    /// step) gives 0 when there is warm-up.
    pub fn lr(&self, step: u64) -> f32 {
        (widen(self.base_lr) * self.factor(step)) as f32
    }

    /// `lr(step) / base_lr`, in `f64`.
    pub fn factor(&self, step: u64) -> f64 {
        let (w, t) = (self.warmup_steps, self.total_steps);
        if step < w {
            return step as f64 / w as f64;
        }
        let min = widen(self.min_lr_ratio);
        let progress = ((step - w) as f64 / t.saturating_sub(w).max(1) as f64).min(1.0);
        let shape = match self.kind {
            ScheduleKind::Constant => return 1.0,
            ScheduleKind::Linear => 1.0 - progress,
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        min + (1.0 - min) * shape
    }
}
