//! What the offline verifier found: the [`Report`], its [`Problem`]s (each naming the first entry it
//! implicates) and the fate of each checkpoint. Plain values: `Display` for people, `Serialize` (JSON)
//! for tools.

use std::fmt;

use serde::Serialize;

use hearth_crypto::SuiteId;

use super::checkpoint::CosignatureSeen;

/// Most problems a report lists; the rest are counted in [`Report::problems_omitted`].
pub const MAX_REPORTED_PROBLEMS: usize = 1000;

/// Where a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointSource {
    /// The n-th checkpoint line of the export (from 0).
    Export(usize),
    /// The n-th checkpoint the auditor supplied separately (from 0).
    Extra(usize),
}

impl fmt::Display for CheckpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointSource::Export(i) => write!(f, "export checkpoint #{i}"),
            CheckpointSource::Extra(i) => write!(f, "supplied checkpoint #{i}"),
        }
    }
}

/// What became of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStatus {
    /// Signed by a trusted log key, and the entries reproduce its root.
    Matches,
    /// Signed by a trusted log key, but the entries give another root at its size.
    RootMismatch,
    /// Signed by a trusted log key, but it covers more entries than the export holds.
    BeyondEntries,
    /// Not parsed, wrong origin, or no valid trusted log signature: ignored for the checks below.
    Rejected(String),
}

/// One checkpoint's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    /// Where it came from.
    pub source: CheckpointSource,
    /// Its tree size, if it parsed.
    pub size: Option<u64>,
    /// The trusted log key that signed it.
    pub log_key: Option<String>,
    /// Trusted witnesses that cosigned it.
    pub cosignatures: Vec<CosignatureSeen>,
    /// The outcome.
    pub status: CheckpointStatus,
}

