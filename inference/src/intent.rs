//! `POST /v1/intent` and `Inference/Intent`: which intent a customer's message expresses, and whether it
//! is out of scope (no known intent: route it to a person).

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::{Extension, Json};
use bytes::Bytes;
use hearth_proto::v1;
use hearth_transport::PeerIdentity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use hearth_models::cascade::{Cascade, Tier};

use crate::slots::{ModelSlots, Slots};
use crate::text::text_schema;
use crate::{
    blocking, body_bytes, checked_text, parse_body, ApiError, Auditor, Body, ErrorBody, LabelScore, ModelRef,
};

/// Most labels a caller may ask for.
pub const MAX_TOP_K: u32 = 20;

/// Body of `POST /v1/intent`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentBody {
    /// The customer's message.
    #[schema(schema_with = text_schema)]
    pub text: String,
    /// Labels to return, at most 20 (0 or absent: 3).
    #[serde(default, deserialize_with = "crate::whole_number")]
    #[schema(minimum = 0, maximum = 20)]
    pub top_k: Option<u32>,
    /// Which model answers: `cascade` (absent: the default; the fast tier's model when it is sure,
    /// else the encoder tier's), `fast` (microseconds) or `encoder` (the best, milliseconds).
    pub tier: Option<Asked>,
}

impl Body for IntentBody {
    const FIELDS: &'static [&'static str] = &["text", "top_k", "tier"];
}

/// Which model a request asks to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Asked {
    /// The cascade when both tiers are served, else the one served.
    #[default]
    Cascade,
    /// The fast tier's model: the one served, or the cascade's fast stage.
    Fast,
    /// The encoder tier's model.
    Encoder,
}

