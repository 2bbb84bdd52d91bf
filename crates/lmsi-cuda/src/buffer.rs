//! Device memory: [`Buffer`]s of one element type, and [`View`]s of a range of one.
//!
//! A buffer lives where its [`Device`](crate::Device) keeps memory: host memory for the simulated
//! device (counted against its configured size, released on drop), GPU memory for a real one
//! (feature `cuda`). Kernels and copies take views, so part of a buffer can be passed without a
//! copy; `&Buffer` and `&mut Buffer` convert into views of the whole buffer.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

#[cfg(feature = "cuda")]
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};

/// What the GPU side needs of an element type: cudarc's traits (feature `cuda`), nothing without.
#[cfg(feature = "cuda")]
pub trait GpuRepr: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits {}
#[cfg(feature = "cuda")]
impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> GpuRepr for T {}
/// What the GPU side needs of an element type: cudarc's traits (feature `cuda`), nothing without.
#[cfg(not(feature = "cuda"))]
pub trait GpuRepr {}
#[cfg(not(feature = "cuda"))]
impl<T> GpuRepr for T {}

/// A type device buffers hold.
///
/// # Safety
///
/// Every bit pattern of its size, all zeros included, is a valid value: device memory is handed
/// out zero-filled and kernels write it as raw bytes.
pub unsafe trait Elem: Copy + Send + Sync + std::fmt::Debug + GpuRepr + 'static {}

// SAFETY: plain numbers (and a struct of four u32s): any bit pattern is a value.
unsafe impl Elem for f32 {}
unsafe impl Elem for f64 {}
unsafe impl Elem for u32 {}
unsafe impl Elem for i32 {}
unsafe impl Elem for u64 {}
unsafe impl Elem for half::bf16 {}
unsafe impl Elem for crate::params::LmsiAttnItem {}

/// The simulated device's memory: its size and what is allocated.
#[derive(Debug)]
pub(crate) struct HostMemory {
    pub(crate) total: u64,
    used: AtomicU64,
    /// The most ever used at once since the last reset.
    peak: AtomicU64,
}

impl HostMemory {
    pub(crate) fn new(total: u64) -> Arc<Self> {
        Arc::new(HostMemory {
            total,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        })
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts the peak again from what is used now.
    pub(crate) fn reset_peak(&self) {
        self.peak.store(self.used(), Ordering::Relaxed);
    }

    /// Reserves `bytes`, or fails as a GPU out of memory would.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, Error> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let free = self.total - used;
            if bytes > free {
                return Err(Error::OutOfMemory {
                    requested: bytes,
                    free,
                    total: self.total,
                });
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.peak.fetch_max(used + bytes, Ordering::Relaxed);
                    return Ok(Reservation {
                        memory: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }
}

/// Bytes of the simulated device's memory held by one buffer, given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    memory: Arc<HostMemory>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.memory.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A buffer of `T` on a device.
#[derive(Debug)]
pub struct Buffer<T: Elem> {
    pub(crate) mem: Memory<T>,
}

#[derive(Debug)]
pub(crate) enum Memory<T: Elem> {
    Host {
        data: Vec<T>,
        _reservation: Reservation,
    },
    #[cfg(feature = "cuda")]
    Gpu(CudaSlice<T>),
}

/// Part of a buffer, read by a kernel or a copy.
#[derive(Debug)]
pub struct View<'a, T: Elem> {
    buf: &'a Buffer<T>,
    range: Range<usize>,
}

impl<T: Elem> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        View {
            buf: self.buf,
            range: self.range.clone(),
        }
    }
}

/// Part of a buffer, written by a kernel or a copy.
#[derive(Debug)]
pub struct ViewMut<'a, T: Elem> {
    buf: &'a mut Buffer<T>,
    range: Range<usize>,
}

fn check_range(range: &Range<usize>, len: usize) -> Result<(), Error> {
    if range.start > range.end || range.end > len {
        return Err(Error::Range {
            range: range.clone(),
            len,
        });
    }
    Ok(())
}

impl<T: Elem> Buffer<T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match &self.mem {
            Memory::Host { data, .. } => data.len(),
            #[cfg(feature = "cuda")]
            Memory::Gpu(slice) => slice.len(),
        }
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of device memory the buffer holds.
    pub fn bytes(&self) -> u64 {
        (self.len() * std::mem::size_of::<T>()) as u64
    }

    /// The whole buffer, to read.
    pub fn view(&self) -> View<'_, T> {
        View {
            buf: self,
            range: 0..self.len(),
        }
    }

    /// The whole buffer, to write.
    pub fn view_mut(&mut self) -> ViewMut<'_, T> {
        let range = 0..self.len();
        ViewMut { buf: self, range }
    }

    /// Elements `range`, to read; an error past the end.
    pub fn slice(&self, range: Range<usize>) -> Result<View<'_, T>, Error> {
        check_range(&range, self.len())?;
        Ok(View { buf: self, range })
    }

    /// Elements `range`, to write; an error past the end.
    pub fn slice_mut(&mut self, range: Range<usize>) -> Result<ViewMut<'_, T>, Error> {
        check_range(&range, self.len())?;
        Ok(ViewMut { buf: self, range })
    }
}

impl<'a, T: Elem> From<&'a Buffer<T>> for View<'a, T> {
    fn from(buf: &'a Buffer<T>) -> Self {
        buf.view()
    }
}

impl<'a, T: Elem> From<&'a mut Buffer<T>> for View<'a, T> {
    fn from(buf: &'a mut Buffer<T>) -> Self {
        buf.view()
    }
}

impl<'a, T: Elem> From<&'a mut Buffer<T>> for ViewMut<'a, T> {
    fn from(buf: &'a mut Buffer<T>) -> Self {
        buf.view_mut()
    }
}

impl<'a, T: Elem> View<'a, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether the view holds no elements.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Elements `range` of this view.
    pub fn slice(&self, range: Range<usize>) -> Result<View<'a, T>, Error> {
        check_range(&range, self.len())?;
        Ok(View {
            buf: self.buf,
            range: self.range.start + range.start..self.range.start + range.end,
        })
    }

    /// The elements, where the device keeps them in host memory.
    pub(crate) fn host(&self) -> Result<&'a [T], Error> {
        match &self.buf.mem {
            Memory::Host { data, .. } => Ok(&data[self.range.clone()]),
            #[cfg(feature = "cuda")]
            Memory::Gpu(_) => Err(Error::WrongDevice),
        }
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn gpu(&self) -> Result<CudaView<'a, T>, Error> {
        match &self.buf.mem {
            Memory::Gpu(slice) => Ok(slice.slice(self.range.clone())),
            Memory::Host { .. } => Err(Error::WrongDevice),
        }
    }
}

impl<T: Elem> ViewMut<'_, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether the view holds no elements.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// The same elements, to read.
    pub fn as_view(&self) -> View<'_, T> {
        View {
            buf: self.buf,
            range: self.range.clone(),
        }
    }

    pub(crate) fn host_mut(&mut self) -> Result<&mut [T], Error> {
        match &mut self.buf.mem {
            Memory::Host { data, .. } => Ok(&mut data[self.range.clone()]),
            #[cfg(feature = "cuda")]
            Memory::Gpu(_) => Err(Error::WrongDevice),
        }
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn gpu_mut(&mut self) -> Result<CudaViewMut<'_, T>, Error> {
        match &mut self.buf.mem {
            Memory::Gpu(slice) => Ok(slice.slice_mut(self.range.clone())),
            Memory::Host { .. } => Err(Error::WrongDevice),
        }
    }
}
