//! The participant's side of the round protocol: register, subscribe to announcements, and for each round
//! it is invited to: download the global model, train on local data, upload the delta. After each commit it
//! downloads the new global model, calibrates it on local data and swaps it into the inference endpoint.
//! None of this knows a model family: the spec a job names picks the family's local data and calibration
//! (`families`).
//!
//! Local data never leaves this module except as the model delta of a round.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use hearth_audit::{Action, Event, Outcome};
use hearth_crypto::digest::{content_digest, ContentDigest};
use hearth_models::{LocalData, ModelCard, ModelSpec, TrainParams};
use hearth_node::revocation::{Offered, RevocationState};
use hearth_proto::v1::coordinator_client::CoordinatorClient;
use hearth_proto::v1::{self, announcement, model_chunk, update_chunk};
use hearth_proto::{MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use tokio::sync::{mpsc, Mutex};
use tonic::transport::Channel;

use hearth_inference::FAST_STAGE;
use hearth_inference::{Calibrated, ModelSlots};

use crate::families::{fxhash, Global, Local, Promotion};
use crate::privacy::{self, LocalPrivacy};
use crate::secagg::{self, RelayRx, SecAggIdentity, RELAY_QUEUE};
use crate::store::Store;

/// A downloaded global model.
#[derive(Debug, Clone)]
struct Downloaded {
    job_id: String,
    version: u64,
    spec_json: Bytes,
    spec: Arc<ModelSpec>,
    params: Arc<Vec<f32>>,
    /// The coordinator's model card (JSON), empty if it sent none.
    card_json: Bytes,
    escalation_target_recall: f32,
}

/// State of the federation worker, serialised by one async mutex: one download or training at a time.
#[derive(Debug, Default)]
struct Worker {
    last: Option<Downloaded>,
    /// Per job: the model spec its rounds announced (the job's declared model). A download of that job
    /// must carry exactly this spec, so the coordinator cannot make this participant allocate for a model
    /// larger than the one the job declared.
    declared: HashMap<String, Bytes>,
    /// Per family: the encoded training data and the spec it was encoded for, reused every round.
    encoded: HashMap<&'static str, (Bytes, Arc<LocalData>)>,
}

/// Most parameters a downloaded model may have when this participant has not seen the job's rounds
/// declare its spec (a job that finished while it was down): 64 Mi parameters, 256 MiB.
const MAX_UNDECLARED_PARAMS: usize = 1 << 26;
/// Most jobs whose declared spec is remembered; past it the oldest are forgotten (and bounded by
/// [`MAX_UNDECLARED_PARAMS`] again).
const MAX_DECLARED_JOBS: usize = 256;

/// Checks a model download's header before anything is allocated for it: the spec must be the one the
/// job's rounds declared (`declared`), or, for a job this participant never saw a round of, the size at
/// most [`MAX_UNDECLARED_PARAMS`].
fn check_download_size(job: &str, declared: Option<&[u8]>, spec_json: &[u8], n: usize) -> anyhow::Result<()> {
    match declared {
        Some(declared) if declared != spec_json => bail!(
            "the coordinator sent job {job}'s model with another spec than its rounds declared; refused"
        ),
        None if n > MAX_UNDECLARED_PARAMS => bail!(
            "the coordinator sent a model of {n} parameters for job {job}, whose rounds this participant has \
             not seen; more than the {MAX_UNDECLARED_PARAMS} it accepts without a declared spec"
        ),
        _ => Ok(()),
    }
}

/// The sending half of a round's relay queue: (phase, payload).
type RelayTx = mpsc::Sender<(u32, Bytes)>;

/// Everything the federation task needs.
#[derive(Debug)]
pub(crate) struct Federation {
    /// Our identity as the coordinator derived it from our certificate, once registered.
    id: std::sync::OnceLock<String>,
    pub(crate) store: Arc<Store>,
    pub(crate) slots: ModelSlots,
    pub(crate) coordinator: String,
    pub(crate) coordinator_name: String,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) audit: hearth_node::audit::AuditLog,
    /// The institution's data per family, read once.
    local: Arc<Local>,
    /// Where a copy of each served model file is written (`hearth model show` reads them).
    models_dir: PathBuf,
    worker: Mutex<Worker>,
    /// Keys for secure aggregation; `None` when this node has no protocol signing key (it then refuses
    /// secure rounds with a clear log line).
    secagg: Option<SecAggIdentity>,
    /// Where relayed secure-aggregation messages go, per (job, round) in progress, with the instance
    /// whose work reads them (0: any).
    relays: std::sync::Mutex<HashMap<(String, u64), (u64, RelayTx)>>,
    /// The institution's signed policy and its own ledger of releases.
    pub(crate) privacy: Arc<LocalPrivacy>,
    /// Jobs announced with a privacy section since this process started (the ledger knows those that
    /// released before).
    dp_jobs: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The newest revocation list signed by the CA this participant has seen (its file, or relayed).
    revocations: Arc<RevocationState>,
    /// Whether an announcement stream from the coordinator is open (`/readyz`).
    connected: std::sync::atomic::AtomicBool,
}

