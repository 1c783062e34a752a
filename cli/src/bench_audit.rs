//! `hearth bench audit`: the audit log as a node runs it, and the auditor's verification.
//!
//! - **appends/s**: events appended through the node's durable log (`hearth_node::audit::AuditLog`: one
//!   `write` per entry, fsync every 100 ms, a checkpoint signed by the keystore's audit key every second
//!   by the background thread) for `--seconds`, one appending thread, ending with a final checkpoint.
//! - **verify**: an export of `--verify-entries` entries (built in memory with a checkpoint every
//!   10,000 entries, written to a file), then the time `hearth audit verify` takes on it: reading the
//!   file and checking every entry and checkpoint.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_audit::{
    verify_export, Action, AuditLog as LogState, Event, ExportBundle, Outcome, SignatureType, SoftwareSigner,
    Trust, VerifierKey,
};
use hearth_crypto::SuiteId;
use hearth_node::audit::AuditLog;
use hearth_node::config::KeystoreConfig;
use hearth_node::keys::{Create, NodeKeys, COORDINATOR_KEYS};
use serde::Serialize;

/// Arguments of `hearth bench audit`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth bench audit\n  hearth bench audit --json\n  hearth bench audit --suite national --seconds 10 --verify-entries 200000\n\nappends_per_s: entries/s through the node's durable log with a checkpoint signed every second.\nverify_s: seconds to read and verify an export of verify_entries entries."
)]
pub struct AuditBenchArgs {
    /// Seconds to append for.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Entries in the export whose verification is timed.
    #[arg(long, default_value_t = 1_000_000)]
    pub verify_entries: u64,
    /// The suite: international or national.
    #[arg(long, default_value = "international")]
    pub suite: SuiteId,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The measurements.
#[derive(Debug, Serialize)]
pub struct AuditBench {
    pub suite: SuiteId,
    pub appends: u64,
    pub append_s: f64,
    pub appends_per_s: f64,
    pub checkpoints_signed: usize,
    pub verify_entries: u64,
    pub export_bytes: u64,
    pub verify_s: f64,
}

fn event(i: u64) -> Event {
    Event::new(format!("participant:bank-{}", i % 7), Action::UpdateUpload, Outcome::Ok)
        .tenant(format!("bank-{}", i % 7))
        .detail(format!("job 12 round {} accepted: 4096 parameters", i / 100))
        .object("job-12")
        .object(format!("round-{}", i / 100))
}

fn appends(dir: &Path, suite: SuiteId, seconds: u64) -> anyhow::Result<(u64, f64, usize)> {
    let pass = dir.join("passphrase");
    hearth_node::files::write_atomic(&pass, b"bench passphrase", true)?;
    let cfg = KeystoreConfig {
        passphrase_file: Some(pass),
        argon2_memory_kib: 19 * 1024,
        argon2_iterations: 2,
        ..Default::default()
    };
    let (keys, _) = NodeKeys::open(&cfg, suite, dir, COORDINATOR_KEYS, Create::IfMissing, None)?;
    let (log, _) = AuditLog::open(dir, &keys, "hearth/bench/audit")?;
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < until {
        for _ in 0..256 {
            if log.record_event(event(n)).is_none() {
                bail!("append {n} failed; see the log");
            }
            n += 1;
        }
    }
    log.checkpoint_now()?;
    let elapsed = start.elapsed().as_secs_f64();
    let checkpoints = hearth_node::audit::files::read_checkpoints(log.paths())?.len();
    Ok((n, elapsed, checkpoints))
}

fn verify(dir: &Path, suite: SuiteId, n: u64) -> anyhow::Result<(u64, f64)> {
    let key = SoftwareSigner::generate("hearth/bench/export", suite)?;
    let mut log = LogState::new(suite, "hearth/bench/export")?;
    let mut entries = Vec::with_capacity(n as usize);
    let mut checkpoints = Vec::new();
    for i in 0..n {
        let a = log.append(event(i), 1_700_000_000_000 + i)?;
        entries.push((a.entry, a.leaf_hash));
        if (i + 1) % 10_000 == 0 || i + 1 == n {
            checkpoints.push(log.sign_checkpoint(&key)?);
        }
    }
    let trust =
        Trust { log_keys: vec![VerifierKey::of(&key, SignatureType::Log(suite))?], witnesses: vec![] };
    let bundle = ExportBundle {
        suite,
        origin: "hearth/bench/export".into(),
        keys: trust.log_keys.clone(),
        checkpoints,
        entries,
    };
    let path = dir.join("export.jsonl");
    std::fs::write(&path, bundle.encode())?;
    drop(bundle);
    let start = Instant::now();
    let bytes = std::fs::read(&path)?;
    let report = verify_export(&bytes, &trust);
    let verify_s = start.elapsed().as_secs_f64();
    if !report.is_ok() || report.verified_size != n {
        bail!("the benchmark export did not verify:\n{report}");
    }
    Ok((bytes.len() as u64, verify_s))
}

pub async fn run(a: AuditBenchArgs) -> anyhow::Result<()> {
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<AuditBench> {
        let dir = tempfile::Builder::new().prefix("hearth-bench-audit-").tempdir()?;
        let (appends, append_s, checkpoints_signed) =
            appends(dir.path(), a.suite, a.seconds).context("measuring appends")?;
        let (export_bytes, verify_s) =
            verify(dir.path(), a.suite, a.verify_entries).context("measuring verification")?;
        Ok(AuditBench {
            suite: a.suite,
            appends,
            append_s,
            appends_per_s: appends as f64 / append_s,
            checkpoints_signed,
            verify_entries: a.verify_entries,
            export_bytes,
            verify_s,
        })
    })
    .await??;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{:<13} {:>9} {:>9} {:>14} {:>12} {:>14} {:>13} {:>9}",
            "suite",
            "appends",
            "append_s",
            "appends_per_s",
            "checkpoints",
            "verify_entries",
            "export_MiB",
            "verify_s"
        );
        println!(
            "{:<13} {:>9} {:>9.2} {:>14.0} {:>12} {:>14} {:>13.1} {:>9.2}",
            r.suite.as_str(),
            r.appends,
            r.append_s,
            r.appends_per_s,
            r.checkpoints_signed,
            r.verify_entries,
            r.export_bytes as f64 / (1024.0 * 1024.0),
            r.verify_s
        );
    }
    Ok(())
}
