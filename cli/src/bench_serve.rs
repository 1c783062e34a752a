//! `hearth bench serve`: `POST /v1/messages` under load from a real HTTP load generator (`wrk`).
//!
//! It starts a real coordinator and one participant process on loopback, trains that participant's
//! intent model (CLINC150), emotion model (GoEmotions) and recommender (Online Retail) with short plain
//! federated jobs, so every request runs the three models, the rules and the store, then points `wrk` at the participant's loopback
//! API-key listener (`[service.local]`: wrk cannot present a client certificate) for `--seconds`.
//! Requests cycle through `--customers` phone numbers over four channels and a dozen texts, so
//! customers are found, linked and their sessions continued, and their records resealed and written.
//!
//! The benchmark's rules file is the default one without the compensation workflow: the bench has no
//! webhook receiver, and workflows run off the request path anyway.
//!
//! Then, unless `--tier fast`, it trains the encoder tier's intent model too and measures `POST
//! /v1/intent` on the participant's mTLS port three ways, cycling through CLINC150's test queries: the
//! fast tier's model alone, the encoder tier's alone, and the cascade the participant serves by default
//! (the fast model answers the queries it is sure of). wrk cannot present a client certificate, so
//! these rows come from the bench's own load generator: `--connections` keep-alive HTTPS connections
//! as the institution's app certificate, every request timed. Each row says what share of its answers
//! the fast tier's model gave.
//!
//! `wrk` must be installed (`apt-get install wrk`); the bench says so if it is not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_models::{EmotionSpec, FeatureConfig, IntentSpec, ModelSpec, RecommendSpec};
use hearth_proto::v1::{self, job_event};
use serde::Serialize;

use crate::demo::fleet;
use crate::operator::Connection;

/// Arguments of `hearth bench serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth bench serve\n  hearth bench serve --json\n  hearth bench serve --seconds 30 --connections 64\n  hearth bench serve --tier fast\n\nNeeds wrk (apt-get install wrk), the datasets in data/ (CLINC150, GoEmotions, Online Retail; --data-dir) and,\nunless --tier fast, the encoder (hearth model fetch-encoder).\nrps: requests/s completed; p99_ms: the 99th percentile latency (wrk's for /v1/messages, the bench's own\nmTLS load generator's for /v1/intent)."
)]
pub struct ServeBenchArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Open connections (keep-alive).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
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
    pub endpoint: &'static str,
    pub connections: usize,
    pub threads: usize,
    pub seconds: u64,
    #[serde(flatten)]
    pub measured: Measured,
    /// Which families answered every request (`true`) or were absent.
    pub models: serde_json::Value,
    /// `POST /v1/intent` with each tier asked for (absent with `--tier fast`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intent: Vec<IntentRow>,
}

/// `POST /v1/intent` under load with one `tier` asked for.
#[derive(Debug, Serialize)]
pub struct IntentRow {
    /// `fast`, `encoder` or `cascade`.
    pub tier: &'static str,
    #[serde(flatten)]
    pub measured: Measured,
    /// Share of the answers the fast tier's model gave.
    pub answered_by_fast: f64,
}

/// What one load measured: requests completed, their rate and latency percentiles, and the failures.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
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

