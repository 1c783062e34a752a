//! The coordinator's shared state (participants, jobs, store) and the task that drives each job's rounds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_audit::{Action, Outcome};
use hearth_crypto::pki::{NodeIdentity, Role};
use hearth_proto::v1::{self, announcement, job_event, Announcement};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use tokio::sync::{mpsc, Semaphore};
use tonic::Status;

use crate::aggregate::Aggregator;
use crate::audit::{now_ms, AuditLog};
use crate::config::CoordinatorConfig;
use crate::error::{Missing, RoundError};
use crate::job::{lock, ClosedRound, JobRuntime, OpenRound, MAX_ROUND_ATTEMPTS, RETRY_PAUSE};
use tracing::Instrument;

use crate::secagg::{PhaseOutcome, SecAggRound, SecureSlot, Setup, MASKED_PHASE, PHASES, PHASE_TIMEOUT};
use crate::store::{JobPhase, Store, StoreError};

/// The sending half of a participant's announcement stream.
pub(crate) type AnnouncementTx = mpsc::Sender<Result<Announcement, Status>>;

/// How many announcements may queue for one participant before it counts as stalled and is dropped.
pub(crate) const ANNOUNCEMENT_QUEUE: usize = 64;

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) tx: Option<AnnouncementTx>,
    /// The certificate it presented on its connection (DER), relayed to its cohort in secure aggregation.
    pub(crate) cert: Option<Arc<[u8]>>,
    pub(crate) subscription: u64,
    pub(crate) last_seen_ms: u64,
    /// The model families it holds data for, as it declared them at registration; `None` (a participant
    /// that declares none) is invited to every job.
    pub(crate) families: Option<Vec<String>>,
}

impl Peer {
    /// Whether it should be invited to a job of `family`.
    pub(crate) fn holds(&self, family: &str) -> bool {
        self.families.as_ref().is_none_or(|f| f.iter().any(|x| x == family))
    }
}

/// State shared by the gRPC service and the job drivers.
#[derive(Debug)]
pub struct Shared {
    pub(crate) config: CoordinatorConfig,
    /// The consortium CA certificate (DER): participants' protocol keys come from certificates it issued.
    pub(crate) ca_der: Vec<u8>,
    /// Participants' certificates already verified (the cohort is mostly the same every round).
    pub(crate) verified: hearth_crypto::pki::VerifiedCertCache,
    pub(crate) store: Arc<Store>,
    /// The privacy policy in force and the budget ledger.
    pub(crate) privacy: crate::privacy::Privacy,
    pub(crate) audit: AuditLog,
    pub(crate) peers: Mutex<HashMap<String, Peer>>,
    pub(crate) jobs: Mutex<HashMap<String, Arc<JobRuntime>>>,
    /// Secure rounds in progress (of jobs and of analytics queries), by job or query id.
    pub(crate) secure: Mutex<HashMap<String, Arc<SecureSlot>>>,
    pub(crate) next_subscription: AtomicU64,
    pub(crate) next_sequence: AtomicU64,
    /// Held while a job submission is checked, reserved and persisted: one at a time.
    pub(crate) submissions: tokio::sync::Mutex<()>,
    /// Bounds how many model-sized upload buffers exist at once.
    pub(crate) upload_slots: Semaphore,
    /// The newest revocation list from the configured file: asked at every handshake, call and roster.
    pub(crate) revocations: Arc<hearth_node::revocation::RevocationState>,
    /// When the revocation list file last changed, as last read: it is read again only after a change.
    pub(crate) revocations_seen: Mutex<Option<std::time::SystemTime>>,
    /// Counters for `/metrics`: drop-outs and secure-aggregation traffic since the start.
    pub(crate) traffic: crate::ops::Traffic,
}

impl Shared {
    /// The caller's identity, from its client certificate; refused (and audited as `action`, denied)
    /// unless its role is one of `roles`. Every gRPC handler starts here.
    pub(crate) fn require<T>(
        &self,
        req: &tonic::Request<T>,
        action: Action,
        roles: &[Role],
    ) -> Result<NodeIdentity, Status> {
        let who = hearth_transport::peer_identity(req)?;
        // A connection made before its certificate was revoked stays open: each call is checked again.
        let cert = hearth_transport::peer_certificate(req)?;
        if self.revocations.is_revoked(&cert) {
            self.audit.record(&who.to_string(), Action::CertRevoked, Outcome::Denied, &format!("{action}"));
            return Err(Status::permission_denied(format!(
                "the consortium CA revoked the certificate of {who}; {action} refused"
            )));
        }
        if roles.contains(&who.role) {
            return Ok(who);
        }
        self.audit.record(&who.to_string(), action, Outcome::Denied, "role not allowed");
        Err(Status::permission_denied(format!("{action} is not allowed for a {} certificate", who.role)))
    }

