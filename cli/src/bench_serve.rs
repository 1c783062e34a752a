//! `hearth bench serve`: `POST /v1/messages` under load, over the two ways apps reach a participant.
//!
//! It starts a real coordinator and one participant process on loopback, trains that participant's
//! intent model (CLINC150), emotion model (GoEmotions) and recommender (Online Retail) with short plain
//! federated jobs, so every request runs the three models, the rules and the store. Then the bench's own
//! load generator ([`crate::bench_load`]: hyper client, HDR histogram, every request timed) loads `POST
//! /v1/messages` for `--seconds`, in turn over the participant's mTLS port as the institution's app
//! certificate (the path apps use) and over its loopback API-key listener (`[service.local]`), `--runs`
//! times each, alternating, so that both paths see the same machine. Requests cycle through
//! `--customers` phone numbers over four channels and a dozen texts, so customers are found, linked and
//! their sessions continued, and their records resealed and written. The store is the embedded one
//! (`backend` `embedded`), the only backend the desk has.
//!
//! The benchmark's rules file is the default one without the compensation workflow: the bench has no
//! webhook receiver, and workflows run off the request path anyway.
//!
//! Then, unless `--tier fast`, it trains the encoder tier's intent model too and measures `POST
//! /v1/intent` on the mTLS port three ways, cycling through CLINC150's test queries: the fast tier's
//! model alone, the encoder tier's alone, and the cascade the participant serves by default (the fast
//! model answers the queries it is sure of), one run each. Each row says what share of its answers the
//! fast tier's model gave.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_models::{EmotionSpec, FeatureConfig, IntentSpec, ModelSpec, RecommendSpec};
use hearth_proto::v1::{self, job_event};
use serde::Serialize;

use crate::bench_load::{self, Measured};
use crate::demo::fleet;
use crate::operator::Connection;

/// Arguments of `hearth bench serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth bench serve\n  hearth bench serve --json\n  hearth bench serve --seconds 30 --connections 64 --runs 5\n  hearth bench serve --tier fast\n\nNeeds the datasets in data/ (CLINC150, GoEmotions, Online Retail; --data-dir) and, unless --tier fast,\nthe encoder (hearth model fetch-encoder).\npath: mtls (the participant's port, as the institution's app certificate) or api-key (the loopback\nlistener); backend: the desk's store. rps: the median run's requests/s answered (rps_min..rps_max over\nthe runs); p50_ms..p99_ms: percentiles of every request of every run, from sending it to its answer's\nlast byte. mtls_to_api_key: the median of each pair of runs' ratio of requests/s."
)]
pub struct ServeBenchArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Open connections (keep-alive).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// The load generator's threads (its own runtime, beside the participant's process).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Runs of each path for `POST /v1/messages`, alternating (the report gives the median and range).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Distinct customers (phone numbers) the requests cycle through.
    #[arg(long, default_value_t = 20_000)]
    pub customers: u64,
    /// Skip training: measure with no model served (each family answers `null` with a reason).
    #[arg(long)]
    pub no_models: bool,
    /// The datasets directory (default: $HEARTH_DATA_DIR, else the repository's data/).
    #[arg(long, env = "HEARTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Intent tiers: `encoder` (the default: also train the encoder tier and measure `POST /v1/intent`
    /// fast, encoder and cascade) or `fast` (`POST /v1/messages` only).
    #[arg(long, value_enum, default_value = "encoder")]
    pub tier: crate::demo::Tier,
    /// Train the intent models on the first N CLINC150 training texts (default: all 15,100). The
    /// encoder tier embeds them first (cached in ~/.cache/hearth/embeddings).
    #[arg(long, value_name = "N")]
    pub intent_train: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The measurement.
#[derive(Debug, Serialize)]
pub struct ServeBench {
    pub connections: usize,
    pub threads: usize,
    pub seconds: u64,
    /// Which families answered every request (`true`) or were absent.
    pub models: serde_json::Value,
    /// One row per endpoint, path, backend (and tier for `POST /v1/intent`).
    pub rows: Vec<Row>,
    /// `POST /v1/messages`: the median over pairs of runs of the mTLS path's requests/s over the
    /// API-key path's, and the range.
    pub mtls_to_api_key: f64,
    pub mtls_to_api_key_min: f64,
    pub mtls_to_api_key_max: f64,
}

