//! The crate's error type: parsing the names of kinds, weightings and stopping rules.

/// A name or parameter that could not be parsed (from a command line, a config file, ...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The name is not one of the known ones.
    #[error("unknown {what} `{value}` (expected one of: {expected})")]
    Unknown {
        /// What was being parsed, e.g. "answer kind".
        what: &'static str,
        /// The text that was given.
        value: String,
        /// The accepted names, comma separated.
        expected: &'static str,
    },
    /// The name is known but its parameter is not valid.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidParameter {
        /// What was being parsed, e.g. "early stopping rule".
        what: &'static str,
        /// The text that was given.
        value: String,
        /// What the parameter must be.
        reason: &'static str,
    },
}
