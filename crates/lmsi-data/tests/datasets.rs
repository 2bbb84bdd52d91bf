//! Every dataset read from a fixture in its published format (JSONL, JSON or parquet as the
//! Hugging Face hub writes it; `tests/fixtures/datasets/`, records written for this project), and
//! bad files.

use std::path::PathBuf;

use lmsi_data::{BadLines, Dataset, DatasetFile, Question, read_dataset};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/datasets")
        .join(name)
}

fn read(name: &str) -> DatasetFile {
    read_dataset(&fixture(name), None, BadLines::Error).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The first question of a fixture, which must hold `dataset`.
fn first(name: &str, dataset: Dataset) -> Question {
    let file = read(name);
    assert_eq!(file.dataset, dataset, "{name}");
    file.questions.items[0].clone()
}

#[test]
fn arithmetic_datasets_read_with_number_answers() {
    for name in ["gsm8k.jsonl", "gsm8k.parquet"] {
        let q = first(name, Dataset::Gsm8k);
        assert_eq!(q.gold(), Some("24"), "{name}");
        assert_eq!(q.id, "1", "{name}: a record without an id is numbered");
    }
    let svamp = read("svamp.json");
    assert_eq!(svamp.dataset, Dataset::Svamp);
    let q = &svamp.questions.items;
    assert_eq!(
        q[0].question,
        "Nina had 9 marbles. She gave 4 marbles to Paul. How many marbles does Nina have now?"
    );
    assert_eq!((q[0].id.as_str(), q[0].gold()), ("fixture-1", Some("5")));
    assert_eq!(q[1].gold(), Some("7.5"));
}

#[test]
fn multiple_choice_datasets_list_their_options_and_answer_with_a_letter() {
    let cases = [
        (
            "aqua-rat.jsonl",
            Dataset::AquaRat,
            "C",
            "(A) 8 (B) 12 (C) 15",
        ),
        (
            "arc.parquet",
            Dataset::Arc,
            "B",
            "(A) flower (B) root (C) leaf (D) seed",
        ),
        ("arc-original.jsonl", Dataset::Arc, "B", "(B) Mercury"),
        (
            "openbookqa.parquet",
            Dataset::OpenBookQa,
            "A",
            "A magnet will pick up\nAnswer Choices: (A) a paper clip",
        ),
        (
            "commonsenseqa.parquet",
            Dataset::CommonsenseQa,
            "A",
            "(A) bookshelf (B) ocean",
        ),
        (
            "commonsenseqa-original.jsonl",
            Dataset::CommonsenseQa,
            "C",
            "stay dry in the rain?\nAnswer Choices: (A) sunglasses",
        ),
    ];
    for (name, dataset, gold, text) in cases {
        let q = first(name, dataset);
        assert_eq!(q.gold(), Some(gold), "{name}");
        assert!(q.question.contains(text), "{name}: {}", q.question);
        assert!(q.choices.as_ref().is_some_and(|c| c.len() >= 4), "{name}");
    }
    // ARC labels some questions 1-4: the answer becomes a letter.
    let arc = read("arc.parquet");
    assert_eq!(arc.questions.items[1].gold(), Some("C"));
    assert!(arc.questions.items[1].question.contains("(C) 100 C"));
}

#[test]
fn entailment_datasets_ask_whether_the_premise_entails_the_hypothesis() {
    let cases = [
        ("anli.parquet", Dataset::Anli, ["A", "C"]),
        ("anli-original.jsonl", Dataset::Anli, ["A", "B"]),
        ("mnli.parquet", Dataset::Mnli, ["A", "B"]),
    ];
    for (name, dataset, golds) in cases {
        let file = read(name);
        assert_eq!(file.dataset, dataset, "{name}");
        let q = &file.questions.items;
        assert_eq!(
            [q[0].gold().unwrap(), q[1].gold().unwrap()],
            golds,
            "{name}"
        );
        assert!(q[0].question.starts_with("Premise: \""), "{name}");
        assert!(
            q[0].question
                .ends_with("(A) yes (B) it is not possible to tell (C) no"),
            "{name}"
        );
    }
    assert_eq!(
        first("mnli-original.jsonl", Dataset::Mnli).gold(),
        Some("C")
    );
    for name in ["rte.parquet", "rte-superglue.jsonl"] {
        let file = read(name);
        assert_eq!(file.dataset, Dataset::Rte, "{name}");
        let golds: Vec<_> = file
            .questions
            .items
            .iter()
            .map(|q| q.gold().unwrap())
            .collect();
        assert_eq!(golds, ["yes", "no"], "{name}");
        assert!(
            file.questions.items[0]
                .question
                .ends_with("Does the premise entail the hypothesis?")
        );
    }
}

#[test]
fn yes_no_and_span_datasets() {
    let file = read("strategyqa.json");
    assert_eq!(file.dataset, Dataset::StrategyQa);
    let golds: Vec<_> = file
        .questions
        .items
        .iter()
        .map(|q| q.gold().unwrap())
        .collect();
    assert_eq!(golds, ["no", "yes"]);
    let file = read("drop.parquet");
    assert_eq!(file.dataset, Dataset::Drop);
    let q = &file.questions.items[0];
    assert_eq!((q.id.as_str(), q.gold()), ("q-1", Some("Kato")));
    assert!(
        q.question.starts_with("Passage: The Owls")
            && q.question.ends_with("Question: Who scored the touchdowns?")
    );
}

/// The hub's DROP layout as JSONL: validation's annotators' answers one after another (the most
/// frequent is the gold), and a train multi-span answer (its first span).
#[test]
fn drop_takes_the_annotators_most_frequent_span() {
    let file = read("drop.jsonl");
    assert_eq!(file.dataset, Dataset::Drop);
    let golds: Vec<_> = file
        .questions
        .items
        .iter()
        .map(|q| (q.id.as_str(), q.gold().unwrap()))
        .collect();
    assert_eq!(golds, [("v-1", "2"), ("t-1", "Oduya")]);
}

#[test]
fn a_file_of_no_known_dataset_names_its_fields_and_the_expected_ones() {
    let error = read_dataset(&fixture("unknown.jsonl"), None, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unknown.jsonl: line 1: fields [prompt, target] match no dataset"),
        "{error}"
    );
    assert!(error.contains("svamp (Body, Question, Answer)"), "{error}");
}

#[test]
fn format_overrides_detection_and_a_record_without_its_fields_is_named() {
    let error = read_dataset(
        &fixture("gsm8k.parquet"),
        Some(Dataset::Arc),
        BadLines::Error,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("gsm8k.parquet: row 1: arc:"), "{error}");
    assert!(error.contains("question, choices, answerKey"), "{error}");
}

#[test]
fn bad_records_are_named_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arc.jsonl");
    let good = r#"{"id": "x", "question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}"#;
    let bad_key = r#"{"id": "y", "question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}"#;
    std::fs::write(&path, format!("{good}\n{bad_key}\n{good}\n")).unwrap();
    let error = read_dataset(&path, None, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("arc.jsonl: line 2: arc: \"answerKey\" \"E\" is not one of the labels"),
        "{error}"
    );
    let file = read_dataset(&path, None, BadLines::Skip).unwrap();
    assert_eq!(file.questions.items.len(), 1);
    let lines: Vec<_> = file.questions.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [2, 3], "the second bad line repeats id x");
    assert!(
        file.questions.skipped[1]
            .message
            .contains("duplicate id \"x\" (also line 1)")
    );

    let json = dir.path().join("svamp.json");
    std::fs::write(&json, r#"{"Body": "not an array"}"#).unwrap();
    let error = read_dataset(&json, None, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert!(error.contains("must be an array of records"), "{error}");

    let parquet = dir.path().join("cut.parquet");
    let bytes = std::fs::read(fixture("arc.parquet")).unwrap();
    std::fs::write(&parquet, &bytes[..bytes.len() / 2]).unwrap();
    let error = read_dataset(&parquet, None, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cut.parquet") && error.contains("parquet"),
        "{error}"
    );
}

#[test]
fn a_parquet_file_with_malformed_pages_is_an_error_not_a_panic() {
    // Found by the `dataset` fuzz target: the parquet crate asserts while unpacking its pages.
    let error = read_dataset(&fixture("malformed-pages.parquet"), None, BadLines::Error)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("malformed-pages.parquet") && error.contains("parquet"),
        "{error}"
    );
}

/// The real GSM8K training split (`shared/data/gsm8k/train.jsonl`, its published JSONL; never
/// copied into the repository) where the machine has it: every record reads, and every gold (some
/// written with thousands separators, "1,080") is a number as the answer extractor keys it.
#[test]
fn the_published_gsm8k_train_file_reads_whole() {
    let shared = std::env::var_os("LMSI_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let path = shared.join("data/gsm8k/train.jsonl");
    if !path.exists() {
        eprintln!("skipping: {} is not on this machine", path.display());
        return;
    }
    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
    let file = read_dataset(&path, None, BadLines::Error).unwrap();
    assert_eq!(file.dataset, Dataset::Gsm8k);
    assert_eq!(file.questions.items.len(), lines);
    assert!(file.questions.skipped.is_empty());
    let numbers = lmsi_voter::Extractor::new(Dataset::Gsm8k.answer_kind());
    for q in &file.questions.items {
        let gold = q.gold().unwrap_or_else(|| panic!("{}: no gold", q.id));
        let key = numbers.gold_key(gold);
        assert!(
            key.parse::<f64>().is_ok(),
            "{}: gold {gold:?} keys as {key:?}",
            q.id
        );
    }
}
