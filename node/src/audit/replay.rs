//! Resuming a log after a restart: rebuild the tree from the state saved at the last checkpoint and the
//! entries written after it, checking each entry and the root against the last signed checkpoint; cut a
//! half-written last line; refuse a log truncated below a signed checkpoint.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom};

use hearth_audit::export::parse_entry_line;
use hearth_audit::merkle::leaf_hash;
use hearth_audit::{CompactTree, SignedCheckpoint, Trust, VerifierKey};
use hearth_crypto::SuiteId;

use super::files::{self, read_tree_state, AuditPaths};
use super::Recovery;
use crate::NodeError;

pub(super) type Replayed = (CompactTree, u64, u64, Recovery, u64);

/// Rebuilds the tree from the saved state and the entries after it, checking each, and checks the result
/// against the last signed checkpoint. Returns the tree, the last entry's time, the byte length of the
/// valid entries, what was repaired, and the last checkpoint's size.
pub(super) fn replay(
    paths: &AuditPaths,
    suite: SuiteId,
    origin: &str,
    keys: &[VerifierKey],
) -> Result<Replayed, NodeError> {
    let last = files::last_checkpoint(paths)?;
    if let Some(cp) = &last {
        let trust = Trust { log_keys: keys.to_vec(), witnesses: vec![] };
        cp.verify(&trust).map_err(|e| NodeError::Audit {
            path: paths.checkpoints.clone(),
            reason: format!("the last checkpoint does not verify under the log's keys in keys.txt: {e}"),
        })?;
        if cp.checkpoint().origin() != origin {
            return Err(NodeError::Audit {
                path: paths.checkpoints.clone(),
                reason: format!(
                    "the last checkpoint is for {:?}, not this log {origin:?}",
                    cp.checkpoint().origin()
                ),
            });
        }
    }
    let file_len = match std::fs::metadata(&paths.entries) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(NodeError::Io { path: paths.entries.clone(), source: e }),
    };
    let saved = read_tree_state(paths)
        .filter(|s| s.offset <= file_len && last.as_ref().is_none_or(|c| s.size <= c.checkpoint().size()))
        .and_then(|s| s.tree(suite).map(|t| (t, s.last_time_ms, s.offset)));
    if let Some(start) = saved {
        match replay_from(paths, suite, &last, start) {
            Ok(r) => return Ok(r),
            // The saved state itself may be what is wrong: the entries decide.
            Err(e) => {
                tracing::warn!(error = %e, "replay from the saved tree state failed; replaying the whole log")
            }
        }
    }
    replay_from(paths, suite, &last, (CompactTree::new(suite), 0, 0))
}

fn replay_from(
    paths: &AuditPaths,
    suite: SuiteId,
    last: &Option<SignedCheckpoint>,
    start: (CompactTree, u64, u64),
) -> Result<Replayed, NodeError> {
    let bad = |reason: String| NodeError::Audit { path: paths.entries.clone(), reason };
    let file_len = match std::fs::metadata(&paths.entries) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(NodeError::Io { path: paths.entries.clone(), source: e }),
    };
    let (mut tree, mut last_time, mut offset) = start;
    let mut recovery = Recovery::default();
    let check_root = |tree: &CompactTree| -> Result<(), NodeError> {
        match last {
            Some(cp) if cp.checkpoint().size() == tree.size() && cp.checkpoint().root() != &tree.root() => {
                Err(bad(format!(
                    "entries 0..{} do not reproduce the root signed in the last checkpoint: the file was altered",
                    tree.size()
                )))
            }
            _ => Ok(()),
        }
    };
    check_root(&tree)?;
    if file_len > 0 {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&paths.entries)
            .map_err(NodeError::io(&paths.entries))?;
        f.seek(SeekFrom::Start(offset)).map_err(NodeError::io(&paths.entries))?;
        let mut r = BufReader::new(&f);
        let mut line = Vec::new();
        loop {
            line.clear();
            let got = r.read_until(b'\n', &mut line).map_err(NodeError::io(&paths.entries))?;
            if got == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                recovery.discarded_bytes = got as u64;
                break;
            }
            let seq = tree.size();
            let (entry, recorded) = parse_entry_line(&line[..line.len() - 1])
                .map_err(|e| bad(format!("entry {seq} (byte {offset}): {e}")))?;
            if entry.seq() != seq {
                return Err(bad(format!(
                    "entry {seq}: sequence number {} (entries removed, inserted or reordered)",
                    entry.seq()
                )));
            }
            if leaf_hash(suite, &entry.canonical()) != recorded {
                return Err(bad(format!(
                    "entry {seq}: does not hash to its recorded leaf; the entry was altered"
                )));
            }
            tree.push_leaf_hash(recorded);
            last_time = last_time.max(entry.time_ms());
            offset += got as u64;
            recovery.replayed += 1;
            check_root(&tree)?;
        }
        drop(r);
        if recovery.discarded_bytes > 0 {
            tracing::warn!(file = %paths.entries.display(), bytes = recovery.discarded_bytes, "cutting a partly written last audit entry");
            f.set_len(offset).map_err(NodeError::io(&paths.entries))?;
            f.sync_all().map_err(NodeError::io(&paths.entries))?;
        }
    }
    let last_size = last.as_ref().map_or(0, |c| c.checkpoint().size());
    if tree.size() < last_size {
        return Err(bad(format!(
            "holds {} entries but a checkpoint was signed at size {last_size}: entries {}..{last_size} are missing (truncated)",
            tree.size(),
            tree.size()
        )));
    }
    Ok((tree, last_time, offset, recovery, last_size))
}
