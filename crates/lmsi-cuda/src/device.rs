//! [`Device`]: one interface over the real GPU (feature `cuda`: cudarc, NVRTC, cuBLAS) and the
//! simulated one (host memory, the kernels through the CPU shim, cuBLAS's products on the CPU).
//!
//! Everything above this crate is written once over `Device`; only the thin cudarc layer
//! (`crate::cuda`) needs a GPU. Both devices keep the same rules:
//! - every kernel launch goes through the same checks ([`crate::launch`]), then runs;
//! - matrix products take cuBLAS's arguments and are checked as cuBLAS checks them
//!   ([`crate::blas`]);
//! - work is ordered as on one CUDA stream: each call runs after the ones before it. The GPU
//!   returns before the work is done and [`Device::download`] waits for it; the simulated device
//!   runs each call before it returns, so the order and every result are the same;
//! - memory is limited: the GPU's, or the simulated device's configured size
//!   ([`SimConfig::memory_bytes`]); an allocation past it is [`Error::OutOfMemory`].
//!
//! ```
//! use lmsi_cuda::Device;
//! use lmsi_cuda::params::LmsiVecParams;
//!
//! let dev = Device::sim();
//! let mut x = dev.upload(&[1.0f32, 2.0, 3.0])?;
//! let y = dev.upload(&[10.0f32, 20.0, 30.0])?;
//! dev.add_assign(&LmsiVecParams { len: 3, factor: 0.0 }, &mut x, &y)?;
//! assert_eq!(dev.download(&x)?, [11.0, 22.0, 33.0]);
//! # Ok::<(), lmsi_cuda::Error>(())
//! ```

use std::ops::Range;
use std::sync::Arc;

use crate::Error;
use crate::blas::{Gemm, GemmElem, GemmOutput};
use crate::buffer::{Buffer, Elem, HostMemory, Memory, View, ViewMut};
use crate::params::*;
use crate::sim::{Schedule, Sim};

/// The simulated device's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The fiber order of every kernel launch.
    pub schedule: Schedule,
    /// The memory it offers, in bytes (default 80 GiB, an H100's).
    pub memory_bytes: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            schedule: Schedule::InOrder,
            memory_bytes: 80 << 30,
        }
    }
}

/// A device that runs lmsi's kernels: the simulated one, or a GPU.
pub struct Device {
    inner: Inner,
}

enum Inner {
    Sim {
        kernels: Sim,
        memory: Arc<HostMemory>,
    },
    #[cfg(feature = "cuda")]
    Gpu(crate::cuda::Gpu),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Device {
    /// The simulated device with the default settings.
    pub fn sim() -> Self {
        Self::sim_with(SimConfig::default())
    }

    /// The simulated device with `config`.
    pub fn sim_with(config: SimConfig) -> Self {
        Device {
            inner: Inner::Sim {
                kernels: Sim::new(config.schedule),
                memory: HostMemory::new(config.memory_bytes),
            },
        }
    }

    /// GPU `ordinal`, with every kernel compiled (NVRTC, cached on disk) and cuBLAS loaded, so a
    /// GPU that cannot run them fails here.
    ///
    /// # Errors
    ///
    /// [`Error::NotBuilt`] without the `cuda` feature; without libcuda [`Error::NoDriver`]; without
    /// the device, or a driver that does not start, [`Error::Driver`]; without libcublas or
    /// libnvrtc [`Error::NoCublas`] / [`Error::NoNvrtc`]. Never panics.
    pub fn gpu(ordinal: usize) -> Result<Self, Error> {
        #[cfg(feature = "cuda")]
        {
            Ok(Device {
                inner: Inner::Gpu(crate::cuda::Gpu::new(ordinal)?),
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ordinal;
            Err(Error::NotBuilt)
        }
    }

    /// Whether this is the simulated device.
    pub fn is_sim(&self) -> bool {
        matches!(self.inner, Inner::Sim { .. })
    }

    /// A short description, e.g. `sim (simulated CUDA device, 80.0 GiB)` or
    /// `cuda:0 (NVIDIA H200, sm_90)`.
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Sim { memory, .. } => format!(
                "sim (simulated CUDA device, {})",
                crate::human_bytes(memory.total)
            ),
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => gpu.describe(),
        }
    }

    /// `(free, total)` bytes of device memory.
    pub fn memory(&self) -> Result<(u64, u64), Error> {
        match &self.inner {
            Inner::Sim { memory, .. } => Ok((memory.total - memory.used(), memory.total)),
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => gpu.memory(),
        }
    }

    /// On the simulated device, the most memory in use at once (bytes) since it was created or
    /// [`Device::reset_memory_peak`]; `None` on a GPU, whose allocator does not say.
    pub fn memory_peak(&self) -> Option<u64> {
        match &self.inner {
            Inner::Sim { memory, .. } => Some(memory.peak()),
            #[cfg(feature = "cuda")]
            Inner::Gpu(_) => None,
        }
    }

    /// Starts [`Device::memory_peak`] again from the memory in use now.
    pub fn reset_memory_peak(&self) {
        match &self.inner {
            Inner::Sim { memory, .. } => memory.reset_peak(),
            #[cfg(feature = "cuda")]
            Inner::Gpu(_) => {}
        }
    }

    /// A zero-filled buffer of `len` elements.
    pub fn zeros<T: Elem>(&self, len: usize) -> Result<Buffer<T>, Error> {
        let mem = match &self.inner {
            Inner::Sim { memory, .. } => Memory::Host {
                _reservation: memory.reserve((len * std::mem::size_of::<T>()) as u64)?,
                // SAFETY: `Elem` types take any bit pattern, zeros included.
                data: vec![unsafe { std::mem::zeroed() }; len],
            },
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => Memory::Gpu(gpu.zeros(len)?),
        };
        Ok(Buffer { mem })
    }

    /// A buffer holding a copy of `data`.
    pub fn upload<T: Elem>(&self, data: &[T]) -> Result<Buffer<T>, Error> {
        let mem = match &self.inner {
            Inner::Sim { memory, .. } => Memory::Host {
                _reservation: memory.reserve(std::mem::size_of_val(data) as u64)?,
                data: data.to_vec(),
            },
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => Memory::Gpu(gpu.upload(data)?),
        };
        Ok(Buffer { mem })
    }

    /// The elements of `src`, once the work before has finished.
    pub fn download<'a, T: Elem>(&self, src: impl Into<View<'a, T>>) -> Result<Vec<T>, Error> {
        let src = src.into();
        match &self.inner {
            Inner::Sim { .. } => Ok(src.host()?.to_vec()),
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => gpu.download(&src.gpu()?),
        }
    }

