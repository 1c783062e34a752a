//! `hearth demo`: a complete federated run on one machine, with real processes and real mTLS.
//!
//! 1. Load the dataset (CLINC150 by default) and split its training set over N institutions with a seeded
//!    Dirichlet(alpha) draw; the test set stays with the operator for evaluation.
//! 2. Create a development PKI, write each institution's shard into its own participant store.
//! 3. Start one coordinator and N participant processes on loopback, submit the job as the operator,
//!    follow it round by round, evaluating each committed global model on the test set.
//! 4. Train the same model centrally on the pooled data for comparison.
//! 5. Keep the participants serving the final model until Ctrl-C (unless `--no-serve`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_models::{
    choose_oos_threshold, dirichlet_split, encode, evaluate, parse_clinc150, train_local, Example,
    FeatureConfig, IntentModel, IntentSpec, Metrics, TrainParams, DEFAULT_ROUNDS,
};
use hearth_proto::v1::{self, job_event};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::operator::{download_model, Connection, JobPlan};

/// Arguments of `hearth demo`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth demo\n  hearth demo --no-serve --json > summary.json\n  hearth demo --participants 3 --rounds 5 --alpha 0.1\n  hearth demo --train my-train.csv --test my-test.csv\n\nLogs of the coordinator and participants go to DIR/logs/. Without --dir, DIR is a fresh temporary\ndirectory that is removed when the demo ends."
)]
pub struct DemoArgs {
    /// Number of institutions (participant processes).
    #[arg(long, default_value_t = 5)]
    pub participants: usize,
    /// Federated rounds (default: the tuned number for the model).
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Local epochs per round.
    #[arg(long)]
    pub local_epochs: Option<u32>,
    /// Concentration of the Dirichlet split (smaller: more skewed institutions).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Seed for the split, the training order and participant selection.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Your own training data (CSV `text,label` or JSON Lines); requires --test.
    #[arg(long, requires = "test")]
    pub train: Option<PathBuf>,
    /// Your own test data; requires --train.
    #[arg(long, requires = "train")]
    pub test: Option<PathBuf>,
    /// Validation data for choosing the out-of-scope threshold (with --train/--test).
    #[arg(long, requires = "train")]
    pub val: Option<PathBuf>,
    /// CLINC150 `data_full.json` (default: ../shared/data/clinc150/data_full.json).
    #[arg(long, env = "HEARTH_CLINC150")]
    pub clinc150: Option<PathBuf>,
    /// Working directory for PKI, stores and logs (kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Exit after the final table instead of serving.
    #[arg(long)]
    pub no_serve: bool,
    /// Print the summary as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seconds a round stays open.
    #[arg(long, default_value_t = 120)]
    pub round_deadline_s: u32,
    /// Plain federated averaging instead of secure aggregation (the coordinator then sees every update).
    /// Secure aggregation needs at least 4 participants; with fewer the demo runs plain and says so.
    #[arg(long)]
    pub plain: bool,
    /// The consortium's algorithm suite: `international` (ECDSA P-256, AES-256-GCM, SHA-256, X25519,
    /// ChaCha20) or `national` (SM2, SM4-GCM, SM3, SM2 key agreement, SM4-CTR). TLS stays TLS 1.3 with rustls
    /// either way (see README: national cryptography).
    #[arg(long, default_value = "international")]
    pub suite: hearth_crypto::SuiteId,
}

/// One row of the per-round table.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRow {
    pub round: u64,
    pub participants: u32,
    pub train_loss: f32,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
    pub seconds: f64,
}

/// Final metrics of one way of training.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
    pub oos_threshold: Option<f32>,
    pub train_seconds: f64,
}

/// The whole `--json` document.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dataset: String,
    pub seed: u64,
    pub participants: usize,
    pub alpha: f64,
    pub train_examples: usize,
    pub test_examples: usize,
    pub shard_sizes: Vec<usize>,
    pub model: serde_json::Value,
    pub train: serde_json::Value,
    /// Whether rounds were securely aggregated (the coordinator saw only sums).
    pub secure_aggregation: bool,
    /// The consortium's algorithm suite.
    pub suite: hearth_crypto::SuiteId,
    pub rounds: Vec<RoundRow>,
    pub federated: Outcome,
    pub centralized: Outcome,
    pub top_confusions: Vec<hearth_models::Confusion>,
}

struct Dataset {
    name: String,
    train: Vec<Example>,
    val: Vec<Example>,
    test: Vec<Example>,
}

