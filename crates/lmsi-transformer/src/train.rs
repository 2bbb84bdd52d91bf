//! Training: the loss of a batch of token sequences and its gradient with respect to every parameter,
//! by explicit backward passes layer by layer (no autograd).
//!
//! A [`TrainSequence`] is a prompt and its completion as one token sequence; the loss is the
//! cross-entropy of predicting each completion token from the tokens before it (completion-only loss),
//! summed over the batch. Sequences are packed one after the other with no padding; attention stays
//! within each sequence.
//!
//! Objectives other than the mean likelihood weight each predicted token's loss in the gradient
//! ([`Model::weighted_loss_and_grads`]: a vote share, a policy-gradient advantage, a preference margin) and
//! read the model's per-token log-probabilities ([`Model::token_losses`]) to compute those weights.
//!
//! Memory: with activations kept, the backward pass holds, per token and per layer,
//! `3·hidden + (heads + 2·kv_heads)·head_dim + heads·head_dim + heads + 2·intermediate` floats (the layer's
//! input, its residual after attention, q|k|v, the attention output and log-sum-exp, gate|up): for
//! SmolLM2-135M about 23 KB per token per layer, 0.69 MB per token over its 30 layers. With `recompute`
//! only each layer's input is kept (`hidden` floats, 2.3 KB per token per layer for SmolLM2) and the
//! layer's forward pass is run again during the backward pass: about a third more compute for
//! a tenth of the memory. The output layer's logits are computed a chunk of rows at a time, only for
//! the tokens that carry loss.

use crate::Error;
use crate::backend::{Backend, BatchLayout, RmsNormGrad, SeqLayout};
use crate::layer::{Attention, Layer, LayerActivations, Scratch};
use crate::model::Model;
use crate::params::Params;

/// One training sequence: its tokens and the spans of tokens that are predicted (each from the
/// tokens before it). A prompt/completion example has one span, the completion; a document of several
/// worked problems can have one per answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainSequence {
    pub tokens: Vec<u32>,
    /// Ranges of positions in `tokens` whose tokens carry loss; each starts at 1 or later.
    pub targets: Vec<std::ops::Range<usize>>,
}

impl TrainSequence {
    /// A prompt (`tokens[..loss_from]`) and its completion (`tokens[loss_from..]`, the predicted part).
    pub fn completion(tokens: Vec<u32>, loss_from: usize) -> Self {
        let end = tokens.len();
        Self {
            tokens,
            targets: std::iter::once(loss_from..end).collect(),
        }
    }

    /// Number of predicted tokens.
    pub fn target_count(&self) -> usize {
        self.targets.iter().map(|r| r.len()).sum()
    }
}

/// The summed loss of a batch and the number of tokens it is summed over.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSum {
    pub loss: f64,
    pub tokens: usize,
}

impl LossSum {
    /// Mean loss per predicted token.
    pub fn mean(&self) -> f64 {
        self.loss / self.tokens.max(1) as f64
    }
}

/// How much each predicted token's loss counts in the gradient.
#[derive(Clone, Copy, Debug)]
enum TokenWeights<'a> {
    /// Every token by the same factor (`1 / tokens of the batch`: the mean loss's gradient).
    Uniform(f32),
    /// One weight per predicted token, in batch order (sequence by sequence, span by span), of
    /// either sign.
    PerToken(&'a [f32]),
}

impl TokenWeights<'_> {
    /// The weights of predicted tokens `range`.
    fn rows(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        match self {
            TokenWeights::Uniform(w) => vec![*w; range.len()],
            TokenWeights::PerToken(w) => w[range].to_vec(),
        }
    }
}

/// Logit rows computed at once by the output layer (bounds the memory of `[rows, vocab]` logits).
pub(crate) const LOGIT_CHUNK: usize = 256;

