//! Hearth coordinator: orchestrates federated training rounds and analytics queries across participants
//! and aggregates their updates. It never sees training data, and under secure aggregation (the default)
//! it never sees a single participant's update either: it unmasks only the sum over the survivors. Only a
//! job the consortium's policy lets run in plain aggregation (`allow_plain_aggregation`) shows it each
//! update.
//!
//! Start reading at [`start`]. Then:
//! - [`config`]: what an operator configures.
//! - `service`: the gRPC `Coordinator` service (identity from the client certificate, validation);
//!   `upload`: the one reader of its chunked client streams.
//! - `error`: why a round, a query or a job's privacy section was refused.
//! - `job`: a job's rounds as a state machine; `aggregate`: the running weighted sum.
//! - `driver`: the task that opens, waits for and commits each round of a job.
//! - `privacy`, `privacy_service`: the DPO's policy and the budget ledger, and the gRPC `Privacy`
//!   service that sets and reports them.
//! - `query`: federated analytics queries (the gRPC `Analytics` service): a histogram summed by secure
//!   aggregation with distributed discrete Gaussian noise, charged to the budget.
//! - `secagg`: a secure-aggregation round: the protocol's server phases, relaying, decoding the sum.
//! - `card`: the model card handed out with every model version (data, rounds, privacy).
//! - [`store`]: the embedded database; a committed round survives a restart.
//! - [`audit`]: security-relevant events, in the node's signed audit log (`hearth_node`).
//! - Keys: `[keystore]` in [`config`]; models are envelope-encrypted by [`store`].
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod store;

mod aggregate;
mod card;
mod driver;
mod error;
mod evaluation;
mod job;
mod ops;
mod privacy;
mod privacy_service;
mod query;
mod secagg;
mod service;
mod submission;
mod upload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hearth_audit::{Action, Event, Outcome};
use hearth_node::audit::default_origin;
use hearth_node::files::NodeLock;
use hearth_node::keys::{Create, NodeKeys, COORDINATOR_KEYS};
use hearth_node::refusal::refusal_hook;
use hearth_proto::v1::coordinator_server::CoordinatorServer;
use hearth_proto::MAX_MESSAGE_BYTES;
use hearth_transport::{server_config_for, ServeOptions};

use crate::audit::AuditLog;

pub use config::CoordinatorConfig;
pub use driver::Shared;

