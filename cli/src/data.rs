//! `hearth data`: bring an institution's own data into its participant store, one table per model
//! family: labelled conversations (intent), conversations with emotion labels (emotion), purchase
//! transactions (recommend); see what it holds, and delete it. Every command opens the participant's
//! node (its lock, keystore and audit log, created on first use), so rows are envelope-encrypted as they
//! are written and every import and deletion is recorded in the participant's audit log. Run them while
//! the participant is stopped (the store and the node's lock are exclusive).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_audit::{Action, Event, Outcome};
use hearth_models::emotion::{parse_emotion_labelled, parse_emotion_labels, parse_goemotions};
use hearth_models::recommend::data::{is_product, parse_transactions, Transaction};
use hearth_models::{detect_format, parse_labelled, EmotionExample, Example, ImportReport, InputFormat};
use hearth_participant::ParticipantConfig;

use crate::node::cli_actor;

/// `hearth data ...`
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Import an institution's data for one model family into its participant store.
    #[command(after_help = "Examples:
  hearth data import --data-dir hearth-data/bank-a conversations.csv
  hearth data import --config bank-a.toml --skip-bad chats.jsonl
  hearth data import --data-dir hearth-data/bank-a --family emotion emotions.csv
  hearth data import --data-dir hearth-data/bank-a --family emotion --labels ekman/labels.txt ekman/train.tsv
  hearth data import --data-dir hearth-data/shop-uk --family recommend transactions.csv

Files per family:
  intent     CSV with `text` and `label` columns, or JSON Lines {\"text\": .., \"label\": ..}
  emotion    CSV with `text` and `labels` columns (several labels separated by ; | or ,), JSON Lines
             {\"text\": .., \"labels\": [..]}, or GoEmotions TSV (text, label indices, id) with --labels
  recommend  CSV with the Online Retail columns InvoiceNo, StockCode, Description, Quantity,
             InvoiceDate, UnitPrice, CustomerID, Country (any order; Description optional)

Rows with problems are listed by line number. Without --skip-bad nothing is imported while any
row is bad; with it, the bad rows are listed and the good ones imported. Rows are encrypted under
the participant's key-encryption key; the keystore is created on first use (its passphrase from
HEARTH_KEYSTORE_PASSPHRASE, or as [keystore] in the configuration says).

Transactions without a CustomerID (anonymous checkouts) and lines that are not products (postage,
fees, manual adjustments) are not stored: they can never be tied to a customer's purchases.
Cancellations are stored and netted against the customer's purchases of the item when training.
The participant must be stopped while importing (its store is locked while it runs); it reads
new data when it starts.")]
    Import(ImportArgs),
    /// Delete stored examples: all of them, or those with one label. Recorded in the audit log.
    #[command(
        after_help = "Examples:\n  hearth data delete --data-dir hearth-data/bank-a --all\n  hearth data delete --config bank-a.toml --label lost_card\n\nDeleted rows are removed from the store; their ciphertext may stay in free pages of the database\nfile until reused, readable only with the node's key-encryption key."
    )]
    Delete(DeleteArgs),
    /// How many rows of each family the store holds, and how many stored values each key-encryption key version
    /// sealed, over the data, models, privacy ledger and customer-service records (after a rotation, the
    /// values still under an older version until `hearth keys rewrap`).
    #[command(after_help = "Examples:\n  hearth data stats --data-dir hearth-data/bank-a")]
    Stats(NodeSel),
    /// The institution's own privacy policy and what its participant has released from its data: per
    /// family, epsilon spent, reserved and remaining, and each job and query charged.
    #[command(
        after_help = "Examples:\n  hearth data privacy --config bank-a.toml\n  hearth data privacy --data-dir hearth-data/bank-a --json\n\nThe policy is the one the institution's DPO signed (its privacy_policy setting; `hearth budget\nsign` writes it); the ledger is the participant's own, charged before each masked input leaves,\nwhatever the coordinator's ledger says. Each charge and refusal is also in the participant's audit\nlog (budget.local_charge, round.join)."
    )]
    Privacy {
        #[command(flatten)]
        node: NodeSel,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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
    pub(crate) fn config(&self) -> anyhow::Result<ParticipantConfig> {
        let mut c: ParticipantConfig = crate::config::load(self.config.as_deref(), "HEARTH_PARTICIPANT")?;
        match (&self.data_dir, &self.config) {
            (Some(d), _) => c.data_dir = d.clone(),
            (None, Some(_)) => {}
            (None, None) => bail!("name the participant with --data-dir DIR or --config FILE"),
        }
        Ok(c)
    }
}

