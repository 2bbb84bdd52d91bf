/* Launch parameters of the kernels (the .cu files in kernels/): plain C, shared by the kernels (nvcc, NVRTC,
 * the CPU shim) and by the Rust crate lmsi-cuda, whose mirror src/params_generated.rs is generated
 * from this file by `cargo xtask kernels` (bindgen) and checked by `cargo xtask kernels --check`.
 *
 * Calling convention of every kernel: `kernel(Params p, outputs..., inputs...)`. The struct carries
 * sizes, counts and scalars and is passed by value; buffers are separate pointer arguments (so the
 * host can pass device buffers as they are). Flat element counts that can exceed 2^32 (parameters,
 * optimizer state) are 64-bit; everything else is 32-bit. Matrices are row-major f32, or bf16 where a
 * kernel's name ends in _bf16.
 */
#ifndef LMSI_PARAMS_H
#define LMSI_PARAMS_H

#if defined(__CUDACC_RTC__)
/* NVRTC has no C library headers; these are the LP64 widths nvcc and g++ use. */
typedef int int32_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#else
#include <stdint.h>
#endif

/* A bfloat16 value: the upper 16 bits of an f32 (sign, 8 exponent bits, 7 mantissa bits). The
 * kernels convert with lmsi_float / lmsi_put (lmsi_common.cuh), rounding to nearest even. */
typedef struct LmsiBf16 {
    uint16_t bits;
} LmsiBf16;

/* ---- Attention (kernels/attention.cu). */

/* Warps (of 32 threads) per block of every attention kernel. */
#define LMSI_ATTN_WARPS 8
/* Query vectors (one token's one head) per work item: LMSI_ATTN_WARPS warps, 2 each. */
#define LMSI_ATTN_QUERIES 16
/* Key positions per tile held in shared memory: one per lane. */
#define LMSI_ATTN_KEYS 32
/* Largest supported head dimension (each lane holds head_dim / 32 values, rounded up). */
#define LMSI_MAX_HEAD_DIM 256

/* Head geometry. Fused q|k|v rows hold num_heads, num_kv_heads, num_kv_heads heads of head_dim. */
typedef struct LmsiAttnShape {
    uint32_t num_heads;
    uint32_t num_kv_heads;
    uint32_t head_dim;
    /* Positions per block of the paged cache (paged kernels only). */
    uint32_t block_size;
    /* Keys older than this many positions are not attended to; 0 means no window. */
    uint32_t window;
    /* Score scale, usually 1 / sqrt(head_dim). */
    float scale;
} LmsiAttnShape;

/* A range of consecutive tokens of one sequence of a packed training batch: tokens
 * [first, first + count) of the sequence that occupies tokens [seq_start, seq_end). */
typedef struct LmsiAttnItem {
    uint32_t first;
    uint32_t count;
    uint32_t seq_start;
    uint32_t seq_end;
} LmsiAttnItem;

/* kv_store: token t's k and v go to cache slot slots[t]; slots past the `cache_blocks` blocks of
 * the caches are skipped. */
typedef struct LmsiKvStoreParams {
    LmsiAttnShape shape;
    uint32_t tokens;
    uint32_t cache_blocks;
} LmsiKvStoreParams;

/* paged_attention: `tokens` new tokens; work item i is the tokens
 * item_rows[item_offsets[i] .. item_offsets[i+1]] (at most LMSI_ATTN_QUERIES / (num_heads /
 * num_kv_heads) of them) crossed with one kv head (grid.y). Token t's block table starts at
 * block_tables[row_tables[t]]. The lengths of item_rows and block_tables and the cache size bound
 * every index the kernel follows: an item that breaks them is skipped, a block entry outside them
 * is treated as absent. */
typedef struct LmsiPagedAttentionParams {
    LmsiAttnShape shape;
    uint32_t num_items;
    uint32_t tokens;
    uint32_t item_rows_len;
    uint32_t block_tables_len;
    uint32_t cache_blocks;
} LmsiPagedAttentionParams;

/* causal_attention_forward, causal_attention_backward_*: a packed training batch of `tokens`
 * tokens; `num_items` work items (LmsiAttnItem) per kv head. Items that do not lie inside the
 * batch, or hold too many tokens, are skipped. */
