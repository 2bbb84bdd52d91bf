//! Row gathers and scatters, RMSNorm, RoPE, SwiGLU, residual adds, biases and cross-entropy through
//! the CPU shim, against the CPU backend of lmsi-transformer, under every fiber schedule.
//!
//! Tolerances: gathers, scatters, adds and biases are exact (bit for bit: same operations in the
//! same order). The rest differ from the CPU reference in summation order and in `exp` (the CPU backend
//! uses its own vectorised exp, the shim glibc's, a GPU its own): `1e-6 + 1e-5·|x|` for values,
//! `1e-5 + 1e-5·|x|` for gradients summed over many rows. The bf16 forms of RMSNorm and SwiGLU write
//! their f32 forms' results rounded to nearest even, bit for bit.

mod common;

use common::{Rng, assert_bits, assert_close, assert_rounded, poisoned, poisoned_bf16, runners};
use half::bf16;
use lmsi_cuda::launch::{self, rmsnorm_params};
use lmsi_cuda::params::*;
use lmsi_transformer::CpuBackend;
use lmsi_transformer::backend::{
    AttentionDims, Backend, BatchLayout, Linear, LinearGrad, RmsNormGrad, Rotation,
};

fn token_layout(ids: Vec<u32>) -> BatchLayout {
    BatchLayout {
        positions: (0..ids.len() as u32).collect(),
        slots: vec![0; ids.len()],
        token_ids: ids,
        ..BatchLayout::default()
    }
}

#[test]
fn gather_rows_is_the_embedding_lookup() {
    let mut rng = Rng::new(1);
    for (vocab, dim, tokens) in [(37, 64, 13), (5, 300, 1), (200, 577, 40)] {
        let table = rng.values(vocab * dim, 1.0);
        let ids: Vec<u32> = (0..tokens)
            .map(|_| rng.below(vocab as u64) as u32)
            .collect();
        let cpu = CpuBackend::new();
        let layout = cpu.prepare(&token_layout(ids.clone())).unwrap();
        let mut want = vec![0.0; tokens * dim];
        cpu.embedding(&mut want, &table, &layout, dim).unwrap();
        let p = LmsiRowsParams {
            rows: tokens as u32,
            dim: dim as u32,
            table_rows: vocab as u32,
        };
        for runner in runners() {
            let mut got = poisoned(tokens * dim);
            runner.gather_rows(&p, &mut got, &table, &ids).unwrap();
            assert_bits(&*runner, "gather_rows embedding", &got, &want);
        }
    }
}

#[test]
fn gather_rows_bf16_widens_a_bf16_table_exactly() {
    let mut rng = Rng::new(3);
    let (vocab, dim, tokens) = (41, 130, 17);
    let table: Vec<bf16> = rng
        .values(vocab * dim, 1.0)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let ids: Vec<u32> = (0..tokens)
        .map(|_| rng.below(vocab as u64) as u32)
        .collect();
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&id| &table[id as usize * dim..][..dim])
        .map(|v| v.to_f32())
        .collect();
    let p = LmsiRowsParams {
        rows: tokens as u32,
        dim: dim as u32,
        table_rows: vocab as u32,
    };
    for runner in runners() {
        let mut got = poisoned(tokens * dim);
        runner.gather_rows_bf16(&p, &mut got, &table, &ids).unwrap();
        assert_bits(&*runner, "gather_rows_bf16 embedding", &got, &want);
    }
}

#[test]
fn f32_to_bf16_rounds_to_nearest_even_like_the_hardware() {
    let mut rng = Rng::new(4);
    let mut x = rng.values(3000, 1e3);
    // Ties both ways, the largest finite values, infinities, NaNs, subnormals, signed zeros.
    x.extend([
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        f32::from_bits(0x3f80_8001),
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0xffc0_0001),
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0x0000_8000),
        f32::from_bits(0x0001_7fff),
        0.0,
        -0.0,
    ]);
    let p = LmsiVecParams {
        len: x.len() as u64,
        factor: 0.0,
    };
    for runner in runners() {
        let mut got = vec![bf16::from_bits(0x7fff); x.len()];
        runner.f32_to_bf16(&p, &mut got, &x).unwrap();
        for (i, (g, &v)) in got.iter().zip(&x).enumerate() {
            let want = bf16::from_f32(v);
            let same = g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan());
            assert!(same, "{} [{i}] {v:e}: {g:?} vs {want:?}", runner.name());
        }
    }
}