/// The model family a file feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    /// Labelled conversations.
    Intent,
    /// Conversations with emotion labels.
    Emotion,
    /// Purchase transactions.
    Recommend,
}

/// Arguments of `hearth data import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub node: NodeSel,
    /// Which model family the file feeds.
    #[arg(long, value_enum, default_value_t = Family::Intent)]
    pub family: Family,
    /// Force the format instead of guessing from the extension (intent and emotion).
    #[arg(long, value_parser = ["csv", "jsonl"])]
    pub format: Option<String>,
    /// Emotion only: the label list (one name per line) that a GoEmotions TSV file's indices point into.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Import the good rows even if some are bad (the bad ones are still listed).
    #[arg(long)]
    pub skip_bad: bool,
    /// The file to import. Intent: CSV with text and label columns, JSON Lines with text and label
    /// fields, or CLINC150's data_full.json as shipped (its train split, out-of-scope examples as `oos`).
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
        DataCommand::Import(a) => import(&a),
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
                Event::new(actor, Action::DataDelete, Outcome::Ok)
                    .detail(format!("{what}: {deleted} examples deleted, {left} left")),
            );
            node.audit.checkpoint_now()?;
            eprintln!("deleted {deleted} examples ({what}) from {}; {left} left", cfg.data_dir.display());
            Ok(())
        }
        DataCommand::Privacy { node: sel, json } => {
            let cfg = sel.config()?;
            // The certificate names the institution; no private key is needed.
            let read =
                |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
            let me = hearth_crypto::pki::cert_der_from_pem(&read(&cfg.tls.cert)?)
                .and_then(|der| hearth_crypto::pki::identity_from_cert_der(&der))
                .context("the participant's certificate")?;
            let ca_der =
                hearth_crypto::pki::cert_der_from_pem(&read(&cfg.tls.ca)?).context("the CA certificate")?;
            let node = hearth_participant::open_node(&cfg, &cli_actor("data privacy"), None)?;
            let path = cfg.privacy_policy_path();
            let local = hearth_participant::privacy::LocalPrivacy::open(
                me.id.clone(),
                path.clone(),
                ca_der,
                std::sync::Arc::new(node.store),
            )?;
            match local.report()? {
                None => bail!(
                    "{} has no signed privacy policy ({}): it answers no differentially private round and no \
                     query; its DPO signs one with `hearth budget sign`",
                    me.id,
                    path.display()
                ),
                Some(report) if json => println!("{}", serde_json::to_string_pretty(&report)?),
                Some(report) => {
                    println!("{} (policy {}):", me.id, path.display());
                    print!("{report}");
                }
            }
            Ok(())
        }
        DataCommand::Stats(sel) => {
            let cfg = sel.config()?;
            let node = hearth_participant::open_node(&cfg, &cli_actor("data stats"), None)?;
            let s = &node.store;
            println!("{}:", cfg.data_dir.display());
            println!("  {:>8} intent examples", s.count()?);
            println!("  {:>8} emotion examples", s.emotion_count()?);
            println!("  {:>8} transactions", s.transaction_count()?);
            let mut versions = node.store.kek_versions()?;
            hearth_node::rewrap::add_counts(&mut versions, hearth_desk::store::kek_versions(&cfg.data_dir)?);
            for (kek, n) in versions {
                println!("  {n:>8} values sealed under {kek}");
            }
            Ok(())
        }
    }
}

