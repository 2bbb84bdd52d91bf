//! `Trainer::save_state` and `Trainer::resume`: the file's layout, resuming bit for bit, and the
//! files a run must refuse.

use std::collections::{BTreeMap, HashMap};

use lmsi_adamw::{
    AdamWConfig, AdamWError, HostParams, LrSchedule, ScheduleKind, TensorInfo, Trainable, Trainer,
    TrainerConfig, adamw_update,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Two tensors: `a` (decayed) and `b` (not), of the given shapes.
fn two_tensors(shape_a: Vec<usize>, shape_b: Vec<usize>) -> HostParams {
    let values = |shape: &[usize], offset: f32| {
        let n: usize = shape.iter().product();
        (0..n).map(|i| offset - 0.25 * i as f32).collect()
    };
    HostParams::new(vec![
        (
            TensorInfo::new("a", shape_a.clone(), true),
            values(&shape_a, 1.0),
        ),
        (
            TensorInfo::new("b", shape_b.clone(), false),
            values(&shape_b, 2.0),
        ),
    ])
    .unwrap()
}

fn small() -> HostParams {
    two_tensors(vec![3], vec![2])
}

fn config() -> TrainerConfig {
    TrainerConfig {
        adamw: AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        },
        schedule: LrSchedule::new(ScheduleKind::Cosine, 0.01, 2, 6),
        max_grad_norm: Some(0.5),
        decay_all: false,
    }
}

/// Step `step`'s gradient of every tensor, large enough that clipping at 0.5 takes part.
fn gradient(info: &[TensorInfo], step: u64) -> Vec<Vec<f32>> {
    let s = step as f32;
    info.iter()
        .enumerate()
        .map(|(t, info)| {
            (0..info.numel())
                .map(|i| 0.5 - 0.1 * s * (i as f32 + 1.0) + 0.125 * t as f32)
                .collect()
        })
        .collect()
}

/// Takes steps `steps` of the problem, in two micro-batches of half the gradient each.
fn train(trainer: &mut Trainer<HostParams>, model: &mut HostParams, steps: std::ops::Range<u64>) {
    for step in steps {
        let want = gradient(&model.tensor_info(), step);
        let stats = trainer
            .step(model, [0.5f32, 0.5], |_, share, grads| {
                for (g, w) in grads.iter_mut().zip(&want) {
                    g.iter_mut().zip(w).for_each(|(g, w)| *g += share * w);
                }
                Ok(1.0)
            })
            .unwrap();
        assert_eq!((stats.step, stats.loss), (step, 2.0));
    }
}

/// What a state file holds, independent of how its header is laid out: the metadata, and every
/// tensor's dtype, shape and bytes, by name.
type Contents = (
    BTreeMap<String, String>,
    BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
);

fn contents(bytes: &[u8]) -> Contents {
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let metadata = header.metadata().clone().unwrap().into_iter().collect();
    let file = SafeTensors::deserialize(bytes).unwrap();
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    (metadata, tensors)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A state file's metadata, as `(key, value)` pairs.
type Metadata<'a> = [(&'a str, &'a str)];

/// A safetensors file of `tensors` and `metadata`.
fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], metadata: &Metadata) -> Vec<u8> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (*name, TensorView::new(*dtype, shape.clone(), data).unwrap())
        })
        .collect::<Vec<_>>();
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(metadata)).unwrap()
}

/// Resuming `model` from `bytes` fails with an `AdamWError::State` whose message says `says`.
fn assert_refused(model: &HostParams, config: TrainerConfig, bytes: &[u8], says: &[&str]) {
    let message = match Trainer::resume(model, config, bytes) {
        Err(AdamWError::State(message)) => message,
        Err(e) => panic!("expected AdamWError::State, got {e:?}"),
        Ok(_) => panic!("resumed from a state it should refuse"),
    };
    for s in says {
        assert!(message.contains(s), "{message:?} should say {s:?}");
    }
}

#[test]
fn resuming_from_saved_state_continues_bit_for_bit() {
    let mut straight_model = small();
    let mut straight = Trainer::new(&straight_model, config()).unwrap();
    train(&mut straight, &mut straight_model, 1..6);

    let mut model = small();
    let mut first = Trainer::new(&model, config()).unwrap();
    train(&mut first, &mut model, 1..3);
    let saved = first.save_state(&model).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&model, config(), &saved).unwrap();
    assert_eq!(resumed.step_count(), 2);
    assert_eq!(resumed.config(), &config());
    train(&mut resumed, &mut model, 3..6);

    assert_eq!(model, straight_model);
    assert_eq!(resumed.step_count(), 5);
    assert_eq!(
        contents(&resumed.save_state(&model).unwrap()),
        contents(&straight.save_state(&straight_model).unwrap())
    );
}

