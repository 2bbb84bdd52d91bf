//! The four prompt formats of Huang et al. (2022), "Large Language Models Can Self-Improve".
//!
//! Every format is a prompt (a shared prefix and a per-question part) and a completion, the
//! training target. The exact text, with `{q}`, `{r}`, `{a}` the question, reasoning and answer:
//!
//! | format            | prefix: one block per exemplar              | question part                          | completion                   |
//! |-------------------|---------------------------------------------|----------------------------------------|------------------------------|
//! | `cot-fewshot`     | `Q: {q}\nA: {r} The answer is {a}.\n\n`     | `Q: {q}\nA:`                           | ` {r} The answer is {a}.`    |
//! | `direct-fewshot`  | `Q: {q}\nA: The answer is {a}.\n\n`         | `Q: {q}\nA:`                           | ` The answer is {a}.`        |
//! | `cot-zeroshot`    | (none: the prefix is empty)                 | `Q: {q}\nA: Let's think step by step.` | ` {r} The answer is {a}.`    |
//! | `direct-zeroshot` | (none: the prefix is empty)                 | `Q: {q}\nA:`                           | ` The answer is {a}.`        |
//!
//! So an exemplar block is exactly the question part followed by the completion and a blank
//! line, and a model that continues a few-shot prompt in kind writes a completion.
//!
//! Every inserted piece is normalised first: trimmed, with each run of whitespace (newlines
//! included) made one space, because a blank line inside an answer would look like its end.
//! An answer loses trailing periods (`15.` becomes `15`). When the reasoning already ends with
//! an answer sentence (from its last `The answer is` to the end, when that is its last
//! sentence), that sentence is replaced by the canonical one rather than repeated.
//!
//! Generation from these prompts should stop at [`DEFAULT_STOP_STRINGS`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::exemplars::ExemplarSet;
use crate::records::TrainExample;
use crate::text::normalize_whitespace;

/// The phrase that introduces the final answer in every completion.
pub const ANSWER_PHRASE: &str = "The answer is";

/// The zero-shot chain-of-thought trigger, appended after `A:` in `cot-zeroshot` prompts.
pub const LETS_THINK: &str = "Let's think step by step.";

/// Where generation from these prompts should stop (the stop string is not part of the answer).
///
/// - `"\n\n"`: the blank line that ends every exemplar block. Completions never contain a
///   newline, so a model that has finished its answer writes one next.
/// - `"\nQ:"`: the start of a new question, for a model that skips the blank line.
pub const DEFAULT_STOP_STRINGS: &[&str] = &["\n\n", "\nQ:"];

/// One of the four prompt formats ("mixed formats").
///
/// Written and parsed as `cot-fewshot`, `direct-fewshot`, `cot-zeroshot`, `direct-zeroshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptFormat {
    /// Few-shot chain-of-thought exemplars, then the question; the completion is a reasoning path.
    CotFewshot,
    /// Few-shot direct-answer exemplars, then the question; the completion is the answer only.
    DirectFewshot,
    /// The question and "Let's think step by step."; the completion is a reasoning path.
    CotZeroshot,
    /// The question alone; the completion is the answer only.
    DirectZeroshot,
}

/// A prompt: `prefix` (shared by every question of a run, so its computation can be shared)
/// followed by the per-question part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The few-shot exemplar blocks; empty for zero-shot formats.
    pub prefix: String,
    /// The question part, e.g. `Q: ...\nA:`.
    pub question: String,
}

impl Prompt {
    /// The full prompt text: `prefix + question`.
    pub fn text(&self) -> String {
        format!("{}{}", self.prefix, self.question)
    }
}

impl PromptFormat {
    /// The four formats, in the order of the paper's list.
    pub const ALL: [PromptFormat; 4] = [
        PromptFormat::CotFewshot,
        PromptFormat::DirectFewshot,
        PromptFormat::CotZeroshot,
        PromptFormat::DirectZeroshot,
    ];

