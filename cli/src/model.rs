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
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Show { file, json } => show(&file, json),
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
            "{} items x {} factors (alpha {}, customer l2 {})",
            m.spec.items.len(),
            m.spec.factors,
            m.spec.alpha,
            m.spec.user_l2
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
