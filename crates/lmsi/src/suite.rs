//! `lmsi eval --suite FILE`: several datasets evaluated in one command, greedy and by
//! self-consistency, summarised in one table.
//!
//! The suite file is JSON, a list of entries, or TOML (told by the `.toml` extension), a
//! `[[dataset]]` table per entry; only `path` is required:
//!
//! ```json
//! [
//!   {"path": "gsm8k/test.jsonl"},
//!   {"name": "ARC-Challenge", "path": "arc/test.parquet", "format": "arc", "paths": 16},
//!   {"path": "strategyqa.json", "prompt": "cot-zeroshot"}
//! ]
//! ```
//!
//! ```toml
//! [[dataset]]
//! path = "gsm8k/test.jsonl"
//!
//! [[dataset]]
//! name = "ARC-Challenge"
//! path = "arc/test.parquet"
//! format = "arc"
//! paths = 16
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

/// A TOML suite: its `[[dataset]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlSuite {
    #[serde(default)]
    dataset: Vec<SuiteEntry>,
}

/// Reads a suite file (JSON, or TOML for a `.toml` file); relative paths are taken from the suite
/// file's folder.
pub fn read_suite(path: &Path) -> Result<Vec<SuiteEntry>, Error> {
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let mut entries = if is_toml {
        read_toml(path)?.dataset
    } else {
        crate::read_json::<Vec<SuiteEntry>>(path)?
    };
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

fn read_toml(path: &Path) -> Result<TomlSuite, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        line: e.span().map(|span| {
            1 + text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        }),
        message: e.message().to_string(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_toml_suite_reads_as_its_json_twin() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"[
            {"path": "gsm8k.jsonl"},
            {"name": "ARC", "path": "/data/arc.parquet", "format": "arc", "paths": 16, "prompt": "cot-zeroshot"}
        ]"#;
        let toml = r#"
            [[dataset]]
            path = "gsm8k.jsonl"

            [[dataset]]
            name = "ARC"
            path = "/data/arc.parquet"
            format = "arc"
            paths = 16
            prompt = "cot-zeroshot"
        "#;
        let from_json = read_suite(&write(dir.path(), "suite.json", json)).unwrap();
        let from_toml = read_suite(&write(dir.path(), "suite.toml", toml)).unwrap();
        assert_eq!(from_toml, from_json);
        assert_eq!(from_toml[0].path, dir.path().join("gsm8k.jsonl"));
        assert_eq!(from_toml[1].path, PathBuf::from("/data/arc.parquet"));
    }

    #[test]
    fn a_bad_toml_suite_names_the_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "[[dataset]]\npath = \"a.jsonl\"\nsamples = 3\n",
                3,
                "samples",
            ),
            (
                "[[dataset]]\npath = \"a.jsonl\"\npaths = \"many\"\n",
                3,
                "invalid type",
            ),
            ("[[dataset]]\npath = \n", 2, ""),
        ];
        for (text, line, says) in cases {
            let path = write(dir.path(), "bad.toml", text);
            let err = read_suite(&path).unwrap_err();
            let Error::Format {
                line: at, message, ..
            } = &err
            else {
                panic!("{err}")
            };
            assert_eq!(*at, Some(line), "{text:?}: {err}");
            assert!(message.contains(says), "{text:?}: {err}");
            assert!(err.to_string().contains("bad.toml"), "{err}");
        }
        let empty = write(dir.path(), "empty.toml", "");
        let err = read_suite(&empty).unwrap_err().to_string();
        assert!(err.contains("lists no datasets"), "{err}");
        let zero = write(
            dir.path(),
            "zero.toml",
            "[[dataset]]\npath = \"a\"\npaths = 0\n",
        );
        let err = read_suite(&zero).unwrap_err().to_string();
        assert!(err.contains("at least 1"), "{err}");
    }
}