/// How to reach the coordinator.
#[derive(Debug)]
pub(crate) struct CoordinatorLink {
    /// `host:port`.
    pub(crate) addr: String,
    /// The name its certificate must carry.
    pub(crate) name: String,
    /// Our TLS client configuration (our certificate, the consortium CA).
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

impl Federation {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<Store>,
        local: Arc<Local>,
        slots: ModelSlots,
        link: CoordinatorLink,
        models_dir: PathBuf,
        secagg: Option<SecAggIdentity>,
        privacy: Arc<LocalPrivacy>,
        audit: hearth_node::audit::AuditLog,
        revocations: Arc<RevocationState>,
    ) -> Self {
        Self {
            id: std::sync::OnceLock::new(),
            store,
            slots,
            coordinator: link.addr,
            coordinator_name: link.name,
            tls: link.tls,
            audit,
            local,
            models_dir,
            worker: Mutex::new(Worker::default()),
            secagg,
            relays: std::sync::Mutex::new(HashMap::new()),
            privacy,
            dp_jobs: std::sync::Mutex::new(Default::default()),
            revocations,
            connected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this participant has an open announcement stream from its coordinator.
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the coordinator for its revocation list and takes it when the CA signed it and it is newer
    /// than the one held (audited either way it changes something). A coordinator that cannot answer
    /// leaves the held list in force.
    async fn refresh_revocations(&self, client: &CoordinatorClient<Channel>) {
        let reply = match client.clone().get_revocations(v1::RevocationsRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::debug!(error = %e, "the coordinator gave no revocation list");
                return;
            }
        };
        if reply.crl_der.is_empty() {
            return;
        }
        match self.revocations.offer_der(&reply.crl_der) {
            Ok(Offered::Adopted { number, revoked }) => {
                tracing::info!(number, revoked, "revocation list taken from the coordinator");
                self.audit.record_event(
                    Event::new("system", Action::RevocationsUpdate, Outcome::Ok)
                        .object(number.to_string())
                        .detail(format!("relayed by the coordinator: {revoked} certificates revoked")),
                );
            }
            Ok(Offered::NotNewer { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the coordinator relayed a revocation list that does not verify");
                self.audit.record(
                    "system",
                    Action::RevocationsUpdate,
                    Outcome::Refused,
                    &format!("relayed by the coordinator: {e}"),
                );
            }
        }
    }

    /// Runs sessions with the coordinator until the process stops, reconnecting with backoff.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let ended = Arc::clone(&self).session().await;
            self.connected.store(false, std::sync::atomic::Ordering::Relaxed);
            match ended {
                Ok(()) => {
                    tracing::info!("coordinator closed the announcement stream; reconnecting");
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "coordinator session failed");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn client(&self) -> anyhow::Result<CoordinatorClient<Channel>> {
        let channel =
            hearth_transport::connect(&self.coordinator, &self.coordinator_name, Arc::clone(&self.tls))
                .await
                .with_context(|| format!("connecting to coordinator {}", self.coordinator))?;
        Ok(CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    async fn session(self: Arc<Self>) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let reply = client
            .register(v1::RegisterRequest {
                protocol_version: PROTOCOL_VERSION.into(),
                software_version: env!("CARGO_PKG_VERSION").into(),
                // Only jobs of the families we hold data for invite us.
                families: Some(v1::HeldFamilies { names: self.local.held_families()? }),
            })
            .await
            .context("registering")?
            .into_inner();
        tracing::info!(participant = %reply.participant_id, "registered with the coordinator");
        self.refresh_revocations(&client).await;
        let _ = self.id.set(reply.participant_id);
        let mut stream = client.subscribe(v1::SubscribeRequest {}).await.context("subscribing")?.into_inner();
        self.connected.store(true, std::sync::atomic::Ordering::Relaxed);
        while let Some(a) = stream.message().await.context("reading announcements")? {
            match a.kind {
                Some(announcement::Kind::RoundOpen(open)) => {
                    if open.privacy.is_some() {
                        lock(&self.dp_jobs).insert(open.job_id.clone());
                    }
                    let me = Arc::clone(&self);
                    let client = client.clone();
                    // Register the relay queue before the next announcement is read, so no relayed
                    // message of this round can arrive before it.
                    // A new instance of the round (a retry) takes the queue over, with its instance: relays
                    // naming another (the attempt given up) are dropped, not handed to this one's work.
                    let relays = open.secagg.as_ref().map(|s| {
                        let (tx, rx) = mpsc::channel(RELAY_QUEUE);
                        let mine = tx.downgrade();
                        lock(&self.relays).insert((open.job_id.clone(), open.round), (s.instance, tx));
                        (mine, rx)
                    });
                    // What the round's work logs carries its span (`--log-format json`: "span").
                    let span = tracing::info_span!("round", job = %open.job_id, round = open.round);
                    tokio::spawn(tracing::Instrument::instrument(
                        async move {
                            let (job, round, secure) = (open.job_id.clone(), open.round, relays.is_some());
                            let instance = open.secagg.as_ref().map_or(0, |s| s.instance);
                            let (result, mine) = match relays {
                                Some((tx, rx)) => {
                                    (Arc::clone(&me).secure_round(client.clone(), open, rx).await, Some(tx))
                                }
                                None => (Arc::clone(&me).round(client.clone(), open).await, None),
                            };
                            // Only this instance's queue (still there only while the map holds it): a later
                            // instance's stays.
                            // Superseded: a later instance of the round (after a coordinator restart, say)
                            // took the queue over; this one's failure is not that instance's business.
                            let mut superseded = mine.is_some();
                            if let Some(mine) = mine.and_then(|w| w.upgrade()) {
                                let mut relays = lock(&me.relays);
                                if relays
                                    .get(&(job.clone(), round))
                                    .is_some_and(|(_, q)| q.same_channel(&mine))
                                {
                                    relays.remove(&(job.clone(), round));
                                    superseded = false;
                                }
                            }
                            if let Err(e) = result {
                                tracing::warn!(job, round, error = format!("{e:#}"), "round work failed");
                                if secure {
                                    // A relayed message that fails the protocol's checks is the coordinator's
                                    // (or a peer's) deviation: on record, with what it was. (A round refused
                                    // before joining is already on record as round.join.)
                                    let deviation = e.chain().any(|c| {
                                        c.downcast_ref::<hearth_secagg::SecAggError>().is_some_and(|e| {
                                            !matches!(e, hearth_secagg::SecAggError::RoundRefused(_))
                                        })
                                    });
                                    if deviation {
                                        me.audit.record(
                                            "system",
                                            Action::RoundAbandon,
                                            Outcome::Refused,
                                            &format!("job {job} round {round}: {e:#}"),
                                        );
                                    }
                                    if !superseded {
                                        decline(client, &job, round, instance, &e).await;
                                    }
                                }
                            }
                        },
                        span,
                    ));
                }
                Some(announcement::Kind::Query(q)) => {
                    let (tx, rx) = mpsc::channel(RELAY_QUEUE);
                    let instance = q.secagg.as_ref().map_or(0, |s| s.instance);
                    lock(&self.relays).insert((q.query_id.clone(), 1), (instance, tx));
                    let me = Arc::clone(&self);
                    let client = client.clone();
                    tokio::spawn(async move {
                        let id = q.query_id.clone();
                        let result = me.answer_query(client.clone(), &q, rx).await;
                        lock(&me.relays).remove(&(id.clone(), 1));
                        match result {
                            Ok(bins) => me.audit.record(
                                "system",
                                Action::QueryAnswer,
                                Outcome::Ok,
                                &format!("query {id}: {bins} noisy counts sent masked"),
                            ),
                            Err(e) => {
                                tracing::warn!(query = id, error = format!("{e:#}"), "query not answered");
                                decline(client, &id, 1, 0, &e).await;
                                me.audit.record(
                                    "system",
                                    Action::QueryAnswer,
                                    Outcome::Refused,
                                    &format!("query {id}: {e:#}"),
                                );
                            }
                        }
                    });
                }
                Some(announcement::Kind::Eval(e)) => {
                    let key = (hearth_proto::eval_key(&e.job_id), e.version);
                    let (tx, rx) = mpsc::channel(RELAY_QUEUE);
                    let instance = e.secagg.as_ref().map_or(0, |s| s.instance);
                    lock(&self.relays).insert(key.clone(), (instance, tx));
                    let me = Arc::clone(&self);
                    let client = client.clone();
                    tokio::spawn(async move {
                        let result = me.answer_eval(client.clone(), &e, rx).await;
                        lock(&me.relays).remove(&key);
                        let what = format!("job {} version {}", e.job_id, e.version);
                        match result {
                            Ok(n) => me.audit.record(
                                "system",
                                Action::ModelEvaluate,
                                Outcome::Ok,
                                &format!("{what}: counts over {n} held-out examples sent masked"),
                            ),
                            Err(err) => {
                                tracing::warn!(
                                    job = e.job_id,
                                    version = e.version,
                                    error = format!("{err:#}"),
                                    "evaluation not answered"
                                );
                                decline(client, &key.0, key.1, 0, &err).await;
                                me.audit.record(
                                    "system",
                                    Action::ModelEvaluate,
                                    Outcome::Refused,
                                    &format!("{what}: {err:#}"),
                                );
                            }
                        }
                    });
                }
                Some(announcement::Kind::Secagg(relay)) => {
                    let key = (relay.job_id.clone(), relay.round);
                    let tx = lock(&self.relays).get(&key).cloned();
                    match tx {
                        // Another instance's message (an attempt given up, a coordinator's before it
                        // restarted) would fail this instance's checks as a deviation: it is not handed over.
                        Some((instance, _))
                            if instance != 0 && relay.instance != 0 && relay.instance != instance =>
                        {
                            tracing::debug!(
                                job = relay.job_id,
                                round = relay.round,
                                relayed = relay.instance,
                                running = instance,
                                "relay for another instance of the round; dropped"
                            )
                        }
                        Some((_, tx)) => {
                            if tx.try_send((relay.phase, relay.payload)).is_err() {
                                tracing::warn!(
                                    job = relay.job_id,
                                    round = relay.round,
                                    "relay queue full or round over; message dropped"
                                );
                            }
                        }
                        None => tracing::debug!(
                            job = relay.job_id,
                            round = relay.round,
                            "relay for a round not in progress"
                        ),
                    }
                }
                Some(announcement::Kind::RoundCommitted(c)) => {
                    // A job's model goes into service when the job has finished, not round by round: a
                    // job that fails later never replaces the model served.
                    tracing::debug!(job = c.job_id, version = c.version, "round committed");
                }
                Some(announcement::Kind::JobFinished(f)) if f.failed => {
                    tracing::warn!(job = f.job_id, reason = f.reason, "job failed; its model is not served");
                    self.audit.record(
                        "system",
                        Action::ModelInstall,
                        Outcome::Refused,
                        &format!(
                            "job {} failed ({}): its partial model (version {}) is not served; the model in service \
                             stays",
                            f.job_id, f.reason, f.final_version
                        ),
                    );
                    self.settle_job(&f.job_id).await;
                }
                Some(announcement::Kind::JobFinished(f)) => {
                    tracing::info!(job = f.job_id, version = f.final_version, "job finished");
                    let me = Arc::clone(&self);
                    let (client, job, version) = (client.clone(), f.job_id.clone(), f.final_version);
                    // An older coordinator sends no tolerance: the default point.
                    let tolerance =
                        if f.promotion_tolerance_points == 0.0 { 1.0 } else { f.promotion_tolerance_points };
                    tokio::spawn(async move {
                        if let Err(e) = me.refresh(client, &job, version, tolerance).await {
                            tracing::warn!(job, version, error = format!("{e:#}"), "model refresh failed");
                        }
                    });
                    self.settle_job(&f.job_id).await;
                }
                Some(announcement::Kind::Heartbeat(_)) | None => {}
            }
        }
        Ok(())
    }

    /// What a DP job reserved but never released returns to the institution's budget.
    async fn settle_job(&self, job: &str) {
        let privacy = Arc::clone(&self.privacy);
        let id = job.to_string();
        let settled = tokio::task::spawn_blocking(move || privacy.finish_job(&id)).await;
        if let Ok(Err(e)) = settled {
            tracing::warn!(job, error = format!("{e:#}"), "settling the job's local charge failed");
        }
    }

    /// Downloads `version` of `job` (0: latest), reusing the last download when it matches.
    ///
    /// The size is bounded before anything is allocated: by the spec the job's rounds declared when this
    /// participant has seen one (the header must carry exactly that spec), else by
    /// [`MAX_UNDECLARED_PARAMS`]; and the parameters grow only as data arrives.
    async fn download(
        &self,
        worker: &mut Worker,
        client: &mut CoordinatorClient<Channel>,
        job: &str,
        version: u64,
    ) -> anyhow::Result<Downloaded> {
        if let Some(last) = worker.last.as_ref().filter(|d| d.job_id == job && d.version == version) {
            return Ok(last.clone());
        }
        let mut stream = client
            .download_model(v1::ModelRequest { job_id: job.into(), version, latest_job: false })
            .await
            .with_context(|| format!("downloading version {version} of job {job}"))?
            .into_inner();
        let header = match stream.message().await?.and_then(|c| c.kind) {
            Some(model_chunk::Kind::Header(h)) => h,
            _ => bail!("model stream did not start with a header"),
        };
        let n = usize::try_from(header.num_params).context("model too large")?;
        check_download_size(job, worker.declared.get(job).map(|b| &b[..]), &header.model_spec_json, n)?;
        let spec = ModelSpec::from_json(&header.model_spec_json).context("model spec from coordinator")?;
        if spec.num_params() != n {
            bail!("model header says {n} parameters, its spec {}", spec.num_params());
        }
        // Grows with what arrives (a stream cut short never cost the full size).
        let mut params = Vec::with_capacity(n.min(1 << 20));
        let mut hasher = ContentDigest::new();
        while let Some(chunk) = stream.message().await? {
            let Some(model_chunk::Kind::Data(data)) = chunk.kind else {
                bail!("unexpected header mid-stream")
            };
            if data.len() % 4 != 0 || params.len() + data.len() / 4 > n {
                bail!("model stream has a malformed or oversized chunk");
            }
            hasher.update(&data);
            params.extend(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        }
        if params.len() != n {
            bail!("model stream ended after {} of {n} parameters", params.len());
        }
        if !hasher.matches(&header.sha256) {
            bail!("model checksum mismatch");
        }
        let d = Downloaded {
            job_id: header.job_id,
            version: header.version,
            spec_json: header.model_spec_json,
            spec: Arc::new(spec),
            params: Arc::new(params),
            card_json: header.model_card_json,
            escalation_target_recall: header.escalation_target_recall,
        };
        worker.last = Some(d.clone());
        Ok(d)
    }

    /// A plain round: train, then upload the delta.
    async fn round(
        self: Arc<Self>,
        mut client: CoordinatorClient<Channel>,
        open: v1::RoundOpen,
    ) -> anyhow::Result<()> {
        let (delta, stats) = self.train(&mut client, &open).await?;
        let mut raw = Vec::with_capacity(delta.len() * 4);
        for d in &delta {
            raw.extend_from_slice(&d.to_le_bytes());
        }
        let raw = Bytes::from(raw);
        let header = v1::UpdateHeader {
            job_id: open.job_id.clone(),
            round: open.round,
            base_version: open.base_version,
            num_examples: stats.examples as u64,
            train_loss: stats.mean_loss,
            num_params: delta.len() as u64,
            nonce: rand::random::<[u8; 16]>().to_vec().into(),
            sha256: content_digest(&raw).to_vec().into(),
        };
        let chunks = (0..raw.len()).step_by(MAX_CHUNK_BYTES).map(move |s| v1::UpdateChunk {
            kind: Some(update_chunk::Kind::Data(raw.slice(s..(s + MAX_CHUNK_BYTES).min(raw.len())))),
        });
        let first = v1::UpdateChunk { kind: Some(update_chunk::Kind::Header(header)) };
        let stream = futures::stream::iter(std::iter::once(first).chain(chunks));
        client.upload_update(stream).await.context("uploading update")?;
        self.audit.record(
            "system",
            Action::UpdateUpload,
            Outcome::Ok,
            &format!(
                "job {} round {}: {} examples, in the clear (plain round)",
                open.job_id, open.round, stats.examples
            ),
        );
        tracing::info!(
            job = open.job_id,
            round = open.round,
            loss = stats.mean_loss,
            examples = stats.examples,
            "update uploaded"
        );
        Ok(())
    }

    /// A round under secure aggregation: the protocol's key exchange runs while the model trains; the
    /// update leaves this node only masked.
    async fn secure_round(
        self: Arc<Self>,
        client: CoordinatorClient<Channel>,
        open: v1::RoundOpen,
        relays: RelayRx,
    ) -> anyhow::Result<()> {
        // The roster is checked against the newest list the coordinator has (and the CA signed).
        self.refresh_revocations(&client).await;
        if let Some(privacy) = open.privacy.clone() {
            return self.dp_round(client, open, privacy, relays).await;
        }
        let who = self.secagg.as_ref().context(
            "invited to a secure-aggregation round but this participant has no protocol signing key",
        )?;
        let setup = open.secagg.as_ref().context("round has no secure-aggregation setup")?;
        let at = secagg::RoundRef::of(&open);
        let family = ModelSpec::from_json(&open.model_spec_json)
            .map(|s| s.family().to_string())
            .context("the round's model spec")?;
        let inv = self.admitted(&at, || {
            let len = open.num_params.checked_add(2).context("model too large")?;
            let floor = self.privacy.admit_round(
                &at.job_id,
                at.round,
                setup.instance,
                &family,
                privacy::Kind::Secure,
                None,
            )?;
            secagg::accept(who, &at, len, setup, floor)
        })?;
        let mut train_client = client.clone();
        let encoder = inv.clone();
        let input = async {
            let (delta, stats) = self.train(&mut train_client, &open).await?;
            // Quantise while the other participants are still sharing keys: it needs only the update.
            let _cpu = secagg::cpu_slot().await?;
            tokio::task::spawn_blocking(move || {
                encoder.encode_update(&delta, stats.examples, stats.mean_loss)
            })
            .await?
        };
        let release = self.release(move |p| p.release_round(&at.job_id, at.round, &family, None), false);
        secagg::run_client(client, who, &secagg::RoundRef::of(&open), inv, relays, input, release, None)
            .await?;
        self.audit.record(
            "system",
            Action::UpdateUpload,
            Outcome::Ok,
            &format!("job {} round {}: masked update (secure aggregation)", open.job_id, open.round),
        );
        tracing::info!(
            job = open.job_id,
            round = open.round,
            "masked update sent; secure-aggregation round done"
        );
        Ok(())
    }

    /// A differentially private round (one DP-SGD step): the sum of this institution's per-record clipped
    /// gradients at the round's global model over a Poisson sample, quantised on the round's grid, plus
    /// this participant's share of discrete Gaussian noise, masked. No count, no loss, no model leaves.
    /// Everything the noise depends on is recomputed here from public parameters; a round announcing a
    /// quantiser that does not match them is refused.
    async fn dp_round(
        self: Arc<Self>,
        client: CoordinatorClient<Channel>,
        open: v1::RoundOpen,
        privacy: v1::PrivacySpec,
        relays: RelayRx,
    ) -> anyhow::Result<()> {
        use hearth_models::{clipped_gradient_sum, noise_share, DpConfig, DpParams, Grid, RoundShape};
        let who = self.secagg.as_ref().context(
            "invited to a differentially private round but this participant has no protocol signing key",
        )?;
        let setup =
            open.secagg.as_ref().context("a differentially private round must be securely aggregated")?;
        let at = secagg::RoundRef::of(&open);
        // Every check before any work, each refusal audited (`round.join`) and told to the coordinator.
        let (inv, config, mechanism, charge) = self.admitted(&at, || {
            let config = DpConfig::new(DpParams {
                clip_norm: privacy.clipping_norm,
                sampling_rate: privacy.sampling_rate,
                noise_multiplier: privacy.noise_multiplier,
                rounds: open.round.max(1),
                min_survivors: privacy.min_survivors,
                bias_scale: if privacy.bias_scale == 0.0 { 1.0 } else { privacy.bias_scale },
            })
            .context("the round's privacy parameters")?;
            if privacy.privacy_unit != "record" {
                bail!("privacy unit {:?}: this participant clips per record only", privacy.privacy_unit);
            }
            let bits = u8::try_from(setup.modulus_bits).context("modulus bits")?;
            let expected_clip = RoundShape::for_job(
                privacy.clipping_norm,
                privacy.declared_records,
                1,
                open.num_params,
                bits,
            )
            .quantizer_clip;
            if (setup.clip - expected_clip).abs() > 1e-9 * expected_clip {
                bail!(
                    "round {} announces a quantiser clip of {}, not clipping_norm x declared_records = \
                     {expected_clip}",
                    open.round,
                    setup.clip
                );
            }
            // What the job costs this institution, computed here from the announced public parameters.
            let charge = privacy::training_charge(&privacy, open.num_params, bits, setup.min_survivors)
                .context("the job's privacy charge")?;
            let policy_floor = self.privacy.admit_round(
                &at.job_id,
                at.round,
                setup.instance,
                &privacy.family,
                privacy::Kind::Private,
                Some(&charge),
            )?;
            // The noise shares are calibrated for `min_survivors`: a smaller surviving sum is too little noise.
            let inv =
                secagg::accept(who, &at, open.num_params, setup, policy_floor.max(privacy.min_survivors))?;
            if privacy.max_cohort > 0 && inv.cohort() > privacy.max_cohort {
                bail!(
                    "the round has {} members; the job's noise and charge were computed for at most {}",
                    inv.cohort(),
                    privacy.max_cohort
                );
            }
            let headroom = config.noise_headroom(setup.clip, inv.cohort(), open.num_params, bits)?;
            if headroom != setup.noise_headroom {
                bail!(
                    "round {} announces a noise headroom of {} levels; its parameters give {headroom}",
                    open.round,
                    setup.noise_headroom
                );
            }
            let grid =
                Grid { scale: inv.quantizer().scale(), dimension: open.num_params, cohort: inv.cohort() };
            let mechanism = config.share_mechanism(&grid).context("the noise share")?;
            Ok((inv, config, mechanism, charge))
        })?;
        let mut fetch_client = client.clone();
        let encoder = inv.clone();
        let me = Arc::clone(&self);
        let round = open.round;
        let input = async move {
            let (base, encoded) = me.local_inputs(&mut fetch_client, &open).await?;
            let ModelSpec::Intent(spec) = base.spec.as_ref() else {
                bail!("differentially private training covers intent models, not {}", base.spec.family());
            };
            if !matches!(encoded.as_ref(), LocalData::Intent(_)) {
                bail!("local data of another family");
            }
            let (spec, set, params) = (spec.clone(), Arc::clone(&encoded), Arc::clone(&base.params));
            let _cpu = secagg::cpu_slot().await?;
            tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u32>> {
                let LocalData::Intent(set) = set.as_ref() else { bail!("local data of another family") };
                // The sample comes from a generator seeded by the operating system, never from a fixed
                // seed; the noise from the sampler's own system randomness.
                let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::from_os_rng();
                let sum = clipped_gradient_sum(&spec, &params, set, &config, &mut rng)?;
                tracing::debug!(
                    round,
                    sampled = sum.sampled,
                    clipped = sum.clipped,
                    "clipped gradient sum (local only)"
                );
                let noise = noise_share(&mechanism, sum.values.len())?;
                encoder.encode_noisy(&sum.values, &noise)
            })
            .await?
        };
        let (job, family) = (at.job_id.clone(), privacy.family.clone());
        let release = self.release(move |p| p.release_round(&job, round, &family, Some(charge)), true);
        secagg::run_client(client, who, &at, inv, relays, input, release, None).await?;
        self.audit.record(
            "system",
            Action::UpdateUpload,
            Outcome::Ok,
            &format!(
                "job {} round {round}: masked DP update (clipped gradient sum with a discrete Gaussian noise share)",
                at.job_id
            ),
        );
        tracing::info!(job = at.job_id, round, "masked DP update sent");
        Ok(())
    }

    /// The round's base model (downloaded) and the local data encoded for its spec (cached per family).
    async fn local_inputs(
        &self,
        client: &mut CoordinatorClient<Channel>,
        open: &v1::RoundOpen,
    ) -> anyhow::Result<(Downloaded, Arc<LocalData>)> {
        let mut worker = self.worker.lock().await;
        if now_ms() > open.deadline_unix_ms {
            bail!("round {} closed before work could start", open.round);
        }
        if worker.declared.len() >= MAX_DECLARED_JOBS && !worker.declared.contains_key(&open.job_id) {
            worker.declared.clear();
        }
        worker.declared.insert(open.job_id.clone(), Bytes::copy_from_slice(&open.model_spec_json));
        let base = self.download(&mut worker, client, &open.job_id, open.base_version).await?;
        let family = base.spec.family();
        let encoded = match worker.encoded.get(family).filter(|(s, _)| *s == base.spec_json) {
            Some((_, e)) => Arc::clone(e),
            None => {
                let (spec2, local) = (Arc::clone(&base.spec), Arc::clone(&self.local));
                let e = Arc::new(tokio::task::spawn_blocking(move || local.encode(&spec2)).await??);
                worker.encoded.insert(family, (base.spec_json.clone(), Arc::clone(&e)));
                e
            }
        };
        Ok((base, encoded))
    }

    /// Answers an analytics query from this institution's records of the statistic's kind.
    async fn answer_query(
        &self,
        client: CoordinatorClient<Channel>,
        q: &v1::QueryOpen,
        relays: RelayRx,
    ) -> anyhow::Result<usize> {
        self.refresh_revocations(&client).await;
        use crate::query::Records;
        let who = self.secagg.as_ref().context("this participant has no protocol signing key")?;
        let store = Arc::clone(&self.store);
        let statistic = q.statistic.clone();
        let records = tokio::task::spawn_blocking(move || -> anyhow::Result<Records> {
            Ok(match statistic.as_str() {
                "emotion" => Records::Labels(
                    store
                        .emotion_examples()
                        .context("reading local emotion examples")?
                        .into_iter()
                        .filter_map(|e| e.labels.into_iter().next())
                        .collect(),
                ),
                // Purchases only: a cancellation is not spend (and is netted nowhere here).
                "spend" => Records::Values(
                    store
                        .transactions()
                        .context("reading local transactions")?
                        .into_iter()
                        .filter(|t| t.quantity > 0 && !t.invoice.starts_with(['C', 'c']))
                        .map(|t| t.quantity as f64 * t.unit_price)
                        .collect(),
                ),
                _ => Records::Labels(
                    store
                        .examples()
                        .context("reading local examples")?
                        .into_iter()
                        .map(|e| e.label)
                        .collect(),
                ),
            })
        })
        .await??;
        crate::query::answer(self, client, who, q, records, relays).await
    }

    /// Evaluates the announced version of a job's model on this institution's held-out data and sends the
    /// counts masked (federated evaluation), under the same admission as a non-private secure round (the
    /// institution's policy, if any, must list the intent family; one masked input per version). Refused
    /// for a job this participant trained under DP. Returns the examples counted.
    async fn answer_eval(
        &self,
        mut client: CoordinatorClient<Channel>,
        e: &v1::EvalOpen,
        relays: RelayRx,
    ) -> anyhow::Result<u64> {
        self.refresh_revocations(&client).await;
        let who = self.secagg.as_ref().context("this participant has no protocol signing key")?;
        let setup = e.secagg.as_ref().context("the evaluation has no secure-aggregation setup")?;
        // Exact counts are no DP release: a job this participant trained under DP is never evaluated so.
        if lock(&self.dp_jobs).contains(&e.job_id) || self.privacy.released_for(&e.job_id) {
            bail!(
                "job {} is differentially private: an evaluation of its model would release exact counts of \
                 this institution's held-out data",
                e.job_id
            );
        }
        let at = secagg::RoundRef {
            job_id: hearth_proto::eval_key(&e.job_id),
            round: e.version,
            deadline_unix_ms: e.deadline_unix_ms,
        };
        let inv = self.admitted(&at, || {
            let floor = self.privacy.admit_round(
                &at.job_id,
                at.round,
                setup.instance,
                &e.family,
                privacy::Kind::Secure,
                None,
            )?;
            secagg::accept(who, &at, e.bins.len() as u64, setup, floor)
        })?;
        let model = {
            let mut worker = self.worker.lock().await;
            self.download(&mut worker, &mut client, &e.job_id, e.version).await?
        };
        if model.spec.family() != e.family {
            bail!(
                "the evaluation announces a {} model; version {} of job {} is a {} model",
                e.family,
                e.version,
                e.job_id,
                model.spec.family()
            );
        }
        // The layout must be the one the downloaded model's labels give.
        let labels = match model.spec.as_ref() {
            ModelSpec::Intent(s) => &s.labels,
            ModelSpec::Emotion(s) => &s.labels,
            other => bail!("a {} model has no federated evaluation", other.family()),
        };
        if hearth_models::evaluation_bins(labels) != e.bins {
            bail!(
                "the evaluation announces {} counts that are not the layout of the model's {} labels",
                e.bins.len(),
                labels.len()
            );
        }
        let local = Arc::clone(&self.local);
        let (counts, examples) =
            tokio::task::spawn_blocking(move || local.evaluation_counts(&model.spec, model.params.to_vec()))
                .await??;
        let encoder = inv.clone();
        let input = async move { encoder.encode_counts(&counts) };
        let (job, round) = (at.job_id.clone(), at.round);
        let family = e.family.clone();
        let release = self.release(move |p| p.release_round(&job, round, &family, None), false);
        secagg::run_client(client, who, &at, inv, relays, input, release, None).await?;
        Ok(examples)
    }

    /// Audits whether this participant joins round `at` (`round.join`, refused with the reason) after the
    /// checks in `admit`.
    fn admitted<T>(
        &self,
        at: &secagg::RoundRef,
        admit: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let result = admit();
        let (outcome, detail) = match &result {
            Ok(_) => (Outcome::Ok, format!("job {} round {}", at.job_id, at.round)),
            Err(e) => (Outcome::Refused, format!("job {} round {}: {e:#}", at.job_id, at.round)),
        };
        self.audit.record("system", Action::RoundJoin, outcome, &detail);
        result
    }

    /// The hook that runs just before a masked input leaves: `record` charges or records the release in
    /// the institution's own ledger; a refusal is audited and stops the send. `audit_ok`: also audit the
    /// charge when it succeeds.
    pub(crate) fn release(
        &self,
        record: impl FnOnce(&LocalPrivacy) -> anyhow::Result<String>,
        audit_ok: bool,
    ) -> impl FnOnce() -> anyhow::Result<()> {
        let (privacy, audit) = (Arc::clone(&self.privacy), self.audit.clone());
        move || match record(&privacy) {
            Ok(detail) => {
                if audit_ok {
                    audit.record("system", Action::LocalCharge, Outcome::Ok, &detail);
                }
                Ok(())
            }
            Err(e) => {
                audit.record("system", Action::LocalCharge, Outcome::Refused, &format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// Downloads the round's base model and trains it on the local data; returns the delta.
    async fn train(
        &self,
        client: &mut CoordinatorClient<Channel>,
        open: &v1::RoundOpen,
    ) -> anyhow::Result<(Vec<f32>, hearth_models::TrainStats)> {
        let (base, encoded) = self.local_inputs(client, open).await?;
        let spec = Arc::clone(&base.spec);
        let t = open.train.unwrap_or_default();
        let params = TrainParams {
            local_epochs: t.local_epochs,
            learning_rate: t.learning_rate,
            batch_size: t.batch_size,
            l2: t.l2,
            // Each participant and round shuffles differently, reproducibly.
            seed: t.seed ^ open.round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ fxhash(&self.id_or_cert()),
        };
        let base_params = Arc::clone(&base.params);
        let (delta, stats) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut local = base_params.as_ref().clone();
            let stats = spec.train_local(&mut local, &encoded, &params)?;
            let delta: Vec<f32> = local.iter().zip(base_params.iter()).map(|(l, g)| l - g).collect();
            Ok((delta, stats))
        })
        .await??;
        Ok((delta, stats))
    }

    /// Downloads a committed model, calibrates it on local data (its family says what that means),
    /// stores its model file and swaps it into the inference endpoint.
    /// Puts the finished `job`'s final model in service, unless the family is pinned or the model fails the
    /// promotion gate (`tolerance_points`); either refusal is audited with its figures.
    async fn refresh(
        self: Arc<Self>,
        mut client: CoordinatorClient<Channel>,
        job: &str,
        version: u64,
        tolerance_points: f64,
    ) -> anyhow::Result<()> {
        if version == 0 || self.slots.serves(job, version) {
            return Ok(());
        }
        let mut worker = self.worker.lock().await;
        let d = self.download(&mut worker, &mut client, job, version).await?;
        drop(worker);
        let card = if d.card_json.is_empty() {
            None
        } else {
            // A card is documentation: an unreadable one is logged, and the model is still served.
            serde_json::from_slice::<ModelCard>(&d.card_json)
                .map_err(|e| tracing::warn!(job, version, error = %e, "the coordinator's model card is unreadable"))
                .ok()
        };
        let target = d.escalation_target_recall;
        let global = Global {
            job_id: d.job_id.clone(),
            version: d.version,
            spec: d.spec.as_ref().clone(),
            params: d.params.as_ref().clone(),
            card,
            escalation_target_recall: (target > 0.0).then_some(target),
        };
        let (local, store, dir) = (Arc::clone(&self.local), Arc::clone(&self.store), self.models_dir.clone());
        let slots = Arc::clone(&self.slots);
        let what = format!("job {} version {}", d.job_id, d.version);
        let decided = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let (calibrated, file) = local.calibrate(global)?;
            // A fast-tier intent model while an encoder-tier one is served refreshes the cascade's fast
            // stage only: the encoder-tier model stays in service.
            let encoder_served =
                slots.intent.load().as_ref().is_some_and(|c| c.model.spec.features.needs_encoder());
            let calibrated = match calibrated {
                Calibrated::Intent(s) if encoder_served && !s.model.spec.features.needs_encoder() => {
                    Calibrated::IntentFast(s)
                }
                c => c,
            };
            let family = calibrated.family();
            // The fast stage is part of serving intent: an intent pin holds it too.
            let pin_family = if family == FAST_STAGE { "intent" } else { family };
            if let Some(pin) = crate::serving::pinned(&dir, pin_family)? {
                return Ok(Err(format!(
                    "the {pin_family} model is pinned ({pin}); `hearth model unpin` lifts it"
                )));
            }
            let detail = match local.promotion(&calibrated, &slots, tolerance_points)? {
                Promotion::Refuse(detail) => return Ok(Err(format!("not promoted: {detail}"))),
                Promotion::Promote(detail) => detail,
            };
            if family != FAST_STAGE {
                // The model served until now stays at hand for `hearth model rollback`.
                let current = crate::serving::current_path(&dir, family);
                if current.exists() {
                    std::fs::rename(&current, crate::serving::previous_path(&dir, family))
                        .context("keeping the served model as the previous one")?;
                }
                store.save_model_of(family, &file).context("storing the served model")?;
                write_model_file(&dir, family, &file)?;
            }
            keep_fast_stage(&store, &dir, &calibrated, &file)?;
            Ok(Ok((calibrated, detail)))
        })
        .await??;
        let (calibrated, detail) = match decided {
            Ok(x) => x,
            Err(why) => {
                tracing::warn!(job, version, why, "finished job's model not served");
                self.audit.record(
                    "system",
                    Action::ModelInstall,
                    Outcome::Refused,
                    &format!("{what}: {why}; the model in service stays"),
                );
                return Ok(());
            }
        };
        let family = calibrated.family();
        if self.slots.install(calibrated) {
            tracing::info!(job = d.job_id, version = d.version, family, "serving new model");
            self.audit.record(
                "system",
                Action::ModelInstall,
                Outcome::Ok,
                &format!("{family} model of {what} ({detail})"),
            );
        }
        Ok(())
    }

    /// Carries out pending rollback requests (`hearth model rollback`): the previous model of the family
    /// goes back into service and into the store, the two files swap, and the outcome is written for the
    /// command and audited. Blocking.
    pub(crate) fn roll_back_requested(&self) {
        for family in crate::serving::FAMILIES {
            let request = crate::serving::rollback_path(&self.models_dir, family);
            let Ok(by) = std::fs::read_to_string(&request) else { continue };
            let result = self.roll_back(family);
            let text = match &result {
                Ok(detail) => format!("ok: {detail}"),
                Err(e) => format!("refused: {e:#}"),
            };
            let outcome = if result.is_ok() { Outcome::Ok } else { Outcome::Refused };
            self.audit.record(
                by.trim(),
                Action::ModelInstall,
                outcome,
                &format!("rollback of {family}: {text}"),
            );
            let done = crate::serving::rollback_result_path(&self.models_dir, family);
            if let Err(e) = crate::serving::write_atomic(&done, text.as_bytes()) {
                tracing::warn!(family, error = format!("{e:#}"), "could not write the rollback's result");
            }
            let _ = std::fs::remove_file(&request);
        }
    }

    fn roll_back(&self, family: &str) -> anyhow::Result<String> {
        let dir = &self.models_dir;
        let previous = crate::serving::previous_path(dir, family);
        let bytes = std::fs::read(&previous).map_err(|_| {
            anyhow::anyhow!(
                "no previous {family} model is kept here (a model is kept once a newer one replaced it)"
            )
        })?;
        let restored = self.local.restore(&bytes).context("reading the previous model")?;
        let (job, version) = restored.served_as();
        self.store.save_model_of(family, &bytes).context("storing the restored model")?;
        let current = crate::serving::current_path(dir, family);
        let swap = dir.join(format!("{family}.swap"));
        if current.exists() {
            std::fs::rename(&current, &swap)?;
        }
        std::fs::rename(&previous, &current)?;
        if swap.exists() {
            std::fs::rename(&swap, &previous)?;
        }
        keep_fast_stage(&self.store, dir, &restored, &bytes)?;
        self.slots.replace(restored);
        crate::serving::pin(dir, family, &format!("rolled back to job {job} version {version}"))?;
        Ok(format!("serving job {job} version {version} again, pinned"))
    }

    fn id_or_cert(&self) -> String {
        self.id.get().cloned().unwrap_or_default()
    }
}

/// Tells the coordinator this participant is out of round `round` of `job` and why, so that it stops
/// waiting for it (best effort: a coordinator that does not answer in time waits for its deadline).
async fn decline(
    mut client: CoordinatorClient<Channel>,
    job: &str,
    round: u64,
    instance: u64,
    why: &anyhow::Error,
) {
    let request = v1::DeclineRequest { job_id: job.into(), round, reason: format!("{why:#}"), instance };
    match tokio::time::timeout(Duration::from_secs(5), client.decline_round(request)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(job, round, error = %e, "the coordinator did not take the decline"),
        Err(_) => tracing::debug!(job, round, "declining the round timed out"),
    }
}

/// Writes `file` as `dir/<family>.hearthm`, atomically (write then rename), so that `hearth model show`
/// can read the model a participant serves while it runs.
/// Keeps `c` as the intent cascade's fast stage when it is a fast-tier intent model (put in service as
/// the intent model, by a job or a rollback, or as the stage alone): sealed in the store and as
/// `intent-fast.hearthm` beside the served models, for restarts and the institution's replicas. The
/// slots follow by themselves ([`hearth_inference::Slots::install`]). Blocking.
pub(crate) fn keep_fast_stage(
    store: &Store,
    dir: &std::path::Path,
    c: &Calibrated,
    file: &[u8],
) -> anyhow::Result<()> {
    let (Calibrated::Intent(s) | Calibrated::IntentFast(s)) = c else { return Ok(()) };
    if s.model.spec.features.needs_encoder() {
        return Ok(());
    }
    store.save_model_of(FAST_STAGE, file).context("storing the cascade's fast stage")?;
    write_model_file(dir, FAST_STAGE, file)
}

pub(crate) fn write_model_file(dir: &std::path::Path, family: &str, file: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{family}.hearthm"));
    let tmp = path.with_extension("hearthm.tmp");
    std::fs::write(&tmp, file).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned it (every critical section here
/// is a single map operation).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_must_carry_the_declared_spec_or_stay_under_the_undeclared_bound() {
        let spec = br#"{"family":"intent"}"#;
        check_download_size("j", Some(spec), spec, 1 << 30).expect("the declared spec, whatever its size");
        let e = check_download_size("j", Some(spec), br#"{"family":"intent","big":1}"#, 10).unwrap_err();
        assert!(e.to_string().contains("another spec than its rounds declared"), "{e}");
        check_download_size("j", None, spec, MAX_UNDECLARED_PARAMS).unwrap();
        let e = check_download_size("j", None, spec, MAX_UNDECLARED_PARAMS + 1).unwrap_err();
        assert!(e.to_string().contains("without a declared spec"), "{e}");
    }
}
