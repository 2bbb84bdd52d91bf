//! `Trainer::step` on `HostParams`: parameter groups, what a step reports, its errors, and the
//! configuration.

use lmsi_adamw::{
    AdamWConfig, AdamWError, HostParams, LrSchedule, ScheduleKind, TensorInfo, Trainable, Trainer,
    TrainerConfig, adamw_update,
};

type Grads = Vec<Vec<f32>>;

/// Tensor `a` of 3 and tensor `b` of 2, with the given decay flags.
fn model(decay_a: bool, decay_b: bool) -> HostParams {
    HostParams::new(vec![
        (TensorInfo::new("a", vec![3], decay_a), vec![1.0, -1.0, 0.5]),
        (TensorInfo::new("b", vec![2], decay_b), vec![2.0, 0.25]),
    ])
    .unwrap()
}

fn grads(step: u64) -> Grads {
    let s = step as f32;
    vec![
        vec![0.5 - 0.1 * s, -0.25 * s, 0.125],
        vec![0.75, -0.5 + 0.2 * s],
    ]
}

fn config(weight_decay: f32, lr: f32) -> TrainerConfig {
    TrainerConfig {
        adamw: AdamWConfig {
            weight_decay,
            ..AdamWConfig::default()
        },
        schedule: LrSchedule::constant(lr),
        max_grad_norm: None,
        decay_all: false,
    }
}

/// Adds `g` into `grads`, as a backward pass does.
fn add(grads: &mut Grads, g: &Grads) {
    for (out, g) in grads.iter_mut().zip(g) {
        out.iter_mut().zip(g).for_each(|(out, g)| *out += g);
    }
}

/// Steps `steps` with the gradients of `grads(step)`, in one micro-batch.
fn train(trainer: &mut Trainer<HostParams>, model: &mut HostParams, steps: std::ops::Range<u64>) {
    for step in steps {
        trainer
            .step(model, [grads(step)], |_, g, out| {
                add(out, &g);
                Ok(0.0)
            })
            .unwrap();
    }
}

/// `steps` steps of `adamw_update` on each tensor of `model` with `decay[t]`, at rate `lr`.
fn by_hand(model: HostParams, config: AdamWConfig, lr: f32, decay: [bool; 2], steps: u64) -> Grads {
    let mut values = model.into_values();
    for (t, p) in values.iter_mut().enumerate() {
        let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
        for step in 1..=steps {
            let params = config.step_params(lr, step, decay[t]);
            adamw_update(p, &grads(step)[t], &mut m, &mut v, &params);
        }
    }
    values
}

#[test]
fn decay_flags_select_the_weight_decay_per_tensor() {
    let config = config(0.5, 0.1);
    let mut trained = model(false, true);
    let mut trainer = Trainer::new(&trained, config).unwrap();
    train(&mut trainer, &mut trained, 1..3);
    let want = by_hand(model(false, true), config.adamw, 0.1, [false, true], 2);
    assert_eq!(trained.values(), want);
    // The flags matter: decaying both gives other values.
    assert_ne!(
        want,
        by_hand(model(false, true), config.adamw, 0.1, [true, true], 2)
    );
}

#[test]
fn decay_all_decays_every_tensor() {
    let config = TrainerConfig {
        decay_all: true,
        ..config(0.5, 0.1)
    };
    let mut trained = model(false, true);
    let mut trainer = Trainer::new(&trained, config).unwrap();
    train(&mut trainer, &mut trained, 1..3);
    let want = by_hand(model(false, true), config.adamw, 0.1, [true, true], 2);
    assert_eq!(trained.values(), want);
}

#[test]
fn a_zero_gradient_only_decays_the_weights() {
    let mut params = HostParams::new(vec![
        (TensorInfo::new("w", vec![2], true), vec![1.0, -2.0]),
        (TensorInfo::new("bias", vec![1], false), vec![4.0]),
    ])
    .unwrap();
    let mut trainer = Trainer::new(&params, config(0.5, 0.1)).unwrap();
    trainer.step(&mut params, [()], |_, (), _| Ok(0.0)).unwrap();
    assert_eq!(params.into_values(), [vec![0.95, -1.9], vec![4.0]]);
}

