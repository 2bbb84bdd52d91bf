//! GGUF model files (llama.cpp's format) read as a Llama-family model: configuration, weights and
//! tokenizer from one file.
//!
//! The container and its block formats are read by `candle-core`'s `quantized` module: it is
//! Hugging Face's GGUF reader (the one candle-transformers and mistral.rs load models with), it
//! bounds every length it reads by the file's size, and it carries the dequantisers of every ggml
//! type. This module maps what it reads onto lmsi's model:
//!
//! - **Configuration**: the `{architecture}.*` metadata becomes a Hugging Face `config.json`
//!   ([`GgufModel::config_json`]), checked by [`Config::from_json`] like any other, so that a
//!   checkpoint of a GGUF model is an ordinary Hugging Face directory. Architectures: `llama`
//!   (Llama, Mistral and SmolLM files: llama.cpp converts them all as `llama`) and `qwen2`. A file
//!   with RoPE scaling (`rope_freqs.weight` or `{arch}.rope.scaling.type`) is refused, since its
//!   logits would be wrong.
//! - **Weights**: ggml tensor names map to Hugging Face names; every tensor is dequantised to f32
//!   on load (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K … Q6_K). The q and k projections
//!   of `llama` files are un-permuted: llama.cpp's converter interleaves the two RoPE halves of each
//!   head for its kernels. Shapes are checked against the configuration before a tensor is read.
//! - **Tokenizer**: byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the pre-tokenizer that
//!   `tokenizer.ggml.pre` names (`smollm`, `qwen2`, `llama-bpe`/`llama3`/`smaug-bpe`, `gpt-2`/
//!   `default`), or SentencePiece BPE (`llama`), with merges derived from the scored vocabulary
//!   as `transformers` derives them; unknown, control and user-defined tokens become added tokens. BOS is added as llama.cpp adds
//!   it: `tokenizer.ggml.add_bos_token`, else for SentencePiece and Llama 3 vocabularies.
//!
//! ```no_run
//! use lmsi_transformer::gguf::GgufModel;
//!
//! # fn main() -> Result<(), lmsi_transformer::Error> {
//! let file = GgufModel::open("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref())?;
//! let config = file.config()?;
//! println!("{} layers, vocabulary of {}", config.num_layers, config.vocab_size);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};

use crate::Error;
use crate::config::Config;
use crate::gguf_header::header_alignment;
use crate::params::{Params, TensorSpec};
use crate::weights::check_finite;

/// An open GGUF file: its metadata and tensor directory, no tensor data read yet.
pub struct GgufModel {
    path: PathBuf,
    content: Content,
}

/// Whether `path` names a model file rather than a model directory: lmsi reads such a file as GGUF.
pub fn is_model_file(path: &Path) -> bool {
    path.is_file()
}

