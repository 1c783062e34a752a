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

/// The shared datasets directory: `$HEARTH_DATA_DIR` when set, else the first `shared/data` found walking
/// up from this crate (a checkout sits beside `shared/`, as CI's does; a worktree one level deeper).
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEARTH_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/data"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| here.join("../../shared/data"))
}

/// The CLINC150 file shipped beside the repository.
pub fn clinc150_path() -> PathBuf {
    data_dir().join("clinc150/data_full.json")
}

/// A slice of CLINC150: the examples of `intents` intents (plus out-of-scope), train and test.
pub fn clinc_slice(intents: usize) -> (Vec<Example>, Vec<Example>) {
    let text = std::fs::read_to_string(clinc150_path()).expect("CLINC150 beside the repository");
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
    let labels_text =
        std::fs::read_to_string(dir.join("labels.txt")).expect("GoEmotions beside the repository");
    let labels = hearth_models::emotion::parse_emotion_labels(&labels_text).unwrap();
    let tsv = std::fs::read_to_string(dir.join(format!("{split}.tsv"))).unwrap();
    let r = hearth_models::emotion::parse_goemotions(&tsv, &labels);
    assert!(r.errors.is_empty(), "{:?}", &r.errors[..r.errors.len().min(3)]);
    (labels, r.examples)
}

/// The Online Retail transactions, parsed.
pub fn online_retail() -> Vec<Transaction> {
    let text = std::fs::read_to_string(data_dir().join("online-retail/transactions.csv"))
        .expect("Online Retail beside the repository");
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

/// Runs `hearth ARGS` to completion and returns its output, panicking with stderr on failure.
pub fn hearth_ok(args: &[&str]) -> std::process::Output {
    let out = Command::new(HEARTH).args(args).output().expect("run hearth");
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
}

impl Cluster {
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Starts a coordinator and one participant per shard, each shard imported with `hearth data import`.
    pub fn start(shards: &[Vec<Example>]) -> Cluster {
        Self::start_importing(shards.len(), |name, dir, data_dir| {
            let csv = dir.join(format!("{name}.csv"));
            write_csv(&csv, &shards[name_index(name)]);
            hearth_ok(&["data", "import", "--data-dir", s(data_dir), s(&csv)]);
        })
    }

    /// Starts a coordinator and `n` participants `inst-1`..`inst-n`; before each starts,
    /// `import(name, cluster dir, its data dir)` loads its data (with `hearth data import`).
    pub fn start_importing(n: usize, import: impl Fn(&str, &Path, &Path)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=n).map(|i| format!("inst-{i}")).collect();
        let pki = dir.path().join("pki");
        hearth_ok(&["pki", "init", "--dir", s(&pki), "--participants", &names.join(",")]);
        let mut cluster =
            Cluster { dir, coordinator_addr: String::new(), coordinator: None, participants: Vec::new() };
        cluster.start_coordinator();
        for name in &names {
            let data_dir = cluster.dir.path().join("data").join(name);
            import(name, cluster.dir.path(), &data_dir);
            cluster.start_participant(name);
        }
        cluster
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
        let listen = if self.coordinator_addr.is_empty() {
            "127.0.0.1:0".to_string()
        } else {
            self.coordinator_addr.clone()
        };
        let child = Command::new(HEARTH)
            .args(["coordinator", "--ready-file", s(&ready)])
            .env("HEARTH_COORDINATOR__LISTEN", &listen)
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
        let child = Command::new(HEARTH)
            .args(["participant", "--ready-file", s(&ready)])
            .env("HEARTH_PARTICIPANT__COORDINATOR", &self.coordinator_addr)
            .env("HEARTH_PARTICIPANT__LISTEN", "127.0.0.1:0")
            .env("HEARTH_PARTICIPANT__DATA_DIR", d.join("data").join(name))
            .env("HEARTH_PARTICIPANT__TLS__CA", d.join("pki/ca.pem"))
            .env("HEARTH_PARTICIPANT__TLS__CERT", d.join(format!("pki/{name}.pem")))
            .env("HEARTH_PARTICIPANT__TLS__KEY", d.join(format!("pki/{name}.key")))
            .env("HEARTH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log(&d.join(format!("{name}.log"))))
            .spawn()
            .unwrap();
        let addr = wait_file(&ready);
        self.participants.retain(|(n, _, _)| n != name);
        self.participants.push((name.to_string(), child, addr));
    }

    /// SIGKILLs a participant.
    pub fn kill_participant(&mut self, name: &str) {
        if let Some((_, child, _)) = self.participants.iter_mut().find(|(n, _, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
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

/// The 0-based index of participant `inst-<i>`.
pub fn name_index(name: &str) -> usize {
    name.trim_start_matches("inst-").parse::<usize>().unwrap() - 1
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn log(path: &Path) -> Stdio {
    Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap())
}

fn wait_file(path: &Path) -> String {
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
