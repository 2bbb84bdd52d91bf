//! The CUDA backend: every operation of [`Backend`] on one [`lmsi_cuda::Device`], with lmsi-cuda's
//! kernels and cuBLAS's products.
//!
//! The backend is written once over the device interface, so it runs unchanged on a GPU
//! ([`CudaBackend::new`], feature `cuda`) and on the simulated device ([`CudaBackend::sim`]: host
//! memory, the same kernels through the CPU shim, cuBLAS's products on the CPU), which is how CI
//! runs all of it. It keeps no state from one call to the next.
//!
//! Buffers are device buffers ([`CudaBuf`]): f32, or bf16 for what [`Dtype::Bf16`] stores in
//! bf16. A step's layout is uploaded once ([`CudaLayout`]). Every operation is enqueued on the
//! device's one stream and returns without waiting, except those whose results come back to the
//! host: [`Backend::download`], [`Backend::sample`] (the tokens), [`Backend::cross_entropy`] (the
//! losses) and [`Backend::sum_squares`]. Indices the kernels follow (token ids, slots, logit rows,
//! targets) are checked on the host first, with the CPU backend's errors.
//!
//! Agreement with [`CpuBackend`](super::CpuBackend) (see `tests/cuda_backend.rs`): gathers,
//! scatters, adds, the bias gradient and the AdamW update are exact; sampling draws the same
//! tokens; everything else that sums (matrix products, norms, softmax, attention) differs by
//! rounding only.
//!
//! # bf16
//!
//! At [`Dtype::Bf16`] ([`CudaBackend::with_dtype`]) the backend stores the weight matrices of a
//! model loaded for inference ([`Backend::upload_matrix`]), the KV caches
//! ([`Backend::kv_zeros`]) and the activations that are a product's input
//! ([`Backend::operand_zeros`]: the normalised residual, the attention output, the SwiGLU output)
//! in bf16, halving the memory of each. The kernels that write those activations (RMSNorm,
//! attention, SwiGLU) compute in f32 and round their result as they store it. Every matrix product
//! takes bf16 operands, sums in f32 (cuBLAS `GemmEx`, `CUBLAS_COMPUTE_32F`) and writes f32; an f32
//! operand (a weight of a model loaded for training, an output gradient) is rounded to bf16 just
//! before the product, as PyTorch's autocast does. What products write (q|k|v, gate|up, the
//! residual stream, logits), norms, RoPE, softmax, attention scores, sampling and the loss stay in
//! f32, and so do norm weights and biases. A model loaded
//! for training ([`crate::Storage::Training`]) keeps every parameter, gradient and AdamW moment in
//! f32: the f32 master weights that mixed-precision training updates. Rounding is to nearest even
//! everywhere, the same on the GPU and the simulated device, so bf16 runs are as deterministic as
//! f32 ones. How far bf16 results lie from the CPU's f32 is measured in `tests/cuda_bf16.rs`.

mod blas;
mod layout;
mod tensor;

use std::ops::Range;
use std::sync::Arc;

use half::bf16;
use lmsi_cuda::launch::{rmsnorm_params, rmsnorm_partial_rows};
use lmsi_cuda::params::{
    LmsiAttnShape, LmsiBiasParams, LmsiCausalAttentionParams, LmsiCrossEntropyParams,
    LmsiKvStoreParams, LmsiPagedAttentionParams, LmsiRopeParams, LmsiRowsParams, LmsiSwigluParams,
    LmsiVecParams,
};
use lmsi_cuda::{Buffer, Device};
use lmsi_sampler::cuda::CudaSampleError;

pub use layout::CudaLayout;
use tensor::bf16_operand;
pub use tensor::{CudaBuf, Dtype};

use super::{
    AttentionDims, AttentionSaved, Backend, BatchLayout, Linear, LinearGrad, RmsNormGrad, Rotation,
    check_table_rows,
};
use crate::Error;

/// The CUDA backend on one device: a GPU, or the simulated one. A clone is another handle on the
/// same device (its memory, stream, kernels and cuBLAS), so several models share one device.
///
/// ```no_run
/// use lmsi_transformer::{CudaBackend, Model};
///
/// let gpu = CudaBackend::new(0)?; // an error, not a panic, without a driver or a GPU
/// println!("{}", lmsi_transformer::Backend::describe(&gpu));
/// let model = Model::load(std::path::Path::new("models/smollm2-135m-instruct"), gpu)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct CudaBackend {
    device: Arc<Device>,
    dtype: Dtype,
}

/// A CUDA error as the backend reports it.
fn cuda(e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("cuda: {e}"))
}

