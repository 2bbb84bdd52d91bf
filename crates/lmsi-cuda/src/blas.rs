//! Matrix products as cuBLAS computes them: [`Gemm`] holds the arguments of
//! `cublasGemmStridedBatchedEx` (column-major, `transa`/`transb`, leading dimensions, strides, a
//! batch count, `alpha` and `beta`), [`Gemm::check`] rejects what cuBLAS rejects, and the simulated
//! device carries the product out on the CPU with the same meaning.
//!
//! For each batch `i`, with `A_i = a + i·stride_a` (and alike for `B`, `C`), column-major:
//!
//! `C_i[m, n] = alpha · op(A_i)[m, k] · op(B_i)[k, n] + beta · C_i`
//!
//! where `op(X)` is `X` (`Op::N`) or its transpose (`Op::T`). As in BLAS: with `beta == 0`, `C` is
//! not read (a NaN there does not propagate); with `alpha == 0` or `k == 0`, `A` and `B` are not
//! read; with `m`, `n` or the batch count 0 nothing happens. Operands are `f32` or `bf16`; every
//! product accumulates in f32 (cuBLAS's `CUBLAS_COMPUTE_32F`) and rounds once on the way out, to
//! `C`'s type: `f32`, or `bf16` for bf16 operands ([`GemmOutput`]).
//!
//! ```
//! use lmsi_cuda::blas::{Gemm, Op};
//! use lmsi_cuda::Device;
//!
//! let dev = Device::sim();
//! // Column-major A = [[1, 2], [3, 4]] (stored by column), B = I.
//! let a = dev.upload(&[1.0f32, 3.0, 2.0, 4.0])?;
//! let b = dev.upload(&[1.0f32, 0.0, 0.0, 1.0])?;
//! let mut c = dev.zeros::<f32>(4)?;
//! let g = Gemm { transa: Op::T, ..Gemm::new(2, 2, 2) };
//! dev.gemm(&g, &a, &b, &mut c)?;
//! assert_eq!(dev.download(&c)?, [1.0, 2.0, 3.0, 4.0]); // Aᵀ, column-major
//! # Ok::<(), lmsi_cuda::Error>(())
//! ```

use crate::Error;
use crate::buffer::Elem;

/// Whether an operand is used as stored or transposed (cuBLAS's `CUBLAS_OP_N`, `CUBLAS_OP_T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// The arguments of one (strided, batched) cuBLAS matrix product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub transa: Op,
    pub transb: Op,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub lda: i32,
    pub ldb: i32,
    pub beta: f32,
    pub ldc: i32,
    /// Products in the batch (1 for a plain `gemm`).
    pub batch: i32,
    /// Elements from one batch's operand to the next (unused when `batch` is 1).
    pub stride_a: i64,
    pub stride_b: i64,
    pub stride_c: i64,
}

impl Gemm {
    /// `C[m, n] = A[m, k]·B[k, n]`, both as stored, tightly packed, one product.
    pub fn new(m: i32, n: i32, k: i32) -> Self {
        Gemm {
            transa: Op::N,
            transb: Op::N,
            m,
            n,
            k,
            alpha: 1.0,
            lda: m.max(1),
            ldb: k.max(1),
            beta: 0.0,
            ldc: m.max(1),
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
        }
    }

    /// Whether the product touches nothing (cuBLAS's quick return).
    pub fn is_empty(&self) -> bool {
        self.m == 0 || self.n == 0 || self.batch == 0
    }

    /// Whether `A` and `B` are read.
    fn reads_operands(&self) -> bool {
        !self.is_empty() && self.k > 0 && self.alpha != 0.0
    }

