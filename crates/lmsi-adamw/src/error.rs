//! The crate's error type.

/// What can go wrong in this crate: mismatched tensor lists, out-of-range hyperparameters, unknown
/// schedule names, a gradient that is not finite and a damaged or mismatched optimizer state.
/// Every shape error names the tensor by its index in the list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdamWError {
    /// Tensor `tensor` has `got` elements where `expected` were required (by its shape, or by the
    /// parameter a gradient or moment belongs to).
    #[error("tensor {tensor}: expected {expected} elements, got {got}")]
    Shape {
        /// Index of the tensor in the list.
        tensor: usize,
        /// Number of elements required.
        expected: usize,
        /// Number of elements given.
        got: usize,
    },
    /// A list of tensors (parameters, gradients or decay flags) has the wrong length.
    #[error("expected {expected} tensors, got {got}")]
    Count {
        /// Number of tensors the model has.
        expected: usize,
        /// Number of entries given.
        got: usize,
    },
    /// A hyperparameter is NaN or outside its range.
    #[error("{name} = {value} is out of range (expected {expected})")]
    Hyperparameter {
        /// The parameter's name, as in the config (`"beta1"`, `"lr"`, ...).
        name: &'static str,
        /// The rejected value.
        value: f64,
        /// The allowed range, e.g. `"0 <= beta1 < 1"`.
        expected: &'static str,
    },
    /// A learning-rate schedule name that is not `constant`, `linear` or `cosine`.
    #[error("unknown learning-rate schedule {0:?} (expected constant, linear or cosine)")]
    UnknownSchedule(String),
    /// The global gradient norm of step `step` is NaN or infinite: training has diverged.
    #[error("step {step}: the gradient norm is {norm}")]
    NonFiniteGradient {
        /// The step that was being taken (1-based).
        step: u64,
        /// The norm.
        norm: f64,
    },
    /// An optimizer state that cannot be resumed: what is wrong with it.
    #[error("optimizer state: {0}")]
    State(String),
}

/// `Ok` when `ok`, else [`AdamWError::Hyperparameter`] naming `name` and `value`. Callers write `ok`
/// as comparisons, which are false for NaN, so NaN is always rejected.
pub(crate) fn require(
    ok: bool,
    name: &'static str,
    value: f32,
    expected: &'static str,
) -> Result<(), AdamWError> {
    if ok {
        Ok(())
    } else {
        Err(AdamWError::Hyperparameter {
            name,
            value: f64::from(value),
            expected,
        })
    }
}
