//! The durable log against real files: appends, checkpoints, restart, refusal of altered files, export.

use hearth_audit::{verify_export, Action, Outcome, SignatureType, Trust};

use super::export::{export, ExportOptions};
use super::*;
use crate::config::KeystoreConfig;
use crate::keys::{Create, NodeKeys, COORDINATOR_KEYS};

fn keys(dir: &Path, suite: SuiteId) -> NodeKeys {
    let f = dir.join("pass");
    std::fs::write(&f, "audit test passphrase").unwrap();
    let cfg = KeystoreConfig {
        passphrase_file: Some(f),
        argon2_memory_kib: 19 * 1024,
        argon2_iterations: 2,
        ..Default::default()
    };
    NodeKeys::open(&cfg, suite, dir, COORDINATOR_KEYS, Create::IfMissing, None).unwrap().0
}

fn trust(log: &AuditLog) -> Trust {
    Trust { log_keys: vec![log.verifier_key().unwrap()], witnesses: vec![] }
}

fn exported(dir: &Path, opts: ExportOptions) -> Vec<u8> {
    let mut out = Vec::new();
    export(dir, &mut out, opts).unwrap();
    out
}

#[test]
fn appends_checkpoint_resume_and_export_verifies() {
    for suite in [SuiteId::International, SuiteId::National] {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path(), suite);
        let (log, rec) = AuditLog::open(dir.path(), &k, "hearth/coordinator/test").unwrap();
        assert_eq!(rec.replayed, 0);
        for i in 0..10 {
            log.record(
                "participant:bank-a",
                Action::UpdateUpload,
                Outcome::Refused,
                &format!("round {i}\nwith a newline"),
            );
        }
        log.record("system", Action::JobEnd, Outcome::Ok, "finished: job-1");
        let cp = log.checkpoint_now().unwrap().unwrap();
        assert_eq!(cp.checkpoint().size(), 11);
        assert!(log.checkpoint_now().unwrap().is_none(), "nothing new, nothing signed");
        log.record("system", Action::NodeStop, Outcome::Ok, "");
        let t = trust(&log);
        drop(log);

        // Dropping the last handle signed a final checkpoint; reopening replays nothing past it.
        let (log, rec) = AuditLog::open(dir.path(), &k, "ignored/for/existing").unwrap();
        assert_eq!((log.size(), log.origin()), (12, "hearth/coordinator/test"));
        assert_eq!(rec.discarded_bytes, 0);
        log.record("system", Action::NodeStart, Outcome::Ok, "");
        log.checkpoint_now().unwrap();

        let bytes = exported(dir.path(), ExportOptions::default());
        let report = verify_export(&bytes, &t);
        assert!(report.is_ok(), "{report}");
        assert_eq!((report.entries, report.verified_size), (13, 13));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"tenant\":\"bank-a\""), "participant actors carry their tenant");
        assert!(text.contains("round 0\u{FFFD}with a newline"), "control characters replaced");
        assert!(text.contains("finished: job-1"));
    }
}

#[test]
fn queries_and_budget_changes_carry_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), SuiteId::International);
    let (log, _) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
    log.record_query("operator:ops", "bank-a", "q-17", Outcome::Ok, "histogram of 12 bins, epsilon 0.1")
        .unwrap();
    log.record_budget(
        "system",
        "bank-a",
        Action::BudgetCharge,
        "bank-a/intent",
        Outcome::Ok,
        "epsilon 0.1 of 1.0",
    )
    .unwrap();
    log.checkpoint_now().unwrap();
    let text = String::from_utf8(exported(dir.path(), ExportOptions::default())).unwrap();
    assert!(text.contains(r#""action":"query.run","actor":"operator:ops","detail":"histogram of 12 bins, epsilon 0.1","objects":["q-17"],"outcome":"ok""#));
    assert!(
        text.contains(r#""action":"budget.charge""#) && text.matches(r#""tenant":"bank-a""#).count() == 2
    );
}

#[test]
fn background_thread_checkpoints_within_a_second_or_two() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), SuiteId::International);
    let (log, _) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
    log.record("system", Action::NodeStart, Outcome::Ok, "");
    let deadline = Instant::now() + Duration::from_secs(5);
    while files::last_checkpoint(log.paths()).unwrap().is_none() {
        assert!(Instant::now() < deadline, "no checkpoint within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn altered_truncated_or_half_written_files_are_caught_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), SuiteId::International);
    let (log, _) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
    for i in 0..5 {
        log.record("system", Action::NodeStart, Outcome::Ok, &format!("e{i}"));
    }
    let paths = log.paths().clone();
    drop(log);
    let original = std::fs::read(&paths.entries).unwrap();

    // A crash mid-write leaves half a line: it is cut, and the log opens.
    let mut half = original.clone();
    half.extend_from_slice(b"{\"entry\":{\"act");
    std::fs::write(&paths.entries, &half).unwrap();
    let (log, rec) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
    assert_eq!((rec.discarded_bytes, log.size()), (14, 5));
    drop(log);
    assert_eq!(std::fs::read(&paths.entries).unwrap(), original);

    // An edited entry before the saved tree state is not re-read at open (that would make every start
    // O(log size)); the export's verification names it, and so does a full replay.
    let edited =
        String::from_utf8(original.clone()).unwrap().replacen("\"detail\":\"e2\"", "\"detail\":\"e9\"", 1);
    std::fs::write(&paths.entries, edited).unwrap();
    let (log, _) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
    let t = trust(&log);
    drop(log);
    let report = verify_export(&exported(dir.path(), ExportOptions::default()), &t);
    assert_eq!(report.first_bad_entry(), Some(2), "{report}");
    std::fs::write(
        &paths.entries,
        String::from_utf8(original.clone()).unwrap().replacen("\"detail\":\"e2\"", "\"detail\":\"e9\"", 1),
    )
    .unwrap();
    std::fs::remove_file(&paths.tree).unwrap();
    let e = AuditLog::open(dir.path(), &k, "hearth/t").unwrap_err().to_string();
    assert!(e.contains("entry 2"), "{e}");

    // A truncated log (the last two entries gone) contradicts the signed checkpoint.
    let lines: Vec<&[u8]> = original.split_inclusive(|b| *b == b'\n').collect();
    std::fs::write(&paths.entries, lines[..3].concat()).unwrap();
    let e = AuditLog::open(dir.path(), &k, "hearth/t").unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("3..5"), "{e}");
}

