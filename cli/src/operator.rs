//! `hearth job`: what a consortium operator does with the coordinator: submit a job, follow it, read
//! status, fetch a committed model. The demo and the benchmark drive the coordinator through these same
//! functions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_crypto::digest::ContentDigest;
use hearth_models::recommend::data::{clean, day_number, descriptions, spec_for};
use hearth_models::{EmotionSpec, FeatureConfig, IntentSpec, ModelSpec, RecommendSpec, TrainParams};
use hearth_proto::v1::coordinator_client::CoordinatorClient;
use hearth_proto::v1::{self, job_event, model_chunk};
use hearth_proto::MAX_MESSAGE_BYTES;
use hearth_transport::TlsMaterial;
use serde::Deserialize;
use tonic::transport::Channel;

/// `hearth job ...`
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Submit a training job described by a TOML file, then follow it until it ends.
    #[command(
        after_help = "Example:\n  hearth job submit --spec deploy/job.toml --coordinator 127.0.0.1:7700 --tls-dir hearth-pki\n\nThe job file reference is deploy/job.toml: every field, its default and range. Complete jobs for\neach family: deploy/job-emotion.toml, deploy/job-recommend.toml, and the differentially private\ndeploy/job-intent-dp.toml (its defaults are the measured DP preset).\n\nA minimal intent job:\n  min_participants = 3          # secure aggregation needs 3; with 3 none may drop out\n  [model]\n  labels_file = \"train.csv\"    # or: labels = [\"balance\", \"transfer\", \"oos\"]\n\nThe coordinator refuses a job that could not run, naming the field. A round that cannot gather its\nparticipants fails at round_deadline_s naming the missing ones; after three failed attempts the job\nfails, exits 1 here, and every participant keeps serving the model it served before."
    )]
    Submit {
        /// The job file.
        #[arg(long)]
        spec: PathBuf,
        #[command(flatten)]
        conn: Connection,
        /// Return as soon as the job is accepted instead of following it.
        #[arg(long)]
        detach: bool,
    },
    /// Show the coordinator's participants and jobs.
    #[command(
        after_help = "Example:\n  hearth job status --coordinator 127.0.0.1:7700 --tls-dir hearth-pki"
    )]
    Status {
        #[command(flatten)]
        conn: Connection,
    },
    /// Follow a job's rounds until it ends.
    #[command(after_help = "Example:\n  hearth job watch job-1-3f2a --coordinator 127.0.0.1:7700")]
    Watch {
        /// The job id.
        job_id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List the coordinator's jobs: family, state, rounds, the latest federated accuracy, why a job failed.
    #[command(
        after_help = "Example:\n  hearth job list --coordinator coord.example.org:7700 --coordinator-name coord.example.org --tls-dir pki"
    )]
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Stop a running job: its open round is abandoned and it ends failed ("cancelled by ..."), so the
    /// participants keep serving the model they served before. Waits until the job has ended.
    #[command(after_help = "Example:\n  hearth job cancel job-3-9c1e --tls-dir pki")]
    Cancel {
        /// The job id.
        job_id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Run a failed or cancelled job on from its last committed round, then follow it (a differentially
    /// private job cannot resume: submit it again).
    #[command(after_help = "Example:\n  hearth job resume job-3-9c1e --tls-dir pki")]
    Resume {
        /// The job id.
        job_id: String,
        #[command(flatten)]
        conn: Connection,
        /// Return once the job runs again instead of following it.
        #[arg(long)]
        detach: bool,
    },
    /// A job's history: who submitted it, every committed round with its federated evaluation, every failed
    /// attempt and why, and how it ended.
    #[command(after_help = "Example:\n  hearth job logs job-3-9c1e --tls-dir pki")]
    Logs {
        /// The job id.
        job_id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// How the operator reaches the coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Coordinator address, host:port.
    #[arg(long, default_value = "127.0.0.1:7700", env = "HEARTH_COORDINATOR_ADDR")]
    pub coordinator: String,
    /// Name on the coordinator's certificate.
    #[arg(long, default_value = "localhost")]
    pub coordinator_name: String,
    /// Directory with ca.pem, operator.pem and operator.key.
    #[arg(long, default_value = "hearth-pki", env = "HEARTH_TLS_DIR")]
    pub tls_dir: PathBuf,
}

impl Connection {
    /// Connects with the operator certificate.
    pub async fn connect(&self) -> anyhow::Result<CoordinatorClient<Channel>> {
        let channel = self.channel_as("operator").await?;
        Ok(CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The TLS material of certificate `name` in the TLS directory (`NAME.pem`, `NAME.key`).
    pub fn tls_as(&self, name: &str) -> anyhow::Result<TlsMaterial> {
        let d = &self.tls_dir;
        TlsMaterial::load(&d.join("ca.pem"), &d.join(format!("{name}.pem")), &d.join(format!("{name}.key")))
            .with_context(|| format!("loading the {name} certificate from {}", d.display()))
    }

    /// A channel to the coordinator authenticated with certificate `name`.
    pub async fn channel_as(&self, name: &str) -> anyhow::Result<Channel> {
        let cfg =
            hearth_transport::client_config_to(&self.tls_as(name)?, hearth_crypto::pki::Role::Coordinator)?;
        hearth_transport::connect(&self.coordinator, &self.coordinator_name, cfg)
            .await
            .with_context(|| format!("connecting to the coordinator at {}", self.coordinator))
    }
}

/// A job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    #[serde(default)]
    pub job_id: String,
    /// Rounds (default: the family's tuned number).
    pub rounds: Option<u64>,
    #[serde(default)]
    pub participants_per_round: u32,
    pub min_participants: u32,
    #[serde(default = "default_deadline")]
    pub round_deadline_s: u32,
    #[serde(default)]
    pub wait_for_participants: u32,
    /// Server momentum of federated averaging (default: the tuned value).
    pub server_momentum: Option<f32>,
    /// Server learning rate (default: the family's tuned value).
    pub server_learning_rate: Option<f32>,
    /// Secure aggregation (default true): the coordinator learns only the sum of the updates.
    pub secure_aggregation: Option<bool>,
    /// Secure aggregation: per-coordinate clip of weighted updates (default 8).
    pub secagg_clip: Option<f64>,
    /// Emotion jobs: the anger recall each participant's escalation threshold must reach (required).
    pub escalation_target_recall: Option<f32>,
    /// What the job trains on, for the model card.
    #[serde(default)]
    pub data_description: String,
    /// Promotion gate: points of held-out accuracy (emotion: macro-F1) a finished job's model may lose
    /// against the model a participant serves and still replace it (default 1; negative: no gate).
    pub promotion_tolerance_points: Option<f64>,
    pub model: ModelSection,
    #[serde(default)]
    pub train: TrainSection,
    /// Differential privacy (required while the consortium's privacy policy is in force).
    pub privacy: Option<PrivacySection>,
}

/// `[privacy]` of a job file: either a noise multiplier, or a target epsilon (and delta) from which the
/// noise multiplier is calibrated for the job's rounds, sampling rate and the noise participants add
/// on the rounds' quantisation grid (`hearth_models::dp`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    pub family: String,
    /// Per-record gradient clip (default: the measured preset's, `hearth_models::INTENT_DP_PRESET`).
    pub clipping_norm: Option<f64>,
    /// Poisson sampling rate of records per round (default: the preset's).
    pub sampling_rate: Option<f64>,
    pub noise_multiplier: Option<f64>,
    pub target_epsilon: Option<f64>,
    pub delta: Option<f64>,
    #[serde(default)]
    pub privacy_unit: Option<String>,
    #[serde(default)]
    pub min_survivors: u32,
    /// The institutions' total number of records (public; the noisy sum is divided by sampling_rate
    /// times this).
    pub declared_records: u64,
    #[serde(default)]
    pub bias_scale: Option<f64>,
    #[serde(default)]
    pub max_cohort: u32,
}

/// What the privacy section needs to know of the job around it.
#[derive(Debug, Clone, Copy)]
pub struct JobFrame {
    pub rounds: u64,
    pub num_params: u64,
    pub min_participants: u32,
    pub wait_for_participants: u32,
    pub participants_per_round: u32,
}

impl JobFrame {
    /// The cohort a DP job's rounds are sized for when the job does not say (as the coordinator does).
    pub fn default_cohort(&self) -> u32 {
        self.wait_for_participants.max(self.participants_per_round).max(self.min_participants)
    }
}

impl PrivacySection {
    /// The wire form for a job shaped as `job`.
    pub fn to_proto(&self, job: JobFrame) -> anyhow::Result<v1::PrivacySpec> {
        let min_survivors = if self.min_survivors == 0 { job.min_participants } else { self.min_survivors };
        let max_cohort = if self.max_cohort == 0 { job.default_cohort() } else { self.max_cohort };
        let preset = hearth_models::INTENT_DP_PRESET;
        let bias_scale = self.bias_scale.unwrap_or(preset.bias_scale);
        let clipping_norm = self.clipping_norm.unwrap_or(preset.clip_norm);
        let sampling_rate = self.sampling_rate.unwrap_or(preset.sampling_rate);
        let delta = self.delta.unwrap_or(preset.target.delta);
        let noise_multiplier = match (self.noise_multiplier, self.target_epsilon) {
            (Some(n), None) => n,
            (None, Some(eps)) => calibrate(
                hearth_models::DpParams {
                    clip_norm: clipping_norm,
                    sampling_rate,
                    noise_multiplier: 1.0,
                    rounds: job.rounds,
                    min_survivors,
                    bias_scale,
                },
                hearth_models::PrivacyTarget { epsilon: eps, delta },
                self.declared_records,
                max_cohort,
                job.num_params,
            )?,
            _ => bail!("[privacy] needs exactly one of noise_multiplier or target_epsilon"),
        };
        Ok(v1::PrivacySpec {
            family: self.family.clone(),
            clipping_norm,
            noise_multiplier,
            sampling_rate,
            privacy_unit: self.privacy_unit.clone().unwrap_or_else(|| "record".into()),
            min_survivors,
            declared_records: self.declared_records,
            bias_scale,
            max_cohort,
            delta,
            // The coordinator announces the job's rounds to the participants.
            rounds: job.rounds,
        })
    }
}

/// The smallest noise multiplier for which `base`'s rounds meet `target` with the discrete noise the
/// participants add on the quantisation grid of rounds of `cohort` members summing `num_params` values
/// (the coordinator charges exactly that accounting).
pub fn calibrate(
    base: hearth_models::DpParams,
    target: hearth_models::PrivacyTarget,
    declared_records: u64,
    cohort: u32,
    num_params: u64,
) -> anyhow::Result<f64> {
    let shape = hearth_models::RoundShape::for_job(base.clip_norm, declared_records, cohort, num_params, 32);
    let plan = hearth_models::DpConfig::plan(base, target, shape).with_context(|| {
        format!("calibrating the noise for epsilon {}, delta {}", target.epsilon, target.delta)
    })?;
    Ok(plan.config.noise_multiplier())
}

fn default_deadline() -> u32 {
    300
}

/// `[model]` of a job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `intent` (default), `emotion` or `recommend`.
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    /// Intent and emotion: a label list (`.txt`, one per line) or a CSV/JSONL data file of the family
    /// whose distinct labels are the model's labels (relative to the job file).
    pub labels_file: Option<PathBuf>,
    #[serde(default)]
    pub features: Option<FeatureConfig>,
    /// Recommend: the catalogue's item ids.
    #[serde(default)]
    pub items: Vec<String>,
    /// Recommend: a catalogue (`.txt`, one item id per line) or a transactions CSV whose purchased
    /// products form the catalogue (relative to the job file).
    pub items_file: Option<PathBuf>,
    /// Recommend: the popularity window's first day (`YYYY-MM-DD`) and length in days; from a
    /// transactions `items_file`, its first and last purchase unless given.
    pub first_day: Option<String>,
    pub days: Option<u32>,
    /// Recommend: how scores combine (default: the values tuned on validation data).
    #[serde(default)]
    pub scoring: Option<hearth_models::recommend::Scoring>,
}

/// Names from a `.txt` list (one per line, blank lines ignored).
fn read_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

fn is_txt(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

impl ModelSection {
    /// The model spec this section describes; relative paths are resolved against `base`. A private job's
    /// features default to the measured DP preset's (fewer buckets: less noise per useful coordinate).
    pub fn spec(&self, base: &Path, private: bool) -> anyhow::Result<ModelSpec> {
        let family = self.family.as_deref().unwrap_or("intent");
        let mut labels = self.labels.clone();
        if let Some(lf) = &self.labels_file {
            let lf = base.join(lf);
            if is_txt(&lf) {
                labels.extend(read_list(&lf)?);
            } else if family == "emotion" {
                let data = crate::data::read_emotion(&lf, None)?;
                labels.extend(data.into_iter().flat_map(|e| e.labels));
            } else {
                labels.extend(crate::data::read_labelled(&lf)?.into_iter().map(|e| e.label));
            }
        }
        labels.sort();
        labels.dedup();
        let features = self.features.clone().unwrap_or_else(|| {
            let d = FeatureConfig::default();
            if private {
                FeatureConfig { dim: hearth_models::INTENT_DP_PRESET.feature_dim, ..d }
            } else {
                d
            }
        });
        match family {
            "intent" | "emotion" => {
                if labels.is_empty() {
                    bail!("[model] needs `labels` or `labels_file`");
                }
                Ok(if family == "intent" {
                    ModelSpec::Intent(IntentSpec::new(labels, features)?)
                } else {
                    ModelSpec::Emotion(EmotionSpec::new(labels, features)?)
                })
            }
            "recommend" => {
                let mut items = self.items.clone();
                let mut names = BTreeMap::new();
                let mut window = None;
                if let Some(f) = &self.items_file {
                    let f = base.join(f);
                    if is_txt(&f) {
                        items.extend(read_list(&f)?);
                    } else {
                        let rows = crate::data::read_transactions(&f)?;
                        let (purchases, _) = clean(&rows);
                        names = descriptions(&rows);
                        let from = spec_for(&purchases, &names)?;
                        window = Some((from.first_day, from.days));
                        items.extend(from.items);
                    }
                }
                items.sort();
                items.dedup();
                if items.is_empty() {
                    bail!("[model] needs `items` or `items_file` for a recommend model");
                }
                let first_day =
                    match &self.first_day {
                        Some(d) => Some(day_number(d).filter(|_| d.len() == 10).with_context(|| {
                            format!("[model] first_day {d:?} is not a date (YYYY-MM-DD)")
                        })?),
                        None => window.map(|w| w.0),
                    };
                let (Some(first_day), Some(days)) = (first_day, self.days.or(window.map(|w| w.1))) else {
                    bail!(
                        "[model] needs `first_day` and `days` (the popularity window) for a recommend model \
                         whose catalogue is not a transactions file"
                    );
                };
                let names = if names.is_empty() {
                    Vec::new()
                } else {
                    items.iter().map(|i| names.get(i).cloned().unwrap_or_default()).collect()
                };
                let scoring = self.scoring.unwrap_or_default();
                Ok(ModelSpec::Recommend(RecommendSpec::new(items, names, first_day, days, scoring)?))
            }
            other => bail!("unknown model family {other:?}; use intent, emotion or recommend"),
        }
    }
}

/// `[train]` of a job file; defaults are the tuned ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub local_epochs: Option<u32>,
    pub learning_rate: Option<f32>,
    pub batch_size: Option<u32>,
    pub l2: Option<f32>,
    pub seed: Option<u64>,
}

/// What a job asks of the coordinator, in the types of the crates.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub job_id: String,
    pub spec: ModelSpec,
    pub train: TrainParams,
    pub rounds: u64,
    pub participants_per_round: u32,
    pub min_participants: u32,
    pub round_deadline_s: u32,
    pub wait_for_participants: u32,
    pub server_learning_rate: f32,
    pub server_momentum: f32,
    pub secure_aggregation: bool,
    /// 0 means the coordinator's default.
    pub secagg_clip: f64,
    /// Differential privacy, if any.
    pub privacy: Option<v1::PrivacySpec>,
    /// Emotion jobs: the anger recall each participant's escalation threshold must reach.
    pub escalation_target_recall: Option<f32>,
    /// What the job trains on, for the model card.
    pub data_description: String,
    /// Promotion gate in points (0: the coordinator's default, 1).
    pub promotion_tolerance_points: f64,
}