impl GgufModel {
    /// Reads the header, metadata and tensor directory of a GGUF file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        // candle divides by `general.alignment` unchecked: check it first (llama.cpp requires a
        // power of two).
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(alignment) = header_alignment(&mut reader).map_err(io)?
            && !alignment.is_power_of_two()
        {
            return Err(weights_error(
                path,
                format!("general.alignment is {alignment}; it must be a power of two"),
            ));
        }
        reader.rewind().map_err(io)?;
        let content = Content::read(&mut reader)
            .map_err(|e| weights_error(path, format!("not a readable GGUF file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's checked configuration ([`GgufModel::config_json`] through [`Config::from_json`]).
    pub fn config(&self) -> Result<Config, Error> {
        let json = self.config_json()?;
        Config::from_json(&json.to_string()).map_err(|message| Error::Config {
            path: self.path.clone(),
            message: format!("the configuration made from its metadata: {message}"),
        })
    }

    /// The Hugging Face `config.json` that the file's metadata describes.
    pub fn config_json(&self) -> Result<serde_json::Value, Error> {
        let arch = self.string("general.architecture")?;
        if !matches!(arch, "llama" | "qwen2") {
            return Err(self.error(format!(
                "general.architecture is `{arch}`; supported: llama (also Mistral and SmolLM files), qwen2"
            )));
        }
        let key = |name: &str| format!("{arch}.{name}");
        if self.content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err(self.error(
                "RoPE frequency scaling (tensor `rope_freqs.weight`) is not supported".into(),
            ));
        }
        if let Some(kind) = self.optional_string(&key("rope.scaling.type"))?
            && kind != "none"
        {
            return Err(self.error(format!(
                "{} is `{kind}`; RoPE scaling is not supported",
                key("rope.scaling.type")
            )));
        }
        let hidden = self.uint(&key("embedding_length"))?;
        let heads = self.uint(&key("attention.head_count"))?;
        let kv_heads = self
            .optional_uint(&key("attention.head_count_kv"))?
            .unwrap_or(heads);
        let vocab = match self.optional_uint(&key("vocab_size"))? {
            Some(n) => n,
            None => self.strings("tokenizer.ggml.tokens")?.len() as u64,
        };
        let mut config = serde_json::json!({
            "architectures": [if arch == "llama" { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" }],
            "model_type": arch,
            "hidden_size": hidden,
            "intermediate_size": self.uint(&key("feed_forward_length"))?,
            "num_hidden_layers": self.uint(&key("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "rms_norm_eps": self.float(&key("attention.layer_norm_rms_epsilon"))?,
            "rope_theta": self.optional_float(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            "max_position_embeddings": self.uint(&key("context_length"))?,
            "vocab_size": vocab,
            "tie_word_embeddings": !self.content.tensor_infos.contains_key("output.weight"),
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        let object = config.as_object_mut().expect("a JSON object");
        if let Some(head_dim) = self.optional_uint(&key("attention.key_length"))? {
            object.insert("head_dim".into(), head_dim.into());
        }
        for (gguf_key, hf_key) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ] {
            if let Some(id) = self.optional_uint(gguf_key)? {
                object.insert(hf_key.into(), id.into());
            }
        }
        if arch == "llama" {
            let bias = self.content.tensor_infos.contains_key("blk.0.attn_q.bias");
            object.insert("attention_bias".into(), bias.into());
            object.insert("mlp_bias".into(), false.into());
        }
        Ok(config)
    }

    /// Every parameter of `layout` (made from [`GgufModel::config`]), dequantised to f32. Each
    /// tensor's shape is checked before it is read, and its values are checked to be finite.
    pub fn read_params(
        &self,
        config: &Config,
        layout: &Params<TensorSpec>,
    ) -> Result<Params<Vec<f32>>, Error> {
        for spec in layout.tensors() {
            for (hf_name, rows) in &spec.parts {
                self.check_shape(&ggml_name(hf_name)?, &spec.part_shape(*rows))?;
            }
        }
        let file = File::open(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        layout.try_map(|spec| {
            let mut out = Vec::with_capacity(spec.numel());
            for (hf_name, rows) in &spec.parts {
                let shape = spec.part_shape(*rows);
                let mut values = self.read_tensor(&mut reader, &ggml_name(hf_name)?)?;
                if let Some(heads) = rope_permuted_heads(config, hf_name) {
                    values = unpermute_rope_rows(&values, heads, shape.iter().skip(1).product());
                }
                check_finite(&self.path, hf_name, &shape, &values)?;
                out.extend(values);
            }
            Ok(out)
        })
    }

    /// Tensor `name` of the file, dequantised to f32 in row-major order.
    fn read_tensor(&self, reader: &mut BufReader<File>, name: &str) -> Result<Vec<f32>, Error> {
        let tensor_error = |e: candle_core::Error| self.error(format!("tensor `{name}`: {e}"));
        let tensor = self
            .content
            .tensor(reader, name, &Device::Cpu)
            .map_err(tensor_error)?;
        tensor
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(tensor_error)
    }

    /// Checks that tensor `name` exists with `shape` (row-major, as Hugging Face writes it).
    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<(), Error> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.error(format!("missing tensor `{name}`")))?;
        let found = info.shape.dims();
        if found != shape {
            return Err(self.error(format!(
                "tensor `{name}` has shape {found:?}, expected {shape:?}"
            )));
        }
        Ok(())
    }

    /// The tokenizer that the `tokenizer.ggml.*` metadata describes.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, Error> {
        crate::gguf_tokenizer::build(self)
    }

    /// A Hugging Face `tokenizer_config.json` for the file's tokenizer: BOS and EOS tokens, whether
    /// BOS is added, and the chat template.
    pub fn tokenizer_config(&self) -> Result<serde_json::Value, Error> {
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let token = |key: &str| -> Result<Option<String>, Error> {
            Ok(self
                .optional_uint(key)?
                .and_then(|id| tokens.get(id as usize))
                .map(|t| t.to_string()))
        };
        let mut config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": match self.optional_bool("tokenizer.ggml.add_bos_token")? {
                Some(add) => add,
                None => crate::gguf_tokenizer::adds_bos_by_default(self)?,
            },
        });
        let object = config.as_object_mut().expect("a JSON object");
        for (gguf_key, hf_key) in [
            ("tokenizer.ggml.bos_token_id", "bos_token"),
            ("tokenizer.ggml.eos_token_id", "eos_token"),
            ("tokenizer.ggml.padding_token_id", "pad_token"),
        ] {
            if let Some(text) = token(gguf_key)? {
                object.insert(hf_key.into(), text.into());
            }
        }
        if let Some(template) = self.optional_string("tokenizer.chat_template")? {
            object.insert("chat_template".into(), template.into());
        }
        Ok(config)
    }

    /// The tokenizer files of a Hugging Face directory for this model (`tokenizer.json`,
    /// `tokenizer_config.json`), for writing a checkpoint.
    pub fn tokenizer_files(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let tokenizer = self
            .tokenizer()?
            .to_string(true)
            .map_err(|e| self.error(format!("cannot write its tokenizer as JSON: {e}")))?;
        let config = serde_json::to_vec_pretty(&self.tokenizer_config()?).expect("JSON serialises");
        Ok(vec![
            ("tokenizer.json".into(), tokenizer.into_bytes()),
            ("tokenizer_config.json".into(), config),
        ])
    }

    pub(crate) fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub(crate) fn error(&self, message: String) -> Error {
        weights_error(&self.path, message)
    }

    pub(crate) fn string(&self, key: &str) -> Result<&str, Error> {
        self.optional_string(key)?
            .ok_or_else(|| self.error(format!("missing metadata `{key}`")))
    }

    pub(crate) fn optional_string(&self, key: &str) -> Result<Option<&str>, Error> {
        match self.metadata().get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// The strings of array `key`.
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<&str>, Error> {
        self.array(key, "an array of strings", |v| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The floats of array `key`.
    pub(crate) fn floats(&self, key: &str) -> Result<Vec<f32>, Error> {
        self.array(key, "an array of f32", |v| match v {
            Value::F32(x) => Some(*x),
            _ => None,
        })
    }

    /// The elements of array `key`, each read by `element` (`None`: not of the `expected` type).
    fn array<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        element: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Vec<T>, Error> {
        match self.metadata().get(key) {
            None => Err(self.error(format!("missing metadata `{key}`"))),
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| element(v).ok_or_else(|| self.wrong_type(key, expected, v)))
                .collect(),
            Some(other) => Err(self.wrong_type(key, expected, other)),
        }
    }

    fn uint(&self, key: &str) -> Result<u64, Error> {
        self.optional_uint(key)?
            .ok_or_else(|| self.error(format!("missing metadata `{key}`")))
    }

    /// Metadata `key` as a non-negative integer, whatever integer type the file stored it as.
    pub(crate) fn optional_uint(&self, key: &str) -> Result<Option<u64>, Error> {
        let Some(value) = self.metadata().get(key) else {
            return Ok(None);
        };
        let n = match *value {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        };
        n.map(Some)
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", value))
    }

    fn float(&self, key: &str) -> Result<f64, Error> {
        self.optional_float(key)?
            .ok_or_else(|| self.error(format!("missing metadata `{key}`")))
    }

    fn optional_float(&self, key: &str) -> Result<Option<f64>, Error> {
        match self.metadata().get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some((*v).into())),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong_type(key, "a float", other)),
        }
    }

    pub(crate) fn optional_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.metadata().get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong_type(key, "a bool", other)),
        }
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.error(format!(
            "metadata `{key}` should be {expected}, found {:?}",
            found.value_type()
        ))
    }
}

