//! The whole self-improvement loop end to end, in process, on the embedded seed model and a small
//! pool: the report's keys, the consistency of every stage's output with the others, resuming, and
//! bad inputs.

use std::path::{Path, PathBuf};

use lmsi::generate::GenerateOptions;
use lmsi::run::{RunConfig, RunControl, RunReport, run};
use lmsi::train::TrainOptions;
use lmsi::vote::VoteOptions;
use lmsi_data::{
    BadLines, ExemplarSet, PathRecord, PromptFormat, TrainExample, VoteRecord, read_jsonl,
    write_jsonl_atomic,
};
use lmsi_sampler::SamplingParams;
use lmsi_transformer::{CpuBackend, Model, Storage, Tokenizer};
use lmsi_voter::{AnswerKind, Extractor};

const POOL: usize = 12;
const PATHS: usize = 4;

struct Setup {
    _root: tempfile::TempDir,
    root: PathBuf,
    config: RunConfig,
}

fn setup() -> Setup {
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path().to_path_buf();
    let model = lmsi::embedded::seed_model(&root.join("seed-model")).unwrap();
    let recipe = lmsi::seed::SeedRecipe::default();
    let pool = lmsi::seed::held_out_questions(&recipe, 77, POOL, "pool", &[]).unwrap();
    let test = lmsi::seed::held_out_questions(&recipe, 78, 6, "test", &[]).unwrap();
    write_jsonl_atomic(&root.join("pool.jsonl"), &pool).unwrap();
    write_jsonl_atomic(&root.join("test.jsonl"), &test).unwrap();
    let generate = GenerateOptions {
        exemplars: ExemplarSet::builtin().first(recipe.exemplars).unwrap(),
        paths: PATHS,
        sampling: SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 1.0,
            seed: 5,
        },
        max_new_tokens: 96,
        max_batch: 16,
        ..GenerateOptions::default()
    };
    let config = RunConfig {
        model,
        questions: root.join("pool.jsonl"),
        eval: root.join("test.jsonl"),
        generate,
        eval_paths: 3,
        eval_temperature: 1.2,
        vote: VoteOptions::default(),
        formats: PromptFormat::ALL.to_vec(),
        train: TrainOptions {
            lr: 5e-4,
            batch_size: 8,
            steps: Some(3),
            ..TrainOptions::default()
        },
        rounds: 1,
        student: None,
        self_questions: 0,
        self_question_confidence: 0.6,
        objective: Default::default(),
        ttrl: Default::default(),
        probe: None,
        self_exemplars: None,
        paths_from: None,
        format: None,
    };
    Setup {
        _root: root_dir,
        root,
        config,
    }
}

fn load(dir: &Path, storage: Storage) -> Result<(Model<CpuBackend>, Tokenizer), lmsi::Error> {
    let model = Model::load_for(dir, CpuBackend::new(), storage)?;
    let tokenizer = Tokenizer::load(dir, model.config())?;
    Ok((model, tokenizer))
}

fn run_to_end(config: &RunConfig, dir: &Path) -> RunReport {
    run(config, dir, &load, RunControl::default(), &mut |_| {})
        .unwrap()
        .expect("a full run reports")
}

