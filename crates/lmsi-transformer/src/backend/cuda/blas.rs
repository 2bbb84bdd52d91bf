//! The matrix products of the CUDA backend: cuBLAS's products (through [`Device::gemm`]) on
//! row-major buffers, f32 by f32 or bf16 by bf16, always into f32 with f32 sums.
//!
//! cuBLAS is column-major. A row-major `[r, c]` buffer read column-major is the `[c, r]` matrix
//! holding the transpose, with leading dimension `c`. So a row-major product `C = op(A)·op(B)` is
//! asked of cuBLAS as the column-major product `Cᵀ = op(B)ᵀ·op(A)ᵀ`: the operands swap places, and
//! each keeps its own transpose flag, because reading a row-major buffer column-major already
//! transposes it once. Every leading dimension is the row length of the buffer as stored.
//!
//! The three products of a linear layer `y = x·Wᵀ` (`x: [m, k]`, `W: [n, k]`, `y: [m, n]`):
//!
//! | product | row-major | asked of cuBLAS (column-major) |
//! | --- | --- | --- |
//! | forward | `y[m, n] = x·Wᵀ` | `yᵀ[n, m] = W·xᵀ`: `W` transposed (`T`, lda `k`), `x` as stored (`N`, ldb `k`) |
//! | input gradient | `dx[m, k] = dy·W` | `dxᵀ[k, m] = Wᵀ·dyᵀ`: both as stored (`N`, `N`; lda `k`, ldb `n`) |
//! | weight gradient | `dW[n, k] += dyᵀ·x` | `dWᵀ[k, n] += xᵀ·dy`: `x` as stored (`N`, lda `k`), `dy` transposed (`T`, ldb `n`) |
//!
//! On the simulated device the same calls run through lmsi-cuda's CPU `gemm`, which follows the
//! BLAS definition (`tests/cuda_backend.rs` compares every direction with the CPU backend), so the
//! transposes are checked without a GPU. cuBLAS keeps f32 arithmetic (no TF32) unless the environment asks for it
//! (`NVIDIA_TF32_OVERRIDE=1`); with `beta = 0` it does not read the output.

use lmsi_cuda::blas::{Gemm, GemmElem, Op};
use lmsi_cuda::{Buffer, Device};

use super::{cuda, need};
use crate::Error;

/// A row-major operand: a buffer and whether it holds the operand transposed.
struct Operand<T> {
    buf: T,
    transposed: bool,
}

/// Row-major `c[rows, cols] = op(a)·op(b) (+ c)`: `op(a)` is `[rows, inner]`, `op(b)` is
/// `[inner, cols]`; a transposed operand is stored as the transpose of its `op` (`[inner, rows]`
/// for `a`, `[cols, inner]` for `b`).
struct Product<T> {
    a: Operand<T>,
    b: Operand<T>,
    rows: usize,
    cols: usize,
    inner: usize,
    accumulate: bool,
}

/// `y[m, n] (+)= x[m, k]·w[n, k]ᵀ`: `op(b) = wᵀ`, stored as `w`.
fn forward<T>(x: T, w: T, (m, n, k): (usize, usize, usize), accumulate: bool) -> Product<T> {
    Product {
        a: Operand {
            buf: x,
            transposed: false,
        },
        b: Operand {
            buf: w,
            transposed: true,
        },
        rows: m,
        cols: n,
        inner: k,
        accumulate,
    }
}

/// `d_x[m, k] (+)= d_out[m, n]·w[n, k]`.
fn backward_input<T>(
    d_out: T,
    w: T,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) -> Product<T> {
    Product {
        a: Operand {
            buf: d_out,
            transposed: false,
        },
        b: Operand {
            buf: w,
            transposed: false,
        },
        rows: m,
        cols: k,
        inner: n,
        accumulate,
    }
}

/// `d_w[n, k] += d_out[m, n]ᵀ·x[m, k]`: `op(a) = d_outᵀ`, stored as `d_out`.
fn backward_weight<T>(d_out: T, x: T, (m, n, k): (usize, usize, usize)) -> Product<T> {
    Product {
        a: Operand {
            buf: d_out,
            transposed: true,
        },
        b: Operand {
            buf: x,
            transposed: false,
        },
        rows: n,
        cols: k,
        inner: m,
        accumulate: true,
    }
}

