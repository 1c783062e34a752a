//! The model card the coordinator hands out with every model version (`ModelHeader.model_card_json`):
//! which data, which rounds and which privacy protections produced it. The coordinator is the one party
//! that knows all of it (who contributed to each round, how the rounds were aggregated); participants
//! copy the card into the model files they keep and add what they calibrated locally.
//!
//! It never describes any single participant's data beyond what the round records already hold: how
//! many institutions contributed and the examples behind the last round's aggregate.

use std::collections::BTreeSet;

use hearth_models::{DataCard, ModelCard, PrivacyCard, TrainParams, TrainingCard};

use crate::store::JobRecord;

/// The card of version `version` of the job `rec`, a model of family `family`.
pub(crate) fn model_card(rec: &JobRecord, family: &str, version: u64) -> ModelCard {
    let rounds: Vec<_> = rec.committed.iter().filter(|r| r.version <= version).collect();
    let institutions: BTreeSet<&str> =
        rounds.iter().flat_map(|r| r.contributors.iter().map(String::as_str)).collect();
    let examples = rounds.last().map_or(0, |r| r.examples);
    let per_round: Vec<u32> = rounds.iter().map(|r| r.participants).collect();
    let (lo, hi) =
        (per_round.iter().min().copied().unwrap_or(0), per_round.iter().max().copied().unwrap_or(0));
    let dataset = if rec.data_description.is_empty() {
        format!("the participants' own {family} data (job {})", rec.id)
    } else {
        rec.data_description.clone()
    };
    let aggregation = if rec.secure_aggregation {
        format!(
            "securely aggregated (SecAgg+; per-coordinate clip {} of the weighted update)",
            rec.secagg_clip
        )
    } else {
        "plainly averaged (the coordinator saw each update)".to_string()
    };
    ModelCard {
        family: family.to_string(),
        data: DataCard {
            dataset,
            institutions: institutions.len() as u32,
            examples,
            notes: Some(format!(
                "{} committed rounds with {lo} to {hi} contributing institutions each; updates {aggregation}; \
                 examples are those behind the last round",
                rounds.len()
            )),
        },
        training: TrainingCard {
            federated: true,
            job_id: Some(rec.id.clone()),
            rounds: rounds.len() as u64,
            version: Some(version),
            local: TrainParams {
                local_epochs: rec.train.local_epochs,
                learning_rate: rec.train.learning_rate,
                batch_size: rec.train.batch_size,
                l2: rec.train.l2,
                seed: rec.train.seed,
            },
            server_learning_rate: rec.server_learning_rate,
            server_momentum: rec.server_momentum,
        },
        privacy: Some(privacy_card(rec, rounds.len() as u64)),
        evaluation: rounds.last().and_then(|r| r.evaluation.as_ref()).map(federated_metrics).unwrap_or_default(),
    }
}

/// The federated evaluation of the card's version, as card metrics (`federated_` ones are measured on
/// every contributing institution's held-out data, from secure sums).
fn federated_metrics(e: &crate::store::RoundEvaluation) -> std::collections::BTreeMap<String, f64> {
    [
        ("federated_accuracy", e.accuracy),
        ("federated_macro_f1", e.macro_f1),
        ("federated_in_scope_accuracy", e.in_scope_accuracy),
        ("federated_oos_recall", e.oos_recall),
        ("federated_examples", e.examples as f64),
        ("federated_institutions", f64::from(e.institutions)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// What protected the data: secure aggregation, and for a DP job the epsilon its committed rounds spent
/// (record level, at the job's delta) with the noise that bought it. A job without DP claims no epsilon.
fn privacy_card(rec: &JobRecord, committed: u64) -> PrivacyCard {
    let mut card = PrivacyCard { secure_aggregation: Some(rec.secure_aggregation), ..Default::default() };
    if let Some(p) = rec.privacy.as_ref().filter(|p| p.dimension > 0) {
        match p.epsilon_after(committed, rec.rounds) {
            Ok(epsilon) => {
                card.epsilon = Some(epsilon);
                card.delta = Some(p.delta);
            }
            Err(e) => tracing::warn!(job = %rec.id, error = %e, "could not account the job's epsilon"),
        }
        card.noise_multiplier = Some(p.noise_multiplier);
        card.clip_norm = Some(p.clipping_norm);
        card.accountant = Some("rdp: distributed discrete Gaussian, Poisson-subsampled".into());
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobPhase, RoundRecord, StoredTrain};

    #[test]
    fn the_card_names_rounds_contributors_and_protections() {
        let round = |n: u64, who: &[&str]| RoundRecord {
            round: n,
            version: n,
            participants: who.len() as u32,
            examples: 100 * n,
            train_loss: 1.0,
            seconds: 1.0,
            contributors: who.iter().map(|s| s.to_string()).collect(),
            phase_seconds: Vec::new(),
            evaluation: None,
        };
        let mut rec = JobRecord {
            id: "emo".into(),
            model_spec_json: "{}".into(),
            rounds: 3,
            train: StoredTrain { local_epochs: 1, learning_rate: 4.0, batch_size: 64, l2: 0.0, seed: 7 },
            participants_per_round: 0,
            min_participants: 3,
            round_deadline_s: 30,
            wait_for_participants: 4,
            submitted_by: "operator:op".into(),
            phase: JobPhase::Running,
            committed: vec![
                round(1, &["a", "b", "c", "d"]),
                round(2, &["a", "b", "c"]),
                round(3, &["a", "e"]),
            ],
            sequence: 1,
            server_learning_rate: 2.0,
            server_momentum: 0.8,
            secure_aggregation: true,
            secagg_clip: 8.0,
            secagg_weight_cap: 100_000.0,
            escalation_target_recall: Some(0.7),
            data_description: "GoEmotions Ekman train".into(),
            failure: String::new(),
            failures: Vec::new(),
            promotion_tolerance_points: 1.0,
            privacy: None,
        };
        let card = model_card(&rec, "emotion", 2);
        assert_eq!(card.data.institutions, 4);
        assert_eq!(card.data.examples, 200);
        assert_eq!(card.training.rounds, 2);
        assert_eq!(card.training.job_id.as_deref(), Some("emo"));
        assert_eq!(card.training.server_momentum, 0.8);
        let privacy = card.privacy.clone().unwrap();
        assert_eq!(privacy.secure_aggregation, Some(true));
        assert_eq!(privacy.epsilon, None, "no differential privacy is claimed");
        let text = card.to_string();
        assert!(text.contains("GoEmotions Ekman train") && text.contains("securely aggregated"), "{text}");
        assert_eq!(model_card(&rec, "emotion", 3).data.institutions, 5);
        assert!(card.evaluation.is_empty(), "no federated evaluation ran");
        rec.committed[1].evaluation = Some(crate::store::RoundEvaluation {
            examples: 300,
            institutions: 3,
            accuracy: 0.8,
            macro_f1: 0.75,
            in_scope_accuracy: 0.85,
            oos_recall: 0.4,
            oos_examples: 30,
        });
        let card = model_card(&rec, "emotion", 2);
        assert_eq!(card.evaluation.get("federated_accuracy"), Some(&0.8));
        assert_eq!(card.evaluation.get("federated_examples"), Some(&300.0));
        assert!(model_card(&rec, "emotion", 3).evaluation.is_empty(), "version 3 was not evaluated");
    }
}
