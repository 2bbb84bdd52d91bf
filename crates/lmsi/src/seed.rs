//! The seed model of the embedded default: a small Llama-architecture model trained, with this
//! project's own trainer, on labelled synthetic multi-step word problems (`cargo xtask seed-model`).
//!
//! Everything is deterministic: the problems come from `lmsi-data`'s generator with a fixed seed, the
//! tokenizer is a byte-level BPE trained on those problems with the `tokenizers` library (digits split
//! one by one, as SmolLM2's tokenizer does, so arithmetic is done digit by digit), the weights start
//! from a seeded normal initialisation (std 0.02, as Hugging Face initialises Llama), and training runs
//! on the CPU backend, whose results do not depend on the thread count.
//!
//! The model learns the chain-of-thought few-shot format the default run samples with: it is trained
//! on documents of a few worked problems in that format, one after another, with loss on every answer.
//!
//! Why the method has something to find: half of the training problems work their sums and
//! differences column by column (`34 - 15 = [14 - 5 = 9, 2 - 1 = 1] 19`), the other half write them
//! at once (`34 - 15 = 19`), and drill documents teach the few hundred one-digit column facts. A model
//! this small cannot hold every two-digit sum, so answers written at once are often wrong, and wrong in
//! different ways from sample to sample, while the column route is right more often. The few-shot
//! exemplars write sums at once, so greedy decoding mostly skips the columns; sampling takes both
//! routes, and the answers that agree are mostly the careful ones. Voting finds them without labels,
//! and training on the agreeing paths moves the model towards the careful route.

use std::path::Path;

use lmsi_data::{ExemplarSet, PromptFormat, SyntheticProblem, TaskConfig};
use lmsi_transformer::{Config, CpuBackend, Model, Params, Tokenizer, TrainSequence};
use serde_json::json;

use crate::Error;
use crate::train::{TrainOptions, train_sequences};

/// Everything that determines the seed model.
#[derive(Clone, Debug)]
pub struct SeedRecipe {
    /// The labelled training problems.
    pub task: TaskConfig,
    pub train_problems: usize,
    /// Worked problems per training document.
    pub problems_per_document: usize,
    /// Write each training problem's equations by varied routes ([`lmsi_data::vary_reasoning`]),
    /// so that the model learns more than one way to each answer.
    pub varied_reasoning: bool,
    /// The share of training problems whose sums and differences are worked column by column
    /// ([`lmsi_data::write_in_columns`]); the rest are written at once. A small model gets the
    /// columns right far more often, so its samples disagree when it skips them, and voting
    /// rewards the careful ones.
    pub column_share: f64,
    /// Documents of one-digit column facts ([`lmsi_data::column_facts`], shuffled,
    /// [`FACTS_PER_DRILL`] each) added to the training documents: the drill that makes working in
    /// columns reliable, while two-digit sums written at once stay error-prone.
    pub drill_documents: usize,
    /// The share of training documents written in one of the paper's other three formats (few-shot
    /// direct answers, zero-shot "Let's think step by step.", the question alone), drawn per
    /// document; the rest are few-shot chain of thought. 0 for the embedded seed model, which has
    /// only ever seen few-shot chain of thought; a seed model that has seen all four is the fair
    /// test of training on the paper's mixed formats (`--formats all`).
    pub other_formats_share: f64,
    /// How many of the built-in exemplars the few-shot prompt uses.
    pub exemplars: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate_size: usize,
    pub init_seed: u64,
    pub train: TrainOptions,
}

impl Default for SeedRecipe {
    fn default() -> Self {
        Self {
            task: TaskConfig {
                min_steps: 1,
                max_steps: 3,
                max_value: 60,
                seed: 11,
            },
            train_problems: 6000,
            problems_per_document: 3,
            varied_reasoning: false,
            column_share: 0.5,
            drill_documents: 400,
            other_formats_share: 0.0,
            exemplars: 2,
            vocab_size: 384,
            hidden_size: 128,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            intermediate_size: 384,
            init_seed: 7,
            train: TrainOptions {
                lr: 3e-3,
                batch_size: 16,
                epochs: 7.0,
                warmup_steps: 20,
                weight_decay: 0.0,
                eval_fraction: 0.02,
                eval_every: 100,
                ..TrainOptions::default()
            },
        }
    }
}

impl SeedRecipe {
    /// The few-shot exemplars of the default run.
    pub fn exemplar_set(&self) -> Result<ExemplarSet, Error> {
        Ok(ExemplarSet::builtin().first(self.exemplars)?)
    }

    /// The labelled problems the seed model is trained on.
    pub fn training_problems(&self) -> Result<Vec<SyntheticProblem>, Error> {
        Ok(lmsi_data::generate(&self.task, self.train_problems)?)
    }