/// One load's summary.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `POST /v1/messages` or `POST /v1/intent`.
    pub endpoint: &'static str,
    /// `mtls` or `api-key`.
    pub path: &'static str,
    /// The desk's store: `embedded`.
    pub backend: &'static str,
    /// `POST /v1/intent`: the tier asked for (`fast`, `encoder` or `cascade`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<&'static str>,
    #[serde(flatten)]
    pub measured: Measured,
    /// `POST /v1/intent`: the share of the answers the fast tier's model gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by_fast: Option<f64>,
}

const API_KEY_ENV: &str = "HEARTH_SERVICE_API_KEY";

const TEXTS: [&str; 12] = [
    "what is my current account balance",
    "I want to transfer 200 pounds to my savings account",
    "my card was declined at the supermarket today",
    "how do I change the pin on my debit card",
    "where is my parcel, it was due yesterday",
    "can you tell me the interest rate on my loan",
    "thank you so much, that solved it",
    "I would like to cancel my subscription please",
    "how long does a refund usually take",
    "please update my address to the new flat",
    "is there a fee for paying abroad",
    "I lost my card, please block it",
];
const CHANNELS: [&str; 4] = ["app", "web", "sms", "email"];

/// The load generator's own runtime; dropped without blocking (the bench runs in an async context, where
/// a runtime may not block to shut down), also when the bench fails half way.
struct Generator(Option<tokio::runtime::Runtime>);

impl Generator {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime is taken only on drop"),
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// `POST /v1/messages` body number `n`: the next customer (of `customers`), channel and text.
fn message_body(n: usize, customers: u64) -> bytes::Bytes {
    let phone = format!("+4477{:08}", (n as u64).wrapping_mul(7919) % customers.max(1));
    serde_json::json!({
        "channel": CHANNELS[n % CHANNELS.len()],
        "identifiers": {"phone": phone},
        "text": TEXTS[n % TEXTS.len()],
    })
    .to_string()
    .into()
}

/// `POST /v1/intent` bodies asking for `tier`, one per query.
fn intent_bodies(queries: &[String], tier: &str) -> Vec<bytes::Bytes> {
    queries.iter().map(|q| serde_json::json!({"text": q, "tier": tier}).to_string().into()).collect()
}

/// The label lists and catalogue the bench's jobs train, and the queries `POST /v1/intent` is sent.
struct Specs {
    intent: Vec<String>,
    emotion: Vec<String>,
    recommend: RecommendSpec,
    queries: Vec<String>,
}

/// Writes one participant's data (intent: CLINC150; emotion: a GoEmotions slice; recommend: Online
/// Retail) into its store.
fn import(
    data: &Path,
    cfg: &hearth_participant::ParticipantConfig,
    pass: &zeroize::Zeroizing<String>,
    a: &ServeBenchArgs,
) -> anyhow::Result<Specs> {
    let clinc = data.join("clinc150/data_full.json");
    let text = std::fs::read_to_string(&clinc)
        .with_context(|| format!("reading {} (set --data-dir or HEARTH_DATA_DIR)", clinc.display()))?;
    let mut intent =
        hearth_models::parse_clinc150(&text).with_context(|| format!("parsing {}", clinc.display()))?;
    intent.train.truncate(a.intent_train.unwrap_or(usize::MAX).max(1));
    if a.tier == crate::demo::Tier::Encoder {
        crate::demo::embeddings::attach(
            "clinc150-train",
            &mut [&mut intent.train],
            &crate::demo::embeddings::cache_dir(),
            &indicatif::MultiProgress::new(),
        )?;
    }
    let queries: Vec<String> = intent.test.iter().map(|e| e.text.clone()).collect();
    let mut intent_labels: Vec<String> = intent.train.iter().map(|e| e.label.clone()).collect();
    intent_labels.sort();
    intent_labels.dedup();
    let ek = data.join("goemotions/ekman");
    let read = |f: &str| {
        std::fs::read_to_string(ek.join(f)).with_context(|| format!("reading {}", ek.join(f).display()))
    };
    let labels = hearth_models::emotion::parse_emotion_labels(&read("labels.txt")?)?;
    let emotions = hearth_models::emotion::parse_goemotions(&read("train.tsv")?, &labels);
    let retail = data.join("online-retail/transactions.csv");
    let rows = hearth_models::recommend::data::parse_transactions(
        &std::fs::read_to_string(&retail).with_context(|| format!("reading {}", retail.display()))?,
    )?
    .examples;
    let (purchases, _) = hearth_models::recommend::data::clean(&rows);
    let recommend = hearth_models::recommend::data::spec_for(
        &purchases,
        &hearth_models::recommend::data::descriptions(&rows),
    )?;
    let node = hearth_participant::open_node(cfg, "cli:bench", Some(pass))?;
    node.store.import(&intent.train)?;
    if a.tier == crate::demo::Tier::Encoder {
        // Each stored text without an embedding gets the one computed (or cached) for the same text.
        let by_text: std::collections::HashMap<&str, &Arc<[f32]>> =
            intent.train.iter().filter_map(|e| Some((e.text.as_str(), e.embedding.as_ref()?))).collect();
        let rows: Vec<(u64, Vec<f32>)> = node
            .store
            .unembedded()?
            .into_iter()
            .filter_map(|(key, text)| by_text.get(text.as_str()).map(|v| (key, v.to_vec())))
            .collect();
        node.store.save_embeddings(&rows)?;
    }
    node.store.import_emotion(&emotions.examples[..emotions.examples.len().min(12_000)])?;
    node.store.import_transactions(&rows)?;
    Ok(Specs { intent: intent_labels, emotion: labels, recommend, queries })
}

/// Trains `spec` in a plain federated job of `rounds` rounds (the family's default when `None`).
async fn train(conn: &Connection, job_id: &str, spec: ModelSpec, rounds: Option<u64>) -> anyhow::Result<()> {
    let mut op = conn.connect().await?;
    let d = spec.defaults();
    let rounds = rounds.unwrap_or(d.rounds);
    let emotion = matches!(spec, ModelSpec::Emotion(_));
    op.submit_job(v1::JobSpec {
        job_id: job_id.into(),
        model_spec_json: spec.to_json().into(),
        rounds,
        train: Some(v1::TrainParams {
            local_epochs: d.train.local_epochs,
            learning_rate: d.train.learning_rate,
            batch_size: d.train.batch_size,
            l2: d.train.l2,
            seed: 1,
        }),
        min_participants: 1,
        round_deadline_s: 300,
        wait_for_participants: 1,
        plain_aggregation: true,
        server_learning_rate: d.server_learning_rate,
        server_momentum: d.server_momentum,
        escalation_target_recall: if emotion { 0.7 } else { 0.0 },
        ..Default::default()
    })
    .await
    .with_context(|| format!("submitting the {job_id} job"))?;
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job_id.into() }).await?.into_inner();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(600), events.message()).await?? {
        match ev.kind {
            Some(job_event::Kind::Failed(f)) => bail!("{job_id}: round {} failed: {}", f.round, f.reason),
            Some(job_event::Kind::Finished(_)) => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// POSTs one message on the local listener with curl-free plain HTTP; returns the answer.
async fn probe(addr: &str, key: &str) -> anyhow::Result<serde_json::Value> {
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let body = serde_json::json!({"channel": "app", "identifiers": {"phone": "+447700000001"}, "text": "what is my balance"});
    let req = http::Request::post("/v1/messages")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(bytes::Bytes::from(body.to_string())))?;
    let resp = send.send_request(req).await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&bytes)?)
}

