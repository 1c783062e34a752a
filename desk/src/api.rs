//! The HTTP face of the customer-service core, and who may call what.
//!
//! | endpoint | callers (certificates acting for this desk's institution) |
//! |---|---|
//! | `POST /v1/messages` | its apps and operators, the local API key |
//! | `GET /v1/openapi.json` | any authenticated caller |
//! | `GET /v1/customers/{id}/history` | its DPO and operators |
//! | `DELETE /v1/customers/{id}` | its DPO and operators |
//! | `POST /v1/admin/rules/reload` | its DPO and operators |
//! | `GET /v1/admin/workflows/{run_id}` | its DPO and operators |
//! | `GET /v1/agent/queues`, `POST /v1/agent/claim`, `GET /v1/agent/conversations/{id}` and its `reply`, `transfer`, `close` | its agents |
//!
//! **Institutions are walled off.** Every certificate comes from the one consortium CA, so a role alone
//! says nothing about whose customers a caller may touch: an app, DPO or operator certificate names the
//! institution it acts for (`urn:hearth:institution:<participant id>`), and a desk serves only callers
//! of its own institution. Another institution's app, and the consortium's own operator and DPO (who
//! act for no institution), get 403 on every customer endpoint, recorded in the audit log as
//! `service.call` / `denied`.
//!
//! History and erasure are a data subject's requests, handled by the institution's data protection
//! officer (or operator), not by the apps that post messages: an app's certificate or the API key gets
//! 403 there, audited the same way.
//!
//! **The local listener** (`[service.local]`, off by default) serves the same routes over plain HTTP
//! on a loopback address only, for apps on the participant's own host (and for load generators, which
//! cannot present client certificates). Each request must carry the API key
//! (`Authorization: Bearer <key>`); it acts as an app: it can post messages and read the OpenAPI
//! document, never reach the admin endpoints. Why that is acceptable: loopback traffic never leaves
//! the host, so TLS would protect it only from the host's own root, who can read the keystore anyway;
//! the key keeps other local users' processes out. The key is read from an environment variable or a
//! file, never from the TOML, and only its SHA-256 is kept in memory.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use hearth_audit::{Action, Event, Outcome};
use hearth_crypto::digest::SecretDigest;
use hearth_crypto::pki::Role;
use hearth_node::audit::AuditLog;
use hearth_transport::PeerIdentity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{agents, Desk, Erased, History, MessageAnswer, MessageBody};
use hearth_inference::{parse_body, ApiError, ErrorBody, ErrorCode, MAX_BODY_BYTES};

/// The local listener's API key, kept only as its digest.
#[derive(Clone, Debug)]
pub struct ApiKey(SecretDigest);

impl ApiKey {
    /// Keeps only the key's digest.
    pub fn new(key: &str) -> Self {
        Self(SecretDigest::of(key.as_bytes()))
    }

    /// Whether `presented` is the key: compares digests in constant time, so timing reveals nothing
    /// about the key.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.matches(presented.as_bytes())
    }
}

/// Who is calling, as established by the certificate or the API key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// For the audit log (`app:crm@bank-a`, `api-key:local`).
    pub name: String,
    /// The role.
    pub role: Role,
    /// The institution it acts for; `None` for consortium roles.
    pub institution: Option<String>,
}

const ADMINS: [Role; 2] = [Role::Dpo, Role::Operator];
const POSTERS: [Role; 2] = [Role::App, Role::Operator];
const AGENTS: [Role; 1] = [Role::Agent];

/// Lets `caller` through if it holds one of `roles` and acts for `institution`, this desk's own;
/// otherwise a 403, audited.
fn allow(
    caller: &Caller,
    roles: &[Role],
    what: &str,
    institution: &str,
    audit: &Option<AuditLog>,
) -> Result<(), ApiError> {
    let mine = caller.institution.as_deref() == Some(institution);
    if roles.contains(&caller.role) && mine {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    let message = if !roles.contains(&caller.role) {
        format!(
            "{what} needs a certificate with role {}; a {} caller may not",
            names.join(" or "),
            caller.role
        )
    } else if let Some(other) = &caller.institution {
        format!("{what}: this desk serves only {institution}'s callers; {} acts for {other}", caller.name)
    } else {
        format!(
            "{what}: this desk serves only {institution}'s callers; {} is a consortium certificate, which \
             reaches no institution's customers",
            caller.name
        )
    };
    if let Some(log) = audit {
        log.record_event(
            Event::new(caller.name.clone(), Action::ServiceCall, Outcome::Denied).detail(message.clone()),
        );
    }
    Err(ApiError::Forbidden(message))
}

/// Attribute, understand and route one customer message (callers: this institution's app and operator certificates, the
/// local API key).
#[utoipa::path(post, path = "/v1/messages", operation_id = "post_message", tag = "desk", request_body = MessageBody,
    responses((status = 200, body = MessageAnswer,
        description = "the customer, the session, the models' answers, the route and the rules that decided it")))]
