/* The C interface of the CPU shim: one launcher per kernel, called from Rust (lmsi_cuda::sim).
 * Rust's declarations (crates/lmsi-cuda/src/sim/ffi_generated.rs) are generated from this file by
 * `cargo xtask kernels`; each kernel file defines its launchers in its `#ifdef LMSI_SIM` section,
 * and the compiler checks them against these prototypes.
 *
 * A launcher runs the kernel over the grid of `launch` with the parameters and buffers of the real
 * kernel (host pointers here) and returns 0, or nonzero with the reason in lmsi_sim_last_error().
 */
#ifndef LMSI_SIM_C_H
#define LMSI_SIM_C_H

#include "lmsi_params.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fiber orders (LmsiSimLaunch::schedule). */
#define LMSI_SIM_IN_ORDER 0
#define LMSI_SIM_REVERSED 1
#define LMSI_SIM_SHUFFLED 2

/* Fiber stack size of each simulated CUDA thread. */
#define LMSI_SIM_STACK_BYTES 65536

typedef struct LmsiSimLaunch {
    uint32_t grid[3];
    uint32_t block[3];
    /* Dynamic shared memory per block, in bytes. */
    uint32_t shared_bytes;
    /* LMSI_SIM_IN_ORDER, LMSI_SIM_REVERSED or LMSI_SIM_SHUFFLED. */
    uint32_t schedule;
    /* Seed of the shuffled schedule. */
    uint64_t seed;
    /* OS threads running blocks; 0 means one per available core. */
    uint32_t os_threads;
} LmsiSimLaunch;

/* The error of the last failed launch on the calling thread (empty if none). */
const char* lmsi_sim_last_error(void);

/* embedding.cu */
int lmsi_sim_gather_rows(const LmsiSimLaunch* launch, LmsiRowsParams p, float* out, const float* table,
                         const uint32_t* index);
int lmsi_sim_scatter_add_rows(const LmsiSimLaunch* launch, LmsiRowsParams p, float* table, const float* src,
                              const uint32_t* index);

/* rmsnorm.cu */
int lmsi_sim_rmsnorm_forward(const LmsiSimLaunch* launch, LmsiRmsnormParams p, float* out, const float* x,
                             const float* weight);
int lmsi_sim_rmsnorm_backward(const LmsiSimLaunch* launch, LmsiRmsnormParams p, float* d_x, float* partial_dw,
                              const float* d_out, const float* x, const float* weight);
int lmsi_sim_rmsnorm_backward_reduce(const LmsiSimLaunch* launch, LmsiRmsnormParams p, float* d_weight,
                                     const float* partial_dw);

/* rope.cu */
int lmsi_sim_rope(const LmsiSimLaunch* launch, LmsiRopeParams p, float* qkv, const uint32_t* positions,
                  const float* inv_freq);

/* swiglu.cu */
int lmsi_sim_swiglu_forward(const LmsiSimLaunch* launch, LmsiSwigluParams p, float* out, const float* gate_up);
int lmsi_sim_swiglu_backward(const LmsiSimLaunch* launch, LmsiSwigluParams p, float* d_gate_up,
                             const float* d_out, const float* gate_up);

/* residual.cu */
int lmsi_sim_add_assign(const LmsiSimLaunch* launch, LmsiVecParams p, float* x, const float* y);
int lmsi_sim_scale_assign(const LmsiSimLaunch* launch, LmsiVecParams p, float* x);
int lmsi_sim_bias_add(const LmsiSimLaunch* launch, LmsiBiasParams p, float* out, const float* bias);
int lmsi_sim_bias_grad(const LmsiSimLaunch* launch, LmsiBiasParams p, float* d_bias, const float* d_out);

/* cross_entropy.cu */
int lmsi_sim_cross_entropy(const LmsiSimLaunch* launch, LmsiCrossEntropyParams p, float* logits, float* losses,
                           const uint32_t* targets);

/* adamw.cu */
int lmsi_sim_adamw_update(const LmsiSimLaunch* launch, LmsiAdamwParams p, float* param, float* m, float* v,
                          const float* grad);
int lmsi_sim_sum_squares_partial(const LmsiSimLaunch* launch, LmsiSumSquaresParams p, double* partials,
                                 const float* x);
int lmsi_sim_sum_partials(const LmsiSimLaunch* launch, LmsiNormParams p, double* sum, const double* partials);
int lmsi_sim_clip_scale(const LmsiSimLaunch* launch, LmsiNormParams p, float* x, const double* sum);

/* sampling.cu */
int lmsi_sim_sample_rows(const LmsiSimLaunch* launch, LmsiSampleParams p, uint32_t* tokens, float* logprobs,
                         float* sampling_logprobs, int32_t* status, const float* logits, const uint64_t* sequences,
                         const uint32_t* steps);

/* attention.cu */
int lmsi_sim_kv_store(const LmsiSimLaunch* launch, LmsiKvStoreParams p, float* k_cache, float* v_cache,
                      const float* qkv, const uint32_t* slots);
int lmsi_sim_paged_attention(const LmsiSimLaunch* launch, LmsiPagedAttentionParams p, float* out,
                             const float* qkv, const float* k_cache, const float* v_cache,
                             const uint32_t* positions, const uint32_t* row_tables, const uint32_t* block_tables,
                             const uint32_t* item_offsets, const uint32_t* item_rows);
int lmsi_sim_causal_attention_forward(const LmsiSimLaunch* launch, LmsiCausalAttentionParams p, float* out,
                                      float* lse, const float* qkv, const LmsiAttnItem* items);
int lmsi_sim_causal_attention_backward_delta(const LmsiSimLaunch* launch, LmsiCausalAttentionParams p,
                                             float* delta, const float* d_out, const float* out);
int lmsi_sim_causal_attention_backward_dq(const LmsiSimLaunch* launch, LmsiCausalAttentionParams p,
                                          float* d_qkv, const float* d_out, const float* lse, const float* delta,
                                          const float* qkv, const LmsiAttnItem* items);
int lmsi_sim_causal_attention_backward_dkdv(const LmsiSimLaunch* launch, LmsiCausalAttentionParams p,
                                            float* d_qkv, const float* d_out, const float* lse,
                                            const float* delta, const float* qkv, const LmsiAttnItem* items);

/* sim/selftest.cu: kernels that check the shim itself. */
int lmsi_sim_selftest_missing_barrier(const LmsiSimLaunch* launch, uint32_t n, float* out, const float* in);
int lmsi_sim_selftest_partial_barrier(const LmsiSimLaunch* launch, uint32_t n, float* out);
int lmsi_sim_selftest_deadlock(const LmsiSimLaunch* launch, float* out);
int lmsi_sim_selftest_warp_ops(const LmsiSimLaunch* launch, uint32_t* out);
int lmsi_sim_selftest_half(const LmsiSimLaunch* launch, uint32_t n, float* out, const float* in);

#ifdef __cplusplus
}
#endif

#endif
