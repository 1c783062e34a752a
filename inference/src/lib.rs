//! The inference endpoints customer-service apps call, one per model family, on one mTLS port:
//! `POST /v1/intent`, `POST /v1/emotion`, `POST /v1/recommend` (JSON) and the gRPC `Inference` service.
//! Every handler checks the caller's certificate role, parses and checks the request before touching a
//! model, loads its family's served model once (so a model swapped in between rounds never fails or
//! tears a request) and answers on a blocking thread (featurising and scoring are CPU work).
//!
//! Errors are [`ApiError`]s: over HTTP `{"error": {"code", "reason", "message"}}`, where `code` is the
//! coarse class (`bad_request`, `not_found`, `forbidden`, `too_large`, `no_model`, `internal`) and
//! `reason` a stable, finer code (`empty_text`, `unknown_customer`...); over gRPC a status code with the
//! reason in the `hearth-error-reason` metadata entry. Messages never repeat customer text.
//!
//! The crate root holds what the endpoints share; each family's request, answer and handlers are in
//! `<family>.rs`; the served models are in [`Slots`], which the participant's federation client writes
//! and everything here only reads.
#![forbid(unsafe_code)]

pub mod emotion;
pub mod intent;
pub mod recommend;
mod slots;

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use hearth_audit::{Action, Event, Outcome};
use hearth_crypto::pki::Role;
use hearth_node::audit::AuditLog;
use hearth_proto::v1::inference_server::{Inference, InferenceServer};
use hearth_proto::v1::{self};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use recommend::Recommender;
pub use slots::{Calibrated, ModelSlots, Served, Slots};

/// Longest text accepted, in characters.
pub const MAX_TEXT_CHARS: usize = hearth_models::data::MAX_TEXT_CHARS;
/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The gRPC metadata entry that carries an error's stable reason.
pub const REASON_METADATA: &str = "hearth-error-reason";

/// Roles allowed to call inference.
const CALLERS: [Role; 2] = [Role::App, Role::Operator];

/// Which model answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelRef {
    /// Job id.
    pub job_id: String,
    /// Global version.
    pub version: u64,
}

/// A label and its probability.
#[derive(Debug, Serialize, Deserialize)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Its probability.
    pub score: f32,
}

/// Why a request failed: a coarse class, a stable `reason` and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The request cannot be answered as sent (HTTP 400, gRPC `INVALID_ARGUMENT`).
    BadRequest {
        /// Stable reason: `invalid_json`, `unknown_field`, `invalid_request`, `invalid_utf8`,
        /// `empty_text`, `text_too_long`, `top_k_out_of_range`, `unknown_item`, `too_many_items`,
        /// `invalid_customer_id`.
        reason: &'static str,
        /// What was wrong.
        message: String,
    },
    /// Something the request names is not known here (HTTP 404, gRPC `NOT_FOUND`); reason
    /// `unknown_customer`.
    NotFound {
        /// Stable reason.
        reason: &'static str,
        /// What was not found and what to do instead.
        message: String,
    },
    /// The caller's certificate role may not call this endpoint.
    Forbidden(String),
    /// The request body is over [`MAX_BODY_BYTES`].
    TooLarge,
    /// No model of this family has been committed yet.
    NoModel(&'static str),
    /// The participant failed to answer (a bug or a damaged model); the detail is logged.
    Internal(String),
}

