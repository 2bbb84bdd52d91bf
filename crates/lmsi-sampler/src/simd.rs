//! Runtime selection of wider vector instructions for the passes over a row.
//!
//! The passes are plain Rust that the compiler vectorizes; compiled again for AVX-512 or
//! AVX2 they run on 4 or 2 times as many lanes as baseline x86-64 (SSE2). Results are
//! bit-identical: Rust never fuses or reorders floating-point operations, whatever the
//! instruction set. A pass must inline completely (`#[inline(always)]`, plain loops) to
//! be compiled with the wider instructions.

/// Runs `pass` compiled for the widest vector instructions the CPU has.
#[inline(always)]
pub(crate) fn dispatch<R>(pass: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { with_avx512(pass) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { with_avx2(pass) };
        }
    }
    pass()
}

/// `pass()` inlined into a function compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn with_avx512<R>(pass: impl FnOnce() -> R) -> R {
    pass()
}

/// `pass()` inlined into a function compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn with_avx2<R>(pass: impl FnOnce() -> R) -> R {
    pass()
}

/// Asserts that `pass` gives the same result compiled for every instruction set this CPU
/// runs (baseline first).
#[cfg(test)]
pub(crate) fn assert_paths_agree<R: PartialEq + std::fmt::Debug>(pass: impl Fn() -> R) {
    let baseline = pass();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            assert_eq!(unsafe { with_avx2(&pass) }, baseline, "AVX2");
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            assert_eq!(unsafe { with_avx512(&pass) }, baseline, "AVX-512");
        }
    }
    assert_eq!(dispatch(&pass), baseline, "dispatched");
}
