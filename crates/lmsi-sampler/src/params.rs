//! Sampling parameters.

use serde::{Deserialize, Serialize};

use crate::SampleError;

/// The smallest positive temperature, 2^-126.
const MIN_TEMPERATURE: f32 = f32::MIN_POSITIVE;
/// The largest temperature, 2^126.
const MAX_TEMPERATURE: f32 = 1.0 / f32::MIN_POSITIVE;

/// How to pick the next token from a row of logits.
///
/// Missing fields deserialize to their [`Default`] values, so `{"temperature": 1.2}` is a
/// complete configuration.
///
/// ```
/// use lmsi_sampler::SamplingParams;
///
/// let params = SamplingParams { temperature: 1.2, ..SamplingParams::default() };
/// assert_eq!(params.top_k, 40);
/// assert!(params.validate().is_ok());
/// assert!(SamplingParams::greedy().is_greedy());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy (argmax). Otherwise in `[2^-126, 2^126]`.
    pub temperature: f32,
    /// Keep only the `top_k` highest logits; `0` (or anything `>= vocab`) means no limit.
    pub top_k: usize,
    /// Nucleus: keep the smallest set of most likely tokens holding at least this much
    /// probability, in `(0, 1]`; `1` means no limit.
    pub top_p: f32,
    /// Seed of the random stream (see [`uniform`](crate::uniform)).
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Temperature 0.7, top-k 40, no nucleus limit, seed 0.
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 40,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Whether these parameters pick the argmax (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks that the parameters are in range.
    ///
    /// The temperature must be `0` or in `[2^-126, 2^126]` (so that `1 / temperature` is a
    /// normal float, the same on every device), and `top_p` must be in `(0, 1]`.
    pub fn validate(&self) -> Result<(), SampleError> {
        let t = self.temperature;
        if !(t == 0.0 || (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t)) {
            return Err(SampleError::InvalidParams(format!(
                "temperature must be 0 or in [{MIN_TEMPERATURE:e}, {MAX_TEMPERATURE:e}], got {t}"
            )));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(SampleError::InvalidParams(format!(
                "top_p must be in (0, 1], got {p}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_paper_setup() {
        let d = SamplingParams::default();
        assert_eq!((d.temperature, d.top_k, d.top_p, d.seed), (0.7, 40, 1.0, 0));
        assert!(!d.is_greedy());
        assert!(d.validate().is_ok());
    }

    #[test]
    fn greedy_is_valid_and_greedy() {
        let g = SamplingParams::greedy();
        assert!(g.is_greedy());
        assert!(g.validate().is_ok());
        assert!(
            SamplingParams {
                temperature: -0.0,
                ..g
            }
            .is_greedy()
        );
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        let base = SamplingParams::default();
        for temperature in [-0.1, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE / 2.0, 1e38] {
            let p = SamplingParams {
                temperature,
                ..base
            };
            assert!(
                matches!(p.validate(), Err(SampleError::InvalidParams(_))),
                "{temperature}"
            );
        }
        for top_p in [0.0, -0.5, 1.0001, f32::NAN] {
            let p = SamplingParams { top_p, ..base };
            assert!(
                matches!(p.validate(), Err(SampleError::InvalidParams(_))),
                "{top_p}"
            );
        }
        for temperature in [MIN_TEMPERATURE, MAX_TEMPERATURE] {
            let edge = SamplingParams {
                temperature,
                top_p: 1e-30,
                ..base
            };
            assert!(edge.validate().is_ok());
            assert!((1.0 / temperature).is_normal());
        }
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let p = SamplingParams {
            temperature: 1.2,
            top_k: 0,
            top_p: 0.9,
            seed: u64::MAX,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<SamplingParams>(&json).unwrap(), p);
        let partial: SamplingParams = serde_json::from_str(r#"{"temperature": 1.2}"#).unwrap();
        assert_eq!(
            partial,
            SamplingParams {
                temperature: 1.2,
                ..SamplingParams::default()
            }
        );
    }
}
