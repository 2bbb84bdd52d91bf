//! The GPU context: device, stream, kernel modules (compiled on first use) and cuBLAS.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::compile::{cache_dir, cached_ptx};
use crate::launch::DEFAULT_SHARED_BYTES;
use crate::sources;
use crate::{Error, sources::KernelFile};

/// Whether libcuda (the NVIDIA driver) can be opened. Creating a CUDA context without it panics
/// inside cudarc, so [`Device::new`] checks this first.
pub fn driver_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether libcublas can be opened. Creating a cuBLAS handle without it panics inside cudarc, so
/// [`Device::blas`] checks this first.
pub fn cublas_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// One GPU: its context and stream, the kernel modules loaded so far, and a cuBLAS handle. Every
/// launch goes to [`Device::stream`].
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    capability: (u32, u32),
    cache: Option<PathBuf>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Loaded functions, with the dynamic shared memory they have been allowed so far.
    functions: Mutex<HashMap<&'static str, (CudaFunction, u32)>>,
    blas: OnceLock<CudaBlas>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("ordinal", &self.ctx.ordinal())
            .field("capability", &self.capability)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Opens GPU `ordinal`. Kernels are compiled on first use and cached in
    /// [`cache_dir`](super::cache_dir).
    ///
    /// # Errors
    ///
    /// [`Error::NoDriver`] without libcuda; [`Error::Driver`] when there is no such device or the
    /// driver fails to start.
    pub fn new(ordinal: usize) -> Result<Self, Error> {
        if !driver_available() {
            return Err(Error::NoDriver);
        }
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        let stream = ctx.default_stream();
        Ok(Device {
            ctx,
            stream,
            capability: (major as u32, minor as u32),
            cache: cache_dir(),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
        })
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Compute capability, e.g. `(9, 0)` for an H100.
    pub fn compute_capability(&self) -> (u32, u32) {
        self.capability
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> Result<String, Error> {
        Ok(self.ctx.name()?)
    }

    /// A cuBLAS handle on [`Device::stream`], created on first use.
    ///
    /// # Errors
    ///
    /// [`Error::NoCublas`] without libcublas; [`Error::Cublas`] when cuBLAS fails to start.
    pub fn blas(&self) -> Result<&CudaBlas, Error> {
        if let Some(blas) = self.blas.get() {
            return Ok(blas);
        }
        if !cublas_available() {
            return Err(Error::NoCublas);
        }
        let blas = CudaBlas::new(self.stream.clone())?;
        Ok(self.blas.get_or_init(|| blas))
    }

    /// Compiles (or takes from the cache) and loads every kernel file now rather than on first
    /// use, so that a broken toolchain shows up at start-up.
    pub fn load_all(&self) -> Result<(), Error> {
        for file in &sources::FILES {
            self.module(file)?;
        }
        Ok(())
    }

    fn module(&self, file: &'static KernelFile) -> Result<Arc<CudaModule>, Error> {
        let mut modules = self.modules.lock().expect("module map lock");
        if let Some(m) = modules.get(file.name) {
            return Ok(m.clone());
        }
        let arch = self.capability.0 * 10 + self.capability.1;
        let ptx = cached_ptx(file, arch, self.cache.as_deref())?;
        let module = self.ctx.load_module(Ptx::from_src(ptx))?;
        modules.insert(file.name, module.clone());
        Ok(module)
    }

    /// The loaded function `kernel`, allowed `shared_bytes` of dynamic shared memory.
    pub(super) fn function(
        &self,
        kernel: &'static str,
        shared_bytes: u32,
    ) -> Result<CudaFunction, Error> {
        let mut functions = self.functions.lock().expect("function map lock");
        let entry = match functions.get_mut(kernel) {
            Some(entry) => entry,
            None => {
                let file = sources::file_of(kernel)
                    .ok_or_else(|| Error::invalid(kernel, "not in any kernel file"))?;
                let function = self.module(file)?.load_function(kernel)?;
                functions
                    .entry(kernel)
                    .or_insert((function, DEFAULT_SHARED_BYTES))
            }
        };
        // Above 48 KiB a kernel must opt in to more dynamic shared memory.
        if shared_bytes > entry.1 {
            entry.0.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_bytes as i32,
            )?;
            entry.1 = shared_bytes;
        }
        Ok(entry.0.clone())
    }
}
