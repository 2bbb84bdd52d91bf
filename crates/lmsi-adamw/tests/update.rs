//! `adamw_update` and `Trainer::step` against PyTorch, and the properties of the update.

use lmsi_adamw::{
    AdamWConfig, HostParams, LrSchedule, ScheduleKind, StepParams, TensorInfo, Trainer,
    TrainerConfig, adamw_update, widen,
};
use proptest::prelude::*;
use safetensors::SafeTensors;

fn assert_close(got: &[f32], want: &[f64], rel: f64, abs: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= abs + rel * w.abs(),
            "{what}[{i}]: got {g}, want {w} (error {err:e})"
        );
    }
}

/// Three steps of two tensors, one with weight decay 0.1 and one with none, at learning rates
/// 0.01, 0.02 and 0.005, betas (0.9, 0.999), eps 1e-8.
///
/// The expected values were computed with PyTorch 2.15.0 (CPU, float32 tensors):
/// `torch.optim.AdamW([{"params": [a], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
/// betas=(0.9, 0.999), eps=1e-8, foreach=False, fused=False)`, setting each group's `lr` before each
/// `opt.step()`, and printing `p`, `state["exp_avg"]` and `state["exp_avg_sq"]` after each step.
/// Most values agree bit for bit; PyTorch's vectorized loops may fuse or reorder some operations,
/// and the worst case seen is 4.6 ulps (a first moment that cancels to -0.003), so the tolerance
/// is 1e-6 relative for the moments and 2 ulps for the parameters.
#[test]
fn three_steps_match_pytorch() {
    let lrs = [0.01f32, 0.02, 0.005];
    let grads_a: [[f32; 5]; 3] = [
        [0.1, -0.2, 0.3, -0.4, 1.5],
        [0.05, 0.1, -0.3, 0.0, 1.0],
        [-0.2, 0.15, 0.25, 0.5, -2.0],
    ];
    let grads_b: [[f32; 3]; 3] = [[1.0, -0.5, 0.02], [-0.3, 0.25, 0.04], [0.7, 0.0, -0.01]];
    #[rustfmt::skip]
    let want_a: [[[f64; 5]; 3]; 3] = [
        [
            [0.4895000159740448, -1.2387499809265137, 1.9880000352859497, 0.010000000707805157, -0.041218750178813934],
            [0.010000000707805157, -0.020000001415610313, 0.030000001192092896, -0.04000000283122063, 0.15000000596046448],
            [1.0000000656873453e-05, 4.0000002627493814e-05, 9.000000864034519e-05, 0.00016000001050997525, 0.0022499999031424522],
        ],
        [
            [0.4698774516582489, -1.2309457063674927, 1.985076665878296, 0.02338116616010666, -0.06054335832595825],
            [0.014000000432133675, -0.00800000037997961, -0.003000000724568963, -0.036000002175569534, 0.23500001430511475],
            [1.2490000699472148e-05, 4.996000279788859e-05, 0.00017991001368500292, 0.00015984001220203936, 0.0032477499917149544],
        ],
        [
            [0.4706742763519287, -1.231256127357483, 1.9826369285583496, 0.02249119244515896, -0.060649555176496506],
            [-0.007400000002235174, 0.007800000719726086, 0.022299999371170998, 0.01759999990463257, 0.011499997228384018],
            [5.2477513236226514e-05, 7.24100464140065e-05, 0.00024223010404966772, 0.0004096801858395338, 0.007244502194225788],
        ],
    ];
    #[rustfmt::skip]
    let want_b: [[[f64; 3]; 3]; 3] = [
        [
            [1.4900000095367432, -0.7400000095367432, 0.24000000953674316],
            [0.10000000149011612, -0.05000000074505806, 0.0020000000949949026],
            [0.0010000000474974513, 0.0002500000118743628, 4.0000000467443897e-07],
        ],
        [
            [1.4814430475234985, -0.734673261642456, 0.2206963747739792],
            [0.05999999865889549, -0.019999999552965164, 0.005799999926239252],
            [0.0010890000266954303, 0.0003122500202152878, 1.9996000446553808e-06],
        ],
        [
            [1.47829008102417, -0.7336438894271851, 0.2177533358335495],
            [0.12399999797344208, -0.017999999225139618, 0.004220000002533197],
            [0.001577911083586514, 0.0003119377652183175, 2.0976005998818437e-06],
        ],
    ];

    let config = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    // The rates 0.01, 0.02, 0.005 as a schedule: warm-up to 0.02 at step 2, then linear decay to
    // 0.25 of it at step 3.
    let schedule = LrSchedule {
        min_lr_ratio: 0.25,
        ..LrSchedule::new(ScheduleKind::Linear, 0.02, 2, 3)
    };
    let trainer_config = TrainerConfig {
        adamw: config,
        schedule,
        max_grad_norm: None,
        decay_all: false,
    };
    // The same run twice: tensor by tensor with `adamw_update`, and through `Trainer::step`.
    let (mut a, mut b) = (
        vec![0.5f32, -1.25, 2.0, 0.0, -0.03125],
        vec![1.5f32, -0.75, 0.25],
    );
    let (mut ma, mut va, mut mb, mut vb) = (vec![0.0; 5], vec![0.0; 5], vec![0.0; 3], vec![0.0; 3]);
    let mut model = HostParams::new(vec![
        (TensorInfo::new("a", vec![5], true), a.clone()),
        (TensorInfo::new("b", vec![3], false), b.clone()),
    ])
    .unwrap();
    let mut trainer = Trainer::new(&model, trainer_config).unwrap();
    for k in 0..3 {
        let step = k as u64 + 1;
        adamw_update(
            &mut a,
            &grads_a[k],
            &mut ma,
            &mut va,
            &config.step_params(lrs[k], step, true),
        );
        adamw_update(
            &mut b,
            &grads_b[k],
            &mut mb,
            &mut vb,
            &config.step_params(lrs[k], step, false),
        );
        let stats = trainer
            .step(&mut model, [()], |_, (), g| {
                g[0].copy_from_slice(&grads_a[k]);
                g[1].copy_from_slice(&grads_b[k]);
                Ok(0.0)
            })
            .unwrap();
        assert_eq!((stats.step, stats.lr), (step, lrs[k]));

        let what = |t: &str, x: &str| format!("step {step} tensor {t} {x}");
        assert_close(&a, &want_a[k][0], 2.4e-7, 1e-9, &what("a", "param"));
        assert_close(&ma, &want_a[k][1], 1e-6, 1e-10, &what("a", "m"));
        assert_close(&va, &want_a[k][2], 1e-6, 1e-14, &what("a", "v"));
        assert_close(&b, &want_b[k][0], 2.4e-7, 1e-9, &what("b", "param"));
        assert_close(&mb, &want_b[k][1], 1e-6, 1e-10, &what("b", "m"));
        assert_close(&vb, &want_b[k][2], 1e-6, 1e-14, &what("b", "v"));

        // The trainer is the per-tensor update, bit for bit, in its parameters and its moments.
        assert_eq!(model.values(), [a.clone(), b.clone()]);
        let state = trainer.save_state(&model).unwrap();
        let file = SafeTensors::deserialize(&state).unwrap();
        for (name, want) in [
            ("a.exp_avg", &ma),
            ("a.exp_avg_sq", &va),
            ("b.exp_avg", &mb),
            ("b.exp_avg_sq", &vb),
        ] {
            let got: Vec<f32> = file
                .tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect();
            assert_eq!(&got, want, "step {step} {name}");
        }
    }
    assert_eq!(trainer.step_count(), 3);
}