    /// The name used in files and on the command line, e.g. `cot-fewshot`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PromptFormat::CotFewshot => "cot-fewshot",
            PromptFormat::DirectFewshot => "direct-fewshot",
            PromptFormat::CotZeroshot => "cot-zeroshot",
            PromptFormat::DirectZeroshot => "direct-zeroshot",
        }
    }

    /// Whether the completion is a reasoning path (rather than the answer alone).
    pub fn is_chain_of_thought(&self) -> bool {
        matches!(self, PromptFormat::CotFewshot | PromptFormat::CotZeroshot)
    }

    /// Whether the prompt starts with exemplars.
    pub fn is_few_shot(&self) -> bool {
        matches!(self, PromptFormat::CotFewshot | PromptFormat::DirectFewshot)
    }

    /// The prompt for `question`.
    ///
    /// ```
    /// use lmsi_data::{Exemplar, ExemplarSet, PromptFormat};
    /// let exemplars = ExemplarSet::new(vec![Exemplar {
    ///     question: "Ava has 2 cards. She buys 3 more cards. How many cards does Ava have now?".into(),
    ///     reasoning: "Ava starts with 2 cards. She buys 3 more, so she has 2 + 3 = 5 cards.".into(),
    ///     answer: "5".into(),
    /// }])?;
    /// let prompt = PromptFormat::CotFewshot.prompt(&exemplars, "What is 4 * 2?");
    /// assert_eq!(
    ///     prompt.text(),
    ///     "Q: Ava has 2 cards. She buys 3 more cards. How many cards does Ava have now?\n\
    ///      A: Ava starts with 2 cards. She buys 3 more, so she has 2 + 3 = 5 cards. The answer is 5.\n\
    ///      \n\
    ///      Q: What is 4 * 2?\nA:"
    /// );
    /// assert_eq!(PromptFormat::CotZeroshot.prompt(&exemplars, "What is 4 * 2?").text(),
    ///            "Q: What is 4 * 2?\nA: Let's think step by step.");
    /// # Ok::<(), lmsi_data::DataError>(())
    /// ```
    pub fn prompt(&self, exemplars: &ExemplarSet, question: &str) -> Prompt {
        Prompt {
            prefix: self.prefix(exemplars),
            question: self.question_part(question),
        }
    }

    /// The shared part of the prompt: the exemplar blocks for few-shot formats, else empty.
    pub fn prefix(&self, exemplars: &ExemplarSet) -> String {
        if !self.is_few_shot() {
            return String::new();
        }
        let mut prefix = String::new();
        for exemplar in exemplars.exemplars() {
            prefix.push_str(&self.question_part(&exemplar.question));
            prefix.push_str(&self.completion(&exemplar.reasoning, &exemplar.answer));
            prefix.push_str("\n\n");
        }
        prefix
    }

    /// The per-question part of the prompt: `Q: {question}\nA:` (with ` Let's think step by
    /// step.` for `cot-zeroshot`).
    pub fn question_part(&self, question: &str) -> String {
        let question = normalize_whitespace(question);
        match self {
            PromptFormat::CotZeroshot => format!("Q: {question}\nA: {LETS_THINK}"),
            _ => format!("Q: {question}\nA:"),
        }
    }

    /// The training target for this format: ` {reasoning} The answer is {answer}.` for
    /// chain-of-thought formats, ` The answer is {answer}.` otherwise (the reasoning is unused).
    ///
    /// ```
    /// use lmsi_data::PromptFormat;
    /// let reasoning = "She has 3 + 4 = 7 cards.\nThe answer is 7.";
    /// assert_eq!(PromptFormat::CotFewshot.completion(reasoning, "7"),
    ///            " She has 3 + 4 = 7 cards. The answer is 7.");
    /// assert_eq!(PromptFormat::DirectZeroshot.completion(reasoning, "7"), " The answer is 7.");
    /// ```
    pub fn completion(&self, reasoning: &str, answer: &str) -> String {
        let answer = normalize_answer(answer);
        let reasoning = if self.is_chain_of_thought() {
            reasoning_without_answer(&normalize_whitespace(reasoning))
        } else {
            String::new()
        };
        if reasoning.is_empty() {
            format!(" {ANSWER_PHRASE} {answer}.")
        } else {
            format!(" {reasoning} {ANSWER_PHRASE} {answer}.")
        }
    }

    /// A training example for this format: the full prompt text and the completion.
    pub fn train_example(
        &self,
        exemplars: &ExemplarSet,
        question: &str,
        reasoning: &str,
        answer: &str,
    ) -> TrainExample {
        TrainExample {
            prompt: self.prompt(exemplars, question).text(),
            completion: self.completion(reasoning, answer),
            format: *self,
            weight: 1.0,
        }
    }
}

