//! Evaluation as the CLINC150 paper reports it: accuracy over everything, in-scope accuracy, out-of-scope
//! recall, plus macro-F1 over the labels of the gold set and the most frequent confusions.

use serde::{Deserialize, Serialize};

use crate::features::example_features;
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
            let x = example_features(&model.spec.features, &e.text, e.embedding.as_deref());
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

/// The first coordinates of a federated evaluation's counts: examples, correct, in-scope examples,
/// in-scope correct, out-of-scope examples, out-of-scope recognised. Then three per label of the spec, in
/// its order: true positives, false positives, false negatives.
pub const EVALUATION_TOTALS: [&str; 6] =
    ["examples", "correct", "in_scope", "in_scope_correct", "oos", "oos_recognised"];

/// The names of the coordinates of a federated evaluation of a model with `labels` (see
/// [`evaluation_counts`]).
pub fn evaluation_bins(labels: &[String]) -> Vec<String> {
    let mut bins: Vec<String> = EVALUATION_TOTALS.iter().map(|s| s.to_string()).collect();
    for l in labels {
        bins.extend([format!("tp:{l}"), format!("fp:{l}"), format!("fn:{l}")]);
    }
    bins
}

/// What one institution contributes to a federated evaluation of `model` (with its `oos_threshold`) on
/// its `examples`: counts laid out as [`evaluation_bins`] says. Counts, not metrics, are summed across
/// institutions, so [`metrics_from_counts`] of the sum is exactly the metrics of the union of everyone's
/// examples. A gold label the model lacks counts as a miss and in no label's row.
pub fn evaluation_counts(model: &IntentModel, examples: &[Example]) -> Vec<i64> {
    let labels = &model.spec.labels;
    let index: std::collections::HashMap<&str, usize> =
        labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let mut c = vec![0i64; EVALUATION_TOTALS.len() + 3 * labels.len()];
    let base = EVALUATION_TOTALS.len();
    for (e, &(b, p)) in examples.iter().zip(&scored(model, examples)) {
        let predicted = predicted_label(model, b, p, model.oos_threshold);
        let ok = predicted == e.label;
        c[0] += 1;
        c[1] += i64::from(ok);
        let (total, hit) = if e.label == OOS_LABEL { (4, 5) } else { (2, 3) };
        c[total] += 1;
        c[hit] += i64::from(ok);
        let gold = index.get(e.label.as_str()).copied();
        let said = index.get(predicted).copied();
        match (ok, gold, said) {
            (true, Some(g), _) => c[base + 3 * g] += 1,
            (false, g, s) => {
                if let Some(s) = s {
                    c[base + 3 * s + 1] += 1;
                }
                if let Some(g) = g {
                    c[base + 3 * g + 2] += 1;
                }
            }
            (true, None, _) => {}
        }
    }
    c
}

/// The metrics of summed evaluation counts of a model with `labels` labels: accuracy, in-scope accuracy,
/// out-of-scope recall, and macro-F1 over the labels that occur in the gold sets (as [`evaluate`]);
/// no confusions. `None` when the layout does not fit or no example was counted.
pub fn metrics_from_counts(labels: usize, counts: &[f64]) -> Option<Metrics> {
    let base = EVALUATION_TOTALS.len();
    if counts.len() != base + 3 * labels || counts[0] < 1.0 {
        return None;
    }
    let frac = |a: f64, b: f64| if b <= 0.0 { 0.0 } else { (a / b).clamp(0.0, 1.0) };
    let (mut f1_sum, mut gold_labels) = (0.0, 0usize);
    for row in counts[base..].chunks_exact(3) {
        let (tp, fp, fneg) = (row[0].max(0.0), row[1].max(0.0), row[2].max(0.0));
        if tp + fneg > 0.0 {
            gold_labels += 1;
            f1_sum += 2.0 * tp / (2.0 * tp + fp + fneg);
        }
    }
    Some(Metrics {
        accuracy: frac(counts[1], counts[0]),
        macro_f1: if gold_labels == 0 { 0.0 } else { f1_sum / gold_labels as f64 },
        in_scope_accuracy: frac(counts[3], counts[2]),
        oos_recall: frac(counts[5], counts[4]),
        examples: counts[0] as usize,
        confusions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(l: &str) -> Example {
        Example { text: String::new(), label: l.into(), embedding: None }
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
    fn summed_counts_give_the_metrics_of_the_union() {
        use crate::{FeatureConfig, IntentSpec};
        let labels = vec!["balance".to_string(), "oos".to_string(), "transfer".to_string()];
        let spec =
            IntentSpec::new(labels.clone(), FeatureConfig { dim: 1024, ..Default::default() }).unwrap();
        // A model that prefers "balance" for words containing "bal" and "transfer" for "send".
        let mut params = vec![0.0f32; spec.num_params()];
        for (word, label) in [("balance", 0usize), ("send", 2)] {
            for i in crate::features::featurize(&spec.features, word).indices {
                params[label * 1024 + i as usize] += 1.0;
            }
        }
        let model = IntentModel::from_params(spec, params).unwrap();
        let e = |t: &str, l: &str| Example { text: t.into(), label: l.into(), embedding: None };
        let a = [e("balance", "balance"), e("send money", "transfer"), e("weather", "oos")];
        let b = [e("send", "balance"), e("balance please", "balance"), e("what", "oos")];
        let mut sum = vec![0f64; evaluation_bins(&labels).len()];
        for part in [&a[..], &b[..]] {
            for (s, c) in sum.iter_mut().zip(evaluation_counts(&model, part)) {
                *s += c as f64;
            }
        }
        let union: Vec<Example> = a.iter().chain(&b).cloned().collect();
        let direct = evaluate(&model, &union);
        let federated = metrics_from_counts(labels.len(), &sum).unwrap();
        assert_eq!(federated.examples, 6);
        for (x, y) in [
            (federated.accuracy, direct.accuracy),
            (federated.in_scope_accuracy, direct.in_scope_accuracy),
            (federated.oos_recall, direct.oos_recall),
            (federated.macro_f1, direct.macro_f1),
        ] {
            assert!((x - y).abs() < 1e-12, "{federated:?} vs {direct:?}");
        }
        assert!(direct.accuracy > 0.0 && direct.accuracy < 1.0, "a model neither all right nor all wrong");
        assert!(metrics_from_counts(labels.len() + 1, &sum).is_none(), "a layout that does not fit");
        // A gold label the model lacks is a miss, in no label's row.
        let c = evaluation_counts(&model, &[e("balance", "closed-account")]);
        assert_eq!((c[0], c[1], c[2]), (1, 0, 1));
        assert_eq!(
            c[EVALUATION_TOTALS.len()..].iter().sum::<i64>(),
            1,
            "only the predicted label's false positive"
        );
    }

    #[test]
    fn empty_sets_give_zeros_not_nan() {
        let m = evaluate_predictions(&[], &[]);
        assert_eq!((m.accuracy, m.macro_f1, m.in_scope_accuracy, m.oos_recall), (0.0, 0.0, 0.0, 0.0));
    }
}
