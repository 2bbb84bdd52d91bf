//! `config.json` of a Hugging Face Llama-family model (`llama`, `qwen2`, `mistral`), checked and turned
//! into the sizes the model code uses.
//!
//! Every size must be positive, and together they must make a model whose f32 parameters can be
//! addressed (no size computed from them overflows). `rms_norm_eps` must be a positive, finite
//! f32 and `rope_theta` a positive, finite number. `max_position_embeddings` (the context, which
//! bounds what generation may allocate) must be positive and fit a 32-bit position.
//! [`Config::from_file`] also holds the sizes against the shapes of the weights beside the file, so
//! that a model is never sized from a number its weights do not have.

use std::path::Path;

use serde::Deserialize;

use crate::Error;
use crate::weights::WeightFiles;

/// The model architectures this crate runs. They share one layer structure (RMSNorm, RoPE,
/// grouped-query attention, SwiGLU) and differ in biases, defaults and windowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Mistral,
}

impl Architecture {
    /// The `model_type` string of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Mistral => "mistral",
        }
    }
}

/// A checked model configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    /// The output layer reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// q, k and v projections have biases (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// The output projection of attention has a bias (Llama with `attention_bias`).
    pub o_bias: bool,
    /// gate, up and down projections have biases (Llama with `mlp_bias`).
    pub mlp_bias: bool,
    /// Attention sees at most this many previous positions (Mistral's sliding window), when set.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The `config.json` as read, so a checkpoint can write it back with its unknown fields intact.
    pub raw: serde_json::Value,
}

/// RoPE frequency scaling of type `llama3` (Llama 3.1 and later).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
}

impl Config {
    /// Reads and checks `config.json`. When its directory holds the model's safetensors weights,
    /// its sizes are checked against their shapes ([`WeightFiles::check_config`]; headers only),
    /// before anything is allocated from them: a size that disagrees is an
    /// [`Error::ConfigMismatch`] naming the field and the tensor.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::from_json(&text).map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        if WeightFiles::present(dir) {
            WeightFiles::open(dir)?.check_config(&config, path)?;
        }
        Ok(config)
    }

    /// Parses and checks the text of a `config.json`. The error is a message naming the bad field.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw_value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let raw: RawConfig =
            serde_json::from_value(raw_value.clone()).map_err(|e| e.to_string())?;
        let architecture = architecture(&raw)?;
        let Heads {
            num_heads,
            num_kv_heads,
            hidden_size,
            head_dim,
        } = heads(&raw)?;
        let rope_scaling = raw
            .rope_scaling
            .as_ref()
            .map(parse_rope_scaling)
            .transpose()?;
        let eos_token_ids = eos_token_ids(raw.eos_token_id.as_ref())?;
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let sliding_window = match architecture {
            Architecture::Mistral => raw.sliding_window,
            Architecture::Qwen2 if raw.use_sliding_window == Some(true) => raw.sliding_window,
            _ => None,
        };
        let rms_norm_eps = positive_finite("rms_norm_eps", raw.rms_norm_eps.unwrap_or(1e-6), |v| {
            f64::from(v as f32)
        })? as f32;
        let rope_theta = positive_finite("rope_theta", raw.rope_theta.unwrap_or(10_000.0), |v| v)?;
        let max_position_embeddings = positive(
            "max_position_embeddings",
            raw.max_position_embeddings.unwrap_or(4096),
        )?;
        if u32::try_from(max_position_embeddings).is_err() {
            return Err(format!(
                "`max_position_embeddings` ({max_position_embeddings}) must be at most {} (positions are 32-bit)",
                u32::MAX
            ));
        }
        let config = Config {
            architecture,
            vocab_size: positive("vocab_size", raw.vocab_size)?,
            hidden_size,
            intermediate_size: positive("intermediate_size", raw.intermediate_size)?,
            num_layers: positive("num_hidden_layers", raw.num_hidden_layers)?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: architecture == Architecture::Qwen2 || attention_bias,
            o_bias: architecture == Architecture::Llama && attention_bias,
            mlp_bias: architecture == Architecture::Llama && raw.mlp_bias.unwrap_or(false),
            sliding_window,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
            raw: raw_value,
        };
        // Every size is computed from these, so none may overflow, and the f32 weights must be
        // addressable at all.
        match config.checked_parameter_count() {
            Some(n) if n <= isize::MAX as usize / 4 => Ok(config),
            _ => Err(
                "the sizes (vocab_size, hidden_size, intermediate_size, num_hidden_layers, heads) \
                 make a model too large to address"
                    .into(),
            ),
        }
    }

    /// Width of the fused q|k|v projection output.
    pub fn qkv_dim(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }

    /// Width of the attention output (all query heads).
    pub fn attn_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of one of k or v (all key/value heads).
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// The rotary inverse frequencies, one per pair of dimensions, with `llama3` scaling applied.
    /// Computed in f64 as Hugging Face does in float32 from `base ** (arange(0, d, 2) / d)`; the
    /// difference is below f32 rounding of the angles used.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|i| {
                let inv = 1.0 / self.rope_theta.powf((2 * i) as f64 / d);
                match &self.rope_scaling {
                    Some(s) => s.scale(inv),
                    None => inv,
                }
            })
            .map(|f| f as f32)
            .collect()
    }

    /// Number of parameters of the model (tied embeddings counted once).
    pub fn parameter_count(&self) -> usize {
        self.checked_parameter_count()
            .expect("sizes whose parameter count overflows are refused when parsed")
    }

    /// [`Config::parameter_count`], `None` when it (or a width it is made of) overflows. Every
    /// tensor size and width the model computes from the configuration is at most this count.
    fn checked_parameter_count(&self) -> Option<usize> {
        let d = self.hidden_size;
        let qkv = (self
            .num_heads
            .checked_add(self.num_kv_heads.checked_mul(2)?)?)
        .checked_mul(self.head_dim)?;
        let attn_out = self.num_heads.checked_mul(self.head_dim)?.checked_mul(d)?;
        let attn = d
            .checked_mul(qkv)?
            .checked_add(attn_out)?
            .checked_add(if self.qkv_bias { qkv } else { 0 })?
            .checked_add(if self.o_bias { d } else { 0 })?;
        let mlp_bias = if self.mlp_bias {
            self.intermediate_size.checked_mul(2)?.checked_add(d)?
        } else {
            0
        };
        let mlp = d
            .checked_mul(self.intermediate_size)?
            .checked_mul(3)?
            .checked_add(mlp_bias)?;
        let layer = attn.checked_add(mlp)?.checked_add(d.checked_mul(2)?)?;
        let embed = self.vocab_size.checked_mul(d)?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed
            .checked_add(head)?
            .checked_add(self.num_layers.checked_mul(layer)?)?
            .checked_add(d)
    }
}

