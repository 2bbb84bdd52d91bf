//! `lmsi_transformer::Config::from_json` on arbitrary text: parsing never panics, and a config it
//! accepts has the positive sizes the model code relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmsi_transformer::Config;

fuzz_target!(|text: &str| {
    let Ok(config) = Config::from_json(text) else {
        return;
    };
    let sizes = [
        config.vocab_size,
        config.hidden_size,
        config.intermediate_size,
        config.num_layers,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.max_position_embeddings,
    ];
    assert!(sizes.iter().all(|&s| s > 0), "{sizes:?}");
    assert_eq!(config.num_heads % config.num_kv_heads, 0);
    assert_eq!(config.head_dim % 2, 0);
    assert!(config.rms_norm_eps.is_finite() && config.rms_norm_eps > 0.0);
    assert!(config.rope_theta.is_finite() && config.rope_theta > 0.0);
});
