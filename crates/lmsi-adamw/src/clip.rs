//! Global gradient norm and clipping, as `torch.nn.utils.clip_grad_norm_`.

use rayon::prelude::*;

use crate::update::CHUNK;

/// The L2 norm of all gradients together: the square root of the sum of squares of every
/// element of every tensor, accumulated in `f64`.
///
/// Deterministic: it is the square root of the tensors' [`sum_squares`] added in list order, the
/// same bits for any number of threads and the same as the norm
/// [`Trainer::step`](crate::Trainer::step) measures. A NaN or infinite element gives a non-finite
/// norm.
///
/// ```
/// use lmsi_adamw::global_norm;
///
/// assert_eq!(global_norm(&[&[3.0], &[0.0, -4.0]]), 5.0);
/// assert!(global_norm(&[&[1.0, f32::NAN]]).is_nan());
/// ```
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    // Every chunk of every tensor in parallel, then each tensor's chunk sums as `sum_squares`
    // adds them, then the tensors in order.
    let chunks: Vec<(usize, &[f32])> = grads
        .iter()
        .enumerate()
        .flat_map(|(t, g)| g.chunks(CHUNK).map(move |c| (t, c)))
        .collect();
    let partials: Vec<(usize, f64)> = chunks
        .par_iter()
        .map(|&(t, c)| (t, chunk_sum_squares(c)))
        .collect();
    let mut total = 0.0;
    for tensor in partials.chunk_by(|a, b| a.0 == b.0) {
        let sum: f64 = tensor.iter().map(|p| p.1).sum();
        total += sum;
    }
    total.sqrt()
}

/// The sum of the squares of one tensor's elements, in `f64`: the tensor is cut into fixed chunks of
/// 65,536, each summed in a fixed order, and the chunk sums are added in order, so the result has
/// the same bits for any number of threads.
///
/// ```
/// assert_eq!(lmsi_adamw::sum_squares(&[3.0, -4.0]), 25.0);
/// ```
pub fn sum_squares(x: &[f32]) -> f64 {
    let partials: Vec<f64> = x.par_chunks(CHUNK).map(chunk_sum_squares).collect();
    partials.iter().sum()
}

/// Scales the gradients so that their [`global_norm`] is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_(norm_type=2)`, and returns the norm before clipping.
///
/// With `norm` the global norm, `coef = max_norm / (norm + 1e-6)` (in `f64`); when `coef < 1`,
/// every element is multiplied by `coef` rounded to `f32`, otherwise nothing changes. When `norm`
/// is NaN or infinite nothing is scaled and the norm is returned, so the caller can skip the step
/// (PyTorch would multiply by a NaN or zero coefficient).
///
/// # Panics
///
/// If `max_norm` is negative or NaN.
///
/// ```
/// use lmsi_adamw::clip_global_norm;
///
/// let (mut a, mut b) = (vec![3.0f32], vec![0.0f32, -4.0]);
/// let norm = clip_global_norm(&mut [&mut a, &mut b], 1.0);
/// assert_eq!(norm, 5.0);
/// assert!((a[0] - 0.6).abs() < 1e-6 && (b[1] + 0.8).abs() < 1e-6);
/// ```
pub fn clip_global_norm(grads: &mut [&mut [f32]], max_norm: f64) -> f64 {
    assert!(
        max_norm >= 0.0,
        "clip_global_norm: max_norm must be >= 0, got {max_norm}"
    );
    let norm = global_norm(&grads.iter().map(|g| &**g).collect::<Vec<_>>());
    if norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            scale_all(grads, coef as f32);
        }
    }
    norm
}

/// Multiplies every element of every tensor by `factor`, in parallel over fixed chunks.
pub(crate) fn scale_all(tensors: &mut [&mut [f32]], factor: f32) {
    let chunks: Vec<&mut [f32]> = tensors
        .iter_mut()
        .flat_map(|t| t.chunks_mut(CHUNK))
        .collect();
    chunks
        .into_par_iter()
        .for_each(|c| c.iter_mut().for_each(|x| *x *= factor));
}

/// Sum of squares in `f64`. Squares of `f32` values are exact in `f64`; eight accumulators in a
/// fixed order keep the adds pipelined without making the result depend on anything but `x`.
fn chunk_sum_squares(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut lanes = x.chunks_exact(8);
    for c in &mut lanes {
        for (a, &y) in acc.iter_mut().zip(c) {
            *a += f64::from(y) * f64::from(y);
        }
    }
    for (a, &y) in acc.iter_mut().zip(lanes.remainder()) {
        *a += f64::from(y) * f64::from(y);
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}
