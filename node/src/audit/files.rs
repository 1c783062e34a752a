//! The audit log's files in a node's directory, and reading them back.
//!
//! ```text
//! <node dir>/audit/
//!   log.json          {"format":"hearth-node-audit","origin":…,"suite":…,"version":1}, written once
//!   entries.jsonl     one line per entry, exactly the export's entry line: {"entry":<canonical>,"leaf":"<b64>"}
//!   checkpoints.jsonl one line per signed checkpoint, exactly the export's checkpoint line
//!   keys.txt          the log's verifier keys (vkeys), one per audit key version ever used
//!   tree.json         the Merkle tree state at the last checkpoint: size, compact nodes, byte offset
//! ```
//!
//! Because the lines are the export's own, an export is a header followed by copies of these lines. None
//! of these files is secret: entries hold no customer text and no key material (see
//! `hearth_audit::entry`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hearth_audit::export::parse_checkpoint_line;
use hearth_audit::{CompactTree, Hash, SignedCheckpoint, VerifierKey};
use hearth_crypto::SuiteId;
use serde::{Deserialize, Serialize};

use crate::NodeError;

/// The audit directory's name inside a node's directory.
pub const AUDIT_DIR: &str = "audit";
const META_FORMAT: &str = "hearth-node-audit";

/// Paths of one node's audit files.
#[derive(Debug, Clone)]
pub struct AuditPaths {
    /// `<node dir>/audit`.
    pub dir: PathBuf,
    /// `log.json`.
    pub meta: PathBuf,
    /// `entries.jsonl`.
    pub entries: PathBuf,
    /// `checkpoints.jsonl`.
    pub checkpoints: PathBuf,
    /// `keys.txt`.
    pub keys: PathBuf,
    /// `tree.json`.
    pub tree: PathBuf,
}

impl AuditPaths {
    /// The audit files of the node whose directory is `node_dir`.
    pub fn new(node_dir: &Path) -> Self {
        let dir = node_dir.join(AUDIT_DIR);
        Self {
            meta: dir.join("log.json"),
            entries: dir.join("entries.jsonl"),
            checkpoints: dir.join("checkpoints.jsonl"),
            keys: dir.join("keys.txt"),
            tree: dir.join("tree.json"),
            dir,
        }
    }
}

/// `log.json`: what the log is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Always `hearth-node-audit`.
    pub format: String,
    /// The log's origin.
    pub origin: String,
    /// The suite whose hash builds the tree.
    pub suite: SuiteId,
    /// Layout version, 1.
    pub version: u32,
}

impl Meta {
    pub(crate) fn new(origin: &str, suite: SuiteId) -> Self {
        Self { format: META_FORMAT.into(), origin: origin.into(), suite, version: 1 }
    }
}

/// Reads `log.json`.
pub fn read_meta(p: &AuditPaths) -> Result<Meta, NodeError> {
    let text = std::fs::read_to_string(&p.meta).map_err(NodeError::io(&p.meta))?;
    let m: Meta = serde_json::from_str(&text)
        .map_err(|e| NodeError::Audit { path: p.meta.clone(), reason: e.to_string() })?;
    if m.format != META_FORMAT || m.version != 1 {
        return Err(NodeError::Audit {
            path: p.meta.clone(),
            reason: format!("format {:?} version {} is not {META_FORMAT:?} version 1", m.format, m.version),
        });
    }
    Ok(m)
}

/// Reads `keys.txt` (missing: no keys).
pub fn read_keys(p: &AuditPaths) -> Result<Vec<VerifierKey>, NodeError> {
    let text = match std::fs::read_to_string(&p.keys) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NodeError::Io { path: p.keys.clone(), source: e }),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            VerifierKey::parse(l.trim()).map_err(|e| NodeError::Audit {
                path: p.keys.clone(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Every signed checkpoint in `checkpoints.jsonl`, in file order (sizes increase). A last line without
/// its newline (a crash while writing it) is ignored.
pub fn read_checkpoints(p: &AuditPaths) -> Result<Vec<SignedCheckpoint>, NodeError> {
    let f = match File::open(&p.checkpoints) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NodeError::Io { path: p.checkpoints.clone(), source: e }),
    };
    let mut out = Vec::new();
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let got = r.read_until(b'\n', &mut line).map_err(NodeError::io(&p.checkpoints))?;
        if got == 0 || line.last() != Some(&b'\n') {
            break;
        }
        n += 1;
        let cp = parse_checkpoint_line(&line[..line.len() - 1]).map_err(|e| NodeError::Audit {
            path: p.checkpoints.clone(),
            reason: format!("line {n}: {e}"),
        })?;
        out.push(cp);
    }
    Ok(out)
}

/// The last complete checkpoint line, read from the end of the file (the file grows by one line a second
/// while the node is busy, so reading it whole at every start would not scale).
pub fn last_checkpoint(p: &AuditPaths) -> Result<Option<SignedCheckpoint>, NodeError> {
    let mut f = match File::open(&p.checkpoints) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::Io { path: p.checkpoints.clone(), source: e }),
    };
    let len = f.metadata().map_err(NodeError::io(&p.checkpoints))?.len();
    let window = len.min(hearth_audit::export::MAX_CHECKPOINT_LINE_BYTES as u64 + 2);
    f.seek(SeekFrom::Start(len - window)).map_err(NodeError::io(&p.checkpoints))?;
    let mut tail = Vec::with_capacity(window as usize);
    f.read_to_end(&mut tail).map_err(NodeError::io(&p.checkpoints))?;
    // Drop an incomplete last line, then take the line before the final newline.
    let complete = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => &tail[..i],
        None => return Ok(None),
    };
    let start = complete.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if start == 0 && window < len {
        return Err(NodeError::Audit {
            path: p.checkpoints.clone(),
            reason: "the last checkpoint line is longer than any valid one".into(),
        });
    }
    parse_checkpoint_line(&complete[start..])
        .map(Some)
        .map_err(|e| NodeError::Audit { path: p.checkpoints.clone(), reason: format!("last line: {e}") })
}

/// `tree.json`: the tree at the last checkpoint, so a restart replays only the entries after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TreeState {
    pub(crate) size: u64,
    pub(crate) nodes: Vec<String>,
    pub(crate) last_time_ms: u64,
    /// Bytes of `entries.jsonl` holding entries `0..size`.
    pub(crate) offset: u64,
}

impl TreeState {
    pub(crate) fn of(tree: &CompactTree, last_time_ms: u64, offset: u64) -> Self {
        Self {
            size: tree.size(),
            nodes: tree.nodes().iter().map(|n| B64.encode(n)).collect(),
            last_time_ms,
            offset,
        }
    }

    pub(crate) fn tree(&self, suite: SuiteId) -> Option<CompactTree> {
        let nodes: Option<Vec<Hash>> =
            self.nodes.iter().map(|n| B64.decode(n).ok().and_then(|v| v.try_into().ok())).collect();
        CompactTree::from_parts(suite, self.size, nodes?).ok()
    }
}

/// Reads `tree.json`, or `None` when it is missing or unreadable (the log is then replayed from the
/// start, which is slower but as safe).
pub(crate) fn read_tree_state(p: &AuditPaths) -> Option<TreeState> {
    let text = std::fs::read_to_string(&p.tree).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(file = %p.tree.display(), error = %e, "unreadable tree state; replaying the whole log");
            None
        }
    }
}
