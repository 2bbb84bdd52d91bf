//! The error type of the crate.

/// Why a row could not be sampled.
///
/// Errors about a row's logits name the row: its index in the batch for
/// [`sample_batch`](crate::sample_batch), always 0 for [`sample_row`](crate::sample_row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// A logit is NaN (usually a numerical failure upstream).
    #[error("row {row}: logit {index} is NaN")]
    NanLogit {
        /// The row in the batch.
        row: usize,
        /// The first NaN position in the row.
        index: usize,
    },
    /// A logit is `+inf`, which has no well-defined softmax.
    #[error("row {row}: logit {index} is +inf")]
    InfiniteLogit {
        /// The row in the batch.
        row: usize,
        /// The first `+inf` position in the row.
        index: usize,
    },
    /// Every logit of the row is `-inf`: no token can be sampled.
    #[error("row {row}: every logit is -inf")]
    NoFiniteLogit {
        /// The row in the batch.
        row: usize,
    },
    /// The sampling parameters are out of range (see [`SamplingParams::validate`](crate::SamplingParams::validate)).
    #[error("invalid sampling parameters: {0}")]
    InvalidParams(String),
    /// The vocabulary is empty.
    #[error("the vocabulary is empty")]
    EmptyVocab,
    /// The vocabulary is larger than [`MAX_VOCAB`](crate::MAX_VOCAB).
    #[error("vocabulary of {vocab} tokens exceeds the maximum of {max}")]
    VocabTooLarge {
        /// The vocabulary size given.
        vocab: usize,
        /// The largest supported vocabulary.
        max: usize,
    },
    /// The logits buffer does not hold `rows × vocab` values.
    #[error("logits hold {len} values, expected {rows} rows × {vocab} vocab")]
    Shape {
        /// Length of the logits buffer.
        len: usize,
        /// Number of rows (one per [`RowKey`](crate::RowKey)).
        rows: usize,
        /// Vocabulary size.
        vocab: usize,
    },
}
