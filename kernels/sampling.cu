// Next-token sampling: temperature, top-k, top-p and the draw, fused, one block per row of logits
// (grid.x = rows; a multiple of 32 threads, 512 by default), with no sort of the vocabulary.
//
// This is lmsi_sampler's algorithm (crates/lmsi-sampler/src/lib.rs, "The algorithm") and draws the
// same token for the same logits, parameters and (seed, sequence, step), bit for bit:
//  0. Checks: the first NaN or +inf logit (lowest index) fails the row; so does a row of -inf.
//  1. Greedy (temperature 0): the lowest index holding the max.
//  2-3. Every token's rank key `ord(l + 0) << 32 | ~index` and integer weight
//     round_half_even(E((l - max) * (1/T)) * 2^39), with E the canonical exp written with
//     separately rounded operations (__fmul_rn/__fadd_rn) and IEEE 1/T.
//  4. Top-k: the k-th largest rank key, found by radix selection: eight passes over the row, each
//     fixing 8 more bits of the key with a 256-bin histogram in shared memory (integer atomics,
//     exact). The kept set K is every key at or above it.
//  5. Top-p: the same radix search with bins holding weights instead of counts finds the largest
//     key tau with weight(keys >= tau within K) * 2^32 >= ceil(p * 2^32) * weight(K) (compared in
//     128 bits): the kept set S is the shortest rank prefix holding enough mass.
//  6. The draw: r = Philox4x32-10 word0 << 32 | word1, W = weight(S), target = floor(r * W / 2^64).
//     The row is cut into one contiguous range per thread; an exclusive block scan of the ranges'
//     kept weights finds the range holding the target, whose thread walks it in ascending index.
//  7. logprob = (l_token - max) - ln(sum E(l - max)) with the sum in f64; sampling_logprob =
//     ln(w_token / W) in f64. These can differ from the CPU in the last bit (f64 summation order,
//     the device's log); the token cannot.
// Integer weights make every sum exact, so no step depends on the order of additions.
#include "lmsi_common.cuh"

#define LMSI_NONE 0xffffffffu

__device__ __forceinline__ float canonical_exp(float x) {
    // E(x) for x in [-inf, 0], step by step as lmsi_sampler::canonical_exp.
    const float exp_min = -86.0f;
    const float shifter = 12582912.0f;  // 1.5 * 2^23
    const float xc = x > exp_min ? x : exp_min;
    const float shifted = __fadd_rn(__fmul_rn(xc, __uint_as_float(0x3fb8aa3bu)), shifter);
    const float nf = __fsub_rn(shifted, shifter);
    const uint32_t n = __float_as_uint(shifted) - __float_as_uint(shifter);
    const float r = __fsub_rn(__fsub_rn(xc, __fmul_rn(nf, __uint_as_float(0x3f318000u))),
                              __fmul_rn(nf, __uint_as_float(0xb95e8083u)));
    const float z = __fmul_rn(r, r);
    float poly = __uint_as_float(0x39506967u);
    poly = __fadd_rn(__fmul_rn(poly, r), __uint_as_float(0x3ab743ceu));
    poly = __fadd_rn(__fmul_rn(poly, r), __uint_as_float(0x3c088908u));
    poly = __fadd_rn(__fmul_rn(poly, r), __uint_as_float(0x3d2aa9c1u));
    poly = __fadd_rn(__fmul_rn(poly, r), __uint_as_float(0x3e2aaaaau));
    poly = __fadd_rn(__fmul_rn(poly, r), __uint_as_float(0x3f000000u));
    const float y = __fadd_rn(__fadd_rn(__fmul_rn(poly, z), r), 1.0f);
    const float e = __fmul_rn(y, __uint_as_float((n + 127u) << 23));
    return x >= exp_min ? e : 0.0f;
}

// The row's tokens as rank keys and weights.
struct Row {
    const float* logits;
    uint32_t vocab;
    float max;
    float inv_t;

    __device__ __forceinline__ uint64_t key(uint32_t i) const {
        const uint32_t bits = __float_as_uint(__fadd_rn(logits[i], 0.0f));  // -0 ranks as +0
        const uint32_t ordered = bits ^ ((uint32_t)((int32_t)bits >> 31) | 0x80000000u);
        return ((uint64_t)ordered << 32) | (uint64_t)(~i);
    }

    __device__ __forceinline__ uint64_t weight(uint32_t i) const {
        const float e = canonical_exp(__fmul_rn(__fsub_rn(logits[i], max), inv_t));
        return __double2ull_rn((double)e * 549755813888.0);  // * 2^39, exact; ties to even
    }
};

// a * 2^shift >= (need_hi, need_lo) as 128-bit integers, for shift 0 or 32.
__device__ __forceinline__ bool reaches(uint64_t a, uint32_t shift, uint64_t need_hi, uint64_t need_lo) {
    const uint64_t hi = shift == 0 ? 0 : a >> (64 - shift);
    const uint64_t lo = a << shift;
    return hi > need_hi || (hi == need_hi && lo >= need_lo);
}

