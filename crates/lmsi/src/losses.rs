//! The objectives' losses over a batch, as the trainer steps them: each kind of training item
//! (a weighted sequence, a preference pair) says how its batch is normalised and how a micro-batch's
//! loss and gradient are computed from the model's per-token losses and weighted backward pass
//! ([`Model::weighted_loss_and_grads`]).
//!
//! - [`WeightedSequence`]: `Σ_s w_s Σ_t CE(s, t) / T`, `T` the predicted tokens of the batch. With
//!   every `w_s = 1` this is the mean likelihood of `sft`, with the same arithmetic bit for bit;
//!   `weighted` sets `w_s` to the vote share of the sequence's answer.
//! - [`TokenPair`]: DPO (Rafailov et al. 2023) weighted per pair, with the length-normalised
//!   likelihood of the chosen completion added (IRPO, Pang et al. 2024, which ScPO, Prasad et al.
//!   2024, builds on): `Σ_p [m_p · softplus(-z_p) - α · log π(c_p) / |c_p|] / P` with
//!   `z_p = β·((log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r)))`, `m_p` the vote margin, `α`
//!   the likelihood term's weight and `P` the pairs of the batch. Without the likelihood term a
//!   small model lowers both completions' probabilities and forgets how to answer. The gradient is
//!   the weighted likelihood gradient with weight `m_p β σ(-z_p) / P + α / (|c_p| P)` on the chosen
//!   completion's tokens and `-m_p β σ(-z_p) / P` on the rejected one's, so one forward pass for
//!   the current log-probabilities and one weighted forward and backward pass give it exactly.

use lmsi_transformer::{Backend, Model, Params, TrainSequence};

use crate::Error;

/// A unit of an objective's training data: what batches are made of.
pub trait TrainItem: Clone + Send + Sync {
    /// The sequences it runs through the model.
    fn sequences(&self) -> Vec<&TrainSequence>;

    /// What a batch's summed loss is divided by: predicted tokens, or pairs.
    fn normaliser(batch: &[&Self]) -> f64;

    /// The summed loss of `micro` (part of a batch whose normaliser is `norm`), adding the gradient
    /// of `loss / norm` to `grads`.
    fn loss_and_grads<B: Backend>(
        model: &Model<B>,
        micro: &[&Self],
        grads: &mut Params<B::Buf>,
        norm: f64,
        recompute: bool,
    ) -> Result<f64, lmsi_transformer::Error>;

    /// The summed loss of `items`, without gradients.
    fn loss<B: Backend>(model: &Model<B>, items: &[&Self]) -> Result<f64, lmsi_transformer::Error>;

    /// Tokens it runs through the model.
    fn tokens(&self) -> usize {
        self.sequences().iter().map(|s| s.tokens.len() - 1).sum()
    }
}

/// A training sequence and the weight of its loss (1: the plain likelihood).
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedSequence {
    pub seq: TrainSequence,
    pub weight: f32,
}

impl TrainItem for WeightedSequence {
    fn sequences(&self) -> Vec<&TrainSequence> {
        vec![&self.seq]
    }

    fn normaliser(batch: &[&Self]) -> f64 {
        batch.iter().map(|s| s.seq.target_count()).sum::<usize>() as f64
    }

    fn loss_and_grads<B: Backend>(
        model: &Model<B>,
        micro: &[&Self],
        grads: &mut Params<B::Buf>,
        norm: f64,
        recompute: bool,
    ) -> Result<f64, lmsi_transformer::Error> {
        let seqs: Vec<TrainSequence> = micro.iter().map(|s| s.seq.clone()).collect();
        let scale = 1.0 / norm as f32;
        let weights = per_token(micro.iter().map(|s| (&s.seq, s.weight * scale)));
        let losses = model.weighted_loss_and_grads(&seqs, grads, &weights, recompute)?;
        Ok(weighted_sum(
            &losses,
            micro.iter().map(|s| (&s.seq, s.weight)),
        ))
    }

    fn loss<B: Backend>(model: &Model<B>, items: &[&Self]) -> Result<f64, lmsi_transformer::Error> {
        let seqs: Vec<TrainSequence> = items.iter().map(|s| s.seq.clone()).collect();
        let losses = model.token_losses(&seqs)?;
        Ok(weighted_sum(
            &losses,
            items.iter().map(|s| (&s.seq, s.weight)),
        ))
    }
}

/// A preference pair as tokens: the prompt with the chosen completion and with the rejected one,
/// the pair's weight, DPO's β, and the reference model's log-probabilities of the two completions.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenPair {
    pub chosen: TrainSequence,
    pub rejected: TrainSequence,
    pub weight: f64,
    pub beta: f64,
    /// `α`, the weight of the chosen completion's length-normalised likelihood.
    pub nll: f64,
    /// `(log π_ref(chosen), log π_ref(rejected))`.
    pub reference: (f64, f64),
}