impl<T> Product<T> {
    /// The column-major `sgemm` computing this product, and its `A` and `B` buffers:
    /// `cᵀ[cols, rows] = op(b)ᵀ[cols, inner] · op(a)ᵀ[inner, rows]`. Stored row-major, `b`
    /// untransposed is `[inner, cols]` (leading dimension `cols`) and reads as `op(b)ᵀ` already;
    /// transposed it is `[cols, inner]` (leading dimension `inner`) and needs cuBLAS's transpose.
    /// Alike for `a`: untransposed `[rows, inner]` (ld `inner`), transposed `[inner, rows]` (ld
    /// `rows`). Needs `rows`, `cols` and `inner` above zero.
    fn column_major(self) -> Result<(Gemm, T, T), Error> {
        let int = |v: usize| {
            i32::try_from(v)
                .map_err(|_| Error::Backend(format!("matrix dimension {v} exceeds cuBLAS's")))
        };
        let op = |transposed| if transposed { Op::T } else { Op::N };
        let (a, b) = (self.a, self.b);
        let cfg = Gemm {
            transa: op(b.transposed),
            transb: op(a.transposed),
            lda: int(if b.transposed { self.inner } else { self.cols })?,
            ldb: int(if a.transposed { self.rows } else { self.inner })?,
            beta: if self.accumulate { 1.0 } else { 0.0 },
            ..Gemm::new(int(self.cols)?, int(self.rows)?, int(self.inner)?)
        };
        Ok((cfg, b.buf, a.buf))
    }
}

/// Runs `product` into `c`, whose length the caller has checked (as those of the operands).
fn run<T: GemmElem>(
    device: &Device,
    c: &mut Buffer<f32>,
    product: Product<&Buffer<T>>,
) -> Result<(), Error>
where
    f32: lmsi_cuda::blas::GemmOutput<T>,
{
    let (rows, cols) = (product.rows, product.cols);
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if product.inner == 0 {
        // An empty sum; cuBLAS would reject the zero leading dimension of an empty operand.
        if !product.accumulate {
            let out = c.slice_mut(0..rows * cols).map_err(cuda)?;
            device.fill_zeros(out).map_err(cuda)?;
        }
        return Ok(());
    }
    let (cfg, a, b) = product.column_major()?;
    device.gemm(&cfg, a, b, c).map_err(cuda)
}

/// `out[m, n] (+)= x[m, k]·w[n, k]ᵀ`.
#[allow(clippy::too_many_arguments)]
pub fn linear<T: GemmElem>(
    device: &Device,
    out: &mut Buffer<f32>,
    x: &Buffer<T>,
    w: &Buffer<T>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<(), Error>
where
    f32: lmsi_cuda::blas::GemmOutput<T>,
{
    need("matmul input", x.len(), m * k)?;
    need("matmul weight", w.len(), n * k)?;
    need("matmul output", out.len(), m * n)?;
    run(device, out, forward(x, w, (m, n, k), accumulate))
}

/// `d_x[m, k] (+)= d_out[m, n]·w[n, k]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_input<T: GemmElem>(
    device: &Device,
    d_x: &mut Buffer<f32>,
    d_out: &Buffer<T>,
    w: &Buffer<T>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<(), Error>
where
    f32: lmsi_cuda::blas::GemmOutput<T>,
{
    need("matmul backward output gradient", d_out.len(), m * n)?;
    need("matmul backward weight", w.len(), n * k)?;
    need("matmul backward input gradient", d_x.len(), m * k)?;
    run(device, d_x, backward_input(d_out, w, (m, n, k), accumulate))
}

/// `d_w[n, k] += d_out[m, n]ᵀ·x[m, k]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_weight<T: GemmElem>(
    device: &Device,
    d_w: &mut Buffer<f32>,
    d_out: &Buffer<T>,
    x: &Buffer<T>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<(), Error>
where
    f32: lmsi_cuda::blas::GemmOutput<T>,
{
    need("matmul backward output gradient", d_out.len(), m * n)?;
    need("matmul backward input", x.len(), m * k)?;
    need("matmul backward weight gradient", d_w.len(), n * k)?;
    run(device, d_w, backward_weight(d_out, x, (m, n, k)))
}
