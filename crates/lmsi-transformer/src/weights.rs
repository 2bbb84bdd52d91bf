//! Reading model weights from safetensors files (one file, or shards listed in
//! `model.safetensors.index.json`), in f32, f16 or bf16, converted to f32.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::Error;
use crate::params::{Params, TensorSpec};

/// Memory-mapped safetensors files of one model, with a map from tensor name to file.
pub struct WeightFiles {
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> index into `files`.
    index: HashMap<String, usize>,
}

impl WeightFiles {
    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`, in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io {
                path: index_path.clone(),
                source,
            })?;
            let index: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| weights_error(&index_path, e))?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| weights_error(&index_path, "no `weight_map` object"))?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            names.sort();
            names.dedup();
            names
        } else if single.exists() {
            vec!["model.safetensors".into()]
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
            for tensor_name in tensors.names() {
                index.insert(tensor_name.to_string(), files.len());
            }
            files.push((path, mmap));
        }
        Ok(Self { files, index })
    }

    /// The named tensor as f32, checked to have `shape`.
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, Error> {
        let &file = self.index.get(name).ok_or_else(|| Error::Weights {
            path: self.files.first().map(|f| f.0.clone()).unwrap_or_default(),
            message: format!("missing tensor `{name}`"),
        })?;
        let (path, mmap) = &self.files[file];
        let tensors = SafeTensors::deserialize(mmap).map_err(|e| weights_error(path, e))?;
        let view = tensors.tensor(name).map_err(|e| weights_error(path, e))?;
        if view.shape() != shape {
            return Err(Error::Weights {
                path: path.clone(),
                message: format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    view.shape()
                ),
            });
        }
        let data = view.data();
        let values = match view.dtype() {
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
                    path: path.clone(),
                    message: format!(
                        "tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16"
                    ),
                });
            }
        };
        Ok(values)
    }

    /// One parameter tensor, made by stacking its Hugging Face parts.
    pub fn read_param(&self, spec: &TensorSpec) -> Result<Vec<f32>, Error> {
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
