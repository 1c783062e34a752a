//! Emotion evaluation and calibration: per-label F1 and macro-F1 as the GoEmotions paper reports them,
//! per-label decision thresholds, and the escalation threshold for a target recall.
//!
//! Macro-F1 is the unweighted mean over the model's labels of each label's F1, computed over examples
//! (a label is predicted for an example when it is in the predicted set: every label at or above its
//! threshold, else the most salient one, as [`EmotionModel::predict`] answers).

use serde::{Deserialize, Serialize};

use crate::emotion::{encode_for_eval, EmotionExample, EmotionModel, Escalation, LabelSet};
use crate::linear::{self, sigmoid};
use crate::ModelError;

/// One-sided 95% normal quantile used by the escalation threshold's confidence bound.
const Z_95: f64 = 1.645;

/// Precision, recall and F1 of one label; fractions in [0, 1], 0 when undefined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// The label.
    pub label: String,
    /// Share of the texts predicted with the label that carry it.
    pub precision: f64,
    /// Share of the texts carrying the label that were predicted with it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Texts carrying the label.
    pub support: usize,
}

/// How the escalation rule did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationScore {
    /// The escalation threshold used.
    pub threshold: f32,
    /// Precision, recall and F1 of "escalate" against the label.
    pub score: ClassScore,
}

/// Quality of an emotion model on a labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmotionMetrics {
    /// Mean over the model's labels of the per-label F1.
    pub macro_f1: f64,
    /// Per label, in spec order, at the per-label thresholds.
    pub per_class: Vec<ClassScore>,
    /// The escalation rule's precision and recall, when the model has one.
    pub escalation: Option<EscalationScore>,
    /// Examples evaluated.
    pub examples: usize,
}

impl EmotionMetrics {
    /// The score of `label`, if the model has it.
    pub fn class(&self, label: &str) -> Option<&ClassScore> {
        self.per_class.iter().find(|c| c.label == label)
    }
}

/// Probabilities and gold label sets of `examples`, each read with its embedding when the model is of
/// the encoder tier and the example has one (by its n-grams alone otherwise: attach embeddings first).
fn scored(
    model: &EmotionModel,
    examples: &[EmotionExample],
) -> Result<(Vec<Vec<f32>>, Vec<LabelSet>), ModelError> {
    let set = encode_for_eval(&model.spec, examples)?;
    let shape = model.spec.shape();
    let probs = set
        .xs
        .iter()
        .map(|x| {
            let mut z = Vec::with_capacity(shape.outputs);
            linear::logits(shape, &model.params, x, &mut z);
            z.iter_mut().for_each(|v| *v = sigmoid(*v));
            z
        })
        .collect();
    Ok((probs, set.ys))
}

fn class_score(label: &str, tp: usize, fp: usize, fneg: usize) -> ClassScore {
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    ClassScore {
        label: label.to_string(),
        precision: frac(tp, tp + fp),
        recall: frac(tp, tp + fneg),
        f1: frac(2 * tp, 2 * tp + fp + fneg),
        support: tp + fneg,
    }
}

/// Counts (tp, fp, fn) of predictions against gold for label `i`.
fn counts(pred: impl Iterator<Item = bool>, gold: &[LabelSet], i: usize) -> (usize, usize, usize) {
    pred.zip(gold).fold((0, 0, 0), |(tp, fp, fneg), (p, g)| match (p, g.contains(i)) {
        (true, true) => (tp + 1, fp, fneg),
        (true, false) => (tp, fp + 1, fneg),
        (false, true) => (tp, fp, fneg + 1),
        (false, false) => (tp, fp, fneg),
    })
}

/// Evaluates `model` with its calibration on `examples`; a label the model lacks is an error.
pub fn evaluate_emotion(
    model: &EmotionModel,
    examples: &[EmotionExample],
) -> Result<EmotionMetrics, ModelError> {
    let (probs, gold) = scored(model, examples)?;
    let decided: Vec<LabelSet> = probs.iter().map(|p| model.decide(p)).collect();
    let per_class: Vec<ClassScore> = model
        .spec
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (tp, fp, fneg) = counts(decided.iter().map(|d| d.contains(i)), &gold, i);
            class_score(l, tp, fp, fneg)
        })
        .collect();
    let macro_f1 = per_class.iter().map(|c| c.f1).sum::<f64>() / per_class.len().max(1) as f64;
    let escalation = model.calibration.escalation.as_ref().and_then(|e| {
        let i = model.spec.label_index(&e.label)?;
        let (tp, fp, fneg) = counts(probs.iter().map(|p| model.escalates(p)), &gold, i);
        Some(EscalationScore { threshold: e.threshold, score: class_score(&e.label, tp, fp, fneg) })
    });
    Ok(EmotionMetrics { macro_f1, per_class, escalation, examples: examples.len() })
}

