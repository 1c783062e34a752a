//! `hearth data`: bring an institution's own labelled conversations into its participant store, see
//! what it holds, and delete it. Every command opens the participant's node (its lock, keystore and
//! audit log, created on first use), so rows are envelope-encrypted as they are written and every
//! import and deletion is recorded in the participant's audit log. Run them while the participant is
//! stopped (the store and the node's lock are exclusive).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_crypto::audit::{Event, Outcome};
use hearth_models::{detect_format, parse_labelled, Example, ImportReport, InputFormat};
use hearth_participant::ParticipantConfig;

use crate::node::cli_actor;

/// `hearth data ...`
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Import labelled examples from CSV (`text,label` header) or JSON Lines (`{"text":..,"label":..}`).
    #[command(
        after_help = "Examples:\n  hearth data import --data-dir hearth-data/bank-a conversations.csv\n  hearth data import --config bank-a.toml --skip-bad chats.jsonl\n\nRows with problems are listed by line number. Without --skip-bad nothing is imported while any\nrow is bad; with it, the bad rows are listed and the good ones imported. Rows are encrypted under\nthe participant's key-encryption key; the keystore is created on first use (its passphrase from\nHEARTH_KEYSTORE_PASSPHRASE, or as [keystore] in the configuration says)."
    )]
    Import(ImportArgs),
    /// Delete stored examples: all of them, or those with one label. Recorded in the audit log.
    #[command(
        after_help = "Examples:\n  hearth data delete --data-dir hearth-data/bank-a --all\n  hearth data delete --config bank-a.toml --label lost_card\n\nDeleted rows are removed from the store; their ciphertext may stay in free pages of the database\nfile until reused, readable only with the node's key-encryption key."
    )]
    Delete(DeleteArgs),
    /// How many examples the store holds, and how many stored values each key-encryption key version
    /// sealed (after a rotation, the rows still under an older version).
    #[command(after_help = "Examples:\n  hearth data stats --data-dir hearth-data/bank-a")]
    Stats(NodeSel),
}

/// Which participant: `--data-dir`, and/or its configuration file.
#[derive(Debug, clap::Args)]
pub struct NodeSel {
    /// The participant's data directory (its `data_dir` setting).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The participant's configuration file (for [keystore], suite and data_dir).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl NodeSel {
    fn config(&self) -> anyhow::Result<ParticipantConfig> {
        let mut c: ParticipantConfig = crate::config::load(self.config.as_deref(), "HEARTH_PARTICIPANT")?;
        match (&self.data_dir, &self.config) {
            (Some(d), _) => c.data_dir = d.clone(),
            (None, Some(_)) => {}
            (None, None) => bail!("name the participant with --data-dir DIR or --config FILE"),
        }
        Ok(c)
    }
}

/// Arguments of `hearth data import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub node: NodeSel,
    /// Force the format instead of guessing from the extension.
    #[arg(long, value_parser = ["csv", "jsonl"])]
    pub format: Option<String>,
    /// Import the good rows even if some are bad (the bad ones are still listed).
    #[arg(long)]
    pub skip_bad: bool,
    /// The file to import.
    pub file: PathBuf,
}

/// Arguments of `hearth data delete`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["all", "label"])))]
pub struct DeleteArgs {
    #[command(flatten)]
    pub node: NodeSel,
    /// Delete every example.
    #[arg(long)]
    pub all: bool,
    /// Delete the examples with this label.
    #[arg(long)]
    pub label: Option<String>,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Import(a) => {
            let report = read_report(&a.file, a.format.as_deref())?;
            print_errors(&a.file, &report);
            if !report.errors.is_empty() && !a.skip_bad {
                bail!(
                    "{} bad rows in {}; nothing imported (fix them, or pass --skip-bad to import the {} good rows)",
                    report.errors.len(),
                    a.file.display(),
                    report.examples.len()
                );
            }
            let cfg = a.node.config()?;
            let actor = cli_actor("data import");
            let node = hearth_participant::open_node(&cfg, &actor, None)?;
            let total = node.store.import(&report.examples)?;
            node.audit.record_event(
                Event::new(actor, "data.import", Outcome::Ok)
                    .detail(format!("{} examples imported, {total} in store", report.examples.len())),
            );
            node.audit.checkpoint_now()?;
            eprintln!(
                "imported {} examples from {} into {} ({} in store)",
                report.examples.len(),
                a.file.display(),
                cfg.data_dir.display(),
                total
            );
            Ok(())
        }
        DataCommand::Delete(a) => {
            let cfg = a.node.config()?;
            let actor = cli_actor("data delete");
            let node = hearth_participant::open_node(&cfg, &actor, None)?;
            let (deleted, what) = match &a.label {
                Some(l) => (node.store.delete(Some(&|e: &Example| &e.label == l))?, format!("label {l:?}")),
                None => (node.store.delete(None)?, "all examples".to_string()),
            };
            let left = node.store.count()?;
            node.audit.record_event(
                Event::new(actor, "data.delete", Outcome::Ok)
                    .detail(format!("{what}: {deleted} examples deleted, {left} left")),
            );
            node.audit.checkpoint_now()?;
            eprintln!("deleted {deleted} examples ({what}) from {}; {left} left", cfg.data_dir.display());
            Ok(())
        }
        DataCommand::Stats(sel) => {
            let cfg = sel.config()?;
            let node = hearth_participant::open_node(&cfg, &cli_actor("data stats"), None)?;
            println!("{} examples in {}", node.store.count()?, cfg.data_dir.display());
            for (kek, n) in node.store.kek_versions()? {
                println!("  {n:>8} values sealed under {kek}");
            }
            Ok(())
        }
    }
}

fn read_report(path: &Path, format: Option<&str>) -> anyhow::Result<ImportReport> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {} as UTF-8 text", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let format = match format {
        Some("csv") => InputFormat::Csv,
        Some("jsonl") => InputFormat::JsonLines,
        _ => detect_format(&name, &content),
    };
    parse_labelled(&content, format).with_context(|| format!("parsing {}", path.display()))
}

fn print_errors(path: &Path, report: &ImportReport) {
    for e in report.errors.iter().take(50) {
        eprintln!("{}:{}: {}", path.display(), e.line, e.reason);
    }
    if report.errors.len() > 50 {
        eprintln!("{}: ... and {} more bad rows", path.display(), report.errors.len() - 50);
    }
}

/// Reads a labelled file for the demo; any bad row is an error listing the bad lines.
pub fn read_labelled(path: &Path) -> anyhow::Result<Vec<Example>> {
    let report = read_report(path, None)?;
    if !report.errors.is_empty() {
        print_errors(path, &report);
        bail!("{} bad rows in {}", report.errors.len(), path.display());
    }
    if report.examples.is_empty() {
        bail!("{} holds no examples", path.display());
    }
    Ok(report.examples)
}
