//! The `lmsi` program as a user runs it: the model commands on a tiny random model, and bad inputs,
//! which must fail with an error naming the file (or tensor) and leave no output file behind.

use std::path::{Path, PathBuf};

use lmsi_transformer::testing::TinyModel;

mod common;
use common::{Scratch, lmsi, run_args, seed_model, stderr};

/// lmsi-data's dataset fixtures, one small file per dataset in its published format.
const DATASET_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmsi-data/tests/fixtures/datasets"
);

/// A scratch directory with a tiny random model (`model/`) and two questions (`questions.jsonl`).
type Fixture = Scratch;

fn fixture() -> Fixture {
    let f = Scratch::new();
    TinyModel::default().write(&f.dir.join("model")).unwrap();
    std::fs::write(
        f.dir.join("questions.jsonl"),
        "{\"id\": \"a\", \"question\": \"Ann has 3 pens and buys 4 more. How many pens does she have?\", \"answer\": \"#### 7\"}\n\
         {\"question\": \"Bo has 9 cups and breaks 2. How many cups are left?\", \"answer\": \"#### 7\"}\n",
    )
    .unwrap();
    f
}

#[test]
fn generate_vote_build_and_eval_on_a_tiny_model() {
    let f = fixture();
    let out = lmsi(&[
        "generate",
        "--model",
        &f.path("model"),
        "--questions",
        &f.path("questions.jsonl"),
        "--out",
        &f.path("paths.jsonl"),
        "--paths",
        "3",
        "--max-new-tokens",
        "8",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 questions, 6 paths") && stdout.contains("tokens/s"),
        "{stdout}"
    );
    let paths = std::fs::read_to_string(f.dir.join("paths.jsonl")).unwrap();
    assert_eq!(paths.lines().count(), 6);
    let first: serde_json::Value = serde_json::from_str(paths.lines().next().unwrap()).unwrap();
    for key in [
        "id", "question", "path", "text", "answer", "logprob", "tokens", "gold",
    ] {
        assert!(first.get(key).is_some(), "paths lines have {key}: {first}");
    }

    let out = lmsi(&[
        "vote",
        "--paths",
        &f.path("paths.jsonl"),
        "--out",
        &f.path("votes.jsonl"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = lmsi(&[
        "eval",
        "--model",
        &f.path("model"),
        "--dataset",
        &f.path("questions.jsonl"),
        "--out",
        &f.path("report.json"),
        "--mode",
        "sc",
        "--paths",
        "2",
        "--max-new-tokens",
        "6",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["mode"], "sc");
    assert_eq!(report["n"], 2);
    let ci = report["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= report["accuracy"].as_f64().unwrap());
    // maj@k and pass@k for k = 1, 2, the calibration bins, and every sampled text.
    let samples = &report["samples"];
    let at_k = samples["at_k"].as_array().unwrap();
    assert_eq!(at_k.len(), 2, "{samples}");
    let pass = |k: usize| at_k[k]["pass"].as_f64().unwrap();
    assert!(pass(0) <= pass(1), "{samples}");
    assert_eq!(samples["calibration"].as_array().unwrap().len(), 5);
    assert_eq!(report["items"][0]["texts"].as_array().unwrap().len(), 2);
    let chart = std::fs::read_to_string(f.dir.join("report.maj-at-k.svg")).unwrap();
    assert!(chart.contains("maj@k"), "{chart}");
}

/// The first two built-in exemplars, written to the fixture, as the embedded default uses them: all
/// eight do not fit the seed model's context.
fn two_exemplars(f: &Fixture) -> String {
    let exemplars = f.path("exemplars.jsonl");
    let builtin = include_str!("../../lmsi-data/src/exemplars.jsonl");
    let two: String = builtin.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&exemplars, two).unwrap();
    exemplars
}

/// `lmsi run` of the seed model, which answers the fixture's questions (so its votes make training
/// data), on them as pool and test set, in `work/`: two exemplars, short paths, one training step, one
/// thread; `extra` gives the rest (`--paths` among them).
fn run_seed_model(f: &Fixture, extra: &[&str]) -> std::process::Output {
    let (model, questions, work) = (seed_model(), f.path("questions.jsonl"), f.path("work"));
    let exemplars = two_exemplars(f);
    let flags = [
        ("--exemplars", exemplars.as_str()),
        ("--model", &model),
        ("--questions", &questions),
        ("--eval", &questions),
        ("--work-dir", &work),
        ("--eval-paths", "2"),
        ("--max-new-tokens", "40"),
        ("--steps", "1"),
        ("--batch-size", "2"),
    ];
    lmsi(&run_args(&flags, extra))
}

/// Asserts that every question sampled between `window` and `paths` paths, and some fewer than
/// `paths`: the early-stopping rule ended them.
#[track_caller]
fn assert_stopped_early(sampled: &[usize], window: usize, paths: usize) {
    assert!(
        sampled.iter().all(|n| (window..=paths).contains(n)),
        "{sampled:?}"
    );
    assert!(
        sampled.iter().any(|&n| n < paths),
        "nothing stopped early: {sampled:?}"
    );
}

/// Runs `generate` against a broken model or input; it must fail naming `expected` and write nothing.
fn fails_cleanly(f: &Fixture, model: &str, questions: &str, expected: &str) -> String {
    let out_file = f.dir.join("out.jsonl");
    let out = lmsi(&[
        "generate",
        "--model",
        model,
        "--questions",
        questions,
        "--out",
        &out_file.to_string_lossy(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
    assert!(!out_file.exists(), "no output file after a failure");
    err
}

fn copy_model(f: &Fixture, name: &str) -> PathBuf {
    let to = f.dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(f.dir.join("model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

#[test]
fn a_truncated_safetensors_file_is_named() {
    let f = fixture();
    let model = copy_model(&f, "truncated");
    let file = model.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    fails_cleanly(
        &f,
        &model.to_string_lossy(),
        &f.path("questions.jsonl"),
        "model.safetensors",
    );
}

#[test]
fn a_config_that_does_not_match_the_weights_names_the_tensor() {
    let f = fixture();
    let model = copy_model(&f, "reshaped");
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(
        model.join("config.json"),
        config.replace("\"intermediate_size\": 48", "\"intermediate_size\": 40"),
    )
    .unwrap();
    fails_cleanly(
        &f,
        &model.to_string_lossy(),
        &f.path("questions.jsonl"),
        "mlp.gate_proj.weight",
    );
}

#[test]
fn a_missing_tokenizer_is_named() {
    let f = fixture();
    let model = copy_model(&f, "no-tokenizer");
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    fails_cleanly(
        &f,
        &model.to_string_lossy(),
        &f.path("questions.jsonl"),
        "tokenizer.json",
    );
}

#[test]
fn an_empty_questions_file_is_named() {
    let f = fixture();
    std::fs::write(f.dir.join("empty.jsonl"), "\n").unwrap();
    fails_cleanly(&f, &f.path("model"), &f.path("empty.jsonl"), "empty.jsonl");
}

#[test]
fn a_directory_that_is_not_a_model_is_named() {
    let f = fixture();
    let not_model = f.dir.join("not-a-model");
    std::fs::create_dir_all(&not_model).unwrap();
    let err = fails_cleanly(
        &f,
        &not_model.to_string_lossy(),
        &f.path("questions.jsonl"),
        "config.json",
    );
    // The operating system's words appear once, not once per level of the error chain.
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}

#[test]
fn a_bad_line_is_named_and_skip_bad_skips_it() {
    let f = fixture();
    let paths = f.dir.join("paths.jsonl");
    std::fs::write(
        &paths,
        "{\"id\":\"a\",\"question\":\"q\",\"path\":0,\"text\":\"The answer is 5.\",\"answer\":\"5\",\"logprob\":-1.0,\"tokens\":3}\n{not json\n",
    )
    .unwrap();
    let votes = f.dir.join("votes.jsonl");
    let out = lmsi(&[
        "vote",
        "--paths",
        &paths.to_string_lossy(),
        "--out",
        &votes.to_string_lossy(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("paths.jsonl:2"), "{}", stderr(&out));
    assert!(!votes.exists());
    let out = lmsi(&[
        "vote",
        "--paths",
        &paths.to_string_lossy(),
        "--out",
        &votes.to_string_lossy(),
        "--skip-bad",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped 1"), "{}", stderr(&out));
    assert!(Path::new(&votes).exists());
}

#[test]
fn a_run_stopped_after_a_stage_resumes_at_the_next() {
    let f = fixture();
    let run = |stop_after: Option<&str>, extra: &[&str]| {
        let mut args = vec!["--paths", "2"];
        if let Some(stage) = stop_after {
            args.extend(["--stop-after", stage]);
        }
        args.extend_from_slice(extra);
        run_seed_model(&f, &args)
    };
    let out = run(Some("round-1/vote"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let work = f.dir.join("work");
    assert!(work.join("round-1/votes.jsonl").exists());
    assert!(
        !work.join("round-1/train.jsonl").exists(),
        "stopped after the vote"
    );
    assert!(!work.join("report.json").exists());
    let out = run(None, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("round-1/vote") && log.contains("resumed"),
        "{log}"
    );
    assert!(
        log.contains("round-1/build") && log.contains("round-1/train"),
        "{log}"
    );
    assert!(work.join("report.json").exists());
    // The same directory with other options is refused, naming what differs.
    let out = run(None, &["--min-confidence", "0.5"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("holds a run with other options: vote.min_confidence (0.0, then 0.5)"),
        "{err}"
    );
}

#[test]
fn vote_with_the_random_vote_control_keeps_a_sampled_answer() {
    let f = fixture();
    let line = |k: usize, answer: &str| {
        format!(
            "{{\"id\": \"q\", \"question\": \"How many?\", \"path\": {k}, \"text\": \"The answer is {answer}.\", \"answer\": null, \"logprob\": -1.0, \"tokens\": 5}}\n"
        )
    };
    let paths: String = ["4", "4", "4", "9"]
        .iter()
        .enumerate()
        .map(|(k, a)| line(k, a))
        .collect();
    std::fs::write(f.dir.join("paths.jsonl"), paths).unwrap();
    let vote = |seed: &str| {
        let out = lmsi(&[
            "vote",
            "--paths",
            &f.path("paths.jsonl"),
            "--out",
            &f.path("votes.jsonl"),
            "--control",
            "random-vote",
            "--seed",
            seed,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("random-vote control"));
        let votes = std::fs::read_to_string(f.dir.join("votes.jsonl")).unwrap();
        let vote: serde_json::Value = serde_json::from_str(votes.trim()).unwrap();
        vote["answer"].as_str().unwrap().to_string()
    };
    let drawn: std::collections::BTreeSet<String> = (0..16).map(|s| vote(&s.to_string())).collect();
    // Over sixteen seeds both distinct answers come up, the minority one included.
    assert_eq!(drawn.into_iter().collect::<Vec<_>>(), ["4", "9"]);
}

#[test]
fn a_gguf_file_is_a_model_wherever_a_model_is_read() {
    use candle_core::quantized::GgmlDType;
    use lmsi_transformer::testing::{GgufFixture, write_gguf};
    let f = fixture();
    let gguf = f.dir.join("seed.gguf");
    write_gguf(
        &lmsi_transformer::testing::seed_model_dir(),
        &gguf,
        &GgufFixture::of(GgmlDType::F32),
    );
    let eval = |model: &str, report: &str| {
        let out = lmsi(&[
            "eval",
            "--model",
            model,
            "--dataset",
            &f.path("questions.jsonl"),
            "--out",
            &f.path(report),
            "--mode",
            "sc",
            "--paths",
            "3",
            "--prompt",
            "cot-zeroshot",
            "--max-new-tokens",
            "24",
            "--threads",
            "1",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.dir.join(report)).unwrap()).unwrap();
        report.as_object_mut().unwrap().remove("seconds");
        report
    };
    // The same weights and tokenizer: the same paths, votes and report (but for its wall time).
    assert_eq!(
        eval(&gguf.to_string_lossy(), "from-file.json"),
        eval(&seed_model(), "from-dir.json")
    );
    let truncated = f.dir.join("truncated.gguf");
    std::fs::write(&truncated, &std::fs::read(&gguf).unwrap()[..5000]).unwrap();
    let out = lmsi(&[
        "eval",
        "--model",
        &truncated.to_string_lossy(),
        "--dataset",
        &f.path("questions.jsonl"),
        "--out",
        &f.path("bad.json"),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("truncated.gguf"), "{}", stderr(&out));
    assert!(!f.dir.join("bad.json").exists());
}

#[test]
fn a_benchmark_dataset_is_read_in_its_published_format() {
    let f = fixture();
    let fixtures = DATASET_FIXTURES;
    let eval = |dataset: &str, extra: &[&str]| {
        let mut args = vec![
            "eval".to_string(),
            "--model".into(),
            f.path("model"),
            "--dataset".into(),
            format!("{fixtures}/{dataset}"),
            "--out".into(),
            f.path("report.json"),
            "--max-new-tokens".into(),
            "4".into(),
            "--threads".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        lmsi(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = eval("arc.parquet", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.dir.join("report.json")).unwrap()).unwrap();
    let golds: Vec<&str> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["gold"].as_str().unwrap())
        .collect();
    // Letters (the choice answer kind), the second question relabelled from ARC's 1-4.
    assert_eq!(golds, ["B", "C"]);
    let out = eval("gsm8k.parquet", &["--format", "arc"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("gsm8k.parquet: row 1: arc:"),
        "{}",
        stderr(&out)
    );
    let out = eval("unknown.jsonl", &[]);
    assert!(
        stderr(&out).contains("match no dataset"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_run_reads_its_sets_as_the_dataset_format_names() {
    let f = fixture();
    let fixtures = DATASET_FIXTURES;
    let run = |dataset: &str, work: &str| {
        let file = format!("{fixtures}/{dataset}");
        let (model, work) = (f.path("model"), f.path(work));
        let flags = [
            ("--model", model.as_str()),
            ("--questions", &file),
            ("--eval", &file),
            ("--format", "arc"),
            ("--work-dir", &work),
            ("--paths", "2"),
            ("--eval-paths", "2"),
            ("--max-new-tokens", "4"),
            ("--stop-after", "round-1/generate"),
        ];
        lmsi(&run_args(&flags, &[]))
    };
    let out = run("arc.parquet", "arc");
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest = std::fs::read_to_string(f.dir.join("arc/manifest.json")).unwrap();
    assert!(manifest.contains(r#""format": "arc""#), "{manifest}");
    let paths = std::fs::read_to_string(f.dir.join("arc/round-1/paths.jsonl")).unwrap();
    assert_eq!(
        paths.lines().count(),
        2 * 2,
        "two questions, two paths each"
    );
    let out = run("gsm8k.parquet", "gsm8k");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("gsm8k.parquet: row 1: arc:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_suite_evaluates_each_dataset_into_one_table() {
    let f = fixture();
    let fixtures = DATASET_FIXTURES;
    let suite = serde_json::json!([
        {"path": format!("{fixtures}/arc.parquet"), "name": "ARC-Challenge"},
        {"path": format!("{fixtures}/strategyqa.json"), "paths": 3},
        {"path": format!("{fixtures}/gsm8k.jsonl"), "prompt": "cot-zeroshot"},
    ]);
    std::fs::write(f.dir.join("suite.json"), suite.to_string()).unwrap();
    let out = lmsi(&[
        "eval",
        "--model",
        &f.path("model"),
        "--suite",
        &f.path("suite.json"),
        "--out",
        &f.path("table.json"),
        "--paths",
        "2",
        "--max-new-tokens",
        "4",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.dir.join("table.json")).unwrap()).unwrap();
    let rows = table["rows"].as_array().unwrap();
    let cells: Vec<(&str, &str, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["dataset"].as_str().unwrap(),
                r["questions"].as_u64().unwrap(),
                r["paths"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            ("ARC-Challenge", "arc", 2, 2),
            ("strategyqa", "strategyqa", 2, 3),
            ("gsm8k", "gsm8k", 2, 2)
        ]
    );
    let markdown = std::fs::read_to_string(f.dir.join("table.md")).unwrap();
    assert!(
        markdown.starts_with("| dataset | format | questions | greedy | self-consistency |"),
        "{markdown}"
    );
    assert_eq!(markdown.lines().count(), 5);

    std::fs::write(
        f.dir.join("bad.json"),
        r#"[{"path": "x.jsonl", "shots": 3}]"#,
    )
    .unwrap();
    let out = lmsi(&[
        "eval",
        "--model",
        &f.path("model"),
        "--suite",
        &f.path("bad.json"),
        "--out",
        &f.path("t2.json"),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bad.json") && stderr(&out).contains("shots"),
        "{}",
        stderr(&out)
    );
}

/// `eval --mode sc --early-stop` votes over the paths sampled until the rule stops a question, and
/// the rule is refused in greedy mode.
#[test]
fn self_consistency_stops_early_when_asked() {
    let f = fixture();
    let seed = seed_model();
    let exemplars = two_exemplars(&f);
    let out = lmsi(&[
        "eval",
        "--model",
        &seed,
        "--exemplars",
        &exemplars,
        "--dataset",
        &f.path("questions.jsonl"),
        "--out",
        &f.path("early.json"),
        "--mode",
        "sc",
        "--paths",
        "8",
        "--early-stop",
        "esc:2",
        "--max-new-tokens",
        "40",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.dir.join("early.json")).unwrap()).unwrap();
    let sampled: Vec<usize> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["texts"].as_array().unwrap().len())
        .collect();
    assert_stopped_early(&sampled, 2, 8);

    let out = lmsi(&[
        "eval",
        "--model",
        &seed,
        "--dataset",
        &f.path("questions.jsonl"),
        "--out",
        &f.path("greedy.json"),
        "--early-stop",
        "adaptive",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--mode sc only"), "{}", stderr(&out));
    assert!(!f.dir.join("greedy.json").exists());
}

/// `run --early-stop` samples a pool question's paths until the rule stops it.
#[test]
fn a_run_stops_sampling_pool_questions_early_when_asked() {
    let f = fixture();
    let out = run_seed_model(
        &f,
        &[
            "--paths",
            "8",
            "--early-stop",
            "esc:2",
            "--stop-after",
            "round-1/generate",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let paths = std::fs::read_to_string(f.dir.join("work/round-1/paths.jsonl")).unwrap();
    let mut per_question = std::collections::HashMap::<String, usize>::new();
    for line in paths.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        *per_question.entry(record["id"].to_string()).or_default() += 1;
    }
    assert_eq!(per_question.len(), 2, "{per_question:?}");
    let sampled: Vec<usize> = per_question.into_values().collect();
    assert_stopped_early(&sampled, 2, 8);
}
