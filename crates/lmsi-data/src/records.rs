//! The records of the JSONL files. Field names are the file format (the README's "File formats").

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::prompt::PromptFormat;

/// One question of a dataset: `{"id": "...", "question": "...", "answer": "...", "choices": [...]}`.
///
/// `id`, `answer` and `choices` are optional in the file. [`read_questions`](crate::read_questions)
/// gives a question without an id its 1-based line number as id (`"7"`); ids and answers may
/// also be JSON numbers, which are kept as their decimal text. GSM8K lines (`answer` ending in
/// `#### N`) load unchanged. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// Unique within a file. Deserialising a `Question` directly leaves a missing id empty;
    /// [`read_questions`](crate::read_questions) fills it in.
    #[serde(default, deserialize_with = "string_or_number")]
    pub id: String,
    /// The question text.
    pub question: String,
    /// The labelled answer, if any: a bare answer, or GSM8K-style reasoning ending in `#### N`.
    #[serde(
        default,
        deserialize_with = "optional_string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub answer: Option<String>,
    /// The options of a multiple-choice question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
}

impl Question {
    /// The gold answer: for GSM8K-style answers the text after the last `####`, otherwise the
    /// whole answer; trimmed. `None` when there is no answer or it is blank.
    ///
    /// ```
    /// use lmsi_data::Question;
    /// let q = Question {
    ///     id: "1".into(),
    ///     question: "What is 2 + 3?".into(),
    ///     answer: Some("2 + 3 = 5.\n#### 5".into()),
    ///     choices: None,
    /// };
    /// assert_eq!(q.gold(), Some("5"));
    /// ```
    pub fn gold(&self) -> Option<&str> {
        let answer = self.answer.as_deref()?;
        let gold = match answer.rfind("####") {
            Some(at) => &answer[at + "####".len()..],
            None => answer,
        }
        .trim();
        (!gold.is_empty()).then_some(gold)
    }
}

/// One sampled reasoning path:
/// `{"id", "question", "path": k, "text", "answer" (extracted, or null), "logprob", "tokens"}`,
/// plus `"gold"` when known.
///
/// `logprob` must be finite: JSON has no infinities, so a non-finite value would not read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathRecord {
    /// The question's id.
    pub id: String,
    /// The question text.
    pub question: String,
    /// Index of this path among the question's paths (0-based).
    pub path: usize,
    /// The generated text.
    pub text: String,
    /// The answer extracted from `text`, or `null` when none was found.
    pub answer: Option<String>,
    /// Sum of the log-probabilities of the generated tokens.
    pub logprob: f64,
    /// Number of generated tokens.
    pub tokens: usize,
    /// The question's gold answer, for reporting only; omitted when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<String>,
}

/// The vote over one question's paths:
/// `{"id", "question", "answer", "votes", "valid", "total", "confidence", "paths": [k...]}`,
/// plus `"gold"` when known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRecord {
    /// The question's id.
    pub id: String,
    /// The question text.
    pub question: String,
    /// The winning answer, or `null` when no path had an answer.
    pub answer: Option<String>,
    /// Paths that reached the winning answer.
    pub votes: usize,
    /// Paths that had any answer.
    pub valid: usize,
    /// All paths.
    pub total: usize,
    /// `votes / valid` (or the weighted equivalent).
    pub confidence: f64,
    /// Indices of the paths that reached the winning answer.
    pub paths: Vec<usize>,
    /// The question's gold answer, for reporting only; omitted when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<String>,
}

/// One fine-tuning example: `{"prompt": "...", "completion": "...", "format": "cot-fewshot"}`,
/// plus `"weight"` when it is not 1.
///
/// The loss is meant for `completion` only; `prompt + completion` is the full text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainExample {
    /// The prompt (exemplars, if any, and the question part).
    pub prompt: String,
    /// The target continuation.
    pub completion: String,
    /// Which of the four formats made it.
    pub format: PromptFormat,
    /// How much the example's loss counts (the weighted-likelihood objective: its answer's vote
    /// share); 1 when the file does not say.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: f64,
}

/// One preference pair of the ScPO objective:
/// `{"prompt", "chosen", "rejected", "weight", "format"}`: a completion with the most-voted answer
/// (`chosen`) against one with a less-voted answer (`rejected`), weighted by the vote margin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    /// The vote margin: the chosen answer's share of the question's answered paths minus the
    /// rejected one's (0 for a path without an answer).
    pub weight: f64,
    pub format: PromptFormat,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// Accepts a JSON string or number, keeping a number as its decimal text (datasets disagree on
/// whether ids and answers are strings).
struct StringOrNumber;

impl Visitor<'_> for StringOrNumber {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(StringOrNumber)
}

pub(crate) fn optional_string_or_number<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    struct Optional;

    impl<'de> Visitor<'de> for Optional {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, a number or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            string_or_number(d).map(Some)
        }
    }

    d.deserialize_option(Optional)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(answer: Option<&str>) -> Question {
        Question {
            id: "q".into(),
            question: "?".into(),
            answer: answer.map(str::to_owned),
            choices: None,
        }
    }

    #[test]
    fn gold_takes_the_text_after_the_last_marker() {
        assert_eq!(
            question(Some("a #### b\n#### 1,200 ")).gold(),
            Some("1,200")
        );
        assert_eq!(question(Some("  42\n")).gold(), Some("42"));
        assert_eq!(question(Some("work\n####  ")).gold(), None);
        assert_eq!(question(None).gold(), None);
    }

    #[test]
    fn ids_and_answers_may_be_numbers() {
        let q: Question =
            serde_json::from_str(r#"{"id": 17, "question": "x", "answer": 2.5}"#).unwrap();
        assert_eq!((q.id.as_str(), q.answer.as_deref()), ("17", Some("2.5")));
        let q: Question = serde_json::from_str(r#"{"question": "x", "answer": null}"#).unwrap();
        assert_eq!((q.id.as_str(), q.answer), ("", None));
        let err = serde_json::from_str::<Question>(r#"{"question": "x", "id": true}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a string or a number"), "{err}");
    }

    #[test]
    fn optional_fields_are_omitted_when_absent() {
        let json = serde_json::to_string(&question(None)).unwrap();
        assert_eq!(json, r#"{"id":"q","question":"?"}"#);
        let path = PathRecord {
            id: "q".into(),
            question: "?".into(),
            path: 0,
            text: "t".into(),
            answer: None,
            logprob: -1.5,
            tokens: 3,
            gold: None,
        };
        let json = serde_json::to_string(&path).unwrap();
        assert_eq!(
            json,
            r#"{"id":"q","question":"?","path":0,"text":"t","answer":null,"logprob":-1.5,"tokens":3}"#
        );
    }
}
