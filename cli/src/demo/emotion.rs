//! The emotion task: GoEmotions with the Ekman mapping (anger, disgust, fear, joy, neutral, sadness,
//! surprise; multi-label), its training texts split over the institutions with a seeded Dirichlet draw
//! over each text's primary label, as intent's are. Reported per round and at the end, federated beside
//! centralized beside the dataset paper's baseline: macro-F1, and the recall and precision of anger
//! escalation at the threshold chosen on the dev set for the policy's target recall.
//!
//! The evaluation calibrates every global model the same way, on GoEmotions dev: per-label thresholds
//! for F1, and the escalation threshold for the target recall (a one-sided 95% bound, see the models
//! crate). The participants calibrate their served models the same way on their own held-out texts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hearth_models::emotion::{
    self, calibrate_escalation, calibrate_thresholds, evaluate_emotion, parse_emotion_labels,
    parse_goemotions, EmotionMetrics, ANGER,
};
use hearth_models::{
    dirichlet_split_by, EmotionExample, EmotionModel, EmotionSpec, FeatureConfig, ModelSpec, TrainParams,
};
use hearth_proto::v1;
use serde::Serialize;

use super::{follow, Ctx, Task};

/// Macro-F1 on test of BERT-base on the Ekman mapping, from the dataset paper (Demszky et al. 2020):
/// centrally trained, no privacy.
pub const PAPER_BERT_MACRO_F1: f64 = 0.64;

/// One row of the per-round table.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRow {
    pub round: u64,
    pub participants: u32,
    pub train_loss: f32,
    pub macro_f1: f64,
    pub anger_recall: f64,
    pub anger_precision: f64,
    pub escalation_threshold: f32,
    pub seconds: f64,
}

/// Final metrics of one way of training, on GoEmotions test.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub macro_f1: f64,
    /// Recall of anger escalation at the threshold chosen on dev for the target recall.
    pub anger_recall: f64,
    /// Precision of anger escalation at that threshold.
    pub anger_precision: f64,
    pub escalation_threshold: f32,
    /// F1 of each label at its dev-calibrated threshold.
    pub per_class_f1: BTreeMap<String, f64>,
    pub train_seconds: f64,
}

/// The published reference point.
#[derive(Debug, Clone, Serialize)]
pub struct Paper {
    pub model: &'static str,
    pub macro_f1: f64,
}

/// The `"emotion"` section of `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dataset: String,
    pub labels: Vec<String>,
    pub participants: usize,
    pub alpha: f64,
    pub train_examples: usize,
    pub dev_examples: usize,
    pub test_examples: usize,
    pub shard_sizes: Vec<usize>,
    pub target_anger_recall: f32,
    pub secure_aggregation: bool,
    pub train: serde_json::Value,
    pub rounds: Vec<RoundRow>,
    pub federated: Outcome,
    pub centralized: Outcome,
    pub paper_baseline: Paper,
}

/// GoEmotions Ekman and its split.
pub(crate) struct Prepared {
    spec: EmotionSpec,
    train: Vec<EmotionExample>,
    dev: Arc<Vec<EmotionExample>>,
    test: Arc<Vec<EmotionExample>>,
    shards: Vec<Vec<EmotionExample>>,
    alpha: f64,
    target: f32,
}

impl Prepared {
    /// Institution `i`'s texts.
    pub(crate) fn shard(&self, i: usize) -> &[EmotionExample] {
        self.shards.get(i).map_or(&[], Vec::as_slice)
    }
}

