//! The gradient norm and clipping, and how `Trainer::step` accumulates and clips gradients.

use lmsi_adamw::{
    AdamWConfig, HostParams, LrSchedule, StepStats, TensorInfo, Trainer, TrainerConfig,
    adamw_update, clip_global_norm, global_norm, sum_squares,
};
use safetensors::SafeTensors;

type Grads = Vec<Vec<f32>>;

/// Every moment of the trainer's saved state, by name.
fn moments(trainer: &Trainer<HostParams>, model: &HostParams) -> Vec<(String, Vec<f32>)> {
    let state = trainer.save_state(model).unwrap();
    let mut moments: Vec<(String, Vec<f32>)> = SafeTensors::deserialize(&state)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let values = t.data().chunks_exact(4);
            (
                name,
                values
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        })
        .collect();
    moments.sort_by(|a, b| a.0.cmp(&b.0));
    moments
}

#[test]
fn global_norm_spans_all_tensors() {
    assert_eq!(global_norm(&[]), 0.0);
    assert_eq!(global_norm(&[&[], &[0.0; 3]]), 0.0);
    assert_eq!(global_norm(&[&[1.0, 2.0], &[2.0], &[-4.0]]), 5.0);
    // Squares in f64: no overflow where f32 would overflow.
    assert_eq!(
        global_norm(&[&[3e30, -4e30]]),
        f64::from(3e30f32).hypot(f64::from(4e30f32))
    );
}

#[test]
fn clipping_scales_to_max_norm_when_above() {
    let (mut a, mut b) = (vec![6.0f32, 0.0], vec![-8.0f32]);
    let norm = clip_global_norm(&mut [&mut a, &mut b], 2.0);
    assert_eq!(norm, 10.0);
    // torch: coef = max_norm / (norm + 1e-6).
    let coef = (2.0 / (10.0 + 1e-6)) as f32;
    assert_eq!(
        (a.as_slice(), b.as_slice()),
        (&[6.0 * coef, 0.0][..], &[-8.0 * coef][..])
    );
    let after = global_norm(&[&a, &b]);
    assert!((after - 2.0).abs() < 1e-6, "{after}");
}

#[test]
fn clipping_leaves_gradients_alone_when_below() {
    let (mut a, mut b) = (vec![0.3f32, -0.4], vec![0.0f32]);
    let norm = clip_global_norm(&mut [&mut a, &mut b], 1.0);
    assert!((norm - 0.5).abs() < 1e-7);
    assert_eq!((a, b), (vec![0.3, -0.4], vec![0.0]));
}

#[test]
fn clipping_at_exactly_max_norm_scales_by_a_hair_like_torch() {
    let mut a = vec![3.0f32, 4.0];
    assert_eq!(clip_global_norm(&mut [&mut a], 5.0), 5.0);
    let coef = (5.0 / (5.0 + 1e-6)) as f32;
    assert!(coef < 1.0);
    assert_eq!(a, [3.0 * coef, 4.0 * coef]);
}

#[test]
fn non_finite_norm_is_returned_and_nothing_is_scaled() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (mut a, mut b) = (vec![100.0f32, bad], vec![-50.0f32]);
        let norm = clip_global_norm(&mut [&mut a, &mut b], 1.0);
        assert!(!norm.is_finite(), "{bad}: {norm}");
        assert_eq!((a[0], b[0]), (100.0, -50.0));
        assert_eq!(a[1].to_bits(), bad.to_bits());
    }
}

#[test]
#[should_panic(expected = "max_norm must be >= 0")]
fn negative_max_norm_panics() {
    clip_global_norm(&mut [&mut [1.0]], -1.0);
}

#[test]
fn sum_squares_is_one_tensors_squared_norm() {
    assert_eq!(sum_squares(&[]), 0.0);
    let x = [1.0f32, -2.0, 2.0, 4.0];
    assert_eq!(sum_squares(&x), 25.0);
    assert_eq!(global_norm(&[&x]).powi(2), sum_squares(&x));
    // Squares in f64: no overflow where f32 would overflow.
    let (a, b) = (f64::from(3e30f32), f64::from(4e30f32));
    assert_eq!(sum_squares(&[3e30, -4e30]), a * a + b * b);
    // Over several chunks of 65,536, the same chunks as global_norm's, on any number of threads.
    let x: Vec<f32> = (0..200_003)
        .map(|i| ((i * 7919) % 2001) as f32 / 997.0 - 1.0)
        .collect();
    let bits: Vec<u64> = [1, 2, 5]
        .iter()
        .map(|&threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| sum_squares(&x)).to_bits()
        })
        .collect();
    assert!(bits.iter().all(|&b| b == bits[0]), "{bits:?}");
    assert_eq!(f64::from_bits(bits[0]).sqrt(), global_norm(&[&x]));
}