    /// Opens the store (sealing models with `keys`) under the configured state directory; `audit` is
    /// the node's open audit log.
    pub fn open(
        config: &CoordinatorConfig,
        keys: Arc<hearth_node::keys::NodeKeys>,
        audit: AuditLog,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Arc::new(Store::open(&config.state_dir.join(crate::store::STORE_FILE), keys)?);
        let privacy = crate::privacy::Privacy::open(Arc::clone(&store))
            .map_err(|e| StoreError::Db(format!("opening the privacy ledger: {e}")))?;
        let ca_pem = std::fs::read_to_string(&config.tls.ca).map_err(|e| {
            StoreError::Db(format!("reading the CA certificate {}: {e}", config.tls.ca.display()))
        })?;
        let ca_der = hearth_crypto::pki::cert_der_from_pem(&ca_pem)
            .map_err(|e| StoreError::Db(format!("the CA certificate {}: {e}", config.tls.ca.display())))?;
        let revocations =
            hearth_node::revocation::RevocationState::open(ca_der.clone(), Some(&config.state_dir))
                .map_err(|e| StoreError::Db(format!("the kept revocation list: {e}")))?;
        Ok(Arc::new(Self {
            revocations: Arc::new(revocations),
            revocations_seen: Mutex::new(None),
            traffic: crate::ops::Traffic::default(),
            config: config.clone(),
            ca_der,
            verified: hearth_crypto::pki::VerifiedCertCache::new(4096),
            store,
            privacy,
            audit,
            peers: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            secure: Mutex::new(HashMap::new()),
            next_subscription: AtomicU64::new(1),
            next_sequence: AtomicU64::new(1),
            submissions: tokio::sync::Mutex::new(()),
            upload_slots: Semaphore::new(config.max_concurrent_uploads.max(1)),
        }))
    }

    /// Reads the configured revocation list when it changed, takes it when newer (audited), and drops the
    /// announcement streams of participants it revokes: they must reconnect, and their handshake fails.
    pub(crate) fn refresh_revocations(&self) {
        let path = self.config.revocation_list_path();
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        {
            let mut seen = lock(&self.revocations_seen);
            if modified.is_none() || *seen == modified {
                return;
            }
            *seen = modified;
        }
        match self.revocations.offer_file(&path) {
            Ok(None) | Ok(Some(hearth_node::revocation::Offered::NotNewer { .. })) => {}
            Ok(Some(hearth_node::revocation::Offered::Adopted { number, revoked })) => {
                tracing::info!(number, revoked, list = %path.display(), "revocation list taken");
                self.audit.record_event(
                    hearth_audit::Event::new("system", Action::RevocationsUpdate, Outcome::Ok)
                        .object(number.to_string())
                        .detail(format!("from {}: {revoked} certificates revoked", path.display())),
                );
                let mut peers = lock(&self.peers);
                for (id, peer) in peers.iter_mut() {
                    if !peer.cert.as_ref().is_some_and(|c| self.revocations.is_revoked(c)) {
                        continue;
                    }
                    // An error item ends the stream (the heartbeat task holds a sender too).
                    if let Some(tx) = peer.tx.take() {
                        let _ = tx.try_send(Err(Status::permission_denied(
                            "the consortium CA revoked this participant's certificate",
                        )));
                        tracing::warn!(participant = %id, "certificate revoked: announcement stream closed");
                        self.audit.record(
                            id,
                            Action::CertRevoked,
                            Outcome::Denied,
                            "announcement stream closed",
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "revocation list refused");
                self.audit.record("system", Action::RevocationsUpdate, Outcome::Refused, &e.to_string());
            }
        }
    }

    /// Reloads stored jobs and restarts the driver of every job still running, after its last committed
    /// round.
    pub fn resume_jobs(self: &Arc<Self>) {
        let loaded = match self.store.load_all() {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "could not load stored jobs; starting without them");
                return;
            }
        };
        for (record, params, velocity) in loaded {
            let seq = record.sequence;
            self.next_sequence.fetch_max(seq + 1, Ordering::SeqCst);
            let running = record.phase == JobPhase::Running;
            let id = record.id.clone();
            let committed = record.committed.len();
            let num_params = params.len();
            let job = Arc::new(JobRuntime::new(record, num_params, params, velocity));
            lock(&self.jobs).insert(id.clone(), Arc::clone(&job));
            // Rounds committed before a crash are charged now if they were not yet (by round number, so
            // never twice).
            let reservation = lock(&job.record).privacy.as_ref().and_then(|p| p.reservation);
            if let Some(reservation) = reservation {
                let rounds: Vec<u64> = lock(&job.record).committed.iter().map(|r| r.round).collect();
                for round in rounds {
                    if let Err(e) = self.privacy.commit_round(reservation, round) {
                        tracing::error!(job = %id, round, error = %e, "could not reconcile the budget");
                    }
                }
            }
            if running {
                tracing::info!(job = %id, committed, "resuming job after restart");
                self.audit.record(
                    "system",
                    Action::JobResume,
                    Outcome::Ok,
                    &format!("job {id} after round {committed}"),
                );
                tokio::spawn(drive(Arc::clone(self), job));
            }
        }
    }

    /// Participants with a live announcement stream, with the number of that stream. A participant that
    /// reconnects gets a new number: it lost whatever round state it had, so a round that started before
    /// counts it as gone.
    pub(crate) fn live(&self) -> HashMap<String, u64> {
        lock(&self.peers)
            .iter()
            .filter(|(_, p)| p.tx.as_ref().is_some_and(|tx| !tx.is_closed()))
            .map(|(id, p)| (id.clone(), p.subscription))
            .collect()
    }

