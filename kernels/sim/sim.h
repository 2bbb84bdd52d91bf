// The CPU shim: what a .cu file needs from CUDA, so that the same kernel sources compile as C++20
// with g++ and run on the CPU (defined LMSI_SIM selects this header; see kernels/include/lmsi_common.cuh).
//
// Execution model (implemented in sim.cpp):
// - Every CUDA thread of a block is a fiber with its own 64 KiB stack (plus a guard page, so an
//   overflow faults instead of corrupting a neighbour), created with ucontext (makecontext) and
//   switched with _setjmp/_longjmp (no system call per switch, unlike swapcontext). A block's fibers
//   run on one OS thread, one at a time; a fiber runs until it reaches a barrier (__syncthreads, a
//   warp collective) or returns. Blocks run in parallel on a few OS threads, each reusing its
//   fibers from block to block.
// - The scheduler resumes the runnable fibers in the launch's order: in order of thread index,
//   reversed, or shuffled by a seed (a new shuffle for every round). A kernel that is missing a
//   barrier reads stale data under one of these orders, so tests run all three.
// - __syncthreads releases when every live thread of the block has reached it. If some threads
//   exited and the rest wait, or threads wait at different barriers, the launch fails with an
//   error naming the kernel and block (CUDA would hang or be undefined there).
// - Warp collectives (__shfl*_sync, __ballot_sync, __any_sync, __all_sync, __syncwarp) release
//   when every lane named in the mask has reached the same collective with the same mask. A mask
//   that names an exited or missing lane, or a shuffle that reads a lane outside its mask, is an error.
// - `__shared__` variables are `static thread_local`: one copy per OS thread, and an OS thread runs
//   one block at a time, so each block sees its own. Keep them small (they live in every thread's
//   TLS); large buffers go in dynamic shared memory (lmsi_dynamic_shared), which is filled with
//   0xff bytes (NaN as floats) before each block, so reading it before writing shows up.
// - Global-memory atomics are real atomics (blocks run concurrently).
// - Arithmetic is the host's: IEEE f32/f64 with no contraction (build with -ffp-contract=off), so
//   the __fmul_rn family is plain arithmetic. expf, logf and friends are glibc's, not CUDA's: results
//   differ from a GPU in the last bits, which the tests' tolerances allow for.
#ifndef LMSI_SIM_SIM_H
#define LMSI_SIM_SIM_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <atomic>
#include <bit>
#include <functional>
#include <type_traits>

#include "lmsi_sim.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// Every kernel of the list, declared: each definition in kernels/*.cu must match its line there.
#define LMSI_SIM_DECLARE_KERNEL(name, params, args) extern "C" void name(LMSI_EXPAND params);
LMSI_KERNELS(LMSI_SIM_DECLARE_KERNEL)
#undef LMSI_SIM_DECLARE_KERNEL

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

namespace lmsi_sim {

// The block being run by this OS thread and the CUDA thread (fiber) running on it.
struct BlockInfo {
    uint3 idx;
    dim3 dim;
    dim3 grid;
    unsigned char* dynamic_shared;
};
extern thread_local const BlockInfo* tls_block;
extern thread_local const uint3* tls_thread;

enum WarpOp : int { WARP_SHFL_IDX, WARP_SHFL_XOR, WARP_SHFL_DOWN, WARP_SHFL_UP, WARP_BALLOT, WARP_SYNC };

// Blocks until the whole block arrives; returns how many threads passed a nonzero `predicate`.
int sync_block(int predicate);
// Blocks until every lane of `mask` arrives; returns the lane's shuffled value or the ballot.
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width);

// Runs `body` as every thread of every block of the launch `cfg`; 0 on success, else nonzero with
// the message in lmsi_sim_last_error().
int launch(const LmsiSimLaunch* cfg, const char* kernel, const std::function<void()>& body);

template <class T>
uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <class T>
T from_bits(uint64_t bits) {
    T v;
    memcpy(&v, &bits, sizeof(T));
    return v;
}

}  // namespace lmsi_sim

// The body of a launcher (sim/launchers.cpp, sim/selftest.cu), whose first parameter is `launch`:
// runs `kernel(args...)` as every thread of the launch.
#define LMSI_SIM_RUN(kernel, ...) return ::lmsi_sim::launch(launch, #kernel, [=] { kernel(__VA_ARGS__); })

#define threadIdx (*::lmsi_sim::tls_thread)
#define blockIdx (::lmsi_sim::tls_block->idx)
#define blockDim (::lmsi_sim::tls_block->dim)
#define gridDim (::lmsi_sim::tls_block->grid)
#define warpSize 32

// ---- Barriers and warp collectives.