/// A batch of 8 examples `x_i` in 3 dimensions for the linear loss `L(w) = Σ_i w·x_i` (sum) or
/// `(1/8) Σ_i w·x_i` (mean), whose gradient is `Σ_i x_i` (resp. the mean). The values are
/// multiples of 1/4, so every sum and mean below is exact in f32.
const BATCH: [[f32; 3]; 8] = [
    [1.0, -2.0, 0.5],
    [0.25, 3.0, -1.0],
    [-1.5, 0.75, 2.0],
    [2.0, -0.25, 0.0],
    [0.5, 1.0, -3.0],
    [-0.75, -1.25, 1.5],
    [3.0, 0.5, 0.25],
    [-2.5, 2.25, -0.5],
];

/// The weight vector `w`, split as a model splits its parameters: a decayed tensor of 2 and an
/// undecayed one of 1.
fn model() -> HostParams {
    HostParams::new(vec![
        (TensorInfo::new("w", vec![2], true), vec![0.5, -0.25]),
        (TensorInfo::new("b", vec![1], false), vec![1.0]),
    ])
    .unwrap()
}

fn config(max_grad_norm: Option<f64>) -> TrainerConfig {
    TrainerConfig {
        adamw: AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        },
        schedule: LrSchedule::constant(0.01),
        max_grad_norm,
        decay_all: false,
    }
}

/// Adds `scale ·` the gradient of the loss over `examples` into `grads`, example by example.
fn add_gradient(grads: &mut Grads, examples: &[[f32; 3]], scale: f32) {
    for x in examples {
        let (w, b) = x.split_at(2);
        for (g, x) in grads.iter_mut().zip([w, b]) {
            g.iter_mut().zip(x).for_each(|(g, x)| *g += scale * x);
        }
    }
}

/// The gradient of the loss over `examples`, summed or averaged, as the model's tensors.
fn gradient(examples: &[[f32; 3]], mean: bool) -> Grads {
    let mut g = vec![vec![0.0; 2], vec![0.0; 1]];
    add_gradient(&mut g, examples, 1.0);
    if mean {
        g.iter_mut()
            .flatten()
            .for_each(|g| *g /= examples.len() as f32);
    }
    g
}

/// What a run gives: the parameters, each step's stats, and the moments.
type Run = (Grads, Vec<StepStats>, Vec<(String, Vec<f32>)>);

/// Three steps whose backward passes add `micro_grads(step)` one micro-batch at a time.
fn train(config: TrainerConfig, micro_grads: impl Fn(u64) -> Vec<Grads>) -> Run {
    let mut params = model();
    let mut trainer = Trainer::new(&params, config).unwrap();
    let stats = (1..=3)
        .map(|step| {
            trainer
                .step(&mut params, micro_grads(step), |_, micro, grads| {
                    for (g, m) in grads.iter_mut().zip(&micro) {
                        g.iter_mut().zip(m).for_each(|(g, m)| *g += m);
                    }
                    Ok(0.0)
                })
                .unwrap()
        })
        .collect();
    let moments = moments(&trainer, &params);
    (params.into_values(), stats, moments)
}

/// The examples of step `step`: the batch, scaled so that the steps differ.
fn batch(step: u64) -> Vec<[f32; 3]> {
    BATCH.iter().map(|x| x.map(|x| x * step as f32)).collect()
}

#[test]
fn summed_micro_batches_step_like_the_full_batch() {
    let micro = |step| batch(step).chunks(3).map(|m| gradient(m, false)).collect();
    let full = |step| vec![gradient(&batch(step), false)];
    assert_eq!(train(config(None), micro), train(config(None), full));
    // Clipped, the same.
    assert_eq!(
        train(config(Some(1.0)), micro),
        train(config(Some(1.0)), full)
    );
}