// The largest rank key tau >= lower such that the mass (count, or weight with by_weight) of the
// keys in [tau, inf) that are >= lower satisfies mass * 2^shift >= need. Eight radix passes of 8
// bits, highest first; bins hold the mass of the keys that share the bits fixed so far.
__device__ uint64_t select_threshold(const Row& row, uint64_t lower, bool by_weight, uint32_t shift, uint64_t need_hi,
                                     uint64_t need_lo) {
    __shared__ unsigned long long hist[256];
    __shared__ uint64_t chosen_prefix;
    __shared__ uint64_t chosen_above;
    uint64_t prefix = 0;
    uint64_t above = 0;  // mass of the keys above every bin of this pass
    for (int bit = 56; bit >= 0; bit -= 8) {
        __syncthreads();  // the previous pass's readers of hist are done
        for (uint32_t b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        for (uint32_t i = threadIdx.x; i < row.vocab; i += blockDim.x) {
            const uint64_t key = row.key(i);
            if (key < lower || ((key ^ prefix) >> bit) >> 8 != 0) continue;
            atomicAdd(&hist[(key >> bit) & 255u], (unsigned long long)(by_weight ? row.weight(i) : 1));
        }
        __syncthreads();
        if (lmsi_warp() == 0) {
            // Lane L owns bins 8L .. 8L+7; suffix sums over lanes find the lane holding the answer,
            // then that lane walks its bins from the top.
            const uint32_t lane = lmsi_lane();
            uint64_t own = 0;
            for (uint32_t b = 0; b < 8; ++b) own += hist[lane * 8 + b];
            uint64_t suffix = own;
            for (uint32_t offset = 1; offset < 32; offset <<= 1) {
                const uint64_t next = __shfl_down_sync(LMSI_FULL_MASK, suffix, offset);
                if (lane + offset < 32) suffix += next;
            }
            uint64_t beyond = __shfl_down_sync(LMSI_FULL_MASK, suffix, 1);
            if (lane == 31) beyond = 0;
            const unsigned ok = __ballot_sync(LMSI_FULL_MASK, reaches(above + suffix, shift, need_hi, need_lo));
            const uint32_t best = 31u - (uint32_t)__clz(ok);
            if (lane == best) {
                uint64_t acc = above + beyond;
                for (int b = 7; b >= 0; --b) {
                    const uint64_t bin = hist[lane * 8 + (uint32_t)b];
                    if (reaches(acc + bin, shift, need_hi, need_lo)) {
                        chosen_prefix = prefix | ((uint64_t)(lane * 8 + (uint32_t)b) << bit);
                        chosen_above = acc;
                        break;
                    }
                    acc += bin;
                }
            }
        }
        __syncthreads();
        prefix = chosen_prefix;
        above = chosen_above;
    }
    return prefix;
}

// Exclusive prefix sum over the block (every thread passes its value; returns the sum of the
// values of lower threads, and the total in *total).
__device__ uint64_t block_exclusive_scan(uint64_t v, uint64_t* total) {
    __shared__ uint64_t warp_sums[32];
    __shared__ uint64_t block_total;
    const uint32_t lane = lmsi_lane();
    const uint32_t warp = lmsi_warp();
    const uint32_t warps = blockDim.x >> 5;
    uint64_t inclusive = v;
    for (uint32_t offset = 1; offset < 32; offset <<= 1) {
        const uint64_t prev = __shfl_up_sync(LMSI_FULL_MASK, inclusive, offset);
        if (lane >= offset) inclusive += prev;
    }
    __syncthreads();
    if (lane == 31) warp_sums[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        const uint64_t own = lane < warps ? warp_sums[lane] : 0;
        uint64_t scan = own;
        for (uint32_t offset = 1; offset < 32; offset <<= 1) {
            const uint64_t prev = __shfl_up_sync(LMSI_FULL_MASK, scan, offset);
            if (lane >= offset) scan += prev;
        }
        if (lane < warps) warp_sums[lane] = scan - own;  // exclusive over warps
        if (lane == 31) block_total = scan;
    }
    __syncthreads();
    *total = block_total;
    return warp_sums[warp] + inclusive - v;
}

// Philox4x32-10 (Random123), the 64 random bits of (seed, sequence, step).
__device__ uint64_t random_u64(uint64_t seed, uint64_t sequence, uint32_t step) {
    uint32_t x0 = step, x1 = 0, x2 = (uint32_t)sequence, x3 = (uint32_t)(sequence >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const uint64_t p0 = (uint64_t)0xD2511F53u * x0;
        const uint64_t p1 = (uint64_t)0xCD9E8D57u * x2;
        const uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0;
        const uint32_t y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        x1 = (uint32_t)p1;
        x3 = (uint32_t)p0;
        x0 = y0;
        x2 = y2;
    }
    return ((uint64_t)x0 << 32) | x1;
}

extern "C" __global__ void sample_rows(LmsiSampleParams p, uint32_t* tokens, float* logprobs,
                                       float* sampling_logprobs, int32_t* status, const float* logits,
                                       const uint64_t* sequences, const uint32_t* steps) {
    __shared__ uint32_t drawn;
    __shared__ uint64_t drawn_weight;
    const uint32_t r = blockIdx.x;
    const float* l = logits + (uint64_t)r * p.vocab;

    // 0. Checks and the max.
    uint32_t bad = LMSI_NONE;
    float max = -lmsi_inf();
    for (uint32_t i = threadIdx.x; i < p.vocab; i += blockDim.x) {
        const float x = l[i];
        if (x != x || x == lmsi_inf()) {
            bad = i < bad ? i : bad;
        } else if (x > max) {
            max = x;
        }
    }
    bad = lmsi_block_reduce(bad, LmsiMin(), LMSI_NONE);
    max = lmsi_block_reduce(max, LmsiMax(), -lmsi_inf());
    if (bad != LMSI_NONE || max == -lmsi_inf()) {
        if (threadIdx.x == 0) {
            status[r] = bad == LMSI_NONE ? LMSI_SAMPLE_NO_FINITE : (l[bad] != l[bad] ? LMSI_SAMPLE_NAN : LMSI_SAMPLE_INF);
            tokens[r] = bad;
            logprobs[r] = __int_as_float(0x7fc00000);
            sampling_logprobs[r] = __int_as_float(0x7fc00000);
        }
        return;
    }

    // 7a. The log-softmax normaliser.
    double norm = 0.0;
    for (uint32_t i = threadIdx.x; i < p.vocab; i += blockDim.x) norm += (double)canonical_exp(__fsub_rn(l[i], max));
    norm = lmsi_block_sum(norm);

    uint32_t token;
    float sampling_logprob;
    if (p.temperature == 0.0f) {
        // 1. Greedy.
        uint32_t first = LMSI_NONE;
        for (uint32_t i = threadIdx.x; i < p.vocab && first == LMSI_NONE; i += blockDim.x) {
            if (l[i] == max) first = i;
        }
        token = lmsi_block_reduce(first, LmsiMin(), LMSI_NONE);
        sampling_logprob = 0.0f;
    } else {
        const Row row{l, p.vocab, max, __fdiv_rn(1.0f, p.temperature)};
        // 4. Top-k: keys at or above the k-th largest.
        uint64_t threshold = 0;
        if (p.top_k > 0 && p.top_k < p.vocab) threshold = select_threshold(row, 0, false, 0, 0, p.top_k);
        // 5. Top-p: the shortest rank prefix of K with enough of K's weight.
        if (p.top_p < 1.0f) {
            uint64_t kept = 0;
            for (uint32_t i = threadIdx.x; i < p.vocab; i += blockDim.x) {
                if (row.key(i) >= threshold) kept += row.weight(i);
            }
            kept = lmsi_block_sum(kept);
            const uint64_t need = (uint64_t)ceil((double)p.top_p * 4294967296.0);
            threshold = select_threshold(row, threshold, true, 32, __umul64hi(need, kept), need * kept);
        }
        // 6. The draw, walking the kept set in ascending index.
        const uint32_t span = (p.vocab + blockDim.x - 1) / blockDim.x;
        const uint32_t begin = threadIdx.x * span < p.vocab ? threadIdx.x * span : p.vocab;
        const uint32_t end = begin + span < p.vocab ? begin + span : p.vocab;
        uint64_t own = 0;
        for (uint32_t i = begin; i < end; ++i) {
            if (row.key(i) >= threshold) own += row.weight(i);
        }
        uint64_t total;
        const uint64_t before = block_exclusive_scan(own, &total);
        const uint64_t target = __umul64hi(random_u64(p.seed, sequences[r], steps[r]), total);
        if (before <= target && target < before + own) {
            uint64_t cum = before;
            for (uint32_t i = begin; i < end; ++i) {
                if (row.key(i) < threshold) continue;
                const uint64_t w = row.weight(i);
                cum += w;
                if (cum > target) {
                    drawn = i;
                    drawn_weight = w;
                    break;
                }
            }
        }
        __syncthreads();
        token = drawn;
        sampling_logprob = (float)log((double)drawn_weight / (double)total);
    }
    if (threadIdx.x == 0) {
        tokens[r] = token;
        logprobs[r] = (float)((double)__fsub_rn(l[token], max) - log(norm));
        sampling_logprobs[r] = sampling_logprob;
        status[r] = LMSI_SAMPLE_OK;
    }
}