/// Runs the benchmark and prints the table (or JSON).
pub async fn run(a: ServeBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("hearth-bench-serve-").tempdir()?;
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs"))?;
    let pki_dir = dir.join("pki");
    let name = "bench".to_string();
    crate::pki::init(&crate::pki::InitArgs {
        dir: pki_dir.clone(),
        consortium: "Hearth bench".into(),
        participants: vec![name.clone()],
        dns: vec![],
        ip: vec![],
        suite: hearth_crypto::SuiteId::International,
    })?;
    let passphrase = zeroize::Zeroizing::new(hex::encode(rand::random::<[u8; 24]>()));
    let api_key = hex::encode(rand::random::<[u8; 24]>());
    let keystore = hearth_node::config::KeystoreConfig {
        argon2_memory_kib: 19 * 1024,
        argon2_iterations: 2,
        ..Default::default()
    };
    let data_dir = dir.join("participants").join(&name);
    let rules = dir.join("bench-rules.toml");
    std::fs::write(&rules, hearth_desk::rules::DEFAULT_RULES.replace(", workflow = \"compensation\"", ""))?;
    let mut service = hearth_desk::DeskConfig { rules_file: Some(rules), ..Default::default() };
    service.local.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let cfg = hearth_participant::ParticipantConfig {
        data_dir: data_dir.clone(),
        tls: hearth_transport::TlsPaths::in_dir(&pki_dir, &name),
        keystore: keystore.clone(),
        ..Default::default()
    };
    let specs = if a.no_models {
        None
    } else {
        Some(import(&crate::demo::data_dir(a.data_dir.as_deref()), &cfg, &passphrase, &a)?)
    };
    let nodes = fleet::Nodes {
        allow_plain: true,
        suite: hearth_crypto::SuiteId::International,
        keystore,
        passphrase: passphrase.to_string(),
        service,
        env: vec![(API_KEY_ENV.into(), api_key.clone())],
    };
    let (_fleet, coord_addr, participants) =
        fleet::start(dir, &pki_dir, std::slice::from_ref(&name), &nodes).await?;
    let local = std::fs::read_to_string(dir.join(format!("{name}.local")))
        .context("the participant's local listener address")?
        .trim()
        .to_string();
    let t = Instant::now();
    let (mut queries, mut intent_labels) = (None, None);
    if let Some(specs) = specs {
        queries = Some(specs.queries);
        intent_labels = Some(specs.intent.clone());
        let conn = Connection {
            coordinator: coord_addr.clone(),
            coordinator_name: "localhost".into(),
            tls_dir: pki_dir.clone(),
        };
        eprintln!(
            "training the participant's intent (20 plain rounds), emotion and recommend models (2 each)..."
        );
        // Intent with its default rounds: how often the cascade's fast model is sure depends on it.
        let intent_spec = IntentSpec::new(specs.intent, FeatureConfig::default())?;
        train(&conn, "intent", ModelSpec::Intent(intent_spec), None).await?;
        train(
            &conn,
            "emotion",
            ModelSpec::Emotion(EmotionSpec::new(specs.emotion, FeatureConfig::default())?),
            Some(2),
        )
        .await?;
        train(&conn, "recommend", ModelSpec::Recommend(specs.recommend), Some(2)).await?;
        // Wait until both are calibrated and served.
        loop {
            let v = probe(&local, &api_key).await?;
            if v["intent"].is_object() && v["emotion"].is_object() && v["recommendations"].is_object() {
                break;
            }
            if t.elapsed() > Duration::from_secs(900) {
                bail!("the models were not served: {v}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("models served after {:.0} s", t.elapsed().as_secs_f64());
    }
    let first = probe(&local, &api_key).await?;
    let models = serde_json::json!({
        "intent": first["intent"].is_object(),
        "emotion": first["emotion"].is_object(),
        "recommend": first["recommendations"].is_object(),
    });

    // The load generator's own runtime and threads, so that the bench's other tasks do not share them.
    let generator = Generator(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads.max(1))
            .thread_name("hearth-load")
            .enable_all()
            .build()?,
    ));
    let on_generator = generator.handle();
    let load = |load: bench_load::Load| {
        let handle = on_generator.spawn(bench_load::run(load));
        async move { handle.await? }
    };
    let app = hearth_transport::TlsMaterial::load(
        &pki_dir.join("ca.pem"),
        &pki_dir.join(format!("{name}/app.pem")),
        &pki_dir.join(format!("{name}/app.key")),
    )?;
    let addr = participants.first().map(|(_, a)| a.clone()).context("the participant's address")?;
    let mtls = bench_load::Via::mtls(&addr, &app)?;
    let api_key_path = bench_load::Via::ApiKey { addr: local.clone(), key: api_key.clone() };
    let customers = a.customers.max(1);
    let messages = |via: &bench_load::Via| bench_load::Load {
        via: via.clone(),
        path: "/v1/messages",
        bodies: Arc::new(move |n| message_body(n, customers)),
        connections: a.connections.max(1),
        duration: Duration::from_secs(a.seconds.max(1)),
    };
    // A second of each path first, not measured: the first requests create the customers and open the
    // store's pages, which would count against whichever path came first.
    for via in [&api_key_path, &mtls] {
        load(bench_load::Load { duration: Duration::from_secs(1), ..messages(via) }).await?;
    }
    let (mut by_api_key, mut by_mtls, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..a.runs.max(1) {
        // Alternate which path goes first, so neither always follows the other's writes.
        let (first, second) = if run % 2 == 0 { (&api_key_path, &mtls) } else { (&mtls, &api_key_path) };
        let x = load(messages(first)).await?;
        let y = load(messages(second)).await?;
        let (k, m) = if run % 2 == 0 { (x, y) } else { (y, x) };
        eprintln!("run {}: api-key {:.0} rps, mtls {:.0} rps", run + 1, k.rps(), m.rps());
        ratios.push(m.rps() / k.rps().max(1e-9));
        by_api_key.push(k);
        by_mtls.push(m);
    }
    let row = |path, measured, tier: Option<&'static str>, answered_by_fast| Row {
        endpoint: if tier.is_some() { "POST /v1/intent" } else { "POST /v1/messages" },
        path,
        backend: "embedded",
        tier,
        measured,
        answered_by_fast,
    };
    let mut rows = vec![
        row(mtls.name(), bench_load::summarise(&by_mtls), None, None),
        row(api_key_path.name(), bench_load::summarise(&by_api_key), None, None),
    ];
    if let Some(queries) = queries.filter(|_| a.tier == crate::demo::Tier::Encoder) {
        let conn = Connection {
            coordinator: coord_addr,
            coordinator_name: "localhost".into(),
            tls_dir: pki_dir.clone(),
        };
        eprintln!("training the participant's encoder-tier intent model (plain rounds)...");
        let labels = intent_labels.unwrap_or_default();
        train(&conn, "intent-encoder", ModelSpec::Intent(IntentSpec::encoder_tier(labels)?), None).await?;
        let queries = Arc::new(queries);
        let intent = |tier: &'static str, connections: usize, seconds: u64| {
            let bodies = Arc::new(intent_bodies(&queries, tier));
            bench_load::Load {
                via: mtls.clone(),
                path: "/v1/intent",
                bodies: Arc::new(move |n| bodies[n % bodies.len()].clone()),
                connections,
                duration: Duration::from_secs(seconds),
            }
        };
        loop {
            let o = load(intent("encoder", 1, 1)).await?;
            if o.non_2xx == 0 && !o.latency_us.is_empty() {
                break;
            }
            if t.elapsed() > Duration::from_secs(1800) {
                bail!("the encoder-tier intent model was not served; see {}", dir.join("logs").display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for tier in ["fast", "encoder", "cascade"] {
            let o = load(intent(tier, a.connections.max(1), a.seconds.max(1))).await?;
            let answered = o.latency_us.len().saturating_sub(o.non_2xx).max(1);
            let fast = o.fast as f64 / answered as f64;
            rows.push(row(mtls.name(), bench_load::summarise(&[o]), Some(tier), Some(fast)));
        }
    }
    drop(generator);
    let r = ServeBench {
        connections: a.connections,
        threads: a.threads,
        seconds: a.seconds,
        models,
        rows,
        mtls_to_api_key: bench_load::median(&ratios),
        mtls_to_api_key_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        mtls_to_api_key_max: ratios.iter().copied().fold(0.0, f64::max),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{:<18} {:<8} {:<9} {:<8} {:>4} {:>9} {:>8} {:>17} {:>7} {:>7} {:>7} {:>7} {:>7}  ",
            "endpoint",
            "path",
            "backend",
            "tier",
            "runs",
            "requests",
            "rps",
            "rps range",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "non_2xx"
        );
        for row in &r.rows {
            let m = &row.measured;
            let tail = row
                .answered_by_fast
                .map_or(String::new(), |f| format!("{:.0}% answered by the fast tier", 100.0 * f));
            println!(
                "{:<18} {:<8} {:<9} {:<8} {:>4} {:>9} {:>8.0} {:>17} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7}  {tail}",
                row.endpoint,
                row.path,
                row.backend,
                row.tier.unwrap_or("-"),
                m.runs,
                m.requests,
                m.rps,
                format!("{:.0}..{:.0}", m.rps_min, m.rps_max),
                m.p50_ms,
                m.p90_ms,
                m.p99_ms,
                m.max_ms,
                m.non_2xx
            );
        }
        println!(
            "POST /v1/messages, mtls over api-key: {:.2} (median of {} pairs of runs; {:.2}..{:.2}); models: {}",
            r.mtls_to_api_key,
            ratios.len(),
            r.mtls_to_api_key_min,
            r.mtls_to_api_key_max,
            r.models
        );
    }
    let non_2xx: u64 = r.rows.iter().map(|row| row.measured.non_2xx).sum();
    let socket_errors: u64 = r.rows.iter().map(|row| row.measured.socket_errors).sum();
    if non_2xx > 0 || socket_errors > 0 {
        eprintln!(
            "warning: {non_2xx} non-2xx answers and {socket_errors} socket errors; see {}",
            dir.join("logs").display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_bodies_cycle_customers_channels_and_texts() {
        let v: serde_json::Value = serde_json::from_slice(&message_body(5, 3)).unwrap();
        assert_eq!(v["channel"], CHANNELS[1]);
        assert_eq!(v["text"], TEXTS[5]);
        assert_eq!(v["identifiers"]["phone"], format!("+4477{:08}", 5 * 7919 % 3));
        let customers: std::collections::HashSet<String> = (0..1000)
            .map(|n| {
                serde_json::from_slice::<serde_json::Value>(&message_body(n, 50)).unwrap()["identifiers"]
                    ["phone"]
                    .to_string()
            })
            .collect();
        assert_eq!(customers.len(), 50, "every customer is reached");
    }
}
