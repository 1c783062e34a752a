//! An inference replica (`hearth inference`): serves the intent and emotion endpoints of one institution
//! from the models its participant serves, as many copies as traffic needs. It keeps nothing on disk and
//! holds no customer and no training data: every model comes from its participant over mutual TLS
//! (`hearth.v1.ModelSource`), the file of the model in service there (promoted, pinned or rolled back,
//! never a raw commit), and is swapped in whenever the participant's changes, the older one included
//! after a rollback. The recommender stays with the participant (it needs the purchase histories):
//! `POST /v1/recommend` here answers 503 `not_served_here`.
//!
//! A replica that lost its participant keeps serving the models it has; `/readyz` is 200 once it
//! serves at least one family, and `/metrics` says whether the participant answers and what each
//! family serves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hearth_crypto::pki::Role;
use hearth_models::AnyModel;
use hearth_proto::v1;
use hearth_proto::v1::model_source_client::ModelSourceClient;
use hearth_transport::ops::{MetricsText, NotReady, OpsState, RequestMetrics};
use hearth_transport::{ServeOptions, TlsMaterial, TlsProvider};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::{Auditor, Calibrated, Served, Slots};

/// The families a replica serves.
pub const FAMILIES: [&str; 3] = ["intent", crate::slots::FAST_STAGE, "emotion"];

/// Largest model file taken from the participant.
pub const MAX_MODEL_FILE_BYTES: u64 = 1 << 30;

/// What a replica needs to start.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The participant's gRPC address (`host:port`).
    pub participant: String,
    /// The name the participant's certificate carries (a DNS name or an IP address).
    pub participant_name: String,
    /// The replica's certificate (role `inference`, acting for the institution) and key, and the CA.
    pub tls: TlsMaterial,
    /// The TLS implementation.
    pub provider: TlsProvider,
    /// Where apps reach it (HTTPS and gRPC, client certificates required).
    pub listen: SocketAddr,
    /// The operations endpoints (plain HTTP), if any.
    pub ops_listen: Option<SocketAddr>,
    /// How often the participant is asked whether its served models changed.
    pub poll: Duration,
    /// Where the encoder tier's sentence encoder is installed (loaded when an encoder-tier model first
    /// needs it).
    pub encoder_dir: std::path::PathBuf,
    /// The intent cascade's confidence (see [`Slots::cascade_confidence`]); `None` turns it off.
    pub cascade_confidence: Option<f32>,
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The certificate is not an institution's inference certificate.
    #[error("{0}")]
    Certificate(String),
    /// TLS configuration or listening failed.
    #[error(transparent)]
    Transport(#[from] hearth_transport::TransportError),
    /// The listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running replica.
#[derive(Debug)]
pub struct Running {
    /// Where apps reach it.
    pub addr: SocketAddr,
    /// Its operations endpoints.
    pub ops_addr: Option<SocketAddr>,
    /// Ends when the replica stops.
    pub done: tokio::task::JoinHandle<Result<(), hearth_transport::TransportError>>,
}

/// What one family's fetching has seen.
#[derive(Debug, Default, Clone)]
struct FamilyState {
    /// SHA-256 of the model file in service here.
    sha256: String,
    job_id: String,
    version: u64,
    pinned: String,
    /// Fetches by outcome: `new`, `unchanged`, `failed`.
    outcomes: BTreeMap<&'static str, u64>,
    last_error: String,
}

/// The replica's shared state: its slots, what it fetched, whether the participant answers.
#[derive(Debug)]
pub struct ReplicaState {
    slots: Arc<Slots>,
    families: Mutex<BTreeMap<&'static str, FamilyState>>,
    source_up: AtomicBool,
    last_answer: Mutex<Option<Instant>>,
    swaps: AtomicU64,
    requests: Arc<RequestMetrics>,
}

impl ReplicaState {
    fn new(slots: Arc<Slots>, requests: Arc<RequestMetrics>) -> Self {
        Self {
            slots,
            families: Mutex::new(BTreeMap::new()),
            source_up: AtomicBool::new(false),
            last_answer: Mutex::new(None),
            swaps: AtomicU64::new(0),
            requests,
        }
    }

    fn with<R>(&self, family: &'static str, f: impl FnOnce(&mut FamilyState) -> R) -> R {
        let mut all = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        f(all.entry(family).or_default())
    }
}

impl OpsState for ReplicaState {
    fn readiness(&self) -> Result<(), NotReady> {
        let served = self.slots.summary();
        if served.intent.is_some() || served.emotion.is_some() {
            return Ok(());
        }
        let errors: Vec<String> = self
            .families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, s)| !s.last_error.is_empty())
            .map(|(f, s)| format!("{f}: {}", s.last_error))
            .collect();
        Err(NotReady(if errors.is_empty() {
            "no model fetched from the participant yet".into()
        } else {
            format!("no model fetched from the participant yet ({})", errors.join("; "))
        }))
    }

    fn metrics(&self) -> String {
        let mut m = MetricsText::new();
        m.gauge(
            "hearth_replica_source_up",
            "1 while the participant answered the last poll for served models.",
            &[],
            f64::from(u8::from(self.source_up.load(Ordering::Relaxed))),
        );
        if let Some(at) = *self.last_answer.lock().unwrap_or_else(PoisonError::into_inner) {
            m.gauge(
                "hearth_replica_source_last_answer_age_seconds",
                "Seconds since the participant last answered a poll.",
                &[],
                at.elapsed().as_secs_f64(),
            );
        }
        m.counter(
            "hearth_replica_model_swaps_total",
            "Models swapped into service since start.",
            &[],
            self.swaps.load(Ordering::Relaxed) as f64,
        );
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (family, s) in &families {
            if !s.sha256.is_empty() {
                m.gauge(
                    "hearth_replica_model_version",
                    "Version of the model served per family, and the job that trained it.",
                    &[("family", family), ("job", &s.job_id)],
                    s.version as f64,
                );
            }
            for (outcome, n) in &s.outcomes {
                m.counter(
                    "hearth_replica_fetches_total",
                    "Polls of the participant per family, by outcome (new, unchanged, failed).",
                    &[("family", family), ("outcome", outcome)],
                    *n as f64,
                );
            }
        }
        self.requests.render(&mut m);
        m.finish()
    }
}

