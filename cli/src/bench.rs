//! `hearth bench`: throughput of the round protocol, printed as a table (or JSON rows).
//!
//! Each configuration starts a real coordinator process and connects N simulated participants to it over
//! mTLS gRPC on loopback (each with its own certificate and connection), then runs rounds of a model with
//! D parameters. Local training is trivial (the update is small noise), so the numbers measure the
//! protocol: every update crosses the network as bytes, every round is validated, aggregated and committed
//! to disk. Under secure aggregation the simulated participants run the participant's own client code
//! (`hearth_participant::secagg`): key exchange, Shamir shares, masking, consistency check and unmasking.
//!
//! A round's time is what the operator observes: from the `RoundOpened` event to the `RoundSummary` the
//! coordinator emits after the new model is persisted, so it includes every model download, every upload,
//! aggregation (or the whole secure-aggregation protocol) and the commit. Bytes sent are the encoded sizes
//! of the messages a participant sent, per round, averaged over participants. With a drop-out rate, that
//! share of the participants (a different one each round) vanishes mid-round: in plain rounds right
//! after the round opens, in secure rounds after sharing their keys (phase 2), the point that costs the
//! coordinator most, as it must rebuild their mask keys to remove their pairwise masks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hearth_crypto::digest::content_digest;
use hearth_crypto::pki::{ConsortiumCa, Role};
use hearth_crypto::SuiteId;
use hearth_participant::secagg::{self as client_secagg, SecAggIdentity, RELAY_QUEUE};
use hearth_proto::v1::coordinator_client::CoordinatorClient;
use hearth_proto::v1::{self, announcement, job_event, update_chunk};
use hearth_proto::{MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use hearth_transport::TlsMaterial;
use serde::Serialize;
use tokio::process::Command;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::operator::{download_params, Connection};

/// `hearth bench ...`
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Seconds per federated-averaging round and coordinator peak memory, for N participants and D params.
    #[command(
        after_help = "Examples:\n  hearth bench fedavg\n  hearth bench fedavg --json\n  hearth bench fedavg --n 10 --d 100000 --rounds 3"
    )]
    Fedavg(FedavgArgs),
    /// The same table with and without secure aggregation, and with drop-outs.
    #[command(
        after_help = "Examples:\n  hearth bench secagg\n  hearth bench secagg --json\n  hearth bench secagg --n 10 --d 100000 --dropout 0.1 --mode secagg --rounds 3"
    )]
    Secagg(SecaggArgs),
    /// Audit log appends per second (a checkpoint signed every second) and the time to verify an export
    /// of 1,000,000 entries.
    Audit(crate::bench_audit::AuditBenchArgs),
    /// `POST /v1/messages` requests/s and latency percentiles over mTLS and over the API-key listener,
    /// on a participant serving intent, emotion and recommend models; `POST /v1/intent` per tier.
    Serve(crate::bench_serve::ServeBenchArgs),
    /// The encoder tier's cost beside the fast tier's: texts embedded per second (1 and 2 threads) and
    /// one query's classification latency in each tier, in process.
    Encoder(crate::bench_encoder::EncoderBenchArgs),
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

/// Aggregation modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plain federated averaging: the coordinator sees each update.
    Plain,
    /// Secure aggregation: the coordinator sees only the sum.
    Secagg,
}

