//! Sharded `generate` and `eval` (`--shard I/N`, `--shard auto`) and `lmsi merge`: three shards
//! merge into exactly what the unsharded command writes, and shards that do not belong together
//! are refused.

use std::process::Command;

use lmsi_transformer::testing::TinyModel;

mod common;
use common::{Scratch, lmsi, run_args, stderr};

/// A tiny random model and eight labelled questions.
fn fixture() -> Scratch {
    let f = Scratch::new();
    TinyModel::default().write(&f.dir.join("model")).unwrap();
    let questions: String = (0..8)
        .map(|i| {
            format!(
                "{{\"id\": \"q{i}\", \"question\": \"Ann has {i} pens and buys 2 more. How many pens?\", \"answer\": \"#### {}\"}}\n",
                i + 2
            )
        })
        .collect();
    std::fs::write(f.dir.join("questions.jsonl"), questions).unwrap();
    f
}

/// `lmsi COMMAND` on the fixture with small settings, writing `out`, with `extra` arguments.
fn run(f: &Scratch, command: &str, out: &str, extra: &[&str]) {
    let input = if command == "eval" {
        "--dataset"
    } else {
        "--questions"
    };
    let (model, questions, out) = (f.path("model"), f.path("questions.jsonl"), f.path(out));
    let mut args = vec![
        command,
        "--model",
        &model,
        input,
        &questions,
        "--out",
        &out,
        "--paths",
        "3",
        "--max-new-tokens",
        "6",
        "--threads",
        "1",
    ];
    args.extend(extra);
    let output = lmsi(&args);
    assert!(output.status.success(), "{}", stderr(&output));
}

