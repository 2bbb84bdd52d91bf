//! The kernels on a GPU (feature `cuda`): NVRTC compilation with an on-disk cache, a [`Device`]
//! holding the CUDA context, stream, loaded modules and cuBLAS handle, and one typed launch method
//! per kernel.
//!
//! cudarc opens libcuda and libnvrtc (and libcublas) at run time, so this compiles and links on a
//! machine without CUDA; [`Device::new`] then fails with [`Error::NoDriver`](crate::Error::NoDriver)
//! instead of panicking.
//!
//! ```no_run
//! use lmsi_cuda::cuda::Device;
//! use lmsi_cuda::params::LmsiVecParams;
//!
//! let gpu = Device::new(0)?;
//! let mut x = gpu.stream().clone_htod(&[1.0f32, 2.0, 3.0])?;
//! let y = gpu.stream().clone_htod(&[10.0f32, 20.0, 30.0])?;
//! gpu.add_assign(&LmsiVecParams { len: 3, factor: 0.0 }, &mut x, &y)?;
//! assert_eq!(gpu.stream().clone_dtoh(&x)?, [11.0, 22.0, 33.0]);
//! # Ok::<(), lmsi_cuda::Error>(())
//! ```

mod compile;
mod device;
mod kernels;

pub use compile::{
    NVRTC_OPTIONS, cache_dir, cache_name, cached_ptx, compile_ptx, nvrtc_available, nvrtc_version,
};
/// The cudarc this crate is built with: its buffer types ([`cudarc::driver::CudaSlice`]) are the
/// arguments of the launch methods, so crates above use them from here, at the same version.
pub use cudarc;
pub use device::{Device, cublas_available, driver_available};
