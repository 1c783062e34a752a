//! The intent task: CLINC150 (or the user's own `--train`/`--test` files) split over the institutions
//! with a seeded Dirichlet draw over the label; accuracy, macro-F1, in-scope accuracy and out-of-scope
//! recall per round, federated beside centralized. Its summary keys are the top level of `--json`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hearth_models::{
    choose_oos_threshold, dirichlet_split, encode, evaluate, parse_clinc150, train_local, Example,
    FeatureConfig, IntentModel, IntentSpec, Metrics, ModelSpec, TrainParams,
};
use hearth_proto::v1;
use serde::Serialize;

use super::{follow, Ctx, DemoArgs, Task};

/// One row of the per-round table.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRow {
    pub round: u64,
    pub participants: u32,
    pub train_loss: f32,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
    pub seconds: f64,
}

/// Final metrics of one way of training.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
    pub oos_threshold: Option<f32>,
    pub train_seconds: f64,
}

/// The intent part of the summary (the top level of `--json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dataset: String,
    pub seed: u64,
    pub participants: usize,
    pub alpha: f64,
    pub train_examples: usize,
    pub test_examples: usize,
    pub shard_sizes: Vec<usize>,
    pub model: serde_json::Value,
    pub train: serde_json::Value,
    /// Whether rounds were securely aggregated (the coordinator saw only sums).
    pub secure_aggregation: bool,
    pub rounds: Vec<RoundRow>,
    pub federated: Outcome,
    pub centralized: Outcome,
    pub top_confusions: Vec<hearth_models::Confusion>,
    /// Each tier that ran (`fast`, and `encoder` with `--tier encoder`): its federated and centralized
    /// figures; with both, also `cascade`, the two as served (the fast tier's model answers the queries
    /// it is sure of, the encoder tier's the rest). The top-level figures are the last tier's model's.
    pub tiers: std::collections::BTreeMap<String, TierOutcome>,
    /// `--dp`: the same task trained with differential privacy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private: Option<Private>,
}

/// One tier's results.
#[derive(Debug, Clone, Serialize)]
pub struct TierOutcome {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
    pub centralized: Outcome,
    pub federated: Outcome,
    /// The tier's parameters (the cascade: both models').
    pub num_params: usize,
    /// The tier's job (absent for the cascade, which has none of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_momentum: Option<f32>,
    /// The cascade: the fast model's confidence at which it answers alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cascade_confidence: Option<f32>,
    /// The cascade: the share of test queries the fast tier's federated model answered alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by_fast: Option<f64>,
}

/// The differentially private run (`--dp`).
#[derive(Debug, Clone, Serialize)]
pub struct Private {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
    /// Record-level epsilon the job actually spent, as the coordinator's budget ledger charged it.
    pub epsilon: f64,
    /// The epsilon the final model's card states (the same accounting: the job is charged at the delta
    /// its card states).
    pub card_epsilon: Option<f64>,
    pub delta: f64,
    /// The target the noise was calibrated for.
    pub target_epsilon: f64,
    pub noise_multiplier: f64,
    pub clipping_norm: f64,
    pub sampling_rate: f64,
    pub rounds: u64,
    pub feature_dim: u32,
    /// The tier of the private model: `encoder` (n-grams and the sentence embedding) or `fast`.
    pub tier: &'static str,
    pub num_params: usize,
    pub train_seconds: f64,
    pub rows: Vec<RoundRow>,
}

/// What the DP run needs after the other tasks ran (it runs last: the privacy policy it installs makes
/// every later job private).
pub(crate) struct PrivateInputs {
    labels: Vec<String>,
    /// The encoder tier ran: the private model reads the embeddings too.
    encoder: bool,
    val: Arc<Vec<Example>>,
    test: Arc<Vec<Example>>,
    declared_records: u64,
}

/// The DP configuration of `--dp`: the one `models/tests/clinc150_dp_simulation.rs` measures.
const DP: hearth_models::IntentDpPreset = hearth_models::INTENT_DP_PRESET;

/// The dataset and its split over the institutions.
pub(crate) struct Prepared {
    name: String,
    train: Vec<Example>,
    val: Arc<Vec<Example>>,
    test: Arc<Vec<Example>>,
    spec: IntentSpec,
    shards: Vec<Vec<Example>>,
    alpha: f64,
    /// `--tier encoder`: every text carries its embedding, and the encoder-tier job runs after the fast one.
    encoder: bool,
}

