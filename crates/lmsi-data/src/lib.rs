//! Data for language model self-improvement (Huang et al., 2022, "Large Language Models Can
//! Self-Improve"): the JSONL files of the pipeline, the four prompt formats, few-shot exemplar
//! sets and a synthetic arithmetic task.
//!
//! - [`read_questions`], [`read_jsonl`], [`write_jsonl_atomic`], [`write_atomic`]: JSONL with
//!   `file:line` errors, optional skipping of bad lines, and writes that never leave a
//!   half-written file. The record types ([`Question`], [`PathRecord`], [`VoteRecord`],
//!   [`TrainExample`]) define the file formats.
//! - [`PromptFormat`]: chain-of-thought or direct, few-shot or zero-shot; the exact text is in
//!   the [`prompt`] module docs.
//! - [`datasets`]: the paper's benchmark datasets (GSM8K, SVAMP, AQuA-RAT, DROP, ARC, OpenBookQA,
//!   StrategyQA, ANLI, MNLI, RTE, CommonsenseQA) read in their published formats (JSONL, JSON,
//!   parquet) and field names, each with its answer kind and exemplars ([`read_dataset`]).
//! - [`ExemplarSet`]: the built-in exemplars, or a JSONL file of them (GSM8K style accepted).
//! - [`generate`]: deterministic multi-step word problems with GSM8K-style reasoning, over a
//!   closed vocabulary ([`vocabulary_words`]).
//!
//! ```
//! use lmsi_data::{ExemplarSet, PromptFormat, TaskConfig, generate};
//!
//! let problems = generate(&TaskConfig::default(), 3)?;
//! let exemplars = ExemplarSet::builtin();
//! for problem in &problems {
//!     let prompt = PromptFormat::CotFewshot.prompt(&exemplars, &problem.question);
//!     assert!(prompt.text().ends_with("?\nA:"));
//!     let target = PromptFormat::CotFewshot.completion(&problem.reasoning, &problem.answer.to_string());
//!     assert!(target.ends_with(&format!("The answer is {}.", problem.answer)));
//! }
//! # Ok::<(), lmsi_data::DataError>(())
//! ```

pub mod datasets;
mod error;
mod exemplars;
pub mod jsonl;
pub mod prompt;
mod records;
pub mod synthetic;
mod text;

#[cfg(test)]
mod testutil;

pub use datasets::{Dataset, DatasetFile, read_dataset};
pub use error::DataError;
pub use exemplars::{Exemplar, ExemplarSet};
pub use jsonl::{
    BadLines, Loaded, SkippedLine, read_jsonl, read_paths, read_questions, read_votes,
    write_atomic, write_jsonl_atomic,
};
pub use prompt::{
    ANSWER_PHRASE, DEFAULT_STOP_STRINGS, LETS_THINK, Prompt, PromptFormat, parse_formats,
};
pub use records::{PathRecord, PreferencePair, Question, TrainExample, VoteRecord};
pub use synthetic::{
    MAX_MAX_VALUE, MAX_STEPS, MIN_MAX_VALUE, SYMBOLS, SyntheticProblem, TaskConfig, column_facts,
    generate, vary_reasoning, vocabulary_words, write_in_columns,
};
pub use text::{normalize_whitespace, words};
