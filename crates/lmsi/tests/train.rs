//! Training end to end on a tiny random model: the loss falls, checkpoints reload exactly, a resumed
//! run reproduces an uninterrupted one, and a diverging run stops with an error naming the step.

use std::path::Path;

use lmsi::train::{StepLog, TrainOptions, train};
use lmsi_adamw::ScheduleKind;
use lmsi_data::{PromptFormat, TrainExample};
use lmsi_transformer::testing::TinyModel;
use lmsi_transformer::{Chunk, CpuBackend, Logits, Model, Tokenizer};

fn examples(n: usize) -> Vec<TrainExample> {
    (0..n)
        .map(|i| {
            let (a, b) = (i % 10, (i / 10) % 10);
            TrainExample {
                prompt: format!("Q: {a} + {b}?\nA:"),
                completion: format!(" {a} + {b} = {}. The answer is {}.", a + b, a + b),
                format: PromptFormat::DirectZeroshot,
                weight: 1.0,
            }
        })
        .collect()
}

fn load(dir: &Path) -> (Model<CpuBackend>, Tokenizer) {
    let model = Model::load(dir, CpuBackend::new()).unwrap();
    let tokenizer = Tokenizer::load(dir, model.config()).unwrap();
    (model, tokenizer)
}

fn run(source: &Path, out: &Path, options: &TrainOptions) -> Result<Vec<StepLog>, lmsi::Error> {
    let (mut model, tokenizer) = load(if options.resume { out } else { source });
    let mut logs = Vec::new();
    train(
        &mut model,
        &tokenizer,
        source,
        &examples(200),
        options,
        out,
        &mut |log, _| logs.push(log.clone()),
    )?;
    Ok(logs)
}

fn options() -> TrainOptions {
    TrainOptions {
        lr: 3e-3,
        batch_size: 16,
        micro_batch_size: Some(8),
        steps: Some(40),
        warmup_steps: 4,
        schedule: ScheduleKind::Cosine,
        eval_fraction: 0.1,
        eval_every: 10,
        ..TrainOptions::default()
    }
}

fn logits(dir: &Path) -> Vec<f32> {
    let (model, tokenizer) = load(dir);
    let tokens = tokenizer.encode("Q: 3 + 4?\nA: 3 + 4 =", true).unwrap();
    let mut cache = model.new_cache(16, 8).unwrap();
    let seq = cache.create();
    model
        .forward(
            &mut cache,
            &[Chunk {
                seq,
                tokens: &tokens,
                logits: Logits::All,
            }],
        )
        .unwrap()
}

#[test]
fn loss_falls_and_the_checkpoint_reloads_to_identical_logits() {
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("tiny");
    TinyModel::default().write(&source).unwrap();
    let out = root.path().join("trained");
    let logs = run(&source, &out, &options()).unwrap();
    let (first, last) = (logs[0].loss, logs[logs.len() - 1].loss);
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    assert!(logs.last().unwrap().eval_loss.unwrap() < 0.6 * first);

    // The checkpoint is a Hugging Face directory that reloads to the trained model's logits, and it
    // differs from the starting model.
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "optimizer.safetensors",
        "train_log.jsonl",
        "loss.svg",
    ] {
        assert!(out.join(file).exists(), "{file}");
    }
    let (mut model, tokenizer) = load(&source);
    train(
        &mut model,
        &tokenizer,
        &source,
        &examples(200),
        &options(),
        &root.path().join("again"),
        &mut |_, _| {},
    )
    .unwrap();
    let tokens = tokenizer.encode("Q: 3 + 4?\nA: 3 + 4 =", true).unwrap();
    let mut cache = model.new_cache(16, 8).unwrap();
    let seq = cache.create();
    let in_memory = model
        .forward(
            &mut cache,
            &[Chunk {
                seq,
                tokens: &tokens,
                logits: Logits::All,
            }],
        )
        .unwrap();
    assert_eq!(logits(&out), in_memory);
    assert_ne!(logits(&source), in_memory);
}

#[test]
fn a_resumed_run_reproduces_an_uninterrupted_one() {
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("tiny");
    TinyModel {
        seed: 3,
        ..TinyModel::default()
    }
    .write(&source)
    .unwrap();
    let whole = run(&source, &root.path().join("whole"), &options()).unwrap();

    let split = root.path().join("split");
    let first = run(
        &source,
        &split,
        &TrainOptions {
            stop_after: Some(15),
            ..options()
        },
    )
    .unwrap();
    assert_eq!(first.len(), 15);
    let rest = run(
        &source,
        &split,
        &TrainOptions {
            resume: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(rest.first().unwrap().step, 16);
    let resumed: Vec<StepLog> = first.into_iter().chain(rest).collect();
    let strip = |logs: &[StepLog]| {
        logs.iter()
            .map(|l| (l.step, l.loss, l.lr, l.grad_norm, l.eval_loss))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&resumed), strip(&whole));
    assert_eq!(logits(&split), logits(&root.path().join("whole")));

    // Resuming with other options is refused.
    let err = run(
        &source,
        &split,
        &TrainOptions {
            resume: true,
            lr: 1e-3,
            ..options()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("other options"), "{err}");
}

#[test]
fn divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("tiny");
    TinyModel::default().write(&source).unwrap();
    let out = root.path().join("out");
    let opts = TrainOptions {
        lr: 1e30,
        grad_clip: 0.0,
        save_every: Some(1),
        warmup_steps: 0,
        schedule: ScheduleKind::Constant,
        eval_fraction: 0.0,
        ..options()
    };
    let err = run(&source, &out, &opts).unwrap_err().to_string();
    assert!(err.contains("diverged at step"), "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trainer_state.json")).unwrap())
            .unwrap();
    let saved = state["step"].as_u64().unwrap();
    assert!(
        err.contains(&format!("step {}", saved + 1)),
        "{err} (checkpoint at {saved})"
    );
    // The kept checkpoint loads.
    load(&out);
}
