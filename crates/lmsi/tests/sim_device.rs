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

/// `lmsi ARGS`: its exit status and stderr.
fn lmsi(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lmsi"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seed_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/seed-model")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn bf16_trains_with_f32_master_weights_and_writes_an_f32_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    let examples: Vec<Value> = (2..10)
        .map(|n| {
            serde_json::json!({
                "prompt": format!("Q: Sam has {n} coins and finds 3 more. How many coins?\nA:"),
                "completion": format!(" {n} + 3 = {}. The answer is {}.", n + 3, n + 3),
                "format": "cot-zeroshot",
            })
        })
        .collect();
    write_jsonl_atomic(&data, &examples).unwrap();
    let out = dir.path().join("trained");
    let (model, data, out_s) = (
        seed_model(),
        data.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    );
    let (ok, stderr) = lmsi(&[
        "train",
        "--model",
        &model,
        "--data",
        &data,
        "--out",
        &out_s,
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--device",
        "sim",
        "--dtype",
        "bf16",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("memory plan, training: gradients"),
        "{stderr}"
    );
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&weights).unwrap();
    for (name, view) in tensors.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    }
}

#[test]
fn a_device_too_small_or_a_cpu_dtype_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let questions = dir.path().join("q.jsonl");
    let q = serde_json::json!({"id": "a", "question": "A box holds 6 pens. How many pens are in 7 boxes?", "answer": "42"});
    write_jsonl_atomic(&questions, &[q]).unwrap();
    let out = dir.path().join("paths.jsonl");
    let (model, questions, out_s) = (
        seed_model(),
        questions.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    );
    let generate = |device: &str, dtype: &str| {
        lmsi(&[
            "generate",
            "--model",
            &model,
            "--questions",
            &questions,
            "--out",
            &out_s,
            "--device",
            device,
            "--dtype",
            dtype,
            // The zero-shot prompt fits the seed model's context (the eight few-shot exemplars do not).
            "--prompt",
            "cot-zeroshot",
        ])
    };
    let (ok, stderr) = generate("cpu", "bf16");
    assert!(
        !ok && stderr.contains("--dtype bf16 needs the CUDA backend"),
        "{stderr}"
    );
    let (ok, stderr) = generate("sim:1MiB", "f32");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("not enough device memory for the model: weights 3.22 MiB; sim (simulated CUDA device, 1.00 MiB) has 1.00 MiB free of 1.00 MiB"),
        "{stderr}"
    );
    let (ok, stderr) = generate("sim:2MiB", "bf16");
    assert!(
        !ok && stderr.contains("not enough device memory for generation: KV cache"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing written");
    let (ok, stderr) = generate("sim:2XB", "f32");
    assert!(
        !ok && stderr.contains("expected a size such as 512MiB or 24GiB"),
        "{stderr}"
    );
}
