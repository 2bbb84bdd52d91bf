// Element-wise updates of a whole buffer, and a linear layer's bias and its gradient.
//
// add_assign    x[i] += y[i]  (residual connections, gradient accumulation), grid-stride.
// scale_assign  x[i] *= factor, grid-stride.
// bias_add      out[r, c] += bias[c] over rows x dim values (after cuBLAS wrote x·Wᵀ), grid-stride.
// bias_grad     d_bias[c] += d_out[0, c] + d_out[1, c] + ... in row order. One thread per column
//               (grid.x = ceil(dim / blockDim)) walks the rows, so the sum is the CPU's bit for bit
//               and needs no atomics; consecutive threads read consecutive columns of a row.
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

extern "C" __global__ void bias_add(LmsiBiasParams p, float* out, const float* bias) {
    const uint64_t n = (uint64_t)p.rows * p.dim;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        out[i] += bias[i % p.dim];
    }
}

extern "C" __global__ void bias_grad(LmsiBiasParams p, float* d_bias, const float* d_out) {
    const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.dim) return;
    float acc = d_bias[c];
    for (uint32_t r = 0; r < p.rows; ++r) acc += d_out[(uint64_t)r * p.dim + c];
    d_bias[c] = acc;
}