impl ApiError {
    /// A 400 with `reason`.
    pub fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { reason, message: message.into() }
    }

    /// (HTTP status, coarse code, stable reason, message).
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            ApiError::BadRequest { reason, message } => {
                (StatusCode::BAD_REQUEST, "bad_request", reason, message.clone())
            }
            ApiError::NotFound { reason, message } => (StatusCode::NOT_FOUND, "not_found", reason, message.clone()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", "forbidden", m.clone()),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "too_large",
                format!("request body is over the limit of {MAX_BODY_BYTES} bytes"),
            ),
            ApiError::NoModel(family) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_model",
                "no_model",
                format!("no {family} model has been committed yet; retry after the first federated round of a {family} job"),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal",
                "the participant could not answer; its log has the details".into(),
            ),
        }
    }

    /// The stable reason.
    pub fn reason(&self) -> &'static str {
        self.parts().2
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "inference failed");
        }
        let (status, code, reason, message) = self.parts();
        let body = serde_json::json!({ "error": { "code": code, "reason": reason, "message": message } });
        (status, Json(body)).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        if let ApiError::Internal(detail) = &e {
            tracing::error!(%detail, "inference failed");
        }
        let (_, _, reason, message) = e.parts();
        let mut status = match e {
            ApiError::BadRequest { .. } => tonic::Status::invalid_argument(message),
            ApiError::NotFound { .. } => tonic::Status::not_found(message),
            ApiError::TooLarge => tonic::Status::out_of_range(message),
            ApiError::Forbidden(_) => tonic::Status::permission_denied(message),
            ApiError::NoModel(_) => tonic::Status::unavailable(message),
            ApiError::Internal(_) => tonic::Status::internal(message),
        };
        status.metadata_mut().insert(REASON_METADATA, tonic::metadata::MetadataValue::from_static(reason));
        status
    }
}

/// The audit log refused callers are recorded in (none in unit tests).
#[derive(Debug, Clone, Default)]
pub struct Auditor(pub Option<AuditLog>);

impl Auditor {
    /// Checks the caller's role, recording a refusal as `inference.call` / `denied`.
    pub(crate) fn check(&self, who: &hearth_crypto::pki::NodeIdentity) -> Result<(), ApiError> {
        let r = check_caller(who.role);
        if let (Err(e), Some(log)) = (&r, &self.0) {
            let (_, _, _, message) = e.parts();
            log.record_event(
                Event::new(who.to_string(), Action::InferenceCall, Outcome::Denied).detail(message),
            );
        }
        r
    }
}

fn check_caller(role: Role) -> Result<(), ApiError> {
    if CALLERS.contains(&role) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a {role} certificate may not call inference; use an app certificate"
        )))
    }
}

/// Trims a request's text and checks it can be read: not empty, at most [`MAX_TEXT_CHARS`]
/// characters (counting stops one past the limit, so a huge text costs no more than a long one).
pub fn checked_text(text: &str) -> Result<&str, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::bad("empty_text", "text is empty"));
    }
    if text.chars().take(MAX_TEXT_CHARS + 1).count() > MAX_TEXT_CHARS {
        return Err(ApiError::bad(
            "text_too_long",
            format!("text has more than {MAX_TEXT_CHARS} characters, the limit"),
        ));
    }
    Ok(text)
}

/// [`checked_text`] for text that arrived as bytes (gRPC), naming where bad UTF-8 starts.
pub fn checked_utf8(bytes: &[u8]) -> Result<&str, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad(
            "invalid_utf8",
            format!("text is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
        )
    })?;
    checked_text(text)
}

/// A JSON request body: its fields, so that an unknown one is named rather than ignored.
pub trait Body: DeserializeOwned {
    /// The fields a request may carry.
    const FIELDS: &'static [&'static str];
}

/// Parses a request body: UTF-8, then JSON, then an object with only [`Body::FIELDS`], then `T`.
pub fn parse_body<T: Body>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad(
            "invalid_utf8",
            format!("the request body is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad("invalid_json", format!("the request body is not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::bad("invalid_request", "the request body must be a JSON object"));
    };
    if let Some(unknown) = object.keys().find(|k| !T::FIELDS.contains(&k.as_str())) {
        let unknown: String = unknown.chars().take(64).collect();
        return Err(ApiError::bad(
            "unknown_field",
            format!("unknown field {unknown:?}; this endpoint takes {}", T::FIELDS.join(", ")),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad("invalid_request", e.to_string()))
}

/// The raw body of an HTTP request, or why it could not be read.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::bad("invalid_request", e.body_text())
        }
    })
}

/// Runs an answer on a blocking thread: featurising, scoring and solving are CPU work.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("inference task: {e}")))?
}

async fn health(Extension(slots): Extension<ModelSlots>) -> Json<serde_json::Value> {
    let models = slots.summary();
    // `model` is the intent model, as before families existed.
    Json(serde_json::json!({ "status": "ok", "model": models["intent"], "models": models }))
}

