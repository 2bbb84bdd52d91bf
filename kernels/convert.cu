// Conversions between element types.
//
// f32_to_bf16  out[i] = x[i] rounded to the nearest bf16 (ties to even), grid-stride. The CUDA
//              backend's bf16 mode rounds a matrix product's f32 operands with it just before the
//              product, as PyTorch's autocast does.
#include "lmsi_common.cuh"

extern "C" __global__ void f32_to_bf16(LmsiVecParams p, LmsiBf16* out, const float* x) {
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.len; i += (uint64_t)gridDim.x * blockDim.x) {
        lmsi_put(out + i, x[i]);
    }
}