fn default_clinc150() -> PathBuf {
    let from_cwd = PathBuf::from("../shared/data/clinc150/data_full.json");
    if from_cwd.exists() {
        return from_cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/clinc150/data_full.json")
}

fn load_dataset(a: &DemoArgs) -> anyhow::Result<Dataset> {
    if let (Some(train), Some(test)) = (&a.train, &a.test) {
        let val = match &a.val {
            Some(v) => crate::data::read_labelled(v)?,
            None => vec![],
        };
        return Ok(Dataset {
            name: format!("{} / {}", train.display(), test.display()),
            train: crate::data::read_labelled(train)?,
            val,
            test: crate::data::read_labelled(test)?,
        });
    }
    let path = a.clinc150.clone().unwrap_or_else(default_clinc150);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("reading CLINC150 from {} (set --clinc150 or HEARTH_CLINC150)", path.display())
    })?;
    let d = parse_clinc150(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Dataset { name: "clinc150".into(), train: d.train, val: d.val, test: d.test })
}

/// Child processes, killed when dropped.
struct Fleet {
    children: Vec<(String, Child)>,
    /// Set in every child's environment (the keystore passphrase).
    env: Vec<(String, String)>,
}

impl Fleet {
    async fn spawn(&mut self, name: &str, args: &[&str], log: &Path) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the hearth executable")?;
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(exe)
            .args(args)
            .env("HEARTH_LOG", std::env::var("HEARTH_LOG").unwrap_or_else(|_| "info".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited early ({status}); see its log");
            }
        }
        Ok(())
    }
}

