// Element-wise updates of a whole buffer, as grid-stride loops over `len` values.
//
// add_assign    x[i] += y[i]  (residual connections, gradient accumulation).
// scale_assign  x[i] *= factor.
#include "lmsi_common.cuh"

extern "C" __global__ void add_assign(LmsiVecParams p, float* x, const float* y) {
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.len; i += (uint64_t)gridDim.x * blockDim.x) {
        x[i] += y[i];
    }
}

extern "C" __global__ void scale_assign(LmsiVecParams p, float* x) {
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.len; i += (uint64_t)gridDim.x * blockDim.x) {
        x[i] *= p.factor;
    }
}

#ifdef LMSI_SIM
extern "C" int lmsi_sim_add_assign(const LmsiSimLaunch* launch, LmsiVecParams p, float* x, const float* y) {
    LMSI_SIM_RUN(add_assign, p, x, y);
}
extern "C" int lmsi_sim_scale_assign(const LmsiSimLaunch* launch, LmsiVecParams p, float* x) {
    LMSI_SIM_RUN(scale_assign, p, x);
}
#endif
