//! Hearth participant: the federation client that runs inside one institution. It keeps the institution's
//! training data in its own embedded store (labelled conversations, conversations with emotion labels,
//! purchase transactions), trains on them when the coordinator opens a round, sends only its masked model
//! update, answers analytics queries with noisy counts, and writes each committed global model, calibrated
//! on its own data, into the served-model slots (`hearth_inference::Slots`). On its one mTLS port it
//! mounts the inference endpoints (`hearth-inference`) and the desk (`hearth-desk`), which only read
//! those slots.
//!
//! Start at [`start`]. Then:
//! - [`config`]: what an operator configures.
//! - [`store`]: the embedded store (data per family, served models), envelope-encrypted.
//! - [`open_node`]: the directory lock, keystore and audit log every participant process (and the
//!   `hearth data` commands) opens first.
//! - `federation`: the round protocol, client side; it knows no model family.
//! - [`families`]: each family's local data and its calibration of a committed model.
//! - [`secagg`]: a secure-aggregation round, client side (also used by `hearth bench secagg`).
//! - `query`: answering a federated analytics query (noisy counts of its own records, sent masked).
//! - [`privacy`]: the institution's own signed privacy policy and ledger, checked and charged here
//!   whatever the coordinator announces.
//!
//! It never sees a customer identifier: the desk holds customers, this crate holds training data.
#![forbid(unsafe_code)]

pub mod config;
pub mod embedding;
pub mod families;
pub mod store;

mod federation;
pub mod membership;
pub mod model_source;
mod ops;
pub mod privacy;
mod query;
pub mod secagg;
pub mod serving;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hearth_audit::{Action, Event, Outcome};
use hearth_crypto::SuiteId;
use hearth_node::audit::{default_origin, AuditLog};
use hearth_node::files::NodeLock;
use hearth_node::keys::{Create, NodeKeys, PARTICIPANT_KEYS};
use hearth_node::refusal::refusal_hook;
use hearth_transport::{client_config_to_for, server_config_for, ServeOptions, TlsMaterial};
use zeroize::Zeroizing;

pub use config::ParticipantConfig;
use hearth_inference::Calibrated;
use hearth_inference::FAST_STAGE;
pub use hearth_inference::{ModelSlots, Served, Slots};
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
    /// Where the loopback API-key listener listens, when `[service.local] listen` is set.
    pub local_addr: Option<SocketAddr>,
    /// Where the operations endpoints listen, when `ops_listen` is set.
    pub ops_addr: Option<SocketAddr>,
    /// Resolves when the inference server stopped.
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The keys this participant takes part in secure aggregation with: the consortium CA, and its protocol
/// signing key (under the international suite, the P-256 key of its TLS certificate; under the national
/// suite, the SM2 key in `protocol_key`, whose public half the CA embedded in its certificate). Without
/// them the participant still trains in plain rounds and refuses secure ones, saying why.
fn secagg_identity(
    config: &ParticipantConfig,
    tls: &TlsMaterial,
    keys: &NodeKeys,
) -> Option<secagg::SecAggIdentity> {
    let identity = || -> anyhow::Result<secagg::SecAggIdentity> {
        let ca_der = hearth_crypto::pki::cert_der_from_pem(&tls.ca_pem).context("the CA certificate")?;
        let signing: Arc<dyn hearth_secagg::MessageSigner> = match config.suite {
            // With a token, the TLS key never leaves it: protocol messages are signed there too.
            SuiteId::International if keys.in_token() => Arc::new(secagg::KeystoreSigner::new(
                Arc::clone(keys.keystore()),
                hearth_crypto::keystore::KeyLabel::new(hearth_node::keys::TLS_KEY)?,
            )),
            SuiteId::International => Arc::new(hearth_secagg::SuiteSigner::new(
                config.suite,
                hearth_crypto::pki::p256_secret_from_pem(&tls.key_pem)
                    .context("the node's TLS private key")?,
            )),
            // The SM2 key is sealed by the token's AES key (no token offers SM2); a file is refused at start.
            SuiteId::National if keys.in_token() => Arc::new(secagg::KeystoreSigner::new(
                Arc::clone(keys.keystore()),
                hearth_crypto::keystore::KeyLabel::new(hearth_node::keys::PROTOCOL_KEY)?,
            )),
            SuiteId::National => {
                // `hearth pki init --suite national` writes it beside the TLS key: NAME.sm2.key.
                let default = config.tls.key.with_extension("sm2.key");
                let path = config.protocol_key.as_ref().unwrap_or(&default);
                let hex = Zeroizing::new(
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
                );
                let bytes = Zeroizing::new(
                    hex::decode(hex.trim()).with_context(|| format!("{}: not hex", path.display()))?,
                );
                let secret = hearth_crypto::SecretBytes::from_slice("SM2 protocol key", &bytes)
                    .with_context(|| format!("{}", path.display()))?;
                Arc::new(hearth_secagg::SuiteSigner::new(config.suite, secret))
            }
        };
        let cert_der =
            hearth_crypto::pki::cert_der_from_pem(&tls.cert_pem).context("the node's certificate")?;
        let mut identity = secagg::SecAggIdentity::new(config.suite, ca_der, &cert_der, signing)?;
        identity.min_members = config.min_secure_members;
        Ok(identity)
    };
    match identity() {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "secure aggregation unavailable on this participant");
            None
        }
    }
}