#[test]
fn micro_batches_of_unequal_size_step_like_the_full_batch_mean() {
    // Each micro-batch's summed gradient over the batch's size: 5/8 and 3/8 of the mean.
    let micro = |step: u64| {
        let examples = batch(step);
        let (first, second) = examples.split_at(5);
        [first, second]
            .iter()
            .map(|m| {
                let mut g = vec![vec![0.0; 2], vec![0.0; 1]];
                add_gradient(&mut g, m, 1.0 / 8.0);
                g
            })
            .collect()
    };
    let full = |step| vec![gradient(&batch(step), true)];
    assert_eq!(
        train(config(Some(1.0)), micro),
        train(config(Some(1.0)), full)
    );
}

#[test]
fn micro_batch_gradients_are_added_in_order() {
    // Values whose sum rounds, so the order shows: ((0 + g1) + g2) + g3 element by element.
    let micro = |step: u64| -> Vec<Grads> {
        (0..3u64)
            .map(|k| {
                let x = |i: u64| 0.1 * (step * 7 + k * 3 + i) as f32 - 0.7;
                vec![vec![x(0), x(1)], vec![x(2) * 1e-3]]
            })
            .collect()
    };
    let sum = |grads: Vec<Grads>| {
        let mut sum = vec![vec![0.0f32; 2], vec![0.0; 1]];
        for g in grads {
            for (s, g) in sum.iter_mut().zip(&g) {
                s.iter_mut().zip(g).for_each(|(s, g)| *s += g);
            }
        }
        sum
    };
    let summed = |step| vec![sum(micro(step))];
    assert_eq!(
        train(config(Some(0.5)), micro),
        train(config(Some(0.5)), summed)
    );
    // The order shows in the bits of these sums.
    let reversed = |step| micro(step).into_iter().rev().collect::<Vec<_>>();
    assert!((1..=3).any(|step| sum(micro(step)) != sum(reversed(step))));
}

/// One step with `grads` (in two micro-batches of half each) at `max_grad_norm`, against
/// `clip_global_norm` and `adamw_update` on the same gradients.
fn check_clipping(grads: &Grads, max_grad_norm: Option<f64>) {
    let mut params = model();
    let mut trainer = Trainer::new(&params, config(max_grad_norm)).unwrap();
    let stats = trainer
        .step(&mut params, [0.5f32, 0.5], |_, share, out| {
            for (o, g) in out.iter_mut().zip(grads) {
                o.iter_mut().zip(g).for_each(|(o, g)| *o += share * g);
            }
            Ok(0.0)
        })
        .unwrap();

    let mut clipped = grads.clone();
    let norm = match max_grad_norm {
        Some(max) => {
            let mut slices: Vec<&mut [f32]> = clipped.iter_mut().map(Vec::as_mut_slice).collect();
            clip_global_norm(&mut slices, max)
        }
        None => global_norm(&grads.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    };
    assert_eq!(stats.grad_norm, norm, "{grads:?} at {max_grad_norm:?}");
    let mut want = model().into_values();
    let mut want_moments = Vec::new();
    for (((p, g), decay), name) in want
        .iter_mut()
        .zip(&clipped)
        .zip([true, false])
        .zip(["w", "b"])
    {
        let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
        let step = config(max_grad_norm).adamw.step_params(0.01, 1, decay);
        adamw_update(p, g, &mut m, &mut v, &step);
        want_moments.push((format!("{name}.exp_avg"), m));
        want_moments.push((format!("{name}.exp_avg_sq"), v));
    }
    assert_eq!(params.values(), want, "{grads:?} at {max_grad_norm:?}");
    // The moments show the scale of the gradients, which the first step's parameters hide.
    want_moments.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        moments(&trainer, &params),
        want_moments,
        "{grads:?} at {max_grad_norm:?}"
    );
}

#[test]
fn clipping_in_a_step_is_clip_global_norm() {
    // Above the maximum (norm 10), below it (0.5), and exactly at it.
    let big = vec![vec![6.0f32, 0.0], vec![-8.0]];
    let small = vec![vec![0.3f32, -0.4], vec![0.0]];
    let at = vec![vec![3.0f32, 0.0], vec![4.0]];
    for (grads, max) in [(&big, 2.0), (&small, 1.0), (&at, 5.0)] {
        check_clipping(grads, Some(max));
    }
    // The gradients differ from the clipped ones, so the comparison can tell.
    let mut clipped = big.clone();
    let mut slices: Vec<&mut [f32]> = clipped.iter_mut().map(Vec::as_mut_slice).collect();
    assert_eq!(clip_global_norm(&mut slices, 2.0), 10.0);
    assert_ne!(clipped, big);
    // No maximum: the norm is measured and nothing is scaled.
    check_clipping(&big, None);
}
