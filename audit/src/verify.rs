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

use hearth_crypto::SuiteId;

use super::checkpoint::{SignedCheckpoint, Trust, VerifiedCheckpoint};
use super::export::{lines, parse_checkpoint_line, parse_entry_line, ExportHeader};
use super::merkle::{leaf_hash, CompactTree, Hash};
use super::report::{
    CheckpointReport, CheckpointSource, CheckpointStatus, Problem, Report, MAX_REPORTED_PROBLEMS,
};

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
        // Whether an altered entry was named exactly since the last head the entries matched.
        let mut altered_named = false;
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
                    altered_named = false;
                    if let Some(seq) = pending_mismatch.take() {
                        self.problem(Problem::RecordedLeafWrong { seq });
                    }
                } else if exact_problem {
                    if let Some(c) = self.checkpoints.get_mut(next_cp - 1) {
                        c.explained = true;
                    }
                } else if recorded_matches {
                    if let Some(seq) = pending_mismatch.take() {
                        altered_named = true;
                        self.problem(Problem::EntryAltered { seq, checkpoint: source });
                    }
                    // The recorded leaves reproduce this head too, so the entry already named (here or at
                    // an earlier head) explains the mismatch: no vaguer range to report.
                    if altered_named {
                        if let Some(c) = self.checkpoints.get_mut(next_cp - 1) {
                            c.explained = true;
                        }
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
                // Name as the disagreeing head the one the entries do not match.
                let (bad, good) = if c.matched == Some(true) { (d, c) } else { (c, d) };
                found.push(Problem::Fork {
                    checkpoint: bad.source,
                    size: bad.size(),
                    other: good.source,
                    other_size: good.size(),
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
        self.report.problems.sort_by_key(|p| p.first_seq().map_or(0, |s| s.saturating_add(1)));
        self.report
    }
}
