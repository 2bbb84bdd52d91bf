//! `lmsi_data::read_dataset` on an arbitrary file, read as JSON and as JSONL (the file type is told
//! by the extension): reading never panics, and every question read has an id and a non-empty text.
//! Parquet is left out: the `parquet` crate asserts on some malformed pages, which `read_dataset`
//! catches, but libFuzzer's panic hook aborts on a caught panic too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmsi_data::{BadLines, read_dataset};

#[path = "common/scratch.rs"]
mod scratch;

fuzz_target!(|bytes: &[u8]| {
    for name in ["data.json", "data.jsonl"] {
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
