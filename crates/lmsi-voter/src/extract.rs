//! Reading the final answer out of a completion, as a canonical key that equal answers share.

use std::cmp::Reverse;
use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::markers::{answer_spans, is_word};
use crate::normalize::{normalize_text, normalized_words};
use crate::number::{Found, last_number, number_at};

/// Where a completion ends by default: the model going on to write the next few-shot question.
pub const DEFAULT_STOP_MARKERS: &[&str] = &["\nQ:", "\nQuestion:"];

/// Letters that are valid choices when no option texts are given.
const DEFAULT_LETTERS: usize = 5;

/// What kind of answer the questions have, which decides how answers are read and compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum AnswerKind {
    /// A number (GSM8K and other arithmetic word problems); key: the exact value.
    #[default]
    Number,
    /// A multiple-choice letter; key: the upper-case letter.
    Choice,
    /// Yes or no; key: `yes` or `no`.
    YesNo,
    /// Free text; key: the SQuAD-normalised text.
    Text,
}

impl AnswerKind {
    /// Every kind, in the order of their names in [`AnswerKind::NAMES`].
    pub const ALL: [AnswerKind; 4] = [
        AnswerKind::Number,
        AnswerKind::Choice,
        AnswerKind::YesNo,
        AnswerKind::Text,
    ];

    /// The names accepted by [`FromStr`] and written by [`Display`](fmt::Display).
    pub const NAMES: &str = "number, choice, yesno, text";

    /// The kind's name: `number`, `choice`, `yesno` or `text`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerKind::Number => "number",
            AnswerKind::Choice => "choice",
            AnswerKind::YesNo => "yesno",
            AnswerKind::Text => "text",
        }
    }
}

impl fmt::Display for AnswerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AnswerKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| ParseError::Unknown {
                what: "answer kind",
                value: s.to_string(),
                expected: Self::NAMES,
            })
    }
}

/// Reads the final answer of completions of one [`AnswerKind`].
///
/// See the [crate documentation](crate) for the exact rules.
///
/// ```
/// use lmsi_voter::{AnswerKind, Extractor};
///
/// let numbers = Extractor::new(AnswerKind::Number);
/// let text = "Natalie has 3 + 4 = 7 pens. The answer is 7.\n\nQ: Tom has 9 pens. The answer is 9.";
/// assert_eq!(numbers.extract(text).as_deref(), Some("7"));
/// assert_eq!(numbers.extract("#### 1,234").as_deref(), Some("1234"));
/// // `####` beats prose markers, and the last prose marker beats earlier ones.
/// let gsm8k = "so the answer is 3 boxes * 4 cans / box = 12 cans\n#### 12";
/// assert_eq!(numbers.extract(gsm8k).as_deref(), Some("12"));
/// let closing = "so the answer is 3 boxes * 4 cans / box = 12 cans. The answer is 12.";
/// assert_eq!(numbers.extract(closing).as_deref(), Some("12"));
/// assert_eq!(numbers.extract("so x = \\boxed{3/4}").as_deref(), Some("0.75"));
///
/// let choices = Extractor::new(AnswerKind::Choice)
///     .with_choices(vec!["London".into(), "Paris".into()]);
/// assert_eq!(choices.extract("The capital is Paris, so the answer is Paris.").as_deref(), Some("B"));
/// ```
#[derive(Clone, Debug)]
pub struct Extractor {
    kind: AnswerKind,
    stop_markers: Vec<String>,
    /// The normalised words of each option, in order A, B, C, ...
    options: Vec<Vec<String>>,
}

impl Extractor {
    /// An extractor for `kind` that cuts completions at [`DEFAULT_STOP_MARKERS`].
    pub fn new(kind: AnswerKind) -> Self {
        Self {
            kind,
            stop_markers: DEFAULT_STOP_MARKERS.iter().map(|m| m.to_string()).collect(),
            options: Vec::new(),
        }
    }

