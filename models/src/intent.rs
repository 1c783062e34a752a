//! The intent classifier: multinomial logistic (softmax) regression over hashed text features.
//!
//! The parameter layout and the training loop are `linear.rs`'s; this module adds the labels, the
//! out-of-scope threshold and the prediction.

use serde::{Deserialize, Serialize};

use crate::features::{featurize_embedded, FeatureConfig, SparseVec};
use crate::linear::{self, check_features, check_labels, softmax_in_place, Shape};
use crate::{ModelError, OOS_LABEL};

/// Largest spec JSON accepted.
const MAX_SPEC_BYTES: usize = 1 << 20;

/// The encoder tier's intent defaults, chosen on CLINC150's validation split by
/// `models/tests/clinc150_encoder_tier_simulation.rs` (5 institutions, Dirichlet 0.5, 20 rounds):
/// the embedding at 3 times the n-grams' unit length, local SGD at learning rate 2, plain federated
/// averaging. Server momentum, which the fast tier needs, made the dense block overshoot (validation
/// accuracy 0.92 to 0.94 with momentum 0.9, 0.955 without).
pub mod encoder_tier {
    /// Scale of the embedding beside the n-grams.
    pub const WEIGHT: f32 = 3.0;
    /// Local learning rate.
    pub const LEARNING_RATE: f32 = 2.0;
    /// Server momentum.
    pub const SERVER_MOMENTUM: f32 = 0.0;
}

/// The fast tier's server optimiser, chosen on CLINC150's validation split by
/// `models/tests/clinc150_federated_simulation.rs` (5 institutions, Dirichlet 0.5, 20 rounds, split seeds
/// 42, 1, 2 and 3): momentum 0.7 at server learning rate 3 moves the model as far per round as momentum
/// 0.9 at 1 (ten mean updates), with less of past rounds' direction in each step. Validation accuracy
/// 0.900 to 0.903 on the four splits, against 0.889 to 0.894 with momentum 0.9 at 1; 0.5 at 6 and 0
/// at 8 diverged.
pub mod fast_tier {
    /// The server's learning rate.
    pub const SERVER_LEARNING_RATE: f32 = 3.0;
    /// Server momentum.
    pub const SERVER_MOMENTUM: f32 = 0.7;
}

/// What an intent model is: its labels and how it reads text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    /// Label names; the model predicts an index into this list.
    pub labels: Vec<String>,
    /// Feature extraction.
    pub features: FeatureConfig,
}

impl IntentSpec {
    /// Validates and builds a spec: 2 to 10,000 unique non-empty labels of at most 200 bytes, a feature
    /// dimension that is a power of two between 2^10 and 2^22, n-gram lengths that make sense.
    pub fn new(labels: Vec<String>, features: FeatureConfig) -> Result<Self, ModelError> {
        check_labels(&labels, 2, 10_000)?;
        check_features(&features)?;
        Ok(Self { labels, features })
    }

    /// An encoder-tier spec: the default n-grams and the sentence embedding of
    /// [`crate::features::ENCODER_MODEL`] at [`encoder_tier::WEIGHT`].
    pub fn encoder_tier(labels: Vec<String>) -> Result<Self, ModelError> {
        let encoder = crate::features::EncoderFeatures {
            model: crate::features::ENCODER_MODEL.to_string(),
            weight: encoder_tier::WEIGHT,
        };
        Self::new(labels, FeatureConfig { encoder: Some(encoder), ..FeatureConfig::default() })
    }

    /// Number of `f32` parameters: `input_dim * labels + labels`.
    pub fn num_params(&self) -> usize {
        self.shape().num_params()
    }

    pub(crate) fn shape(&self) -> Shape {
        Shape::new(&self.features, self.labels.len())
    }

    /// The JSON form carried in job specs and model files.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and validates the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(ModelError::InvalidSpec(format!(
                "spec of {} bytes exceeds {MAX_SPEC_BYTES}",
                bytes.len()
            )));
        }
        let raw: IntentSpec = serde_json::from_slice(bytes)
            .map_err(|e| ModelError::InvalidSpec(format!("not an intent spec: {e}")))?;
        Self::new(raw.labels, raw.features)
    }

    /// Index of `label`, if the model has it.
    pub fn label_index(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }
}

/// A trained (or initial) intent model.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentModel {
    /// Its spec.
    pub spec: IntentSpec,
    /// Flat parameters, `spec.num_params()` long.
    pub params: Vec<f32>,
    /// A query whose best probability is below this is out of scope.
    pub oos_threshold: Option<f32>,
}

/// A classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Best label.
    pub label: String,
    /// Its probability.
    pub confidence: f32,
    /// The best label is `oos`, or the confidence is under the threshold.
    pub out_of_scope: bool,
    /// The best labels with their probabilities, best first.
    pub top_k: Vec<(String, f32)>,
}