/// Something wrong with an export. [`Problem::first_seq`] says which entry it implicates first.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The export's framing or header is broken (1-based line number).
    Malformed {
        /// Line number in the export, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A key in the export's header is not among the trusted log keys.
    UntrustedKey {
        /// The header's vkey.
        key: String,
    },
    /// A checkpoint was refused: it did not parse, names another origin, or its signatures failed.
    CheckpointRejected {
        /// Which checkpoint.
        source: CheckpointSource,
        /// Why.
        reason: String,
    },
    /// No checkpoint verified: nothing vouches for any entry.
    NoVerifiedCheckpoint,
    /// The header's count disagrees with the lines found.
    CountMismatch {
        /// `entries`.
        what: &'static str,
        /// The header's count.
        declared: u64,
        /// Lines found.
        found: u64,
    },
    /// An entry line does not parse or breaks the entry rules.
    EntryMalformed {
        /// Its position among the entries (its expected sequence number).
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The entry at `position` carries another sequence number: entries were removed, inserted or
    /// reordered there.
    SequenceMismatch {
        /// Position among the entries (the sequence number expected).
        position: u64,
        /// The sequence number found.
        found: u64,
    },
    /// An entry's time is before its predecessor's.
    TimeWentBackwards {
        /// The entry's position.
        position: u64,
        /// The predecessor's time.
        previous_ms: u64,
        /// This entry's time.
        time_ms: u64,
    },
    /// The entry's content was altered: it does not hash to the leaf the log committed to (the recorded
    /// leaf hashes reproduce the signed root of `checkpoint`).
    EntryAltered {
        /// The entry.
        seq: u64,
        /// The checkpoint that authenticates the recorded leaf hashes.
        checkpoint: CheckpointSource,
    },
    /// The entry is authentic but the leaf hash recorded beside it in the export is wrong.
    RecordedLeafWrong {
        /// The entry.
        seq: u64,
    },
    /// The entry does not hash to the leaf recorded beside it, and no checkpoint says which is right.
    LeafMismatch {
        /// The entry.
        seq: u64,
    },
    /// The entries do not reproduce a checkpoint's root: some entry in `first_suspect..size` differs from
    /// what the log signed.
    RootMismatch {
        /// The checkpoint.
        checkpoint: CheckpointSource,
        /// Its size.
        size: u64,
        /// The first entry not vouched for by an earlier matching checkpoint.
        first_suspect: u64,
    },
    /// Two checkpoints validly signed by the log describe different histories: the log forked.
    Fork {
        /// The checkpoint that disagrees.
        checkpoint: CheckpointSource,
        /// Its size.
        size: u64,
        /// The checkpoint it contradicts (one the entries match, or one of the same size).
        other: CheckpointSource,
        /// That checkpoint's size.
        other_size: u64,
        /// The histories may diverge from this entry on.
        first_suspect: u64,
    },
    /// A checkpoint commits to more entries than the export holds: the log was truncated.
    Truncated {
        /// The checkpoint.
        checkpoint: CheckpointSource,
        /// Its size.
        size: u64,
        /// Entries in the export.
        entries: u64,
    },
}

impl Problem {
    /// The first entry this problem implicates, or `None` for a problem of the export as a whole.
    pub fn first_seq(&self) -> Option<u64> {
        match self {
            Problem::Malformed { .. }
            | Problem::UntrustedKey { .. }
            | Problem::CheckpointRejected { .. }
            | Problem::NoVerifiedCheckpoint
            | Problem::CountMismatch { .. } => None,
            Problem::EntryMalformed { position, .. }
            | Problem::SequenceMismatch { position, .. }
            | Problem::TimeWentBackwards { position, .. } => Some(*position),
            Problem::EntryAltered { seq, .. }
            | Problem::RecordedLeafWrong { seq }
            | Problem::LeafMismatch { seq } => Some(*seq),
            Problem::RootMismatch { first_suspect, .. } | Problem::Fork { first_suspect, .. } => {
                Some(*first_suspect)
            }
            Problem::Truncated { entries, .. } => Some(*entries),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed { line, reason } => write!(f, "line {line}: {reason}"),
            Problem::UntrustedKey { key } => {
                write!(f, "the export names log key {key}, which is not trusted")
            }
            Problem::CheckpointRejected { source, reason } => write!(f, "{source} rejected: {reason}"),
            Problem::NoVerifiedCheckpoint => {
                f.write_str("no checkpoint signed by a trusted log key verifies")
            }
            Problem::CountMismatch { what, declared, found } => {
                write!(f, "the header declares {declared} {what}, the export holds {found}")
            }
            Problem::EntryMalformed { position, reason } => write!(f, "entry {position}: {reason}"),
            Problem::SequenceMismatch { position, found } => write!(
                f,
                "entry {position}: sequence number {found} where {position} was expected \
                 (entries removed, inserted or reordered)"
            ),
            Problem::TimeWentBackwards { position, previous_ms, time_ms } => {
                write!(
                    f,
                    "entry {position}: time {time_ms} ms is before the previous entry's {previous_ms} ms"
                )
            }
            Problem::EntryAltered { seq, checkpoint } => write!(
                f,
                "entry {seq}: content altered; it does not hash to the leaf committed by {checkpoint}"
            ),
            Problem::RecordedLeafWrong { seq } => {
                write!(
                    f,
                    "entry {seq}: the leaf hash recorded in the export is wrong (the entry itself verifies)"
                )
            }
            Problem::LeafMismatch { seq } => {
                write!(
                    f,
                    "entry {seq}: does not hash to the leaf recorded beside it, and no checkpoint covers it"
                )
            }
            Problem::RootMismatch { checkpoint, size, first_suspect } => write!(
                f,
                "entries {first_suspect}..{size}: some entry was altered; they do not reproduce the root \
                 signed in {checkpoint} (size {size})"
            ),
            Problem::Fork { checkpoint, size, other, other_size, first_suspect } => write!(
                f,
                "fork: {checkpoint} (size {size}) and {other} (size {other_size}) are both signed by the log \
                 but describe different histories, diverging at or after entry {first_suspect}"
            ),
            Problem::Truncated { checkpoint, size, entries } => write!(
                f,
                "entries {entries}..{size} missing: {checkpoint} commits to {size} entries, the export holds \
                 {entries} (truncated log)"
            ),
        }
    }
}

/// The verifier's findings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Report {
    /// The suite named by the export, if the header parsed.
    pub suite: Option<SuiteId>,
    /// The log's origin, if the header parsed.
    pub origin: Option<String>,
    /// Entry lines read.
    pub entries: u64,
    /// Entries `0..verified_size` reproduce a checkpoint signed by a trusted log key.
    pub verified_size: u64,
    /// Every checkpoint, export ones first.
    pub checkpoints: Vec<CheckpointReport>,
    /// What is wrong, export-wide problems first, then by first implicated entry.
    pub problems: Vec<Problem>,
    /// Problems found beyond [`MAX_REPORTED_PROBLEMS`].
    pub problems_omitted: u64,
}

