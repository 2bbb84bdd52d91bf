//! What a run was computed from: a content hash (SHA-256) of each input file, and which stages
//! read each input.
//!
//! `lmsi run` records the hashes in its manifest beside its options. Run again after an input changed
//! and it refuses, naming the input; with `--redo-changed` it redoes exactly the stages that read a
//! changed input, directly or through an earlier stage:
//!
//! | input | stages redone |
//! |---|---|
//! | `model` (every file lmsi reads from it) | all |
//! | `questions` (the pool) | all but `eval-before-*` |
//! | `paths-from` (round 1's given paths) | all but `eval-before-*` |
//! | `eval` (the test set) | every `eval-*` |
//! | `student` | every round's `train` and `eval-after-*`, and all of rounds 2 and later |
//! | `probe` | every `probe*` and `ttrl` stage, and all of rounds 2 and later (the stop rule read it) |
//!
//! The options, exemplars included, are compared as they are serialised, so changing one of them is
//! a different run, not a changed input.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::Error;
use crate::run::RunConfig;

/// Files of a checkpoint directory that are not part of the model (training logs and state).
const NOT_MODEL: [&str; 8] = [
    "optimizer.safetensors",
    "trainer_state.json",
    "train_log.jsonl",
    "loss.svg",
    "reference_logprobs.json",
    "ttrl_log.jsonl",
    "ttrl_report.json",
    "signals.svg",
];

/// The content hash of each input of `config`, by input name.
pub fn input_hashes(config: &RunConfig) -> Result<BTreeMap<String, String>, Error> {
    let mut hashes = BTreeMap::new();
    hashes.insert("model".into(), hash_input(&config.model)?);
    hashes.insert("questions".into(), hash_file(&config.questions)?);
    hashes.insert("eval".into(), hash_file(&config.eval)?);
    if let Some(student) = &config.student {
        hashes.insert("student".into(), hash_input(student)?);
    }
    if let Some(paths) = &config.paths_from {
        hashes.insert("paths-from".into(), hash_file(paths)?);
    }
    if let Some(probe) = &config.probe {
        hashes.insert("probe".into(), hash_file(probe)?);
    }
    Ok(hashes)
}

/// Whether stage `stage` (`round-2/vote`) reads input `input`, directly or through an earlier stage.
pub fn reads(stage: &str, input: &str) -> bool {
    let (round, step) = stage.split_once('/').unwrap_or(("", stage));
    let later_round = round != "round-1";
    match input {
        "questions" | "paths-from" => !step.starts_with("eval-before"),
        "eval" => step.starts_with("eval-"),
        "student" => later_round || step == "train" || step.starts_with("eval-after"),
        "probe" => later_round || step.starts_with("probe") || step == "ttrl",
        _ => true,
    }
}

/// The hash of an input: of a file (a GGUF model, questions), or of a model directory's model files.
pub fn hash_input(path: &Path) -> Result<String, Error> {
    if path.is_file() {
        hash_file(path)
    } else {
        hash_dir(path)
    }
}

/// SHA-256 of a file, as hex.
fn hash_file(path: &Path) -> Result<String, Error> {
    let mut hasher = Sha256::new();
    add_file(&mut hasher, path)?;
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 over a model directory's files in name order (name and contents of each), leaving out
/// a checkpoint's training state.
fn hash_dir(dir: &Path) -> Result<String, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_file() && !NOT_MODEL.contains(&name.as_str()) {
            files.push(name);
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for name in files {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        add_file(&mut hasher, &dir.join(name))?;
    }
    Ok(hex(&hasher.finalize()))
}

fn add_file(hasher: &mut Sha256, path: &Path) -> Result<(), Error> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf).map_err(|e| Error::io(path, e))? {
            0 => return Ok(()),
            n => hasher.update(&buf[..n]),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_input_reaches_the_stages_that_read_it() {
        assert!(reads("round-1/eval-before-sc", "model"));
        assert!(!reads("round-1/eval-before-sc", "questions"));
        assert!(reads("round-1/generate", "questions"));
        assert!(reads("round-1/eval-after-greedy", "questions"));
        assert!(!reads("round-1/train", "eval"));
        assert!(reads("round-2/eval-after-sc", "eval"));
        assert!(!reads("round-1/generate", "student"));
        assert!(reads("round-1/train", "student"));
        assert!(reads("round-2/generate", "student"));
    }

    #[test]
    fn a_model_hash_leaves_out_training_state() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let before = hash_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("train_log.jsonl"), "{}\n").unwrap();
        assert_eq!(hash_dir(dir.path()).unwrap(), before);
        std::fs::write(dir.path().join("config.json"), "{ }").unwrap();
        assert_ne!(hash_dir(dir.path()).unwrap(), before);
    }
}
