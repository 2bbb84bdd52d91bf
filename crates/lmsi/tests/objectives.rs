//! Every objective of `lmsi run --objective` end to end on the embedded seed model, on a slice of
//! its task, as a user runs it: each writes its data, trains, and reports; `ttrl` gives the same
//! model twice from the same seed; `lmsi build-data` and `lmsi train --pairs` do the same offline.

use std::path::Path;

mod common;
use common::{Scratch, lmsi, run_args, seed_model, stderr};

/// A scratch directory with the first `pool` pool questions and `test` test questions of the
/// embedded task, and the first two built-in exemplars (what the embedded default uses).
fn slice(pool: usize, test: usize) -> Scratch {
    let f = Scratch::new();
    let embedded = f.dir.join("embedded");
    std::fs::create_dir(&embedded).unwrap();
    let (all_pool, all_test) = lmsi::embedded::default_data(&embedded).unwrap();
    let head = |from: &Path, n: usize, to: &str| {
        let text = std::fs::read_to_string(from).unwrap();
        let lines: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
        std::fs::write(f.dir.join(to), lines).unwrap();
    };
    head(&all_pool, pool, "pool.jsonl");
    head(&all_test, test, "test.jsonl");
    let builtin = include_str!("../../lmsi-data/src/exemplars.jsonl");
    let two: String = builtin.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(f.dir.join("exemplars.jsonl"), two).unwrap();
    f
}

