//! Intent: labelled conversations from the `examples` table; a share held out to calibrate the
//! out-of-scope threshold.

use std::collections::BTreeMap;

use anyhow::Context;
use hearth_models::{choose_oos_threshold, Example, IntentModel, IntentSpec, LocalData};

use crate::families::{split_holdout, Split, Tuned};
use crate::store::Store;

/// Reads the intent examples (with the embeddings stored for them) and splits off the calibration
/// holdout.
pub(crate) fn read(store: &Store, holdout_fraction: f64) -> anyhow::Result<Split<Example>> {
    let all = store.examples_embedded().context("reading local intent examples")?;
    Ok(split_holdout(all, holdout_fraction, |e| &e.text))
}

/// The training examples, featurised for `spec`; a label the spec lacks is an error naming it.
pub(crate) fn encode(spec: &IntentSpec, data: &Split<Example>) -> anyhow::Result<LocalData> {
    let set = hearth_models::encode(spec, &data.train).context("encoding local intent examples")?;
    Ok(LocalData::Intent(set))
}

/// Sets the out-of-scope threshold on the holdout (none without a holdout).
pub(crate) fn calibrate(
    spec: IntentSpec,
    params: Vec<f32>,
    data: &Split<Example>,
) -> anyhow::Result<Tuned<IntentModel>> {
    let mut model = IntentModel::from_params(spec, params)?;
    let mut evaluation = BTreeMap::new();
    if !data.holdout.is_empty() {
        let t = choose_oos_threshold(&model, &data.holdout);
        model.oos_threshold = Some(t);
        evaluation.insert("oos_threshold".to_string(), f64::from(t));
    }
    let note =
        format!("out-of-scope threshold calibrated here on {} held-out local examples", data.holdout.len());
    Ok(Tuned { model, evaluation, note })
}
