//! Which model a job trains: the families the coordinator knows how to size, and the one entry point a
//! participant's round needs whatever the family.
//!
//! The coordinator aggregates flat `f32` vectors and needs only a model's size and its initial value
//! ([`ModelSpec::init_params`], all zeros for every family); participants need the whole spec to train
//! ([`ModelSpec::train_local`] on [`LocalData`]). `Bench` is a model with no training behind it, for
//! measuring the round protocol.
//!
//! JSON forms: an intent spec is `{"labels", "features"}` (no family key, as before families existed;
//! `"family": "intent"` is accepted too), the others carry `"family"`: `"emotion"`, `"recommend"`,
//! `"bench"`.

use serde::{Deserialize, Serialize};

use crate::emotion::{self, EmotionSet, EmotionSpec};
use crate::recommend::{self, Interactions, RecommendSpec};
use crate::train::{self, EncodedSet, TrainParams, TrainStats, DEFAULT_ROUNDS, DEFAULT_SERVER_MOMENTUM};
use crate::{IntentSpec, ModelError};

/// Largest model, in parameters, any spec may describe.
pub const MAX_NUM_PARAMS: usize = 1 << 28;

/// Largest spec JSON accepted (a recommender's catalogue is in it).
pub const MAX_SPEC_BYTES: usize = 8 << 20;

/// A model family with its shape.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ModelSpec {
    /// The intent classifier.
    Intent(IntentSpec),
    /// The multi-label emotion classifier.
    Emotion(EmotionSpec),
    /// The collaborative-filtering recommender.
    Recommend(RecommendSpec),
    /// A parameter vector of a given size that nothing trains: `hearth bench` uses it.
    Bench {
        /// Number of `f32` parameters.
        num_params: usize,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BenchJson {
    family: String,
    num_params: usize,
}

/// A participant's local data, encoded for one family's spec.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LocalData {
    /// Labelled utterances ([`crate::encode`]).
    Intent(EncodedSet),
    /// Texts with emotion labels ([`crate::emotion::encode`]).
    Emotion(EmotionSet),
    /// Customers' purchases ([`crate::recommend::data::encode`]).
    Recommend(Interactions),
}

impl LocalData {
    /// Examples (texts, or customers), the weight of an update from this data.
    pub fn len(&self) -> usize {
        match self {
            LocalData::Intent(d) => d.len(),
            LocalData::Emotion(d) => d.len(),
            LocalData::Recommend(d) => d.len(),
        }
    }

    /// Whether there is nothing to train on.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn family(&self) -> &'static str {
        match self {
            LocalData::Intent(_) => "intent",
            LocalData::Emotion(_) => "emotion",
            LocalData::Recommend(_) => "recommend",
        }
    }
}

/// What a job of one family runs by default: local hyper-parameters and the server optimizer.
#[derive(Debug, Clone, PartialEq)]
pub struct FederatedDefaults {
    /// Local training per round.
    pub train: TrainParams,
    /// Rounds.
    pub rounds: u64,
    /// Server learning rate of federated averaging.
    pub server_learning_rate: f32,
    /// Server momentum (FedAvgM).
    pub server_momentum: f32,
}

impl ModelSpec {
    /// A bench model of `num_params` parameters.
    pub fn bench(num_params: usize) -> Self {
        ModelSpec::Bench { num_params }
    }