impl TokenPair {
    /// `z = β·((log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r)))` given the current
    /// log-probabilities.
    fn margin(&self, chosen: f64, rejected: f64) -> f64 {
        self.beta * ((chosen - self.reference.0) - (rejected - self.reference.1))
    }

    /// The pair's loss given the current log-probabilities of its completions.
    fn pair_loss(&self, chosen: f64, rejected: f64) -> f64 {
        let tokens = self.chosen.target_count() as f64;
        self.weight * softplus(-self.margin(chosen, rejected)) - self.nll * chosen / tokens
    }
}

impl TrainItem for TokenPair {
    fn sequences(&self) -> Vec<&TrainSequence> {
        vec![&self.chosen, &self.rejected]
    }

    fn normaliser(batch: &[&Self]) -> f64 {
        batch.len() as f64
    }

    fn loss_and_grads<B: Backend>(
        model: &Model<B>,
        micro: &[&Self],
        grads: &mut Params<B::Buf>,
        norm: f64,
        recompute: bool,
    ) -> Result<f64, lmsi_transformer::Error> {
        let seqs = pair_sequences(micro);
        let logprobs = sequence_logprobs(&seqs, &model.token_losses(&seqs)?);
        let mut loss = 0.0;
        let mut scales = Vec::with_capacity(seqs.len());
        for (pair, lp) in micro.iter().zip(logprobs.chunks(2)) {
            loss += pair.pair_loss(lp[0], lp[1]);
            let g = pair.weight * pair.beta * sigmoid(-pair.margin(lp[0], lp[1])) / norm;
            let likelihood = pair.nll / (pair.chosen.target_count() as f64 * norm);
            scales.extend([
                (&pair.chosen, (g + likelihood) as f32),
                (&pair.rejected, -g as f32),
            ]);
        }
        let weights = per_token(scales);
        model.weighted_loss_and_grads(&seqs, grads, &weights, recompute)?;
        Ok(loss)
    }

    fn loss<B: Backend>(model: &Model<B>, items: &[&Self]) -> Result<f64, lmsi_transformer::Error> {
        let seqs = pair_sequences(items);
        let logprobs = sequence_logprobs(&seqs, &model.token_losses(&seqs)?);
        Ok(items
            .iter()
            .zip(logprobs.chunks(2))
            .map(|(pair, lp)| pair.pair_loss(lp[0], lp[1]))
            .sum())
    }
}

/// The reference log-probabilities `(chosen, rejected)` of every pair under `model`, `micro`
/// pairs at a time: DPO's reference, computed once, by the same engine, before training.
pub fn reference_logprobs<B: Backend>(
    model: &Model<B>,
    pairs: &[(TrainSequence, TrainSequence)],
    micro: usize,
) -> Result<Vec<(f64, f64)>, lmsi_transformer::Error> {
    let seqs: Vec<TrainSequence> = pairs
        .iter()
        .flat_map(|(c, r)| [c.clone(), r.clone()])
        .collect();
    let logprobs = sequence_logprobs(&seqs, &token_losses(model, &seqs, 2 * micro.max(1))?);
    Ok(logprobs.chunks(2).map(|p| (p[0], p[1])).collect())
}

/// Each predicted token's loss under `model`, `micro` sequences per forward pass.
pub(crate) fn token_losses<B: Backend>(
    model: &Model<B>,
    seqs: &[TrainSequence],
    micro: usize,
) -> Result<Vec<f32>, lmsi_transformer::Error> {
    let mut out = Vec::new();
    for chunk in seqs.chunks(micro) {
        out.extend(model.token_losses(chunk)?);
    }
    Ok(out)
}

fn pair_sequences(pairs: &[&TokenPair]) -> Vec<TrainSequence> {
    pairs
        .iter()
        .flat_map(|p| [p.chosen.clone(), p.rejected.clone()])
        .collect()
}

/// Each sequence's log-probability of its predicted tokens, from the batch's per-token losses.
fn sequence_logprobs(seqs: &[TrainSequence], token_losses: &[f32]) -> Vec<f64> {
    let mut rest = token_losses;
    seqs.iter()
        .map(|s| {
            let (mine, tail) = rest.split_at(s.target_count());
            rest = tail;
            -mine.iter().map(|&l| f64::from(l)).sum::<f64>()
        })
        .collect()
}

/// One weight per predicted token: each sequence's weight repeated over its predicted tokens.
pub(crate) fn per_token<'a, T: Copy>(
    seqs: impl IntoIterator<Item = (&'a TrainSequence, T)>,
) -> Vec<T> {
    seqs.into_iter()
        .flat_map(|(s, w)| std::iter::repeat_n(w, s.target_count()))
        .collect()
}