/// Softmax probabilities of one featurised example.
pub(crate) fn probabilities(spec: &IntentSpec, params: &[f32], x: &SparseVec, out: &mut Vec<f32>) {
    linear::logits(spec.shape(), params, x, out);
    softmax_in_place(out);
}

impl IntentModel {
    /// All-zero parameters: predicts the uniform distribution.
    pub fn zeroed(spec: IntentSpec) -> Self {
        let n = spec.num_params();
        Self { spec, params: vec![0.0; n], oos_threshold: None }
    }

    /// Wraps parameters after checking their length and that every one is finite.
    pub fn from_params(spec: IntentSpec, params: Vec<f32>) -> Result<Self, ModelError> {
        crate::check_len(&params, spec.num_params())?;
        if let Some(i) = params.iter().position(|p| !p.is_finite()) {
            return Err(ModelError::InvalidParams(format!("parameter {i} is {}", params[i])));
        }
        Ok(Self { spec, params, oos_threshold: None })
    }

    /// Probabilities for every label. An encoder-tier model ([`FeatureConfig::needs_encoder`]) needs
    /// the text's `embedding`; without it, or with one of another length, this is an error.
    pub fn probabilities_embedded(
        &self,
        text: &str,
        embedding: Option<&[f32]>,
    ) -> Result<Vec<f32>, ModelError> {
        let x = featurize_embedded(&self.spec.features, text, embedding)?;
        let mut p = Vec::with_capacity(self.spec.labels.len());
        probabilities(&self.spec, &self.params, &x, &mut p);
        Ok(p)
    }

    /// Classifies `text` (with its `embedding` for an encoder-tier model), returning the `top_k` best
    /// labels.
    pub fn predict_embedded(
        &self,
        text: &str,
        embedding: Option<&[f32]>,
        top_k: usize,
    ) -> Result<Prediction, ModelError> {
        let p = self.probabilities_embedded(text, embedding)?;
        Ok(self.prediction_from(&p, top_k))
    }

    /// Probabilities for every label, for a fast-tier model. An encoder-tier model's embedding block
    /// counts as zero here: call [`Self::probabilities_embedded`] for those.
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        let x = crate::features::featurize(&self.spec.features, text);
        let mut p = Vec::with_capacity(self.spec.labels.len());
        probabilities(&self.spec, &self.params, &x, &mut p);
        p
    }

    /// Classifies `text` with a fast-tier model, returning the `top_k` best labels.
    pub fn predict(&self, text: &str, top_k: usize) -> Prediction {
        let p = self.probabilities(text);
        self.prediction_from(&p, top_k)
    }

    pub(crate) fn prediction_from(&self, p: &[f32], top_k: usize) -> Prediction {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let best = order[0];
        let label = self.spec.labels[best].clone();
        let confidence = p[best];
        let out_of_scope = label == OOS_LABEL || self.oos_threshold.is_some_and(|t| confidence < t);
        let top_k = order.iter().take(top_k.max(1)).map(|&i| (self.spec.labels[i].clone(), p[i])).collect();
        Prediction { label, confidence, out_of_scope, top_k }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> IntentSpec {
        IntentSpec::new(
            vec!["a".into(), "b".into(), "oos".into()],
            FeatureConfig { dim: 1024, ..Default::default() },
        )
        .unwrap()
    }

    #[test]
    fn spec_validation_names_the_problem() {
        let f = FeatureConfig::default();
        let e = IntentSpec::new(vec!["a".into()], f.clone()).unwrap_err();
        assert!(e.to_string().contains("1 labels"), "{e}");
        let e = IntentSpec::new(vec!["a".into(), "a".into()], f.clone()).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = IntentSpec::new(vec!["a".into(), "b".into()], FeatureConfig { dim: 1000, ..f.clone() })
            .unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
        assert!(IntentSpec::from_json(b"{\"labels\": 3}").is_err());
        assert!(IntentSpec::from_json(&vec![b' '; 2 << 20]).is_err());
        let s = spec();
        assert_eq!(IntentSpec::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(s.num_params(), 1024 * 3 + 3);
    }

    #[test]
    fn zero_model_is_uniform_and_thresholds_flag_out_of_scope() {
        let mut m = IntentModel::zeroed(spec());
        let p = m.predict("anything", 5);
        assert_eq!(p.top_k.len(), 3);
        assert!((p.confidence - 1.0 / 3.0).abs() < 1e-6);
        m.oos_threshold = Some(0.5);
        assert!(m.predict("anything", 1).out_of_scope);
    }

    #[test]
    fn from_params_refuses_wrong_length_and_non_finite() {
        let s = spec();
        assert!(IntentModel::from_params(s.clone(), vec![0.0; 3]).is_err());
        let mut p = vec![0.0; s.num_params()];
        p[7] = f32::NAN;
        let e = IntentModel::from_params(s, p).unwrap_err();
        assert!(e.to_string().contains("parameter 7"), "{e}");
    }
}
