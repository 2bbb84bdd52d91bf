//! Results are the same bits on one thread and on several, and the parallel paths equal the
//! element-by-element update.

use lmsi_adamw::{
    AdamWConfig, HostParams, LrSchedule, ScheduleKind, TensorInfo, Trainer, TrainerConfig,
    adamw_update, global_norm,
};
use safetensors::SafeTensors;

/// Sizes straddling the 65,536-element chunk: small, exact multiples, and ragged ends.
const SIZES: [usize; 5] = [7, 65_536, 200_003, 1, 131_072 + 5];

/// Deterministic, non-zero pseudo-random values in (-scale, scale) (xorshift64*).
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0 + 1e-6) * scale
        })
        .collect()
}

/// Everything one training run of three accumulated, clipped steps gives: the parameters, the
/// saved optimizer state's tensors, and each step's gradient norm and learning rate.
#[derive(Debug, PartialEq)]
struct Run {
    params: Vec<Vec<f32>>,
    moments: Vec<(String, Vec<u8>)>,
    stats: Vec<(u64, u32)>,
}

fn run(threads: usize) -> Run {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let decay = [true, true, false, false, true];
        let mut model = HostParams::new(
            SIZES
                .iter()
                .zip(decay)
                .enumerate()
                .map(|(i, (&n, decay))| {
                    let info = TensorInfo::new(format!("t{i}"), vec![n], decay);
                    (info, values(i as u64, n, 1.0))
                })
                .collect(),
        )
        .unwrap();
        let config = TrainerConfig {
            adamw: AdamWConfig::default(),
            schedule: LrSchedule::new(ScheduleKind::Cosine, 1e-3, 1, 4),
            max_grad_norm: Some(1.0),
            decay_all: false,
        };
        let mut trainer = Trainer::new(&model, config).unwrap();
        let mut stats = Vec::new();
        for step in 0..3u64 {
            // Two micro-batches, each half of the batch's gradient.
            let s = trainer
                .step(&mut model, 0..2u64, |_, micro, grads| {
                    for (i, g) in grads.iter_mut().enumerate() {
                        let add = values(100 * step + 10 * micro + i as u64, g.len(), 0.01);
                        g.iter_mut().zip(add).for_each(|(g, a)| *g += 0.5 * a);
                    }
                    Ok(0.0)
                })
                .unwrap();
            stats.push((s.grad_norm.to_bits(), s.lr.to_bits()));
        }
        let state = trainer.save_state(&model).unwrap();
        let mut moments: Vec<(String, Vec<u8>)> = SafeTensors::deserialize(&state)
            .unwrap()
            .tensors()
            .into_iter()
            .map(|(name, t)| (name, t.data().to_vec()))
            .collect();
        moments.sort();
        Run {
            params: model.into_values(),
            moments,
            stats,
        }
    })
}

#[test]
fn training_steps_are_identical_on_one_and_four_threads() {
    let one = run(1);
    let four = run(4);
    // The norms exceed 1, so clipping took part.
    assert!(
        one.stats.iter().all(|&(n, _)| f64::from_bits(n) > 1.0),
        "{:?}",
        one.stats
    );
    assert_eq!(one.moments.len(), 2 * SIZES.len());
    assert!(one == four, "results differ between 1 and 4 threads");
}

#[test]
fn parallel_update_equals_the_elementwise_update() {
    let n = 300_001;
    let params = AdamWConfig::default().step_params(2e-3, 4, true);
    let (mut p, g, mut m, mut v) = (
        values(1, n, 1.0),
        values(2, n, 0.1),
        values(3, n, 0.01),
        values(4, n, 1e-4),
    );
    let v_abs: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    v.copy_from_slice(&v_abs);
    let s = params.scalars();
    let want: Vec<(f32, f32, f32)> = (0..n).map(|i| s.update(p[i], g[i], m[i], v[i])).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| adamw_update(&mut p, &g, &mut m, &mut v, &params));
    for (i, w) in want.iter().enumerate() {
        assert_eq!((p[i], m[i], v[i]), *w, "element {i}");
    }
}

#[test]
fn global_norm_is_identical_across_thread_counts_and_accurate() {
    let grads: Vec<Vec<f32>> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| values(7 + i as u64, n, 3.0))
        .collect();
    let slices: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
    let norms: Vec<u64> = [1, 2, 5]
        .iter()
        .map(|&t| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            pool.install(|| global_norm(&slices)).to_bits()
        })
        .collect();
    assert!(norms.iter().all(|&n| n == norms[0]), "{norms:?}");
    // A plain sequential sum agrees to f64 rounding.
    let naive: f64 = slices
        .iter()
        .flat_map(|s| s.iter())
        .map(|&x| f64::from(x).powi(2))
        .sum();
    let norm = f64::from_bits(norms[0]);
    assert!(
        (norm - naive.sqrt()).abs() <= 1e-12 * norm,
        "{norm} vs {}",
        naive.sqrt()
    );
}
