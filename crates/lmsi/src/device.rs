//! Opening the backend `--device` names, and loading a model on it.

use anyhow::{Context, Result, bail};
use lmsi_cuda::SimConfig;
use lmsi_transformer::{Backend, CudaBackend, Dtype, Model, Storage, Tokenizer};

use crate::cli::{DeviceArg, DeviceArgs, ModelArgs};

/// A backend opened for `--device`.
pub enum Opened {
    Cpu,
    /// A GPU or the simulated device.
    Cuda(CudaBackend),
}

/// Opens the backend `--device` asks for, storing at `--dtype`: `cuda` without a usable GPU is an
/// error, `auto` falls back to the CPU and says so on stderr, and the CPU takes only f32.
pub fn open_device(args: &DeviceArgs) -> Result<Opened> {
    let (device, dtype) = (args.device, args.dtype);
    match device {
        DeviceArg::Cpu if dtype != Dtype::F32 => bail!(
            "--dtype {dtype} needs the CUDA backend (--device cuda or sim); the CPU backend computes in f32"
        ),
        DeviceArg::Cpu => Ok(Opened::Cpu),
        DeviceArg::Cuda(ordinal) => open_cuda(ordinal, dtype).map_err(|e| match ordinal {
            0 => anyhow::anyhow!("--device cuda: {e}"),
            _ => anyhow::anyhow!("--device cuda:{ordinal}: {e}"),
        }),
        DeviceArg::Auto => Ok(open_cuda(0, dtype).unwrap_or_else(|e| {
            eprintln!("lmsi: no usable GPU ({e}); running on the CPU, in f32");
            Opened::Cpu
        })),
        DeviceArg::Sim(memory_bytes) => {
            eprintln!("lmsi: running the CUDA backend on the simulated device (slow)");
            let device = lmsi_cuda::Device::sim_with(SimConfig {
                memory_bytes,
                ..SimConfig::default()
            });
            Ok(Opened::Cuda(CudaBackend::on(device).with_dtype(dtype)))
        }
    }
}

fn open_cuda(ordinal: usize, dtype: Dtype) -> Result<Opened, String> {
    CudaBackend::new(ordinal)
        .map(|b| Opened::Cuda(b.with_dtype(dtype)))
        .map_err(|e| e.to_string())
}

/// Evaluates `$call`, a call of a generic function that takes the backend `$backend`, with the
/// backend `--device` picks: one line per command, compiled once per backend.
macro_rules! on_device {
    ($device:expr, $backend:ident => $call:expr) => {
        match $crate::device::open_device($device)? {
            $crate::device::Opened::Cpu => {
                let $backend = lmsi_transformer::CpuBackend::new();
                $call
            }
            $crate::device::Opened::Cuda(cuda) => {
                let $backend = cuda;
                $call
            }
        }
    };
}
pub(crate) use on_device;

impl ModelArgs {
    pub fn load<B: Backend>(&self, backend: B, storage: Storage) -> Result<(Model<B>, Tokenizer)> {
        set_threads(self.device.threads)?;
        let model = Model::load_for(&self.model, backend, storage)
            .with_context(|| format!("loading the model in {}", self.model.display()))?;
        let tokenizer = Tokenizer::load(&self.model, model.config())
            .with_context(|| format!("loading the tokenizer of {}", self.model.display()))?;
        tracing::info!(
            "{}: {} layers, {:.1}M parameters, on {}",
            self.model.display(),
            model.config().num_layers,
            model.config().parameter_count() as f64 / 1e6,
            model.backend().describe()
        );
        Ok((model, tokenizer))
    }
}

pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting the number of threads")?;
    }
    Ok(())
}
