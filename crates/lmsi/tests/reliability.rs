//! Careless and hostile inputs, as a user gives them to the `lmsi` program: outputs that alias inputs,
//! numeric options out of range, duplicates, changed inputs under a resumed run. Each must be refused
//! before any work, with a message naming what is wrong, and leave every input as it was.

use std::path::Path;

use lmsi_transformer::testing::TinyModel;

mod common;
use common::{Scratch, lmsi, run_args, seed_model, stderr};

/// Runs `args`, expects a failure whose message contains `expected`, and returns the message.
fn refused<S: AsRef<str>>(args: &[S], expected: &str) -> String {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = lmsi(&args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.contains(expected), "{args:?}: {err}");
    err
}

fn path_line(id: &str, k: usize, answer: &str) -> String {
    format!(
        "{{\"id\": \"{id}\", \"question\": \"How many?\", \"path\": {k}, \"text\": \"The answer is {answer}.\", \"answer\": \"{answer}\", \"logprob\": -1.0, \"tokens\": 5}}\n"
    )
}

fn vote_line(id: &str) -> String {
    format!(
        "{{\"id\": \"{id}\", \"question\": \"How many?\", \"answer\": \"4\", \"votes\": 2, \"valid\": 2, \"total\": 2, \"confidence\": 1.0, \"paths\": [0, 1]}}\n"
    )
}

/// A scratch directory with a paths file of two paths, its votes and one training example.
fn files() -> Scratch {
    let f = Scratch::new();
    let paths = path_line("q1", 0, "4") + &path_line("q1", 1, "4");
    std::fs::write(f.dir.join("paths.jsonl"), paths).unwrap();
    std::fs::write(f.dir.join("votes.jsonl"), vote_line("q1")).unwrap();
    std::fs::write(
        f.dir.join("train.jsonl"),
        "{\"prompt\": \"Q: How many?\\nA:\", \"completion\": \" 4.\", \"format\": \"cot-fewshot\"}\n",
    )
    .unwrap();
    f
}

fn read(f: &Scratch, name: &str) -> String {
    std::fs::read_to_string(f.dir.join(name)).unwrap()
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let f = files();
    let (paths, votes, data) = (
        f.path("paths.jsonl"),
        f.path("votes.jsonl"),
        f.path("train.jsonl"),
    );
    let before = read(&f, "paths.jsonl");
    refused(
        &["vote", "--paths", &paths, "--out", &paths],
        "is also --paths",
    );
    // The same file through a hard link and through a symbolic link.
    std::fs::hard_link(f.dir.join("paths.jsonl"), f.dir.join("hard.jsonl")).unwrap();
    std::os::unix::fs::symlink(f.dir.join("paths.jsonl"), f.dir.join("soft.jsonl")).unwrap();
    for alias in ["hard.jsonl", "soft.jsonl"] {
        refused(
            &["vote", "--paths", &paths, "--out", &f.path(alias)],
            "is also --paths",
        );
    }
    let dotted = format!(
        "{}/../{}/paths.jsonl",
        f.path("."),
        f.dir.file_name().unwrap().to_string_lossy()
    );
    refused(
        &["vote", "--paths", &paths, "--out", &dotted],
        "is also --paths",
    );
    assert_eq!(read(&f, "paths.jsonl"), before);

    let build = |out: &str| {
        [
            "build-data",
            "--votes",
            &votes,
            "--paths",
            &paths,
            "--out",
            out,
        ]
        .map(str::to_string)
    };
    for out in [&votes, &paths] {
        let args = build(out);
        refused(&args, "refusing to overwrite an input");
    }
    assert_eq!(read(&f, "votes.jsonl"), vote_line("q1"));

    let model = f.dir.join("model");
    TinyModel::default().write(&model).unwrap();
    let model = model.to_string_lossy().into_owned();
    let train = |out: &str, data: &str| {
        let args = [
            "train", "--model", &model, "--data", data, "--out", out, "--device", "cpu",
        ];
        args.map(str::to_string)
    };
    let cases = [
        (train(&data, &data), "is also --data"),
        (train(&model, &data), "is also --model"),
        (train(&f.path("."), &data), "would replace --data"),
    ];
    for (args, expected) in cases {
        refused(&args, expected);
    }
    assert!(f.dir.join("train.jsonl").is_file());
    assert!(f.dir.join("model/config.json").is_file());
    let eval = [
        "eval",
        "--model",
        &model,
        "--dataset",
        &paths,
        "--out",
        &format!("{model}/config.json"),
    ];
    refused(&eval, "is a file of --model");
}

#[test]
fn a_training_out_that_holds_a_checkpoint_needs_resume() {
    let f = files();
    let model = f.dir.join("model");
    TinyModel::default().write(&model).unwrap();
    let old = f.dir.join("old-checkpoint");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("config.json"), "{}").unwrap();
    let (model, data, out) = (
        model.to_string_lossy(),
        f.path("train.jsonl"),
        f.path("old-checkpoint"),
    );
    refused(
        &[
            "train", "--model", &model, "--data", &data, "--out", &out, "--device", "cpu",
        ],
        "already holds a checkpoint; pass --resume",
    );
    assert_eq!(
        std::fs::read_to_string(old.join("config.json")).unwrap(),
        "{}"
    );
}

