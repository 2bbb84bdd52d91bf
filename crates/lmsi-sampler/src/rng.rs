//! The counter-based random stream: Philox4x32-10 keyed by `(seed, sequence, step)`.
//!
//! A counter-based generator has no state: the random bits for a draw are a pure function
//! of who draws them, so the same path gets the same bits on any device, in any batch.

/// Philox multipliers and Weyl key increments (Salmon et al., SC'11; Random123).
const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// The Philox4x32 block function with 10 rounds, bit-identical to Random123's
/// `philox4x32_R(10, counter, key)`.
///
/// ```
/// use lmsi_sampler::philox4x32_10;
///
/// // The first Random123 known-answer vector.
/// assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
/// ```
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut x = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        }
        let p0 = u64::from(PHILOX_M0) * u64::from(x[0]);
        let p1 = u64::from(PHILOX_M1) * u64::from(x[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        x = [hi1 ^ x[1] ^ k[0], lo1, hi0 ^ x[3] ^ k[1], lo0];
    }
    x
}

/// The Philox block for one draw: counter `[step, 0, sequence lo, sequence hi]`,
/// key `[seed lo, seed hi]`.
pub fn random_block(seed: u64, sequence: u64, step: u32) -> [u32; 4] {
    let counter = [step, 0, sequence as u32, (sequence >> 32) as u32];
    philox4x32_10(counter, [seed as u32, (seed >> 32) as u32])
}

/// A uniform float in `[0, 1)` for `(seed, sequence, step)`: the top 24 bits of word 0 of
/// [`random_block`], times 2^-24 (exact in `f32`).
///
/// ```
/// use lmsi_sampler::uniform;
///
/// let u = uniform(7, 42, 0);
/// assert!((0.0..1.0).contains(&u));
/// assert_eq!(u, uniform(7, 42, 0));
/// assert_ne!(u, uniform(7, 42, 1));
/// ```
pub fn uniform(seed: u64, sequence: u64, step: u32) -> f32 {
    (random_block(seed, sequence, step)[0] >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// 64 random bits for `(seed, sequence, step)`: `word0 · 2^32 + word1` of [`random_block`].
///
/// The sampler draws with these; their top 24 bits are exactly those behind [`uniform`], so
/// `random_u64(..) as f64 / 2^64` is `uniform(..)` refined by 40 more bits.
pub fn random_u64(seed: u64, sequence: u64, step: u32) -> u64 {
    let x = random_block(seed, sequence, step);
    (u64::from(x[0]) << 32) | u64::from(x[1])
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable 64-bit id for path `path` of question `question_id`.
///
/// FNV-1a (64-bit) over the bytes of `question_id`, then one `0xFF` byte (it never occurs
/// in UTF-8, so `("a", ..)` and `("a\u{0}", ..)` cannot collide by concatenation), then
/// `path` as 4 little-endian bytes.
///
/// ```
/// use lmsi_sampler::sequence_id;
///
/// assert_eq!(sequence_id("q1", 3), sequence_id("q1", 3));
/// assert_ne!(sequence_id("q1", 3), sequence_id("q1", 4));
/// ```
pub fn sequence_id(question_id: &str, path: u32) -> u64 {
    question_id
        .as_bytes()
        .iter()
        .chain(&[0xFF])
        .chain(&path.to_le_bytes())
        .fold(FNV_OFFSET, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123 `kat_vectors`, the `philox4x32 10` lines: counter, key, expected output.
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    #[test]
    fn philox_matches_random123_known_answers() {
        for (counter, key, expected) in KAT {
            assert_eq!(
                philox4x32_10(counter, key),
                expected,
                "counter {counter:08x?}"
            );
        }
    }

    #[test]
    fn block_layout_puts_step_sequence_and_seed_where_documented() {
        let (seed, sequence, step) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 77);
        assert_eq!(
            random_block(seed, sequence, step),
            philox4x32_10(
                [77, 0, 0x7654_3210, 0xfedc_ba98],
                [0x89ab_cdef, 0x0123_4567]
            )
        );
    }

    #[test]
    fn uniform_and_random_u64_share_their_top_bits() {
        for step in 0..1000 {
            let u = uniform(3, 9, step);
            let r = random_u64(3, 9, step);
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, (r >> 40) as f32 / 16_777_216.0);
        }
    }

    #[test]
    fn uniform_mean_is_one_half() {
        let n = 100_000;
        let mean = (0..n).map(|s| f64::from(uniform(1, 2, s))).sum::<f64>() / f64::from(n);
        // Standard error is sqrt(1/12 / n) ~ 0.0009; 6 sigma.
        assert!((mean - 0.5).abs() < 0.0055, "{mean}");
    }

    #[test]
    fn sequence_id_is_fnv1a_over_id_separator_and_path() {
        // FNV-1a of the empty input is the offset basis; check the byte layout by hand.
        let expected = [0xFF, 1, 0, 0, 0]
            .iter()
            .fold(FNV_OFFSET, |h, &b| (h ^ b as u64).wrapping_mul(FNV_PRIME));
        assert_eq!(sequence_id("", 1), expected);
        // Published FNV-1a 64 test value: "a" -> af63dc4c8601ec8c.
        let a = (FNV_OFFSET ^ u64::from(b'a')).wrapping_mul(FNV_PRIME);
        assert_eq!(a, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(sequence_id("a", 0), sequence_id("b", 0));
        assert_ne!(sequence_id("a", 0), sequence_id("a", 1 << 24));
    }
}
