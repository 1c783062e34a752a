//! The model card: which data, which training and which privacy parameters produced a model, kept in the
//! model file's metadata under [`CARD_KEY`] so that anyone holding the file can tell what it is.
//!
//! Reading is lenient about fields a later version adds (a card is documentation, and an old reader
//! should still show what it understands); a card that is present but malformed is an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::train::TrainParams;
use crate::ModelError;

/// The metadata key under which the card is stored.
pub const CARD_KEY: &str = "model_card";

/// What produced a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model family (`intent`, `emotion`, `recommend`).
    pub family: String,
    /// The training data.
    pub data: DataCard,
    /// How it was trained.
    pub training: TrainingCard,
    /// Privacy protections applied; `None` when none were recorded (no differential privacy, no
    /// secure aggregation).
    #[serde(default)]
    pub privacy: Option<PrivacyCard>,
    /// Evaluation results when the file was written: metric name to value (`macro_f1`, `hr_at_10`...).
    #[serde(default)]
    pub evaluation: BTreeMap<String, f64>,
}

/// The training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataCard {
    /// Dataset name and split (`GoEmotions Ekman train`), or an institution's own description.
    pub dataset: String,
    /// Institutions whose data took part.
    pub institutions: u32,
    /// Examples (texts, or customers for the recommender) summed over institutions.
    pub examples: u64,
    /// Anything else a reader should know (the split, the cleaning rules).
    #[serde(default)]
    pub notes: Option<String>,
}

/// How a model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingCard {
    /// Federated (rounds across institutions) or centralized (pooled data).
    pub federated: bool,
    /// The coordinator's job, if federated.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Rounds committed (centralized: the equivalent number of passes).
    pub rounds: u64,
    /// Model version (the last committed round), if federated.
    #[serde(default)]
    pub version: Option<u64>,
    /// Local training hyper-parameters.
    pub local: TrainParams,
    /// Server learning rate of federated averaging.
    pub server_learning_rate: f32,
    /// Server momentum of federated averaging (0: plain averaging).
    pub server_momentum: f32,
}

/// Privacy parameters; every field optional because deployments differ in what they apply.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PrivacyCard {
    /// Differential privacy epsilon spent for this model.
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// Differential privacy delta.
    #[serde(default)]
    pub delta: Option<f64>,
    /// Gaussian noise multiplier of DP-SGD or of the aggregate.
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// Per-update L2 clipping bound.
    #[serde(default)]
    pub clip_norm: Option<f64>,
    /// Whether updates were securely aggregated.
    #[serde(default)]
    pub secure_aggregation: Option<bool>,
    /// The accountant that computed epsilon (`rdp`, `prv`...).
    #[serde(default)]
    pub accountant: Option<String>,
}

impl ModelCard {
    /// Stores the card in `metadata` under [`CARD_KEY`]. Metadata that is not a JSON object is kept under
    /// `"metadata"` in a new object.
    pub fn insert_into(&self, metadata: &mut serde_json::Value) {
        if !metadata.is_object() {
            let old = std::mem::take(metadata);
            let mut m = serde_json::Map::new();
            if !old.is_null() {
                m.insert("metadata".into(), old);
            }
            *metadata = serde_json::Value::Object(m);
        }
        if let Some(m) = metadata.as_object_mut() {
            // Serialising strings, numbers and maps of them cannot fail.
            m.insert(CARD_KEY.into(), serde_json::to_value(self).unwrap_or_default());
        }
    }

    /// The card stored in `metadata`: `None` when there is none, an error when it is malformed.
    pub fn from_metadata(metadata: &serde_json::Value) -> Result<Option<Self>, ModelError> {
        match metadata.get(CARD_KEY) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| ModelError::InvalidData(format!("model card: {e}"))),
        }
    }
}

impl std::fmt::Display for ModelCard {
    /// A human-readable summary, as `hearth model show` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.training;
        writeln!(f, "family:    {}", self.family)?;
        writeln!(
            f,
            "data:      {} ({} institutions, {} examples)",
            self.data.dataset, self.data.institutions, self.data.examples
        )?;
        if let Some(n) = &self.data.notes {
            writeln!(f, "           {n}")?;
        }
        let how = if t.federated { "federated" } else { "centralized" };
        write!(f, "training:  {how}, {} rounds", t.rounds)?;
        if let Some(j) = &t.job_id {
            write!(f, ", job {j}")?;
        }
        if let Some(v) = t.version {
            write!(f, ", version {v}")?;
        }
        writeln!(
            f,
            "\n           local: {} epochs, learning rate {}, batch {}, l2 {}; server: learning rate {}, momentum {}",
            t.local.local_epochs,
            t.local.learning_rate,
            t.local.batch_size,
            t.local.l2,
            t.server_learning_rate,
            t.server_momentum
        )?;
        match &self.privacy {
            None => writeln!(f, "privacy:   none recorded")?,
            Some(p) => {
                let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| x.to_string());
                writeln!(
                    f,
                    "privacy:   epsilon {}, delta {}, noise multiplier {}, clip norm {}, secure aggregation {}, accountant {}",
                    opt(p.epsilon),
                    opt(p.delta),
                    opt(p.noise_multiplier),
                    opt(p.clip_norm),
                    p.secure_aggregation.map_or("-".to_string(), |b| b.to_string()),
                    p.accountant.as_deref().unwrap_or("-")
                )?;
            }
        }
        for (k, v) in &self.evaluation {
            writeln!(f, "eval:      {k} = {v:.4}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard {
            family: "emotion".into(),
            data: DataCard {
                dataset: "GoEmotions Ekman train".into(),
                institutions: 5,
                examples: 43_410,
                notes: None,
            },
            training: TrainingCard {
                federated: true,
                job_id: Some("j1".into()),
                rounds: 20,
                version: Some(20),
                local: TrainParams::default(),
                server_learning_rate: 1.0,
                server_momentum: 0.9,
            },
            privacy: Some(PrivacyCard { epsilon: Some(3.0), delta: Some(1e-5), ..Default::default() }),
            evaluation: [("macro_f1".to_string(), 0.5)].into_iter().collect(),
        }
    }

    #[test]
    fn cards_round_trip_through_metadata() {
        let c = card();
        let mut meta = serde_json::json!({"job_id": "j1", "version": 20});
        c.insert_into(&mut meta);
        assert_eq!(meta["job_id"], "j1");
        assert_eq!(ModelCard::from_metadata(&meta).unwrap(), Some(c.clone()));
        let mut null = serde_json::Value::Null;
        c.insert_into(&mut null);
        assert_eq!(ModelCard::from_metadata(&null).unwrap(), Some(c.clone()));
        let mut s = serde_json::json!("free text");
        c.insert_into(&mut s);
        assert_eq!(s["metadata"], "free text");
        let text = c.to_string();
        assert!(text.contains("epsilon 3") && text.contains("federated, 20 rounds"), "{text}");
    }

    #[test]
    fn missing_cards_are_none_and_malformed_ones_errors() {
        assert_eq!(ModelCard::from_metadata(&serde_json::json!({"x": 1})).unwrap(), None);
        assert_eq!(ModelCard::from_metadata(&serde_json::Value::Null).unwrap(), None);
        let e = ModelCard::from_metadata(&serde_json::json!({"model_card": {"family": 3}})).unwrap_err();
        assert!(e.to_string().contains("model card"), "{e}");
        // Fields a later version adds are ignored.
        let mut v = serde_json::to_value(card()).unwrap();
        v["privacy"]["new_field"] = serde_json::json!(1);
        assert!(ModelCard::from_metadata(&serde_json::json!({"model_card": v})).unwrap().is_some());
    }
}