/// What one institution contributes to a federated evaluation of `model` (with its thresholds) on its
/// `examples`, in the layout of [`crate::evaluation_bins`]: examples and exact matches as the totals
/// (every example counts as in scope; none as out of scope), then true positives, false positives and
/// false negatives per label. [`crate::metrics_from_counts`] of the sum gives exact-match accuracy and the
/// macro-F1 over the labels that occur in the gold sets.
pub fn emotion_evaluation_counts(
    model: &EmotionModel,
    examples: &[EmotionExample],
) -> Result<Vec<i64>, ModelError> {
    let labels = model.spec.labels.len();
    let base = crate::eval::EVALUATION_TOTALS.len();
    let mut c = vec![0i64; base + 3 * labels];
    let (probs, gold) = scored(model, examples)?;
    for (p, g) in probs.iter().zip(&gold) {
        let d = model.decide(p);
        let exact = d.0 == g.0;
        c[0] += 1;
        c[1] += i64::from(exact);
        c[2] += 1;
        c[3] += i64::from(exact);
        for i in 0..labels {
            match (d.contains(i), g.contains(i)) {
                (true, true) => c[base + 3 * i] += 1,
                (true, false) => c[base + 3 * i + 1] += 1,
                (false, true) => c[base + 3 * i + 2] += 1,
                (false, false) => {}
            }
        }
    }
    Ok(c)
}

/// Sets each label's threshold to the one that maximises its F1 on `dev`: every distinct score on `dev`
/// is a candidate, and the threshold is placed halfway between the best cut's lowest accepted score and
/// the next score below it (a cut fitted exactly to `dev`'s scores would sit on one text). A label absent
/// from `dev` keeps 0.5. Sweeping the observed scores rather than a fixed grid keeps the choice right when
/// a label's probabilities are all small, as a rare label's are.
pub fn calibrate_thresholds(model: &mut EmotionModel, dev: &[EmotionExample]) -> Result<(), ModelError> {
    let (probs, gold) = scored(model, dev)?;
    for (i, t) in model.calibration.thresholds.iter_mut().enumerate() {
        let mut col: Vec<(f32, bool)> =
            probs.iter().zip(&gold).map(|(p, g)| (p.get(i).copied().unwrap_or(0.0), g.contains(i))).collect();
        *t = best_f1_cut(&mut col).unwrap_or(0.5);
    }
    Ok(())
}

/// The F1-maximising threshold for (score, is positive) pairs, or `None` without positives.
fn best_f1_cut(col: &mut [(f32, bool)]) -> Option<f32> {
    let positives = col.iter().filter(|c| c.1).count();
    if positives == 0 {
        return None;
    }
    col.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut best, mut best_f1) = (0usize, None, -1.0f64);
    for (j, &(s, pos)) in col.iter().enumerate() {
        tp += usize::from(pos);
        // Cut only between distinct scores: everything at or above `s` is accepted.
        let next = col.get(j + 1).map(|c| c.0);
        if next == Some(s) {
            continue;
        }
        let f1 = 2.0 * tp as f64 / (j + 1 + positives) as f64;
        if f1 > best_f1 {
            best_f1 = f1;
            best = Some(next.map_or(s, |n| (s + n) / 2.0));
        }
    }
    best
}