    /// cuBLAS's argument checks (`CUBLAS_STATUS_INVALID_VALUE`), then that each buffer holds every
    /// element the product touches (`a`, `b`, `c`: their lengths), which cuBLAS cannot check.
    pub fn check(&self, a: usize, b: usize, c: usize) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::Blas(reason));
        let (m, n, k) = (self.m, self.n, self.k);
        if m < 0 || n < 0 || k < 0 || self.batch < 0 {
            return invalid(format!(
                "negative size (m {m}, n {n}, k {k}, batch {})",
                self.batch
            ));
        }
        let (rows_a, rows_b) = (
            if self.transa == Op::N { m } else { k },
            if self.transb == Op::N { k } else { n },
        );
        for (name, ld, rows) in [
            ("lda", self.lda, rows_a),
            ("ldb", self.ldb, rows_b),
            ("ldc", self.ldc, m),
        ] {
            if ld < rows.max(1) {
                return invalid(format!("{name} {ld} < max(1, {rows})"));
            }
        }
        if self.stride_a < 0 || self.stride_b < 0 || self.stride_c < 0 {
            return invalid("negative batch stride".into());
        }
        if self.is_empty() {
            return Ok(());
        }
        let (cols_a, cols_b) = (
            if self.transa == Op::N { k } else { m },
            if self.transb == Op::N { n } else { k },
        );
        let mut operands = vec![("C", c, self.ldc, m, n, self.stride_c)];
        if self.reads_operands() {
            operands.push(("A", a, self.lda, rows_a, cols_a, self.stride_a));
            operands.push(("B", b, self.ldb, rows_b, cols_b, self.stride_b));
        }
        for (name, have, ld, rows, cols, stride) in operands {
            let need = extent(ld, rows, cols, self.batch, stride);
            if (have as u64) < need {
                return invalid(format!(
                    "{name} has {have} elements, the product reads {need}"
                ));
            }
        }
        Ok(())
    }

    /// Runs the product on host memory, after [`Gemm::check`].
    pub(crate) fn run_host<T: GemmElem, C: GemmOutput<T>>(
        &self,
        a: &[T],
        b: &[T],
        c: &mut [C],
    ) -> Result<(), Error> {
        self.check(a.len(), b.len(), c.len())?;
        if self.is_empty() {
            return Ok(());
        }
        let a = T::to_f32(a);
        let b = T::to_f32(b);
        // With beta 0 the product overwrites its elements of `c` without reading them; the rest
        // of `c` (between columns, past the last) keeps its values.
        let mut out = C::to_f32(c);
        for batch in 0..self.batch as usize {
            self.run_one(batch, &a, &b, &mut out);
        }
        C::store(&out, c, self);
        Ok(())
    }

    /// One product of the batch on f32 copies of the operands.
    fn run_one(&self, batch: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = (self.m as usize, self.n as usize, self.k as usize);
        let c_at = batch * self.stride_c as usize;
        let ldc = self.ldc as isize;
        if !self.reads_operands() {
            for j in 0..n {
                for v in &mut c[c_at + j * ldc as usize..][..m] {
                    *v = if self.beta == 0.0 {
                        0.0
                    } else {
                        self.beta * *v
                    };
                }
            }
            return;
        }
        // Column-major element (i, j) of X is x[i + j·ld]; op T swaps the strides.
        let strides = |op: Op, ld: i32| match op {
            Op::N => (1isize, ld as isize),
            Op::T => (ld as isize, 1isize),
        };
        let (a_rs, a_cs) = strides(self.transa, self.lda);
        let (b_rs, b_cs) = strides(self.transb, self.ldb);
        let a = &a[batch * self.stride_a as usize..];
        let b = &b[batch * self.stride_b as usize..];
        // SAFETY: `check` bounded every element these strides reach within the slices.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c[c_at..].as_mut_ptr(),
                ldc,
                1,
                self.beta != 0.0,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                self.beta,
                self.alpha,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
    }
}

/// Elements the buffer of a `rows × cols` column-major operand (leading dimension `ld`) must hold
/// for `batch` operands `stride` apart.
fn extent(ld: i32, rows: i32, cols: i32, batch: i32, stride: i64) -> u64 {
    if rows == 0 || cols == 0 {
        return 0;
    }
    let one = (cols as u64 - 1) * ld as u64 + rows as u64;
    (batch as u64 - 1) * stride as u64 + one
}

/// An element type of cuBLAS's products: `f32` or `bf16`. Every product computes in f32
/// (`CUBLAS_COMPUTE_32F`: no TF32, no reduced-precision sums).
pub trait GemmElem: Elem {
    /// The values as f32, exactly.
    fn to_f32(values: &[Self]) -> Vec<f32>;
    /// Writes the f32 results back, rounded to nearest even; only the columns the product wrote.
    fn store(results: &[f32], out: &mut [Self], g: &Gemm);
    /// The type as cuBLAS names it.
    #[cfg(feature = "cuda")]
    #[doc(hidden)]
    const CUDA_TYPE: cudarc::cublas::sys::cudaDataType;
}

/// A type `C` that a product of `T` operands can write: `T` itself, or `f32` for `bf16` operands
/// (the bf16 products of a model whose activations stay f32). These are the combinations cuBLAS's
/// `GemmEx` takes with an f32 compute type.
pub trait GemmOutput<T: GemmElem>: GemmElem {}

impl GemmOutput<f32> for f32 {}
impl GemmOutput<half::bf16> for half::bf16 {}
impl GemmOutput<half::bf16> for f32 {}

impl GemmElem for f32 {
    fn to_f32(values: &[f32]) -> Vec<f32> {
        values.to_vec()
    }

    fn store(results: &[f32], out: &mut [f32], _: &Gemm) {
        out.copy_from_slice(results);
    }

    #[cfg(feature = "cuda")]
    const CUDA_TYPE: cudarc::cublas::sys::cudaDataType =
        cudarc::cublas::sys::cudaDataType::CUDA_R_32F;
}

impl GemmElem for half::bf16 {
    fn to_f32(values: &[half::bf16]) -> Vec<f32> {
        values.iter().map(|v| v.to_f32()).collect()
    }

    fn store(results: &[f32], out: &mut [half::bf16], g: &Gemm) {
        // Elements the product did not write keep their bits (a NaN payload included).
        for batch in 0..g.batch as usize {
            for j in 0..g.n as usize {
                let at = batch * g.stride_c as usize + j * g.ldc as usize;
                for (o, &r) in out[at..at + g.m as usize].iter_mut().zip(&results[at..]) {
                    *o = half::bf16::from_f32(r);
                }
            }
        }
    }

