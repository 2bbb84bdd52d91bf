//! The GPU side (feature `cuda`): NVRTC compilation of the kernel files with an on-disk cache, and
//! the thin cudarc layer behind [`Device::gpu`](crate::Device::gpu) (context, stream, memory,
//! launches, cuBLAS).
//!
//! cudarc opens libcuda, libnvrtc and libcublas at run time, so this compiles and links on a
//! machine without CUDA; [`Device::gpu`](crate::Device::gpu) then fails with
//! [`Error::NoDriver`](crate::Error::NoDriver) instead of panicking.

mod compile;
mod gpu;

pub use compile::{
    NVRTC_OPTIONS, cache_dir, cache_name, cached_ptx, compile_ptx, nvrtc_available, nvrtc_version,
};
pub(crate) use gpu::Gpu;
pub use gpu::{cublas_available, driver_available};
