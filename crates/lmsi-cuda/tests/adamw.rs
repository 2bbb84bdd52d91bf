//! The optimizer kernels through the CPU shim against lmsi-adamw: the AdamW update bit for bit
//! (`StepScalars::update`), the global gradient norm (to 1e-12 relative: f64 sums in another order),
//! and clipping (bit for bit when the norm is).

mod common;

use common::{Rng, assert_bits, global_norm as kernel_norm, runners};
use lmsi_adamw::{StepParams, clip_global_norm, global_norm};
use lmsi_cuda::launch;
use lmsi_cuda::params::*;
use lmsi_cuda::sim::{Schedule, Sim};

#[test]
fn adamw_update_reproduces_step_scalars_bit_for_bit() {
    let mut rng = Rng::new(31);
    let cases = [
        (1usize, 0.1f32, 0.9f32, 0.999f32, 1e-8f32, 0.01f32, 1u64),
        (1000, 5e-5, 0.9, 0.999, 1e-8, 0.0, 2),
        (70_001, 1e-3, 0.8, 0.95, 1e-6, 0.1, 1000),
        (2_500_000, 3e-4, 0.9, 0.99999, 0.0, 0.01, 7),
    ];
    for (len, lr, beta1, beta2, eps, weight_decay, step) in cases {
        let s = StepParams {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            step,
        }
        .scalars();
        let param = rng.values(len, 1.0);
        // Gradients over many magnitudes, down to subnormal squares.
        let grad: Vec<f32> = rng
            .values(len, 1.0)
            .iter()
            .enumerate()
            .map(|(i, g)| g * 10f32.powi(i as i32 % 45 - 30))
            .collect();
        let m0 = rng.values(len, 0.01);
        let v0: Vec<f32> = rng.values(len, 1e-4).iter().map(|v| v.abs()).collect();
        let mut want = (param.clone(), m0.clone(), v0.clone());
        for i in 0..len {
            (want.0[i], want.1[i], want.2[i]) = s.update(param[i], grad[i], m0[i], v0[i]);
        }
        let p = LmsiAdamwParams {
            len: len as u64,
            decay: s.decay,
            one_minus_beta1: s.one_minus_beta1,
            beta2: s.beta2,
            one_minus_beta2: s.one_minus_beta2,
            step_size: s.step_size,
            bias_correction2_sqrt: s.bias_correction2_sqrt,
            eps: s.eps,
        };
        for runner in runners() {
            let (mut pr, mut m, mut v) = (param.clone(), m0.clone(), v0.clone());
            runner
                .adamw_update(&p, &mut pr, &mut m, &mut v, &grad)
                .unwrap();
            assert_bits(&*runner, "adamw_update param", &pr, &want.0);
            assert_bits(&*runner, "adamw_update m", &m, &want.1);
            assert_bits(&*runner, "adamw_update v", &v, &want.2);
        }
    }
}

#[test]
fn global_norm_matches_the_cpu_and_is_deterministic() {
    let mut rng = Rng::new(32);
    let tensors: Vec<Vec<f32>> = [1, 65_536, 65_537, 200_000, 7]
        .iter()
        .map(|&n| rng.values(n, 3.0))
        .collect();
    let views: Vec<&[f32]> = tensors.iter().map(|t| t.as_slice()).collect();
    let want = global_norm(&views);
    let mut first = None;
    for runner in runners() {
        let got = kernel_norm(&*runner, &views).unwrap();
        println!(
            "max-error global_norm {} {:e}",
            runner.kind(),
            (got - want).abs()
        );
        assert!(((got - want) / want).abs() < 1e-12, "{got} vs {want}");
        // The same bits whatever the schedule.
        assert_eq!(first.get_or_insert(got).to_bits(), got.to_bits());
    }
    // And whatever the number of OS threads running blocks.
    let one_thread = Sim::new(Schedule::Reversed).with_os_threads(1);
    assert_eq!(
        kernel_norm(&one_thread, &views).unwrap().to_bits(),
        first.unwrap().to_bits()
    );
}

#[test]
fn clip_scale_matches_clip_global_norm() {
    let mut rng = Rng::new(33);
    let grads = rng.values(150_000, 2.0);
    for max_norm in [1.0, 1e9] {
        let mut want = grads.clone();
        let norm = clip_global_norm(&mut [&mut want], max_norm);
        for runner in runners() {
            // The device keeps the sum of squares on the device; use the kernels' own sum.
            let blocks = launch::sum_squares_blocks(grads.len() as u64);
            let mut partials = vec![f64::NAN; blocks as usize];
            let sq = LmsiSumSquaresParams {
                len: grads.len() as u64,
                chunk: launch::SUM_SQUARES_CHUNK,
                first_partial: 0,
            };
            runner
                .sum_squares_partial(&sq, &mut partials, &grads)
                .unwrap();
            let np = LmsiNormParams {
                len: grads.len() as u64,
                count: blocks,
                max_norm,
            };
            let mut sum = [f64::NAN];
            runner.sum_partials(&np, &mut sum, &partials).unwrap();
            assert!((sum[0].sqrt() - norm).abs() / norm < 1e-12);
            let mut got = grads.clone();
            runner.clip_scale(&np, &mut got, &sum).unwrap();
            if sum[0].sqrt() == norm {
                assert_bits(&*runner, "clip_scale", &got, &want);
            } else {
                common::assert_close(&*runner, "clip_scale", &got, &want, 0.0, 1e-7);
            }
        }
    }
    // A non-finite norm leaves the gradients alone, as on the CPU.
    let np = LmsiNormParams {
        len: 2,
        count: 0,
        max_norm: 1.0,
    };
    for runner in runners() {
        let mut bad = vec![1.0f32, f32::INFINITY];
        runner.clip_scale(&np, &mut bad, &[f64::INFINITY]).unwrap();
        assert_eq!(bad, [1.0, f32::INFINITY], "{}", runner.name());
    }
}
