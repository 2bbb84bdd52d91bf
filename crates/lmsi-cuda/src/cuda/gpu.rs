//! The thin layer only a real GPU runs: cudarc's context, stream, memory, kernel launches by name
//! and cuBLAS. Everything it is asked to do was checked by [`crate::Device`] first.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t};
use cudarc::driver::sys::{CUdeviceptr, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
    DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::compile::{cache_dir, cached_ptx};
use crate::Error;
use crate::blas::{Gemm, GemmElem, GemmOutput, Op};
use crate::buffer::Elem;
use crate::launch::{DEFAULT_SHARED_BYTES, Launch};
use crate::sources::{self, KernelFile};

/// Whether libcuda (the NVIDIA driver) can be opened. Creating a CUDA context without it panics
/// inside cudarc, so `Gpu::new` checks this first.
pub fn driver_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether libcublas can be opened. Creating a cuBLAS handle without it panics inside cudarc.
pub fn cublas_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// One GPU: its context and its one stream, the kernel modules, and a cuBLAS handle on the stream.
pub(crate) struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    capability: (u32, u32),
    cache: Option<PathBuf>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Loaded functions, with the dynamic shared memory they have been allowed so far.
    functions: Mutex<HashMap<&'static str, (CudaFunction, u32)>>,
    blas: OnceLock<CudaBlas>,
}

impl Gpu {
    pub(crate) fn new(ordinal: usize) -> Result<Self, Error> {
        if !driver_available() {
            return Err(Error::NoDriver);
        }
        if !cublas_available() {
            return Err(Error::NoCublas);
        }
        let ctx = CudaContext::new(ordinal)?;
        // One stream carries all the work, so cudarc's per-buffer events, which order work across
        // streams, would only cost two events per allocation.
        // SAFETY: every buffer of this context is allocated and used on the one stream below.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability()?;
        let stream = ctx.default_stream();
        let name = format!("cuda:{ordinal} ({}, sm_{major}{minor})", ctx.name()?);
        let gpu = Gpu {
            ctx,
            blas: OnceLock::from(CudaBlas::new(stream.clone())?),
            stream,
            name,
            capability: (major as u32, minor as u32),
            cache: cache_dir(),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        };
        for file in sources::FILES {
            gpu.module(file)?;
        }
        Ok(gpu)
    }

    pub(crate) fn describe(&self) -> String {
        self.name.clone()
    }

    pub(crate) fn memory(&self) -> Result<(u64, u64), Error> {
        self.ctx.bind_to_thread()?;
        let (free, total) = cudarc::driver::result::mem_get_info()?;
        Ok((free as u64, total as u64))
    }

    pub(crate) fn zeros<T: Elem>(&self, len: usize) -> Result<CudaSlice<T>, Error> {
        if len > 0 {
            return Ok(self.stream.alloc_zeros(len)?);
        }
        // CUDA refuses to allocate 0 bytes: an empty buffer owns one element it never shows.
        let ptr = self.stream.alloc_zeros::<T>(1)?.leak();
        // SAFETY: `ptr` is a live allocation of this stream's context, owned by nobody else now;
        // the slice frees it when dropped.
        Ok(unsafe { self.stream.upgrade_device_ptr(ptr, 0) })
    }

    pub(crate) fn upload<T: Elem>(&self, data: &[T]) -> Result<CudaSlice<T>, Error> {
        if data.is_empty() {
            return self.zeros(0);
        }
        Ok(self.stream.clone_htod(data)?)
    }

    pub(crate) fn download<T: Elem>(&self, src: &CudaView<'_, T>) -> Result<Vec<T>, Error> {
        if src.is_empty() {
            self.synchronize()?;
            return Ok(Vec::new());
        }
        Ok(self.stream.clone_dtoh(src)?)
    }

    pub(crate) fn copy<T: Elem>(
        &self,
        src: &CudaView<'_, T>,
        dst: &mut CudaViewMut<'_, T>,
    ) -> Result<(), Error> {
        if src.is_empty() {
            return Ok(());
        }
        Ok(self.stream.memcpy_dtod(src, dst)?)
    }

