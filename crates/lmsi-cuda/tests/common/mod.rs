//! Helpers shared by the kernel tests: where kernels run (the shim under every schedule, and the
//! GPU when there is one), random inputs that are never zero, tolerances.
#![allow(dead_code)] // each test file uses its own subset

use lmsi_cuda::Error;
use lmsi_cuda::params::*;
use lmsi_cuda::sim::{Schedule, Sim};

/// The three fiber orders every kernel is tested under.
pub const SCHEDULES: [Schedule; 3] = [
    Schedule::InOrder,
    Schedule::Reversed,
    Schedule::Shuffled(0x5eed),
];

/// Everywhere the kernels run: the shim under each schedule, then the GPU if there is one (with
/// feature `cuda`; otherwise the reason is printed once).
pub fn runners() -> Vec<Box<dyn Kernels>> {
    let shims = SCHEDULES
        .into_iter()
        .map(|s| Box::new(Sim::new(s)) as Box<dyn Kernels>);
    #[cfg(feature = "cuda")]
    let gpu = gpu::device().map(|d| Box::new(gpu::Gpu(d)) as Box<dyn Kernels>);
    #[cfg(not(feature = "cuda"))]
    let gpu = None;
    shims.chain(gpu).collect()
}

/// Declares [`Kernels`] from each kernel's parameter struct, outputs and inputs, and implements it
/// for the shim (delegating to [`Sim`]) and for the GPU (upload, launch, download).
macro_rules! kernels {
    ($(fn $name:ident($params:ty; $($out:ident: $out_ty:ty),+; $($input:ident: $in_ty:ty),*);)*) => {
        /// The kernels on host slices, wherever they run.
        pub trait Kernels {
            /// Where, for messages.
            fn name(&self) -> String;
            $(
                #[allow(clippy::too_many_arguments)]
                fn $name(&self, p: &$params, $($out: &mut [$out_ty],)+ $($input: &[$in_ty],)*)
                    -> Result<(), Error>;
            )*
        }

        impl Kernels for Sim {
            fn name(&self) -> String {
                format!("shim, {:?}", self.schedule())
            }
            $(
                fn $name(&self, p: &$params, $($out: &mut [$out_ty],)+ $($input: &[$in_ty],)*)
                    -> Result<(), Error> {
                    Sim::$name(self, p, $($out,)+ $($input,)*)
                }
            )*
        }

        #[cfg(feature = "cuda")]
        impl Kernels for gpu::Gpu {
            fn name(&self) -> String {
                format!("{:?}", self.0)
            }
            $(
                fn $name(&self, p: &$params, $($out: &mut [$out_ty],)+ $($input: &[$in_ty],)*)
                    -> Result<(), Error> {
                    let s = self.0.stream();
                    // Outputs start as the host's (poison, or the values accumulated into).
                    $(let mut $out = {
                        let device = s.clone_htod(&*$out)?;
                        ($out, device)
                    };)+
                    $(let $input = s.clone_htod($input)?;)*
                    self.0.$name(p, $(&mut $out.1,)+ $(&$input,)*)?;
                    $(s.memcpy_dtoh(&$out.1, $out.0)?;)+
                    s.synchronize()?;
                    Ok(())
                }
            )*
        }
    };
}

kernels! {
    fn gather_rows(LmsiRowsParams; out: f32; table: f32, index: u32);
    fn scatter_add_rows(LmsiRowsParams; table: f32; src: f32, index: u32);
    fn rmsnorm_forward(LmsiRmsnormParams; out: f32; x: f32, weight: f32);
    fn rmsnorm_backward(LmsiRmsnormParams; d_x: f32, partial_dw: f32; d_out: f32, x: f32, weight: f32);
    fn rmsnorm_backward_reduce(LmsiRmsnormParams; d_weight: f32; partial_dw: f32);
    fn rope(LmsiRopeParams; qkv: f32; positions: u32, inv_freq: f32);
    fn swiglu_forward(LmsiSwigluParams; out: f32; gate_up: f32);
    fn swiglu_backward(LmsiSwigluParams; d_gate_up: f32; d_out: f32, gate_up: f32);
    fn add_assign(LmsiVecParams; x: f32; y: f32);
    fn scale_assign(LmsiVecParams; x: f32;);
    fn bias_add(LmsiBiasParams; out: f32; bias: f32);
    fn bias_grad(LmsiBiasParams; d_bias: f32; d_out: f32);
    fn cross_entropy(LmsiCrossEntropyParams; logits: f32, losses: f32; targets: u32);
    fn adamw_update(LmsiAdamwParams; param: f32, m: f32, v: f32; grad: f32);
    fn sum_squares_partial(LmsiSumSquaresParams; partials: f64; x: f32);
    fn sum_partials(LmsiNormParams; sum: f64; partials: f64);
    fn clip_scale(LmsiNormParams; x: f32; sum: f64);
    fn sample_rows(
        LmsiSampleParams;
        tokens: u32, logprobs: f32, sampling_logprobs: f32, status: i32;
        logits: f32, sequences: u64, steps: u32
    );
    fn kv_store(LmsiKvStoreParams; k_cache: f32, v_cache: f32; qkv: f32, slots: u32);
    fn paged_attention(
        LmsiPagedAttentionParams;
        out: f32;
        qkv: f32, k_cache: f32, v_cache: f32, positions: u32, row_tables: u32, block_tables: u32,
        item_offsets: u32, item_rows: u32
    );
    fn causal_attention_forward(LmsiCausalAttentionParams; out: f32, lse: f32; qkv: f32, items: LmsiAttnItem);
    fn causal_attention_backward_delta(LmsiCausalAttentionParams; delta: f32; d_out: f32, out: f32);
    fn causal_attention_backward_dq(
        LmsiCausalAttentionParams;
        d_qkv: f32;
        d_out: f32, lse: f32, delta: f32, qkv: f32, items: LmsiAttnItem
    );
    fn causal_attention_backward_dkdv(
        LmsiCausalAttentionParams;
        d_qkv: f32;
        d_out: f32, lse: f32, delta: f32, qkv: f32, items: LmsiAttnItem
    );
}

#[cfg(feature = "cuda")]
pub mod gpu {
    use std::sync::{Arc, OnceLock};

    use lmsi_cuda::cuda::Device;

    /// The GPU as a place to run kernels on host slices.
    pub struct Gpu(pub Arc<Device>);

    /// GPU 0, opened once per test binary; `None` (with the reason printed once) without one.
    pub fn device() -> Option<Arc<Device>> {
        static DEVICE: OnceLock<Option<Arc<Device>>> = OnceLock::new();
        DEVICE
            .get_or_init(|| match Device::new(0) {
                Ok(device) => Some(Arc::new(device)),
                Err(e) => {
                    eprintln!("GPU runs skipped: {e}");
                    None
                }
            })
            .clone()
    }
}

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

/// Asserts `|got - want| <= atol + rtol * |want|` element-wise (NaN never passes).
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (error {err:e})"
        );
    }
}

/// Asserts bit-identical results.
#[track_caller]
pub fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}[{i}]: got {g}, want {w}");
    }
}
