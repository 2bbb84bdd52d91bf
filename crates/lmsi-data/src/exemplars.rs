//! Few-shot exemplar sets: the built-in one, and loading one from a file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::jsonl::{BadLines, read_records};
use crate::records::string_or_number;

/// The built-in exemplars: arithmetic word problems written for this project, in the style of
/// the synthetic generator.
const BUILTIN: &str = include_str!("exemplars.jsonl");

/// One worked example: a question, its reasoning and its final answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exemplar {
    /// The question.
    pub question: String,
    /// The reasoning, without the final "The answer is ..." sentence (one is added when a
    /// prompt is built, and a trailing one here is not repeated).
    pub reasoning: String,
    /// The final answer, e.g. `15`.
    pub answer: String,
}

/// A non-empty list of exemplars, in prompt order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Exemplar>", into = "Vec<Exemplar>")]
pub struct ExemplarSet {
    exemplars: Vec<Exemplar>,
}

impl TryFrom<Vec<Exemplar>> for ExemplarSet {
    type Error = DataError;

    fn try_from(exemplars: Vec<Exemplar>) -> Result<Self, DataError> {
        ExemplarSet::new(exemplars)
    }
}

impl From<ExemplarSet> for Vec<Exemplar> {
    fn from(set: ExemplarSet) -> Self {
        set.exemplars
    }
}

impl ExemplarSet {
    /// The built-in set: eight arithmetic word problems of 1 to 4 steps covering `+ - * /`,
    /// written for this project in the synthetic generator's style and vocabulary.
    ///
    /// ```
    /// let set = lmsi_data::ExemplarSet::builtin();
    /// assert_eq!(set.exemplars().len(), 8);
    /// ```
    pub fn builtin() -> Self {
        let exemplars = BUILTIN
            .lines()
            .map(|line| {
                // The file is part of the crate and checked by the tests below.
                serde_json::from_str(line).expect("the built-in exemplars are valid JSONL")
            })
            .collect();
        ExemplarSet { exemplars }
    }

    /// Loads exemplars from a JSONL file. Each line is either
    /// `{"question": ..., "reasoning": ..., "answer": ...}` or GSM8K style
    /// `{"question": ..., "answer": "reasoning ...\n#### N"}`.
    ///
    /// For GSM8K-style lines the reasoning is the text before the last `####` and the answer
    /// the text after it; GSM8K's calculator annotations (`<<48/2=24>>`) are removed from the
    /// reasoning. Every field must be non-blank and the file must hold at least one exemplar
    /// ([`DataError::Empty`] otherwise). Errors name the file and line.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let loaded = read_records(path, BadLines::Error, |_, raw: RawExemplar| raw.check())?;
        if loaded.items.is_empty() {
            return Err(DataError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(ExemplarSet {
            exemplars: loaded.items,
        })
    }

    /// A set of the given exemplars: at least one, each with a non-blank question, reasoning and
    /// answer ([`DataError::Exemplars`] otherwise).
    pub fn new(exemplars: Vec<Exemplar>) -> Result<Self, DataError> {
        if exemplars.is_empty() {
            return Err(DataError::Exemplars(
                "an exemplar set needs at least one exemplar".into(),
            ));
        }
        for (index, exemplar) in exemplars.iter().enumerate() {
            if let Some(field) = blank_field(exemplar) {
                return Err(DataError::Exemplars(format!(
                    "exemplar {}: empty {field:?}",
                    index + 1
                )));
            }
        }
        Ok(ExemplarSet { exemplars })
    }

    /// The first `n` exemplars (all of them when there are fewer); `n` must be at least 1.
    /// Small models have short contexts, and the prefix grows with every exemplar.
    pub fn first(&self, n: usize) -> Result<Self, DataError> {
        if n == 0 {
            return Err(DataError::Exemplars(
                "an exemplar set needs at least one exemplar".into(),
            ));
        }
        Ok(ExemplarSet {
            exemplars: self.exemplars.iter().take(n).cloned().collect(),
        })
    }

    /// The exemplars, in prompt order (never empty).
    pub fn exemplars(&self) -> &[Exemplar] {
        &self.exemplars
    }
}

fn blank_field(exemplar: &Exemplar) -> Option<&'static str> {
    [
        ("question", &exemplar.question),
        ("reasoning", &exemplar.reasoning),
        ("answer", &exemplar.answer),
    ]
    .into_iter()
    .find(|(_, value)| value.trim().is_empty())
    .map(|(name, _)| name)
}

/// An exemplar line as written: `reasoning` may be missing when `answer` is GSM8K style.
#[derive(Deserialize)]
struct RawExemplar {
    question: String,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    answer: String,
}

