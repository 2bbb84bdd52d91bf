//! `AdamW`: checks, parameter groups, checkpoints and configuration.

use lmsi_adamw::{AdamW, AdamWConfig, AdamWError, adamw_update};

fn grads(step: u64) -> (Vec<f32>, Vec<f32>) {
    let s = step as f32;
    (
        vec![0.5 - 0.1 * s, -0.25 * s, 0.125],
        vec![0.75, -0.5 + 0.2 * s],
    )
}

/// Runs `steps` steps of the two-tensor problem from `opt`'s state.
fn train(opt: &mut AdamW, a: &mut [f32], b: &mut [f32], steps: std::ops::Range<u64>) {
    for step in steps {
        let (ga, gb) = grads(step);
        opt.step(&mut [a, b], &[&ga, &gb], &[true, false], 0.01 / step as f32)
            .unwrap();
    }
}

#[test]
fn resuming_from_a_checkpoint_continues_bit_for_bit() {
    let config = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let (mut a, mut b) = (vec![1.0f32, -1.0, 0.5], vec![2.0f32, 0.25]);
    let (mut a2, mut b2) = (a.clone(), b.clone());

    let mut straight = AdamW::new(config, &[3, 2]);
    train(&mut straight, &mut a, &mut b, 1..6);

    let mut first = AdamW::new(config, &[3, 2]);
    train(&mut first, &mut a2, &mut b2, 1..3);
    let (step, moments) = first.clone().into_state();
    assert_eq!(
        (step, moments.as_slice()),
        (first.step_count(), first.moments())
    );
    let mut resumed = AdamW::from_state(config, step, moments);
    train(&mut resumed, &mut a2, &mut b2, 3..6);

    assert_eq!((a, b), (a2, b2));
    assert_eq!(resumed, straight);
    assert_eq!(resumed.step_count(), 5);
}

#[test]
fn decay_flags_select_the_weight_decay_per_tensor() {
    let config = AdamWConfig {
        weight_decay: 0.5,
        ..AdamWConfig::default()
    };
    let (mut a, mut b) = (vec![1.0f32, -1.0, 0.5], vec![2.0f32, 0.25]);
    let (mut a2, mut b2) = (a.clone(), b.clone());
    let mut opt = AdamW::new(config, &[3, 2]);
    let (ga, gb) = grads(1);
    opt.step(&mut [&mut a, &mut b], &[&ga, &gb], &[false, true], 0.1)
        .unwrap();

    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    adamw_update(
        &mut a2,
        &ga,
        &mut m,
        &mut v,
        &config.step_params(0.1, 1, false),
    );
    let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
    adamw_update(
        &mut b2,
        &gb,
        &mut m,
        &mut v,
        &config.step_params(0.1, 1, true),
    );
    assert_eq!((a, b), (a2, b2));
}

#[test]
fn a_zero_gradient_only_decays_the_weights() {
    let config = AdamWConfig {
        weight_decay: 0.5,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(config, &[2, 1]);
    let (mut a, mut b) = (vec![1.0f32, -2.0], vec![4.0f32]);
    opt.step(
        &mut [&mut a, &mut b],
        &[&[0.0, 0.0], &[0.0]],
        &[true, false],
        0.1,
    )
    .unwrap();
    assert_eq!((a, b), (vec![0.95, -1.9], vec![4.0]));
}

#[test]
fn errors_name_the_tensor_and_change_nothing() {
    let mut opt = AdamW::new(AdamWConfig::default(), &[3, 2]);
    let (mut a, mut b, mut short) = (vec![1.0f32; 3], vec![1.0f32; 2], vec![1.0f32; 1]);
    let (ga, gb) = grads(1);
    let cases: Vec<(AdamWError, Result<(), AdamWError>)> = vec![
        (
            AdamWError::Count {
                expected: 2,
                got: 1,
            },
            opt.step(&mut [&mut a], &[&ga, &gb], &[true, true], 0.1),
        ),
        (
            AdamWError::Count {
                expected: 2,
                got: 1,
            },
            opt.step(&mut [&mut a, &mut b], &[&ga], &[true, true], 0.1),
        ),
        (
            AdamWError::Count {
                expected: 2,
                got: 3,
            },
            opt.step(&mut [&mut a, &mut b], &[&ga, &gb], &[true, true, true], 0.1),
        ),
        (
            AdamWError::Shape {
                tensor: 1,
                expected: 2,
                got: 1,
            },
            opt.step(&mut [&mut a, &mut short], &[&ga, &gb], &[true, true], 0.1),
        ),
        (
            AdamWError::Shape {
                tensor: 1,
                expected: 2,
                got: 3,
            },
            opt.step(&mut [&mut a, &mut b], &[&ga, &ga], &[true, true], 0.1),
        ),
    ];
    for (want, got) in cases {
        assert_eq!(got, Err(want));
    }
    for lr in [-0.1, f32::NAN, f32::INFINITY] {
        let err = opt
            .step(&mut [&mut a, &mut b], &[&ga, &gb], &[true, true], lr)
            .unwrap_err();
        assert!(
            matches!(err, AdamWError::Hyperparameter { name: "lr", .. }),
            "{err}"
        );
    }
    assert_eq!(opt, AdamW::new(AdamWConfig::default(), &[3, 2]));
    assert_eq!((a, b), (vec![1.0; 3], vec![1.0; 2]));
    assert_eq!(
        AdamWError::Shape {
            tensor: 4,
            expected: 2,
            got: 3
        }
        .to_string(),
        "tensor 4: expected 2 elements, got 3"
    );
}

#[test]
fn damaged_moments_and_bad_configs_are_rejected() {
    let mut opt = AdamW::from_state(
        AdamWConfig::default(),
        7,
        vec![(vec![0.0; 2], vec![0.0; 3])],
    );
    let err = opt
        .step(&mut [&mut [0.0; 2]], &[&[0.0; 2]], &[true], 0.1)
        .unwrap_err();
    assert_eq!(
        err,
        AdamWError::Moments {
            tensor: 0,
            m: 2,
            v: 3
        }
    );
    assert_eq!(opt.step_count(), 7);

    let bad = [
        (
            "beta1",
            AdamWConfig {
                beta1: 1.0,
                ..AdamWConfig::default()
            },
        ),
        (
            "beta2",
            AdamWConfig {
                beta2: -0.1,
                ..AdamWConfig::default()
            },
        ),
        (
            "eps",
            AdamWConfig {
                eps: f32::NAN,
                ..AdamWConfig::default()
            },
        ),
        (
            "weight_decay",
            AdamWConfig {
                weight_decay: -1.0,
                ..AdamWConfig::default()
            },
        ),
    ];
    for (name, config) in bad {
        let mut opt = AdamW::new(AdamWConfig::default(), &[1]);
        opt.set_config(config);
        assert_eq!(format!("{:?}", opt.config()), format!("{config:?}")); // NaN != NaN
        let err = opt
            .step(&mut [&mut [0.0]], &[&[1.0]], &[true], 0.1)
            .unwrap_err();
        assert!(
            matches!(err, AdamWError::Hyperparameter { name: n, .. } if n == name),
            "{err}"
        );
        assert_eq!(opt.step_count(), 0);
    }
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
}
