//! JSONL reading and atomic writing, through the public API.

use std::fs;
use std::path::{Path, PathBuf};

use lmsi_data::{
    BadLines, DataError, PathRecord, PromptFormat, Question, SkippedLine, TrainExample, VoteRecord,
    read_jsonl, read_questions, write_atomic, write_jsonl_atomic,
};
use proptest::prelude::*;
use serde::{Serialize, Serializer};
use tempfile::TempDir;

fn file_with(content: impl AsRef<[u8]>) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("questions.jsonl");
    fs::write(&path, content).unwrap();
    (dir, path)
}

fn located(path: &Path, line: usize, message: &str) -> String {
    format!("{}:{line}: {message}", path.display())
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn question(id: &str, text: &str, answer: Option<&str>) -> Question {
    Question {
        id: id.into(),
        question: text.into(),
        answer: answer.map(str::to_owned),
        choices: None,
    }
}

#[test]
fn gsm8k_style_lines_load_unchanged() {
    // Written here in GSM8K's layout: no id, reasoning with calculator annotations, `#### N`.
    let lines = [
        r#"{"question": "Ann has 3 bags with 4 pears each. How many pears does she have?", "answer": "She has 3*4=<<3*4=12>>12 pears.\n#### 12"}"#,
        r#"{"question": "A pen costs $2. How much do 5 pens cost?", "answer": "5 pens cost 5*2=$<<5*2=10>>10.\n#### 10"}"#,
    ];
    let (_dir, path) = file_with(format!("{}\n{}\n", lines[0], lines[1]));
    let loaded = read_questions(&path, BadLines::Error).unwrap();
    assert!(loaded.skipped.is_empty());
    assert_eq!(
        loaded.items,
        [
            question(
                "1",
                "Ann has 3 bags with 4 pears each. How many pears does she have?",
                Some("She has 3*4=<<3*4=12>>12 pears.\n#### 12"),
            ),
            question(
                "2",
                "A pen costs $2. How much do 5 pens cost?",
                Some("5 pens cost 5*2=$<<5*2=10>>10.\n#### 10"),
            ),
        ]
    );
    let golds: Vec<_> = loaded.items.iter().map(Question::gold).collect();
    assert_eq!(golds, [Some("12"), Some("10")]);
}

#[test]
fn missing_ids_become_line_numbers_counting_blank_lines() {
    let (_dir, path) = file_with(
        "\u{feff}{\"question\": \"a\"}\r\n\n   \n{\"id\": \"x\", \"question\": \"b\"}\n{\"question\": \"c\", \"choices\": [\"1\", \"2\"], \"extra\": 1}",
    );
    let items = read_questions(&path, BadLines::Error).unwrap().items;
    let ids: Vec<&str> = items.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(ids, ["1", "x", "5"]);
    assert_eq!(items[2].choices, Some(vec!["1".into(), "2".into()]));
}

#[test]
fn malformed_lines_name_the_file_and_line() {
    let (_dir, path) = file_with("{\"question\": \"a\"}\n\n{\"question\": ]\n");
    let err = read_questions(&path, BadLines::Error).unwrap_err();
    assert!(matches!(err, DataError::Parse { line: 3, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        located(&path, 3, "expected value at column 14")
    );

    let (_dir, path) = file_with("{\"question\": \"a\"}\n{\"id\": \"2\"}\n");
    let err = read_questions(&path, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        located(&path, 2, "missing field `question` at column 11")
    );

    let (_dir, path) = file_with(b"{\"question\": \"a\"}\n{\"question\": \"\xff\"}\n");
    let err = read_questions(&path, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert_eq!(err, located(&path, 2, "invalid UTF-8 at byte 15"));
}

#[test]
fn invalid_questions_name_the_file_and_line() {
    let cases = [
        ("{\"question\": \"  \"}", "empty \"question\""),
        ("{\"question\": \"q\", \"id\": \" \"}", "empty \"id\""),
        (
            "{\"question\": \"q\", \"choices\": []}",
            "empty \"choices\"",
        ),
    ];
    for (line, message) in cases {
        let (_dir, path) = file_with(format!("{{\"question\": \"ok\"}}\n{line}\n"));
        let err = read_questions(&path, BadLines::Error).unwrap_err();
        assert!(matches!(err, DataError::Invalid { line: 2, .. }), "{err:?}");
        assert_eq!(err.to_string(), located(&path, 2, message));
    }
}

#[test]
fn duplicate_ids_name_both_lines() {
    let (_dir, path) = file_with(
        "{\"id\": \"a\", \"question\": \"1\"}\n{\"id\": \"b\", \"question\": \"2\"}\n{\"id\": \"a\", \"question\": \"3\"}\n",
    );
    let err = read_questions(&path, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        located(&path, 3, "duplicate id \"a\" (also on line 1)")
    );

    // An assigned line number can collide with an explicit id; the message says why.
    let (_dir, path) = file_with("{\"id\": \"2\", \"question\": \"1\"}\n{\"question\": \"2\"}\n");
    let err = read_questions(&path, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&located(&path, 2, "duplicate id \"2\" (also on line 1)")),
        "{err}"
    );
    assert!(err.contains("line number as id"), "{err}");
}

#[test]
fn skip_mode_skips_and_reports_bad_lines() {
    let (_dir, path) = file_with(
        "{\"id\": \"a\", \"question\": \"1\"}\nnot json\n{\"question\": \"\"}\n{\"id\": \"a\", \"question\": \"dup\"}\n{\"question\": \"5\"}\n",
    );
    let loaded = read_questions(&path, BadLines::Skip).unwrap();
    let ids: Vec<&str> = loaded.items.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(ids, ["a", "5"]);
    let lines: Vec<usize> = loaded.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [2, 3, 4]);
    assert_eq!(
        loaded.skipped[0],
        SkippedLine {
            line: 2,
            message: "expected ident at column 2".into()
        }
    );
    assert_eq!(loaded.skipped[1].message, "empty \"question\"");
    assert!(loaded.skipped[2].message.starts_with("duplicate id \"a\""));
    assert_eq!(BadLines::default(), BadLines::Error);
}

#[test]
fn files_without_questions_are_errors() {
    for content in ["", "\n  \n", "oops\n"] {
        let (_dir, path) = file_with(content);
        let err = read_questions(&path, BadLines::Skip).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{content:?}: {err}");
    }
    // Other record types may be legitimately empty.
    let (_dir, path) = file_with("\n");
    let loaded = read_jsonl::<VoteRecord>(&path, BadLines::Error).unwrap();
    assert!(loaded.items.is_empty() && loaded.skipped.is_empty());
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.jsonl");
    let err = read_questions(&path, BadLines::Error).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", path.display()))
    );
}

fn path_record(k: usize) -> PathRecord {
    PathRecord {
        id: "q\"1".into(),
        question: "Line one\nline two? ünïcode".into(),
        path: k,
        text: " She has 2 + 2 = 4.\n\nQ:".into(),
        answer: k.is_multiple_of(2).then(|| "4".into()),
        // Not exactly representable in few digits: needs serde_json's exact float parsing.
        logprob: -25661.254165906994 - k as f64,
        tokens: 17 + k,
        gold: (k == 1).then(|| "4".into()),
    }
}

#[test]
fn every_record_type_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");

    let questions = vec![
        question("1", "What?\nReally?", Some("x\n#### 3")),
        Question {
            choices: Some(vec!["yes".into(), "no".into()]),
            ..question("2", "Yes or no?", None)
        },
    ];
    write_jsonl_atomic(&file, &questions).unwrap();
    assert_eq!(
        read_questions(&file, BadLines::Error).unwrap().items,
        questions
    );
    assert_eq!(
        read_jsonl::<Question>(&file, BadLines::Error)
            .unwrap()
            .items,
        questions
    );

    let paths: Vec<PathRecord> = (0..3).map(path_record).collect();
    write_jsonl_atomic(&file, &paths).unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap().lines().count(), 3);
    assert_eq!(
        read_jsonl::<PathRecord>(&file, BadLines::Error)
            .unwrap()
            .items,
        paths
    );

    let votes = vec![
        VoteRecord {
            id: "1".into(),
            question: "q".into(),
            answer: Some("4".into()),
            votes: 3,
            valid: 4,
            total: 5,
            confidence: 0.75,
            paths: vec![0, 2, 4],
            gold: Some("4".into()),
        },
        VoteRecord {
            id: "2".into(),
            question: "q".into(),
            answer: None,
            votes: 0,
            valid: 0,
            total: 5,
            confidence: 0.0,
            paths: vec![],
            gold: None,
        },
    ];
    write_jsonl_atomic(&file, &votes).unwrap();
    assert_eq!(
        read_jsonl::<VoteRecord>(&file, BadLines::Error)
            .unwrap()
            .items,
        votes
    );
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.lines().next().unwrap().contains("\"gold\":\"4\""));
    assert!(!text.lines().nth(1).unwrap().contains("gold"));

    let examples: Vec<TrainExample> = PromptFormat::ALL
        .into_iter()
        .map(|format| TrainExample {
            prompt: "Q: x\nA:".into(),
            completion: " The answer is 1.".into(),
            format,
            weight: 1.0,
        })
        .collect();
    write_jsonl_atomic(&file, &examples).unwrap();
    assert!(fs::read_to_string(&file).unwrap().starts_with(
        "{\"prompt\":\"Q: x\\nA:\",\"completion\":\" The answer is 1.\",\"format\":\"cot-fewshot\"}\n"
    ));
    assert_eq!(
        read_jsonl::<TrainExample>(&file, BadLines::Error)
            .unwrap()
            .items,
        examples
    );
}

