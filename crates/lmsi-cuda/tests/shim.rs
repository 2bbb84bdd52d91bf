//! The CPU shim itself: barriers, schedules, warp collectives and its 16-bit float types.

use lmsi_cuda::Error;
use lmsi_cuda::sim::{Schedule, Sim, selftest};

const SCHEDULES: [Schedule; 3] = [Schedule::InOrder, Schedule::Reversed, Schedule::Shuffled(3)];

#[test]
fn a_missing_barrier_is_hidden_in_order_and_exposed_reversed() {
    let input: Vec<f32> = (0..96).map(|i| i as f32 * 0.5 + 1.0).collect();
    let expected: Vec<f32> = (0..96)
        .map(|t| 2.0 * input[if t > 0 { t - 1 } else { 0 }])
        .collect();
    // Thread order runs every writer before its reader: the bug does not show.
    let in_order = selftest::missing_barrier(&Sim::new(Schedule::InOrder), &input).unwrap();
    assert_eq!(in_order, expected);
    // Reversed, every reader but thread 0 runs first and finds the unwritten (NaN) slot.
    let reversed = selftest::missing_barrier(&Sim::new(Schedule::Reversed), &input).unwrap();
    let wrong = reversed
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(wrong, 95, "{reversed:?}");
    let shuffled = selftest::missing_barrier(&Sim::new(Schedule::Shuffled(1)), &input).unwrap();
    assert_ne!(shuffled, expected);
}

#[test]
fn a_partial_barrier_is_reported_not_hung() {
    for schedule in SCHEDULES {
        let err = selftest::partial_barrier(&Sim::new(schedule), 40, 64).unwrap_err();
        let Error::Sim(message) = &err else {
            panic!("{err:?}")
        };
        assert!(
            message.contains("selftest_partial_barrier")
                && message.contains("partial barrier")
                && message.contains("reached by 40 of 64 threads"),
            "{message}"
        );
    }
    // Every thread at the barrier: fine.
    selftest::partial_barrier(&Sim::new(Schedule::Reversed), 64, 64).unwrap();
}

#[test]
fn a_deadlock_is_reported_not_hung() {
    for schedule in SCHEDULES {
        let err = selftest::deadlock(&Sim::new(schedule), 64).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("deadlock: 32 threads wait at __syncthreads, 32 at warp collectives")
                && message.contains("__syncwarp with mask ffffffff"),
            "{message}"
        );
    }
}

#[test]
fn warp_collectives_follow_cuda_semantics() {
    for schedule in SCHEDULES {
        let out = selftest::warp_ops(&Sim::new(schedule)).unwrap();
        for t in 0..64u32 {
            let lane = t % 32;
            let warp_base = t - lane;
            let o = &out[t as usize * 10..][..10];
            assert_eq!(o[0], (warp_base + (lane + 5) % 32) * 3, "shfl, thread {t}");
            assert_eq!(o[1], t ^ 1, "shfl_xor, thread {t}");
            assert_eq!(o[2], if lane + 4 < 32 { t + 4 } else { t }, "shfl_down");
            assert_eq!(o[3], if lane >= 3 { t - 3 } else { t }, "shfl_up");
            let ballot = (0..32)
                .filter(|l| (warp_base + l) % 3 == 0)
                .fold(0u32, |b, l| b | 1 << l);
            assert_eq!(o[4], ballot, "ballot, thread {t}");
            let any = u32::from(warp_base == 32);
            assert_eq!(o[5], any | 2, "any/all, thread {t}");
            assert_eq!(o[6], (0..64).sum::<u32>(), "block sum");
            assert_eq!(o[7], (t & !7) + 2, "shfl with width 8");
            assert_eq!(o[8], 32, "syncthreads_count");
            assert_eq!(
                o[9],
                if lane < 16 { t ^ 8 } else { 0 },
                "partial-mask shfl_xor"
            );
        }
    }
}

#[test]
fn half_and_bfloat16_round_to_nearest_even() {
    let mut input: Vec<f32> = (0..2000)
        .map(|i| ((i as f32) * 0.377).sin() * 10f32.powi(i % 13 - 8))
        .collect();
    input.extend([
        0.0,
        -0.0,
        65504.0,
        65520.0,
        -1e9,
        f32::INFINITY,
        1.0e-8,
        5.9604645e-8,
        2.9802322e-8,
        1.0009766,
        1.0004883,
        1.0014648,
    ]);
    let (h, b) = selftest::half_round_trip(&Sim::default(), &input).unwrap();
    for (i, &x) in input.iter().enumerate() {
        assert_eq!(
            h[i].to_bits(),
            half::f16::from_f32(x).to_f32().to_bits(),
            "half of {x:e}"
        );
        assert_eq!(
            b[i].to_bits(),
            half::bf16::from_f32(x).to_f32().to_bits(),
            "bf16 of {x:e}"
        );
    }
    let (h, b) = selftest::half_round_trip(&Sim::default(), &[f32::NAN]).unwrap();
    assert!(h[0].is_nan() && b[0].is_nan());
}
