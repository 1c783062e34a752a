//! `hearth audit`: what auditors and operators do with a node's signed audit log.
//!
//! - `export`: a node's log as one file for an auditor (no secret needed; works while the node runs).
//! - `checkpoint`: the newest signed tree head, to hand to a witness or keep for later comparison.
//! - `verify`: the offline verifier; exits non-zero and names the first bad entry.
//! - `query`: filter entries by time, actor, tenant, action, outcome.
//! - `report`: the compliance report (record of processing activities and operations summary), HTML
//!   and JSON.
//! - `cosign`: a witness checks that a log only grew and cosigns its newest checkpoint.
//!
//! Each subcommand lives in its own file; this one holds the argument types and dispatch.

mod cosign;
mod facts;
mod query;
mod report;
mod time;
mod verify;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_audit::{Entry, ExportBundle, Trust, VerifierKey};
use hearth_node::audit::export::{export, latest_checkpoint, ExportOptions};

pub use cosign::CosignArgs;
pub use query::QueryArgs;
pub use report::ReportArgs;
pub use verify::VerifyArgs;

/// `hearth audit ...`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Write a node's audit log as an export file for an auditor.
    #[command(
        after_help = "Examples:\n  hearth audit export --state-dir /var/lib/hearth/coordinator -o coordinator-audit.jsonl\n  hearth audit export --state-dir hearth-data/bank-a -o bank-a.jsonl --include-unsigned\n\nNo passphrase is needed: the log holds no secret. It can run while the node runs. By default the\nexport ends at the newest signed checkpoint, so every exported entry is covered by a signature."
    )]
    Export(ExportArgs),
    /// Print the newest signed checkpoint (a C2SP signed note) of a node's log.
    #[command(
        after_help = "Examples:\n  hearth audit checkpoint --state-dir /var/lib/hearth/coordinator > head-2026-11-25.txt\n\nKeep it, or give it to a witness: `hearth audit verify EXPORT --checkpoint head-2026-11-25.txt`\nlater proves the log has only grown since."
    )]
    Checkpoint(CheckpointArgs),
    /// Verify an export offline: every entry, every signed checkpoint, consistency between checkpoints.
    Verify(VerifyArgs),
    /// Select entries by time range, actor, tenant, action and outcome; print a table or JSON.
    Query(QueryArgs),
    /// Produce the compliance report (record of processing activities, operations summary) as HTML and
    /// JSON.
    Report(ReportArgs),
    /// As a witness: check that a log's newest checkpoint extends the last one you cosigned, then
    /// cosign it.
    Cosign(CosignArgs),
}

/// Arguments of `hearth audit export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The node's directory (coordinator state_dir or participant data_dir).
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Where to write the export.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// Most checkpoints to include (evenly spaced, always the first and the newest).
    #[arg(long, default_value_t = 1000)]
    pub max_checkpoints: usize,
    /// Also export entries written after the newest checkpoint (reported as not yet signed).
    #[arg(long)]
    pub include_unsigned: bool,
}

/// Arguments of `hearth audit checkpoint`.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// The node's directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<std::process::ExitCode> {
    // Verification and report building are CPU-bound: keep them off the async workers.
    tokio::task::spawn_blocking(move || match cmd {
        AuditCommand::Export(a) => export_cmd(a).map(|()| std::process::ExitCode::SUCCESS),
        AuditCommand::Checkpoint(a) => checkpoint_cmd(a).map(|()| std::process::ExitCode::SUCCESS),
        AuditCommand::Verify(a) => verify::run(a),
        AuditCommand::Query(a) => query::run(a).map(|()| std::process::ExitCode::SUCCESS),
        AuditCommand::Report(a) => report::run(a),
        AuditCommand::Cosign(a) => cosign::run(a).map(|()| std::process::ExitCode::SUCCESS),
    })
    .await
    .context("audit command task")?
}

