//! The coordinator's embedded store (redb): job records and each job's latest committed global model.
//!
//! Everything is envelope-encrypted under the node's key-encryption key ([`NodeKeys::seal`]), each value
//! bound to its key: models and optimizer state (so the file holds no model in the clear and one job's
//! model cannot be swapped for another's), job records and the privacy state (the policy in force and the
//! budget ledger). Sealing is also their integrity check: a ledger edited on disk to give spent budget
//! back, or one job's record copied over another's, fails to open and the coordinator refuses to start.
//! What sealing cannot see is the whole file put back to an older copy; the audit log, signed and
//! witnessed, holds every charge to check it against.
//!
//! A round commits in one write transaction that stores the new model and the job record naming it, so a
//! crash leaves either the old round or the new one, never a mix. On start the coordinator reloads every
//! job and resumes unfinished ones after their last committed round.

use std::path::Path;
use std::sync::Arc;

use hearth_node::keys::NodeKeys;
use hearth_node::rewrap::{add_counts, count_by_kek, rewrap_table, TableRewrap};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// The store's file name inside the coordinator's state directory.
pub const STORE_FILE: &str = "coordinator.redb";

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");
const VELOCITY: TableDefinition<&str, &[u8]> = TableDefinition::new("velocity");
/// The privacy policy in force and the budget ledger, as sealed JSON.
const PRIVACY: TableDefinition<&str, &[u8]> = TableDefinition::new("privacy");

fn f32_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|p| p.to_le_bytes()).collect()
}

fn blob_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A stored job: its record, its latest model and the server optimizer's velocity (empty without momentum).
pub type StoredJob = (JobRecord, Vec<f32>, Vec<f32>);

/// Errors of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or written.
    #[error("coordinator store: {0}")]
    Db(String),
    /// A stored model could not be sealed or opened: the key-encryption key it names is missing, or the
    /// blob was altered.
    #[error("coordinator store: model of job {job}: {reason}")]
    Sealed {
        /// The job.
        job: String,
        /// What the keystore or envelope said.
        reason: String,
    },
    /// A stored record could not be decoded: the file was written by another version or damaged.
    #[error("coordinator store: privacy state {key:?}: {reason}")]
    Privacy {
        /// The privacy state's key (`policy`, `ledger`).
        key: String,
        /// Why it could not be sealed or opened.
        reason: String,
    },
    /// A job record is unreadable: it does not open (edited, or moved from another job) or does not parse.
    #[error("coordinator store: corrupt record for job {job}: {reason}")]
    Corrupt {
        /// The job whose record is bad.
        job: String,
        /// What was wrong.
        reason: String,
    },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// Accepted, rounds still to run.
    Running,
    /// Every round committed.
    Finished,
    /// Gave up: a round could not gather enough updates.
    Failed,
}

impl JobPhase {
    /// Lower-case name, as shown in status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Finished => "finished",
            JobPhase::Failed => "failed",
        }
    }
}

/// Training parameters of a job, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTrain {
    /// Local epochs per round.
    pub local_epochs: u32,
    /// SGD learning rate.
    pub learning_rate: f32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// L2 strength.
    pub l2: f32,
    /// Seed for participant selection and local shuffling.
    pub seed: u64,
}

/// One committed round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number, from 1.
    pub round: u64,
    /// Model version this round produced (equals `round`).
    pub version: u64,
    /// Updates aggregated.
    pub participants: u32,
    /// Examples behind those updates.
    pub examples: u64,
    /// Example-weighted mean training loss reported by participants.
    pub train_loss: f32,
    /// Wall time from opening to commit.
    pub seconds: f64,
    /// Participant ids whose updates were aggregated.
    pub contributors: Vec<String>,
    /// Secure rounds: seconds from opening to the close of each secure-aggregation phase (empty for plain
    /// rounds and for rounds stored before this was recorded).
    #[serde(default)]
    pub phase_seconds: Vec<f64>,
    /// The federated evaluation of this round's model, when it ran.
    #[serde(default)]
    pub evaluation: Option<RoundEvaluation>,
}

/// A round's model evaluated on the contributing institutions' held-out data, from the securely aggregated
/// sums of their counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundEvaluation {
    /// Held-out examples counted, over all institutions.
    pub examples: u64,
    /// Institutions whose counts are in the sums.
    pub institutions: u32,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
    /// Out-of-scope examples among `examples`.
    pub oos_examples: u64,
}

