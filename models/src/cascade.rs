//! The intent cascade: the fast tier's model answers the queries it is sure of, the encoder tier's model
//! the rest. Most queries then cost the microseconds of hashed n-grams, and only the hard ones pay the
//! milliseconds of the sentence encoder.
//!
//! The fast model answers alone when the probability of its best label reaches the cascade's
//! `confidence`; that answer (label, out-of-scope flag, top labels) is the fast model's own. Otherwise the
//! text is embedded and the encoder tier's model answers. Both models must know the same labels.

use crate::eval::{evaluate_predictions, Metrics};
use crate::intent::{IntentModel, Prediction};
use crate::{Example, ModelError, OOS_LABEL};

/// The fast model's confidence at which it answers alone, chosen on CLINC150's validation split by
/// `models/tests/clinc150_encoder_tier_simulation.rs` (`CASCADE=1`): the lowest threshold whose cascade
/// gives up at most half a point of validation accuracy against the encoder tier alone. With the fast
/// tier's current server optimiser ([`crate::intent::fast_tier`]) that is 0.8: 0.9539 against 0.9552,
/// the fast model answering 72.6% of the queries (at 0.7, 0.9500 and 78.4%; at 0.95, 0.9552 and 53.2%).
pub const CASCADE_CONFIDENCE: f32 = 0.8;

/// Checks a cascade confidence: a probability above 0 and at most 1.
pub fn check_confidence(confidence: f32) -> Result<(), String> {
    if confidence > 0.0 && confidence <= 1.0 {
        Ok(())
    } else {
        Err(format!("confidence {confidence} is not in (0, 1]: the fast model's probability at which it answers alone"))
    }
}

/// Which model of a cascade answered; answers spell it `fast` or `encoder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Tier {
    /// The fast tier's model, alone.
    Fast,
    /// The encoder tier's model.
    Encoder,
}

impl Tier {
    /// `fast` or `encoder`, as answers and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Fast => "fast",
            Tier::Encoder => "encoder",
        }
    }
}

/// A fast-tier and an encoder-tier intent model over the same labels, and the confidence at which the
/// fast one answers alone.
#[derive(Debug, Clone, Copy)]
pub struct Cascade<'a> {
    fast: &'a IntentModel,
    encoder: &'a IntentModel,
    confidence: f32,
}

impl<'a> Cascade<'a> {
    /// Checks the pair: `fast` reads no embeddings, `encoder` does, both have the same labels in the same
    /// order, and `confidence` is in (0, 1].
    pub fn new(fast: &'a IntentModel, encoder: &'a IntentModel, confidence: f32) -> Result<Self, ModelError> {
        let bad = |why: String| Err(ModelError::InvalidSpec(format!("no cascade: {why}")));
        if fast.spec.features.needs_encoder() {
            return bad(
                "the first model is of the encoder tier; the cascade starts with a fast-tier model".into()
            );
        }
        if !encoder.spec.features.needs_encoder() {
            return bad(
                "the second model is of the fast tier; the cascade ends with an encoder-tier model".into()
            );
        }
        if fast.spec.labels != encoder.spec.labels {
            return bad(format!(
                "the fast model knows {} labels and the encoder model {}, not the same list",
                fast.spec.labels.len(),
                encoder.spec.labels.len()
            ));
        }
        if let Err(why) = check_confidence(confidence) {
            return bad(why);
        }
        Ok(Self { fast, encoder, confidence })
    }

    /// The confidence at which the fast model answers alone.
    pub fn confidence(&self) -> f32 {
        self.confidence
    }

    /// Classifies `text`: the fast model's answer when it is sure enough, else the encoder model's, with
    /// `embed` called (only then) for the text's sentence embedding.
    pub fn predict<E>(
        &self,
        text: &str,
        top_k: usize,
        embed: impl FnOnce(&str) -> Result<Vec<f32>, E>,
    ) -> Result<(Prediction, Tier), E>
    where
        E: From<ModelError>,
    {
        let fast = self.fast.predict(text, top_k);
        if fast.confidence >= self.confidence {
            return Ok((fast, Tier::Fast));
        }
        let embedding = embed(text)?;
        Ok((self.encoder.predict_embedded(text, Some(&embedding), top_k)?, Tier::Encoder))
    }
}

/// The quality of a cascade on a labelled set, and how much of it the fast model answered alone.
#[derive(Debug, Clone, PartialEq)]
pub struct CascadeMetrics {
    /// Accuracy, in-scope accuracy, out-of-scope recall and macro-F1 of the cascade's answers.
    pub metrics: Metrics,
    /// Share of the examples the fast model answered alone.
    pub answered_by_fast: f64,
}