/// Serialises fine until the `fail_at`-th item (0-based).
struct FailsAt {
    index: usize,
    fail_at: usize,
}

impl Serialize for FailsAt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.index == self.fail_at {
            return Err(serde::ser::Error::custom("refusing on purpose"));
        }
        serializer.serialize_u64(self.index as u64)
    }
}

fn failing_items() -> impl Iterator<Item = FailsAt> {
    (0..5).map(|index| FailsAt { index, fail_at: 2 })
}

#[test]
fn a_failed_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    let err = write_jsonl_atomic(&file, failing_items()).unwrap_err();
    assert!(
        matches!(err, DataError::Serialize { line: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        located(&file, 3, "cannot serialise record: refusing on purpose")
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
}

#[test]
fn a_failed_write_leaves_an_existing_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    fs::write(&file, "old content\n").unwrap();
    write_jsonl_atomic(&file, failing_items()).unwrap_err();
    assert_eq!(fs::read_to_string(&file).unwrap(), "old content\n");
    assert_eq!(dir_entries(dir.path()), ["out.jsonl"]);

    // A target that cannot be replaced (a directory) fails without leaving the temporary file.
    let target = dir.path().join("a_directory");
    fs::create_dir(&target).unwrap();
    let err = write_atomic(&target, b"x").unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert_eq!(dir_entries(dir.path()), ["a_directory", "out.jsonl"]);
}

#[test]
fn successful_writes_replace_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    fs::write(&file, "a much longer old content than the new one\n").unwrap();
    write_atomic(&file, b"{}\n").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"{}\n");
    write_jsonl_atomic(&file, Vec::<Question>::new()).unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"");
    assert_eq!(dir_entries(dir.path()), ["report.json"]);
}