/// Loads GoEmotions Ekman from `goemotions/ekman` under the datasets directory and splits its training texts.
pub(crate) fn prepare(data: &Path, n: usize, alpha: f64, seed: u64, target: f32) -> anyhow::Result<Prepared> {
    if !(target > 0.0 && target <= 1.0) {
        anyhow::bail!("--target-anger-recall {target} must be in (0, 1]");
    }
    let dir = data.join("goemotions/ekman");
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| {
            format!("reading GoEmotions from {} (set --data-dir or HEARTH_DATA_DIR)", p.display())
        })
    };
    let labels = parse_emotion_labels(&read("labels.txt")?).context("GoEmotions Ekman labels.txt")?;
    let load = |split: &str| -> anyhow::Result<Vec<EmotionExample>> {
        let r = parse_goemotions(&read(&format!("{split}.tsv"))?, &labels);
        if let Some(e) = r.errors.first() {
            anyhow::bail!(
                "{}: {} bad rows, the first at {e}",
                dir.join(format!("{split}.tsv")).display(),
                r.errors.len()
            );
        }
        Ok(r.examples)
    };
    let (train, dev, test) = (load("train")?, load("dev")?, load("test")?);
    let spec = EmotionSpec::new(labels, FeatureConfig::default())?;
    let shards = dirichlet_split_by(&train, |e| e.primary_label(), n, alpha, seed)?;
    let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
    eprintln!(
        "emotion: GoEmotions Ekman: {} train / {} dev / {} test texts, labels {}; Dirichlet({alpha}) over the \
         primary label, {n} institutions: {sizes:?}",
        train.len(),
        dev.len(),
        test.len(),
        spec.labels.join(", "),
    );
    Ok(Prepared { spec, train, dev: Arc::new(dev), test: Arc::new(test), shards, alpha, target })
}

/// Calibrates `model` on dev (per-label thresholds, escalation for `target`) and evaluates it on test.
fn calibrated_metrics(
    mut model: EmotionModel,
    dev: &[EmotionExample],
    test: &[EmotionExample],
    target: f32,
) -> anyhow::Result<EmotionMetrics> {
    calibrate_thresholds(&mut model, dev)?;
    calibrate_escalation(&mut model, dev, ANGER, target)?;
    Ok(evaluate_emotion(&model, test)?)
}

fn outcome(m: &EmotionMetrics, train_seconds: f64) -> Outcome {
    let esc = m.escalation.as_ref();
    Outcome {
        macro_f1: m.macro_f1,
        anger_recall: esc.map_or(0.0, |e| e.score.recall),
        anger_precision: esc.map_or(0.0, |e| e.score.precision),
        escalation_threshold: esc.map_or(f32::NAN, |e| e.threshold),
        per_class_f1: m.per_class.iter().map(|c| (c.label.clone(), c.f1)).collect(),
        train_seconds,
    }
}

/// A committed round's evaluation.
pub(crate) struct Evaluated {
    row: RoundRow,
    metrics: EmotionMetrics,
}

struct EmotionTask {
    dev: Arc<Vec<EmotionExample>>,
    test: Arc<Vec<EmotionExample>>,
    target: f32,
}

impl Task for EmotionTask {
    type Row = Evaluated;

    fn header(&self) -> String {
        format!(
            "{:>5} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "round", "participants", "train_loss", "macro_f1", "anger_R", "anger_P", "escalate"
        )
    }

    fn evaluate(&self, s: &v1::RoundSummary, spec: ModelSpec, params: Vec<f32>) -> anyhow::Result<Evaluated> {
        let ModelSpec::Emotion(spec) = spec else {
            anyhow::bail!("the emotion job's model is a {}", spec.family())
        };
        let m =
            calibrated_metrics(EmotionModel::from_params(spec, params)?, &self.dev, &self.test, self.target)?;
        let o = outcome(&m, 0.0);
        let row = RoundRow {
            round: s.round,
            participants: s.participants,
            train_loss: s.train_loss,
            macro_f1: o.macro_f1,
            anger_recall: o.anger_recall,
            anger_precision: o.anger_precision,
            escalation_threshold: o.escalation_threshold,
            seconds: s.seconds,
        };
        Ok(Evaluated { row, metrics: m })
    }

    fn line(&self, e: &Evaluated) -> String {
        let r = &e.row;
        format!(
            "{:>5} {:>12} {:>10.4} {:>9.4} {:>9.4} {:>9.4} {:>9.3}",
            r.round,
            r.participants,
            r.train_loss,
            r.macro_f1,
            r.anger_recall,
            r.anger_precision,
            r.escalation_threshold
        )
    }
}