/// The per-element formula written out separately, in `f64`, for one step from non-zero moments.
#[test]
fn update_follows_the_formula() {
    let p = StepParams {
        lr: 3e-3,
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
        weight_decay: 0.2,
        step: 7,
    };
    let (p0, g, m0, v0) = (0.75f32, -0.375f32, 0.125f32, 0.0625f32);
    let (mut param, mut m, mut v) = ([p0], [m0], [v0]);
    adamw_update(&mut param, &[g], &mut m, &mut v, &p);

    let (lr, b1, b2) = (f64::from(p.lr), f64::from(p.beta1), f64::from(p.beta2));
    let (p0, g, m0, v0) = (f64::from(p0), f64::from(g), f64::from(m0), f64::from(v0));
    let m1 = b1 * m0 + (1.0 - b1) * g;
    let v1 = b2 * v0 + (1.0 - b2) * g * g;
    let denom = v1.sqrt() / (1.0 - b2.powi(7)).sqrt() + f64::from(p.eps);
    let p1 = p0 * (1.0 - lr * f64::from(p.weight_decay)) - lr / (1.0 - b1.powi(7)) * m1 / denom;
    assert_close(&m, &[m1], 1e-6, 0.0, "m");
    assert_close(&v, &[v1], 1e-6, 0.0, "v");
    assert_close(&param, &[p1], 1e-6, 0.0, "param");
}

