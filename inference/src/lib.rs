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
//!
//! The routes are declared once, in [`api`], each with its OpenAPI operation (`utoipa::path` on the
//! handler, schemas derived from the request and answer types with every limit the handler enforces):
//! [`router`] serves them and [`openapi`] is their part of the participant's OpenAPI document.
#![forbid(unsafe_code)]

pub mod emotion;
pub mod intent;
pub mod recommend;
pub mod replica;
mod slots;
pub mod text;

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use hearth_audit::{Action, Event, Outcome};
use hearth_crypto::pki::Role;
use hearth_node::audit::AuditLog;
use hearth_proto::v1::inference_server::{Inference, InferenceServer};
use hearth_proto::v1::{self};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use recommend::Recommender;
pub use slots::{Calibrated, ModelSlots, Served, ServedModels, Slots, FAST_STAGE};
pub use text::{checked_text, checked_utf8};

/// Longest text accepted, in characters.
pub const MAX_TEXT_CHARS: usize = hearth_models::data::MAX_TEXT_CHARS;
/// Largest request body, in bytes: room for every request the OpenAPI document allows, even one
/// whose every character is written as a JSON escape (a test checks the bound).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The gRPC metadata entry that carries an error's stable reason.
pub const REASON_METADATA: &str = "hearth-error-reason";

/// Roles allowed to call inference.
const CALLERS: [Role; 2] = [Role::App, Role::Operator];

/// Which model answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelRef {
    /// Job id.
    pub job_id: String,
    /// Global version.
    pub version: u64,
}

/// A label and its probability.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Its probability.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub score: f32,
}

/// The coarse class of an error; `reason` says more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request cannot be answered as sent (400, and 422 for a rules file with an error).
    BadRequest,
    /// The loopback listener's API key is missing or wrong (401).
    Unauthorized,
    /// The caller may not call this endpoint (403).
    Forbidden,
    /// Something the request names is not known here (404).
    NotFound,
    /// The request body is over the limit (413).
    TooLarge,
    /// What the request asks is not possible in the current state (409): a conversation another agent
    /// holds, no reply route for a channel.
    Conflict,
    /// No model of the family has been committed yet (503).
    NoModel,
    /// The participant failed to answer (500); its log has the details.
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The coarse class.
    pub code: ErrorCode,
    /// A stable, finer code to branch on (`empty_text`, `unknown_customer`, `invalid_identifier`...).
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    pub reason: String,
    /// What was wrong, for a person; never repeats customer text.
    pub message: String,
}

/// Every error answer: `{"error": {"code", "reason", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// An error answer.
    pub fn new(code: ErrorCode, reason: &str, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code, reason: reason.to_string(), message: message.into() } }
    }
}

/// Why a request failed: a coarse class, a stable `reason` and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The request cannot be answered as sent (HTTP 400, gRPC `INVALID_ARGUMENT`).
    BadRequest {
        /// Stable reason: `invalid_json`, `unknown_field`, `invalid_request`, `invalid_utf8`,
        /// `empty_text`, `text_too_long`, `top_k_out_of_range`, `unknown_tier`, `unknown_item`, `too_many_items`,
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
    /// The request conflicts with the current state (HTTP 409, gRPC `FAILED_PRECONDITION`): reasons
    /// `not_yours`, `queue_empty`, `no_reply_route`.
    Conflict {
        /// Stable reason.
        reason: &'static str,
        /// What is in the way and what to do instead.
        message: String,
    },
    /// The request body is over [`MAX_BODY_BYTES`].
    TooLarge,
    /// No model of this family has been committed yet.
    NoModel(&'static str),
    /// An inference replica does not serve this family (the recommender): its participant does.
    NotServedHere(&'static str),
    /// The participant failed to answer (a bug or a damaged model); the detail is logged.
    Internal(String),
}

impl ApiError {
    /// A 400 with `reason`.
    pub fn bad(reason: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { reason, message: message.into() }
    }

    /// (HTTP status, coarse code, stable reason, message).
    fn parts(&self) -> (StatusCode, ErrorCode, &'static str, String) {
        match self {
            ApiError::BadRequest { reason, message } => {
                (StatusCode::BAD_REQUEST, ErrorCode::BadRequest, reason, message.clone())
            }
            ApiError::NotFound { reason, message } => {
                (StatusCode::NOT_FOUND, ErrorCode::NotFound, reason, message.clone())
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden, "forbidden", m.clone()),
            ApiError::Conflict { reason, message } => {
                (StatusCode::CONFLICT, ErrorCode::Conflict, reason, message.clone())
            }
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                "too_large",
                format!("request body is over the limit of {MAX_BODY_BYTES} bytes"),
            ),
            ApiError::NoModel(family) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NoModel,
                "no_model",
                format!("no {family} model has been committed yet; retry after the first federated round of a {family} job"),
            ),
            ApiError::NotServedHere(family) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NoModel,
                "not_served_here",
                format!(
                    "this inference replica does not serve {family}: it needs the institution's purchase \
                     histories, which only its participant holds; call the participant"
                ),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal",
                "the participant could not answer; its log has the details".into(),
            ),
        }
    }

    /// The stable reason.
    pub fn reason(&self) -> &'static str {
        self.parts().2
    }

    /// The message the caller gets.
    pub fn message(&self) -> String {
        self.parts().3
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "inference failed");
        }
        let (status, code, reason, message) = self.parts();
        (status, Json(ErrorBody::new(code, reason, message))).into_response()
    }
}