async fn post_message(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MessageAnswer>, ApiError> {
    allow(&caller, &POSTERS, "POST /v1/messages", &s.institution, &s.audit)?;
    let body: MessageBody = body_of(body)?;
    let rt = tokio::runtime::Handle::current();
    blocking(move || s.message(body, &rt)).await.map(Json)
}

/// A customer's linked history across channels (callers: this institution's DPO and operator certificates).
#[utoipa::path(get, path = "/v1/customers/{id}/history", operation_id = "customer_history", tag = "desk", params(("id" = String, Path, pattern = "^c-[0-9a-f]{32}$",
        description = "the pseudonymous customer id (`c-` and 32 lower-case hex digits)")),
    responses(
        (status = 200, body = History, description = "the customer's session and stored messages"),
        (status = 404, body = ErrorBody, description = "`unknown_customer`: never seen, erased, merged into another, or expired"),
    ))]
async fn history(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<History>, ApiError> {
    allow(&caller, &ADMINS, "GET /v1/customers/{id}/history", &s.institution, &s.audit)?;
    s.history(&id).map(Json)
}

/// Erase a customer everywhere, derived data included; audited (callers: this institution's DPO and operator certificates).
#[utoipa::path(delete, path = "/v1/customers/{id}", operation_id = "erase_customer", tag = "desk", params(("id" = String, Path, pattern = "^c-[0-9a-f]{32}$",
        description = "the pseudonymous customer id (`c-` and 32 lower-case hex digits)")),
    responses(
        (status = 200, body = Erased, description = "what was erased, and the audit log's reference"),
        (status = 404, body = ErrorBody, description = "`unknown_customer`"),
    ))]
async fn erase(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Erased>, ApiError> {
    allow(&caller, &ADMINS, "DELETE /v1/customers/{id}", &s.institution, &s.audit)?;
    s.erase(&id, &caller.name).await.map(Json)
}

/// Answer of `POST /v1/admin/rules/reload`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Reloaded {
    /// Always true: the new rules serve.
    pub reloaded: bool,
    /// How many rules serve now.
    pub rules: usize,
}

/// Reload the rules file now (callers: this institution's DPO and operator certificates).
#[utoipa::path(post, path = "/v1/admin/rules/reload", operation_id = "reload_rules", tag = "desk",
    responses(
        (status = 200, body = Reloaded, description = "the new rules serve"),
        (status = 422, body = ErrorBody,
            description = "`invalid_rules`: the file has an error (its line or rule named); the previous rules keep serving"),
    ))]
async fn reload(State(s): State<Arc<Desk>>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(e) = allow(&caller, &ADMINS, "POST /v1/admin/rules/reload", &s.institution, &s.audit) {
        return e.into_response();
    }
    let s2 = Arc::clone(&s);
    let name = caller.name.clone();
    match tokio::task::spawn_blocking(move || s2.reload_rules(&name)).await {
        Ok(Ok(n)) => Json(Reloaded { reloaded: true, rules: n }).into_response(),
        Ok(Err(message)) => {
            let message = format!("{message}; the previous rules keep serving");
            let body = ErrorBody::new(ErrorCode::BadRequest, "invalid_rules", message);
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
        Err(e) => ApiError::Internal(format!("reload task: {e}")).into_response(),
    }
}

/// A workflow run's state (callers: this institution's DPO and operator certificates).
#[utoipa::path(get, path = "/v1/admin/workflows/{id}", operation_id = "workflow_run", tag = "desk", params(("id" = String, Path, pattern = "^w-[0-9a-f]{32}$",
        description = "the run id (`w-` and 32 lower-case hex digits), from the answer that started it")),
    responses(
        (status = 200, body = super::workflows::Run, description = "the run: its steps, the next one, its status"),
        (status = 404, body = ErrorBody, description = "`unknown_run`: never started, erased with its customer, or expired"),
    ))]
