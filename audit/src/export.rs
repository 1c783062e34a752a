//! The export bundle: what a node hands to an auditor, as one UTF-8 file of JSON lines.
//!
//! ```text
//! {"checkpoints":2,"entries":1042,"format":"hearth-audit-export","keys":["<vkey>"],"origin":"hearth.example/audit","suite":"international","version":1}
//! {"checkpoint":"hearth.example/audit\n1000\n…=\n\n— hearth.example/audit …\n"}
//! {"checkpoint":"hearth.example/audit\n1042\n…=\n\n— hearth.example/audit …\n— bank-a.example/witness …\n"}
//! {"entry":{"action":"node.start",…,"v":1},"leaf":"<base64 leaf hash>"}
//! … one line per entry, in sequence order
//! ```
//!
//! 1. A header: the suite (which hash built the tree), the log's origin, the log's public keys as vkeys
//!    (informational: an auditor trusts keys obtained out of band, and the verifier reports a header key
//!    it does not trust), and the number of checkpoint and entry lines that follow.
//! 2. The checkpoints, as signed-note texts in JSON strings, in any order.
//! 3. The entries in sequence order, each with the leaf hash the log recorded when appending it. The
//!    verifier recomputes every leaf from the entry; the recorded hashes let it name exactly which entry
//!    was altered when an export was edited but the recorded hashes were not (see [`verify`](super::verify)).
//!
//! Every line ends with a newline; the decoder bounds each line's length before parsing it, and the
//! header's counts must match the lines found. Nothing in an export is secret (see [`entry`](super::entry)).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;

use hearth_crypto::SuiteId;

use super::checkpoint::{SignedCheckpoint, MAX_NOTE_BYTES};
use super::entry::{Entry, MAX_ENTRY_BYTES};
use super::keys::VerifierKey;
use super::merkle::Hash;
use super::AuditError;

/// The `format` value of an export header.
pub const EXPORT_FORMAT: &str = "hearth-audit-export";
/// The `version` of the export format this code writes and reads.
pub const EXPORT_VERSION: u32 = 1;
/// Longest header line.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most keys in a header.
pub const MAX_KEYS: usize = 16;
/// Most checkpoints in one export: pick a subset (e.g. hourly, plus the latest) when signing more often.
pub const MAX_CHECKPOINTS: u64 = 100_000;
/// Longest checkpoint line: a note of [`MAX_NOTE_BYTES`] with every newline escaped.
pub const MAX_CHECKPOINT_LINE_BYTES: usize = 2 * MAX_NOTE_BYTES + 64;
/// Longest entry line: an entry of [`MAX_ENTRY_BYTES`], its leaf hash and the framing.
pub const MAX_ENTRY_LINE_BYTES: usize = MAX_ENTRY_BYTES + 128;

