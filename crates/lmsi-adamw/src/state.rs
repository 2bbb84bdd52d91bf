//! Saving and resuming a [`Trainer`]'s state as a safetensors file, in the layout of a Hugging Face
//! optimizer checkpoint: each parameter's `{name}.exp_avg` and `{name}.exp_avg_sq` in `F32`, with
//! the step count and the trainer's configuration in the file's metadata, as one JSON value under
//! the key `trainer` (one key, so that the same state always gives the same bytes).

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::AdamWError;
use crate::trainable::{TensorInfo, Trainable};
use crate::trainer::{Trainer, TrainerConfig};

const MOMENTS: [&str; 2] = ["exp_avg", "exp_avg_sq"];

/// The metadata key of the state's step and configuration.
const METADATA_KEY: &str = "trainer";

/// What the metadata holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    step: u64,
    config: TrainerConfig,
}

impl<M: Trainable> Trainer<M> {
    /// The optimizer state as the bytes of a safetensors file: every moment (copied from the
    /// device), the step count and the configuration. [`resume`](Self::resume) reads it back.
    ///
    /// ```
    /// use lmsi_adamw::{AdamWConfig, HostParams, LrSchedule, TensorInfo, Trainer, TrainerConfig};
    ///
    /// let mut model = HostParams::new(vec![(TensorInfo::new("w", vec![2], true), vec![1.0, 2.0])])?;
    /// let config = TrainerConfig {
    ///     adamw: AdamWConfig::default(),
    ///     schedule: LrSchedule::constant(1e-2),
    ///     max_grad_norm: None,
    ///     decay_all: false,
    /// };
    /// let mut trainer = Trainer::new(&model, config)?;
    /// let backward = |_: &HostParams, (), g: &mut Vec<Vec<f32>>| { g[0] = vec![0.5, -0.5]; Ok(0.0) };
    /// trainer.step(&mut model, [()], backward)?;
    /// let bytes = trainer.save_state(&model)?;
    /// let resumed = Trainer::resume(&model, config, &bytes)?;
    /// assert_eq!(resumed.step_count(), 1);
    /// // Another configuration than the one saved is refused.
    /// let other = TrainerConfig { max_grad_norm: Some(1.0), ..config };
    /// assert!(Trainer::resume(&model, other, &bytes).is_err());
    /// # Ok::<(), lmsi_adamw::AdamWError>(())
    /// ```
    pub fn save_state(&self, model: &M) -> Result<Vec<u8>, M::Error> {
        let mut named = Vec::with_capacity(2 * self.tensors().len());
        for (info, (m, v)) in self.tensors().iter().zip(self.moments()) {
            for (suffix, tensor) in MOMENTS.iter().zip([m, v]) {
                let bytes: Vec<u8> = model
                    .download(tensor)?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                named.push((format!("{}.{suffix}", info.name), info.shape.clone(), bytes));
            }
        }
        let views = named
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.clone(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(state_error)?;
        let saved = Saved {
            step: self.step_count(),
            config: *self.config(),
        };
        let saved = serde_json::to_string(&saved).map_err(state_error)?;
        let metadata = HashMap::from([(METADATA_KEY.to_string(), saved)]);
        Ok(safetensors::serialize(views, Some(metadata)).map_err(state_error)?)
    }

    /// A trainer continuing from `state` (the bytes of [`save_state`](Self::save_state)) for
    /// `model`, which must have the same tensors, with the same configuration as saved.
    ///
    /// # Errors
    ///
    /// [`AdamWError::State`] saying what is wrong when the file is damaged, lacks a tensor, has a
    /// tensor of another shape or dtype, holds tensors the model does not have, or was saved with
    /// another configuration; the model's error from uploading.
    pub fn resume(model: &M, config: TrainerConfig, state: &[u8]) -> Result<Self, M::Error> {
        let file = SafeTensors::deserialize(state)
            .map_err(|e| AdamWError::State(format!("not a complete safetensors file ({e})")))?;
        let saved = read_metadata(state)?;
        if saved.config != config {
            return Err(AdamWError::State(format!(
                "it was saved with another configuration ({:?}) than this run's ({config:?})",
                saved.config
            ))
            .into());
        }
        let tensors = model.tensor_info();
        if file.len() != MOMENTS.len() * tensors.len() {
            return Err(AdamWError::State(format!(
                "it holds {} tensors; the model has {} parameter tensors, which need {}",
                file.len(),
                tensors.len(),
                MOMENTS.len() * tensors.len()
            ))
            .into());
        }
        let mut moments = Vec::with_capacity(tensors.len());
        for info in &tensors {
            let m = model.upload(&read_moment(&file, info, MOMENTS[0])?)?;
            let v = model.upload(&read_moment(&file, info, MOMENTS[1])?)?;
            moments.push((m, v));
        }
        Self::with_state(model, config, tensors, saved.step, moments)
    }
}

/// The step count and configuration in a state file's metadata.
fn read_metadata(state: &[u8]) -> Result<Saved, AdamWError> {
    let (_, header) = SafeTensors::read_metadata(state).map_err(state_error)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let saved = metadata
        .get(METADATA_KEY)
        .ok_or_else(|| AdamWError::State(format!("its metadata has no `{METADATA_KEY}`")))?;
    serde_json::from_str(saved)
        .map_err(|e| AdamWError::State(format!("metadata `{METADATA_KEY}`: {e}")))
}

fn read_moment(
    file: &SafeTensors<'_>,
    info: &TensorInfo,
    suffix: &str,
) -> Result<Vec<f32>, AdamWError> {
    let name = format!("{}.{suffix}", info.name);
    let view = file
        .tensor(&name)
        .map_err(|_| AdamWError::State(format!("it has no tensor `{name}`")))?;
    if view.dtype() != Dtype::F32 || view.shape() != info.shape.as_slice() {
        return Err(AdamWError::State(format!(
            "tensor `{name}` is {:?} {:?}; the parameter needs F32 {:?}",
            view.dtype(),
            view.shape(),
            info.shape
        )));
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn state_error(e: impl std::fmt::Display) -> AdamWError {
    AdamWError::State(e.to_string())
}
