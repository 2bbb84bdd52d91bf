//! The Llama-family model, written once over a [`Backend`].

use std::path::Path;

use crate::Error;
use crate::backend::{AttentionDims, Backend, BatchLayout, SeqLayout, check_token_ids};
use crate::config::Config;
use crate::gguf::{GgufModel, is_model_file};
use crate::kv_cache::{KvCache, SeqId};
use crate::layer::{Attention, Layer, LayerActivations, Scratch};
use crate::memory::MemoryPlan;
use crate::params::{Params, TensorSpec};
use crate::weights::WeightFiles;

/// Which logits a [`Chunk`] wants back from [`Model::forward`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (a prefix whose next token is not sampled).
    None,
    /// Those of the chunk's last token (the next-token distribution).
    Last,
    /// Those of every token of the chunk.
    All,
}

/// New tokens of one sequence in a forward step.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// Uploads one parameter: a weight matrix for inference through [`Backend::upload_matrix`],
/// everything else (norms, biases, every parameter for training) in f32.
fn upload<B: Backend>(
    backend: &B,
    spec: &TensorSpec,
    data: &[f32],
    storage: Storage,
) -> Result<B::Buf, Error> {
    match (storage, spec.shape.len()) {
        (Storage::Inference, 2) => backend.upload_matrix(data),
        _ => backend.upload(data),
    }
}

/// A transformer with its weights on a backend.
pub struct Model<B: Backend> {
    config: Config,
    backend: B,
    layout: Params<TensorSpec>,
    params: Params<B::Buf>,
    inv_freq: B::Buf,
}

/// What a model's parameters are loaded for, which decides how a backend may store them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Forward passes only: the weight matrices may be stored narrower than f32
    /// ([`Backend::upload_matrix`]; the CUDA backend at bf16 stores them in bf16).
    Inference,
    /// Training: every parameter in f32, the master weights the optimizer updates.
    Training,
}

impl<B: Backend> Model<B> {
    /// Loads `config.json` and the safetensors weights of a Hugging Face model directory, or a GGUF
    /// file when `path` is a file ([`crate::gguf`]), for inference ([`Storage::Inference`]).
    pub fn load(dir: &Path, backend: B) -> Result<Self, Error> {
        Self::load_for(dir, backend, Storage::Inference)
    }

    /// [`Model::load`] with every parameter in f32, for training ([`Storage::Training`]).
    pub fn load_for_training(dir: &Path, backend: B) -> Result<Self, Error> {
        Self::load_for(dir, backend, Storage::Training)
    }

    /// Loads a Hugging Face model directory, or a GGUF file, with its parameters stored for `storage`.
    pub fn load_for(path: &Path, backend: B, storage: Storage) -> Result<Self, Error> {
        if is_model_file(path) {
            return Self::load_gguf(path, backend, storage);
        }
        let config = Config::from_file(&path.join("config.json"))?;
        backend.check_memory(&MemoryPlan::weights(&config, storage, backend.dtype()))?;
        let layout = Params::layout(&config);
        let files = WeightFiles::open(path)?;
        let params =
            layout.try_map(|spec| upload(&backend, spec, &files.read_param(spec)?, storage))?;
        Self::with_params(config, params, backend)
    }

    /// Loads a GGUF file, every tensor dequantised to f32 on the host first.
    fn load_gguf(path: &Path, backend: B, storage: Storage) -> Result<Self, Error> {
        let file = GgufModel::open(path)?;
        let config = file.config()?;
        backend.check_memory(&MemoryPlan::weights(&config, storage, backend.dtype()))?;
        let layout = Params::layout(&config);
        let host = file.read_params(&config, &layout)?;
        Self::from_host_for(config, &host, backend, storage)
    }

    /// A model from parameters already on the host, laid out as [`Params::layout`] says, for
    /// inference ([`Storage::Inference`]).
    pub fn from_host(config: Config, host: &Params<Vec<f32>>, backend: B) -> Result<Self, Error> {
        Self::from_host_for(config, host, backend, Storage::Inference)
    }

