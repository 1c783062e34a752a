//! A submitted job, checked: [`ValidatedJob::check`] refuses, saying what to change, everything that would
//! otherwise fail at round 1 (an unknown model, numbers out of range, a cohort secure aggregation cannot
//! hide in, fields that contradict each other, a DP section that does not fit its rounds, a job the
//! consortium's round policy forbids). What it returns holds only values a round can run with; the service
//! then reserves budget, persists and audits it in separate steps.

use hearth_models::ModelSpec;
use hearth_policies::{JobShape, RoundPolicy};
use hearth_proto::v1;
use hearth_secagg::GraphRule;

use crate::error::JobPrivacyError;
use crate::store::{JobPhase, JobPrivacy, JobRecord, StoredTrain};

/// Longest `data_description` a job may carry.
const MAX_DATA_DESCRIPTION_BYTES: usize = 1000;

/// Why a job was refused at submission. Each message names the field and what to change.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitRefusal {
    #[error("model spec: {0}")]
    Model(hearth_models::ModelError),
    #[error("{field} {value} must be in {range}")]
    Range { field: &'static str, value: f64, range: String },
    #[error(
        "min_participants {0} is below 3: a securely aggregated sum of two updates would show each of the two \
         the other's update (set secure_aggregation = false to opt out of secure aggregation)"
    )]
    CohortBelowThree(u32),
    #[error(
        "min_participants {min_participants}: secure aggregation has no graph for this cohort: {source}"
    )]
    NoGraph { min_participants: u32, source: hearth_secagg::SecAggError },
    #[error(
        "participants_per_round {per_round} invites fewer than min_participants {min_participants}: no round \
         could commit (raise participants_per_round, or 0 to invite every participant)"
    )]
    PerRoundBelowMinimum { per_round: u32, min_participants: u32 },
    #[error(
        "escalation_target_recall {0} must be in (0, 1] for an emotion job: the recall of anger that each \
         participant's escalation threshold must reach, as the policy states it (e.g. 0.7)"
    )]
    EscalationRecall(f32),
    #[error("escalation_target_recall {recall} applies to emotion jobs only; this is a {family} job")]
    EscalationNotEmotion { recall: f32, family: &'static str },
    #[error(
        "data_description must be at most {MAX_DATA_DESCRIPTION_BYTES} bytes without control characters"
    )]
    Description,
    #[error(
        "an emotion model with an encoder block (features.encoder) cannot train yet: participants embed \
         their intent texts only, so every round would fail; train the emotion model on n-grams alone"
    )]
    EmotionEncoder,
    #[error("train parameters are missing")]
    NoTrain,
    #[error("policy: {0}")]
    Policy(hearth_policies::PolicyError),
    #[error(
        "the consortium's privacy policy is in force and requires {0} jobs to be differentially private (give \
         the job a [privacy] section: family, target_epsilon or noise_multiplier, declared_records; \
         deploy/job-intent-dp.toml is a complete example). The policy's private_model_families says which \
         model families it covers"
    )]
    PrivacyRequired(&'static str),
    #[error("{0}")]
    Privacy(JobPrivacyError),
    #[error(
        "a differentially private job moves its model by at most server_learning_rate x clipping_norm / \
         (1 - server_momentum) per round: {step} here, so its {rounds} rounds reach at most {reach} in \
         parameter norm, too little for a model to learn (the measured preset takes 200 x 0.1 / (1 - 0.9) \
         = 200 per round; raise server_learning_rate)"
    )]
    DpCannotLearn { step: f64, rounds: u64, reach: f64 },
}

