//! `lmsi_transformer::gguf::GgufModel` on an arbitrary file: opening it, making its configuration
//! and tokenizer, and (for models of at most a million parameters) reading every parameter never
//! panic and never allocate more than the file can describe; parameters that read have the layout's
//! sizes and are finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmsi_transformer::Params;
use lmsi_transformer::gguf::GgufModel;

#[path = "common/scratch.rs"]
mod scratch;

/// Larger models are opened and configured but not read, to keep each run quick.
const MAX_PARAMETERS: usize = 1 << 20;

fuzz_target!(|bytes: &[u8]| {
    let path = scratch::write("model.gguf", bytes);
    let Ok(file) = GgufModel::open(&path) else {
        return;
    };
    let _ = file.tokenizer();
    let Ok(config) = file.config() else {
        return;
    };
    if config.parameter_count() > MAX_PARAMETERS {
        return;
    }
    let layout = Params::layout(&config);
    if let Ok(params) = file.read_params(&config, &layout) {
        for (spec, values) in layout.tensors().iter().zip(params.tensors()) {
            assert_eq!(values.len(), spec.numel(), "{}", spec.name);
            assert!(values.iter().all(|v| v.is_finite()), "{}", spec.name);
        }
    }
});