    /// Ids of participants with a live announcement stream.
    pub(crate) fn connected(&self) -> HashSet<String> {
        lock(&self.peers)
            .iter()
            .filter(|(_, p)| p.tx.as_ref().is_some_and(|tx| !tx.is_closed()))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ids of participants with a live announcement stream that hold data of `family`: those a job of
    /// that family invites.
    pub(crate) fn connected_holding(&self, family: &str) -> HashSet<String> {
        lock(&self.peers)
            .iter()
            .filter(|(_, p)| p.tx.as_ref().is_some_and(|tx| !tx.is_closed()) && p.holds(family))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ids of participants that registered at some time (connected or not) and hold data of `family`.
    pub(crate) fn known_holding(&self, family: &str) -> HashSet<String> {
        lock(&self.peers).iter().filter(|(_, p)| p.holds(family)).map(|(id, _)| id.clone()).collect()
    }

    /// Sends `a` to one participant; a participant whose queue is full is dropped (it reconnects).
    pub(crate) fn announce_to(&self, participant: &str, a: announcement::Kind) -> bool {
        let mut peers = lock(&self.peers);
        let Some(peer) = peers.get_mut(participant) else { return false };
        let Some(tx) = peer.tx.as_ref() else { return false };
        match tx.try_send(Ok(Announcement { kind: Some(a) })) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(participant, error = %e, "announcement queue unusable; dropping subscription");
                peer.tx = None;
                false
            }
        }
    }

    /// Sends `a` to every connected participant.
    pub(crate) fn announce_all(&self, a: &announcement::Kind) {
        for id in self.connected() {
            self.announce_to(&id, a.clone());
        }
    }

    /// The job most recently submitted that has committed at least one round.
    pub(crate) fn latest_job(&self) -> Option<Arc<JobRuntime>> {
        lock(&self.jobs)
            .values()
            .filter(|j| j.global().version > 0)
            .max_by_key(|j| lock(&j.record).sequence)
            .cloned()
    }

    /// For each model family, the job most recently submitted that has committed at least one round: the
    /// models a (re)connecting participant should serve.
    pub(crate) fn latest_jobs(&self) -> Vec<Arc<JobRuntime>> {
        let mut latest: HashMap<String, Arc<JobRuntime>> = HashMap::new();
        for j in lock(&self.jobs).values().filter(|j| j.global().version > 0) {
            let seq = lock(&j.record).sequence;
            let newer = latest.get(&j.family).is_none_or(|cur| lock(&cur.record).sequence < seq);
            if newer {
                latest.insert(j.family.clone(), Arc::clone(j));
            }
        }
        latest.into_values().collect()
    }

    pub(crate) fn job(&self, id: &str) -> Option<Arc<JobRuntime>> {
        lock(&self.jobs).get(id).cloned()
    }
}

/// Picks the participants invited to `round`: all connected ones, or a seeded sample of `per_round`.
fn select(mut connected: Vec<String>, per_round: u32, seed: u64, round: u64) -> HashSet<String> {
    connected.sort();
    if per_round == 0 || per_round as usize >= connected.len() {
        return connected.into_iter().collect();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ round.rotate_left(32));
    connected.choose_multiple(&mut rng, per_round as usize).cloned().collect()
}

