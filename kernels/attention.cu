// Attention: the paged KV cache (store, and attention of new tokens over it) and causal attention
// of packed training sequences with its backward pass. Grouped-query attention (G = num_heads /
// num_kv_heads query heads share a kv head, G <= LMSI_ATTN_QUERIES), optional sliding window,
// head_dim up to LMSI_MAX_HEAD_DIM.
//
// kv_store  One block per token (grid.x = tokens): its k goes to the key cache, transposed within
//           the block ([blocks, kv_heads, head_dim, block_size]), its v to the value cache
//           ([blocks, block_size, kv_heads, head_dim]), at slot = block * block_size + offset.
//           kv_store_bf16 stores into bf16 caches, rounding each value to nearest even.
//
// The attention kernels share one scheme. A block (LMSI_ATTN_WARPS warps) takes a work item: up
// to LMSI_ATTN_QUERIES query vectors (rows x the G heads of one kv head, grid.y = kv head), two
// per warp. The queries sit in shared memory; keys and values stream through shared memory in
// tiles of up to LMSI_ATTN_KEYS positions. In a tile, lane j computes key j's score (a dot
// product read across positions, so no reductions), and an online softmax (running max m, sum l,
// output accumulator with each lane owning head dimensions lane, lane + 32, ...) folds the tile
// into each query's state. Scores and weights are f32 with expf; results match the CPU reference
// to about 1e-6 relative, not bit for bit.
//
// paged_attention  New tokens (decode or prefill rows) attend to positions first..=position of
//           their sequence through its block table. A work item is a list of rows chosen by the
//           host so that they share cache blocks: the tokens of one prefill chunk, or sibling
//           sequences that share a prompt prefix. For each logical block index, the item's rows
//           are grouped by the physical block they map to; each distinct physical block is loaded
//           into shared memory once and serves every row that maps to it, so a shared prefix is
//           read once per item rather than once per row. paged_attention_bf16 reads bf16 caches
//           (widened to f32 as they enter shared memory) and writes its output in bf16 (rounded
//           to nearest even); everything else is the same.
// causal_attention_forward  Training: each token attends to the earlier tokens of its own
//           sequence (contiguous in the packed batch). An item is a run of consecutive query
//           tokens; also writes lse[t, h] = m + ln(l), which the backward pass uses.
//           causal_attention_forward_bf16 writes out in bf16 (lse stays f32).
// causal_attention_backward_delta  delta[t, h] = dot(d_out[t, h], out[t, h]): one warp per head;
//           causal_attention_backward_delta_bf16 reads a bf16 out.
// causal_attention_backward_dq     Query items as in the forward; recomputes P = exp(s - lse) and
//           dS = P * (dO.v - delta) * scale per key tile and accumulates dq = sum dS * k in
//           registers.
// causal_attention_backward_dkdv   A key item (up to LMSI_ATTN_KEYS keys) loops over the queries
//           that see its keys, 16 query vectors at a time: phase 1 computes P and dS into shared
//           memory (lane = key), phase 2 accumulates dv += P * dO and dk += dS * q with each warp
//           owning 4 keys and each lane head dimensions.
// Every gradient element is written by exactly one thread in a fixed order: no atomics, and the
// backward pass is reproducible bit for bit.
#include "lmsi_common.cuh"

#define QPW (LMSI_ATTN_QUERIES / LMSI_ATTN_WARPS)
#define ITEMS (LMSI_MAX_HEAD_DIM / 32)
#define KPW (LMSI_ATTN_KEYS / LMSI_ATTN_WARPS)
// Row stride of transposed tiles ([head_dim][keys]): one more than the keys, so that reading a
// column (lane = dimension) hits 32 different banks.
#define KSTRIDE (LMSI_ATTN_KEYS + 1)
#define LMSI_NO_BLOCK 0xffffffffu

// Whether a training work item lies inside the batch and holds at most `limit` rows.
__device__ __forceinline__ bool item_ok(const LmsiAttnItem& item, uint32_t tokens, uint32_t limit) {
    return item.count > 0 && item.count <= limit && item.seq_start <= item.first &&
           item.first + item.count <= item.seq_end && item.seq_end <= tokens;
}

