//! The CUDA core of lmsi: the kernel sources (`kernels/*.cu`), a CPU shim that runs them without a
//! GPU, and (feature `cuda`) their compilation with NVRTC and typed launches through cudarc.
//!
//! - [`params`]: the launch parameter structs, mirrored from `kernels/include/lmsi_params.h`.
//! - [`launch`]: each kernel's grid, block and shared memory, and the checks that its buffers fit.
//! - [`plan`]: the attention kernels' work items (which tokens share a block).
//! - [`sources`]: the embedded kernel files and the kernels each defines.
//! - [`for_each_kernel!`]: the one Rust table of the kernels, from which the kernel list, the
//!   shim's methods and the device methods are generated (the C side: `kernels/include/lmsi_kernels.h`).
//! - [`sim`]: every kernel run on host slices through the shim (`kernels/sim/`), always built, so
//!   that tests exercise the kernel code itself on any machine.
//! - [`Device`], [`Buffer`], [`View`]: one interface over two devices. The simulated one
//!   ([`Device::sim`]) keeps buffers in host memory, runs every launch through the same checks and
//!   then the shim, and does cuBLAS's products ([`blas`]) on the CPU with cuBLAS's semantics; the
//!   real one ([`Device::gpu`], feature `cuda`) compiles the kernels with NVRTC (cached on disk by
//!   content hash), launches them on its one stream and multiplies with cuBLAS. Code above this
//!   crate is written once over `Device`, so all of it but the thin cudarc layer ([`cuda`]) runs
//!   on any machine.
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

pub mod blas;
mod buffer;
#[cfg(feature = "cuda")]
pub mod cuda;
mod device;
mod kernels;
pub mod launch;
pub mod params;
pub mod plan;
pub mod sim;
pub mod sources;

pub use buffer::{Buffer, Elem, GpuRepr, View, ViewMut};
pub use device::{Device, SimConfig};
pub use error::Error;

/// Bytes for people: `1.50 GiB`, `12.0 MiB`, `900 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.digits$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_as_people_write_them() {
        use super::human_bytes;
        assert_eq!(human_bytes(900), "900 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(12 << 20), "12.0 MiB");
        assert_eq!(human_bytes(300 << 30), "300 GiB");
    }
}
