//! Test harness shared by the integration tests: a real `hearth` cluster on loopback.
//!
//! Every process is the real `hearth` binary started with the real subcommands (`pki init`, `data import`,
//! `coordinator`, `participant`), talking gRPC over mTLS. Nothing is mocked.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_models::recommend::data::Transaction;
use hearth_models::{EmotionExample, Example};
use hearth_proto::v1::coordinator_client::CoordinatorClient;
use hearth_proto::MAX_MESSAGE_BYTES;
use hearth_transport::TlsMaterial;
use tonic::transport::Channel;

pub const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

/// The datasets directory: `$HEARTH_DATA_DIR` when set, else the repository's own `data/`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("HEARTH_DATA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"),
    }
}

/// The CLINC150 file in the repository (`HEARTH_CLINC150` overrides).
pub fn clinc150_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_CLINC150") {
        return p.into();
    }
    data_dir().join("clinc150/data_full.json")
}

/// A slice of CLINC150: the examples of `intents` intents (plus out-of-scope), train and test.
pub fn clinc_slice(intents: usize) -> (Vec<Example>, Vec<Example>) {
    let text = std::fs::read_to_string(clinc150_path()).expect("CLINC150 in data/");
    let d = hearth_models::parse_clinc150(&text).expect("parse CLINC150");
    let mut labels: Vec<String> = d.train.iter().map(|e| e.label.clone()).filter(|l| l != "oos").collect();
    labels.sort();
    labels.dedup();
    labels.truncate(intents);
    labels.push("oos".into());
    let keep = |v: Vec<Example>| v.into_iter().filter(|e| labels.contains(&e.label)).collect::<Vec<_>>();
    (keep(d.train), keep(d.test))
}

/// GoEmotions with the Ekman labels: the label list and one split (`train`, `dev`, `test`).
pub fn goemotions(split: &str) -> (Vec<String>, Vec<EmotionExample>) {
    let dir = data_dir().join("goemotions/ekman");
    let labels_text = std::fs::read_to_string(dir.join("labels.txt")).expect("GoEmotions in data/");
    let labels = hearth_models::emotion::parse_emotion_labels(&labels_text).unwrap();
    let tsv = std::fs::read_to_string(dir.join(format!("{split}.tsv"))).unwrap();
    let r = hearth_models::emotion::parse_goemotions(&tsv, &labels);
    assert!(r.errors.is_empty(), "{:?}", &r.errors[..r.errors.len().min(3)]);
    (labels, r.examples)
}

/// The Online Retail transactions, parsed.
pub fn online_retail() -> Vec<Transaction> {
    let text = std::fs::read_to_string(data_dir().join("online-retail/transactions.csv"))
        .expect("Online Retail in data/");
    let r = hearth_models::recommend::data::parse_transactions(&text).unwrap();
    assert!(r.errors.is_empty());
    r.examples
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Writes emotion examples as CSV with `text,labels` (labels joined by `;`).
pub fn write_emotion_csv(path: &Path, examples: &[EmotionExample]) {
    let mut s = String::from("text,labels\n");
    for e in examples {
        s.push_str(&format!("{},{}\n", csv_field(&e.text), csv_field(&e.labels.join(";"))));
    }
    std::fs::write(path, s).unwrap();
}

/// Writes emotion examples as JSON Lines `{"text", "labels"}`.
pub fn write_emotion_jsonl(path: &Path, examples: &[EmotionExample]) {
    let s: String = examples
        .iter()
        .map(|e| serde_json::json!({"text": e.text, "labels": e.labels}).to_string() + "\n")
        .collect();
    std::fs::write(path, s).unwrap();
}

/// Writes transactions as an Online Retail CSV.
pub fn write_transactions_csv(path: &Path, rows: &[Transaction]) {
    let mut s =
        String::from("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n");
    for t in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            t.invoice,
            t.stock_code,
            csv_field(&t.description),
            t.quantity,
            t.date,
            t.unit_price,
            t.customer.as_deref().unwrap_or(""),
            csv_field(&t.country)
        ));
    }
    std::fs::write(path, s).unwrap();
}