/// Runs a job's remaining rounds to the end.
pub(crate) async fn drive(shared: Arc<Shared>, job: Arc<JobRuntime>) {
    let mut attempts = 0u32;
    loop {
        let rec = lock(&job.record).clone();
        if rec.phase != JobPhase::Running {
            return;
        }
        if let Some(who) = job.cancelled_by() {
            finish(&shared, &job, JobPhase::Failed, format!("cancelled by {who}")).await;
            return;
        }
        let round = rec.latest_version() + 1;
        if round > rec.rounds {
            finish(&shared, &job, JobPhase::Finished, String::new()).await;
            return;
        }
        // Wait for enough participants.
        let needed = if round == 1 {
            rec.wait_for_participants.max(rec.min_participants)
        } else {
            rec.min_participants
        };
        // A DP job's rounds are open only to the institutions whose budgets it reserved.
        let eligible = |id: &String| {
            rec.privacy.as_ref().filter(|p| p.reservation.is_some()).is_none_or(|p| p.tenants.contains(id))
        };
        let closed = match wait_for_cohort(&shared, &job, &rec, round, needed, &eligible).await {
            Ok(connected) => {
                // A DP job's rounds never exceed the cohort its quantiser and charge were computed for.
                let per_round = match &rec.privacy {
                    Some(p) if p.max_cohort > 0 && rec.participants_per_round == 0 => p.max_cohort,
                    Some(p) if p.max_cohort > 0 => rec.participants_per_round.min(p.max_cohort),
                    _ => rec.participants_per_round,
                };
                let invited = select(connected, per_round, rec.train.seed, round);
                // What the round logs carries its span (`--log-format json`: "span").
                let span = tracing::info_span!("round", job = %rec.id, round);
                if rec.secure_aggregation {
                    secure_round(&shared, &job, &rec, round, invited).instrument(span).await
                } else {
                    plain_round(&shared, &job, &rec, round, invited).instrument(span).await
                }
            }
            Err(e) => Err(e),
        };
        let dp = rec.privacy.as_ref().filter(|p| p.dimension > 0).map(|privacy| crate::job::DpStep {
            privacy,
            model_spec_json: &rec.model_spec_json,
            rounds: rec.rounds,
        });
        if let Ok(c) = &closed {
            let dropped = c.invited.len().saturating_sub(c.contributors.len());
            shared.traffic.dropouts.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        if job.cancelled_by().is_some() {
            // Nothing of a round that ran on after the job was cancelled is committed.
            continue;
        }
        let committed = closed.and_then(|c| {
            job.commit_aggregate(c, rec.min_participants, rec.server_learning_rate, rec.server_momentum, dp)
        });
        match committed {
            Ok((round_rec, model, velocity)) => {
                attempts = 0;
                // The phase stays `Running` here: the next turn of the loop finds no round left and ends the
                // job through `finish`, which also tells watchers and participants.
                let mut updated = rec.clone();
                updated.committed.push(round_rec.clone());
                let params = model.params.clone();
                let shared2 = Arc::clone(&shared);
                let to_save = updated.clone();
                let vel = velocity.clone();
                let saved =
                    tokio::task::spawn_blocking(move || shared2.store.save(&to_save, Some((&params, &vel))))
                        .await;
                match saved {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(job = %rec.id, round, error = %e, "could not persist the round; stopping the job");
                        shared.audit.record(
                            "system",
                            Action::RoundCommit,
                            Outcome::Error,
                            &format!("{}#{round}: {e}", rec.id),
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "persist task failed");
                        return;
                    }
                }
                *lock(&job.record) = updated;
                *lock(&job.velocity) = velocity;
                job.publish(model);
                charge_round(&shared, &rec, round).await;
                let how =
                    if rec.secure_aggregation { "securely aggregated sum of" } else { "plain average of" };
                shared.audit.record(
                    "system",
                    Action::RoundCommit,
                    Outcome::Ok,
                    &format!(
                        "job {} round {round}: {how} {} updates from [{}], {} examples",
                        rec.id,
                        round_rec.participants,
                        round_rec.contributors.join(","),
                        round_rec.examples
                    ),
                );
                tracing::info!(job = %rec.id, round, participants = round_rec.participants, loss = round_rec.train_loss, secs = round_rec.seconds, "round committed");
                let mut round_rec = round_rec;
                let evaluation =
                    crate::evaluation::evaluate_and_audit(&shared, &rec, round, &round_rec.contributors)
                        .await;
                if let Some(e) = evaluation {
                    round_rec.evaluation = Some(e.clone());
                    let to_save = {
                        let mut r = lock(&job.record);
                        if let Some(last) = r.committed.iter_mut().find(|c| c.round == round) {
                            last.evaluation = Some(e);
                        }
                        r.clone()
                    };
                    let shared2 = Arc::clone(&shared);
                    match tokio::task::spawn_blocking(move || shared2.store.save(&to_save, None)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(job = %rec.id, round, error = %e, "could not persist the evaluation")
                        }
                        Err(e) => tracing::error!(error = %e, "persist task failed"),
                    }
                }
                job.emit_committed(summary(&round_rec));
                shared.announce_all(&announcement::Kind::RoundCommitted(v1::RoundCommitted {
                    job_id: rec.id.clone(),
                    round,
                    version: round,
                    participants: round_rec.participants,
                }));
            }
            Err(reason) => {
                attempts += 1;
                tracing::warn!(job = %rec.id, round, attempt = attempts, %reason, "round failed");
                shared.audit.record(
                    "system",
                    Action::RoundFail,
                    Outcome::Refused,
                    &format!("{}: {reason}", rec.id),
                );
                job.emit(job_event::Kind::Failed(v1::RoundFailed { round, reason: reason.to_string() }));
                let to_save = {
                    let mut r = lock(&job.record);
                    r.failures.push(crate::store::AttemptRecord {
                        round,
                        unix_ms: now_ms(),
                        reason: reason.to_string(),
                    });
                    r.clone()
                };
                let shared2 = Arc::clone(&shared);
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || shared2.store.save(&to_save, None)).await
                {
                    tracing::error!(job = %rec.id, round, error = %e, "could not persist the failed attempt");
                }
                if attempts >= MAX_ROUND_ATTEMPTS {
                    let why = format!("round {round} failed {attempts} times; the last time: {reason}");
                    finish(&shared, &job, JobPhase::Failed, why).await;
                    return;
                }
                // Backoff: 2 s after the first failure, 4 s after the second.
                tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempts - 1)).await;
            }
        }
    }
}

