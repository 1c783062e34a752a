//! Which model a job trains: the families the coordinator knows how to size.
//!
//! The coordinator aggregates flat `f32` vectors and needs only a model's size; participants need the
//! whole spec to train. `Bench` is a model with no training behind it, for measuring the round protocol.

use serde::{Deserialize, Serialize};

use crate::{IntentSpec, ModelError};

/// Largest model, in parameters, any spec may describe.
pub const MAX_NUM_PARAMS: usize = 1 << 28;

/// A model family with its shape.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ModelSpec {
    /// The intent classifier.
    Intent(IntentSpec),
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

impl ModelSpec {
    /// A bench model of `num_params` parameters.
    pub fn bench(num_params: usize) -> Self {
        ModelSpec::Bench { num_params }
    }

    /// Parses a spec: `{"family": "bench", "num_params": N}` or an intent spec.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        if let Ok(b) = serde_json::from_slice::<BenchJson>(bytes) {
            if b.family != "bench" {
                return Err(ModelError::InvalidSpec(format!("unknown model family {:?}", b.family)));
            }
            if b.num_params == 0 || b.num_params > MAX_NUM_PARAMS {
                return Err(ModelError::InvalidSpec(format!(
                    "bench model of {} parameters; allowed 1..={MAX_NUM_PARAMS}",
                    b.num_params
                )));
            }
            return Ok(ModelSpec::Bench { num_params: b.num_params });
        }
        IntentSpec::from_json(bytes).map(ModelSpec::Intent)
    }

    /// The JSON form, as carried in job specs.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            ModelSpec::Intent(s) => s.to_json(),
            ModelSpec::Bench { num_params } => {
                serde_json::to_vec(&BenchJson { family: "bench".into(), num_params: *num_params })
                    .unwrap_or_default()
            }
        }
    }

    /// Number of `f32` parameters.
    pub fn num_params(&self) -> usize {
        match self {
            ModelSpec::Intent(s) => s.num_params(),
            ModelSpec::Bench { num_params } => *num_params,
        }
    }
}
