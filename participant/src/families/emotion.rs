//! Emotion: conversations with emotion labels from the `emotion_examples` table; a share held out to
//! calibrate each label's decision threshold and the anger escalation threshold for the recall the
//! job's policy asks for.

use std::collections::BTreeMap;

use anyhow::Context;
use hearth_models::emotion::{self, calibrate_escalation, calibrate_thresholds, evaluate_emotion, ANGER};
use hearth_models::{EmotionExample, EmotionModel, EmotionSpec, LocalData};

use crate::families::{split_holdout, Split, Tuned};
use crate::store::Store;

/// Reads the emotion examples and splits off the calibration holdout.
pub(crate) fn read(store: &Store, holdout_fraction: f64) -> anyhow::Result<Split<EmotionExample>> {
    let all = store.emotion_examples().context("reading local emotion examples")?;
    Ok(split_holdout(all, holdout_fraction, |e| &e.text))
}

/// The training examples, featurised for `spec`; a label the spec lacks is an error naming it.
pub(crate) fn encode(spec: &EmotionSpec, data: &Split<EmotionExample>) -> anyhow::Result<LocalData> {
    let set = emotion::encode(spec, &data.train).context("encoding local emotion examples")?;
    Ok(LocalData::Emotion(set))
}

/// Sets every label's threshold for its best F1 on the holdout, then the escalation threshold on anger
/// for `target_recall`. Without a holdout, or without anger in it, the model is served with default
/// thresholds and no escalation rule (its answers then say `escalate: false` with no rule), and the
/// reason is logged.
pub(crate) fn calibrate(
    spec: EmotionSpec,
    params: Vec<f32>,
    data: &Split<EmotionExample>,
    target_recall: Option<f32>,
) -> anyhow::Result<Tuned<EmotionModel>> {
    let mut model = EmotionModel::from_params(spec, params)?;
    let holdout = &data.holdout;
    let mut evaluation = BTreeMap::new();
    if holdout.is_empty() {
        tracing::warn!("no local emotion holdout: serving default thresholds without an escalation rule");
        let note = "no local holdout: default thresholds, no escalation rule".to_string();
        return Ok(Tuned { model, evaluation, note });
    }
    calibrate_thresholds(&mut model, holdout).context("calibrating per-label thresholds")?;
    let escalation = match target_recall {
        None => "the job states no escalation target recall, so no escalation rule".to_string(),
        Some(target) => match calibrate_escalation(&mut model, holdout, ANGER, target) {
            Ok(e) => {
                evaluation.insert("escalation_threshold".into(), f64::from(e.threshold));
                evaluation.insert("escalation_target_recall".into(), f64::from(e.target_recall));
                evaluation.insert("local_escalation_recall".into(), e.calibration_recall);
                evaluation.insert("local_escalation_precision".into(), e.calibration_precision);
                format!("escalation on {ANGER} at {:.3} for the policy's target recall {target}", e.threshold)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no escalation rule calibrated");
                format!("no escalation rule ({e})")
            }
        },
    };
    let m = evaluate_emotion(&model, holdout).context("evaluating on the holdout")?;
    evaluation.insert("local_macro_f1".into(), m.macro_f1);
    let note =
        format!("label thresholds calibrated here on {} held-out local texts; {escalation}", holdout.len());
    Ok(Tuned { model, evaluation, note })
}