__device__ __forceinline__ uint32_t first_visible(uint32_t position, uint32_t window) {
    return window != 0 && position + 1 > window ? position + 1 - window : 0;
}

// A query's online-softmax state; lane owns dimensions lane + 32 * i.
struct Online {
    float m;
    float l;
    float acc[ITEMS];
};

__device__ __forceinline__ void online_init(Online& st) {
    st.m = -lmsi_inf();
    st.l = 0.0f;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) st.acc[i] = 0.0f;
}

// Scaled score of key `lane` of a transposed key tile (kt[d * stride + lane]) against q.
__device__ __forceinline__ float tile_score(const float* q, const float* kt, uint32_t stride, uint32_t dim,
                                            float scale) {
    const uint32_t lane = lmsi_lane();
    float dot = 0.0f;
    for (uint32_t d = 0; d < dim; ++d) dot += q[d] * kt[d * stride + lane];
    return dot * scale;
}

// Folds a tile into the state: `s` is this lane's score (-inf if masked), values row j of the tile
// at v[j * dim]; n positions in the tile. Whole warp, uniformly.
__device__ __forceinline__ void online_update(Online& st, float s, const float* v, uint32_t n, uint32_t dim) {
    const float tile_max = lmsi_warp_reduce(s, LmsiMax());
    if (tile_max == -lmsi_inf()) return;
    const float m_new = st.m > tile_max ? st.m : tile_max;
    const float correction = expf(st.m - m_new);
    const float w = s == -lmsi_inf() ? 0.0f : expf(s - m_new);
    st.l = st.l * correction + lmsi_warp_reduce(w, LmsiSum());
    st.m = m_new;
    const uint32_t lane = lmsi_lane();
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) st.acc[i] *= correction;
    for (uint32_t j = 0; j < n; ++j) {
        const float wj = __shfl_sync(LMSI_FULL_MASK, w, (int)j);
        if (wj == 0.0f) continue;
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
            const uint32_t d = lane + 32u * (uint32_t)i;
            if (d < dim) st.acc[i] += wj * v[j * dim + d];
        }
    }
}

template <class O>
__device__ __forceinline__ void online_write(const Online& st, O* out, uint32_t dim) {
    const uint32_t lane = lmsi_lane();
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        const uint32_t d = lane + 32u * (uint32_t)i;
        if (d < dim) lmsi_put(out + d, st.acc[i] / st.l);
    }
}

template <class C>
__device__ __forceinline__ void kv_store_into(const LmsiKvStoreParams& p, C* k_cache, C* v_cache, const float* qkv,
                                              const uint32_t* slots) {
    const LmsiAttnShape s = p.shape;
    const uint32_t kv_dim = s.num_kv_heads * s.head_dim;
    const uint32_t q_dim = s.num_heads * s.head_dim;
    const float* row = qkv + (uint64_t)blockIdx.x * (q_dim + 2 * kv_dim);
    const uint32_t slot = slots[blockIdx.x];
    if (slot / s.block_size >= p.cache_blocks) return;
    const uint32_t block = slot / s.block_size;
    const uint32_t offset = slot - block * s.block_size;
    C* k_block = k_cache + (uint64_t)block * s.block_size * kv_dim;
    for (uint32_t i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        // i = head * head_dim + d, so the transposed position [head][d][offset] is i * block_size + offset.
        lmsi_put(k_block + (uint64_t)i * s.block_size + offset, row[q_dim + i]);
        lmsi_put(v_cache + (uint64_t)slot * kv_dim + i, row[q_dim + kv_dim + i]);
    }
}

extern "C" __global__ void kv_store(LmsiKvStoreParams p, float* k_cache, float* v_cache, const float* qkv,
                                    const uint32_t* slots) {
    kv_store_into(p, k_cache, v_cache, qkv, slots);
}

