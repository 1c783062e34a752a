//! `hearth audit verify`: the auditor's offline check of an export, with checkpoints collected from
//! other readers (witnesses, participants, earlier exports). Exit status 0 only when nothing is wrong;
//! otherwise 1, and the report names the first bad entry.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hearth_audit::export::ExportHeader;
use hearth_audit::{verify_export_with, Report, Trust};
use serde::Serialize;

use super::read_vkeys;

/// Arguments of `hearth audit verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth audit verify coordinator-audit.jsonl --trusted-key 'hearth/coordinator/coordinator+1a2b3c4d+/2hlYX...'\n  hearth audit verify export.jsonl --trusted-key @coordinator.vkeys --checkpoint head-from-bank-a.txt \\\n      --checkpoint head-from-witness.txt --witness-key @witnesses.vkeys\n  hearth audit verify export.jsonl --trusted-key @coordinator.vkeys --json | jq .first_bad_entry\n\nChecks every entry (its hash, sequence number and time), every checkpoint's signature, that the\nentries reproduce every checkpoint's root, and that all checkpoints (the export's and those given\nwith --checkpoint) describe one history: a log that showed different histories to different readers\nis reported as a fork. Exits 0 when everything verifies, 1 otherwise, naming the first bad entry.\nWithout --trusted-key it refuses (exit 1) unless --trust-on-first-use asks it to trust the export's\nown keys, which only proves internal consistency. `hearth keys vkeys` prints a node's keys."
)]
pub struct VerifyArgs {
    /// The export file (from `hearth audit export`).
    #[arg(value_name = "EXPORT")]
    pub export: PathBuf,
    /// A signed checkpoint obtained elsewhere, as a signed-note text file; repeatable.
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
    /// A log key you trust (a vkey, or @FILE with one per line); repeatable.
    #[arg(long = "trusted-key", value_name = "VKEY")]
    pub trusted_keys: Vec<String>,
    /// A witness whose cosignatures to report (a vkey, or @FILE); repeatable.
    #[arg(long = "witness-key", value_name = "VKEY")]
    pub witness_keys: Vec<String>,
    /// Accept entries after the newest matching checkpoint (by default they fail the check: nothing
    /// signed vouches for them, so they cannot be told from forged ones).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Without --trusted-key, trust the keys the export itself names. That proves only that the export is
    /// internally consistent (a forger who re-signs a whole log passes), so it must be asked for.
    #[arg(long)]
    pub trust_on_first_use: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// List every checkpoint and every problem (by default: a summary, checkpoints counted by status).
    #[arg(long)]
    pub detail: bool,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    ok: bool,
    first_bad_entry: Option<u64>,
    first_problem: Option<String>,
    trusted_keys_from_export: bool,
    unverified_entries: u64,
    report: &'a Report,
}

pub fn run(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&a.export).with_context(|| format!("reading {}", a.export.display()))?;
    let mut log_keys = read_vkeys(&a.trusted_keys, "trusted key")?;
    let from_export = log_keys.is_empty();
    if from_export && !a.trust_on_first_use {
        eprintln!(
            "error: no --trusted-key given. A log re-signed by a forger verifies against the keys it names \
             itself, so the export's own keys prove nothing. Pass the log's verifier keys (`hearth keys vkeys \
             --state-dir DIR` on the node, or from its operator), or --trust-on-first-use to check only that \
             the export is internally consistent."
        );
        return Ok(ExitCode::from(1));
    }
    if from_export {
        // Trust on first use: the header's own keys. Say so loudly.
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        if let Ok(h) = ExportHeader::parse_line(first) {
            log_keys = h.keys;
        }
        if !a.json {
            eprintln!(
                "warning: no --trusted-key given; trusting the keys the export names, which proves only that \
                 the export is internally consistent. Obtain the log's vkeys independently."
            );
        }
    }
    let trust = Trust { log_keys, witnesses: read_vkeys(&a.witness_keys, "witness key")? };
    let mut extra = Vec::new();
    for f in &a.checkpoints {
        extra
            .push(std::fs::read_to_string(f).with_context(|| format!("reading checkpoint {}", f.display()))?);
    }
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let report = verify_export_with(&bytes, &trust, &extra_refs);
    let unsigned = report.unverified_entries();
    let unsigned_fails = report.is_ok() && unsigned > 0 && !a.allow_unsigned;
    let unsigned_problem = format!(
        "entries {}..{}: not covered by any checkpoint signed by a trusted log key (pass --allow-unsigned to accept)",
        report.verified_size, report.entries
    );
    let ok = report.is_ok() && !unsigned_fails;
    let first_bad_entry = if unsigned_fails { Some(report.verified_size) } else { report.first_bad_entry() };
    if a.json {
        let j = JsonReport {
            ok,
            first_bad_entry,
            first_problem: if unsigned_fails {
                Some(unsigned_problem)
            } else {
                report.first_problem().map(ToString::to_string)
            },
            trusted_keys_from_export: from_export,
            unverified_entries: unsigned,
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        for (i, f) in a.checkpoints.iter().enumerate() {
            println!("supplied checkpoint #{i}: {}", f.display());
        }
        let text = if a.detail { report.to_string() } else { report.summary() };
        if unsigned_fails {
            print!("{}", text.replacen("OK:", "FAILED:", 1));
            println!("first bad entry: {}\n  {unsigned_problem}", report.verified_size);
        } else {
            print!("{text}");
            if unsigned > 0 {
                println!("note: {unsigned} entries after the newest matching checkpoint are not covered by a signature");
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