#[test]
fn a_write_removes_the_temporary_files_killed_writes_of_its_target_left() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("votes.jsonl");
    // What a write killed before its rename leaves, another target's, and a near miss.
    for name in [
        ".votes.jsonl.a1B2c3.tmp",
        ".paths.jsonl.x9Y8z7.tmp",
        ".votes.jsonl.notes.tmp",
    ] {
        fs::write(dir.path().join(name), "partial").unwrap();
    }
    write_atomic(&file, b"{}\n").unwrap();
    assert_eq!(
        dir_entries(dir.path()),
        [
            ".paths.jsonl.x9Y8z7.tmp",
            ".votes.jsonl.notes.tmp",
            "votes.jsonl"
        ]
    );
}

#[cfg(unix)]
#[test]
fn written_files_get_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;

    let reference = dir.path().join("created.txt");
    fs::File::create(&reference).unwrap();
    let fresh = dir.path().join("fresh.jsonl");
    write_atomic(&fresh, b"x").unwrap();
    assert_eq!(mode(&fresh), mode(&reference));

    let existing = dir.path().join("existing.jsonl");
    fs::write(&existing, "old").unwrap();
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o640)).unwrap();
    write_atomic(&existing, b"new").unwrap();
    assert_eq!(mode(&existing), 0o640);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn questions_with_any_text_round_trip(
        texts in prop::collection::vec(("\\PC*\\S\\PC*", prop::option::of(any::<String>())), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.jsonl");
        let questions: Vec<Question> = texts
            .into_iter()
            .enumerate()
            .map(|(i, (text, answer))| Question { id: format!("id {i}"), question: text, answer, choices: None })
            .collect();
        write_jsonl_atomic(&file, &questions).unwrap();
        prop_assert_eq!(read_questions(&file, BadLines::Error).unwrap().items, questions);
    }

    #[test]
    fn path_records_with_any_values_round_trip(
        text in any::<String>(),
        logprob in -1e6f64..0.0,
        path in any::<usize>(),
        tokens in any::<usize>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.jsonl");
        let record = PathRecord { text, logprob, path, tokens, ..path_record(0) };
        write_jsonl_atomic(&file, [&record]).unwrap();
        prop_assert_eq!(read_jsonl::<PathRecord>(&file, BadLines::Error).unwrap().items, vec![record]);
    }
}