#[test]
fn a_fresh_state_resumes_to_a_fresh_trainer() {
    let mut model = small();
    let fresh = Trainer::new(&model, config()).unwrap();
    let mut resumed =
        Trainer::resume(&model, config(), &fresh.save_state(&model).unwrap()).unwrap();
    assert_eq!(resumed.step_count(), 0);
    let mut other = small();
    let mut straight = Trainer::new(&other, config()).unwrap();
    train(&mut resumed, &mut model, 1..3);
    train(&mut straight, &mut other, 1..3);
    assert_eq!(model, other);
}

/// The layout of a Hugging Face optimizer checkpoint: each parameter's `exp_avg` and
/// `exp_avg_sq` in F32 with its shape, the step and the configuration in the metadata.
#[test]
fn the_state_file_holds_the_moments_the_step_and_the_config() {
    let config = TrainerConfig {
        max_grad_norm: None,
        schedule: LrSchedule::constant(0.01),
        ..config()
    };
    let mut model = two_tensors(vec![2, 3], vec![2]);
    let start = model.clone().into_values();
    let mut trainer = Trainer::new(&model, config).unwrap();
    let grads: [Vec<Vec<f32>>; 2] = [
        vec![vec![0.5, -1.0, 0.25, 2.0, 0.0, -0.125], vec![1.5, -0.75]],
        vec![vec![-0.25, 0.5, 1.0, 0.0, 0.75, 0.5], vec![0.25, 1.0]],
    ];
    for g in &grads {
        trainer
            .step(&mut model, [()], |_, (), out| {
                *out = g.clone();
                Ok(0.0)
            })
            .unwrap();
    }
    // The same two steps by hand.
    let mut want = Vec::new();
    for (t, (mut p, decay)) in start.into_iter().zip([true, false]).enumerate() {
        let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
        for (step, g) in (1..).zip(&grads) {
            let params = config.adamw.step_params(0.01, step, decay);
            adamw_update(&mut p, &g[t], &mut m, &mut v, &params);
        }
        want.push((m, v));
    }

    let (metadata, tensors) = contents(&trainer.save_state(&model).unwrap());
    assert_eq!(
        metadata,
        BTreeMap::from([(
            "trainer".to_string(),
            format!(
                r#"{{"step":2,"config":{}}}"#,
                serde_json::to_string(&config).unwrap()
            )
        )])
    );
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["a.exp_avg", "a.exp_avg_sq", "b.exp_avg", "b.exp_avg_sq"]
    );
    for ((name, shape), (m, v)) in [("a", vec![2, 3]), ("b", vec![2])].into_iter().zip(&want) {
        for (suffix, values) in [("exp_avg", m), ("exp_avg_sq", v)] {
            let (dtype, got_shape, data) = &tensors[&format!("{name}.{suffix}")];
            assert_eq!((*dtype, got_shape), (Dtype::F32, &shape), "{name}.{suffix}");
            assert_eq!(&f32s(data), values, "{name}.{suffix}");
        }
    }
}

#[test]
fn another_config_is_refused() {
    let mut model = small();
    let mut trainer = Trainer::new(&model, config()).unwrap();
    train(&mut trainer, &mut model, 1..2);
    let saved = trainer.save_state(&model).unwrap();
    let others = [
        TrainerConfig {
            max_grad_norm: None,
            ..config()
        },
        TrainerConfig {
            decay_all: true,
            ..config()
        },
        TrainerConfig {
            schedule: LrSchedule::new(ScheduleKind::Cosine, 0.01, 2, 7),
            ..config()
        },
        TrainerConfig {
            adamw: AdamWConfig {
                beta2: 0.95,
                ..config().adamw
            },
            ..config()
        },
    ];
    for other in others {
        assert_refused(&model, other, &saved, &["another configuration"]);
    }
}

#[test]
fn a_damaged_or_truncated_file_is_refused() {
    let model = small();
    let saved = Trainer::new(&model, config())
        .unwrap()
        .save_state(&model)
        .unwrap();
    // Cut in the tensors' data, in the header, and before the header's length.
    assert_refused(
        &model,
        config(),
        &saved[..saved.len() - 4],
        &["not a complete safetensors file", "incomplete"],
    );
    assert_refused(&model, config(), &saved[..40], &["header"]);
    assert_refused(&model, config(), &saved[..5], &["header"]);
    assert_refused(&model, config(), b"", &["header"]);
    // A header that is not JSON.
    let mut garbled = saved.clone();
    garbled[8] = b'!';
    assert_refused(&model, config(), &garbled, &["JSON"]);
}

