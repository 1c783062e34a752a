//! Evaluation as the CLINC150 paper reports it: accuracy over everything, in-scope accuracy, out-of-scope
//! recall, plus macro-F1 over the labels of the gold set and the most frequent confusions.

use serde::{Deserialize, Serialize};

use crate::features::featurize;
use crate::intent::{probabilities, IntentModel};
use crate::{Example, OOS_LABEL};

/// Quality of a model on a labelled set; fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Share of examples whose prediction (with `oos` for out of scope) equals the gold label.
    pub accuracy: f64,
    /// Mean over gold labels of the per-label F1.
    pub macro_f1: f64,
    /// Accuracy on the examples whose gold label is not `oos`.
    pub in_scope_accuracy: f64,
    /// Share of `oos` examples predicted out of scope.
    pub oos_recall: f64,
    /// Examples evaluated.
    pub examples: usize,
    /// The most frequent mistakes.
    pub confusions: Vec<Confusion>,
}

/// A frequent mistake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Gold label.
    pub expected: String,
    /// What the model said.
    pub predicted: String,
    /// How often.
    pub count: usize,
}

/// Best label and its probability for each example.
fn scored(model: &IntentModel, examples: &[Example]) -> Vec<(usize, f32)> {
    let mut probs = Vec::new();
    examples
        .iter()
        .map(|e| {
            let x = featurize(&model.spec.features, &e.text);
            probabilities(&model.spec, &model.params, &x, &mut probs);
            let (best, p) =
                probs
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
            (best, p)
        })
        .collect()
}

fn predicted_label(model: &IntentModel, best: usize, p: f32, threshold: Option<f32>) -> &str {
    if threshold.is_some_and(|t| p < t) {
        OOS_LABEL
    } else {
        &model.spec.labels[best]
    }
}

/// Evaluates `model` (with its `oos_threshold`) on `examples`.
pub fn evaluate(model: &IntentModel, examples: &[Example]) -> Metrics {
    let scores = scored(model, examples);
    let preds: Vec<&str> =
        scores.iter().map(|&(b, p)| predicted_label(model, b, p, model.oos_threshold)).collect();
    evaluate_predictions(examples, &preds)
}

/// Metrics of given predictions (labels as strings, `oos` for out of scope) against `examples`.
pub(crate) fn evaluate_predictions(examples: &[Example], preds: &[&str]) -> Metrics {
    use std::collections::HashMap;
    let n = examples.len();
    let (mut correct, mut in_total, mut in_correct, mut oos_total, mut oos_hit) = (0, 0, 0, 0, 0);
    let mut tp: HashMap<&str, usize> = HashMap::new();
    let mut fp: HashMap<&str, usize> = HashMap::new();
    let mut fneg: HashMap<&str, usize> = HashMap::new();
    let mut conf: HashMap<(&str, &str), usize> = HashMap::new();
    for (e, &p) in examples.iter().zip(preds) {
        let gold = e.label.as_str();
        let ok = gold == p;
        correct += usize::from(ok);
        if gold == OOS_LABEL {
            oos_total += 1;
            oos_hit += usize::from(ok);
        } else {
            in_total += 1;
            in_correct += usize::from(ok);
        }
        if ok {
            *tp.entry(gold).or_default() += 1;
        } else {
            *fp.entry(p).or_default() += 1;
            *fneg.entry(gold).or_default() += 1;
            *conf.entry((gold, p)).or_default() += 1;
        }
    }
    let mut gold_labels: Vec<&str> = examples.iter().map(|e| e.label.as_str()).collect();
    gold_labels.sort_unstable();
    gold_labels.dedup();
    let f1_sum: f64 = gold_labels
        .iter()
        .map(|l| {
            let t = *tp.get(l).unwrap_or(&0) as f64;
            let denom = 2.0 * t + *fp.get(l).unwrap_or(&0) as f64 + *fneg.get(l).unwrap_or(&0) as f64;
            if denom == 0.0 {
                0.0
            } else {
                2.0 * t / denom
            }
        })
        .sum();
    let mut confusions: Vec<Confusion> = conf
        .into_iter()
        .map(|((e, p), count)| Confusion { expected: e.to_string(), predicted: p.to_string(), count })
        .collect();
    confusions.sort_by(|a, b| {
        b.count.cmp(&a.count).then(a.expected.cmp(&b.expected)).then(a.predicted.cmp(&b.predicted))
    });
    confusions.truncate(10);
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Metrics {
        accuracy: frac(correct, n),
        macro_f1: if gold_labels.is_empty() { 0.0 } else { f1_sum / gold_labels.len() as f64 },
        in_scope_accuracy: frac(in_correct, in_total),
        oos_recall: frac(oos_hit, oos_total),
        examples: n,
        confusions,
    }
}

/// The threshold on the best probability that maximises accuracy on `val` (in-scope and `oos` examples
/// together), from a grid of 0.00 to 0.95 in steps of 0.01. Ties go to the lower threshold.
pub fn choose_oos_threshold(model: &IntentModel, val: &[Example]) -> f32 {
    let scores = scored(model, val);
    let mut best = (0.0f32, -1i64);
    for step in 0..96 {
        let t = step as f32 / 100.0;
        let correct = val
            .iter()
            .zip(&scores)
            .filter(|(e, &(b, p))| predicted_label(model, b, p, Some(t)) == e.label)
            .count() as i64;
        if correct > best.1 {
            best = (t, correct);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(l: &str) -> Example {
        Example { text: String::new(), label: l.into() }
    }

    #[test]
    fn metrics_follow_the_clinc150_definitions() {
        let gold = [ex("a"), ex("a"), ex("b"), ex("oos"), ex("oos")];
        let preds = ["a", "b", "b", "oos", "a"];
        let m = evaluate_predictions(&gold, &preds);
        assert!((m.accuracy - 3.0 / 5.0).abs() < 1e-12);
        assert!((m.in_scope_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.oos_recall - 0.5).abs() < 1e-12);
        // F1: a = 2*1/(2+1+1) = .5; b = 2/(2+1) = .667; oos = 2/(2+0+1) = .667
        assert!((m.macro_f1 - (0.5 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(m.confusions.len(), 2);
    }

    #[test]
    fn empty_sets_give_zeros_not_nan() {
        let m = evaluate_predictions(&[], &[]);
        assert_eq!((m.accuracy, m.macro_f1, m.in_scope_accuracy, m.oos_recall), (0.0, 0.0, 0.0, 0.0));
    }
}
