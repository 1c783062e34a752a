//! Tampering tests for the offline verifier: each attack on an export is caught and the first bad thing
//! is named, in both suites.

use proptest::prelude::*;

use super::checkpoint::{SignedCheckpoint, Trust};
use super::entry::{Entry, Event, Outcome};
use super::export::ExportBundle;
use super::keys::{SignatureType, SoftwareSigner, VerifierKey};
use super::log::AuditLog;
use super::merkle::leaf_hash;
use super::report::{CheckpointSource, CheckpointStatus, Problem, Report};
use super::verify::{verify_export, verify_export_with};
use hearth_crypto::{SecretBytes, SuiteId};

const ORIGIN: &str = "hearth.example/coordinator-audit";
const WITNESS: &str = "bank-a.example/witness";
const SUITES: [SuiteId; 2] = [SuiteId::International, SuiteId::National];

struct Fixture {
    suite: SuiteId,
    key: SoftwareSigner,
    witness: SoftwareSigner,
    trust: Trust,
}

impl Fixture {
    fn new(suite: SuiteId) -> Self {
        Self::with_key(suite, 3)
    }

    fn with_key(suite: SuiteId, seed: u8) -> Self {
        let key = SoftwareSigner::new(ORIGIN, suite, SecretBytes::new([seed; 32])).unwrap();
        let witness = SoftwareSigner::new(WITNESS, suite, SecretBytes::new([4; 32])).unwrap();
        let trust = Trust {
            log_keys: vec![VerifierKey::of(&key, SignatureType::Log(suite)).unwrap()],
            witnesses: vec![VerifierKey::of(&witness, SignatureType::Cosignature(suite)).unwrap()],
        };
        Self { suite, key, witness, trust }
    }

    /// Entry `i`; logs made with different salts share their first four entries, then diverge.
    fn event(i: u64, salt: &str) -> Event {
        let actor = format!("urn:hearth:participant:p{}", i % 3);
        let detail = if i < 4 { format!("round {i}") } else { format!("round {i}{salt}") };
        Event::new(actor, crate::Action::UpdateUpload, Outcome::Ok)
            .tenant(format!("t{}", i % 2))
            .detail(detail)
    }

    /// A log of `n` entries with a checkpoint after each size in `at`, the last one cosigned.
    fn export(&self, n: u64, at: &[u64], salt: &str) -> (ExportBundle, Vec<SignedCheckpoint>) {
        let mut log = AuditLog::new(self.suite, ORIGIN).unwrap();
        let mut entries = Vec::new();
        let mut checkpoints = Vec::new();
        for i in 0..n {
            let a = log.append(Self::event(i, salt), 1_000 + 10 * i).unwrap();
            entries.push((a.entry, a.leaf_hash));
            if at.contains(&(i + 1)) {
                checkpoints.push(log.sign_checkpoint(&self.key).unwrap());
            }
        }
        if let Some(last) = checkpoints.last_mut() {
            last.cosign(&self.witness, 1_700_000_000).unwrap();
        }
        let keys = self.trust.log_keys.clone();
        let b = ExportBundle {
            suite: self.suite,
            origin: ORIGIN.into(),
            keys,
            checkpoints: checkpoints.clone(),
            entries,
        };
        (b, checkpoints)
    }

    fn verify(&self, b: &ExportBundle) -> Report {
        verify_export(&b.encode(), &self.trust)
    }
}

fn event_of(e: &Entry) -> Event {
    Event {
        actor: e.actor().into(),
        tenant: e.tenant().map(Into::into),
        action: e.action().into(),
        outcome: e.outcome(),
        detail: e.detail().into(),
        objects: e.objects().to_vec(),
    }
}

fn first(r: &Report) -> &Problem {
    r.first_problem().unwrap_or_else(|| panic!("no problem found:\n{r}"))
}