/// Writes examples as a CSV file with a `text,label` header.
pub fn write_csv(path: &Path, examples: &[Example]) {
    let mut s = String::from("text,label\n");
    for e in examples {
        s.push_str(&format!("\"{}\",{}\n", e.text.replace('"', "\"\""), e.label));
    }
    std::fs::write(path, s).unwrap();
}

/// The passphrase every test node's sealed keystore uses (`HEARTH_KEYSTORE_PASSPHRASE`).
pub const PASSPHRASE: &str = "integration-test keystore passphrase";

/// `hearth` with the test environment: the keystore passphrase, and Argon2id at its floor so that
/// creating a keystore costs a tenth of a second (a development keystore).
pub fn hearth() -> Command {
    let mut c = Command::new(HEARTH);
    c.env("HEARTH_KEYSTORE_PASSPHRASE", PASSPHRASE);
    for service in ["COORDINATOR", "PARTICIPANT"] {
        c.env(format!("HEARTH_{service}__KEYSTORE__ARGON2_MEMORY_KIB"), "19456");
        c.env(format!("HEARTH_{service}__KEYSTORE__ARGON2_ITERATIONS"), "2");
    }
    c
}

/// Runs `hearth ARGS` to completion and returns its output, panicking with stderr on failure.
pub fn hearth_ok(args: &[&str]) -> std::process::Output {
    let out = hearth().args(args).output().expect("run hearth");
    assert!(
        out.status.success(),
        "hearth {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A coordinator and participants as child processes, killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub coordinator_addr: String,
    pub coordinator: Option<Child>,
    pub participants: Vec<(String, Child, String)>,
    /// Extra environment per participant name (e.g. a PKCS#11 keystore), for its imports and process.
    pub participant_env: Vec<(String, Vec<(String, String)>)>,
}

impl Cluster {
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Starts a coordinator and one participant per shard, each shard imported with `hearth data import`.
    pub fn start(shards: &[Vec<Example>]) -> Cluster {
        Self::start_with(shards, |_| Vec::new())
    }

    /// [`Cluster::start`], with extra environment for each participant (by name, `inst-1`, ...).
    pub fn start_with(shards: &[Vec<Example>], env: impl Fn(&str) -> Vec<(String, String)>) -> Cluster {
        Self::launch(shards.len(), env, |cluster, name| {
            let csv = cluster.dir.path().join(format!("{name}.csv"));
            write_csv(&csv, &shards[name_index(name)]);
            cluster.import(name, &csv);
        })
    }

    /// Starts a coordinator and `n` participants `inst-1`..`inst-n`; before each starts,
    /// `import(name, cluster dir, its data dir)` loads its data (with `hearth data import`).
    pub fn start_importing(n: usize, import: impl Fn(&str, &Path, &Path)) -> Cluster {
        Self::launch(
            n,
            |_| Vec::new(),
            |cluster, name| import(name, cluster.dir.path(), &cluster.data_dir(name)),
        )
    }

    fn launch(
        n: usize,
        env: impl Fn(&str) -> Vec<(String, String)>,
        import: impl Fn(&Cluster, &str),
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=n).map(|i| format!("inst-{i}")).collect();
        let pki = dir.path().join("pki");
        hearth_ok(&["pki", "init", "--dir", s(&pki), "--participants", &names.join(",")]);
        let participant_env = names.iter().map(|n| (n.clone(), env(n))).collect();
        let mut cluster = Cluster {
            dir,
            coordinator_addr: String::new(),
            coordinator: None,
            participants: Vec::new(),
            participant_env,
        };
        cluster.start_coordinator();
        for name in &names {
            import(&cluster, name);
            let token = cluster
                .env_of(name)
                .iter()
                .any(|(k, v)| k == "HEARTH_PARTICIPANT__KEYSTORE__BACKEND" && v == "pkcs11");
            if token {
                cluster.enrol_in_token(name);
            }
            cluster.start_participant(name);
        }
        cluster
    }

    /// Writes a configuration file for participant `name` naming its data directory and its `[tls]`
    /// files in the cluster's PKI (what `--config` commands need); returns its path.
    pub fn participant_config(&self, name: &str) -> PathBuf {
        let pki = self.pki();
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
                self.data_dir(name),
                pki.join("ca.pem"),
                pki.join(format!("{name}.pem")),
                pki.join(format!("{name}.key"))
            ),
        )
        .unwrap();
        config
    }

    /// Gives participant `name`, whose keystore is a PKCS#11 token, a TLS key made in the token: `hearth
    /// pki request --config` there, `hearth pki sign` at the CA, and the key file `pki init` wrote
    /// deleted (a node on a token refuses one). Its certificate changes, so the member list `pki init`
    /// signed no longer names it: such a participant takes part in plain rounds only.
    pub fn enrol_in_token(&self, name: &str) {
        let d = self.dir.path();
        let pki = self.pki();
        let config = self.participant_config(name);
        let csr = d.join(format!("{name}.csr"));
        let request = ["pki", "request", "--config", s(&config), "--service", "participant", "--id", name];
        self.hearth_as(name, &[&request[..], &["--out", s(&csr)]].concat());
        let cert = d.join(format!("{name}-token.pem"));
        hearth_ok(&[
            "pki",
            "sign",
            "--dir",
            s(&pki),
            "--request",
            s(&csr),
            "--role",
            "participant",
            "--id",
            name,
            "--out",
            s(&cert),
        ]);
        std::fs::rename(&cert, pki.join(format!("{name}.pem"))).unwrap();
        std::fs::remove_file(pki.join(format!("{name}.key"))).unwrap();
    }

    /// The extra environment of participant `name`.
    pub fn env_of(&self, name: &str) -> Vec<(String, String)> {
        self.participant_env.iter().find(|(n, _)| n == name).map(|(_, e)| e.clone()).unwrap_or_default()
    }

    /// `hearth data import` of `csv` into participant `name`'s store (it must be stopped).
    pub fn import(&self, name: &str, csv: &Path) {
        let data_dir = self.dir.path().join("data").join(name);
        let out = hearth()
            .args(["data", "import", "--data-dir", s(&data_dir), s(csv)])
            .envs(self.env_of(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "import into {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs `hearth ARGS` with participant `name`'s extra environment; returns stdout, panics on failure.
    pub fn hearth_as(&self, name: &str, args: &[&str]) -> String {
        let out = hearth().args(args).envs(self.env_of(name)).output().unwrap();
        assert!(out.status.success(), "hearth {args:?} as {name}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Institution `name`'s own DPO signs `policy_toml` (one tenant: `name`) with `hearth budget sign`;
    /// its participant reads it at its next round or query.
    pub fn sign_institution_policy(&self, name: &str, policy_toml: &str) {
        let dir = self.pki().join(name);
        let source = dir.join("privacy-policy.toml");
        std::fs::write(&source, policy_toml).unwrap();
        hearth_ok(&["budget", "sign", "--policy", s(&source), "--dpo", s(&dir.join("dpo"))]);
    }

    /// A participant's data directory.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("data").join(name)
    }

    /// (Re)starts the coordinator with its state directory under the cluster's directory.
    pub fn start_coordinator(&mut self) {
        let d = self.dir.path();
        let ready = d.join("coordinator.addr");
        let _ = std::fs::remove_file(&ready);
        let _ = std::fs::remove_file(ready.with_extension("ops"));
        let listen = if self.coordinator_addr.is_empty() {
            "127.0.0.1:0".to_string()
        } else {
            self.coordinator_addr.clone()
        };
        let child = hearth()
            .args(["coordinator", "--ready-file", s(&ready)])
            .env("HEARTH_COORDINATOR__LISTEN", &listen)
            .env("HEARTH_COORDINATOR__OPS_LISTEN", "127.0.0.1:0")
            .env("HEARTH_COORDINATOR__STATE_DIR", d.join("coordinator"))
            .env("HEARTH_COORDINATOR__TLS__CA", d.join("pki/ca.pem"))
            .env("HEARTH_COORDINATOR__TLS__CERT", d.join("pki/coordinator.pem"))
            .env("HEARTH_COORDINATOR__TLS__KEY", d.join("pki/coordinator.key"))
            // Some tests compare with, or drive by hand, plain rounds.
            .env("HEARTH_COORDINATOR__POLICY__ALLOW_PLAIN_AGGREGATION", "true")
            .env("HEARTH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log(&d.join("coordinator.log")))
            .spawn()
            .unwrap();
        self.coordinator = Some(child);
        self.coordinator_addr = wait_file(&ready);
    }

    pub fn start_participant(&mut self, name: &str) {
        let d = self.dir.path();
        let ready = d.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&ready);
        let _ = std::fs::remove_file(ready.with_extension("ops"));
        let child = hearth()
            .args(["participant", "--ready-file", s(&ready)])
            .env("HEARTH_PARTICIPANT__COORDINATOR", &self.coordinator_addr)
            .env("HEARTH_PARTICIPANT__LISTEN", "127.0.0.1:0")
            .env("HEARTH_PARTICIPANT__OPS_LISTEN", "127.0.0.1:0")
            .env("HEARTH_PARTICIPANT__DATA_DIR", d.join("data").join(name))
            .env("HEARTH_PARTICIPANT__TLS__CA", d.join("pki/ca.pem"))
            .env("HEARTH_PARTICIPANT__TLS__CERT", d.join(format!("pki/{name}.pem")))
            .env("HEARTH_PARTICIPANT__TLS__KEY", d.join(format!("pki/{name}.key")))
            .envs(self.env_of(name))
            .env("HEARTH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log(&d.join(format!("{name}.log"))))
            .spawn()
            .unwrap();
        let addr = wait_file(&ready);
        self.participants.retain(|(n, _, _)| n != name);
        self.participants.push((name.to_string(), child, addr));
    }

    /// Where node `name`'s operations endpoints listen (`coordinator`, `inst-1`, ...).
    pub fn ops_addr(&self, name: &str) -> String {
        wait_file(&self.dir.path().join(format!("{name}.ops")))
    }

    /// SIGKILLs a participant.
    pub fn kill_participant(&mut self, name: &str) {
        if let Some((_, child, _)) = self.participants.iter_mut().find(|(n, _, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the coordinator with SIGTERM (a graceful stop: it records `node.stop` and signs a final
    /// audit checkpoint) and waits for it to exit.
    pub fn stop_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            terminate(&mut c);
        }
    }

    /// Stops a participant with SIGTERM and waits for it.
    pub fn stop_participant(&mut self, name: &str) {
        if let Some((_, child, _)) = self.participants.iter_mut().find(|(n, _, _)| n == name) {
            terminate(child);
        }
    }

    /// Submits a job over every participant (`n` of them) and follows it to its end.
    pub async fn run_job(&self, job_id: &str, labels: Vec<String>, rounds: u64, n: u32) {
        self.run(intent_job(job_id, labels, rounds, n)).await
    }

    /// Submits `spec` and follows it to its end.
    pub async fn run(&self, spec: hearth_proto::v1::JobSpec) {
        use hearth_proto::v1::{self, job_event};
        let mut op = self.client("operator").await;
        let job = op.submit_job(spec).await.unwrap().into_inner().job_id;
        let mut events = op.watch_job(v1::WatchJobRequest { job_id: job }).await.unwrap().into_inner();
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(120), events.message())
            .await
            .expect("the job progresses")
            .unwrap()
        {
            match ev.kind {
                Some(job_event::Kind::Failed(f)) => panic!("round {} failed: {}", f.round, f.reason),
                Some(job_event::Kind::Finished(_)) => break,
                _ => {}
            }
        }
    }

    pub fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn participant_addr(&self, name: &str) -> String {
        self.participants.iter().find(|(n, _, _)| n == name).map(|(_, _, a)| a.clone()).unwrap()
    }

    /// TLS material of a certificate in the cluster's PKI.
    pub fn tls(&self, name: &str) -> TlsMaterial {
        let p = self.pki();
        TlsMaterial::load(&p.join("ca.pem"), &p.join(format!("{name}.pem")), &p.join(format!("{name}.key")))
            .unwrap()
    }

    /// A coordinator client authenticated as `name` (e.g. "operator", "inst-1").
    pub async fn client(&self, name: &str) -> CoordinatorClient<Channel> {
        let cfg = hearth_transport::client_config(&self.tls(name)).unwrap();
        let ch = hearth_transport::connect(&self.coordinator_addr, "localhost", cfg).await.unwrap();
        CoordinatorClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The contents of a log file, for assertion messages.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_coordinator();
        for (_, c, _) in &mut self.participants {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGTERM, then wait (SIGKILL after 20 s).
fn terminate(c: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs `hearth ARGS` and returns (exit code, stdout, stderr) without judging.
pub fn hearth_run(args: &[&str]) -> (i32, String, String) {
    let out = hearth().args(args).output().expect("run hearth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The distinct labels of `examples`, sorted.
pub fn labels_of(examples: &[Example]) -> Vec<String> {
    let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// The intent job [`Cluster::run_job`] submits: `rounds` rounds of one local epoch, waiting for and
/// requiring `n` participants, securely aggregated from 3 participants on (the fewest it needs).
pub fn intent_job(job_id: &str, labels: Vec<String>, rounds: u64, n: u32) -> hearth_proto::v1::JobSpec {
    use hearth_proto::v1;
    let spec = hearth_models::IntentSpec::new(labels, Default::default()).unwrap();
    v1::JobSpec {
        job_id: job_id.into(),
        model_spec_json: spec.to_json().into(),
        rounds,
        train: Some(v1::TrainParams { local_epochs: 1, learning_rate: 0.5, batch_size: 8, l2: 0.0, seed: 1 }),
        participants_per_round: 0,
        min_participants: n,
        round_deadline_s: 60,
        wait_for_participants: n,
        // Secure aggregation needs at least 3 participants.
        plain_aggregation: n < 3,
        ..Default::default()
    }
}

/// The 0-based index of participant `inst-<i>`.
pub fn name_index(name: &str) -> usize {
    name.trim_start_matches("inst-").parse::<usize>().unwrap() - 1
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn log(path: &Path) -> Stdio {
    Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap())
}

pub fn wait_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s.trim().to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to 10 s) until the participant at `addr` serves `version` of intent job `job`; returns the
/// version it serves of that job then (0: none).
pub async fn serving(addr: &str, app: &TlsMaterial, job: &str, version: u64) -> u64 {
    let mut served = 0;
    for _ in 0..100 {
        let (status, body) = https(addr, app, "GET", "/v1/health", vec![]).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        served = if v["model"]["job_id"] == job { v["model"]["version"].as_u64().unwrap_or(0) } else { 0 };
        if served == version {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served
}

/// [`https`] expecting a JSON answer: the status and the body parsed; panics, showing the body, on
/// anything else.
pub async fn https_json(
    addr: &str,
    tls: &TlsMaterial,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let (status, body) = https(addr, tls, method, path, body).await;
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!("{method} {path} answered {status} with non-JSON ({e}): {}", String::from_utf8_lossy(&body))
    });
    (status, v)
}

/// [`https_json`] sending `body` as JSON (`Value::Null`: no body).
pub async fn call_json(
    addr: &str,
    tls: &TlsMaterial,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let bytes = if body.is_null() { vec![] } else { body.to_string().into_bytes() };
    https_json(addr, tls, method, path, bytes).await
}

/// One HTTPS request over a fresh mTLS connection; returns (status, body).
pub async fn https(addr: &str, tls: &TlsMaterial, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    let mut cfg = (*hearth_transport::client_config(tls).unwrap()).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// `GET path` over plain HTTP/1.1 (the operations endpoints): status and body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The latest model of `job` as the coordinator serves it: its spec (JSON) and parameters.
pub async fn download_model(op: &mut CoordinatorClient<Channel>, job: &str) -> (Vec<u8>, Vec<f32>) {
    use hearth_proto::v1;
    let mut stream = op
        .download_model(v1::ModelRequest { job_id: job.into(), version: 0, latest_job: false })
        .await
        .unwrap()
        .into_inner();
    let (mut spec, mut params) = (Vec::new(), Vec::new());
    while let Some(c) = stream.message().await.unwrap() {
        match c.kind {
            Some(v1::model_chunk::Kind::Header(h)) => spec = h.model_spec_json.to_vec(),
            Some(v1::model_chunk::Kind::Data(d)) => {
                params.extend(d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            }
            None => {}
        }
    }
    (spec, params)
}

/// The repository's root (scripts/, deploy/, data/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The checkers Rust has no equal of (Schemathesis, the OpenAPI and Kubernetes validators), installed
/// pinned by `scripts/install-api-tools.sh`: the bin directory of their environment.
pub fn api_tools() -> PathBuf {
    let out =
        Command::new(root().join("scripts/install-api-tools.sh")).output().expect("run install-api-tools.sh");
    assert!(
        out.status.success(),
        "scripts/install-api-tools.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
