//! The benchmark datasets of the paper and its successors, read in their published formats and
//! field names: JSONL, JSON (an array of records) and parquet (as the Hugging Face hub publishes
//! them), told apart by the file's extension.
//!
//! Each record becomes a [`Question`]: its text (with the passage, premise or options the
//! dataset gives), its gold answer and, for multiple choice, its options; each dataset has an
//! answer kind and this project's own few-shot exemplars ([`Dataset::exemplars`]; none copied from
//! a dataset or paper). Which dataset a file holds is told by the fields of its first record
//! ([`Dataset::detect`]), or given (`--format`). The fields read:
//!
//! | dataset | fields | answer |
//! |---|---|---|
//! | `gsm8k` (and lmsi's own questions) | `question`, `answer` (`… #### N` or bare), optional `id`, `choices` | number |
//! | `svamp` | `ID`, `Body`, `Question`, `Answer` | number |
//! | `aqua-rat` | `question`, `options` (`"A)…"`), `correct` | choice |
//! | `drop` | `query_id`, `passage`, `question`, `answers_spans.spans` (the most frequent span is the gold; see below) | text |
//! | `arc` (ARC-Challenge and -Easy) | `id`, `question`, `choices.{text,label}`, `answerKey`; or the original `question.{stem,choices}` | choice |
//! | `openbookqa` | `id`, `question_stem`, `choices.{text,label}`, `answerKey`; the original release reads as `arc` | choice |
//! | `strategyqa` | `qid`, `question`, `answer` (true/false) | yes/no |
//! | `anli` (rounds 1–3) | `uid`, `premise` (or `context`), `hypothesis`, `label` (0/1/2 or e/n/c) | choice: yes / it is not possible to tell / no |
//! | `mnli` | `premise`, `hypothesis`, `label` (0/1/2), `idx`; or the original `sentence1`, `sentence2`, `gold_label`, `pairID` | choice, as ANLI |
//! | `rte` | `sentence1`, `sentence2`, `label` (0 entailment, 1 not), `idx`; or SuperGLUE's `premise`, `hypothesis`, `label` (strings) | yes/no |
//! | `commonsenseqa` | `id`, `question`, `question_concept`, `choices.{label,text}`, `answerKey`; or the original `question.{stem,choices}` | choice |
//!
//! Detection reads one record, so two layouts need `--format`: SuperGLUE's RTE as the hub publishes
//! it (`premise`, `hypothesis`, integer `label`) has MNLI's fields and reads as `mnli` unless given
//! `--format rte`; OpenBookQA's original release has ARC's layout and reads as `arc`, which asks the
//! same question the same way.
//!
//! DROP's gold: the hub's `answers_spans` flattens several answers into one list of spans. In the
//! train split it is the one annotator's answer (a number, a date, or the spans of a multi-span
//! answer); in the validation split it is every validated annotator's answer, one after another.
//! Which spans belong together is not kept, so lmsi takes the span given most often (the
//! annotators' consensus on validation; the first on a tie, which is the train split's one
//! answer, or the first part of a multi-span one). An answer of several spans is therefore scored
//! on its first span alone.
//!
//! Parquet files are read with the `parquet` crate (snappy-compressed or uncompressed, as the hub
//! writes them), each row turned into JSON and read like a JSONL line. Records are numbered from 1
//! (lines of JSONL, elements of a JSON array, rows of parquet) in errors.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use lmsi_voter::AnswerKind;
use serde_json::Value;

use crate::error::DataError;
use crate::exemplars::{Exemplar, ExemplarSet};
use crate::jsonl::{BadLines, Loaded, SkippedLine};
use crate::records::Question;

/// A benchmark dataset lmsi reads in its own format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    Gsm8k,
    Svamp,
    AquaRat,
    Drop,
    Arc,
    OpenBookQa,
    StrategyQa,
    Anli,
    Mnli,
    Rte,
    CommonsenseQa,
}

/// The options of the three-way entailment datasets (ANLI, MNLI), in label order: entailment,
/// neutral, contradiction.
const ENTAILMENT_OPTIONS: [&str; 3] = ["yes", "it is not possible to tell", "no"];

/// Every dataset's exemplars, `{"dataset", "question", "reasoning", "answer"}` per line.
const EXEMPLARS: &str = include_str!("datasets_exemplars.jsonl");

