// Helpers shared by the kernels: the platform switch (nvcc / NVRTC / the CPU shim), dynamic shared
// memory, and deterministic warp and block reductions.
//
// Every reduction here adds in a fixed tree order that depends only on the block size, so results
// are reproducible run to run (no atomics on floats anywhere in the kernels).
#ifndef LMSI_COMMON_CUH
#define LMSI_COMMON_CUH

#include "lmsi_params.h"

#ifdef LMSI_SIM
#include "sim.h"
#endif

#define LMSI_FULL_MASK 0xffffffffu

// +inf without <math.h> (NVRTC has none).
__device__ __forceinline__ float lmsi_inf() { return __int_as_float(0x7f800000); }

// Element loads and stores of f32 and bf16 buffers, so one kernel body serves both. A bf16 value
// widens to f32 exactly; an f32 narrows to the nearest bf16, ties to even, NaN staying a (quiet)
// NaN: the rounding of the hardware's __float2bfloat16_rn, written out in integer operations so
// that it needs no cuda_bf16.h (which NVRTC does not carry) and is the same on the GPU and the shim.
__device__ __forceinline__ float lmsi_float(float v) { return v; }
__device__ __forceinline__ float lmsi_float(LmsiBf16 v) { return __uint_as_float((unsigned)v.bits << 16); }
__device__ __forceinline__ void lmsi_put(float* at, float v) { *at = v; }
__device__ __forceinline__ void lmsi_put(LmsiBf16* at, float v) {
    const unsigned bits = __float_as_uint(v);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        at->bits = (uint16_t)((bits >> 16) | 0x40u);
        return;
    }
    at->bits = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// The block's dynamic shared memory (the launch's shared_bytes), 16-byte aligned.
template <class T>
__device__ __forceinline__ T* lmsi_dynamic_shared() {
#ifdef LMSI_SIM
    return reinterpret_cast<T*>(lmsi_sim::tls_block->dynamic_shared);
#else
    extern __shared__ __align__(16) unsigned char lmsi_shared_bytes[];
    return reinterpret_cast<T*>(lmsi_shared_bytes);
#endif
}

__device__ __forceinline__ unsigned lmsi_lane() { return threadIdx.x & 31u; }
__device__ __forceinline__ unsigned lmsi_warp() { return threadIdx.x >> 5; }

struct LmsiSum {
    template <class T>
    __device__ __forceinline__ T operator()(T a, T b) const {
        return a + b;
    }
};
struct LmsiMax {
    template <class T>
    __device__ __forceinline__ T operator()(T a, T b) const {
        return a > b ? a : b;
    }
};
struct LmsiMin {
    template <class T>
    __device__ __forceinline__ T operator()(T a, T b) const {
        return a < b ? a : b;
    }
};

// Reduces over the 32 lanes of a full warp (butterfly: every lane gets the result).
template <class T, class Op>
__device__ __forceinline__ T lmsi_warp_reduce(T v, Op op) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(LMSI_FULL_MASK, v, offset));
    return v;
}

// Reduces over all threads of a 1-D block whose size is a multiple of 32; every thread gets the
// result. `identity` is the operation's neutral value (0 for sums, -inf for max). All threads of
// the block must call it: it holds barriers.
template <class T, class Op>
__device__ T lmsi_block_reduce(T v, Op op, T identity) {
    __shared__ T partial[32];
    __shared__ T total;
    const unsigned warps = blockDim.x >> 5;
    v = lmsi_warp_reduce(v, op);
    __syncthreads();  // an earlier call has finished reading `partial` and `total`
    if (lmsi_lane() == 0) partial[lmsi_warp()] = v;
    __syncthreads();
    if (lmsi_warp() == 0) {
        T x = lmsi_lane() < warps ? partial[lmsi_lane()] : identity;
        x = lmsi_warp_reduce(x, op);
        if (lmsi_lane() == 0) total = x;
    }
    __syncthreads();
    return total;
}

template <class T>
__device__ __forceinline__ T lmsi_block_sum(T v) {
    return lmsi_block_reduce(v, LmsiSum(), T(0));
}

#endif
