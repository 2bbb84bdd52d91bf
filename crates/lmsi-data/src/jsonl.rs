//! Reading JSONL with line-numbered errors, and atomic writes.
//!
//! Reading rules, shared by every file this crate reads:
//! - one JSON value per line; lines that are empty or only whitespace are skipped silently;
//! - a UTF-8 byte order mark at the start of the file is ignored, and so is a `\r` before `\n`;
//! - a bad line is an error naming `file:line` ([`BadLines::Error`], the default), or is skipped
//!   and reported in [`Loaded::skipped`] ([`BadLines::Skip`]).
//!
//! Writing is atomic: the data goes to a temporary file beside the target, which is flushed to
//! disk and then renamed over the target. On any error the temporary file is removed, so the
//! target either keeps its old content (or stays absent) or holds the complete new content.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::DataError;
use crate::records::{PathRecord, Question, VoteRecord, optional_string_or_number};

/// What to do with a line that cannot be parsed or is invalid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BadLines {
    /// Stop with an error naming the file and line.
    #[default]
    Error,
    /// Skip the line and report it in [`Loaded::skipped`].
    Skip,
}

/// A line left out under [`BadLines::Skip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    /// Why it was skipped (the message the error would have had).
    pub message: String,
}

/// The records read from a file, and the lines that were skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    /// The records, in file order.
    pub items: Vec<T>,
    /// Lines skipped under [`BadLines::Skip`] (always empty under [`BadLines::Error`]).
    pub skipped: Vec<SkippedLine>,
}

/// Reads a JSONL file of `T` records. An empty file gives no items (not an error).
///
/// ```
/// use lmsi_data::{BadLines, PathRecord, read_jsonl, write_jsonl_atomic};
/// # let dir = tempfile::tempdir().unwrap();
/// # let file = dir.path().join("paths.jsonl");
/// let path = PathRecord {
///     id: "1".into(),
///     question: "Mia has 3 shells. She finds 2 more shells. How many shells does Mia have now?".into(),
///     path: 0,
///     text: " Mia starts with 3 shells. She finds 2 more, so she has 3 + 2 = 5 shells. The answer is 5.".into(),
///     answer: Some("5".into()),
///     logprob: -4.25,
///     tokens: 31,
///     gold: None,
/// };
/// write_jsonl_atomic(&file, [&path])?;
/// let loaded = read_jsonl::<PathRecord>(&file, BadLines::Error)?;
/// assert_eq!(loaded.items, vec![path]);
/// # Ok::<(), lmsi_data::DataError>(())
/// ```
pub fn read_jsonl<T: DeserializeOwned>(path: &Path, bad: BadLines) -> Result<Loaded<T>, DataError> {
    read_records(path, bad, |_, item| Ok(item))
}