fn export_cmd(a: ExportArgs) -> anyhow::Result<()> {
    let tmp = a.output.with_extension("partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let opts = ExportOptions { max_checkpoints: a.max_checkpoints, include_unsigned: a.include_unsigned };
    let s = export(&a.state_dir, &mut out, opts)
        .with_context(|| format!("exporting the audit log of {}", a.state_dir.display()))?;
    out.flush().with_context(|| format!("writing {}", tmp.display()))?;
    drop(out);
    std::fs::rename(&tmp, &a.output).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!(
        "exported {} entries and {} of {} checkpoints of audit log {} ({} suite) to {}",
        s.entries,
        s.checkpoints,
        s.checkpoints_available,
        s.origin,
        s.suite,
        a.output.display()
    );
    eprintln!("the log's keys (auditors should obtain them independently, e.g. from `hearth keys list`):");
    for k in &s.keys {
        eprintln!("  {}", k.encode());
    }
    Ok(())
}

fn checkpoint_cmd(a: CheckpointArgs) -> anyhow::Result<()> {
    match latest_checkpoint(&a.state_dir)? {
        Some(c) => {
            print!("{}", c.encode());
            Ok(())
        }
        None => bail!("the audit log in {} has no signed checkpoint yet", a.state_dir.display()),
    }
}

/// Reads a vkey given on the command line, or `@FILE` holding one vkey per line.
pub(crate) fn read_vkeys(args: &[String], what: &str) -> anyhow::Result<Vec<VerifierKey>> {
    let mut out = Vec::new();
    for a in args {
        let texts: Vec<String> = match a.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {what} file {path}"))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect(),
            None => vec![a.clone()],
        };
        for t in texts {
            out.push(VerifierKey::parse(&t).with_context(|| format!("{what} {t:?}"))?);
        }
    }
    Ok(out)
}

/// Where `query` and `report` read entries from: an export file, or a node's directory.
#[derive(Debug, Clone, clap::Args)]
pub struct Source {
    /// An export file (from `hearth audit export`).
    #[arg(value_name = "EXPORT", required_unless_present = "state_dir")]
    pub export: Option<PathBuf>,
    /// Read a node's audit log directly instead (its directory), including unsigned entries.
    #[arg(long, value_name = "DIR", conflicts_with = "export")]
    pub state_dir: Option<PathBuf>,
    /// Verify the entries first against these log keys (vkey, or @FILE); refuse to report on a log that
    /// does not verify.
    #[arg(long = "trusted-key", value_name = "VKEY")]
    pub trusted_keys: Vec<String>,
}

/// Entries read from a [`Source`], and the export bytes they came from.
pub(crate) struct Loaded {
    pub(crate) bundle: ExportBundle,
    pub(crate) bytes: Vec<u8>,
    pub(crate) verified: Option<hearth_audit::Report>,
}

impl Source {
    pub(crate) fn load(&self) -> anyhow::Result<Loaded> {
        let bytes = match (&self.export, &self.state_dir) {
            (Some(f), _) => std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
            (None, Some(d)) => {
                let mut out = Vec::new();
                export(d, &mut out, ExportOptions { max_checkpoints: 1000, include_unsigned: true })
                    .with_context(|| format!("reading the audit log of {}", d.display()))?;
                out
            }
            (None, None) => bail!("give an EXPORT file or --state-dir DIR"),
        };
        let verified = if self.trusted_keys.is_empty() {
            None
        } else {
            let trust = Trust { log_keys: read_vkeys(&self.trusted_keys, "trusted key")?, witnesses: vec![] };
            let r = hearth_audit::verify_export(&bytes, &trust);
            if !r.is_ok() {
                bail!("the audit log does not verify; run `hearth audit verify` for details:\n{r}");
            }
            Some(r)
        };
        let bundle = ExportBundle::decode(&bytes).context("reading the export")?;
        Ok(Loaded { bundle, bytes, verified })
    }
}

pub(crate) fn entries(l: &Loaded) -> impl Iterator<Item = &Entry> {
    l.bundle.entries.iter().map(|(e, _)| e)
}