/// Runs the federated job and the centralized baseline.
pub(crate) async fn run(ctx: &mut Ctx, p: Prepared) -> anyhow::Result<Summary> {
    let mut plan = ctx.plan("demo-emotion", ModelSpec::Emotion(p.spec.clone()));
    plan.escalation_target_recall = Some(p.target);
    plan.data_description = format!(
        "GoEmotions (Ekman labels) train, split over {} institutions by a Dirichlet({}) draw over the primary label",
        ctx.participants, p.alpha
    );
    eprintln!(
        "emotion: federated training, {} rounds; escalation on anger for a target recall of {}",
        plan.rounds, p.target
    );
    let task = Arc::new(EmotionTask { dev: Arc::clone(&p.dev), test: Arc::clone(&p.test), target: p.target });
    let (rows, fed_seconds) = follow(ctx, &plan, task).await?;
    let Some(last) = rows.last() else { anyhow::bail!("the emotion job committed no round") };
    let federated = outcome(&last.metrics, fed_seconds);

    eprintln!("emotion: training the centralized baseline on the pooled data...");
    let start = std::time::Instant::now();
    let central =
        TrainParams { local_epochs: plan.train.local_epochs * plan.rounds as u32, ..plan.train.clone() };
    let (spec, dev, test, target) = (p.spec.clone(), Arc::clone(&p.dev), Arc::clone(&p.test), p.target);
    let pooled = p.train.clone();
    let central_metrics = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let enc = emotion::encode(&spec, &pooled)?;
        let mut params = vec![0.0f32; spec.num_params()];
        emotion::train_local(&spec, &mut params, &enc, &central)?;
        calibrated_metrics(EmotionModel::from_params(spec, params)?, &dev, &test, target)
    })
    .await??;
    let centralized = outcome(&central_metrics, start.elapsed().as_secs_f64());
    let t = &plan.train;
    Ok(Summary {
        dataset: "GoEmotions (Ekman labels)".into(),
        labels: p.spec.labels.clone(),
        participants: ctx.participants,
        alpha: p.alpha,
        train_examples: p.train.len(),
        dev_examples: p.dev.len(),
        test_examples: p.test.len(),
        shard_sizes: p.shards.iter().map(Vec::len).collect(),
        target_anger_recall: p.target,
        secure_aggregation: ctx.secure_aggregation,
        train: serde_json::json!({
            "rounds": plan.rounds,
            "local_epochs": t.local_epochs,
            "learning_rate": t.learning_rate,
            "batch_size": t.batch_size,
            "l2": t.l2,
            "server_learning_rate": plan.server_learning_rate,
            "server_momentum": plan.server_momentum,
        }),
        rounds: rows.into_iter().map(|e| e.row).collect(),
        federated,
        centralized,
        paper_baseline: Paper {
            model: "BERT-base, the dataset paper (Demszky et al. 2020), centralized, no privacy",
            macro_f1: PAPER_BERT_MACRO_F1,
        },
    })
}

pub(crate) fn print_final(s: &Summary) {
    println!();
    println!(
        "emotion ({}; anger escalates at the threshold chosen on dev for recall >= {})",
        s.dataset, s.target_anger_recall
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "macro_f1", "anger_R", "anger_P", "escalate", "seconds"
    );
    for (name, o) in [("federated", &s.federated), ("centralized", &s.centralized)] {
        println!(
            "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.3} {:>9.1}",
            name, o.macro_f1, o.anger_recall, o.anger_precision, o.escalation_threshold, o.train_seconds
        );
    }
    println!("{:<12} {:>9.4}   ({})", "paper", s.paper_baseline.macro_f1, s.paper_baseline.model);
    let per: Vec<String> = s.federated.per_class_f1.iter().map(|(l, f)| format!("{l} {f:.3}")).collect();
    println!("federated per-label F1: {}", per.join(", "));
    println!(
        "federated - centralized macro-F1: {:+.2} points",
        100.0 * (s.federated.macro_f1 - s.centralized.macro_f1)
    );
}