#[test]
fn gather_rows_picks_logit_rows_and_fills_bad_indices_with_nan() {
    let mut rng = Rng::new(2);
    let (tokens, dim) = (20, 129);
    let x = rng.values(tokens * dim, 2.0);
    let layout = BatchLayout {
        logit_rows: vec![19, 3, 4, 0, 7, 8, 12, 15, 16],
        ..token_layout(vec![0; tokens])
    };
    let cpu = CpuBackend::new();
    let prepared = cpu.prepare(&layout).unwrap();
    let rows = 2..7;
    let mut want = vec![0.0; rows.len() * dim];
    cpu.gather_logit_rows(&mut want, &x, &prepared, rows.clone(), dim)
        .unwrap();
    let p = LmsiRowsParams {
        rows: rows.len() as u32,
        dim: dim as u32,
        table_rows: tokens as u32,
    };
    for runner in runners() {
        let mut got = poisoned(rows.len() * dim);
        runner
            .gather_rows(&p, &mut got, &x, &layout.logit_rows[rows.clone()])
            .unwrap();
        assert_bits(&*runner, "gather_rows logit rows", &got, &want);
        let mut bad = vec![0.0; dim];
        let one = LmsiRowsParams { rows: 1, ..p };
        runner
            .gather_rows(&one, &mut bad, &x, &[tokens as u32])
            .unwrap();
        assert!(bad.iter().all(|v| v.is_nan()));
    }
}

#[test]
fn scatter_add_rows_is_the_embedding_backward_in_token_order() {
    let mut rng = Rng::new(3);
    for (vocab, dim, tokens) in [(11, 64, 50), (3, 257, 9), (70, 33, 300)] {
        let d_out = rng.values(tokens * dim, 1.0);
        // Few distinct ids, so rows repeat and the order of additions matters.
        let ids: Vec<u32> = (0..tokens)
            .map(|_| rng.below(vocab as u64) as u32)
            .collect();
        let start = rng.values(vocab * dim, 0.5);
        let cpu = CpuBackend::new();
        let layout = cpu.prepare(&token_layout(ids.clone())).unwrap();
        let mut want = start.clone();
        cpu.embedding_backward(&mut want, &d_out, &layout, dim)
            .unwrap();
        let p = LmsiRowsParams {
            rows: tokens as u32,
            dim: dim as u32,
            table_rows: vocab as u32,
        };
        for runner in runners() {
            let mut got = start.clone();
            runner.scatter_add_rows(&p, &mut got, &d_out, &ids).unwrap();
            assert_bits(&*runner, "scatter_add_rows embedding gradient", &got, &want);
        }
    }
}

#[test]
fn scatter_add_rows_is_the_logit_row_scatter() {
    let mut rng = Rng::new(4);
    let (tokens, dim) = (30, 100);
    let layout = BatchLayout {
        logit_rows: vec![1, 2, 5, 9, 10, 11, 20, 29],
        ..token_layout(vec![0; tokens])
    };
    let start = rng.values(tokens * dim, 1.0);
    let rows = 1..8;
    let src = rng.values(rows.len() * dim, 1.0);
    let cpu = CpuBackend::new();
    let prepared = cpu.prepare(&layout).unwrap();
    let mut want = start.clone();
    cpu.scatter_logit_rows(&mut want, &src, &prepared, rows.clone(), dim)
        .unwrap();
    let p = LmsiRowsParams {
        rows: rows.len() as u32,
        dim: dim as u32,
        table_rows: tokens as u32,
    };
    for runner in runners() {
        let mut got = start.clone();
        runner
            .scatter_add_rows(&p, &mut got, &src, &layout.logit_rows[rows.clone()])
            .unwrap();
        assert_bits(&*runner, "scatter_add_rows logit rows", &got, &want);
    }
}