/// A job that passed every check: what [`JobRecord`] is built from.
#[derive(Debug, Clone)]
pub(crate) struct ValidatedJob {
    pub(crate) model_spec_json: String,
    pub(crate) shape: JobShape,
    pub(crate) train: StoredTrain,
    pub(crate) participants_per_round: u32,
    pub(crate) wait_for_participants: u32,
    pub(crate) server_learning_rate: f32,
    pub(crate) server_momentum: f32,
    pub(crate) secure_aggregation: bool,
    pub(crate) secagg_clip: f64,
    pub(crate) secagg_weight_cap: f64,
    /// Its privacy section, without tenants or reservation yet.
    pub(crate) privacy: Option<JobPrivacy>,
    pub(crate) escalation_target_recall: Option<f32>,
    pub(crate) data_description: String,
    /// Points of the participants' held-out metric a new model may lose and still be served (negative:
    /// no gate).
    pub(crate) promotion_tolerance_points: f64,
}

fn range(field: &'static str, value: f64, ok: bool, range: impl Into<String>) -> Result<(), SubmitRefusal> {
    if ok {
        Ok(())
    } else {
        Err(SubmitRefusal::Range { field, value, range: range.into() })
    }
}

/// The smallest total step below which a DP job is refused: the model's parameters could not move further
/// than this from their start in all its rounds.
const DP_MIN_REACH: f64 = 10.0;

