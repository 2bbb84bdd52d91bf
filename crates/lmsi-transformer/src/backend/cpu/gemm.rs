//! The CPU backend's one wrapper around the `gemm` crate: `out (+)= a · b` for matrices read
//! through strides, so that a transpose is a view, not a copy. The backward passes of the matrix
//! products use it on all threads; training attention uses it on the calling thread, one
//! (sequence, head group) per task. (The forward products go through `linear`, whose per-row sums
//! do not depend on the other rows.)

use ::gemm::{Parallelism, gemm};

/// A `rows × cols` matrix whose element `(i, j)` is `values[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Strided<'a> {
    /// Rows of `cols` contiguous values, `row_stride` apart.
    pub(super) fn rows(values: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            values,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose, reading the same values.
    pub(super) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element lies inside `values`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.values.len()
                > (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// `out[a.rows, b.cols] = (accumulate ? out : 0) + a · b`, row-major, on `threads`.
///
/// # Panics
///
/// If `a.cols != b.rows`, or a view or `out` is too short for its shape.
pub(super) fn gemm_into(
    out: &mut [f32],
    a: Strided<'_>,
    b: Strided<'_>,
    accumulate: bool,
    threads: Parallelism,
) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(b.rows == k && out.len() >= m * n && a.fits() && b.fits());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the assert keeps every access inside the three slices their strides describe.
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.values.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            threads,
        );
    }
}
