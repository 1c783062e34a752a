//! The offline verifier: `hearth audit verify` on an auditor's machine. It reads an export (and any
//! checkpoints the auditor collected elsewhere), recomputes everything, and reports what is wrong, first
//! bad entry first. It streams: memory stays O(log n + checkpoints) beside the input.
//!
//! # What is checked, in one pass
//!
//! 1. Every checkpoint parses, carries the export's origin, and is signed by a trusted log key (witness
//!    cosignatures are verified and reported); the header's keys are among the trusted ones.
//! 2. Every entry line parses and obeys the entry rules; sequence numbers run 0, 1, 2, … in file order
//!    (a removed, inserted or reordered entry breaks this at its position); times never decrease.
//! 3. Every leaf is recomputed from its entry and compared with the leaf hash recorded beside it; the
//!    recomputed tree's root is compared with every checkpoint at that size.
//! 4. Checkpoints are checked against each other: two verified checkpoints that cannot both be prefixes
//!    of one history are a **fork** (the log showed different histories to different readers), whoever
//!    collected them; a checkpoint larger than the export is a **truncation**.
//!
//! # Naming the first bad entry
//!
//! Sequence, time and parse errors name their entry directly. For an entry whose content was altered
//! with its sequence number kept, a signed root only says that *something* in a range changed:
//!
//! - if the leaf hashes recorded in the export reproduce the signed root, they are authenticated (by
//!   collision resistance) and the first entry that does not hash to its recorded leaf is named exactly;
//! - otherwise the report names the range between the last checkpoint the entries matched and the
//!   failing checkpoint. No verifier can do better against someone who rewrote both: signing
//!   checkpoints often keeps these ranges short.
//!
//! A fork is reported with the range where the two histories may diverge, for the same reason.

use std::fmt;

use crate::SuiteId;

use super::checkpoint::{CosignatureSeen, SignedCheckpoint, Trust, VerifiedCheckpoint};
use super::export::{lines, parse_checkpoint_line, parse_entry_line, ExportHeader};
use super::merkle::{leaf_hash, CompactTree, Hash};

/// Most problems a report lists; the rest are counted in [`Report::problems_omitted`].
pub const MAX_REPORTED_PROBLEMS: usize = 1000;

/// Where a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

/// Verifies an export against the keys the auditor trusts. See the module docs for what is checked.
pub fn verify_export(bytes: &[u8], trust: &Trust) -> Report {
    verify_export_with(bytes, trust, &[])
}

/// [`verify_export`], adding checkpoints the auditor obtained elsewhere (from witnesses, participants, or
/// earlier exports), as signed-note texts: any fork between them and the export is reported.
pub fn verify_export_with(bytes: &[u8], trust: &Trust, extra_checkpoints: &[&str]) -> Report {
    let mut v = Verifier { report: Report::default(), trust, checkpoints: Vec::new() };
    v.run(bytes, extra_checkpoints);
    v.finish()
}

/// A checkpoint whose signature verified, waiting for the entries to reach its size.
struct Candidate {
    source: CheckpointSource,
    /// Index into `report.checkpoints`.
    slot: usize,
    verified: VerifiedCheckpoint,
    /// Size of the last checkpoint the entries matched when this one was reached.
    first_suspect: u64,
    /// Whether the entries' root matched; `None` until reached.
    matched: Option<bool>,
    /// Whether an exact [`Problem::EntryAltered`] already explains a mismatch.
    explained: bool,
}

impl Candidate {
    fn size(&self) -> u64 {
        self.verified.checkpoint.size()
    }

    fn root(&self) -> &Hash {
        self.verified.checkpoint.root()
    }
}

struct Verifier<'a> {
    report: Report,
    trust: &'a Trust,
    checkpoints: Vec<Candidate>,
}

