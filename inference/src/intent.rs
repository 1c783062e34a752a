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
}

impl Body for IntentBody {
    const FIELDS: &'static [&'static str] = &["text", "top_k"];
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
}

/// Validates and answers one query against the served intent model.
pub fn answer(slots: &Slots, text: &str, top_k: Option<u32>) -> Result<IntentAnswer, ApiError> {
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
    let p = if served.model.spec.features.needs_encoder() {
        let encoder = slots.encoder.get().map_err(|e| ApiError::Internal(e.to_string()))?;
        let embedding = encoder.embed_one(text);
        served
            .model
            .predict_embedded(text, Some(&embedding), k as usize)
            .map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        served.model.predict(text, k as usize)
    };
    Ok(IntentAnswer {
        label: p.label,
        confidence: p.confidence,
        out_of_scope: p.out_of_scope,
        top_k: p.top_k.into_iter().map(|(label, score)| LabelScore { label, score }).collect(),
        model: ModelRef { job_id: served.job_id.clone(), version: served.version },
    })
}

/// Intent of a message (callers: this institution's app and operator certificates).
#[utoipa::path(post, path = "/v1/intent", operation_id = "intent", tag = "inference", request_body = IntentBody,
    responses(
        (status = 200, body = IntentAnswer, description = "the intent, or `oos` when no known intent matches"),
        (status = 503, body = ErrorBody, description = "`no_model`: no intent model has been committed yet"),
    ))]
pub(crate) async fn http(
    Extension(slots): Extension<ModelSlots>,
    Extension(peer): Extension<PeerIdentity>,
    Extension(auditor): Extension<Auditor>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IntentAnswer>, ApiError> {
    auditor.check(&peer.0)?;
    let body: IntentBody = parse_body(&body_bytes(body)?)?;
    blocking(move || answer(&slots, &body.text, body.top_k)).await.map(Json)
}

pub(crate) fn grpc(slots: &Arc<Slots>, req: v1::IntentRequest) -> Result<v1::IntentReply, ApiError> {
    let a = answer(slots, &req.text, (req.top_k != 0).then_some(req.top_k))?;
    Ok(v1::IntentReply {
        label: a.label,
        confidence: a.confidence,
        out_of_scope: a.out_of_scope,
        top_k: a.top_k.into_iter().map(|s| v1::LabelScore { label: s.label, score: s.score }).collect(),
        job_id: a.model.job_id,
        model_version: a.model.version,
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
}