    /// Copies `src` into `dst`, which must have the same length.
    pub fn copy<'a, T: Elem>(
        &self,
        src: impl Into<View<'a, T>>,
        dst: impl Into<ViewMut<'a, T>>,
    ) -> Result<(), Error> {
        let (src, mut dst) = (src.into(), dst.into());
        if src.len() != dst.len() {
            return Err(Error::CopyLengths {
                src: src.len(),
                dst: dst.len(),
            });
        }
        match &self.inner {
            Inner::Sim { .. } => {
                dst.host_mut()?.copy_from_slice(src.host()?);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => gpu.copy(&src.gpu()?, &mut dst.gpu_mut()?),
        }
    }

    /// Copies elements `src` of `buf` to `dst..` of the same buffer; the two ranges must not
    /// overlap.
    pub fn copy_within<T: Elem>(
        &self,
        buf: &mut Buffer<T>,
        src: Range<usize>,
        dst: usize,
    ) -> Result<(), Error> {
        let to = dst..dst + src.len();
        buf.slice(src.clone())?;
        buf.slice(to.clone())?;
        if src.start < to.end && to.start < src.end {
            return Err(Error::Overlap { src, dst: to });
        }
        match (&mut buf.mem, &self.inner) {
            (Memory::Host { data, .. }, Inner::Sim { .. }) => {
                data.copy_within(src, dst);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            (Memory::Gpu(slice), Inner::Gpu(gpu)) => gpu.copy_within(slice, src, dst),
            #[cfg(feature = "cuda")]
            _ => Err(Error::WrongDevice),
        }
    }

    /// Sets every element of `dst` to zero bits.
    pub fn fill_zeros<'a, T: Elem>(&self, dst: impl Into<ViewMut<'a, T>>) -> Result<(), Error> {
        let mut dst = dst.into();
        match &self.inner {
            Inner::Sim { .. } => {
                // SAFETY: `Elem` types take any bit pattern, zeros included.
                dst.host_mut()?.fill(unsafe { std::mem::zeroed() });
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => gpu.fill_zeros(&mut dst.gpu_mut()?),
        }
    }

    /// Waits until all work enqueued so far has finished.
    pub fn synchronize(&self) -> Result<(), Error> {
        match &self.inner {
            Inner::Sim { .. } => Ok(()),
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => gpu.synchronize(),
        }
    }

    /// A cuBLAS matrix product (see [`crate::blas`]): checked as cuBLAS checks it, then cuBLAS's
    /// on a GPU, the same product on the CPU on the simulated device.
    pub fn gemm<'a, T: GemmElem, C: GemmOutput<T>>(
        &self,
        g: &Gemm,
        a: impl Into<View<'a, T>>,
        b: impl Into<View<'a, T>>,
        c: impl Into<ViewMut<'a, C>>,
    ) -> Result<(), Error> {
        let (a, b, mut c) = (a.into(), b.into(), c.into());
        g.check(a.len(), b.len(), c.len())?;
        match &self.inner {
            Inner::Sim { .. } => g.run_host(a.host()?, b.host()?, c.host_mut()?),
            #[cfg(feature = "cuda")]
            Inner::Gpu(gpu) => gpu.gemm(g, &a.gpu()?, &b.gpu()?, &mut c.gpu_mut()?),
        }
    }
}