fn weights_error(path: &Path, message: String) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        message,
    }
}

/// The ggml name of a Hugging Face tensor name (`model.layers.3.self_attn.q_proj.weight` is
/// `blk.3.attn_q.weight`).
pub(crate) fn ggml_name(hf_name: &str) -> Result<String, Error> {
    let unknown = || Error::Input(format!("no GGUF name for tensor `{hf_name}`"));
    match hf_name {
        "model.embed_tokens.weight" => return Ok("token_embd.weight".into()),
        "model.norm.weight" => return Ok("output_norm.weight".into()),
        "lm_head.weight" => return Ok("output.weight".into()),
        _ => {}
    }
    let rest = hf_name.strip_prefix("model.layers.").ok_or_else(unknown)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    let (module, kind) = rest.rsplit_once('.').ok_or_else(unknown)?;
    let ggml = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return Err(unknown()),
    };
    Ok(format!("blk.{layer}.{ggml}.{kind}"))
}

/// The head count of a tensor whose rows llama.cpp permuted for RoPE (q and k of `llama` files),
/// or `None` for every other tensor.
fn rope_permuted_heads(config: &Config, hf_name: &str) -> Option<usize> {
    if config.architecture.model_type() != "llama" {
        return None;
    }
    if hf_name.contains(".self_attn.q_proj.") {
        Some(config.num_heads)
    } else if hf_name.contains(".self_attn.k_proj.") {
        Some(config.num_kv_heads)
    } else {
        None
    }
}