fn malformed(reason: impl Into<String>) -> AuditError {
    AuditError::Malformed { what: "audit export", reason: reason.into() }
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHeader {
    /// The suite whose hash built the tree.
    pub suite: SuiteId,
    /// The log's origin; every checkpoint must carry it.
    pub origin: String,
    /// The log's public keys, as the log states them.
    pub keys: Vec<VerifierKey>,
    /// Number of checkpoint lines that follow.
    pub checkpoints: u64,
    /// Number of entry lines after the checkpoints.
    pub entries: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    checkpoints: u64,
    entries: u64,
    format: String,
    keys: Vec<String>,
    origin: String,
    suite: SuiteId,
    version: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpointLine {
    checkpoint: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntryLine {
    entry: Entry,
    leaf: String,
}

impl ExportHeader {
    /// The header line, newline included.
    pub fn encode_line(&self) -> Vec<u8> {
        let keys: Vec<String> = self.keys.iter().map(VerifierKey::encode).collect();
        let v = serde_json::json!({
            "checkpoints": self.checkpoints,
            "entries": self.entries,
            "format": EXPORT_FORMAT,
            "keys": keys,
            "origin": self.origin,
            "suite": self.suite,
            "version": EXPORT_VERSION,
        });
        let mut out = v.to_string().into_bytes();
        out.push(b'\n');
        out
    }

    /// Parses a header line (without its newline).
    pub fn parse_line(line: &[u8]) -> Result<Self, AuditError> {
        if line.len() > MAX_HEADER_BYTES {
            return Err(malformed(format!(
                "header of {} bytes, at most {MAX_HEADER_BYTES} allowed",
                line.len()
            )));
        }
        let raw: RawHeader = serde_json::from_slice(line).map_err(|e| malformed(format!("header: {e}")))?;
        if raw.format != EXPORT_FORMAT || raw.version != EXPORT_VERSION {
            return Err(malformed(format!(
                "format {:?} version {}, expected {EXPORT_FORMAT:?} version {EXPORT_VERSION}",
                raw.format, raw.version
            )));
        }
        if raw.keys.len() > MAX_KEYS || raw.checkpoints > MAX_CHECKPOINTS {
            return Err(malformed(format!(
                "{} keys and {} checkpoints, at most {MAX_KEYS} and {MAX_CHECKPOINTS} allowed",
                raw.keys.len(),
                raw.checkpoints
            )));
        }
        let keys = raw.keys.iter().map(|k| VerifierKey::parse(k)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            suite: raw.suite,
            origin: raw.origin,
            keys,
            checkpoints: raw.checkpoints,
            entries: raw.entries,
        })
    }
}

/// The line carrying `checkpoint`, newline included.
pub fn checkpoint_line(checkpoint: &SignedCheckpoint) -> Vec<u8> {
    let mut out = serde_json::json!({ "checkpoint": checkpoint.encode() }).to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Parses a checkpoint line (without its newline).
pub fn parse_checkpoint_line(line: &[u8]) -> Result<SignedCheckpoint, AuditError> {
    if line.len() > MAX_CHECKPOINT_LINE_BYTES {
        return Err(malformed(format!("checkpoint line of {} bytes is too long", line.len())));
    }
    let raw: RawCheckpointLine =
        serde_json::from_slice(line).map_err(|e| malformed(format!("checkpoint line: {e}")))?;
    SignedCheckpoint::parse(&raw.checkpoint)
}

/// The line carrying `entry` and its recorded leaf hash, newline included.
pub fn entry_line(entry: &Entry, leaf_hash: &Hash) -> Vec<u8> {
    entry_line_from_canonical(&entry.canonical(), leaf_hash)
}

/// [`entry_line`] for a service holding the canonical bytes already (as stored at append time).
pub fn entry_line_from_canonical(canonical: &[u8], leaf_hash: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(canonical.len() + 70);
    out.extend_from_slice(b"{\"entry\":");
    out.extend_from_slice(canonical);
    out.extend_from_slice(b",\"leaf\":\"");
    out.extend_from_slice(B64.encode(leaf_hash).as_bytes());
    out.extend_from_slice(b"\"}\n");
    out
}

/// Parses an entry line (without its newline) into the entry and its recorded leaf hash.
pub fn parse_entry_line(line: &[u8]) -> Result<(Entry, Hash), AuditError> {
    if line.len() > MAX_ENTRY_LINE_BYTES {
        return Err(malformed(format!("entry line of {} bytes, at most {MAX_ENTRY_LINE_BYTES}", line.len())));
    }
    let raw: RawEntryLine =
        serde_json::from_slice(line).map_err(|e| malformed(format!("entry line: {e}")))?;
    let leaf = B64.decode(&raw.leaf).map_err(|e| malformed(format!("leaf hash {:?}: {e}", raw.leaf)))?;
    let leaf: Hash =
        leaf.try_into().map_err(|l: Vec<u8>| malformed(format!("leaf hash of {} bytes", l.len())))?;
    Ok((raw.entry, leaf))
}

/// Splits an export into lines, refusing one that does not end with a newline.
pub(super) fn lines(bytes: &[u8]) -> Result<impl Iterator<Item = &[u8]>, AuditError> {
    match bytes.last() {
        None => Err(malformed("empty")),
        Some(b'\n') => Ok(bytes[..bytes.len() - 1].split(|b| *b == b'\n')),
        Some(_) => Err(malformed("does not end with a newline (truncated?)")),
    }
}

/// A whole export in memory: for producing small exports and for tools that query them. Large exports
/// are better written line by line with [`ExportHeader::encode_line`], [`checkpoint_line`] and
/// [`entry_line_from_canonical`], and checked with [`verify_export`](super::verify_export), which streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportBundle {
    /// The suite whose hash built the tree.
    pub suite: SuiteId,
    /// The log's origin.
    pub origin: String,
    /// The log's public keys.
    pub keys: Vec<VerifierKey>,
    /// Signed tree heads, with any cosignatures.
    pub checkpoints: Vec<SignedCheckpoint>,
    /// Entries in sequence order, each with the leaf hash the log recorded.
    pub entries: Vec<(Entry, Hash)>,
}

impl ExportBundle {
    /// The export's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let header = ExportHeader {
            suite: self.suite,
            origin: self.origin.clone(),
            keys: self.keys.clone(),
            checkpoints: self.checkpoints.len() as u64,
            entries: self.entries.len() as u64,
        };
        let mut out = header.encode_line();
        for c in &self.checkpoints {
            out.extend_from_slice(&checkpoint_line(c));
        }
        for (e, h) in &self.entries {
            out.extend_from_slice(&entry_line(e, h));
        }
        out
    }

    /// Decodes an export, refusing any malformed line or count mismatch. This checks the form only: use
    /// [`verify_export`](super::verify_export) to check signatures, hashes and order.
    pub fn decode(bytes: &[u8]) -> Result<Self, AuditError> {
        let mut it = lines(bytes)?;
        let header = ExportHeader::parse_line(it.next().unwrap_or_default())?;
        let mut checkpoints = Vec::new();
        for i in 0..header.checkpoints {
            let line = it
                .next()
                .ok_or_else(|| malformed(format!("checkpoint {i} of {} missing", header.checkpoints)))?;
            checkpoints.push(parse_checkpoint_line(line)?);
        }
        // Do not trust the declared count for allocation: each entry line is at least 100 bytes.
        let mut entries = Vec::with_capacity((bytes.len() / 100).min(header.entries as usize));
        for line in it {
            entries.push(parse_entry_line(line)?);
        }
        if entries.len() as u64 != header.entries {
            return Err(malformed(format!(
                "header declares {} entries, found {}",
                header.entries,
                entries.len()
            )));
        }
        Ok(Self { suite: header.suite, origin: header.origin, keys: header.keys, checkpoints, entries })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::entry::{Event, Outcome};
    use super::super::keys::{SignatureType, SoftwareSigner};
    use super::super::log::AuditLog;
    use super::*;
    use hearth_crypto::SecretBytes;

    pub(crate) fn small_bundle(suite: SuiteId) -> ExportBundle {
        let key = SoftwareSigner::new("hearth.example/audit", suite, SecretBytes::new([5; 32])).unwrap();
        let mut log = AuditLog::new(suite, "hearth.example/audit").unwrap();
        let mut entries = Vec::new();
        let mut checkpoints = Vec::new();
        for i in 0..5u64 {
            let ev = Event::new("urn:hearth:participant:bank-a", crate::Action::UpdateUpload, Outcome::Ok)
                .object(format!("r{i}"));
            let a = log.append(ev, 1000 + i).unwrap();
            entries.push((a.entry, a.leaf_hash));
            if i == 2 || i == 4 {
                checkpoints.push(log.sign_checkpoint(&key).unwrap());
            }
        }
        let keys = vec![VerifierKey::of(&key, SignatureType::Log(suite)).unwrap()];
        ExportBundle { suite, origin: "hearth.example/audit".into(), keys, checkpoints, entries }
    }

    #[test]
    fn bundles_round_trip() {
        for suite in [SuiteId::International, SuiteId::National] {
            let b = small_bundle(suite);
            let bytes = b.encode();
            assert_eq!(ExportBundle::decode(&bytes).unwrap(), b);
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert_eq!(text.lines().count(), 1 + 2 + 5);
            assert!(text.starts_with("{\"checkpoints\":2,\"entries\":5,\"format\":\"hearth-audit-export\""));
            assert!(ExportBundle::decode(&bytes[..bytes.len() - 1]).is_err(), "missing final newline");
            let dropped: Vec<u8> = text.lines().take(7).flat_map(|l| format!("{l}\n").into_bytes()).collect();
            assert!(ExportBundle::decode(&dropped).is_err(), "count mismatch");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ExportBundle::decode(&bytes);
            let _ = ExportHeader::parse_line(&bytes);
            let _ = parse_entry_line(&bytes);
            let _ = parse_checkpoint_line(&bytes);
        }

        #[test]
        fn mutated_exports_never_panic_the_decoder(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = small_bundle(SuiteId::International).encode();
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            let _ = ExportBundle::decode(&bytes);
        }
    }
}