/// Waits until at least `needed` eligible participants holding the job's family are connected, for at most
/// the round's deadline; then fails naming the ones it waited for in vain (those that registered once, and
/// for a DP job every institution whose budget it reserved).
async fn wait_for_cohort(
    shared: &Arc<Shared>,
    job: &Arc<JobRuntime>,
    rec: &crate::store::JobRecord,
    round: u64,
    needed: u32,
    eligible: &impl Fn(&String) -> bool,
) -> Result<Vec<String>, RoundError> {
    let waited = Instant::now();
    let deadline = waited + Duration::from_secs(u64::from(rec.round_deadline_s));
    loop {
        let connected: Vec<String> =
            shared.connected_holding(&job.family).into_iter().filter(|id| eligible(id)).collect();
        if connected.len() >= needed as usize {
            return Ok(connected);
        }
        if job.cancelled_by().is_some() || lock(&job.record).phase != JobPhase::Running {
            return Err(RoundError::Stopped { round });
        }
        if Instant::now() >= deadline {
            let mut expected: HashSet<String> =
                shared.known_holding(&job.family).into_iter().filter(|id| eligible(id)).collect();
            if let Some(p) = rec.privacy.as_ref().filter(|p| p.reservation.is_some()) {
                expected.extend(p.tenants.iter().cloned());
            }
            return Err(RoundError::CohortUnreachable {
                round,
                family: job.family.clone(),
                connected: connected.len(),
                needed,
                waited_s: rec.round_deadline_s,
                missing: Missing::of(expected.into_iter().filter(|id| !connected.contains(id))),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A DP job's privacy section, as participants receive it.
fn privacy_spec(p: &crate::store::JobPrivacy, rounds: u64) -> v1::PrivacySpec {
    v1::PrivacySpec {
        family: p.family.clone(),
        clipping_norm: p.clipping_norm,
        noise_multiplier: p.noise_multiplier,
        sampling_rate: p.sampling_rate,
        privacy_unit: p.privacy_unit.clone(),
        min_survivors: p.min_survivors,
        declared_records: p.declared_records,
        bias_scale: p.bias_scale,
        max_cohort: p.max_cohort,
        delta: p.delta,
        rounds,
    }
}

/// Charges a committed round of a DP job to the budgets it reserved (idempotent: by round number).
async fn charge_round(shared: &Arc<Shared>, rec: &crate::store::JobRecord, round: u64) {
    let Some(reservation) = rec.privacy.as_ref().and_then(|p| p.reservation) else { return };
    let shared2 = Arc::clone(shared);
    let charged = tokio::task::spawn_blocking(move || shared2.privacy.commit_round(reservation, round)).await;
    match charged {
        Ok(Ok(())) => shared.audit.record(
            "system",
            Action::BudgetCharge,
            Outcome::Ok,
            &format!("job {} round {round}", rec.id),
        ),
        Ok(Err(e)) => {
            tracing::error!(job = %rec.id, round, error = %e, "could not charge the round to the budget");
            shared.audit.record(
                "system",
                Action::BudgetCharge,
                Outcome::Error,
                &format!("job {} round {round}: {e}", rec.id),
            );
        }
        Err(e) => tracing::error!(error = %e, "budget task failed"),
    }
}

fn train_params(rec: &crate::store::JobRecord) -> v1::TrainParams {
    v1::TrainParams {
        local_epochs: rec.train.local_epochs,
        learning_rate: rec.train.learning_rate,
        batch_size: rec.train.batch_size,
        l2: rec.train.l2,
        seed: rec.train.seed,
    }
}

/// Waits until `settled` says the round (or phase) can stop waiting, or `deadline()` passes.
async fn wait_until(
    changed: &tokio::sync::Notify,
    settled: impl Fn() -> bool,
    deadline: impl Fn() -> Instant,
) {
    loop {
        if settled() || Instant::now() >= deadline() {
            return;
        }
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// A round of plain federated averaging: each invited participant uploads its delta, which is validated
/// and folded into the running sum.
async fn plain_round(
    shared: &Arc<Shared>,
    job: &Arc<JobRuntime>,
    rec: &crate::store::JobRecord,
    round: u64,
    invited: HashSet<String>,
) -> Result<ClosedRound, RoundError> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(rec.round_deadline_s));
    let deadline_unix_ms = now_ms() + u64::from(rec.round_deadline_s) * 1000;
    let base_version = rec.latest_version();
    let live = shared.live();
    *lock(&job.open) = Some(OpenRound {
        round,
        base_version,
        subscriptions: invited.iter().filter_map(|id| live.get(id).map(|s| (id.clone(), *s))).collect(),
        invited: invited.clone(),
        received: HashSet::new(),
        uploading: HashSet::new(),
        nonces: HashSet::new(),
        agg: Aggregator::new(job.num_params),
        deadline,
        opened: Instant::now(),
    });
    let open = announcement::Kind::RoundOpen(v1::RoundOpen {
        job_id: rec.id.clone(),
        round,
        base_version,
        deadline_unix_ms,
        train: Some(train_params(rec)),
        model_spec_json: rec.model_spec_json.clone().into_bytes().into(),
        num_params: job.num_params as u64,
        secagg: None,
        privacy: rec.privacy.as_ref().map(|p| privacy_spec(p, rec.rounds)),
    });
    let mut sorted: Vec<&String> = invited.iter().collect();
    sorted.sort();
    for p in &sorted {
        shared.announce_to(p, open.clone());
    }
    tracing::info!(job = %rec.id, round, invited = invited.len(), "round open");
    job.emit(job_event::Kind::Opened(v1::RoundOpened {
        round,
        invited: invited.len() as u32,
        deadline_unix_ms,
    }));
    wait_until(&job.changed, || job.round_settled(&shared.live()), || deadline).await;
    job.close_plain().ok_or(RoundError::NotOpen { round })
}

/// A round under secure aggregation: the invited participants whose certificates carry a protocol key
/// form the cohort; the protocol's five phases run with a deadline each (the masked upload, which waits
/// for local training, has the round's deadline); the result is the decoded sum.
async fn secure_round(
    shared: &Arc<Shared>,
    job: &Arc<JobRuntime>,
    rec: &crate::store::JobRecord,
    round: u64,
    invited: HashSet<String>,
) -> Result<ClosedRound, RoundError> {
    let deadline_unix_ms = now_ms() + u64::from(rec.round_deadline_s) * 1000;
    // A DP round sums only the noisy clipped-gradient sums: no weight, no loss.
    let dp = rec.privacy.as_ref().filter(|p| p.dimension > 0);
    let noise =
        dp.map(|p| p.config(rec.rounds)).transpose().map_err(|source| RoundError::Noise { round, source })?;
    let spec = SecureRoundSpec {
        key: rec.id.clone(),
        round,
        min_participants: rec.min_participants,
        min_survivors: rec.min_participants.max(dp.map_or(0, |p| p.min_survivors)),
        deadline: Duration::from_secs(u64::from(rec.round_deadline_s)),
        vector_len: if dp.is_some() { job.num_params } else { job.num_params + 2 },
        clip: dp.map_or(rec.secagg_clip, |p| p.quantizer_clip()),
        weight_cap: rec.secagg_weight_cap,
        noise,
    };
    let is_dp = dp.is_some();
    let open = |setup: v1::SecAggSetup| {
        announcement::Kind::RoundOpen(v1::RoundOpen {
            job_id: rec.id.clone(),
            round,
            base_version: rec.latest_version(),
            deadline_unix_ms,
            train: Some(train_params(rec)),
            model_spec_json: rec.model_spec_json.clone().into_bytes().into(),
            num_params: job.num_params as u64,
            secagg: Some(setup),
            privacy: rec.privacy.as_ref().map(|p| privacy_spec(p, rec.rounds)),
        })
    };
    let events = |e: SecureEvent| match e {
        SecureEvent::Opened { invited } => {
            job.emit(job_event::Kind::Opened(v1::RoundOpened { round, invited, deadline_unix_ms }))
        }
        SecureEvent::Uploaded { received, invited } => {
            job.emit(job_event::Kind::UpdateReceived(v1::UpdateReceived { round, received, invited }))
        }
    };
    let num_params = job.num_params;
    run_secure_round(shared, spec, invited, open, events, move |r, sum| {
        // The only values this coordinator ever decodes: the sum over the survivors.
        let contributors = r.contributors(sum);
        let (agg, noisy_sum) = if is_dp {
            let noisy =
                r.decode_noisy(sum, num_params).map_err(|source| RoundError::Decode { round, source })?;
            let count = contributors.len() as u32;
            (Aggregator::from_sums(Vec::new(), 0.0, 0.0, count, 0), Some(noisy))
        } else {
            (r.aggregate(sum, num_params).map_err(|source| RoundError::Decode { round, source })?, None)
        };
        Ok(ClosedRound {
            round,
            invited: r.members.clone(),
            contributors,
            opened: r.opened,
            agg,
            noisy_sum,
            phase_seconds: r.phase_seconds.clone(),
        })
    })
    .await
}

/// What a secure round is, whatever it sums (a job's updates, a query's counts).
#[derive(Debug, Clone)]
pub(crate) struct SecureRoundSpec {
    /// The job or query id: messages and relays carry it.
    pub(crate) key: String,
    pub(crate) round: u64,
    pub(crate) min_participants: u32,
    /// No member signs a survivor set smaller than this (a DP round's calibration survivors).
    pub(crate) min_survivors: u32,
    pub(crate) deadline: Duration,
    pub(crate) vector_len: usize,
    pub(crate) clip: f64,
    pub(crate) weight_cap: f64,
    /// DP rounds: the noise the participants add, for the quantiser's headroom (computed for the cohort).
    pub(crate) noise: Option<hearth_models::DpConfig>,
}

/// Progress a caller may report.
pub(crate) enum SecureEvent {
    Opened { invited: u32 },
    Uploaded { received: u32, invited: u32 },
}

/// Runs one secure round over `invited`: fixes the cohort (members whose certificates carry a protocol
/// key), announces it with `open(setup)` per member, runs the five phases, and hands the unmasked sum to
/// `decode` on a blocking thread. The round's slot is registered in `Shared::secure` while it runs.
pub(crate) async fn run_secure_round<T: Send + 'static>(
    shared: &Arc<Shared>,
    spec: SecureRoundSpec,
    invited: HashSet<String>,
    open: impl Fn(v1::SecAggSetup) -> announcement::Kind,
    events: impl Fn(SecureEvent),
    decode: impl FnOnce(&SecAggRound, &hearth_secagg::UnmaskedSum) -> Result<T, RoundError> + Send + 'static,
) -> Result<T, RoundError> {
    let round = spec.round;
    let suite = shared.config.suite;
    let mut sorted: Vec<String> = invited.into_iter().collect();
    sorted.sort();
    // The cohort: each member's protocol key comes from its CA-issued certificate, which every member
    // checks again on its side.
    let mut cohort = Vec::new();
    let mut roster = Vec::new();
    {
        let peers = lock(&shared.peers);
        for id in &sorted {
            let Some(cert) = peers.get(id).and_then(|p| p.cert.clone()) else { continue };
            let key = shared
                .verified
                .verify(&shared.ca_der, &cert, std::time::SystemTime::now())
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    if shared.revocations.is_revoked(&cert) {
                        Err("its certificate is revoked".to_string())
                    } else {
                        Ok(v)
                    }
                })
                .and_then(|v| v.protocol_key(suite).map(<[u8]>::to_vec).map_err(|e| e.to_string()));
            match key {
                Ok(key) => {
                    cohort.push((id.clone(), key));
                    roster.push(v1::RosterMember {
                        participant_id: id.clone(),
                        certificate_der: cert.to_vec().into(),
                    });
                }
                Err(e) => {
                    tracing::warn!(participant = %id, error = %e, "left out of the secure-aggregation cohort");
                    shared.audit.record(
                        "system",
                        Action::SecAggCohort,
                        Outcome::Refused,
                        &format!("{id}: {e}"),
                    );
                }
            }
        }
    }
    let needed = spec.min_participants.max(spec.min_survivors);
    if cohort.len() < needed as usize {
        return Err(RoundError::CohortTooSmall { round, able: cohort.len(), needed });
    }
    let opened = Instant::now();
    let round_deadline = opened + spec.deadline;
    let phase_deadline = |now: Instant| (now + PHASE_TIMEOUT).min(round_deadline);
    let noise_headroom = match &spec.noise {
        Some(config) => config
            .noise_headroom(
                spec.clip,
                cohort.len() as u32,
                spec.vector_len as u64,
                crate::secagg::MODULUS_BITS,
            )
            .map_err(|source| RoundError::Noise { round, source })?,
        None => 0,
    };
    let setup = Setup {
        suite,
        job_id: spec.key.clone(),
        round,
        cohort,
        vector_len: spec.vector_len,
        clip: spec.clip,
        weight_cap: spec.weight_cap,
        noise_headroom,
        min_survivors: spec.min_survivors,
    };
    let first_deadline = phase_deadline(opened);
    let live = shared.live();
    let subscriptions = setup.cohort.iter().map(|(id, _)| live.get(id).copied().unwrap_or(0)).collect();
    let r = SecAggRound::open(setup, subscriptions, first_deadline).map_err(|source| RoundError::SecAgg {
        round,
        phase: 0,
        source,
        missing: Missing::default(),
    })?;
    let p = r.params.config().clone();
    let members = r.members.clone();
    let slot = Arc::new(SecureSlot::default());
    *lock(&slot.round) = Some(r);
    lock(&shared.secure).insert(spec.key.clone(), Arc::clone(&slot));
    // Unregisters the slot however this function returns.
    struct Unregister<'a>(&'a Shared, String);
    impl Drop for Unregister<'_> {
        fn drop(&mut self) {
            lock(&self.0.secure).remove(&self.1);
        }
    }
    let _unregister = Unregister(shared, spec.key.clone());
    let phase_deadline_unix_ms =
        now_ms() + first_deadline.saturating_duration_since(opened).as_millis() as u64;
    for (i, id) in members.iter().enumerate() {
        let setup = v1::SecAggSetup {
            suite: suite.as_str().into(),
            roster: roster.clone(),
            degree: p.degree,
            threshold: p.threshold,
            modulus_bits: u32::from(p.modulus_bits),
            your_index: i as u32,
            clip: spec.clip,
            weight_cap: spec.weight_cap,
            vector_len: u64::from(p.vector_len),
            phase_deadline_unix_ms,
            noise_headroom,
            instance: p.instance,
            min_survivors: p.min_survivors,
        };
        shared.announce_to(id, open(setup));
    }
    tracing::info!(key = %spec.key, round, cohort = members.len(), degree = p.degree, threshold = p.threshold, "secure-aggregation round open");
    events(SecureEvent::Opened { invited: members.len() as u32 });

    let settled = || lock(&slot.round).as_ref().is_none_or(|r| r.settled(&shared.live()));
    let deadline = || lock(&slot.round).as_ref().map_or_else(Instant::now, |r| r.deadline);
    let mut decode = Some(decode);
    for phase in 0..PHASES {
        wait_until(&slot.changed, settled, deadline).await;
        tracing::debug!(key = %spec.key, round, phase, at_s = opened.elapsed().as_secs_f64(), "secure-aggregation phase closing");
        let outcome = if phase + 1 < PHASES {
            // The masked upload waits for local work (training, counting): it gets the rest of the round.
            let next =
                if phase + 1 == MASKED_PHASE { round_deadline } else { phase_deadline(Instant::now()) };
            let mut g = lock(&slot.round);
            let r = g.as_mut().ok_or(RoundError::Protocol { round, phase, what: "the round was closed" })?;
            if phase == MASKED_PHASE {
                events(SecureEvent::Uploaded {
                    received: r.responded() as u32,
                    invited: members.len() as u32,
                });
                // The masked inputs are now fixed: with fewer than min_participants of them the sum is never
                // unmasked (for a DP round or a query, fewer noise shares than calibrated; for any round,
                // too small a crowd to hide in).
                if r.responded() < spec.min_participants as usize {
                    let got = r.responded();
                    let missing = Missing::of(r.silent_why());
                    drop(g);
                    lock(&slot.round).take();
                    return Err(RoundError::TooFewMasked {
                        round,
                        got,
                        needed: spec.min_participants,
                        missing,
                    });
                }
            }
            // Who did not answer this phase: named if the protocol aborts for lack of them.
            let silent = Missing::of(r.silent_why());
            match r.close_phase(next) {
                Ok(PhaseOutcome::Relay(messages)) => Ok(Some(messages)),
                Ok(PhaseOutcome::Sum(_)) => {
                    Err(RoundError::Protocol { round, phase, what: "the protocol ended before unmasking" })
                }
                Err(source) => Err(RoundError::SecAgg { round, phase, source, missing: silent }),
            }
        } else {
            // Unmasking expands every survivor's masks over the whole vector: CPU work, off the workers.
            let r = lock(&slot.round).take().ok_or(RoundError::Protocol {
                round,
                phase,
                what: "the round was closed",
            })?;
            let decode = decode.take().ok_or(RoundError::Protocol {
                round,
                phase,
                what: "the round was already decoded",
            })?;
            let result = tokio::task::spawn_blocking(move || {
                let mut r = r;
                let silent = Missing::of(r.silent_why());
                match r.close_phase(Instant::now()) {
                    Ok(PhaseOutcome::Sum(sum)) => decode(&r, &sum),
                    Ok(PhaseOutcome::Relay(_)) => {
                        Err(RoundError::Protocol { round, phase, what: "unmasking produced no sum" })
                    }
                    Err(source) => Err(RoundError::SecAgg { round, phase, source, missing: silent }),
                }
            })
            .await
            .map_err(|e| RoundError::Task { round, message: e.to_string() })?;
            return result;
        };
        match outcome {
            Ok(Some(messages)) => {
                for (id, payload) in messages {
                    shared.traffic.secagg_relayed.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    shared.announce_to(
                        &id,
                        announcement::Kind::Secagg(v1::SecAggRelay {
                            job_id: spec.key.clone(),
                            round,
                            phase: phase + 1,
                            payload: payload.into(),
                            instance: p.instance,
                        }),
                    );
                }
            }
            Ok(None) => {}
            Err(e) => {
                lock(&slot.round).take();
                return Err(e);
            }
        }
    }
    Err(RoundError::Protocol { round, phase: PHASES, what: "the protocol ended without a sum" })
}