#[test]
fn rmsnorm_forward_matches_the_cpu() {
    let mut rng = Rng::new(5);
    for (rows, dim) in [(1, 64), (7, 257), (130, 1000), (3, 5)] {
        let x = rng.values(rows * dim, 3.0);
        let weight = rng.values(dim, 1.5);
        let mut want = vec![0.0; rows * dim];
        CpuBackend::new()
            .rmsnorm(&mut want, &x, &weight, rows, 1e-5)
            .unwrap();
        let p = rmsnorm_params(rows as u32, dim as u32, 1e-5);
        for runner in runners() {
            let mut got = poisoned(rows * dim);
            runner.rmsnorm_forward(&p, &mut got, &x, &weight).unwrap();
            assert_close(&*runner, "rmsnorm_forward", &got, &want, 1e-6, 1e-5);
            let mut rounded = poisoned_bf16(rows * dim);
            runner
                .rmsnorm_forward_bf16(&p, &mut rounded, &x, &weight)
                .unwrap();
            assert_rounded(&*runner, "rmsnorm_forward_bf16", &rounded, &got);
        }
    }
}

#[test]
fn rmsnorm_backward_matches_the_cpu() {
    let mut rng = Rng::new(6);
    for (rows, dim) in [(5, 64), (64, 100), (200, 257), (129, 31)] {
        let x = rng.values(rows * dim, 2.0);
        let weight = rng.values(dim, 1.5);
        let d_out = rng.values(rows * dim, 1.0);
        let d_x0 = rng.values(rows * dim, 0.5);
        let d_w0 = rng.values(dim, 0.5);
        let (mut want_dx, mut want_dw) = (d_x0.clone(), d_w0.clone());
        CpuBackend::new()
            .rmsnorm_backward(
                RmsNormGrad {
                    input: &mut want_dx,
                    weight: &mut want_dw,
                },
                &d_out,
                &x,
                &weight,
                rows,
                1e-6,
            )
            .unwrap();
        let p = rmsnorm_params(rows as u32, dim as u32, 1e-6);
        let partial_rows = launch::rmsnorm_partial_rows(&p) as usize;
        for runner in runners() {
            let (mut d_x, mut d_w) = (d_x0.clone(), d_w0.clone());
            let mut partial = poisoned(partial_rows * dim);
            runner
                .rmsnorm_backward(&p, &mut d_x, &mut partial, &d_out, &x, &weight)
                .unwrap();
            runner
                .rmsnorm_backward_reduce(&p, &mut d_w, &partial)
                .unwrap();
            assert_close(&*runner, "rmsnorm_backward d_x", &d_x, &want_dx, 1e-5, 1e-5);
            assert_close(
                &*runner,
                "rmsnorm_backward_reduce d_weight",
                &d_w,
                &want_dw,
                1e-5,
                1e-5,
            );
        }
    }
}

fn inv_freq(head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 10000f32.powf(-2.0 * i as f32 / head_dim as f32))
        .collect()
}

