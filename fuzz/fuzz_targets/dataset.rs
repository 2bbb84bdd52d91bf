//! `lmsi_data::read_dataset` on an arbitrary file, read as parquet, JSON and JSONL in turn (the
//! file type is told by the extension): reading never panics, and every question read has an id, a
//! non-empty text and an answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmsi_data::{BadLines, read_dataset};

#[path = "common/scratch.rs"]
mod scratch;

fuzz_target!(|bytes: &[u8]| {
    for name in ["data.parquet", "data.json", "data.jsonl"] {
        let path = scratch::write(name, bytes);
        for bad in [BadLines::Error, BadLines::Skip] {
            if let Ok(file) = read_dataset(&path, None, bad) {
                for q in &file.questions.items {
                    assert!(!q.id.is_empty() && !q.question.trim().is_empty(), "{q:?}");
                }
            }
        }
    }
});
