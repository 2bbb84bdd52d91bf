//! Large buffers (weight matrices, KV cache pools) in the kernel's 2 MiB transparent huge pages.
//!
//! A decode step streams every weight matrix from memory once. In 4 KiB pages the processor's
//! hardware prefetchers stop at each page boundary, less than two of SmolLM2's 2,304-byte weight
//! rows apart, and each page costs a TLB entry. Linux gives a region huge pages when it is asked
//! to (`madvise(MADV_HUGEPAGE)`; many distributions, the build machine's included, set
//! transparent huge pages to `madvise`, which gives them to no one else). In a throwaway program
//! with a copy of [`super::linear`] and SmolLM2-135M's 30 layers of weights (32 rows), huge pages
//! took the layer products from 33.4 to 27.5 ms and the output projection from 7.9 to 5.9 ms on
//! the 2-core build machine.
//!
//! Fresh memory is advised before it is written, so it comes in huge pages. But most weight
//! matrices reuse memory that the loader's temporary buffers had already touched in 4 KiB pages:
//! with the first advice alone, 213 MB of SmolLM2's 540 MB of weights and KV cache were in huge
//! pages. So the written buffer is also collapsed into huge pages (`MADV_COLLAPSE`): 450 MB.
//!
//! Only where the values live changes, never what they are. Where the advice is refused (another
//! operating system, a kernel without huge pages) the buffer is an ordinary one.

/// Buffers smaller than this many values (2 MiB) are left to the allocator as they are.
const MIN_LEN: usize = 512 * 1024;

/// A copy of `data`, in huge pages when it is large.
pub fn copy(data: &[f32]) -> Vec<f32> {
    let mut buf = Vec::with_capacity(data.len());
    advise(buf.as_ptr(), data.len(), Advice::Fresh);
    buf.extend_from_slice(data);
    advise(buf.as_ptr(), data.len(), Advice::Written);
    buf
}

/// `len` zeros, in huge pages when `len` is large.
pub fn zeros(len: usize) -> Vec<f32> {
    let mut buf = Vec::with_capacity(len);
    advise(buf.as_ptr(), len, Advice::Fresh);
    buf.resize(len, 0.0);
    advise(buf.as_ptr(), len, Advice::Written);
    buf
}

enum Advice {
    /// Before the buffer is written: its pages not yet touched come as huge pages.
    Fresh,
    /// After: pages the allocator had already used (memory freed by an earlier buffer) are
    /// copied into huge pages now (`MADV_COLLAPSE`, Linux 6.1 and later).
    Written,
}

/// Advises the memory of the `len` values at `values`, when `len` is large. The range is widened
/// to whole pages: the advice may also cover a neighbouring allocation's partial page, which
/// changes nothing of its contents.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn advise(values: *const f32, len: usize, advice: Advice) {
    if len < MIN_LEN {
        return;
    }
    // SAFETY: sysconf only reads a constant of the system.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let addr = values as usize;
    let start = addr / page * page;
    let end = (addr + len * 4).div_ceil(page) * page;
    let advice = match advice {
        Advice::Fresh => libc::MADV_HUGEPAGE,
        Advice::Written => libc::MADV_COLLAPSE,
    };
    // SAFETY: the range is mapped (it holds the values' allocation, widened to its pages), and both
    // advices change the size of its pages, never their contents or permissions. Refused advice
    // (a kernel without transparent huge pages, or too old for MADV_COLLAPSE) leaves the pages
    // as they were, which is only slower.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn advise(_values: *const f32, _len: usize, _advice: Advice) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_zeros_hold_the_values_asked_for() {
        for len in [0, 3, MIN_LEN - 1, MIN_LEN, 3 * MIN_LEN + 17] {
            let data: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
            assert_eq!(copy(&data), data, "copy of {len}");
            let z = zeros(len);
            assert_eq!(z.len(), len);
            assert!(z.iter().all(|&v| v == 0.0), "zeros of {len}");
        }
    }
}