/// A failed attempt at a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub round: u64,
    pub unix_ms: u64,
    pub reason: String,
}

fn one_point() -> f64 {
    1.0
}

/// Everything the coordinator keeps about a job except the model parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// The model spec as JSON text (the models crate validates it).
    pub model_spec_json: String,
    /// Rounds to run.
    pub rounds: u64,
    /// Local training parameters.
    pub train: StoredTrain,
    /// Participants invited per round (0: every connected one).
    pub participants_per_round: u32,
    /// Minimum updates for a round to commit.
    pub min_participants: u32,
    /// Seconds a round stays open.
    pub round_deadline_s: u32,
    /// Participants to wait for before the first round.
    pub wait_for_participants: u32,
    /// Who submitted it (certificate identity).
    pub submitted_by: String,
    /// Phase.
    pub phase: JobPhase,
    /// Committed rounds, in order.
    pub committed: Vec<RoundRecord>,
    /// Submission order, to find the most recent job.
    pub sequence: u64,
    /// Server learning rate of the aggregation.
    #[serde(default = "one")]
    pub server_learning_rate: f32,
    /// Server momentum (0: plain federated averaging).
    #[serde(default)]
    pub server_momentum: f32,
    /// Rounds aggregate with secure aggregation: only the sum of the updates is ever seen here.
    #[serde(default)]
    pub secure_aggregation: bool,
    /// Secure aggregation: per-coordinate clip of weighted updates.
    #[serde(default = "default_clip")]
    pub secagg_clip: f64,
    /// Secure aggregation: example count at which a participant's weight saturates.
    #[serde(default = "default_weight_cap")]
    pub secagg_weight_cap: f64,
    /// Emotion jobs: the recall of the escalating label each participant's escalation threshold must
    /// reach, as the job's policy states it.
    #[serde(default)]
    pub escalation_target_recall: Option<f32>,
    /// What the job trains on, in the operator's words (for the model card).
    #[serde(default)]
    pub data_description: String,
    /// Why the job failed (the last round's failure); empty unless it failed.
    #[serde(default)]
    pub failure: String,
    /// Every failed attempt at a round, oldest first.
    #[serde(default)]
    pub failures: Vec<AttemptRecord>,
    /// Promotion gate for the participants, in points of their local held-out metric (negative: off).
    #[serde(default = "one_point")]
    pub promotion_tolerance_points: f64,
    /// Differential privacy, for a DP job.
    #[serde(default)]
    pub privacy: Option<JobPrivacy>,
}

/// How a DP job protects the training data, and what it reserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPrivacy {
    /// The budget family charged.
    pub family: String,
    /// L2 clipping norm of each unit's gradient.
    pub clipping_norm: f64,
    /// Noise standard deviation on the sum, in clipping norms.
    pub noise_multiplier: f64,
    /// Poisson sampling rate of units per round.
    pub sampling_rate: f64,
    /// `record` or `customer`.
    pub privacy_unit: String,
    /// Survivors the noise shares are calibrated for.
    pub min_survivors: u32,
    /// The ledger reservation, when a privacy policy was in force at submission.
    pub reservation: Option<u64>,
    /// The institutions charged (and the only ones that may take part).
    pub tenants: Vec<String>,
    /// Total records the institutions declared (public): the noisy sum is divided by `sampling_rate`
    /// times this.
    #[serde(default)]
    pub declared_records: u64,
    /// The biases' constant feature (see `hearth_models::dp::DpParams::bias_scale`).
    #[serde(default = "one_f64")]
    pub bias_scale: f64,
    /// Most participants a round invites; the quantiser and the charge are computed for this many.
    #[serde(default)]
    pub max_cohort: u32,
    /// Length of the summed vector (the model's parameters).
    #[serde(default)]
    pub dimension: u64,
    /// The delta the job's epsilon is reported at.
    #[serde(default = "default_delta")]
    pub delta: f64,
}

fn default_delta() -> f64 {
    1e-5
}

fn one_f64() -> f64 {
    1.0
}

impl JobPrivacy {
    /// The DP configuration of the job's rounds (`rounds` of them).
    pub fn config(&self, rounds: u64) -> Result<hearth_models::DpConfig, hearth_models::DpError> {
        hearth_models::DpConfig::new(hearth_models::DpParams {
            clip_norm: self.clipping_norm,
            sampling_rate: self.sampling_rate,
            noise_multiplier: self.noise_multiplier,
            rounds: rounds.max(1),
            min_survivors: self.min_survivors,
            bias_scale: self.bias_scale,
        })
    }

