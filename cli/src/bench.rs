//! `hearth bench`: throughput of the round protocol, printed as a table (or JSON rows).
//!
//! `fedavg` starts a real coordinator process, connects N simulated participants to it over mTLS gRPC on
//! loopback (each with its own certificate and connection) and runs rounds of a model with D parameters.
//! Local training is trivial (the update is small noise), so the numbers measure the protocol: every
//! update crosses the network as bytes, every round is validated, aggregated and committed to disk.
//!
//! A round's time is what the operator observes: from the `RoundOpened` event to the `RoundSummary` the
//! coordinator emits after the new model is persisted, so it includes every model download, every upload,
//! aggregation and the commit. Bytes sent are the encoded sizes of the messages a participant sent.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hearth_crypto::pki::{ConsortiumCa, Role};
use hearth_proto::v1::coordinator_client::CoordinatorClient;
use hearth_proto::v1::{self, announcement, job_event, update_chunk};
use hearth_proto::{MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use hearth_transport::TlsMaterial;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::operator::{download_params, Connection};

/// `hearth bench ...`
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Seconds per federated-averaging round and coordinator peak memory, for N participants and D params.
    #[command(
        after_help = "Examples:\n  hearth bench fedavg\n  hearth bench fedavg --json\n  hearth bench fedavg --n 10 --d 100000 --rounds 3"
    )]
    Fedavg(FedavgArgs),
    /// Audit log appends per second (a checkpoint signed every second) and the time to verify an export
    /// of 1,000,000 entries.
    Audit(crate::bench_audit::AuditBenchArgs),
}

/// Arguments of `hearth bench fedavg`.
#[derive(Debug, clap::Args)]
pub struct FedavgArgs {
    /// Participant counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 50])]
    pub n: Vec<usize>,
    /// Model sizes (f32 parameters) to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000])]
    pub d: Vec<usize>,
    /// Timed rounds per configuration (after one warm-up round); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: u64,
    /// Print JSON rows instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured configuration.
#[derive(Debug, Serialize)]
pub struct Row {
    pub n: usize,
    pub d: usize,
    pub rounds: u64,
    pub median_round_s: f64,
    pub coordinator_peak_rss_mib: f64,
    /// Encoded bytes one participant sent per round (mean over participants).
    pub bytes_sent_per_participant: u64,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Audit(a) => crate::bench_audit::run(a).await,
        BenchCommand::Fedavg(a) => {
            let mut rows = Vec::new();
            if !a.json {
                println!(
                    "{:>4} {:>9} {:>7} {:>15} {:>18} {:>16}",
                    "n", "d", "rounds", "median_round_s", "coord_peak_rss_mib", "bytes_sent/part"
                );
            }
            for &n in &a.n {
                for &d in &a.d {
                    let row = fedavg(n, d, a.rounds).await.with_context(|| format!("bench n={n} d={d}"))?;
                    if !a.json {
                        println!(
                            "{:>4} {:>9} {:>7} {:>15.3} {:>18.1} {:>16}",
                            row.n,
                            row.d,
                            row.rounds,
                            row.median_round_s,
                            row.coordinator_peak_rss_mib,
                            row.bytes_sent_per_participant
                        );
                    }
                    rows.push(row);
                }
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
            Ok(())
        }
    }
}

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc status")?;
    let kib: f64 = line.split_whitespace().nth(1).context("malformed VmHWM")?.parse()?;
    Ok(kib / 1024.0)
}