/// Lower end of the one-sided 95% Wilson score interval of a proportion `k / n`.
fn wilson_lower(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z_95 * Z_95;
    (p + z2 / (2.0 * n) - Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / (1.0 + z2 / n)
}

/// Chooses the escalation threshold on `label` for `target_recall` (the policy's number, in (0, 1]) on
/// calibration data `dev`, and stores it in the model.
///
/// The threshold is the highest for which the lower end of a one-sided 95% confidence interval of the
/// recall on `dev` reaches the target, rather than the highest whose recall on `dev` merely does: `dev`
/// is a sample, and a threshold fitted exactly to it misses the target on new texts about half the time.
/// The cost is precision, more so when `dev` holds few texts with the label. When even the lowest
/// threshold cannot meet the bound (target 1.0, or a tiny `dev`), the threshold that catches every text
/// with the label in `dev` is used.
pub fn calibrate_escalation(
    model: &mut EmotionModel,
    dev: &[EmotionExample],
    label: &str,
    target_recall: f32,
) -> Result<Escalation, ModelError> {
    if !(target_recall.is_finite() && target_recall > 0.0 && target_recall <= 1.0) {
        return Err(ModelError::InvalidInput(format!("target recall {target_recall} must be in (0, 1]")));
    }
    let i = model.spec.label_index(label).ok_or_else(|| ModelError::UnknownLabel(label.to_string()))?;
    let (probs, gold) = scored(model, dev)?;
    let score = |p: &Vec<f32>| p.get(i).copied().unwrap_or(0.0);
    let mut positives: Vec<f32> =
        probs.iter().zip(&gold).filter(|(_, g)| g.contains(i)).map(|(p, _)| score(p)).collect();
    if positives.is_empty() {
        return Err(ModelError::InvalidData(format!("no calibration text carries the label {label:?}")));
    }
    positives.sort_by(|a, b| b.total_cmp(a));
    let n = positives.len();
    let k = (1..=n).find(|&k| wilson_lower(k, n) >= f64::from(target_recall)).unwrap_or(n);
    let threshold = positives[k - 1];
    let (tp, fp, fneg) = counts(probs.iter().map(|p| score(p) >= threshold), &gold, i);
    let s = class_score(label, tp, fp, fneg);
    let e = Escalation {
        label: label.to_string(),
        threshold,
        target_recall,
        calibration_recall: s.recall,
        calibration_precision: s.precision,
    };
    model.calibration.escalation = Some(e.clone());
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_bound_is_below_the_estimate_and_tightens_with_n() {
        assert!(wilson_lower(70, 100) < 0.7);
        assert!(wilson_lower(700, 1000) > wilson_lower(70, 100));
        assert!(wilson_lower(7000, 10000) < 0.7 && wilson_lower(7000, 10000) > 0.69);
        assert_eq!(wilson_lower(0, 0), 0.0);
        assert!(wilson_lower(10, 10) < 1.0);
    }

    #[test]
    fn the_f1_cut_separates_and_sits_between_scores() {
        let mut col = vec![(0.9, true), (0.02, true), (0.01, false), (0.03, true), (0.001, false)];
        // Accepting the top three scores catches every positive with no false one: F1 = 1.
        assert_eq!(best_f1_cut(&mut col), Some(0.015));
        assert_eq!(best_f1_cut(&mut [(0.5, false)]), None);
        // All tied: the only cut accepts everything.
        assert_eq!(best_f1_cut(&mut [(0.2, true), (0.2, false)]), Some(0.2));
    }

    #[test]
    fn class_scores_are_zero_not_nan_when_undefined() {
        let s = class_score("x", 0, 0, 0);
        assert_eq!((s.precision, s.recall, s.f1, s.support), (0.0, 0.0, 0.0, 0));
        let s = class_score("x", 2, 1, 1);
        assert!((s.f1 - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn summed_evaluation_counts_give_the_macro_f1_of_the_union() {
        use crate::{EmotionSpec, FeatureConfig};
        let labels = vec!["anger".to_string(), "joy".to_string(), "neutral".to_string()];
        let spec =
            EmotionSpec::new(labels.clone(), FeatureConfig { dim: 1024, ..Default::default() }).unwrap();
        let mut params = vec![0.0f32; spec.num_params()];
        // Anger's logit rises with "furious", joy's with "great".
        let c = labels.len();
        // Bias -1: a label is chosen only with evidence (or as the most salient when none is).
        let bias_at = spec.features.dim as usize * c;
        params[bias_at..bias_at + c].iter_mut().for_each(|b| *b = -1.0);
        for (word, label) in [("furious", 0usize), ("great", 1)] {
            for i in crate::features::featurize(&spec.features, word).indices {
                params[i as usize * c + label] += 3.0;
            }
        }
        let model = EmotionModel::from_params(spec, params).unwrap();
        let e = |t: &str, l: &[&str]| EmotionExample {
            text: t.into(),
            labels: l.iter().map(|s| s.to_string()).collect(),
            embedding: None,
        };
        let a = [e("furious", &["anger"]), e("great", &["joy"]), e("ok", &["neutral"])];
        let b = [e("furious and great", &["anger", "joy"]), e("fine", &["neutral"])];
        let mut sum = vec![0f64; crate::evaluation_bins(&labels).len()];
        for part in [&a[..], &b[..]] {
            for (s, c) in sum.iter_mut().zip(emotion_evaluation_counts(&model, part).unwrap()) {
                *s += c as f64;
            }
        }
        let union: Vec<EmotionExample> = a.iter().chain(&b).cloned().collect();
        let direct = evaluate_emotion(&model, &union).unwrap();
        let federated = crate::metrics_from_counts(labels.len(), &sum).unwrap();
        assert_eq!(federated.examples, 5);
        assert!(
            (federated.macro_f1 - direct.macro_f1).abs() < 1e-12,
            "{} vs {}",
            federated.macro_f1,
            direct.macro_f1
        );
        assert_eq!(sum[4], 0.0, "no out-of-scope examples in an emotion evaluation");
    }
}