fn normalize_answer(answer: &str) -> String {
    normalize_whitespace(answer)
        .trim_end_matches('.')
        .trim_end()
        .to_owned()
}

/// Drops a final answer sentence (from the last [`ANSWER_PHRASE`] to the end, when no other
/// sentence follows it) so the canonical one can be appended without repeating it.
fn reasoning_without_answer(reasoning: &str) -> String {
    let Some(at) = reasoning.rfind(ANSWER_PHRASE) else {
        return reasoning.to_owned();
    };
    let tail = reasoning[at + ANSWER_PHRASE.len()..].trim_end_matches('.');
    if [". ", "? ", "! "].iter().any(|end| tail.contains(end)) {
        return reasoning.to_owned();
    }
    reasoning[..at].trim_end().to_owned()
}

impl fmt::Display for PromptFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PromptFormat {
    type Err = DataError;

    /// Parses a format name; surrounding whitespace and letter case are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        PromptFormat::ALL
            .into_iter()
            .find(|format| format.as_str() == name)
            .ok_or_else(|| DataError::UnknownFormat(s.trim().to_owned()))
    }
}

/// Parses `"all"` or a comma-separated list of format names (e.g. `cot-fewshot,direct-zeroshot`).
///
/// Items are trimmed and case-insensitive; `all` may appear as an item; repeats are dropped,
/// keeping the first occurrence. An empty list or an unknown item is an error naming that item.
///
/// ```
/// use lmsi_data::{PromptFormat, parse_formats};
/// assert_eq!(parse_formats("all")?, PromptFormat::ALL);
/// assert_eq!(parse_formats("cot-zeroshot, cot-fewshot")?,
///            [PromptFormat::CotZeroshot, PromptFormat::CotFewshot]);
/// assert!(parse_formats("cot-fewshot,cot").unwrap_err().to_string().contains("\"cot\""));
/// # Ok::<(), lmsi_data::DataError>(())
/// ```
pub fn parse_formats(s: &str) -> Result<Vec<PromptFormat>, DataError> {
    let mut formats = Vec::new();
    for item in s.split(',') {
        let parsed = if item.trim().eq_ignore_ascii_case("all") {
            PromptFormat::ALL.to_vec()
        } else {
            vec![item.parse()?]
        };
        for format in parsed {
            if !formats.contains(&format) {
                formats.push(format);
            }
        }
    }
    Ok(formats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exemplars::Exemplar;

    fn two_exemplars() -> ExemplarSet {
        ExemplarSet::new(vec![
            Exemplar {
                question: "Q one?".into(),
                reasoning: "Step one.\nStep two.".into(),
                answer: "3".into(),
            },
            Exemplar {
                question: " Q  two? ".into(),
                reasoning: "Only step. The answer is 4.".into(),
                answer: "4".into(),
            },
        ])
        .unwrap()
    }

    #[test]
    fn every_format_has_the_documented_text() {
        let set = two_exemplars();
        let cases = [
            (
                PromptFormat::CotFewshot,
                "Q: Q one?\nA: Step one. Step two. The answer is 3.\n\n\
                 Q: Q two?\nA: Only step. The answer is 4.\n\n",
                "Q: New?\nA:",
                " R. The answer is 5.",
            ),
            (
                PromptFormat::DirectFewshot,
                "Q: Q one?\nA: The answer is 3.\n\nQ: Q two?\nA: The answer is 4.\n\n",
                "Q: New?\nA:",
                " The answer is 5.",
            ),
            (
                PromptFormat::CotZeroshot,
                "",
                "Q: New?\nA: Let's think step by step.",
                " R. The answer is 5.",
            ),
            (
                PromptFormat::DirectZeroshot,
                "",
                "Q: New?\nA:",
                " The answer is 5.",
            ),
        ];
        for (format, prefix, question, completion) in cases {
            let prompt = format.prompt(&set, "New?\n");
            assert_eq!(prompt.prefix, prefix, "{format}");
            assert_eq!(prompt.question, question, "{format}");
            assert_eq!(prompt.text(), format!("{prefix}{question}"));
            assert_eq!(format.completion("R.", "5"), completion, "{format}");
            let example = format.train_example(&set, "New?", "R.", "5");
            assert_eq!(example.prompt, prompt.text());
            assert_eq!(example.completion, completion);
            assert_eq!(example.format, format);
        }
    }

    #[test]
    fn an_existing_answer_sentence_is_not_repeated() {
        let cot = PromptFormat::CotFewshot;
        assert_eq!(
            cot.completion("a. The answer is 5.", "5"),
            " a. The answer is 5."
        );
        assert_eq!(
            cot.completion("a. The answer is 5", "5"),
            " a. The answer is 5."
        );
        assert_eq!(
            cot.completion("a. The answer is 5.0.", "5"),
            " a. The answer is 5."
        );
        assert_eq!(
            cot.completion("The answer is 5.", "5."),
            " The answer is 5."
        );
        assert_eq!(
            cot.completion("The answer is 5. Then more.", "5"),
            " The answer is 5. Then more. The answer is 5."
        );
        assert_eq!(cot.completion("", " 5 "), " The answer is 5.");
    }

    #[test]
    fn formats_parse_and_print() {
        for format in PromptFormat::ALL {
            assert_eq!(format.as_str().parse::<PromptFormat>().unwrap(), format);
            assert_eq!(format.to_string(), format.as_str());
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{format}\""));
            assert_eq!(serde_json::from_str::<PromptFormat>(&json).unwrap(), format);
        }
        assert_eq!(
            " COT-Fewshot ".parse::<PromptFormat>().unwrap(),
            PromptFormat::CotFewshot
        );
        assert_eq!(
            parse_formats("direct-zeroshot,all,cot-fewshot").unwrap(),
            [
                PromptFormat::DirectZeroshot,
                PromptFormat::CotFewshot,
                PromptFormat::DirectFewshot,
                PromptFormat::CotZeroshot
            ]
        );
        for bad in ["", "cot-fewshot,", "cot-fewshot,,all", "fewshot"] {
            let err = parse_formats(bad).unwrap_err();
            assert!(matches!(err, DataError::UnknownFormat(_)), "{bad}: {err}");
        }
        assert_eq!(
            parse_formats("all,nope").unwrap_err().to_string(),
            "unknown prompt format \"nope\" (expected \"all\" or a comma-separated list of \
             cot-fewshot, direct-fewshot, cot-zeroshot, direct-zeroshot)"
        );
    }

    #[test]
    fn chain_of_thought_and_few_shot_flags() {
        let cot: Vec<_> = PromptFormat::ALL
            .iter()
            .map(|f| f.is_chain_of_thought())
            .collect();
        let few: Vec<_> = PromptFormat::ALL.iter().map(|f| f.is_few_shot()).collect();
        assert_eq!(cot, [true, false, true, false]);
        assert_eq!(few, [true, true, false, false]);
    }
}
