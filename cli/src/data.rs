//! `hearth data`: bring an institution's own labelled conversations into its participant store.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_models::{detect_format, parse_labelled, Example, ImportReport, InputFormat};

/// `hearth data ...`
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Import labelled examples from CSV (`text,label` header) or JSON Lines (`{"text":..,"label":..}`).
    #[command(
        after_help = "Examples:\n  hearth data import --data-dir hearth-data/bank-a conversations.csv\n  hearth data import --data-dir hearth-data/bank-a --skip-bad chats.jsonl\n\nRows with problems are listed by line number. Without --skip-bad nothing is imported while any\nrow is bad; with it, the bad rows are listed and the good ones imported."
    )]
    Import(ImportArgs),
}

/// Arguments of `hearth data import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The participant's data directory (its `data_dir` setting).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Force the format instead of guessing from the extension.
    #[arg(long, value_parser = ["csv", "jsonl"])]
    pub format: Option<String>,
    /// Import the good rows even if some are bad (the bad ones are still listed).
    #[arg(long)]
    pub skip_bad: bool,
    /// The file to import.
    pub file: PathBuf,
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
            let store = hearth_participant::Store::open(&a.data_dir)?;
            let total = store.import(&report.examples)?;
            eprintln!(
                "imported {} examples from {} into {} ({} in store)",
                report.examples.len(),
                a.file.display(),
                a.data_dir.display(),
                total
            );
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