#[test]
fn a_step_reports_its_number_rate_loss_and_norm() {
    let schedule = LrSchedule::new(ScheduleKind::Linear, 0.01, 2, 4);
    let config = TrainerConfig {
        schedule,
        ..config(0.0, 0.0)
    };
    let mut params = model(true, false);
    let mut trainer = Trainer::new(&params, config).unwrap();
    assert_eq!((trainer.step_count(), trainer.config()), (0, &config));
    for step in 1..=5 {
        // Three micro-batches whose losses add up to the step's.
        let stats = trainer
            .step(&mut params, [0.5, 0.25, 2.0], |_, loss, out| {
                out[1][0] += 1.0;
                out[0][2] += 1.0;
                Ok(loss * step as f64)
            })
            .unwrap();
        assert_eq!(stats.step, step);
        assert_eq!(stats.lr, schedule.lr(step));
        assert_eq!(stats.loss, 2.75 * step as f64);
        // Three micro-batches of 1 in two elements: sqrt(9 + 9).
        assert_eq!(stats.grad_norm, 18f64.sqrt());
        assert_eq!(trainer.step_count(), step);
    }
}

#[test]
fn every_step_starts_from_zero_gradients() {
    let mut params = model(true, false);
    let mut trainer = Trainer::new(&params, config(0.1, 0.01)).unwrap();
    for step in 1..4 {
        trainer
            .step(&mut params, [step], |_, step, out| {
                assert!(
                    out.iter().flatten().all(|&g| g == 0.0),
                    "step {step}: {out:?}"
                );
                add(out, &grads(step));
                Ok(0.0)
            })
            .unwrap();
    }
    assert_eq!(
        params.into_values(),
        by_hand(
            model(true, false),
            config(0.1, 0.01).adamw,
            0.01,
            [true, false],
            3
        )
    );
}