/// Arguments of `hearth bench secagg`.
#[derive(Debug, clap::Args)]
pub struct SecaggArgs {
    /// Participant counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 50])]
    pub n: Vec<usize>,
    /// Model sizes (f32 parameters) to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000])]
    pub d: Vec<usize>,
    /// Drop-out rates to measure (share of participants that vanish mid-round).
    #[arg(long, value_delimiter = ',', default_values_t = [0.0f64, 0.1])]
    pub dropout: Vec<f64>,
    /// Modes to measure.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [Mode::Plain, Mode::Secagg])]
    pub mode: Vec<Mode>,
    /// Timed rounds per configuration (after one warm-up round); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    /// Print JSON rows instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured configuration.
#[derive(Debug, Serialize)]
pub struct Row {
    pub mode: Mode,
    pub n: usize,
    pub d: usize,
    pub dropout: f64,
    pub rounds: u64,
    pub median_round_s: f64,
    /// Secure rounds: where a round's time goes, as the coordinator saw it. The median over timed rounds
    /// of each phase's duration (0 keys advertised, 1 graph seed revealed, 2 shares exchanged, 3 masked
    /// inputs in, 4 consistency signatures in, 5 sum unmasked), then of the commit after phase 5. Empty
    /// for plain rounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub median_phase_s: Vec<f64>,
    pub coordinator_peak_rss_mib: f64,
    /// Encoded bytes one participant sent per round (mean over participants).
    pub bytes_sent_per_participant: u64,
}

/// One configuration to measure.
#[derive(Debug, Clone, Copy)]
struct Config {
    mode: Mode,
    n: usize,
    d: usize,
    dropout: f64,
    rounds: u64,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let (configs, json) = match cmd {
        BenchCommand::Audit(a) => return crate::bench_audit::run(a).await,
        BenchCommand::Serve(a) => return crate::bench_serve::run(a).await,
        BenchCommand::Encoder(a) => {
            return tokio::task::spawn_blocking(move || crate::bench_encoder::run(a)).await?
        }
        BenchCommand::Fedavg(a) => {
            let mut c = Vec::new();
            for &n in &a.n {
                for &d in &a.d {
                    c.push(Config { mode: Mode::Plain, n, d, dropout: 0.0, rounds: a.rounds });
                }
            }
            (c, a.json)
        }
        BenchCommand::Secagg(a) => {
            let mut c = Vec::new();
            for &n in &a.n {
                for &d in &a.d {
                    for &dropout in &a.dropout {
                        if !(0.0..0.5).contains(&dropout) {
                            bail!("--dropout {dropout} must be in [0, 0.5)");
                        }
                        for &mode in &a.mode {
                            c.push(Config { mode, n, d, dropout, rounds: a.rounds });
                        }
                    }
                }
            }
            (c, a.json)
        }
    };
    let mut rows = Vec::new();
    if !json {
        println!(
            "{:>6} {:>4} {:>9} {:>7} {:>7} {:>15} {:>18} {:>16}",
            "mode", "n", "d", "dropout", "rounds", "median_round_s", "coord_peak_rss_mib", "bytes_sent/part"
        );
    }
    for c in configs {
        let row = measure(c)
            .await
            .with_context(|| format!("bench {:?} n={} d={} dropout={}", c.mode, c.n, c.d, c.dropout))?;
        if !json {
            println!(
                "{:>6} {:>4} {:>9} {:>7.2} {:>7} {:>15.3} {:>18.1} {:>16}",
                match row.mode {
                    Mode::Plain => "plain",
                    Mode::Secagg => "secagg",
                },
                row.n,
                row.d,
                row.dropout,
                row.rounds,
                row.median_round_s,
                row.coordinator_peak_rss_mib,
                row.bytes_sent_per_participant
            );
        }
        rows.push(row);
    }
    if !json && rows.iter().any(|r| !r.median_phase_s.is_empty()) {
        print_phase_table(&rows);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc status")?;
    let kib: f64 = line.split_whitespace().nth(1).context("malformed VmHWM")?.parse()?;
    Ok(kib / 1024.0)
}

/// How many participants drop out of each round.
fn drops_per_round(n: usize, dropout: f64) -> usize {
    (n as f64 * dropout).round() as usize
}

/// Whether participant `i` drops out of `round`: a rotating block of `drops` participants.
fn drops_in(i: usize, n: usize, drops: usize, round: u64) -> bool {
    drops > 0 && (i + n - (round as usize * drops) % n) % n < drops
}

async fn measure(c: Config) -> anyhow::Result<Row> {
    let Config { mode, n, d, dropout, rounds } = c;
    // One warm-up round first: it includes connection set-up, and its opening may precede our watch.
    let total_rounds = rounds + 1;
    let drops = drops_per_round(n, dropout);
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
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: dir.path().join("state"),
        tls: hearth_transport::TlsPaths::in_dir(dir.path(), "coordinator"),
        // The bench compares plain averaging with secure aggregation.
        policy: hearth_policies::RoundPolicy { allow_plain_aggregation: true, ..Default::default() },
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
        // The coordinator's own log level: HEARTH_BENCH_COORDINATOR_LOG (default warn).
        .env("HEARTH_LOG", std::env::var("HEARTH_BENCH_COORDINATOR_LOG").unwrap_or_else(|_| "warn".into()))
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

    let ca_der = hearth_crypto::pki::cert_der_from_pem(&ca_pem)?;
    let mut tasks = Vec::new();
    let sent: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for (i, counter) in sent.iter().enumerate() {
        let id = format!("bench-{i}");
        let cert = ca.issue(Role::Participant, &id, &[], &[])?;
        let sim = SimParticipant {
            sent: Arc::clone(counter),
            index: i,
            n,
            drops,
            addr: addr.clone(),
            tls: TlsMaterial::from_pem(ca_pem.clone(), cert.cert_pem.clone(), cert.key_pem.clone()),
            identity: Arc::new(SecAggIdentity::new(
                SuiteId::International,
                ca_der.clone(),
                &hearth_crypto::pki::cert_der_from_pem(&cert.cert_pem)?,
                Arc::new(hearth_secagg::SuiteSigner::new(
                    SuiteId::International,
                    hearth_crypto::pki::p256_secret_from_pem(&cert.key_pem)?,
                )),
            )?),
        };
        tasks.push(tokio::spawn(sim.run()));
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
            // A dropped participant may not be back before the next round opens: leave room for it.
            min_participants: (n - 2 * drops).max(3) as u32,
            round_deadline_s: 600,
            wait_for_participants: n as u32,
            server_learning_rate: 1.0,
            server_momentum: 0.0,
            plain_aggregation: mode == Mode::Plain,
            secagg_clip: 0.0,
            secagg_weight_cap: 0.0,
            privacy: None,
            ..Default::default()
        })
        .await?
        .into_inner()
        .job_id;
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job.clone() }).await?.into_inner();
    let mut secs = Vec::new();
    let mut phases: Vec<Vec<f64>> = Vec::new();
    let mut opened = None;
    while let Some(ev) = events.message().await? {
        match ev.kind {
            Some(job_event::Kind::Opened(o)) if o.round > 1 => opened = Some(Instant::now()),
            Some(job_event::Kind::Committed(c)) => {
                if let Some(t) = opened.take() {
                    secs.push(t.elapsed().as_secs_f64());
                    if !c.phase_seconds.is_empty() {
                        phases.push(phase_durations(&c.phase_seconds, c.seconds));
                    }
                }
            }
            Some(job_event::Kind::Failed(f)) => {
                // Say why, from the participants' side too.
                for t in &tasks {
                    t.abort();
                }
                let mut why = Vec::new();
                for t in tasks {
                    if let Ok(Err(e)) = t.await {
                        why.push(format!("{e:#}"));
                    }
                }
                bail!("round {} failed: {}; participants: {}", f.round, f.reason, why.join("; "))
            }
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
    // The job is over: a participant that dropped out of the last round may still be reconnecting.
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            bail!("a simulated participant failed: {e:#}");
        }
    }
    let _ = coord.start_kill();
    if secs.len() as u64 != rounds {
        bail!("saw {} timed rounds of {rounds}", secs.len());
    }
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    let bytes =
        sent.iter().map(|b| b.load(Ordering::Relaxed)).sum::<u64>() / (n as u64 * total_rounds).max(1);
    Ok(Row {
        mode,
        n,
        d,
        dropout,
        rounds,
        median_round_s: median,
        median_phase_s: medians(&phases),
        coordinator_peak_rss_mib: rss,
        bytes_sent_per_participant: bytes,
    })
}