#[test]
fn the_loop_runs_and_every_stage_agrees_with_the_others() {
    let s = setup();
    let dir = s.root.join("run");
    let report = run_to_end(&s.config, &dir);

    // The report's stable keys, accuracies as fractions.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    for key in [
        "before.greedy_accuracy",
        "before.sc_accuracy",
        "after.greedy_accuracy",
        "after.sc_accuracy",
    ] {
        let (a, b) = key.split_once('.').unwrap();
        let v = json[a][b]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {json}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    // The label-free signals of the round's paths.
    let signals = &json["rounds"][0]["signals"];
    let share = signals["majority_share"].as_f64().unwrap();
    assert!(share > 0.0 && share <= 1.0, "{signals}");
    assert!(
        signals["distinct_answers"].as_f64().unwrap() >= 1.0,
        "{signals}"
    );
    assert!(
        signals["mean_token_logprob"].as_f64().unwrap() < 0.0,
        "{signals}"
    );
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        markdown.contains("| round | majority share |"),
        "{markdown}"
    );
    for key in [
        "vote_accuracy",
        "questions",
        "paths",
        "kept_paths",
        "train_examples",
        "seconds",
    ] {
        assert!(json.get(key).is_some(), "{key} in report.json");
    }
    // The compute-matched baseline: as many paths per test question as the loop sampled.
    let matched = &json["compute_matched"];
    let expected = s.config.rounds * s.config.generate.paths + s.config.eval_paths;
    assert_eq!(
        matched["paths"].as_u64(),
        Some(expected as u64),
        "{matched}"
    );
    assert!((0.0..=1.0).contains(&matched["sc_accuracy"].as_f64().unwrap()));
    for stage in [
        "round-1/eval-before-greedy",
        "round-1/eval-before-sc",
        "round-1/eval-before-matched",
        "round-1/generate",
        "round-1/vote",
        "round-1/build",
        "round-1/train",
        "round-1/eval-after-greedy",
        "round-1/eval-after-sc",
    ] {
        assert!(report.seconds.contains_key(stage), "seconds of {stage}");
    }
    for file in [
        "report.md",
        "accuracy.svg",
        "calibration.svg",
        "round-1/model/model.safetensors",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }

    // Paths: every pool question, PATHS paths each, numbered 0..PATHS.
    let paths: Vec<PathRecord> = read_jsonl(&dir.join("round-1/paths.jsonl"), BadLines::Error)
        .unwrap()
        .items;
    assert_eq!(paths.len(), POOL * PATHS);
    assert_eq!(report.paths, paths.len());
    for (i, chunk) in paths.chunks(PATHS).enumerate() {
        assert!(chunk.iter().all(|p| p.id == format!("pool-{i}")));
        assert_eq!(
            chunk.iter().map(|p| p.path).collect::<Vec<_>>(),
            (0..PATHS).collect::<Vec<_>>()
        );
    }

    // Votes: one per question; the agreeing paths are exactly those whose answer is the vote's.
    let votes: Vec<VoteRecord> = read_jsonl(&dir.join("round-1/votes.jsonl"), BadLines::Error)
        .unwrap()
        .items;
    assert_eq!(votes.len(), POOL);
    let extractor = Extractor::new(AnswerKind::Number);
    let mut kept = 0;
    for (vote, chunk) in votes.iter().zip(paths.chunks(PATHS)) {
        let answers: Vec<Option<String>> =
            chunk.iter().map(|p| extractor.extract(&p.text)).collect();
        assert_eq!(vote.total, PATHS);
        assert_eq!(vote.valid, answers.iter().flatten().count());
        let agreeing: Vec<usize> = (0..PATHS)
            .filter(|&k| answers[k].is_some() && answers[k] == vote.answer)
            .collect();
        assert_eq!(vote.paths, agreeing, "{}", vote.id);
        assert_eq!(vote.votes, agreeing.len());
        if vote.answer.is_some() {
            assert!((vote.confidence - agreeing.len() as f64 / vote.valid as f64).abs() < 1e-12);
            kept += agreeing.len();
        }
    }
    assert_eq!(report.kept_paths, kept);

    // Training data: every kept path in each of the four formats, ending with the voted answer.
    let examples: Vec<TrainExample> = read_jsonl(&dir.join("round-1/train.jsonl"), BadLines::Error)
        .unwrap()
        .items;
    assert_eq!(examples.len(), kept * 4);
    assert_eq!(report.train_examples, examples.len());
    let mut examples = examples.iter();
    for vote in votes.iter().filter(|v| v.answer.is_some()) {
        for _ in &vote.paths {
            for format in PromptFormat::ALL {
                let ex = examples.next().unwrap();
                assert_eq!(ex.format, format);
                assert!(ex.prompt.contains(&vote.question));
                let answer = vote.answer.as_deref().unwrap();
                assert!(
                    ex.completion.ends_with(&format!("The answer is {answer}.")),
                    "{}",
                    ex.completion
                );
            }
        }
    }
}

/// Everything a run produced that must not depend on how it was interrupted.
fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    [
        "round-1/paths.jsonl",
        "round-1/votes.jsonl",
        "round-1/train.jsonl",
        "round-1/model/model.safetensors",
        "round-1/eval-after-sc.json",
    ]
    .iter()
    .map(|f| {
        let mut bytes = std::fs::read(dir.join(f)).unwrap();
        if f.ends_with(".json") {
            // Evaluation reports carry their wall time; drop it.
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            bytes = serde_json::to_vec(&v).unwrap();
        }
        (f.to_string(), bytes)
    })
    .collect()
}