#[test]
fn an_honest_export_verifies_and_reports_witnesses() {
    for suite in SUITES {
        let f = Fixture::new(suite);
        let (b, _) = f.export(20, &[8, 16, 19], "");
        let r = f.verify(&b);
        assert!(r.is_ok(), "{suite}: {r}");
        assert_eq!((r.entries, r.verified_size, r.unverified_entries()), (20, 19, 1));
        assert!(r.checkpoints.iter().all(|c| c.status == CheckpointStatus::Matches));
        let last = r.checkpoints.last().unwrap();
        assert_eq!(last.cosignatures.len(), 1);
        assert_eq!(last.cosignatures[0].witness, WITNESS);
        assert!(r.to_string().starts_with("OK: audit log hearth.example/coordinator-audit, 20 entries"));
    }
}

#[test]
fn an_altered_entry_is_named_exactly_when_recorded_leaves_survive() {
    for suite in SUITES {
        let f = Fixture::new(suite);
        let (mut b, _) = f.export(20, &[10, 20], "");
        let e = &b.entries[13].0;
        b.entries[13].0 = Entry::new(13, e.time_ms(), event_of(e).detail("nothing happened")).unwrap();
        let r = f.verify(&b);
        assert_eq!(
            first(&r),
            &Problem::EntryAltered { seq: 13, checkpoint: CheckpointSource::Export(1) },
            "{suite}"
        );
        assert_eq!(r.first_bad_entry(), Some(13));
        assert_eq!(r.verified_size, 10, "entries before the altered range still verify");
    }
}

#[test]
fn an_altered_entry_stays_the_only_problem_across_later_heads() {
    // Heads after the first one covering the altered entry are explained by it too: no vaguer range
    // ("entries 10..25 were altered") may come first.
    for suite in SUITES {
        let f = Fixture::new(suite);
        let (mut b, _) = f.export(25, &[10, 15, 20, 25], "");
        let e = &b.entries[13].0;
        b.entries[13].0 = Entry::new(13, e.time_ms(), event_of(e).detail("nothing happened")).unwrap();
        let r = f.verify(&b);
        assert_eq!(r.problems.len(), 1, "{suite}: {r}");
        assert_eq!(first(&r), &Problem::EntryAltered { seq: 13, checkpoint: CheckpointSource::Export(1) });
        assert_eq!(r.first_bad_entry(), Some(13));
    }
}

#[test]
fn an_altered_entry_with_rewritten_leaf_is_named_by_range() {
    for suite in SUITES {
        let f = Fixture::new(suite);
        let (mut b, _) = f.export(20, &[10, 20], "");
        let e = &b.entries[13].0;
        let altered = Entry::new(13, e.time_ms(), event_of(e).detail("nothing happened")).unwrap();
        b.entries[13] = (altered.clone(), leaf_hash(suite, &altered.canonical()));
        let r = f.verify(&b);
        let want =
            Problem::RootMismatch { checkpoint: CheckpointSource::Export(1), size: 20, first_suspect: 10 };
        assert_eq!(first(&r), &want, "{suite}");
        assert!(first(&r).to_string().starts_with("entries 10..20: some entry was altered"));
        // With a checkpoint after every entry the range is a single entry.
        let every: Vec<u64> = (1..=20).collect();
        let (mut b, _) = f.export(20, &every, "");
        b.entries[13] = (altered.clone(), leaf_hash(suite, &altered.canonical()));
        assert_eq!(f.verify(&b).first_bad_entry(), Some(13));
    }
}

