//! Loading refuses inputs that disagree with themselves or point outside the model, naming the cause,
//! before anything is allocated from them: `config.json` sizes against the weights' shapes, its
//! `rms_norm_eps` and `rope_theta`, shard names in `model.safetensors.index.json`, and non-finite
//! weights.

use std::path::Path;

use lmsi_transformer::testing::TinyModel;
use lmsi_transformer::weights::safetensors_bytes;
use lmsi_transformer::{Config, CpuBackend, Error, Model, Params};

/// A tiny model in a fresh directory.
fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    TinyModel::default().write(dir.path()).unwrap();
    dir
}

/// Sets `field` of the `config.json` in `dir` to `value`.
fn set_config(dir: &Path, field: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[field] = value;
    std::fs::write(&path, config.to_string()).unwrap();
}

fn load_error(dir: &Path) -> Error {
    match Model::load(dir, CpuBackend::new()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn config_sizes_that_disagree_with_the_weights_are_refused_naming_field_and_tensor() {
    // (field, value, the field named, the tensor named). The huge values would be allocated from
    // (the layout's layers, the embedding's values) if they were not checked first.
    let cases: &[(&str, serde_json::Value, &str, &str)] = &[
        (
            "num_hidden_layers",
            3.into(),
            "num_hidden_layers",
            "model.layers.2.input_layernorm.weight",
        ),
        (
            "num_hidden_layers",
            1.into(),
            "num_hidden_layers",
            "model.layers.1.",
        ),
        (
            "num_hidden_layers",
            1_000_000_000_000u64.into(),
            "num_hidden_layers",
            "model.layers.2.",
        ),
        (
            "vocab_size",
            1_000_000_000_000u64.into(),
            "vocab_size",
            "model.embed_tokens.weight",
        ),
        (
            "hidden_size",
            64.into(),
            "hidden_size",
            "model.embed_tokens.weight",
        ),
        (
            "intermediate_size",
            1_000_000_000.into(),
            "intermediate_size",
            "model.layers.0.mlp.gate_proj.weight",
        ),
        (
            "num_key_value_heads",
            4.into(),
            "num_key_value_heads",
            "model.layers.0.self_attn.k_proj.weight",
        ),
        (
            "num_attention_heads",
            8.into(),
            "num_attention_heads",
            "model.layers.0.self_attn.k_proj.weight",
        ),
    ];
    for (field, value, named, tensor) in cases {
        let dir = tiny_model();
        set_config(dir.path(), field, value.clone());
        let e = load_error(dir.path());
        assert!(
            matches!(&e, Error::ConfigMismatch(m)
                if m.field.contains(named) && m.tensor.starts_with(tensor)),
            "{field} = {value}: {e}"
        );
        let message = e.to_string();
        assert!(
            message.contains("config.json")
                && message.contains("model.safetensors")
                && message.contains(named),
            "{message}"
        );
    }
}

#[test]
fn sizes_whose_products_overflow_are_refused_when_parsed() {
    let base = TinyModel::default().config_json();
    let cases: &[&[(&str, serde_json::Value)]] = &[
        &[("hidden_size", u64::MAX.into()), ("head_dim", 8.into())],
        &[("vocab_size", (1u64 << 62).into())],
        &[
            ("num_attention_heads", (1u64 << 40).into()),
            ("num_key_value_heads", (1u64 << 40).into()),
            ("head_dim", (1u64 << 40).into()),
        ],
        &[("num_hidden_layers", u64::MAX.into())],
    ];
    for fields in cases {
        let mut config = base.clone();
        for (field, value) in *fields {
            config[field] = value.clone();
        }
        let e = Config::from_json(&config.to_string()).unwrap_err();
        assert!(e.contains("too large"), "{fields:?}: {e}");
    }
}

#[test]
fn a_config_that_agrees_with_its_weights_still_loads() {
    let dir = tiny_model();
    let config = Config::from_file(&dir.path().join("config.json")).unwrap();
    assert_eq!(config.num_layers, TinyModel::default().layers);
    Model::load(dir.path(), CpuBackend::new()).unwrap();
}

#[test]
fn bad_rms_norm_eps_and_rope_theta_are_named_with_the_file() {
    let cases: &[(&str, serde_json::Value)] = &[
        ("rms_norm_eps", 0.0.into()),
        ("rms_norm_eps", (-1e-5).into()),
        // Positive in JSON, zero in the f32 the model stores.
        ("rms_norm_eps", 1e-50.into()),
        // Finite in JSON, infinite in f32.
        ("rms_norm_eps", 1e300.into()),
        ("rope_theta", 0.0.into()),
        ("rope_theta", (-10_000.0).into()),
        ("max_position_embeddings", 0.into()),
    ];
    for (field, value) in cases {
        let dir = tiny_model();
        set_config(dir.path(), field, value.clone());
        let e = load_error(dir.path());
        let message = e.to_string();
        assert!(
            matches!(e, Error::Config { .. })
                && message.contains(field)
                && message.contains("config.json"),
            "{field} = {value}: {message}"
        );
    }
}

/// Writes the tiny model's parameters with `poison` applied to the raw values.
fn write_weights(dir: &Path, poison: impl FnOnce(&mut Params<Vec<f32>>)) {
    let spec = TinyModel::default();
    let config = Config::from_json(&spec.config_json().to_string()).unwrap();
    let mut params = spec.params();
    poison(&mut params);
    let bytes = safetensors_bytes(&Params::layout(&config), &params).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn non_finite_weights_are_refused_at_load_naming_the_tensor() {
    for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let dir = tiny_model();
        // Row 1, column 5 of the gate projection (the first part of the fused gate|up).
        let cols = TinyModel::default().hidden_size;
        write_weights(dir.path(), |p| p.layers[1].gate_up[cols + 5] = value);
        let e = load_error(dir.path());
        assert!(
            matches!(&e, Error::NonFiniteWeight { tensor, position, .. }
                if tensor == "model.layers.1.mlp.gate_proj.weight" && position == "[1, 5]"),
            "{value}: {e}"
        );
        assert!(e.to_string().contains("model.safetensors"), "{e}");
    }
    let dir = tiny_model();
    write_weights(dir.path(), |p| p.final_norm[3] = f32::NAN);
    let e = load_error(dir.path());
    assert!(
        matches!(&e, Error::NonFiniteWeight { tensor, position, .. }
            if tensor == "model.norm.weight" && position == "[3]"),
        "{e}"
    );
}

/// Writes a `model.safetensors.index.json` in `dir` that puts every tensor of the tiny model in
/// `shard`.
fn write_index(dir: &Path, shard: &str) {
    let config = Config::from_json(&TinyModel::default().config_json().to_string()).unwrap();
    let weight_map: serde_json::Map<String, serde_json::Value> = Params::layout(&config)
        .tensors()
        .iter()
        .flat_map(|spec| spec.parts.iter().map(|(name, _)| name.clone()))
        .map(|name| (name, shard.into()))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn shards_named_outside_the_model_directory_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    TinyModel::default().write(&model).unwrap();
    // A real copy of the weights outside the directory and in a subdirectory, so that opening
    // them would succeed: only the name is wrong.
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(root.path().join("outside.safetensors"), &weights).unwrap();
    std::fs::create_dir(model.join("sub")).unwrap();
    std::fs::write(model.join("sub/inner.safetensors"), &weights).unwrap();
    let absolute = root.path().join("outside.safetensors");
    for shard in [
        "../outside.safetensors",
        absolute.to_str().unwrap(),
        "sub/inner.safetensors",
        "./model.safetensors",
        "sub/../model.safetensors",
        "",
        ".",
        "..",
    ] {
        write_index(&model, shard);
        let e = load_error(&model);
        let message = e.to_string();
        assert!(
            message.contains("model.safetensors.index.json")
                && message.contains(&format!("{shard:?}")),
            "{shard:?}: {message}"
        );
    }
    // A plain file name inside the directory is what an index names.
    write_index(&model, "model.safetensors");
    Model::load(&model, CpuBackend::new()).unwrap();
}