    fn config_json(&self, vocab: usize) -> serde_json::Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "max_position_embeddings": 1024,
            "tie_word_embeddings": true,
            "hidden_act": "silu",
            "bos_token_id": null,
            "eos_token_id": 0,
            "torch_dtype": "float32"
        })
    }
}

/// Questions from the seed model's task that it was not trained on: `n` problems generated with
/// `seed`, those whose question is among the training problems (or in `exclude`) left out. Their ids
/// are `{prefix}-{i}`.
pub fn held_out_questions(
    recipe: &SeedRecipe,
    seed: u64,
    n: usize,
    prefix: &str,
    exclude: &[String],
) -> Result<Vec<lmsi_data::Question>, Error> {
    let mut training: std::collections::HashSet<String> = recipe
        .training_problems()?
        .into_iter()
        .map(|p| p.question)
        .collect();
    training.extend(exclude.iter().cloned());
    let task = TaskConfig {
        seed,
        ..recipe.task.clone()
    };
    // Generate a margin more than needed, to make up for the ones left out.
    let problems = lmsi_data::generate(&task, n + n / 4 + 16)?;
    let kept: Vec<lmsi_data::Question> = problems
        .iter()
        .filter(|p| !training.contains(&p.question))
        .take(n)
        .enumerate()
        .map(|(i, p)| p.to_question(format!("{prefix}-{i}")))
        .collect();
    if kept.len() < n {
        return Err(Error::Input(format!(
            "only {} new problems could be made, {n} asked for",
            kept.len()
        )));
    }
    Ok(kept)
}

/// The end-of-text token of the seed tokenizer (id 0).
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// Trains a byte-level BPE tokenizer on `texts` and returns its `tokenizer.json`.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<String, Error> {
    use tokenizers::SplitDelimiterBehavior;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::Split;
    use tokenizers::{
        AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
        TokenizerBuilder,
    };

    let fail = |e: tokenizers::Error| Error::Input(format!("training the tokenizer: {e}"));
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOS_TOKEN, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    // Newlines stand alone, so a text cut at a line break tokenizes as the two halves do: a
    // few-shot prefix and a question tokenized apart give the tokens of the whole prompt.
    let newline = Split::new("\n", SplitDelimiterBehavior::Isolated, false).map_err(fail)?;
    let pre = Sequence::new(vec![
        newline.into(),
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ]);
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(pre.into()))
    .with_post_processor(None)
    .with_decoder(Some(ByteLevel::default().into()))
    .build()
    .map_err(fail)?;
    tokenizer.train(&mut trainer, texts.iter()).map_err(fail)?;
    tokenizer.to_string(true).map_err(fail)
}