/// The wrk script: a POST per request with the next customer, channel and text.
fn lua_script(customers: u64) -> String {
    let texts: Vec<String> = TEXTS.iter().map(|t| format!("{t:?}")).collect();
    let channels: Vec<String> = CHANNELS.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"local texts = {{ {texts} }}
local channels = {{ {channels} }}
local n = 0
local key = os.getenv("{API_KEY_ENV}")
local headers = {{ ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key }}
setup = function(thread) end
init = function(args) n = math.random(0, {customers}) end
request = function()
  n = n + 1
  local phone = string.format("+4477%08d", (n * 7919) % {customers})
  local body = string.format('{{"channel":"%s","identifiers":{{"phone":"%s"}},"text":"%s"}}',
    channels[n % #channels + 1], phone, texts[n % #texts + 1])
  return wrk.format("POST", "/v1/messages", headers, body)
end
"#,
        texts = texts.join(", "),
        channels = channels.join(", "),
    )
}

/// `POST /v1/intent` bodies asking for `tier`, one per query.
fn intent_bodies(queries: &[String], tier: &str) -> Vec<bytes::Bytes> {
    queries.iter().map(|q| serde_json::json!({"text": q, "tier": tier}).to_string().into()).collect()
}

/// POSTs `bodies` in turn to `path` on the mTLS endpoint at `addr` as `tls`'s certificate, over
/// `connections` keep-alive connections, for `seconds`; times every request. Returns the measurement and
/// the share of answers the fast tier's model gave. (wrk cannot present a
/// client certificate; the encoder tier is served only on the mTLS port.)
async fn load(
    addr: &str,
    tls: &hearth_transport::TlsMaterial,
    path: &'static str,
    bodies: Arc<Vec<bytes::Bytes>>,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<(Measured, f64)> {
    use http_body_util::{BodyExt, Full};
    let mut cfg = (*hearth_transport::client_config(tls)?).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let deadline = Instant::now() + Duration::from_secs(seconds.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections.max(1) {
        let (connector, addr, bodies) = (connector.clone(), addr.to_string(), Arc::clone(&bodies));
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut non_2xx, mut errors, mut fast) = (Vec::new(), 0u64, 0u64, 0u64);
            let mut n = c * 7919;
            'conn: while Instant::now() < deadline {
                // A connection that fails is counted and tried again after a pause, not in a spin.
                let connected = async {
                    let tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
                    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
                    let stream = connector.connect(name, tcp).await.ok()?;
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()
                };
                let Some((mut send, conn)) = connected.await else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    n += 1;
                    let req = http::Request::post(path)
                        .header("host", "localhost")
                        .header("content-type", "application/json")
                        .body(Full::new(bodies[n % bodies.len()].clone()))
                        .expect("a request");
                    let t = Instant::now();
                    let Ok(resp) = send.send_request(req).await else {
                        errors += 1;
                        continue 'conn;
                    };
                    let ok = resp.status().is_success();
                    let Ok(body) = resp.into_body().collect().await else {
                        errors += 1;
                        continue 'conn;
                    };
                    lat.push(t.elapsed());
                    non_2xx += u64::from(!ok);
                    fast += u64::from(body.to_bytes().windows(13).any(|w| w == b"\"tier\":\"fast\""));
                }
            }
            (lat, non_2xx, errors, fast)
        }));
    }
    let (mut lat, mut non_2xx, mut socket_errors, mut fast) = (Vec::new(), 0, 0, 0);
    for t in tasks {
        let (l, n, e, f) = t.await?;
        lat.extend(l);
        non_2xx += n;
        socket_errors += e;
        fast += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let requests = lat.len() as u64;
    let measured = Measured {
        requests,
        rps: requests as f64 / elapsed,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        non_2xx,
        socket_errors,
    };
    // Of the answers (2xx), those the fast tier's model gave.
    Ok((measured, fast as f64 / requests.saturating_sub(non_2xx).max(1) as f64))
}

