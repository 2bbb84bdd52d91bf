//! The crate's error type.

/// What can go wrong checking, compiling or launching a kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Parameters or buffers that do not fit the kernel: a buffer too short, a head size past the
    /// supported maximum, and the like. Nothing was launched.
    #[error("{kernel}: {reason}")]
    Invalid {
        kernel: &'static str,
        reason: String,
    },
    /// The CPU shim failed a launch: a partial barrier, a deadlock, a malformed warp collective.
    #[error("CPU shim: {0}")]
    Sim(String),
    /// `cudarc` cannot open libcuda: no NVIDIA driver on this machine.
    #[cfg(feature = "cuda")]
    #[error("no CUDA driver (libcuda) found")]
    NoDriver,
    /// `cudarc` cannot open libnvrtc, which compiles the kernels at run time.
    #[cfg(feature = "cuda")]
    #[error("no NVRTC library (libnvrtc) found: put the CUDA toolkit's lib/ on LD_LIBRARY_PATH")]
    NoNvrtc,
    /// `cudarc` cannot open libcublas, which does the matrix products.
    #[cfg(feature = "cuda")]
    #[error("no cuBLAS library (libcublas) found: put the CUDA toolkit's lib/ on LD_LIBRARY_PATH")]
    NoCublas,
    /// A CUDA driver call failed.
    #[cfg(feature = "cuda")]
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// cuBLAS failed.
    #[cfg(feature = "cuda")]
    #[error("cuBLAS: {0}")]
    Cublas(#[from] cudarc::cublas::result::CublasError),
    /// NVRTC rejected a kernel file.
    #[cfg(feature = "cuda")]
    #[error("NVRTC could not compile kernels/{file} for {arch}:\n{log}")]
    Compile {
        file: &'static str,
        arch: String,
        log: String,
    },
    /// The on-disk cache of compiled kernels could not be read or written.
    #[cfg(feature = "cuda")]
    #[error("kernel cache {path}: {source}")]
    Cache {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(kernel: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            kernel,
            reason: reason.into(),
        }
    }
}