impl Prepared {
    /// What `run_private` needs.
    pub(crate) fn private_inputs(&self) -> PrivateInputs {
        PrivateInputs {
            labels: self.spec.labels.clone(),
            encoder: self.encoder,
            val: Arc::clone(&self.val),
            test: Arc::clone(&self.test),
            declared_records: self.train.len() as u64,
        }
    }

    /// Institution `i`'s examples.
    pub(crate) fn shard(&self, i: usize) -> &[Example] {
        self.shards.get(i).map_or(&[], Vec::as_slice)
    }

    /// Imports institution `i`'s examples into its store, with their embeddings when the encoder tier
    /// runs (sealed beside the texts, as `hearth data import` stores them).
    pub(crate) fn import_into(
        &self,
        store: &hearth_participant::store::Store,
        i: usize,
    ) -> anyhow::Result<()> {
        let shard = self.shard(i);
        store.import(shard)?;
        if self.encoder {
            let missing = store.unembedded()?;
            anyhow::ensure!(
                missing.len() == shard.len(),
                "institution {i}'s store held examples before the demo"
            );
            let rows = missing
                .into_iter()
                .zip(shard)
                .filter_map(|((key, _), e)| e.embedding.as_ref().map(|v| (key, v.to_vec())))
                .collect::<Vec<_>>();
            store.save_embeddings(&rows)?;
        }
        Ok(())
    }
}

/// Loads CLINC150 (or the user's files) and splits it.
pub(crate) fn prepare(a: &DemoArgs, data: &Path, mp: &indicatif::MultiProgress) -> anyhow::Result<Prepared> {
    let (name, mut train, mut val, mut test) = if let (Some(train), Some(test)) = (&a.train, &a.test) {
        let val = match &a.val {
            Some(v) => crate::data::read_labelled(v)?,
            None => vec![],
        };
        let name = format!("{} / {}", train.display(), test.display());
        (name, crate::data::read_labelled(train)?, val, crate::data::read_labelled(test)?)
    } else {
        let path = a.clinc150.clone().unwrap_or_else(|| data.join("clinc150/data_full.json"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading CLINC150 from {} (set --data-dir, --clinc150 or HEARTH_CLINC150)",
                path.display()
            )
        })?;
        let d = parse_clinc150(&text).with_context(|| format!("parsing {}", path.display()))?;
        ("clinc150".to_string(), d.train, d.val, d.test)
    };
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let spec = IntentSpec::new(labels, FeatureConfig::default())?;
    let encoder = a.tier == super::Tier::Encoder;
    if encoder {
        super::embeddings::attach(
            &name,
            &mut [&mut train, &mut val, &mut test],
            &super::embeddings::cache_dir(),
            mp,
        )?;
    }
    let split = dirichlet_split(&train, a.participants, a.alpha, a.seed)?;
    let sizes: Vec<usize> = split.shards.iter().map(Vec::len).collect();
    eprintln!(
        "intent: {name}: {} train / {} test examples, {} labels; Dirichlet({}) split over {} institutions: {sizes:?}",
        train.len(),
        test.len(),
        spec.labels.len(),
        a.alpha,
        a.participants,
    );
    Ok(Prepared {
        name,
        train,
        val: Arc::new(val),
        test: Arc::new(test),
        spec,
        shards: split.shards,
        alpha: a.alpha,
        encoder,
    })
}

fn evaluate_with_threshold(model: &mut IntentModel, val: &[Example], test: &[Example]) -> Metrics {
    model.oos_threshold = if val.is_empty() { None } else { Some(choose_oos_threshold(model, val)) };
    evaluate(model, test)
}

/// A committed round's evaluation: the table row and what the final summary needs.
pub(crate) struct Evaluated {
    row: RoundRow,
    metrics: Metrics,
    oos_threshold: Option<f32>,
}

struct IntentTask {
    val: Arc<Vec<Example>>,
    test: Arc<Vec<Example>>,
    /// The newest round evaluated and its model, with its out-of-scope threshold.
    last: std::sync::Mutex<Option<(u64, IntentModel)>>,
}

