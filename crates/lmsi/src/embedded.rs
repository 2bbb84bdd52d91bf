//! The embedded default of `lmsi run`: the seed model (built by `cargo xtask seed-model` and committed
//! under `assets/seed-model`), an unlabelled pool and a labelled test set from the seed model's task,
//! and run settings sized for a laptop CPU.

use std::path::{Path, PathBuf};

use lmsi_data::write_jsonl_atomic;
use lmsi_transformer::checkpoint::write_dir_atomic;

use crate::Error;
use crate::seed::{SeedRecipe, held_out_questions};

/// The seed model's files, compiled into the binary.
pub const SEED_MODEL: &[(&str, &[u8])] = &[
    (
        "config.json",
        include_bytes!("../../../assets/seed-model/config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../../../assets/seed-model/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../../../assets/seed-model/tokenizer.json"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../../../assets/seed-model/tokenizer_config.json"),
    ),
];

/// Generator seeds of the default pool and test set (the seed model's training problems use the
/// recipe's own seed; questions it was trained on are left out of both).
pub const POOL_SEED: u64 = 2024;
pub const TEST_SEED: u64 = 1001;
/// Sizes of the default pool and test set.
pub const POOL_QUESTIONS: usize = 400;
pub const TEST_QUESTIONS: usize = 200;

/// Writes the embedded seed model to `dir` (unless it is already there) and returns `dir`.
pub fn seed_model(dir: &Path) -> Result<PathBuf, Error> {
    if !dir.join("model.safetensors").exists() {
        let files: Vec<(String, Vec<u8>)> = SEED_MODEL
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect();
        write_dir_atomic(dir, &files)?;
    }
    Ok(dir.to_path_buf())
}

/// Writes the default pool (`pool.jsonl`, with gold answers the loop never reads) and test set
/// (`test.jsonl`) into `dir` (unless there) and returns their paths.
pub fn default_data(dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let recipe = SeedRecipe::default();
    let pool_path = dir.join("pool.jsonl");
    let test_path = dir.join("test.jsonl");
    if !pool_path.exists() || !test_path.exists() {
        let pool = held_out_questions(&recipe, POOL_SEED, POOL_QUESTIONS, "pool", &[])?;
        let pool_texts: Vec<String> = pool.iter().map(|q| q.question.clone()).collect();
        let test = held_out_questions(&recipe, TEST_SEED, TEST_QUESTIONS, "test", &pool_texts)?;
        write_jsonl_atomic(&pool_path, &pool)?;
        write_jsonl_atomic(&test_path, &test)?;
    }
    Ok((pool_path, test_path))
}

/// Run settings: the paper's for a user's model, smaller ones sized for the seed model on a laptop.
#[derive(Clone, Debug)]
pub struct Settings {
    pub paths: usize,
    pub max_new_tokens: usize,
    pub max_batch: usize,
    /// Built-in exemplars in the few-shot prompt.
    pub exemplars: usize,
    pub eval_temperature: f32,
    /// Training data formats (`--formats`).
    pub formats: &'static str,
    pub train: crate::train::TrainOptions,
    /// The learning rate of `--objective ttrl`, lower than the others': its policy-gradient steps
    /// push probability away from paths as well as toward them.
    pub ttrl_lr: f32,
}

impl Settings {
    /// The paper's settings (32 paths at 0.7, evaluation after training at 1.2, AdamW at 5e-5, batch 32).
    pub fn paper() -> Self {
        Self {
            paths: 32,
            max_new_tokens: 256,
            max_batch: 32,
            exemplars: 8,
            eval_temperature: 1.2,
            formats: "all",
            train: crate::train::TrainOptions::default(),
            ttrl_lr: 1e-5,
        }
    }
}

/// The settings of the embedded default run, chosen by measurement on the seed model (numbers in
/// the README):
/// - chain-of-thought data only: the seed model has only ever seen the few-shot chain-of-thought
///   format, and in 150 steps the paper's mixed formats spend three quarters of the examples on
///   formats it must first learn (`--formats all` is the ablation);
/// - a learning rate of 1e-4: higher rates collapse the model onto one route and lose
///   self-consistency's gain;
/// - self-consistency after training at the sampling temperature, 0.7: at the paper's 1.2 a model
///   this small writes noise;
/// - for `ttrl` a learning rate of 2e-5: at 1e-4 the online loop rewards answers that agree but
///   are wrong and greedy accuracy falls to 52.0%; at 2e-5 it rises to 88.0%.
pub fn settings() -> Settings {
    Settings {
        paths: 16,
        max_new_tokens: 256,
        max_batch: 64,
        exemplars: SeedRecipe::default().exemplars,
        eval_temperature: 0.7,
        formats: "cot-fewshot",
        train: crate::train::TrainOptions {
            lr: 1e-4,
            batch_size: 32,
            steps: Some(150),
            warmup_steps: 10,
            weight_decay: 0.0,
            ..crate::train::TrainOptions::default()
        },
        ttrl_lr: 2e-5,
    }
}
