//! The model's parameter tensors: their layout, their Hugging Face names, and a container that holds
//! one value per tensor (weights, gradients or optimizer moments alike).
//!
//! Internally the q, k and v projections are one fused matrix (`qkv`, rows `q | k | v`) and the gate and
//! up projections another (`gate_up`, rows `gate | up`), so each is one matrix product. Each fused tensor
//! records the Hugging Face tensors it is made of, so loading and saving use the original names.

use crate::backend::{Linear, LinearGrad};
use crate::config::Config;

/// The shape and names of one parameter tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The internal name, e.g. `layers.3.qkv`.
    pub name: String,
    /// `[rows, cols]` for matrices, `[len]` for vectors.
    pub shape: Vec<usize>,
    /// The Hugging Face tensors stacked (along the rows) to make this one, with their row counts.
    pub parts: Vec<(String, usize)>,
    /// Whether weight decay applies by default (matrices yes; norms, biases and embeddings no).
    pub decay: bool,
}

impl TensorSpec {
    fn new(name: String, shape: Vec<usize>, parts: Vec<(String, usize)>, decay: bool) -> Self {
        Self {
            name,
            shape,
            parts,
            decay,
        }
    }

    fn single(name: String, hf: String, shape: Vec<usize>, decay: bool) -> Self {
        let rows = shape[0];
        Self::new(name, shape, vec![(hf, rows)], decay)
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Values per row (1 for a vector).
    pub fn cols(&self) -> usize {
        self.shape.get(1).copied().unwrap_or(1)
    }

    /// The shape of one Hugging Face part with `rows` rows.
    pub fn part_shape(&self, rows: usize) -> Vec<usize> {
        if self.shape.len() == 1 {
            vec![rows]
        } else {
            vec![rows, self.shape[1]]
        }
    }
}

/// One transformer layer's parameters.
#[derive(Clone, Debug)]
pub struct LayerParams<T> {
    pub attn_norm: T,
    pub qkv: T,
    pub qkv_bias: Option<T>,
    pub o: T,
    pub o_bias: Option<T>,
    pub mlp_norm: T,
    pub gate_up: T,
    pub gate_up_bias: Option<T>,
    pub down: T,
    pub down_bias: Option<T>,
}

/// A layer's four linear maps, with the shapes the configuration gives them.
pub struct LayerLinears<L> {
    /// `hidden -> q | k | v`.
    pub qkv: L,
    /// `attention -> hidden`.
    pub o: L,
    /// `hidden -> gate | up`.
    pub gate_up: L,
    /// `intermediate -> hidden`.
    pub down: L,
}

impl<T> LayerParams<T> {
    /// The layer's linear maps, each weight with its bias and shape.
    pub fn linears(&self, c: &Config) -> LayerLinears<Linear<'_, T>> {
        let [qkv, o, gate_up, down] = linear_shapes(c);
        LayerLinears {
            qkv: linear(&self.qkv, &self.qkv_bias, qkv),
            o: linear(&self.o, &self.o_bias, o),
            gate_up: linear(&self.gate_up, &self.gate_up_bias, gate_up),
            down: linear(&self.down, &self.down_bias, down),
        }
    }

    /// The layer as gradients to add into: its norms' and its linear maps'.
    pub fn grads(&mut self, c: &Config) -> LayerGrads<'_, T> {
        let [qkv, o, gate_up, down] = linear_shapes(c);
        LayerGrads {
            attn_norm: &mut self.attn_norm,
            mlp_norm: &mut self.mlp_norm,
            linear: LayerLinears {
                qkv: linear_grad(&mut self.qkv, &mut self.qkv_bias, qkv),
                o: linear_grad(&mut self.o, &mut self.o_bias, o),
                gate_up: linear_grad(&mut self.gate_up, &mut self.gate_up_bias, gate_up),
                down: linear_grad(&mut self.down, &mut self.down_bias, down),
            },
        }
    }
}

/// A layer's gradients, split so that each can be added to on its own.
pub struct LayerGrads<'a, T> {
    pub attn_norm: &'a mut T,
    pub mlp_norm: &'a mut T,
    pub linear: LayerLinears<LinearGrad<'a, T>>,
}

/// A weight and its bias as a [`Linear`] of `(in, out)` features.
fn linear<'a, T>(weight: &'a T, bias: &'a Option<T>, (i, o): (usize, usize)) -> Linear<'a, T> {
    Linear::new(weight, i, o).with_bias(bias.as_ref())
}