/// The gRPC face of the endpoints.
#[derive(Debug, Clone)]
pub struct InferenceService {
    slots: ModelSlots,
    auditor: Auditor,
}

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn intent(
        &self,
        req: tonic::Request<v1::IntentRequest>,
    ) -> Result<tonic::Response<v1::IntentReply>, tonic::Status> {
        self.auditor.check(&hearth_transport::peer_identity(&req)?)?;
        let slots = Arc::clone(&self.slots);
        let reply = blocking(move || intent::grpc(&slots, req.into_inner())).await?;
        Ok(tonic::Response::new(reply))
    }

    async fn emotion(
        &self,
        req: tonic::Request<v1::EmotionRequest>,
    ) -> Result<tonic::Response<v1::EmotionReply>, tonic::Status> {
        self.auditor.check(&hearth_transport::peer_identity(&req)?)?;
        let slots = Arc::clone(&self.slots);
        let reply = blocking(move || emotion::grpc(&slots, req.into_inner())).await?;
        Ok(tonic::Response::new(reply))
    }

    async fn recommend(
        &self,
        req: tonic::Request<v1::RecommendRequest>,
    ) -> Result<tonic::Response<v1::RecommendReply>, tonic::Status> {
        self.auditor.check(&hearth_transport::peer_identity(&req)?)?;
        let slots = Arc::clone(&self.slots);
        let reply = blocking(move || recommend::grpc(&slots, req.into_inner())).await?;
        Ok(tonic::Response::new(reply))
    }
}

/// The router serving both faces of every family; refused callers are recorded in `auditor`.
pub fn router(slots: ModelSlots, auditor: Auditor) -> Router {
    let grpc = tonic::service::Routes::new(InferenceServer::new(InferenceService {
        slots: Arc::clone(&slots),
        auditor: auditor.clone(),
    }))
    .into_axum_router();
    Router::new()
        .route("/v1/intent", post(intent::http))
        .route("/v1/emotion", post(emotion::http))
        .route("/v1/recommend", post(recommend::http))
        .route("/v1/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(Extension(slots))
        .layer(Extension(auditor))
        .merge(grpc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Probe {
        #[allow(dead_code)]
        text: String,
    }

    impl Body for Probe {
        const FIELDS: &'static [&'static str] = &["text"];
    }

    #[test]
    fn bodies_are_checked_step_by_step_with_stable_reasons() {
        let reason = |b: &[u8]| parse_body::<Probe>(b).unwrap_err().reason();
        assert_eq!(reason(&[b'{', 0xff, b'}']), "invalid_utf8");
        assert_eq!(reason(b"{not json"), "invalid_json");
        assert_eq!(reason(b"[1, 2]"), "invalid_request");
        assert_eq!(reason(br#"{"text": "hi", "admin": true}"#), "unknown_field");
        assert_eq!(reason(br#"{"text": 5}"#), "invalid_request");
        assert_eq!(reason(br#"{}"#), "invalid_request");
        assert!(parse_body::<Probe>(br#"{"text": "hi"}"#).is_ok());
    }

    #[test]
    fn texts_are_checked() {
        assert_eq!(checked_text("  hi ").unwrap(), "hi");
        assert_eq!(checked_text(" \n ").unwrap_err().reason(), "empty_text");
        assert_eq!(checked_text(&"a".repeat(MAX_TEXT_CHARS + 1)).unwrap_err().reason(), "text_too_long");
        assert_eq!(checked_utf8(&[b'o', b'k', 0xff]).unwrap_err().reason(), "invalid_utf8");
        assert_eq!(checked_utf8("查询余额".as_bytes()).unwrap(), "查询余额");
    }

    #[test]
    fn errors_carry_their_reason_over_grpc() {
        let s: tonic::Status = ApiError::NotFound { reason: "unknown_customer", message: "x".into() }.into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.metadata().get(REASON_METADATA).unwrap(), "unknown_customer");
        let s: tonic::Status = ApiError::NoModel("emotion").into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("no emotion model"));
    }

    #[test]
    fn only_apps_and_operators_may_call() {
        assert!(check_caller(Role::App).is_ok());
        assert!(check_caller(Role::Operator).is_ok());
        assert!(matches!(check_caller(Role::Participant), Err(ApiError::Forbidden(_))));
    }
}