typedef struct LmsiCausalAttentionParams {
    LmsiAttnShape shape;
    uint32_t tokens;
    uint32_t num_items;
} LmsiCausalAttentionParams;

/* ---- Rows (kernels/embedding.cu): gather_rows, scatter_add_rows. */

/* `rows` rows of `dim` values, indexing a table of `table_rows` rows. */
typedef struct LmsiRowsParams {
    uint32_t rows;
    uint32_t dim;
    uint32_t table_rows;
} LmsiRowsParams;

/* ---- Normalisation and element-wise kernels. */

/* rmsnorm_*: `rows` rows of `dim`. The backward gives each block `rows_per_block` rows and one
 * row of partial weight gradients. */
typedef struct LmsiRmsnormParams {
    uint32_t rows;
    uint32_t dim;
    float eps;
    uint32_t rows_per_block;
} LmsiRmsnormParams;

/* rope: rotates the first num_heads + num_kv_heads heads of each fused q|k|v row; `inverse`
 * rotates by minus the angle (the backward pass). */
typedef struct LmsiRopeParams {
    uint32_t tokens;
    uint32_t num_heads;
    uint32_t num_kv_heads;
    uint32_t head_dim;
    uint32_t inverse;
} LmsiRopeParams;

/* swiglu_*: `rows` rows of `inter` outputs; gate_up rows are gate | up (2 * inter). */
typedef struct LmsiSwigluParams {
    uint32_t rows;
    uint32_t inter;
} LmsiSwigluParams;

/* add_assign (x += y), scale_assign (x *= factor) and f32_to_bf16 (out = x rounded) over `len`
 * values. */
typedef struct LmsiVecParams {
    uint64_t len;
    float factor;
} LmsiVecParams;

/* bias_add (out[r, c] += bias[c]) and bias_grad (d_bias[c] += the sum over r of d_out[r, c]):
 * `rows` rows of `dim` values. */
typedef struct LmsiBiasParams {
    uint32_t rows;
    uint32_t dim;
} LmsiBiasParams;

/* cross_entropy: `rows` rows of `vocab` logits; row r's gradient is scaled by `scales[r]`. */
typedef struct LmsiCrossEntropyParams {
    uint32_t rows;
    uint32_t vocab;
} LmsiCrossEntropyParams;

/* ---- Optimizer (kernels/adamw.cu). */

/* adamw_update: the per-step constants of lmsi_adamw::StepScalars, over `len` elements. */
typedef struct LmsiAdamwParams {
    uint64_t len;
    float decay;
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float step_size;
    float bias_correction2_sqrt;
    float eps;
} LmsiAdamwParams;

/* sum_squares_partial: block b sums the squares of elements [b * chunk, (b + 1) * chunk) of a
 * tensor of `len` values into partials[first_partial + b]. */
typedef struct LmsiSumSquaresParams {
    uint64_t len;
    uint64_t chunk;
    uint32_t first_partial;
} LmsiSumSquaresParams;

/* sum_partials: one block adds `count` partial sums. clip_scale: scales `len` values so that the
 * norm sqrt(sum) is at most max_norm. */
typedef struct LmsiNormParams {
    uint64_t len;
    uint32_t count;
    double max_norm;
} LmsiNormParams;

/* ---- Sampling (kernels/sampling.cu). */

/* Per-row outcome in `status`; on an error the row's token is the index of the offending logit
 * (for NAN and INF). */
#define LMSI_SAMPLE_OK 0
#define LMSI_SAMPLE_NAN 1
#define LMSI_SAMPLE_INF 2
#define LMSI_SAMPLE_NO_FINITE 3

/* sample_rows: `rows` rows of `vocab` logits, the lmsi_sampler parameters (temperature 0 is
 * greedy; top_k 0 or >= vocab and top_p 1 disable truncation). */
typedef struct LmsiSampleParams {
    uint64_t seed;
    uint32_t rows;
    uint32_t vocab;
    float temperature;
    float top_p;
    uint32_t top_k;
} LmsiSampleParams;

#endif
