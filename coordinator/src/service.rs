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
use hearth_policies::JobShape;
use hearth_proto::v1::coordinator_server::Coordinator;
use hearth_proto::v1::{self, announcement, job_event, model_chunk};
use hearth_proto::{protocol_major, MAX_CHUNK_BYTES, PROTOCOL_MAJOR, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::now_ms;
use crate::driver::{drive, summary, Peer, Shared, ANNOUNCEMENT_QUEUE};
use crate::error::JobPrivacyError;
use crate::job::{lock, JobRuntime};
use crate::secagg::{SecAggRefusal, MASKED_PHASE};
use crate::store::{JobPhase, JobPrivacy, JobRecord, StoredTrain};
use crate::upload;

/// Most model families a participant may declare.
const MAX_FAMILIES: usize = 16;

/// Longest `data_description` a job may carry.
const MAX_DATA_DESCRIPTION_BYTES: usize = 1000;

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
    fn refuse_upload(&self, who: &NodeIdentity, detail: &str, status: Status) -> Status {
        tracing::warn!(participant = %who, %detail, "update refused");
        self.shared.audit.record(&who.to_string(), Action::UpdateUpload, Outcome::Refused, detail);
        status
    }
}

/// Checks a job's privacy section; the tenants and reservation are filled in by the caller.
fn validate_privacy(
    p: &v1::PrivacySpec,
    spec: &v1::JobSpec,
    secure: bool,
    model: &ModelSpec,
) -> Result<JobPrivacy, JobPrivacyError> {
    use JobPrivacyError as E;
    if !matches!(model, ModelSpec::Intent(_)) {
        return Err(E::Family(model.family()));
    }
    if !secure {
        return Err(E::NotSecure);
    }
    hearth_crypto::pki::validate_node_id(&p.family).map_err(E::BudgetFamily)?;
    let range =
        |field, value: f64, ok: bool, range| if ok { Ok(()) } else { Err(E::Range { field, value, range }) };
    let clip = p.clipping_norm;
    range("clipping_norm", clip, clip.is_finite() && clip > 0.0 && clip <= 1e6, "(0, 1e6]")?;
    let z = p.noise_multiplier;
    range("noise_multiplier", z, z.is_finite() && z > 0.0 && z <= 1e4, "(0, 1e4]")?;
    range("sampling_rate", p.sampling_rate, p.sampling_rate > 0.0 && p.sampling_rate <= 1.0, "(0, 1]")?;
    let unit = if p.privacy_unit.is_empty() { "record".to_string() } else { p.privacy_unit.clone() };
    if unit != "record" {
        return Err(E::Unit(unit));
    }
    if p.declared_records == 0 || p.declared_records > 1_000_000_000_000 {
        return Err(E::DeclaredRecords(p.declared_records));
    }
    let bias_scale = if p.bias_scale == 0.0 { 1.0 } else { p.bias_scale };
    range("delta", p.delta, p.delta == 0.0 || (p.delta > 0.0 && p.delta < 1e-2), "(0, 0.01)")?;
    range("bias_scale", p.bias_scale, bias_scale > 0.0 && bias_scale <= 1.0, "(0, 1]")?;
    let max_cohort = match p.max_cohort {
        0 => spec.wait_for_participants.max(spec.participants_per_round).max(spec.min_participants),
        n => n,
    };
    if max_cohort < spec.min_participants || max_cohort > 10_000 {
        return Err(E::MaxCohort { max_cohort, min_participants: spec.min_participants });
    }
    let min_survivors = if p.min_survivors == 0 { spec.min_participants } else { p.min_survivors };
    if min_survivors == 0 || min_survivors > spec.min_participants.max(1) {
        return Err(E::MinSurvivors { min_survivors, min_participants: spec.min_participants });
    }
    let j = JobPrivacy {
        family: p.family.clone(),
        clipping_norm: p.clipping_norm,
        noise_multiplier: p.noise_multiplier,
        sampling_rate: p.sampling_rate,
        privacy_unit: unit,
        min_survivors,
        reservation: None,
        tenants: Vec::new(),
        declared_records: p.declared_records,
        bias_scale,
        max_cohort,
        dimension: model.num_params() as u64,
        delta: if p.delta == 0.0 { 1e-5 } else { p.delta },
    };
    // The rounds must have room for the noise: checked now rather than at the first round.
    j.config(spec.rounds)?.round_grid(j.round_shape(j.max_cohort))?;
    Ok(j)
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
        let declined = slot.as_ref().and_then(|slot| {
            let u = lock(&slot.round).as_mut().filter(|r| r.round == msg.round).map(|r| r.decline(&who.id));
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
                let detail = format!("no secure round {} of {:?} is in progress", msg.round, msg.job_id);
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
        let refuse = |detail: String| {
            self.shared.audit.record(&who.to_string(), Action::JobSubmit, Outcome::Refused, &detail);
            Status::invalid_argument(detail)
        };
        let model =
            ModelSpec::from_json(&spec.model_spec_json).map_err(|e| refuse(format!("model spec: {e}")))?;
        let server_learning_rate =
            if spec.server_learning_rate == 0.0 { 1.0 } else { spec.server_learning_rate };
        // Federated averaging applies the mean update (a step of local training): at most 10 times it. A DP
        // job steps on the noisy mean gradient of single records, which takes a larger rate.
        let max_lr = if spec.privacy.is_some() { 10_000.0 } else { 10.0 };
        if !(server_learning_rate > 0.0 && server_learning_rate <= max_lr) {
            return Err(refuse(format!(
                "server_learning_rate {} must be in (0, {max_lr}]",
                spec.server_learning_rate
            )));
        }
        if !(0.0..=0.99).contains(&spec.server_momentum) {
            return Err(refuse(format!("server_momentum {} must be in [0, 0.99]", spec.server_momentum)));
        }
        let secagg_clip =
            if spec.secagg_clip == 0.0 { crate::secagg::DEFAULT_CLIP } else { spec.secagg_clip };
        if !(secagg_clip.is_finite() && secagg_clip > 0.0 && secagg_clip <= 1e6) {
            return Err(refuse(format!("secagg_clip {} must be in (0, 1e6]", spec.secagg_clip)));
        }
        let secagg_weight_cap = if spec.secagg_weight_cap == 0.0 {
            crate::secagg::DEFAULT_WEIGHT_CAP
        } else {
            spec.secagg_weight_cap
        };
        if !(1.0..=1e12).contains(&secagg_weight_cap) {
            return Err(refuse(format!("secagg_weight_cap {} must be in [1, 1e12]", spec.secagg_weight_cap)));
        }
        let secure_aggregation = !spec.plain_aggregation;
        if secure_aggregation && spec.min_participants < 3 {
            return Err(refuse(format!(
                "min_participants {} is below 3: a securely aggregated sum of two updates would show each of \
                 the two the other's update (set plain_aggregation to opt out of secure aggregation)",
                spec.min_participants
            )));
        }
        let escalation_target_recall = match (&model, spec.escalation_target_recall) {
            (ModelSpec::Emotion(_), t) if t > 0.0 && t <= 1.0 => Some(t),
            (ModelSpec::Emotion(_), t) => {
                return Err(refuse(format!(
                    "escalation_target_recall {t} must be in (0, 1] for an emotion job: the recall of anger \
                     that each participant's escalation threshold must reach, as the policy states it (e.g. 0.7)"
                )))
            }
            (_, 0.0) => None,
            (other, t) => {
                return Err(refuse(format!(
                    "escalation_target_recall {t} applies to emotion jobs only; this is a {} job",
                    other.family()
                )))
            }
        };
        if spec.data_description.len() > MAX_DATA_DESCRIPTION_BYTES
            || spec.data_description.chars().any(char::is_control)
        {
            return Err(refuse(format!(
                "data_description must be at most {MAX_DATA_DESCRIPTION_BYTES} bytes without control characters"
            )));
        }
        let train = spec.train.ok_or_else(|| refuse("train parameters are missing".into()))?;
        let shape = JobShape {
            rounds: spec.rounds,
            min_participants: spec.min_participants,
            round_deadline_s: spec.round_deadline_s,
            num_params: model.num_params() as u64,
            local_epochs: train.local_epochs,
            learning_rate: train.learning_rate,
            batch_size: train.batch_size,
            l2: train.l2,
            plain_aggregation: spec.plain_aggregation,
        };
        self.shared.config.policy.check(&shape).map_err(|e| refuse(format!("policy: {e}")))?;
        let sequence = self.shared.next_sequence.fetch_add(1, Ordering::SeqCst);
        let id = if spec.job_id.is_empty() {
            format!("job-{sequence}-{:04x}", rand::random::<u16>())
        } else {
            validate_job_id(&spec.job_id)?;
            spec.job_id.clone()
        };
        let model_spec_json = String::from_utf8(model.to_json()).map_err(|e| refuse(e.to_string()))?;
        if lock(&self.shared.jobs).contains_key(&id) {
            return Err(Status::already_exists(format!("job {id} exists")));
        }
        // Differential privacy: with a policy in force, every job must be private and its worst case must
        // fit every participating institution's budget, reserved here before the job is accepted.
        let mut privacy = match spec.privacy.as_ref() {
            None if self.shared.privacy.enforced() => {
                return Err(refuse(
                    "the consortium's privacy policy is in force: training jobs must be differentially private \
                     (give the job a [privacy] section: family, clipping_norm, noise_multiplier, sampling_rate)"
                        .into(),
                ))
            }
            None => None,
            Some(p) => Some(validate_privacy(p, &spec, secure_aggregation, &model).map_err(|e| refuse(e.to_string()))?),
        };
        if let Some(p) = privacy.as_mut().filter(|_| self.shared.privacy.enforced()) {
            let tenants = self.shared.privacy.family_tenants(&p.family);
            if tenants.is_empty() {
                return Err(refuse(format!(
                    "the privacy policy gives no institution a budget in family {:?}",
                    p.family
                )));
            }
            p.tenants = tenants;
            let (shared, job_privacy, job_id) = (Arc::clone(&self.shared), p.clone(), id.clone());
            let (rounds, min) = (spec.rounds, spec.min_participants);
            let reserved = tokio::task::spawn_blocking(move || {
                shared.privacy.reserve_training(&job_id, &job_privacy, rounds, min)
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
                }
                Err(crate::privacy::PrivacyError::Store(e)) => {
                    return Err(Status::internal(format!("could not persist the budget reservation: {e}")))
                }
                Err(e) => {
                    self.shared.audit.record(
                        &who.to_string(),
                        Action::BudgetReserve,
                        Outcome::Refused,
                        &format!("job {id}: {e}"),
                    );
                    return Err(Status::resource_exhausted(format!("privacy budget: {e}")));
                }
            }
        }
        let record = JobRecord {
            id: id.clone(),
            model_spec_json,
            rounds: spec.rounds,
            train: StoredTrain {
                local_epochs: train.local_epochs,
                learning_rate: train.learning_rate,
                batch_size: train.batch_size,
                l2: train.l2,
                seed: train.seed,
            },
            participants_per_round: spec.participants_per_round,
            min_participants: spec.min_participants,
            round_deadline_s: spec.round_deadline_s,
            wait_for_participants: spec.wait_for_participants,
            submitted_by: who.to_string(),
            phase: JobPhase::Running,
            committed: vec![],
            sequence,
            server_learning_rate,
            server_momentum: spec.server_momentum,
            secure_aggregation,
            secagg_clip,
            secagg_weight_cap,
            privacy: privacy.clone(),
            escalation_target_recall,
            data_description: spec.data_description.clone(),
            failure: String::new(),
        };
        let params = vec![0.0f32; model.num_params()];
        let release = || {
            if let Some(r) = privacy.as_ref().and_then(|p| p.reservation) {
                if let Err(e) = self.shared.privacy.release(r) {
                    tracing::error!(job = %id, error = %e, "could not release the budget reservation");
                }
            }
        };
        let job = {
            let mut jobs = lock(&self.shared.jobs);
            if jobs.contains_key(&id) {
                drop(jobs);
                release();
                return Err(Status::already_exists(format!("job {id} exists")));
            }
            let job = Arc::new(JobRuntime::new(record.clone(), params.len(), params.clone(), vec![]));
            jobs.insert(id.clone(), Arc::clone(&job));
            job
        };
        let shared = Arc::clone(&self.shared);
        let saved = tokio::task::spawn_blocking(move || shared.store.save(&record, Some((&params, &[]))))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Err(e) = saved {
            lock(&self.shared.jobs).remove(&id);
            release();
            return Err(Status::internal(format!("could not persist job: {e}")));
        }
        self.shared.audit.record(
            &who.to_string(),
            Action::JobSubmit,
            Outcome::Ok,
            &format!("job {id}: {} rounds, {} params", shape.rounds, shape.num_params),
        );
        tracing::info!(job = %id, by = %who, "job accepted");
        tokio::spawn(drive(Arc::clone(&self.shared), job));
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
        let rec = lock(&job.record).clone();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for r in &rec.committed {
                let ev = v1::JobEvent { kind: Some(job_event::Kind::Committed(summary(r))) };
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            let mut last = rec.latest_version();
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