#[test]
fn a_run_stopped_after_generation_resumes_to_the_same_results() {
    let s = setup();
    let whole = s.root.join("whole");
    run_to_end(&s.config, &whole);

    let split = s.root.join("split");
    let stopped = run(
        &s.config,
        &split,
        &load,
        RunControl {
            stop_after: Some("round-1/generate"),
            ..RunControl::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(stopped.is_none());
    assert!(
        split.join("round-1/paths.jsonl").exists() && !split.join("round-1/votes.jsonl").exists()
    );
    // A generation killed half-way leaves finished questions in the partial file: simulate one by
    // keeping only the first half of the questions (and half a line of the next).
    let paths: Vec<PathRecord> = read_jsonl(&split.join("round-1/paths.jsonl"), BadLines::Error)
        .unwrap()
        .items;
    let mut partial: String = paths
        .chunks(PATHS)
        .take(POOL / 2)
        .map(|q| serde_json::to_string(q).unwrap() + "\n")
        .collect();
    partial.push_str("[{\"id\": \"pool-6\", \"quest");
    let other = s.root.join("killed");
    std::fs::create_dir_all(other.join("round-1")).unwrap();
    std::fs::copy(split.join("manifest.json"), other.join("manifest.json")).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(other.join("manifest.json")).unwrap())
            .unwrap();
    manifest["stages"]
        .as_object_mut()
        .unwrap()
        .remove("round-1/generate");
    std::fs::write(other.join("manifest.json"), manifest.to_string()).unwrap();
    for f in [
        "round-1/eval-before-greedy.json",
        "round-1/eval-before-sc.json",
        "round-1/eval-before-matched.json",
    ] {
        std::fs::copy(split.join(f), other.join(f)).unwrap();
    }
    std::fs::write(other.join("round-1/paths.jsonl.partial"), partial).unwrap();

    run_to_end(&s.config, &split);
    run_to_end(&s.config, &other);
    let expected = outputs(&whole);
    for (name, dir) in [("stopped", &split), ("killed", &other)] {
        for ((file, got), (_, want)) in outputs(dir).iter().zip(&expected) {
            assert!(
                got == want,
                "{file} of the {name} run differs from the uninterrupted run's"
            );
        }
    }
    assert!(!other.join("round-1/paths.jsonl.partial").exists());
}

#[test]
fn other_options_in_the_same_directory_are_refused() {
    let s = setup();
    let dir = s.root.join("run");
    run(
        &s.config,
        &dir,
        &load,
        RunControl {
            stop_after: Some("round-1/eval-before-greedy"),
            ..RunControl::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let mut other = s.config.clone();
    other.eval_paths = 5;
    let err = run(&other, &dir, &load, RunControl::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("other options"), "{err}");
}

#[test]
fn bad_inputs_are_clear_errors_that_keep_earlier_stages() {
    let s = setup();
    // A questions file with no usable question.
    std::fs::write(s.root.join("blank.jsonl"), "\n\n").unwrap();
    let config = RunConfig {
        questions: s.root.join("blank.jsonl"),
        ..s.config.clone()
    };
    let err = run(
        &config,
        &s.root.join("a"),
        &load,
        RunControl::default(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("blank.jsonl"), "{err}");

    // An option out of range is refused before any work, naming it.
    let mut config = s.config.clone();
    config.vote.min_confidence = 1.5;
    let dir = s.root.join("b");
    let err = run(&config, &dir, &load, RunControl::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--min-confidence must be a number from 0 to 1"),
        "{err}"
    );
    assert!(!dir.join("round-1").exists());

    // Training that has nothing to train on (every example longer than the limit) fails in the
    // train stage; the stages before it keep their outputs.
    let mut config = s.config.clone();
    config.train.max_tokens = 1;
    let err = run(&config, &dir, &load, RunControl::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no training examples left"), "{err}");
    assert_eq!(
        read_jsonl::<PathRecord>(&dir.join("round-1/paths.jsonl"), BadLines::Error)
            .unwrap()
            .items
            .len(),
        POOL * PATHS
    );
    assert!(dir.join("round-1/train.jsonl").exists());
    assert!(!dir.join("round-1/model").exists());

    // A model directory that is not a model.
    std::fs::create_dir_all(s.root.join("empty-model")).unwrap();
    let config = RunConfig {
        model: s.root.join("empty-model"),
        ..s.config.clone()
    };
    let err = run(
        &config,
        &s.root.join("c"),
        &load,
        RunControl::default(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("config.json"), "{err}");
}
