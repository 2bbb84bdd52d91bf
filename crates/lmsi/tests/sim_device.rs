//! `lmsi run --device sim` end to end: the whole loop with the CUDA backend on the simulated device
//! (its host code, every kernel launch and cuBLAS call, run on the CPU) gives the paths and votes
//! of `--device cpu` on a small slice of the embedded default.

use std::path::Path;
use std::process::Command;

use lmsi_data::{BadLines, read_jsonl, write_jsonl_atomic};
use serde_json::Value;

/// `lmsi run` on the pool and test set in `root`, on `device`, into `root/<device>`.
fn run(root: &Path, device: &str) {
    let path = |name: &str| root.join(name).to_string_lossy().into_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_lmsi"))
        .args([
            "run",
            "--questions",
            &path("pool.jsonl"),
            "--eval",
            &path("test.jsonl"),
        ])
        .args([
            "--work-dir",
            &path(device),
            "--device",
            device,
            "--threads",
            "2",
        ])
        .args([
            "--paths",
            "4",
            "--eval-paths",
            "2",
            "--max-new-tokens",
            "64",
        ])
        .args(["--steps", "2", "--batch-size", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lmsi run --device {device}: {stderr}");
}

fn records(path: &Path) -> Vec<Value> {
    read_jsonl(path, BadLines::Error).unwrap().items
}

#[test]
fn a_run_on_the_simulated_device_gives_the_cpu_paths_and_votes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let recipe = lmsi::seed::SeedRecipe::default();
    let pool = lmsi::seed::held_out_questions(&recipe, 91, 6, "pool", &[]).unwrap();
    let test = lmsi::seed::held_out_questions(&recipe, 92, 3, "test", &[]).unwrap();
    write_jsonl_atomic(&root.join("pool.jsonl"), &pool).unwrap();
    write_jsonl_atomic(&root.join("test.jsonl"), &test).unwrap();
    run(root, "cpu");
    run(root, "sim");

    let (cpu, sim) = (root.join("cpu/round-1"), root.join("sim/round-1"));
    let (want, got) = (
        records(&cpu.join("paths.jsonl")),
        records(&sim.join("paths.jsonl")),
    );
    assert_eq!(got.len(), 24);
    assert_eq!(got.len(), want.len());
    for (mut g, mut w) in got.into_iter().zip(want) {
        // Log-probabilities are sums of f32 log-softmaxes from products summed in another order.
        let (gl, wl) = (g["logprob"].take(), w["logprob"].take());
        assert_eq!(g, w, "path");
        let (gl, wl) = (gl.as_f64().unwrap(), wl.as_f64().unwrap());
        assert!(
            (gl - wl).abs() <= 1e-3 * wl.abs().max(1.0),
            "{g}: logprob {gl} vs {wl}"
        );
    }
    for file in ["votes.jsonl", "train.jsonl"] {
        assert_eq!(records(&sim.join(file)), records(&cpu.join(file)), "{file}");
    }
    for file in ["eval-before-greedy.json", "eval-before-sc.json"] {
        let read = |dir: &Path| -> Value {
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
        };
        let (g, w) = (read(&sim), read(&cpu));
        assert_eq!(g["accuracy"], w["accuracy"], "{file}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("sim/report.json")).unwrap())
            .unwrap();
    assert!(report.is_object());
}
