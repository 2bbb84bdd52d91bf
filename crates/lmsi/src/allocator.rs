//! The C allocator's settings for lmsi's buffers.
//!
//! Every training step and every decode step allocates and frees the same large buffers
//! (activations, logits, gradients). With glibc's defaults the largest are mapped and unmapped
//! each time, and the heap's top is given back to the system, so each step pays again for page
//! faults on fresh memory: 16% of a seed-model training step's samples were in the kernel. Keeping
//! freed memory lets the next step reuse it: `lmsi train` on the embedded default's round went
//! from 17.4-18.0 to 20.6-21.7 thousand tokens/s on the 2-core build machine, the same losses. What
//! lmsi computes does not change; its resident memory stays near its peak instead of falling
//! between steps.
//!
//! ```
//! lmsi::allocator::keep_freed_memory();
//! ```

/// Raises glibc's mmap threshold to its maximum (32 MiB on 64-bit systems) and stops it trimming
/// the heap. Call first thing in `main`, before other threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets the allocator's parameters; nothing else is running yet. A value
    // it refuses leaves that parameter as it was, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Other C libraries' allocators keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