/// A model that cannot answer a well-formed request is the participant's failure, not the caller's.
impl From<hearth_models::ModelError> for ApiError {
    fn from(e: hearth_models::ModelError) -> Self {
        ApiError::Internal(e.to_string())
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
            ApiError::Conflict { .. } => tonic::Status::failed_precondition(message),
            ApiError::NoModel(_) | ApiError::NotServedHere(_) => tonic::Status::unavailable(message),
            ApiError::Internal(_) => tonic::Status::internal(message),
        };
        status.metadata_mut().insert(REASON_METADATA, tonic::metadata::MetadataValue::from_static(reason));
        status
    }
}

/// Who may call: the institution these endpoints serve, and the audit log refused callers are recorded
/// in (none in unit tests).
#[derive(Debug, Clone)]
pub struct Auditor {
    /// The institution (this participant's id): only its own apps and operators are answered.
    pub institution: String,
    /// Where refusals are recorded.
    pub log: Option<AuditLog>,
}

impl Auditor {
    /// Checks the caller's role and institution, recording a refusal as `inference.call` / `denied`.
    pub(crate) fn check(&self, who: &hearth_crypto::pki::NodeIdentity) -> Result<(), ApiError> {
        let r = check_caller(who, &self.institution);
        if let Err(e) = &r {
            let (_, _, _, message) = e.parts();
            match &self.log {
                Some(log) => {
                    log.record_event(
                        Event::new(who.to_string(), Action::InferenceCall, Outcome::Denied).detail(message),
                    );
                }
                // A replica keeps no audit log: its refusals go to its log stream.
                None => tracing::warn!(caller = %who, reason = %message, "inference call refused"),
            }
        }
        r
    }
}

/// An app or operator of `institution` may call; another institution's, or a consortium role, may not:
/// a served recommender holds the institution's purchase histories, and the models are its own.
fn check_caller(who: &hearth_crypto::pki::NodeIdentity, institution: &str) -> Result<(), ApiError> {
    if !CALLERS.contains(&who.role) {
        return Err(ApiError::Forbidden(format!(
            "a {} certificate may not call inference; use an app certificate",
            who.role
        )));
    }
    if !who.acts_for(institution) {
        return Err(ApiError::Forbidden(format!(
            "these endpoints serve only {institution}'s apps; {who} acts for {}",
            who.institution.as_deref().unwrap_or("no institution (a consortium certificate)")
        )));
    }
    Ok(())
}

/// An optional count (`top_k`): JSON Schema counts `16.0` as the integer 16, so it is read as one; a
/// fraction, a negative number or one past `u32` is refused, naming the value.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    let Some(n) = v else { return Ok(None) };
    if let Some(u) = n.as_u64() {
        return u32::try_from(u).map(Some).map_err(|_| serde::de::Error::custom(format!("{n} is too large")));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => Ok(Some(f as u32)),
        _ => Err(serde::de::Error::custom(format!("{n} is not a whole number of at least 0"))),
    }
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

/// Answer of `GET /v1/health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the participant answers.
    #[schema(pattern = "^ok$")]
    pub status: String,
    /// The intent model (as before there were several families); `null` until a job of it has finished.
    pub model: Option<ModelRef>,
    /// The model each family serves.
    pub models: ServedModels,
}

/// Which model version each family serves.
#[utoipa::path(get, path = "/v1/health", operation_id = "health", tag = "inference",
    responses((status = 200, body = Health, description = "the participant answers; the model each family serves")))]
async fn health(Extension(slots): Extension<ModelSlots>) -> Json<Health> {
    let models = slots.summary();
    Json(Health { status: "ok".into(), model: models.intent.clone(), models })
}