/// Embeds the intent texts that have no embedding yet, for the encoder tier, when its model is installed
/// in `encoder_dir`: once, here, sealed in the store beside the texts. Without the model the texts are
/// embedded when an encoder-tier job first needs them.
fn embed_imported(store: &hearth_participant::store::Store, encoder_dir: &Path) -> anyhow::Result<()> {
    use hearth_models::encoder::{Encoder, EncoderError};
    let encoder = match Encoder::load(encoder_dir) {
        Ok(e) => e,
        Err(EncoderError::Io { .. }) => {
            eprintln!(
                "the encoder tier's model is not installed in {} (`hearth model fetch-encoder`): the texts will be \
                 embedded when an encoder-tier job first needs them",
                encoder_dir.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let started = std::time::Instant::now();
    let n = embed_with_progress(store, &encoder, &indicatif::MultiProgress::new())?;
    if n > 0 {
        eprintln!(
            "embedded {n} texts for the encoder tier in {:.1} s (sealed in the store, reused by every job)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// [`hearth_participant::embedding::embed_missing`] with a progress bar and its ETA.
fn embed_with_progress(
    store: &hearth_participant::store::Store,
    encoder: &hearth_models::encoder::Encoder,
    mp: &indicatif::MultiProgress,
) -> anyhow::Result<usize> {
    let bar = mp.add(indicatif::ProgressBar::new(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("embedding {bar:30} {pos}/{len} texts, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let n = hearth_participant::embedding::embed_missing(store, encoder, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    Ok(n)
}

fn import(a: &ImportArgs) -> anyhow::Result<()> {
    let path = &a.file;
    let cfg = a.node.config()?;
    let actor = cli_actor("data import");
    // Opened only once the file is known to be good (or --skip-bad): a refused file leaves no trace.
    let open = || hearth_participant::open_node(&cfg, &actor, None);
    let audit = |node: &hearth_participant::Node, what: String| -> anyhow::Result<()> {
        node.audit.record_event(Event::new(actor.clone(), Action::DataImport, Outcome::Ok).detail(what));
        node.audit.checkpoint_now()?;
        Ok(())
    };
    // Refuses a file with bad rows unless --skip-bad; returns how many good rows there are.
    let check = |errors: &[hearth_models::RowError], good: usize| -> anyhow::Result<()> {
        print_errors(path, errors);
        if !errors.is_empty() && !a.skip_bad {
            bail!(
                "{} bad rows in {}; nothing imported (fix them, or pass --skip-bad to import the {good} good rows)",
                errors.len(),
                path.display()
            );
        }
        Ok(())
    };
    match a.family {
        Family::Intent => {
            let report = read_report(path, a.format.as_deref())?;
            check(&report.errors, report.examples.len())?;
            let node = open()?;
            let total = node.store.import(&report.examples)?;
            audit(&node, format!("{} intent examples imported, {total} in store", report.examples.len()))?;
            eprintln!(
                "imported {} intent examples from {} into {} ({total} in store)",
                report.examples.len(),
                path.display(),
                cfg.data_dir.display()
            );
            embed_imported(&node.store, &cfg.encoder_path())?;
        }
        Family::Emotion => {
            let report = read_emotion_report(path, a.format.as_deref(), a.labels.as_deref())?;
            check(&report.errors, report.examples.len())?;
            let node = open()?;
            let total = node.store.import_emotion(&report.examples)?;
            audit(&node, format!("{} emotion examples imported, {total} in store", report.examples.len()))?;
            eprintln!(
                "imported {} emotion examples from {} into {} ({total} in store)",
                report.examples.len(),
                path.display(),
                cfg.data_dir.display()
            );
        }
        Family::Recommend => {
            let report = read_transactions_report(path)?;
            check(&report.errors, report.examples.len())?;
            let (kept, anonymous, non_product) = minimise(report.examples);
            let cancellations = kept.iter().filter(|t| is_cancellation(t)).count();
            let node = open()?;
            let total = node.store.import_transactions(&kept)?;
            audit(
                &node,
                format!(
                    "{} transactions imported, {total} in store; dropped {anonymous} without a CustomerID, \
                     {non_product} not products",
                    kept.len()
                ),
            )?;
            eprintln!(
                "imported {} transactions from {} into {} ({total} in store): {} purchases, {cancellations} \
                 cancellations (netted when training); not stored: {anonymous} without a CustomerID, \
                 {non_product} not products",
                kept.len(),
                path.display(),
                cfg.data_dir.display(),
                kept.len() - cancellations,
            );
        }
    }
    Ok(())
}

fn is_cancellation(t: &Transaction) -> bool {
    t.invoice.starts_with(['C', 'c']) || t.quantity <= 0
}

/// Keeps the rows that can ever count for a customer: drops anonymous rows and non-products (the models
/// crate's cleaning drops them first, whatever else is in the store, so nothing is lost). Returns the
/// kept rows and how many of each kind were dropped.
pub fn minimise(rows: Vec<Transaction>) -> (Vec<Transaction>, usize, usize) {
    let (mut anonymous, mut non_product) = (0, 0);
    let kept = rows
        .into_iter()
        .filter(|t| {
            if t.customer.is_none() {
                anonymous += 1;
                false
            } else if !is_product(&t.stock_code) {
                non_product += 1;
                false
            } else {
                true
            }
        })
        .collect();
    (kept, anonymous, non_product)
}

fn read_text(path: &Path) -> anyhow::Result<(String, String)> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {} as UTF-8 text", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((name, content))
}

fn pick_format(name: &str, content: &str, format: Option<&str>) -> InputFormat {
    match format {
        Some("csv") => InputFormat::Csv,
        Some("jsonl") => InputFormat::JsonLines,
        _ => detect_format(name, content),
    }
}

fn read_report(path: &Path, format: Option<&str>) -> anyhow::Result<ImportReport> {
    let (name, content) = read_text(path)?;
    parse_labelled(&content, pick_format(&name, &content, format))
        .with_context(|| format!("parsing {}", path.display()))
}

fn read_emotion_report(
    path: &Path,
    format: Option<&str>,
    labels: Option<&Path>,
) -> anyhow::Result<ImportReport<EmotionExample>> {
    let (name, content) = read_text(path)?;
    if name.to_ascii_lowercase().ends_with(".tsv") {
        let labels = labels.with_context(|| {
            format!(
                "{} is GoEmotions TSV: pass --labels with the label list its indices point into",
                path.display()
            )
        })?;
        let list = parse_emotion_labels(&read_text(labels)?.1)
            .with_context(|| format!("parsing {}", labels.display()))?;
        return Ok(parse_goemotions(&content, &list));
    }
    parse_emotion_labelled(&content, pick_format(&name, &content, format))
        .with_context(|| format!("parsing {}", path.display()))
}

fn read_transactions_report(path: &Path) -> anyhow::Result<ImportReport<Transaction>> {
    let (_, content) = read_text(path)?;
    parse_transactions(&content).with_context(|| format!("parsing {}", path.display()))
}

fn print_errors(path: &Path, errors: &[hearth_models::RowError]) {
    for e in errors.iter().take(50) {
        eprintln!("{}:{}: {}", path.display(), e.line, e.reason);
    }
    if errors.len() > 50 {
        eprintln!("{}: ... and {} more bad rows", path.display(), errors.len() - 50);
    }
}

/// Reads a whole file for the demo or a job file; any bad row is an error listing the bad lines.
fn all_good<T>(path: &Path, report: ImportReport<T>) -> anyhow::Result<Vec<T>> {
    if !report.errors.is_empty() {
        print_errors(path, &report.errors);
        bail!("{} bad rows in {}", report.errors.len(), path.display());
    }
    if report.examples.is_empty() {
        bail!("{} holds no examples", path.display());
    }
    Ok(report.examples)
}

/// Reads a labelled intent file; any bad row is an error listing the bad lines.
pub fn read_labelled(path: &Path) -> anyhow::Result<Vec<Example>> {
    all_good(path, read_report(path, None)?)
}

/// Reads an emotion file (CSV or JSON Lines naming labels; GoEmotions TSV with `labels`).
pub fn read_emotion(path: &Path, labels: Option<&Path>) -> anyhow::Result<Vec<EmotionExample>> {
    all_good(path, read_emotion_report(path, None, labels)?)
}

/// Reads a transactions file.
pub fn read_transactions(path: &Path) -> anyhow::Result<Vec<Transaction>> {
    all_good(path, read_transactions_report(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_rows_and_non_products_are_not_kept() {
        let csv = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n\
                   1,85123A,HEART,6,2010-12-01T08:26,2.55,17850,United Kingdom\n\
                   2,85123A,HEART,6,2010-12-01T08:26,2.55,,United Kingdom\n\
                   3,POST,POSTAGE,1,2010-12-01T08:26,18,17850,United Kingdom\n\
                   C4,85123A,HEART,-1,2010-12-01T09:26,2.55,17850,United Kingdom\n";
        let rows = parse_transactions(csv).unwrap().examples;
        let (kept, anonymous, non_product) = minimise(rows);
        assert_eq!((kept.len(), anonymous, non_product), (2, 1, 1));
        assert!(is_cancellation(&kept[1]));
    }
}