/// Undoes llama.cpp's RoPE permutation of a q or k projection: within each head it stored row
/// `2 * d + half` where Hugging Face has row `half * (head_dim / 2) + d`. `values` holds
/// `heads * head_dim` rows of `cols` values (a bias has one column).
fn unpermute_rope_rows(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = values.len() / cols;
    let half_dim = rows / heads / 2;
    let mut out = vec![0.0; values.len()];
    for head in 0..heads {
        for d in 0..half_dim {
            for half in 0..2 {
                let from = head * 2 * half_dim + 2 * d + half;
                let to = head * 2 * half_dim + half * half_dim + d;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_names_map_to_ggml_names() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.12.self_attn.q_proj.bias",
                "blk.12.attn_q.bias",
            ),
            (
                "model.layers.0.mlp.down_proj.weight",
                "blk.0.ffn_down.weight",
            ),
            (
                "model.layers.3.post_attention_layernorm.weight",
                "blk.3.ffn_norm.weight",
            ),
        ];
        for (hf, ggml) in cases {
            assert_eq!(ggml_name(hf).unwrap(), ggml);
        }
        assert!(ggml_name("model.layers.0.mlp.other.weight").is_err());
    }

    #[test]
    fn the_rope_permutation_is_undone_per_head() {
        // Two heads of head_dim 4, one column: llama.cpp stores each head's rows as 0, 2, 1, 3.
        let stored = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        assert_eq!(
            unpermute_rope_rows(&stored, 2, 1),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
        // Whole rows move together.
        let stored = [0.0, 0.5, 2.0, 2.5, 1.0, 1.5, 3.0, 3.5];
        assert_eq!(
            unpermute_rope_rows(&stored, 1, 2),
            [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
        );
    }
}