#[test]
fn a_file_without_the_step_or_config_is_refused() {
    let model = small();
    let zeros = |n: usize| vec![0u8; 4 * n];
    let moments = [
        ("a.exp_avg", Dtype::F32, vec![3], zeros(3)),
        ("a.exp_avg_sq", Dtype::F32, vec![3], zeros(3)),
        ("b.exp_avg", Dtype::F32, vec![2], zeros(2)),
        ("b.exp_avg_sq", Dtype::F32, vec![2], zeros(2)),
    ];
    let config_json = serde_json::to_string(&config()).unwrap();
    let json = format!(r#"{{"step":3,"config":{config_json}}}"#);
    // The file itself is well formed: only what it says is wrong.
    let good = file(&moments, &[("trainer", &json)]);
    assert_eq!(
        Trainer::resume(&model, config(), &good)
            .unwrap()
            .step_count(),
        3
    );

    let no_step = format!(r#"{{"config":{config_json}}}"#);
    let bad_step = format!(r#"{{"step":"three","config":{config_json}}}"#);
    let cases: [(&Metadata, &[&str]); 5] = [
        (&[("step", "3")], &["no `trainer`"]),
        (&[("trainer", &no_step)], &["metadata `trainer`", "step"]),
        (&[("trainer", &bad_step)], &["metadata `trainer`"]),
        (
            &[("trainer", r#"{"step":3}"#)],
            &["metadata `trainer`", "config"],
        ),
        (&[("trainer", "{\"adamw\":")], &["metadata `trainer`"]),
    ];
    for (metadata, says) in cases {
        assert_refused(&model, config(), &file(&moments, metadata), says);
    }

    // A moment in another dtype.
    let mut f16 = moments.clone();
    f16[2] = ("b.exp_avg", Dtype::F16, vec![2], vec![0u8; 4]);
    let bytes = file(&f16, &[("trainer", &json)]);
    assert_refused(&model, config(), &bytes, &["b.exp_avg", "F16", "F32"]);
}

#[test]
fn a_file_for_another_model_is_refused() {
    let mut model = small();
    let mut trainer = Trainer::new(&model, config()).unwrap();
    train(&mut trainer, &mut model, 1..3);
    let saved = trainer.save_state(&model).unwrap();

    // The same tensors in another shape.
    let longer = two_tensors(vec![4], vec![2]);
    assert_refused(&longer, config(), &saved, &["a.exp_avg", "[3]", "[4]"]);
    let reshaped = two_tensors(vec![3], vec![1, 2]);
    assert_refused(&reshaped, config(), &saved, &["b.exp_avg", "[2]", "[1, 2]"]);

    // The same shapes under other names.
    let renamed = HostParams::new(vec![
        (TensorInfo::new("a", vec![3], true), vec![0.0; 3]),
        (TensorInfo::new("c", vec![2], false), vec![0.0; 2]),
    ])
    .unwrap();
    assert_refused(&renamed, config(), &saved, &["no tensor `c.exp_avg`"]);

    // Fewer tensors than the file holds, and more.
    let fewer = HostParams::new(vec![(TensorInfo::new("a", vec![3], true), vec![0.0; 3])]).unwrap();
    assert_refused(
        &fewer,
        config(),
        &saved,
        &["4 tensors", "1 parameter tensors, which need 2"],
    );
    let more = HostParams::new(vec![
        (TensorInfo::new("a", vec![3], true), vec![0.0; 3]),
        (TensorInfo::new("b", vec![2], false), vec![0.0; 2]),
        (TensorInfo::new("c", vec![1], false), vec![0.0]),
    ])
    .unwrap();
    assert_refused(
        &more,
        config(),
        &saved,
        &["4 tensors", "3 parameter tensors, which need 6"],
    );
}

#[test]
fn the_error_says_it_is_about_the_optimizer_state() {
    let model = small();
    let err = Trainer::resume(&model, config(), b"").err().unwrap();
    assert_eq!(
        err.to_string(),
        "optimizer state: not a complete safetensors file (header too small)"
    );
}

/// Saving the same state twice gives the same bytes, so a checkpoint can be compared or hashed.
#[test]
fn saving_the_same_state_twice_gives_the_same_bytes() {
    let mut model = small();
    let mut trainer = Trainer::new(&model, config()).unwrap();
    train(&mut trainer, &mut model, 1..3);
    let first = trainer.save_state(&model).unwrap();
    for _ in 0..20 {
        assert!(
            trainer.save_state(&model).unwrap() == first,
            "the bytes differ"
        );
    }
}