#[test]
fn removed_reordered_and_inserted_entries_are_named() {
    for suite in SUITES {
        let f = Fixture::new(suite);
        let (honest, _) = f.export(12, &[12], "");

        let mut removed = honest.clone();
        removed.entries.remove(5);
        let r = f.verify(&removed);
        assert_eq!(first(&r), &Problem::SequenceMismatch { position: 5, found: 6 }, "{suite}: {r}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["problems"][0],
            serde_json::json!({"problem": "sequence_mismatch", "position": 5, "found": 6})
        );

        let mut reordered = honest.clone();
        reordered.entries.swap(7, 8);
        let r = f.verify(&reordered);
        assert_eq!(first(&r), &Problem::SequenceMismatch { position: 7, found: 8 }, "{suite}: {r}");
        assert!(r.problems.contains(&Problem::TimeWentBackwards {
            position: 8,
            previous_ms: 1_080,
            time_ms: 1_070
        }));

        // An entry inserted at 4 with the following ones renumbered and rehashed: only the root catches it.
        let mut inserted = honest.clone();
        let mut rest: Vec<_> = inserted.entries.split_off(4);
        let fake =
            Entry::new(4, rest[0].0.time_ms(), Event::new("system", crate::Action::KeyRotated, Outcome::Ok))
                .unwrap();
        inserted.entries.push((fake.clone(), leaf_hash(suite, &fake.canonical())));
        for (e, _) in rest.drain(..) {
            let moved = Entry::new(e.seq() + 1, e.time_ms(), event_of(&e)).unwrap();
            let h = leaf_hash(suite, &moved.canonical());
            inserted.entries.push((moved, h));
        }
        let r = f.verify(&inserted);
        let want =
            Problem::RootMismatch { checkpoint: CheckpointSource::Export(0), size: 12, first_suspect: 0 };
        assert_eq!(r.problems, vec![want], "{suite}: {r}");
    }
}

#[test]
fn a_truncated_log_is_caught_against_a_later_checkpoint() {
    for suite in SUITES {
        let f = Fixture::new(suite);
        let (full, cps) = f.export(10, &[6, 10], "");
        let mut truncated = full.clone();
        truncated.entries.truncate(8);
        truncated.checkpoints.truncate(1);
        // The exporter hides the size-10 head, but an auditor got it from a participant or a witness.
        let later = cps[1].encode();
        let r = verify_export_with(&truncated.encode(), &f.trust, &[&later]);
        assert_eq!(
            first(&r),
            &Problem::Truncated { checkpoint: CheckpointSource::Extra(0), size: 10, entries: 8 },
            "{suite}: {r}"
        );
        assert_eq!(r.first_bad_entry(), Some(8));
        assert_eq!(r.verified_size, 6);
    }
}

#[test]
fn a_truncated_and_re_extended_log_is_a_fork() {
    for suite in SUITES {
        let f = Fixture::new(suite);
        // Reader A saw the original history up to 8.
        let (_, original_cps) = f.export(8, &[4, 8], "");
        // The operator, holding the key, rewrote everything after 4 and extended it to 12.
        let (rewritten, _) = f.export(12, &[4, 12], "x");
        let r = verify_export(&rewritten.encode(), &f.trust);
        assert!(r.is_ok(), "{suite}: on its own the rewritten log is consistent: {r}");
        let seen_by_a = original_cps[1].encode();
        let r = verify_export_with(&rewritten.encode(), &f.trust, &[&seen_by_a]);
        let want = Problem::Fork {
            checkpoint: CheckpointSource::Extra(0),
            size: 8,
            other: CheckpointSource::Export(1),
            other_size: 12,
            first_suspect: 4,
        };
        assert_eq!(first(&r), &want, "{suite}: {r}");
        assert!(first(&r).to_string().starts_with("fork: supplied checkpoint #0 (size 8)"));
    }
}

#[test]
fn two_readers_shown_different_heads_of_one_size_is_a_fork() {
    for suite in SUITES {
        let f = Fixture::new(suite);
        let (b, _) = f.export(9, &[9], "");
        let (_, other_view) = f.export(9, &[9], "other");
        let r = verify_export_with(&b.encode(), &f.trust, &[&other_view[0].encode()]);
        let want = Problem::Fork {
            checkpoint: CheckpointSource::Extra(0),
            size: 9,
            other: CheckpointSource::Export(0),
            other_size: 9,
            first_suspect: 0,
        };
        assert_eq!(r.problems, vec![want], "{suite}: one fork, reported once: {r}");
        // The same when the export carries the other view and the auditor brings the matching one.
        let mut swapped = b.clone();
        swapped.checkpoints = vec![other_view[0].clone()];
        let r = verify_export_with(&swapped.encode(), &f.trust, &[&b.checkpoints[0].encode()]);
        assert!(
            matches!(
                first(&r),
                Problem::Fork {
                    checkpoint: CheckpointSource::Export(0),
                    other: CheckpointSource::Extra(0),
                    ..
                }
            ),
            "{suite}: {r}"
        );
    }
}

