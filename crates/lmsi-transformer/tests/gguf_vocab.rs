//! GGUF tokenizers against llama.cpp's own tokenizer tests: for each of llama.cpp's test vocabularies
//! (`models/ggml-vocab-*.gguf`, two SentencePiece and three byte-level BPE), every text of its
//! `.inp` file must give the token ids of its `.out` file, which llama.cpp produces (without BOS).
//! `LMSI_TEST_GGUF_VOCABS` names the directory `scripts/fetch-llama-vocabs.sh` fills; `cargo xtask
//! test` sets it.

use std::path::{Path, PathBuf};

use lmsi_transformer::gguf::GgufModel;
use lmsi_transformer::{Config, Tokenizer};

/// The separator of cases in an `.inp` file (llama.cpp's `tests/test-tokenizer-0.cpp`).
const CASE_SEPARATOR: &str = "\n__ggml_vocab_test__\n";

fn vocabs() -> Option<PathBuf> {
    let dir = std::env::var_os("LMSI_TEST_GGUF_VOCABS")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir());
    if dir.is_none() {
        eprintln!("skipping: needs LMSI_TEST_GGUF_VOCABS (cargo xtask test sets it)");
    }
    dir
}

/// The (text, token ids) cases of `ggml-vocab-{name}.gguf`, read as llama.cpp reads them.
fn cases(dir: &Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let read = |suffix: &str| {
        let path = dir.join(format!("ggml-vocab-{name}.gguf{suffix}"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let raw = read(".inp");
    // A separator at the very end closes the last case rather than opening an empty one.
    let texts: Vec<String> = raw
        .strip_suffix(CASE_SEPARATOR)
        .unwrap_or(&raw)
        .split(CASE_SEPARATOR)
        .map(str::to_string)
        .collect();
    let ids: Vec<Vec<u32>> = read(".out")
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|id| id.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: .inp and .out disagree");
    texts.into_iter().zip(ids).collect()
}

/// Tokenizes every case of `name` and fails listing the texts whose ids differ from llama.cpp's or
/// that do not decode back to themselves.
fn check(name: &str) {
    let Some(dir) = vocabs() else { return };
    let file = GgufModel::open(&dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
    let tokenizer = file.tokenizer().unwrap();
    let cases = cases(&dir, name);
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(text, expected)| {
            let ids = tokenizer
                .encode(text.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec();
            let decoded = tokenizer.decode(&ids, false).unwrap();
            if &ids != expected {
                Some(format!("{text:?}: {ids:?}, llama.cpp {expected:?}"))
            } else {
                (&decoded != text).then(|| format!("{text:?} decodes as {decoded:?}"))
            }
        })
        .collect();
    eprintln!(
        "{name}: {} of {} cases agree",
        cases.len() - wrong.len(),
        cases.len()
    );
    assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));
}

#[test]
fn llama_spm_matches_llama_cpp() {
    check("llama-spm");
}

#[test]
fn phi_3_matches_llama_cpp() {
    check("phi-3");
}

#[test]
fn gpt_2_matches_llama_cpp() {
    check("gpt-2");
}

#[test]
fn llama_bpe_matches_llama_cpp() {
    check("llama-bpe");
}

#[test]
fn qwen2_matches_llama_cpp() {
    check("qwen2");
}

/// A prompt's later segment continues the text: SentencePiece's space prefix comes only at the
/// start, so the segments' tokens are the whole prompt's; BOS comes first by default (llama.cpp's
/// rule for SentencePiece files without `tokenizer.ggml.add_bos_token`).
#[test]
fn sentencepiece_segments_join_into_the_whole_prompt() {
    let Some(dir) = vocabs() else { return };
    let config = Config::from_json(
        r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
            "bos_token_id": 1, "eos_token_id": 2}"#,
    )
    .unwrap();
    let tokenizer = Tokenizer::load(&dir.join("ggml-vocab-llama-spm.gguf"), &config).unwrap();
    let first = tokenizer
        .encode("Q: What is one plus one?\n", true)
        .unwrap();
    let second = tokenizer.encode("A: The answer is 2.", false).unwrap();
    let whole = tokenizer
        .encode("Q: What is one plus one?\nA: The answer is 2.", true)
        .unwrap();
    assert_eq!(first[0], 1, "BOS first");
    assert_eq!([first, second].concat(), whole);
    assert_eq!(
        tokenizer.decode(&whole).unwrap(),
        "Q: What is one plus one?\nA: The answer is 2."
    );
}
