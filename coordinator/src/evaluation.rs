//! Federated evaluation: after each committed round of an intent or emotion job, the institutions that
//! contributed evaluate the new global model on their own held-out data and send their counts (examples,
//! correct (emotion: exact matches), per-label true and false positives and false negatives:
//! `hearth_models::evaluation_bins`) masked through secure aggregation. The coordinator unmasks only the sums, from which accuracy, macro-F1 and
//! out-of-scope recall over everyone's held-out data follow exactly; they go into the round's record, the
//! job's events and the model card.
//!
//! It runs only where it reveals nothing the job does not: jobs without differential privacy (exact
//! counts are not a DP release; a participant refuses them for a job it trained under DP), and cohorts
//! of at least three and at least the job's `min_participants`; a participant's own policy must list the
//! family, as for the job's rounds. A failed evaluation is logged and audited; the
//! round stays committed.

use std::sync::Arc;
use std::time::Duration;

use hearth_audit::{Action, Outcome};
use hearth_models::ModelSpec;
use hearth_proto::v1::{self, announcement};

use crate::audit::now_ms;
use crate::driver::{run_secure_round, SecureEvent, SecureRoundSpec, Shared};
use crate::error::RoundError;
use crate::store::{JobRecord, RoundEvaluation};

/// Why a round's model was not evaluated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Skipped {
    #[error("{0} models have no federated evaluation yet")]
    Family(&'static str),
    #[error("a differentially private job releases no exact counts")]
    Private,
    #[error("{connected} of the round's contributors are connected; evaluation needs {needed}")]
    TooFew { connected: usize, needed: u32 },
    #[error("{0}")]
    Round(RoundError),
    #[error("the summed counts do not fit the model's {0} labels")]
    Layout(usize),
}

/// Evaluates version `version` of `rec`'s model with the contributors of the round that made it.
pub(crate) async fn evaluate(
    shared: &Arc<Shared>,
    rec: &JobRecord,
    version: u64,
    contributors: &[String],
) -> Result<RoundEvaluation, Skipped> {
    let spec =
        ModelSpec::from_json(rec.model_spec_json.as_bytes()).map_err(|_| Skipped::Family("unknown"))?;
    let labels = match &spec {
        ModelSpec::Intent(s) => s.labels.clone(),
        ModelSpec::Emotion(s) => s.labels.clone(),
        other => return Err(Skipped::Family(other.family())),
    };
    let family = spec.family().to_string();
    if rec.privacy.is_some() {
        return Err(Skipped::Private);
    }
    let needed = rec.min_participants.max(3);
    let connected = shared.connected();
    let invited: Vec<String> = contributors.iter().filter(|c| connected.contains(*c)).cloned().collect();
    if invited.len() < needed as usize {
        return Err(Skipped::TooFew { connected: invited.len(), needed });
    }
    let bins = hearth_models::evaluation_bins(&labels);
    let deadline_s = u64::from(rec.round_deadline_s);
    let deadline_unix_ms = now_ms() + deadline_s * 1000;
    let round_spec = SecureRoundSpec {
        key: hearth_proto::eval_key(&rec.id),
        round: version,
        min_participants: needed,
        min_survivors: needed,
        deadline: Duration::from_secs(deadline_s),
        vector_len: bins.len(),
        // Counts are integers: the quantiser's scale does not apply (participants encode them directly).
        clip: 1.0,
        weight_cap: 1.0,
        noise: None,
    };
    let job_id = rec.id.clone();
    let open = |setup: v1::SecAggSetup| {
        announcement::Kind::Eval(v1::EvalOpen {
            job_id: job_id.clone(),
            version,
            deadline_unix_ms,
            secagg: Some(setup),
            bins: bins.clone(),
            family: family.clone(),
        })
    };
    let (counts, institutions) = run_secure_round(
        shared,
        round_spec,
        invited.into_iter().collect(),
        open,
        |_: SecureEvent| {},
        |r, sum| {
            // Two's-complement 32-bit counts: the only values decoded are the sums.
            let counts: Vec<f64> = sum.values().iter().map(|v| f64::from(*v as i32)).collect();
            Ok((counts, r.contributors(sum).len() as u32))
        },
    )
    .await
    .map_err(Skipped::Round)?;
    let m = hearth_models::metrics_from_counts(labels.len(), &counts).ok_or(Skipped::Layout(labels.len()))?;
    Ok(RoundEvaluation {
        examples: m.examples as u64,
        institutions,
        accuracy: m.accuracy,
        macro_f1: m.macro_f1,
        in_scope_accuracy: m.in_scope_accuracy,
        oos_recall: m.oos_recall,
        oos_examples: counts[4].max(0.0) as u64,
    })
}

/// Runs [`evaluate`] and puts the outcome on record; `None` when it did not run or failed.
pub(crate) async fn evaluate_and_audit(
    shared: &Arc<Shared>,
    rec: &JobRecord,
    version: u64,
    contributors: &[String],
) -> Option<RoundEvaluation> {
    match evaluate(shared, rec, version, contributors).await {
        Ok(e) => {
            shared.audit.record(
                "system",
                Action::ModelEvaluate,
                Outcome::Ok,
                &format!(
                    "job {} version {version}: accuracy {:.4}, macro-F1 {:.4}, out-of-scope recall {:.4} on {} \
                     held-out examples of {} institutions (sums only)",
                    rec.id, e.accuracy, e.macro_f1, e.oos_recall, e.examples, e.institutions
                ),
            );
            tracing::info!(job = %rec.id, version, accuracy = e.accuracy, macro_f1 = e.macro_f1, "round evaluated");
            Some(e)
        }
        Err(Skipped::Family(_) | Skipped::Private) => None,
        Err(e) => {
            tracing::warn!(job = %rec.id, version, error = %e, "federated evaluation did not run");
            shared.audit.record(
                "system",
                Action::ModelEvaluate,
                Outcome::Error,
                &format!("job {} version {version}: {e}", rec.id),
            );
            None
        }
    }
}

/// The wire form.
pub(crate) fn to_proto(e: &RoundEvaluation) -> v1::RoundEvaluation {
    v1::RoundEvaluation {
        examples: e.examples,
        institutions: e.institutions,
        accuracy: e.accuracy,
        macro_f1: e.macro_f1,
        in_scope_accuracy: e.in_scope_accuracy,
        oos_recall: e.oos_recall,
        oos_examples: e.oos_examples,
    }
}
