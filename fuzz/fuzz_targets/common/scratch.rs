//! A scratch folder for targets whose entry points read files: one per fuzzing process, under the
//! system's temporary folder, removed when the process exits normally (a crashing input leaves it,
//! named by the process id).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Writes `bytes` to the file `name` in the scratch folder (replacing it) and returns its path.
pub fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir().join(name);
    std::fs::write(&path, bytes).expect("write to the scratch folder");
    path
}

/// The scratch folder, made on first use.
pub fn dir() -> &'static Path {
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lmsi-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make the scratch folder");
        // SAFETY: `remove_dir` is an `extern "C" fn()` that does not unwind.
        unsafe { libc::atexit(remove_dir) };
        dir
    })
}

extern "C" fn remove_dir() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
