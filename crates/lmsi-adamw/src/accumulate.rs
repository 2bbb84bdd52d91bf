//! [`GradAccumulator`]: sums the gradients of several micro-batches into one optimizer step.

use rayon::prelude::*;

use crate::clip::scale_all;
use crate::error::AdamWError;
use crate::update::CHUNK;

/// Running sums of gradients over micro-batches, one buffer per tensor.
///
/// Gradient accumulation trades memory for batch size: run the backward pass on each of `k`
/// micro-batches, [`add`](Self::add) each gradient, then [`average`](Self::average) (when every
/// micro-batch gradient is a mean over equally many examples) or [`scale`](Self::scale) (e.g. by
/// `1 / total tokens` when each was summed over its tokens), and step the optimizer with
/// [`grads`](Self::grads). Additions are `f32`, element by element in the order of the calls, so
/// the sums never depend on the number of threads.
///
/// ```
/// use lmsi_adamw::GradAccumulator;
///
/// let mut acc = GradAccumulator::new(&[2]);
/// acc.add(&[&[1.0, 2.0]])?;
/// acc.add(&[&[3.0, 6.0]])?;
/// acc.average();
/// assert_eq!(acc.grads(), [&[2.0, 4.0][..]]);
/// acc.clear();
/// assert_eq!((acc.micro_steps(), acc.grads()), (0, vec![&[0.0, 0.0][..]]));
/// # Ok::<(), lmsi_adamw::AdamWError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GradAccumulator {
    sums: Vec<Vec<f32>>,
    micro_steps: u64,
}

impl GradAccumulator {
    /// Zeroed buffers for tensors of `sizes` elements each.
    pub fn new(sizes: &[usize]) -> Self {
        Self {
            sums: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            micro_steps: 0,
        }
    }

    /// Adds one micro-batch's gradients (one slice per tensor) and counts a micro-step.
    ///
    /// # Errors
    ///
    /// [`AdamWError::Count`] or [`AdamWError::Shape`] (naming the tensor) when `grads` does not
    /// match the buffers; nothing is added then.
    pub fn add(&mut self, grads: &[&[f32]]) -> Result<(), AdamWError> {
        self.add_scaled(grads, 1.0)
    }

    /// Adds `weight · grads` (one slice per tensor) and counts a micro-step: for weighting
    /// micro-batches by their share of the examples or tokens.
    ///
    /// # Errors
    ///
    /// As [`add`](Self::add).
    pub fn add_scaled(&mut self, grads: &[&[f32]], weight: f32) -> Result<(), AdamWError> {
        if grads.len() != self.sums.len() {
            return Err(AdamWError::Count {
                expected: self.sums.len(),
                got: grads.len(),
            });
        }
        for (tensor, (sum, grad)) in self.sums.iter().zip(grads).enumerate() {
            if sum.len() != grad.len() {
                return Err(AdamWError::Shape {
                    tensor,
                    expected: sum.len(),
                    got: grad.len(),
                });
            }
        }
        let mut work: Vec<(&mut [f32], &[f32])> = Vec::new();
        for (sum, grad) in self.sums.iter_mut().zip(grads) {
            work.extend(sum.chunks_mut(CHUNK).zip(grad.chunks(CHUNK)));
        }
        // `1.0 * g == g` exactly, so `add` is a plain sum.
        work.into_par_iter()
            .for_each(|(s, g)| s.iter_mut().zip(g).for_each(|(s, &g)| *s += weight * g));
        self.micro_steps += 1;
        Ok(())
    }

    /// Multiplies every sum by `factor`.
    pub fn scale(&mut self, factor: f32) {
        scale_all(&mut self.grads_mut(), factor);
    }

    /// Divides every sum by the number of micro-steps (in `f32`, a division rather than a
    /// multiplication by the reciprocal, so a mean of equal values is exact). Does nothing before
    /// the first [`add`](Self::add).
    pub fn average(&mut self) {
        if self.micro_steps == 0 {
            return;
        }
        let n = self.micro_steps as f32;
        let mut chunks: Vec<&mut [f32]> = self
            .sums
            .iter_mut()
            .flat_map(|s| s.chunks_mut(CHUNK))
            .collect();
        chunks
            .par_iter_mut()
            .for_each(|c| c.iter_mut().for_each(|x| *x /= n));
    }

    /// The accumulated gradients, one slice per tensor, for [`AdamW::step`](crate::AdamW::step).
    pub fn grads(&self) -> Vec<&[f32]> {
        self.sums.iter().map(Vec::as_slice).collect()
    }

    /// The accumulated gradients, mutable, for [`clip_global_norm`](crate::clip_global_norm).
    pub fn grads_mut(&mut self) -> Vec<&mut [f32]> {
        self.sums.iter_mut().map(Vec::as_mut_slice).collect()
    }

    /// Returns the sums and starts over with zeroed buffers and no micro-steps.
    pub fn take(&mut self) -> Vec<Vec<f32>> {
        let zeros = self.sums.iter().map(|s| vec![0.0; s.len()]).collect();
        self.micro_steps = 0;
        std::mem::replace(&mut self.sums, zeros)
    }

    /// Zeroes the sums in place and forgets the micro-steps.
    pub fn clear(&mut self) {
        self.sums.iter_mut().for_each(|s| s.fill(0.0));
        self.micro_steps = 0;
    }

    /// The number of [`add`](Self::add) calls since creation or the last
    /// [`take`](Self::take)/[`clear`](Self::clear).
    pub fn micro_steps(&self) -> u64 {
        self.micro_steps
    }
}
