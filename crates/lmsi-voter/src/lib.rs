//! Self-consistency on plain text: read the final answer out of sampled completions, vote on the
//! answers, and decide when enough paths have been sampled.
//!
//! The crate has no machine-learning dependencies; it works on any strings. It is the voting half
//! of *Large Language Models Can Self-Improve* (Huang et al. 2022): sample many chain-of-thought
//! paths per question, keep the majority answer, and use `votes / valid paths` as the confidence.
//!
//! ```
//! use lmsi_voter::{AnswerKind, Ballot, Extractor, Weighting, vote};
//!
//! let completions = [
//!     "3 + 4 = 7 pens. The answer is 7.\n\nQ: Tom has 9 pens. The answer is 9.",
//!     "She has 7.0 pens in total. The answer is $7.",
//!     "3 * 4 = 12. The answer is 12 pens.",
//!     "I am not sure.",
//! ];
//! let extractor = Extractor::new(AnswerKind::Number);
//! let ballots: Vec<Ballot> =
//!     completions.iter().map(|c| Ballot::new(extractor.extract(c), -0.3)).collect();
//!
//! let result = vote(&ballots, Weighting::Uniform);
//! assert_eq!(result.answer.as_deref(), Some("7"));
//! assert_eq!((result.votes, result.valid, result.total), (2, 3, 4));
//! assert_eq!(result.paths, [0, 1]);
//! assert!((result.confidence - 2.0 / 3.0).abs() < 1e-12);
//! ```
//!
//! # Extraction rules
//!
//! [`Extractor::extract`] turns a completion into a canonical *key*, a string that equal answers
//! share, or `None` when the completion has no answer. It also reads gold labels (`"#### 18"`,
//! `"B"`, `"yes"`), so that a vote is judged by comparing keys.
//!
//! **Where a completion ends.** Only the text before the first *stop marker* counts, so a
//! completion that goes on to write the next few-shot question and answer it does not have that
//! later answer read. The defaults are [`DEFAULT_STOP_MARKERS`] (`"\nQ:"` and `"\nQuestion:"`),
//! matched case-sensitively; [`Extractor::with_stop_markers`] replaces them. A completion that
//! *begins* (after optional whitespace) with a marker, or with a marker stripped of its leading
//! whitespace (`"Q: ..."`), wrote a new question instead of an answer: it has no answer.
//! [`Extractor::truncate`] returns the part that counts.
//!
//! **Answer markers.** `answer is` and `answer:` (any case; `answer` must start a word and `is` be a
//! whole word, so "the answer isn't 5" is no marker), `####` (GSM8K) and `\boxed{...}`. A marker's
//! answer must lie before the next marker, and a `\boxed{` answer inside its braces; a marker not
//! followed by an answer of the right kind ("the answer is unclear") is passed over. Of the markers
//! that are followed by one, the *winning* marker is:
//! 1. a *closing* marker, `####` or `\boxed{`, over any prose marker, `answer is` or `answer:`: a
//!    text writes the closing markers only for its final answer, while prose also says "the answer
//!    is 15 gallons * 8 = 120 pints" inside the reasoning, so "... the answer is 15 gallons * 8 =
//!    120 pints\n#### 120" reads 120;
//! 2. among markers of the same group, the *last* one: an explicit closing sentence ("... the
//!    answer is 15 gallons * 8 = 120 pints. The answer is 120.") beats an "answer is" earlier in
//!    the reasoning, and a correction ("The answer is 7. No wait, the answer is 8.") beats what it
//!    corrects.
//!
//! The markers are read only in the part of the completion that counts, so a model that answers and
//! goes on to write the next few-shot question and its answer ("The answer is 7.\n\nQ: Tom has 9
//! pens. The answer is 9.") is read as 7: the stop marker, not the order of the markers, keeps the
//! later answer out. When no marker gives an answer, each kind falls back as described below.
//!
//! **`number`** (GSM8K-style). The number right after the winning marker — only spaces, `:`, `=`,
//! `*`, brackets, quotes, `~`, `$`, `\(` and `\[` may stand between — else the *last* number in the
//! text.
//! A number is `[sign] [currency] [sign] body`:
//! - signs: `-`, `−` (U+2212) and `+`; currency signs `$`, `\$`, `€`, `£`, `¥` (ignored);
//! - body: digits with optional thousands separators in the strict shape `1,234,567` (otherwise
//!   the comma ends the number: `1,2,3` is three numbers), an optional fractional part (`18.5`,
//!   `.5`; a point must be followed by a digit, so in `18.` it is a full stop), optionally `/` and
//!   a second such body for a fraction (`3/4`, `1.5/2`; a zero denominator makes it no fraction:
//!   `5/0` reads `5`), or a LaTeX `\frac{3}{4}` (also `\dfrac`, `\tfrac`);
//! - whatever follows is ignored: units (`18 apples`, `5km`), `%` (`50%` is 50, not 0.5), a full stop;
//! - a number never starts right after a letter, digit or `_`: `abc123` and `H2O` contain no
//!   number (they are names, not quantities), while `3rd` reads 3.
//!
//! Values are exact rationals (`i128`): `18`, `18.0`, `$18` and `18.00` are one answer, and so are
//! `3/4`, `0.75` and `6/8`. The key is the value in lowest terms, printed as a plain decimal when it
//! terminates (`18`, `18.5`, `-0.75`) and as `p/q` otherwise (`1/3`, `-2/7`). A number too large or
//! too precise for `i128` gives no answer (never a wrong one, never a panic).
//!
//! **`choice`** (multiple choice). After the winning marker and optional filler (`:`, `*`, quotes,
//! the words `option` / `choice`): a letter in parentheses `(B)` or `(b)`; else, when option texts
//! were given with [`Extractor::with_choices`], an option's text (compared after the `text`
//! normalisation below; the longest matching option wins); else an upper-case letter standing alone
//! (`B`, `B)`, `B.`).
//! Without a marker: the last `(B)` or `B)` with an upper-case letter that does not follow a word
//! character (so `P(A)` is no choice); else a completion that is only a letter or only an option's
//! text. Valid letters are A–E, or one per option when options are given (at most 26). Key: the
//! upper-case letter.
//!
//! **`yesno`**. The first word after the winning marker, if it is `yes`/`no`/`true`/`false` (any
//! case; true and false count as yes and no); else the last such word in the text. Key: `yes` or
//! `no`.
//!
//! **`text`** (free-form). The text after the winning marker, up to the end of its line or sentence
//! (`.`, `!` or `?` followed by whitespace), else the whole text; normalised SQuAD-style by
//! [`normalize_text`]: lower case, punctuation removed, the articles `a`, `an`, `the` removed,
//! whitespace collapsed. An empty result is no answer.
//!
//! # Voting
//!
//! [`vote`] groups the [`Ballot`]s by answer key. With [`Weighting::Uniform`] every path with an
//! answer weighs 1 (majority vote); with [`Weighting::LogProb`] it weighs `exp(mean_logprob)`, a NaN
//! log-probability weighing 0. The answer with the highest summed weight wins; on equal weight, the
//! answer whose first path has the smallest index. Paths without an answer count in `total` but
//! not in `valid`; `confidence = votes / valid` (0 when no path has an answer, and then `answer` is
//! `None`). The result does not depend on the order of the ballots except through that tie rule.
//!
//! # Early stopping
//!
//! A [`StoppingRule`] watches a question's answers as they are sampled and says when to stop:
//! [`EarlyStoppingSc`] (stop after a unanimous window of `w` answers, default 5) and
//! [`AdaptiveConsistency`] (stop when the leading answer is the true majority with probability at
//! least 0.95 under a Beta posterior, after at least 2 valid answers). [`EarlyStop`] names them for
//! command lines: `esc`, `esc:W`, `adaptive`, `adaptive:T`.
//!
//! # Features
//!
//! `serde`: `Serialize` / `Deserialize` for [`AnswerKind`], [`Weighting`], [`Ballot`] and [`Vote`].

mod beta;
mod early_stop;
mod error;
mod extract;
mod markers;
mod normalize;
mod number;
mod vote;

pub use beta::regularized_incomplete_beta;
pub use early_stop::{
    AdaptiveConsistency, EarlyStop, EarlyStoppingSc, StoppingRule, majority_probability,
};
pub use error::ParseError;
pub use extract::{AnswerKind, DEFAULT_STOP_MARKERS, Extractor};
pub use normalize::normalize_text;
pub use vote::{Ballot, Vote, Weighting, vote};
