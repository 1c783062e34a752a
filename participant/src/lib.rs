//! Hearth participant: runs inside one institution. It keeps the institution's data in its own embedded
//! store (labelled conversations, conversations with emotion labels, purchase transactions), trains on
//! them when the coordinator opens a round, uploads only the model delta, and serves the latest committed
//! global model of each family (intent, emotion, recommend) to the institution's customer-service apps.
//!
//! Start at [`start`]. Then:
//! - [`config`]: what an operator configures.
//! - [`store`]: the embedded store (data per family, served models).
//! - `federation`: the round protocol, client side; it knows no model family.
//! - [`families`]: each family's local data, calibration and served model.
//! - [`secagg`]: a secure-aggregation round, client side (also used by `hearth bench secagg`).
//! - [`serve`]: the inference endpoints (HTTP JSON and gRPC on one mTLS port), one file per family.
#![forbid(unsafe_code)]

pub mod config;
pub mod families;
pub mod serve;
pub mod store;

mod federation;
pub mod secagg;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hearth_crypto::SuiteId;
use hearth_transport::{client_config, server_config, ServeOptions, TlsMaterial};

pub use config::ParticipantConfig;
pub use families::{ModelSlots, Served, Slots};
pub use store::Store;

/// The families a participant serves, as their model files name them.
const FAMILIES: [&str; 3] = ["intent", "emotion", "recommend"];

/// Where a participant writes a copy of each model file it serves, inside its data directory.
pub fn models_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("models")
}

/// A running participant.
#[derive(Debug)]
pub struct Running {
    /// Where the inference endpoint listens.
    pub inference_addr: SocketAddr,
    /// Resolves when the inference server stopped.
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The keys this participant takes part in secure aggregation with: the consortium CA, and its protocol
/// signing key (under the international suite, the P-256 key of its TLS certificate; under the national
/// suite, the SM2 key in `protocol_key`, whose public half the CA embedded in its certificate). Without
/// them the participant still trains in plain rounds and refuses secure ones, saying why.
fn secagg_identity(config: &ParticipantConfig, tls: &TlsMaterial) -> Option<secagg::SecAggIdentity> {
    let identity = || -> anyhow::Result<secagg::SecAggIdentity> {
        let ca_der = hearth_crypto::pki::cert_der_from_pem(&tls.ca_pem).context("the CA certificate")?;
        let signing = match config.suite {
            SuiteId::International => hearth_crypto::pki::p256_secret_from_pem(&tls.key_pem)
                .context("the node's TLS private key")?,
            SuiteId::National => {
                let path = config.protocol_key.as_ref().context(
                    "the national suite needs `protocol_key`: the node's SM2 signing key file written by `hearth pki`",
                )?;
                let hex = zeroize::Zeroizing::new(
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
                );
                let bytes = zeroize::Zeroizing::new(
                    hex::decode(hex.trim()).with_context(|| format!("{}: not hex", path.display()))?,
                );
                hearth_crypto::SecretBytes::from_slice("SM2 protocol key", &bytes)
                    .with_context(|| format!("{}", path.display()))?
            }
        };
        Ok(secagg::SecAggIdentity { suite: config.suite, ca_der, signing })
    };
    match identity() {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "secure aggregation unavailable on this participant");
            None
        }
    }
}

/// Opens the store, starts the federation task and serves inference until `shutdown` resolves.
pub async fn start(
    config: ParticipantConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)
        .context("loading the participant's TLS material")?;
    let store = Arc::new(Store::open(&config.data_dir).context("opening the participant store")?);
    tracing::info!(
        intent_examples = store.count()?,
        emotion_examples = store.emotion_count()?,
        transactions = store.transaction_count()?,
        dir = %config.data_dir.display(),
        "participant store open"
    );

    let slots: ModelSlots = Arc::new(Slots::default());
    let local = Arc::new(families::Local::new(Arc::clone(&store), config.holdout_fraction));
    // Serve the last models we had before a restart, until the coordinator announces newer ones.
    let (store2, local2, slots2) = (Arc::clone(&store), Arc::clone(&local), Arc::clone(&slots));
    tokio::task::spawn_blocking(move || {
        for family in FAMILIES {
            let restored = store2
                .load_model_of(family)
                .map_err(anyhow::Error::from)
                .and_then(|file| file.map(|f| local2.restore(&f)).transpose());
            match restored {
                Ok(Some(c)) => {
                    slots2.install(c);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    family,
                    error = format!("{e:#}"),
                    "stored model unreadable; waiting for the coordinator's"
                ),
            }
        }
    })
    .await
    .context("restoring the served models")?;

    let federation = Arc::new(federation::Federation::new(
        Arc::clone(&store),
        local,
        Arc::clone(&slots),
        config.coordinator.clone(),
        config.coordinator_name.clone(),
        client_config(&tls).context("building the TLS client configuration")?,
        models_dir(&config.data_dir),
        secagg_identity(&config, &tls),
    ));
    let fed_task = tokio::spawn(federation.run());

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let inference_addr = listener.local_addr()?;
    let server_tls = server_config(&tls).context("building the TLS server configuration")?;
    tracing::info!(%inference_addr, "inference endpoint listening (HTTPS + gRPC, client certificates required)");
    let done = tokio::spawn(async move {
        let r = hearth_transport::serve(
            listener,
            server_tls,
            serve::router(slots),
            ServeOptions::default(),
            shutdown,
        )
        .await
        .context("serving inference");
        fed_task.abort();
        r
    });
    Ok(Running { inference_addr, done })
}
