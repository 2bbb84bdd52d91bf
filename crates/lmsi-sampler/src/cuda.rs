//! Sampling on a CUDA device (feature `cuda`): lmsi-cuda's `sample_rows` kernel, which follows
//! this crate's algorithm step for step and draws exactly the tokens of
//! [`sample_batch`](crate::sample_batch). The device is a [`lmsi_cuda::Device`]: a GPU (with
//! lmsi-cuda's own `cuda` feature), or the simulated device, which runs the same kernel on the CPU.
//!
//! The logits stay on the device; only the sampled tokens and their log-probabilities come back
//! (the one synchronisation of a call). Log-probabilities agree with the CPU's to `f32` rounding
//! (see "The algorithm" in the crate docs); tokens agree exactly.
//!
//! ```
//! use lmsi_cuda::Device;
//! use lmsi_sampler::{RowKey, SamplingParams, sample_batch};
//!
//! let dev = Device::sim(); // or Device::gpu(0)?
//! let vocab = 4;
//! let host = [1.0f32, 3.0, 2.9, -1.0, 0.5, 0.5, 4.0, f32::NEG_INFINITY];
//! let logits = dev.upload(&host)?;
//! let keys = [RowKey::new(7, 0)];
//! let params = SamplingParams { temperature: 0.7, top_k: 2, top_p: 1.0, seed: 1234 };
//! // Row 1 of the logits, drawn with key 7/0: the CPU's draw for the same row and key.
//! let on_dev = lmsi_sampler::cuda::sample_rows(&dev, &logits, &[1], vocab, &params, &keys)?;
//! assert_eq!(on_dev[0].token, sample_batch(&host[4..], vocab, &params, &keys)?[0].token);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use lmsi_cuda::params::{
    LMSI_SAMPLE_INF, LMSI_SAMPLE_NAN, LMSI_SAMPLE_NO_FINITE, LMSI_SAMPLE_OK, LmsiRowsParams,
    LmsiSampleParams,
};
use lmsi_cuda::{Device, View};

use crate::sample::check_vocab;
use crate::{RowKey, SampleError, Sampled, SamplingParams};