async fn workflow_run(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<super::workflows::Run>, ApiError> {
    allow(&caller, &ADMINS, "GET /v1/admin/workflows/{run_id}", &s.institution, &s.audit)?;
    s.engine.get(&id).map(Json).ok_or(ApiError::NotFound {
        reason: "unknown_run",
        message: "no workflow run with this id (never started, erased with its customer, or expired)".into(),
    })
}

/// The failed workflow runs (callers: this institution's DPO and operator certificates).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    /// Failed runs still kept (until the retention policy's `workflow` age), most recently failed first,
    /// at most 500; each says why in `failure`.
    pub runs: Vec<super::workflows::Run>,
    /// How many failed runs are kept in all (more than `runs` holds when over 500).
    pub total: usize,
}

/// Most dead letters one answer lists.
const MAX_DEAD_LETTERS: usize = 500;

/// The dead letters: workflow runs that failed, each with the step and the answer or error it failed on
/// (callers: this institution's DPO and operator certificates).
#[utoipa::path(get, path = "/v1/admin/dead-letters", operation_id = "dead_letters", tag = "desk",
    responses((status = 200, body = DeadLetters, description = "the failed runs, most recently failed first")))]
async fn dead_letters(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<DeadLetters>, ApiError> {
    allow(&caller, &ADMINS, "GET /v1/admin/dead-letters", &s.institution, &s.audit)?;
    let (runs, total) = s.engine.failed(MAX_DEAD_LETTERS);
    Ok(Json(DeadLetters { runs, total }))
}

/// The body of a request, or the error saying why it was refused.
fn body_of<T: hearth_inference::Body>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::bad("invalid_request", e.body_text())
        }
    })?;
    parse_body(&body)
}

/// Runs a blocking desk call (sealing, hashing) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("desk task: {e}")))?
}

/// The queues: how many conversations wait in each, by priority, the oldest wait, and the waiting ones
/// in claim order (callers: this institution's agent certificates).
#[utoipa::path(get, path = "/v1/agent/queues", operation_id = "agent_queues", tag = "agent",
    responses((status = 200, body = agents::Queues, description = "each queue, the waiting conversations, the caller's own")))]
async fn agent_queues(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<agents::Queues>, ApiError> {
    allow(&caller, &AGENTS, "GET /v1/agent/queues", &s.institution, &s.audit)?;
    blocking(move || Ok(s.queues(&caller.name))).await.map(Json)
}

/// Claim the next waiting conversation, highest priority first, then longest waiting (callers: this
/// institution's agent certificates).
#[utoipa::path(post, path = "/v1/agent/claim", operation_id = "agent_claim", tag = "agent", request_body = agents::ClaimBody,
    responses(
        (status = 200, body = agents::ConversationView, description = "the conversation, now the caller's, with its context"),
        (status = 409, body = ErrorBody, description = "`queue_empty`: nothing waits in the queue asked"),
    ))]
async fn agent_claim(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<agents::ConversationView>, ApiError> {
    allow(&caller, &AGENTS, "POST /v1/agent/claim", &s.institution, &s.audit)?;
    // No body is an empty one: the next conversation of either queue.
    let body: agents::ClaimBody = match body {
        Ok(b) if b.is_empty() => agents::ClaimBody::default(),
        other => body_of(other)?,
    };
    blocking(move || s.claim(&caller.name, body.queue.as_deref())).await.map(Json)
}

/// A conversation the caller holds, with what the retention policy keeps of it (callers: this
/// institution's agent certificates).
#[utoipa::path(get, path = "/v1/agent/conversations/{id}", operation_id = "agent_conversation", tag = "agent",
    params(("id" = String, Path, pattern = "^v-[0-9a-f]{32}$", description = "the conversation id (`v-` and 32 lower-case hex digits)")),
    responses(
        (status = 200, body = agents::ConversationView, description = "the conversation and its context"),
        (status = 404, body = ErrorBody, description = "`unknown_conversation`"),
        (status = 409, body = ErrorBody, description = "`not_yours`: the caller does not hold it"),
    ))]
