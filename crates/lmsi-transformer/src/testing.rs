//! Tiny random models in Hugging Face layout, for tests (of this crate and of the crates above it).
//!
//! The tokenizer is byte-level BPE without merges: every byte is a token (ids 0..=255, mapped to
//! characters as GPT-2's byte-level alphabet does), plus `<s>` (256, BOS, added first) and `</s>`
//! (257, EOS). The model's vocabulary is a little larger than the tokenizer's, as real models' often is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde_json::json;

use lmsi_adamw::{AdamWConfig, LrSchedule, Trainer, TrainerConfig};

use crate::Error;
use crate::backend::{Backend, BatchLayout, SeqLayout};
use crate::config::Config;
use crate::generate::Request;
use crate::gguf::ggml_name;
use crate::model::{Model, Storage};
use crate::params::{Params, TensorSpec};
use crate::tokenizer::Tokenizer;
use crate::train::TrainSequence;
use crate::weights::{WeightFiles, safetensors_bytes};

/// The embedded seed model's directory: `LMSI_TEST_SEED_MODEL` when set (a test binary run away
/// from the workspace, as in the GPU bundle), else the workspace's `assets/seed-model`.
pub fn seed_model_dir() -> PathBuf {
    std::env::var_os("LMSI_TEST_SEED_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/seed-model"))
}

/// The embedded seed model stored for `storage`, on `backend`, and its tokenizer.
pub fn seed_model<B: Backend>(
    backend: B,
    storage: Storage,
) -> Result<(Model<B>, Tokenizer), Error> {
    let dir = seed_model_dir();
    let model = Model::load_for(&dir, backend, storage)?;
    let tokenizer = Tokenizer::load(&dir, model.config())?;
    Ok((model, tokenizer))
}

/// The generation workload of the backend tests: a shared one-shot prefix, then three word
/// problems of this project's own, `paths` paths each.
pub fn word_problems(
    tokenizer: &Tokenizer,
    paths: usize,
) -> Result<(Vec<u32>, Vec<Request>), Error> {
    let prefix = tokenizer.encode(
        "Q: Ann has 3 pens and buys 4 more. How many pens does she have?\nA: 3 + 4 = 7. The answer is 7.\n\n",
        true,
    )?;
    let questions = [
        "Q: A farm has 26 cows and sells 9. How many cows are left?\nA:",
        "Q: Ben reads 14 pages on Monday and 18 on Tuesday. How many pages does he read?\nA:",
        "Q: A box holds 35 eggs. 12 break. How many eggs are whole?\nA:",
    ];
    let requests = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            Ok(Request {
                key: format!("q{i}"),
                tokens: tokenizer.encode(q, false)?,
                paths,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok((prefix, requests))
}

/// The mean loss of each of `steps` steps of lmsi-adamw's [`Trainer`] (AdamW's defaults, lr 1e-3,
/// the gradient norm clipped to 1) on a batch of two sequences of one short worked problem: a
/// short training run, to compare backends and dtypes by their loss curves.
pub fn loss_curve<B: Backend>(
    model: &mut Model<B>,
    tokenizer: &Tokenizer,
    steps: usize,
) -> Result<Vec<f64>, Error> {
    let text = "Q: A shop has 45 apples and sells 17. How many are left?\nA: 45 - 17 = 28. The answer is 28.";
    let tokens = tokenizer.encode(text, true)?;
    let batch = vec![
        TrainSequence::completion(tokens.clone(), 16),
        TrainSequence::completion(tokens[..30].to_vec(), 10),
    ];
    let targets: usize = batch.iter().map(TrainSequence::target_count).sum();
    let config = TrainerConfig {
        adamw: AdamWConfig::default(),
        schedule: LrSchedule::constant(1e-3),
        max_grad_norm: Some(1.0),
        decay_all: true,
    };
    let mut trainer = Trainer::new(&*model, config)?;
    let mut curve = Vec::with_capacity(steps);
    for _ in 0..steps {
        let stats = trainer.step(model, [&batch], |model, batch, grads| {
            Ok(model
                .loss_and_grads(batch, grads, 1.0 / targets as f32, false)?
                .loss)
        })?;
        curve.push(stats.loss / targets as f64);
    }
    Ok(curve)
}

/// `n` values uniform in ±[0.1, 1]·`scale` from `seed` (xorshift): random sign and magnitude, never
/// zero, so a test input cannot hide a term that should have counted.
pub fn nonzero_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            let sign = if state & 1 == 0 { 1.0 } else { -1.0 };
            sign * (0.1 + 0.9 * u) * scale
        })
        .collect()
}

