//! Gradient clipping and accumulation.

use lmsi_adamw::{AdamWError, GradAccumulator, clip_global_norm, global_norm};

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

/// Gradient of the loss over `examples`, summed or averaged; one tensor of 2 and one of 1
/// (the weight vector split as a model splits its parameters).
fn grad(examples: &[[f32; 3]], mean: bool) -> Vec<Vec<f32>> {
    let mut g = [0.0f32; 3];
    for x in examples {
        for (g, x) in g.iter_mut().zip(x) {
            *g += x;
        }
    }
    if mean {
        g.iter_mut().for_each(|g| *g /= examples.len() as f32);
    }
    vec![g[..2].to_vec(), g[2..].to_vec()]
}

fn slices(g: &[Vec<f32>]) -> Vec<&[f32]> {
    g.iter().map(Vec::as_slice).collect()
}

#[test]
fn summed_micro_batches_equal_the_full_batch_gradient() {
    let mut acc = GradAccumulator::new(&[2, 1]);
    for micro in BATCH.chunks(3) {
        acc.add(&slices(&grad(micro, false))).unwrap();
    }
    assert_eq!(acc.micro_steps(), 3);
    assert_eq!(acc.grads(), slices(&grad(&BATCH, false)));
}

#[test]
fn averaged_micro_batches_equal_the_full_batch_mean_gradient() {
    let mut acc = GradAccumulator::new(&[2, 1]);
    for micro in BATCH.chunks(2) {
        acc.add(&slices(&grad(micro, true))).unwrap();
    }
    acc.average();
    assert_eq!(acc.grads(), slices(&grad(&BATCH, true)));
}

#[test]
fn weighted_micro_batches_of_unequal_size_equal_the_full_batch_mean() {
    // Micro-batch means weighted by their share of the examples: 5/8 and 3/8.
    let mut acc = GradAccumulator::new(&[2, 1]);
    let (first, second) = BATCH.split_at(5);
    acc.add_scaled(&slices(&grad(first, true)), 5.0 / 8.0)
        .unwrap();
    acc.add_scaled(&slices(&grad(second, true)), 3.0 / 8.0)
        .unwrap();
    let want = grad(&BATCH, true);
    for (got, want) in acc.grads().iter().zip(&want) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
    // Summing and scaling once is the same as averaging.
    let mut acc = GradAccumulator::new(&[2, 1]);
    acc.add(&slices(&grad(first, false))).unwrap();
    acc.add(&slices(&grad(second, false))).unwrap();
    acc.scale(1.0 / 8.0);
    assert_eq!(acc.grads(), slices(&want));
}

#[test]
fn take_and_clear_start_over() {
    let mut acc = GradAccumulator::new(&[2, 1]);
    acc.average();
    assert_eq!(acc.grads(), [&[0.0, 0.0][..], &[0.0][..]]);
    acc.add(&[&[1.0, 2.0], &[3.0]]).unwrap();
    assert_eq!(acc.take(), vec![vec![1.0, 2.0], vec![3.0]]);
    assert_eq!(
        (acc.micro_steps(), acc.grads()),
        (0, vec![&[0.0, 0.0][..], &[0.0][..]])
    );
    acc.add(&[&[1.0, 2.0], &[3.0]]).unwrap();
    acc.clear();
    assert_eq!(
        (acc.micro_steps(), acc.grads()),
        (0, vec![&[0.0, 0.0][..], &[0.0][..]])
    );
}

#[test]
fn mismatched_gradients_are_rejected_and_nothing_is_added() {
    let mut acc = GradAccumulator::new(&[2, 1]);
    assert_eq!(
        acc.add(&[&[1.0, 2.0]]),
        Err(AdamWError::Count {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(
        acc.add(&[&[1.0, 2.0], &[3.0, 4.0]]),
        Err(AdamWError::Shape {
            tensor: 1,
            expected: 1,
            got: 2
        })
    );
    assert_eq!(acc.micro_steps(), 0);
    assert_eq!(acc.grads(), [&[0.0, 0.0][..], &[0.0][..]]);
}