/// Reads a question file (see [`Question`] for the line format).
///
/// On top of [`read_jsonl`]: a question without an `id` gets its 1-based line number as id
/// (`"7"`); an empty or blank `question`, a blank `id`, an empty `choices` list and an id that
/// an earlier line already used are invalid lines (the duplicate's message names the earlier
/// line; under [`BadLines::Skip`] the later line is skipped). A file with no questions is
/// [`DataError::Empty`].
///
/// ```
/// use lmsi_data::{BadLines, read_questions};
/// # let dir = tempfile::tempdir()?;
/// # let file = dir.path().join("questions.jsonl");
/// std::fs::write(&file, "{\"question\": \"What is 2 + 3?\", \"answer\": \"2 + 3 = 5\\n#### 5\"}\n")?;
/// let questions = read_questions(&file, BadLines::Error)?.items;
/// assert_eq!(questions[0].id, "1");
/// assert_eq!(questions[0].gold(), Some("5"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_questions(path: &Path, bad: BadLines) -> Result<Loaded<Question>, DataError> {
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    let loaded = read_records(path, bad, |line, raw: RawQuestion| {
        if raw.question.trim().is_empty() {
            return Err(r#"empty "question""#.to_owned());
        }
        if raw.choices.as_ref().is_some_and(Vec::is_empty) {
            return Err(r#"empty "choices""#.to_owned());
        }
        let assigned = raw.id.is_none();
        let id = match raw.id {
            Some(id) if id.trim().is_empty() => return Err(r#"empty "id""#.to_owned()),
            Some(id) => id,
            None => line.to_string(),
        };
        if let Some(first) = first_line_of.get(&id) {
            let why = if assigned {
                " (a question without an id gets its line number as id)"
            } else {
                ""
            };
            return Err(format!("duplicate id {id:?} (also on line {first}){why}"));
        }
        first_line_of.insert(id.clone(), line);
        Ok(Question {
            id,
            question: raw.question,
            answer: raw.answer,
            choices: raw.choices,
        })
    })?;
    if loaded.items.is_empty() {
        return Err(DataError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(loaded)
}

/// Reads a paths file (`lmsi generate`'s output): [`read_jsonl`] of [`PathRecord`]s, where a
/// question's path number that an earlier line already used is an invalid line naming that line
/// (skipped under [`BadLines::Skip`], like every invalid line). A file with no paths is
/// [`DataError::Empty`], as for questions.
pub fn read_paths(path: &Path, bad: BadLines) -> Result<Loaded<PathRecord>, DataError> {
    let loaded = read_unique(path, bad, |p: &PathRecord| {
        let key = (p.id.clone(), p.path);
        let what = format!("question {:?} has path {} twice", p.id, p.path);
        (key, what)
    })?;
    if loaded.items.is_empty() {
        return Err(DataError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(loaded)
}

/// Reads a votes file (`lmsi vote`'s output): [`read_jsonl`] of [`VoteRecord`]s, where a question
/// that an earlier line already voted on is an invalid line naming that line.
pub fn read_votes(path: &Path, bad: BadLines) -> Result<Loaded<VoteRecord>, DataError> {
    read_unique(path, bad, |v: &VoteRecord| {
        (
            v.id.clone(),
            format!("a second vote for question {:?}", v.id),
        )
    })
}

/// [`read_records`] where `key` gives each record's identity and what to call a repeat of it.
fn read_unique<T: DeserializeOwned, K: std::hash::Hash + Eq>(
    path: &Path,
    bad: BadLines,
    key: impl Fn(&T) -> (K, String),
) -> Result<Loaded<T>, DataError> {
    let mut first_line_of: HashMap<K, usize> = HashMap::new();
    read_records(path, bad, |line, item: T| {
        let (key, what) = key(&item);
        if let Some(first) = first_line_of.get(&key) {
            return Err(format!("{what} (also on line {first})"));
        }
        first_line_of.insert(key, line);
        Ok(item)
    })
}

/// A question line as written, before ids are assigned.
#[derive(serde::Deserialize)]
pub(crate) struct RawQuestion {
    #[serde(default, deserialize_with = "optional_string_or_number")]
    pub(crate) id: Option<String>,
    pub(crate) question: String,
    #[serde(default, deserialize_with = "optional_string_or_number")]
    pub(crate) answer: Option<String>,
    #[serde(default)]
    pub(crate) choices: Option<Vec<String>>,
}

/// The non-blank lines of a JSONL file as JSON values, with their line numbers.
pub(crate) fn read_values(
    path: &Path,
    bad: BadLines,
) -> Result<Loaded<(usize, serde_json::Value)>, DataError> {
    read_records(path, bad, |line, value: serde_json::Value| {
        Ok((line, value))
    })
}

/// Reads `path` line by line, parsing each non-blank line as `T` and passing it, with its
/// 1-based line number, to `accept`; an `Err` from `accept` makes the line invalid.
pub(crate) fn read_records<T, U>(
    path: &Path,
    bad: BadLines,
    mut accept: impl FnMut(usize, T) -> Result<U, String>,
) -> Result<Loaded<U>, DataError>
where
    T: DeserializeOwned,
{
    let io_error = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
    let mut loaded = Loaded {
        items: Vec::new(),
        skipped: Vec::new(),
    };
    let mut bytes = Vec::new();
    for line in 1.. {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes).map_err(io_error)? == 0 {
            break;
        }
        let fault = match parse_line::<T>(&bytes, line) {
            Ok(None) => continue,
            Ok(Some(value)) => match accept(line, value) {
                Ok(item) => {
                    loaded.items.push(item);
                    continue;
                }
                Err(message) => Fault::Invalid(message),
            },
            Err(message) => Fault::Parse(message),
        };
        match (bad, fault) {
            (BadLines::Skip, Fault::Parse(message) | Fault::Invalid(message)) => {
                loaded.skipped.push(SkippedLine { line, message });
            }
            (BadLines::Error, Fault::Parse(message)) => {
                return Err(DataError::Parse {
                    path: path.to_owned(),
                    line,
                    message,
                });
            }
            (BadLines::Error, Fault::Invalid(message)) => {
                return Err(DataError::Invalid {
                    path: path.to_owned(),
                    line,
                    message,
                });
            }
        }
    }
    Ok(loaded)
}

enum Fault {
    Parse(String),
    Invalid(String),
}

/// Parses one raw line; `Ok(None)` for a blank line.
fn parse_line<T: DeserializeOwned>(bytes: &[u8], line: usize) -> Result<Option<T>, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1))?;
    let text = if line == 1 {
        text.strip_prefix('\u{feff}').unwrap_or(text)
    } else {
        text
    };
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|e| {
        // serde_json counts lines within the string it parsed, which is always line 1 here.
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        match message.strip_suffix(&position) {
            Some(what) if e.column() > 0 => format!("{what} at column {}", e.column()),
            Some(what) => what.to_owned(),
            None => message,
        }
    })
}

/// Writes `items` as JSONL (one compact JSON object per line) to `path`, atomically.
///
/// If an item fails to serialise ([`DataError::Serialize`], naming the line it would have had)
/// or any write fails, nothing is left at `path`, and a file already there is untouched.
/// A new file gets the permissions `File::create` would give it; an existing file keeps its own.
pub fn write_jsonl_atomic<T: Serialize>(
    path: &Path,
    items: impl IntoIterator<Item = T>,
) -> Result<(), DataError> {
    write_with(path, |out| {
        for (index, item) in items.into_iter().enumerate() {
            serde_json::to_writer(&mut *out, &item).map_err(|e| {
                if e.is_io() {
                    DataError::Io {
                        path: path.to_owned(),
                        source: e.into(),
                    }
                } else {
                    DataError::Serialize {
                        path: path.to_owned(),
                        line: index + 1,
                        message: e.to_string(),
                    }
                }
            })?;
            out.write_all(b"\n").map_err(|source| DataError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(())
    })
}

/// Writes `bytes` to `path` atomically, with the same guarantees as [`write_jsonl_atomic`].
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let report = dir.path().join("report.json");
/// lmsi_data::write_atomic(&report, b"{\"accuracy\": 0.5}\n")?;
/// assert_eq!(std::fs::read(&report)?, b"{\"accuracy\": 0.5}\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    write_with(path, |out| {
        out.write_all(bytes).map_err(|source| DataError::Io {
            path: path.to_owned(),
            source,
        })
    })
}

