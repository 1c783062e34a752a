//! Jobs and rounds: the state machine that opens a round, collects updates until every invited participant
//! answered (or dropped, or the deadline passed), and commits the averaged model.
//!
//! A round is [`OpenRound`] while it collects; it becomes a committed [`RoundRecord`] only through
//! [`JobRuntime::try_commit`], which refuses a round with fewer than `min_participants` updates. Updates for
//! any other round, from uninvited participants, twice from the same participant, or with a nonce seen
//! before are refused by [`JobRuntime::begin_upload`] before a byte of their payload is read.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hearth_crypto::digest::content_digest;
use hearth_proto::v1::{self, job_event, JobEvent};
use tokio::sync::{broadcast, Notify};

use crate::aggregate::Aggregator;
use crate::error::{DpStepError, Missing, RoundError};
use crate::store::{JobRecord, RoundRecord};

/// A global model version held in memory, ready to stream.
#[derive(Debug)]
pub(crate) struct GlobalModel {
    pub(crate) version: u64,
    pub(crate) params: Vec<f32>,
    /// `params` as little-endian bytes; chunks of a download are zero-copy slices of this.
    pub(crate) bytes: Bytes,
    pub(crate) sha256: [u8; 32],
}

impl GlobalModel {
    pub(crate) fn new(version: u64, params: Vec<f32>) -> Self {
        let mut raw = Vec::with_capacity(params.len() * 4);
        for p in &params {
            raw.extend_from_slice(&p.to_le_bytes());
        }
        let sha256 = content_digest(&raw);
        Self { version, params, bytes: Bytes::from(raw), sha256 }
    }
}

/// A round collecting updates.
#[derive(Debug)]
pub(crate) struct OpenRound {
    pub(crate) round: u64,
    pub(crate) base_version: u64,
    pub(crate) invited: HashSet<String>,
    /// The announcement stream each invited participant had when the round opened.
    pub(crate) subscriptions: HashMap<String, u64>,
    pub(crate) received: HashSet<String>,
    /// Participants whose upload is streaming right now.
    pub(crate) uploading: HashSet<String>,
    pub(crate) nonces: HashSet<Vec<u8>>,
    pub(crate) agg: Aggregator,
    pub(crate) deadline: Instant,
    pub(crate) opened: Instant,
}

/// What the server step of a DP job needs besides the round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DpStep<'a> {
    pub(crate) privacy: &'a crate::store::JobPrivacy,
    pub(crate) model_spec_json: &'a str,
    pub(crate) rounds: u64,
}

/// A round that stopped collecting, with what it gathered.
#[derive(Debug)]
pub(crate) struct ClosedRound {
    pub(crate) round: u64,
    /// Who was asked for an update.
    pub(crate) invited: Vec<String>,
    /// Participants whose updates are in `agg`.
    pub(crate) contributors: Vec<String>,
    pub(crate) opened: Instant,
    pub(crate) agg: Aggregator,
    /// A DP round: the decoded noisy sum of clipped gradients (then `agg` holds only the count).
    pub(crate) noisy_sum: Option<Vec<f64>>,
    /// Secure rounds: seconds from opening to the close of each phase.
    pub(crate) phase_seconds: Vec<f64>,
}

/// Why an upload was refused before its payload was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UploadRefusal {
    #[error("round {round} of job {job} is not open (open round: {open})")]
    RoundNotOpen { job: String, round: u64, open: String },
    #[error("participant {0} was not invited to this round")]
    NotInvited(String),
    #[error("participant {0} already uploaded an update for this round")]
    Duplicate(String),
    #[error("nonce was already used in this round: replayed upload refused")]
    Replay,
    #[error("update is based on model version {got}, the round trains version {expected}")]
    WrongBase { got: u64, expected: u64 },
}

/// Everything the coordinator holds about one job while it runs.
#[derive(Debug)]
pub(crate) struct JobRuntime {
    pub(crate) record: Mutex<JobRecord>,
    /// The model family of its spec: only participants holding data of it are invited.
    pub(crate) family: String,
    pub(crate) num_params: usize,
    pub(crate) global: RwLock<Arc<GlobalModel>>,
    /// The server optimizer's velocity (empty without momentum).
    pub(crate) velocity: Mutex<Vec<f32>>,
    pub(crate) open: Mutex<Option<OpenRound>>,
    /// Woken when an upload lands or a participant disconnects, so the driver re-checks its round.
    pub(crate) changed: Notify,
    pub(crate) events: broadcast::Sender<JobEvent>,
    /// Who asked to cancel the job, once someone has: the driver ends it at its next step.
    pub(crate) cancel: Mutex<Option<String>>,
    /// The last round whose `Committed` event went out. A round enters `record` before its
    /// federated evaluation is attached to it; a new watcher is replayed only announced rounds,
    /// so none is sent a round without the evaluation that follows it.
    announced: AtomicU64,
}

