/* The C interface of the CPU shim: one launcher per kernel, called from Rust (lmsi_cuda::sim).
 * Rust's declarations (crates/lmsi-cuda/src/sim/ffi_generated.rs) are generated from this file by
 * `cargo xtask kernels`. The launchers of the kernels are stamped out of the one kernel list
 * (kernels/include/lmsi_kernels.h) and defined in sim/launchers.cpp.
 *
 * A launcher runs the kernel over the grid of `launch` with the parameters and buffers of the real
 * kernel (host pointers here) and returns 0, or nonzero with the reason in lmsi_sim_last_error().
 */
#ifndef LMSI_SIM_C_H
#define LMSI_SIM_C_H

#include "lmsi_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fiber orders (LmsiSimLaunch::schedule). */
#define LMSI_SIM_IN_ORDER 0
#define LMSI_SIM_REVERSED 1
#define LMSI_SIM_SHUFFLED 2

/* Fiber stack size of each simulated CUDA thread. */
#define LMSI_SIM_STACK_BYTES 65536

typedef struct LmsiSimLaunch {
    uint32_t grid[3];
    uint32_t block[3];
    /* Dynamic shared memory per block, in bytes. */
    uint32_t shared_bytes;
    /* LMSI_SIM_IN_ORDER, LMSI_SIM_REVERSED or LMSI_SIM_SHUFFLED. */
    uint32_t schedule;
    /* Seed of the shuffled schedule. */
    uint64_t seed;
    /* OS threads running blocks; 0 means one per available core. */
    uint32_t os_threads;
} LmsiSimLaunch;

/* The error of the last failed launch on the calling thread (empty if none). */
const char* lmsi_sim_last_error(void);

/* One launcher per kernel of the list in lmsi_kernels.h, defined in sim/launchers.cpp:
 * int lmsi_sim_NAME(const LmsiSimLaunch* launch, <the kernel's parameters>). */
#define LMSI_SIM_DECLARE_LAUNCHER(name, params, args) \
    int lmsi_sim_##name(const LmsiSimLaunch* launch, LMSI_EXPAND params);
LMSI_KERNELS(LMSI_SIM_DECLARE_LAUNCHER)
#undef LMSI_SIM_DECLARE_LAUNCHER

/* sim/selftest.cu: kernels that check the shim itself. */
int lmsi_sim_selftest_missing_barrier(const LmsiSimLaunch* launch, uint32_t n, float* out, const float* in);
int lmsi_sim_selftest_partial_barrier(const LmsiSimLaunch* launch, uint32_t n, float* out);
int lmsi_sim_selftest_deadlock(const LmsiSimLaunch* launch, float* out);
int lmsi_sim_selftest_warp_ops(const LmsiSimLaunch* launch, uint32_t* out);
int lmsi_sim_selftest_half(const LmsiSimLaunch* launch, uint32_t n, float* out, const float* in);

#ifdef __cplusplus
}
#endif

#endif