/// The launch parameters of an embedding gather or scatter over `ids` into a table of
/// `table_len` values, `dim` per row; an id outside the table is an error (the kernel would read
/// past the buffer).
fn embedding_params(ids: &[u32], dim: usize, table_len: usize) -> Result<LmsiRowsParams, Error> {
    check_table_rows("embedding", ids, table_len, dim)?;
    let vocab = table_len.checked_div(dim).unwrap_or(0);
    Ok(LmsiRowsParams {
        rows: count("tokens", ids.len())?,
        dim: count("embedding width", dim)?,
        table_rows: count("vocabulary", vocab)?,
    })
}

/// The CPU backend's check that a buffer holds `needed` values.
fn need(what: &str, have: usize, needed: usize) -> Result<(), Error> {
    if have < needed {
        return Err(Error::Backend(format!(
            "{what}: buffer has {have} values, needs {needed}"
        )));
    }
    Ok(())
}

/// `v` as a kernel's 32-bit count.
fn count(what: &str, v: usize) -> Result<u32, Error> {
    u32::try_from(v)
        .map_err(|_| Error::Backend(format!("{what}: {v} is too large for the GPU kernels")))
}

/// The launch parameters of a gather or scatter of the logit rows `rows` of a step, over a buffer
/// of `x_len` values, `dim` per row: `rows` must lie within the step's logit rows, and every row
/// they name within the buffer.
fn logit_rows_params(
    layout: &CudaLayout,
    rows: &Range<usize>,
    x_len: usize,
    dim: usize,
) -> Result<LmsiRowsParams, Error> {
    let x_rows = x_len.checked_div(dim).unwrap_or(0);
    let all = &layout.host.logit_rows;
    let picked = all.get(rows.clone()).ok_or_else(|| {
        Error::Backend(format!(
            "logit rows {rows:?} asked of a step with {} logit rows",
            all.len()
        ))
    })?;
    if let Some(r) = picked.iter().find(|&&r| r as usize >= x_rows) {
        return Err(Error::Backend(format!(
            "logit row {r} is outside the step's {x_rows} rows"
        )));
    }
    Ok(LmsiRowsParams {
        rows: count("rows", rows.len())?,
        dim: count("width", dim)?,
        table_rows: count("rows", x_rows)?,
    })
}

impl CudaBackend {
    /// Opens GPU `ordinal`: creates its context, loads cuBLAS and compiles (or takes from the
    /// on-disk cache) every kernel, so that a GPU that cannot run the model fails here.
    ///
    /// # Errors
    ///
    /// Without libcuda [`lmsi_cuda::Error::NoDriver`] ("no CUDA driver (libcuda) found"); without
    /// the device, or a driver that does not start, [`lmsi_cuda::Error::Driver`]; without libcublas
    /// or libnvrtc [`lmsi_cuda::Error::NoCublas`] / [`lmsi_cuda::Error::NoNvrtc`]. Never panics.
    /// [`lmsi_cuda::Error::NotBuilt`] in a build without the `cuda` feature. Never panics.
    pub fn new(ordinal: usize) -> Result<Self, lmsi_cuda::Error> {
        Ok(Self::on(Device::gpu(ordinal)?))
    }

    /// The backend on the simulated device (see [`lmsi_cuda::Device::sim`]): the same host code,
    /// kernels and products as on a GPU, run on the CPU. Slow; it is for checking.
    pub fn sim() -> Self {
        Self::on(Device::sim())
    }

    /// The backend on `device`, in f32.
    pub fn on(device: Device) -> Self {
        CudaBackend {
            device: Arc::new(device),
            dtype: Dtype::F32,
        }
    }

    /// The backend storing weight matrices and KV caches at `dtype` (see the module
    /// docs, "bf16"); a handle on the same device.
    ///
    /// ```
    /// use lmsi_transformer::{CudaBackend, Dtype};
    ///
    /// let sim = CudaBackend::sim().with_dtype(Dtype::Bf16);
    /// assert_eq!(sim.dtype(), Dtype::Bf16);
    /// ```
    pub fn with_dtype(self, dtype: Dtype) -> Self {
        CudaBackend { dtype, ..self }
    }

    /// The element type weights and caches are stored at.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Zeros at the backend's dtype: what the KV caches and the products' input activations are
    /// stored in.
    fn zeros_at_dtype(&self, len: usize) -> Result<CudaBuf, Error> {
        match self.dtype {
            Dtype::F32 => self.alloc(len).map(CudaBuf::F32),
            Dtype::Bf16 => self.device.zeros(len).map(CudaBuf::Bf16).map_err(cuda),
        }
    }