impl Llama3RopeScaling {
    /// Hugging Face's `_compute_llama3_parameters`, for one inverse frequency.
    fn scale(&self, inv_freq: f64) -> f64 {
        let low_freq_wavelen = self.original_max_position_embeddings / self.low_freq_factor;
        let high_freq_wavelen = self.original_max_position_embeddings / self.high_freq_factor;
        let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
        if wavelen < high_freq_wavelen {
            inv_freq
        } else if wavelen > low_freq_wavelen {
            inv_freq / self.factor
        } else {
            let smooth = (self.original_max_position_embeddings / wavelen - self.low_freq_factor)
                / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - smooth) * inv_freq / self.factor + smooth * inv_freq
        }
    }
}

/// `value` when it is positive and finite as the model uses it (`as_used`: e.g. rounded to f32,
/// where a tiny epsilon becomes 0 and a huge one infinity), else a message naming `name`.
fn positive_finite(name: &str, value: f64, as_used: impl Fn(f64) -> f64) -> Result<f64, String> {
    let used = as_used(value);
    if used.is_finite() && used > 0.0 {
        Ok(value)
    } else {
        let rounded = if used == value {
            String::new()
        } else {
            format!(" ({used:?} as the model stores it)")
        };
        Err(format!(
            "`{name}` must be a positive, finite number, got {value:?}{rounded}"
        ))
    }
}

/// `value`, or an error naming `name` when it is 0.
fn positive(name: &str, value: usize) -> Result<usize, String> {
    if value == 0 {
        Err(format!("`{name}` must be positive"))
    } else {
        Ok(value)
    }
}

/// The architecture `model_type` names; the activation must be SiLU.
fn architecture(raw: &RawConfig) -> Result<Architecture, String> {
    let architecture = match raw.model_type.as_deref() {
        Some("llama") => Architecture::Llama,
        Some("qwen2") => Architecture::Qwen2,
        Some("mistral") => Architecture::Mistral,
        Some(other) => {
            return Err(format!(
                "unsupported model_type {other:?} (supported: llama, qwen2, mistral)"
            ));
        }
        None => return Err("missing field `model_type`".into()),
    };
    if let Some(act) = &raw.hidden_act
        && act != "silu"
    {
        return Err(format!("unsupported hidden_act {act:?} (supported: silu)"));
    }
    Ok(architecture)
}

/// The attention heads' sizes, checked against each other.
struct Heads {
    num_heads: usize,
    num_kv_heads: usize,
    hidden_size: usize,
    head_dim: usize,
}

