//! The gRPC `Coordinator` service. Every handler first derives the caller's identity from its client
//! certificate and checks its role; nothing in a request says who the caller is.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::Stream;
use hearth_audit::{Action, Outcome};
use hearth_crypto::digest::{ContentDigest, CONTENT_DIGEST_LEN};
use hearth_crypto::pki::{NodeIdentity, Role};
use hearth_models::ModelSpec;
use hearth_proto::v1::coordinator_server::Coordinator;
use hearth_proto::v1::{self, announcement, job_event, model_chunk};
use hearth_proto::{protocol_major, MAX_CHUNK_BYTES, PROTOCOL_MAJOR, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::now_ms;
use crate::driver::{drive, summary, Peer, Shared, ANNOUNCEMENT_QUEUE};
use crate::job::{lock, JobRuntime};
use crate::secagg::{SecAggRefusal, MASKED_PHASE};
use crate::store::{JobPhase, JobPrivacy, JobRecord};
use crate::submission::ValidatedJob;
use crate::upload;

/// Most model families a participant may declare.
const MAX_FAMILIES: usize = 16;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The service object; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The caller's identity, refused (and audited) unless its role is one of `roles`.
    fn require<T>(&self, req: &Request<T>, action: Action, roles: &[Role]) -> Result<NodeIdentity, Status> {
        self.shared.require(req, action, roles)
    }

    fn job(&self, id: &str) -> Result<Arc<JobRuntime>, Status> {
        self.shared.job(id).ok_or_else(|| Status::not_found(format!("no job {id:?}")))
    }

    /// Refuses a secure-aggregation message: logs and audits who and why.
    fn refuse_secagg(&self, who: &NodeIdentity, detail: &str, status: Status) -> Status {
        tracing::warn!(participant = %who, %detail, "secure-aggregation message refused");
        self.shared.audit.record(&who.to_string(), Action::SecAggMessage, Outcome::Refused, detail);
        status
    }

    /// [`Self::refuse_secagg`] with the status's own message as the detail.
    fn refuse_secagg_status(&self, who: &NodeIdentity, status: Status) -> Status {
        let detail = status.message().to_owned();
        self.refuse_secagg(who, &detail, status)
    }

    /// [`Self::refuse_upload`] with the status's own message as the detail.
    fn refuse_status(&self, who: &NodeIdentity, status: Status) -> Status {
        let detail = status.message().to_owned();
        self.refuse_upload(who, &detail, status)
    }

    /// Refuses an upload: logs, audits, releases the slot if one was taken.
    /// With a privacy policy in force, reserves the job's worst case in the budget of every institution the
    /// policy lists for its family (they are the only ones its rounds invite); audited either way.
    async fn reserve_budget(
        &self,
        who: &NodeIdentity,
        id: &str,
        p: &mut JobPrivacy,
        rounds: u64,
        min_participants: u32,
    ) -> Result<(), Status> {
        if !self.shared.privacy.enforced() {
            return Ok(());
        }
        let tenants = self.shared.privacy.family_tenants(&p.family);
        if tenants.is_empty() {
            let detail = format!("the privacy policy gives no institution a budget in family {:?}", p.family);
            self.shared.audit.record(&who.to_string(), Action::JobSubmit, Outcome::Refused, &detail);
            return Err(Status::invalid_argument(detail));
        }
        // One delta convention: the job is charged at the delta its model card states epsilon at.
        let refuse = |detail: String| {
            self.shared.audit.record(&who.to_string(), Action::JobSubmit, Outcome::Refused, &detail);
            Status::invalid_argument(detail)
        };
        match self.shared.privacy.charge_delta(&p.family, &tenants) {
            Ok(Some(d)) if (d - p.delta).abs() > 1e-9 * d => {
                return Err(refuse(format!(
                    "privacy.delta {} differs from the delta the privacy policy accounts family {:?} at \
                     (delta_per_charge {d}): set privacy.delta = {d}, so that the job is charged the epsilon \
                     its model card states",
                    short(p.delta),
                    p.family,
                    d = short(d)
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(refuse(e.to_string())),
        }
        p.tenants = tenants;
        let (shared, job_privacy, job_id) = (Arc::clone(&self.shared), p.clone(), id.to_string());
        let reserved = tokio::task::spawn_blocking(move || {
            shared.privacy.reserve_training(&job_id, &job_privacy, rounds, min_participants)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        match reserved {
            Ok(r) => {
                p.reservation = Some(r.0);
                self.shared.audit.record(
                    &who.to_string(),
                    Action::BudgetReserve,
                    Outcome::Ok,
                    &format!("job {id}: family {} for [{}]", p.family, p.tenants.join(",")),
                );
                Ok(())
            }
            Err(crate::privacy::PrivacyError::Store(e)) => {
                Err(Status::internal(format!("could not persist the budget reservation: {e}")))
            }
            Err(e) => {
                self.shared.audit.record(
                    &who.to_string(),
                    Action::BudgetReserve,
                    Outcome::Refused,
                    &format!("job {id}: {e}"),
                );
                Err(Status::resource_exhausted(format!("privacy budget: {e}")))
            }
        }
    }

    /// Registers and persists a new job with a zero model; on failure gives back its budget reservation.
    async fn persist_job(&self, record: &JobRecord, num_params: usize) -> Result<Arc<JobRuntime>, Status> {
        let id = record.id.clone();
        let release = || {
            if let Some(r) = record.privacy.as_ref().and_then(|p| p.reservation) {
                if let Err(e) = self.shared.privacy.release(r) {
                    tracing::error!(job = %id, error = %e, "could not release the budget reservation");
                }
            }
        };
        let params = vec![0.0f32; num_params];
        let job = {
            let mut jobs = lock(&self.shared.jobs);
            if jobs.contains_key(&id) {
                drop(jobs);
                release();
                return Err(Status::already_exists(format!("job {id} exists")));
            }
            let job = Arc::new(JobRuntime::new(record.clone(), num_params, params.clone(), vec![]));
            jobs.insert(id.clone(), Arc::clone(&job));
            job
        };
        let (shared, to_save) = (Arc::clone(&self.shared), record.clone());
        let saved = tokio::task::spawn_blocking(move || shared.store.save(&to_save, Some((&params, &[]))))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Err(e) = saved {
            lock(&self.shared.jobs).remove(&id);
            release();
            return Err(Status::internal(format!("could not persist job: {e}")));
        }
        Ok(job)
    }

    fn refuse_upload(&self, who: &NodeIdentity, detail: &str, status: Status) -> Status {
        tracing::warn!(participant = %who, %detail, "update refused");
        self.shared.audit.record(&who.to_string(), Action::UpdateUpload, Outcome::Refused, detail);
        status
    }
}

/// The gRPC status of a refused secure-aggregation message.
fn secagg_status(e: &SecAggRefusal) -> Status {
    match e {
        SecAggRefusal::NotMember(_) => Status::permission_denied(e.to_string()),
        SecAggRefusal::Duplicate(_) => Status::already_exists(e.to_string()),
        SecAggRefusal::WrongPhase { .. } | SecAggRefusal::NotExpected(_) => {
            Status::failed_precondition(e.to_string())
        }
        SecAggRefusal::Protocol(_) => Status::invalid_argument(e.to_string()),
    }
}

/// A small number as people write it: `1e-6`, not `1.0000000000000002e-6`.
fn short(x: f64) -> String {
    let s = format!("{x:.6e}");
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.')),
        None => s,
    }
}

fn validate_job_id(id: &str) -> Result<(), Status> {
    hearth_crypto::pki::validate_node_id(id).map_err(|e| Status::invalid_argument(format!("job_id: {e}")))
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        req: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterReply>, Status> {
        let who = self.require(&req, Action::ParticipantRegister, &[Role::Participant])?;
        let cert = hearth_transport::peer_certificate(&req)?;
        let msg = req.into_inner();
        if protocol_major(&msg.protocol_version) != Some(PROTOCOL_MAJOR) {
            self.shared.audit.record(
                &who.to_string(),
                Action::ParticipantRegister,
                Outcome::Refused,
                &format!("protocol version {:?}", msg.protocol_version),
            );
            return Err(Status::failed_precondition(format!(
                "protocol version {:?} is not supported; this coordinator speaks {PROTOCOL_VERSION}",
                msg.protocol_version
            )));
        }
        let families = match msg.families {
            None => None,
            Some(f)
                if f.names.len() <= MAX_FAMILIES && f.names.iter().all(|n| (1..=32).contains(&n.len())) =>
            {
                Some(f.names)
            }
            Some(f) => {
                return Err(Status::invalid_argument(format!(
                    "{} model families declared; at most {MAX_FAMILIES} names of 1 to 32 bytes",
                    f.names.len()
                )))
            }
        };
        let detail = match &families {
            Some(f) => format!("{}; holds {}", msg.software_version, f.join(",")),
            None => msg.software_version.clone(),
        };
        lock(&self.shared.peers)
            .entry(who.id.clone())
            .and_modify(|p| {
                p.last_seen_ms = now_ms();
                p.cert = Some(Arc::clone(&cert));
                p.families = families.clone();
            })
            .or_insert(Peer {
                tx: None,
                cert: Some(cert),
                subscription: 0,
                last_seen_ms: now_ms(),
                families,
            });
        self.shared.audit.record(&who.to_string(), Action::ParticipantRegister, Outcome::Ok, &detail);
        tracing::info!(participant = %who.id, "registered");
        Ok(Response::new(v1::RegisterReply {
            participant_id: who.id,
            protocol_version: PROTOCOL_VERSION.into(),
            max_chunk_bytes: MAX_CHUNK_BYTES as u32,
        }))
    }

    type SubscribeStream = BoxStream<v1::Announcement>;

    async fn subscribe(
        &self,
        req: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let who = self.require(&req, Action::ParticipantSubscribe, &[Role::Participant])?;
        let cert = hearth_transport::peer_certificate(&req)?;
        let (tx, rx) = mpsc::channel(ANNOUNCEMENT_QUEUE);
        let sub = self.shared.next_subscription.fetch_add(1, Ordering::Relaxed);
        {
            let mut peers = lock(&self.shared.peers);
            let peer = peers.entry(who.id.clone()).or_insert(Peer {
                tx: None,
                cert: None,
                subscription: 0,
                last_seen_ms: 0,
                families: None,
            });
            peer.tx = Some(tx.clone());
            peer.cert = Some(cert);
            peer.subscription = sub;
            peer.last_seen_ms = now_ms();
        }
        tracing::info!(participant = %who.id, "subscribed");
        // Tell a (re)connecting participant which models to serve right away, one per family.
        for job in self.shared.latest_jobs() {
            let rec = lock(&job.record).clone();
            let _ = tx.try_send(Ok(v1::Announcement {
                kind: Some(announcement::Kind::RoundCommitted(v1::RoundCommitted {
                    job_id: rec.id.clone(),
                    round: rec.latest_version(),
                    version: rec.latest_version(),
                    participants: rec.committed.last().map_or(0, |r| r.participants),
                })),
            }));
        }
        // Heartbeats keep idle connections alive; when the participant goes away, its entry is marked
        // disconnected and every job re-checks whether its round can stop waiting.
        let shared = Arc::clone(&self.shared);
        let id = who.id.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {
                        let beat = v1::Announcement {
                            kind: Some(announcement::Kind::Heartbeat(v1::Heartbeat { unix_ms: now_ms() })),
                        };
                        if tx.try_send(Ok(beat)).is_err() {
                            break;
                        }
                    }
                }
            }
            {
                let mut peers = lock(&shared.peers);
                if let Some(p) = peers.get_mut(&id).filter(|p| p.subscription == sub) {
                    p.tx = None;
                }
            }
            tracing::info!(participant = %id, "disconnected");
            for job in lock(&shared.jobs).values() {
                job.changed.notify_one();
            }
            for slot in lock(&shared.secure).values() {
                slot.changed.notify_one();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DownloadModelStream = BoxStream<v1::ModelChunk>;

    async fn download_model(
        &self,
        req: Request<v1::ModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        self.require(&req, Action::ModelDownload, &[Role::Participant, Role::Operator])?;
        let msg = req.into_inner();
        let job = if msg.latest_job {
            self.shared.latest_job().ok_or_else(|| Status::not_found("no job has committed a model yet"))?
        } else {
            self.job(&msg.job_id)?
        };
        let model = job.global();
        if msg.version != 0 && msg.version != model.version {
            return Err(if msg.version < model.version {
                Status::failed_precondition(format!(
                    "version {} is no longer kept; the latest is {}",
                    msg.version, model.version
                ))
            } else {
                Status::not_found(format!(
                    "version {} does not exist yet; the latest is {}",
                    msg.version, model.version
                ))
            });
        }
        let rec = lock(&job.record).clone();
        let family = ModelSpec::from_json(rec.model_spec_json.as_bytes()).map_or("unknown", |s| s.family());
        let card = crate::card::model_card(&rec, family, model.version);
        let header = v1::ModelChunk {
            kind: Some(model_chunk::Kind::Header(v1::ModelHeader {
                job_id: rec.id.clone(),
                version: model.version,
                num_params: model.params.len() as u64,
                model_spec_json: rec.model_spec_json.into_bytes().into(),
                sha256: model.sha256.to_vec().into(),
                // Serialising strings and numbers cannot fail.
                model_card_json: serde_json::to_vec(&card).unwrap_or_default().into(),
                escalation_target_recall: rec.escalation_target_recall.unwrap_or(0.0),
            })),
        };
        let bytes = model.bytes.clone();
        let chunks = (0..bytes.len()).step_by(MAX_CHUNK_BYTES).map(move |start| {
            let end = (start + MAX_CHUNK_BYTES).min(bytes.len());
            Ok(v1::ModelChunk { kind: Some(model_chunk::Kind::Data(bytes.slice(start..end))) })
        });
        let stream = futures::stream::iter(std::iter::once(Ok(header)).chain(chunks));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn upload_update(
        &self,
        req: Request<Streaming<v1::UpdateChunk>>,
    ) -> Result<Response<v1::UploadReceipt>, Status> {
        let who = self.require(&req, Action::UpdateUpload, &[Role::Participant])?;
        let mut stream = req.into_inner();
        let header = upload::read_header(&mut stream)
            .await
            .map_err(|e| self.refuse_upload(&who, e.detail, e.status))?;
        let job = self.job(&header.job_id).map_err(|s| self.refuse_status(&who, s))?;
        let bad =
            |detail: String| self.refuse_upload(&who, &detail, Status::invalid_argument(detail.clone()));
        if header.num_params != job.num_params as u64 {
            return Err(bad(format!(
                "update has {} parameters, the model of job {} has {}",
                header.num_params, header.job_id, job.num_params
            )));
        }
        if header.num_examples == 0 || header.num_examples > 1_000_000_000 {
            return Err(bad(format!("num_examples {} is outside 1..=1e9", header.num_examples)));
        }
        if !header.train_loss.is_finite() || header.train_loss < 0.0 {
            return Err(bad(format!("train_loss {} is not a finite non-negative number", header.train_loss)));
        }
        if header.nonce.len() != 16 {
            return Err(bad(format!("nonce must be 16 bytes, got {}", header.nonce.len())));
        }
        if header.sha256.len() != CONTENT_DIGEST_LEN {
            return Err(bad(format!(
                "sha256 must be {CONTENT_DIGEST_LEN} bytes, got {}",
                header.sha256.len()
            )));
        }
        let round = header.round;
        let deadline = job.begin_upload(&who.id, round, header.base_version, &header.nonce).map_err(|e| {
            let status = match e {
                crate::job::UploadRefusal::Duplicate(_) | crate::job::UploadRefusal::Replay => {
                    Status::already_exists(e.to_string())
                }
                _ => Status::failed_precondition(e.to_string()),
            };
            self.refuse_upload(&who, &e.to_string(), status)
        })?;
        let deadline = tokio::time::Instant::from_std(deadline);
        let result = async {
            let _slot = tokio::time::timeout_at(deadline, self.shared.upload_slots.acquire())
                .await
                .map_err(|_| Status::deadline_exceeded("the round closed while waiting for an upload slot"))?
                .map_err(|_| Status::unavailable("coordinator shutting down"))?;
            let mut delta: Vec<f32> = Vec::with_capacity(job.num_params);
            let mut hasher = ContentDigest::new();
            let len = job.num_params as u64 * 4;
            upload::read_body(&mut stream, deadline, len, "bytes of the model's parameters", |data| {
                if data.len() % 4 != 0 {
                    return Err(Status::invalid_argument(format!(
                        "chunk of {} bytes: chunks hold whole f32 values",
                        data.len()
                    )));
                }
                hasher.update(data);
                for c in data.chunks_exact(4) {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    if !v.is_finite() {
                        return Err(Status::invalid_argument(format!(
                            "parameter {} is {v}: updates must be finite",
                            delta.len()
                        )));
                    }
                    delta.push(v);
                }
                Ok(())
            })
            .await?;
            if !hasher.matches(&header.sha256) {
                return Err(Status::data_loss("update checksum does not match its header"));
            }
            job.finish_upload(&who.id, round, &delta, header.num_examples, header.train_loss)
                .map_err(|e| Status::failed_precondition(e.to_string()))
        }
        .await;
        match result {
            Ok((received, invited)) => {
                job.emit(job_event::Kind::UpdateReceived(v1::UpdateReceived { round, received, invited }));
                tracing::info!(participant = %who.id, job = %header.job_id, round, "update accepted");
                Ok(Response::new(v1::UploadReceipt { job_id: header.job_id, round, accepted: true }))
            }
            Err(status) => {
                job.abort_upload(&who.id, round);
                Err(self.refuse_status(&who, status))
            }
        }
    }

    async fn decline_round(
        &self,
        req: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::DeclineReply>, Status> {
        let who = self.require(&req, Action::RoundDecline, &[Role::Participant])?;
        let msg = req.into_inner();
        // A reason is the participant's own text: bounded, and recorded only as text.
        let reason: String = msg.reason.chars().take(2_000).collect();
        let slot = lock(&self.shared.secure).get(&msg.job_id).cloned();
        // Only the instance declined: an earlier attempt's decline (sent late) leaves this one alone.
        let this_instance = |r: &&mut crate::secagg::SecAggRound| {
            msg.instance == 0 || r.params.config().instance == msg.instance
        };
        let declined = slot.as_ref().and_then(|slot| {
            let u = lock(&slot.round)
                .as_mut()
                .filter(|r| r.round == msg.round)
                .filter(this_instance)
                .map(|r| r.decline(&who.id, &reason));
            slot.changed.notify_one();
            u
        });
        match declined {
            Some(Ok(_)) => {
                tracing::warn!(participant = %who, job = msg.job_id, round = msg.round, %reason, "participant declined the round");
                self.shared.audit.record(
                    &who.to_string(),
                    Action::RoundDecline,
                    Outcome::Ok,
                    &format!("{} round {}: {reason}", msg.job_id, msg.round),
                );
                Ok(Response::new(v1::DeclineReply {}))
            }
            Some(Err(e)) => {
                Err(self.refuse_secagg(&who, &e.to_string(), Status::permission_denied(e.to_string())))
            }
            None => {
                let detail = format!(
                    "no secure round {} of {:?} (instance {:#x}) is in progress",
                    msg.round, msg.job_id, msg.instance
                );
                Err(self.refuse_secagg(&who, &detail, Status::failed_precondition(detail.clone())))
            }
        }
    }

    async fn sec_agg_send(
        &self,
        req: Request<Streaming<v1::SecAggChunk>>,
    ) -> Result<Response<v1::SecAggAck>, Status> {
        let who = self.require(&req, Action::SecAggSend, &[Role::Participant])?;
        let mut stream = req.into_inner();
        let header = upload::read_header(&mut stream)
            .await
            .map_err(|e| self.refuse_secagg(&who, e.detail, e.status))?;
        let (round, phase) = (header.round, header.phase);
        let slot = lock(&self.shared.secure).get(&header.job_id).cloned().ok_or_else(|| {
            let detail = format!("no secure round of {:?} is in progress", header.job_id);
            self.refuse_secagg(&who, &detail, Status::failed_precondition(detail.clone()))
        })?;
        // Reserve the participant's slot for this phase, and learn the bounds, before reading the message.
        let (u, deadline, max_len) = {
            let mut g = lock(&slot.round);
            let Some(r) = g.as_mut().filter(|r| r.round == round) else {
                let detail = format!("no secure-aggregation round {round} is open for job {}", header.job_id);
                return Err(self.refuse_secagg(&who, &detail, Status::failed_precondition(detail.clone())));
            };
            // Another attempt's message (one this coordinator gave up, or one from before it restarted) is
            // refused here, before the open attempt would count it as the sender's and drop the sender.
            let open = r.params.config().instance;
            if header.instance != 0 && header.instance != open {
                let detail = format!(
                    "phase {phase} message of instance {:#x} of round {round} of {}; instance {open:#x} is open",
                    header.instance, header.job_id
                );
                return Err(self.refuse_secagg(&who, &detail, Status::failed_precondition(detail.clone())));
            }
            let u =
                r.begin(&who.id, phase).map_err(|e| self.refuse_secagg_status(&who, secagg_status(&e)))?;
            let limits = r.params.limits();
            // A masked input is the vector plus a small framing; every other client message is far below
            // a mebibyte (the protocol's decoder bounds each field again).
            let max = if phase == MASKED_PHASE {
                limits.vector_len as u64 * limits.word_bytes() as u64 + 4096
            } else {
                1 << 20
            };
            (u, r.deadline, max)
        };
        let release = || {
            if let Some(r) = lock(&slot.round).as_mut().filter(|r| r.round == round) {
                r.abort(u);
            }
            slot.changed.notify_one();
        };
        if header.length > max_len {
            release();
            let detail =
                format!("phase {phase} message of {} bytes is over the limit of {max_len}", header.length);
            return Err(self.refuse_secagg(&who, &detail, Status::invalid_argument(detail.clone())));
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        let read = async {
            // A masked upload is model-sized: bound how many are buffered at once.
            let _slot = if phase == MASKED_PHASE {
                Some(
                    tokio::time::timeout_at(deadline, self.shared.upload_slots.acquire())
                        .await
                        .map_err(|_| {
                            Status::deadline_exceeded("the phase closed while waiting for an upload slot")
                        })?
                        .map_err(|_| Status::unavailable("coordinator shutting down"))?,
                )
            } else {
                None
            };
            let mut buf = Vec::with_capacity(header.length as usize);
            upload::read_body(&mut stream, deadline, header.length, "bytes its header announced", |data| {
                buf.extend_from_slice(data);
                Ok(())
            })
            .await?;
            // Signature checks and folding a masked vector into the sum are CPU work: off the async workers.
            let slot2 = Arc::clone(&slot);
            tokio::task::spawn_blocking(move || {
                match lock(&slot2.round).as_mut().filter(|r| r.round == round) {
                    Some(r) => r.receive(u, phase, &buf).map_err(|e| secagg_status(&e)),
                    None => Err(Status::failed_precondition(format!(
                        "round {round} closed before the message was read"
                    ))),
                }
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        }
        .await;
        match read {
            Ok(()) => {
                slot.changed.notify_one();
                self.shared.traffic.secagg_received.fetch_add(header.length, Ordering::Relaxed);
                tracing::debug!(participant = %who.id, job = %header.job_id, round, phase, "secure-aggregation message accepted");
                Ok(Response::new(v1::SecAggAck { job_id: header.job_id, round, phase }))
            }
            Err(status) => {
                release();
                Err(self.refuse_secagg_status(&who, status))
            }
        }
    }

    async fn submit_job(&self, req: Request<v1::JobSpec>) -> Result<Response<v1::JobAccepted>, Status> {
        let who = self.require(&req, Action::JobSubmit, &[Role::Operator])?;
        let spec = req.into_inner();
        let privacy = Arc::clone(&self.shared);
        let required = move |family: &str| privacy.privacy.requires_private(family);
        let job = ValidatedJob::check(&spec, &self.shared.config.policy, &required).map_err(|e| {
            self.shared.audit.record(&who.to_string(), Action::JobSubmit, Outcome::Refused, &e.to_string());
            Status::invalid_argument(e.to_string())
        })?;
        // One submission at a time: a refused one leaves the job sequence where it was.
        let _turn = self.shared.submissions.lock().await;
        let sequence = self.shared.next_sequence.load(Ordering::SeqCst);
        let id = if spec.job_id.is_empty() {
            format!("job-{sequence}-{:04x}", rand::random::<u16>())
        } else {
            validate_job_id(&spec.job_id)?;
            spec.job_id.clone()
        };
        if lock(&self.shared.jobs).contains_key(&id) {
            return Err(Status::already_exists(format!("job {id} exists")));
        }
        let (rounds, num_params) = (job.shape.rounds, job.shape.num_params as usize);
        let mut record = job.into_record(id.clone(), sequence, who.to_string());
        if let Some(p) = record.privacy.as_mut() {
            self.reserve_budget(&who, &id, p, rounds, record.min_participants).await?;
        }
        let record_secure = record.secure_aggregation;
        let runtime = self.persist_job(&record, num_params).await?;
        self.shared.next_sequence.store(sequence + 1, Ordering::SeqCst);
        self.shared.audit.record(
            &who.to_string(),
            Action::JobSubmit,
            Outcome::Ok,
            &format!(
                "job {id}: {rounds} rounds, {num_params} params, {}",
                if record_secure {
                    "secure aggregation"
                } else {
                    "plain aggregation (the coordinator sees each update)"
                }
            ),
        );
        tracing::info!(job = %id, by = %who, "job accepted");
        tokio::spawn(drive(Arc::clone(&self.shared), runtime));
        Ok(Response::new(v1::JobAccepted { job_id: id }))
    }

    type WatchJobStream = BoxStream<v1::JobEvent>;

    async fn watch_job(
        &self,
        req: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.require(&req, Action::JobWatch, &[Role::Operator, Role::Participant])?;
        let job = self.job(&req.get_ref().job_id)?;
        // Subscribe before reading history so no event falls between the two.
        let mut live = job.events.subscribe();
        let (rec, replayed) = job.history();
        let mut last = rec.committed[..replayed].last().map_or(0, |r| r.round);
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for r in &rec.committed[..replayed] {
                let ev = v1::JobEvent { kind: Some(job_event::Kind::Committed(summary(r))) };
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            if rec.phase != JobPhase::Running {
                let fin = crate::driver::finished_event(&rec);
                let _ = tx.send(Ok(v1::JobEvent { kind: Some(job_event::Kind::Finished(fin)) })).await;
                return;
            }
            loop {
                match live.recv().await {
                    Ok(ev) => {
                        if let Some(job_event::Kind::Committed(s)) = &ev.kind {
                            if s.round <= last {
                                continue; // already sent from history
                            }
                            last = s.round;
                        }
                        let done = matches!(ev.kind, Some(job_event::Kind::Finished(_)));
                        if tx.send(Ok(ev)).await.is_err() || done {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "job watcher lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_job(&self, req: Request<v1::JobRef>) -> Result<Response<v1::JobStatus>, Status> {
        let who = self.require(&req, Action::JobCancel, &[Role::Operator])?;
        let id = req.into_inner().job_id;
        let job = self.job(&id)?;
        let slot = lock(&self.shared.secure).get(&id).cloned();
        if !job.request_cancel(&who.to_string(), slot.as_deref()) {
            let state = lock(&job.record).phase.as_str();
            let detail = format!("job {id} is {state}, not running: nothing to cancel");
            self.shared.audit.record(&who.to_string(), Action::JobCancel, Outcome::Refused, &detail);
            return Err(Status::failed_precondition(detail));
        }
        self.shared.audit.record(&who.to_string(), Action::JobCancel, Outcome::Ok, &format!("job {id}"));
        tracing::info!(job = %id, by = %who, "job cancelled");
        Ok(Response::new(job.status().1))
    }

    async fn resume_job(&self, req: Request<v1::JobRef>) -> Result<Response<v1::JobStatus>, Status> {
        let who = self.require(&req, Action::JobResume, &[Role::Operator])?;
        let id = req.into_inner().job_id;
        let job = self.job(&id)?;
        let refuse = |detail: String| {
            self.shared.audit.record(&who.to_string(), Action::JobResume, Outcome::Refused, &detail);
            Status::failed_precondition(detail)
        };
        let to_save = {
            let mut rec = lock(&job.record);
            if rec.phase != JobPhase::Failed {
                return Err(refuse(format!(
                    "job {id} is {}: only a failed or cancelled job resumes",
                    rec.phase.as_str()
                )));
            }
            if rec.privacy.is_some() {
                return Err(refuse(format!(
                    "job {id} is differentially private: its budget reservation was given back when it ended, \
                     so it cannot run on; submit it again as a new job"
                )));
            }
            rec.phase = JobPhase::Running;
            rec.failure.clear();
            rec.clone()
        };
        *lock(&job.cancel) = None;
        let shared = Arc::clone(&self.shared);
        let saved = tokio::task::spawn_blocking(move || shared.store.save(&to_save, None))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Err(e) = saved {
            lock(&job.record).phase = JobPhase::Failed;
            return Err(Status::internal(format!("could not persist the resumed job: {e}")));
        }
        let from = lock(&job.record).latest_version() + 1;
        self.shared.audit.record(
            &who.to_string(),
            Action::JobResume,
            Outcome::Ok,
            &format!("job {id}: from round {from}, by an operator"),
        );
        tracing::info!(job = %id, by = %who, from, "job resumed");
        tokio::spawn(drive(Arc::clone(&self.shared), Arc::clone(&job)));
        Ok(Response::new(job.status().1))
    }

    async fn get_job(&self, req: Request<v1::JobRef>) -> Result<Response<v1::JobDetail>, Status> {
        self.require(&req, Action::Status, &[Role::Operator])?;
        let job = self.job(&req.get_ref().job_id)?;
        let rec = lock(&job.record).clone();
        Ok(Response::new(v1::JobDetail {
            status: Some(job.status().1),
            submitted_by: rec.submitted_by.clone(),
            rounds: rec.committed.iter().map(summary).collect(),
            failures: rec
                .failures
                .iter()
                .map(|f| v1::RoundAttempt { round: f.round, unix_ms: f.unix_ms, reason: f.reason.clone() })
                .collect(),
            secure_aggregation: rec.secure_aggregation,
            differentially_private: rec.privacy.is_some(),
        }))
    }

    async fn get_revocations(
        &self,
        req: Request<v1::RevocationsRequest>,
    ) -> Result<Response<v1::RevocationsReply>, Status> {
        self.require(
            &req,
            Action::RevocationsUpdate,
            &[Role::Participant, Role::Operator, Role::Coordinator, Role::Dpo, Role::Analyst, Role::App],
        )?;
        let crl_der = self.shared.revocations.der().unwrap_or_default();
        Ok(Response::new(v1::RevocationsReply { crl_der: crl_der.into() }))
    }

    async fn get_status(&self, req: Request<v1::StatusRequest>) -> Result<Response<v1::StatusReply>, Status> {
        self.require(&req, Action::Status, &[Role::Operator, Role::Participant, Role::Coordinator])?;
        let connected = self.shared.connected();
        let mut participants: Vec<v1::ParticipantStatus> = lock(&self.shared.peers)
            .iter()
            .map(|(id, p)| v1::ParticipantStatus {
                participant_id: id.clone(),
                connected: connected.contains(id),
                last_seen_unix_ms: p.last_seen_ms,
            })
            .collect();
        participants.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
        let mut jobs: Vec<(u64, v1::JobStatus)> =
            lock(&self.shared.jobs).values().map(|j| j.status()).collect();
        jobs.sort_by_key(|(seq, _)| *seq);
        Ok(Response::new(v1::StatusReply {
            protocol_version: PROTOCOL_VERSION.into(),
            participants,
            jobs: jobs.into_iter().map(|(_, j)| j).collect(),
        }))
    }
}