    /// The per-coordinate clip of the rounds' quantiser.
    pub fn quantizer_clip(&self) -> f64 {
        self.round_shape(self.max_cohort).quantizer_clip
    }

    /// Epsilon at [`Self::delta`] after `rounds` committed rounds, as the distributed discrete Gaussian on
    /// the rounds' grid is accounted (for the largest cohort, which bounds every round's).
    pub fn epsilon_after(&self, rounds: u64, total_rounds: u64) -> Result<f64, hearth_models::DpError> {
        let config = self.config(total_rounds)?;
        let (grid, _) = config.round_grid(self.round_shape(self.max_cohort))?;
        config.epsilon_distributed(self.delta, rounds, &grid)
    }

    /// The shape of a round with `cohort` members.
    pub fn round_shape(&self, cohort: u32) -> hearth_models::RoundShape {
        hearth_models::RoundShape::for_job(
            self.clipping_norm,
            self.declared_records,
            cohort,
            self.dimension,
            crate::secagg::MODULUS_BITS,
        )
    }
}

fn default_clip() -> f64 {
    crate::secagg::DEFAULT_CLIP
}

fn default_weight_cap() -> f64 {
    crate::secagg::DEFAULT_WEIGHT_CAP
}

fn one() -> f32 {
    1.0
}

impl JobRecord {
    /// The latest committed model version (0 = the initial model).
    pub fn latest_version(&self) -> u64 {
        self.committed.last().map_or(0, |r| r.version)
    }
}

/// The coordinator's database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    keys: Arc<NodeKeys>,
}

fn model_object(job: &str) -> String {
    format!("hearth/coordinator/model/{job}")
}

fn velocity_object(job: &str) -> String {
    format!("hearth/coordinator/velocity/{job}")
}

fn job_object(job: &str) -> String {
    format!("hearth/coordinator/job/{job}")
}

fn privacy_object(key: &str) -> String {
    format!("hearth/coordinator/privacy/{key}")
}