#[test]
fn numeric_options_out_of_range_are_named() {
    let f = files();
    let (paths, data, out) = (f.path("paths.jsonl"), f.path("train.jsonl"), f.path("out"));
    let train = |flag: &str, value: &str| {
        [
            "train", "--model", "m", "--data", &data, "--out", &out, flag, value,
        ]
        .map(str::to_string)
    };
    let cases = [
        (
            train("--save-every", "0"),
            "--save-every <SAVE_EVERY>': must be at least 1",
        ),
        (
            train("--epochs", "0"),
            "--epochs <EPOCHS>': must be a finite number greater than 0",
        ),
        (
            train("--epochs", "nan"),
            "--epochs <EPOCHS>': must be a finite number greater than 0",
        ),
        (
            train("--grad-clip", "-1"),
            "--grad-clip <GRAD_CLIP>': must be a finite number of at least 0",
        ),
        (train("--lr", "inf"), "--lr <LR>'"),
        (train("--eval-split", "1"), "--eval-split <EVAL_SPLIT>'"),
        (
            train("--threads", "0"),
            "--threads <THREADS>': must be at least 1",
        ),
    ];
    for (args, expected) in cases {
        refused(&args, expected);
    }
    refused(
        &[
            "vote",
            "--paths",
            &paths,
            "--out",
            &out,
            "--min-confidence",
            "nan",
        ],
        "--min-confidence <MIN_CONFIDENCE>': must be a number from 0 to 1",
    );
    let generate = |flag: &str, value: &str| {
        let args = [
            "generate",
            "--model",
            "m",
            "--questions",
            &paths,
            "--out",
            &out,
            flag,
            value,
        ];
        args.map(str::to_string)
    };
    for (flag, value) in [
        ("--paths", "0"),
        ("--top-p", "0"),
        ("--temperature", "-1"),
        ("--max-batch", "0"),
    ] {
        let args = generate(flag, value);
        refused(&args, &format!("'{flag} <"));
    }
    assert!(!f.dir.join("out").exists());
}

#[test]
fn duplicates_and_empty_inputs_are_errors_naming_the_line() {
    let f = files();
    let (paths, votes, out) = (
        f.path("paths.jsonl"),
        f.path("votes.jsonl"),
        f.path("out.jsonl"),
    );
    std::fs::write(&votes, vote_line("q1") + &vote_line("q1")).unwrap();
    refused(
        &[
            "build-data",
            "--votes",
            &votes,
            "--paths",
            &paths,
            "--out",
            &out,
        ],
        "votes.jsonl:2: a second vote for question \"q1\" (also on line 1)",
    );
    let twice = path_line("q1", 0, "4") + &path_line("q1", 0, "5");
    std::fs::write(&paths, twice).unwrap();
    refused(
        &["vote", "--paths", &paths, "--out", &out],
        "paths.jsonl:2: question \"q1\" has path 0 twice (also on line 1)",
    );
    std::fs::write(&paths, "").unwrap();
    refused(&["vote", "--paths", &paths, "--out", &out], "no records");
    assert!(!Path::new(&out).exists());
}

#[test]
fn a_resumed_run_notices_a_changed_input() {
    let f = files();
    let questions = f.dir.join("questions.jsonl");
    let write_questions = |second: &str| {
        let text = format!(
            "{{\"id\": \"a\", \"question\": \"Ann has 3 pens and buys 4 more. How many pens does she have?\", \"answer\": \"#### 7\"}}\n\
             {{\"id\": \"b\", \"question\": \"{second}\", \"answer\": \"#### 7\"}}\n"
        );
        std::fs::write(&questions, text).unwrap();
    };
    write_questions("Bo has 9 cups and breaks 2. How many cups are left?");
    std::fs::write(
        f.dir.join("exemplars.jsonl"),
        "{\"question\": \"Cy has 2 hats and gets 5 more. How many hats does Cy have?\", \"reasoning\": \"Cy has 2 + 5 = 7 hats.\", \"answer\": \"7\"}\n",
    )
    .unwrap();
    let (model, questions, work) = (seed_model(), f.path("questions.jsonl"), f.path("work"));
    let exemplars = f.path("exemplars.jsonl");
    let run = |extra: &[&str]| {
        let flags = [
            ("--model", model.as_str()),
            ("--questions", &questions),
            ("--eval", &questions),
            ("--exemplars", &exemplars),
            ("--work-dir", &work),
            ("--paths", "2"),
            ("--eval-paths", "2"),
            ("--max-new-tokens", "6"),
            ("--stop-after", "round-1/generate"),
        ];
        lmsi(&run_args(&flags, extra))
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write_questions("Bo has 8 cups and breaks 2. How many cups are left?");
    let err = String::from_utf8_lossy(&run(&[]).stderr).into_owned();
    assert!(
        err.contains("holds a run computed from other inputs: eval, questions changed since; pass --redo-changed"),
        "{err}"
    );
    let out = run(&["--redo-changed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stdout);
    // Every stage read the changed questions or test set, so none is resumed.
    assert!(
        log.contains("round-1/generate") && !log.contains("resumed"),
        "{log}"
    );
    let paths = std::fs::read_to_string(f.dir.join("work/round-1/paths.jsonl")).unwrap();
    assert!(paths.contains("Bo has 8 cups"), "{paths}");
    // Unchanged inputs resume as before.
    let log = String::from_utf8_lossy(&run(&[]).stdout).into_owned();
    assert!(log.contains("resumed"), "{log}");
}