impl JobPlan {
    /// Reads a job file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: JobFile =
            toml::from_str(&text).with_context(|| format!("parsing job file {}", path.display()))?;
        let private = f.privacy.is_some();
        let spec = f
            .model
            .spec(path.parent().unwrap_or(Path::new(".")), private)
            .with_context(|| format!("{}: [model]", path.display()))?;
        let mut defaults = spec.defaults();
        if private {
            // A private job steps on the noisy mean gradient: the measured preset's rounds and server
            // optimiser, not federated averaging's.
            let preset = hearth_models::INTENT_DP_PRESET;
            let encoder_tier = matches!(&spec, ModelSpec::Intent(s) if s.features.encoder.is_some());
            defaults.rounds = preset.rounds;
            defaults.server_learning_rate = preset.server_learning_rate_for(encoder_tier) as f32;
            defaults.server_momentum = preset.server_momentum as f32;
        }
        let d = defaults.train.clone();
        let t = f.train;
        let num_params = spec.num_params() as u64;
        Ok(Self {
            job_id: f.job_id,
            spec,
            train: TrainParams {
                local_epochs: t.local_epochs.unwrap_or(d.local_epochs),
                learning_rate: t.learning_rate.unwrap_or(d.learning_rate),
                batch_size: t.batch_size.unwrap_or(d.batch_size),
                l2: t.l2.unwrap_or(d.l2),
                seed: t.seed.unwrap_or(d.seed),
            },
            rounds: f.rounds.unwrap_or(defaults.rounds),
            participants_per_round: f.participants_per_round,
            min_participants: f.min_participants,
            round_deadline_s: f.round_deadline_s,
            wait_for_participants: f.wait_for_participants,
            server_learning_rate: f.server_learning_rate.unwrap_or(defaults.server_learning_rate),
            server_momentum: f.server_momentum.unwrap_or(defaults.server_momentum),
            secure_aggregation: f.secure_aggregation.unwrap_or(true),
            secagg_clip: f.secagg_clip.unwrap_or(0.0),
            privacy: f
                .privacy
                .as_ref()
                .map(|p| {
                    p.to_proto(JobFrame {
                        rounds: f.rounds.unwrap_or(defaults.rounds),
                        num_params,
                        min_participants: f.min_participants,
                        wait_for_participants: f.wait_for_participants,
                        participants_per_round: f.participants_per_round,
                    })
                })
                .transpose()
                .with_context(|| format!("{}: [privacy]", path.display()))?,
            escalation_target_recall: f.escalation_target_recall,
            data_description: f.data_description,
            promotion_tolerance_points: f.promotion_tolerance_points.unwrap_or(0.0),
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> v1::JobSpec {
        v1::JobSpec {
            job_id: self.job_id.clone(),
            model_spec_json: self.spec.to_json().into(),
            rounds: self.rounds,
            train: Some(train_to_proto(&self.train)),
            participants_per_round: self.participants_per_round,
            min_participants: self.min_participants,
            round_deadline_s: self.round_deadline_s,
            wait_for_participants: self.wait_for_participants,
            server_learning_rate: self.server_learning_rate,
            server_momentum: self.server_momentum,
            plain_aggregation: !self.secure_aggregation,
            secagg_clip: self.secagg_clip,
            secagg_weight_cap: 0.0,
            privacy: self.privacy.clone(),
            escalation_target_recall: self.escalation_target_recall.unwrap_or(0.0),
            data_description: self.data_description.clone(),
            promotion_tolerance_points: self.promotion_tolerance_points,
        }
    }
}

/// Train parameters on the wire.
pub fn train_to_proto(t: &TrainParams) -> v1::TrainParams {
    v1::TrainParams {
        local_epochs: t.local_epochs,
        learning_rate: t.learning_rate,
        batch_size: t.batch_size,
        l2: t.l2,
        seed: t.seed,
    }
}

/// Downloads version `version` (0: latest) of `job` as raw parameters with their spec JSON.
pub async fn download_params(
    client: &mut CoordinatorClient<Channel>,
    job: &str,
    version: u64,
) -> anyhow::Result<(u64, bytes::Bytes, Vec<f32>)> {
    let (h, mut stream) = model_stream(client, job, version).await?;
    let n = usize::try_from(h.num_params)?;
    let mut params = Vec::with_capacity(n);
    let mut hasher = ContentDigest::new();
    while let Some(c) = stream.message().await? {
        let Some(model_chunk::Kind::Data(d)) = c.kind else { bail!("header repeated mid-stream") };
        if d.len() % 4 != 0 || params.len() + d.len() / 4 > n {
            bail!("malformed model chunk");
        }
        hasher.update(&d);
        params.extend(d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    }
    if params.len() != n || !hasher.matches(&h.sha256) {
        bail!("model download incomplete or corrupt");
    }
    Ok((h.version, h.model_spec_json, params))
}

/// Opens the download of `version` (0: the latest) of `job`: its header, and the stream of its chunks.
async fn model_stream(
    client: &mut CoordinatorClient<Channel>,
    job: &str,
    version: u64,
) -> anyhow::Result<(v1::ModelHeader, tonic::Streaming<v1::ModelChunk>)> {
    let mut stream = client
        .download_model(v1::ModelRequest { job_id: job.into(), version, latest_job: false })
        .await
        .with_context(|| format!("downloading version {version} of {job}"))?
        .into_inner();
    let Some(model_chunk::Kind::Header(h)) = stream.message().await?.and_then(|c| c.kind) else {
        bail!("model stream did not start with a header");
    };
    Ok((h, stream))
}

/// The model card of `version` (0: the latest) of `job`, from the download's header alone.
pub async fn model_card(
    client: &mut CoordinatorClient<Channel>,
    job: &str,
    version: u64,
) -> anyhow::Result<Option<hearth_models::ModelCard>> {
    let (h, _) = model_stream(client, job, version).await?;
    if h.model_card_json.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&h.model_card_json).with_context(|| format!("the card of {job}"))?))
}