/// Lays a batch out as packed tokens (inputs: every token but each sequence's last), with a logit
/// row and target for every completion token.
pub fn batch_layout(batch: &[TrainSequence]) -> Result<BatchLayout, Error> {
    let mut layout = BatchLayout::default();
    for (i, seq) in batch.iter().enumerate() {
        let valid = |r: &std::ops::Range<usize>| {
            r.start >= 1 && r.start < r.end && r.end <= seq.tokens.len()
        };
        if seq.targets.is_empty() || !seq.targets.iter().all(valid) {
            return Err(Error::Input(format!(
                "training sequence {i}: target spans {:?} must be non-empty, start after the first token and end within its {} tokens",
                seq.targets,
                seq.tokens.len()
            )));
        }
        let inputs = &seq.tokens[..seq.tokens.len() - 1];
        let start = layout.token_ids.len();
        layout.seqs.push(SeqLayout {
            token_start: start as u32,
            num_tokens: inputs.len() as u32,
            context_len: inputs.len() as u32,
            table_start: 0,
        });
        layout.token_ids.extend_from_slice(inputs);
        layout.positions.extend(0..inputs.len() as u32);
        for p in seq.targets.iter().flat_map(|r| r.clone()) {
            layout.logit_rows.push((start + p - 1) as u32);
            layout.targets.push(seq.tokens[p]);
        }
    }
    Ok(layout)
}

/// What a layer keeps for its backward pass: always its input, and its activations unless they
/// are recomputed.
struct LayerSaved<Buf> {
    x: Buf,
    acts: Option<LayerActivations<Buf>>,
}

impl<B: Backend> Model<B> {
    /// Zero-filled buffers shaped like the parameters, for gradients.
    pub fn zero_grads(&self) -> Result<Params<B::Buf>, Error> {
        self.layout()
            .try_map(|spec| self.backend().zeros(spec.numel()))
    }

    /// The summed loss of `batch`, without gradients.
    pub fn loss(&self, batch: &[TrainSequence]) -> Result<LossSum, Error> {
        Ok(self.run(batch, None, TokenWeights::Uniform(0.0), false)?.0)
    }

    /// Each predicted token's loss `-ln p(token | tokens before it)`, in batch order, without
    /// gradients.
    pub fn token_losses(&self, batch: &[TrainSequence]) -> Result<Vec<f32>, Error> {
        Ok(self.run(batch, None, TokenWeights::Uniform(0.0), false)?.1)
    }

    /// The summed loss of `batch`, adding `grad_scale ·` its gradient to `grads`. With `grad_scale = 1 /
    /// (tokens of the whole batch)` the gradients are those of the mean loss, also when a batch is
    /// split into micro-batches whose gradients accumulate. `recompute` keeps only each layer's input
    /// and recomputes the rest during the backward pass.
    pub fn loss_and_grads(
        &self,
        batch: &[TrainSequence],
        grads: &mut Params<B::Buf>,
        grad_scale: f32,
        recompute: bool,
    ) -> Result<LossSum, Error> {
        let weights = TokenWeights::Uniform(grad_scale);
        Ok(self.run(batch, Some(grads), weights, recompute)?.0)
    }

    /// Each predicted token's loss (as [`Model::token_losses`]), adding to `grads` the gradient of
    /// `Σ weights[i] · loss[i]`: one weight per predicted token of `batch`, in batch order.
    pub fn weighted_loss_and_grads(
        &self,
        batch: &[TrainSequence],
        grads: &mut Params<B::Buf>,
        weights: &[f32],
        recompute: bool,
    ) -> Result<Vec<f32>, Error> {
        let targets: usize = batch.iter().map(TrainSequence::target_count).sum();
        if weights.len() != targets {
            return Err(Error::Input(format!(
                "{} token weights given for a batch of {targets} predicted tokens",
                weights.len()
            )));
        }
        let weights = TokenWeights::PerToken(weights);
        Ok(self.run(batch, Some(grads), weights, recompute)?.1)
    }

