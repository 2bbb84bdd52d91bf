//! The shim's own test kernels (`kernels/sim/selftest.cu`): what the shim must catch and what it
//! must get right, for its tests and for anyone porting it. The first two kernels are wrong on
//! purpose.

use super::{Sim, ffi};
use crate::Error;
use crate::launch::Launch;

fn one_block(threads: u32, shared_bytes: u32) -> Option<Launch> {
    Some(Launch {
        grid: (1, 1, 1),
        block: (threads, 1, 1),
        shared_bytes,
    })
}

/// Runs a kernel that forgets the `__syncthreads` between writing shared memory and reading a
/// neighbour's slot: thread `t` returns `2 * input[t - 1]` when the neighbour happened to run
/// first (and `2 * input[0]` for thread 0). One block of `input.len()` threads (at most 1024).
pub fn missing_barrier(sim: &Sim, input: &[f32]) -> Result<Vec<f32>, Error> {
    let n = input.len() as u32;
    assert!((1..=1024).contains(&n), "one block of 1 to 1024 threads");
    let mut out = vec![f32::NAN; input.len()];
    // SAFETY: one block of n threads touches out[..n], input[..n] and n floats of shared memory.
    sim.run(one_block(n, n * 4), |c| unsafe {
        ffi::selftest_missing_barrier(c, n, out.as_mut_ptr(), input.as_ptr())
    })?;
    Ok(out)
}

/// Runs a kernel in which the threads at or past `n` of a block of `threads` return before a
/// `__syncthreads` that the others reach: the shim reports a partial barrier.
pub fn partial_barrier(sim: &Sim, n: u32, threads: u32) -> Result<(), Error> {
    let mut out = vec![0.0f32; threads as usize];
    // SAFETY: thread t < n writes out[t], t < threads.
    sim.run(one_block(threads, 0), |c| unsafe {
        ffi::selftest_partial_barrier(c, n, out.as_mut_ptr())
    })
}

/// Runs a kernel whose even threads wait at `__syncthreads` while the odd ones wait at
/// `__syncwarp`, in one block of `threads`: the shim reports a deadlock.
pub fn deadlock(sim: &Sim, threads: u32) -> Result<(), Error> {
    let mut out = vec![0.0f32; threads as usize];
    // SAFETY: thread t writes out[t], t < threads.
    sim.run(one_block(threads, 0), |c| unsafe {
        ffi::selftest_deadlock(c, out.as_mut_ptr())
    })
}

/// Runs every warp shuffle, vote and barrier flavour once in a block of 64 threads; returns 10
/// results per thread (see `kernels/sim/selftest.cu`).
pub fn warp_ops(sim: &Sim) -> Result<Vec<u32>, Error> {
    let mut out = vec![u32::MAX; 640];
    // SAFETY: thread t writes out[10 t .. 10 t + 10], t < 64.
    sim.run(one_block(64, 0), |c| unsafe {
        ffi::selftest_warp_ops(c, out.as_mut_ptr())
    })?;
    Ok(out)
}

/// Rounds each value to the shim's `__half` and `__nv_bfloat16` and back: `(half, bfloat16)`.
pub fn half_round_trip(sim: &Sim, input: &[f32]) -> Result<(Vec<f32>, Vec<f32>), Error> {
    let n = input.len();
    let mut out = vec![f32::NAN; 2 * n];
    let launch = (n > 0).then_some(Launch {
        grid: (n.div_ceil(128).min(64) as u32, 1, 1),
        block: (128, 1, 1),
        shared_bytes: 0,
    });
    // SAFETY: a grid-stride loop over i < n writes out[i] and out[n + i] and reads input[i].
    sim.run(launch, |c| unsafe {
        ffi::selftest_half(c, n as u32, out.as_mut_ptr(), input.as_ptr())
    })?;
    let bf16 = out.split_off(n);
    Ok((out, bf16))
}