impl ValidatedJob {
    /// Checks `spec` against the coordinator's round policy; `privacy_required` says whether the
    /// consortium's privacy policy requires jobs of a model family to be differentially private.
    pub(crate) fn check(
        spec: &v1::JobSpec,
        policy: &RoundPolicy,
        privacy_required: &dyn Fn(&str) -> bool,
    ) -> Result<Self, SubmitRefusal> {
        let model = ModelSpec::from_json(&spec.model_spec_json).map_err(SubmitRefusal::Model)?;
        if matches!(&model, ModelSpec::Emotion(e) if e.features.needs_encoder()) {
            return Err(SubmitRefusal::EmotionEncoder);
        }
        let private = spec.privacy.is_some();
        let server_learning_rate =
            if spec.server_learning_rate == 0.0 { 1.0 } else { spec.server_learning_rate };
        // Federated averaging applies the mean update (a step of local training): at most 10 times it. A DP
        // job steps on the noisy mean gradient of single records, which takes a larger rate.
        let max_lr = if private { 10_000.0 } else { 10.0 };
        range(
            "server_learning_rate",
            f64::from(spec.server_learning_rate),
            server_learning_rate > 0.0 && server_learning_rate <= max_lr,
            format!("(0, {max_lr}]"),
        )?;
        range(
            "server_momentum",
            f64::from(spec.server_momentum),
            (0.0..=0.99).contains(&spec.server_momentum),
            "[0, 0.99]",
        )?;
        if let ModelSpec::Recommend(_) = model {
            // Its model is the customer-weighted average of the institutions' statistics itself.
            let why = "a recommend job's model is the average of what the institutions count";
            range(
                "server_learning_rate",
                f64::from(spec.server_learning_rate),
                server_learning_rate == 1.0,
                format!("{{1}}: {why}"),
            )?;
            range(
                "server_momentum",
                f64::from(spec.server_momentum),
                spec.server_momentum == 0.0,
                format!("{{0}}: {why}"),
            )?;
        }
        let secagg_clip =
            if spec.secagg_clip == 0.0 { crate::secagg::DEFAULT_CLIP } else { spec.secagg_clip };
        range(
            "secagg_clip",
            spec.secagg_clip,
            secagg_clip.is_finite() && secagg_clip > 0.0 && secagg_clip <= 1e6,
            "(0, 1e6]",
        )?;
        let secagg_weight_cap = if spec.secagg_weight_cap == 0.0 {
            crate::secagg::DEFAULT_WEIGHT_CAP
        } else {
            spec.secagg_weight_cap
        };
        range(
            "secagg_weight_cap",
            spec.secagg_weight_cap,
            (1.0..=1e12).contains(&secagg_weight_cap),
            "[1, 1e12]",
        )?;
        let secure_aggregation = !spec.plain_aggregation;
        if secure_aggregation {
            if spec.min_participants < 3 {
                return Err(SubmitRefusal::CohortBelowThree(spec.min_participants));
            }
            GraphRule::default().choose(spec.min_participants).map_err(|source| SubmitRefusal::NoGraph {
                min_participants: spec.min_participants,
                source,
            })?;
        }
        if spec.participants_per_round != 0 && spec.participants_per_round < spec.min_participants {
            return Err(SubmitRefusal::PerRoundBelowMinimum {
                per_round: spec.participants_per_round,
                min_participants: spec.min_participants,
            });
        }
        let escalation_target_recall = match (&model, spec.escalation_target_recall) {
            (ModelSpec::Emotion(_), t) if t > 0.0 && t <= 1.0 => Some(t),
            (ModelSpec::Emotion(_), t) => return Err(SubmitRefusal::EscalationRecall(t)),
            (_, 0.0) => None,
            (other, recall) => {
                return Err(SubmitRefusal::EscalationNotEmotion { recall, family: other.family() })
            }
        };
        if spec.data_description.len() > MAX_DATA_DESCRIPTION_BYTES
            || spec.data_description.chars().any(char::is_control)
        {
            return Err(SubmitRefusal::Description);
        }
        let train = spec.train.as_ref().ok_or(SubmitRefusal::NoTrain)?;
        let shape = JobShape {
            rounds: spec.rounds,
            min_participants: spec.min_participants,
            round_deadline_s: spec.round_deadline_s,
            num_params: model.num_params() as u64,
            local_epochs: train.local_epochs,
            learning_rate: train.learning_rate,
            batch_size: train.batch_size,
            l2: train.l2,
            plain_aggregation: spec.plain_aggregation,
        };
        policy.check(&shape).map_err(SubmitRefusal::Policy)?;
        let privacy = match spec.privacy.as_ref() {
            None if privacy_required(model.family()) => {
                return Err(SubmitRefusal::PrivacyRequired(model.family()))
            }
            None => None,
            Some(p) => {
                let j =
                    validate_privacy(p, spec, secure_aggregation, &model).map_err(SubmitRefusal::Privacy)?;
                let step = f64::from(server_learning_rate) * j.clipping_norm
                    / (1.0 - f64::from(spec.server_momentum));
                let reach = step * spec.rounds as f64;
                if reach < DP_MIN_REACH {
                    return Err(SubmitRefusal::DpCannotLearn { step, rounds: spec.rounds, reach });
                }
                Some(j)
            }
        };
        let promotion_tolerance_points = match spec.promotion_tolerance_points {
            0.0 => 1.0,
            t if t.is_finite() && t <= 100.0 => t,
            t => {
                return Err(SubmitRefusal::Range {
                    field: "promotion_tolerance_points",
                    value: t,
                    range: "at most 100 (negative: no promotion gate)".into(),
                })
            }
        };
        Ok(Self {
            promotion_tolerance_points,
            model_spec_json: String::from_utf8_lossy(&model.to_json()).into_owned(),
            shape,
            train: StoredTrain {
                local_epochs: train.local_epochs,
                learning_rate: train.learning_rate,
                batch_size: train.batch_size,
                l2: train.l2,
                seed: train.seed,
            },
            participants_per_round: spec.participants_per_round,
            wait_for_participants: spec.wait_for_participants,
            server_learning_rate,
            server_momentum: spec.server_momentum,
            secure_aggregation,
            secagg_clip,
            secagg_weight_cap,
            privacy,
            escalation_target_recall,
            data_description: spec.data_description.clone(),
        })
    }

