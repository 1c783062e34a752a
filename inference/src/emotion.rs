//! `POST /v1/emotion` and `Inference/Emotion`: the emotions in a customer's message, and whether to
//! escalate the conversation to a person now, with the rule (label and threshold) that decided it.
//!
//! ```text
//! POST /v1/emotion {"text": "This is the third time you charged me twice!"}
//! 200 {"label": "anger", "labels": ["anger"], "scores": [{"label": "anger", "score": 0.81}, ...],
//!      "escalate": true, "escalation": {"label": "anger", "threshold": 0.24, "target_recall": 0.7, ...},
//!      "model": {"job_id": "emotion", "version": 20}}
//! ```

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::{Extension, Json};
use bytes::Bytes;
use hearth_models::Escalation;
use hearth_proto::v1;
use hearth_transport::PeerIdentity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::slots::{ModelSlots, Slots};
use crate::text::text_schema;
use crate::{
    blocking, body_bytes, checked_text, checked_utf8, parse_body, ApiError, Auditor, Body, ErrorBody,
    LabelScore, ModelRef,
};

/// Body of `POST /v1/emotion`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmotionBody {
    /// The customer's message.
    #[schema(schema_with = text_schema)]
    pub text: String,
}

impl Body for EmotionBody {
    const FIELDS: &'static [&'static str] = &["text"];
}

/// Answer of `POST /v1/emotion`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmotionAnswer {
    /// The most salient label: the one furthest above its calibrated threshold.
    pub label: String,
    /// Every label at or above its threshold (`label` alone when none is).
    pub labels: Vec<String>,
    /// Probability of every label, in the model's label order.
    pub scores: Vec<LabelScore>,
    /// Whether to hand the conversation to a person now.
    pub escalate: bool,
    /// The rule that set `escalate`; `null` when this participant could not calibrate one (then
    /// `escalate` is false).
    pub escalation: Option<Escalation>,
    /// Job and version of the model that answered.
    pub model: ModelRef,
}

/// Validates and answers one message against the served emotion model.
pub fn answer(slots: &Slots, text: &str) -> Result<EmotionAnswer, ApiError> {
    let text = checked_text(text)?;
    let served = slots.emotion.load_full().ok_or(ApiError::NoModel("emotion"))?;
    let p = served.model.predict(text).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(EmotionAnswer {
        label: p.label,
        labels: p.labels,
        scores: p.scores.into_iter().map(|(label, score)| LabelScore { label, score }).collect(),
        escalate: p.escalate,
        escalation: p.escalation,
        model: ModelRef { job_id: served.job_id.clone(), version: served.version },
    })
}

/// Emotions of a message and whether to escalate (callers: this institution's app and operator certificates).
#[utoipa::path(post, path = "/v1/emotion", operation_id = "emotion", tag = "inference", request_body = EmotionBody,
    responses(
        (status = 200, body = EmotionAnswer, description = "the emotions, and whether to hand the conversation to a person now"),
        (status = 503, body = ErrorBody, description = "`no_model`: no emotion model has been committed yet"),
    ))]
pub(crate) async fn http(
    Extension(slots): Extension<ModelSlots>,
    Extension(peer): Extension<PeerIdentity>,
    Extension(auditor): Extension<Auditor>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmotionAnswer>, ApiError> {
    auditor.check(&peer.0)?;
    let body: EmotionBody = parse_body(&body_bytes(body)?)?;
    blocking(move || answer(&slots, &body.text)).await.map(Json)
}

pub(crate) fn grpc(slots: &Arc<Slots>, req: v1::EmotionRequest) -> Result<v1::EmotionReply, ApiError> {
    let a = answer(slots, checked_utf8(&req.text)?)?;
    Ok(v1::EmotionReply {
        label: a.label,
        labels: a.labels,
        scores: a.scores.into_iter().map(|s| v1::LabelScore { label: s.label, score: s.score }).collect(),
        escalate: a.escalate,
        escalation: a.escalation.map(|e| v1::Escalation {
            label: e.label,
            threshold: e.threshold,
            target_recall: e.target_recall,
            calibration_recall: e.calibration_recall,
            calibration_precision: e.calibration_precision,
        }),
        job_id: a.model.job_id,
        model_version: a.model.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_messages_before_touching_the_model() {
        let slots = Slots::default();
        assert_eq!(answer(&slots, "").unwrap_err().reason(), "empty_text");
        let huge = "angry ".repeat(crate::MAX_TEXT_CHARS);
        assert_eq!(answer(&slots, &huge).unwrap_err().reason(), "text_too_long");
        assert_eq!(answer(&slots, "I am furious").unwrap_err(), ApiError::NoModel("emotion"));
        let bad = v1::EmotionRequest { text: Bytes::from_static(&[0xff, 0xfe]) };
        assert_eq!(grpc(&Arc::new(Slots::default()), bad).unwrap_err().reason(), "invalid_utf8");
    }
}