/// A weight's and its bias's gradients as a [`LinearGrad`] of `(in, out)` features.
fn linear_grad<'a, T>(
    weight: &'a mut T,
    bias: &'a mut Option<T>,
    (in_features, out_features): (usize, usize),
) -> LinearGrad<'a, T> {
    LinearGrad {
        weight,
        bias: bias.as_mut(),
        in_features,
        out_features,
    }
}

/// `(in, out)` features of a layer's qkv, o, gate_up and down maps.
fn linear_shapes(c: &Config) -> [(usize, usize); 4] {
    let (d, inter) = (c.hidden_size, c.intermediate_size);
    [
        (d, c.qkv_dim()),
        (c.attn_dim(), d),
        (d, 2 * inter),
        (inter, d),
    ]
}

/// All parameters of a model, one `T` per tensor.
#[derive(Clone, Debug)]
pub struct Params<T> {
    pub embed: T,
    pub layers: Vec<LayerParams<T>>,
    pub final_norm: T,
    /// The output layer; `None` when it is tied to `embed`.
    pub lm_head: Option<T>,
}

impl Params<TensorSpec> {
    /// The parameter layout of a model with this configuration.
    pub fn layout(config: &Config) -> Self {
        let d = config.hidden_size;
        let (q, kv) = (config.attn_dim(), config.kv_dim());
        let inter = config.intermediate_size;
        let layers = (0..config.num_layers)
            .map(|i| {
                let hf = |s: &str| format!("model.layers.{i}.{s}");
                let name = |s: &str| format!("layers.{i}.{s}");
                let vector = |s: &str, hf_name: &str, len: usize| {
                    TensorSpec::single(name(s), hf(hf_name), vec![len], false)
                };
                LayerParams {
                    attn_norm: vector("attn_norm", "input_layernorm.weight", d),
                    qkv: TensorSpec::new(
                        name("qkv"),
                        vec![q + 2 * kv, d],
                        vec![
                            (hf("self_attn.q_proj.weight"), q),
                            (hf("self_attn.k_proj.weight"), kv),
                            (hf("self_attn.v_proj.weight"), kv),
                        ],
                        true,
                    ),
                    qkv_bias: config.qkv_bias.then(|| {
                        TensorSpec::new(
                            name("qkv_bias"),
                            vec![q + 2 * kv],
                            vec![
                                (hf("self_attn.q_proj.bias"), q),
                                (hf("self_attn.k_proj.bias"), kv),
                                (hf("self_attn.v_proj.bias"), kv),
                            ],
                            false,
                        )
                    }),
                    o: TensorSpec::single(
                        name("o"),
                        hf("self_attn.o_proj.weight"),
                        vec![d, q],
                        true,
                    ),
                    o_bias: config
                        .o_bias
                        .then(|| vector("o_bias", "self_attn.o_proj.bias", d)),
                    mlp_norm: vector("mlp_norm", "post_attention_layernorm.weight", d),
                    gate_up: TensorSpec::new(
                        name("gate_up"),
                        vec![2 * inter, d],
                        vec![
                            (hf("mlp.gate_proj.weight"), inter),
                            (hf("mlp.up_proj.weight"), inter),
                        ],
                        true,
                    ),
                    gate_up_bias: config.mlp_bias.then(|| {
                        TensorSpec::new(
                            name("gate_up_bias"),
                            vec![2 * inter],
                            vec![
                                (hf("mlp.gate_proj.bias"), inter),
                                (hf("mlp.up_proj.bias"), inter),
                            ],
                            false,
                        )
                    }),
                    down: TensorSpec::single(
                        name("down"),
                        hf("mlp.down_proj.weight"),
                        vec![d, inter],
                        true,
                    ),
                    down_bias: config
                        .mlp_bias
                        .then(|| vector("down_bias", "mlp.down_proj.bias", d)),
                }
            })
            .collect();
        Params {
            embed: TensorSpec::single(
                "embed".into(),
                "model.embed_tokens.weight".into(),
                vec![config.vocab_size, d],
                false,
            ),
            layers,
            final_norm: TensorSpec::single(
                "final_norm".into(),
                "model.norm.weight".into(),
                vec![d],
                false,
            ),
            lm_head: (!config.tie_word_embeddings).then(|| {
                TensorSpec::single(
                    "lm_head".into(),
                    "lm_head.weight".into(),
                    vec![config.vocab_size, d],
                    true,
                )
            }),
        }
    }
}