#[test]
fn export_leaves_out_the_unsigned_tail_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), SuiteId::National);
    let (log, _) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
    log.record("system", Action::NodeStart, Outcome::Ok, "");
    log.checkpoint_now().unwrap();
    log.record("system", Action::NodeStop, Outcome::Ok, "");
    let t = trust(&log);
    let signed = verify_export(&exported(dir.path(), ExportOptions::default()), &t);
    assert_eq!((signed.entries, signed.verified_size), (1, 1));
    let all = verify_export(
        &exported(dir.path(), ExportOptions { include_unsigned: true, ..Default::default() }),
        &t,
    );
    assert_eq!((all.entries, all.verified_size, all.is_ok()), (2, 1, true));
    // The export names the log's key; a different key is not trusted.
    let other = tempfile::tempdir().unwrap();
    let k2 = keys(other.path(), SuiteId::National);
    let stranger = k2.signer(AUDIT_KEY, "hearth/t").unwrap();
    let wrong = Trust {
        log_keys: vec![stranger.verifier_key(SignatureType::Log(SuiteId::National)).unwrap()],
        witnesses: vec![],
    };
    assert!(!verify_export(&exported(dir.path(), ExportOptions::default()), &wrong).is_ok());
}

#[test]
fn rotating_the_audit_key_keeps_old_checkpoints_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), SuiteId::International);
    let (log, _) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
    log.record("system", Action::NodeStart, Outcome::Ok, "");
    log.checkpoint_now().unwrap();
    drop(log);
    let e = k.rotate(AUDIT_KEY).unwrap();
    let (log, _) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
    log.record_key_event("system", &e);
    log.checkpoint_now().unwrap();
    let keys = read_keys(log.paths()).unwrap();
    assert_eq!(keys.len(), 2, "both versions published");
    let report = verify_export(
        &exported(dir.path(), ExportOptions::default()),
        &Trust { log_keys: keys, witnesses: vec![] },
    );
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.verified_size, 2);
}

mod hostile {
    //! The files under `audit/` are the node's own, but an attacker with disk access (or a crash) can
    //! leave anything there: opening must refuse or repair, never panic.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn damaged_audit_files_never_panic_the_opener(
            which in 0..4usize,
            pos in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
            cut in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let k = keys(dir.path(), SuiteId::International);
            let (log, _) = AuditLog::open(dir.path(), &k, "hearth/t").unwrap();
            for i in 0..6 {
                log.record("system", Action::NodeStart, Outcome::Ok, &format!("e{i}"));
            }
            log.checkpoint_now().unwrap();
            let p = log.paths().clone();
            drop(log);
            let file = [&p.entries, &p.checkpoints, &p.tree, &p.keys][which];
            let mut bytes = std::fs::read(file).unwrap();
            let at = pos.index(bytes.len().max(1)).min(bytes.len());
            if cut {
                bytes.truncate(at);
            }
            bytes.splice(at..at, garbage);
            std::fs::write(file, &bytes).unwrap();
            let _ = AuditLog::open(dir.path(), &k, "hearth/t");
            let mut out = Vec::new();
            let _ = export(dir.path(), &mut out, ExportOptions::default());
        }
    }
}