    /// Replaces the stop markers. Empty markers are ignored; no markers keeps whole completions.
    pub fn with_stop_markers(mut self, markers: Vec<String>) -> Self {
        self.stop_markers = markers.into_iter().filter(|m| !m.is_empty()).collect();
        self
    }

    /// The question's option texts, in order A, B, C, ... (at most 26 are used).
    ///
    /// With options, the valid letters are the first `choices.len()` letters instead of A–E, and a
    /// `choice` answer may also be given as an option's text. Other kinds ignore the options.
    pub fn with_choices(mut self, choices: Vec<String>) -> Self {
        self.options = choices
            .iter()
            .take(26)
            .map(|c| normalized_words(c).collect())
            .collect();
        self
    }

    /// The kind of answer this extractor reads.
    pub fn kind(&self) -> AnswerKind {
        self.kind
    }

    /// The part of `text` that counts: everything before the first stop marker.
    ///
    /// A completion that begins with a stop marker, or with one without its leading whitespace
    /// (`"Q: ..."` for the marker `"\nQ:"`), after optional leading whitespace, wrote no answer of its
    /// own: the result is empty.
    pub fn truncate<'a>(&self, text: &'a str) -> &'a str {
        let starts_with_marker = |m: &String| {
            let bare = m.trim_start();
            !bare.is_empty() && text.trim_start().starts_with(bare)
        };
        if self.stop_markers.iter().any(starts_with_marker) {
            return "";
        }
        let end = self
            .stop_markers
            .iter()
            .filter_map(|m| text.find(m.as_str()))
            .min();
        &text[..end.unwrap_or(text.len())]
    }

    /// The canonical answer key of a completion, or `None` when no answer can be extracted.
    ///
    /// Keys of equal answers are equal strings, so they can be voted on and compared with the key
    /// of a gold answer read by the same extractor.
    pub fn extract(&self, text: &str) -> Option<String> {
        let text = self.truncate(text);
        match self.kind {
            AnswerKind::Number => number(text),
            AnswerKind::Choice => self.choice(text),
            AnswerKind::YesNo => yes_no(text),
            AnswerKind::Text => free_text(text),
        }
    }

    /// The key of a gold answer as this extractor reads it: extracted like a completion's, or the
    /// gold text as written when no answer can be extracted from it.
    pub fn gold_key(&self, gold: &str) -> String {
        self.extract(gold).unwrap_or_else(|| gold.to_string())
    }

    /// Whether an answer key (a vote, or one path's answer) is the gold answer: the one test of
    /// correctness that voting, evaluation and the loop's reports share.
    ///
    /// ```
    /// use lmsi_voter::{AnswerKind, Extractor};
    ///
    /// let numbers = Extractor::new(AnswerKind::Number);
    /// assert!(numbers.is_correct(Some("42"), "6 * 7 = 42\n#### 42"));
    /// assert!(!numbers.is_correct(None, "42"));
    /// ```
    pub fn is_correct(&self, answer: Option<&str>, gold: &str) -> bool {
        answer.is_some_and(|a| a == self.gold_key(gold))
    }

    fn choice(&self, text: &str) -> Option<String> {
        let letters = if self.options.is_empty() {
            DEFAULT_LETTERS
        } else {
            self.options.len()
        };
        let valid = |c: char| c.is_ascii_uppercase() && usize::from(c as u8 - b'A') < letters;
        answer_spans(text)
            .into_iter()
            .find_map(|span| {
                let rest = skip_choice_filler(span);
                parenthesised_letter(rest, true)
                    .filter(|&c| valid(c))
                    // The raw span too: an option's text may itself begin with "option".
                    .or_else(|| self.option_at(span))
                    .or_else(|| self.option_at(rest))
                    .or_else(|| bare_letter(rest).filter(|&c| valid(c)))
            })
            .or_else(|| last_letter(text, valid))
            .or_else(|| self.whole_choice(text, valid))
            .map(String::from)
    }

    /// The letter of the longest option whose text `span` starts with (earliest option on ties).
    fn option_at(&self, span: &str) -> Option<char> {
        let longest = self.options.iter().map(Vec::len).max()?;
        let words: Vec<String> = normalized_words(span).take(longest).collect();
        let (index, _) = self
            .options
            .iter()
            .enumerate()
            .filter(|(_, option)| !option.is_empty() && words.starts_with(option))
            .max_by_key(|(index, option)| (option.len(), Reverse(*index)))?;
        Some(letter(index))
    }

    /// A completion that is only a letter (`B`, `(b)`, `B.`) or only an option's text.
    fn whole_choice(&self, text: &str, valid: impl Fn(char) -> bool) -> Option<char> {
        let bare = text.trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation());
        let mut chars = bare.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            let c = c.to_ascii_uppercase();
            return valid(c).then_some(c);
        }
        let words: Vec<String> = normalized_words(text).collect();
        let index = self
            .options
            .iter()
            .position(|o| !o.is_empty() && *o == words)?;
        Some(letter(index))
    }
}