extern "C" __global__ void kv_store_bf16(LmsiKvStoreParams p, LmsiBf16* k_cache, LmsiBf16* v_cache, const float* qkv,
                                         const uint32_t* slots) {
    kv_store_into(p, k_cache, v_cache, qkv, slots);
}

template <class O, class C>
__device__ __forceinline__ void paged_attention_over(const LmsiPagedAttentionParams& p, O* out, const float* qkv,
                                                     const C* k_cache, const C* v_cache, const uint32_t* positions,
                                                     const uint32_t* row_tables, const uint32_t* block_tables,
                                                     const uint32_t* item_offsets, const uint32_t* item_rows) {
    __shared__ uint32_t row_token[LMSI_ATTN_QUERIES];
    __shared__ uint32_t row_position[LMSI_ATTN_QUERIES];
    __shared__ uint32_t row_first[LMSI_ATTN_QUERIES];
    __shared__ uint32_t row_table[LMSI_ATTN_QUERIES];
    // For the logical block being processed: each row's physical block (or none), and the first
    // row mapping to the same one (the row that loads it).
    __shared__ uint32_t row_block[LMSI_ATTN_QUERIES];
    __shared__ uint32_t row_leader[LMSI_ATTN_QUERIES];

    const LmsiAttnShape s = p.shape;
    const uint32_t dim = s.head_dim, bs = s.block_size, g = blockIdx.y;
    const uint32_t group = s.num_heads / s.num_kv_heads;
    const uint32_t kv_dim = s.num_kv_heads * dim;
    const uint32_t qkv_dim = (s.num_heads + 2 * s.num_kv_heads) * dim;
    const uint32_t tile = bs < LMSI_ATTN_KEYS ? bs : LMSI_ATTN_KEYS;
    const uint32_t begin = item_offsets[blockIdx.x];
    const uint32_t end = item_offsets[blockIdx.x + 1];
    const uint32_t rows = end - begin;
    const uint32_t queries = rows * group;
    const uint32_t warp = lmsi_warp(), lane = lmsi_lane();
    // A malformed item is skipped whole (every thread decides alike, before any barrier).
    if (end < begin || end > p.item_rows_len || rows == 0 || queries > LMSI_ATTN_QUERIES) return;
    for (uint32_t r = begin; r < end; ++r) {
        if (item_rows[r] >= p.tokens) return;
    }

    float* q_s = lmsi_dynamic_shared<float>();   // [LMSI_ATTN_QUERIES][dim]
    float* kt_s = q_s + LMSI_ATTN_QUERIES * dim;  // [dim][tile]
    float* v_s = kt_s + dim * tile;               // [tile][dim]

    if (threadIdx.x < rows) {
        const uint32_t t = item_rows[begin + threadIdx.x];
        row_token[threadIdx.x] = t;
        row_position[threadIdx.x] = positions[t];
        row_first[threadIdx.x] = first_visible(positions[t], s.window);
        row_table[threadIdx.x] = row_tables[t];
    }
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < queries * dim; i += blockDim.x) {
        const uint32_t qi = i / dim, d = i - qi * dim;
        const uint32_t head = g * group + qi % group;
        q_s[i] = qkv[(uint64_t)row_token[qi / group] * qkv_dim + head * dim + d];
    }
    uint32_t lo = 0xffffffffu, hi = 0;
    for (uint32_t r = 0; r < rows; ++r) {
        lo = min(lo, row_first[r] / bs);
        hi = max(hi, row_position[r] / bs);
    }

    Online st[QPW];
