// SwiGLU, the gated activation of the MLP, and its backward pass. Rows of gate_up are gate | up,
// each `inter` wide; every kernel is a grid-stride loop over the rows * inter outputs.
//
// swiglu_forward   out[r, i] = silu(gate) * up, silu(g) = g / (1 + exp(-g)); swiglu_forward_bf16 rounds
//                  out to bf16 (nearest even), the input of a bf16 product.
// swiglu_backward  with sig = 1 / (1 + exp(-g)): d_up = dy * g * sig and
//                  d_gate = dy * up * sig * (1 + g * (1 - sig)); d_gate_up is overwritten.
#include "lmsi_common.cuh"

template <class O>
__device__ __forceinline__ void swiglu_rows(const LmsiSwigluParams& p, O* out, const float* gate_up) {
    const uint64_t n = (uint64_t)p.rows * p.inter;
    for (uint64_t k = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t r = k / p.inter;
        const uint64_t i = k - r * p.inter;
        const float g = gate_up[r * 2 * p.inter + i];
        const float u = gate_up[r * 2 * p.inter + p.inter + i];
        lmsi_put(out + k, g / (1.0f + expf(-g)) * u);
    }
}

extern "C" __global__ void swiglu_forward(LmsiSwigluParams p, float* out, const float* gate_up) {
    swiglu_rows(p, out, gate_up);
}

extern "C" __global__ void swiglu_forward_bf16(LmsiSwigluParams p, LmsiBf16* out, const float* gate_up) {
    swiglu_rows(p, out, gate_up);
}

extern "C" __global__ void swiglu_backward(LmsiSwigluParams p, float* d_gate_up, const float* d_out,
                                           const float* gate_up) {
    const uint64_t n = (uint64_t)p.rows * p.inter;
    for (uint64_t k = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t r = k / p.inter;
        const uint64_t i = k - r * p.inter;
        const uint64_t at = r * 2 * p.inter + i;
        const float g = gate_up[at];
        const float u = gate_up[at + p.inter];
        const float dy = d_out[k];
        const float sig = 1.0f / (1.0f + expf(-g));
        d_gate_up[at + p.inter] = dy * g * sig;
        d_gate_up[at] = dy * u * sig * (1.0f + g * (1.0f - sig));
    }
}