#[test]
fn shape_errors_name_the_tensor() {
    let err = HostParams::new(vec![
        (TensorInfo::new("a", vec![3], true), vec![0.0; 3]),
        (TensorInfo::new("b", vec![2, 2], false), vec![0.0; 3]),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        AdamWError::Shape {
            tensor: 1,
            expected: 4,
            got: 3
        }
    );
    assert_eq!(err.to_string(), "tensor 1: expected 4 elements, got 3");

    // HostParams' own update checks the index and the lengths, and changes nothing on error.
    let mut params = model(true, true);
    let s = AdamWConfig::default().step_params(0.1, 1, true).scalars();
    let (g, mut m, mut v) = (vec![1.0; 2], vec![0.0; 2], vec![0.0; 2]);
    let (mut short, mut long) = (vec![0.0; 1], vec![0.0; 3]);
    assert_eq!(
        params.adamw_update(2, &g, &mut m, &mut v, &s),
        Err(AdamWError::Count {
            expected: 2,
            got: 3
        })
    );
    let shape = |got| AdamWError::Shape {
        tensor: 1,
        expected: 2,
        got,
    };
    assert_eq!(
        params.adamw_update(1, &g[..1].to_vec(), &mut m, &mut v, &s),
        Err(shape(1))
    );
    assert_eq!(
        params.adamw_update(1, &g, &mut short, &mut v, &s),
        Err(shape(1))
    );
    assert_eq!(
        params.adamw_update(1, &g, &mut m, &mut long, &s),
        Err(shape(3))
    );
    assert_eq!(params, model(true, true));
    assert_eq!((m, v), (vec![0.0; 2], vec![0.0; 2]));
}

#[test]
fn a_failing_backward_changes_nothing() {
    let mut params = model(true, false);
    let mut trainer = Trainer::new(&params, config(0.1, 0.01)).unwrap();
    let failure = AdamWError::Shape {
        tensor: 9,
        expected: 1,
        got: 2,
    };
    // The second micro-batch fails after the first has added its gradient.
    let err = trainer
        .step(&mut params, [true, false], |_, ok, out| {
            add(out, &grads(7));
            if ok { Ok(1.0) } else { Err(failure.clone()) }
        })
        .unwrap_err();
    assert_eq!(err, failure);
    assert_eq!(trainer.step_count(), 0);
    assert_eq!(params, model(true, false));
    // The next steps are those of a trainer that never saw the failure.
    train(&mut trainer, &mut params, 1..3);
    assert_eq!(
        params.into_values(),
        by_hand(
            model(true, false),
            config(0.1, 0.01).adamw,
            0.01,
            [true, false],
            2
        )
    );
}

#[test]
fn gradients_of_another_count_or_size_are_refused_and_change_nothing() {
    let shrink: fn(&mut Grads) = |g| g.truncate(1);
    let grow: fn(&mut Grads) = |g| g.push(vec![1.0]);
    let resize: fn(&mut Grads) = |g| g[1].push(1.0);
    let cases = [
        (
            shrink,
            AdamWError::Count {
                expected: 2,
                got: 1,
            },
        ),
        (
            grow,
            AdamWError::Count {
                expected: 2,
                got: 3,
            },
        ),
        (
            resize,
            AdamWError::Shape {
                tensor: 1,
                expected: 2,
                got: 3,
            },
        ),
    ];
    for (damage, want) in cases {
        let mut params = model(true, false);
        let mut trainer = Trainer::new(&params, config(0.1, 0.01)).unwrap();
        let err = trainer
            .step(&mut params, [()], |_, (), out| {
                add(out, &grads(1));
                damage(out);
                Ok(0.0)
            })
            .unwrap_err();
        assert_eq!(err, want);
        assert_eq!((trainer.step_count(), &params), (0, &model(true, false)));
        // The trainer's gradients are whole again: the next steps are an untroubled run's.
        train(&mut trainer, &mut params, 1..3);
        let want = by_hand(
            model(true, false),
            config(0.1, 0.01).adamw,
            0.01,
            [true, false],
            2,
        );
        assert_eq!(params.into_values(), want);
    }
}

#[test]
fn a_non_finite_gradient_is_refused_and_changes_nothing() {
    let config = TrainerConfig {
        max_grad_norm: Some(1.0),
        ..config(0.1, 0.01)
    };
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut params = model(true, false);
        let mut trainer = Trainer::new(&params, config).unwrap();
        train(&mut trainer, &mut params, 1..2);
        let (after_one, saved) = (params.clone(), trainer.save_state(&params).unwrap());
        let err = trainer
            .step(&mut params, [()], |_, (), out| {
                add(out, &grads(2));
                out[1][1] = bad;
                Ok(0.0)
            })
            .unwrap_err();
        match err {
            AdamWError::NonFiniteGradient { step: 2, norm } => {
                assert_eq!(norm.is_nan(), bad.is_nan(), "{bad}: norm {norm}");
                assert!(!norm.is_finite());
            }
            e => panic!("{bad}: expected NonFiniteGradient at step 2, got {e:?}"),
        }
        assert_eq!(trainer.step_count(), 1);
        assert_eq!(params, after_one);
        assert_eq!(
            Trainer::resume(&params, config, &saved)
                .unwrap()
                .step_count(),
            1
        );
        // The moments are untouched: the next step is the one an unbroken run takes.
        train(&mut trainer, &mut params, 2..3);
        let mut straight = model(true, false);
        let mut other = Trainer::new(&straight, config).unwrap();
        train(&mut other, &mut straight, 1..3);
        assert_eq!(params, straight, "{bad}");
    }
    let err = AdamWError::NonFiniteGradient {
        step: 4,
        norm: f64::INFINITY,
    };
    assert_eq!(err.to_string(), "step 4: the gradient norm is inf");
}

