//! Reproducible next-token sampling: greedy, temperature, top-k and top-p (nucleus), with
//! log-probabilities, driven by a counter-based random generator.
//!
//! Every draw is a pure function of the row's logits, the [`SamplingParams`] and a
//! [`RowKey`] `(sequence, step)`: no generator state, no dependence on batch composition,
//! thread count or sort algorithm. The algorithm below is the specification: any
//! implementation that follows it (such as a CUDA kernel) draws the same tokens.
//!
//! ```
//! use lmsi_sampler::{RowKey, SamplingParams, sample_batch, sequence_id};
//!
//! // Two paths of question "q7", both at their first generated token.
//! let vocab = 4;
//! let logits = [
//!     1.0, 3.0, 2.9, -1.0, // path 0
//!     0.5, 0.5, 4.0, f32::NEG_INFINITY, // path 1
//! ];
//! let keys = [RowKey::new(sequence_id("q7", 0), 0), RowKey::new(sequence_id("q7", 1), 0)];
//! let params = SamplingParams { temperature: 0.7, top_k: 2, top_p: 1.0, seed: 1234 };
//!
//! let tokens = sample_batch(&logits, vocab, &params, &keys)?;
//! assert!(matches!(tokens[0].token, 1 | 2)); // top-2 of path 0
//! assert!(tokens.iter().all(|t| t.logprob <= 0.0 && t.sampling_logprob <= 0.0));
//! // Same key, same token: rerunning (or running on another device) repeats the draw.
//! assert_eq!(tokens, sample_batch(&logits, vocab, &params, &keys)?);
//! # Ok::<(), lmsi_sampler::SampleError>(())
//! ```
//!
//! # The algorithm
//!
//! Input: a row of `V` logits `l_0 .. l_{V-1}` (`f32`), parameters `T` (temperature),
//! `k` (top-k), `p` (top-p), `seed`, and a key `(sequence, step)`. Arithmetic marked
//! *f32* is IEEE-754 binary32, each operation rounded to nearest-even separately (no fused
//! multiply-add); integers are exact.
//!
//! 0. **Checks.** The parameters pass [`SamplingParams::validate`]; `1 <= V <=`
//!    [`MAX_VOCAB`]; no logit is NaN ([`SampleError::NanLogit`]) or `+inf`
//!    ([`SampleError::InfiniteLogit`]); at least one is finite
//!    ([`SampleError::NoFiniteLogit`]). `-inf` logits are allowed and are never drawn.
//!    Let `m` be the largest logit.
//! 1. **Greedy** (`T == 0`): the token is the lowest index `i` with `l_i == m`;
//!    `sampling_logprob` is 0. No random bits are used.
//! 2. **Rank order.** Token `i` ranks above token `j` if `l_i > l_j`, or `l_i == l_j` and
//!    `i < j` (`-0.0` equals `+0.0`). Temperature does not change this order, so top-k and
//!    top-p rank by the raw logits. (Implementations may use the 64-bit key
//!    `ord(l_i + 0.0) << 32 | !i`, where `ord` maps float bits to an order-preserving
//!    `u32`: negative bit patterns inverted, positive ones with the sign bit set.)
//! 3. **Weights.** `inv = 1 / T` (*f32*), `d_i = (l_i - m) · inv` (*f32*; subtracting
//!    first cannot overflow into NaN), and the weight `w_i = round_half_even(E(d_i) · 2^39)`,
//!    an integer, where `E` is [`canonical_exp`]. The top token weighs exactly `2^39`
//!    ([`WEIGHT_BITS`]), `-inf` weighs 0, and the probability of a kept token is its
//!    weight over the kept total: `softmax(l / T)` to `f32` precision, except that tokens
//!    below `2^-40` of the top token's probability get weight 0. Integer weights make
//!    every sum below exact and independent of summation order. `E` is monotone, so
//!    weights never decrease along the rank order.
//! 4. **Top-k.** If `0 < k < V`, the candidates `K` are the `k` highest-ranked tokens;
//!    otherwise `K` is the whole row.
//! 5. **Top-p.** If `p < 1`: `W_K = Σ_{i∈K} w_i`, `P = ceil(p · 2^32)` (exact), and the
//!    kept set `S` is the shortest prefix of `K` in rank order whose weight `c` satisfies
//!    `c · 2^32 >= P · W_K` (128-bit integers; always at least one token). Otherwise
//!    `S = K`.
//! 6. **Draw.** `x = philox4x32_10([step, 0, sequence as u32, (sequence >> 32) as u32],
//!    [seed as u32, (seed >> 32) as u32])` ([`random_block`]), `r = x[0] · 2^32 + x[1]`
//!    ([`random_u64`]; its top 24 bits are [`uniform`]'s), `W = Σ_{i∈S} w_i`, and
//!    `target = floor(r · W / 2^64)` (128-bit). Walk `S` in **ascending token index**,
//!    adding weights; the token is the first whose running sum exceeds `target`. It
//!    always exists (`target < W`), never has weight 0, and does not depend on how `S` was
//!    found, only on which tokens it holds.
//! 7. **Log-probs.** `sampling_logprob = ln(w_token / W)` (`f64`, then rounded to `f32`).
//!    `logprob` is the log-softmax of the raw logits ([`log_softmax_at`]):
//!    `(l_token - m) - ln Σ_i E(l_i - m)`, summed in `f64`.
//!
//! Tokens are reproducible bit for bit on any implementation of steps 0 to 6. A CUDA
//! kernel needs `__fmul_rn`/`__fadd_rn` (or `-fmad=false`) so that no multiply-add is
//! fused, no `--use_fast_math`, `1.0f / T` with IEEE division, `E` exactly as written in
//! [`canonical_exp`] (`n` may come from `rintf` or the `1.5·2^23` shifter, as here), and
//! `__float2ull_rn(e · 2^39)` for the weight. Log-probs agree to `f32` rounding: they go
//! through `ln`, whose last bit varies across math libraries.
//!
//! [`canonical_exp`]'s constants, as `f32` bit patterns: `LOG2E = 0x3fb8aa3b`,
//! `LN2_HI = 0x3f318000`, `LN2_LO = 0xb95e8083`, and `P0 .. P5 = 0x39506967, 0x3ab743ce,
//! 0x3c088908, 0x3d2aa9c1, 0x3e2aaaaa, 0x3f000000`.
//!
//! # Cost
//!
//! Per row: one pass for the checks and `m`, one for the log-softmax normaliser, and for
//! top-k one selection pass (O(V + k log k), no sort of the row). Top-p without top-k
//! needs the total weight (one pass) and finds the prefix by selecting the best 128
//! tokens, then the next 1024, 8192, ... until the mass is reached. The passes are
//! compiled for AVX-512 and AVX2 as well and picked at run time (same results).
//! [`sample_batch`] runs rows in parallel with rayon and allocates only small per-thread
//! buffers.
//!
//! # GPU
//!
//! With the `cuda` feature, `cuda::sample_rows` samples rows of logits that stay on a GPU with
//! lmsi-cuda's `sample_rows` kernel, an implementation of the algorithm above: the same tokens.

#[cfg(feature = "cuda")]
pub mod cuda;
mod draw;
mod error;
mod math;
mod params;
mod rng;
mod sample;
mod select;
mod simd;

pub use error::SampleError;
pub use math::{WEIGHT_BITS, canonical_exp, log_softmax_at};
pub use params::SamplingParams;
pub use rng::{philox4x32_10, random_block, random_u64, sequence_id, uniform};
pub use sample::{MAX_VOCAB, RowKey, Sampled, sample_batch, sample_row};