#[test]
fn zero_weight_decay_leaves_decay_factor_one() {
    let s = AdamWConfig::default().step_params(0.1, 1, false).scalars();
    assert_eq!(s.decay, 1.0);
    let s = AdamWConfig::default().step_params(0.1, 1, true).scalars();
    assert_eq!(s.decay, (1.0 - 0.1f64 * f64::from(0.01f32)) as f32);
}

#[test]
fn hyperparameters_widen_to_the_decimal_they_were_written_as() {
    assert_eq!(
        (widen(0.999), widen(0.9), widen(1e-8), widen(5e-5)),
        (0.999, 0.9, 1e-8, 5e-5)
    );
    assert_eq!(widen(f32::INFINITY), f64::INFINITY);
    assert!(widen(f32::NAN).is_nan());
    // So 1 - beta2 is PyTorch's 0.001, not the 0.000999987 of the f32 nearest 0.999.
    let s = AdamWConfig::default().step_params(1e-3, 1, true).scalars();
    assert_eq!((s.one_minus_beta1, s.one_minus_beta2), (0.1, 0.001));
    assert_eq!(
        (s.step_size, s.bias_correction2_sqrt),
        ((1e-3 / (1.0 - 0.9)) as f32, 0.001f64.sqrt() as f32)
    );
}

#[test]
#[should_panic(expected = "param has 2 elements")]
fn mismatched_lengths_panic() {
    let p = AdamWConfig::default().step_params(1e-3, 1, true);
    adamw_update(&mut [0.0; 2], &[0.0; 3], &mut [0.0; 2], &mut [0.0; 2], &p);
}

proptest! {
    /// Bias correction makes the first step `lr · sign(g)` for every element (plus the decay of
    /// the parameter), whatever the gradient's magnitude, as long as it dwarfs `eps`.
    #[test]
    fn first_step_moves_by_lr_against_the_sign(
        elems in prop::collection::vec((-4.0f32..4.0, 1e-3f32..100.0, any::<bool>()), 1..64),
        lr in 1e-4f32..0.1,
        wd in 0.0f32..0.1,
        beta1 in 0.5f32..0.99,
        beta2 in 0.9f32..0.9999,
    ) {
        let mut param: Vec<f32> = elems.iter().map(|e| e.0).collect();
        let grad: Vec<f32> = elems.iter().map(|&(_, g, neg)| if neg { -g } else { g }).collect();
        let (mut m, mut v) = (vec![0.0; grad.len()], vec![0.0; grad.len()]);
        let p = StepParams { lr, beta1, beta2, eps: 1e-8, weight_decay: wd, step: 1 };
        adamw_update(&mut param, &grad, &mut m, &mut v, &p);
        for ((&(p0, _, _), &g), &p1) in elems.iter().zip(&grad).zip(&param) {
            let want = f64::from(p0) * (1.0 - f64::from(lr) * f64::from(wd))
                - f64::from(lr) * f64::from(g.signum());
            // eps/|g| <= 1e-5 relative to lr, plus a few f32 roundings of the parameter.
            let scale = f64::from(p0.abs()).max(want.abs());
            let tol = 2e-5 * f64::from(lr) + 4.0 * f64::from(f32::EPSILON) * scale;
            prop_assert!((f64::from(p1) - want).abs() <= tol, "p0 {} g {} -> {} want {}", p0, g, p1, want);
        }
    }
}