/// Where secure rounds' time goes: the median seconds of each phase, and the round against the plain
/// round of the same shape measured in this run.
fn print_phase_table(rows: &[Row]) {
    println!("\nwhere a secure round's time goes (median seconds, as the coordinator saw it)");
    println!(
        "{:>4} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>14}",
        "n",
        "d",
        "dropout",
        "keys",
        "seed",
        "shares",
        "masked",
        "consist",
        "unmask",
        "commit",
        "secagg/plain"
    );
    for r in rows.iter().filter(|r| !r.median_phase_s.is_empty()) {
        let plain = rows
            .iter()
            .find(|p| p.mode == Mode::Plain && p.n == r.n && p.d == r.d && p.dropout == r.dropout)
            .map_or("-".to_string(), |p| format!("{:.2}x", r.median_round_s / p.median_round_s));
        let cells: Vec<String> = r.median_phase_s.iter().map(|s| format!("{s:>8.3}")).collect();
        println!("{:>4} {:>9} {:>7.2} {} {:>14}", r.n, r.d, r.dropout, cells.join(" "), plain);
    }
}

/// Durations of the phases whose close times (seconds from the round's opening) are `marks`, then of what
/// followed up to `total`.
fn phase_durations(marks: &[f64], total: f64) -> Vec<f64> {
    let mut last = 0.0;
    let mut out: Vec<f64> = marks
        .iter()
        .map(|&m| {
            let d = m - last;
            last = m;
            d
        })
        .collect();
    out.push((total - last).max(0.0));
    out
}