impl<T> Params<T> {
    /// Every tensor, in a fixed order (embedding, layers in order, final norm, output layer).
    pub fn tensors(&self) -> Vec<&T> {
        let mut out = vec![&self.embed];
        for l in &self.layers {
            out.extend([&l.attn_norm, &l.qkv]);
            out.extend(&l.qkv_bias);
            out.push(&l.o);
            out.extend(&l.o_bias);
            out.extend([&l.mlp_norm, &l.gate_up]);
            out.extend(&l.gate_up_bias);
            out.push(&l.down);
            out.extend(&l.down_bias);
        }
        out.push(&self.final_norm);
        out.extend(&self.lm_head);
        out
    }

    /// Every tensor, mutably, in the order of [`Params::tensors`].
    pub fn tensors_mut(&mut self) -> Vec<&mut T> {
        let mut out = vec![&mut self.embed];
        for l in &mut self.layers {
            out.extend([&mut l.attn_norm, &mut l.qkv]);
            out.extend(&mut l.qkv_bias);
            out.push(&mut l.o);
            out.extend(&mut l.o_bias);
            out.extend([&mut l.mlp_norm, &mut l.gate_up]);
            out.extend(&mut l.gate_up_bias);
            out.push(&mut l.down);
            out.extend(&mut l.down_bias);
        }
        out.push(&mut self.final_norm);
        out.extend(&mut self.lm_head);
        out
    }

    /// A container of the same layout with `f` applied to every tensor (in the order of `tensors`).
    pub fn try_map<U, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<Params<U>, E> {
        // Field order below is the order of `tensors`, so `f` sees tensors in that order.
        let embed = f(&self.embed)?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let attn_norm = f(&l.attn_norm)?;
            let qkv = f(&l.qkv)?;
            let qkv_bias = l.qkv_bias.as_ref().map(&mut f).transpose()?;
            let o = f(&l.o)?;
            let o_bias = l.o_bias.as_ref().map(&mut f).transpose()?;
            let mlp_norm = f(&l.mlp_norm)?;
            let gate_up = f(&l.gate_up)?;
            let gate_up_bias = l.gate_up_bias.as_ref().map(&mut f).transpose()?;
            let down = f(&l.down)?;
            let down_bias = l.down_bias.as_ref().map(&mut f).transpose()?;
            layers.push(LayerParams {
                attn_norm,
                qkv,
                qkv_bias,
                o,
                o_bias,
                mlp_norm,
                gate_up,
                gate_up_bias,
                down,
                down_bias,
            });
        }
        let final_norm = f(&self.final_norm)?;
        let lm_head = self.lm_head.as_ref().map(&mut f).transpose()?;
        Ok(Params {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    /// Like [`Params::try_map`] for an infallible `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Params<U> {
        self.try_map(|t| Ok::<U, std::convert::Infallible>(f(t)))
            .unwrap_or_else(|e| match e {})
    }

    /// The output layer: `lm_head`, or the embedding when they are tied.
    pub fn output(&self) -> &T {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The output layer, `hidden -> vocabulary`, without bias.
    pub fn output_linear(&self, c: &Config) -> Linear<'_, T> {
        Linear::new(self.output(), c.hidden_size, c.vocab_size)
    }

    /// Its gradient: into `lm_head`, or `embed` when tied.
    pub fn output_grad(&mut self, c: &Config) -> LinearGrad<'_, T> {
        LinearGrad {
            weight: self.lm_head.as_mut().unwrap_or(&mut self.embed),
            bias: None,
            in_features: c.hidden_size,
            out_features: c.vocab_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tied: bool) -> Config {
        let text = format!(
            r#"{{"model_type": "qwen2", "vocab_size": 50, "hidden_size": 8, "intermediate_size": 12,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "tie_word_embeddings": {tied}}}"#
        );
        Config::from_json(&text).unwrap()
    }

    #[test]
    fn layout_counts_every_parameter() {
        for tied in [true, false] {
            let c = config(tied);
            let layout = Params::layout(&c);
            let total: usize = layout.tensors().iter().map(|t| t.numel()).sum();
            assert_eq!(total, c.parameter_count());
            for t in layout.tensors() {
                let rows: usize = t.parts.iter().map(|(_, r)| r).sum();
                assert_eq!(rows, t.shape[0], "{}", t.name);
            }
        }
    }

    #[test]
    fn map_visits_tensors_in_order() {
        let layout = Params::layout(&config(false));
        let names: Vec<String> = layout.tensors().iter().map(|t| t.name.clone()).collect();
        let mut seen = Vec::new();
        let mapped = layout.map(|t| {
            seen.push(t.name.clone());
            t.name.clone()
        });
        assert_eq!(seen, names);
        let mapped_names: Vec<String> = mapped.tensors().into_iter().cloned().collect();
        assert_eq!(mapped_names, names);
    }
}