fn heads(raw: &RawConfig) -> Result<Heads, String> {
    let num_heads = positive("num_attention_heads", raw.num_attention_heads)?;
    let num_kv_heads = positive(
        "num_key_value_heads",
        raw.num_key_value_heads.unwrap_or(num_heads),
    )?;
    if num_heads % num_kv_heads != 0 {
        return Err(format!(
            "num_attention_heads ({num_heads}) is not a multiple of num_key_value_heads ({num_kv_heads})"
        ));
    }
    let hidden_size = positive("hidden_size", raw.hidden_size)?;
    let head_dim = match raw.head_dim {
        Some(d) => positive("head_dim", d)?,
        None if hidden_size % num_heads == 0 => hidden_size / num_heads,
        None => {
            return Err(format!(
                "hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_heads}) and head_dim is not given"
            ));
        }
    };
    if head_dim % 2 != 0 {
        return Err(format!(
            "head_dim ({head_dim}) must be even for rotary embeddings"
        ));
    }
    Ok(Heads {
        num_heads,
        num_kv_heads,
        hidden_size,
        head_dim,
    })
}

/// `eos_token_id`: absent, one id or a list of ids.
fn eos_token_ids(value: Option<&serde_json::Value>) -> Result<Vec<u32>, String> {
    Ok(match value {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Number(n)) => vec![token_id(n)?],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                serde_json::Value::Number(n) => token_id(n),
                other => Err(format!("eos_token_id: {other} is not a token id")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("eos_token_id: {other} is not a token id or list")),
    })
}

fn token_id(n: &serde_json::Number) -> Result<u32, String> {
    n.as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("{n} is not a token id"))
}

fn parse_rope_scaling(value: &serde_json::Value) -> Result<Llama3RopeScaling, String> {
    let kind = value
        .get("rope_type")
        .or_else(|| value.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if kind != "llama3" {
        return Err(format!(
            "unsupported rope_scaling type {kind:?} (supported: llama3)"
        ));
    }
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| format!("rope_scaling: missing number `{name}`"))
    };
    let scaling = Llama3RopeScaling {
        factor: field("factor")?,
        low_freq_factor: field("low_freq_factor")?,
        high_freq_factor: field("high_freq_factor")?,
        original_max_position_embeddings: field("original_max_position_embeddings")?,
    };
    if scaling.high_freq_factor <= scaling.low_freq_factor || scaling.factor <= 0.0 {
        return Err("rope_scaling: needs factor > 0 and high_freq_factor > low_freq_factor".into());
    }
    Ok(scaling)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{"model_type": "llama", "vocab_size": 100, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "eos_token_id": [2, 7]}"#;

    #[test]
    fn reads_sizes_and_defaults() {
        let c = Config::from_json(SMALL).unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.qkv_dim(), (4 + 4) * 16);
        assert_eq!(c.eos_token_ids, vec![2, 7]);
        assert!(!c.tie_word_embeddings && !c.qkv_bias);
        assert_eq!(c.rope_theta, 10_000.0);
    }

    #[test]
    fn qwen2_has_qkv_bias() {
        let c = Config::from_json(&SMALL.replace("llama", "qwen2")).unwrap();
        assert!(c.qkv_bias && !c.o_bias);
    }

    #[test]
    fn unsupported_values_are_named() {
        let e = Config::from_json(&SMALL.replace("llama", "gpt2")).unwrap_err();
        assert!(e.contains("gpt2"), "{e}");
        let e = Config::from_json(
            &SMALL.replace(r#""num_key_value_heads": 2"#, r#""num_key_value_heads": 3"#),
        )
        .unwrap_err();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let e = Config::from_json(
            &SMALL.replace("}", r#", "rope_scaling": {"type": "yarn", "factor": 2}}"#),
        )
        .unwrap_err();
        assert!(e.contains("yarn"), "{e}");
        let e = Config::from_json(&SMALL.replace(r#""hidden_size": 64,"#, "")).unwrap_err();
        assert!(e.contains("hidden_size"), "{e}");
    }

    #[test]
    fn llama3_scaling_matches_hugging_face() {
        // Llama 3.1's scaling; reference values computed with transformers'
        // _compute_llama3_parameters formula by hand for three regimes.
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        // High frequency (wavelength 2π < 2048): unchanged.
        assert_eq!(s.scale(1.0), 1.0);
        // Low frequency (wavelength > 8192): divided by the factor.
        let low = 2.0 * std::f64::consts::PI / 10_000.0;
        assert!((s.scale(low) - low / 8.0).abs() < 1e-15);
        // In between (wavelength 4096): smooth = (8192/4096 - 1) / 3 = 1/3.
        let mid = 2.0 * std::f64::consts::PI / 4096.0;
        let expected = (2.0 / 3.0) * mid / 8.0 + mid / 3.0;
        assert!((s.scale(mid) - expected).abs() < 1e-15);
    }
}