impl Dataset {
    /// Every dataset, in the order of the table above.
    pub const ALL: [Dataset; 11] = [
        Dataset::Gsm8k,
        Dataset::Svamp,
        Dataset::AquaRat,
        Dataset::Drop,
        Dataset::Arc,
        Dataset::OpenBookQa,
        Dataset::StrategyQa,
        Dataset::Anli,
        Dataset::Mnli,
        Dataset::Rte,
        Dataset::CommonsenseQa,
    ];

    /// The dataset's name, as `--format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Gsm8k => "gsm8k",
            Dataset::Svamp => "svamp",
            Dataset::AquaRat => "aqua-rat",
            Dataset::Drop => "drop",
            Dataset::Arc => "arc",
            Dataset::OpenBookQa => "openbookqa",
            Dataset::StrategyQa => "strategyqa",
            Dataset::Anli => "anli",
            Dataset::Mnli => "mnli",
            Dataset::Rte => "rte",
            Dataset::CommonsenseQa => "commonsenseqa",
        }
    }

    /// The fields a record of this dataset has, for error messages.
    pub fn fields(self) -> &'static str {
        match self {
            Dataset::Gsm8k => "question, answer",
            Dataset::Svamp => "Body, Question, Answer",
            Dataset::AquaRat => "question, options, correct",
            Dataset::Drop => "passage, question, answers_spans",
            Dataset::Arc => "question, choices, answerKey",
            Dataset::OpenBookQa => "question_stem, choices, answerKey",
            Dataset::StrategyQa => "qid, question, answer (true/false)",
            Dataset::Anli => "uid, premise or context, hypothesis, label",
            Dataset::Mnli => "premise, hypothesis, label (0-2) or sentence1, sentence2, gold_label",
            Dataset::Rte => "sentence1, sentence2, label or premise, hypothesis, label (strings)",
            Dataset::CommonsenseQa => "question (and question_concept), choices, answerKey",
        }
    }

    /// How a path's answer is read for this dataset.
    pub fn answer_kind(self) -> AnswerKind {
        match self {
            Dataset::Gsm8k | Dataset::Svamp => AnswerKind::Number,
            Dataset::AquaRat
            | Dataset::Arc
            | Dataset::OpenBookQa
            | Dataset::Anli
            | Dataset::Mnli
            | Dataset::CommonsenseQa => AnswerKind::Choice,
            Dataset::StrategyQa | Dataset::Rte => AnswerKind::YesNo,
            Dataset::Drop => AnswerKind::Text,
        }
    }

    /// This project's few-shot exemplars for the dataset's prompt style (the built-in arithmetic
    /// ones for GSM8K and SVAMP).
    pub fn exemplars(self) -> ExemplarSet {
        if matches!(self, Dataset::Gsm8k | Dataset::Svamp) {
            return ExemplarSet::builtin();
        }
        let exemplars: Vec<Exemplar> = EXEMPLARS
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("the exemplars file is JSONL"))
            .filter(|v| v["dataset"] == self.name())
            .map(|v| {
                serde_json::from_value(v).expect("an exemplar has question, reasoning, answer")
            })
            .collect();
        ExemplarSet::new(exemplars).expect("every dataset has exemplars")
    }

    /// The dataset whose fields `record` has, if any.
    pub fn detect(record: &Value) -> Option<Dataset> {
        let has = |key: &str| record.get(key).is_some();
        let question_is_object = record.get("question").is_some_and(Value::is_object);
        Some(if has("answers_spans") && has("passage") {
            Dataset::Drop
        } else if has("Body") && has("Question") {
            Dataset::Svamp
        } else if has("options") && has("correct") {
            Dataset::AquaRat
        } else if has("question_stem") {
            Dataset::OpenBookQa
        } else if has("question_concept")
            || question_is_object && record["question"].get("question_concept").is_some()
        {
            Dataset::CommonsenseQa
        } else if has("answerKey") {
            Dataset::Arc
        } else if has("qid") && record.get("answer").is_some_and(Value::is_boolean) {
            Dataset::StrategyQa
        } else if has("hypothesis") && has("uid") {
            Dataset::Anli
        } else if has("gold_label") || has("premise") && record["label"].is_number() {
            Dataset::Mnli
        } else if has("sentence1") || has("premise") {
            Dataset::Rte
        } else if record.get("question").is_some_and(Value::is_string) {
            Dataset::Gsm8k
        } else {
            return None;
        })
    }

    /// The record as a question (its id not yet checked to be unique).
    fn question(self, record: &Value) -> Result<Question, String> {
        let r = Fields(record);
        let question =
            |id: String, text: String, answer: String, choices: Option<Vec<String>>| Question {
                id,
                question: text,
                answer: Some(answer),
                choices,
            };
        Ok(match self {
            Dataset::Gsm8k => {
                let q: crate::jsonl::RawQuestion =
                    serde_json::from_value(record.clone()).map_err(|e| e.to_string())?;
                Question {
                    id: q.id.unwrap_or_default(),
                    question: q.question,
                    answer: q.answer,
                    choices: q.choices,
                }
            }
            Dataset::Svamp => {
                let body = r.text("Body")?;
                let text = format!("{} {}", body.trim_end(), r.text("Question")?.trim_start());
                question(r.id(&["ID"]), text, r.number("Answer")?, None)
            }
            Dataset::AquaRat => {
                let options: Vec<String> = r
                    .strings("options")?
                    .into_iter()
                    .map(|o| strip_option_letter(&o))
                    .collect();
                let text = with_options(&r.text("question")?, &options);
                question(r.id(&[]), text, r.letter("correct")?, Some(options))
            }
            Dataset::Drop => {
                let spans = r.at(&["answers_spans", "spans"])?;
                let gold = drop_gold(spans).ok_or("\"answers_spans.spans\" has no answer span")?;
                let text = format!(
                    "Passage: {}\nQuestion: {}",
                    r.text("passage")?,
                    r.text("question")?
                );
                question(r.id(&["query_id"]), text, gold.to_string(), None)
            }
            Dataset::Arc | Dataset::OpenBookQa | Dataset::CommonsenseQa => {
                let (stem, labels, texts) = choice_question(record)?;
                let options = ordered_options(&labels, &texts)?;
                let answer = r.letter("answerKey")?;
                let answer = relabel(&labels, &answer)?;
                question(
                    r.id(&["id"]),
                    with_options(&stem, &options),
                    answer,
                    Some(options),
                )
            }
            Dataset::StrategyQa => {
                let answer = record["answer"]
                    .as_bool()
                    .ok_or("\"answer\" is not true or false")?;
                let answer = if answer { "yes" } else { "no" };
                question(r.id(&["qid"]), r.text("question")?, answer.into(), None)
            }
            Dataset::Anli | Dataset::Mnli => {
                let premise = r.text_of(&["premise", "context", "sentence1"])?;
                let hypothesis = r.text_of(&["hypothesis", "sentence2"])?;
                let label = entailment_label(record)?;
                let options: Vec<String> = ENTAILMENT_OPTIONS.map(String::from).to_vec();
                let text = with_options(&entailment_question(&premise, &hypothesis), &options);
                let answer = ["A", "B", "C"][label].to_string();
                question(r.id(&["uid", "idx", "pairID"]), text, answer, Some(options))
            }
            Dataset::Rte => {
                let premise = r.text_of(&["sentence1", "premise"])?;
                let hypothesis = r.text_of(&["sentence2", "hypothesis"])?;
                let entails = match &record["label"] {
                    Value::Number(n) if n.as_u64() == Some(0) => true,
                    Value::Number(n) if n.as_u64() == Some(1) => false,
                    Value::String(s) if s == "entailment" => true,
                    Value::String(s) if s == "not_entailment" => false,
                    other => {
                        return Err(format!(
                            "\"label\" is {other}, not 0, 1, entailment or not_entailment"
                        ));
                    }
                };
                let answer = if entails { "yes" } else { "no" };
                let text = entailment_question(&premise, &hypothesis);
                question(r.id(&["idx"]), text, answer.into(), None)
            }
        })
    }
}