    /// Parses a spec of any family (see the module doc for the JSON forms).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(ModelError::InvalidSpec(format!(
                "spec of {} bytes exceeds {MAX_SPEC_BYTES}",
                bytes.len()
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ModelError::InvalidSpec(format!("not JSON: {e}")))?;
        let family = match v.get("family") {
            None => return IntentSpec::from_json(bytes).map(ModelSpec::Intent),
            Some(serde_json::Value::String(f)) => f.as_str(),
            Some(other) => return Err(ModelError::InvalidSpec(format!("family {other} is not a string"))),
        };
        match family {
            "intent" => {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("family");
                }
                IntentSpec::from_json(&serde_json::to_vec(&v).unwrap_or_default()).map(ModelSpec::Intent)
            }
            "emotion" => EmotionSpec::from_json(bytes).map(ModelSpec::Emotion),
            "recommend" => RecommendSpec::from_json(bytes).map(ModelSpec::Recommend),
            "bench" => {
                let b: BenchJson = serde_json::from_value(v.clone())
                    .map_err(|e| ModelError::InvalidSpec(format!("not a bench spec: {e}")))?;
                if b.num_params == 0 || b.num_params > MAX_NUM_PARAMS {
                    return Err(ModelError::InvalidSpec(format!(
                        "bench model of {} parameters; allowed 1..={MAX_NUM_PARAMS}",
                        b.num_params
                    )));
                }
                Ok(ModelSpec::Bench { num_params: b.num_params })
            }
            other => Err(ModelError::InvalidSpec(format!("unknown model family {other:?}"))),
        }
    }

    /// The JSON form, as carried in job specs.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            ModelSpec::Intent(s) => s.to_json(),
            ModelSpec::Emotion(s) => s.to_json(),
            ModelSpec::Recommend(s) => s.to_json(),
            ModelSpec::Bench { num_params } => {
                serde_json::to_vec(&BenchJson { family: "bench".into(), num_params: *num_params })
                    .unwrap_or_default()
            }
        }
    }

    /// The family's name, as in model files and the JSON form.
    pub fn family(&self) -> &'static str {
        match self {
            ModelSpec::Intent(_) => "intent",
            ModelSpec::Emotion(_) => "emotion",
            ModelSpec::Recommend(_) => "recommend",
            ModelSpec::Bench { .. } => "bench",
        }
    }

    /// Number of `f32` parameters.
    pub fn num_params(&self) -> usize {
        match self {
            ModelSpec::Intent(s) => s.num_params(),
            ModelSpec::Emotion(s) => s.num_params(),
            ModelSpec::Recommend(s) => s.num_params(),
            ModelSpec::Bench { num_params } => *num_params,
        }
    }

    /// The initial global model: all zeros, for every family. (The recommender's random starting point
    /// is derived from its spec's seed and added to the parameters, so zeros are a valid start there too.)
    pub fn init_params(&self) -> Vec<f32> {
        vec![0.0; self.num_params()]
    }

    /// One participant's round: trains `params` (the global model on entry) in place on `data`. The update
    /// to upload is the difference from the global model, weighted by [`TrainStats::examples`].
    pub fn train_local(
        &self,
        params: &mut [f32],
        data: &LocalData,
        p: &TrainParams,
    ) -> Result<TrainStats, ModelError> {
        match (self, data) {
            (ModelSpec::Intent(s), LocalData::Intent(d)) => train::train_local(s, params, d, p),
            (ModelSpec::Emotion(s), LocalData::Emotion(d)) => emotion::train_local(s, params, d, p),
            (ModelSpec::Recommend(s), LocalData::Recommend(d)) => recommend::train_local(s, params, d, p),
            (ModelSpec::Bench { .. }, _) => {
                Err(ModelError::InvalidSpec("a bench model has no training".into()))
            }
            (spec, data) => {
                Err(ModelError::WrongFamily { expected: spec.family(), found: data.family().into() })
            }
        }
    }

    /// The defaults a job of this family runs with, measured by this crate's simulations.
    pub fn defaults(&self) -> FederatedDefaults {
        let (train, server_learning_rate, server_momentum) = match self {
            ModelSpec::Emotion(s) if s.features.needs_encoder() => (
                emotion::train_params_for(s),
                emotion::encoder_tier::SERVER_LEARNING_RATE,
                emotion::encoder_tier::SERVER_MOMENTUM,
            ),
            ModelSpec::Emotion(_) => {
                (emotion::default_train_params(), emotion::SERVER_LEARNING_RATE, emotion::SERVER_MOMENTUM)
            }
            ModelSpec::Recommend(_) => (
                recommend::default_train_params(),
                recommend::SERVER_LEARNING_RATE,
                recommend::SERVER_MOMENTUM,
            ),
            ModelSpec::Intent(s) if s.features.needs_encoder() => (
                TrainParams {
                    learning_rate: crate::intent::encoder_tier::LEARNING_RATE,
                    ..TrainParams::default()
                },
                1.0,
                crate::intent::encoder_tier::SERVER_MOMENTUM,
            ),
            ModelSpec::Intent(_) => (
                TrainParams::default(),
                crate::intent::fast_tier::SERVER_LEARNING_RATE,
                crate::intent::fast_tier::SERVER_MOMENTUM,
            ),
            ModelSpec::Bench { .. } => (TrainParams::default(), 1.0, DEFAULT_SERVER_MOMENTUM),
        };
        let rounds =
            if let ModelSpec::Recommend(_) = self { recommend::DEFAULT_ROUNDS } else { DEFAULT_ROUNDS };
        FederatedDefaults { train, rounds, server_learning_rate, server_momentum }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeatureConfig;

    #[test]
    fn every_family_round_trips_and_dispatches() {
        let f = FeatureConfig { dim: 1024, ..Default::default() };
        let specs = [
            ModelSpec::Intent(IntentSpec::new(vec!["a".into(), "b".into()], f.clone()).unwrap()),
            ModelSpec::Emotion(EmotionSpec::new(vec!["anger".into(), "joy".into()], f).unwrap()),
            ModelSpec::Recommend(
                RecommendSpec::with_defaults(vec!["x".into(), "y".into()], vec![], 15_000, 3).unwrap(),
            ),
            ModelSpec::bench(10),
        ];
        for s in &specs {
            let back = ModelSpec::from_json(&s.to_json()).unwrap();
            assert_eq!(&back, s);
            assert_eq!(s.init_params().len(), s.num_params());
        }
        let intent = br#"{"family": "intent", "labels": ["a", "b"], "features": {"dim": 1024, "word_ngrams": 1, "char_ngram_min": 0, "char_ngram_max": 0}}"#;
        assert!(matches!(ModelSpec::from_json(intent).unwrap(), ModelSpec::Intent(_)));
        let mut p = specs[1].init_params();
        let e = specs[1].train_local(
            &mut p,
            &LocalData::Recommend(Interactions::default()),
            &TrainParams::default(),
        );
        assert!(matches!(e, Err(ModelError::WrongFamily { expected: "emotion", .. })), "{e:?}");
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let e = ModelSpec::from_json(br#"{"family": "vision"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown model family \"vision\""), "{e}");
        assert!(ModelSpec::from_json(br#"{"family": 3}"#).is_err());
        assert!(ModelSpec::from_json(br#"{"family": "bench", "num_params": 0}"#).is_err());
        assert!(ModelSpec::from_json(b"not json").is_err());
        assert!(ModelSpec::from_json(&vec![b' '; MAX_SPEC_BYTES + 1]).is_err());
        let e = ModelSpec::from_json(br#"{"family": "emotion", "labels": ["a"], "features": {"dim": 1024, "word_ngrams": 1, "char_ngram_min": 0, "char_ngram_max": 0}}"#).unwrap_err();
        assert!(e.to_string().contains("1 labels"), "{e}");
    }
}
