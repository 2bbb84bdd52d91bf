//! A checkpoint write that was killed leaves its staging directory behind; the next write of the
//! same target removes it, and nothing else.

use std::path::Path;

use lmsi_transformer::checkpoint::write_dir_atomic;

fn files(contents: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![("model.safetensors".into(), contents.to_vec())]
}

/// A staging directory as a killed write of `name` leaves it: a hidden copy of the model.
fn stale_staging(parent: &Path, name: &str, random: &str) -> std::path::PathBuf {
    let path = parent.join(format!(".{name}.partial-{random}"));
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("model.safetensors"), b"half a model").unwrap();
    path
}

#[test]
fn the_next_write_removes_stale_staging_directories_of_its_target_only() {
    for target_exists in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        if target_exists {
            write_dir_atomic(&dir, &files(b"old")).unwrap();
        }
        let stale = [
            stale_staging(root.path(), "ckpt", "AbC123"),
            stale_staging(root.path(), "ckpt", "zzzzzz"),
        ];
        // Not ckpt's staging directories: another target's (perhaps being written now), names
        // that only look alike, a file with a staging name, and the user's own files.
        let kept = [
            stale_staging(root.path(), "other", "AbC123"),
            stale_staging(root.path(), "ckpt", "AbC12"),
            stale_staging(root.path(), "ckpt", "AbC1234"),
            stale_staging(root.path(), "ckpt", "AbC-12"),
            stale_staging(root.path(), "ckpt.partial-AbC123", "QwE456"),
        ];
        let file = root.path().join(".ckpt.partial-QwE456");
        std::fs::write(&file, b"a file").unwrap();
        let notes = root.path().join("notes.txt");
        std::fs::write(&notes, b"mine").unwrap();

        write_dir_atomic(&dir, &files(b"new")).unwrap();

        assert_eq!(
            std::fs::read(dir.join("model.safetensors")).unwrap(),
            b"new"
        );
        for path in &stale {
            assert!(!path.exists(), "{} is left", path.display());
        }
        for path in kept.iter().chain([&file, &notes]) {
            assert!(path.exists(), "{} was removed", path.display());
        }
        let entries = std::fs::read_dir(root.path()).unwrap().count();
        assert_eq!(
            entries,
            1 + kept.len() + 2,
            "no staging directory of this write is left"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_link_with_a_staging_name_is_not_followed() {
    let root = tempfile::tempdir().unwrap();
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("keep"), b"x").unwrap();
    let link = root.path().join(".ckpt.partial-LiNk00");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    write_dir_atomic(&root.path().join("ckpt"), &files(b"new")).unwrap();
    assert!(elsewhere.join("keep").exists());
    assert!(link.symlink_metadata().is_ok());
}
