//! The inference endpoint customer-service apps call: `POST /v1/intent` (JSON) and the gRPC `Inference`
//! service, on one mTLS port. Both read the served model through one atomic pointer, so a model swapped in
//! between rounds never fails or tears a request.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::extract::rejection::JsonRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hearth_crypto::audit::{Event, Outcome};
use hearth_crypto::pki::Role;
use hearth_models::IntentModel;
use hearth_node::audit::AuditLog;
use hearth_proto::v1::inference_server::{Inference, InferenceServer};
use hearth_proto::v1::{self};
use hearth_transport::PeerIdentity;
use serde::{Deserialize, Serialize};

/// Longest text accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most labels a caller may ask for.
pub const MAX_TOP_K: u32 = 20;

/// The model being served, with where it came from.
#[derive(Debug)]
pub struct ServedModel {
    /// The classifier.
    pub model: IntentModel,
    /// The job that trained it.
    pub job_id: String,
    /// Its global version (the round that committed it).
    pub version: u64,
}

/// The slot inference reads and the federation task writes.
pub type ModelSlot = Arc<ArcSwapOption<ServedModel>>;

/// Roles allowed to call inference.
const CALLERS: [Role; 2] = [Role::App, Role::Operator];

/// Body of `POST /v1/intent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentBody {
    /// The customer's message.
    pub text: String,
    /// Labels to return (default 3).
    #[serde(default)]
    pub top_k: Option<u32>,
}

/// Answer of `POST /v1/intent`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IntentAnswer {
    /// Best label, or `oos` when out of scope.
    pub label: String,
    /// Probability of the best label.
    pub confidence: f32,
    /// Whether the query matches no known intent and should go to a person.
    pub out_of_scope: bool,
    /// Best labels with their probabilities.
    pub top_k: Vec<LabelScore>,
    /// Job and version of the model that answered.
    pub model: ModelRef,
}

/// A label and its probability.
#[derive(Debug, Serialize, Deserialize)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Its probability.
    pub score: f32,
}

/// Which model answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelRef {
    /// Job id.
    pub job_id: String,
    /// Global version.
    pub version: u64,
}

/// Why a request failed: a stable `code` and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Malformed request.
    BadRequest(String),
    /// The caller's certificate role may not call this endpoint.
    Forbidden(String),
    /// The request body is over [`MAX_BODY_BYTES`].
    TooLarge,
    /// No model has been committed yet.
    NoModel,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body is over the limit of {MAX_BODY_BYTES} bytes"),
            ),
            ApiError::NoModel => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_model",
                "no model has been committed yet; retry after the first federated round".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        (status, Json(serde_json::json!({ "error": { "code": code, "message": message } }))).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let (_, _, message) = e.parts();
        match e {
            ApiError::BadRequest(_) => tonic::Status::invalid_argument(message),
            ApiError::TooLarge => tonic::Status::out_of_range(message),
            ApiError::Forbidden(_) => tonic::Status::permission_denied(message),
            ApiError::NoModel => tonic::Status::unavailable(message),
        }
    }
}

/// The audit log refused callers are recorded in (none in unit tests).
#[derive(Debug, Clone, Default)]
pub struct Auditor(pub Option<AuditLog>);

impl Auditor {
    /// Checks the caller's role, recording a refusal as `inference.call` / `denied`.
    fn check(&self, who: &hearth_crypto::pki::NodeIdentity) -> Result<(), ApiError> {
        let r = check_caller(who.role);
        if let (Err(e), Some(log)) = (&r, &self.0) {
            let (_, _, message) = e.parts();
            log.record_event(Event::new(who.to_string(), "inference.call", Outcome::Denied).detail(message));
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

/// Validates and answers one query against the current model.
pub fn answer(slot: &ModelSlot, text: &str, top_k: Option<u32>) -> Result<IntentAnswer, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest("text is empty".into()));
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "text has {chars} characters; the limit is {MAX_TEXT_CHARS}"
        )));
    }
    let k = match top_k {
        None | Some(0) => 3,
        Some(k) if k > MAX_TOP_K => {
            return Err(ApiError::BadRequest(format!("top_k {k} is over the limit of {MAX_TOP_K}")))
        }
        Some(k) => k,
    };
    // One load: the whole answer comes from a single model even if a swap happens meanwhile.
    let served = slot.load_full().ok_or(ApiError::NoModel)?;
    let p = served.model.predict(text, k as usize);
    Ok(IntentAnswer {
        label: p.label,
        confidence: p.confidence,
        out_of_scope: p.out_of_scope,
        top_k: p.top_k.into_iter().map(|(label, score)| LabelScore { label, score }).collect(),
        model: ModelRef { job_id: served.job_id.clone(), version: served.version },
    })
}