/// Why rows could not be sampled on the GPU.
#[derive(Debug, thiserror::Error)]
pub enum CudaSampleError {
    /// What [`sample_batch`](crate::sample_batch) reports for the same rows (bad parameters, a NaN
    /// logit, ...); a row's error names its position in `keys`.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// `rows` and `keys` differ in length.
    #[error("{rows} rows to sample for {keys} keys")]
    Keys { rows: usize, keys: usize },
    /// Position `position` asks for row `row`, but the logits hold only `available` rows.
    #[error("position {position} asks for logits row {row}, but there are {available} rows")]
    Row {
        position: usize,
        row: u32,
        available: usize,
    },
    /// The kernel left a status it does not define for a row: a broken launch.
    #[error("sample_rows left status {status} for position {position}")]
    Status { position: usize, status: i32 },
    /// A CUDA call failed.
    #[error("CUDA: {0}")]
    Cuda(#[from] lmsi_cuda::Error),
}

/// Samples one token per key on `device`: key `i` draws from row `rows[i]` of `logits` (`[_, vocab]`
/// row-major, on the device), exactly as [`sample_row`](crate::sample_row) draws from that row.
///
/// Errors are checked in [`sample_batch`](crate::sample_batch)'s order: parameters, vocabulary,
/// then the first bad row by position.
pub fn sample_rows<'a>(
    device: &Device,
    logits: impl Into<View<'a, f32>>,
    rows: &[u32],
    vocab: usize,
    params: &SamplingParams,
    keys: &[RowKey],
) -> Result<Vec<Sampled>, CudaSampleError> {
    let logits = logits.into();
    params.validate()?;
    check_vocab(vocab)?;
    if rows.len() != keys.len() {
        return Err(CudaSampleError::Keys {
            rows: rows.len(),
            keys: keys.len(),
        });
    }
    let available = logits.len() / vocab;
    if let Some((position, &row)) = rows
        .iter()
        .enumerate()
        .find(|&(_, &r)| r as usize >= available)
    {
        return Err(CudaSampleError::Row {
            position,
            row,
            available,
        });
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let n = rows.len();

    // The wanted rows, contiguous, as the kernel takes them.
    let index = device.upload(rows)?;
    let mut gathered = device.zeros::<f32>(n * vocab)?;
    let gather = LmsiRowsParams {
        rows: n as u32,
        dim: vocab as u32,
        table_rows: available as u32,
    };
    device.gather_rows(&gather, &mut gathered, logits, &index)?;

    let sequences: Vec<u64> = keys.iter().map(|k| k.sequence).collect();
    let steps: Vec<u32> = keys.iter().map(|k| k.step).collect();
    let (sequences, steps) = (device.upload(&sequences)?, device.upload(&steps)?);
    let mut tokens = device.zeros::<u32>(n)?;
    let mut logprobs = device.zeros::<f32>(n)?;
    let mut sampling_logprobs = device.zeros::<f32>(n)?;
    let mut status = device.zeros::<i32>(n)?;
    let p = LmsiSampleParams {
        seed: params.seed,
        rows: n as u32,
        vocab: vocab as u32,
        temperature: params.temperature,
        top_p: params.top_p,
        top_k: params.top_k.min(u32::MAX as usize) as u32,
    };
    device.sample_rows(
        &p,
        &mut tokens,
        &mut logprobs,
        &mut sampling_logprobs,
        &mut status,
        &gathered,
        &sequences,
        &steps,
    )?;

    let status = device.download(&status)?;
    let tokens = device.download(&tokens)?;
    for (row, (&s, &token)) in status.iter().zip(&tokens).enumerate() {
        if let Some(e) = row_error(s, token, row) {
            return Err(e);
        }
    }
    let logprobs = device.download(&logprobs)?;
    let sampling_logprobs = device.download(&sampling_logprobs)?;
    Ok(tokens
        .into_iter()
        .zip(logprobs)
        .zip(sampling_logprobs)
        .map(|((token, logprob), sampling_logprob)| Sampled {
            token,
            logprob,
            sampling_logprob,
        })
        .collect())
}

/// The error a row's kernel status stands for (on an error, `token` is the offending logit's index).
fn row_error(status: i32, token: u32, row: usize) -> Option<CudaSampleError> {
    let index = token as usize;
    let error = match u32::try_from(status) {
        Ok(LMSI_SAMPLE_OK) => return None,
        Ok(LMSI_SAMPLE_NAN) => SampleError::NanLogit { row, index },
        Ok(LMSI_SAMPLE_INF) => SampleError::InfiniteLogit { row, index },
        Ok(LMSI_SAMPLE_NO_FINITE) => SampleError::NoFiniteLogit { row },
        _ => {
            return Some(CudaSampleError::Status {
                position: row,
                status,
            });
        }
    };
    Some(error.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_error(status: u32, token: u32, row: usize) -> Option<SampleError> {
        match row_error(status as i32, token, row) {
            None => None,
            Some(CudaSampleError::Sample(e)) => Some(e),
            Some(other) => panic!("not a sampling error: {other}"),
        }
    }

    #[test]
    fn kernel_statuses_become_the_cpu_errors() {
        assert_eq!(sample_error(LMSI_SAMPLE_OK, 3, 0), None);
        assert_eq!(
            sample_error(LMSI_SAMPLE_NAN, 17, 2),
            Some(SampleError::NanLogit { row: 2, index: 17 })
        );
        assert_eq!(
            sample_error(LMSI_SAMPLE_INF, 5, 1),
            Some(SampleError::InfiniteLogit { row: 1, index: 5 })
        );
        assert_eq!(
            sample_error(LMSI_SAMPLE_NO_FINITE, u32::MAX, 4),
            Some(SampleError::NoFiniteLogit { row: 4 })
        );
        assert!(matches!(
            row_error(-1, 0, 6),
            Some(CudaSampleError::Status {
                position: 6,
                status: -1
            })
        ));
    }
}
