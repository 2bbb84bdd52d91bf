//! Writing a model as a Hugging Face model directory, atomically.
//!
//! The directory gets `config.json`, `model.safetensors` (f32, Hugging Face tensor names, fused tensors
//! split back into their parts), the tokenizer files of the model it came from (made from the metadata
//! when it came from a GGUF file), and any extra files the
//! caller adds (a trainer's optimizer state and logs). Everything is written into a temporary sibling
//! directory first, which then takes the target's place in one step (an atomic exchange of the two
//! directories on Linux), so a reader sees the old checkpoint or the new one, never a mix.
//!
//! The staging directory of target `name` is `.{name}.partial-` and six random letters or digits. A
//! write that is killed leaves it behind (with a whole model in it), so each write of `name` first
//! removes the staging directories earlier writes of `name` left in the same parent: only
//! directories named exactly so, never another target's (which another process may be writing).
//! Two processes writing one target at once are not supported.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::backend::Backend;
use crate::gguf::{GgufModel, is_model_file};
use crate::model::Model;
use crate::weights::safetensors_bytes;

/// Tokenizer files copied from the source model directory when present.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Writes `model` to `dir` with the tokenizer files of `source` and `extra` files (name, contents).
pub fn save_model<B: Backend>(
    model: &Model<B>,
    source: &Path,
    dir: &Path,
    extra: &[(&str, Vec<u8>)],
) -> Result<(), Error> {
    let host = model.params_to_host()?;
    let weights = safetensors_bytes(model.layout(), &host)?;
    let mut config = model.config().raw.clone();
    if let Some(object) = config.as_object_mut() {
        object.insert("torch_dtype".into(), "float32".into());
    }
    let config = serde_json::to_vec_pretty(&config).expect("a JSON value serialises");
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("config.json".into(), config),
        ("model.safetensors".into(), weights),
    ];
    files.extend(tokenizer_files(source)?);
    files.extend(
        extra
            .iter()
            .map(|(name, bytes)| (name.to_string(), bytes.clone())),
    );
    write_dir_atomic(dir, &files)
}

/// The tokenizer files of the model at `source`: those of a model directory, or those made from a
/// GGUF file's metadata.
fn tokenizer_files(source: &Path) -> Result<Vec<(String, Vec<u8>)>, Error> {
    if is_model_file(source) {
        return GgufModel::open(source)?.tokenizer_files();
    }
    let mut files = Vec::new();
    for name in TOKENIZER_FILES {
        let path = source.join(name);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|source| Error::Io { path, source })?;
            files.push((name.to_string(), bytes));
        }
    }
    Ok(files)
}

/// Random characters of a staging directory's name, after its prefix.
const STAGING_RANDOM_CHARS: usize = 6;

/// The start of the name of the staging directories of target `name`.
fn staging_prefix(name: &str) -> String {
    format!(".{name}.partial-")
}

/// Replaces directory `dir` by one holding exactly `files`, in one step, after removing what
/// killed writes of `dir` left behind (`remove_stale_staging`).
pub fn write_dir_atomic(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_staging(&parent, &name);
    let staging = tempfile::Builder::new()
        .prefix(&staging_prefix(&name))
        .rand_bytes(STAGING_RANDOM_CHARS)
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    for (file, bytes) in files {
        let path = staging.path().join(file);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io(&path))?;
    }
    if dir.exists() {
        exchange(staging.path(), dir)?;
        // `staging` now holds the previous checkpoint and is removed when dropped.
    } else {
        let staged = staging.keep();
        std::fs::rename(&staged, dir).map_err(io(dir))?;
    }
    Ok(())
}

/// Removes the staging directories of target `name` in `parent`: directories (not links) named
/// [`staging_prefix`] and exactly [`STAGING_RANDOM_CHARS`] letters or digits. A write in progress
/// in this process has none (its staging directory is made after this), so any there is a killed
/// write's. Failing to remove one does not fail the write; it is logged.
fn remove_stale_staging(parent: &Path, name: &str) {
    let prefix = staging_prefix(name);
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(
                "cannot list {} for stale staging directories: {e}",
                parent.display()
            );
            return;
        }
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let is_staging = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|random| {
                random.len() == STAGING_RANDOM_CHARS
                    && random.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if !is_staging || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(
                "removed {}, left by a write that was killed",
                path.display()
            ),
            Err(e) => tracing::warn!(
                "cannot remove stale staging directory {}: {e}",
                path.display()
            ),
        }
    }
}

/// Swaps two directories atomically.
fn exchange(a: &Path, b: &Path) -> Result<(), Error> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| Error::Io {
        path: b.to_path_buf(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_a_directory_leaves_only_the_new_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        write_dir_atomic(
            &dir,
            &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        )
        .unwrap();
        write_dir_atomic(&dir, &[("a".into(), b"3".to_vec())]).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"3");
        assert!(!dir.join("b").exists());
        let leftovers: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no staging directory is left behind");
    }
}