impl Verifier<'_> {
    fn problem(&mut self, p: Problem) {
        if self.report.problems.len() < MAX_REPORTED_PROBLEMS {
            self.report.problems.push(p);
        } else {
            self.report.problems_omitted += 1;
        }
    }

    fn run(&mut self, bytes: &[u8], extra: &[&str]) {
        let mut it = match lines(bytes) {
            Ok(it) => it,
            Err(e) => return self.problem(Problem::Malformed { line: 1, reason: e.to_string() }),
        };
        let header = match ExportHeader::parse_line(it.next().unwrap_or_default()) {
            Ok(h) => h,
            Err(e) => return self.problem(Problem::Malformed { line: 1, reason: e.to_string() }),
        };
        self.report.suite = Some(header.suite);
        self.report.origin = Some(header.origin.clone());
        for k in &header.keys {
            if !self.trust.log_keys.contains(k) {
                self.problem(Problem::UntrustedKey { key: k.encode() });
            }
        }
        for i in 0..header.checkpoints {
            let Some(line) = it.next() else {
                let found = i;
                return self.problem(Problem::CountMismatch {
                    what: "checkpoints",
                    declared: header.checkpoints,
                    found,
                });
            };
            let parsed = parse_checkpoint_line(line);
            self.add_checkpoint(&header.origin, CheckpointSource::Export(i as usize), parsed);
        }
        for (i, text) in extra.iter().enumerate() {
            self.add_checkpoint(&header.origin, CheckpointSource::Extra(i), SignedCheckpoint::parse(text));
        }
        if self.checkpoints.is_empty() {
            self.problem(Problem::NoVerifiedCheckpoint);
        }
        // Process checkpoints in size order as the entries reach them.
        self.checkpoints.sort_by_key(|c| (c.size(), c.source));
        self.stream_entries(header.suite, it, header.entries);
    }

    fn add_checkpoint(
        &mut self,
        origin: &str,
        source: CheckpointSource,
        parsed: Result<SignedCheckpoint, super::AuditError>,
    ) {
        let slot = self.report.checkpoints.len();
        let mut rep = CheckpointReport {
            source,
            size: None,
            log_key: None,
            cosignatures: vec![],
            status: CheckpointStatus::Matches,
        };
        let verified = parsed.and_then(|c| {
            rep.size = Some(c.checkpoint().size());
            if c.checkpoint().origin() != origin {
                return Err(super::AuditError::Malformed {
                    what: "checkpoint",
                    reason: format!("origin {:?} is not the export's {origin:?}", c.checkpoint().origin()),
                });
            }
            c.verify(self.trust)
        });
        match verified {
            Ok(v) => {
                rep.log_key = Some(v.log_key.clone());
                rep.cosignatures = v.cosignatures.clone();
                self.checkpoints.push(Candidate {
                    source,
                    slot,
                    verified: v,
                    first_suspect: 0,
                    matched: None,
                    explained: false,
                });
            }
            Err(e) => {
                rep.status = CheckpointStatus::Rejected(e.to_string());
                self.problem(Problem::CheckpointRejected { source, reason: e.to_string() });
            }
        }
        self.report.checkpoints.push(rep);
    }

    fn stream_entries<'b>(
        &mut self,
        suite: SuiteId,
        mut lines: impl Iterator<Item = &'b [u8]>,
        declared: u64,
    ) {
        let mut entries = CompactTree::new(suite);
        let mut recorded = CompactTree::new(suite);
        let mut verified_size = 0u64;
        // First entry since `verified_size` whose recomputed leaf differs from the recorded one.
        let mut pending_mismatch: Option<u64> = None;
        // Whether an entry since `verified_size` already has an exact problem (parse, sequence, time),
        // which then explains a root mismatch better than a range would.
        let mut exact_problem = false;
        let mut expected_seq = 0u64;
        let mut previous_ms: Option<u64> = None;
        let mut next_cp = 0usize;
        let mut position = 0u64;
        loop {
            // Checkpoints at the current size.
            while self.checkpoints.get(next_cp).is_some_and(|c| c.size() == position) {
                let (matched, recorded_matches, source) = match self.checkpoints.get_mut(next_cp) {
                    Some(c) => {
                        c.first_suspect = verified_size;
                        let matched = entries.root() == *c.root();
                        c.matched = Some(matched);
                        (matched, recorded.root() == *c.root(), c.source)
                    }
                    None => break,
                };
                next_cp += 1;
                if matched {
                    verified_size = position;
                    exact_problem = false;
                    if let Some(seq) = pending_mismatch.take() {
                        self.problem(Problem::RecordedLeafWrong { seq });
                    }
                } else if exact_problem {
                    if let Some(c) = self.checkpoints.get_mut(next_cp - 1) {
                        c.explained = true;
                    }
                } else if recorded_matches {
                    if let Some(seq) = pending_mismatch.take() {
                        if let Some(c) = self.checkpoints.get_mut(next_cp - 1) {
                            c.explained = true;
                        }
                        self.problem(Problem::EntryAltered { seq, checkpoint: source });
                    }
                }
            }
            let Some(line) = lines.next() else { break };
            match parse_entry_line(line) {
                Ok((entry, recorded_leaf)) => {
                    if entry.seq() != expected_seq {
                        exact_problem = true;
                        self.problem(Problem::SequenceMismatch { position, found: entry.seq() });
                    }
                    expected_seq = entry.seq().saturating_add(1);
                    if let Some(prev) = previous_ms.filter(|p| *p > entry.time_ms()) {
                        exact_problem = true;
                        self.problem(Problem::TimeWentBackwards {
                            position,
                            previous_ms: prev,
                            time_ms: entry.time_ms(),
                        });
                    }
                    previous_ms = Some(entry.time_ms());
                    let leaf = entries.append(&entry.canonical());
                    recorded.push_leaf_hash(recorded_leaf);
                    if leaf != recorded_leaf && pending_mismatch.is_none() {
                        pending_mismatch = Some(position);
                    }
                }
                Err(e) => {
                    exact_problem = true;
                    self.problem(Problem::EntryMalformed { position, reason: e.to_string() });
                    // Keep positions aligned: the bad line still occupies a leaf, whose root will not match.
                    let h = leaf_hash(suite, line);
                    entries.push_leaf_hash(h);
                    recorded.push_leaf_hash(h);
                    expected_seq = expected_seq.saturating_add(1);
                }
            }
            position += 1;
        }
        if let Some(seq) = pending_mismatch {
            self.problem(Problem::LeafMismatch { seq });
        }
        if position != declared {
            self.problem(Problem::CountMismatch { what: "entries", declared, found: position });
        }
        self.report.entries = position;
        self.report.verified_size = verified_size;
    }

    /// Classifies checkpoints the entries did not match: forks, truncations, altered ranges.
    fn classify(&mut self) {
        let entries = self.report.entries;
        let mut found = Vec::new();
        for c in &self.checkpoints {
            let status = match c.matched {
                Some(true) => CheckpointStatus::Matches,
                Some(false) => CheckpointStatus::RootMismatch,
                None => CheckpointStatus::BeyondEntries,
            };
            if let Some(r) = self.report.checkpoints.get_mut(c.slot) {
                r.status = status;
            }
            // Same size, different roots, both signed by the log: a fork whatever the entries say.
            let twin = self.checkpoints.iter().find(|d| d.size() == c.size() && d.root() != c.root());
            if let Some(d) = twin.filter(|d| d.source > c.source) {
                found.push(Problem::Fork {
                    checkpoint: d.source,
                    size: d.size(),
                    other: c.source,
                    other_size: c.size(),
                    first_suspect: c.first_suspect.min(d.first_suspect),
                });
            }
            match c.matched {
                None => found.push(Problem::Truncated { checkpoint: c.source, size: c.size(), entries }),
                Some(false) if !c.explained && twin.is_none() => {
                    // A later (or equal-size) checkpoint the entries match proves what the log signed at this
                    // size: this one contradicts it.
                    let witness =
                        self.checkpoints.iter().find(|d| d.matched == Some(true) && d.size() >= c.size());
                    found.push(match witness {
                        Some(d) => Problem::Fork {
                            checkpoint: c.source,
                            size: c.size(),
                            other: d.source,
                            other_size: d.size(),
                            first_suspect: c.first_suspect,
                        },
                        None => Problem::RootMismatch {
                            checkpoint: c.source,
                            size: c.size(),
                            first_suspect: c.first_suspect,
                        },
                    });
                }
                _ => {}
            }
        }
        for p in found {
            self.problem(p);
        }
    }

    fn finish(mut self) -> Report {
        self.classify();
        // Export-wide problems first, then by first implicated entry; the sort is stable, so ties keep
        // the order in which they were found.
        self.report.problems.sort_by_key(|p| p.first_seq().map_or(0, |s| s + 1));
        self.report
    }
}