impl Task for IntentTask {
    type Row = Evaluated;

    fn header(&self) -> String {
        format!(
            "{:>5} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "round", "participants", "train_loss", "accuracy", "macro_f1", "in_scope", "oos_rec"
        )
    }

    fn evaluate(&self, s: &v1::RoundSummary, spec: ModelSpec, params: Vec<f32>) -> anyhow::Result<Evaluated> {
        let ModelSpec::Intent(spec) = spec else {
            anyhow::bail!("the intent job's model is a {}", spec.family())
        };
        let mut model = IntentModel::from_params(spec, params)?;
        let m = evaluate_with_threshold(&mut model, &self.val, &self.test);
        let row = RoundRow {
            round: s.round,
            participants: s.participants,
            train_loss: s.train_loss,
            accuracy: m.accuracy,
            macro_f1: m.macro_f1,
            in_scope_accuracy: m.in_scope_accuracy,
            oos_recall: m.oos_recall,
            seconds: s.seconds,
        };
        let oos_threshold = model.oos_threshold;
        // Rounds are evaluated concurrently: keep the latest.
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_ref().is_none_or(|(r, _)| *r < row.round) {
            *last = Some((row.round, model));
        }
        Ok(Evaluated { row, metrics: m, oos_threshold })
    }

    fn line(&self, e: &Evaluated) -> String {
        let r = &e.row;
        format!(
            "{:>5} {:>12} {:>10.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            r.round, r.participants, r.train_loss, r.accuracy, r.macro_f1, r.in_scope_accuracy, r.oos_recall
        )
    }
}

/// What one tier's job and its centralized baseline gave.
struct TierRun {
    rows: Vec<Evaluated>,
    federated: Outcome,
    centralized: Outcome,
    federated_metrics: Metrics,
    spec: IntentSpec,
    plan: crate::operator::JobPlan,
    /// The final federated model and the centralized one, thresholds set.
    models: (IntentModel, IntentModel),
}

fn outcome(m: &Metrics, t: Option<f32>, secs: f64) -> Outcome {
    Outcome {
        accuracy: m.accuracy,
        macro_f1: m.macro_f1,
        in_scope_accuracy: m.in_scope_accuracy,
        oos_recall: m.oos_recall,
        oos_threshold: t,
        train_seconds: secs,
    }
}

/// Runs one tier's federated job and its centralized baseline.
async fn run_tier(
    ctx: &mut Ctx,
    p: &Prepared,
    spec: IntentSpec,
    job_id: &str,
    tier: &str,
) -> anyhow::Result<TierRun> {
    let plan = ctx.plan(job_id, ModelSpec::Intent(spec.clone()));
    eprintln!(
        "intent ({tier} tier): federated training, {} rounds, {} parameters",
        plan.rounds,
        spec.num_params()
    );
    let task =
        Arc::new(IntentTask { val: Arc::clone(&p.val), test: Arc::clone(&p.test), last: Default::default() });
    let (rows, fed_seconds) = follow(ctx, &plan, Arc::clone(&task)).await?;
    let fed_model = task.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let Some((_, fed_model)) = fed_model else { anyhow::bail!("the intent job committed no round") };
    let Some(last) = rows.last() else { anyhow::bail!("the intent job committed no round") };
    let (fed_metrics, fed_threshold) = (last.metrics.clone(), last.oos_threshold);

    // Centralized baseline: same model, same hyper-parameters, the same number of passes over the data.
    eprintln!("intent ({tier} tier): training the centralized baseline on the pooled data...");
    let central_start = std::time::Instant::now();
    let (spec2, pooled, val, test) = (spec.clone(), p.train.clone(), Arc::clone(&p.val), Arc::clone(&p.test));
    let central_params =
        TrainParams { local_epochs: plan.train.local_epochs * plan.rounds as u32, ..plan.train.clone() };
    let (central_metrics, central_model) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let enc = encode(&spec2, &pooled)?;
        let mut params = vec![0.0f32; spec2.num_params()];
        train_local(&spec2, &mut params, &enc, &central_params)?;
        let mut model = IntentModel::from_params(spec2, params)?;
        let m = evaluate_with_threshold(&mut model, &val, &test);
        Ok((m, model))
    })
    .await??;
    let central_threshold = central_model.oos_threshold;
    let central_seconds = central_start.elapsed().as_secs_f64();
    Ok(TierRun {
        rows,
        federated: outcome(&fed_metrics, fed_threshold, fed_seconds),
        centralized: outcome(&central_metrics, central_threshold, central_seconds),
        federated_metrics: fed_metrics,
        spec,
        plan,
        models: (fed_model, central_model),
    })
}