/// Waits for a service's ready file and returns the address in it.
async fn wait_ready(file: &Path, fleet: &mut Fleet, what: &str) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(file) {
            if !s.is_empty() {
                return Ok(s.trim().to_string());
            }
        }
        fleet.check_alive()?;
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{what} did not start within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn evaluate_with_threshold(model: &mut IntentModel, val: &[Example], test: &[Example]) -> Metrics {
    model.oos_threshold = if val.is_empty() { None } else { Some(choose_oos_threshold(model, val)) };
    evaluate(model, test)
}

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    if a.participants == 0 || a.participants > 64 {
        bail!("--participants must be between 1 and 64, got {}", a.participants);
    }
    let t0 = Instant::now();
    let data = load_dataset(&a)?;
    let (dir, _tmp_guard) = match &a.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("hearth-demo-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(dir.join("logs"))?;

    // Labels and model.
    let mut labels: Vec<String> = data.train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let spec = IntentSpec::new(labels, FeatureConfig::default())?;
    let mut train = TrainParams { seed: a.seed, ..TrainParams::default() };
    if let Some(e) = a.local_epochs {
        train.local_epochs = e;
    }
    let rounds = a.rounds.unwrap_or(DEFAULT_ROUNDS);

    // Split.
    let split = dirichlet_split(&data.train, a.participants, a.alpha, a.seed)?;
    let shard_sizes: Vec<usize> = split.shards.iter().map(Vec::len).collect();
    eprintln!(
        "dataset {}: {} train / {} test examples, {} labels; Dirichlet({}) split over {} institutions: {:?}",
        data.name,
        data.train.len(),
        data.test.len(),
        spec.labels.len(),
        a.alpha,
        a.participants,
        shard_sizes
    );

    // PKI and stores.
    let pki_dir = dir.join("pki");
    let names: Vec<String> = (1..=a.participants).map(|i| format!("institution-{i}")).collect();
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
    let keystore = hearth_node::config::KeystoreConfig {
        argon2_memory_kib: 19 * 1024,
        argon2_iterations: 2,
        ..Default::default()
    };
    for (name, shard) in names.iter().zip(&split.shards) {
        let store_dir = dir.join("participants").join(name);
        let _ = std::fs::remove_dir_all(&store_dir);
        let cfg = hearth_participant::ParticipantConfig {
            data_dir: store_dir,
            tls: hearth_transport::TlsPaths::in_dir(&pki_dir, name),
            suite: a.suite,
            keystore: keystore.clone(),
            ..Default::default()
        };
        let node = hearth_participant::open_node(&cfg, "cli:demo", Some(&passphrase))?;
        node.store.import(shard)?;
    }
    let coord_state = dir.join("coordinator");
    let _ = std::fs::remove_dir_all(&coord_state);

    // Processes.
    let mut fleet = Fleet {
        children: vec![],
        env: vec![(hearth_node::config::PASSPHRASE_ENV.to_string(), passphrase.to_string())],
    };
    let ready = dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&ready);
    let coord_cfg = dir.join("coordinator.toml");
    let c = hearth_coordinator::CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        state_dir: coord_state,
        tls: hearth_transport::TlsPaths::in_dir(&pki_dir, "coordinator"),
        // Plain averaging only when asked for (or when there are too few participants for secure
        // aggregation); otherwise the coordinator refuses it.
        policy: hearth_policies::RoundPolicy {
            allow_plain_aggregation: a.plain || a.participants < 4,
            ..Default::default()
        },
        keystore: keystore.clone(),
        suite: a.suite,
        ..Default::default()
    };
    std::fs::write(&coord_cfg, toml::to_string(&c)?)?;
    fleet
        .spawn(
            "coordinator",
            &["coordinator", "--config", path_str(&coord_cfg)?, "--ready-file", path_str(&ready)?],
            &dir.join("logs/coordinator.log"),
        )
        .await?;
    let coord_addr = wait_ready(&ready, &mut fleet, "the coordinator").await?;
    let mut endpoints = Vec::new();
    for name in &names {
        let cfg_path = dir.join(format!("{name}.toml"));
        let ready = dir.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&ready);
        let p = hearth_participant::ParticipantConfig {
            coordinator: coord_addr.clone(),
            coordinator_name: "localhost".into(),
            listen: "127.0.0.1:0".into(),
            data_dir: dir.join("participants").join(name),
            tls: hearth_transport::TlsPaths::in_dir(&pki_dir, name),
            keystore: keystore.clone(),
            suite: a.suite,
            ..Default::default()
        };
        std::fs::write(&cfg_path, toml::to_string(&p)?)?;
        fleet
            .spawn(
                name,
                &["participant", "--config", path_str(&cfg_path)?, "--ready-file", path_str(&ready)?],
                &dir.join(format!("logs/{name}.log")),
            )
            .await?;
        endpoints.push((name.clone(), ready));
    }
    let mut addrs = Vec::new();
    for (name, ready) in &endpoints {
        addrs.push((name.clone(), wait_ready(ready, &mut fleet, name).await?));
    }
    eprintln!(
        "coordinator on {coord_addr}, {} participants up; logs in {}",
        addrs.len(),
        dir.join("logs").display()
    );

    // The job.
    let conn = Connection {
        coordinator: coord_addr.clone(),
        coordinator_name: "localhost".into(),
        tls_dir: pki_dir.clone(),
    };
    let mut client = conn.connect().await?;
    let n = a.participants as u32;
    let secure_aggregation = !a.plain && n >= 4;
    if !a.plain && !secure_aggregation {
        eprintln!(
            "note: {n} participants are too few for secure aggregation (it needs 4); running plain averaging"
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
    let plan = JobPlan {
        job_id: "demo-intent".into(),
        spec: spec.clone(),
        train: train.clone(),
        rounds,
        participants_per_round: 0,
        min_participants: (n * 3).div_ceil(5).max(1),
        round_deadline_s: a.round_deadline_s,
        wait_for_participants: n,
        server_learning_rate: 1.0,
        server_momentum: hearth_models::DEFAULT_SERVER_MOMENTUM,
        secure_aggregation,
        secagg_clip: 0.0,
        privacy: None,
    };
    let job =
        client.submit_job(plan.to_proto()).await.context("submitting the demo job")?.into_inner().job_id;
    let mut events = client.watch_job(v1::WatchJobRequest { job_id: job.clone() }).await?.into_inner();

    let mp = MultiProgress::new();
    let style =
        ProgressStyle::with_template("round {prefix:>3}/{msg} [{bar:30}] {pos}/{len} updates {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let mut rows: Vec<RoundRow> = Vec::new();
    let header = format!(
        "{:>5} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "round", "participants", "train_loss", "accuracy", "macro_f1", "in_scope", "oos_rec"
    );
    if !a.json {
        mp.suspend(|| println!("{header}"));
    }
    let train_start = Instant::now();
    let mut last_model = None;
    while let Some(ev) = events.message().await? {
        fleet.check_alive()?;
        match ev.kind {
            Some(job_event::Kind::Opened(o)) => {
                let b = mp.add(ProgressBar::new(u64::from(o.invited)));
                b.set_style(style.clone());
                b.set_prefix(o.round.to_string());
                b.set_message(rounds.to_string());
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
                let mut model = download_model(&mut client, &job, s.version).await?;
                let (val, test) = (data.val.clone(), data.test.clone());
                let (m, model) = tokio::task::spawn_blocking(move || {
                    let m = evaluate_with_threshold(&mut model, &val, &test);
                    (m, model)
                })
                .await?;
                let row = RoundRow {
                    round: s.round,
                    participants: s.participants,
                    train_loss: s.train_loss,
                    accuracy: m.accuracy,
                    macro_f1: m.macro_f1,
                    in_scope_accuracy: m.in_scope_accuracy,
                    oos_recall: m.oos_recall,
                    seconds: s.seconds,
                };
                if !a.json {
                    mp.suspend(|| {
                        println!(
                            "{:>5} {:>12} {:>10.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
                            row.round,
                            row.participants,
                            row.train_loss,
                            row.accuracy,
                            row.macro_f1,
                            row.in_scope_accuracy,
                            row.oos_recall
                        )
                    });
                }
                rows.push(row);
                last_model = Some((model, m));
            }
            Some(job_event::Kind::Failed(f)) => {
                mp.suspend(|| eprintln!("round {} failed: {}", f.round, f.reason));
            }
            Some(job_event::Kind::Finished(_)) => break,
            None => {}
        }
    }
    let fed_seconds = train_start.elapsed().as_secs_f64();
    let Some((fed_model, fed_metrics)) = last_model else {
        bail!("the job ended without committing a round")
    };
    if (rows.len() as u64) < rounds {
        bail!("the job ended after {} of {rounds} rounds; see {}", rows.len(), dir.join("logs").display());
    }

    // Centralized baseline: same model, same hyper-parameters, the same number of passes over the data.
    eprintln!("training the centralized baseline on the pooled data...");
    let central_start = Instant::now();
    let (spec2, pooled, val, test) = (spec.clone(), data.train.clone(), data.val.clone(), data.test.clone());
    let central_params = TrainParams { local_epochs: train.local_epochs * rounds as u32, ..train.clone() };
    let (central_metrics, central_model) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let enc = encode(&spec2, &pooled)?;
        let mut params = vec![0.0f32; spec2.num_params()];
        train_local(&spec2, &mut params, &enc, &central_params)?;
        let mut model = IntentModel::from_params(spec2, params)?;
        let m = evaluate_with_threshold(&mut model, &val, &test);
        Ok((m, model))
    })
    .await??;
    let central_seconds = central_start.elapsed().as_secs_f64();

    let outcome = |m: &Metrics, model: &IntentModel, secs: f64| Outcome {
        accuracy: m.accuracy,
        macro_f1: m.macro_f1,
        in_scope_accuracy: m.in_scope_accuracy,
        oos_recall: m.oos_recall,
        oos_threshold: model.oos_threshold,
        train_seconds: secs,
    };
    let summary = Summary {
        dataset: data.name.clone(),
        seed: a.seed,
        participants: a.participants,
        alpha: a.alpha,
        train_examples: data.train.len(),
        test_examples: data.test.len(),
        shard_sizes,
        model: serde_json::json!({
            "family": "intent",
            "labels": spec.labels.len(),
            "features": spec.features,
            "num_params": spec.num_params(),
        }),
        train: serde_json::json!({
            "rounds": rounds,
            "local_epochs": train.local_epochs,
            "learning_rate": train.learning_rate,
            "batch_size": train.batch_size,
            "l2": train.l2,
        }),
        secure_aggregation,
        suite: a.suite,
        rounds: rows,
        federated: outcome(&fed_metrics, &fed_model, fed_seconds),
        centralized: outcome(&central_metrics, &central_model, central_seconds),
        top_confusions: fed_metrics.confusions.iter().take(5).cloned().collect(),
    };

    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_final(&summary);
    }
    eprintln!(
        "demo trained in {:.1} s (total {:.1} s)",
        fed_seconds + central_seconds,
        t0.elapsed().as_secs_f64()
    );

    if a.no_serve {
        return Ok(());
    }
    let (name, addr) = &addrs[0];
    let port = addr.rsplit(':').next().unwrap_or("0");
    eprintln!();
    eprintln!(
        "The {} participants now serve the final model. Ask {name} (HTTPS with an app certificate):",
        addrs.len()
    );
    eprintln!(
        "  curl --cacert {0}/ca.pem --cert {0}/app.pem --key {0}/app.key \\\n    -H 'content-type: application/json' -d '{{\"text\": \"how much money is in my checking account\"}}' \\\n    https://localhost:{port}/v1/intent",
        pki_dir.display()
    );
    for (n, a) in &addrs {
        eprintln!("  {n}: https://{a}/v1/intent (gRPC hearth.v1.Inference on the same port)");
    }
    eprintln!("Press Ctrl-C to stop.");
    crate::shutdown_signal().await;
    drop(fleet);
    Ok(())
}

fn print_final(s: &Summary) {
    println!();
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "accuracy", "macro_f1", "in_scope", "oos_rec", "seconds"
    );
    for (name, o) in [("federated", &s.federated), ("centralized", &s.centralized)] {
        println!(
            "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.1}",
            name, o.accuracy, o.macro_f1, o.in_scope_accuracy, o.oos_recall, o.train_seconds
        );
    }
    println!(
        "federated - centralized accuracy: {:+.2} points",
        100.0 * (s.federated.accuracy - s.centralized.accuracy)
    );
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("path {} is not UTF-8", p.display()))
}
