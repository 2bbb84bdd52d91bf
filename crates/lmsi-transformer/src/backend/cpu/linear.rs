//! `y = x · Wᵀ` for the few rows of a decode step, reading `W` as stored (`[n, k]`, Hugging Face's
//! `[out_features, in_features]`), without packing it first.
//!
//! A decode step multiplies a handful of rows (one per sampled path) by every weight matrix. General
//! GEMM libraries pack the weight matrix on every call, which for so few rows costs as much as the
//! product itself. Here both `x` and `W` are read along `k`, their contiguous dimension: a register tile
//! of 4 weight rows × 4 input rows keeps 16 vector accumulators of element-wise products, and each
//! accumulator is summed across its lanes once, at the end of `k`. Work is split over threads by blocks
//! of weight rows (output columns), so each thread streams its own part of `W` once per call.
//!
//! Each output is a sum in a fixed order that depends only on `k` and the processor's vector width,
//! never on `m`, `n` or the thread count: a row's result does not depend on the other rows. That is
//! why every matrix product of the forward pass goes through here, prompts included: a path's tokens
//! must not depend on which other rows share its steps. (Large prompts are blocked in chunks of
//! input rows so that the inputs stay in cache.)
//!
//! A decode step reads every weight from memory once, and left to the hardware prefetchers the
//! tiles waited on those reads (`perf` put the kernel's samples on its weight loads). So while a
//! weight tile is multiplied by the input rows, the next tile is prefetched, a part before each
//! input tile. In a throwaway program with a copy of this kernel, SmolLM2-135M's 30 layers of
//! weights in huge pages ([`super::huge_pages`]) and 32 rows, this (with blocks of 32 weight rows
//! instead of 64) took the layer products from 33.8–34.8 to 25.8–28.1 ms and the output
//! projection from 7.5–7.8 to 5.5–5.9 ms on the 2-core build machine; the results are the same
//! bits.

use rayon::prelude::*;

/// Weight rows per block handed to one thread. Small enough that the 576 outputs of SmolLM2's
/// square products make 18 blocks, which two threads share evenly.
const ROWS_PER_TASK: usize = 32;

/// Input rows multiplied by a block of weights before moving to the next input rows.
const ROWS_PER_CHUNK: usize = 64;

/// `out[i, j] = (accumulate ? out[i, j] : 0) + Σ_k x[i, k]·w[j, k]` for `i < m`, `j < n`.
pub fn linear(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    assert!(out.len() >= m * n && x.len() >= m * k && w.len() >= n * k);
    let out_ptr = SharedOut(out.as_mut_ptr());
    let tasks = n.div_ceil(ROWS_PER_TASK);
    (0..tasks).into_par_iter().for_each(|task| {
        let j0 = task * ROWS_PER_TASK;
        let j1 = (j0 + ROWS_PER_TASK).min(n);
        // SAFETY: tasks write disjoint column ranges j0..j1 of `out`, which has m * n values.
        unsafe { block(out_ptr.get(), x, w, m, n, k, j0, j1, accumulate) };
    });
}