/// A participant's opened directory: its lock, keys, audit log and store. Dropping it releases the lock
/// and signs a final audit checkpoint.
#[derive(Debug)]
pub struct Node {
    /// Held for as long as the node is open.
    pub lock: NodeLock,
    /// The keystore and the node's keys.
    pub keys: Arc<NodeKeys>,
    /// The signed audit log.
    pub audit: AuditLog,
    /// The encrypted store.
    pub store: Store,
}

/// Locks `config.data_dir`, opens the keystore (creating it and the participant's keys the first time),
/// the audit log and the store, and records the opening (`actor`, e.g. `system` for the service or
/// `cli:data-import` for a command) and any key generated. `passphrase` overrides the configured source.
/// Blocking (Argon2id, token calls, log replay): call from `spawn_blocking` in async code.
pub fn open_node(
    config: &ParticipantConfig,
    actor: &str,
    passphrase: Option<&Zeroizing<String>>,
) -> anyhow::Result<Node> {
    let dir = &config.data_dir;
    let lock = NodeLock::acquire(dir)?;
    let (keys, events) =
        NodeKeys::open(&config.keystore, config.suite, dir, PARTICIPANT_KEYS, Create::IfMissing, passphrase)
            .context("opening the participant's keystore")?;
    let origin = default_origin(config.audit.origin.as_deref(), &config.tls.cert, "participant", dir);
    let (audit, recovery) = AuditLog::open(dir, &keys, &origin).context("opening the audit log")?;
    audit.record_event(Event::new(actor, Action::NodeOpen, Outcome::Ok).detail(format!(
        "participant; keys in {} ({})",
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
        audit.record_key_event(actor, e);
    }
    let keys = Arc::new(keys);
    let store = Store::open(dir, Arc::clone(&keys)).context("opening the participant store")?;
    audit.checkpoint_now().context("signing an audit checkpoint")?;
    Ok(Node { lock, keys, audit, store })
}

/// Opens the node, starts the federation task and serves inference until `shutdown` resolves; then
/// records the stop and signs a final audit checkpoint.
pub async fn start(
    config: ParticipantConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let cfg = config.clone();
    let Node { lock, keys, audit, store } =
        tokio::task::spawn_blocking(move || open_node(&cfg, "system", None))
            .await
            .context("opening the participant's keys, audit log and store")??;
    // With a PKCS#11 token the TLS key is the token's (a key file is refused).
    let mut tls = keys.tls_material(&config.tls).context("loading the participant's TLS material")?;
    // The newest revocation list: kept in data_dir, the configured file, and later the coordinator's.
    let ca_der = hearth_crypto::pki::cert_der_from_pem(&tls.ca_pem).context("the CA certificate")?;
    let revocations = Arc::new(
        hearth_node::revocation::RevocationState::open(ca_der, Some(&config.data_dir))
            .context("the revocation list kept in the data directory")?,
    );
    let list = config.revocation_list_path();
    match revocations.offer_file(&list) {
        Ok(Some(hearth_node::revocation::Offered::Adopted { number, revoked })) => {
            audit.record_event(
                Event::new("system", Action::RevocationsUpdate, Outcome::Ok)
                    .object(number.to_string())
                    .detail(format!("from {}: {revoked} certificates revoked", list.display())),
            );
        }
        Ok(_) => {}
        Err(e) => {
            audit.record("system", Action::RevocationsUpdate, Outcome::Refused, &e.to_string());
            return Err(e).context("the configured revocation list");
        }
    }
    tls.revocations = Some(Arc::clone(&revocations) as Arc<dyn hearth_transport::Revocations>);
    if keys.in_token() && config.suite == SuiteId::National {
        let default = config.tls.key.with_extension("sm2.key");
        let path = config.protocol_key.as_ref().unwrap_or(&default);
        if path.exists() {
            anyhow::bail!(
                "{} is an SM2 private key file, but this participant's keys live in {}: its protocol key must \
                 be the keystore's ({:?}, made by hearth pki request --config). Delete the file",
                path.display(),
                keys.name(),
                hearth_node::keys::PROTOCOL_KEY
            );
        }
    }
    let node_keys = Arc::clone(&keys);
    let store = Arc::new(store);
    tracing::info!(
        intent_examples = store.count()?,
        emotion_examples = store.emotion_count()?,
        transactions = store.transaction_count()?,
        dir = %config.data_dir.display(),
        "participant store open"
    );

    let encoder = Arc::new(hearth_models::encoder::SharedEncoder::new(config.encoder_path()));
    let slots: ModelSlots = Arc::new(Slots {
        encoder: Arc::clone(&encoder),
        cascade_confidence: config.cascade_confidence(),
        ..Slots::default()
    });
    let local_listener = config.service.local.resolve().map_err(anyhow::Error::msg)?;
    // The institution this participant serves is the one its own certificate names.
    let own = hearth_crypto::pki::cert_der_from_pem(&tls.cert_pem)
        .and_then(|der| hearth_crypto::pki::identity_from_cert_der(&der))
        .context("this participant's own certificate")?;
    let institution = own.id.clone();
    let (svc_cfg, svc_dir, svc_slots, svc_audit, svc_inst) = (
        config.service.clone(),
        config.data_dir.clone(),
        Arc::clone(&slots),
        audit.clone(),
        institution.clone(),
    );
    let service = tokio::task::spawn_blocking(move || {
        hearth_desk::Desk::open(&svc_cfg, &svc_dir, &svc_inst, keys, svc_slots, Some(svc_audit))
    })
    .await
    .context("opening the customer-service core")?
    .map_err(anyhow::Error::msg)
    .context("opening the customer-service core")?;
    let service = Arc::new(service);
    let local = Arc::new(families::Local::new(Arc::clone(&store), config.holdout_fraction, encoder));
    // Serve the last models we had before a restart, until the coordinator announces newer ones.
    let (store2, local2, slots2) = (Arc::clone(&store), Arc::clone(&local), Arc::clone(&slots));
    let models_dir2 = models_dir(&config.data_dir);
    tokio::task::spawn_blocking(move || {
        // The cascade's fast stage first: the intent model restored after it may be a newer fast one.
        for family in std::iter::once(FAST_STAGE).chain(FAMILIES) {
            let file = store2.load_model_of(family).map_err(anyhow::Error::from);
            let restored = file.and_then(|file| file.map(|f| local2.restore(&f).map(|c| (c, f))).transpose());
            match restored {
                Ok(Some((Calibrated::Intent(s), _))) if family == FAST_STAGE => {
                    slots2.install(Calibrated::IntentFast(s));
                }
                Ok(Some((c, f))) => {
                    // A store from before the cascade has a fast-tier intent model and no stage: keep it
                    // as the stage too, so that this node's replicas find one.
                    if family == "intent" && slots2.intent_fast.load().is_none() {
                        if let Err(e) = federation::keep_fast_stage(&store2, &models_dir2, &c, &f) {
                            tracing::warn!(
                                error = format!("{e:#}"),
                                "could not keep the cascade's fast stage"
                            );
                        }
                    }
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

    let ca_der = hearth_crypto::pki::cert_der_from_pem(&tls.ca_pem).context("the CA certificate")?;
    let policy_path = config.privacy_policy_path();
    let (store2, inst2) = (Arc::clone(&store), institution.clone());
    let local_privacy =
        tokio::task::spawn_blocking(move || privacy::LocalPrivacy::open(inst2, policy_path, ca_der, store2))
            .await
            .context("opening the institution's privacy ledger")??;
    match local_privacy.policy() {
        Ok(Some(_)) => {
            tracing::info!(path = %config.privacy_policy_path().display(), "the institution's signed privacy policy verifies")
        }
        Ok(None) => tracing::warn!(
            path = %config.privacy_policy_path().display(),
            "no signed privacy policy for this institution: no differentially private round or query will be answered"
        ),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "the institution's privacy policy does not verify: nothing private will be answered"
        ),
    }
    let mut secagg_identity = secagg_identity(&config, &tls, &node_keys);
    if let Some(identity) = secagg_identity.as_mut() {
        identity.revocations = Some(Arc::clone(&revocations));
        let path = config.members_path();
        let cert_der =
            hearth_crypto::pki::cert_der_from_pem(&tls.cert_pem).context("the node's certificate")?;
        let ca = hearth_crypto::pki::cert_der_from_pem(&tls.ca_pem).context("the CA certificate")?;
        let m = membership::Membership::open(
            path.clone(),
            ca,
            (institution.clone(), cert_der),
            Arc::clone(&store),
        )?;
        match m.current() {
            Ok(list) => {
                tracing::info!(path = %path.display(), version = list.version, members = list.members.len(), "member list in force");
                identity.members = Some(Arc::new(m));
            }
            Err(e) if !path.exists() => tracing::warn!(
                error = format!("{e:#}"),
                "no member list the institutions signed: any participant certificate the CA issued may be a roster member"
            ),
            Err(e) => {
                // A list is there but does not verify: refuse secure rounds rather than run without it.
                tracing::error!(error = format!("{e:#}"), "the member list does not verify; secure rounds will be refused");
                identity.members = Some(Arc::new(m));
            }
        }
    }
    let federation = Arc::new(federation::Federation::new(
        Arc::clone(&store),
        local,
        Arc::clone(&slots),
        federation::CoordinatorLink {
            addr: config.coordinator.to_string(),
            name: config.coordinator_name.clone(),
            tls: client_config_to_for(config.tls.provider, &tls, hearth_crypto::pki::Role::Coordinator)
                .context("building the TLS client configuration")?,
        },
        models_dir(&config.data_dir),
        secagg_identity,
        Arc::new(local_privacy),
        audit.clone(),
        Arc::clone(&revocations),
    ));
    let fed_task = tokio::spawn(Arc::clone(&federation).run());
    let requests = Arc::new(hearth_transport::ops::RequestMetrics::default());
    let ops_addr = match config.ops_listen {
        Some(at) => {
            let state = Arc::new(ops::ParticipantOps {
                federation: Arc::clone(&federation),
                store: Arc::clone(&store),
                keys: Arc::clone(&node_keys),
                revocations,
                ca_der: hearth_crypto::pki::cert_der_from_pem(&tls.ca_pem).context("the CA certificate")?,
                cert_der: hearth_crypto::pki::cert_der_from_pem(&tls.cert_pem)
                    .context("the node's certificate")?,
                audit: audit.clone(),
                requests: Arc::clone(&requests),
                desk: Arc::clone(&service),
            });
            Some(hearth_transport::ops::spawn_ops(at, state).await?.0)
        }
        None => None,
    };
    // Rollback requests from `hearth model rollback`, picked up within a second (and any left from
    // before a restart, now).
    tokio::spawn(async move {
        loop {
            let fed = Arc::clone(&federation);
            let _ = tokio::task::spawn_blocking(move || fed.roll_back_requested()).await;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let inference_addr = listener.local_addr()?;
    let server_tls =
        server_config_for(config.tls.provider, &tls).context("building the TLS server configuration")?;
    tracing::info!(%inference_addr, "inference endpoint listening (HTTPS + gRPC, client certificates required)");
    let opts = ServeOptions { on_refused: Some(refusal_hook(audit.clone())), ..ServeOptions::default() };
    // grpc.health.v1 on the same port as the inference gRPC service.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("hearth.v1.Inference", tonic_health::ServingStatus::Serving).await;
    let router = hearth_inference::router(
        slots,
        hearth_inference::Auditor { institution: institution.clone(), log: Some(audit.clone()) },
    )
    // Routed by path: tonic's own router brings a fallback, and the inference router has one.
    .route_service("/grpc.health.v1.Health/Check", health.clone())
    .route_service("/grpc.health.v1.Health/Watch", health)
    // The served models, for this institution's inference replicas.
    .route_service(
        "/hearth.v1.ModelSource/ServedModel",
        hearth_proto::v1::model_source_server::ModelSourceServer::new(model_source::ModelSource {
            models_dir: models_dir(&config.data_dir),
            institution: institution.clone(),
            audit: audit.clone(),
        }),
    )
    .merge(hearth_desk::api::mtls(Arc::clone(&service)))
    // Inference, desk and health requests timed per route template (`/metrics`).
    .route_layer(axum::middleware::from_fn_with_state(requests, hearth_transport::ops::track))
    // A path nobody serves: a JSON 404 for HTTP callers, UNIMPLEMENTED for gRPC ones.
    .fallback(hearth_inference::no_route);
    service.spawn_background();
    // One shutdown signal for both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let local_addr = match local_listener {
        None => None,
        Some((addr, key)) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("[service.local] listening on {addr}"))?;
            let local_addr = l.local_addr()?;
            tracing::info!(%local_addr, "local API-key listener (plain HTTP, loopback only)");
            let app = hearth_desk::api::local(Arc::clone(&service), key);
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move {
                if let Err(e) = hearth_desk::api::serve_local(l, app, stop).await {
                    tracing::error!(error = %e, "local API-key listener failed");
                }
            });
            Some(local_addr)
        }
    };
    let shutdown = stopped(stop_rx);
    let done = tokio::spawn(async move {
        let r = hearth_transport::serve(listener, server_tls, router, opts, shutdown)
            .await
            .context("serving inference");
        fed_task.abort();
        audit.record("system", Action::NodeStop, Outcome::of(&r), "participant");
        match tokio::task::spawn_blocking(move || audit.checkpoint_now()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final audit checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "final audit checkpoint task failed"),
        }
        drop(lock);
        r
    });
    Ok(Running { inference_addr, local_addr, ops_addr, done })
}
