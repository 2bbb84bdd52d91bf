//! Llama-family transformers from Hugging Face files, on the CPU, a GPU (feature `cuda`) or the
//! simulated CUDA device.
//!
//! - [`Config`]: `config.json` of `llama`, `qwen2` and `mistral` models, checked.
//! - [`WeightFiles`]: safetensors weights (single file or sharded; f32, f16 or bf16), memory-mapped and
//!   converted to f32, each tensor checked for presence and shape.
//! - [`gguf`]: GGUF model files (llama.cpp's format), every tensor type dequantised on load, the
//!   tokenizer built from the file's metadata. [`Model::load`] and [`Tokenizer::load`] read a GGUF
//!   file wherever they are given a file instead of a directory.
//! - [`Tokenizer`]: `tokenizer.json` through the `tokenizers` crate, BOS/EOS as the model's files say,
//!   incremental decoding.
//! - [`Model`]: the forward pass, written once over a [`Backend`]; [`CpuBackend`] is the f32 reference,
//!   [`CudaBackend`] runs the same operations with lmsi-cuda's kernels on a GPU (feature `cuda`) or
//!   on the simulated device ([`CudaBackend::sim`], in every build: slow, for checking).
//! - [`KvCache`]: the paged key/value cache with reference-counted blocks, forks and copy-on-write.
//! - [`generate`]: batched generation of many sampled paths per prompt with a shared prefix and
//!   continuous batching.
//! - Training: [`Model::loss_and_grads`] is the backward pass; [`Model`] is lmsi-adamw's
//!   [`Trainable`](lmsi_adamw::Trainable), so [`lmsi_adamw::Trainer`] steps it with its optimizer
//!   state on the model's device.
//!
//! ```no_run
//! use lmsi_transformer::{CpuBackend, Chunk, Logits, Model, Tokenizer};
//! # fn main() -> Result<(), lmsi_transformer::Error> {
//! let dir = std::path::Path::new("models/smollm2-135m-instruct");
//! let model = Model::load(dir, CpuBackend::new())?;
//! let tokenizer = Tokenizer::load(dir, model.config())?;
//! let mut cache = model.new_cache(16, 64)?;
//! let seq = cache.create();
//! let prompt = tokenizer.encode("The capital of France is", true)?;
//! let logits = model.forward(&mut cache, &[Chunk { seq, tokens: &prompt, logits: Logits::Last }])?;
//! let next = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
//! println!("{}", tokenizer.decode(&[next as u32])?);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod gguf;
mod gguf_header;
mod gguf_tokenizer;
pub mod kv_cache;
mod layer;
pub mod memory;
pub mod model;
pub mod params;
pub mod testing;
pub mod tokenizer;
pub mod train;
mod trainable;
pub mod weights;

use std::path::PathBuf;

pub use backend::{Backend, CpuBackend, CudaBackend, CudaBuf, Dtype};
pub use config::Config;
pub use kv_cache::{KvCache, SeqId};
pub use memory::MemoryPlan;
pub use model::{Chunk, Logits, Model, Storage};
pub use params::{Params, TensorSpec};
pub use tokenizer::Tokenizer;
pub use train::{LossSum, TrainSequence};
pub use weights::WeightFiles;

/// Errors of loading and running models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    /// A size in `config.json` disagrees with a tensor of the weights, found before anything is
    /// allocated from the size ([`Config::from_file`]).
    #[error("{0}")]
    ConfigMismatch(Box<ConfigMismatch>),
    /// A loaded weight is NaN or infinite; `position` is its index in the tensor (`[row, col]`).
    #[error("{}: tensor `{tensor}` holds {value} at {position}; weights must be finite", path.display())]
    NonFiniteWeight {
        path: PathBuf,
        tensor: String,
        position: String,
        value: f32,
    },
    /// A question's prompt and the tokens it may generate do not fit the model's context.
    #[error("question {question:?}: its prompt ({prompt_tokens} tokens) and max_new_tokens ({max_new_tokens}) need up to {} positions, more than the model's context of {context} (max_position_embeddings)", prompt_tokens.saturating_add(*max_new_tokens))]
    ContextTooLong {
        /// The question's id ([`generate::Request::key`]).
        question: String,
        /// The shared prefix and the question's own tokens.
        prompt_tokens: usize,
        max_new_tokens: usize,
        context: usize,
    },
    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error("the KV cache is full: {needed} more blocks needed, {free} free")]
    CacheFull { needed: usize, free: usize },
    #[error("sampling: {0}")]
    Sampling(#[from] lmsi_sampler::SampleError),
    #[error("{0}")]
    Optimizer(#[from] lmsi_adamw::AdamWError),
    #[error("{0} is not finite")]
    NonFinite(String),
    #[error("not enough device memory for {plan}; {device} has {} free of {}", crate::memory::human_bytes(*free), crate::memory::human_bytes(*total))]
    OutOfMemory {
        plan: String,
        device: String,
        free: u64,
        total: u64,
    },
    #[error("backend: {0}")]
    Backend(String),
    #[error("{0}")]
    Input(String),
}

/// A size in `config.json` that disagrees with the shape of a tensor ([`Error::ConfigMismatch`]).
#[derive(Debug, thiserror::Error)]
#[error("{}: {field} is {value}, which disagrees with tensor `{tensor}` in {}: {found}", config.display(), weights.display())]
pub struct ConfigMismatch {
    /// The `config.json`.
    pub config: PathBuf,
    /// The field (or product of fields, e.g. `` `num_key_value_heads` × `head_dim` ``) that gives
    /// the size, as the message shows it.
    pub field: String,
    pub value: usize,
    pub tensor: String,
    /// The safetensors file that holds the tensor (the index of the shards, for a missing one).
    pub weights: PathBuf,
    /// What the weights say instead.
    pub found: String,
}
