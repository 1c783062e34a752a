//! What a participant serves stays under its institution's control. A finished job's model goes into
//! service only through the promotion gate (`families::Local::promotion`); on top of that an institution
//! can **pin** the model it serves of a family (no new job replaces it until unpinned) and **roll back** to
//! the model it served before.
//!
//! Both are files in the participant's models directory (`DATA_DIR/models/`, beside the copy of each
//! served model, `<family>.hearthm`), written by `hearth model pin|unpin|rollback` on the participant's
//! host and read by the running participant: every install checks `<family>.pin`, and a rollback request
//! (`<family>.rollback`) is carried out within a second (or when the participant starts). The model served
//! before the current one is kept as `<family>.previous.hearthm`; a rollback swaps the two and pins the
//! family, so the next job does not undo it.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The families whose serving can be pinned and rolled back.
pub const FAMILIES: [&str; 3] = ["intent", "emotion", "recommend"];

/// The file that pins `family`'s served model.
pub fn pin_path(models_dir: &Path, family: &str) -> PathBuf {
    models_dir.join(format!("{family}.pin"))
}

/// The model served before the current one of `family`.
pub fn previous_path(models_dir: &Path, family: &str) -> PathBuf {
    models_dir.join(format!("{family}.previous.hearthm"))
}

/// The served model of `family`.
pub fn current_path(models_dir: &Path, family: &str) -> PathBuf {
    models_dir.join(format!("{family}.hearthm"))
}

/// A pending rollback request of `family`.
pub fn rollback_path(models_dir: &Path, family: &str) -> PathBuf {
    models_dir.join(format!("{family}.rollback"))
}

/// The outcome of the last rollback of `family`, for the command that asked.
pub fn rollback_result_path(models_dir: &Path, family: &str) -> PathBuf {
    models_dir.join(format!("{family}.rollback.result"))
}

/// Checks a family name given on the command line.
pub fn check_family(family: &str) -> anyhow::Result<()> {
    if FAMILIES.contains(&family) {
        Ok(())
    } else {
        anyhow::bail!("unknown model family {family:?}; use {}", FAMILIES.join(", "))
    }
}

/// Why `family` is pinned (the pin file's text), if it is.
pub fn pinned(models_dir: &Path, family: &str) -> anyhow::Result<Option<String>> {
    let path = pin_path(models_dir, family);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Pins `family` with `reason` (replacing an earlier pin).
pub fn pin(models_dir: &Path, family: &str, reason: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(models_dir).with_context(|| format!("creating {}", models_dir.display()))?;
    let path = pin_path(models_dir, family);
    write_atomic(&path, reason.as_bytes())
}

/// Removes `family`'s pin; whether there was one.
pub fn unpin(models_dir: &Path, family: &str) -> anyhow::Result<bool> {
    let path = pin_path(models_dir, family);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half of it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_a_file_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pinned(dir.path(), "intent").unwrap(), None);
        pin(dir.path(), "intent", "pinned by ops at 2026-12-06").unwrap();
        assert_eq!(pinned(dir.path(), "intent").unwrap().as_deref(), Some("pinned by ops at 2026-12-06"));
        assert_eq!(pinned(dir.path(), "emotion").unwrap(), None);
        assert!(unpin(dir.path(), "intent").unwrap());
        assert!(!unpin(dir.path(), "intent").unwrap());
        assert!(check_family("vision").unwrap_err().to_string().contains("intent, emotion, recommend"));
    }
}