async fn agent_conversation(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<agents::ConversationView>, ApiError> {
    allow(&caller, &AGENTS, "GET /v1/agent/conversations/{id}", &s.institution, &s.audit)?;
    blocking(move || s.conversation(&caller.name, &id)).await.map(Json)
}

/// Reply to the customer through the channel they used last (callers: this institution's agent
/// certificates).
#[utoipa::path(post, path = "/v1/agent/conversations/{id}/reply", operation_id = "agent_reply", tag = "agent", request_body = agents::ReplyBody,
    params(("id" = String, Path, pattern = "^v-[0-9a-f]{32}$", description = "the conversation id")),
    responses(
        (status = 200, body = agents::Replied, description = "the reply is kept and its delivery started"),
        (status = 404, body = ErrorBody, description = "`unknown_conversation`"),
        (status = 409, body = ErrorBody, description = "`not_yours`, or `no_reply_route`: the rules file has no delivery for the channel"),
    ))]
async fn agent_reply(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<agents::Replied>, ApiError> {
    allow(&caller, &AGENTS, "POST /v1/agent/conversations/{id}/reply", &s.institution, &s.audit)?;
    let body: agents::ReplyBody = body_of(body)?;
    let rt = tokio::runtime::Handle::current();
    blocking(move || s.reply(&caller.name, &id, &body.text, &rt)).await.map(Json)
}

/// Put a held conversation back in a queue (callers: this institution's agent certificates).
#[utoipa::path(post, path = "/v1/agent/conversations/{id}/transfer", operation_id = "agent_transfer", tag = "agent", request_body = agents::TransferBody,
    params(("id" = String, Path, pattern = "^v-[0-9a-f]{32}$", description = "the conversation id")),
    responses(
        (status = 200, body = agents::ConversationView, description = "the conversation, waiting in its new queue"),
        (status = 404, body = ErrorBody, description = "`unknown_conversation`"),
        (status = 409, body = ErrorBody, description = "`not_yours`"),
    ))]
async fn agent_transfer(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<agents::ConversationView>, ApiError> {
    allow(&caller, &AGENTS, "POST /v1/agent/conversations/{id}/transfer", &s.institution, &s.audit)?;
    let body: agents::TransferBody = body_of(body)?;
    blocking(move || s.transfer(&caller.name, &id, &body.queue, body.priority)).await.map(Json)
}

/// Close a held conversation (callers: this institution's agent certificates).
#[utoipa::path(post, path = "/v1/agent/conversations/{id}/close", operation_id = "agent_close", tag = "agent",
    params(("id" = String, Path, pattern = "^v-[0-9a-f]{32}$", description = "the conversation id")),
    responses(
        (status = 200, body = agents::ConversationView, description = "the conversation, closed"),
        (status = 404, body = ErrorBody, description = "`unknown_conversation`"),
        (status = 409, body = ErrorBody, description = "`not_yours`"),
    ))]
async fn agent_close(
    State(s): State<Arc<Desk>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<agents::ConversationView>, ApiError> {
    allow(&caller, &AGENTS, "POST /v1/agent/conversations/{id}/close", &s.institution, &s.audit)?;
    blocking(move || s.close(&caller.name, &id)).await.map(Json)
}

/// This document (any authenticated caller).
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "openapi", tag = "desk",
    responses((status = 200, body = super::openapi::DocumentShape, description = "the OpenAPI 3.1 document of every endpoint")))]
async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::served().clone())
}

/// The desk's routes, each declared once with its OpenAPI operation.
pub fn api() -> OpenApiRouter<Arc<Desk>> {
    OpenApiRouter::new()
        .routes(routes!(post_message))
        .routes(routes!(history))
        .routes(routes!(erase))
        .routes(routes!(reload))
        .routes(routes!(workflow_run))
        .routes(routes!(dead_letters))
        .routes(routes!(agent_queues))
        .routes(routes!(agent_claim))
        .routes(routes!(agent_conversation))
        .routes(routes!(agent_reply))
        .routes(routes!(agent_transfer))
        .routes(routes!(agent_close))
        .routes(routes!(openapi))
}

/// The routes, without authentication: [`mtls`] or [`local`] adds it.
fn routes(service: Arc<Desk>) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(hearth_inference::refuse_oversized))
        .with_state(service)
}

