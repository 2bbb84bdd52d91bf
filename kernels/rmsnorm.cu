// RMSNorm and its backward pass.
//
// rmsnorm_forward          out[r, :] = x[r, :] * rstd(r) * weight, rstd = 1 / sqrt(mean(x[r, :]^2) + eps).
//                          One block per row (grid.x = rows); the threads stride over the row and
//                          the sum of squares is a block reduction.
// rmsnorm_forward_bf16     The same, out rounded to bf16 (nearest even): the input of a bf16 product.
// rmsnorm_backward         For the rows_per_block rows of block b (grid.x = ceil(rows / rows_per_block)):
//                          d_x[r, :] += rstd*dy*w - c*x with c = rstd^3 * sum(dy*w*x) / dim, and
//                          partial_dw[b, :] = the sum over those rows, in order, of dy*x*rstd.
//                          A thread owns columns j, j + blockDim, ... of its block's partial row, so
//                          no element has two writers.
// rmsnorm_backward_reduce  d_weight[c] += partial_dw[0, c] + partial_dw[1, c] + ..., in block order
//                          (as the CPU adds its chunks): one thread per column, grid.x = ceil(dim / blockDim).
//
// No atomics: the weight gradient is reproducible bit for bit for a given rows_per_block.
#include "lmsi_common.cuh"

template <class O>
__device__ __forceinline__ void rmsnorm_rows(const LmsiRmsnormParams& p, O* out, const float* x, const float* weight) {
    const float* xr = x + (uint64_t)blockIdx.x * p.dim;
    O* o = out + (uint64_t)blockIdx.x * p.dim;
    float ss = 0.0f;
    for (uint32_t c = threadIdx.x; c < p.dim; c += blockDim.x) ss += xr[c] * xr[c];
    ss = lmsi_block_sum(ss);
    const float rstd = 1.0f / sqrtf(ss / (float)p.dim + p.eps);
    for (uint32_t c = threadIdx.x; c < p.dim; c += blockDim.x) lmsi_put(o + c, xr[c] * rstd * weight[c]);
}

extern "C" __global__ void rmsnorm_forward(LmsiRmsnormParams p, float* out, const float* x, const float* weight) {
    rmsnorm_rows(p, out, x, weight);
}

extern "C" __global__ void rmsnorm_forward_bf16(LmsiRmsnormParams p, LmsiBf16* out, const float* x,
                                                const float* weight) {
    rmsnorm_rows(p, out, x, weight);
}

extern "C" __global__ void rmsnorm_backward(LmsiRmsnormParams p, float* d_x, float* partial_dw, const float* d_out,
                                            const float* x, const float* weight) {
    float* dw = partial_dw + (uint64_t)blockIdx.x * p.dim;
    for (uint32_t c = threadIdx.x; c < p.dim; c += blockDim.x) dw[c] = 0.0f;
    const uint32_t first = blockIdx.x * p.rows_per_block;
    const uint32_t last = min(p.rows, first + p.rows_per_block);
    for (uint32_t r = first; r < last; ++r) {
        const float* xr = x + (uint64_t)r * p.dim;
        const float* dy = d_out + (uint64_t)r * p.dim;
        float* dxr = d_x + (uint64_t)r * p.dim;
        float ss = 0.0f, dyw_x = 0.0f;
        for (uint32_t c = threadIdx.x; c < p.dim; c += blockDim.x) {
            ss += xr[c] * xr[c];
            dyw_x += dy[c] * weight[c] * xr[c];
        }
        ss = lmsi_block_sum(ss);
        dyw_x = lmsi_block_sum(dyw_x);
        const float rstd = 1.0f / sqrtf(ss / (float)p.dim + p.eps);
        const float k = rstd * rstd * rstd * dyw_x / (float)p.dim;
        for (uint32_t c = threadIdx.x; c < p.dim; c += blockDim.x) {
            dxr[c] += rstd * dy[c] * weight[c] - k * xr[c];
            dw[c] += dy[c] * xr[c] * rstd;
        }
    }
}

extern "C" __global__ void rmsnorm_backward_reduce(LmsiRmsnormParams p, float* d_weight, const float* partial_dw) {
    const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.dim) return;
    const uint32_t blocks = (p.rows + p.rows_per_block - 1) / p.rows_per_block;
    float acc = d_weight[c];
    for (uint32_t b = 0; b < blocks; ++b) acc += partial_dw[(uint64_t)b * p.dim + c];
    d_weight[c] = acc;
}
