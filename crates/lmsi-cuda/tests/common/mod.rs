//! Helpers shared by the kernel tests: where kernels run (the shim under every schedule, and the
//! GPU when there is one), random inputs that are never zero, tolerances.
//!
//! Every comparison of floats prints `max-error KERNEL WHERE VALUE` (the largest `|got - want|`;
//! `WHERE` is `shim`, `sim` or `gpu`; shown with `--nocapture`), which the GPU bundle's `run.sh`
//! gathers into its table.
#![allow(dead_code)] // each test file uses its own subset

use lmsi_cuda::params::*;
use lmsi_cuda::sim::{Schedule, Sim};
use lmsi_cuda::{Device, Error};

/// The three fiber orders every kernel is tested under.
pub const SCHEDULES: [Schedule; 3] = [
    Schedule::InOrder,
    Schedule::Reversed,
    Schedule::Shuffled(0x5eed),
];

/// Everywhere the kernels run: the shim under each schedule, the simulated device (buffers,
/// launch checks and copies of the device layer), then the GPU if there is one (with feature
/// `cuda`; otherwise the reason is printed once).
pub fn runners() -> Vec<Box<dyn Kernels>> {
    let shims = SCHEDULES
        .into_iter()
        .map(|s| Box::new(Sim::new(s)) as Box<dyn Kernels>);
    let sim_device = Box::new(Device::sim()) as Box<dyn Kernels>;
    let gpu = gpu().map(|d| Box::new(d) as Box<dyn Kernels>);
    shims.chain([sim_device]).chain(gpu).collect()
}

/// GPU 0, or `None` with the reason printed once per test binary.
pub fn gpu() -> Option<Device> {
    static REASON: std::sync::Once = std::sync::Once::new();
    match Device::gpu(0) {
        Ok(device) => Some(device),
        Err(e) => {
            REASON.call_once(|| eprintln!("GPU runs skipped: {e}"));
            None
        }
    }
}

/// Declares [`Kernels`] from the kernel table, and implements it for the shim (delegating to
/// [`Sim`]) and for a [`Device`] (upload, launch, download).
macro_rules! harness {
    ($($file:literal {
        $($(#[$doc:meta])* fn $name:ident(
            $params:ty; $($out:ident: $out_ty:ty),+; $($input:ident: $in_ty:ty),*
        );)*
    })*) => {
        /// The kernels on host slices, wherever they run.
        pub trait Kernels {
            /// Where, for messages.
            fn name(&self) -> String;
            /// Where, in one word: `shim`, `sim` (the simulated device) or `gpu`.
            fn kind(&self) -> &'static str;
            $($(
                #[allow(clippy::too_many_arguments)]
                fn $name(&self, p: &$params, $($out: &mut [$out_ty],)+ $($input: &[$in_ty],)*)
                    -> Result<(), Error>;
            )*)*
        }

        impl Kernels for Sim {
            fn name(&self) -> String {
                format!("shim, {:?}", self.schedule())
            }
            fn kind(&self) -> &'static str {
                "shim"
            }
            $($(
                fn $name(&self, p: &$params, $($out: &mut [$out_ty],)+ $($input: &[$in_ty],)*)
                    -> Result<(), Error> {
                    Sim::$name(self, p, $($out,)+ $($input,)*)
                }
            )*)*
        }

        impl Kernels for Device {
            fn name(&self) -> String {
                self.describe()
            }
            fn kind(&self) -> &'static str {
                if self.is_sim() { "sim" } else { "gpu" }
            }
            $($(
                fn $name(&self, p: &$params, $($out: &mut [$out_ty],)+ $($input: &[$in_ty],)*)
                    -> Result<(), Error> {
                    // Outputs start as the host's (poison, or the values accumulated into).
                    $(let mut $out = { let device = self.upload(&*$out)?; ($out, device) };)+
                    $(let $input = self.upload($input)?;)*
                    Device::$name(self, p, $(&mut $out.1,)+ $(&$input,)*)?;
                    $($out.0.copy_from_slice(&self.download(&$out.1)?);)+
                    Ok(())
                }
            )*)*
        }
    };
}