const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RANDOM_CHARS: usize = 6;

/// Removes the temporary files earlier, killed writes of one target left in `dir`: regular files
/// named `prefix`, exactly [`TEMP_RANDOM_CHARS`] letters or digits and [`TEMP_SUFFIX`]. Failing to
/// remove one does not fail the write.
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let stale = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix)?.strip_suffix(TEMP_SUFFIX))
            .is_some_and(|random| {
                random.len() == TEMP_RANDOM_CHARS
                    && random.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let name = path.file_name().ok_or_else(|| {
        io_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // A recognisable name, so that the temporary file a killed write left is found and removed
    // by the next write of the same file.
    let prefix = format!(".{}.", name.to_string_lossy());
    remove_stale_temporaries(dir, &prefix);
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(&prefix)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RANDOM_CHARS);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // tempfile defaults to 0o600; output files should get what `File::create` gives (umask).
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let temp = builder.tempfile_in(dir).map_err(io_error)?;
    if let Ok(existing) = fs::metadata(path) {
        temp.as_file()
            .set_permissions(existing.permissions())
            .map_err(io_error)?;
    }

    let mut out = BufWriter::new(temp.as_file());
    fill(&mut out)?;
    out.flush().map_err(io_error)?;
    drop(out);
    temp.as_file().sync_all().map_err(io_error)?;
    temp.persist(path).map_err(|e| io_error(e.error))?;
    sync_dir(dir);
    Ok(())
}

/// Makes the rename durable. Best effort: some file systems refuse to sync a directory, and the
/// new content is complete either way.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