/// `lmsi run` on the slice in `work`, with `extra` flags (which replace the same flags of the
/// defaults here); its stdout.
fn run(f: &Scratch, work: &str, extra: &[&str]) -> String {
    let (pool, test, exemplars, work) = (
        f.path("pool.jsonl"),
        f.path("test.jsonl"),
        f.path("exemplars.jsonl"),
        f.path(work),
    );
    let model = seed_model();
    let defaults = [
        ("--model", model.as_str()),
        ("--questions", &pool),
        ("--eval", &test),
        ("--exemplars", &exemplars),
        ("--formats", "cot-fewshot"),
        ("--work-dir", &work),
        ("--paths", "6"),
        ("--eval-paths", "3"),
        ("--max-new-tokens", "48"),
        ("--steps", "2"),
        ("--batch-size", "4"),
        ("--lr", "1e-4"),
    ];
    let out = lmsi(&run_args(&defaults, extra));
    assert!(out.status.success(), "{:?}: {}", extra, stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn report(f: &Scratch, work: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(f.dir.join(work).join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn weighted_and_scpo_runs_write_their_data_and_train() {
    let f = slice(8, 4);
    run(&f, "weighted", &["--objective", "weighted"]);
    let examples = jsonl(&f.dir.join("weighted/round-1/train.jsonl"));
    let paths = jsonl(&f.dir.join("weighted/round-1/paths.jsonl"));
    let answered = paths.iter().filter(|p| !p["answer"].is_null()).count();
    assert_eq!(
        examples.len(),
        answered,
        "every answered path, in one format"
    );
    let weight = |e: &serde_json::Value| e.get("weight").map_or(1.0, |w| w.as_f64().unwrap());
    assert!(examples.iter().all(|e| weight(e) > 0.0 && weight(e) <= 1.0));
    assert!(
        examples.iter().any(|e| weight(e) < 1.0),
        "some answers are not unanimous"
    );
    let r = report(&f, "weighted");
    assert_eq!(
        r["train_examples"].as_u64().unwrap() as usize,
        examples.len()
    );

    run(&f, "scpo", &["--objective", "scpo", "--beta", "0.2"]);
    let pairs = jsonl(&f.dir.join("scpo/round-1/pairs.jsonl"));
    assert!(!pairs.is_empty());
    for p in &pairs {
        let w = p["weight"].as_f64().unwrap();
        assert!(w > 0.0 && w <= 1.0, "{p}");
        assert_ne!(p["chosen"], p["rejected"]);
    }
    let model = f.dir.join("scpo/round-1/model");
    let reference = std::fs::read_to_string(model.join("reference_logprobs.json")).unwrap();
    let reference: Vec<(f64, f64)> = serde_json::from_str(&reference).unwrap();
    assert_eq!(reference.len(), pairs.len());
    assert!(reference.iter().all(|(c, r)| *c < 0.0 && *r < 0.0));
    let log = jsonl(&model.join("train_log.jsonl"));
    assert!(log.iter().all(|l| l["loss"].as_f64().unwrap().is_finite()));
}

#[test]
fn weighted_refuses_the_random_vote_control() {
    let f = slice(2, 2);
    let out = lmsi(&[
        "run",
        "--model",
        &seed_model(),
        "--questions",
        &f.path("pool.jsonl"),
        "--eval",
        &f.path("test.jsonl"),
        "--work-dir",
        &f.path("w"),
        "--objective",
        "weighted",
        "--control",
        "random-vote",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--objective must be sft, scpo or ttrl with --control random-vote"),
        "{err}"
    );
}

#[test]
fn ttrl_runs_online_and_the_same_seed_gives_the_same_model() {
    let f = slice(6, 3);
    let ttrl = [
        "--objective",
        "ttrl",
        "--ttrl-steps",
        "2",
        "--ttrl-questions",
        "3",
        "--ttrl-paths",
        "4",
    ];
    let log = run(&f, "a", &ttrl);
    assert!(log.contains("round-1/ttrl"), "{log}");
    assert!(
        !f.dir.join("a/round-1/train.jsonl").exists(),
        "no offline data"
    );
    let model = f.dir.join("a/round-1/model");
    let steps = jsonl(&model.join("ttrl_log.jsonl"));
    assert_eq!(steps.len(), 2);
    for s in &steps {
        let reward = s["reward"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&reward), "{s}");
        assert!(s["signals"]["majority_share"].as_f64().unwrap() > 0.0);
    }
    assert!(model.join("signals.svg").exists());
    assert_eq!(jsonl(&f.dir.join("a/round-1/paths.jsonl")).len(), 2 * 3 * 4);
    let r = report(&f, "a");
    assert_eq!(r["paths"], 24);
    // 24 paths over a pool of 6 questions, and the 3 evaluation paths.
    assert_eq!(r["compute_matched"]["paths"], 4 + 3);

    run(&f, "b", &ttrl);
    let weights =
        |dir: &str| std::fs::read(f.dir.join(dir).join("round-1/model/model.safetensors")).unwrap();
    assert_eq!(
        weights("a"),
        weights("b"),
        "the same seed gives the same run"
    );

    // Two updates per batch with a KL penalty, and the spurious-reward control, also run.
    let mut more = ttrl.to_vec();
    more.extend([
        "--ttrl-updates",
        "2",
        "--kl",
        "0.05",
        "--control",
        "random-vote",
    ]);
    run(&f, "c", &more);
    let steps = jsonl(&f.dir.join("c/round-1/model/ttrl_log.jsonl"));
    // A step whose groups all agree has nothing to train on, and no KL to report.
    let trained: Vec<_> = steps.iter().filter(|s| s["trained_paths"] != 0).collect();
    assert!(!trained.is_empty(), "{steps:?}");
    assert!(
        trained
            .iter()
            .all(|s| s["kl"].as_f64().is_some_and(|k| k >= 0.0)),
        "{steps:?}"
    );
}

#[test]
fn build_data_and_train_take_pairs_offline() {
    let f = slice(6, 2);
    run(&f, "w", &["--stop-after", "round-1/vote"]);
    let round = f.dir.join("w/round-1");
    let (votes, paths) = (round.join("votes.jsonl"), round.join("paths.jsonl"));
    let pairs = f.path("pairs.jsonl");
    let out = lmsi(&[
        "build-data",
        "--objective",
        "scpo",
        "--votes",
        &votes.to_string_lossy(),
        "--paths",
        &paths.to_string_lossy(),
        "--formats",
        "cot-fewshot",
        "--exemplars",
        &f.path("exemplars.jsonl"),
        "--out",
        &pairs,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("preference pairs"));
    let out = lmsi(&[
        "train",
        "--model",
        &seed_model(),
        "--pairs",
        &pairs,
        "--out",
        &f.path("dpo"),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(f.dir.join("dpo/reference_logprobs.json").exists());
    // Data and pairs at once are refused by the command line.
    let out = lmsi(&[
        "train",
        "--model",
        &seed_model(),
        "--pairs",
        &pairs,
        "--data",
        &pairs,
        "--out",
        &f.path("x"),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_probe_that_falls_stops_the_loop_and_keeps_the_best_model() {
    let f = slice(6, 8);
    // A learning rate that wrecks the model, so that the probe (the test slice) falls.
    let wreck = [
        "--lr",
        "3e-2",
        "--steps",
        "3",
        "--probe",
        &f.path("test.jsonl"),
    ];
    let mut args = wreck.to_vec();
    args.extend(["--rounds", "2"]);
    run(&f, "sft", &args);
    let r = report(&f, "sft");
    let before = r["probe_before"].as_f64().unwrap();
    assert!(before > 0.0, "{r}");
    let stopped = &r["stopped"];
    assert_eq!(stopped["round"], 1, "{r}");
    assert_eq!(stopped["kept"], "the starting model");
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap()
            .contains("probe's accuracy fell")
    );
    assert_eq!(
        r["rounds"].as_array().unwrap().len(),
        1,
        "round 2 never ran"
    );
    assert_eq!(r["after"], r["before"], "the kept model's accuracy");
    let md = std::fs::read_to_string(f.dir.join("sft/report.md")).unwrap();
    assert!(md.contains("The stop rule fired"), "{md}");

    // ttrl looks every step and goes back to the weights of its best check.
    let mut args = wreck.to_vec();
    args.extend([
        "--objective",
        "ttrl",
        "--ttrl-steps",
        "3",
        "--ttrl-questions",
        "3",
        "--ttrl-paths",
        "4",
        "--probe-every",
        "1",
    ]);
    run(&f, "ttrl", &args);
    let r = report(&f, "ttrl");
    let stopped = &r["rounds"][0]["stopped"];
    assert!(stopped["step"].as_u64().is_some(), "{r}");
    assert!(
        stopped["kept"]
            .as_str()
            .unwrap()
            .starts_with("round-1/model (the weights"),
        "{r}"
    );
    let log = jsonl(&f.dir.join("ttrl/round-1/model/ttrl_log.jsonl"));
    assert_eq!(log.len() as u64, stopped["step"].as_u64().unwrap());
    assert!(log.iter().all(|l| l["probe_accuracy"].is_number()));
}

#[test]
fn self_written_exemplars_come_from_the_pool_and_prompt_the_run() {
    let f = slice(8, 3);
    run(
        &f,
        "self",
        &[
            "--exemplars",
            "self",
            "--stop-after",
            "round-1/eval-before-greedy",
        ],
    );
    let written = jsonl(&f.dir.join("self/round-1/self-exemplars.jsonl"));
    // As many as the default set has (8 for a model given with --model), or fewer.
    assert!((1..=8).contains(&written.len()), "{written:?}");
    let pool = std::fs::read_to_string(f.dir.join("pool.jsonl")).unwrap();
    for e in &written {
        let question = e["question"].as_str().unwrap();
        assert!(pool.contains(question), "{question}");
        assert!(!e["reasoning"].as_str().unwrap().is_empty());
        assert!(!e["answer"].as_str().unwrap().is_empty());
    }
    let log = run(&f, "self", &["--exemplars", "self"]);
    assert!(
        log.contains("round-1/self-exemplars") && log.contains("resumed"),
        "{log}"
    );
}