/// One family's answer from the participant.
enum Fetched {
    Unchanged,
    New { header: v1::ServedModelHeader, bytes: Vec<u8> },
}

/// Why a fetch failed, and whether the participant answered at all (a refusal or a bad reply is an
/// answer; a connection that failed is not).
struct FetchError {
    answered: bool,
    message: String,
}

impl From<tonic::Status> for FetchError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let answered =
            !matches!(s.code(), Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled);
        Self { answered, message: format!("{:?}: {}", s.code(), s.message()) }
    }
}

impl From<String> for FetchError {
    fn from(message: String) -> Self {
        Self { answered: true, message }
    }
}

impl From<&str> for FetchError {
    fn from(message: &str) -> Self {
        Self { answered: true, message: message.to_string() }
    }
}

async fn fetch(
    client: &mut ModelSourceClient<Channel>,
    family: &str,
    have: &str,
) -> Result<Fetched, FetchError> {
    let mut stream = client
        .served_model(v1::ServedModelRequest { family: family.into(), have_sha256: have.into() })
        .await?
        .into_inner();
    let Some(first) = stream.message().await? else {
        return Err("the participant's reply was empty".into());
    };
    let Some(v1::served_model_chunk::Kind::Header(header)) = first.kind else {
        return Err("the participant's reply did not start with a header".into());
    };
    if header.family != family {
        return Err(format!("asked for {family}, the participant sent {:?}", header.family).into());
    }
    if header.unchanged {
        return Ok(Fetched::Unchanged);
    }
    if header.size > MAX_MODEL_FILE_BYTES {
        return Err(format!(
            "the model file is {} bytes, over the limit of {MAX_MODEL_FILE_BYTES}",
            header.size
        )
        .into());
    }
    let mut bytes = Vec::with_capacity(header.size as usize);
    while let Some(chunk) = stream.message().await? {
        match chunk.kind {
            Some(v1::served_model_chunk::Kind::Data(d)) => {
                if (bytes.len() + d.len()) as u64 > header.size {
                    return Err(format!(
                        "the participant sent more than the {} bytes it announced",
                        header.size
                    )
                    .into());
                }
                bytes.extend_from_slice(&d);
            }
            _ => return Err("a second header in the participant's reply".into()),
        }
    }
    if bytes.len() as u64 != header.size {
        return Err(format!(
            "the participant sent {} bytes of the {} it announced",
            bytes.len(),
            header.size
        )
        .into());
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != header.sha256 {
        return Err(format!("the model file's SHA-256 is {sha}, not the {} announced", header.sha256).into());
    }
    Ok(Fetched::New { header, bytes })
}

/// Why a model file the participant sent is not served.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    /// It does not decode as a model file.
    #[error("the {family} model file does not decode: {source}")]
    Decode {
        /// The family asked for.
        family: &'static str,
        /// Why.
        source: hearth_models::file::FileError,
    },
    /// It decodes, as a model of another family.
    #[error("the participant sent a model of another family as its {0} model")]
    OtherFamily(&'static str),
    /// An encoder-tier model, without the encoder installed here.
    #[error(
        "the participant serves an encoder-tier intent model, but this replica cannot load the encoder \
             (install it with `hearth model fetch-encoder`, or point --encoder-dir at it): {0}"
    )]
    Encoder(String),
}