impl JobRuntime {
    pub(crate) fn new(record: JobRecord, num_params: usize, params: Vec<f32>, velocity: Vec<f32>) -> Self {
        let version = record.latest_version();
        let announced = AtomicU64::new(record.committed.last().map_or(0, |r| r.round));
        let (events, _) = broadcast::channel(1024);
        let family = hearth_models::ModelSpec::from_json(record.model_spec_json.as_bytes())
            .map_or_else(|_| "unknown".to_string(), |s| s.family().to_string());
        Self {
            family,
            record: Mutex::new(record),
            num_params,
            global: RwLock::new(Arc::new(GlobalModel::new(version, params))),
            velocity: Mutex::new(velocity),
            open: Mutex::new(None),
            changed: Notify::new(),
            events,
            cancel: Mutex::new(None),
            announced,
        }
    }

    pub(crate) fn global(&self) -> Arc<GlobalModel> {
        self.global.read().map(|g| Arc::clone(&g)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    pub(crate) fn emit(&self, kind: job_event::Kind) {
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(JobEvent { kind: Some(kind) });
    }

    /// Announces a committed round, once its record (evaluation included) is in `record`.
    pub(crate) fn emit_committed(&self, summary: v1::RoundSummary) {
        self.announced.store(summary.round, Ordering::SeqCst);
        self.emit(job_event::Kind::Committed(summary));
    }

    /// What a new watcher is sent before live events: the job's record, and how many of its committed
    /// rounds (the first ones; they are in round order) to replay. A finished job's are all of them; a
    /// running job's stop at the last announced round: a round committed but not yet announced is sent
    /// live, with its evaluation (the watcher skips live rounds it was replayed).
    pub(crate) fn history(&self) -> (JobRecord, usize) {
        // Read before the record: everything announced is in the record read after it.
        let announced = self.announced.load(Ordering::SeqCst);
        let rec = lock(&self.record).clone();
        let replayed = if rec.phase == crate::store::JobPhase::Running {
            rec.committed.iter().take_while(|r| r.round <= announced).count()
        } else {
            rec.committed.len()
        };
        (rec, replayed)
    }

    /// Checks an upload header against the open round and reserves the participant's slot.
    pub(crate) fn begin_upload(
        &self,
        participant: &str,
        round: u64,
        base_version: u64,
        nonce: &[u8],
    ) -> Result<Instant, UploadRefusal> {
        let mut open = lock(&self.open);
        let job = lock(&self.record).id.clone();
        let Some(r) = open.as_mut().filter(|r| r.round == round) else {
            let open = open.as_ref().map_or("none".to_string(), |r| r.round.to_string());
            return Err(UploadRefusal::RoundNotOpen { job, round, open });
        };
        if !r.invited.contains(participant) {
            return Err(UploadRefusal::NotInvited(participant.to_string()));
        }
        if !r.nonces.insert(nonce.to_vec()) {
            return Err(UploadRefusal::Replay);
        }
        if r.received.contains(participant) || r.uploading.contains(participant) {
            return Err(UploadRefusal::Duplicate(participant.to_string()));
        }
        if base_version != r.base_version {
            return Err(UploadRefusal::WrongBase { got: base_version, expected: r.base_version });
        }
        r.uploading.insert(participant.to_string());
        Ok(r.deadline)
    }

    /// Asks the job to stop: the open round (plain or secure, whose slot is `secure`) is abandoned now and
    /// the driver ends the job, failed with `cancelled by WHO`. False when the job is not running.
    pub(crate) fn request_cancel(&self, who: &str, secure: Option<&crate::secagg::SecureSlot>) -> bool {
        if lock(&self.record).phase != crate::store::JobPhase::Running {
            return false;
        }
        lock(&self.cancel).get_or_insert_with(|| who.to_string());
        lock(&self.open).take();
        if let Some(slot) = secure {
            lock(&slot.round).take();
            slot.changed.notify_one();
        }
        self.changed.notify_one();
        true
    }

    /// Who cancelled the job, if someone did.
    pub(crate) fn cancelled_by(&self) -> Option<String> {
        lock(&self.cancel).clone()
    }

    /// Releases a reserved slot after a failed upload.
    pub(crate) fn abort_upload(&self, participant: &str, round: u64) {
        if let Some(r) = lock(&self.open).as_mut().filter(|r| r.round == round) {
            r.uploading.remove(participant);
        }
        self.changed.notify_one();
    }

    /// Folds a fully received, validated update into the open round.
    pub(crate) fn finish_upload(
        &self,
        participant: &str,
        round: u64,
        delta: &[f32],
        examples: u64,
        loss: f32,
    ) -> Result<(u32, u32), UploadRefusal> {
        let mut open = lock(&self.open);
        let job = lock(&self.record).id.clone();
        let Some(r) = open.as_mut().filter(|r| r.round == round) else {
            let open = open.as_ref().map_or("none".to_string(), |r| r.round.to_string());
            return Err(UploadRefusal::RoundNotOpen { job, round, open });
        };
        r.uploading.remove(participant);
        r.agg.add(delta, examples, loss);
        r.received.insert(participant.to_string());
        let counts = (r.received.len() as u32, r.invited.len() as u32);
        drop(open);
        self.changed.notify_one();
        Ok(counts)
    }

    /// Whether the open round can stop waiting: every invited participant answered, or those who did not
    /// are gone and nobody is mid-upload.
    pub(crate) fn round_settled(&self, live: &HashMap<String, u64>) -> bool {
        let open = lock(&self.open);
        let Some(r) = open.as_ref() else { return true };
        if !r.uploading.is_empty() {
            return false;
        }
        // Gone: disconnected, or reconnected since the round opened (its work for the round is lost).
        r.invited.iter().all(|p| r.received.contains(p) || live.get(p) != r.subscriptions.get(p))
    }

    /// Closes the open plain round, returning what it gathered (nothing if no round is open). Late
    /// uploads for it are refused from now on.
    pub(crate) fn close_plain(&self) -> Option<ClosedRound> {
        let r = lock(&self.open).take()?;
        Some(ClosedRound {
            round: r.round,
            invited: r.invited.into_iter().collect(),
            contributors: r.received.into_iter().collect(),
            opened: r.opened,
            agg: r.agg,
            noisy_sum: None,
            phase_seconds: Vec::new(),
        })
    }

    /// Turns a closed round's aggregate into the next global model, if it gathered at least
    /// `min_participants` updates; otherwise says why not. The caller persists and publishes the result.
    pub(crate) fn commit_aggregate(
        &self,
        closed: ClosedRound,
        min_participants: u32,
        server_lr: f32,
        momentum: f32,
        dp: Option<DpStep<'_>>,
    ) -> Result<(RoundRecord, GlobalModel, Vec<f32>), RoundError> {
        let ClosedRound { round, invited, mut contributors, opened, agg, noisy_sum, phase_seconds } = closed;
        if agg.count() < min_participants {
            let missing = Missing::of(invited.iter().filter(|p| !contributors.contains(p)).cloned());
            return Err(RoundError::TooFewUpdates {
                round,
                got: agg.count(),
                needed: min_participants,
                invited: invited.len(),
                missing,
            });
        }
        let global = self.global();
        // The velocity is updated on a copy: it replaces the job's only once the round is persisted.
        let mut velocity = lock(&self.velocity).clone();
        let params = match (dp, noisy_sum) {
            (Some(dp), Some(sum)) => {
                // DP-SGD's server step on the noisy mean gradient: post-processing of the release.
                let step = || -> Result<(Vec<f32>, Vec<f32>), DpStepError> {
                    let spec = match hearth_models::ModelSpec::from_json(dp.model_spec_json.as_bytes()) {
                        Ok(hearth_models::ModelSpec::Intent(s)) => s,
                        Ok(other) => return Err(DpStepError::Family(other.family())),
                        Err(e) => return Err(DpStepError::Spec(e)),
                    };
                    let config = dp.privacy.config(dp.rounds)?;
                    let mut server = hearth_models::DpServer::new(
                        &spec,
                        &config,
                        f64::from(server_lr),
                        f64::from(momentum),
                        dp.privacy.declared_records,
                    )?;
                    if velocity.len() == global.params.len() {
                        server = server.with_velocity(velocity.clone())?;
                    }
                    let mut params = global.params.to_vec();
                    server.step(&mut params, &sum)?;
                    Ok((params, server.velocity().to_vec()))
                };
                let (params, v) = step().map_err(|source| RoundError::DpStep { round, source })?;
                velocity = v;
                params
            }
            (None, None) => agg.apply(&global.params, &mut velocity, server_lr, momentum),
            _ => return Err(RoundError::DpStep { round, source: DpStepError::Mismatch }),
        };
        contributors.sort();
        let record = RoundRecord {
            round,
            version: round,
            participants: agg.count(),
            examples: agg.examples(),
            // A DP round releases no loss (it is not in the noisy sum): recorded as 0.
            train_loss: if agg.mean_loss().is_finite() { agg.mean_loss() } else { 0.0 },
            seconds: opened.elapsed().as_secs_f64(),
            contributors,
            phase_seconds,
            evaluation: None,
        };
        Ok((record, GlobalModel::new(round, params), velocity))
    }

    /// Installs a committed model as the global one.
    pub(crate) fn publish(&self, model: GlobalModel) {
        let model = Arc::new(model);
        match self.global.write() {
            Ok(mut g) => *g = model,
            Err(p) => *p.into_inner() = model,
        }
    }

    /// The job's status and its submission sequence number (for ordering jobs).
    pub(crate) fn status(&self) -> (u64, v1::JobStatus) {
        let rec = lock(&self.record);
        let status = v1::JobStatus {
            job_id: rec.id.clone(),
            state: rec.phase.as_str().into(),
            rounds: rec.rounds,
            committed_rounds: rec.committed.len() as u64,
            latest_version: rec.latest_version(),
            family: self.family.clone(),
            failure: rec.failure.clone(),
            accuracy: rec
                .committed
                .iter()
                .rev()
                .find_map(|r| r.evaluation.as_ref())
                .map_or(-1.0, |e| e.accuracy),
        };
        (rec.sequence, status)
    }
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned it (state stays consistent:
/// every critical section here completes its writes before anything that could panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wait after a round's first failure; it doubles after each further one.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// How many times a round is retried before its job fails.
pub(crate) const MAX_ROUND_ATTEMPTS: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobPhase, StoredTrain};

    fn runtime() -> JobRuntime {
        let record = JobRecord {
            id: "job-1".into(),
            model_spec_json: "{}".into(),
            rounds: 2,
            train: StoredTrain { local_epochs: 1, learning_rate: 0.1, batch_size: 1, l2: 0.0, seed: 1 },
            participants_per_round: 0,
            min_participants: 2,
            round_deadline_s: 10,
            wait_for_participants: 2,
            submitted_by: "operator:op".into(),
            phase: JobPhase::Running,
            committed: vec![],
            sequence: 1,
            server_learning_rate: 1.0,
            server_momentum: 0.0,
            secure_aggregation: false,
            secagg_clip: 8.0,
            secagg_weight_cap: 100_000.0,
            privacy: None,
            escalation_target_recall: None,
            data_description: String::new(),
            failure: String::new(),
            failures: Vec::new(),
            promotion_tolerance_points: 1.0,
        };
        let rt = JobRuntime::new(record, 2, vec![0.0, 0.0], vec![]);
        *lock(&rt.open) = Some(OpenRound {
            round: 1,
            base_version: 0,
            invited: ["a".to_string(), "b".to_string()].into(),
            subscriptions: [("a".to_string(), 1), ("b".to_string(), 2)].into(),
            received: HashSet::new(),
            uploading: HashSet::new(),
            nonces: HashSet::new(),
            agg: Aggregator::new(2),
            deadline: Instant::now() + Duration::from_secs(10),
            opened: Instant::now(),
        });
        rt
    }

    #[test]
    fn refuses_out_of_order_duplicate_replayed_and_uninvited_uploads() {
        let rt = runtime();
        assert!(matches!(rt.begin_upload("a", 2, 0, b"n1"), Err(UploadRefusal::RoundNotOpen { .. })));
        assert_eq!(rt.begin_upload("c", 1, 0, b"n2"), Err(UploadRefusal::NotInvited("c".into())));
        assert_eq!(rt.begin_upload("a", 1, 5, b"n3"), Err(UploadRefusal::WrongBase { got: 5, expected: 0 }));
        rt.begin_upload("a", 1, 0, b"n4").unwrap();
        assert_eq!(rt.begin_upload("a", 1, 0, b"n5"), Err(UploadRefusal::Duplicate("a".into())));
        rt.finish_upload("a", 1, &[1.0, 1.0], 1, 0.5).unwrap();
        assert_eq!(rt.begin_upload("b", 1, 0, b"n4"), Err(UploadRefusal::Replay));
        assert_eq!(rt.begin_upload("a", 1, 0, b"n6"), Err(UploadRefusal::Duplicate("a".into())));
    }

    #[test]
    fn a_round_commits_only_with_enough_updates() {
        let rt = runtime();
        rt.begin_upload("a", 1, 0, b"n1").unwrap();
        rt.finish_upload("a", 1, &[2.0, 0.0], 1, 0.5).unwrap();
        let err = rt.commit_aggregate(rt.close_plain().unwrap(), 2, 1.0, 0.0, None).unwrap_err();
        assert!(matches!(err, RoundError::TooFewUpdates { got: 1, needed: 2, .. }), "{err}");
        assert!(err.to_string().contains("gathered 1 of the 2"), "{err}");
        // The round is closed now: a late upload is refused.
        assert!(matches!(rt.begin_upload("b", 1, 0, b"n2"), Err(UploadRefusal::RoundNotOpen { .. })));
    }

    #[test]
    fn settles_when_missing_participants_disconnect() {
        let rt = runtime();
        rt.begin_upload("a", 1, 0, b"n1").unwrap();
        let connected: HashMap<String, u64> = [("a".to_string(), 1)].into();
        assert!(!rt.round_settled(&connected), "a is mid-upload");
        rt.finish_upload("a", 1, &[2.0, 0.0], 3, 0.5).unwrap();
        assert!(rt.round_settled(&connected), "b is gone, a answered");
        let reconnected: HashMap<String, u64> = [("a".to_string(), 1), ("b".to_string(), 7)].into();
        assert!(rt.round_settled(&reconnected), "b reconnected since: its work for the round is lost");
        let waiting: HashMap<String, u64> = [("a".to_string(), 1), ("b".to_string(), 2)].into();
        assert!(!rt.round_settled(&waiting), "b is still on the stream it had and may yet upload");
        let (rec, model, _) = rt.commit_aggregate(rt.close_plain().unwrap(), 1, 1.0, 0.0, None).unwrap();
        assert_eq!(rec.participants, 1);
        assert_eq!(model.params, vec![2.0, 0.0]);
    }

    #[test]
    fn a_watcher_is_replayed_only_announced_rounds_of_a_running_job() {
        let rt = runtime();
        let round = |n: u64| RoundRecord {
            round: n,
            version: n,
            participants: 2,
            examples: 10,
            train_loss: 1.0,
            seconds: 1.0,
            contributors: vec!["a".into(), "b".into()],
            phase_seconds: Vec::new(),
            evaluation: None,
        };
        // Round 1 is committed to the record; its evaluation is still running, nothing announced.
        lock(&rt.record).committed.push(round(1));
        let (replayed, last) = replay_of(&rt);
        assert!(replayed.is_empty() && last == 0, "round 1 is sent live, with its evaluation");
        rt.emit_committed(summary_of(&round(1)));
        let (replayed, last) = replay_of(&rt);
        assert_eq!((replayed.len(), last), (1, 1));
        // A finished job replays every round it committed.
        lock(&rt.record).committed.push(round(2));
        lock(&rt.record).phase = JobPhase::Finished;
        let (replayed, last) = replay_of(&rt);
        assert_eq!((replayed.len(), last), (2, 2));
        // A coordinator that restarts has announced everything it loaded.
        let loaded = JobRuntime::new(lock(&rt.record).clone(), 2, vec![0.0, 0.0], vec![]);
        assert_eq!(loaded.announced.load(Ordering::SeqCst), 2);
    }

    /// The rounds a new watcher of `rt` is replayed, and the last of them.
    fn replay_of(rt: &JobRuntime) -> (Vec<RoundRecord>, u64) {
        let (rec, n) = rt.history();
        let rounds = rec.committed[..n].to_vec();
        let last = rounds.last().map_or(0, |r| r.round);
        (rounds, last)
    }

    fn summary_of(r: &RoundRecord) -> v1::RoundSummary {
        v1::RoundSummary { round: r.round, ..Default::default() }
    }
}
