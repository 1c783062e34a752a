//! Export of a node's audit log for an auditor: the export format of `hearth_audit::export`,
//! written from the node's files without any secret (no keystore, no passphrase), even while the node
//! runs.
//!
//! By default the export holds exactly the entries covered by the newest signed checkpoint, so that a
//! verified export has no unsigned tail; `include_unsigned` adds the entries written since. Checkpoints
//! are read before entries: entries only grow and a checkpoint is written only over entries already on
//! disk, so every exported checkpoint is covered by the exported entries even during appends.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use hearth_audit::export::{checkpoint_line, ExportHeader};
use hearth_audit::{SignedCheckpoint, VerifierKey};
use hearth_crypto::SuiteId;

use super::files::{read_checkpoints, read_keys, read_meta, AuditPaths};
use crate::NodeError;

/// Choices of an export.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    /// Most checkpoints to include: when the log has more, an evenly spaced selection is kept, always
    /// including the first and the newest (each costs the auditor one signature verification).
    pub max_checkpoints: usize,
    /// Include entries written after the newest checkpoint (they are reported as not yet signed).
    pub include_unsigned: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self { max_checkpoints: 1000, include_unsigned: false }
    }
}

/// What an export holds.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The log's origin.
    pub origin: String,
    /// The log's suite.
    pub suite: SuiteId,
    /// The log's verifier keys, as `keys.txt` lists them.
    pub keys: Vec<VerifierKey>,
    /// Entries written.
    pub entries: u64,
    /// Checkpoints written.
    pub checkpoints: usize,
    /// Checkpoints the log holds in all.
    pub checkpoints_available: usize,
}

/// Picks at most `max` checkpoints, evenly spaced, keeping the first and the last.
fn thin(all: Vec<SignedCheckpoint>, max: usize) -> Vec<SignedCheckpoint> {
    let n = all.len();
    if n <= max || max == 0 {
        return if max == 0 { Vec::new() } else { all };
    }
    if max == 1 {
        return all.into_iter().last().into_iter().collect();
    }
    let keep: std::collections::BTreeSet<usize> = (0..max).map(|i| i * (n - 1) / (max - 1)).collect();
    all.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, c)| c).collect()
}

/// Writes the export of the audit log in `node_dir` to `out`.
pub fn export(node_dir: &Path, out: &mut dyn Write, opts: ExportOptions) -> Result<ExportSummary, NodeError> {
    let paths = AuditPaths::new(node_dir);
    if !paths.meta.exists() {
        return Err(NodeError::Config(format!(
            "{} holds no audit log (no {}); is it the node's state directory?",
            node_dir.display(),
            paths.meta.display()
        )));
    }
    let meta = read_meta(&paths)?;
    let keys = read_keys(&paths)?;
    let all = read_checkpoints(&paths)?;
    let available = all.len();
    let signed_size = all.last().map_or(0, |c| c.checkpoint().size());
    let checkpoints = thin(all, opts.max_checkpoints);

    // Count the complete entry lines to export before writing the header, which states the count.
    let entries_file = || File::open(&paths.entries).map_err(NodeError::io(&paths.entries));
    let mut complete = 0u64;
    if paths.entries.exists() {
        let mut r = BufReader::new(entries_file()?);
        let mut line = Vec::new();
        while opts.include_unsigned || complete < signed_size {
            line.clear();
            let got = r.read_until(b'\n', &mut line).map_err(NodeError::io(&paths.entries))?;
            if got == 0 || line.last() != Some(&b'\n') {
                break;
            }
            complete += 1;
        }
    }
    if complete < signed_size {
        return Err(NodeError::Audit {
            path: paths.entries.clone(),
            reason: format!(
                "holds {complete} entries but a checkpoint was signed at size {signed_size} (truncated)"
            ),
        });
    }
    let io = |e| NodeError::Io { path: "export output".into(), source: e };
    let header = ExportHeader {
        suite: meta.suite,
        origin: meta.origin.clone(),
        keys: keys.clone(),
        checkpoints: checkpoints.len() as u64,
        entries: complete,
    };
    out.write_all(&header.encode_line()).map_err(io)?;
    for c in &checkpoints {
        out.write_all(&checkpoint_line(c)).map_err(io)?;
    }
    if complete > 0 {
        let mut r = BufReader::new(entries_file()?);
        let mut line = Vec::new();
        for _ in 0..complete {
            line.clear();
            r.read_until(b'\n', &mut line).map_err(NodeError::io(&paths.entries))?;
            out.write_all(&line).map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(ExportSummary {
        origin: meta.origin,
        suite: meta.suite,
        keys,
        entries: complete,
        checkpoints: checkpoints.len(),
        checkpoints_available: available,
    })
}

/// The newest signed checkpoint of the log in `node_dir`, as a signed note: what a witness cosigns and
/// what an auditor keeps to compare with later exports.
pub fn latest_checkpoint(node_dir: &Path) -> Result<Option<SignedCheckpoint>, NodeError> {
    super::files::last_checkpoint(&AuditPaths::new(node_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_spreads_the_rest() {
        use hearth_audit::{Checkpoint, SoftwareSigner};
        let key = SoftwareSigner::generate("o", SuiteId::International).unwrap();
        let all: Vec<_> = (1..=10u64)
            .map(|i| SignedCheckpoint::sign(Checkpoint::new("o", i, [0; 32]).unwrap(), &key).unwrap())
            .collect();
        let sizes = |v: Vec<SignedCheckpoint>| v.iter().map(|c| c.checkpoint().size()).collect::<Vec<_>>();
        assert_eq!(sizes(thin(all.clone(), 3)), vec![1, 5, 10]);
        assert_eq!(sizes(thin(all.clone(), 1)), vec![10]);
        assert_eq!(sizes(thin(all.clone(), 20)).len(), 10);
        assert!(thin(all, 0).is_empty());
    }
}