impl Store {
    /// Opens or creates `path`; models are sealed and opened with `keys`.
    pub fn open(path: &Path, keys: Arc<NodeKeys>) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(JOBS).map_err(db_err)?;
        tx.open_table(MODELS).map_err(db_err)?;
        tx.open_table(VELOCITY).map_err(db_err)?;
        tx.open_table(PRIVACY).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db, keys })
    }

    /// Writes `record` and, if given, the model parameters of `record.latest_version()` and the server
    /// optimizer's velocity, atomically.
    pub fn save(&self, record: &JobRecord, params: Option<(&[f32], &[f32])>) -> Result<(), StoreError> {
        let json = serde_json::to_vec(record).map_err(db_err)?;
        let sealed_record = self
            .keys
            .seal(&job_object(&record.id), &json)
            .map_err(|e| StoreError::Sealed { job: record.id.clone(), reason: e.to_string() })?;
        let sealed = match params {
            Some((params, velocity)) => {
                let mut blob = Vec::with_capacity(8 + params.len() * 4);
                blob.extend_from_slice(&record.latest_version().to_le_bytes());
                blob.extend_from_slice(&f32_blob(params));
                let seal = |object: String, bytes: &[u8]| {
                    self.keys
                        .seal(&object, bytes)
                        .map_err(|e| StoreError::Sealed { job: record.id.clone(), reason: e.to_string() })
                };
                Some((
                    seal(model_object(&record.id), &blob)?,
                    seal(velocity_object(&record.id), &f32_blob(velocity))?,
                ))
            }
            None => None,
        };
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut jobs = tx.open_table(JOBS).map_err(db_err)?;
            jobs.insert(record.id.as_str(), sealed_record.as_slice()).map_err(db_err)?;
            if let Some((model, velocity)) = &sealed {
                let mut models = tx.open_table(MODELS).map_err(db_err)?;
                models.insert(record.id.as_str(), model.as_slice()).map_err(db_err)?;
                let mut vel = tx.open_table(VELOCITY).map_err(db_err)?;
                vel.insert(record.id.as_str(), velocity.as_slice()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Writes the privacy state (policy in force and ledger) under `key`, durably, in one transaction.
    pub fn save_privacy(&self, key: &str, json: &[u8]) -> Result<(), StoreError> {
        let sealed = self
            .keys
            .seal(&privacy_object(key), json)
            .map_err(|e| StoreError::Privacy { key: key.to_string(), reason: e.to_string() })?;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(PRIVACY).map_err(db_err)?;
            t.insert(key, sealed.as_slice()).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// The privacy state saved under `key`, if any. A value that does not open (edited, moved from
    /// another key, or written unsealed) is an error, never an empty ledger.
    pub fn load_privacy(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(PRIVACY).map_err(db_err)?;
        let Some(v) = t.get(key).map_err(db_err)? else { return Ok(None) };
        let plain = self
            .keys
            .open_sealed_object(&privacy_object(key), v.value())
            .map_err(|e| StoreError::Privacy { key: key.to_string(), reason: e.to_string() })?;
        Ok(Some(plain.to_vec()))
    }

    /// How many values each key-encryption key version sealed, over every table.
    pub fn kek_versions(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        for table in [JOBS, MODELS, VELOCITY, PRIVACY] {
            add_counts(&mut out, count_by_kek(&self.db, table).map_err(db_err)?);
        }
        Ok(out)
    }

    /// Seals every value still under an older key-encryption key version again under the current one,
    /// `batch` per transaction (see [`hearth_node::rewrap`]). Run while the coordinator is stopped.
    pub fn rewrap(
        &self,
        batch: usize,
        progress: &mut dyn FnMut(&TableRewrap),
    ) -> Result<Vec<TableRewrap>, StoreError> {
        let mut done = Vec::new();
        for (table, object) in [(JOBS, job_object as fn(&str) -> String), (MODELS, model_object)] {
            done.push(
                rewrap_table(&self.db, &self.keys, table, &|k| object(k), batch, progress).map_err(db_err)?,
            );
        }
        for (table, object) in [(VELOCITY, velocity_object as fn(&str) -> String), (PRIVACY, privacy_object)]
        {
            done.push(
                rewrap_table(&self.db, &self.keys, table, &|k| object(k), batch, progress).map_err(db_err)?,
            );
        }
        Ok(done)
    }

    /// Every stored job with its latest model parameters.
    pub fn load_all(&self) -> Result<Vec<StoredJob>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let jobs = tx.open_table(JOBS).map_err(db_err)?;
        let models = tx.open_table(MODELS).map_err(db_err)?;
        let velocities = tx.open_table(VELOCITY).map_err(db_err)?;
        let mut out = Vec::new();
        for row in jobs.iter().map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            let id = key.value().to_string();
            let corrupt = |reason: String| StoreError::Corrupt { job: id.clone(), reason };
            let json = self
                .keys
                .open_sealed_object(&job_object(&id), value.value())
                .map_err(|e| corrupt(format!("the record does not open: {e}")))?;
            let record: JobRecord = serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))?;
            let sealed = models
                .get(id.as_str())
                .map_err(db_err)?
                .ok_or_else(|| corrupt("model parameters missing".into()))?;
            let unseal = |object: String, bytes: &[u8]| {
                self.keys
                    .open_sealed_object(&object, bytes)
                    .map_err(|e| StoreError::Sealed { job: id.clone(), reason: e.to_string() })
            };
            let blob = unseal(model_object(&id), sealed.value())?;
            let blob = blob.as_slice();
            if blob.len() < 8 || (blob.len() - 8) % 4 != 0 {
                return Err(corrupt(format!("model blob of {} bytes", blob.len())));
            }
            let mut version = [0u8; 8];
            version.copy_from_slice(&blob[..8]);
            if u64::from_le_bytes(version) != record.latest_version() {
                return Err(corrupt("model version does not match the job record".into()));
            }
            let params = blob_f32(&blob[8..]);
            let velocity = match velocities.get(id.as_str()).map_err(db_err)? {
                Some(v) => blob_f32(&unseal(velocity_object(&id), v.value())?),
                None => Vec::new(),
            };
            out.push((record, params, velocity));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> JobRecord {
        JobRecord {
            id: id.into(),
            model_spec_json: "{}".into(),
            rounds: 3,
            train: StoredTrain { local_epochs: 1, learning_rate: 0.5, batch_size: 8, l2: 0.0, seed: 7 },
            participants_per_round: 0,
            min_participants: 1,
            round_deadline_s: 30,
            wait_for_participants: 1,
            submitted_by: "operator:op".into(),
            phase: JobPhase::Running,
            committed: vec![],
            sequence: 1,
            server_learning_rate: 1.0,
            server_momentum: 0.9,
            secure_aggregation: false,
            secagg_clip: 8.0,
            secagg_weight_cap: 100_000.0,
            escalation_target_recall: None,
            data_description: String::new(),
            failure: String::new(),
            failures: Vec::new(),
            promotion_tolerance_points: 1.0,
            privacy: None,
        }
    }

    fn keys(dir: &Path) -> Arc<NodeKeys> {
        use hearth_node::config::KeystoreConfig;
        use hearth_node::keys::{Create, COORDINATOR_KEYS};
        let pass = dir.join("pass");
        std::fs::write(&pass, "store test").unwrap();
        let cfg = KeystoreConfig {
            passphrase_file: Some(pass),
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            ..Default::default()
        };
        let suite = hearth_crypto::SuiteId::National;
        Arc::new(NodeKeys::open(&cfg, suite, dir, COORDINATOR_KEYS, Create::IfMissing, None).unwrap().0)
    }

    #[test]
    fn saves_and_reloads_jobs_with_their_latest_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let keys = keys(dir.path());
        {
            let store = Store::open(&path, Arc::clone(&keys)).unwrap();
            let mut rec = record("job-a");
            store.save(&rec, Some((&[0.0, 0.0], &[]))).unwrap();
            rec.committed.push(RoundRecord {
                round: 1,
                version: 1,
                participants: 2,
                examples: 10,
                train_loss: 1.5,
                seconds: 0.1,
                contributors: vec!["a".into(), "b".into()],
                phase_seconds: vec![0.01, 0.015, 0.02, 0.05, 0.06, 0.08],
                evaluation: Some(RoundEvaluation {
                    examples: 40,
                    institutions: 3,
                    accuracy: 0.5,
                    macro_f1: 0.25,
                    in_scope_accuracy: 0.6,
                    oos_recall: 0.1,
                    oos_examples: 10,
                }),
            });
            store.save(&rec, Some((&[1.5, -2.0], &[0.5, 0.25]))).unwrap();
        }
        // The file holds no parameter in the clear: 1.5f32 and -2.0f32 side by side would show.
        let raw = std::fs::read(&path).unwrap();
        let plain: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        assert!(!raw.windows(plain.len()).any(|w| w == plain.as_slice()));
        // Rotating the KEK keeps the stored model readable.
        keys.rotate(hearth_node::keys::KEK).unwrap();
        let store = Store::open(&path, keys).unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0.latest_version(), 1);
        assert_eq!(all[0].1, vec![1.5, -2.0]);
        assert_eq!(all[0].2, vec![0.5, 0.25]);
        // Job records and the ledger are sealed too, and a rewrap moves all of it to v2.
        store.save_privacy("ledger", br#"{"spent":1.5}"#).unwrap();
        assert!(!raw.windows(10).any(|w| w == b"operator:o"), "the job record is not in the clear");
        let moved: u64 = store.rewrap(2, &mut |_| {}).unwrap().iter().map(|t| t.moved).sum();
        assert_eq!(moved, 3, "record, model, velocity (the ledger was written under v2)");
        assert_eq!(
            store.kek_versions().unwrap(),
            std::collections::BTreeMap::from([("kek@v2".to_string(), 4)])
        );
        assert_eq!(store.load_all().unwrap()[0].1, vec![1.5, -2.0]);
        assert_eq!(store.load_privacy("ledger").unwrap().as_deref(), Some(&br#"{"spent":1.5}"#[..]));
    }

    #[test]
    fn a_ledger_or_job_record_edited_on_disk_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let keys = keys(dir.path());
        let store = Store::open(&path, Arc::clone(&keys)).unwrap();
        store.save_privacy("ledger", br#"{"spent":9.5}"#).unwrap();
        store.save(&record("job-a"), Some((&[0.0], &[]))).unwrap();
        store.save(&record("job-b"), Some((&[0.0], &[]))).unwrap();
        // Replace the ledger with an unsealed one resetting the spend, and copy job-b's record over job-a's.
        let tx = store.db.begin_write().unwrap();
        {
            tx.open_table(PRIVACY).unwrap().insert("ledger", &br#"{"spent":0.0}"#[..]).unwrap();
            let mut jobs = tx.open_table(JOBS).unwrap();
            let b = jobs.get("job-b").unwrap().unwrap().value().to_vec();
            jobs.insert("job-a", b.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let e = store.load_privacy("ledger").unwrap_err();
        assert!(matches!(e, StoreError::Privacy { .. }), "{e}");
        let e = store.load_all().unwrap_err();
        assert!(e.to_string().contains("job-a") && e.to_string().contains("does not open"), "{e}");
    }
}
