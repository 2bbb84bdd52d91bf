//! The entry points: one row, or a batch of rows in parallel.

use rayon::prelude::*;

use crate::draw::{Scratch, draw};
use crate::math::{first_index_of, log_softmax, row_max, sum_exp};
use crate::{SampleError, SamplingParams, random_u64};

/// The largest supported vocabulary, 2^24 tokens: token weights (at most 2^39 each)
/// then sum to at most 2^63 and fit a `u64`.
pub const MAX_VOCAB: usize = 1 << 24;

/// Where a row's random bits come from: which sequence (path) it belongs to and which
/// token of that sequence is being drawn.
///
/// The draw depends only on `(seed, sequence, step)`, never on the row's position in a
/// batch, so a path samples the same tokens whatever runs beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    /// The sequence id, usually [`sequence_id`](crate::sequence_id)`(question_id, path)`.
    pub sequence: u64,
    /// The position of the token being drawn within the sequence (0 for the first new token).
    pub step: u32,
}

impl RowKey {
    /// A key for token `step` of sequence `sequence`.
    pub fn new(sequence: u64, step: u32) -> Self {
        Self { sequence, step }
    }
}

/// A sampled token with its log-probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    /// The token index into the row.
    pub token: u32,
    /// Log-softmax of the raw logits (temperature 1, no truncation) at `token`: the
    /// model's own log-probability, as used for log-prob weighted voting.
    pub logprob: f32,
    /// Log-probability of `token` under the distribution actually sampled from
    /// (tempered and truncated); 0 for greedy.
    pub sampling_logprob: f32,
}

/// Samples one token from one row of logits.
///
/// Errors name row 0. See the crate docs for the exact algorithm.
///
/// ```
/// use lmsi_sampler::{RowKey, SamplingParams, sample_row};
///
/// let logits = [0.1, 2.5, -1.0, 2.4];
/// let greedy = sample_row(&logits, &SamplingParams::greedy(), RowKey::new(0, 0))?;
/// assert_eq!(greedy.token, 1);
///
/// let params = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 42 };
/// let s = sample_row(&logits, &params, RowKey::new(7, 0))?;
/// assert!(s.token == 1 || s.token == 3);
/// assert!(s.logprob < s.sampling_logprob && s.sampling_logprob < 0.0);
/// # Ok::<(), lmsi_sampler::SampleError>(())
/// ```
pub fn sample_row(
    logits: &[f32],
    params: &SamplingParams,
    key: RowKey,
) -> Result<Sampled, SampleError> {
    params.validate()?;
    check_vocab(logits.len())?;
    sample_checked(logits, params, key, 0, &mut Scratch::default())
}

/// Samples one token from each row of a row-major `[keys.len(), vocab]` logits buffer,
/// rows in parallel.
///
/// Row `i` gives exactly what [`sample_row`] gives for `logits[i·vocab..(i+1)·vocab]` and
/// `keys[i]`. If several rows are invalid, the error names the first.
///
/// ```
/// use lmsi_sampler::{RowKey, SamplingParams, sample_batch, sample_row, sequence_id};
///
/// let vocab = 5;
/// let logits: Vec<f32> = (0..3 * vocab).map(|i| (i % 7) as f32).collect();
/// let keys: Vec<RowKey> = (0..3).map(|p| RowKey::new(sequence_id("q1", p), 0)).collect();
/// let params = SamplingParams::default();
/// let batch = sample_batch(&logits, vocab, &params, &keys)?;
/// assert_eq!(batch[2], sample_row(&logits[2 * vocab..], &params, keys[2])?);
/// # Ok::<(), lmsi_sampler::SampleError>(())
/// ```
pub fn sample_batch(
    logits: &[f32],
    vocab: usize,
    params: &SamplingParams,
    keys: &[RowKey],
) -> Result<Vec<Sampled>, SampleError> {
    params.validate()?;
    check_vocab(vocab)?;
    let rows = keys.len();
    if rows.checked_mul(vocab) != Some(logits.len()) {
        return Err(SampleError::Shape {
            len: logits.len(),
            rows,
            vocab,
        });
    }
    let results: Vec<Result<Sampled, SampleError>> = logits
        .par_chunks_exact(vocab)
        .zip(keys.par_iter())
        .enumerate()
        .map_init(Scratch::default, |scratch, (row, (logits, &key))| {
            sample_checked(logits, params, key, row, scratch)
        })
        .collect();
    // Sequential collect: the first failing row in order, whatever thread found it.
    results.into_iter().collect()
}

pub(crate) fn check_vocab(vocab: usize) -> Result<(), SampleError> {
    match vocab {
        0 => Err(SampleError::EmptyVocab),
        v if v > MAX_VOCAB => Err(SampleError::VocabTooLarge {
            vocab: v,
            max: MAX_VOCAB,
        }),
        _ => Ok(()),
    }
}

/// One row, with valid params and a vocabulary size in range.
fn sample_checked(
    logits: &[f32],
    params: &SamplingParams,
    key: RowKey,
    row: usize,
    scratch: &mut Scratch,
) -> Result<Sampled, SampleError> {
    let max = row_max(logits, row)?;
    let (token, sampling_logprob) = if params.is_greedy() {
        let argmax = first_index_of(logits, max).expect("the max is in the row");
        (argmax as u32, 0.0)
    } else {
        let bits = random_u64(params.seed, key.sequence, key.step);
        let d = draw(logits, max, params, bits, scratch);
        (d.token, d.logprob())
    };
    let logprob = log_softmax(logits[token as usize], max, sum_exp(logits, max));
    Ok(Sampled {
        token,
        logprob,
        sampling_logprob,
    })
}