async fn fedavg(n: usize, d: usize, rounds: u64) -> anyhow::Result<Row> {
    // One warm-up round first: it includes connection set-up, and its opening may precede our watch.
    let total_rounds = rounds + 1;
    let dir = tempfile::Builder::new().prefix("hearth-bench-").tempdir()?;
    let ca = ConsortiumCa::generate("Hearth bench consortium")?;
    let ca_pem = ca.cert_pem();
    let local = ["localhost".to_string()];
    let ips: [std::net::IpAddr; 1] = [[127, 0, 0, 1].into()];
    let write = |name: &str, cert: &hearth_crypto::pki::IssuedCert| -> anyhow::Result<()> {
        std::fs::write(dir.path().join(format!("{name}.pem")), &cert.cert_pem)?;
        std::fs::write(dir.path().join(format!("{name}.key")), cert.key_pem.as_bytes())?;
        Ok(())
    };
    std::fs::write(dir.path().join("ca.pem"), &ca_pem)?;
    write("coordinator", &ca.issue(Role::Coordinator, "coordinator", &local, &ips)?)?;
    write("operator", &ca.issue(Role::Operator, "operator", &[], &[])?)?;

    let cfg = hearth_coordinator::CoordinatorConfig {
        listen: "127.0.0.1:0".into(),
        state_dir: dir.path().join("state"),
        tls: hearth_transport::TlsPaths::in_dir(dir.path(), "coordinator"),
        ..Default::default()
    };
    let cfg_path = dir.path().join("coordinator.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
    let ready = dir.path().join("coordinator.addr");
    let exe = std::env::current_exe()?;
    let mut coord = Command::new(exe)
        .args(["coordinator", "--config"])
        .arg(&cfg_path)
        .arg("--ready-file")
        .arg(&ready)
        .env("HEARTH_LOG", "warn")
        // The coordinator's throwaway keystore: a random passphrase for this run only.
        .env(hearth_node::config::PASSPHRASE_ENV, hex::encode(rand::random::<[u8; 16]>()))
        .kill_on_drop(true)
        .spawn()
        .context("starting the coordinator")?;
    let pid = coord.id().context("coordinator pid")?;
    let addr = loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            break s.trim().to_string();
        }
        if let Some(status) = coord.try_wait()? {
            bail!("coordinator exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Simulated participants.
    let mut tasks = Vec::new();
    for i in 0..n {
        let id = format!("bench-{i}");
        let cert = ca.issue(Role::Participant, &id, &[], &[])?;
        let tls = TlsMaterial {
            ca_pem: ca_pem.clone(),
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.clone(),
        };
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move { sim_participant(&addr, &tls, i as u64).await }));
    }

    let conn = Connection {
        coordinator: addr.clone(),
        coordinator_name: "localhost".into(),
        tls_dir: dir.path().to_path_buf(),
    };
    let mut op = conn.connect().await?;
    let spec = hearth_models::ModelSpec::bench(d).to_json();
    let job = op
        .submit_job(v1::JobSpec {
            job_id: "bench".into(),
            model_spec_json: spec.into(),
            rounds: total_rounds,
            train: Some(crate::operator::train_to_proto(&hearth_models::TrainParams::default())),
            participants_per_round: 0,
            min_participants: n as u32,
            round_deadline_s: 600,
            wait_for_participants: n as u32,
            server_learning_rate: 1.0,
            server_momentum: 0.0,
        })
        .await?
        .into_inner()
        .job_id;
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job.clone() }).await?.into_inner();
    let mut secs = Vec::new();
    let mut opened = None;
    while let Some(ev) = events.message().await? {
        match ev.kind {
            Some(job_event::Kind::Opened(o)) if o.round > 1 => opened = Some(Instant::now()),
            Some(job_event::Kind::Committed(_)) => {
                if let Some(t) = opened.take() {
                    secs.push(t.elapsed().as_secs_f64());
                }
            }
            Some(job_event::Kind::Failed(f)) => bail!("round {} failed: {}", f.round, f.reason),
            Some(job_event::Kind::Finished(_)) => break,
            _ => {}
        }
    }
    // The final model must be the committed one and downloadable.
    let (version, _, params) = download_params(&mut op, &job, 0).await?;
    if version != total_rounds || params.len() != d {
        bail!(
            "final model has version {version} and {} params, expected {total_rounds} and {d}",
            params.len()
        );
    }
    let rss = peak_rss_mib(pid)?;
    // Every simulated participant ends when it hears that the job finished.
    let mut sent = Vec::with_capacity(n);
    for t in tasks {
        let bytes = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .context("a simulated participant did not hear the job finish")???;
        sent.push(bytes);
    }
    let _ = coord.start_kill();
    if secs.len() as u64 != rounds {
        bail!("saw {} timed rounds of {rounds}", secs.len());
    }
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    // Per participant and per round, averaged over participants.
    let bytes = sent.iter().sum::<u64>() / (n as u64 * total_rounds).max(1);
    Ok(Row {
        n,
        d,
        rounds,
        median_round_s: median,
        coordinator_peak_rss_mib: rss,
        bytes_sent_per_participant: bytes,
    })
}

/// A participant that answers every round with a small random update. Returns the bytes it uploaded.
async fn sim_participant(addr: &str, tls: &TlsMaterial, seed: u64) -> anyhow::Result<u64> {
    let cfg = hearth_transport::client_config(tls)?;
    let channel = hearth_transport::connect(addr, "localhost", cfg).await?;
    let mut client = CoordinatorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    client
        .register(v1::RegisterRequest {
            protocol_version: PROTOCOL_VERSION.into(),
            software_version: "bench".into(),
        })
        .await?;
    let mut stream = client.subscribe(v1::SubscribeRequest {}).await?.into_inner();
    let mut sent = 0u64;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while let Some(a) = stream.message().await? {
        match a.kind {
            Some(announcement::Kind::RoundOpen(o)) => {
                let (_, _, params) = download_params(&mut client, &o.job_id, o.base_version).await?;
                let mut raw = Vec::with_capacity(params.len() * 4);
                for _ in 0..params.len() {
                    // xorshift64*: a cheap source of small noise.
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let r = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
                    raw.extend_from_slice(&((r - 0.5) * 1e-3).to_le_bytes());
                }
                sent += upload(&mut client, &o, Bytes::from(raw), 1, 0.0).await?;
            }
            Some(announcement::Kind::JobFinished(_)) => return Ok(sent),
            _ => {}
        }
    }
    Ok(sent)
}

/// Uploads `raw` (little-endian f32 delta) as the update for round `o`; returns the encoded bytes sent.
async fn upload(
    client: &mut CoordinatorClient<tonic::transport::Channel>,
    o: &v1::RoundOpen,
    raw: Bytes,
    examples: u64,
    loss: f32,
) -> anyhow::Result<u64> {
    let header = v1::UpdateHeader {
        job_id: o.job_id.clone(),
        round: o.round,
        base_version: o.base_version,
        num_examples: examples,
        train_loss: loss,
        num_params: (raw.len() / 4) as u64,
        nonce: rand::random::<[u8; 16]>().to_vec().into(),
        sha256: Sha256::digest(&raw).to_vec().into(),
    };
    let first = v1::UpdateChunk { kind: Some(update_chunk::Kind::Header(header)) };
    let chunks = (0..raw.len()).step_by(MAX_CHUNK_BYTES).map(move |s| v1::UpdateChunk {
        kind: Some(update_chunk::Kind::Data(raw.slice(s..(s + MAX_CHUNK_BYTES).min(raw.len())))),
    });
    let messages: Vec<v1::UpdateChunk> = std::iter::once(first).chain(chunks).collect();
    let bytes = messages.iter().map(|m| prost::Message::encoded_len(m) as u64).sum();
    client.upload_update(futures::stream::iter(messages)).await?;
    Ok(bytes)
}
