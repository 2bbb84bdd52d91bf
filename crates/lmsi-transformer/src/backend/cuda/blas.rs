//! The matrix products of the CUDA backend: cuBLAS `sgemm` on row-major buffers.
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
//! The tests below run these configurations through a plain column-major `sgemm` written from the
//! BLAS definition and compare with the CPU backend, so the transposes are checked without a GPU.
//! cuBLAS keeps f32 arithmetic (no TF32) unless the environment asks for it
//! (`NVIDIA_TF32_OVERRIDE=1`); with `beta = 0` it does not read the output.

use lmsi_cuda::cuda::Device;
use lmsi_cuda::cuda::cudarc::cublas::sys::cublasOperation_t;
use lmsi_cuda::cuda::cudarc::cublas::{Gemm, GemmConfig};
use lmsi_cuda::cuda::cudarc::driver::CudaSlice;

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
    fn column_major(self) -> Result<(GemmConfig<f32>, T, T), Error> {
        let int = |v: usize| {
            i32::try_from(v)
                .map_err(|_| Error::Backend(format!("matrix dimension {v} exceeds cuBLAS's")))
        };
        let op = |transposed| match transposed {
            true => cublasOperation_t::CUBLAS_OP_T,
            false => cublasOperation_t::CUBLAS_OP_N,
        };
        let (a, b) = (self.a, self.b);
        let cfg = GemmConfig {
            transa: op(b.transposed),
            transb: op(a.transposed),
            m: int(self.cols)?,
            n: int(self.rows)?,
            k: int(self.inner)?,
            alpha: 1.0f32,
            lda: int(if b.transposed { self.inner } else { self.cols })?,
            ldb: int(if a.transposed { self.rows } else { self.inner })?,
            beta: if self.accumulate { 1.0 } else { 0.0 },
            ldc: int(self.cols)?,
        };
        Ok((cfg, b.buf, a.buf))
    }
}

/// Runs `product` into `c`, whose length the caller has checked (as those of the operands).
fn run(
    device: &Device,
    c: &mut CudaSlice<f32>,
    product: Product<&CudaSlice<f32>>,
) -> Result<(), Error> {
    let (rows, cols) = (product.rows, product.cols);
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if product.inner == 0 {
        // An empty sum; cuBLAS would reject the zero leading dimension of an empty operand.
        if !product.accumulate {
            device
                .stream()
                .memset_zeros(&mut c.slice_mut(..rows * cols))
                .map_err(cuda)?;
        }
        return Ok(());
    }
    let (cfg, a, b) = product.column_major()?;
    let blas = device.blas().map_err(cuda)?;
    // SAFETY: the callers checked that the operands hold rows·inner and inner·cols values and `c`
    // rows·cols, everything cuBLAS touches with these dimensions and leading dimensions; all three
    // are device buffers of the handle's context.
    unsafe { blas.gemm(cfg, a, b, c) }.map_err(cuda)
}

/// `out[m, n] (+)= x[m, k]·w[n, k]ᵀ`.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    device: &Device,
    out: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<(), Error> {
    need("matmul input", x.len(), m * k)?;
    need("matmul weight", w.len(), n * k)?;
    need("matmul output", out.len(), m * n)?;
    run(device, out, forward(x, w, (m, n, k), accumulate))
}

/// `d_x[m, k] (+)= d_out[m, n]·w[n, k]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_input(
    device: &Device,
    d_x: &mut CudaSlice<f32>,
    d_out: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<(), Error> {
    need("matmul backward output gradient", d_out.len(), m * n)?;
    need("matmul backward weight", w.len(), n * k)?;
    need("matmul backward input gradient", d_x.len(), m * k)?;
    run(device, d_x, backward_input(d_out, w, (m, n, k), accumulate))
}

/// `d_w[n, k] += d_out[m, n]ᵀ·x[m, k]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_weight(
    device: &Device,
    d_w: &mut CudaSlice<f32>,
    d_out: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<(), Error> {
    need("matmul backward output gradient", d_out.len(), m * n)?;
    need("matmul backward input", x.len(), m * k)?;
    need("matmul backward weight gradient", d_w.len(), n * k)?;
    run(device, d_w, backward_weight(d_out, x, (m, n, k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, CpuBackend};

    /// `C = alpha·op(A)·op(B) + beta·C`, column-major, straight from the BLAS definition.
    fn reference_sgemm(cfg: &GemmConfig<f32>, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = (cfg.m as usize, cfg.n as usize, cfg.k as usize);
        let (lda, ldb, ldc) = (cfg.lda as usize, cfg.ldb as usize, cfg.ldc as usize);
        let op_a = |i: usize, l: usize| match cfg.transa {
            cublasOperation_t::CUBLAS_OP_N => a[i + l * lda],
            _ => a[l + i * lda],
        };
        let op_b = |l: usize, j: usize| match cfg.transb {
            cublasOperation_t::CUBLAS_OP_N => b[l + j * ldb],
            _ => b[j + l * ldb],
        };
        for j in 0..n {
            for i in 0..m {
                let dot: f64 = (0..k)
                    .map(|l| f64::from(op_a(i, l)) * f64::from(op_b(l, j)))
                    .sum();
                let old = if cfg.beta == 0.0 { 0.0 } else { c[i + j * ldc] };
                c[i + j * ldc] = cfg.alpha * dot as f32 + cfg.beta * old;
            }
        }
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0) * 0.5)
            .collect()
    }

    fn run_reference(product: Product<&Vec<f32>>, c: &mut [f32]) {
        let (cfg, a, b) = product.column_major().unwrap();
        reference_sgemm(&cfg, a, b, c);
    }

    #[track_caller]
    fn assert_close(got: &[f32], want: &[f32]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn the_column_major_calls_compute_the_row_major_products() {
        let cpu = CpuBackend::new();
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (9, 4, 2), (70, 33, 19)] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            let dy = values(m * n, 3);
            let start = values(m * n.max(k), 4);
            for accumulate in [false, true] {
                let mut want = start[..m * n].to_vec();
                cpu.matmul(&mut want, &x, &w, None, m, n, k, accumulate)
                    .unwrap();
                let mut got = start[..m * n].to_vec();
                run_reference(forward(&x, &w, (m, n, k), accumulate), &mut got);
                assert_close(&got, &want);

                let mut want = start[..m * k].to_vec();
                cpu.matmul_backward_input(&mut want, &dy, &w, m, n, k, accumulate)
                    .unwrap();
                let mut got = start[..m * k].to_vec();
                run_reference(backward_input(&dy, &w, (m, n, k), accumulate), &mut got);
                assert_close(&got, &want);
            }
            let d_w0 = values(n * k, 5);
            let mut want = d_w0.clone();
            cpu.matmul_backward_weight(&mut want, None, &dy, &x, m, n, k)
                .unwrap();
            let mut got = d_w0.clone();
            run_reference(backward_weight(&dy, &x, (m, n, k)), &mut got);
            assert_close(&got, &want);
        }
    }
}
