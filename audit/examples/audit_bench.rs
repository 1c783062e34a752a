//! Measures the audit log library: appends per second with a tree head signed every second, export
//! encoding, offline verification of the export, and proof generation, for both suites.
//!
//! ```text
//! cargo run --release -p hearth-audit --example audit_bench -- [ENTRIES] [--json]
//! ```
//!
//! ENTRIES defaults to 1,000,000. Library numbers only: the service adds its own storage writes. Times
//! are wall-clock seconds; each `cpu s` column is the CPU seconds this process used over the
//! span of the column before it.

use std::time::{Duration, Instant};

use hearth_audit::{
    inclusion_proof, verify_export, Action, AuditLog, Event, ExportBundle, Outcome, SignatureType,
    SignedCheckpoint, SoftwareSigner, TreeHeadSigner, Trust, VerifierKey,
};
use hearth_crypto::SuiteId;

const ORIGIN: &str = "bench.hearth.example/audit";

/// CPU seconds (user + system) this process has used, from /proc/self/stat (Linux; 0 elsewhere). The
/// machine is shared, so wall time alone overstates the cost when others are busy.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name; ticks of 1/100 s.
    match (f.get(10), f.get(11)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => 0.0,
    }
}

struct Row {
    suite: SuiteId,
    entries: u64,
    checkpoints: usize,
    appends_per_s: f64,
    append_cpu_s: f64,
    export_bytes: usize,
    encode_s: f64,
    verify_s: f64,
    verify_cpu_s: f64,
    proof_s: f64,
}

fn event(i: u64) -> Event {
    Event::new(format!("urn:hearth:participant:bank-{}", i % 7), Action::UpdateUpload, Outcome::Ok)
        .tenant(format!("tenant-{}", i % 7))
        .detail(format!("job 12 round {} accepted: 4096 parameters", i / 100))
        .object("job-12")
        .object(format!("round-{}", i / 100))
}

fn run(suite: SuiteId, n: u64) -> Result<Row, Box<dyn std::error::Error>> {
    let key = SoftwareSigner::generate(ORIGIN, suite)?;
    let mut log = AuditLog::new(suite, ORIGIN)?;
    let mut entries = Vec::with_capacity(n as usize);
    let mut checkpoints: Vec<SignedCheckpoint> = Vec::new();

    // Appends, signing a tree head every second as a service would (and once at the end).
    let start = Instant::now();
    let cpu0 = cpu_s();
    let mut last_sign = start;
    for i in 0..n {
        let a = log.append(event(i), 1_700_000_000_000 + i)?;
        entries.push((a.entry, a.leaf_hash));
        if i % 1024 == 0 && last_sign.elapsed() >= Duration::from_secs(1) {
            checkpoints.push(log.sign_checkpoint(&key)?);
            last_sign = Instant::now();
        }
    }
    checkpoints.push(log.sign_checkpoint(&key)?);
    let append_s = start.elapsed().as_secs_f64();
    let append_cpu_s = cpu_s() - cpu0;

    // Proof generation reads every leaf hash (see proof.rs): the cost of one proof at full size.
    let leaves: Vec<_> = entries.iter().map(|(_, h)| *h).collect();
    let t = Instant::now();
    let proof = inclusion_proof(suite, &leaves, n / 3, n)?;
    let proof_s = t.elapsed().as_secs_f64();
    assert!(!proof.is_empty() || n == 1);

    let trust =
        Trust { log_keys: vec![VerifierKey::of(&key, SignatureType::Log(key.suite()))?], witnesses: vec![] };
    let bundle =
        ExportBundle { suite, origin: ORIGIN.into(), keys: trust.log_keys.clone(), checkpoints, entries };
    let t = Instant::now();
    let bytes = bundle.encode();
    let encode_s = t.elapsed().as_secs_f64();
    let checkpoints = bundle.checkpoints.len();
    drop(bundle);

    let t = Instant::now();
    let cpu0 = cpu_s();
    let report = verify_export(&bytes, &trust);
    let verify_s = t.elapsed().as_secs_f64();
    let verify_cpu_s = cpu_s() - cpu0;
    if !report.is_ok() || report.verified_size != n {
        return Err(format!("verification failed:\n{report}").into());
    }
    Ok(Row {
        suite,
        entries: n,
        checkpoints,
        appends_per_s: n as f64 / append_s,
        append_cpu_s,
        export_bytes: bytes.len(),
        encode_s,
        verify_s,
        verify_cpu_s,
        proof_s,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let n: u64 = match args.iter().find(|a| !a.starts_with("--")) {
        Some(s) => s.parse()?,
        None => 1_000_000,
    };
    let rows = [run(SuiteId::International, n)?, run(SuiteId::National, n)?];
    if json {
        for r in &rows {
            println!(
                "{{\"suite\":\"{}\",\"appends_per_s\":{:.0},\"append_cpu_s\":{:.3},\"verify_entries\":{},\"verify_s\":{:.3},\"verify_cpu_s\":{:.3},\"checkpoints\":{},\"export_bytes\":{},\"encode_s\":{:.3},\"proof_s\":{:.3}}}",
                r.suite,
                r.appends_per_s,
                r.append_cpu_s,
                r.entries,
                r.verify_s,
                r.verify_cpu_s,
                r.checkpoints,
                r.export_bytes,
                r.encode_s,
                r.proof_s
            );
        }
        return Ok(());
    }
    println!(
        "{:<14} {:>9} {:>10} {:>9} {:>6} {:>9} {:>8} {:>8} {:>10} {:>7}",
        "suite",
        "entries",
        "appends/s",
        "cpu s",
        "heads",
        "export MB",
        "encode s",
        "verify s",
        "cpu s",
        "proof s"
    );
    for r in &rows {
        println!(
            "{:<14} {:>9} {:>10.0} {:>9.2} {:>6} {:>9.1} {:>8.3} {:>8.3} {:>10.2} {:>7.3}",
            r.suite.as_str(),
            r.entries,
            r.appends_per_s,
            r.append_cpu_s,
            r.checkpoints,
            r.export_bytes as f64 / 1e6,
            r.encode_s,
            r.verify_s,
            r.verify_cpu_s,
            r.proof_s
        );
    }
    Ok(())
}
