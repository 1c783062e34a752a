//! Small file primitives the node's state relies on: atomic replacement of a file, and the lock that
//! keeps two processes (a running node and a `hearth keys rotate`, say) from writing one node's
//! directory at once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::NodeError;

/// Name of the lock file in a node's directory.
pub const LOCK_FILE: &str = "node.lock";

/// Replaces `path` with `bytes` atomically: write a temporary file beside it, fsync it, rename it over
/// `path`, fsync the directory. A reader sees the old or the new content, never a mix. With `private`
/// the file is created readable by its owner only (keystores).
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), NodeError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(NodeError::io(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).map_err(NodeError::io(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(NodeError::io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(NodeError::io(path))?;
    sync_dir(dir);
    Ok(())
}

/// Fsyncs a directory so that a rename or a new file in it survives a power loss. Best effort: some
/// file systems refuse to open directories for syncing.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// An exclusive lock on a node's directory, held for as long as this value lives. The running service
/// holds it; CLI commands that change a node's keys, data or audit log take it too, and fail with
/// [`NodeError::Locked`] while the service runs.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
    path: PathBuf,
}

impl NodeLock {
    /// Takes the lock on `node_dir` (creating the directory), without waiting.
    pub fn acquire(node_dir: &Path) -> Result<Self, NodeError> {
        std::fs::create_dir_all(node_dir).map_err(NodeError::io(node_dir))?;
        let path = node_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(NodeError::io(&path))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(NodeError::Locked { path }),
            Err(e) => Err(NodeError::Io { path, source: e.into() }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_locks_exclude() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state");
        write_atomic(&p, b"one", true).unwrap();
        write_atomic(&p, b"two", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let held = NodeLock::acquire(dir.path()).unwrap();
        assert!(matches!(NodeLock::acquire(dir.path()), Err(NodeError::Locked { .. })));
        drop(held);
        NodeLock::acquire(dir.path()).unwrap();
    }
}
