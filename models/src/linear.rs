//! Linear models over hashed text features: what intent (one softmax) and emotion (one sigmoid per label)
//! share. The layout, the scoring, the spec checks and the sparse mini-batch SGD loop live here; a family
//! adds only its [`Objective`], the loss and its gradient with respect to the logits.
//!
//! Parameters are one flat `f32` vector, the form federated averaging needs: weights laid out
//! `[feature][output]` (a feature's row is contiguous, so a sparse example touches few cache lines), then
//! one bias per output.
//!
//! A mini-batch's gradient is evaluated at the parameters the batch starts from, then applied to the rows
//! of the features the batch touched; the cost per example is proportional to its non-zero features times
//! the outputs, never to the model size. L2 regularisation is applied to the touched rows only ("sparse
//! L2"), the usual approximation for sparse text models.

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::features::{FeatureConfig, SparseVec};
use crate::train::{TrainParams, TrainStats};
use crate::ModelError;

/// Featurised examples with their targets, built once and reused every round.
#[derive(Debug, Clone, Default)]
pub struct Encoded<T> {
    pub(crate) xs: Vec<SparseVec>,
    pub(crate) ys: Vec<T>,
}

impl<T> Encoded<T> {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.ys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ys.is_empty()
    }
}

/// The shape of a linear model: hashed input dimension and number of outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) dim: usize,
    pub(crate) outputs: usize,
}

impl Shape {
    pub(crate) fn new(features: &FeatureConfig, outputs: usize) -> Self {
        Self { dim: features.input_dim(), outputs }
    }

    /// Number of `f32` parameters: `dim * outputs + outputs`.
    pub(crate) fn num_params(self) -> usize {
        self.dim * self.outputs + self.outputs
    }

    pub(crate) fn check(self, params: &[f32]) -> Result<(), ModelError> {
        crate::check_len(params, self.num_params())
    }
}

/// Logits of one featurised example into `out`. `params` must fit `shape` and `x` must come from
/// [`crate::featurize`] with the same dimension (its indices are below `dim`).
pub(crate) fn logits(shape: Shape, params: &[f32], x: &SparseVec, out: &mut Vec<f32>) {
    let c = shape.outputs;
    let bias_at = shape.dim * c;
    out.clear();
    out.extend_from_slice(&params[bias_at..bias_at + c]);
    for (&i, &v) in x.indices.iter().zip(&x.values) {
        let row = &params[i as usize * c..i as usize * c + c];
        for (o, w) in out.iter_mut().zip(row) {
            *o += v * w;
        }
    }
}

/// A loss over the logits of one example.
pub(crate) trait Objective {
    /// What an example is labelled with.
    type Target;
    /// Replaces the logits `z` by the gradient of the loss with respect to them; returns the loss.
    fn loss_grad(&self, z: &mut [f32], y: &Self::Target) -> f64;
}

/// Softmax cross-entropy: exactly one label per example.
pub(crate) struct Softmax;

impl Objective for Softmax {
    type Target = u32;
    fn loss_grad(&self, z: &mut [f32], y: &u32) -> f64 {
        softmax_in_place(z);
        let y = *y as usize;
        let loss = -f64::from(z[y].max(1e-12).ln());
        z[y] -= 1.0;
        loss
    }
}

