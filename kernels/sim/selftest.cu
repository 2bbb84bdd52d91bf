// Kernels that check the CPU shim itself (never compiled for a GPU; the first two are wrong on
// purpose).
//
// selftest_missing_barrier  one block: thread t writes 2 * in[t] to shared memory and, with no
//                           barrier, reads thread t - 1's slot. In thread order every thread finds
//                           the value written; reversed, the others have not written yet.
// selftest_partial_barrier  one block: threads at or past n return before __syncthreads.
// selftest_deadlock         one block: even threads wait at __syncthreads, odd ones at __syncwarp;
//                           neither can ever complete.
// selftest_warp_ops         one block of 64 threads: every shuffle, vote and barrier flavour the
//                           kernels use, 10 results per thread.
// selftest_half             grid-stride: out[i] = half(in[i]), out[n + i] = bfloat16(in[i]), both
//                           back as f32.
#include "lmsi_common.cuh"

extern "C" __global__ void selftest_missing_barrier(uint32_t n, float* out, const float* in) {
    float* slots = lmsi_dynamic_shared<float>();
    const uint32_t t = threadIdx.x;
    if (t < n) slots[t] = 2.0f * in[t];
    // Missing: __syncthreads();
    if (t < n) out[t] = slots[t > 0 ? t - 1 : 0];
}

extern "C" __global__ void selftest_partial_barrier(uint32_t n, float* out) {
    if (threadIdx.x >= n) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void selftest_deadlock(float* out) {
    if (threadIdx.x % 2 == 0) {
        __syncthreads();
    } else {
        __syncwarp();
    }
    out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void selftest_warp_ops(uint32_t* out) {
    const uint32_t t = threadIdx.x;
    const uint32_t lane = t & 31u;
    uint32_t* o = out + t * 10;
    o[0] = __shfl_sync(LMSI_FULL_MASK, t * 3, (int)((lane + 5) & 31u));
    o[1] = __shfl_xor_sync(LMSI_FULL_MASK, t, 1);
    o[2] = __shfl_down_sync(LMSI_FULL_MASK, t, 4);
    o[3] = __shfl_up_sync(LMSI_FULL_MASK, t, 3);
    o[4] = __ballot_sync(LMSI_FULL_MASK, t % 3 == 0);
    o[5] = (uint32_t)__any_sync(LMSI_FULL_MASK, t == 40) | ((uint32_t)__all_sync(LMSI_FULL_MASK, t < 64) << 1);
    o[6] = lmsi_block_sum(t);
    o[7] = __shfl_sync(LMSI_FULL_MASK, t, 2, 8);
    o[8] = (uint32_t)__syncthreads_count(t % 2);
    // The low half-warp alone, with a partial mask.
    o[9] = 0;
    if (lane < 16) o[9] = __shfl_xor_sync(0x0000ffffu, t, 8);
    __syncwarp();
}

extern "C" __global__ void selftest_half(uint32_t n, float* out, const float* in) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = __half2float(__float2half(in[i]));
        out[n + i] = __bfloat162float(__float2bfloat16(in[i]));
    }
}

extern "C" int lmsi_sim_selftest_missing_barrier(const LmsiSimLaunch* launch, uint32_t n, float* out,
                                                 const float* in) {
    LMSI_SIM_RUN(selftest_missing_barrier, n, out, in);
}
extern "C" int lmsi_sim_selftest_partial_barrier(const LmsiSimLaunch* launch, uint32_t n, float* out) {
    LMSI_SIM_RUN(selftest_partial_barrier, n, out);
}
extern "C" int lmsi_sim_selftest_deadlock(const LmsiSimLaunch* launch, float* out) {
    LMSI_SIM_RUN(selftest_deadlock, out);
}
extern "C" int lmsi_sim_selftest_warp_ops(const LmsiSimLaunch* launch, uint32_t* out) {
    LMSI_SIM_RUN(selftest_warp_ops, out);
}
extern "C" int lmsi_sim_selftest_half(const LmsiSimLaunch* launch, uint32_t n, float* out, const float* in) {
    LMSI_SIM_RUN(selftest_half, n, out, in);
}
