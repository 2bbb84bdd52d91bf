//! Every backward pass of the CPU backend against central finite differences of its forward pass, on
//! random inputs (never zeros), and the whole model's gradient on tiny random models.

use lmsi_transformer::backend::{
    AttentionDims, AttentionSaved, Backend, BatchLayout, Linear, LinearGrad, RmsNormGrad, Rotation,
    SeqLayout,
};
use lmsi_transformer::testing::{GradientCheck, TinyModel, assert_gradient};
use lmsi_transformer::{CpuBackend, Model, Params, TrainSequence};

const BE: CpuBackend = CpuBackend;

/// Test values, never zero.
fn random(n: usize, seed: u64) -> Vec<f32> {
    lmsi_transformer::testing::nonzero_values(n, seed, 1.0)
}

/// Checks `grads` (the analytic gradients of `loss` with respect to each of `inputs`) against central
/// differences of `loss`, for every element of every input.
fn check(name: &str, inputs: &[Vec<f32>], loss: impl Fn(&[Vec<f32>]) -> f64, grads: &[Vec<f32>]) {
    let eps = 1e-3f32;
    for (which, input) in inputs.iter().enumerate() {
        let mut worst = 0.0f64;
        let mut scale = 1e-2f64;
        for i in 0..input.len() {
            let mut shifted = inputs.to_vec();
            shifted[which][i] = input[i] + eps;
            let up = loss(&shifted);
            shifted[which][i] = input[i] - eps;
            let down = loss(&shifted);
            let numeric = (up - down) / (2.0 * eps as f64);
            worst = worst.max((numeric - grads[which][i] as f64).abs());
            scale = scale.max(numeric.abs());
        }
        assert!(
            worst / scale < 1e-2,
            "{name}, input {which}: max error {worst:.2e} vs gradient scale {scale:.2e}"
        );
    }
}

/// `Σ r[i]·out[i]` in f64 for a fixed random `r`, so its gradient with respect to `out` is `r`.
fn weighted_sum(out: &[f32], seed: u64) -> f64 {
    out.iter()
        .zip(random(out.len(), seed))
        .map(|(a, b)| *a as f64 * b as f64)
        .sum()
}

fn seq_layout(lens: &[usize]) -> BatchLayout {
    let mut l = BatchLayout::default();
    for &len in lens {
        l.seqs.push(SeqLayout {
            token_start: l.token_ids.len() as u32,
            num_tokens: len as u32,
            context_len: len as u32,
            table_start: 0,
        });
        for p in 0..len {
            l.token_ids.push((p * 7 % 11) as u32);
            l.positions.push(p as u32);
        }
    }
    l
}

#[test]
fn rmsnorm() {
    let (rows, dim) = (3, 8);
    let inputs = vec![random(rows * dim, 1), random(dim, 2)];
    let forward = |v: &[Vec<f32>]| {
        let mut out = vec![0.0; rows * dim];
        BE.rmsnorm(&mut out, &v[0], &v[1], rows, 1e-5).unwrap();
        weighted_sum(&out, 9)
    };
    let d_out: Vec<f32> = random(rows * dim, 9);
    let (mut dx, mut dw) = (vec![0.0; rows * dim], vec![0.0; dim]);
    BE.rmsnorm_backward(
        RmsNormGrad {
            input: &mut dx,
            weight: &mut dw,
        },
        &d_out,
        &inputs[0],
        &inputs[1],
        rows,
        1e-5,
    )
    .unwrap();
    check("rmsnorm", &inputs, forward, &[dx, dw]);
}

#[test]
fn matmul_with_bias() {
    let (m, n, k) = (3, 5, 4);
    let inputs = vec![random(m * k, 1), random(n * k, 2), random(n, 3)];
    let forward = |v: &[Vec<f32>]| {
        let mut out = vec![0.0; m * n];
        BE.matmul(
            &mut out,
            &v[0],
            &Linear::new(&v[1], k, n).with_bias(Some(&v[2])),
            m,
            false,
        )
        .unwrap();
        weighted_sum(&out, 9)
    };
    let d_out = random(m * n, 9);
    let mut dx = random(m * k, 4);
    let before = dx.clone();
    BE.matmul_backward_input(&mut dx, &d_out, &Linear::new(&inputs[1], k, n), m, true)
        .unwrap();
    let dx: Vec<f32> = dx.iter().zip(&before).map(|(a, b)| a - b).collect();
    let (mut dw, mut db) = (vec![0.0; n * k], vec![0.0; n]);
    BE.matmul_backward_weight(
        LinearGrad {
            weight: &mut dw,
            bias: Some(&mut db),
            in_features: k,
            out_features: n,
        },
        &d_out,
        &inputs[0],
        m,
    )
    .unwrap();
    check("matmul", &inputs, forward, &[dx, dw, db]);
}