impl Asked {
    /// Reads `cascade`, `fast` or `encoder` (absent or empty: `cascade`), as gRPC requests spell it.
    pub fn parse(tier: Option<&str>) -> Result<Self, ApiError> {
        match tier.unwrap_or_default() {
            "" | "cascade" => Ok(Asked::Cascade),
            "fast" => Ok(Asked::Fast),
            "encoder" => Ok(Asked::Encoder),
            other => Err(ApiError::bad(
                "unknown_tier",
                format!(
                    "tier {:?} is not one of cascade, fast, encoder",
                    other.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// Answer of `POST /v1/intent`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IntentAnswer {
    /// Best label, or `oos` when out of scope.
    pub label: String,
    /// Probability of the best label.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub confidence: f32,
    /// Whether the query matches no known intent and should go to a person.
    pub out_of_scope: bool,
    /// Best labels with their probabilities.
    pub top_k: Vec<LabelScore>,
    /// Job and version of the model that answered.
    pub model: ModelRef,
    /// The tier whose model answered: `fast` (hashed n-grams, microseconds) or `encoder` (the sentence
    /// encoder, milliseconds). With an encoder-tier model in service the fast tier's answers the queries it
    /// is sure of: the cascade.
    #[schema(example = "fast")]
    pub tier: Tier,
}

/// Validates and answers one query against the served intent model (the cascade when both tiers are
/// served).
pub fn answer(slots: &Slots, text: &str, top_k: Option<u32>) -> Result<IntentAnswer, ApiError> {
    answer_with(slots, text, top_k, Asked::Cascade)
}

/// Validates and answers one query with the model `asked` names.
pub fn answer_with(
    slots: &Slots,
    text: &str,
    top_k: Option<u32>,
    asked: Asked,
) -> Result<IntentAnswer, ApiError> {
    let text = checked_text(text)?;
    let k = match top_k {
        None | Some(0) => 3,
        Some(k) if k > MAX_TOP_K => {
            return Err(ApiError::bad(
                "top_k_out_of_range",
                format!("top_k {k} is over the limit of {MAX_TOP_K}"),
            ))
        }
        Some(k) => k,
    };
    // One load: the whole answer comes from a single model even if a swap happens meanwhile.
    let served = slots.intent.load_full().ok_or(ApiError::NoModel("intent"))?;
    let embed = |text: &str| -> Result<Vec<f32>, ApiError> {
        let encoder = slots.encoder.get().map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(encoder.embed_one(text))
    };
    // The fast stage over the same labels (the slots never hold an encoder-tier one); compared once.
    let stage = slots.intent_fast.load_full().filter(|f| f.model.spec.labels == served.model.spec.labels);
    let (p, tier, served) = if !served.model.spec.features.needs_encoder() {
        if asked == Asked::Encoder {
            return Err(ApiError::NoModel("encoder-tier intent"));
        }
        (served.model.predict(text, k as usize), Tier::Fast, served)
    } else {
        match (asked, stage, slots.cascade_confidence) {
            (Asked::Fast, None, _) => return Err(ApiError::NoModel("fast-tier intent")),
            (Asked::Fast, Some(fast), _) => (fast.model.predict(text, k as usize), Tier::Fast, fast),
            (Asked::Cascade, Some(fast), Some(confidence)) => {
                let cascade = Cascade::new(&fast.model, &served.model, confidence)?;
                match cascade.predict(text, k as usize, embed)? {
                    (p, Tier::Fast) => (p, Tier::Fast, fast),
                    (p, tier) => (p, tier, served),
                }
            }
            _ => {
                let embedding = embed(text)?;
                let p = served.model.predict_embedded(text, Some(&embedding), k as usize)?;
                (p, Tier::Encoder, served)
            }
        }
    };
    Ok(IntentAnswer {
        label: p.label,
        confidence: p.confidence,
        out_of_scope: p.out_of_scope,
        top_k: p.top_k.into_iter().map(|(label, score)| LabelScore { label, score }).collect(),
        model: ModelRef { job_id: served.job_id.clone(), version: served.version },
        tier,
    })
}

/// Intent of a message (callers: this institution's app and operator certificates).
#[utoipa::path(post, path = "/v1/intent", operation_id = "intent", tag = "inference", request_body = IntentBody,
    responses(
        (status = 200, body = IntentAnswer, description = "the intent, or `oos` when no known intent matches"),
        (status = 503, body = ErrorBody, description = "`no_model`: no intent model has been committed yet, or none of the tier asked for"),
    ))]
pub(crate) async fn http(
    Extension(slots): Extension<ModelSlots>,
    Extension(peer): Extension<PeerIdentity>,
    Extension(auditor): Extension<Auditor>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IntentAnswer>, ApiError> {
    auditor.check(&peer.0)?;
    let body: IntentBody = parse_body(&body_bytes(body)?)?;
    let asked = body.tier.unwrap_or_default();
    blocking(move || answer_with(&slots, &body.text, body.top_k, asked)).await.map(Json)
}

pub(crate) fn grpc(slots: &Arc<Slots>, req: v1::IntentRequest) -> Result<v1::IntentReply, ApiError> {
    let asked = Asked::parse(Some(&req.tier))?;
    let a = answer_with(slots, &req.text, (req.top_k != 0).then_some(req.top_k), asked)?;
    Ok(v1::IntentReply {
        label: a.label,
        confidence: a.confidence,
        out_of_scope: a.out_of_scope,
        top_k: a.top_k.into_iter().map(|s| v1::LabelScore { label: s.label, score: s.score }).collect(),
        job_id: a.model.job_id,
        model_version: a.model.version,
        tier: a.tier.as_str().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_states_the_limit_on_top_k() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        let top_k = &doc["components"]["schemas"]["IntentBody"]["properties"]["top_k"];
        assert_eq!(top_k["maximum"], MAX_TOP_K, "{top_k}");
    }

    #[test]
    fn refuses_bad_queries_before_touching_the_model() {
        let slots = Slots::default();
        assert_eq!(answer(&slots, "  ", None).unwrap_err().reason(), "empty_text");
        let long = "a".repeat(crate::MAX_TEXT_CHARS + 1);
        assert_eq!(answer(&slots, &long, None).unwrap_err().reason(), "text_too_long");
        assert_eq!(answer(&slots, "hi", Some(21)).unwrap_err().reason(), "top_k_out_of_range");
        assert_eq!(answer(&slots, "hi", None).unwrap_err(), ApiError::NoModel("intent"));
    }

    #[test]
    fn a_request_may_ask_for_a_tier() {
        assert_eq!(Asked::parse(None).unwrap(), Asked::Cascade);
        assert_eq!(Asked::parse(Some("")).unwrap(), Asked::Cascade);
        assert_eq!(Asked::parse(Some("fast")).unwrap(), Asked::Fast);
        assert_eq!(Asked::parse(Some("encoder")).unwrap(), Asked::Encoder);
        let e = Asked::parse(Some("Encoder")).unwrap_err();
        assert_eq!(e.reason(), "unknown_tier");
        // Only a fast-tier model served: asking for the encoder tier says there is none.
        let slots = Slots::default();
        let spec = hearth_models::IntentSpec::new(
            vec!["a".into(), "b".into()],
            hearth_models::FeatureConfig { dim: 1024, ..Default::default() },
        )
        .unwrap();
        let model = hearth_models::IntentModel::zeroed(spec);
        slots.install(crate::Calibrated::Intent(crate::Served::new(model, "j", 1)));
        let a = answer_with(&slots, "hi", None, Asked::Fast).unwrap();
        assert_eq!((a.tier, a.model.job_id.as_str()), (Tier::Fast, "j"));
        assert_eq!(answer(&slots, "hi", None).unwrap().tier, Tier::Fast);
        assert_eq!(
            answer_with(&slots, "hi", None, Asked::Encoder).unwrap_err(),
            ApiError::NoModel("encoder-tier intent")
        );
    }
}