impl FromStr for Dataset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Dataset::ALL.iter().map(|d| d.name()).collect();
                format!(
                    "unknown dataset {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// A dataset is written by its name (`"aqua-rat"`), as on the command line.
impl serde::Serialize for Dataset {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Dataset {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Field access with messages naming the field.
struct Fields<'a>(&'a Value);

impl Fields<'_> {
    fn text(&self, key: &str) -> Result<String, String> {
        match self.0.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(format!("empty {key:?}")),
            Some(other) => Err(format!("{key:?} is {other}, not a string")),
            None => Err(format!("no {key:?}")),
        }
    }

    /// The first of `keys` present, as text.
    fn text_of(&self, keys: &[&str]) -> Result<String, String> {
        let key = keys
            .iter()
            .find(|k| self.0.get(**k).is_some())
            .unwrap_or(&keys[0]);
        self.text(key)
    }

    fn at(&self, path: &[&str]) -> Result<&Value, String> {
        let mut value = self.0;
        for key in path {
            value = value
                .get(key)
                .ok_or_else(|| format!("no {:?}", path.join(".")))?;
        }
        Ok(value)
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        let values = self
            .0
            .get(key)
            .and_then(Value::as_array)
            .ok_or(format!("{key:?} is not a list"))?;
        values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or(format!("{key:?} holds a non-string"))
            })
            .collect()
    }

    /// A number as text, whole numbers without a fractional part (`5.0` is `5`).
    fn number(&self, key: &str) -> Result<String, String> {
        match self.0.get(key) {
            Some(Value::Number(n)) => Ok(match n.as_f64() {
                Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
                _ => n.to_string(),
            }),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            _ => Err(format!("{key:?} is not a number")),
        }
    }

    /// An option letter (`"C"`).
    fn letter(&self, key: &str) -> Result<String, String> {
        let text = self.text(key)?;
        Ok(text.trim().to_string())
    }

    /// The record's id: the first of `keys` present (a string or a number), else empty (the reader
    /// numbers it).
    fn id(&self, keys: &[&str]) -> String {
        keys.iter()
            .find_map(|k| match self.0.get(*k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// The stem, option labels and option texts of an ARC-style question: the Hugging Face layout
/// (`question` a string, `choices: {text: [...], label: [...]}`, or `question_stem`) or the
/// original one (`question: {stem, choices: [{text, label}]}`).
fn choice_question(record: &Value) -> Result<(String, Vec<String>, Vec<String>), String> {
    let r = Fields(record);
    if let Some(question) = record.get("question").filter(|q| q.is_object()) {
        let stem = Fields(question).text("stem")?;
        let choices = question
            .get("choices")
            .and_then(Value::as_array)
            .ok_or("\"question.choices\" is not a list")?;
        let mut labels = Vec::new();
        let mut texts = Vec::new();
        for choice in choices {
            labels.push(Fields(choice).text("label")?);
            texts.push(Fields(choice).text("text")?);
        }
        return Ok((stem, labels, texts));
    }
    let stem = r.text_of(&["question", "question_stem"])?;
    let choices = Fields(r.at(&["choices"])?);
    Ok((stem, choices.strings("label")?, choices.strings("text")?))
}

/// The option texts in label order, checked to be labelled A, B, C, … or 1, 2, 3, …
fn ordered_options(labels: &[String], texts: &[String]) -> Result<Vec<String>, String> {
    if labels.is_empty() || labels.len() != texts.len() || labels.len() > 26 {
        return Err(format!(
            "{} option labels for {} options",
            labels.len(),
            texts.len()
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if *label != letter(i) && *label != (i + 1).to_string() {
            return Err(format!(
                "option {} is labelled {label:?}, expected {} or {}",
                i + 1,
                letter(i),
                i + 1
            ));
        }
    }
    Ok(texts.to_vec())
}

/// The letter of the option that `answer` labels (ARC labels some questions 1–4).
fn relabel(labels: &[String], answer: &str) -> Result<String, String> {
    labels
        .iter()
        .position(|l| l == answer)
        .map(letter)
        .ok_or_else(|| format!("\"answerKey\" {answer:?} is not one of the labels {labels:?}"))
}

fn letter(i: usize) -> String {
    char::from(b'A' + i as u8).to_string()
}

/// `"A)21"` or `"A) 21"` without its letter.
/// The span `answers_spans.spans` gives most often, the first of those on a tie.
fn drop_gold(spans: &Value) -> Option<&str> {
    let spans: Vec<&str> = spans.as_array()?.iter().filter_map(Value::as_str).collect();
    let count = |s: &str| spans.iter().filter(|&&t| t == s).count();
    let most = spans.iter().map(|s| count(s)).max()?;
    spans.iter().copied().find(|s| count(s) == most)
}

fn strip_option_letter(option: &str) -> String {
    let bytes = option.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_uppercase() && bytes[1] == b')' {
        option[2..].trim().to_string()
    } else {
        option.trim().to_string()
    }
}

/// A question followed by its options, as the prompts show them:
/// `…\nAnswer Choices: (A) first (B) second`.
fn with_options(stem: &str, options: &[String]) -> String {
    let listed: Vec<String> = options
        .iter()
        .enumerate()
        .map(|(i, o)| format!("({}) {o}", letter(i)))
        .collect();
    format!("{}\nAnswer Choices: {}", stem.trim(), listed.join(" "))
}

fn entailment_question(premise: &str, hypothesis: &str) -> String {
    format!(
        "Premise: \"{}\"\nHypothesis: \"{}\"\nDoes the premise entail the hypothesis?",
        premise.trim(),
        hypothesis.trim()
    )
}

/// 0 (entailment), 1 (neutral) or 2 (contradiction), from a number or a name.
fn entailment_label(record: &Value) -> Result<usize, String> {
    let label = record.get("label").or_else(|| record.get("gold_label"));
    match label {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 2) => {
            Ok(n.as_u64().unwrap_or(0) as usize)
        }
        Some(Value::String(s)) => match s.as_str() {
            "e" | "entailment" => Ok(0),
            "n" | "neutral" => Ok(1),
            "c" | "contradiction" => Ok(2),
            _ => Err(format!(
                "label {s:?} is not entailment, neutral or contradiction"
            )),
        },
        Some(other) => Err(format!("label {other} is not 0, 1 or 2")),
        None => Err("no \"label\"".into()),
    }
}

/// How a file's records are stored, told by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Jsonl,
    Json,
    Parquet,
}

impl FileType {
    /// The file type of `path`'s extension: `.jsonl` (and `.ndjson`), `.json`, `.parquet`.
    pub fn of(path: &Path) -> Option<FileType> {
        match path.extension()?.to_str()? {
            "jsonl" | "ndjson" => Some(FileType::Jsonl),
            "json" => Some(FileType::Json),
            "parquet" => Some(FileType::Parquet),
            _ => None,
        }
    }

    /// What one record is called in errors.
    fn record(self) -> &'static str {
        match self {
            FileType::Jsonl => "line",
            FileType::Json => "record",
            FileType::Parquet => "row",
        }
    }
}

/// The questions of a dataset file, and which dataset it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetFile {
    pub dataset: Dataset,
    pub questions: Loaded<Question>,
}

/// Reads a dataset file in its published format: the file type by extension (anything else is
/// read as JSONL), the dataset by the first record's fields unless `format` names it. Every
/// question gets an id (its record number when the dataset has none); ids must be unique.
pub fn read_dataset(
    path: &Path,
    format: Option<Dataset>,
    bad: BadLines,
) -> Result<DatasetFile, DataError> {
    let file_type = FileType::of(path).unwrap_or(FileType::Jsonl);
    let records = read_records(path, file_type, bad)?;
    let lmsi_questions = |records: &Loaded<(usize, Value)>| {
        records.items.first().and_then(|(_, r)| Dataset::detect(r)) == Some(Dataset::Gsm8k)
    };
    if file_type == FileType::Jsonl
        && format.unwrap_or(Dataset::Gsm8k) == Dataset::Gsm8k
        && lmsi_questions(&records)
    {
        // lmsi's own question files, read by the reader that defines them.
        return Ok(DatasetFile {
            dataset: Dataset::Gsm8k,
            questions: crate::jsonl::read_questions(path, bad)?,
        });
    }
    let mut skipped = records.skipped;
    let Some((_, first)) = records.items.first() else {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    };
    let dataset = match format {
        Some(d) => d,
        None => Dataset::detect(first).ok_or_else(|| undetected(path, file_type, first))?,
    };
    let mut first_of: HashMap<String, usize> = HashMap::new();
    let mut items = Vec::with_capacity(records.items.len());
    for (number, record) in &records.items {
        let checked = dataset.question(record).and_then(|mut q| {
            if q.question.trim().is_empty() {
                return Err("empty question".into());
            }
            if q.id.trim().is_empty() {
                q.id = number.to_string();
            }
            if let Some(first) = first_of.insert(q.id.clone(), *number) {
                return Err(format!(
                    "duplicate id {:?} (also {} {first})",
                    q.id,
                    file_type.record()
                ));
            }
            Ok(q)
        });
        match checked {
            Ok(q) => items.push(q),
            Err(message) => {
                let message = format!(
                    "{dataset}: {message} (a {dataset} record has {})",
                    dataset.fields()
                );
                match bad {
                    BadLines::Skip => skipped.push(SkippedLine {
                        line: *number,
                        message,
                    }),
                    BadLines::Error => return Err(record_error(path, file_type, *number, message)),
                }
            }
        }
    }
    if items.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(DatasetFile {
        dataset,
        questions: Loaded { items, skipped },
    })
}

fn undetected(path: &Path, file_type: FileType, first: &Value) -> DataError {
    let fields: Vec<&str> = first
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let expected: Vec<String> = Dataset::ALL
        .iter()
        .map(|d| format!("{d} ({})", d.fields()))
        .collect();
    record_error(
        path,
        file_type,
        1,
        format!(
            "fields [{}] match no dataset; expected those of {} (or give --format)",
            fields.join(", "),
            expected.join("; ")
        ),
    )
}

fn record_error(path: &Path, file_type: FileType, number: usize, message: String) -> DataError {
    DataError::Record {
        path: path.to_path_buf(),
        record: file_type.record(),
        number,
        message,
    }
}

/// The records of a file, numbered from 1.
fn read_records(
    path: &Path,
    file_type: FileType,
    bad: BadLines,
) -> Result<Loaded<(usize, Value)>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    match file_type {
        FileType::Jsonl => crate::jsonl::read_values(path, bad),
        FileType::Json => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let value: Value = serde_json::from_str(text).map_err(|e| DataError::Parse {
                path: path.to_path_buf(),
                line: e.line(),
                message: e.to_string(),
            })?;
            let Value::Array(records) = value else {
                return Err(record_error(
                    path,
                    file_type,
                    1,
                    "a JSON dataset must be an array of records".into(),
                ));
            };
            Ok(Loaded {
                items: records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| (i + 1, r))
                    .collect(),
                skipped: Vec::new(),
            })
        }
        FileType::Parquet => read_parquet(path),
    }
}