#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the pointer is only used to write disjoint parts of one slice from different tasks.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Columns `j0..j1` of the product.
///
/// # Safety
/// `out` points to `m * n` values and no one else writes columns `j0..j1` meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    out: *mut f32,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    j0: usize,
    j1: usize,
    acc: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F; the caller's contract is passed on.
            return unsafe { x86::block_avx512(out, x, w, m, n, k, j0, j1, acc) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the processor has AVX2 and FMA; the caller's contract is passed on.
            return unsafe { x86::block_avx2(out, x, w, m, n, k, j0, j1, acc) };
        }
    }
    for i in 0..m {
        for j in j0..j1 {
            let dot: f32 = x[i * k..(i + 1) * k]
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
            // SAFETY: i < m, j < n.
            unsafe {
                let o = out.add(i * n + j);
                *o = if acc { *o + dot } else { dot };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Tile loops shared by both instruction sets: `$tile!(rows_of_w, rows_of_x)` computes a tile with
    /// `RW` weight rows and `RX` input rows, for every remainder size.
    macro_rules! tiles {
        ($tile:ident, $out:expr, $x:expr, $w:expr, $m:expr, $n:expr, $k:expr, $j0:expr, $j1:expr, $acc:expr) => {{
            // Input rows in chunks that stay in cache while every weight tile of the block passes.
            for chunk in (0..$m).step_by(super::ROWS_PER_CHUNK) {
                let chunk_end = ($m).min(chunk + super::ROWS_PER_CHUNK);
                let mut j = $j0;
                while j < $j1 {
                    let rw = ($j1 - j).min(4);
                    // The next weight tile (past this block too: a thread's next block usually
                    // follows it), fetched a part before each input tile of this one.
                    let next = ((j + 4) * $k).min($n * $k)..((j + 8) * $k).min($n * $k);
                    let part = next.len().div_ceil((chunk_end - chunk).div_ceil(4));
                    let mut fetched = next.start;
                    let mut i = chunk;
                    while i < chunk_end {
                        let upto = (fetched + part).min(next.end);
                        prefetch($w, fetched, upto);
                        fetched = upto;
                        let rx = (chunk_end - i).min(4);
                        match (rw, rx) {
                            (4, 4) => $tile::<4, 4>($out, $x, $w, $n, $k, i, j, $acc),
                            (4, 3) => $tile::<4, 3>($out, $x, $w, $n, $k, i, j, $acc),
                            (4, 2) => $tile::<4, 2>($out, $x, $w, $n, $k, i, j, $acc),
                            (4, _) => $tile::<4, 1>($out, $x, $w, $n, $k, i, j, $acc),
                            (3, 4) => $tile::<3, 4>($out, $x, $w, $n, $k, i, j, $acc),
                            (3, 3) => $tile::<3, 3>($out, $x, $w, $n, $k, i, j, $acc),
                            (3, 2) => $tile::<3, 2>($out, $x, $w, $n, $k, i, j, $acc),
                            (3, _) => $tile::<3, 1>($out, $x, $w, $n, $k, i, j, $acc),
                            (2, 4) => $tile::<2, 4>($out, $x, $w, $n, $k, i, j, $acc),
                            (2, 3) => $tile::<2, 3>($out, $x, $w, $n, $k, i, j, $acc),
                            (2, 2) => $tile::<2, 2>($out, $x, $w, $n, $k, i, j, $acc),
                            (2, _) => $tile::<2, 1>($out, $x, $w, $n, $k, i, j, $acc),
                            (_, 4) => $tile::<1, 4>($out, $x, $w, $n, $k, i, j, $acc),
                            (_, 3) => $tile::<1, 3>($out, $x, $w, $n, $k, i, j, $acc),
                            (_, 2) => $tile::<1, 2>($out, $x, $w, $n, $k, i, j, $acc),
                            (_, _) => $tile::<1, 1>($out, $x, $w, $n, $k, i, j, $acc),
                        }
                        i += rx;
                    }
                    j += rw;
                }
            }
        }};
    }

    /// Asks for the cache lines holding `w[start..end]` to be brought into the L1 cache.
    #[inline(always)]
    fn prefetch(w: &[f32], start: usize, end: usize) {
        let base = w.as_ptr() as usize;
        let mut line = (base + start * 4) & !63;
        while line < base + end * 4 {
            // SAFETY: a prefetch never faults; the lines belong to `w`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += 64;
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block_avx512(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        m: usize,
        n: usize,
        k: usize,
        j0: usize,
        j1: usize,
        acc: bool,
    ) {
        // SAFETY: every tile stays inside x[m, k], w[n, k] and out[m, n], as the caller guarantees.
        unsafe { tiles!(tile_avx512, out, x, w, m, n, k, j0, j1, acc) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block_avx2(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        m: usize,
        n: usize,
        k: usize,
        j0: usize,
        j1: usize,
        acc: bool,
    ) {
        // SAFETY: as above.
        unsafe { tiles!(tile_avx2, out, x, w, m, n, k, j0, j1, acc) }
    }

    /// Stores a tile's sums, adding to what is there when accumulating.
    #[inline(always)]
    unsafe fn store<const RW: usize, const RX: usize>(
        out: *mut f32,
        sums: [[f32; RW]; RX],
        n: usize,
        i: usize,
        j: usize,
        acc: bool,
    ) {
        for (r, row) in sums.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                // SAFETY: the tile is inside out[m, n].
                unsafe {
                    let o = out.add((i + r) * n + j + c);
                    *o = if acc { *o + v } else { v };
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx512<const RW: usize, const RX: usize>(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        n: usize,
        k: usize,
        i: usize,
        j: usize,
        acc: bool,
    ) {
        let mut sums = [[_mm512_setzero_ps(); RW]; RX];
        let xp = x[i * k..].as_ptr();
        let wp = w[j * k..].as_ptr();
        let full = k / 16 * 16;
        let mut kk = 0;
        while kk < full {
            // SAFETY: kk + 16 <= k, rows i..i+RX of x and j..j+RW of w exist.
            unsafe {
                let mut wv = [_mm512_setzero_ps(); RW];
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(wp.add(c * k + kk));
                }
                for (r, row) in sums.iter_mut().enumerate() {
                    let xv = _mm512_loadu_ps(xp.add(r * k + kk));
                    for c in 0..RW {
                        row[c] = _mm512_fmadd_ps(xv, wv[c], row[c]);
                    }
                }
            }
            kk += 16;
        }
        let mut result = [[0.0f32; RW]; RX];
        for r in 0..RX {
            for c in 0..RW {
                let mut s = _mm512_reduce_add_ps(sums[r][c]);
                for t in full..k {
                    s = x[(i + r) * k + t].mul_add(w[(j + c) * k + t], s);
                }
                result[r][c] = s;
            }
        }
        // SAFETY: the tile is inside out[m, n].
        unsafe { store(out, result, n, i, j, acc) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_avx2<const RW: usize, const RX: usize>(
        out: *mut f32,
        x: &[f32],
        w: &[f32],
        n: usize,
        k: usize,
        i: usize,
        j: usize,
        acc: bool,
    ) {
        let mut sums = [[_mm256_setzero_ps(); RW]; RX];
        let xp = x[i * k..].as_ptr();
        let wp = w[j * k..].as_ptr();
        let full = k / 8 * 8;
        let mut kk = 0;
        while kk < full {
            // SAFETY: kk + 8 <= k, rows i..i+RX of x and j..j+RW of w exist.
            unsafe {
                let mut wv = [_mm256_setzero_ps(); RW];
                for (c, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(wp.add(c * k + kk));
                }
                for (r, row) in sums.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(xp.add(r * k + kk));
                    for c in 0..RW {
                        row[c] = _mm256_fmadd_ps(xv, wv[c], row[c]);
                    }
                }
            }
            kk += 8;
        }
        let mut result = [[0.0f32; RW]; RX];
        for r in 0..RX {
            for c in 0..RW {
                let mut lanes = [0.0f32; 8];
                // SAFETY: lanes has room for 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums[r][c]) };
                let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                    + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
                for t in full..k {
                    s = x[(i + r) * k + t].mul_add(w[(j + c) * k + t], s);
                }
                result[r][c] = s;
            }
        }
        // SAFETY: the tile is inside out[m, n].
        unsafe { store(out, result, n, i, j, acc) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_product_for_every_tile_shape() {
        for (m, n, k) in [
            (1, 1, 1),
            (3, 5, 7),
            (4, 4, 16),
            (9, 70, 33),
            (32, 131, 64),
            (5, 3, 100),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            for accumulate in [false, true] {
                let mut out: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.01).collect();
                let before = out.clone();
                linear(&mut out, &x, &w, m, n, k, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                            .sum();
                        let expected = dot
                            + if accumulate {
                                before[i * n + j] as f64
                            } else {
                                0.0
                            };
                        assert!(
                            (out[i * n + j] as f64 - expected).abs() < 1e-4,
                            "{m}x{n}x{k} ({i},{j})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_does_not_depend_on_the_other_rows() {
        let (n, k) = (37, 50);
        let x: Vec<f32> = (0..9 * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut all = vec![0.0; 9 * n];
        linear(&mut all, &x, &w, 9, n, k, false);
        for i in 0..9 {
            let mut one = vec![0.0; n];
            linear(&mut one, &x[i * k..(i + 1) * k], &w, 1, n, k, false);
            assert_eq!(&all[i * n..(i + 1) * n], &one[..], "row {i}");
        }
    }
}