    #[cfg(feature = "cuda")]
    const CUDA_TYPE: cudarc::cublas::sys::cudaDataType =
        cudarc::cublas::sys::cudaDataType::CUDA_R_16BF;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `C = alpha·op(A)·op(B) + beta·C`, straight from the BLAS definition, in f64.
    fn reference(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        let at = |op, x: &[f32], ld: i32, i: usize, l: usize| match op {
            Op::N => x[i + l * ld as usize],
            Op::T => x[l + i * ld as usize],
        };
        for batch in 0..g.batch as usize {
            let (a, b) = (
                &a[batch * g.stride_a as usize..],
                &b[batch * g.stride_b as usize..],
            );
            let c = &mut c[batch * g.stride_c as usize..];
            for j in 0..g.n as usize {
                for i in 0..g.m as usize {
                    let dot: f64 = (0..g.k as usize)
                        .map(|l| {
                            f64::from(at(g.transa, a, g.lda, i, l))
                                * f64::from(at(g.transb, b, g.ldb, l, j))
                        })
                        .sum();
                    let old = if g.beta == 0.0 {
                        0.0
                    } else {
                        c[i + j * g.ldc as usize]
                    };
                    c[i + j * g.ldc as usize] = g.alpha * dot as f32 + g.beta * old;
                }
            }
        }
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0) * 0.5)
            .collect()
    }

    #[test]
    fn every_transpose_stride_and_scale_matches_the_definition() {
        for (transa, transb) in [
            (Op::N, Op::N),
            (Op::T, Op::N),
            (Op::N, Op::T),
            (Op::T, Op::T),
        ] {
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                let (m, n, k) = (7, 5, 9);
                let lda = if transa == Op::N { m + 2 } else { k + 1 };
                let ldb = if transb == Op::N { k + 3 } else { n };
                let g = Gemm {
                    transa,
                    transb,
                    alpha,
                    beta,
                    lda,
                    ldb,
                    ldc: m + 1,
                    batch: 3,
                    stride_a: 200,
                    stride_b: 150,
                    stride_c: 60,
                    ..Gemm::new(m, n, k)
                };
                let (a, b) = (values(600, 1), values(450, 2));
                let start = values(180, 3);
                let mut want = start.clone();
                reference(&g, &a, &b, &mut want);
                let mut got = start.clone();
                g.run_host(&a, &b, &mut got).unwrap();
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-5 + 1e-5 * y.abs(),
                        "{g:?} [{i}]: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn beta_zero_does_not_read_c_and_k_zero_scales_it() {
        let g = Gemm::new(2, 2, 1);
        let mut c = [f32::NAN; 4];
        g.run_host(&[1.0, 2.0], &[3.0, 4.0], &mut c).unwrap();
        assert_eq!(c, [3.0, 6.0, 4.0, 8.0]);
        let g = Gemm {
            beta: 2.0,
            ..Gemm::new(2, 2, 0)
        };
        let mut c = [1.0f32, 2.0, 3.0, 4.0];
        g.run_host::<f32, f32>(&[], &[], &mut c).unwrap();
        assert_eq!(c, [2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn what_cublas_rejects_is_rejected() {
        let bad = |g: Gemm| g.check(1 << 20, 1 << 20, 1 << 20).unwrap_err().to_string();
        assert!(
            bad(Gemm {
                m: -1,
                ..Gemm::new(2, 2, 2)
            })
            .contains("negative")
        );
        assert!(
            bad(Gemm {
                lda: 1,
                ..Gemm::new(2, 2, 2)
            })
            .contains("lda 1 < max(1, 2)")
        );
        let g = Gemm {
            transa: Op::T,
            lda: 2,
            ..Gemm::new(3, 2, 2)
        };
        assert!(
            g.check(1 << 20, 1 << 20, 1 << 20).is_ok(),
            "lda covers k when transposed"
        );
        assert!(
            bad(Gemm {
                ldc: 2,
                ..Gemm::new(3, 2, 2)
            })
            .contains("ldc 2 < max(1, 3)")
        );
        let short = Gemm::new(4, 4, 4)
            .check(15, 16, 16)
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("A has 15 elements, the product reads 16"),
            "{short}"
        );
        assert!(
            Gemm::new(0, 4, 4).check(0, 0, 0).is_ok(),
            "an empty product reads nothing"
        );
    }

    #[test]
    fn bf16_products_round_once() {
        let third = half::bf16::from_f32(1.0 / 3.0);
        let g = Gemm::new(1, 1, 3);
        let mut c = [half::bf16::ZERO];
        g.run_host(&[third; 3], &[half::bf16::ONE; 3], &mut c)
            .unwrap();
        assert_eq!(c[0], half::bf16::from_f32(3.0 * third.to_f32()));
        let mut wide = [0.0f32];
        g.run_host(&[third; 3], &[half::bf16::ONE; 3], &mut wide)
            .unwrap();
        assert_eq!(
            wide[0],
            3.0 * third.to_f32(),
            "an f32 output is not rounded to bf16"
        );
    }
}
