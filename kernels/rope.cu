// Rotary position embedding (Hugging Face's rotate-half convention) and its backward pass.
//
// rope  For every token (grid.x = tokens), rotates the q and k heads of its fused q|k|v row in
//       place: dimension i of a head pairs with i + head_dim/2, and the pair turns by the angle
//       position * inv_freq[i] (an f32 product, as the CPU and Hugging Face compute it):
//       (a, b) -> (a*cos - b*sin, b*cos + a*sin). With p.inverse the angle is negated, which is
//       the backward pass (a rotation's transpose). The threads stride over the
//       (num_heads + num_kv_heads) * head_dim/2 pairs of the row; v is left alone.
#include "lmsi_common.cuh"

extern "C" __global__ void rope(LmsiRopeParams p, float* qkv, const uint32_t* positions, const float* inv_freq) {
    const uint32_t half = p.head_dim / 2;
    const uint32_t pairs = (p.num_heads + p.num_kv_heads) * half;
    const uint32_t qkv_dim = (p.num_heads + 2 * p.num_kv_heads) * p.head_dim;
    float* row = qkv + (uint64_t)blockIdx.x * qkv_dim;
    const float position = (float)positions[blockIdx.x];
    for (uint32_t k = threadIdx.x; k < pairs; k += blockDim.x) {
        const uint32_t head = k / half;
        const uint32_t i = k - head * half;
        const float angle = __fmul_rn(position, inv_freq[i]);
        const float c = cosf(angle);
        const float s = p.inverse ? -sinf(angle) : sinf(angle);
        float* h = row + head * p.head_dim;
        const float a = h[i];
        const float b = h[i + half];
        h[i] = a * c - b * s;
        h[i + half] = b * c + a * s;
    }
}