async fn cert_caller(mut req: Request, next: Next) -> Response {
    let Some(PeerIdentity(id)) = req.extensions().get::<PeerIdentity>().cloned() else {
        return ApiError::Forbidden("no authenticated client certificate on this connection".into())
            .into_response();
    };
    req.extensions_mut().insert(Caller { name: id.to_string(), role: id.role, institution: id.institution });
    next.run(req).await
}

async fn key_caller(
    State((key, institution)): State<(ApiKey, String)>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| key.matches(p.trim())) {
        let body = ErrorBody::new(
            ErrorCode::Unauthorized,
            "bad_api_key",
            "this listener needs the API key as `Authorization: Bearer <key>`",
        );
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    // The key is this institution's own, held on its own host.
    let caller = Caller { name: "api-key:local".into(), role: Role::App, institution: Some(institution) };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The routes for the mTLS port: the caller is the certificate's identity.
pub fn mtls(service: Arc<Desk>) -> Router {
    routes(service).layer(axum::middleware::from_fn(cert_caller))
}

/// The routes for the loopback listener: the caller is the API key, acting as an app.
pub fn local(service: Arc<Desk>, key: ApiKey) -> Router {
    let institution = service.institution.clone();
    routes(service)
        .fallback(hearth_inference::no_route)
        .layer(axum::middleware::from_fn_with_state((key, institution), key_caller))
}

/// Serves [`local`] on `addr` until `shutdown` resolves.
pub async fn serve_local(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_compare_by_digest_and_never_print() {
        let k = ApiKey::new("a-long-enough-api-key-0123456789");
        assert!(k.matches("a-long-enough-api-key-0123456789"));
        assert!(!k.matches("a-long-enough-api-key-012345678"));
        assert!(!format!("{k:?}").contains("long"));
    }

    fn caller(role: Role, institution: Option<&str>) -> Caller {
        Caller { name: format!("{role}:x"), role, institution: institution.map(str::to_string) }
    }

    #[test]
    fn admin_endpoints_refuse_apps() {
        let (app, dpo) = (caller(Role::App, Some("bank-a")), caller(Role::Dpo, Some("bank-a")));
        assert!(matches!(allow(&app, &ADMINS, "DELETE", "bank-a", &None), Err(ApiError::Forbidden(_))));
        assert!(allow(&dpo, &ADMINS, "DELETE", "bank-a", &None).is_ok());
        assert!(allow(&app, &POSTERS, "POST", "bank-a", &None).is_ok());
        assert!(allow(&dpo, &POSTERS, "POST", "bank-a", &None).is_err());
    }

    #[test]
    fn only_the_institutions_agents_work_its_queues() {
        let agent = caller(Role::Agent, Some("bank-a"));
        assert!(allow(&agent, &AGENTS, "POST /v1/agent/claim", "bank-a", &None).is_ok());
        for other in [
            caller(Role::App, Some("bank-a")),
            caller(Role::Dpo, Some("bank-a")),
            caller(Role::Operator, Some("bank-a")),
            caller(Role::Agent, Some("airline-b")),
        ] {
            assert!(allow(&other, &AGENTS, "POST /v1/agent/claim", "bank-a", &None).is_err(), "{other:?}");
        }
        // An agent posts no messages and reads no history.
        assert!(allow(&agent, &POSTERS, "POST /v1/messages", "bank-a", &None).is_err());
        assert!(allow(&agent, &ADMINS, "GET /v1/customers/{id}/history", "bank-a", &None).is_err());
    }

    #[test]
    fn other_institutions_and_consortium_roles_reach_no_customer() {
        for (who, want) in [
            (caller(Role::App, Some("airline-b")), "acts for airline-b"),
            (caller(Role::Dpo, Some("airline-b")), "acts for airline-b"),
            (caller(Role::Operator, None), "consortium certificate"),
            (caller(Role::Dpo, None), "consortium certificate"),
        ] {
            for roles in [&POSTERS[..], &ADMINS[..]] {
                match allow(&who, roles, "GET /v1/customers/{id}/history", "bank-a", &None) {
                    Err(ApiError::Forbidden(m)) if !roles.contains(&who.role) || m.contains(want) => {}
                    other => panic!("{who:?} on {roles:?}: {other:?}"),
                }
            }
        }
    }
}
