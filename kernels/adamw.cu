// The optimizer step: the fused AdamW update and the global gradient norm used for clipping.
//
// adamw_update         One grid-stride pass over parameters, gradients and both moments, in the
//                      exact order of lmsi_adamw::StepScalars::update with every f32 operation
//                      rounded on its own (__fmul_rn and friends: no fused multiply-add), IEEE
//                      sqrt and division, subnormals kept. The host computes the step's scalars.
// sum_squares_partial  Block b adds the squares of elements [b*chunk, (b+1)*chunk) in f64 (exact
//                      squares of f32 values) with a fixed per-thread order and a block tree
//                      reduction, into partials[first_partial + b]. Launched once per tensor, each
//                      at its own first_partial, so one partials buffer covers all tensors.
// sum_partials         One block adds `count` partials (fixed order) into sum[0]: the sum of
//                      squares of all tensors. Two passes and no atomics, so the norm is
//                      reproducible bit for bit.
// clip_scale           With norm = sqrt(sum[0]) and coef = max_norm / (norm + 1e-6) in f64, as
//                      torch.nn.utils.clip_grad_norm_: multiplies the `len` values by (float)coef
//                      when coef < 1 and the norm is finite, else leaves them (grid-stride).
#include "lmsi_common.cuh"

extern "C" __global__ void adamw_update(LmsiAdamwParams p, float* param, float* m, float* v, const float* grad) {
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.len; i += (uint64_t)gridDim.x * blockDim.x) {
        const float g = grad[i];
        const float p1 = __fmul_rn(param[i], p.decay);
        const float m1 = __fadd_rn(m[i], __fmul_rn(p.one_minus_beta1, __fsub_rn(g, m[i])));
        const float v1 = __fadd_rn(__fmul_rn(p.beta2, v[i]), __fmul_rn(__fmul_rn(p.one_minus_beta2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v1), p.bias_correction2_sqrt), p.eps);
        param[i] = __fsub_rn(p1, __fdiv_rn(__fmul_rn(p.step_size, m1), denom));
        m[i] = m1;
        v[i] = v1;
    }
}

extern "C" __global__ void sum_squares_partial(LmsiSumSquaresParams p, double* partials, const float* x) {
    const uint64_t begin = (uint64_t)blockIdx.x * p.chunk;
    const uint64_t end = begin + p.chunk < p.len ? begin + p.chunk : p.len;
    double acc = 0.0;
    for (uint64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += (double)x[i] * (double)x[i];
    acc = lmsi_block_sum(acc);
    if (threadIdx.x == 0) partials[p.first_partial + blockIdx.x] = acc;
}

extern "C" __global__ void sum_partials(LmsiNormParams p, double* sum, const double* partials) {
    double acc = 0.0;
    for (uint32_t i = threadIdx.x; i < p.count; i += blockDim.x) acc += partials[i];
    acc = lmsi_block_sum(acc);
    if (threadIdx.x == 0) sum[0] = acc;
}

extern "C" __global__ void clip_scale(LmsiNormParams p, float* x, const double* sum) {
    const double norm = sqrt(sum[0]);
    const double coef = p.max_norm / (norm + 1e-6);
    // Not finite (NaN or inf in a gradient): leave the values for the caller to skip the step.
    if (!(norm - norm == 0.0) || !(coef < 1.0)) return;
    const float factor = (float)coef;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.len; i += (uint64_t)gridDim.x * blockDim.x) {
        x[i] *= factor;
    }
}