    fn alloc(&self, len: usize) -> Result<Buffer<f32>, Error> {
        self.device.zeros(len).map_err(cuda)
    }
}

/// The error of a key and a value cache of different element types.
fn mixed_caches() -> Error {
    Error::Backend("kv cache: the key and value caches differ in element type".into())
}

/// Query heads per kv head.
fn group(dims: &AttentionDims) -> Result<u32, Error> {
    count(
        "query heads per kv head",
        dims.num_heads / dims.num_kv_heads.max(1),
    )
}

/// The attention kernels' head geometry.
fn shape(dims: &AttentionDims) -> Result<LmsiAttnShape, Error> {
    Ok(LmsiAttnShape {
        num_heads: count("heads", dims.num_heads)?,
        num_kv_heads: count("kv heads", dims.num_kv_heads)?,
        head_dim: count("head_dim", dims.head_dim)?,
        block_size: count("block_size", dims.block_size)?,
        // The kernels read 0 as no window; a window past u32 covers every position anyway.
        window: dims
            .window
            .map_or(0, |w| u32::try_from(w).unwrap_or(u32::MAX)),
        scale: dims.scale,
    })
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Layout = CudaLayout;

    fn describe(&self) -> String {
        match self.dtype {
            Dtype::F32 => self.device.describe(),
            dtype => format!("{}, {dtype}", self.device.describe()),
        }
    }

    fn copy_range(&self, src: &CudaBuf, start: usize, len: usize) -> Result<CudaBuf, Error> {
        need("copied range", src.len(), start + len)?;
        let d = &self.device;
        Ok(match src {
            CudaBuf::F32(src) => {
                let mut dst = d.zeros(len).map_err(cuda)?;
                d.copy(src.slice(start..start + len).map_err(cuda)?, &mut dst)
                    .map_err(cuda)?;
                CudaBuf::F32(dst)
            }
            CudaBuf::Bf16(src) => {
                let mut dst = d.zeros(len).map_err(cuda)?;
                d.copy(src.slice(start..start + len).map_err(cuda)?, &mut dst)
                    .map_err(cuda)?;
                CudaBuf::Bf16(dst)
            }
        })
    }

    fn sample(
        &self,
        logits: &CudaBuf,
        rows: &[u32],
        vocab: usize,
        params: &lmsi_sampler::SamplingParams,
        keys: &[lmsi_sampler::RowKey],
    ) -> Result<Vec<lmsi_sampler::Sampled>, Error> {
        let logits = logits.f32("sampled logits")?;
        lmsi_sampler::cuda::sample_rows(&self.device, logits, rows, vocab, params, keys).map_err(
            |e| match e {
                CudaSampleError::Sample(e) => Error::Sampling(e),
                other => Error::Backend(format!("sample: {other}")),
            },
        )
    }

    fn zeros(&self, len: usize) -> Result<CudaBuf, Error> {
        self.alloc(len).map(CudaBuf::F32)
    }

    fn upload(&self, data: &[f32]) -> Result<CudaBuf, Error> {
        self.device.upload(data).map(CudaBuf::F32).map_err(cuda)
    }

    fn upload_matrix(&self, data: &[f32]) -> Result<CudaBuf, Error> {
        match self.dtype {
            Dtype::F32 => self.upload(data),
            Dtype::Bf16 => {
                let rounded: Vec<bf16> = data.iter().map(|&v| bf16::from_f32(v)).collect();
                self.device
                    .upload(&rounded)
                    .map(CudaBuf::Bf16)
                    .map_err(cuda)
            }
        }
    }

    fn kv_zeros(&self, len: usize) -> Result<CudaBuf, Error> {
        self.zeros_at_dtype(len)
    }

    fn operand_zeros(&self, len: usize) -> Result<CudaBuf, Error> {
        self.zeros_at_dtype(len)
    }

    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn check_memory(&self, plan: &crate::memory::MemoryPlan) -> Result<(), Error> {
        use crate::memory::human_bytes;
        let (free, total) = self.device.memory().map_err(cuda)?;
        let device = self.device.describe();
        tracing::info!(
            "memory plan, {plan}; {device} has {} free of {}",
            human_bytes(free),
            human_bytes(total)
        );
        if plan.total() > free {
            return Err(Error::OutOfMemory {
                plan: plan.to_string(),
                device,
                free,
                total,
            });
        }
        Ok(())
    }

    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>, Error> {
        match buf {
            CudaBuf::F32(b) => self.device.download(b).map_err(cuda),
            CudaBuf::Bf16(b) => {
                let values = self.device.download(b).map_err(cuda)?;
                Ok(values.iter().map(|v| v.to_f32()).collect())
            }
        }
    }

    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len()
    }

    fn prepare(&self, layout: &BatchLayout) -> Result<CudaLayout, Error> {
        CudaLayout::new(&self.device, layout)
    }

    fn embedding(
        &self,
        out: &mut CudaBuf,
        table: &CudaBuf,
        layout: &CudaLayout,
        dim: usize,
    ) -> Result<(), Error> {
        let ids = &layout.host.token_ids;
        need("embedding output", out.len(), ids.len() * dim)?;
        let p = embedding_params(ids, dim, table.len())?;
        let out = out.f32_mut("embedding output")?;
        match table {
            CudaBuf::F32(t) => self.device.gather_rows(&p, out, t, layout.token_ids()),
            CudaBuf::Bf16(t) => self.device.gather_rows_bf16(&p, out, t, layout.token_ids()),
        }
        .map_err(cuda)
    }

    fn rmsnorm(
        &self,
        out: &mut CudaBuf,
        x: &CudaBuf,
        weight: &CudaBuf,
        rows: usize,
        eps: f32,
    ) -> Result<(), Error> {
        let dim = weight.len();
        need("rmsnorm input", x.len(), rows * dim)?;
        need("rmsnorm output", out.len(), rows * dim)?;
        let p = rmsnorm_params(count("rows", rows)?, count("width", dim)?, eps);
        let (x, weight) = (x.f32("rmsnorm input")?, weight.f32("rmsnorm weight")?);
        match out {
            CudaBuf::F32(out) => self.device.rmsnorm_forward(&p, out, x, weight),
            CudaBuf::Bf16(out) => self.device.rmsnorm_forward_bf16(&p, out, x, weight),
        }
        .map_err(cuda)
    }

    fn matmul(
        &self,
        out: &mut CudaBuf,
        x: &CudaBuf,
        linear: &Linear<'_, CudaBuf>,
        rows: usize,
        accumulate: bool,
    ) -> Result<(), Error> {
        let (w, bias) = (linear.weight, linear.bias);
        let (m, n, k) = (rows, linear.out_features, linear.in_features);
        if let Some(bias) = bias {
            need("matmul bias", bias.len(), n)?;
        }
        let out = out.f32_mut("matmul output")?;
        let d = &self.device;
        match (self.dtype, x, w) {
            (Dtype::F32, CudaBuf::F32(x), CudaBuf::F32(w)) => {
                blas::linear(d, out, x, w, m, n, k, accumulate)?
            }
            _ => {
                let (x, w) = (bf16_operand(d, x, m * k)?, bf16_operand(d, w, n * k)?);
                blas::linear(d, out, &x, &w, m, n, k, accumulate)?
            }
        }
        if let Some(bias) = bias {
            let p = LmsiBiasParams {
                rows: count("rows", m)?,
                dim: count("columns", n)?,
            };
            d.bias_add(&p, out, bias.f32("matmul bias")?)
                .map_err(cuda)?;
        }
        Ok(())
    }

    fn rope(
        &self,
        qkv: &mut CudaBuf,
        layout: &CudaLayout,
        dims: &AttentionDims,
        inv_freq: &CudaBuf,
        rotation: Rotation,
    ) -> Result<(), Error> {
        let tokens = layout.host.positions.len();
        need("rope input", qkv.len(), tokens * dims.qkv_dim())?;
        let (qkv, inv_freq) = (
            qkv.f32_mut("rope input")?,
            inv_freq.f32("rope frequencies")?,
        );
        let p = LmsiRopeParams {
            tokens: count("tokens", tokens)?,
            num_heads: count("heads", dims.num_heads)?,
            num_kv_heads: count("kv heads", dims.num_kv_heads)?,
            head_dim: count("head_dim", dims.head_dim)?,
            inverse: u32::from(rotation == Rotation::Inverse),
        };
        self.device
            .rope(&p, qkv, layout.positions(), inv_freq)
            .map_err(cuda)
    }

    fn kv_store(
        &self,
        k_cache: &mut CudaBuf,
        v_cache: &mut CudaBuf,
        qkv: &CudaBuf,
        layout: &CudaLayout,
        dims: &AttentionDims,
    ) -> Result<(), Error> {
        let slots = &layout.host.slots;
        need("kv input", qkv.len(), slots.len() * dims.qkv_dim())?;
        let block_len = dims.block_len().max(1);
        let blocks = k_cache.len().min(v_cache.len()) / block_len;
        // The kernel skips a slot outside the cache; the CPU fails, and so does this.
        if let Some(&slot) = slots
            .iter()
            .find(|&&s| s as usize / dims.block_size.max(1) >= blocks)
        {
            return Err(Error::Backend(format!(
                "kv cache: slot {slot} is outside its {blocks} blocks of {}",
                dims.block_size
            )));
        }
        let p = LmsiKvStoreParams {
            shape: shape(dims)?,
            tokens: count("tokens", slots.len())?,
            cache_blocks: count("cache blocks", blocks)?,
        };
        let (qkv, slots) = (qkv.f32("kv input")?, layout.slots());
        match (k_cache, v_cache) {
            (CudaBuf::F32(k), CudaBuf::F32(v)) => self.device.kv_store(&p, k, v, qkv, slots),
            (CudaBuf::Bf16(k), CudaBuf::Bf16(v)) => self.device.kv_store_bf16(&p, k, v, qkv, slots),
            _ => return Err(mixed_caches()),
        }
        .map_err(cuda)
    }

    fn paged_attention(
        &self,
        out: &mut CudaBuf,
        qkv: &CudaBuf,
        k_cache: &CudaBuf,
        v_cache: &CudaBuf,
        layout: &CudaLayout,
        dims: &AttentionDims,
    ) -> Result<(), Error> {
        let tokens = layout.host.num_tokens();
        need(
            "attention output",
            out.len(),
            tokens * dims.num_heads * dims.head_dim,
        )?;
        let items = layout.paged_items(&self.device, group(dims)?)?;
        let p = LmsiPagedAttentionParams {
            shape: shape(dims)?,
            num_items: count("work items", items.num_items())?,
            tokens: count("tokens", tokens)?,
            item_rows_len: count("work item rows", items.rows().len())?,
            block_tables_len: count("block tables", layout.host.block_tables.len())?,
            cache_blocks: count(
                "cache blocks",
                k_cache.len().min(v_cache.len()) / dims.block_len().max(1),
            )?,
        };
        let qkv = qkv.f32("attention input")?;
        let d = &self.device;
        let (positions, row_tables) = (layout.positions(), layout.row_tables());
        let (tables, offsets, rows) = (layout.block_tables(), items.offsets(), items.rows());
        match (out, k_cache, v_cache) {
            (CudaBuf::F32(out), CudaBuf::F32(k), CudaBuf::F32(v)) => d.paged_attention(
                &p, out, qkv, k, v, positions, row_tables, tables, offsets, rows,
            ),
            (CudaBuf::Bf16(out), CudaBuf::Bf16(k), CudaBuf::Bf16(v)) => d.paged_attention_bf16(
                &p, out, qkv, k, v, positions, row_tables, tables, offsets, rows,
            ),
            _ => {
                return Err(Error::Backend(
                    "paged attention: the output and the key and value caches differ in element \
                     type (all f32, or all bf16)"
                        .into(),
                ));
            }
        }
        .map_err(cuda)
    }

    fn swiglu(
        &self,
        out: &mut CudaBuf,
        gate_up: &CudaBuf,
        rows: usize,
        inter: usize,
    ) -> Result<(), Error> {
        need("swiglu input", gate_up.len(), rows * 2 * inter)?;
        need("swiglu output", out.len(), rows * inter)?;
        let p = LmsiSwigluParams {
            rows: count("rows", rows)?,
            inter: count("intermediate size", inter)?,
        };
        let gate_up = gate_up.f32("swiglu input")?;
        match out {
            CudaBuf::F32(out) => self.device.swiglu_forward(&p, out, gate_up),
            CudaBuf::Bf16(out) => self.device.swiglu_forward_bf16(&p, out, gate_up),
        }
        .map_err(cuda)
    }

    fn gather_logit_rows(
        &self,
        out: &mut CudaBuf,
        x: &CudaBuf,
        layout: &CudaLayout,
        rows: Range<usize>,
        dim: usize,
    ) -> Result<(), Error> {
        let p = logit_rows_params(layout, &rows, x.len(), dim)?;
        need("gathered rows", out.len(), rows.len() * dim)?;
        let (out, x) = (out.f32_mut("gathered rows")?, x.f32("gathered input")?);
        self.device
            .gather_rows(&p, out, x, layout.logit_rows(rows)?)
            .map_err(cuda)
    }

    fn copy_block(
        &self,
        cache: &mut CudaBuf,
        src: usize,
        dst: usize,
        block_len: usize,
    ) -> Result<(), Error> {
        need("cache", cache.len(), (src.max(dst) + 1) * block_len)?;
        if src == dst {
            return Ok(());
        }
        let from = src * block_len..(src + 1) * block_len;
        let d = &self.device;
        match cache {
            CudaBuf::F32(c) => d.copy_within(c, from, dst * block_len),
            CudaBuf::Bf16(c) => d.copy_within(c, from, dst * block_len),
        }
        .map_err(cuda)
    }

    fn copy(&self, buf: &CudaBuf) -> Result<CudaBuf, Error> {
        self.copy_range(buf, 0, buf.len())
    }

    fn copy_into(&self, dst: &mut CudaBuf, src: &CudaBuf) -> Result<(), Error> {
        let d = &self.device;
        match (src, dst) {
            (CudaBuf::F32(src), CudaBuf::F32(dst)) => d.copy(src, dst),
            (CudaBuf::Bf16(src), CudaBuf::Bf16(dst)) => d.copy(src, dst),
            _ => return Err(Error::Backend("copy: f32 and bf16 buffers mixed".into())),
        }
        .map_err(cuda)
    }

    fn zero(&self, buf: &mut CudaBuf) -> Result<(), Error> {
        match buf {
            CudaBuf::F32(b) => self.device.fill_zeros(b),
            CudaBuf::Bf16(b) => self.device.fill_zeros(b),
        }
        .map_err(cuda)
    }

    fn add_assign(&self, x: &mut CudaBuf, y: &CudaBuf, len: usize) -> Result<(), Error> {
        need("add input", y.len(), len)?;
        need("add output", x.len(), len)?;
        let p = LmsiVecParams {
            len: len as u64,
            factor: 0.0,
        };
        let (x, y) = (x.f32_mut("add output")?, y.f32("add input")?);
        self.device.add_assign(&p, x, y).map_err(cuda)
    }

    fn causal_attention(
        &self,
        out: &mut CudaBuf,
        lse: &mut CudaBuf,
        qkv: &CudaBuf,
        layout: &CudaLayout,
        dims: &AttentionDims,
    ) -> Result<(), Error> {
        let t = layout.host.num_tokens();
        need("attention input", qkv.len(), t * dims.qkv_dim())?;
        need(
            "attention output",
            out.len(),
            t * dims.num_heads * dims.head_dim,
        )?;
        need("attention log-sum-exp", lse.len(), t * dims.num_heads)?;
        let items = layout.train_items(&self.device, group(dims)?)?;
        let p = LmsiCausalAttentionParams {
            shape: shape(dims)?,
            tokens: count("tokens", t)?,
            num_items: count("work items", items.query.len())?,
        };
        let (lse, qkv) = (lse.f32_mut("log-sum-exp")?, qkv.f32("attention input")?);
        let d = &self.device;
        match out {
            CudaBuf::F32(out) => d.causal_attention_forward(&p, out, lse, qkv, &items.query),
            CudaBuf::Bf16(out) => d.causal_attention_forward_bf16(&p, out, lse, qkv, &items.query),
        }
        .map_err(cuda)
    }

    fn causal_attention_backward(
        &self,
        d_qkv: &mut CudaBuf,
        d_out: &CudaBuf,
        forward: &AttentionSaved<'_, CudaBuf>,
        layout: &CudaLayout,
        dims: &AttentionDims,
    ) -> Result<(), Error> {
        let (qkv, out, lse) = (forward.qkv, forward.out, forward.lse);
        let t = layout.host.num_tokens();
        need("attention gradient", d_qkv.len(), t * dims.qkv_dim())?;
        let items = layout.train_items(&self.device, group(dims)?)?;
        let mut p = LmsiCausalAttentionParams {
            shape: shape(dims)?,
            tokens: count("tokens", t)?,
            num_items: count("work items", items.query.len())?,
        };
        let mut delta = self.alloc(t * dims.num_heads)?;
        let device = &self.device;
        let d_qkv = d_qkv.f32_mut("attention input gradient")?;
        let d_out = d_out.f32("attention output gradient")?;
        let (lse, qkv) = (lse.f32("log-sum-exp")?, qkv.f32("attention input")?);
        match out {
            CudaBuf::F32(out) => device.causal_attention_backward_delta(&p, &mut delta, d_out, out),
            CudaBuf::Bf16(out) => {
                device.causal_attention_backward_delta_bf16(&p, &mut delta, d_out, out)
            }
        }
        .map_err(cuda)?;
        device
            .causal_attention_backward_dq(&p, &mut *d_qkv, d_out, lse, &delta, qkv, &items.query)
            .map_err(cuda)?;
        p.num_items = count("work items", items.keys.len())?;
        device
            .causal_attention_backward_dkdv(&p, d_qkv, d_out, lse, &delta, qkv, &items.keys)
            .map_err(cuda)
    }

    fn rmsnorm_backward(
        &self,
        grad: RmsNormGrad<'_, CudaBuf>,
        d_out: &CudaBuf,
        x: &CudaBuf,
        weight: &CudaBuf,
        rows: usize,
        eps: f32,
    ) -> Result<(), Error> {
        let (d_x, d_weight) = (grad.input, grad.weight);
        let dim = weight.len();
        for (what, len) in [
            ("input", x.len()),
            ("output gradient", d_out.len()),
            ("input gradient", d_x.len()),
        ] {
            need(&format!("rmsnorm backward {what}"), len, rows * dim)?;
        }
        // Per-block partial weight gradients, added in block order: the CPU's 64-row chunks.
        let p = rmsnorm_params(count("rows", rows)?, count("width", dim)?, eps);
        let mut partial = self.alloc(rmsnorm_partial_rows(&p) as usize * dim)?;
        let (d_x, d_weight) = (
            d_x.f32_mut("rmsnorm input gradient")?,
            d_weight.f32_mut("rmsnorm weight gradient")?,
        );
        let (d_out, x) = (
            d_out.f32("rmsnorm output gradient")?,
            x.f32("rmsnorm input")?,
        );
        let weight = weight.f32("rmsnorm weight")?;
        self.device
            .rmsnorm_backward(&p, d_x, &mut partial, d_out, x, weight)
            .map_err(cuda)?;
        self.device
            .rmsnorm_backward_reduce(&p, d_weight, &partial)
            .map_err(cuda)
    }

    fn matmul_backward_input(
        &self,
        d_x: &mut CudaBuf,
        d_out: &CudaBuf,
        linear: &Linear<'_, CudaBuf>,
        rows: usize,
        accumulate: bool,
    ) -> Result<(), Error> {
        let w = linear.weight;
        let (m, n, k) = (rows, linear.out_features, linear.in_features);
        let d_x = d_x.f32_mut("matmul input gradient")?;
        let d = &self.device;
        match (self.dtype, d_out, w) {
            (Dtype::F32, CudaBuf::F32(d_out), CudaBuf::F32(w)) => {
                blas::linear_backward_input(d, d_x, d_out, w, m, n, k, accumulate)
            }
            _ => {
                let (d_out, w) = (bf16_operand(d, d_out, m * n)?, bf16_operand(d, w, n * k)?);
                blas::linear_backward_input(d, d_x, &d_out, &w, m, n, k, accumulate)
            }
        }
    }

    fn matmul_backward_weight(
        &self,
        grad: LinearGrad<'_, CudaBuf>,
        d_out: &CudaBuf,
        x: &CudaBuf,
        rows: usize,
    ) -> Result<(), Error> {
        let (d_w, d_bias) = (grad.weight, grad.bias);
        let (m, n, k) = (rows, grad.out_features, grad.in_features);
        if let Some(d_bias) = &d_bias {
            need("matmul backward bias gradient", d_bias.len(), n)?;
        }
        let d_w = d_w.f32_mut("matmul weight gradient")?;
        let d = &self.device;
        match (self.dtype, d_out, x) {
            (Dtype::F32, CudaBuf::F32(d_out), CudaBuf::F32(x)) => {
                blas::linear_backward_weight(d, d_w, d_out, x, m, n, k)?
            }
            _ => {
                let (d_out, x) = (bf16_operand(d, d_out, m * n)?, bf16_operand(d, x, m * k)?);
                blas::linear_backward_weight(d, d_w, &d_out, &x, m, n, k)?
            }
        }
        if let Some(d_bias) = d_bias {
            let p = LmsiBiasParams {
                rows: count("rows", m)?,
                dim: count("columns", n)?,
            };
            let d_bias = d_bias.f32_mut("bias gradient")?;
            d.bias_grad(&p, d_bias, d_out.f32("matmul output gradient")?)
                .map_err(cuda)?;
        }
        Ok(())
    }

    fn swiglu_backward(
        &self,
        d_gate_up: &mut CudaBuf,
        d_out: &CudaBuf,
        gate_up: &CudaBuf,
        rows: usize,
        inter: usize,
    ) -> Result<(), Error> {
        need("swiglu backward input", gate_up.len(), rows * 2 * inter)?;
        need("swiglu backward output gradient", d_out.len(), rows * inter)?;
        need(
            "swiglu backward input gradient",
            d_gate_up.len(),
            rows * 2 * inter,
        )?;
        let p = LmsiSwigluParams {
            rows: count("rows", rows)?,
            inter: count("intermediate size", inter)?,
        };
        let d_gate_up = d_gate_up.f32_mut("swiglu input gradient")?;
        let (d_out, gate_up) = (
            d_out.f32("swiglu output gradient")?,
            gate_up.f32("swiglu input")?,
        );
        self.device
            .swiglu_backward(&p, d_gate_up, d_out, gate_up)
            .map_err(cuda)
    }

    fn embedding_backward(
        &self,
        d_table: &mut CudaBuf,
        d_out: &CudaBuf,
        layout: &CudaLayout,
        dim: usize,
    ) -> Result<(), Error> {
        let ids = &layout.host.token_ids;
        need(
            "embedding backward output gradient",
            d_out.len(),
            ids.len() * dim,
        )?;
        let p = embedding_params(ids, dim, d_table.len())?;
        let d_table = d_table.f32_mut("embedding gradient")?;
        self.device
            .scatter_add_rows(
                &p,
                d_table,
                d_out.f32("embedding output gradient")?,
                layout.token_ids(),
            )
            .map_err(cuda)
    }

    fn scatter_logit_rows(
        &self,
        x: &mut CudaBuf,
        src: &CudaBuf,
        layout: &CudaLayout,
        rows: Range<usize>,
        dim: usize,
    ) -> Result<(), Error> {
        let p = logit_rows_params(layout, &rows, x.len(), dim)?;
        need("scattered rows", src.len(), rows.len() * dim)?;
        let (x, src) = (x.f32_mut("scattered output")?, src.f32("scattered rows")?);
        self.device
            .scatter_add_rows(&p, x, src, layout.logit_rows(rows)?)
            .map_err(cuda)
    }

    fn sum_squares(&self, buf: &CudaBuf) -> Result<f64, Error> {
        let buf = buf.f32("sum of squares input")?;
        lmsi_adamw::cuda::sum_squares(&self.device, [buf.view()]).map_err(cuda)
    }

    fn scale(&self, buf: &mut CudaBuf, factor: f32) -> Result<(), Error> {
        let p = LmsiVecParams {
            len: buf.len() as u64,
            factor,
        };
        self.device
            .scale_assign(&p, buf.f32_mut("scaled buffer")?)
            .map_err(cuda)
    }

    fn adamw_update(
        &self,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        scalars: &lmsi_adamw::StepScalars,
    ) -> Result<(), Error> {
        let param = match param {
            CudaBuf::F32(p) => p,
            CudaBuf::Bf16(_) => {
                return Err(Error::Backend(
                    "adamw: a bf16 weight cannot be updated in place; load the model for training \
                     (Storage::Training), which keeps every weight in f32"
                        .into(),
                ));
            }
        };
        let grad = grad.f32("adamw gradient")?;
        let (m, v) = (
            m.f32_mut("adamw first moment")?,
            v.f32_mut("adamw second moment")?,
        );
        lmsi_adamw::cuda::update(&self.device, param, grad, m, v, scalars)
            .map_err(|e| Error::Backend(format!("adamw: {e}")))
    }

    fn cross_entropy(
        &self,
        logits: &mut CudaBuf,
        layout: &CudaLayout,
        rows: Range<usize>,
        vocab: usize,
        scales: &[f32],
    ) -> Result<Vec<f32>, Error> {
        let all = &layout.host.targets;
        let targets = all.get(rows.clone()).ok_or_else(|| {
            Error::Backend(format!(
                "targets {rows:?} asked of a step with {} targets",
                all.len()
            ))
        })?;
        need("cross-entropy logits", logits.len(), targets.len() * vocab)?;
        need("cross-entropy row scales", scales.len(), targets.len())?;
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Backend(format!(
                "cross-entropy: target {bad} is outside a row's {vocab} logits"
            )));
        }
        let p = LmsiCrossEntropyParams {
            rows: count("rows", targets.len())?,
            vocab: count("vocabulary", vocab)?,
        };
        let mut losses = self.alloc(targets.len())?;
        let scales = self.device.upload(scales).map_err(cuda)?;
        let logits = logits.f32_mut("cross-entropy logits")?;
        self.device
            .cross_entropy(&p, logits, &mut losses, layout.targets(rows)?, &scales)
            .map_err(cuda)?;
        self.device.download(&losses).map_err(cuda)
    }
}
