//! Outputs never destroy inputs, and are found unwritable before the work starts.
//!
//! Every command checks its outputs against its inputs before it reads a model or samples a path:
//!
//! - an output file may not be an input file: the same path after resolving `.`, `..` and
//!   symbolic links, or the same file under another name (a hard link);
//! - an output *directory* that is replaced as a whole (a training checkpoint, `train --out`) may not
//!   be an input, nor hold one (`--data ckpt/train.jsonl --out ckpt` would delete the data);
//! - an input model directory counts as every file in it, so `eval --out model/config.json` is
//!   refused too;
//! - an output file's directory must exist and take a new file, and the output may not be a
//!   directory; an output directory's nearest existing ancestor must take a new directory.
//!
//! ```
//! use lmsi::outputs::{Named, check_output};
//! # let dir = tempfile::tempdir().unwrap();
//! let paths = dir.path().join("paths.jsonl");
//! std::fs::write(&paths, "").unwrap();
//! let error = check_output(Named::file("--out", &paths), &[Named::file("--paths", &paths)]);
//! assert!(error.unwrap_err().to_string().contains("is also --paths"));
//! ```

use std::path::{Component, Path, PathBuf};

use crate::Error;

/// A path given by an option, with what kind of thing it is.
#[derive(Clone, Copy, Debug)]
pub struct Named<'a> {
    /// The option that gave it (`--out`), or what it is (`the run's manifest`).
    pub option: &'a str,
    pub path: &'a Path,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    /// A directory read (or written) as a whole.
    Dir,
}

impl<'a> Named<'a> {
    /// A file.
    pub fn file(option: &'a str, path: &'a Path) -> Self {
        Self {
            option,
            path,
            kind: Kind::File,
        }
    }

    /// A directory: as an input, every file in it; as an output, replaced as a whole.
    pub fn dir(option: &'a str, path: &'a Path) -> Self {
        Self {
            option,
            path,
            kind: Kind::Dir,
        }
    }
}

/// Refuses `output` when it would overwrite or delete one of `inputs`, or cannot be written.
pub fn check_output(output: Named<'_>, inputs: &[Named<'_>]) -> Result<(), Error> {
    let out = resolve(output.path);
    for input in inputs {
        let inp = resolve(input.path);
        let clash = match (output.kind, input.kind) {
            (Kind::Dir, _) => inp.starts_with(&out),
            (Kind::File, Kind::File) => out == inp || same_file(output.path, input.path),
            (Kind::File, Kind::Dir) => out == inp || in_dir(output.path, input.path),
        };
        if clash {
            return Err(aliased(output, *input, out == inp));
        }
    }
    match output.kind {
        Kind::File => check_writable_file(output),
        Kind::Dir => check_writable_dir(output),
    }
}

/// The refusal of `output` for `input`; `same` when both resolve to one path.
fn aliased(output: Named<'_>, input: Named<'_>, same: bool) -> Error {
    let how = match (output.kind, input.kind) {
        (Kind::Dir, _) if !same => "would replace",
        (Kind::File, Kind::Dir) => "is a file of",
        _ => "is also",
    };
    Error::Output {
        output: output.path.to_path_buf(),
        message: format!(
            "{} {} {how} {} {}; refusing to overwrite an input",
            output.option,
            output.path.display(),
            input.option,
            input.path.display()
        ),
    }
}

/// Whether `file` is (the same file as) one of the files directly in `dir`.
fn in_dir(file: &Path, dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|entry| same_file(file, &entry.path()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    same_file::is_same_file(a, b).unwrap_or(false)
}

/// `path` made absolute, with `.`, `..` and the symbolic links of its existing part resolved.
fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<Component> = absolute.components().collect();
    let prefix = |n: usize| parts[..n].iter().collect::<PathBuf>();
    let mut existing = parts.len();
    while existing > 1 && !prefix(existing).exists() {
        existing -= 1;
    }
    let start = prefix(existing);
    let mut resolved = start.canonicalize().unwrap_or(start);
    for part in &parts[existing..] {
        match part {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => resolved.push(name),
            _ => {}
        }
    }
    resolved
}

/// The output file's directory exists and takes a new file, and the output is no directory.
fn check_writable_file(output: Named<'_>) -> Result<(), Error> {
    let path = output.path;
    if path.is_dir() {
        return Err(Error::Output {
            output: path.to_path_buf(),
            message: format!(
                "{} {} is a directory; it names a file to write",
                output.option,
                path.display()
            ),
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".lmsi-write-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| Error::io(path, e))
}

/// The nearest existing directory above the output directory takes a new directory (the
/// output's missing parents are created as it is written, and it is replaced from beside it).
fn check_writable_dir(output: Named<'_>) -> Result<(), Error> {
    let mut existing = resolve(output.path);
    existing.pop();
    while !existing.is_dir() && existing.pop() {}
    tempfile::Builder::new()
        .prefix(".lmsi-write-check-")
        .tempdir_in(&existing)
        .map(drop)
        .map_err(|e| Error::io(output.path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_handles_missing_parts_and_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let a = root.join("a.jsonl");
        assert_eq!(resolve(&root.join("x/../a.jsonl")), a);
        assert_eq!(resolve(&root.join("./new/file")), root.join("new/file"));
    }

    #[test]
    fn hard_links_and_symlinks_are_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.jsonl");
        std::fs::write(&data, "{}\n").unwrap();
        let hard = dir.path().join("hard.jsonl");
        std::fs::hard_link(&data, &hard).unwrap();
        let soft = dir.path().join("soft.jsonl");
        std::os::unix::fs::symlink(&data, &soft).unwrap();
        for out in [&hard, &soft] {
            let err = check_output(Named::file("--out", out), &[Named::file("--data", &data)]);
            assert!(matches!(err, Err(Error::Output { .. })), "{out:?}");
        }
        let other = dir.path().join("other.jsonl");
        check_output(
            Named::file("--out", &other),
            &[Named::file("--data", &data)],
        )
        .unwrap();
    }

    #[test]
    fn a_directory_output_may_not_hold_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("ckpt");
        std::fs::create_dir(&ckpt).unwrap();
        let data = ckpt.join("train.jsonl");
        std::fs::write(&data, "{}\n").unwrap();
        let err = check_output(Named::dir("--out", &ckpt), &[Named::file("--data", &data)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("would replace --data"), "{err}");
    }

    #[test]
    fn a_file_of_a_model_directory_is_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, "{}").unwrap();
        let err = check_output(
            Named::file("--out", &config),
            &[Named::dir("--model", dir.path())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is a file of --model"), "{err}");
        let report = dir.path().join("eval.json");
        check_output(
            Named::file("--out", &report),
            &[Named::dir("--model", dir.path())],
        )
        .unwrap();
    }

    #[test]
    fn unwritable_outputs_are_found_first() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/out.jsonl");
        assert!(matches!(
            check_output(Named::file("--out", &missing), &[]),
            Err(Error::Io { .. })
        ));
        assert!(check_output(Named::file("--out", dir.path()), &[]).is_err());
    }
}