#pragma unroll
    for (int k = 0; k < QPW; ++k) online_init(st[k]);

    for (uint32_t b = lo; b <= hi; ++b) {
        __syncthreads();  // the previous block index's readers of row_block/row_leader are done
        if (threadIdx.x < rows) {
            const bool visible = b * bs <= row_position[threadIdx.x] && (b + 1) * bs > row_first[threadIdx.x];
            const uint32_t entry = row_table[threadIdx.x] + b;
            const uint32_t phys = visible && entry < p.block_tables_len ? block_tables[entry] : LMSI_NO_BLOCK;
            row_block[threadIdx.x] = phys < p.cache_blocks ? phys : LMSI_NO_BLOCK;
        }
        __syncthreads();
        if (threadIdx.x < rows) {
            uint32_t leader = threadIdx.x;
            for (uint32_t r = 0; r < threadIdx.x; ++r) {
                if (row_block[r] == row_block[threadIdx.x]) {
                    leader = r;
                    break;
                }
            }
            row_leader[threadIdx.x] = leader;
        }
        __syncthreads();
        for (uint32_t r = 0; r < rows; ++r) {
            const uint32_t phys = row_block[r];
            if (phys == LMSI_NO_BLOCK || row_leader[r] != r) continue;
            const C* k_src = k_cache + (uint64_t)phys * bs * kv_dim + (uint64_t)g * dim * bs;
            for (uint32_t o = 0; o < bs; o += tile) {
                const uint32_t n = bs - o < tile ? bs - o : tile;
                __syncthreads();  // the previous tile's readers are done
                for (uint32_t i = threadIdx.x; i < dim * n; i += blockDim.x) {
                    const uint32_t d = i / n, j = i - d * n;
                    kt_s[d * tile + j] = lmsi_float(k_src[(uint64_t)d * bs + o + j]);
                }
                for (uint32_t i = threadIdx.x; i < n * dim; i += blockDim.x) {
                    const uint32_t j = i / dim, d = i - j * dim;
                    v_s[i] = lmsi_float(v_cache[((uint64_t)phys * bs + o + j) * kv_dim + g * dim + d]);
                }
                __syncthreads();
#pragma unroll
                for (int k = 0; k < QPW; ++k) {
                    const uint32_t qi = warp + LMSI_ATTN_WARPS * (uint32_t)k;
                    if (qi >= queries || row_leader[qi / group] != r) continue;
                    const uint32_t rq = qi / group;
                    const uint32_t position = b * bs + o + lane;
                    const bool valid = lane < n && position >= row_first[rq] && position <= row_position[rq];
                    const float score = valid ? tile_score(q_s + qi * dim, kt_s, tile, dim, s.scale) : -lmsi_inf();
                    online_update(st[k], score, v_s, n, dim);
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < QPW; ++k) {
        const uint32_t qi = warp + LMSI_ATTN_WARPS * (uint32_t)k;
        if (qi >= queries) continue;
        const uint32_t head = g * group + qi % group;
        online_write(st[k], out + (uint64_t)row_token[qi / group] * s.num_heads * dim + head * dim, dim);
    }
}

// Two blocks per SM: without the hint ptxas caps this kernel at 64 registers and spills on sm_90.
extern "C" __global__ void __launch_bounds__(LMSI_ATTN_WARPS * 32, 2)
    paged_attention(LmsiPagedAttentionParams p, float* out, const float* qkv, const float* k_cache,
                    const float* v_cache, const uint32_t* positions, const uint32_t* row_tables,
                    const uint32_t* block_tables, const uint32_t* item_offsets, const uint32_t* item_rows) {
    paged_attention_over(p, out, qkv, k_cache, v_cache, positions, row_tables, block_tables, item_offsets, item_rows);
}

extern "C" __global__ void __launch_bounds__(LMSI_ATTN_WARPS * 32, 2)
    paged_attention_bf16(LmsiPagedAttentionParams p, LmsiBf16* out, const float* qkv, const LmsiBf16* k_cache,
                         const LmsiBf16* v_cache, const uint32_t* positions, const uint32_t* row_tables,
                         const uint32_t* block_tables, const uint32_t* item_offsets, const uint32_t* item_rows) {
    paged_attention_over(p, out, qkv, k_cache, v_cache, positions, row_tables, block_tables, item_offsets, item_rows);
}

// Loads keys [k0, k0 + n) of kv head g from the fused rows, transposed: kt[d * KSTRIDE + j].
__device__ __forceinline__ void load_keys_transposed(float* kt, const float* qkv, uint32_t k0, uint32_t n,
                                                     uint32_t head_offset, uint32_t qkv_dim, uint32_t dim) {
    for (uint32_t i = threadIdx.x; i < n * dim; i += blockDim.x) {
        const uint32_t j = i / dim, d = i - j * dim;
        kt[d * KSTRIDE + j] = qkv[(uint64_t)(k0 + j) * qkv_dim + head_offset + d];
    }
}

template <class O>
__device__ __forceinline__ void causal_attention_over(const LmsiCausalAttentionParams& p, O* out, float* lse,
                                                      const float* qkv, const LmsiAttnItem* items) {
    const LmsiAttnShape s = p.shape;
    const LmsiAttnItem item = items[blockIdx.x];
    const uint32_t dim = s.head_dim, g = blockIdx.y;
    const uint32_t group = s.num_heads / s.num_kv_heads;
    const uint32_t qkv_dim = (s.num_heads + 2 * s.num_kv_heads) * dim;
    const uint32_t queries = item.count * group;
    const uint32_t warp = lmsi_warp(), lane = lmsi_lane();
    if (!item_ok(item, p.tokens, LMSI_ATTN_QUERIES / group)) return;

    float* q_s = lmsi_dynamic_shared<float>();   // [LMSI_ATTN_QUERIES][dim]
    float* kt_s = q_s + LMSI_ATTN_QUERIES * dim;  // [dim][KSTRIDE]
    float* v_s = kt_s + dim * KSTRIDE;            // [LMSI_ATTN_KEYS][dim]

    for (uint32_t i = threadIdx.x; i < queries * dim; i += blockDim.x) {
        const uint32_t qi = i / dim, d = i - qi * dim;
        const uint32_t head = g * group + qi % group;
        q_s[i] = qkv[(uint64_t)(item.first + qi / group) * qkv_dim + head * dim + d];
    }
    Online st[QPW];
#pragma unroll
    for (int k = 0; k < QPW; ++k) online_init(st[k]);

    const uint32_t lo = item.seq_start + first_visible(item.first - item.seq_start, s.window);
    const uint32_t hi = item.first + item.count;  // exclusive
    for (uint32_t k0 = lo; k0 < hi; k0 += LMSI_ATTN_KEYS) {
        const uint32_t n = hi - k0 < LMSI_ATTN_KEYS ? hi - k0 : LMSI_ATTN_KEYS;
        __syncthreads();  // the previous tile's readers are done (and the queries are stored)
        load_keys_transposed(kt_s, qkv, k0, n, (s.num_heads + g) * dim, qkv_dim, dim);
        for (uint32_t i = threadIdx.x; i < n * dim; i += blockDim.x) {
            const uint32_t j = i / dim, d = i - j * dim;
            v_s[i] = qkv[(uint64_t)(k0 + j) * qkv_dim + (s.num_heads + s.num_kv_heads + g) * dim + d];
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < QPW; ++k) {
            const uint32_t qi = warp + LMSI_ATTN_WARPS * (uint32_t)k;
            if (qi >= queries) continue;
            const uint32_t t = item.first + qi / group;
            const uint32_t first = item.seq_start + first_visible(t - item.seq_start, s.window);
            const uint32_t key = k0 + lane;
            const bool valid = lane < n && key >= first && key <= t;
            const float score = valid ? tile_score(q_s + qi * dim, kt_s, KSTRIDE, dim, s.scale) : -lmsi_inf();
            online_update(st[k], score, v_s, n, dim);
        }
    }
#pragma unroll
    for (int k = 0; k < QPW; ++k) {
        const uint32_t qi = warp + LMSI_ATTN_WARPS * (uint32_t)k;
        if (qi >= queries) continue;
        const uint32_t t = item.first + qi / group;
        const uint32_t head = g * group + qi % group;
        online_write(st[k], out + (uint64_t)t * s.num_heads * dim + head * dim, dim);
        if (lane == 0) lse[(uint64_t)t * s.num_heads + head] = st[k].m + logf(st[k].l);
    }
}

extern "C" __global__ void __launch_bounds__(LMSI_ATTN_WARPS * 32)
    causal_attention_forward(LmsiCausalAttentionParams p, float* out, float* lse, const float* qkv,
                             const LmsiAttnItem* items) {
    causal_attention_over(p, out, lse, qkv, items);
}

extern "C" __global__ void __launch_bounds__(LMSI_ATTN_WARPS * 32)
    causal_attention_forward_bf16(LmsiCausalAttentionParams p, LmsiBf16* out, float* lse, const float* qkv,
                                  const LmsiAttnItem* items) {
    causal_attention_over(p, out, lse, qkv, items);
}

template <class O>
__device__ __forceinline__ void backward_delta(const LmsiCausalAttentionParams& p, float* delta, const float* d_out,
                                               const O* out) {
    const LmsiAttnShape s = p.shape;
    const uint32_t t = blockIdx.x;
    for (uint32_t h = lmsi_warp(); h < s.num_heads; h += blockDim.x >> 5) {
        const uint64_t base = ((uint64_t)t * s.num_heads + h) * s.head_dim;
        float acc = 0.0f;
        for (uint32_t d = lmsi_lane(); d < s.head_dim; d += 32) acc += d_out[base + d] * lmsi_float(out[base + d]);
        acc = lmsi_warp_reduce(acc, LmsiSum());
        if (lmsi_lane() == 0) delta[(uint64_t)t * s.num_heads + h] = acc;
    }
}

extern "C" __global__ void causal_attention_backward_delta(LmsiCausalAttentionParams p, float* delta,
                                                           const float* d_out, const float* out) {
    backward_delta(p, delta, d_out, out);
}

extern "C" __global__ void causal_attention_backward_delta_bf16(LmsiCausalAttentionParams p, float* delta,
                                                                const float* d_out, const LmsiBf16* out) {
    backward_delta(p, delta, d_out, out);
}

extern "C" __global__ void __launch_bounds__(LMSI_ATTN_WARPS * 32)
    causal_attention_backward_dq(LmsiCausalAttentionParams p, float* d_qkv, const float* d_out, const float* lse,
                                 const float* delta, const float* qkv, const LmsiAttnItem* items) {
    const LmsiAttnShape s = p.shape;
    const LmsiAttnItem item = items[blockIdx.x];
    const uint32_t dim = s.head_dim, g = blockIdx.y;
    const uint32_t group = s.num_heads / s.num_kv_heads;
    const uint32_t qkv_dim = (s.num_heads + 2 * s.num_kv_heads) * dim;
    const uint32_t queries = item.count * group;
    const uint32_t warp = lmsi_warp(), lane = lmsi_lane();
    if (!item_ok(item, p.tokens, LMSI_ATTN_QUERIES / group)) return;

    float* q_s = lmsi_dynamic_shared<float>();    // [LMSI_ATTN_QUERIES][dim]
    float* do_s = q_s + LMSI_ATTN_QUERIES * dim;   // [LMSI_ATTN_QUERIES][dim]
    float* kt_s = do_s + LMSI_ATTN_QUERIES * dim;  // [dim][KSTRIDE]
    float* vt_s = kt_s + dim * KSTRIDE;            // [dim][KSTRIDE]

    for (uint32_t i = threadIdx.x; i < queries * dim; i += blockDim.x) {
        const uint32_t qi = i / dim, d = i - qi * dim;
        const uint32_t t = item.first + qi / group, head = g * group + qi % group;
        q_s[i] = qkv[(uint64_t)t * qkv_dim + head * dim + d];
        do_s[i] = d_out[((uint64_t)t * s.num_heads + head) * dim + d];
    }
    float dq[QPW][ITEMS];
#pragma unroll
    for (int k = 0; k < QPW; ++k) {
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) dq[k][i] = 0.0f;
    }

    const uint32_t lo = item.seq_start + first_visible(item.first - item.seq_start, s.window);
    const uint32_t hi = item.first + item.count;
    for (uint32_t k0 = lo; k0 < hi; k0 += LMSI_ATTN_KEYS) {
        const uint32_t n = hi - k0 < LMSI_ATTN_KEYS ? hi - k0 : LMSI_ATTN_KEYS;
        __syncthreads();
        load_keys_transposed(kt_s, qkv, k0, n, (s.num_heads + g) * dim, qkv_dim, dim);
        load_keys_transposed(vt_s, qkv, k0, n, (s.num_heads + s.num_kv_heads + g) * dim, qkv_dim, dim);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < QPW; ++k) {
            const uint32_t qi = warp + LMSI_ATTN_WARPS * (uint32_t)k;
            if (qi >= queries) continue;
            const uint32_t t = item.first + qi / group, head = g * group + qi % group;
            const uint32_t first = item.seq_start + first_visible(t - item.seq_start, s.window);
            const uint32_t key = k0 + lane;
            float ds = 0.0f;
            if (lane < n && key >= first && key <= t) {
                const float score = tile_score(q_s + qi * dim, kt_s, KSTRIDE, dim, s.scale);
                const float dp = tile_score(do_s + qi * dim, vt_s, KSTRIDE, dim, 1.0f);
                const uint64_t at = (uint64_t)t * s.num_heads + head;
                const float prob = expf(score - lse[at]);
                ds = prob * (dp - delta[at]) * s.scale;
            }
            for (uint32_t j = 0; j < n; ++j) {
                const float w = __shfl_sync(LMSI_FULL_MASK, ds, (int)j);
                if (w == 0.0f) continue;
#pragma unroll
                for (int i = 0; i < ITEMS; ++i) {
                    const uint32_t d = lane + 32u * (uint32_t)i;
                    if (d < dim) dq[k][i] += w * kt_s[d * KSTRIDE + j];
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < QPW; ++k) {
        const uint32_t qi = warp + LMSI_ATTN_WARPS * (uint32_t)k;
        if (qi >= queries) continue;
        const uint32_t t = item.first + qi / group, head = g * group + qi % group;
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
            const uint32_t d = lane + 32u * (uint32_t)i;
            if (d < dim) d_qkv[(uint64_t)t * qkv_dim + head * dim + d] = dq[k][i];
        }
    }
}

extern "C" __global__ void __launch_bounds__(LMSI_ATTN_WARPS * 32)
    causal_attention_backward_dkdv(LmsiCausalAttentionParams p, float* d_qkv, const float* d_out, const float* lse,
                                   const float* delta, const float* qkv, const LmsiAttnItem* items) {
    __shared__ float lse_s[LMSI_ATTN_QUERIES];
    __shared__ float delta_s[LMSI_ATTN_QUERIES];
    const LmsiAttnShape s = p.shape;
    const LmsiAttnItem item = items[blockIdx.x];  // keys [first, first + count)
    const uint32_t dim = s.head_dim, g = blockIdx.y;
    const uint32_t group = s.num_heads / s.num_kv_heads;
    const uint32_t qkv_dim = (s.num_heads + 2 * s.num_kv_heads) * dim;
    const uint32_t warp = lmsi_warp(), lane = lmsi_lane();
    if (!item_ok(item, p.tokens, LMSI_ATTN_KEYS)) return;

    float* kt_s = lmsi_dynamic_shared<float>();   // [dim][KSTRIDE]
    float* vt_s = kt_s + dim * KSTRIDE;            // [dim][KSTRIDE]
    float* q_s = vt_s + dim * KSTRIDE;             // [LMSI_ATTN_QUERIES][dim]
    float* do_s = q_s + LMSI_ATTN_QUERIES * dim;   // [LMSI_ATTN_QUERIES][dim]
    float* p_s = do_s + LMSI_ATTN_QUERIES * dim;   // [LMSI_ATTN_QUERIES][KSTRIDE]
    float* ds_s = p_s + LMSI_ATTN_QUERIES * KSTRIDE;

    load_keys_transposed(kt_s, qkv, item.first, item.count, (s.num_heads + g) * dim, qkv_dim, dim);
    load_keys_transposed(vt_s, qkv, item.first, item.count, (s.num_heads + s.num_kv_heads + g) * dim, qkv_dim, dim);
    float dk[KPW][ITEMS], dv[KPW][ITEMS];
#pragma unroll
    for (int kk = 0; kk < KPW; ++kk) {
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) dk[kk][i] = dv[kk][i] = 0.0f;
    }

    // The queries that see a key of this item: from its first key to the last key's window.
    const uint32_t last_key = item.first + item.count - 1;
    uint32_t end = item.seq_end;
    if (s.window != 0 && last_key + s.window < end) end = last_key + s.window;
    const uint32_t total = (end - item.first) * group;
    for (uint32_t c0 = 0; c0 < total; c0 += LMSI_ATTN_QUERIES) {
        const uint32_t chunk = total - c0 < LMSI_ATTN_QUERIES ? total - c0 : LMSI_ATTN_QUERIES;
        __syncthreads();  // the previous chunk's readers are done (and the keys are stored)
        for (uint32_t i = threadIdx.x; i < chunk * dim; i += blockDim.x) {
            const uint32_t qc = i / dim, d = i - qc * dim;
            const uint32_t t = item.first + (c0 + qc) / group, head = g * group + (c0 + qc) % group;
            q_s[i] = qkv[(uint64_t)t * qkv_dim + head * dim + d];
            do_s[i] = d_out[((uint64_t)t * s.num_heads + head) * dim + d];
        }
        if (threadIdx.x < chunk) {
            const uint32_t qc = threadIdx.x;
            const uint32_t t = item.first + (c0 + qc) / group, head = g * group + (c0 + qc) % group;
            lse_s[qc] = lse[(uint64_t)t * s.num_heads + head];
            delta_s[qc] = delta[(uint64_t)t * s.num_heads + head];
        }
        __syncthreads();
        // Phase 1: lane = key, warp = query vector.
#pragma unroll
        for (int k = 0; k < QPW; ++k) {
            const uint32_t qc = warp + LMSI_ATTN_WARPS * (uint32_t)k;
            if (qc >= chunk) continue;
            const uint32_t t = item.first + (c0 + qc) / group;
            const uint32_t first = item.seq_start + first_visible(t - item.seq_start, s.window);
            const uint32_t key = item.first + lane;
            float prob = 0.0f, ds = 0.0f;
            if (lane < item.count && key >= first && key <= t) {
                const float score = tile_score(q_s + qc * dim, kt_s, KSTRIDE, dim, s.scale);
                const float dp = tile_score(do_s + qc * dim, vt_s, KSTRIDE, dim, 1.0f);
                prob = expf(score - lse_s[qc]);
                ds = prob * (dp - delta_s[qc]) * s.scale;
            }
            p_s[qc * KSTRIDE + lane] = prob;
            ds_s[qc * KSTRIDE + lane] = ds;
        }
        __syncthreads();
        // Phase 2: warp = KPW keys, lane = head dimensions.
        for (uint32_t qc = 0; qc < chunk; ++qc) {
#pragma unroll
            for (int kk = 0; kk < KPW; ++kk) {
                const uint32_t j = warp * KPW + (uint32_t)kk;
                const float prob = p_s[qc * KSTRIDE + j];
                const float ds = ds_s[qc * KSTRIDE + j];
                if (prob == 0.0f && ds == 0.0f) continue;
#pragma unroll
                for (int i = 0; i < ITEMS; ++i) {
                    const uint32_t d = lane + 32u * (uint32_t)i;
                    if (d < dim) {
                        dv[kk][i] += prob * do_s[qc * dim + d];
                        dk[kk][i] += ds * q_s[qc * dim + d];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int kk = 0; kk < KPW; ++kk) {
        const uint32_t j = warp * KPW + (uint32_t)kk;
        if (j >= item.count) continue;
        float* row = d_qkv + (uint64_t)(item.first + j) * qkv_dim;
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
            const uint32_t d = lane + 32u * (uint32_t)i;
            if (d < dim) {
                row[(s.num_heads + g) * dim + d] = dk[kk][i];
                row[(s.num_heads + s.num_kv_heads + g) * dim + d] = dv[kk][i];
            }
        }
    }
}
