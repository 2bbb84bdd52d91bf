//! lmsi: Language Model Self-Improvement (Huang et al. 2022, "Large Language Models Can Self-Improve").
//!
//! The stages of the method, each usable on its own and each behind a subcommand of the `lmsi` program:
//!
//! - [`generate::generate_paths`] (`lmsi generate`): sample chain-of-thought paths for every question.
//! - [`vote::vote_paths`] (`lmsi vote`): extract every sampled path's answer and keep each question's
//!   majority (self-consistent) answer, with its confidence.
//! - [`build_data::build_examples`] (`lmsi build-data`): every path that reaches its question's majority
//!   answer becomes training data in the paper's four "mixed formats" (or, for the objectives that
//!   came after the paper, [`build_data::build_weighted_examples`] and [`build_data::build_pairs`]).
//! - [`train::train`] (`lmsi train`): fine-tune with lmsi-adamw's `Trainer`, loss on the completion
//!   only, checkpoints in Hugging Face layout; this crate wires the data, batches and logs to it.
//!   [`train::train_pairs`] trains on preference pairs with DPO; [`losses`] has the losses.
//! - [`objective`]: what a round trains toward (`sft`, `weighted`, `scpo`, `ttrl`); [`ttrl`] is the
//!   online loop; [`stop_rule`] stops a loop that goes wrong (a probe set, or a label-free rule).
//! - [`eval::evaluate`] (`lmsi eval`): greedy or self-consistency accuracy on a labelled test set;
//!   [`suite`] (`lmsi eval --suite`) runs several datasets into one table.
//! - [`shard`] (`--shard I/N`, `lmsi merge`): `generate` and `eval` split by question id across jobs,
//!   and their outputs joined into exactly what one job writes.
//! - [`run::run`] (`lmsi run`): the whole loop in a resumable run directory, with reports and plots;
//!   [`embedded`] holds its default (the seed model built by [`seed`] and the task's data).
//! - [`allocator::keep_freed_memory`]: the C allocator's settings that the `lmsi` program, its
//!   examples and the benchmarks start with.
//!
//! ```
//! use lmsi::vote::{vote_paths, VoteOptions};
//! use lmsi_data::PathRecord;
//!
//! let path = |k: usize, text: &str| PathRecord {
//!     id: "q1".into(), question: "What is 2 + 3?".into(), path: k, text: text.into(),
//!     answer: None, logprob: -1.0, tokens: 4, gold: Some("5".into()),
//! };
//! let paths = [path(0, "2 + 3 = 5. The answer is 5."), path(1, "The answer is 6."),
//!              path(2, "2 + 3 = 5, so the answer is 5.")];
//! let (votes, summary) = vote_paths(&paths, &VoteOptions::default()).unwrap();
//! assert_eq!(votes[0].answer.as_deref(), Some("5"));
//! assert_eq!(votes[0].paths, vec![0, 2]);
//! assert_eq!(summary.accuracy(), Some(1.0));
//! ```

pub mod allocator;
pub mod build_data;
pub mod embedded;
pub mod eval;
pub mod fingerprint;
pub mod generate;
pub mod losses;
pub mod metrics;
pub mod objective;
pub mod outputs;
pub mod plot;
pub mod run;
pub mod seed;
pub mod self_exemplars;
pub mod shard;
pub mod signals;
pub mod stop_rule;
pub mod suite;
pub mod train;
pub mod ttrl;
pub mod vote;

use std::path::{Path, PathBuf};

/// Errors of the pipeline's stages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Data(#[from] lmsi_data::DataError),
    #[error(transparent)]
    Model(#[from] lmsi_transformer::Error),
    /// A file or directory that could not be read, written or created.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file of lmsi's own (a run manifest, a report, a trainer state, optimizer moments) that does
    /// not parse; `line` where the format has lines.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Format {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// A non-finite loss or gradient norm; the output keeps its last good checkpoint.
    #[error("training diverged at step {step}: {what}; {} keeps its last good checkpoint", out.display())]
    Diverged {
        step: u64,
        what: String,
        out: PathBuf,
    },
    /// A run or training output asked to resume with something other than what it started with.
    #[error("{} {what}", path.display())]
    ResumeMismatch { path: PathBuf, what: String },
    /// An output that must not be written where it was asked for: it would overwrite or delete an
    /// input, it is a directory, or it already holds a checkpoint.
    #[error("{message}")]
    Output { output: PathBuf, message: String },
    /// An option out of its range, named as on the command line.
    #[error("{option} must be {expected} (got {value})")]
    InvalidOption {
        option: &'static str,
        expected: &'static str,
        value: String,
    },
    /// Inputs that are well-formed but cannot be used (inconsistent files, nothing to work on).
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks that option `option` holds `value`, which must be `expected` (`ok` says whether it is).
pub(crate) fn check_option<T: std::fmt::Display>(
    option: &'static str,
    value: T,
    expected: &'static str,
    ok: impl FnOnce(&T) -> bool,
) -> Result<(), Error> {
    if ok(&value) {
        return Ok(());
    }
    Err(Error::InvalidOption {
        option,
        expected,
        value: value.to_string(),
    })
}

/// Reads a JSON file of lmsi's own.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        line: Some(e.line()),
        message: e.to_string(),
    })
}