lmsi_cuda::for_each_kernel!(harness);

/// The global L2 norm of `tensors` with the kernels of a clipping step: `sum_squares_partial` per
/// tensor into one partials buffer, then `sum_partials`.
pub fn global_norm(k: &dyn Kernels, tensors: &[&[f32]]) -> Result<f64, Error> {
    use lmsi_cuda::launch::{SUM_SQUARES_CHUNK, sum_squares_blocks};
    let blocks: Vec<u32> = tensors
        .iter()
        .map(|t| sum_squares_blocks(t.len() as u64))
        .collect();
    let mut partials = vec![f64::NAN; blocks.iter().sum::<u32>() as usize];
    let mut first = 0;
    for (t, &b) in tensors.iter().zip(&blocks) {
        let p = LmsiSumSquaresParams {
            len: t.len() as u64,
            chunk: SUM_SQUARES_CHUNK,
            first_partial: first,
        };
        k.sum_squares_partial(&p, &mut partials, t)?;
        first += b;
    }
    let mut sum = [f64::NAN];
    let p = LmsiNormParams {
        len: 0,
        count: first,
        max_norm: 0.0,
    };
    k.sum_partials(&p, &mut sum, &partials)?;
    Ok(sum[0].sqrt())
}

/// A small deterministic generator (64-bit LCG, top bits).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        (self.next_u64() >> 33) % n
    }

    /// Uniform in (-scale, scale), never zero (magnitude at least scale / 2^20).
    pub fn value(&mut self, scale: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        let v = (2.0 * u - 1.0) * scale;
        if v.abs() < scale / (1 << 20) as f32 {
            scale / 3.0
        } else {
            v
        }
    }

    pub fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.value(scale)).collect()
    }
}

/// A buffer of `n` NaNs: an element a kernel fails to write stays NaN and fails the comparison.
pub fn poisoned(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// A bf16 buffer of `n` NaNs, as [`poisoned`].
pub fn poisoned_bf16(n: usize) -> Vec<half::bf16> {
    vec![half::bf16::NAN; n]
}

/// Asserts that a bf16 kernel's output is its f32 twin's, `exact`, rounded to nearest even, bit
/// for bit, after [`print_max_error`] against `exact` (the rounding error): the first word of
/// `what` names the kernel.
#[track_caller]
pub fn assert_rounded(on: &dyn Kernels, what: &str, got: &[half::bf16], exact: &[f32]) {
    let widened: Vec<f32> = got.iter().map(|v| v.to_f32()).collect();
    print_max_error(on, what, &widened, exact);
    assert_eq!(got.len(), exact.len(), "{what}: lengths");
    for (i, (g, &w)) in got.iter().zip(exact).enumerate() {
        assert_eq!(
            g.to_bits(),
            half::bf16::from_f32(w).to_bits(),
            "{what}[{i}] under {}: got {g}, want {w} rounded",
            on.name()
        );
    }
}

/// Prints `max-error KERNEL WHERE VALUE` for a comparison on `on`: `KERNEL` is the first word of
/// `what`, `VALUE` the largest `|got - want|` (NaN if any value is).
pub fn print_max_error(on: &dyn Kernels, what: &str, got: &[f32], want: &[f32]) {
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, |m, e| {
            if e.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(e)
            }
        });
    let kernel = what
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .trim_end_matches([',', ':']);
    println!("max-error {kernel} {} {worst:e}", on.kind());
}

/// Asserts `|got - want| <= atol + rtol * |want|` element-wise (NaN never passes), after
/// [`print_max_error`]: the first word of `what` names the kernel.
#[track_caller]
pub fn assert_close(on: &dyn Kernels, what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    print_max_error(on, what, got, want);
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}] under {}: got {g}, want {w} (error {err:e})",
            on.name()
        );
    }
}

/// Asserts bit-identical results, after [`print_max_error`]: the first word of `what` names the
/// kernel.
#[track_caller]
pub fn assert_bits(on: &dyn Kernels, what: &str, got: &[f32], want: &[f32]) {
    print_max_error(on, what, got, want);
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}[{i}] under {}: got {g}, want {w}",
            on.name()
        );
    }
}