#[test]
fn bad_configs_are_rejected() {
    let good = config(0.01, 1e-3);
    let adamw = |f: fn(&mut AdamWConfig)| {
        let mut c = good;
        f(&mut c.adamw);
        c
    };
    let schedule = |f: fn(&mut LrSchedule)| {
        let mut c = good;
        f(&mut c.schedule);
        c
    };
    let clip = |max| TrainerConfig {
        max_grad_norm: Some(max),
        ..good
    };
    let bad = [
        ("beta1", adamw(|c| c.beta1 = 1.0)),
        ("beta1", adamw(|c| c.beta1 = -0.1)),
        ("beta2", adamw(|c| c.beta2 = -0.1)),
        ("beta2", adamw(|c| c.beta2 = f32::NAN)),
        ("eps", adamw(|c| c.eps = f32::NAN)),
        ("eps", adamw(|c| c.eps = f32::INFINITY)),
        ("weight_decay", adamw(|c| c.weight_decay = -1.0)),
        ("base_lr", schedule(|s| s.base_lr = f32::NAN)),
        ("base_lr", schedule(|s| s.base_lr = -1e-3)),
        ("base_lr", schedule(|s| s.base_lr = f32::INFINITY)),
        ("min_lr_ratio", schedule(|s| s.min_lr_ratio = 1.5)),
        ("max_grad_norm", clip(0.0)),
        ("max_grad_norm", clip(-1.0)),
        ("max_grad_norm", clip(f64::NAN)),
        ("max_grad_norm", clip(f64::INFINITY)),
    ];
    let params = model(true, false);
    for (name, config) in bad {
        match Trainer::new(&params, config) {
            Err(AdamWError::Hyperparameter { name: n, .. }) if n == name => {}
            Err(e) => panic!("{name}: {config:?} gave {e:?}"),
            Ok(_) => panic!("{name}: {config:?} was accepted"),
        }
        assert_eq!(
            config.validate().unwrap_err().to_string().split(' ').next(),
            Some(name)
        );
    }
    assert!(Trainer::new(&params, good).is_ok());
    assert!(Trainer::new(&params, clip(1e-3)).is_ok());

    let p = AdamWConfig::default().step_params(0.1, 0, true);
    assert!(matches!(
        p.validate(),
        Err(AdamWError::Hyperparameter { name: "step", .. })
    ));
    assert!(
        AdamWConfig::default()
            .step_params(0.1, 1, true)
            .validate()
            .is_ok()
    );
}

#[test]
fn config_defaults_to_pytorch_and_round_trips_through_serde() {
    let d = AdamWConfig::default();
    assert_eq!(
        (d.beta1, d.beta2, d.eps, d.weight_decay),
        (0.9, 0.999, 1e-8, 0.01)
    );
    assert_eq!(serde_json::from_str::<AdamWConfig>("{}").unwrap(), d);
    let c: AdamWConfig = serde_json::from_str(r#"{"weight_decay": 0.0, "beta2": 0.95}"#).unwrap();
    assert_eq!(
        c,
        AdamWConfig {
            weight_decay: 0.0,
            beta2: 0.95,
            ..d
        }
    );
    assert_eq!(
        serde_json::from_str::<AdamWConfig>(&serde_json::to_string(&c).unwrap()).unwrap(),
        c
    );

    // The trainer's configuration, which a state file records, round trips exactly.
    let t = TrainerConfig {
        adamw: c,
        schedule: LrSchedule {
            min_lr_ratio: 0.1,
            ..LrSchedule::new(ScheduleKind::Cosine, 3e-4, 100, 10_000)
        },
        max_grad_norm: Some(0.7),
        decay_all: true,
    };
    for t in [
        t,
        TrainerConfig {
            max_grad_norm: None,
            ..t
        },
    ] {
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            serde_json::from_str::<TrainerConfig>(&json).unwrap(),
            t,
            "{json}"
        );
    }
}
