// Masked cross-entropy with its gradient, for the logit rows of a training batch.
//
// cross_entropy  One block per row (grid.x = rows): with m the row's max and s = sum exp(l - m),
//                losses[r] = ln(s) + m - l[target] (unscaled), and the row is replaced by its
//                gradient scales[r] * (softmax(l) - onehot(target)): each row its own weight, so a
//                loss can weight sequences (vote shares, advantages, preference margins). The max
//                and the sum are block
//                reductions; every thread reads the target's logit before any thread overwrites
//                the row. Only the rows the host passes are touched: rows without a target
//                (prompt tokens) are simply not given to the kernel, which is the mask.
#include "lmsi_common.cuh"

extern "C" __global__ void cross_entropy(LmsiCrossEntropyParams p, float* logits, float* losses,
                                         const uint32_t* targets, const float* scales) {
    float* row = logits + (uint64_t)blockIdx.x * p.vocab;
    const uint32_t target = targets[blockIdx.x];
    float m = -lmsi_inf();
    for (uint32_t i = threadIdx.x; i < p.vocab; i += blockDim.x) m = row[i] > m ? row[i] : m;
    m = lmsi_block_reduce(m, LmsiMax(), -lmsi_inf());
    float s = 0.0f;
    for (uint32_t i = threadIdx.x; i < p.vocab; i += blockDim.x) s += expf(row[i] - m);
    s = lmsi_block_sum(s);
    const float target_logit = target < p.vocab ? row[target] : __int_as_float(0x7fc00000);
    __syncthreads();  // the target's logit is read everywhere before the row is overwritten
    const float scale = scales[blockIdx.x];
    const float inv = scale / s;
    for (uint32_t i = threadIdx.x; i < p.vocab; i += blockDim.x) row[i] = expf(row[i] - m) * inv;
    __syncthreads();
    if (threadIdx.x == 0) {
        if (target < p.vocab) row[target] -= scale;
        losses[blockIdx.x] = logf(s) + m - target_logit;
    }
}
