//! The real pretrained model (SmolLM2-135M-Instruct, fetched by `shared/tools/fetch-smollm2.sh`)
//! against the independent NumPy forward pass of `shared/tools/realmodel/np_generate.py`.
//!
//! Needs `LMSI_TEST_MODEL` (the model directory), `LMSI_NP_GENERATE` (the script) and
//! `LMSI_TEST_PYTHON` (a Python with numpy, safetensors and tokenizers); `cargo xtask test` sets them.
//! Without them the test prints why and passes without checking anything.

use std::path::PathBuf;
use std::process::Command;

use lmsi_transformer::{Chunk, CpuBackend, Logits, Model, Tokenizer};

struct Reference {
    model: PathBuf,
    script: PathBuf,
    python: PathBuf,
}

fn reference() -> Option<Reference> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.exists())
    };
    match (
        var("LMSI_TEST_MODEL"),
        var("LMSI_NP_GENERATE"),
        var("LMSI_TEST_PYTHON"),
    ) {
        (Some(model), Some(script), Some(python)) => Some(Reference {
            model,
            script,
            python,
        }),
        _ => {
            eprintln!(
                "skipping: the real-model test needs LMSI_TEST_MODEL, LMSI_NP_GENERATE and \
                 LMSI_TEST_PYTHON (cargo xtask test sets them when shared/tools is present)"
            );
            None
        }
    }
}

#[test]
fn smollm2_matches_the_numpy_forward_pass() {
    let Some(r) = reference() else { return };
    let question = "What is 12 plus 30? Answer briefly.";
    let new_tokens = 32;
    let model = Model::load(&r.model, CpuBackend::new()).unwrap();
    let tokenizer = Tokenizer::load(&r.model, model.config()).unwrap();
    let text = format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n");
    let prompt = tokenizer.encode(&text, true).unwrap();
    let positions = [0, prompt.len() / 2, prompt.len() - 1];

    let positions_arg = positions.map(|p| p.to_string()).join(",");
    let output = Command::new(&r.python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/np_reference.py"
        ))
        .args([r.script.as_os_str(), r.model.as_os_str()])
        .args([question, &new_tokens.to_string(), &positions_arg])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected_prompt: Vec<u32> = serde_json::from_value(expected["prompt_ids"].clone()).unwrap();
    assert_eq!(prompt, expected_prompt, "tokenization differs");

    // Logits at several positions of the prompt.
    let mut cache = model.new_cache(16, 64).unwrap();
    let seq = cache.create();
    let logits = model
        .forward(
            &mut cache,
            &[Chunk {
                seq,
                tokens: &prompt,
                logits: Logits::All,
            }],
        )
        .unwrap();
    let vocab = model.config().vocab_size;
    for pos in positions {
        let ours = &logits[pos * vocab..(pos + 1) * vocab];
        let theirs: Vec<f32> =
            serde_json::from_value(expected["logits"][pos.to_string()].clone()).unwrap();
        let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(&theirs)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst / scale < 1e-3,
            "position {pos}: max error {worst} vs scale {scale}"
        );
    }

    // Greedy tokens, one decode step at a time after a prefill.
    let mut cache = model.new_cache(16, 64).unwrap();
    let seq = cache.create();
    let mut next = argmax(
        &model
            .forward(
                &mut cache,
                &[Chunk {
                    seq,
                    tokens: &prompt,
                    logits: Logits::Last,
                }],
            )
            .unwrap(),
    );
    let mut greedy = vec![next];
    while greedy.len() < new_tokens && !tokenizer.eos_ids().contains(&next) {
        next = argmax(
            &model
                .forward(
                    &mut cache,
                    &[Chunk {
                        seq,
                        tokens: &[next],
                        logits: Logits::Last,
                    }],
                )
                .unwrap(),
        );
        greedy.push(next);
    }
    let expected_greedy: Vec<u32> = serde_json::from_value(expected["greedy"].clone()).unwrap();
    assert_eq!(
        greedy,
        expected_greedy,
        "ours: {:?}\nnumpy: {:?}",
        tokenizer.decode(&greedy).unwrap(),
        tokenizer.decode(&expected_greedy).unwrap()
    );
}

fn argmax(logits: &[f32]) -> u32 {
    (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
        .unwrap() as u32
}
