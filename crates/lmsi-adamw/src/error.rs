//! The crate's error type.

/// What can go wrong in this crate: mismatched tensor lists, out-of-range hyperparameters and
/// unknown schedule names. Every shape error names the tensor by its index in the list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdamWError {
    /// Tensor `tensor` has `got` elements where `expected` were required (by the optimizer's
    /// moments, the accumulator's buffers, or the parameter the gradient belongs to).
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
        /// Number of tensors the optimizer or accumulator holds.
        expected: usize,
        /// Number of entries given.
        got: usize,
    },
    /// The two moments of tensor `tensor` differ in length (a damaged checkpoint passed to
    /// [`AdamW::from_state`](crate::AdamW::from_state)).
    #[error("tensor {tensor}: first moment has {m} elements but second moment has {v}")]
    Moments {
        /// Index of the tensor.
        tensor: usize,
        /// Length of the first moment.
        m: usize,
        /// Length of the second moment.
        v: usize,
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
