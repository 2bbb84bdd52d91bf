//! Every extractor on arbitrary UTF-8: extraction must never panic, keys are never empty, and
//! number, choice and yes/no keys read back as themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmsi_voter::{AnswerKind, Extractor};

fuzz_target!(|text: &str| {
    let extractors = [
        Extractor::new(AnswerKind::Number),
        Extractor::new(AnswerKind::Choice),
        Extractor::new(AnswerKind::Choice).with_choices(vec!["Paris".into(), "New York".into()]),
        Extractor::new(AnswerKind::YesNo),
        Extractor::new(AnswerKind::Text),
    ];
    for extractor in &extractors {
        if let Some(key) = extractor.extract(text) {
            assert!(!key.is_empty(), "empty key for {text:?}");
            if extractor.kind() != AnswerKind::Text {
                assert_eq!(
                    extractor.extract(&key).as_deref(),
                    Some(key.as_str()),
                    "{text:?}"
                );
            }
        }
    }
});
