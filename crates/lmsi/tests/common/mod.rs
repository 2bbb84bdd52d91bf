//! What the tests of the `lmsi` program share: running it, and a scratch directory for its files.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `lmsi` program with `args`.
pub fn lmsi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmsi"))
        .args(args)
        .output()
        .unwrap()
}

/// What the program wrote on stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A temporary directory, removed when dropped.
pub struct Scratch {
    _root: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_path_buf();
        Scratch { _root: root, dir }
    }

    /// The path of `name` in the directory, as an argument.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

/// The embedded seed model's directory, as an argument.
#[allow(dead_code)] // Not every test binary that shares this module uses it.
pub fn seed_model() -> String {
    lmsi_transformer::testing::seed_model_dir()
        .to_string_lossy()
        .into_owned()
}

/// `lmsi run` arguments: `flags` (flag, value pairs) on the CPU with one thread, each left out
/// where `extra` gives the same flag, then `extra`.
#[allow(dead_code)] // Not every test binary that shares this module uses it.
pub fn run_args<'a>(flags: &[(&'a str, &'a str)], extra: &[&'a str]) -> Vec<&'a str> {
    let on_one_cpu = [("--device", "cpu"), ("--threads", "1")];
    let mut args = vec!["run"];
    for &(flag, value) in flags.iter().chain(&on_one_cpu) {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    args
}