/// The layout of one prefill step of sequences of `lens` tokens (token ids below 250), whose blocks
/// of `block_size` slots are interleaved and out of order, so that no block table is contiguous:
/// the hard case for paged attention.
pub fn scattered_prefill_layout(lens: &[usize], block_size: usize) -> BatchLayout {
    let mut l = BatchLayout::default();
    let mut next = 0u32;
    for &len in lens {
        let blocks: Vec<u32> = (0..len.div_ceil(block_size))
            .map(|i| {
                next += 1;
                100 - next * 3 + (i as u32 % 2)
            })
            .collect();
        l.seqs.push(SeqLayout {
            token_start: l.token_ids.len() as u32,
            num_tokens: len as u32,
            context_len: len as u32,
            table_start: l.block_tables.len() as u32,
        });
        for p in 0..len {
            l.token_ids.push((p * 37 % 250) as u32);
            l.positions.push(p as u32);
            l.slots
                .push(blocks[p / block_size] * block_size as u32 + (p % block_size) as u32);
        }
        l.block_tables.extend(blocks);
    }
    l
}

/// Sizes of a tiny model.
#[derive(Clone, Debug)]
pub struct TinyModel {
    /// `llama`, `qwen2` (q/k/v biases) or `mistral`.
    pub model_type: &'static str,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate_size: usize,
    pub tied: bool,
    pub seed: u64,
}

impl Default for TinyModel {
    fn default() -> Self {
        Self {
            model_type: "llama",
            hidden_size: 32,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate_size: 48,
            tied: false,
            seed: 1,
        }
    }
}

/// Token ids of the tiny tokenizer's special tokens.
pub const BOS: u32 = 256;
pub const EOS: u32 = 257;
/// The tiny models' vocabulary size.
pub const VOCAB: usize = 260;

impl TinyModel {
    /// The model's `config.json` contents. Its context (`max_position_embeddings`, 4096) holds the
    /// prompts tests give it, the eight built-in exemplars in the byte tokenizer included, since
    /// generation refuses a prompt and `max_new_tokens` beyond the context.
    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": VOCAB,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": self.tied,
            "hidden_act": "silu",
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "torch_dtype": "float32"
        })
    }

    /// Random parameters: matrices uniform in ±1/sqrt(fan-in) (so activations stay O(1)), norm
    /// weights near 1, biases small; never zero.
    pub fn params(&self) -> Params<Vec<f32>> {
        let config = Config::from_json(&self.config_json().to_string()).expect("valid tiny config");
        let mut state = self.seed ^ 0x9E37_79B9_7F4A_7C15;
        let layout = Params::layout(&config);
        layout.map(|spec| {
            let name = &spec.name;
            (0..spec.numel())
                .map(|_| {
                    let u = splitmix(&mut state);
                    if name.ends_with("norm") {
                        0.8 + 0.4 * u
                    } else if name.ends_with("bias") {
                        0.2 * (u - 0.5)
                    } else {
                        (2.0 * u - 1.0) * (3.0 / spec.cols() as f32).sqrt()
                    }
                })
                .collect()
        })
    }

    /// Writes `config.json`, `model.safetensors`, `tokenizer.json` and `tokenizer_config.json` to `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let config = Config::from_json(&self.config_json().to_string()).map_err(Error::Input)?;
        let bytes = safetensors_bytes(&Params::layout(&config), &self.params())?;
        let write = |name: &str, data: &[u8]| {
            std::fs::write(dir.join(name), data).map_err(|source| Error::Io {
                path: dir.join(name),
                source,
            })
        };
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        write(
            "config.json",
            serde_json::to_string_pretty(&self.config_json())
                .expect("json")
                .as_bytes(),
        )?;
        write("model.safetensors", &bytes)?;
        write(
            "tokenizer.json",
            byte_tokenizer_json().to_string().as_bytes(),
        )?;
        let tokenizer_config =
            json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true});
        write(
            "tokenizer_config.json",
            tokenizer_config.to_string().as_bytes(),
        )
    }
}

