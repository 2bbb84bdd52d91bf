/* Every kernel's signature, written once.
 *
 * LMSI_KERNELS(X) calls X(name, (parameters), (argument names)) for each kernel, grouped by the
 * file that defines it. Under the CPU shim this list declares each kernel (so the compiler checks
 * every definition in the kernel files against it), declares its launcher (kernels/sim/lmsi_sim.h,
 * from which bindgen writes the Rust declarations) and defines the launcher
 * (kernels/sim/launchers.cpp). The Rust side has the matching table in
 * crates/lmsi-cuda/src/kernels.rs; a kernel missing from either fails the build or the tests.
 *
 * Every kernel is `extern "C" __global__ void name(Params p, outputs..., inputs...)`.
 */
#ifndef LMSI_KERNELS_H
#define LMSI_KERNELS_H

#include "lmsi_params.h"

/* Expands a parenthesised list in place: LMSI_EXPAND (a, b) is a, b. */
#define LMSI_EXPAND(...) __VA_ARGS__

#define LMSI_KERNELS(X)                                                                                           \
    /* adamw.cu */                                                                                                \
    X(adamw_update, (LmsiAdamwParams p, float* param, float* m, float* v, const float* grad),                     \
      (p, param, m, v, grad))                                                                                     \
    X(sum_squares_partial, (LmsiSumSquaresParams p, double* partials, const float* x), (p, partials, x))          \
    X(sum_partials, (LmsiNormParams p, double* sum, const double* partials), (p, sum, partials))                  \
    X(clip_scale, (LmsiNormParams p, float* x, const double* sum), (p, x, sum))                                   \
    /* attention.cu */                                                                                            \
    X(kv_store, (LmsiKvStoreParams p, float* k_cache, float* v_cache, const float* qkv, const uint32_t* slots),   \
      (p, k_cache, v_cache, qkv, slots))                                                                          \
    X(paged_attention,                                                                                            \
      (LmsiPagedAttentionParams p, float* out, const float* qkv, const float* k_cache, const float* v_cache,      \
       const uint32_t* positions, const uint32_t* row_tables, const uint32_t* block_tables,                       \
       const uint32_t* item_offsets, const uint32_t* item_rows),                                                  \
      (p, out, qkv, k_cache, v_cache, positions, row_tables, block_tables, item_offsets, item_rows))              \
    X(causal_attention_forward,                                                                                   \
      (LmsiCausalAttentionParams p, float* out, float* lse, const float* qkv, const LmsiAttnItem* items),         \
      (p, out, lse, qkv, items))                                                                                  \
    X(causal_attention_backward_delta,                                                                            \
      (LmsiCausalAttentionParams p, float* delta, const float* d_out, const float* out), (p, delta, d_out, out))  \
    X(causal_attention_backward_dq,                                                                               \
      (LmsiCausalAttentionParams p, float* d_qkv, const float* d_out, const float* lse, const float* delta,       \
       const float* qkv, const LmsiAttnItem* items),                                                              \
      (p, d_qkv, d_out, lse, delta, qkv, items))                                                                  \
    X(causal_attention_backward_dkdv,                                                                             \
      (LmsiCausalAttentionParams p, float* d_qkv, const float* d_out, const float* lse, const float* delta,       \
       const float* qkv, const LmsiAttnItem* items),                                                              \
      (p, d_qkv, d_out, lse, delta, qkv, items))                                                                  \
    X(kv_store_bf16,                                                                                              \
      (LmsiKvStoreParams p, LmsiBf16* k_cache, LmsiBf16* v_cache, const float* qkv, const uint32_t* slots),       \
      (p, k_cache, v_cache, qkv, slots))                                                                          \
    X(paged_attention_bf16,                                                                                       \
      (LmsiPagedAttentionParams p, LmsiBf16* out, const float* qkv, const LmsiBf16* k_cache,                      \
       const LmsiBf16* v_cache, const uint32_t* positions, const uint32_t* row_tables,                            \
       const uint32_t* block_tables, const uint32_t* item_offsets, const uint32_t* item_rows),                    \
      (p, out, qkv, k_cache, v_cache, positions, row_tables, block_tables, item_offsets, item_rows))              \
    X(causal_attention_forward_bf16,                                                                              \
      (LmsiCausalAttentionParams p, LmsiBf16* out, float* lse, const float* qkv, const LmsiAttnItem* items),      \
      (p, out, lse, qkv, items))                                                                                  \
    X(causal_attention_backward_delta_bf16,                                                                       \
      (LmsiCausalAttentionParams p, float* delta, const float* d_out, const LmsiBf16* out),                       \
      (p, delta, d_out, out))                                                                                     \
    /* convert.cu */                                                                                              \
    X(f32_to_bf16, (LmsiVecParams p, LmsiBf16* out, const float* x), (p, out, x))                                 \
    /* cross_entropy.cu */                                                                                        \
    X(cross_entropy,                                                                                              \
      (LmsiCrossEntropyParams p, float* logits, float* losses, const uint32_t* targets, const float* scales),     \
      (p, logits, losses, targets, scales))                                                                       \
    /* embedding.cu */                                                                                            \
    X(gather_rows, (LmsiRowsParams p, float* out, const float* table, const uint32_t* index),                     \
      (p, out, table, index))                                                                                     \
    X(gather_rows_bf16, (LmsiRowsParams p, float* out, const LmsiBf16* table, const uint32_t* index),             \
      (p, out, table, index))                                                                                     \
    X(scatter_add_rows, (LmsiRowsParams p, float* table, const float* src, const uint32_t* index),                \
      (p, table, src, index))                                                                                     \
    /* residual.cu */                                                                                             \
    X(add_assign, (LmsiVecParams p, float* x, const float* y), (p, x, y))                                         \
    X(scale_assign, (LmsiVecParams p, float* x), (p, x))                                                          \
    X(bias_add, (LmsiBiasParams p, float* out, const float* bias), (p, out, bias))                                \
    X(bias_grad, (LmsiBiasParams p, float* d_bias, const float* d_out), (p, d_bias, d_out))                       \
    /* rmsnorm.cu */                                                                                              \
    X(rmsnorm_forward, (LmsiRmsnormParams p, float* out, const float* x, const float* weight),                    \
      (p, out, x, weight))                                                                                        \
    X(rmsnorm_forward_bf16, (LmsiRmsnormParams p, LmsiBf16* out, const float* x, const float* weight),            \
      (p, out, x, weight))                                                                                        \
    X(rmsnorm_backward,                                                                                           \
      (LmsiRmsnormParams p, float* d_x, float* partial_dw, const float* d_out, const float* x,                    \
       const float* weight),                                                                                      \
      (p, d_x, partial_dw, d_out, x, weight))                                                                     \
    X(rmsnorm_backward_reduce, (LmsiRmsnormParams p, float* d_weight, const float* partial_dw),                   \
      (p, d_weight, partial_dw))                                                                                  \
    /* rope.cu */                                                                                                 \
    X(rope, (LmsiRopeParams p, float* qkv, const uint32_t* positions, const float* inv_freq),                     \
      (p, qkv, positions, inv_freq))                                                                              \
    /* sampling.cu */                                                                                             \
    X(sample_rows,                                                                                                \
      (LmsiSampleParams p, uint32_t* tokens, float* logprobs, float* sampling_logprobs, int32_t* status,          \
       const float* logits, const uint64_t* sequences, const uint32_t* steps),                                    \
      (p, tokens, logprobs, sampling_logprobs, status, logits, sequences, steps))                                 \
    /* swiglu.cu */                                                                                               \
    X(swiglu_forward, (LmsiSwigluParams p, float* out, const float* gate_up), (p, out, gate_up))                  \
    X(swiglu_forward_bf16, (LmsiSwigluParams p, LmsiBf16* out, const float* gate_up), (p, out, gate_up))          \
    X(swiglu_backward, (LmsiSwigluParams p, float* d_gate_up, const float* d_out, const float* gate_up),          \
      (p, d_gate_up, d_out, gate_up))

#endif