/// Most bytes of an oversized body read (and dropped) before answering 413.
const DRAIN_BYTES: u64 = 8 << 20;

/// Answers a request whose `Content-Length` is over [`MAX_BODY_BYTES`] with 413 (`too_large`) before
/// any handler runs. It first reads and drops the body (up to 8 MiB, for at most 10 s): a client
/// still sending when the connection closed would see a reset instead of the answer. A longer body, or
/// one without a length, meets the handlers' own limit, which closes the connection.
pub async fn refuse_oversized(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let length = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > MAX_BODY_BYTES as u64 => {
            if n <= DRAIN_BYTES {
                use http_body_util::BodyExt;
                let drain = async {
                    let mut body = req.into_body();
                    while let Some(Ok(_)) = body.frame().await {}
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
            }
            ApiError::TooLarge.into_response()
        }
        _ => next.run(req).await,
    }
}

/// Any path not served here: a JSON 404 like every other error, naming what was asked; a gRPC call
/// (content type `application/grpc...`) gets gRPC's `UNIMPLEMENTED` instead.
pub async fn no_route(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let grpc = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let path: String = uri.path().chars().take(128).collect();
    if grpc {
        return tonic::Status::unimplemented(format!("no gRPC method {path}"))
            .into_http::<axum::body::Body>();
    }
    ApiError::NotFound {
        reason: "no_route",
        message: format!("no endpoint {method} {path}; GET /v1/openapi.json lists them"),
    }
    .into_response()
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

/// The HTTP routes, each declared once with its OpenAPI operation.
pub fn api() -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(intent::http))
        .routes(routes!(emotion::http))
        .routes(routes!(recommend::http))
        .routes(routes!(health))
}

/// The OpenAPI operations and schemas of the inference endpoints (the desk's document includes them).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// The router serving both faces of every family; refused callers are recorded in `auditor`.
pub fn router(slots: ModelSlots, auditor: Auditor) -> Router {
    let grpc = tonic::service::Routes::new(InferenceServer::new(InferenceService {
        slots: Arc::clone(&slots),
        auditor: auditor.clone(),
    }))
    .into_axum_router();
    let (http, _) = api().split_for_parts();
    http.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
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
    fn counts_are_whole_numbers_however_written() {
        let k = |b: &[u8]| parse_body::<intent::IntentBody>(b).map(|b| b.top_k);
        assert_eq!(k(br#"{"text": "hi", "top_k": 16.0}"#).unwrap(), Some(16));
        assert_eq!(k(br#"{"text": "hi", "top_k": 1e1}"#).unwrap(), Some(10));
        assert_eq!(k(br#"{"text": "hi", "top_k": null}"#).unwrap(), None);
        for bad in [
            &br#"{"text": "hi", "top_k": 2.5}"#[..],
            br#"{"text": "hi", "top_k": -1}"#,
            br#"{"text": "hi", "top_k": 5e9}"#,
        ] {
            assert_eq!(k(bad).unwrap_err().reason(), "invalid_request");
        }
    }

    #[test]
    fn every_request_the_document_allows_fits_in_the_body_limit() {
        // A character escaped as a surrogate pair (`\ud83d\ude00`) takes 12 bytes; a printable ASCII
        // one at most 2 (`\"`); the other fields of a message take far less than 4096.
        let text = MAX_TEXT_CHARS * 12;
        let items = recommend::MAX_REQUEST_ITEMS * (hearth_models::recommend::MAX_ITEM_BYTES * 2 + 3);
        assert!(text + items + 4096 <= MAX_BODY_BYTES, "{text} + {items}");
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
    fn only_the_institutions_apps_and_operators_may_call() {
        let who = |role, institution: Option<&str>| hearth_crypto::pki::NodeIdentity {
            role,
            id: "x".into(),
            institution: institution.map(str::to_string),
        };
        assert!(check_caller(&who(Role::App, Some("bank-a")), "bank-a").is_ok());
        assert!(check_caller(&who(Role::Operator, Some("bank-a")), "bank-a").is_ok());
        assert!(matches!(check_caller(&who(Role::Participant, None), "bank-a"), Err(ApiError::Forbidden(_))));
        let other = check_caller(&who(Role::App, Some("airline-b")), "bank-a").unwrap_err();
        assert!(matches!(&other, ApiError::Forbidden(m) if m.contains("acts for airline-b")), "{other:?}");
        assert!(check_caller(&who(Role::Operator, None), "bank-a").is_err());
    }
}
