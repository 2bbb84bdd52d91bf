//! Answers read from real text: the worked solutions of the GSM8K train split, read as paths, each
//! vote for their own `#### N` answer, both as written and with the `####` line replaced by the
//! closing sentence lmsi's prompts end with ("The answer is N.").
//!
//! The data set is not part of the repository. The test reads `data/gsm8k/train.jsonl` in the shared
//! folder (`LMSI_SHARED`, else `../shared` beside the workspace, else `/work/shared`, as `cargo
//! xtask` looks for it) and skips, saying why, when it is absent.

use std::path::PathBuf;

use lmsi_voter::{AnswerKind, Ballot, Extractor, Weighting, vote};

fn train_file() -> Option<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    [
        std::env::var_os("LMSI_SHARED").map(PathBuf::from),
        Some(workspace.join("../shared")),
        Some(PathBuf::from("/work/shared")),
    ]
    .into_iter()
    .flatten()
    .map(|shared| shared.join("data/gsm8k/train.jsonl"))
    .find(|file| file.is_file())
    .map(|file| file.canonicalize().unwrap_or(file))
}

/// One solution's problems: `None` when every reading votes for the gold answer.
fn check_solution(extractor: &Extractor, line: usize, text: &str) -> Option<String> {
    let record: serde_json::Value = serde_json::from_str(text).expect("a JSON line");
    let solution = record["answer"].as_str().expect("a string \"answer\"");
    let (reasoning, gold) = solution.rsplit_once("####").expect("a `#### N` line");
    // The gold answer as written, in the key's form: GSM8K's are integers, some with commas.
    let gold = gold.trim().replace(',', "");
    let closing = format!("{} The answer is {gold}.", reasoning.trim_end());
    let readings = [
        ("as written", solution),
        ("ending in \"The answer is\"", &closing),
    ];
    let wrong: Vec<String> = readings
        .iter()
        .filter_map(|(how, path)| {
            let key = extractor.extract(path);
            let result = vote(&[Ballot::new(key.clone(), 0.0)], Weighting::Uniform);
            (result.answer.as_deref() != Some(gold.as_str()))
                .then(|| format!("line {line} {how}: read {key:?}, gold {gold}"))
        })
        .collect();
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

#[test]
fn every_gsm8k_train_solution_votes_for_its_own_answer() {
    let Some(file) = train_file() else {
        eprintln!(
            "skipped: data/gsm8k/train.jsonl not found in the shared folder (set LMSI_SHARED)"
        );
        return;
    };
    let text = std::fs::read_to_string(&file).expect("readable");
    let extractor = Extractor::new(AnswerKind::Number);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let failures: Vec<String> = lines
        .iter()
        .enumerate()
        .filter_map(|(n, line)| check_solution(&extractor, n + 1, line))
        .collect();
    assert!(!lines.is_empty(), "{} has no solutions", file.display());
    assert!(
        failures.is_empty(),
        "{} of {} solutions in {} do not vote for their answer:\n{}",
        failures.len(),
        lines.len(),
        file.display(),
        failures.join("\n")
    );
    eprintln!("{} solutions of {} read", lines.len(), file.display());
}
