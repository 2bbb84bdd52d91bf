//! Vector kernels of the CPU backend: dot product, attention's block scores and weighted sums, a
//! vectorisable `exp`, and SwiGLU's `silu(g)·u`.
//!
//! Each is written once as plain Rust over fixed-width lanes (so the compiler vectorises it) and
//! compiled twice: with AVX2 + FMA, chosen at run time when the processor has them, and for the
//! baseline target. The result of a call depends only on its inputs and the processor's features,
//! never on threads or batching.

const LANES: usize = 16;

macro_rules! with_dispatch {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                        $body::<true>($($arg),*)
                    }
                    // SAFETY: the processor has the features `fast` was compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body::<false>($($arg),*)
        }
    };
}

/// `a * b + c`, fused when the FMA instruction is available (and only then: software fma is slow).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn dot_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = madd::<FMA>(x[i], y[i], acc[i]);
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail = madd::<FMA>(*x, *y, tail);
    }
    // Pairwise reduction of the lanes, in a fixed order.
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// `exp(x)` for `x` in about [-87, 88] with a relative error below 2e-7; below the range it returns 0.
/// Cody-Waite reduction `x = n·ln2 + r` and a degree-6 polynomial for `exp(r)`.
#[inline(always)]
fn exp_one<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E).round();
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5);
    p = madd::<FMA>(p * r, r, r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[inline(always)]
fn exp_sub_sum_body<const FMA: bool>(xs: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            chunk[i] = exp_one::<FMA>(chunk[i] - shift);
            acc[i] += chunk[i];
        }
    }
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_one::<FMA>(*x - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn silu_mul_body<const FMA: bool>(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = *g / (1.0 + exp_one::<FMA>(-*g)) * *u;
    }
}

/// Runs `$run` over `$heads` heads in runs of the first of `$sizes` (largest first, ending with 1)
/// that fits what is left, with the run's first head as `$first` and its size as the const `$r`.
///
/// Heads run together are independent chains of multiply-adds, which keep the FMA units busy where
/// one head's chain waits on its own latency. Measured on the build machine (head size 64, blocks
/// of 16): three or four heads' scores together took a third of the time of one head at a time,
/// their weighted sums 0.45 of it (two heads' sums 0.63); two heads' scores together took four
/// times as long (the compiler's code for that shape), so the scores kernel runs no pair.
macro_rules! head_runs {
    ($heads:expr, [$($size:literal),+], |$first:ident, $r:ident| $run:expr) => {{
        let mut $first = 0;
        while $first < $heads {
            let left = $heads - $first;
            $(
                if left >= $size {
                    const $r: usize = $size;
                    $run;
                    $first += $size;
                    continue;
                }
            )+
        }
    }};
}

#[inline(always)]
fn key_scores_body<const FMA: bool>(
    scores: &mut [f32],
    stride: usize,
    heads: usize,
    qs: &[f32],
    keys: &[f32],
    scale: f32,
) {
    let dim = qs.len() / heads.max(1);
    let n = keys.len() / dim.max(1);
    assert_eq!(qs.len(), heads * dim);
    assert_eq!(keys.len(), dim * n);
    assert!(heads == 0 || (n <= stride && scores.len() >= (heads - 1) * stride + n));
    head_runs!(heads, [4, 3, 1], |first, R| key_scores_run::<FMA, R>(
        &mut scores[first * stride..],
        stride,
        &qs[first * dim..(first + R) * dim],
        keys,
        scale
    ));
}

