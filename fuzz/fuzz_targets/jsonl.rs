//! lmsi-data's JSONL readers on arbitrary bytes (written to a scratch file, since they read paths):
//! reading must never panic; under `BadLines::Error` a success skips nothing and `BadLines::Skip`
//! gives the same records; under `BadLines::Skip` a bad line is never an error, and every line is
//! either a record, a skipped line or blank; question files hold unique, non-blank ids and
//! non-blank questions.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lmsi_data::{
    BadLines, DataError, ExemplarSet, Loaded, PathRecord, Question, TrainExample, VoteRecord,
    read_jsonl, read_questions,
};

#[path = "common/scratch.rs"]
mod scratch;

type Reader<T> = fn(&Path, BadLines) -> Result<Loaded<T>, DataError>;

fuzz_target!(|bytes: &[u8]| {
    let file = scratch::write("input.jsonl", bytes);
    let lines = bytes.split(|&b| b == b'\n').count();
    check::<PathRecord>(&file, read_jsonl, lines);
    check::<VoteRecord>(&file, read_jsonl, lines);
    check::<TrainExample>(&file, read_jsonl, lines);
    check::<serde_json::Value>(&file, read_jsonl, lines);
    if let Some(questions) = check::<Question>(&file, read_questions, lines) {
        let mut ids = std::collections::HashSet::new();
        for q in &questions.items {
            assert!(
                !q.id.trim().is_empty() && !q.question.trim().is_empty(),
                "{q:?}"
            );
            assert!(ids.insert(q.id.as_str()), "duplicate id {:?}", q.id);
        }
    }
    let _ = ExemplarSet::load(&file);
});

/// Reads `file` both ways and checks how the two agree; returns what `BadLines::Skip` read.
fn check<T: PartialEq + std::fmt::Debug>(
    file: &Path,
    read: Reader<T>,
    lines: usize,
) -> Option<Loaded<T>> {
    let strict = read(file, BadLines::Error);
    let lenient = read(file, BadLines::Skip);
    match &lenient {
        Ok(loaded) => {
            assert!(loaded.items.len() + loaded.skipped.len() <= lines);
            assert!(loaded.skipped.windows(2).all(|w| w[0].line < w[1].line));
            assert!(loaded.skipped.iter().all(|s| (1..=lines).contains(&s.line)));
        }
        Err(DataError::Empty { .. }) => {}
        Err(other) => panic!("BadLines::Skip failed: {other}"),
    }
    if let Ok(strict) = &strict {
        assert!(strict.skipped.is_empty());
        assert_eq!(Some(strict), lenient.as_ref().ok());
    }
    lenient.ok()
}
