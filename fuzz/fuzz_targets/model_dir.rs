//! A model directory as lmsi loads it, from arbitrary bytes: the input is `config.json`'s text, a
//! NUL byte, then `model.safetensors` (no NUL: no weights file). `Config::from_file` (which holds
//! the configuration against the weights' shapes) and reading every parameter of its layout never
//! panic and never allocate from a size the weights do not have; parameters read have the layout's
//! sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmsi_transformer::{Config, Params, WeightFiles};

#[path = "common/scratch.rs"]
mod scratch;

fuzz_target!(|bytes: &[u8]| {
    let (config_text, weights) = match bytes.iter().position(|&b| b == 0) {
        Some(nul) => (&bytes[..nul], Some(&bytes[nul + 1..])),
        None => (bytes, None),
    };
    let config_path = scratch::write("config.json", config_text);
    match weights {
        Some(weights) => {
            scratch::write("model.safetensors", weights);
        }
        None => {
            // Absent already unless an earlier input wrote it.
            let _ = std::fs::remove_file(scratch::dir().join("model.safetensors"));
        }
    }
    let Ok(config) = Config::from_file(&config_path) else {
        return;
    };
    // Without weights nothing is read, so nothing is allocated from the configuration's sizes.
    if weights.is_none() {
        return;
    }
    let Ok(weights) = WeightFiles::open(scratch::dir()) else {
        return;
    };
    let layout = Params::layout(&config);
    if let Ok(params) = weights.read_params(&layout) {
        for (spec, values) in layout.tensors().into_iter().zip(params.tensors()) {
            assert_eq!(values.len(), spec.numel());
        }
    }
});