async fn intent_http(
    Extension(slot): Extension<ModelSlot>,
    Extension(peer): Extension<PeerIdentity>,
    Extension(auditor): Extension<Auditor>,
    body: Result<Json<IntentBody>, JsonRejection>,
) -> Result<Json<IntentAnswer>, ApiError> {
    auditor.check(&peer.0)?;
    let Json(body) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let slot2 = Arc::clone(&slot);
    // Featurising and scoring is CPU work: keep it off the async workers.
    tokio::task::spawn_blocking(move || answer(&slot2, &body.text, body.top_k))
        .await
        .map_err(|e| ApiError::BadRequest(format!("inference task failed: {e}")))?
        .map(Json)
}

async fn health(Extension(slot): Extension<ModelSlot>) -> Json<serde_json::Value> {
    let model = slot.load_full().map(|m| serde_json::json!({ "job_id": m.job_id, "version": m.version }));
    Json(serde_json::json!({ "status": "ok", "model": model }))
}

/// The gRPC face of the same endpoint.
#[derive(Debug, Clone)]
pub struct InferenceService {
    slot: ModelSlot,
    auditor: Auditor,
}

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn intent(
        &self,
        req: tonic::Request<v1::IntentRequest>,
    ) -> Result<tonic::Response<v1::IntentReply>, tonic::Status> {
        let who = hearth_transport::peer_identity(&req)?;
        self.auditor.check(&who)?;
        let msg = req.into_inner();
        let slot = Arc::clone(&self.slot);
        let top_k = (msg.top_k != 0).then_some(msg.top_k);
        let a = tokio::task::spawn_blocking(move || answer(&slot, &msg.text, top_k))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))??;
        Ok(tonic::Response::new(v1::IntentReply {
            label: a.label,
            confidence: a.confidence,
            out_of_scope: a.out_of_scope,
            top_k: a.top_k.into_iter().map(|s| v1::LabelScore { label: s.label, score: s.score }).collect(),
            job_id: a.model.job_id,
            model_version: a.model.version,
        }))
    }
}

/// The router serving both faces; refused callers are recorded in `auditor`.
pub fn router(slot: ModelSlot, auditor: Auditor) -> Router {
    let grpc = tonic::service::Routes::new(InferenceServer::new(InferenceService {
        slot: Arc::clone(&slot),
        auditor: auditor.clone(),
    }))
    .into_axum_router();
    Router::new()
        .route("/v1/intent", post(intent_http))
        .route("/v1/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(Extension(slot))
        .layer(Extension(auditor))
        .merge(grpc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_queries_before_touching_the_model() {
        let slot: ModelSlot = Arc::new(ArcSwapOption::empty());
        assert!(matches!(answer(&slot, "  ", None), Err(ApiError::BadRequest(_))));
        let long = "a".repeat(MAX_TEXT_CHARS + 1);
        assert!(matches!(answer(&slot, &long, None), Err(ApiError::BadRequest(m)) if m.contains("10001")));
        assert!(matches!(answer(&slot, "hi", Some(21)), Err(ApiError::BadRequest(_))));
        assert_eq!(answer(&slot, "hi", None).unwrap_err(), ApiError::NoModel);
    }

    #[test]
    fn only_apps_and_operators_may_call() {
        assert!(check_caller(Role::App).is_ok());
        assert!(check_caller(Role::Operator).is_ok());
        assert!(matches!(check_caller(Role::Participant), Err(ApiError::Forbidden(_))));
    }
}