/// [`key_scores`] for `R` heads. Each score is one chain of multiply-adds over the dimensions in
/// order, whatever `R` is, so running heads together never changes a score.
#[inline(always)]
fn key_scores_run<const FMA: bool, const R: usize>(
    scores: &mut [f32],
    stride: usize,
    qs: &[f32],
    keys: &[f32],
    scale: f32,
) {
    let dim = qs.len() / R;
    let n = keys.len() / dim.max(1);
    let q: [&[f32]; R] = std::array::from_fn(|r| &qs[r * dim..(r + 1) * dim]);
    let mut start = 0;
    while start + LANES <= n {
        let mut acc = [[0.0f32; LANES]; R];
        for (d, keys) in keys.chunks_exact(n).enumerate() {
            let k: &[f32; LANES] = keys[start..start + LANES].try_into().unwrap();
            let qd: [f32; R] = std::array::from_fn(|r| q[r][d]);
            for (acc, &qd) in acc.iter_mut().zip(&qd) {
                for i in 0..LANES {
                    acc[i] = madd::<FMA>(qd, k[i], acc[i]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for i in 0..LANES {
                scores[r * stride + start + i] = acc[i] * scale;
            }
        }
        start += LANES;
    }
    for i in start..n {
        for (r, q) in q.iter().enumerate() {
            let mut acc = 0.0;
            for (d, &qd) in q.iter().enumerate() {
                acc = madd::<FMA>(qd, keys[d * n + i], acc);
            }
            scores[r * stride + i] = acc * scale;
        }
    }
}

#[inline(always)]
fn weighted_rows_body<const FMA: bool>(
    out: &mut [f32],
    heads: usize,
    weights: &[f32],
    weight_stride: usize,
    count: usize,
    rows: &[f32],
    stride: usize,
) {
    let dim = out.len() / heads.max(1);
    assert_eq!(out.len(), heads * dim);
    assert!(
        heads == 0
            || (count <= weight_stride && weights.len() >= (heads - 1) * weight_stride + count)
    );
    assert!(count == 0 || rows.len() >= (count - 1) * stride + dim);
    head_runs!(heads, [4, 3, 2, 1], |first, R| weighted_rows_run::<FMA, R>(
        &mut out[first * dim..(first + R) * dim],
        &weights[first * weight_stride..],
        weight_stride,
        count,
        rows,
        stride
    ));
}

/// [`weighted_rows`] for `R` heads. Each output is one chain of multiply-adds over the positions in
/// order, whatever `R` is.
#[inline(always)]
fn weighted_rows_run<const FMA: bool, const R: usize>(
    out: &mut [f32],
    weights: &[f32],
    weight_stride: usize,
    count: usize,
    rows: &[f32],
    stride: usize,
) {
    let dim = out.len() / R;
    let w: [&[f32]; R] = std::array::from_fn(|r| &weights[r * weight_stride..][..count]);
    let mut start = 0;
    while start + LANES <= dim {
        let mut acc = [[0.0f32; LANES]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            acc.copy_from_slice(&out[r * dim + start..r * dim + start + LANES]);
        }
        for p in 0..count {
            let v = &rows[p * stride + start..p * stride + start + LANES];
            for r in 0..R {
                for i in 0..LANES {
                    acc[r][i] = madd::<FMA>(w[r][p], v[i], acc[r][i]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            out[r * dim + start..r * dim + start + LANES].copy_from_slice(acc);
        }
        start += LANES;
    }
    for (r, w) in w.iter().enumerate() {
        for i in start..dim {
            let o = &mut out[r * dim + i];
            for (p, &wp) in w.iter().enumerate() {
                *o = madd::<FMA>(wp, rows[p * stride + i], *o);
            }
        }
    }
}

with_dispatch! {
    /// Attention scores of one block for `heads` query heads that share its keys:
    /// `scores[r·stride + p] = scale · Σ_d qs[r·dim + d]·keys[d·n + p]`, where `dim = qs.len() /
    /// heads` and the block's `n = keys.len() / dim` keys are stored transposed (`[dim, n]`).
    pub fn key_scores(scores: &mut [f32], stride: usize, heads: usize, qs: &[f32], keys: &[f32], scale: f32) => key_scores_body
}

with_dispatch! {
    /// `out[r·dim + i] += Σ_{p < count} weights[r·weight_stride + p]·rows[p·stride + i]` for
    /// `heads` heads (`dim = out.len() / heads`) that share the rows: weighted sums of rows
    /// `stride` apart.
    pub fn weighted_rows(out: &mut [f32], heads: usize, weights: &[f32], weight_stride: usize, count: usize, rows: &[f32], stride: usize) => weighted_rows_body
}

#[inline(always)]
fn silu_mul_backward_body<const FMA: bool>(
    d_gate: &mut [f32],
    d_up: &mut [f32],
    d_out: &[f32],
    gate: &[f32],
    up: &[f32],
) {
    for i in 0..d_out.len() {
        let (g, u, dy) = (gate[i], up[i], d_out[i]);
        let sig = 1.0 / (1.0 + exp_one::<FMA>(-g));
        d_up[i] = dy * g * sig;
        d_gate[i] = dy * u * sig * (1.0 + g * (1.0 - sig));
    }
}

with_dispatch! {
    /// Backward of [`silu_mul`]: `d_up = d_out·silu(gate)`, `d_gate = d_out·up·silu'(gate)` with
    /// `silu'(g) = σ(g)·(1 + g·(1 - σ(g)))`.
    pub fn silu_mul_backward(d_gate: &mut [f32], d_up: &mut [f32], d_out: &[f32], gate: &[f32], up: &[f32]) => silu_mul_backward_body
}

with_dispatch! {
    /// `Σ a[i]·b[i]`.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 => dot_body
}

with_dispatch! {
    /// `x[i] = exp(x[i] - shift)` in place; returns the sum of the results.
    pub fn exp_sub_sum(xs: &mut [f32], shift: f32) -> f32 => exp_sub_sum_body
}

with_dispatch! {
    /// `out[i] = silu(gate[i]) · up[i]` with `silu(g) = g / (1 + exp(-g))`.
    pub fn silu_mul(out: &mut [f32], gate: &[f32], up: &[f32]) => silu_mul_body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let mut v = [x];
            exp_sub_sum(&mut v, 0.0);
            let exact = (x as f64).exp();
            worst = worst.max(((v[0] as f64) - exact).abs() / exact);
            x += 0.0137;
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        let mut v = [-1000.0f32, f32::NEG_INFINITY];
        exp_sub_sum(&mut v, 0.0);
        assert!(v[0] < 1e-37 && v[1] < 1e-37);
    }

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * f + 0.3).sin()).collect()
    }

    #[test]
    fn dot_matches_a_plain_loop() {
        for n in [0, 1, 15, 16, 17, 64, 100] {
            let (a, b) = (wave(n, 0.37), wave(n, 0.91));
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - exact).abs() < 1e-5);
        }
    }

    #[test]
    fn block_kernels_match_plain_loops() {
        for (dim, n) in [(8, 4), (64, 16), (20, 19), (3, 33)] {
            let q = wave(dim, 0.7);
            let keys = wave(dim * n, 0.13);
            let mut scores = vec![f32::NAN; n];
            key_scores(&mut scores, n, 1, &q, &keys, 0.5);
            for p in 0..n {
                let exact: f32 = (0..dim).map(|d| q[d] * keys[d * n + p]).sum::<f32>() * 0.5;
                assert!((scores[p] - exact).abs() < 1e-5, "{dim} {n} {p}");
            }
            let stride = dim + 3;
            let rows = wave(stride * n, 0.29);
            let base = wave(dim, 1.1);
            let mut out = base.clone();
            weighted_rows(&mut out, 1, &scores, n, n, &rows, stride);
            for i in 0..dim {
                let exact: f32 = base[i]
                    + (0..n)
                        .map(|p| scores[p] * rows[p * stride + i])
                        .sum::<f32>();
                assert!((out[i] - exact).abs() < 1e-4, "{dim} {n} {i}");
            }
        }
    }

    #[test]
    fn heads_run_together_get_exactly_what_each_gets_alone() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (dim, n) in [(64, 16), (20, 19), (3, 33)] {
            for heads in 1..=6 {
                // Scores rows `stride` apart, the block's scores at `column` of each.
                let (stride, column) = (n + 5, 2);
                let qs = wave(heads * dim, 0.7);
                let keys = wave(dim * n, 0.13);
                let mut together = vec![0.0; heads * stride];
                key_scores(&mut together[column..], stride, heads, &qs, &keys, 0.5);
                let rows = wave((dim + 3) * n, 0.29);
                let mut out = wave(heads * dim, 1.1);
                weighted_rows(
                    &mut out,
                    heads,
                    &together[column..],
                    stride,
                    n - 1,
                    &rows,
                    dim + 3,
                );
                for r in 0..heads {
                    let mut alone = vec![0.0; n];
                    key_scores(&mut alone, n, 1, &qs[r * dim..(r + 1) * dim], &keys, 0.5);
                    let row = &together[r * stride + column..][..n];
                    assert_eq!(
                        bits(row),
                        bits(&alone),
                        "scores: {dim} {n}, head {r} of {heads}"
                    );
                    let mut out_alone = wave(heads * dim, 1.1)[r * dim..(r + 1) * dim].to_vec();
                    weighted_rows(&mut out_alone, 1, &alone, n, n - 1, &rows, dim + 3);
                    let got = &out[r * dim..(r + 1) * dim];
                    assert_eq!(
                        bits(got),
                        bits(&out_alone),
                        "sums: {dim} {n}, head {r} of {heads}"
                    );
                }
            }
        }
    }
}
