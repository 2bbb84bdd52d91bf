//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while reading, writing or making data.
///
/// Errors about a file name the file and, where there is one, the 1-based line:
/// `questions.jsonl:7: expected value at column 3`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened, read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (for atomic writes: the target, not the temporary file).
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A line is not valid JSON, or not the expected shape.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, e.g. `expected value at column 3`.
        message: String,
    },
    /// A line parses but its content is not acceptable (an empty question, a duplicate id, ...).
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, e.g. `empty "question"`.
        message: String,
    },
    /// A record of a dataset file (a JSONL line, an element of a JSON array, a parquet row) that
    /// cannot be used.
    #[error("{}: {record} {number}: {message}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// What a record is called in the file's format: `line`, `record` or `row`.
        record: &'static str,
        /// 1-based record number.
        number: usize,
        /// What is wrong.
        message: String,
    },
    /// The file holds no records where at least one is required.
    #[error("{}: no records (the file is empty, or every line was skipped)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// An item could not be serialised while writing a file; nothing was written.
    #[error("{}:{line}: cannot serialise record: {message}", path.display())]
    Serialize {
        /// The target file (left as it was).
        path: PathBuf,
        /// 1-based line the record would have had.
        line: usize,
        /// The serialiser's message.
        message: String,
    },
    /// An exemplar set is unusable (no exemplars, an empty field, ...).
    #[error("exemplars: {0}")]
    Exemplars(String),
    /// A prompt format name is not one of the four (or "all").
    #[error(
        "unknown prompt format {0:?} (expected \"all\" or a comma-separated list of \
         cot-fewshot, direct-fewshot, cot-zeroshot, direct-zeroshot)"
    )]
    UnknownFormat(String),
    /// A synthetic task configuration is out of range.
    #[error("synthetic task config: {0}")]
    Config(String),
    /// The synthetic generator could not find enough distinct problems.
    #[error(
        "could only make {made} distinct problems of the {requested} requested; \
         raise max_value or widen the range of steps"
    )]
    Exhausted {
        /// How many problems were asked for.
        requested: usize,
        /// How many distinct problems were found before giving up.
        made: usize,
    },
}