pub(crate) fn summary(r: &crate::store::RoundRecord) -> v1::RoundSummary {
    v1::RoundSummary {
        round: r.round,
        version: r.version,
        participants: r.participants,
        examples: r.examples,
        train_loss: r.train_loss,
        seconds: r.seconds,
        phase_seconds: r.phase_seconds.clone(),
        evaluation: r.evaluation.as_ref().map(crate::evaluation::to_proto),
    }
}

/// Ends the job: `failure` says why when `phase` is `Failed`.
async fn finish(shared: &Arc<Shared>, job: &Arc<JobRuntime>, phase: JobPhase, failure: String) {
    let rec = {
        let mut rec = lock(&job.record);
        rec.phase = phase;
        rec.failure = failure;
        rec.clone()
    };
    let shared2 = Arc::clone(shared);
    let to_save = rec.clone();
    match tokio::task::spawn_blocking(move || shared2.store.save(&to_save, None)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(job = %rec.id, error = %e, "could not persist the job's end"),
        Err(e) => tracing::error!(error = %e, "persist task failed"),
    }
    let ended = if phase == JobPhase::Finished { Outcome::Ok } else { Outcome::Error };
    shared.audit.record("system", Action::JobEnd, ended, &format!("{}: {}", phase.as_str(), rec.id));
    if let Some(reservation) = rec.privacy.as_ref().and_then(|p| p.reservation) {
        // Finished: settle at what the committed rounds released. Failed: give back the rest.
        let shared2 = Arc::clone(shared);
        let settled = tokio::task::spawn_blocking(move || match phase {
            JobPhase::Finished => shared2.privacy.settle(reservation),
            _ => shared2.privacy.release(reservation),
        })
        .await;
        let outcome = match settled {
            Ok(Ok(())) => Outcome::Ok,
            _ => Outcome::Error,
        };
        shared.audit.record(
            "system",
            Action::BudgetSettle,
            outcome,
            &format!("job {} ({})", rec.id, phase.as_str()),
        );
    }
    tracing::info!(job = %rec.id, phase = phase.as_str(), "job ended");
    let finished = finished_event(&rec);
    job.emit(job_event::Kind::Finished(finished.clone()));
    shared.announce_all(&announcement::Kind::JobFinished(finished));
}

/// The `JobFinished` of an ended job.
pub(crate) fn finished_event(rec: &crate::store::JobRecord) -> v1::JobFinished {
    v1::JobFinished {
        job_id: rec.id.clone(),
        final_version: rec.latest_version(),
        failed: rec.phase == JobPhase::Failed,
        reason: rec.failure.clone(),
        promotion_tolerance_points: rec.promotion_tolerance_points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_is_seeded_and_bounded() {
        let ids: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        let a = select(ids.clone(), 3, 42, 1);
        let b = select(ids.iter().rev().cloned().collect(), 3, 42, 1);
        assert_eq!(a.len(), 3);
        assert_eq!(a, b, "same seed and round, same cohort whatever the order");
        assert_eq!(select(ids.clone(), 0, 42, 1).len(), 10);
        assert_eq!(select(ids, 20, 42, 1).len(), 10);
    }
}