#[test]
fn rope_and_its_inverse_match_the_cpu() {
    let mut rng = Rng::new(7);
    for (heads, kv_heads, head_dim, tokens) in [(4, 2, 64, 9), (3, 3, 10, 17), (9, 3, 128, 2)] {
        let dims = AttentionDims {
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            scale: 1.0,
            window: None,
            block_size: 16,
        };
        let positions: Vec<u32> = (0..tokens).map(|_| rng.below(5000) as u32).collect();
        let layout = BatchLayout {
            positions: positions.clone(),
            ..token_layout(vec![0; tokens])
        };
        let freqs = inv_freq(head_dim);
        let qkv = rng.values(tokens * dims.qkv_dim(), 1.0);
        let cpu = CpuBackend::new();
        let prepared = cpu.prepare(&layout).unwrap();
        let (mut want_fwd, mut want_bwd) = (qkv.clone(), qkv.clone());
        cpu.rope(&mut want_fwd, &prepared, &dims, &freqs, Rotation::Forward)
            .unwrap();
        cpu.rope(&mut want_bwd, &prepared, &dims, &freqs, Rotation::Inverse)
            .unwrap();
        let p = LmsiRopeParams {
            tokens: tokens as u32,
            num_heads: heads as u32,
            num_kv_heads: kv_heads as u32,
            head_dim: head_dim as u32,
            inverse: 0,
        };
        for runner in runners() {
            let mut got = qkv.clone();
            runner.rope(&p, &mut got, &positions, &freqs).unwrap();
            assert_close(&*runner, "rope", &got, &want_fwd, 1e-6, 1e-5);
            let mut back = qkv.clone();
            let inverse = LmsiRopeParams { inverse: 1, ..p };
            runner
                .rope(&inverse, &mut back, &positions, &freqs)
                .unwrap();
            assert_close(&*runner, "rope inverse", &back, &want_bwd, 1e-6, 1e-5);
        }
    }
}

#[test]
fn swiglu_and_its_backward_match_the_cpu() {
    let mut rng = Rng::new(8);
    for (rows, inter) in [(7, 100), (1, 513), (40, 64)] {
        let gate_up = rng.values(rows * 2 * inter, 4.0);
        let d_out = rng.values(rows * inter, 1.0);
        let cpu = CpuBackend::new();
        let mut want = vec![0.0; rows * inter];
        cpu.swiglu(&mut want, &gate_up, rows, inter).unwrap();
        let mut want_grad = vec![0.0; rows * 2 * inter];
        cpu.swiglu_backward(&mut want_grad, &d_out, &gate_up, rows, inter)
            .unwrap();
        let p = LmsiSwigluParams {
            rows: rows as u32,
            inter: inter as u32,
        };
        for runner in runners() {
            let mut got = poisoned(rows * inter);
            runner.swiglu_forward(&p, &mut got, &gate_up).unwrap();
            assert_close(&*runner, "swiglu_forward", &got, &want, 1e-6, 1e-5);
            let mut rounded = poisoned_bf16(rows * inter);
            runner
                .swiglu_forward_bf16(&p, &mut rounded, &gate_up)
                .unwrap();
            assert_rounded(&*runner, "swiglu_forward_bf16", &rounded, &got);
            let mut grad = poisoned(rows * 2 * inter);
            runner
                .swiglu_backward(&p, &mut grad, &d_out, &gate_up)
                .unwrap();
            assert_close(&*runner, "swiglu_backward", &grad, &want_grad, 1e-6, 1e-5);
        }
    }
}

#[test]
fn add_and_scale_are_exact() {
    let mut rng = Rng::new(9);
    for len in [1, 255, 10_003, 3_000_001] {
        let x0 = rng.values(len, 1.0);
        let y = rng.values(len, 1.0);
        let mut want = x0.clone();
        CpuBackend::new().add_assign(&mut want, &y, len).unwrap();
        let p = LmsiVecParams {
            len: len as u64,
            factor: 0.7,
        };
        for runner in runners() {
            let mut x = x0.clone();
            runner.add_assign(&p, &mut x, &y).unwrap();
            assert_bits(&*runner, "add_assign", &x, &want);
            runner.scale_assign(&p, &mut x).unwrap();
            let scaled: Vec<f32> = want.iter().map(|v| v * 0.7).collect();
            assert_bits(&*runner, "scale_assign", &x, &scaled);
        }
    }
}