/// One method of [`Device`] per kernel of the table: the launch checks, then the shim or the GPU.
macro_rules! device_methods {
    ($($file:literal {
        $($(#[$doc:meta])* fn $name:ident(
            $params:ty; $($out:ident: $out_ty:ty),+; $($input:ident: $in_ty:ty),*
        );)*
    })*) => {
        impl Device {
            $($(
                $(#[$doc])*
                #[allow(clippy::too_many_arguments)]
                pub fn $name<'a>(
                    &self,
                    p: &$params,
                    $($out: impl Into<ViewMut<'a, $out_ty>>,)+
                    $($input: impl Into<View<'a, $in_ty>>,)*
                ) -> Result<(), Error> {
                    $(let mut $out = $out.into();)+
                    $(let $input = $input.into();)*
                    match &self.inner {
                        Inner::Sim { kernels, .. } => {
                            kernels.$name(p, $($out.host_mut()?,)+ $($input.host()?,)*)
                        }
                        #[cfg(feature = "cuda")]
                        Inner::Gpu(gpu) => {
                            let launch = crate::launch::$name(p, $($out.len(),)+ $($input.len(),)*)?;
                            let Some(launch) = launch else {
                                return Ok(());
                            };
                            let buffers = [
                                $(gpu.ptr_mut(&mut $out.gpu_mut()?),)+
                                $(gpu.ptr(&$input.gpu()?),)*
                            ];
                            gpu.launch(stringify!($name), launch, p, &buffers)
                        }
                    }
                }
            )*)*
        }
    };
}

crate::for_each_kernel!(device_methods);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_memory_is_limited_and_given_back() {
        let dev = Device::sim_with(SimConfig {
            memory_bytes: 1000,
            ..SimConfig::default()
        });
        let a = dev.zeros::<f32>(200).unwrap();
        assert_eq!(dev.memory().unwrap(), (200, 1000));
        assert_eq!(dev.memory_peak(), Some(800));
        let err = dev.zeros::<f32>(51).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfMemory {
                    requested: 204,
                    free: 200,
                    ..
                }
            ),
            "{err}"
        );
        drop(a);
        assert_eq!(dev.memory().unwrap(), (1000, 1000));
        assert_eq!(dev.memory_peak(), Some(800), "the peak stays");
        dev.reset_memory_peak();
        assert_eq!(dev.memory_peak(), Some(0));
        assert!(dev.upload(&[0u64; 125]).is_ok());
    }

    #[test]
    fn copies_keep_their_meaning() {
        let dev = Device::sim();
        let mut buf = dev.upload(&[0u32, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        dev.copy_within(&mut buf, 1..3, 5).unwrap();
        assert_eq!(dev.download(&buf).unwrap(), [0, 1, 2, 3, 4, 1, 2, 7]);
        assert!(matches!(
            dev.copy_within(&mut buf, 1..4, 3),
            Err(Error::Overlap { .. })
        ));
        assert!(matches!(
            dev.copy_within(&mut buf, 6..9, 0),
            Err(Error::Range { .. })
        ));
        let src = dev.upload(&[9u32, 9]).unwrap();
        dev.copy(src.slice(0..2).unwrap(), buf.slice_mut(3..5).unwrap())
            .unwrap();
        dev.fill_zeros(buf.slice_mut(0..2).unwrap()).unwrap();
        assert_eq!(dev.download(&buf).unwrap(), [0, 0, 2, 9, 9, 1, 2, 7]);
        assert!(dev.copy(&src, buf.slice_mut(0..3).unwrap()).is_err());
        let view = buf.slice(2..6).unwrap().slice(1..3).unwrap();
        assert_eq!(dev.download(view).unwrap(), [9, 9]);
    }

    #[test]
    fn kernels_on_the_device_are_checked_as_on_a_gpu() {
        let dev = Device::sim();
        let mut x = dev.zeros::<f32>(3).unwrap();
        let y = dev.upload(&[1.0f32, 2.0]).unwrap();
        let err = dev
            .add_assign(
                &LmsiVecParams {
                    len: 3,
                    factor: 0.0,
                },
                &mut x,
                &y,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "add_assign: y has 2 elements, needs 3");
    }
}