#[test]
fn bad_signatures_and_unknown_keys_are_rejected() {
    for suite in SUITES {
        let f = Fixture::new(suite);
        let (b, cps) = f.export(6, &[6], "");

        // A checkpoint altered after signing (here: another root) fails the trusted key's signature.
        let text = cps[0].encode();
        let root_line = text.lines().nth(2).unwrap();
        let forged = text.replacen(root_line, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1);
        let mut tampered = b.clone();
        tampered.checkpoints = vec![SignedCheckpoint::parse(&forged).unwrap()];
        let r = f.verify(&tampered);
        assert!(
            matches!(first(&r), Problem::CheckpointRejected { reason, .. } if reason.contains("does not verify")),
            "{suite}: {r}"
        );
        assert!(r.problems.contains(&Problem::NoVerifiedCheckpoint));

        // A head signed by a key the auditor does not trust.
        let other = Fixture::with_key(suite, 11);
        let (foreign, _) = other.export(6, &[6], "");
        let r = verify_export(&foreign.encode(), &f.trust);
        assert!(matches!(first(&r), Problem::UntrustedKey { .. }), "{suite}: {r}");
        assert!(r.problems.iter().any(|p| matches!(p, Problem::CheckpointRejected { reason, .. } if reason.contains("no trusted log key"))));
        assert_eq!(r.verified_size, 0);
    }
}

#[test]
fn malformed_exports_and_checkpoints_of_other_logs_are_reported() {
    let f = Fixture::new(SuiteId::International);
    let (b, _) = f.export(4, &[4], "");
    let mut bytes = b.encode();
    let r = verify_export(&bytes[..bytes.len() - 1], &f.trust);
    assert!(matches!(first(&r), Problem::Malformed { line: 1, .. }));
    // An entry line replaced by garbage is named at its position.
    let text = String::from_utf8(bytes.clone()).unwrap();
    let third = text.lines().nth(1 + 1 + 2).unwrap().to_string();
    bytes = text.replacen(&third, "{\"entry\":42}", 1).into_bytes();
    let r = verify_export(&bytes, &f.trust);
    assert!(matches!(first(&r), Problem::EntryMalformed { position: 2, .. }), "{r}");
    // A valid checkpoint of another origin is refused.
    let other_log =
        SoftwareSigner::new("elsewhere.example/log", SuiteId::International, SecretBytes::new([3; 32]))
            .unwrap();
    let mut log = AuditLog::new(SuiteId::International, "elsewhere.example/log").unwrap();
    log.append(Event::new("system", crate::Action::NodeStart, Outcome::Ok), 1).unwrap();
    let foreign = log.sign_checkpoint(&other_log).unwrap().encode();
    let r = verify_export_with(&b.encode(), &f.trust, &[&foreign]);
    assert!(
        matches!(first(&r), Problem::CheckpointRejected { source: CheckpointSource::Extra(0), reason } if reason.contains("origin"))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_bit_flip_in_an_export_is_caught(pos in any::<prop::sample::Index>(), bit in 0..8u8, national in any::<bool>()) {
        let suite = if national { SuiteId::National } else { SuiteId::International };
        let f = Fixture::new(suite);
        let (b, _) = f.export(5, &[3, 5], "");
        let mut bytes = b.encode();
        let base = verify_export(&bytes, &f.trust);
        prop_assert!(base.is_ok());
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let r = verify_export(&bytes, &f.trust);
        // Caught, or (a flip in the witness's name, which the signed-note rules say to ignore) the
        // witness's cosignature is no longer reported.
        prop_assert!(!r.is_ok() || r.checkpoints != base.checkpoints, "flip at {} bit {} unnoticed", i, bit);
    }

    #[test]
    fn random_bytes_never_panic_the_verifier(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let f = Fixture::new(SuiteId::International);
        prop_assert!(!verify_export(&bytes, &f.trust).is_ok());
    }
}
