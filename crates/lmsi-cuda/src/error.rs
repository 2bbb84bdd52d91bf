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
    /// A buffer of one kind of device given to the other (a simulated device's to a GPU, or back).
    #[error("a buffer of another device was passed (simulated and GPU buffers do not mix)")]
    WrongDevice,
    /// An allocation past the device's memory.
    #[error("out of device memory: {requested} bytes asked for, {free} of {total} free")]
    OutOfMemory {
        requested: u64,
        free: u64,
        total: u64,
    },
    /// A matrix product that cuBLAS would reject (`CUBLAS_STATUS_INVALID_VALUE`), or whose buffers
    /// are shorter than what it reads or writes.
    #[error("gemm: {0}")]
    Blas(String),
    /// A view past the end of its buffer.
    #[error("range {range:?} of a buffer of {len} elements")]
    Range {
        range: std::ops::Range<usize>,
        len: usize,
    },
    /// A copy between views of different lengths.
    #[error("copy of {src} elements into {dst}")]
    CopyLengths { src: usize, dst: usize },
    /// A copy within a buffer whose ranges overlap.
    #[error("copy within a buffer from {src:?} to {dst:?}: the ranges overlap")]
    Overlap {
        src: std::ops::Range<usize>,
        dst: std::ops::Range<usize>,
    },
    /// A GPU asked of a build without the `cuda` feature.
    #[error("this build of lmsi has no GPU support (built without the `cuda` feature)")]
    NotBuilt,
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