fn merge(f: &Scratch, out: &str, shards: &[&str]) -> std::process::Output {
    let mut args = vec!["merge".to_string(), "--out".into(), f.path(out)];
    args.extend(shards.iter().map(|s| f.path(s)));
    lmsi(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn three_generate_shards_merge_into_the_unsharded_paths_byte_for_byte() {
    let f = fixture();
    run(&f, "generate", "all.jsonl", &[]);
    for i in 1..=3 {
        run(
            &f,
            "generate",
            &format!("part{i}.jsonl"),
            &["--shard", &format!("{i}/3")],
        );
        assert!(f.dir.join(format!("part{i}.jsonl.shard.json")).is_file());
    }
    // In any order.
    let out = merge(
        &f,
        "merged.jsonl",
        &["part3.jsonl", "part1.jsonl", "part2.jsonl"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |name: &str| std::fs::read(f.dir.join(name)).unwrap();
    assert_eq!(read("merged.jsonl"), read("all.jsonl"));
    let parts: usize = (1..=3)
        .map(|i| {
            String::from_utf8(read(&format!("part{i}.jsonl")))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(parts, 24);

    let refused = |shards: &[&str], expected: &str| {
        let out = merge(&f, "bad.jsonl", shards);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
        assert!(!f.dir.join("bad.jsonl").exists());
    };
    refused(&["part1.jsonl", "part2.jsonl"], "missing shard(s) 3/3");
    refused(
        &["part1.jsonl", "part1.jsonl", "part2.jsonl", "part3.jsonl"],
        "given twice",
    );
    refused(&["all.jsonl"], "no shard manifest");
    run(
        &f,
        "generate",
        "other.jsonl",
        &["--shard", "3/3", "--temperature", "0.9"],
    );
    refused(
        &["part1.jsonl", "part2.jsonl", "other.jsonl"],
        "does not belong",
    );
    run(&f, "generate", "four.jsonl", &["--shard", "3/4"]);
    refused(
        &["part1.jsonl", "part2.jsonl", "four.jsonl"],
        "does not belong",
    );
    // The merge may not overwrite a shard.
    let out = merge(
        &f,
        "part1.jsonl",
        &["part1.jsonl", "part2.jsonl", "part3.jsonl"],
    );
    assert!(!out.status.success());
}

#[test]
fn three_eval_shards_merge_into_the_unsharded_report() {
    let f = fixture();
    run(&f, "eval", "all.json", &["--mode", "sc"]);
    for i in 1..=3 {
        run(
            &f,
            "eval",
            &format!("part{i}.json"),
            &["--mode", "sc", "--shard", &format!("{i}/3")],
        );
    }
    let out = merge(
        &f,
        "merged.json",
        &["part1.json", "part2.json", "part3.json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |name: &str| -> serde_json::Value {
        let mut report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.dir.join(name)).unwrap()).unwrap();
        // Wall-clock time: the merged report has the sum of the shards'.
        report.as_object_mut().unwrap().remove("seconds");
        report
    };
    assert_eq!(read("merged.json"), read("all.json"));
    assert!(f.dir.join("merged.maj-at-k.svg").is_file());
}

#[test]
fn auto_takes_the_shard_from_a_slurm_array_or_a_kubernetes_indexed_job() {
    let f = fixture();
    let auto = |out: &str, env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lmsi"));
        command.args([
            "generate",
            "--model",
            &f.path("model"),
            "--questions",
            &f.path("questions.jsonl"),
            "--out",
            &f.path(out),
            "--paths",
            "2",
            "--max-new-tokens",
            "4",
            "--threads",
            "1",
            "--shard",
            "auto",
        ]);
        for var in [
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_TASK_MIN",
            "SLURM_ARRAY_TASK_COUNT",
            "JOB_COMPLETION_INDEX",
            "LMSI_SHARD_COUNT",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied()).output().unwrap()
    };
    let slurm = |id: &str| {
        auto(
            &format!("slurm{id}.jsonl"),
            &[
                ("SLURM_ARRAY_TASK_ID", id),
                ("SLURM_ARRAY_TASK_MIN", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ],
        )
    };
    let k8s = |index: &str| {
        auto(
            &format!("k8s{index}.jsonl"),
            &[("JOB_COMPLETION_INDEX", index), ("LMSI_SHARD_COUNT", "2")],
        )
    };
    for out in [slurm("0"), slurm("1"), k8s("0"), k8s("1")] {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let read = |name: &str| std::fs::read(f.dir.join(name)).unwrap();
    assert_eq!(read("slurm0.jsonl"), read("k8s0.jsonl"));
    assert_eq!(read("slurm1.jsonl"), read("k8s1.jsonl"));
    let out = merge(&f, "merged.jsonl", &["slurm0.jsonl", "slurm1.jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = auto("none.jsonl", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("SLURM_ARRAY_TASK_ID"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_merged_sharded_generation_feeds_lmsi_run() {
    let f = fixture();
    for i in 1..=2 {
        run(
            &f,
            "generate",
            &format!("part{i}.jsonl"),
            &["--shard", &format!("{i}/2")],
        );
    }
    let out = merge(&f, "paths.jsonl", &["part1.jsonl", "part2.jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lmsi_run = |work: &str, extra: &[&str]| {
        let (model, questions, work) = (f.path("model"), f.path("questions.jsonl"), f.path(work));
        let flags = [
            ("--model", model.as_str()),
            ("--questions", &questions),
            ("--eval", &questions),
            ("--work-dir", &work),
            ("--paths", "3"),
            ("--eval-paths", "2"),
            ("--max-new-tokens", "6"),
            ("--steps", "1"),
            ("--batch-size", "2"),
        ];
        lmsi(&run_args(&flags, extra))
    };
    let given = f.path("paths.jsonl");
    let out = lmsi_run("given", &["--paths-from", &given]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lmsi_run("own", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |name: &str| std::fs::read(f.dir.join(name)).unwrap();
    // The run's own generation samples the same paths as `lmsi generate` with the same options.
    assert_eq!(read("given/round-1/paths.jsonl"), read("paths.jsonl"));
    assert_eq!(read("own/round-1/paths.jsonl"), read("paths.jsonl"));

    let out = lmsi_run("short", &["--paths-from", &f.path("part1.jsonl")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no paths for pool question"),
        "{}",
        stderr(&out)
    );
}