/// A uniform number in [0, 1) from a SplitMix64 state.
fn splitmix(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// GPT-2's byte-to-character map of byte-level BPE.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return char::from(b);
    }
    let shift = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shift).expect("valid char")
}

/// A byte-level BPE `tokenizer.json` with no merges.
pub fn byte_tokenizer_json() -> serde_json::Value {
    let vocab: HashMap<String, u32> = (0..=255u8)
        .map(|b| (byte_char(b).to_string(), b as u32))
        .collect();
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BOS, "<s>"), special(EOS, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    })
}

/// How [`assert_gradient`] probes a gradient: `picks` entries of every tensor, spread over it
/// (entry `(k · 7919 + offset) mod numel` for `k < picks`), central differences of step `eps`, and
/// an analytic value within `abs + rel · |numeric|` of the numeric one.
#[derive(Clone, Copy, Debug)]
pub struct GradientCheck {
    pub eps: f32,
    pub picks: usize,
    pub offset: usize,
    pub abs: f64,
    pub rel: f64,
}

/// Asserts that `grads` is the gradient of `objective` at the parameters `host` (laid out as
/// `layout`), against central finite differences of `objective` as `check` says; a failure names
/// `what`, the tensor and the entry.
pub fn assert_gradient(
    what: &str,
    layout: &Params<TensorSpec>,
    host: &Params<Vec<f32>>,
    grads: &Params<Vec<f32>>,
    objective: impl Fn(&Params<Vec<f32>>) -> f64,
    check: GradientCheck,
) {
    let tensors = layout.tensors().into_iter().zip(grads.tensors());
    for (t, (spec, grad)) in tensors.enumerate() {
        for i in (0..check.picks).map(|k| (k * 7919 + check.offset) % spec.numel()) {
            let shifted = |delta: f32| {
                let mut p = host.clone();
                p.tensors_mut()[t][i] += delta;
                objective(&p)
            };
            let numeric = (shifted(check.eps) - shifted(-check.eps)) / (2.0 * check.eps as f64);
            let analytic = f64::from(grad[i]);
            assert!(
                (numeric - analytic).abs() <= check.abs + check.rel * numeric.abs(),
                "{what}: {} [{i}]: analytic {analytic:.6} numeric {numeric:.6}",
                spec.name
            );
        }
    }
}

