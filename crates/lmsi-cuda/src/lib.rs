//! The CUDA core of lmsi: the kernel sources (`kernels/*.cu`), a CPU shim that runs them without a
//! GPU, and (feature `cuda`) their compilation with NVRTC and typed launches through cudarc.
//!
//! - [`params`]: the launch parameter structs, mirrored from `kernels/include/lmsi_params.h`.
//! - [`launch`]: each kernel's grid, block and shared memory, and the checks that its buffers fit.
//! - [`plan`]: the attention kernels' work items (which tokens share a block).
//! - [`sources`]: the embedded kernel files and the kernels each defines.
//! - [`sim`]: every kernel run on host slices through the shim (`kernels/sim/`), always built, so
//!   that tests exercise the kernel code itself on any machine.
//! - `cuda` (feature `cuda`): `cuda::Device`, which compiles the kernels for the GPU present
//!   (NVRTC, cached on disk by content hash), launches them on its stream, and hands out a cuBLAS
//!   handle. Matrix products are cuBLAS's; no kernel here multiplies matrices.
//!
//! Kernels take their parameter struct by value and their buffers as separate arguments; the
//! same source compiles with nvcc, with NVRTC and, as C++20 with `-DLMSI_SIM`, against the shim.
//!
//! # Environment
//!
//! - `LMSI_KERNEL_CACHE`: where compiled kernels are cached (default `$XDG_CACHE_HOME/lmsi/kernels`,
//!   else `~/.cache/lmsi/kernels`).
//! - `LD_LIBRARY_PATH`: must name the directories of libcuda (the driver) and libnvrtc; cudarc
//!   opens them by name at run time, so a build without CUDA links only libc.
//!
//! ```
//! use lmsi_cuda::params::LmsiVecParams;
//! use lmsi_cuda::sim::{Schedule, Sim};
//!
//! let mut x = vec![1.0f32; 1000];
//! let y: Vec<f32> = (0..1000).map(|i| i as f32).collect();
//! let p = LmsiVecParams { len: 1000, factor: 0.0 };
//! Sim::new(Schedule::Shuffled(7)).add_assign(&p, &mut x, &y)?;
//! assert_eq!(x[999], 1000.0);
//! # Ok::<(), lmsi_cuda::Error>(())
//! ```

mod error;
#[allow(clippy::all)]
mod params_generated;

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod launch;
pub mod params;
pub mod plan;
pub mod sim;
pub mod sources;

pub use error::Error;