/// `Σ w_s · loss(s, t)` over the sequences' predicted tokens.
fn weighted_sum<'a>(
    token_losses: &[f32],
    seqs: impl IntoIterator<Item = (&'a TrainSequence, f32)>,
) -> f64 {
    let weights = per_token(seqs);
    token_losses
        .iter()
        .zip(weights)
        .map(|(&l, w)| f64::from(l) * f64::from(w))
        .sum()
}

/// `ln(1 + e^x)`, without overflow.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Refuses data with a weight that is not a finite number, naming the first such example (1-based).
pub fn check_weights(weights: impl IntoIterator<Item = f64>) -> Result<(), Error> {
    match weights
        .into_iter()
        .enumerate()
        .find(|(_, w)| !w.is_finite())
    {
        Some((i, w)) => Err(Error::Input(format!(
            "training example {}: weight {w} is not a finite number",
            i + 1
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use lmsi_transformer::testing::{GradientCheck, TinyModel, assert_gradient};
    use lmsi_transformer::{Config, CpuBackend};

    use super::*;

    fn model(host: &Params<Vec<f32>>, spec: &TinyModel) -> Model<CpuBackend> {
        let config = Config::from_json(&spec.config_json().to_string()).unwrap();
        Model::from_host(config, host, CpuBackend).unwrap()
    }

    fn pairs() -> Vec<TokenPair> {
        let seq = |tail: &[u32]| {
            let mut tokens = vec![256, 81, 58, 32];
            tokens.extend_from_slice(tail);
            TrainSequence::completion(tokens, 4)
        };
        vec![
            TokenPair {
                chosen: seq(&[65, 66, 10]),
                rejected: seq(&[67, 10]),
                weight: 0.75,
                beta: 0.5,
                nll: 0.0,
                reference: (-9.0, -6.5),
            },
            TokenPair {
                chosen: seq(&[70, 71]),
                rejected: seq(&[72, 73, 74, 10]),
                weight: 0.25,
                beta: 0.5,
                nll: 0.7,
                reference: (-7.0, -12.0),
            },
        ]
    }

    #[test]
    fn pair_loss_gradient_matches_finite_differences() {
        let spec = TinyModel {
            hidden_size: 16,
            intermediate_size: 24,
            seed: 11,
            ..TinyModel::default()
        };
        let host = spec.params();
        let pairs = pairs();
        let batch: Vec<&TokenPair> = pairs.iter().collect();
        let m = model(&host, &spec);
        let mut grads = m.zero_grads().unwrap();
        let loss = TokenPair::loss_and_grads(&m, &batch, &mut grads, 2.0, false).unwrap();
        assert!((loss - TokenPair::loss(&m, &batch).unwrap()).abs() < 1e-9);
        let mean_loss =
            |p: &Params<Vec<f32>>| TokenPair::loss(&model(p, &spec), &batch).unwrap() / 2.0;
        let check = GradientCheck {
            eps: 2e-3,
            picks: 4,
            offset: 17,
            abs: 1e-3,
            rel: 2e-2,
        };
        assert_gradient("pair loss", m.layout(), &host, &grads, mean_loss, check);
    }

    #[test]
    fn weight_one_sequences_are_the_mean_likelihood_bit_for_bit() {
        let spec = TinyModel::default();
        let m = model(&spec.params(), &spec);
        let seqs = [
            TrainSequence::completion(vec![256, 72, 105, 32, 116], 2),
            TrainSequence::completion(vec![256, 50, 43, 50, 61, 52], 4),
        ];
        let items: Vec<WeightedSequence> = seqs
            .iter()
            .map(|s| WeightedSequence {
                seq: s.clone(),
                weight: 1.0,
            })
            .collect();
        let batch: Vec<&WeightedSequence> = items.iter().collect();
        let norm = WeightedSequence::normaliser(&batch);
        assert_eq!(norm, 5.0);
        let mut by_items = m.zero_grads().unwrap();
        WeightedSequence::loss_and_grads(&m, &batch, &mut by_items, norm, false).unwrap();
        let mut by_mean = m.zero_grads().unwrap();
        m.loss_and_grads(&seqs, &mut by_mean, 1.0 / 5.0, false)
            .unwrap();
        assert_eq!(by_items.tensors(), by_mean.tensors());
    }

    #[test]
    fn softplus_and_sigmoid_hold_at_the_extremes() {
        assert_eq!(softplus(-800.0), 0.0);
        assert_eq!(softplus(800.0), 800.0);
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(sigmoid(-800.0), 0.0);
        assert_eq!(sigmoid(800.0), 1.0);
        assert_eq!(sigmoid(0.0), 0.5);
    }
}