fn letter(index: usize) -> char {
    char::from(b'A' + u8::try_from(index).expect("at most 26 options are kept"))
}

/// `number`: the number after the winning answer marker (the first of [`answer_spans`]'s order
/// that is followed by one), else the last number in the text.
fn number(text: &str) -> Option<String> {
    let found: Found = answer_spans(text)
        .into_iter()
        .find_map(|span| number_at(skip_number_filler(span)))
        .or_else(|| last_number(text))?;
    // A number too large to represent exactly gives no answer rather than a wrong one.
    found.value.map(|value| value.to_string())
}

/// Skips what may stand between a marker and its number: spaces, `:`, `=`, `*`, brackets, quotes,
/// `~`, `$` (LaTeX math or a currency sign, neither of which changes the value), `\(` and `\[`.
fn skip_number_filler(span: &str) -> &str {
    let mut rest = span;
    loop {
        let trimmed = rest
            .trim_start_matches(|c: char| c.is_whitespace() || ":=*([{\"'`~$“”‘’".contains(c))
            .trim_start_matches("\\(")
            .trim_start_matches("\\[");
        if trimmed.len() == rest.len() {
            return rest;
        }
        rest = trimmed;
    }
}

/// Skips what may stand between a marker and a choice: spaces, `:`, `=`, `*`, `[`, `{`, quotes, `$`
/// and the words `option` / `choice`. An opening parenthesis is kept: it is part of `(B)`.
fn skip_choice_filler(span: &str) -> &str {
    let mut rest = span;
    loop {
        let mut trimmed =
            rest.trim_start_matches(|c: char| c.is_whitespace() || ":=*[{\"'`$“”‘’".contains(c));
        for word in ["option", "choice"] {
            if trimmed
                .get(..word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
                && trimmed[word.len()..].starts_with(char::is_whitespace)
            {
                trimmed = &trimmed[word.len()..];
            }
        }
        if trimmed.len() == rest.len() {
            return rest;
        }
        rest = trimmed;
    }
}

/// `(X)` at the start of `s`, as an upper-case letter; lower case `(b)` only if `any_case`.
fn parenthesised_letter(s: &str, any_case: bool) -> Option<char> {
    let b = s.as_bytes();
    let c = char::from(*b.get(1)?);
    let ok = b[0] == b'(' && b.get(2) == Some(&b')') && c.is_ascii_alphabetic();
    (ok && (any_case || c.is_ascii_uppercase())).then(|| c.to_ascii_uppercase())
}

/// An upper-case letter at the start of `s` that is a word of its own (`B`, `B)`, `B.`).
fn bare_letter(s: &str) -> Option<char> {
    let mut chars = s.chars();
    let c = chars.next().filter(char::is_ascii_uppercase)?;
    (!chars.next().is_some_and(is_word)).then_some(c)
}

/// The last `(X)` or `X)` in `text` with a valid upper-case `X` that does not follow a word character
/// (so `P(A)` and `AB)` are not choices).
fn last_letter(text: &str, valid: impl Fn(char) -> bool) -> Option<char> {
    let b = text.as_bytes();
    (0..b.len()).rev().find_map(|i| {
        let c = char::from(b[i]);
        if !(valid(c) && b.get(i + 1) == Some(&b')')) {
            return None;
        }
        let before = if i > 0 && b[i - 1] == b'(' { i - 1 } else { i };
        // `before` indexes an ASCII byte (the letter or its parenthesis), so it is a char boundary.
        (!text[..before].chars().next_back().is_some_and(is_word)).then_some(c)
    })
}

/// `yesno`: the first word after the winning answer marker (the first of [`answer_spans`]'s order
/// that is followed by one), else the last yes/no word of the text. `true` / `false` count as yes /
/// no.
fn yes_no(text: &str) -> Option<String> {
    answer_spans(text)
        .into_iter()
        .find_map(|span| {
            let span = span.trim_start_matches(|c: char| !c.is_alphanumeric());
            let word = span.split(|c: char| !c.is_alphanumeric()).next()?;
            yes_no_word(word)
        })
        .or_else(|| {
            text.split(|c: char| !c.is_alphanumeric())
                .rev()
                .find_map(yes_no_word)
        })
        .map(String::from)
}

fn yes_no_word(word: &str) -> Option<&'static str> {
    // Checking the length first keeps this cheap on long words.
    if word.len() > 5 {
        return None;
    }
    match word.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some("yes"),
        "no" | "false" => Some("no"),
        _ => None,
    }
}

