//! Reading model weights from safetensors files (one file, or shards listed in
//! `model.safetensors.index.json`), in f32, f16 or bf16, converted to f32.
//!
//! What is checked, and when:
//! - Opening reads only the files' headers (safetensors checks each tensor's shape against its
//!   bytes). A shard named by the index must be a plain file name inside the model directory
//!   (no `..`, no absolute path, no subdirectory); anything else is refused, naming the index
//!   file and the shard.
//! - [`WeightFiles::check_config`] holds the sizes of a `config.json` against the headers' shapes,
//!   so that nothing is allocated from a size the weights do not have.
//! - Reading a tensor checks its shape before allocating its values, and refuses a NaN or an
//!   infinity, naming the tensor and where in it the value is.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::config::Config;
use crate::params::{Params, TensorSpec};
use crate::{ConfigMismatch, Error};

/// The single-file weights of a model directory.
const SINGLE_FILE: &str = "model.safetensors";
/// The index of sharded weights.
const INDEX_FILE: &str = "model.safetensors.index.json";

/// Memory-mapped safetensors files of one model, with a map from tensor name to file.
pub struct WeightFiles {
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> index into `files`, and the tensor's shape in the header.
    index: HashMap<String, (usize, Vec<usize>)>,
    /// `model.safetensors`, or the index of the shards: what an error about the whole set names.
    source: PathBuf,
}