    /// The forward pass over `batch` and, with `grads`, the backward pass of the weighted loss:
    /// the summed loss and each predicted token's loss.
    fn run(
        &self,
        batch: &[TrainSequence],
        mut grads: Option<&mut Params<B::Buf>>,
        weights: TokenWeights<'_>,
        recompute: bool,
    ) -> Result<(LossSum, Vec<f32>), Error> {
        let c = self.config();
        let layout = batch_layout(batch)?;
        layout.check(c.vocab_size)?;
        let be = self.backend();
        let prepared = be.prepare(&layout)?;
        let (t, d) = (layout.num_tokens(), c.hidden_size);

        let dims = self.attention_dims(1);
        let layer = |params| Layer {
            model: self,
            params,
            layout: &prepared,
            dims: &dims,
            t,
        };
        let mut scratch = Scratch::zeros(be, c, t)?;
        let mut x = be.zeros(t * d)?;
        be.embedding(&mut x, &self.params().embed, &prepared, d)?;
        let mut saved = Vec::with_capacity(c.num_layers);
        for params in &self.params().layers {
            let mut acts = LayerActivations::zeros(be, c, t)?;
            let mut out = be.zeros(t * d)?;
            let layer = layer(params);
            layer.forward(&x, Attention::Causal, &mut acts, &mut scratch)?;
            layer.output(&acts, &mut scratch, &mut out)?;
            if grads.is_some() {
                let acts = (!recompute).then_some(acts);
                saved.push(LayerSaved { x, acts });
            }
            x = out;
        }

        let rows = layout.logit_rows.len();
        let mut dx = match grads {
            Some(_) => Some(be.zeros(t * d)?),
            None => None,
        };
        let mut total = LossSum {
            loss: 0.0,
            tokens: rows,
        };
        let mut token_losses = Vec::with_capacity(rows);
        for first in (0..rows).step_by(LOGIT_CHUNK) {
            let range = first..(first + LOGIT_CHUNK).min(rows);
            let grad = grads.as_deref_mut().zip(dx.as_mut());
            let losses =
                self.output_loss(&x, &prepared, range.clone(), &weights.rows(range), grad)?;
            total.loss += losses.iter().map(|&l| f64::from(l)).sum::<f64>();
            token_losses.extend(losses);
        }
        if !total.loss.is_finite() {
            return Err(Error::NonFinite("the loss".into()));
        }
        let (Some(grads), Some(mut dx)) = (grads, dx) else {
            return Ok((total, token_losses));
        };

        let layers = self.params().layers.iter().zip(grads.layers.iter_mut());
        for ((params, g), LayerSaved { x, acts }) in layers.zip(saved).rev() {
            let layer = layer(params);
            let acts = match acts {
                Some(acts) => acts,
                None => {
                    let mut acts = LayerActivations::zeros(be, c, t)?;
                    layer.forward(&x, Attention::Causal, &mut acts, &mut scratch)?;
                    acts
                }
            };
            layer.backward(g, &x, &acts, &mut dx, &mut scratch)?;
        }
        be.embedding_backward(&mut grads.embed, &dx, &prepared, d)?;
        Ok((total, token_losses))
    }

    /// The output layer and the loss over logit rows `range` of the residual stream `x`: each
    /// row's loss; with `grad`, adds the gradient of `Σ weights[i] · loss[i]` to the output layer's
    /// and final norm's parameters and into `dx`, the residual stream's gradient.
    fn output_loss(
        &self,
        x: &B::Buf,
        prepared: &B::Layout,
        range: std::ops::Range<usize>,
        weights: &[f32],
        grad: Option<(&mut Params<B::Buf>, &mut B::Buf)>,
    ) -> Result<Vec<f32>, Error> {
        let (be, c) = (self.backend(), self.config());
        let (n, d, vocab, eps) = (range.len(), c.hidden_size, c.vocab_size, c.rms_norm_eps);
        let final_norm = &self.params().final_norm;
        let output = self.params().output_linear(c);
        let mut picked = be.zeros(n * d)?;
        be.gather_logit_rows(&mut picked, x, prepared, range.clone(), d)?;
        let mut normed = be.operand_zeros(n * d)?;
        be.rmsnorm(&mut normed, &picked, final_norm, n, eps)?;
        let mut logits = be.zeros(n * vocab)?;
        be.matmul(&mut logits, &normed, &output, n, false)?;
        let losses = be.cross_entropy(&mut logits, prepared, range.clone(), vocab, weights)?;
        if let Some((g, dx)) = grad {
            let mut d_normed = be.zeros(n * d)?;
            be.matmul_backward_input(&mut d_normed, &logits, &output, n, false)?;
            be.matmul_backward_weight(g.output_grad(c), &logits, &normed, n)?;
            let mut d_picked = be.zeros(n * d)?;
            let norm = RmsNormGrad {
                input: &mut d_picked,
                weight: &mut g.final_norm,
            };
            be.rmsnorm_backward(norm, &d_normed, &picked, final_norm, n, eps)?;
            be.scatter_logit_rows(dx, &d_picked, prepared, range, d)?;
        }
        Ok(losses)
    }
}