impl Report {
    /// True when nothing is wrong. Entries after the last checkpoint are not a problem; see
    /// [`Report::unverified_entries`].
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }

    /// The first problem: export-wide ones first, then the one implicating the earliest entry.
    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }

    /// The earliest entry any problem implicates.
    pub fn first_bad_entry(&self) -> Option<u64> {
        self.problems.iter().filter_map(Problem::first_seq).min()
    }

    /// Entries after the largest matching checkpoint: consistent with the export, but not yet signed.
    pub fn unverified_entries(&self) -> u64 {
        self.entries.saturating_sub(self.verified_size)
    }
}

impl Report {
    /// The verdict in a few lines: entries, checkpoints counted by status with the newest one and its
    /// witnesses, the first bad entry and the first problems. `Display` lists every checkpoint.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let origin = self.origin.as_deref().unwrap_or("?");
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        let _ = writeln!(
            out,
            "{verdict}: audit log {origin}, {} entries, {} verified",
            self.entries, self.verified_size
        );
        let mut by_status: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for c in &self.checkpoints {
            *by_status.entry(format!("{:?}", c.status)).or_default() += 1;
        }
        let counts: Vec<String> = by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = writeln!(out, "  {} checkpoints: {}", self.checkpoints.len(), counts.join(", "));
        if let Some(newest) = self.checkpoints.iter().filter(|c| c.size.is_some()).max_by_key(|c| c.size) {
            let witnesses: Vec<&str> = newest.cosignatures.iter().map(|w| w.witness.as_str()).collect();
            let _ = writeln!(
                out,
                "  newest: {} size {}: {:?}; cosigned by [{}]",
                newest.source,
                newest.size.unwrap_or(0),
                newest.status,
                witnesses.join(", ")
            );
        }
        if let Some(seq) = self.first_bad_entry() {
            let _ = writeln!(out, "first bad entry: {seq}");
        }
        for p in self.problems.iter().take(5) {
            let _ = writeln!(out, "  {p}");
        }
        let more = self.problems.len().saturating_sub(5) as u64 + self.problems_omitted;
        if more > 0 {
            let _ = writeln!(out, "  … and {more} more problems (--detail lists them)");
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.origin.as_deref().unwrap_or("?");
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        writeln!(
            f,
            "{verdict}: audit log {origin}, {} entries, {} verified",
            self.entries, self.verified_size
        )?;
        for c in &self.checkpoints {
            let witnesses: Vec<&str> = c.cosignatures.iter().map(|w| w.witness.as_str()).collect();
            let size = c.size.map_or("?".to_string(), |s| s.to_string());
            writeln!(
                f,
                "  {} size {size}: {:?}; cosigned by [{}]",
                c.source,
                c.status,
                witnesses.join(", ")
            )?;
        }
        if let Some(seq) = self.first_bad_entry() {
            writeln!(f, "first bad entry: {seq}")?;
        }
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        if self.problems_omitted > 0 {
            writeln!(f, "  … and {} more problems", self.problems_omitted)?;
        }
        Ok(())
    }
}
