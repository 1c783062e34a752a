//! Hearth coordinator: orchestrates federated training rounds across participants and aggregates their
//! updates. It never sees training data; today it sees each participant's model delta, which secure
//! aggregation will reduce to the sum alone.
//!
//! Start reading at [`start`]. Then:
//! - [`config`]: what an operator configures.
//! - `service`: the gRPC `Coordinator` service (identity from the client certificate, validation).
//! - `job`: a job's rounds as a state machine; `aggregate`: the running weighted sum.
//! - `driver`: the task that opens, waits for and commits each round of a job.
//! - `secagg`: a secure-aggregation round: the protocol's server phases, relaying, decoding the sum.
//! - `card`: the model card handed out with every model version (data, rounds, privacy).
//! - [`store`]: the embedded database; a committed round survives a restart.
//! - [`audit`]: security-relevant events.
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod store;

mod aggregate;
mod card;
mod driver;
mod job;
mod secagg;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hearth_proto::v1::coordinator_server::CoordinatorServer;
use hearth_proto::MAX_MESSAGE_BYTES;
use hearth_transport::{server_config, ServeOptions, TlsMaterial};

pub use config::CoordinatorConfig;
pub use driver::Shared;

/// A running coordinator.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// Resolves when the server stopped.
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Opens the store, resumes unfinished jobs and serves the gRPC service until `shutdown` resolves.
pub async fn start(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
    let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)
        .context("loading the coordinator's TLS material")?;
    let tls = server_config(&tls).context("building the TLS server configuration")?;
    let shared = Shared::open(&config).context("opening the coordinator store")?;
    shared.resume_jobs();

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let svc = CoordinatorServer::new(service::CoordinatorService::new(Arc::clone(&shared)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let router = tonic::service::Routes::new(svc).into_axum_router();
    tracing::info!(%addr, "coordinator listening (gRPC, TLS 1.3, client certificates required)");
    let done = tokio::spawn(async move {
        hearth_transport::serve(listener, tls, router, ServeOptions::default(), shutdown)
            .await
            .context("serving the coordinator")
    });
    Ok(Running { addr, done })
}