    /// Copies `src` to `dst..` within one buffer (the caller checked bounds and overlap): two
    /// disjoint views of it, split between the ranges.
    pub(crate) fn copy_within<T: Elem>(
        &self,
        buf: &mut CudaSlice<T>,
        src: Range<usize>,
        dst: usize,
    ) -> Result<(), Error> {
        let len = src.len();
        if len == 0 {
            return Ok(());
        }
        if src.start < dst {
            let (low, mut high) = buf.split_at_mut(dst);
            self.stream
                .memcpy_dtod(&low.slice(src), &mut high.slice_mut(..len))?;
        } else {
            let (mut low, high) = buf.split_at_mut(src.start);
            self.stream
                .memcpy_dtod(&high.slice(..len), &mut low.slice_mut(dst..dst + len))?;
        }
        Ok(())
    }

    pub(crate) fn fill_zeros<T: Elem>(&self, dst: &mut CudaViewMut<'_, T>) -> Result<(), Error> {
        if dst.is_empty() {
            return Ok(());
        }
        Ok(self.stream.memset_zeros(dst)?)
    }

    pub(crate) fn synchronize(&self) -> Result<(), Error> {
        Ok(self.stream.synchronize()?)
    }

    /// The device address of `view`. Event tracking is off (one stream), so the guard cudarc
    /// returns with it records nothing and can go at once.
    pub(crate) fn ptr<T: Elem>(&self, view: &CudaView<'_, T>) -> CUdeviceptr {
        view.device_ptr(&self.stream).0
    }

    pub(crate) fn ptr_mut<T: Elem>(&self, view: &mut CudaViewMut<'_, T>) -> CUdeviceptr {
        view.device_ptr_mut(&self.stream).0
    }

    /// Enqueues `kernel` with its parameter struct and buffer addresses, in its argument order.
    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        kernel: &'static str,
        l: Launch,
        p: &P,
        buffers: &[CUdeviceptr],
    ) -> Result<(), Error> {
        let function = self.function(kernel, l.shared_bytes)?;
        let mut args = self.stream.launch_builder(&function);
        args.arg(p);
        for buffer in buffers {
            args.arg(buffer);
        }
        let config = LaunchConfig {
            grid_dim: l.grid,
            block_dim: l.block,
            shared_mem_bytes: l.shared_bytes,
        };
        // SAFETY: the arguments are the kernel's (its parameter struct by value, then one device
        // pointer per buffer, in the order of the kernel table), and `crate::launch` checked every
        // buffer against what the kernel touches.
        unsafe { args.launch(config) }?;
        Ok(())
    }

    /// cuBLAS's strided batched product, already checked: `GemmStridedBatchedEx` with the
    /// operands' and the output's types and an f32 compute type (no TF32).
    pub(crate) fn gemm<T: GemmElem, C: GemmOutput<T>>(
        &self,
        g: &Gemm,
        a: &CudaView<'_, T>,
        b: &CudaView<'_, T>,
        c: &mut CudaViewMut<'_, C>,
    ) -> Result<(), Error> {
        if g.is_empty() {
            return Ok(());
        }
        let op = |op| match op {
            Op::N => cublasOperation_t::CUBLAS_OP_N,
            Op::T => cublasOperation_t::CUBLAS_OP_T,
        };
        let blas = self.blas.get().expect("created in Gpu::new");
        let (a, b, c) = (self.ptr(a), self.ptr(b), self.ptr_mut(c));
        // SAFETY: `Gemm::check` bounded every element cuBLAS touches within the three buffers,
        // all of this context; alpha and beta are f32, the scale type of CUBLAS_COMPUTE_32F.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *blas.handle(),
                op(g.transa),
                op(g.transb),
                g.m,
                g.n,
                g.k,
                (&g.alpha as *const f32).cast(),
                a as *const std::ffi::c_void,
                T::CUDA_TYPE,
                g.lda,
                g.stride_a,
                b as *const std::ffi::c_void,
                T::CUDA_TYPE,
                g.ldb,
                g.stride_b,
                (&g.beta as *const f32).cast(),
                c as *mut std::ffi::c_void,
                C::CUDA_TYPE,
                g.ldc,
                g.stride_c,
                g.batch,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }?;
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
    fn function(&self, kernel: &'static str, shared_bytes: u32) -> Result<CudaFunction, Error> {
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