    /// The job's record, running, with no round committed.
    pub(crate) fn into_record(self, id: String, sequence: u64, submitted_by: String) -> JobRecord {
        JobRecord {
            id,
            model_spec_json: self.model_spec_json,
            rounds: self.shape.rounds,
            train: self.train,
            participants_per_round: self.participants_per_round,
            min_participants: self.shape.min_participants,
            round_deadline_s: self.shape.round_deadline_s,
            wait_for_participants: self.wait_for_participants,
            submitted_by,
            phase: JobPhase::Running,
            committed: vec![],
            sequence,
            server_learning_rate: self.server_learning_rate,
            server_momentum: self.server_momentum,
            secure_aggregation: self.secure_aggregation,
            secagg_clip: self.secagg_clip,
            secagg_weight_cap: self.secagg_weight_cap,
            privacy: self.privacy,
            escalation_target_recall: self.escalation_target_recall,
            data_description: self.data_description,
            failure: String::new(),
            failures: Vec::new(),
            promotion_tolerance_points: self.promotion_tolerance_points,
        }
    }
}

/// Checks a job's privacy section; the tenants and reservation are filled in when the budget is reserved.
fn validate_privacy(
    p: &v1::PrivacySpec,
    spec: &v1::JobSpec,
    secure: bool,
    model: &ModelSpec,
) -> Result<JobPrivacy, JobPrivacyError> {
    use JobPrivacyError as E;
    if !matches!(model, ModelSpec::Intent(_)) {
        return Err(E::Family(model.family()));
    }
    if !secure {
        return Err(E::NotSecure);
    }
    hearth_crypto::pki::validate_node_id(&p.family).map_err(E::BudgetFamily)?;
    let range =
        |field, value: f64, ok: bool, range| if ok { Ok(()) } else { Err(E::Range { field, value, range }) };
    let clip = p.clipping_norm;
    range("clipping_norm", clip, clip.is_finite() && clip > 0.0 && clip <= 1e6, "(0, 1e6]")?;
    let z = p.noise_multiplier;
    range("noise_multiplier", z, z.is_finite() && z > 0.0 && z <= 1e4, "(0, 1e4]")?;
    range("sampling_rate", p.sampling_rate, p.sampling_rate > 0.0 && p.sampling_rate <= 1.0, "(0, 1]")?;
    let unit = if p.privacy_unit.is_empty() { "record".to_string() } else { p.privacy_unit.clone() };
    if unit != "record" {
        return Err(E::Unit(unit));
    }
    if p.declared_records == 0 || p.declared_records > 1_000_000_000_000 {
        return Err(E::DeclaredRecords(p.declared_records));
    }
    let bias_scale = if p.bias_scale == 0.0 { 1.0 } else { p.bias_scale };
    range("delta", p.delta, p.delta == 0.0 || (p.delta > 0.0 && p.delta < 1e-2), "(0, 0.01)")?;
    range("bias_scale", p.bias_scale, bias_scale > 0.0 && bias_scale <= 1.0, "(0, 1]")?;
    let max_cohort = match p.max_cohort {
        0 => spec.wait_for_participants.max(spec.participants_per_round).max(spec.min_participants),
        n => n,
    };
    if max_cohort < spec.min_participants || max_cohort > 10_000 {
        return Err(E::MaxCohort { max_cohort, min_participants: spec.min_participants });
    }
    let min_survivors = if p.min_survivors == 0 { spec.min_participants } else { p.min_survivors };
    if min_survivors == 0 || min_survivors > spec.min_participants.max(1) {
        return Err(E::MinSurvivors { min_survivors, min_participants: spec.min_participants });
    }
    let j = JobPrivacy {
        family: p.family.clone(),
        clipping_norm: p.clipping_norm,
        noise_multiplier: p.noise_multiplier,
        sampling_rate: p.sampling_rate,
        privacy_unit: unit,
        min_survivors,
        reservation: None,
        tenants: Vec::new(),
        declared_records: p.declared_records,
        bias_scale,
        max_cohort,
        dimension: model.num_params() as u64,
        delta: if p.delta == 0.0 { 1e-5 } else { p.delta },
    };
    // The rounds must have room for the noise: checked now rather than at the first round.
    j.config(spec.rounds)?.round_grid(j.round_shape(j.max_cohort))?;
    Ok(j)
}