/// The model in `bytes`, ready to serve as `header` says; refused when it is not of `family`.
fn calibrated(
    family: &'static str,
    header: &v1::ServedModelHeader,
    bytes: &[u8],
) -> Result<Calibrated, Unusable> {
    let (model, _) = hearth_models::decode_any_model_file(bytes, MAX_MODEL_FILE_BYTES as usize)
        .map_err(|source| Unusable::Decode { family, source })?;
    match (family, model) {
        ("intent", AnyModel::Intent(m)) => {
            Ok(Calibrated::Intent(Served::new(m, &header.job_id, header.version)))
        }
        (crate::slots::FAST_STAGE, AnyModel::Intent(m)) if !m.spec.features.needs_encoder() => {
            Ok(Calibrated::IntentFast(Served::new(m, &header.job_id, header.version)))
        }
        ("emotion", AnyModel::Emotion(m)) => {
            Ok(Calibrated::Emotion(Served::new(m, &header.job_id, header.version)))
        }
        _ => Err(Unusable::OtherFamily(family)),
    }
}

/// Asks the participant about every family once; returns whether it answered.
async fn poll_once(client: &mut ModelSourceClient<Channel>, state: &ReplicaState) -> bool {
    let mut answered = false;
    for family in FAMILIES {
        let have = state.with(family, |s| s.sha256.clone());
        let outcome = match fetch(client, family, &have).await {
            Ok(Fetched::Unchanged) => Ok(None),
            Ok(Fetched::New { header, bytes }) => {
                let encoder = Arc::clone(&state.slots.encoder);
                let decoded = tokio::task::spawn_blocking(move || {
                    let c = calibrated(family, &header, &bytes)?;
                    // An encoder-tier model this replica cannot run stays out: the one it serves stays.
                    if let Calibrated::Intent(s) = &c {
                        if s.model.spec.features.needs_encoder() {
                            encoder.get().map_err(|e| Unusable::Encoder(e.to_string()))?;
                        }
                    }
                    Ok::<_, Unusable>((c, header))
                })
                .await;
                match decoded {
                    Ok(Ok(done)) => Ok(Some(done)),
                    Ok(Err(unusable)) => Err(FetchError::from(unusable.to_string())),
                    Err(task) => Err(FetchError::from(format!("decoding task: {task}"))),
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(None) => {
                answered = true;
                state.with(family, |s| {
                    *s.outcomes.entry("unchanged").or_default() += 1;
                    s.last_error.clear();
                });
            }
            Ok(Some((model, header))) => {
                answered = true;
                state.slots.replace(model);
                state.swaps.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    family,
                    job = %header.job_id,
                    version = header.version,
                    pinned = %header.pinned,
                    "serving the participant's model"
                );
                state.with(family, |s| {
                    *s.outcomes.entry("new").or_default() += 1;
                    s.last_error.clear();
                    s.sha256 = header.sha256;
                    s.job_id = header.job_id;
                    s.version = header.version;
                    s.pinned = header.pinned;
                });
            }
            Err(e) => {
                // NOT_FOUND (nothing served yet) is an answer too; so is a refusal.
                answered |= e.answered;
                tracing::debug!(family, error = %e.message, "fetching the served model");
                state.with(family, |s| {
                    *s.outcomes.entry("failed").or_default() += 1;
                    s.last_error = e.message;
                });
            }
        }
    }
    answered
}

/// Polls the participant every `poll` until the task is aborted.
async fn follow(config: ReplicaConfig, state: Arc<ReplicaState>) {
    let tls = match hearth_transport::client_config_to_for(config.provider, &config.tls, Role::Participant) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "TLS client configuration");
            return;
        }
    };
    let mut client: Option<ModelSourceClient<Channel>> = None;
    loop {
        if client.is_none() {
            match hearth_transport::connect(&config.participant, &config.participant_name, Arc::clone(&tls))
                .await
            {
                Ok(ch) => client = Some(ModelSourceClient::new(ch).max_decoding_message_size(4 << 20)),
                Err(e) => {
                    tracing::warn!(participant = %config.participant, error = %e, "the participant does not answer");
                    state.source_up.store(false, Ordering::Relaxed);
                }
            }
        }
        if let Some(c) = client.as_mut() {
            let up = poll_once(c, &state).await;
            state.source_up.store(up, Ordering::Relaxed);
            if up {
                *state.last_answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            }
        }
        tokio::time::sleep(config.poll).await;
    }
}