/// `text`: the normalised clause after the winning answer marker (the first of [`answer_spans`]'s
/// order that has a non-empty one), else the whole normalised text.
fn free_text(text: &str) -> Option<String> {
    answer_spans(text)
        .into_iter()
        .map(|span| normalize_text(first_clause(span)))
        .find(|key| !key.is_empty())
        .or_else(|| Some(normalize_text(text)).filter(|key| !key.is_empty()))
}

/// `span` up to its first line break or sentence end (`.`, `!` or `?` followed by whitespace).
fn first_clause(span: &str) -> &str {
    let b = span.as_bytes();
    let end = (0..b.len()).find(|&i| {
        b[i] == b'\n'
            || (matches!(b[i], b'.' | b'!' | b'?')
                && b.get(i + 1).is_some_and(u8::is_ascii_whitespace))
    });
    &span[..end.unwrap_or(b.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in AnswerKind::ALL {
            assert_eq!(kind.to_string().parse::<AnswerKind>(), Ok(kind));
        }
        assert_eq!(AnswerKind::default(), AnswerKind::Number);
        let err = "numbers".parse::<AnswerKind>().unwrap_err().to_string();
        assert!(
            err.contains("`numbers`") && err.contains("number, choice, yesno, text"),
            "{err}"
        );
    }

    #[test]
    fn clauses() {
        assert_eq!(first_clause(" Paris. It is big"), " Paris");
        assert_eq!(first_clause(" 3.5 km"), " 3.5 km");
        assert_eq!(first_clause(" Paris\nmore"), " Paris");
        assert_eq!(first_clause(" Paris!"), " Paris!");
    }

    #[test]
    fn letters() {
        assert_eq!(parenthesised_letter("(b) x", true), Some('B'));
        assert_eq!(parenthesised_letter("(b) x", false), None);
        assert_eq!(parenthesised_letter("(B", true), None);
        assert_eq!(bare_letter("B) x"), Some('B'));
        assert_eq!(bare_letter("Be"), None);
        assert_eq!(bare_letter("b"), None);
        let valid = |c: char| ('A'..='E').contains(&c);
        assert_eq!(last_letter("(A) then B) and P(C)", valid), Some('B'));
        assert_eq!(last_letter("é(D)", valid), None);
        assert_eq!(last_letter("(F)", valid), None);
    }
}