#[test]
fn rope() {
    let dims = AttentionDims {
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 4,
        scale: 0.5,
        window: None,
        block_size: 1,
    };
    let layout = BE.prepare(&seq_layout(&[3])).unwrap();
    let inv_freq = vec![0.9, 0.05];
    let inputs = vec![random(3 * dims.qkv_dim(), 1)];
    let forward = |v: &[Vec<f32>]| {
        let mut x = v[0].clone();
        BE.rope(&mut x, &layout, &dims, &inv_freq, Rotation::Forward)
            .unwrap();
        weighted_sum(&x, 9)
    };
    let mut d = random(3 * dims.qkv_dim(), 9);
    BE.rope(&mut d, &layout, &dims, &inv_freq, Rotation::Inverse)
        .unwrap();
    check("rope", &inputs, forward, &[d]);
}

#[test]
fn causal_attention_with_grouped_heads_and_window() {
    for window in [None, Some(2)] {
        let dims = AttentionDims {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 3,
            scale: 0.6,
            window,
            block_size: 1,
        };
        let layout = BE.prepare(&seq_layout(&[4, 3])).unwrap();
        let t = 7;
        let inputs = vec![random(t * dims.qkv_dim(), 5)];
        let run = |qkv: &Vec<f32>| {
            let (mut out, mut lse) = (vec![0.0; t * 12], vec![0.0; t * 4]);
            BE.causal_attention(&mut out, &mut lse, qkv, &layout, &dims)
                .unwrap();
            (out, lse)
        };
        let forward = |v: &[Vec<f32>]| weighted_sum(&run(&v[0]).0, 9);
        let (out, lse) = run(&inputs[0]);
        let mut d_qkv = vec![f32::NAN; t * dims.qkv_dim()];
        let saved = AttentionSaved {
            qkv: &inputs[0],
            out: &out,
            lse: &lse,
        };
        BE.causal_attention_backward(&mut d_qkv, &random(t * 12, 9), &saved, &layout, &dims)
            .unwrap();
        check(
            &format!("attention (window {window:?})"),
            &inputs,
            forward,
            &[d_qkv],
        );
    }
}

#[test]
fn swiglu() {
    let (rows, inter) = (2, 5);
    let inputs = vec![
        random(rows * 2 * inter, 1)
            .iter()
            .map(|x| x * 3.0)
            .collect::<Vec<f32>>(),
    ];
    let forward = |v: &[Vec<f32>]| {
        let mut out = vec![0.0; rows * inter];
        BE.swiglu(&mut out, &v[0], rows, inter).unwrap();
        weighted_sum(&out, 9)
    };
    let mut d = vec![f32::NAN; rows * 2 * inter];
    BE.swiglu_backward(&mut d, &random(rows * inter, 9), &inputs[0], rows, inter)
        .unwrap();
    check("swiglu", &inputs, forward, &[d]);
}

#[test]
fn embedding_gather_scatter_and_cross_entropy() {
    // loss = Σ w_i · cross_entropy_i(gather(embedding(ids)) as logits, targets), through every op's
    // backward, with one weight per row of either sign.
    let (vocab, dim) = (11, 11);
    let mut l = seq_layout(&[5]);
    l.logit_rows = vec![4, 1, 3];
    l.targets = vec![2, 9, 4];
    let layout = BE.prepare(&l).unwrap();
    let inputs = vec![random(vocab * dim, 3)];
    let weights = [0.5f32, -1.25, 2.0];
    let forward = |v: &[Vec<f32>]| {
        let mut x = vec![0.0; 5 * dim];
        BE.embedding(&mut x, &v[0], &layout, dim).unwrap();
        let mut logits = vec![0.0; 3 * dim];
        BE.gather_logit_rows(&mut logits, &x, &layout, 0..3, dim)
            .unwrap();
        BE.cross_entropy(&mut logits, &layout, 0..3, vocab, &weights)
            .unwrap()
            .iter()
            .zip(weights)
            .map(|(&l, w)| f64::from(l * w))
            .sum::<f64>()
    };
    let mut x = vec![0.0; 5 * dim];
    BE.embedding(&mut x, &inputs[0], &layout, dim).unwrap();
    let mut logits = vec![0.0; 3 * dim];
    BE.gather_logit_rows(&mut logits, &x, &layout, 0..3, dim)
        .unwrap();
    BE.cross_entropy(&mut logits, &layout, 0..3, vocab, &weights)
        .unwrap();
    let mut dx = vec![0.0; 5 * dim];
    BE.scatter_logit_rows(&mut dx, &logits, &layout, 0..3, dim)
        .unwrap();
    let mut d_table = vec![0.0; vocab * dim];
    BE.embedding_backward(&mut d_table, &dx, &layout, dim)
        .unwrap();
    check("embedding + cross-entropy", &inputs, forward, &[d_table]);
}