impl WeightFiles {
    /// Whether `dir` holds weights [`WeightFiles::open`] would look for.
    pub fn present(dir: &Path) -> bool {
        dir.join(SINGLE_FILE).exists() || dir.join(INDEX_FILE).exists()
    }

    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`, in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let index_path = dir.join(INDEX_FILE);
        let (source, shard_names) = if index_path.exists() {
            let names = shard_names(&index_path)?;
            (index_path, names)
        } else if dir.join(SINGLE_FILE).exists() {
            (dir.join(SINGLE_FILE), vec![SINGLE_FILE.to_string()])
        } else {
            return Err(weights_error(
                dir,
                "no model.safetensors or model.safetensors.index.json",
            ));
        };

        let mut files = Vec::new();
        let mut index = HashMap::new();
        for name in shard_names {
            let path = dir.join(&name);
            let file = File::open(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            // SAFETY: the file is only read; the project never writes into a model it is reading.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let tensors = SafeTensors::deserialize(&mmap).map_err(|e| weights_error(&path, e))?;
            for (tensor_name, view) in tensors.iter() {
                index.insert(
                    tensor_name.to_string(),
                    (files.len(), view.shape().to_vec()),
                );
            }
            files.push((path, mmap));
        }
        Ok(Self {
            files,
            index,
            source,
        })
    }

    /// Checks the sizes of `config` (read from `config_path`) against the tensors' shapes, reading
    /// headers only: first the number of layers, so that the layout built from the configuration
    /// is no bigger than the weights, then every tensor of that layout, the embedding first. A
    /// mismatch names the field, the tensor and its file ([`Error::ConfigMismatch`]); a missing
    /// tensor is left for [`WeightFiles::read`] to name.
    pub fn check_config(&self, config: &Config, config_path: &Path) -> Result<(), Error> {
        self.check_layer_count(config, config_path)?;
        for spec in Params::layout(config).tensors() {
            for (hf_name, rows) in &spec.parts {
                let Some((file, shape)) = self.index.get(hf_name) else {
                    continue;
                };
                let expected = spec.part_shape(*rows);
                if let Some(dim) = first_difference(shape, &expected) {
                    return Err(Error::ConfigMismatch(Box::new(ConfigMismatch {
                        config: config_path.to_path_buf(),
                        field: sized_by(config, hf_name, dim),
                        value: expected.get(dim).copied().unwrap_or(0),
                        tensor: hf_name.clone(),
                        weights: self.files[*file].0.clone(),
                        found: format!(
                            "its shape is {shape:?}, the configuration gives {expected:?}"
                        ),
                    })));
                }
            }
        }
        Ok(())
    }

    /// The weights must hold layers `0..num_layers`, each with at least one tensor, and no other.
    fn check_layer_count(&self, config: &Config, config_path: &Path) -> Result<(), Error> {
        // Layer index -> one tensor of that layer (the first by name, for a stable message).
        let mut layers: BTreeMap<usize, &str> = BTreeMap::new();
        for name in self.index.keys() {
            if let Some(i) = layer_index(name) {
                let entry = layers.entry(i).or_insert(name);
                if name.as_str() < *entry {
                    *entry = name;
                }
            }
        }
        let n = config.num_layers;
        let held = layers.len();
        // The first index in 0.. that the weights lack.
        let missing = layers
            .keys()
            .enumerate()
            .find(|&(position, &i)| position != i)
            .map_or(held, |(position, _)| position);
        let (tensor, file, found) = if missing < n {
            let tensor = format!("model.layers.{missing}.input_layernorm.weight");
            let found = format!("the weights have no layer {missing} (they hold {held} layers)");
            (tensor, self.source.clone(), found)
        } else if let Some((&extra, &name)) = layers.range(n..).next() {
            let found =
                format!("the configuration has no layer {extra} (the weights hold {held} layers)");
            (name.to_string(), self.file_of(name), found)
        } else {
            return Ok(());
        };
        Err(Error::ConfigMismatch(Box::new(ConfigMismatch {
            config: config_path.to_path_buf(),
            field: "`num_hidden_layers`".into(),
            value: n,
            tensor,
            weights: file,
            found,
        })))
    }

    /// The file holding tensor `name`, or the source of the set when there is none.
    fn file_of(&self, name: &str) -> PathBuf {
        self.index.get(name).map_or_else(
            || self.source.clone(),
            |(file, _)| self.files[*file].0.clone(),
        )
    }

    /// The named tensor as f32, checked to have `shape` and to be finite.
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, Error> {
        let (path, view) = self.view(name, shape)?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Weights {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16"
                    ),
                });
            }
        };
        check_finite(path, name, shape, &values)?;
        Ok(values)
    }

    /// The named tensor's file and view, checked to have `shape`, nothing read yet.
    fn view(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(&Path, safetensors::tensor::TensorView<'_>), Error> {
        let (path, mmap) = &self.files[self.check_shape(name, shape)?];
        let tensors = SafeTensors::deserialize(mmap).map_err(|e| weights_error(path, e))?;
        let view = tensors.tensor(name).map_err(|e| weights_error(path, e))?;
        Ok((path, view))
    }

    /// The index of the file holding the named tensor, checked (in the header) to have `shape`.
    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<usize, Error> {
        let (file, found) = self.index.get(name).ok_or_else(|| Error::Weights {
            path: self.source.clone(),
            message: format!("missing tensor `{name}`"),
        })?;
        if found != shape {
            return Err(Error::Weights {
                path: self.files[*file].0.clone(),
                message: format!("tensor `{name}` has shape {found:?}, expected {shape:?}"),
            });
        }
        Ok(*file)
    }

    /// One parameter tensor, made by stacking its Hugging Face parts. Every part's shape is
    /// checked before the tensor is allocated.
    pub fn read_param(&self, spec: &TensorSpec) -> Result<Vec<f32>, Error> {
        for (hf_name, rows) in &spec.parts {
            self.check_shape(hf_name, &spec.part_shape(*rows))?;
        }
        let mut out = Vec::with_capacity(spec.numel());
        for (hf_name, rows) in &spec.parts {
            out.extend(self.read(hf_name, &spec.part_shape(*rows))?);
        }
        Ok(out)
    }

    /// Every parameter of `layout`, on the host.
    pub fn read_params(&self, layout: &Params<TensorSpec>) -> Result<Params<Vec<f32>>, Error> {
        layout.try_map(|spec| self.read_param(spec))
    }
}

/// Checks that every value of tensor `name` (of `shape`, read from `path`) is finite. Found here, a
/// NaN names its tensor; found later, it would surface as a sampling error.
pub(crate) fn check_finite(
    path: &Path,
    name: &str,
    shape: &[usize],
    values: &[f32],
) -> Result<(), Error> {
    let Some(i) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let position = match shape {
        [_, cols] => format!("[{}, {}]", i / cols, i % cols),
        _ => format!("[{i}]"),
    };
    Err(Error::NonFiniteWeight {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        position,
        value: values[i],
    })
}

/// The distinct shard file names of a `model.safetensors.index.json`, each checked to be a plain
/// file name, so that an index cannot make lmsi open a file outside the model directory.
fn shard_names(index_path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(index_path).map_err(|source| Error::Io {
        path: index_path.to_path_buf(),
        source,
    })?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| weights_error(index_path, e))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| weights_error(index_path, "no `weight_map` object"))?;
    let mut names = Vec::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            weights_error(
                index_path,
                format!("weight_map: the shard of `{tensor}` is {shard}, not a file name"),
            )
        })?;
        if !is_plain_file_name(shard) {
            return Err(weights_error(
                index_path,
                format!(
                    "weight_map: shard {shard:?} (of `{tensor}`) is not a file name inside the model directory"
                ),
            ));
        }
        names.push(shard.to_string());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// One normal path component and nothing else: not empty, `.`, `..`, absolute, or with a `/` (or
/// a `\`, a separator elsewhere).
fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(file)), None) if file == name
    ) && !name.contains(['/', '\\'])
}

/// The layer index of a tensor named `model.layers.{i}.…`.
fn layer_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.")?;
    let (index, _) = rest.split_once('.')?;
    index.parse().ok()
}

/// The first dimension where `found` and `expected` differ (their ranks included).
fn first_difference(found: &[usize], expected: &[usize]) -> Option<usize> {
    (0..found.len().max(expected.len())).find(|&d| found.get(d) != expected.get(d))
}

/// The `config.json` field (or product of fields) that gives dimension `dim` of the Hugging Face
/// tensor `name`, after [`Params::layout`].
fn sized_by(config: &Config, name: &str, dim: usize) -> String {
    let head_dim = if config.raw.get("head_dim").is_some() {
        String::new()
    } else {
        format!(
            " (head_dim = hidden_size / num_attention_heads = {} / {})",
            config.hidden_size, config.num_heads
        )
    };
    let heads = format!("`num_attention_heads` × `head_dim`{head_dim}");
    let kv_heads = format!("`num_key_value_heads` × `head_dim`{head_dim}");
    let module = name.rsplit('.').nth(1).unwrap_or("");
    let dims: [&str; 2] = match module {
        "embed_tokens" | "lm_head" => ["`vocab_size`", "`hidden_size`"],
        "q_proj" => [&heads, "`hidden_size`"],
        "k_proj" | "v_proj" => [&kv_heads, "`hidden_size`"],
        "o_proj" => ["`hidden_size`", &heads],
        "gate_proj" | "up_proj" => ["`intermediate_size`", "`hidden_size`"],
        "down_proj" => ["`hidden_size`", "`intermediate_size`"],
        // The norms.
        _ => ["`hidden_size`", "`hidden_size`"],
    };
    dims[dim.min(1)].to_string()
}

fn weights_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes `params` as one `model.safetensors` (f32) with Hugging Face tensor names, so that
/// `transformers` loads it unchanged. Fused tensors are split back into their parts.
pub fn safetensors_bytes(
    layout: &Params<TensorSpec>,
    params: &Params<Vec<f32>>,
) -> Result<Vec<u8>, Error> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (spec, values) in layout.tensors().into_iter().zip(params.tensors()) {
        let mut offset = 0;
        for (hf_name, rows) in &spec.parts {
            let shape = spec.part_shape(*rows);
            let len: usize = shape.iter().product();
            let bytes = values[offset..offset + len]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            offset += len;
            named.push((hf_name.clone(), shape, bytes));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = named
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Weights {
            path: PathBuf::from("model.safetensors"),
            message: e.to_string(),
        })?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Weights {
        path: PathBuf::from("model.safetensors"),
        message: e.to_string(),
    })
}