inline void __syncthreads() { lmsi_sim::sync_block(0); }
inline int __syncthreads_count(int p) { return lmsi_sim::sync_block(p != 0); }
inline int __syncthreads_or(int p) { return lmsi_sim::sync_block(p != 0) > 0; }
inline int __syncthreads_and(int p) {
    // Every thread of the block takes part (a partial barrier is an error), so "all" is "as many
    // as the block has".
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    return lmsi_sim::sync_block(p != 0) == static_cast<int>(threads);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    lmsi_sim::warp_collective(lmsi_sim::WARP_SYNC, mask, 0, 0, 32);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    return lmsi_sim::from_bits<T>(
        lmsi_sim::warp_collective(lmsi_sim::WARP_SHFL_IDX, mask, lmsi_sim::to_bits(v), src_lane, width));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return lmsi_sim::from_bits<T>(
        lmsi_sim::warp_collective(lmsi_sim::WARP_SHFL_XOR, mask, lmsi_sim::to_bits(v), lane_mask, width));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return lmsi_sim::from_bits<T>(lmsi_sim::warp_collective(lmsi_sim::WARP_SHFL_DOWN, mask, lmsi_sim::to_bits(v),
                                                            static_cast<int>(delta), width));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return lmsi_sim::from_bits<T>(lmsi_sim::warp_collective(lmsi_sim::WARP_SHFL_UP, mask, lmsi_sim::to_bits(v),
                                                            static_cast<int>(delta), width));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return static_cast<unsigned>(lmsi_sim::warp_collective(lmsi_sim::WARP_BALLOT, mask, predicate != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

// ---- Atomics (relaxed, like CUDA's; blocks run concurrently, so these must be real atomics).

template <class T>
T atomicAdd(T* address, T v) {
    return std::atomic_ref<T>(*address).fetch_add(v, std::memory_order_relaxed);
}
template <class T>
T atomicSub(T* address, T v) {
    return std::atomic_ref<T>(*address).fetch_sub(v, std::memory_order_relaxed);
}
template <class T>
T atomicExch(T* address, T v) {
    return std::atomic_ref<T>(*address).exchange(v, std::memory_order_relaxed);
}
template <class T>
T atomicCAS(T* address, T compare, T v) {
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, v, std::memory_order_relaxed);
    return compare;
}
template <class T>
T atomicMax(T* address, T v) {
    std::atomic_ref<T> a(*address);
    T old = a.load(std::memory_order_relaxed);
    while (old < v && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
    }
    return old;
}
template <class T>
T atomicMin(T* address, T v) {
    std::atomic_ref<T> a(*address);
    T old = a.load(std::memory_order_relaxed);
    while (v < old && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
    }
    return old;
}
template <class T>
T atomicOr(T* address, T v) {
    return std::atomic_ref<T>(*address).fetch_or(v, std::memory_order_relaxed);
}
template <class T>
T atomicAnd(T* address, T v) {
    return std::atomic_ref<T>(*address).fetch_and(v, std::memory_order_relaxed);
}

// ---- Integer, bit and math intrinsics.

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(unsigned x) { return std::countl_zero(x); }
inline int __clzll(unsigned long long x) { return std::countl_zero(x); }
inline int __ffs(unsigned x) { return x == 0 ? 0 : std::countr_zero(x) + 1; }
inline int __ffsll(unsigned long long x) { return x == 0 ? 0 : std::countr_zero(x) + 1; }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) {
    return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}

inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }

// Separately rounded operations: plain arithmetic here, as the shim is built without contraction.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return sqrt(a); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

// Conversions rounding to nearest-even (the host's default rounding mode).
inline unsigned long long __double2ull_rn(double x) { return static_cast<unsigned long long>(nearbyint(x)); }
inline long long __double2ll_rn(double x) { return static_cast<long long>(nearbyint(x)); }
inline unsigned long long __float2ull_rn(float x) { return static_cast<unsigned long long>(nearbyintf(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(nearbyintf(x)); }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }
inline double __ull2double_rn(unsigned long long x) { return static_cast<double>(x); }
inline double __ll2double_rn(long long x) { return static_cast<double>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }

template <class T>
T __ldg(const T* p) {
    return *p;
}

// ---- Minimal 16-bit floats: storage and round-to-nearest-even conversions, no arithmetic.

struct __half {
    unsigned short x;
};
struct __nv_bfloat16 {
    unsigned short x;
};

inline float __half2float(__half h) {
    const unsigned sign = static_cast<unsigned>(h.x & 0x8000u) << 16;
    const unsigned exp = (h.x >> 10) & 0x1fu;
    const unsigned mant = h.x & 0x3ffu;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (mant << 13));  // inf, NaN
    if (exp != 0) return __uint_as_float(sign | ((exp + 112) << 23) | (mant << 13));
    // Subnormal half: mant * 2^-24, exact in f32.
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
}

inline __half __float2half(float f) {
    const unsigned bits = __float_as_uint(f);
    const unsigned short sign = static_cast<unsigned short>((bits >> 16) & 0x8000u);
    const unsigned abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return __half{static_cast<unsigned short>(sign | 0x7e00u)};  // NaN
    if (abs >= 0x477ff000u) return __half{static_cast<unsigned short>(sign | 0x7c00u)};  // rounds to inf
    if (abs < 0x38800000u) {
        // Below the smallest normal half: round abs * 2^24 to an integer count of 2^-24.
        const float scaled = __uint_as_float(abs) * 16777216.0f;
        return __half{static_cast<unsigned short>(sign | static_cast<unsigned short>(nearbyintf(scaled)))};
    }
    // Normal: rebias the exponent and round the mantissa from 23 to 10 bits, ties to even.
    const unsigned rebased = abs - (112u << 23);
    const unsigned rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
    return __half{static_cast<unsigned short>(sign | (rounded >> 13))};
}

inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float(static_cast<unsigned>(b.x) << 16); }

inline __nv_bfloat16 __float2bfloat16(float f) {
    const unsigned bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return __nv_bfloat16{static_cast<unsigned short>((bits >> 16) | 0x40u)};  // quiet NaN
    }
    const unsigned rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
    return __nv_bfloat16{static_cast<unsigned short>(rounded >> 16)};
}

#endif