/// A normal(0, std) initialisation of every matrix and embedding, norms at 1, from a counter-based RNG.
fn init_params(config: &Config, seed: u64) -> Params<Vec<f32>> {
    let layout = Params::layout(config);
    let mut stream = 0u64;
    layout.map(|spec| {
        stream += 1;
        if spec.shape.len() == 1 {
            return vec![
                if spec.name.ends_with("norm") {
                    1.0
                } else {
                    0.0
                };
                spec.numel()
            ];
        }
        (0..spec.numel())
            .map(|i| {
                // Box-Muller from two 32-bit uniforms of one counter-based draw.
                let r = lmsi_sampler::random_u64(seed, stream, i as u32);
                let u1 = ((r >> 32) as f64 + 1.0) / 4_294_967_297.0;
                let u2 = (r & 0xffff_ffff) as f64 / 4_294_967_296.0;
                (0.02 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
            })
            .collect()
    })
}

/// The text pieces of the seed model's training documents: each document is `problems_per_document`
/// worked problems in one prompt format (so that every problem is the few-shot context of the ones
/// after it; a zero-shot format's problems are a document each), as (text, carries loss) pieces.
/// Answers carry loss, the blank line after them included (that is how the model learns to stop);
/// questions do not.
pub fn training_documents(recipe: &SeedRecipe) -> Result<Vec<Vec<(String, bool)>>, Error> {
    let problems = recipe.training_problems()?;
    let mut documents = Vec::new();
    for (d, doc) in problems.chunks(recipe.problems_per_document).enumerate() {
        let format = document_format(recipe, d);
        let mut pieces = Vec::new();
        for (i, p) in doc.iter().enumerate() {
            pieces.push((format.question_part(&p.question), false));
            let seed = recipe.task.seed
                ^ ((d * recipe.problems_per_document + i) as u64)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let reasoning = problem_reasoning(recipe, p, seed);
            let mut answer = format.completion(&reasoning, &p.answer.to_string());
            if format.is_few_shot() && i + 1 < doc.len() {
                answer.push_str("\n\n");
            }
            pieces.push((answer, true));
            if !format.is_few_shot() {
                documents.push(std::mem::take(&mut pieces));
            }
        }
        if !pieces.is_empty() {
            documents.push(pieces);
        }
    }
    documents.extend(drill_documents(recipe));
    Ok(documents)
}

/// The prompt format of training document `d`: few-shot chain of thought, or with the recipe's
/// `other_formats_share` one of the other three.
fn document_format(recipe: &SeedRecipe, d: usize) -> PromptFormat {
    let draw = mix(recipe.task.seed ^ 0x5851_F42D_4C95_7F2D ^ d as u64);
    if unit_fraction(draw) >= recipe.other_formats_share {
        return PromptFormat::CotFewshot;
    }
    let others = [
        PromptFormat::DirectFewshot,
        PromptFormat::CotZeroshot,
        PromptFormat::DirectZeroshot,
    ];
    others[(mix(draw) % 3) as usize]
}

/// A training problem's reasoning: varied with the recipe's `varied_reasoning`, and worked in
/// columns with probability `column_share`.
fn problem_reasoning(recipe: &SeedRecipe, p: &SyntheticProblem, seed: u64) -> String {
    let reasoning = if recipe.varied_reasoning {
        lmsi_data::vary_reasoning(&p.reasoning, seed)
    } else {
        p.reasoning.clone()
    };
    if unit_fraction(mix(seed)) < recipe.column_share {
        lmsi_data::write_in_columns(&reasoning)
    } else {
        reasoning
    }
}

/// The top 53 bits of `x` as a fraction in [0, 1).
fn unit_fraction(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// One-digit column facts per drill document.
pub const FACTS_PER_DRILL: usize = 60;

/// The drill documents: every column fact in a seeded order, cut into documents of
/// [`FACTS_PER_DRILL`], for as many documents as the recipe asks.
fn drill_documents(recipe: &SeedRecipe) -> Vec<Vec<(String, bool)>> {
    let facts = lmsi_data::column_facts();
    let mut order: Vec<String> = Vec::new();
    let mut state = recipe.task.seed ^ 0xA076_1D64_78BD_642F;
    while order.len() < recipe.drill_documents * FACTS_PER_DRILL {
        let mut round = facts.clone();
        // Fisher-Yates with the mixer as the random source.
        for i in (1..round.len()).rev() {
            state = mix(state);
            round.swap(i, (state % (i as u64 + 1)) as usize);
        }
        order.extend(round);
    }
    order.truncate(recipe.drill_documents * FACTS_PER_DRILL);
    order
        .chunks(FACTS_PER_DRILL)
        // The first fact is context (a sequence's loss starts after its first token).
        .map(|chunk| {
            vec![
                (chunk[0].clone() + ", ", false),
                (chunk[1..].join(", ") + ".", true),
            ]
        })
        .collect()
}

/// A 64-bit mixer (SplitMix64's finaliser) for the recipe's deterministic choices.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Tokenizes a document piece by piece, ending it with EOS (which carries loss).
fn document_sequence(
    tokenizer: &Tokenizer,
    pieces: &[(String, bool)],
) -> Result<TrainSequence, Error> {
    let mut tokens = Vec::new();
    let mut targets = Vec::new();
    for (i, (text, loss)) in pieces.iter().enumerate() {
        let ids = tokenizer.encode(text, i == 0)?;
        if *loss {
            targets.push(tokens.len()..tokens.len() + ids.len());
        }
        tokens.extend(ids);
    }
    let eos = *tokenizer
        .eos_ids()
        .first()
        .ok_or_else(|| Error::Input("the seed tokenizer has no EOS".into()))?;
    tokens.push(eos);
    if let Some(last) = targets.last_mut() {
        last.end += 1;
    }
    Ok(TrainSequence { tokens, targets })
}

/// Builds the seed model into `out`: tokenizer, initial weights, training. Returns the training report.
pub fn build_seed_model(
    recipe: &SeedRecipe,
    out: &Path,
    on_step: &mut dyn FnMut(&crate::train::StepLog, u64),
) -> Result<crate::train::TrainReport, Error> {
    let documents = training_documents(recipe)?;
    let texts: Vec<String> = documents
        .iter()
        .map(|d| d.iter().map(|(t, _)| t.as_str()).collect())
        .collect();
    let tokenizer_json = train_tokenizer(&texts, recipe.vocab_size)?;
    let tokenizer_value: serde_json::Value =
        serde_json::from_str(&tokenizer_json).expect("the tokenizer writes JSON");
    let vocab = tokenizer_value["model"]["vocab"]
        .as_object()
        .map_or(0, |v| v.len())
        + tokenizer_value["added_tokens"]
            .as_array()
            .map_or(0, |a| a.len());
    // Round the vocabulary up to a multiple of 64, as released models do.
    let vocab = vocab.div_ceil(64) * 64;
    let config_json = recipe.config_json(vocab);
    let config = Config::from_json(&config_json.to_string()).map_err(Error::Input)?;

    let init =
        tempfile::tempdir().map_err(|e| Error::Input(format!("temporary directory: {e}")))?;
    let files: Vec<(String, Vec<u8>)> = vec![
        ("tokenizer.json".into(), tokenizer_json.into_bytes()),
        (
            "tokenizer_config.json".into(),
            serde_json::to_vec_pretty(&json!({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "add_bos_token": false}))
                .expect("json"),
        ),
    ];
    for (name, bytes) in &files {
        std::fs::write(init.path().join(name), bytes)
            .map_err(|e| Error::Input(format!("{name}: {e}")))?;
    }
    let tokenizer = Tokenizer::load(init.path(), &config)?;
    let sequences = documents
        .iter()
        .map(|d| document_sequence(&tokenizer, d))
        .collect::<Result<Vec<_>, _>>()?;
    // What a resumed run must have been trained on: everything that shapes the documents.
    let data = format!(
        "seed documents: {} problems, varied {}, column share {}, {} drill documents, other formats {}, task {:?}",
        recipe.train_problems,
        recipe.varied_reasoning,
        recipe.column_share,
        recipe.drill_documents,
        recipe.other_formats_share,
        recipe.task
    );
    let (mut model, source) = if recipe.train.resume {
        // Continue the checkpoint in `out` (same recipe): its weights, not a fresh initialisation.
        (Model::load(out, CpuBackend::new())?, out)
    } else {
        let params = init_params(&config, recipe.init_seed);
        (
            Model::from_host(config, &params, CpuBackend::new())?,
            init.path(),
        )
    };
    train_sequences(
        &mut model,
        source,
        sequences,
        &data,
        &recipe.train,
        out,
        on_step,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_mix_the_two_routes_and_add_the_drill() {
        let recipe = SeedRecipe {
            train_problems: 600,
            drill_documents: 12,
            ..SeedRecipe::default()
        };
        let documents = training_documents(&recipe).unwrap();
        assert_eq!(documents.len(), 600 / recipe.problems_per_document + 12);
        let (worked, drill) = documents.split_at(600 / recipe.problems_per_document);
        let answers: Vec<&str> = worked
            .iter()
            .flatten()
            .filter(|(_, loss)| *loss)
            .map(|(text, _)| text.as_str())
            .collect();
        let in_columns = answers.iter().filter(|a| a.contains('[')).count();
        // Problems with only products and quotients have nothing to work in columns.
        assert!(
            (200..=300).contains(&in_columns),
            "{in_columns} of 600 in columns"
        );
        let facts: std::collections::HashSet<String> =
            lmsi_data::column_facts().into_iter().collect();
        for document in drill {
            let text: String = document.iter().map(|(t, _)| t.as_str()).collect();
            let written: Vec<&str> = text.trim_end_matches('.').split(", ").collect();
            assert_eq!(written.len(), FACTS_PER_DRILL);
            assert!(written.iter().all(|f| facts.contains(*f)), "{text}");
        }
        assert_eq!(training_documents(&recipe).unwrap(), documents);
    }

    #[test]
    fn other_formats_take_their_share_and_zero_shot_problems_stand_alone() {
        let recipe = SeedRecipe {
            train_problems: 600,
            drill_documents: 0,
            other_formats_share: 0.5,
            ..SeedRecipe::default()
        };
        let documents = training_documents(&recipe).unwrap();
        let problems: usize = documents.iter().map(|d| d.len() / 2).sum();
        assert_eq!(problems, 600);
        let zero_shot = |d: &&Vec<(String, bool)>| d.len() == 2 && !d[1].0.ends_with("\n\n");
        let thinking = documents
            .iter()
            .filter(|d| d[0].0.ends_with(lmsi_data::LETS_THINK))
            .count();
        let direct_few_shot = documents
            .iter()
            .filter(|d| d.len() == 6 && !d[1].0.contains('='))
            .count();
        // 200 chunks of three; about 100 in other formats, a third of them each (a zero-shot
        // chunk is three documents).
        assert!((60..=150).contains(&thinking), "{thinking}");
        assert!((20..=50).contains(&direct_few_shot), "{direct_few_shot}");
        assert!(documents.iter().filter(zero_shot).count() >= 2 * 60);
        let plain = SeedRecipe {
            other_formats_share: 0.0,
            ..recipe
        };
        let cot = training_documents(&plain).unwrap();
        assert_eq!(cot.len(), 200);
        assert!(
            cot.iter()
                .all(|d| d.len() == 6 && !d[0].0.contains(lmsi_data::LETS_THINK))
        );
    }
}