/// Evaluates `cascade` on `examples`, which carry their embeddings (`Example::embedding`).
pub fn evaluate_cascade(cascade: &Cascade<'_>, examples: &[Example]) -> Result<CascadeMetrics, ModelError> {
    let mut fast = 0usize;
    let mut labels = Vec::with_capacity(examples.len());
    for e in examples {
        let (p, tier) = cascade.predict(&e.text, 1, |_| {
            e.embedding.as_deref().map(<[f32]>::to_vec).ok_or_else(|| {
                ModelError::InvalidData("an example the cascade sent to the encoder has no embedding".into())
            })
        })?;
        fast += usize::from(tier == Tier::Fast);
        labels.push(if p.out_of_scope { OOS_LABEL.to_string() } else { p.label });
    }
    let preds: Vec<&str> = labels.iter().map(String::as_str).collect();
    Ok(CascadeMetrics {
        metrics: evaluate_predictions(examples, &preds),
        answered_by_fast: fast as f64 / examples.len().max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{EncoderFeatures, FeatureConfig, ENCODER_MODEL};
    use crate::IntentSpec;

    fn labels() -> Vec<String> {
        vec!["balance".into(), "transfer".into(), OOS_LABEL.into()]
    }

    fn fast() -> IntentModel {
        let spec = IntentSpec::new(labels(), FeatureConfig { dim: 1024, ..Default::default() }).unwrap();
        // Only the bias of "balance" is set: every text is "balance" with the same confidence.
        let mut m = IntentModel::zeroed(spec);
        let n = m.params.len();
        m.params[n - 3] = 3.0;
        m
    }

    fn encoder() -> IntentModel {
        let encoder = EncoderFeatures { model: ENCODER_MODEL.into(), weight: 1.0 };
        let spec = IntentSpec::new(
            labels(),
            FeatureConfig { dim: 1024, encoder: Some(encoder), ..Default::default() },
        )
        .unwrap();
        // Only the bias of "transfer" is set.
        let mut m = IntentModel::zeroed(spec);
        let n = m.params.len();
        m.params[n - 2] = 3.0;
        m
    }

    fn example(label: &str) -> Example {
        Example {
            text: "move money please".into(),
            label: label.into(),
            embedding: Some(vec![0.0; crate::encoder::EMBEDDING_DIM].into()),
        }
    }

    #[test]
    fn the_fast_model_answers_when_sure_and_the_encoder_otherwise() {
        let (f, e) = (fast(), encoder());
        // The fast model's confidence: e^3 / (e^3 + 2).
        let sure = 3f32.exp() / (3f32.exp() + 2.0);
        let zero = || Ok::<_, ModelError>(vec![0.0; crate::encoder::EMBEDDING_DIM]);
        let c = Cascade::new(&f, &e, sure - 0.01).unwrap();
        let (p, tier) =
            c.predict("hello", 2, |_| -> Result<Vec<f32>, ModelError> { panic!("not embedded") }).unwrap();
        assert_eq!((p.label.as_str(), tier), ("balance", Tier::Fast));
        let c = Cascade::new(&f, &e, sure + 0.01).unwrap();
        let (p, tier) = c.predict("hello", 2, |_| zero()).unwrap();
        assert_eq!((p.label.as_str(), tier), ("transfer", Tier::Encoder));
        // An embedding that cannot be had is the caller's error, passed through.
        let err = c.predict("hello", 2, |_| Err(ModelError::InvalidData("no encoder".into()))).unwrap_err();
        assert!(err.to_string().contains("no encoder"), "{err}");

        let set = [example("transfer"), example("balance")];
        let m = evaluate_cascade(&Cascade::new(&f, &e, sure + 0.01).unwrap(), &set).unwrap();
        assert_eq!((m.metrics.accuracy, m.answered_by_fast), (0.5, 0.0));
        let m = evaluate_cascade(&Cascade::new(&f, &e, 0.1).unwrap(), &set).unwrap();
        assert_eq!((m.metrics.accuracy, m.answered_by_fast), (0.5, 1.0));
    }

    #[test]
    fn a_cascade_needs_a_fast_and_an_encoder_model_over_the_same_labels() {
        let (f, e) = (fast(), encoder());
        let msg = |r: Result<Cascade<'_>, ModelError>| r.unwrap_err().to_string();
        assert!(msg(Cascade::new(&e, &e, 0.9)).contains("first model is of the encoder tier"));
        assert!(msg(Cascade::new(&f, &f, 0.9)).contains("second model is of the fast tier"));
        assert!(msg(Cascade::new(&f, &e, 0.0)).contains("not in (0, 1]"));
        assert!(msg(Cascade::new(&f, &e, f32::NAN)).contains("not in (0, 1]"));
        let other =
            IntentSpec::new(vec!["a".into(), "b".into()], FeatureConfig { dim: 1024, ..Default::default() })
                .unwrap();
        assert!(msg(Cascade::new(&IntentModel::zeroed(other), &e, 0.9)).contains("not the same list"));
    }
}