/// The two tiers as served: the fast tier's model answers the test queries it is sure of, the encoder
/// tier's the rest; federated and centralized.
fn cascade(fast: &TierRun, encoder: &TierRun, test: &[Example]) -> anyhow::Result<TierOutcome> {
    let confidence = hearth_models::cascade::CASCADE_CONFIDENCE;
    let run = |f: &IntentModel, e: &IntentModel| -> anyhow::Result<_> {
        let c = hearth_models::cascade::Cascade::new(f, e, confidence)?;
        Ok(hearth_models::cascade::evaluate_cascade(&c, test)?)
    };
    let fed = run(&fast.models.0, &encoder.models.0)?;
    let central = run(&fast.models.1, &encoder.models.1)?;
    let f = &fed.metrics;
    Ok(TierOutcome {
        accuracy: f.accuracy,
        macro_f1: f.macro_f1,
        in_scope_accuracy: f.in_scope_accuracy,
        oos_recall: f.oos_recall,
        federated: outcome(f, None, fast.federated.train_seconds + encoder.federated.train_seconds),
        centralized: outcome(
            &central.metrics,
            None,
            fast.centralized.train_seconds + encoder.centralized.train_seconds,
        ),
        num_params: fast.spec.num_params() + encoder.spec.num_params(),
        rounds: None,
        learning_rate: None,
        server_momentum: None,
        cascade_confidence: Some(confidence),
        answered_by_fast: Some(fed.answered_by_fast),
    })
}

/// Runs the fast tier's federated job and centralized baseline, then the encoder tier's when it was
/// asked for; the last one run is the served model and gives the top-level figures.
pub(crate) async fn run(ctx: &mut Ctx, p: Prepared, a: &DemoArgs) -> anyhow::Result<Summary> {
    let mut runs = vec![("fast", run_tier(ctx, &p, p.spec.clone(), "demo-intent", "fast").await?)];
    if p.encoder {
        let spec = IntentSpec::encoder_tier(p.spec.labels.clone())?;
        runs.push(("encoder", run_tier(ctx, &p, spec, "demo-intent-encoder", "encoder").await?));
    }
    let mut tiers: std::collections::BTreeMap<String, TierOutcome> = runs
        .iter()
        .map(|(name, r)| {
            let f = &r.federated;
            let o = TierOutcome {
                accuracy: f.accuracy,
                macro_f1: f.macro_f1,
                in_scope_accuracy: f.in_scope_accuracy,
                oos_recall: f.oos_recall,
                centralized: r.centralized.clone(),
                federated: r.federated.clone(),
                num_params: r.spec.num_params(),
                rounds: Some(r.plan.rounds),
                learning_rate: Some(r.plan.train.learning_rate),
                server_momentum: Some(r.plan.server_momentum),
                cascade_confidence: None,
                answered_by_fast: None,
            };
            (name.to_string(), o)
        })
        .collect();
    if let [(_, fast), (_, encoder)] = &runs[..] {
        tiers.insert("cascade".into(), cascade(fast, encoder, &p.test)?);
    }
    let Some((_, served)) = runs.pop() else { anyhow::bail!("no intent tier ran") };
    let train = served.plan.train.clone();
    Ok(Summary {
        dataset: p.name,
        seed: a.seed,
        participants: a.participants,
        alpha: p.alpha,
        train_examples: p.train.len(),
        test_examples: p.test.len(),
        shard_sizes: p.shards.iter().map(Vec::len).collect(),
        model: serde_json::json!({
            "family": "intent",
            "labels": served.spec.labels.len(),
            "features": served.spec.features,
            "num_params": served.spec.num_params(),
        }),
        train: serde_json::json!({
            "rounds": served.plan.rounds,
            "local_epochs": train.local_epochs,
            "learning_rate": train.learning_rate,
            "batch_size": train.batch_size,
            "l2": train.l2,
        }),
        secure_aggregation: ctx.secure_aggregation,
        rounds: served.rows.into_iter().map(|e| e.row).collect(),
        federated: served.federated,
        centralized: served.centralized,
        top_confusions: served.federated_metrics.confusions.iter().take(5).cloned().collect(),
        tiers,
        private: None,
    })
}

