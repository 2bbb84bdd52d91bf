//! `lmsi eval --suite FILE`: several datasets evaluated in one command, greedy and by
//! self-consistency, summarised in one table.
//!
//! The suite file is JSON, a list of entries; only `path` is required:
//!
//! ```json
//! [
//!   {"path": "gsm8k/test.jsonl"},
//!   {"name": "ARC-Challenge", "path": "arc/test.parquet", "format": "arc", "paths": 16},
//!   {"path": "strategyqa.json", "prompt": "cot-zeroshot"}
//! ]
//! ```
//!
//! `name` defaults to the file's dataset name, `format` to the dataset its fields tell, `prompt`
//! and `paths` to the command line's. The table ([`SuiteTable`]) is written as JSON to `--out` and
//! as Markdown beside it (`.md`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::eval::EvalReport;
use crate::generate::PromptKind;

/// One dataset of a suite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteEntry {
    pub path: PathBuf,
    #[serde(default)]
    pub name: Option<String>,
    /// A dataset name (`arc`, `drop`, ...), when its fields should not decide.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub prompt: Option<PromptKind>,
    /// Self-consistency paths per question.
    #[serde(default)]
    pub paths: Option<usize>,
}

/// Reads a suite file; relative paths are taken from the suite file's folder.
pub fn read_suite(path: &Path) -> Result<Vec<SuiteEntry>, Error> {
    let mut entries: Vec<SuiteEntry> = crate::read_json(path)?;
    if entries.is_empty() {
        return Err(Error::Input(format!(
            "{}: the suite lists no datasets",
            path.display()
        )));
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    for entry in &mut entries {
        if entry.path.is_relative() {
            entry.path = dir.join(&entry.path);
        }
        if entry.paths == Some(0) {
            return Err(Error::Input(format!(
                "{}: \"paths\" of {} must be at least 1",
                path.display(),
                entry.path.display()
            )));
        }
    }
    Ok(entries)
}

/// One dataset's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuiteRow {
    pub name: String,
    pub dataset: String,
    pub path: PathBuf,
    pub questions: usize,
    pub greedy: Accuracy,
    pub self_consistency: Accuracy,
    /// Self-consistency paths per question, and their sampling temperature.
    pub paths: usize,
    pub temperature: f32,
}

/// An accuracy with its 95% Wilson interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub accuracy: f64,
    pub ci95: [f64; 2],
    pub correct: usize,
}

impl From<&EvalReport> for Accuracy {
    fn from(r: &EvalReport) -> Self {
        Self {
            accuracy: r.accuracy,
            ci95: r.ci95,
            correct: r.correct,
        }
    }
}

/// The suite's table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuiteTable {
    pub rows: Vec<SuiteRow>,
}

impl SuiteTable {
    /// The table as Markdown: one row per dataset, accuracies in percent with their intervals.
    pub fn markdown(&self) -> String {
        let percent = |a: &Accuracy| {
            format!(
                "{:.1}% [{:.1}, {:.1}]",
                100.0 * a.accuracy,
                100.0 * a.ci95[0],
                100.0 * a.ci95[1]
            )
        };
        let mut out = String::from(
            "| dataset | format | questions | greedy | self-consistency | paths (T) |\n|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            out += &format!(
                "| {} | {} | {} | {} | {} | {} ({}) |\n",
                r.name,
                r.dataset,
                r.questions,
                percent(&r.greedy),
                percent(&r.self_consistency),
                r.paths,
                r.temperature
            );
        }
        out
    }
}