/// Downloads a committed model of any family as its spec and parameters.
pub async fn download_spec(
    client: &mut CoordinatorClient<Channel>,
    job: &str,
    version: u64,
) -> anyhow::Result<(ModelSpec, Vec<f32>)> {
    let (_, spec, params) = download_params(client, job, version).await?;
    let spec = ModelSpec::from_json(&spec).with_context(|| format!("the spec of job {job}"))?;
    if spec.num_params() != params.len() {
        bail!("job {job}: {} parameters, its spec says {}", params.len(), spec.num_params());
    }
    Ok((spec, params))
}

pub async fn run(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Submit { spec, conn, detach } => {
            let plan = JobPlan::from_file(&spec)?;
            let mut client = conn.connect().await?;
            let id =
                client.submit_job(plan.to_proto()).await.context("submitting the job")?.into_inner().job_id;
            println!("{id}");
            if detach {
                return Ok(());
            }
            watch(&mut client, &id).await
        }
        JobCommand::Status { conn } => {
            let mut client = conn.connect().await?;
            let s = client.get_status(v1::StatusRequest {}).await?.into_inner();
            println!("protocol {}", s.protocol_version);
            println!("{:<24} {:<10}", "participant", "connected");
            for p in &s.participants {
                println!("{:<24} {:<10}", p.participant_id, p.connected);
            }
            println!();
            println!("{:<24} {:<10} {:>7} {:>10} {:>8}", "job", "state", "rounds", "committed", "version");
            for j in &s.jobs {
                println!(
                    "{:<24} {:<10} {:>7} {:>10} {:>8}",
                    j.job_id, j.state, j.rounds, j.committed_rounds, j.latest_version
                );
            }
            Ok(())
        }
        JobCommand::Watch { job_id, conn } => {
            let mut client = conn.connect().await?;
            watch(&mut client, &job_id).await
        }
        JobCommand::List { conn } => {
            let mut client = conn.connect().await?;
            let s = client.get_status(v1::StatusRequest {}).await.context("reading the jobs")?.into_inner();
            println!(
                "{:<24} {:<10} {:<9} {:>9} {:>8} {:>9}  failure",
                "job", "family", "state", "committed", "version", "accuracy"
            );
            for j in &s.jobs {
                let accuracy = if j.accuracy < 0.0 { "-".to_string() } else { format!("{:.4}", j.accuracy) };
                println!(
                    "{:<24} {:<10} {:<9} {:>9} {:>8} {:>9}  {}",
                    j.job_id,
                    j.family,
                    j.state,
                    format!("{}/{}", j.committed_rounds, j.rounds),
                    j.latest_version,
                    accuracy,
                    j.failure
                );
            }
            Ok(())
        }
        JobCommand::Cancel { job_id, conn } => {
            let mut client = conn.connect().await?;
            client
                .cancel_job(v1::JobRef { job_id: job_id.clone() })
                .await
                .with_context(|| format!("cancelling job {job_id}"))?;
            eprintln!("job {job_id}: cancel requested; waiting for it to end");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            loop {
                let d = client.get_job(v1::JobRef { job_id: job_id.clone() }).await?.into_inner();
                let status = d.status.unwrap_or_default();
                if status.state != "running" {
                    eprintln!(
                        "job {job_id} ended {} at version {} ({}); the participants keep serving the model they \
                         served before",
                        status.state, status.latest_version, status.failure
                    );
                    return Ok(());
                }
                if std::time::Instant::now() > deadline {
                    bail!("job {job_id} did not end within 120 s of its cancellation; `hearth job list` shows it");
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        JobCommand::Resume { job_id, conn, detach } => {
            let mut client = conn.connect().await?;
            let s = client
                .resume_job(v1::JobRef { job_id: job_id.clone() })
                .await
                .with_context(|| format!("resuming job {job_id}"))?
                .into_inner();
            eprintln!("job {job_id} runs again from round {}", s.latest_version + 1);
            if detach {
                return Ok(());
            }
            watch(&mut client, &job_id).await
        }
        JobCommand::Logs { job_id, conn } => {
            let mut client = conn.connect().await?;
            let d = client
                .get_job(v1::JobRef { job_id: job_id.clone() })
                .await
                .with_context(|| format!("reading job {job_id}"))?
                .into_inner();
            print!("{}", job_history(&d));
            Ok(())
        }
    }
}

/// `hearth job logs`: a job's history as text.
pub fn job_history(d: &v1::JobDetail) -> String {
    use std::fmt::Write;
    let s = d.status.clone().unwrap_or_default();
    let mut out = String::new();
    let aggregation = if d.secure_aggregation { "secure aggregation" } else { "plain aggregation" };
    let dp = if d.differentially_private { ", differentially private" } else { "" };
    let _ = writeln!(
        out,
        "job {} ({} model), submitted by {}; {aggregation}{dp}",
        s.job_id, s.family, d.submitted_by
    );
    let _ = writeln!(out, "{}", progress_header());
    for r in &d.rounds {
        let _ = writeln!(out, "{}", progress_row(r));
    }
    for f in &d.failures {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(f.unix_ms);
        let _ =
            writeln!(out, "{} round {} failed: {}", humantime::format_rfc3339_seconds(at), f.round, f.reason);
    }
    match s.state.as_str() {
        "failed" => {
            let _ = writeln!(out, "failed at version {}: {}", s.latest_version, s.failure);
        }
        state => {
            let _ = writeln!(out, "{state} at version {} of {} rounds", s.latest_version, s.rounds);
        }
    }
    out
}

/// The header of the per-round table `job submit` and `job watch` print.
pub fn progress_header() -> String {
    format!(
        "{:>5} {:>12} {:>9} {:>10} {:>8} {:>9} {:>8} {:>10} {:>9}",
        "round",
        "participants",
        "examples",
        "train_loss",
        "seconds",
        "accuracy",
        "macro_f1",
        "oos_recall",
        "held_out"
    )
}

/// One committed round as a row of that table. The last four columns are the federated evaluation of the
/// round's model on the participants' held-out data (secure sums; `-` when it did not run). A DP round
/// releases no example count or loss: `-` there too.
pub fn progress_row(s: &v1::RoundSummary) -> String {
    let dash = || "-".to_string();
    let (examples, loss) = if s.examples == 0 {
        (dash(), dash())
    } else {
        (s.examples.to_string(), format!("{:.4}", s.train_loss))
    };
    let (acc, f1, oos, held) = match &s.evaluation {
        Some(e) => (
            format!("{:.4}", e.accuracy),
            format!("{:.4}", e.macro_f1),
            if e.oos_examples == 0 { dash() } else { format!("{:.4}", e.oos_recall) },
            e.examples.to_string(),
        ),
        None => (dash(), dash(), dash(), dash()),
    };
    format!(
        "{:>5} {:>12} {:>9} {:>10} {:>8.2} {acc:>9} {f1:>8} {oos:>10} {held:>9}",
        s.round, s.participants, examples, loss, s.seconds
    )
}

async fn watch(client: &mut CoordinatorClient<Channel>, id: &str) -> anyhow::Result<()> {
    let mut events = client.watch_job(v1::WatchJobRequest { job_id: id.into() }).await?.into_inner();
    println!("{}", progress_header());
    while let Some(ev) = events.message().await? {
        match ev.kind {
            Some(job_event::Kind::Committed(s)) => println!("{}", progress_row(&s)),
            Some(job_event::Kind::Failed(f)) => eprintln!("round {} failed: {}", f.round, f.reason),
            Some(job_event::Kind::Finished(f)) if f.failed => bail!(
                "job {} failed at version {}: {}; the participants keep serving the model they served before",
                f.job_id,
                f.final_version,
                f.reason
            ),
            Some(job_event::Kind::Finished(f)) => {
                eprintln!(
                    "job {} finished at version {}; each participant serves it unless its promotion gate or a pin holds it back",
                    f.job_id, f.final_version
                );
                return Ok(());
            }
            _ => {}
        }
    }
    bail!("the coordinator closed job {id}'s events before the job ended; `hearth job watch {id}` follows it again")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &Path, toml: &str) -> anyhow::Result<JobPlan> {
        let path = dir.join("job.toml");
        std::fs::write(&path, toml)?;
        JobPlan::from_file(&path)
    }

    #[test]
    fn job_files_name_a_family_and_get_its_tuned_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(
            dir.path(),
            "min_participants = 4\nescalation_target_recall = 0.8\ndata_description = \"chats\"\n\
             [model]\nfamily = \"emotion\"\nlabels = [\"joy\", \"anger\", \"neutral\"]\n",
        )
        .unwrap();
        let ModelSpec::Emotion(spec) = &p.spec else { panic!("{:?}", p.spec) };
        assert_eq!(spec.labels, ["anger", "joy", "neutral"]);
        let d = p.spec.defaults();
        assert_eq!((p.rounds, p.train.batch_size, p.server_momentum), (d.rounds, 64, d.server_momentum));
        let wire = p.to_proto();
        assert_eq!((wire.escalation_target_recall, wire.data_description.as_str()), (0.8, "chats"));
        assert!(!wire.plain_aggregation, "secure aggregation by default");

        std::fs::write(dir.path().join("catalogue.txt"), "85123A\n22423\n\n20725\n").unwrap();
        let p = plan(
            dir.path(),
            "rounds = 3\nmin_participants = 4\n[model]\nfamily = \"recommend\"\nitems_file = \"catalogue.txt\"\nfirst_day = \"2011-01-01\"\ndays = 30\n",
        )
        .unwrap();
        let ModelSpec::Recommend(spec) = &p.spec else { panic!("{:?}", p.spec) };
        assert_eq!((spec.items.len(), spec.days, p.rounds), (3, 30, 3));
        assert_eq!(spec.scoring, hearth_models::recommend::Scoring::default());
        let e = plan(
            dir.path(),
            "min_participants = 4\n[model]\nfamily = \"recommend\"\nitems = [\"a\", \"b\"]\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("first_day"), "{e:#}");
        assert_eq!(p.server_momentum, 0.0, "the recommender's tuned server momentum");

        // Intent keeps its old form: no family key, labels, intent defaults.
        let p =
            plan(dir.path(), "rounds = 2\nmin_participants = 3\n[model]\nlabels = [\"a\", \"b\"]\n").unwrap();
        assert!(matches!(p.spec, ModelSpec::Intent(_)));
        assert_eq!(
            (p.server_learning_rate, p.server_momentum),
            (
                hearth_models::intent::fast_tier::SERVER_LEARNING_RATE,
                hearth_models::intent::fast_tier::SERVER_MOMENTUM
            )
        );
    }

    #[test]
    fn bad_model_sections_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let e = plan(dir.path(), "min_participants = 4\n[model]\nfamily = \"vision\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("unknown model family \"vision\""), "{e:#}");
        let e = plan(dir.path(), "min_participants = 4\n[model]\nfamily = \"recommend\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("needs `items` or `items_file`"), "{e:#}");
        let e = plan(dir.path(), "min_participants = 4\n[model]\nfamily = \"emotion\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("needs `labels` or `labels_file`"), "{e:#}");
    }
}

#[cfg(test)]
mod reference {
    use std::path::Path;

    use serde::de::{self, Visitor};

    use super::*;

    /// Reads the field names a `Deserialize` struct asks for: serde's derive passes them to
    /// `deserialize_struct`, where this deserializer records them and stops.
    struct Fields(Option<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for &mut Fields {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    fn fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
        let mut f = Fields(None);
        let _ = T::deserialize(&mut f);
        f.0.expect("a struct")
    }

    /// Whether `text` names `key` of `table` (`""` for the top level): set in the table, or as a commented
    /// `# key = ...` line within the table's section of the file.
    fn names(text: &str, table: &str, key: &str) -> bool {
        let mut current = String::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if let Some(t) = l.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                current = t.to_string();
            } else if current == table && l.split('=').next().is_some_and(|k| k.trim() == key) {
                return true;
            }
        }
        false
    }

    #[test]
    fn the_deploy_job_files_load_and_the_reference_names_every_field() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let text = std::fs::read_to_string(deploy.join("job.toml")).unwrap();
        let tables: [(&str, &[&str]); 5] = [
            ("", fields::<JobFile>()),
            ("model", fields::<ModelSection>()),
            ("model.features", fields::<FeatureConfig>()),
            ("train", fields::<TrainSection>()),
            ("privacy", fields::<PrivacySection>()),
        ];
        let mut missing = Vec::new();
        for (table, keys) in tables {
            for key in keys.iter().filter(|k| !["model", "train", "privacy", "features"].contains(k)) {
                if !names(&text, table, key) {
                    missing.push(format!("{table}.{key}"));
                }
            }
        }
        assert!(missing.is_empty(), "deploy/job.toml does not name {missing:?}");

        // Each reference job loads through the loader `hearth job submit` uses, as documented.
        let intent = JobPlan::from_file(&deploy.join("job.toml")).unwrap();
        let ModelSpec::Intent(spec) = &intent.spec else { panic!("{:?}", intent.spec) };
        assert_eq!(spec.labels.len(), 151, "CLINC150's 150 intents and oos");
        assert!(intent.secure_aggregation && intent.privacy.is_none() && intent.min_participants == 3);
        let d = intent.spec.defaults();
        assert_eq!(
            (intent.server_learning_rate, intent.server_momentum),
            (d.server_learning_rate, d.server_momentum),
            "the reference job states the tuned server optimiser"
        );

        let dp = JobPlan::from_file(&deploy.join("job-intent-dp.toml")).unwrap();
        let preset = hearth_models::INTENT_DP_PRESET;
        let p = dp.privacy.as_ref().expect("a private job");
        assert_eq!(
            (dp.rounds, dp.server_learning_rate, p.clipping_norm, p.sampling_rate, p.bias_scale, p.delta),
            (
                preset.rounds,
                preset.server_learning_rate_for(false) as f32,
                preset.clip_norm,
                preset.sampling_rate,
                preset.bias_scale,
                preset.target.delta
            ),
            "a private job's defaults are the measured preset"
        );
        let ModelSpec::Intent(spec) = &dp.spec else { panic!("{:?}", dp.spec) };
        assert_eq!(spec.features.dim, preset.feature_dim);
        assert!(p.noise_multiplier > 0.1 && p.noise_multiplier < 100.0, "{}", p.noise_multiplier);

        let emotion = JobPlan::from_file(&deploy.join("job-emotion.toml")).unwrap();
        let ModelSpec::Emotion(spec) = &emotion.spec else { panic!("{:?}", emotion.spec) };
        assert_eq!(spec.labels.len(), 7);
        let recommend = JobPlan::from_file(&deploy.join("job-recommend.toml")).unwrap();
        let ModelSpec::Recommend(spec) = &recommend.spec else { panic!("{:?}", recommend.spec) };
        assert!(spec.items.len() > 1000, "{} items", spec.items.len());
    }

    #[test]
    fn the_field_reader_finds_a_field_that_is_not_named() {
        let text = "rounds = 3\n[model]\n# labels = []\n";
        assert!(names(text, "", "rounds") && names(text, "model", "labels"));
        assert!(!names(text, "", "labels") && !names(text, "model", "rounds"));
        assert!(fields::<TrainSection>().contains(&"batch_size"));
    }
}