/// The median of each column of `rows` (rows of unequal length are left out).
fn medians(rows: &[Vec<f64>]) -> Vec<f64> {
    let width = rows.first().map_or(0, Vec::len);
    let rows: Vec<&Vec<f64>> = rows.iter().filter(|r| r.len() == width).collect();
    (0..width)
        .map(|i| {
            let mut col: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            col.sort_by(f64::total_cmp);
            col[col.len() / 2]
        })
        .collect()
}

/// A participant that answers every round with a small random update, and drops out of some.
struct SimParticipant {
    /// Encoded bytes of every message it sent.
    sent: Arc<AtomicU64>,
    index: usize,
    n: usize,
    drops: usize,
    addr: String,
    tls: TlsMaterial,
    identity: Arc<SecAggIdentity>,
}

/// How a session with the coordinator ended.
enum SessionEnd {
    /// The job finished.
    Finished,
    /// This participant dropped out of a round and must reconnect.
    Dropped,
}

impl SimParticipant {
    /// Runs sessions until the job finishes.
    async fn run(self) -> anyhow::Result<()> {
        let mut noise = (self.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        loop {
            match self.session(&mut noise).await? {
                SessionEnd::Finished => return Ok(()),
                SessionEnd::Dropped => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<CoordinatorClient<Channel>> {
        let cfg = hearth_transport::client_config(&self.tls)?;
        let channel = hearth_transport::connect(&self.addr, "localhost", cfg).await?;
        Ok(CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    async fn session(&self, noise: &mut u64) -> anyhow::Result<SessionEnd> {
        let mut client = self.connect().await?;
        let reply = client
            .register(v1::RegisterRequest {
                protocol_version: PROTOCOL_VERSION.into(),
                software_version: "bench".into(),
                // A simulated participant declares no families: it is invited to every job.
                families: None,
            })
            .await?
            .into_inner();
        if reply.participant_id != self.identity.me.id {
            anyhow::bail!(
                "registered as {:?}, the certificate says {}",
                reply.participant_id,
                self.identity.me
            );
        }
        let mut stream = client.subscribe(v1::SubscribeRequest {}).await?.into_inner();
        let mut relays: HashMap<u64, mpsc::Sender<(u32, Bytes)>> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::channel::<anyhow::Result<(u64, bool)>>(4);
        loop {
            let a = tokio::select! {
                a = stream.message() => a?,
                Some(done) = done_rx.recv() => {
                    let (bytes, dropped) = done.with_context(|| format!("participant {} in a round", self.index))?;
                    self.sent.fetch_add(bytes, Ordering::Relaxed);
                    if dropped {
                        // Vanish: dropping the stream and the channel closes the connection.
                        return Ok(SessionEnd::Dropped);
                    }
                    continue;
                }
            };
            let Some(a) = a else { bail!("the coordinator closed the announcement stream") };
            match a.kind {
                Some(announcement::Kind::RoundOpen(o)) => {
                    let drop_out = drops_in(self.index, self.n, self.drops, o.round);
                    let (mut client, done) = (client.clone(), done_tx.clone());
                    let update = random_update(noise, o.num_params as usize);
                    match o.secagg.clone() {
                        None if drop_out => return Ok(SessionEnd::Dropped),
                        None => {
                            tokio::spawn(async move {
                                let r = async {
                                    download_params(&mut client, &o.job_id, o.base_version).await?;
                                    upload(&mut client, &o, f32_bytes(&update), 1, 0.0).await
                                }
                                .await;
                                let _ = done.send(r.map(|b| (b, false))).await;
                            });
                        }
                        Some(setup) => {
                            let (tx, rx) = mpsc::channel(RELAY_QUEUE);
                            relays.insert(o.round, tx);
                            let at = client_secagg::RoundRef::of(&o);
                            let inv =
                                client_secagg::accept(&self.identity, &at, o.num_params + 2, &setup, 0)?;
                            let identity = Arc::clone(&self.identity);
                            let stop_after = drop_out.then_some(2);
                            tokio::spawn(async move {
                                let mut download_client = client.clone();
                                let encoder = inv.clone();
                                let input = async {
                                    download_params(&mut download_client, &o.job_id, o.base_version).await?;
                                    let _cpu = client_secagg::cpu_slot().await?;
                                    tokio::task::spawn_blocking(move || {
                                        encoder.encode_update(&update, 1, 0.0)
                                    })
                                    .await?
                                };
                                let r = client_secagg::run_client(
                                    client,
                                    &identity,
                                    &at,
                                    inv,
                                    rx,
                                    input,
                                    || Ok(()),
                                    stop_after,
                                )
                                .await;
                                let _ = done.send(r.map(|b| (b, drop_out))).await;
                            });
                        }
                    }
                }
                Some(announcement::Kind::Secagg(r)) => {
                    if let Some(tx) = relays.get(&r.round) {
                        let _ = tx.try_send((r.phase, r.payload));
                    }
                }
                Some(announcement::Kind::JobFinished(_)) => return Ok(SessionEnd::Finished),
                _ => {}
            }
        }
    }
}

/// Small noise: the update of trivial local training.
fn random_update(state: &mut u64, d: usize) -> Vec<f32> {
    (0..d)
        .map(|_| {
            // xorshift64*: a cheap source of small noise.
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            let r = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            (r - 0.5) * 1e-3
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Bytes {
    let mut raw = Vec::with_capacity(v.len() * 4);
    for x in v {
        raw.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(raw)
}

/// Uploads `raw` (little-endian f32 delta) as the update for round `o`; returns the encoded bytes sent.
async fn upload(
    client: &mut CoordinatorClient<Channel>,
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
        sha256: content_digest(&raw).to_vec().into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_outs_rotate_and_hit_the_rate() {
        for (n, rate) in [(10usize, 0.1f64), (50, 0.1), (10, 0.0)] {
            let drops = drops_per_round(n, rate);
            for round in 1..6u64 {
                let dropped: Vec<usize> = (0..n).filter(|&i| drops_in(i, n, drops, round)).collect();
                assert_eq!(dropped.len(), drops, "n {n} round {round}");
            }
        }
        let first: Vec<usize> = (0..10).filter(|&i| drops_in(i, 10, 1, 1)).collect();
        let second: Vec<usize> = (0..10).filter(|&i| drops_in(i, 10, 1, 2)).collect();
        assert_ne!(first, second, "a different participant each round");
    }
}