fn batch() -> Vec<TrainSequence> {
    vec![
        TrainSequence::completion(vec![256, 72, 105, 32, 116, 104, 101, 114, 101], 4),
        TrainSequence::completion(vec![256, 50, 43, 50, 61, 52], 5),
        // Two separate spans, as in a document of several worked problems.
        TrainSequence {
            tokens: vec![256, 81, 58, 32, 65, 66, 10, 67],
            targets: vec![2..4, 5..8],
        },
    ]
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    for spec in [
        TinyModel {
            hidden_size: 16,
            intermediate_size: 24,
            seed: 5,
            ..TinyModel::default()
        },
        TinyModel {
            model_type: "qwen2",
            hidden_size: 16,
            intermediate_size: 24,
            tied: true,
            seed: 6,
            ..TinyModel::default()
        },
    ] {
        let host = spec.params();
        let config = lmsi_transformer::Config::from_json(&spec.config_json().to_string()).unwrap();
        let model = Model::from_host(config.clone(), &host, CpuBackend).unwrap();
        let batch = batch();
        let tokens: usize = batch.iter().map(|s| s.target_count()).sum();
        let mut grads = model.zero_grads().unwrap();
        let loss = model
            .loss_and_grads(&batch, &mut grads, 1.0 / tokens as f32, false)
            .unwrap();
        assert!((loss.mean() - model.loss(&batch).unwrap().mean()).abs() < 1e-6);
        let mut recomputed = model.zero_grads().unwrap();
        model
            .loss_and_grads(&batch, &mut recomputed, 1.0 / tokens as f32, true)
            .unwrap();
        assert_eq!(
            grads.tensors(),
            recomputed.tensors(),
            "recomputing activations changes nothing"
        );

        let mean_loss = |p: &Params<Vec<f32>>| {
            let model = Model::from_host(config.clone(), p, CpuBackend).unwrap();
            model.loss(&batch).unwrap().mean()
        };
        let check = GradientCheck {
            eps: 2e-3,
            picks: 6,
            offset: 13,
            abs: 2e-3,
            rel: 2e-2,
        };
        assert_gradient(
            spec.model_type,
            model.layout(),
            &host,
            &grads,
            mean_loss,
            check,
        );
    }
}

#[test]
fn weighted_loss_gradient_matches_finite_differences() {
    // Σ w_i · loss_i with one weight per predicted token, of either sign: the form every objective
    // beyond the mean likelihood takes (vote shares, advantages, preference margins).
    let spec = TinyModel {
        hidden_size: 16,
        intermediate_size: 24,
        seed: 7,
        ..TinyModel::default()
    };
    let host = spec.params();
    let config = lmsi_transformer::Config::from_json(&spec.config_json().to_string()).unwrap();
    let model = Model::from_host(config.clone(), &host, CpuBackend).unwrap();
    let batch = batch();
    let tokens: usize = batch.iter().map(|s| s.target_count()).sum();

    let uniform = vec![1.0 / tokens as f32; tokens];
    let mut by_weights = model.zero_grads().unwrap();
    let losses = model
        .weighted_loss_and_grads(&batch, &mut by_weights, &uniform, false)
        .unwrap();
    let mut by_scale = model.zero_grads().unwrap();
    model
        .loss_and_grads(&batch, &mut by_scale, 1.0 / tokens as f32, false)
        .unwrap();
    assert_eq!(
        by_weights.tensors(),
        by_scale.tensors(),
        "uniform weights are the mean loss"
    );
    assert_eq!(losses, model.token_losses(&batch).unwrap());
    let err = model
        .weighted_loss_and_grads(&batch, &mut by_weights, &uniform[1..], false)
        .unwrap_err();
    assert!(err.to_string().contains("token weights"), "{err}");

    let weights: Vec<f32> = (0..tokens).map(|i| 0.3 * (i as f32 - 4.0)).collect();
    let mut grads = model.zero_grads().unwrap();
    model
        .weighted_loss_and_grads(&batch, &mut grads, &weights, true)
        .unwrap();
    let weighted = |p: &Params<Vec<f32>>| {
        let model = Model::from_host(config.clone(), p, CpuBackend).unwrap();
        let losses = model.token_losses(&batch).unwrap();
        losses
            .iter()
            .zip(&weights)
            .map(|(l, w)| f64::from(l * w))
            .sum::<f64>()
    };
    let check = GradientCheck {
        eps: 2e-3,
        picks: 4,
        offset: 29,
        abs: 2e-3,
        rel: 2e-2,
    };
    assert_gradient(
        "weighted loss",
        model.layout(),
        &host,
        &grads,
        weighted,
        check,
    );
}