/// llama.cpp's `permute` of q and k rows: Hugging Face row `half * head_dim/2 + d` of each head
/// becomes row `2 * d + half`.
fn rope_permute(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let half_dim = values.len() / cols / heads / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for half in 0..2 {
            for d in 0..half_dim {
                let from = h * 2 * half_dim + half * half_dim + d;
                let to = h * 2 * half_dim + 2 * d + half;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// What goes into a GGUF fixture besides the weights ([`write_gguf`]).
pub struct GgufFixture {
    /// The ggml type of the weight matrices (norms stay F32, as llama.cpp writes them).
    pub matrices: GgmlDType,
    /// Extra or replaced metadata.
    pub metadata: Vec<(String, Value)>,
}

impl GgufFixture {
    /// Matrices of type `matrices`, the metadata llama.cpp writes.
    pub fn of(matrices: GgmlDType) -> Self {
        Self {
            matrices,
            metadata: Vec::new(),
        }
    }
}

fn strings(values: &[String]) -> Value {
    Value::Array(values.iter().map(|s| Value::String(s.clone())).collect())
}

/// The vocabulary (in id order), merges and control-token ids of a byte-level BPE `tokenizer.json`.
fn bpe_metadata(dir: &Path) -> (Vec<String>, Vec<String>, Vec<usize>) {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    let mut vocab: Vec<(String, u64)> = json["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(t, id)| (t.clone(), id.as_u64().unwrap()))
        .collect();
    let mut control = Vec::new();
    for added in json["added_tokens"].as_array().unwrap() {
        let id = added["id"].as_u64().unwrap();
        if !vocab.iter().any(|(_, i)| *i == id) {
            vocab.push((added["content"].as_str().unwrap().to_string(), id));
        }
        control.push(id as usize);
    }
    vocab.sort_by_key(|(_, id)| *id);
    assert!(vocab.iter().enumerate().all(|(i, (_, id))| i as u64 == *id));
    let merges = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            pair => format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            ),
        })
        .collect();
    (vocab.into_iter().map(|(t, _)| t).collect(), merges, control)
}

/// Writes the model of Hugging Face directory `dir` (byte-level BPE tokenizer) as a GGUF file, as
/// llama.cpp's converter would: ggml names, q and k permuted for RoPE (`llama`), the tokenizer as
/// `tokenizer.ggml.*` metadata with pre-tokenizer `smollm`. Panics on a directory it cannot read.
pub fn write_gguf(dir: &Path, out: &Path, fixture: &GgufFixture) {
    let config = Config::from_file(&dir.join("config.json")).unwrap();
    let files = WeightFiles::open(dir).unwrap();
    let arch = config.architecture.model_type();
    let (tokens, merges, control) = bpe_metadata(dir);
    let mut types = vec![Value::I32(1); tokens.len()];
    for id in control {
        types[id] = Value::I32(3);
    }
    let key = |k: &str| format!("{arch}.{k}");
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            key("embedding_length"),
            Value::U32(config.hidden_size as u32),
        ),
        (
            key("feed_forward_length"),
            Value::U32(config.intermediate_size as u32),
        ),
        (key("block_count"), Value::U32(config.num_layers as u32)),
        (
            key("attention.head_count"),
            Value::U32(config.num_heads as u32),
        ),
        (
            key("attention.head_count_kv"),
            Value::U32(config.num_kv_heads as u32),
        ),
        (
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(config.rms_norm_eps),
        ),
        (key("rope.freq_base"), Value::F32(config.rope_theta as f32)),
        (
            key("context_length"),
            Value::U32(config.max_position_embeddings as u32),
        ),
        (key("vocab_size"), Value::U32(config.vocab_size as u32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strings(&tokens)),
        ("tokenizer.ggml.merges".into(), strings(&merges)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(config.eos_token_ids[0]),
        ),
    ];
    for (k, v) in &fixture.metadata {
        metadata.retain(|(key, _)| key != k);
        metadata.push((k.clone(), v.clone()));
    }
    let mut tensors = Vec::new();
    for spec in Params::layout(&config).tensors() {
        for (hf, rows) in &spec.parts {
            let shape = spec.part_shape(*rows);
            let mut values = files.read(hf, &shape).unwrap();
            let cols: usize = shape.iter().skip(1).product();
            if arch == "llama" && hf.contains("q_proj") {
                values = rope_permute(&values, config.num_heads, cols);
            } else if arch == "llama" && hf.contains("k_proj") {
                values = rope_permute(&values, config.num_kv_heads, cols);
            }
            let dtype = if shape.len() == 2 {
                fixture.matrices
            } else {
                GgmlDType::F32
            };
            let tensor = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
            tensors.push((
                ggml_name(hf).expect("a Llama tensor name"),
                QTensor::quantize(&tensor, dtype).unwrap(),
            ));
        }
    }
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
}