/// Starts a replica: checks its certificate, starts following the participant, serves the endpoints
/// until `shutdown` resolves.
pub async fn start(
    config: ReplicaConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, ReplicaError> {
    let own = hearth_crypto::pki::cert_der_from_pem(&config.tls.cert_pem)
        .and_then(|der| hearth_crypto::pki::identity_from_cert_der(&der))
        .map_err(|e| ReplicaError::Certificate(format!("the replica's certificate: {e}")))?;
    let institution = match (&own.role, &own.institution) {
        (Role::Inference, Some(i)) => i.clone(),
        _ => {
            return Err(ReplicaError::Certificate(format!(
            "the replica's certificate is {own}, not an institution's inference certificate; issue one with \
                 `hearth pki issue --role inference --id ID --institution INSTITUTION --dns NAME`"
        )))
        }
    };
    let slots = Arc::new(Slots {
        encoder: Arc::new(hearth_models::encoder::SharedEncoder::new(config.encoder_dir.clone())),
        cascade_confidence: config.cascade_confidence,
        ..Slots::for_replica()
    });
    let requests = Arc::new(RequestMetrics::default());
    let state = Arc::new(ReplicaState::new(Arc::clone(&slots), Arc::clone(&requests)));
    let ops_addr = match config.ops_listen {
        Some(at) => {
            Some(hearth_transport::ops::spawn_ops(at, Arc::clone(&state) as Arc<dyn OpsState>).await?.0)
        }
        None => None,
    };
    let server_tls = hearth_transport::server_config_for(config.provider, &config.tls)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ReplicaError::Listen { addr: config.listen, source })?;
    let addr =
        listener.local_addr().map_err(|source| ReplicaError::Listen { addr: config.listen, source })?;
    tracing::info!(%addr, %institution, participant = %config.participant, "inference replica listening");
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_service_status("hearth.v1.Inference", tonic_health::ServingStatus::Serving).await;
    let router = crate::router(slots, Auditor { institution, log: None })
        .route_service("/grpc.health.v1.Health/Check", health.clone())
        .route_service("/grpc.health.v1.Health/Watch", health)
        .route_layer(axum::middleware::from_fn_with_state(requests, hearth_transport::ops::track))
        .fallback(crate::no_route);
    let follower = tokio::spawn(follow(config, state));
    let done = tokio::spawn(async move {
        let r =
            hearth_transport::serve(listener, server_tls, router, ServeOptions::default(), shutdown).await;
        follower.abort();
        r
    });
    Ok(Running { addr, ops_addr, done })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::v1::model_source_server::{ModelSource, ModelSourceServer};

    /// A participant that answers every fetch with `chunks`.
    struct Hostile(Vec<v1::ServedModelChunk>);

    #[tonic::async_trait]
    impl ModelSource for Hostile {
        type ServedModelStream =
            tokio_stream::Iter<std::vec::IntoIter<Result<v1::ServedModelChunk, tonic::Status>>>;

        async fn served_model(
            &self,
            _: tonic::Request<v1::ServedModelRequest>,
        ) -> Result<tonic::Response<Self::ServedModelStream>, tonic::Status> {
            let replies: Vec<_> = self.0.iter().cloned().map(Ok).collect();
            Ok(tonic::Response::new(tokio_stream::iter(replies)))
        }
    }

    fn header(family: &str, size: u64, sha256: &str) -> v1::ServedModelChunk {
        v1::ServedModelChunk {
            kind: Some(v1::served_model_chunk::Kind::Header(v1::ServedModelHeader {
                family: family.into(),
                job_id: "j".into(),
                version: 1,
                sha256: sha256.into(),
                size,
                unchanged: false,
                pinned: String::new(),
            })),
        }
    }

    fn data(bytes: &[u8]) -> v1::ServedModelChunk {
        v1::ServedModelChunk { kind: Some(v1::served_model_chunk::Kind::Data(bytes.to_vec().into())) }
    }

    async fn fetch_from(chunks: Vec<v1::ServedModelChunk>) -> Result<Fetched, FetchError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ModelSourceServer::new(Hostile(chunks)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        fetch(&mut ModelSourceClient::new(channel), "intent", "").await
    }

    #[tokio::test]
    async fn a_participant_that_lies_about_its_model_file_is_refused_by_name() {
        let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
        let cases: Vec<(Vec<v1::ServedModelChunk>, &str)> = vec![
            (vec![], "empty"),
            (vec![data(b"x")], "did not start with a header"),
            (vec![header("emotion", 1, &sha(b"x")), data(b"x")], "the participant sent \"emotion\""),
            (vec![header("intent", MAX_MODEL_FILE_BYTES + 1, "")], "over the limit"),
            (vec![header("intent", 1, &sha(b"x")), data(b"xy")], "more than the 1 bytes"),
            (vec![header("intent", 3, &sha(b"xyz")), data(b"xy")], "sent 2 bytes of the 3"),
            (vec![header("intent", 1, &sha(b"y")), data(b"x")], "SHA-256"),
            (vec![header("intent", 1, &sha(b"x")), header("intent", 1, &sha(b"x"))], "a second header"),
        ];
        for (chunks, says) in cases {
            match fetch_from(chunks).await {
                Ok(_) => panic!("accepted; expected {says:?}"),
                Err(e) => {
                    assert!(e.answered, "{}", e.message);
                    assert!(e.message.contains(says), "{} (expected {says:?})", e.message);
                }
            }
        }
        // A file that checks out but is not a model: refused when decoded, never served.
        let bytes = b"not a model file".to_vec();
        let Ok(Fetched::New { header, bytes }) =
            fetch_from(vec![header("intent", bytes.len() as u64, &sha(&bytes)), data(&bytes)]).await
        else {
            panic!("a consistent reply is taken")
        };
        let e = calibrated("intent", &header, &bytes).unwrap_err().to_string();
        assert!(e.contains("does not decode"), "{e}");
    }
}