    /// [`Model::from_host`] with the parameters stored for `storage`.
    pub fn from_host_for(
        config: Config,
        host: &Params<Vec<f32>>,
        backend: B,
        storage: Storage,
    ) -> Result<Self, Error> {
        let layout = Params::layout(&config);
        let (specs, values) = (layout.tensors(), host.tensors());
        if specs.len() != values.len() {
            return Err(Error::Input(format!(
                "{} parameter tensors given, the configuration has {}",
                values.len(),
                specs.len()
            )));
        }
        for (spec, values) in specs.into_iter().zip(&values) {
            if values.len() != spec.numel() {
                return Err(Error::Input(format!(
                    "parameter {} has {} values, expected {} ({:?})",
                    spec.name,
                    values.len(),
                    spec.numel(),
                    spec.shape
                )));
            }
        }
        backend.check_memory(&MemoryPlan::weights(&config, storage, backend.dtype()))?;
        let mut values = values.into_iter();
        let params = layout.try_map(|spec| {
            let data = values
                .next()
                .expect("as many tensors as the layout, checked above");
            upload(&backend, spec, data, storage)
        })?;
        Self::with_params(config, params, backend)
    }

    fn with_params(config: Config, params: Params<B::Buf>, backend: B) -> Result<Self, Error> {
        let inv_freq = backend.upload(&config.rope_inv_freq())?;
        let layout = Params::layout(&config);
        Ok(Self {
            config,
            backend,
            layout,
            params,
            inv_freq,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The shapes and names of the parameters.
    pub fn layout(&self) -> &Params<TensorSpec> {
        &self.layout
    }

    pub fn params(&self) -> &Params<B::Buf> {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut Params<B::Buf> {
        &mut self.params
    }

    /// The backend and the parameters, mutably (an optimizer updates parameters through the backend).
    pub(crate) fn backend_and_params_mut(&mut self) -> (&B, &mut Params<B::Buf>) {
        (&self.backend, &mut self.params)
    }

    /// The rotary inverse frequencies, on the backend.
    pub(crate) fn inv_freq(&self) -> &B::Buf {
        &self.inv_freq
    }

    /// The parameters, copied to the host.
    pub fn params_to_host(&self) -> Result<Params<Vec<f32>>, Error> {
        self.params.try_map(|buf| self.backend.download(buf))
    }

    /// Attention geometry for a cache with `block_size` positions per block.
    pub fn attention_dims(&self, block_size: usize) -> AttentionDims {
        AttentionDims {
            num_heads: self.config.num_heads,
            num_kv_heads: self.config.num_kv_heads,
            head_dim: self.config.head_dim,
            scale: 1.0 / (self.config.head_dim as f32).sqrt(),
            window: self.config.sliding_window,
            block_size,
        }
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self, block_size: usize, num_blocks: usize) -> Result<KvCache<B>, Error> {
        KvCache::new(&self.backend, &self.config, block_size, num_blocks)
    }

    /// Runs the model over new tokens of one or more sequences, appending their keys and values to the
    /// cache, and returns the logits the chunks ask for, `[rows, vocab]` row-major, in chunk order.
    ///
    /// Each chunk continues its sequence at the sequence's current length, so a prompt can be fed
    /// whole (prefill), a token at a time (decode), or both mixed in one step. A sequence may appear
    /// once per step.
    pub fn forward(&self, cache: &mut KvCache<B>, chunks: &[Chunk<'_>]) -> Result<Vec<f32>, Error> {
        match self.forward_logits(cache, chunks)? {
            Some(logits) => self.backend.download(&logits),
            None => Ok(Vec::new()),
        }
    }

    /// [`Model::forward`], leaving the logits on the backend (`None` when no chunk asks for any).
    pub fn forward_logits(
        &self,
        cache: &mut KvCache<B>,
        chunks: &[Chunk<'_>],
    ) -> Result<Option<B::Buf>, Error> {
        let layout = self.plan(cache, chunks)?;
        let c = &self.config;
        let (d, t) = (c.hidden_size, layout.num_tokens());
        let dims = self.attention_dims(cache.block_size());
        let be = &self.backend;
        let prepared = be.prepare(&layout)?;

        let mut x = be.zeros(t * d)?;
        be.embedding(&mut x, &self.params.embed, &prepared, d)?;
        let mut acts = LayerActivations::zeros(be, c, t)?;
        let mut scratch = Scratch::zeros(be, c, t)?;
        for (i, params) in self.params.layers.iter().enumerate() {
            let layer = Layer {
                model: self,
                params,
                layout: &prepared,
                dims: &dims,
                t,
            };
            let (k_cache, v_cache) = cache.layer_mut(i);
            let attention = Attention::Paged { k_cache, v_cache };
            layer.forward(&x, attention, &mut acts, &mut scratch)?;
            layer.output(&acts, &mut scratch, &mut x)?;
        }

        let rows = layout.logit_rows.len();
        if rows == 0 {
            return Ok(None);
        }
        let mut picked = be.zeros(rows * d)?;
        be.gather_logit_rows(&mut picked, &x, &prepared, 0..rows, d)?;
        let mut normed = be.operand_zeros(rows * d)?;
        be.rmsnorm(
            &mut normed,
            &picked,
            &self.params.final_norm,
            rows,
            c.rms_norm_eps,
        )?;
        let mut logits = be.zeros(rows * c.vocab_size)?;
        be.matmul(
            &mut logits,
            &normed,
            &self.params.output_linear(c),
            rows,
            false,
        )?;
        Ok(Some(logits))
    }

    /// Reserves cache slots for the chunks and lays the step out.
    /// Checks everything first, so that an error leaves the cache as it was.
    fn plan(&self, cache: &mut KvCache<B>, chunks: &[Chunk<'_>]) -> Result<BatchLayout, Error> {
        let mut seen = std::collections::HashSet::new();
        let mut blocks = 0;
        for chunk in chunks {
            if chunk.tokens.is_empty() {
                return Err(Error::Input(format!(
                    "{:?}: a chunk needs at least one token",
                    chunk.seq
                )));
            }
            if !seen.insert(chunk.seq) {
                return Err(Error::Input(format!(
                    "{:?} appears twice in one step",
                    chunk.seq
                )));
            }
            check_token_ids("token id", chunk.tokens, self.config.vocab_size)?;
            blocks += cache.blocks_needed(chunk.seq, chunk.tokens.len())?;
        }
        if blocks > cache.free_blocks() {
            return Err(Error::CacheFull {
                needed: blocks,
                free: cache.free_blocks(),
            });
        }
        let mut layout = BatchLayout::default();
        for chunk in chunks {
            let start = cache.seq_len(chunk.seq)?;
            let slots = cache.append(&self.backend, chunk.seq, chunk.tokens.len())?;
            let token_start = layout.token_ids.len();
            layout.seqs.push(SeqLayout {
                token_start: token_start as u32,
                num_tokens: chunk.tokens.len() as u32,
                context_len: (start + chunk.tokens.len()) as u32,
                table_start: layout.block_tables.len() as u32,
            });
            layout
                .block_tables
                .extend_from_slice(cache.block_table(chunk.seq)?);
            layout.token_ids.extend_from_slice(chunk.tokens);
            layout
                .positions
                .extend((start..start + chunk.tokens.len()).map(|p| p as u32));
            layout.slots.extend(slots);
            let end = layout.token_ids.len() as u32;
            match chunk.logits {
                Logits::None => {}
                Logits::Last => layout.logit_rows.push(end - 1),
                Logits::All => layout.logit_rows.extend(token_start as u32..end),
            }
        }
        Ok(layout)
    }
}
