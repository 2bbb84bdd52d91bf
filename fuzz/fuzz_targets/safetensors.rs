//! `lmsi_transformer::WeightFiles` on an arbitrary `model.safetensors` (written to a scratch folder,
//! since weights are opened from a model directory): opening and reading never panic and never
//! allocate more than the file holds; a tensor reads back with as many values as its header shape
//! says, all finite, and under any other shape it is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmsi_transformer::WeightFiles;

#[path = "common/scratch.rs"]
mod scratch;

/// At most this many of the header's tensors are read per input, to keep each run quick.
const MAX_TENSORS: usize = 16;

fuzz_target!(|bytes: &[u8]| {
    scratch::write("model.safetensors", bytes);
    let Ok(weights) = WeightFiles::open(scratch::dir()) else {
        return;
    };
    // The tensors' names are not public: read them from the header, which `open` accepted.
    for (name, shape) in header_tensors(bytes).into_iter().take(MAX_TENSORS) {
        if let Ok(values) = weights.read(&name, &shape) {
            assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
            assert!(values.iter().all(|v| v.is_finite()), "{name}");
        }
        let mut other = shape.clone();
        other.push(1);
        assert!(
            weights.read(&name, &other).is_err(),
            "{name} read as {other:?}"
        );
    }
    assert!(weights.read("not.a.tensor", &[1]).is_err());
});

/// The `(name, shape)` of each tensor in a safetensors header: an 8-byte little-endian length, then
/// that many bytes of JSON mapping names to `{"dtype", "shape", "data_offsets"}`.
fn header_tensors(bytes: &[u8]) -> Vec<(String, Vec<usize>)> {
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Vec::new();
    };
    let len = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
    let Some(Ok(serde_json::Value::Object(header))) = rest
        .get(..len)
        .map(serde_json::from_slice::<serde_json::Value>)
    else {
        return Vec::new();
    };
    header
        .iter()
        .filter_map(|(name, info)| {
            let shape = info.get("shape")?.as_array()?;
            let shape: Option<Vec<usize>> = shape
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect();
            Some((name.clone(), shape?))
        })
        .collect()
}