pub(crate) fn softmax_in_place(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

/// Numerically stable logistic function.
pub(crate) fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Shared validation of a label list: `min..=max` unique non-empty labels of at most 200 bytes.
pub(crate) fn check_labels(labels: &[String], min: usize, max: usize) -> Result<(), ModelError> {
    let bad = |m: String| Err(ModelError::InvalidSpec(m));
    if !(min..=max).contains(&labels.len()) {
        return bad(format!("{} labels; a model needs {min} to {max}", labels.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for l in labels {
        if l.is_empty() || l.len() > 200 {
            return bad(format!("label {l:?} must be 1 to 200 bytes"));
        }
        if !seen.insert(l.as_str()) {
            return bad(format!("label {l:?} appears twice"));
        }
    }
    Ok(())
}

/// Shared validation of a feature configuration: a dimension that is a power of two between 2^10 and
/// 2^22, n-gram lengths that make sense.
pub(crate) fn check_features(features: &FeatureConfig) -> Result<(), ModelError> {
    let bad = |m: String| Err(ModelError::InvalidSpec(m));
    if !features.dim.is_power_of_two() || !(1 << 10..=1 << 22).contains(&features.dim) {
        return bad(format!("feature dim {} must be a power of two in 1024..=4194304", features.dim));
    }
    if !(1..=3).contains(&features.word_ngrams) {
        return bad(format!("word_ngrams {} must be 1 to 3", features.word_ngrams));
    }
    if features.char_ngram_min > 0
        && (features.char_ngram_min > features.char_ngram_max || features.char_ngram_max > 8)
    {
        return bad(format!(
            "char n-grams {}..={} must satisfy min <= max <= 8",
            features.char_ngram_min, features.char_ngram_max
        ));
    }
    if let Some(encoder) = &features.encoder {
        if encoder.model != crate::features::ENCODER_MODEL {
            return bad(format!(
                "encoder {:?} is not one this version runs (it runs {:?})",
                encoder.model,
                crate::features::ENCODER_MODEL
            ));
        }
        if !(encoder.weight > 0.0 && encoder.weight <= 100.0) {
            return bad(format!("encoder weight {} must be in (0, 100]", encoder.weight));
        }
    }
    Ok(())
}

/// Trains `params` in place on `data` by mini-batch SGD on `objective`.
pub(crate) fn sgd<O: Objective>(
    shape: Shape,
    params: &mut [f32],
    data: &Encoded<O::Target>,
    p: &TrainParams,
    objective: &O,
) -> Result<TrainStats, ModelError> {
    p.validate()?;
    shape.check(params)?;
    let c = shape.outputs;
    let bias_at = shape.dim * c;
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
    let batch = p.batch_size as usize;
    let mut z = Vec::with_capacity(c);
    let mut grads: Vec<f32> = vec![0.0; batch * c];
    let mut last_loss = f32::NAN;
    for _ in 0..p.local_epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0f64;
        for chunk in order.chunks(batch) {
            // Gradients of the logits at the batch's starting parameters.
            for (k, &i) in chunk.iter().enumerate() {
                logits(shape, params, &data.xs[i], &mut z);
                loss_sum += objective.loss_grad(&mut z, &data.ys[i]);
                grads[k * c..(k + 1) * c].copy_from_slice(&z);
            }
            let step = p.learning_rate / chunk.len() as f32;
            for (k, &i) in chunk.iter().enumerate() {
                let g = &grads[k * c..(k + 1) * c];
                let x = &data.xs[i];
                for (&f, &v) in x.indices.iter().zip(&x.values) {
                    let row = &mut params[f as usize * c..f as usize * c + c];
                    let decay = 1.0 - p.learning_rate * p.l2;
                    for (w, gj) in row.iter_mut().zip(g) {
                        *w = *w * decay - step * v * gj;
                    }
                }
                for (b, gj) in params[bias_at..bias_at + c].iter_mut().zip(g) {
                    *b -= step * gj;
                }
            }
        }
        last_loss = (loss_sum / data.len().max(1) as f64) as f32;
    }
    Ok(TrainStats { mean_loss: last_loss, examples: data.len() })
}

/// Mean loss of `params` on `data`; NaN when the parameters do not fit or there is no data.
pub(crate) fn mean_loss<O: Objective>(
    shape: Shape,
    params: &[f32],
    data: &Encoded<O::Target>,
    objective: &O,
) -> f32 {
    if shape.check(params).is_err() || data.is_empty() {
        return f32::NAN;
    }
    let mut z = Vec::new();
    let total: f64 = data
        .xs
        .iter()
        .zip(&data.ys)
        .map(|(x, y)| {
            logits(shape, params, x, &mut z);
            objective.loss_grad(&mut z, y)
        })
        .sum();
    (total / data.len() as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_is_stable_at_the_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-200.0) >= 0.0 && sigmoid(-200.0) < 1e-30);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    #[test]
    fn softmax_gradient_sums_to_zero() {
        let mut z = vec![1.0, 2.0, 3.0];
        let loss = Softmax.loss_grad(&mut z, &2);
        assert!(loss > 0.0);
        assert!(z.iter().sum::<f32>().abs() < 1e-6);
        assert!(z[2] < 0.0);
    }
}
