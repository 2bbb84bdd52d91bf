//! The kernels on the CPU: each `kernels/*.cu` file compiled as C++20 against the shim in
//! `kernels/sim/` and run on host slices, with the grid, block and shared memory of the real
//! launch ([`crate::launch`]).
//!
//! The shim runs every CUDA thread of a block as a fiber with a 64 KiB stack, a block's fibers on
//! one OS thread, blocks in parallel on a few OS threads. [`Schedule`] picks the order in which the
//! fibers run between barriers: a kernel missing a `__syncthreads` reads stale shared memory under
//! one of them. A barrier that only part of a block reaches, and a deadlock, are reported as
//! [`Error::Sim`] rather than hanging. See `kernels/sim/sim.h` for the whole model.
//!
//! ```
//! use lmsi_cuda::launch::rmsnorm_params;
//! use lmsi_cuda::sim::{Schedule, Sim};
//!
//! let x = [3.0f32, 4.0];
//! let mut out = [f32::NAN; 2];
//! Sim::new(Schedule::Reversed).rmsnorm_forward(&rmsnorm_params(1, 2, 0.0), &mut out, &x, &[1.0, 2.0])?;
//! // rms(3, 4) = sqrt(12.5)
//! assert!((out[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
//! assert!((out[1] - 8.0 / 12.5f32.sqrt()).abs() < 1e-6);
//! # Ok::<(), lmsi_cuda::Error>(())
//! ```

#[allow(non_camel_case_types, clippy::all)]
mod ffi_generated;
pub mod selftest;

use std::ffi::{CStr, c_int};

use crate::Error;
use crate::launch::{self, Launch};
use crate::params::*;
use ffi_generated as ffi;

/// Stack size of each simulated CUDA thread (fiber), in bytes; a guard page below each stack
/// turns an overflow into a fault.
pub const FIBER_STACK_BYTES: u32 = ffi::LMSI_SIM_STACK_BYTES;

/// The order in which the shim resumes a block's threads (fibers) between barriers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// By thread index, lowest first.
    #[default]
    InOrder,
    /// By thread index, highest first.
    Reversed,
    /// A new random order every round, from this seed (and the block index).
    Shuffled(u64),
}

/// Runs kernels through the CPU shim.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sim {
    schedule: Schedule,
    os_threads: u32,
}

impl Sim {
    /// A shim with the given fiber order, running blocks on one OS thread per core.
    pub fn new(schedule: Schedule) -> Self {
        Sim {
            schedule,
            os_threads: 0,
        }
    }

    /// Runs blocks on `n` OS threads (0: one per core).
    pub fn with_os_threads(self, n: u32) -> Self {
        Sim {
            os_threads: n,
            ..self
        }
    }

    /// The fiber order.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Runs `call` with the shim's description of `launch`; nothing when there is no work.
    fn run(
        &self,
        launch: Option<Launch>,
        call: impl FnOnce(*const ffi::LmsiSimLaunch) -> c_int,
    ) -> Result<(), Error> {
        let Some(l) = launch else {
            return Ok(());
        };
        let (schedule, seed) = match self.schedule {
            Schedule::InOrder => (ffi::LMSI_SIM_IN_ORDER, 0),
            Schedule::Reversed => (ffi::LMSI_SIM_REVERSED, 0),
            Schedule::Shuffled(seed) => (ffi::LMSI_SIM_SHUFFLED, seed),
        };
        let cfg = ffi::LmsiSimLaunch {
            grid: [l.grid.0, l.grid.1, l.grid.2],
            block: [l.block.0, l.block.1, l.block.2],
            shared_bytes: l.shared_bytes,
            schedule,
            seed,
            os_threads: self.os_threads,
        };
        if call(&cfg) == 0 {
            return Ok(());
        }
        // SAFETY: the shim returns a NUL-terminated thread-local string, valid until the next
        // launch on this thread; it is copied out at once.
        let message = unsafe { CStr::from_ptr(ffi::last_error()) };
        Err(Error::Sim(message.to_string_lossy().into_owned()))
    }
}

/// One method of [`Sim`] per kernel of the table, on host slices.
macro_rules! sim_methods {
    ($($file:literal {
        $($(#[$doc:meta])* fn $name:ident(
            $params:ty; $($out:ident: $out_ty:ty),+; $($input:ident: $in_ty:ty),*
        );)*
    })*) => {
        impl Sim {
            $($(
                $(#[$doc])*
                #[allow(clippy::too_many_arguments)]
                pub fn $name(
                    &self,
                    p: &$params,
                    $($out: &mut [$out_ty],)+
                    $($input: &[$in_ty],)*
                ) -> Result<(), Error> {
                    let l = launch::$name(p, $($out.len(),)+ $($input.len(),)*)?;
                    // SAFETY: the launcher takes the kernel's parameters and buffers in its order
                    // (a bf16 buffer as the same 16-bit `LmsiBf16`), and `launch::` checked every
                    // buffer against what the kernel touches.
                    self.run(l, |c| unsafe {
                        ffi::$name(c, *p, $($out.as_mut_ptr().cast(),)+ $($input.as_ptr().cast(),)*)
                    })
                }
            )*)*
        }
    };
}

crate::for_each_kernel!(sim_methods);
