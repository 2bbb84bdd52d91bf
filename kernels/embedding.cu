// Row gathers and scatters: the embedding lookup and its backward, and the gather of the rows whose
// logits are wanted and its backward (the same two operations on other tables).
//
// gather_rows       out[i, :] = table[index[i], :]. One block per output row (grid.x = rows); the
//                   threads stride over the row's columns. A row whose index is outside the table
//                   is filled with NaN: the host checks indices first, and this keeps a bad one from
//                   reading out of bounds. gather_rows_bf16 reads a bf16 table (the embedding of a
//                   model stored in bf16) into f32 rows, exactly.
// scatter_add_rows  table[index[i], :] += src[i, :] for i = 0, 1, ... in order. Deterministic
//                   without atomics: a thread owns one column and walks the rows in order, so the
//                   additions to one element happen in row order, exactly as on the CPU. grid.x
//                   covers the columns (one thread each); grid.y splits the table rows: block y
//                   takes the rows i with index[i] % gridDim.y == y. Indices outside the table are
//                   skipped.
#include "lmsi_common.cuh"

template <class T>
__device__ __forceinline__ void gather_rows_of(const LmsiRowsParams& p, float* out, const T* table, const uint32_t* index) {
    const uint32_t row = blockIdx.x;
    const uint32_t src = index[row];
    float* o = out + (uint64_t)row * p.dim;
    if (src >= p.table_rows) {
        for (uint32_t c = threadIdx.x; c < p.dim; c += blockDim.x) o[c] = __int_as_float(0x7fc00000);
        return;
    }
    const T* t = table + (uint64_t)src * p.dim;
    for (uint32_t c = threadIdx.x; c < p.dim; c += blockDim.x) o[c] = lmsi_float(t[c]);
}

extern "C" __global__ void gather_rows(LmsiRowsParams p, float* out, const float* table, const uint32_t* index) {
    gather_rows_of(p, out, table, index);
}

extern "C" __global__ void gather_rows_bf16(LmsiRowsParams p, float* out, const LmsiBf16* table,
                                            const uint32_t* index) {
    gather_rows_of(p, out, table, index);
}

extern "C" __global__ void scatter_add_rows(LmsiRowsParams p, float* table, const float* src, const uint32_t* index) {
    const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.dim) return;
    for (uint32_t i = 0; i < p.rows; ++i) {
        const uint32_t dst = index[i];
        if (dst >= p.table_rows || dst % gridDim.y != blockIdx.y) continue;
        table[(uint64_t)dst * p.dim + c] += src[(uint64_t)i * p.dim + c];
    }
}