/// The rows of a parquet file as JSON objects. The `parquet` crate asserts (panics) on some
/// malformed pages (fuzzing found one in its bit unpacking), so a panic while reading is caught and
/// reported as an unreadable file.
fn read_parquet(path: &Path) -> Result<Loaded<(usize, Value)>, DataError> {
    std::panic::catch_unwind(|| read_parquet_rows(path)).unwrap_or_else(|_| {
        Err(DataError::Record {
            path: path.to_path_buf(),
            record: "file",
            number: 1,
            message: "not a readable parquet file (its pages are malformed)".into(),
        })
    })
}

fn read_parquet_rows(path: &Path) -> Result<Loaded<(usize, Value)>, DataError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let parquet_error = |e: parquet::errors::ParquetError| DataError::Record {
        path: path.to_path_buf(),
        record: "file",
        number: 1,
        message: format!("not a readable parquet file: {e}"),
    };
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(parquet_error)?;
    let mut items = Vec::new();
    for (i, row) in reader
        .get_row_iter(None)
        .map_err(parquet_error)?
        .enumerate()
    {
        let row = row.map_err(|e| record_error(path, FileType::Parquet, i + 1, e.to_string()))?;
        items.push((i + 1, row.to_json_value()));
    }
    Ok(Loaded {
        items,
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dataset_has_exemplars_of_its_answer_kind() {
        for dataset in Dataset::ALL {
            let exemplars = dataset.exemplars();
            assert!(exemplars.exemplars().len() >= 3, "{dataset}");
            for e in exemplars.exemplars() {
                let ok = match dataset.answer_kind() {
                    AnswerKind::Number => e.answer.parse::<f64>().is_ok(),
                    AnswerKind::Choice => {
                        e.answer.len() == 1 && e.question.contains("Answer Choices: (A)")
                    }
                    AnswerKind::YesNo => e.answer == "yes" || e.answer == "no",
                    AnswerKind::Text => !e.answer.is_empty(),
                };
                assert!(ok, "{dataset}: {e:?}");
            }
        }
    }

    #[test]
    fn names_parse_back() {
        for dataset in Dataset::ALL {
            assert_eq!(dataset.name().parse::<Dataset>(), Ok(dataset));
        }
        assert!(
            "squad"
                .parse::<Dataset>()
                .unwrap_err()
                .contains("commonsenseqa")
        );
    }

    #[test]
    fn option_letters_are_stripped_and_labels_relabelled() {
        assert_eq!(strip_option_letter("A)21"), "21");
        assert_eq!(strip_option_letter("E) 3/4"), "3/4");
        let labels: Vec<String> = ["1", "2", "3"].map(String::from).to_vec();
        assert_eq!(relabel(&labels, "3").unwrap(), "C");
        assert!(relabel(&labels, "D").is_err());
    }
}