/// `--dp`: installs a DPO policy (every institution: record-level epsilon 8, delta 1e-5 for family
/// `intent`), then trains the intent model with DP-SGD under secure aggregation, the noise calibrated
/// so that the job's accounted epsilon is within the budget, and reads back what the ledger charged.
pub(crate) async fn run_private(ctx: &mut Ctx, p: PrivateInputs) -> anyhow::Result<Private> {
    let n = ctx.participants as u32;
    // The noise is complete with every institution's share: a round that loses one is aborted before
    // unmasking and retried. (Calibrating for 4 of 5 survivors adds a quarter more noise when all 5 answer,
    // which costs about a point of accuracy: the sweep in `models/tests/clinc150_dp_simulation.rs`.)
    let min_survivors = n.max(1);
    let (epsilon, delta, clip) = (DP.target.epsilon, DP.target.delta, DP.clip_norm);
    let mut policy = String::from("# Installed by `hearth demo --dp`.\n");
    for i in 1..=n {
        policy.push_str(&format!(
            "[tenants.institution-{i}.families.intent]\nepsilon = {epsilon}\ndelta = {delta}\n\
             delta_per_charge = {delta}\nprivacy_unit = \"record\"\nclipping_norm = {clip}\n\
             min_participants = {min_survivors}\n\n"
        ));
    }
    let info = crate::budget::install_policy(&ctx.conn, policy).await?;
    eprintln!("intent (DP): privacy policy version {} installed (signed by the DPO)", info.version);
    // Each institution's own DPO signs a budget for its participant, which charges its own ledger: a
    // quarter more than the job's, room for a retried round (a fresh release, charged again).
    let (local, local_delta) = (epsilon * 1.25, delta * 2.0);
    for i in 1..=n {
        let institution = format!("institution-{i}");
        let dir = ctx.conn.tls_dir.join(&institution);
        let source = dir.join("privacy-policy.toml");
        std::fs::write(
            &source,
            format!(
                "# Installed by `hearth demo --dp`: {institution}'s own policy, signed by its DPO.\n\
                 [tenants.{institution}.families.intent]\nepsilon = {local}\ndelta = {local_delta}\n\
                 delta_per_charge = {delta}\nprivacy_unit = \"record\"\nclipping_norm = {clip}\n\
                 min_participants = {min_survivors}\n"
            ),
        )
        .with_context(|| format!("writing {}", source.display()))?;
        let signed = dir.join(hearth_participant::privacy::SIGNED_POLICY_FILE);
        crate::budget::sign_institution_policy(&source, &dir.join("dpo"), &signed)?;
    }
    eprintln!("intent (DP): each institution's DPO signed its own policy for its participant");

    let spec = IntentSpec::new(p.labels.clone(), DP.features(p.encoder))?;
    let rounds = ctx.rounds.unwrap_or(DP.rounds);
    let num_params = spec.num_params();
    let base = hearth_models::DpParams {
        clip_norm: DP.clip_norm,
        sampling_rate: DP.sampling_rate,
        noise_multiplier: 1.0,
        rounds,
        min_survivors,
        bias_scale: DP.bias_scale,
    };
    let target = DP.target;
    let sigma = crate::operator::calibrate(base, target, p.declared_records, n, num_params as u64)?;
    let mut plan = ctx.plan("demo-intent-dp", ModelSpec::Intent(spec.clone()));
    plan.rounds = rounds;
    plan.min_participants = min_survivors;
    plan.server_learning_rate = DP.server_learning_rate_for(p.encoder) as f32;
    plan.server_momentum = DP.server_momentum as f32;
    plan.privacy = Some(v1::PrivacySpec {
        family: "intent".into(),
        clipping_norm: DP.clip_norm,
        noise_multiplier: sigma,
        sampling_rate: DP.sampling_rate,
        privacy_unit: "record".into(),
        min_survivors,
        declared_records: p.declared_records,
        bias_scale: DP.bias_scale,
        max_cohort: n,
        delta: DP.target.delta,
        rounds,
    });
    eprintln!(
        "intent (DP): {rounds} rounds of DP-SGD on {num_params} parameters, clip {clip}, noise multiplier \
         {sigma:.3} (each of {n} participants adds a share; the sum is private while {min_survivors} survive)"
    );
    let task =
        Arc::new(IntentTask { val: Arc::clone(&p.val), test: Arc::clone(&p.test), last: Default::default() });
    let (rows, seconds) = follow(ctx, &plan, task).await?;
    let Some(last) = rows.last() else { anyhow::bail!("the DP intent job committed no round") };
    let m = last.metrics.clone();

    // What the ledger charged: the largest spend of this job at any institution.
    let mut privacy = v1::privacy_client::PrivacyClient::new(ctx.conn.channel_as("operator").await?);
    let report =
        privacy.get_budget(v1::GetBudgetRequest {}).await.context("reading the budgets")?.into_inner();
    let report: serde_json::Value = serde_json::from_str(&report.report_json)?;
    let epsilon = report["families"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|line| line["charges"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["key"] == "job:demo-intent-dp")
        .filter_map(|c| c["spent"]["epsilon"].as_f64())
        .fold(f64::NAN, f64::max);
    if !epsilon.is_finite() {
        anyhow::bail!("the budget ledger shows no charge for the DP job");
    }
    let mut client = ctx.conn.connect().await?;
    let card_epsilon =
        crate::operator::model_card(&mut client, "demo-intent-dp", 0).await?.and_then(|c| c.privacy?.epsilon);
    Ok(Private {
        card_epsilon,
        accuracy: m.accuracy,
        macro_f1: m.macro_f1,
        in_scope_accuracy: m.in_scope_accuracy,
        oos_recall: m.oos_recall,
        epsilon,
        delta: DP.target.delta,
        target_epsilon: DP.target.epsilon,
        noise_multiplier: sigma,
        clipping_norm: DP.clip_norm,
        sampling_rate: DP.sampling_rate,
        rounds,
        feature_dim: DP.feature_dim,
        tier: if p.encoder { "encoder" } else { "fast" },
        num_params,
        train_seconds: seconds,
        rows: rows.into_iter().map(|e| e.row).collect(),
    })
}

pub(crate) fn print_final(s: &Summary) {
    println!();
    println!("intent ({}, {} labels)", s.dataset, s.model["labels"]);
    if s.tiers.len() > 1 {
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>9}   (federated)",
            "tier", "accuracy", "macro_f1", "in_scope", "oos_rec"
        );
        for (name, t) in &s.tiers {
            println!(
                "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
                name, t.accuracy, t.macro_f1, t.in_scope_accuracy, t.oos_recall
            );
        }
        if let Some(c) = s.tiers.get("cascade") {
            println!(
                "served: the cascade, in which the fast tier's model answered {:.0}% of the test queries alone \
                 (confidence >= {}); the encoder tier's model's federated and centralized figures:",
                100.0 * c.answered_by_fast.unwrap_or(0.0),
                c.cascade_confidence.unwrap_or(0.0)
            );
        } else {
            println!("served: the last tier above; its federated and centralized figures:");
        }
    }
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "accuracy", "macro_f1", "in_scope", "oos_rec", "seconds"
    );
    for (name, o) in [("federated", &s.federated), ("centralized", &s.centralized)] {
        println!(
            "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.1}",
            name, o.accuracy, o.macro_f1, o.in_scope_accuracy, o.oos_recall, o.train_seconds
        );
    }
    if let Some(p) = &s.private {
        println!(
            "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.1}   epsilon {:.3} at delta {} (record level, as charged)",
            "private", p.accuracy, p.macro_f1, p.in_scope_accuracy, p.oos_recall, p.train_seconds, p.epsilon, p.delta
        );
        println!("private - federated accuracy: {:+.2} points", 100.0 * (p.accuracy - s.federated.accuracy));
    }
    println!(
        "federated - centralized accuracy: {:+.2} points",
        100.0 * (s.federated.accuracy - s.centralized.accuracy)
    );
}