/// wrk's latency as milliseconds (`812.00us`, `3.21ms`, `1.02s`).
fn parse_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// The numbers in wrk's `--latency` report.
fn parse_wrk(out: &str) -> anyhow::Result<Measured> {
    let pct = |p: &str| -> Option<f64> {
        out.lines().map(str::trim).find_map(|l| l.strip_prefix(p).and_then(parse_latency))
    };
    let (p50, p90, p99) = (pct("50%"), pct("90%"), pct("99%"));
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:").and_then(|v| v.trim().parse::<f64>().ok()));
    let requests = out.lines().find_map(|l| {
        let l = l.trim();
        l.contains("requests in").then(|| l.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))?
    });
    let non_2xx = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0);
    let socket_errors = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().last().and_then(|n| n.parse::<u64>().ok()))
                .sum()
        })
        .unwrap_or(0);
    match (requests, rps, p50, p90, p99) {
        (Some(requests), Some(rps), Some(p50_ms), Some(p90_ms), Some(p99_ms)) => {
            Ok(Measured { requests, rps, p50_ms, p90_ms, p99_ms, non_2xx, socket_errors })
        }
        _ => bail!("could not read wrk's report:\n{out}"),
    }
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
    if std::process::Command::new("wrk").arg("--version").output().is_err() {
        bail!("hearth bench serve needs the wrk load generator: apt-get install -y wrk");
    }
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

    let script = dir.join("messages.lua");
    std::fs::write(&script, lua_script(a.customers.max(1)))?;
    let messages = wrk(&a, &script, &local, &api_key).await?;
    let mut intent = Vec::new();
    if let Some(queries) = queries.filter(|_| a.tier == crate::demo::Tier::Encoder) {
        let conn = Connection {
            coordinator: coord_addr,
            coordinator_name: "localhost".into(),
            tls_dir: pki_dir.clone(),
        };
        eprintln!("training the participant's encoder-tier intent model (plain rounds)...");
        let labels = intent_labels.unwrap_or_default();
        train(&conn, "intent-encoder", ModelSpec::Intent(IntentSpec::encoder_tier(labels)?), None).await?;
        let app = hearth_transport::TlsMaterial::load(
            &pki_dir.join("ca.pem"),
            &pki_dir.join(format!("{name}/app.pem")),
            &pki_dir.join(format!("{name}/app.key")),
        )?;
        let addr = participants.first().map(|(_, a)| a.clone()).context("the participant's address")?;
        let probe = Arc::new(intent_bodies(&queries[..1], "encoder"));
        loop {
            let (m, _) = load(&addr, &app, "/v1/intent", Arc::clone(&probe), 1, 1).await?;
            if m.non_2xx == 0 && m.requests > 0 {
                break;
            }
            if t.elapsed() > Duration::from_secs(1800) {
                bail!("the encoder-tier intent model was not served; see {}", dir.join("logs").display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for tier in ["fast", "encoder", "cascade"] {
            let bodies = Arc::new(intent_bodies(&queries, tier));
            let (measured, answered_by_fast) =
                load(&addr, &app, "/v1/intent", bodies, a.connections, a.seconds).await?;
            intent.push(IntentRow { tier, measured, answered_by_fast });
        }
    }
    let r = ServeBench {
        endpoint: "POST /v1/messages",
        connections: a.connections,
        threads: a.threads,
        seconds: a.seconds,
        measured: messages,
        models,
        intent,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{:<28} {:>5} {:>7} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7}  models",
            "endpoint", "conns", "seconds", "requests", "rps", "p50_ms", "p90_ms", "p99_ms", "non_2xx"
        );
        let row = |name: &str, m: &Measured, tail: String| {
            println!(
                "{:<28} {:>5} {:>7} {:>9} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>7}  {tail}",
                name, r.connections, r.seconds, m.requests, m.rps, m.p50_ms, m.p90_ms, m.p99_ms, m.non_2xx
            )
        };
        row(r.endpoint, &r.measured, r.models.to_string());
        for i in &r.intent {
            let tail = format!("{:.0}% answered by the fast tier", 100.0 * i.answered_by_fast);
            row(&format!("POST /v1/intent {}", i.tier), &i.measured, tail);
        }
    }
    let all = || std::iter::once(&r.measured).chain(r.intent.iter().map(|i| &i.measured));
    let non_2xx: u64 = all().map(|m| m.non_2xx).sum();
    let socket_errors: u64 = all().map(|m| m.socket_errors).sum();
    if non_2xx > 0 || socket_errors > 0 {
        eprintln!(
            "warning: {non_2xx} non-2xx answers and {socket_errors} socket errors; see {}",
            dir.join("logs").display()
        );
    }
    Ok(())
}

/// Runs wrk with `script` against `local` for the bench's duration; its report's numbers.
async fn wrk(a: &ServeBenchArgs, script: &Path, local: &str, api_key: &str) -> anyhow::Result<Measured> {
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t",
            &a.threads.max(1).to_string(),
            "-c",
            &a.connections.max(1).to_string(),
            "-d",
            &format!("{}s", a.seconds.max(1)),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://{local}"))
        .env(API_KEY_ENV, api_key)
        .output()
        .await
        .context("running wrk")?;
    let report = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed ({}): {}{}", out.status, report, String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let out = "Running 10s test @ http://127.0.0.1:1234\n  1 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.10ms    1.00ms  20.00ms   90.00%\n  Latency Distribution\n     50%  812.00us\n     75%    1.50ms\n     90%    2.50ms\n     99%    7.25ms\n  61234 requests in 10.00s, 30.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 3\nRequests/sec:   6123.40\nTransfer/sec:      3.00MB\n";
        let m = parse_wrk(out).unwrap();
        assert_eq!((m.requests, m.non_2xx, m.socket_errors), (61234, 3, 3));
        assert!((m.rps - 6123.4).abs() < 1e-6 && (m.p50_ms - 0.812).abs() < 1e-9);
        assert!(m.p90_ms == 2.5 && m.p99_ms == 7.25);
        assert!(parse_wrk("garbage").is_err());
        assert!(lua_script(10).contains("Bearer"));
    }
}