impl RawExemplar {
    fn check(self) -> Result<Exemplar, String> {
        let (reasoning, answer) = match (self.reasoning, self.answer.rfind("####")) {
            (Some(reasoning), Some(at)) => (reasoning, self.answer[at + 4..].to_owned()),
            (Some(reasoning), None) => (reasoning, self.answer),
            (None, Some(at)) => (
                self.answer[..at].to_owned(),
                self.answer[at + 4..].to_owned(),
            ),
            (None, None) => {
                return Err(
                    "no \"reasoning\", and \"answer\" has no \"#### N\" line to split it from"
                        .into(),
                );
            }
        };
        let exemplar = Exemplar {
            question: self.question.trim().to_owned(),
            reasoning: strip_calculator_annotations(&reasoning).trim().to_owned(),
            answer: answer.trim().to_owned(),
        };
        match blank_field(&exemplar) {
            Some(field) => Err(format!("empty {field:?}")),
            None => Ok(exemplar),
        }
    }
}

/// Removes GSM8K calculator annotations: `48/2 = <<48/2=24>>24` becomes `48/2 = 24`.
fn strip_calculator_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("<<") {
        let Some(close) = rest[open..].find(">>") else {
            break;
        };
        out.push_str(&rest[..open]);
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::equations;

    #[test]
    fn builtin_arithmetic_is_right_and_answers_are_the_last_result() {
        let set = ExemplarSet::builtin();
        assert!(set.exemplars().len() >= 8);
        assert_eq!(ExemplarSet::new(set.exemplars().to_vec()).unwrap(), set);
        let mut steps_seen = Vec::new();
        let mut ops_seen = Vec::new();
        for exemplar in set.exemplars() {
            let found = equations(&exemplar.reasoning);
            assert!(
                !found.is_empty(),
                "no arithmetic in {:?}",
                exemplar.reasoning
            );
            for equation in &found {
                assert!(equation.holds(), "{equation:?} in {:?}", exemplar.reasoning);
                ops_seen.push(equation.op);
            }
            assert_eq!(exemplar.answer, found.last().unwrap().result.to_string());
            assert!(!exemplar.reasoning.contains("The answer is"));
            assert!(exemplar.question.ends_with('?'));
            assert!((1..=4).contains(&found.len()), "{:?}", exemplar.question);
            steps_seen.push(found.len());
        }
        for op in ['+', '-', '*', '/'] {
            assert!(ops_seen.contains(&op), "no exemplar uses {op}");
        }
        for steps in 1..=4 {
            assert!(
                steps_seen.contains(&steps),
                "no exemplar with {steps} steps"
            );
        }
    }

    #[test]
    fn loads_both_line_styles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exemplars.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"question": "Q1?", "reasoning": "R1.", "answer": "1"}"#,
                "\n\n",
                r#"{"question": "Q2?", "answer": "Half of 48 is 48/2 = <<48/2=24>>24.\nSo 24.\n#### 24"}"#,
                "\n",
                r#"{"question": "Q3?", "reasoning": "R3.", "answer": 3}"#,
                "\n",
            ),
        )
        .unwrap();
        let set = ExemplarSet::load(&path).unwrap();
        let got: Vec<_> = set
            .exemplars()
            .iter()
            .map(|e| (e.question.as_str(), e.reasoning.as_str(), e.answer.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Q1?", "R1.", "1"),
                ("Q2?", "Half of 48 is 48/2 = 24.\nSo 24.", "24"),
                ("Q3?", "R3.", "3"),
            ]
        );
    }

    #[test]
    fn bad_files_are_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ex.jsonl");
        let cases = [
            (
                "{\"question\": \"Q?\", \"answer\": \"5\"}\n",
                "ex.jsonl:1: no \"reasoning\"",
            ),
            (
                "\n{\"question\": \"Q?\", \"reasoning\": \" \", \"answer\": \"5\"}\n",
                "ex.jsonl:2: empty \"reasoning\"",
            ),
            (
                "{\"question\": \"Q?\", \"answer\": \"work\\n####\"}\n",
                "ex.jsonl:1: empty \"answer\"",
            ),
            ("{\"question\": \"Q?\"", "ex.jsonl:1: EOF while parsing"),
            ("\n \n", "ex.jsonl: no records"),
        ];
        for (content, expected) in cases {
            std::fs::write(&path, content).unwrap();
            let message = ExemplarSet::load(&path).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn new_and_first_reject_empty_sets_and_fields() {
        assert!(matches!(
            ExemplarSet::new(vec![]),
            Err(DataError::Exemplars(_))
        ));
        let blank = Exemplar {
            question: "Q?".into(),
            reasoning: "R.".into(),
            answer: " ".into(),
        };
        let err = ExemplarSet::new(vec![blank]).unwrap_err().to_string();
        assert_eq!(err, "exemplars: exemplar 1: empty \"answer\"");
        let set = ExemplarSet::builtin();
        assert_eq!(set.first(3).unwrap().exemplars(), &set.exemplars()[..3]);
        assert_eq!(set.first(100).unwrap(), set);
        assert!(set.first(0).is_err());
    }

    #[test]
    fn calculator_annotations_are_removed() {
        assert_eq!(
            strip_calculator_annotations("a <<1+1=2>>2 b <<x"),
            "a 2 b <<x"
        );
    }
}