/// A running coordinator.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// Where the operations endpoints listen, when `ops_listen` is set.
    pub ops_addr: Option<SocketAddr>,
    /// Resolves when the server stopped.
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Opens the keys, the audit log and the store, resumes unfinished jobs and serves the gRPC service until
/// `shutdown` resolves; then records the stop and signs a final audit checkpoint.
pub async fn start(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
    let node = open_node(&config).await?;
    // With a PKCS#11 token the TLS key is the token's (a key file is refused).
    let mut tls = node.keys.tls_material(&config.tls).context("loading the coordinator's TLS material")?;
    let audit = node.audit.clone();
    let keys = Arc::clone(&node.keys);
    let cert_der =
        hearth_crypto::pki::cert_der_from_pem(&tls.cert_pem).context("the coordinator's certificate")?;
    let shared = Shared::open(&config, node.keys, node.audit).context("opening the coordinator store")?;
    // The revocation list is asked at every handshake; the file is re-read every few seconds.
    shared.refresh_revocations();
    tls.revocations = Some(Arc::clone(&shared.revocations) as Arc<dyn hearth_transport::Revocations>);
    let tls =
        server_config_for(config.tls.provider, &tls).context("building the TLS server configuration")?;
    let watcher = Arc::downgrade(&shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REVOCATION_POLL).await;
            let Some(shared) = watcher.upgrade() else { break };
            tokio::task::spawn_blocking(move || shared.refresh_revocations()).await.ok();
        }
    });
    shared.resume_jobs();

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(hearth_transport::ops::RequestMetrics::default());
    let (ops_addr, ops_task) = match config.ops_listen {
        Some(at) => {
            let state = Arc::new(ops::CoordinatorOps {
                shared: Arc::clone(&shared),
                keys,
                cert_der,
                requests: Arc::clone(&requests),
            });
            let (ops_addr, task) = hearth_transport::ops::spawn_ops(at, state).await?;
            (Some(ops_addr), Some(task))
        }
        None => (None, None),
    };
    let svc = CoordinatorServer::new(service::CoordinatorService::new(Arc::clone(&shared)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let privacy = hearth_proto::v1::privacy_server::PrivacyServer::new(privacy_service::PrivacyService::new(
        Arc::clone(&shared),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let analytics = hearth_proto::v1::analytics_server::AnalyticsServer::new(query::AnalyticsService::new(
        Arc::clone(&shared),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    // grpc.health.v1 on the same port: SERVING for the server ("") and each service once it listens.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CoordinatorServer<service::CoordinatorService>>().await;
    let router = tonic::service::Routes::new(svc)
        .add_service(privacy)
        .add_service(analytics)
        .add_service(health)
        .into_axum_router()
        .route_layer(axum::middleware::from_fn_with_state(requests, hearth_transport::ops::track));
    tracing::info!(%addr, "coordinator listening (gRPC, TLS 1.3, client certificates required)");
    let opts = ServeOptions { on_refused: Some(refusal_hook(audit.clone())), ..ServeOptions::default() };
    let lock = node.lock;
    let done = tokio::spawn(async move {
        let served = hearth_transport::serve(listener, tls, router, opts, shutdown)
            .await
            .context("serving the coordinator");
        audit.record("system", Action::NodeStop, Outcome::of(&served), "coordinator");
        // The final checkpoint covers everything recorded up to the stop.
        match tokio::task::spawn_blocking(move || audit.checkpoint_now()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final audit checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "final audit checkpoint task failed"),
        }
        drop(lock);
        if let Some(t) = ops_task {
            t.abort();
        }
        served
    });
    Ok(Running { addr, ops_addr, done })
}

/// How often the configured revocation list is read again.
const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// What `start` opens before serving: the directory lock, the keys, the audit log.
struct Node {
    lock: NodeLock,
    keys: Arc<NodeKeys>,
    audit: AuditLog,
}

/// Locks the state directory, opens the keystore (creating it and the coordinator's keys on first
/// start) and the audit log, and records the start and any key generated. Argon2id, token calls and the
/// log's replay run on a blocking thread.
async fn open_node(config: &CoordinatorConfig) -> anyhow::Result<Node> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Node> {
        let dir = &config.state_dir;
        let lock = NodeLock::acquire(dir)?;
        let (keys, events) =
            NodeKeys::open(&config.keystore, config.suite, dir, COORDINATOR_KEYS, Create::IfMissing, None)
                .context("opening the coordinator's keystore")?;
        let origin = default_origin(config.audit.origin.as_deref(), &config.tls.cert, "coordinator", dir);
        let (audit, recovery) = AuditLog::open(dir, &keys, &origin).context("opening the audit log")?;
        // The round policy's one switch that weakens what the coordinator may see is in the log from start.
        let aggregation = if config.policy.allow_plain_aggregation {
            "plain aggregation allowed: jobs may opt out of secure aggregation"
        } else {
            "secure aggregation required"
        };
        audit.record_event(Event::new("system", Action::NodeStart, Outcome::Ok).detail(format!(
            "coordinator; keys in {} ({}); {aggregation}",
            keys.name(),
            keys.location()
        )));
        if recovery.discarded_bytes > 0 {
            audit.record(
                "system",
                Action::AuditRecover,
                Outcome::Error,
                &format!("cut {} bytes of a partly written entry after a crash", recovery.discarded_bytes),
            );
        }
        for e in &events {
            audit.record_key_event("system", e);
        }
        audit.checkpoint_now().context("signing the audit log's first checkpoint")?;
        Ok(Node { lock, keys: Arc::new(keys), audit })
    })
    .await
    .context("opening the coordinator's keys and audit log")?
}