#[test]
fn bias_add_is_the_bias_of_a_linear_layer() {
    let mut rng = Rng::new(11);
    // Up to 64 rows the CPU computes each product on its own and then adds it to the bias, one
    // rounding like the kernel's `product + bias`: the results are equal bit for bit.
    for (m, n, k) in [(1, 7, 5), (13, 300, 33), (64, 129, 64)] {
        let x = rng.values(m * k, 1.0);
        let w = rng.values(n * k, 1.0);
        let bias = rng.values(n, 1.0);
        let cpu = CpuBackend::new();
        let mut product = poisoned(m * n);
        cpu.matmul(&mut product, &x, &Linear::new(&w, k, n), m, false)
            .unwrap();
        let mut want = poisoned(m * n);
        cpu.matmul(
            &mut want,
            &x,
            &Linear::new(&w, k, n).with_bias(Some(&bias)),
            m,
            false,
        )
        .unwrap();
        let p = LmsiBiasParams {
            rows: m as u32,
            dim: n as u32,
        };
        for runner in runners() {
            let mut got = product.clone();
            runner.bias_add(&p, &mut got, &bias).unwrap();
            assert_bits(&*runner, "bias_add x·Wᵀ + bias", &got, &want);
        }
    }
    // More values than one grid-stride pass covers.
    let (rows, dim) = (2100, 1001);
    let out0 = rng.values(rows * dim, 1.0);
    let bias = rng.values(dim, 1.0);
    let want: Vec<f32> = out0
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % dim])
        .collect();
    let p = LmsiBiasParams {
        rows: rows as u32,
        dim: dim as u32,
    };
    for runner in runners() {
        let mut got = out0.clone();
        runner.bias_add(&p, &mut got, &bias).unwrap();
        assert_bits(&*runner, "bias_add out + bias", &got, &want);
    }
}

#[test]
fn bias_grad_is_the_cpus_bias_gradient() {
    let mut rng = Rng::new(12);
    for (m, n, k) in [(1, 3, 4), (70, 257, 16), (300, 40, 8)] {
        let d_out = rng.values(m * n, 1.0);
        let x = rng.values(m * k, 1.0);
        let d_bias0 = rng.values(n, 0.5);
        let mut d_w = vec![0.0; n * k];
        let mut want = d_bias0.clone();
        CpuBackend::new()
            .matmul_backward_weight(
                LinearGrad {
                    weight: &mut d_w,
                    bias: Some(&mut want),
                    in_features: k,
                    out_features: n,
                },
                &d_out,
                &x,
                m,
            )
            .unwrap();
        let p = LmsiBiasParams {
            rows: m as u32,
            dim: n as u32,
        };
        for runner in runners() {
            let mut got = d_bias0.clone();
            runner.bias_grad(&p, &mut got, &d_out).unwrap();
            assert_bits(&*runner, "bias_grad", &got, &want);
        }
    }
}

#[test]
fn cross_entropy_matches_the_cpu() {
    let mut rng = Rng::new(10);
    for (rows, vocab) in [(5, 10), (3, 1000), (2, 5003)] {
        let logits = rng.values(rows * vocab, 8.0);
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(vocab as u64) as u32).collect();
        let layout = BatchLayout {
            targets: targets.clone(),
            ..token_layout(vec![0; rows])
        };
        let cpu = CpuBackend::new();
        let prepared = cpu.prepare(&layout).unwrap();
        let mut want = logits.clone();
        let scales: Vec<f32> = (0..rows).map(|i| 0.25 - 0.5 * i as f32).collect();
        let want_loss = cpu
            .cross_entropy(&mut want, &prepared, 0..rows, vocab, &scales)
            .unwrap();
        let p = LmsiCrossEntropyParams {
            rows: rows as u32,
            vocab: vocab as u32,
        };
        for runner in runners() {
            let mut got = logits.clone();
            let mut loss = poisoned(rows);
            runner
                .cross_entropy(&p, &mut got, &mut loss, &targets, &scales)
                .unwrap();
            assert_close(&*runner, "cross_entropy gradient", &got, &want, 1e-7, 1e-5);
            assert_close(
                &*runner,
                "cross_entropy loss",
                &loss,
                &want_loss,
                1e-5,
                1e-6,
            );
        }
    }
}
