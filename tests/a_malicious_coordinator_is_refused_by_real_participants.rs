//! A coordinator that deviates from the protocol, against a real participant process. This file's gRPC
//! server stands in for the coordinator (on the coordinator's certificate, so the participant connects to
//! it) and announces rounds that break each rule a participant checks for itself: a Sybil roster of its
//! own certificates, a member the CA minted but the institutions never listed, a degree and threshold too weak for the cohort, a survivor floor below what a DP
//! round's noise is calibrated for, noise below the institution's own floor, a job past the institution's
//! own budget, and a replayed round instance; and one honest round as the control. For every deviation the
//! participant declines with its reason (the coordinator learns why), records the refusal in its own audit
//! log, and sends no protocol message at all: no key advertisement, so no share of anything. The honest
//! round it joins; when the stand-in then relays graph-seed commitments with the participant's own
//! altered (to choose the neighbour graph), it reveals nothing, leaves the round and audits why. The
//! revocation list it relays is of its own making (another CA's signature): the participant refuses it.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::Stream;
use hearth_models::{FeatureConfig, IntentSpec, RoundShape};
use hearth_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use hearth_proto::v1::{self, announcement, sec_agg_chunk};
use hearth_secagg::GraphRule;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What the participant did, as the stand-in coordinator saw it.
#[derive(Debug, Default)]
struct Seen {
    registered: bool,
    /// (job, round, phase) of every protocol message received.
    sent: Vec<(String, u64, u32)>,
    /// The payload of each of those messages, in the same order.
    payloads: Vec<Vec<u8>>,
    /// The instance each of those messages named, in the same order.
    instances: Vec<u64>,
    /// (job, the participant's reason) of every decline.
    declined: Vec<(String, String)>,
}

struct Deviant {
    announcements: Mutex<Option<mpsc::Receiver<v1::Announcement>>>,
    seen: Arc<Mutex<Seen>>,
}

#[tonic::async_trait]
impl Coordinator for Deviant {
    async fn register(&self, _: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterReply>, Status> {
        self.seen.lock().unwrap().registered = true;
        Ok(Response::new(v1::RegisterReply {
            participant_id: "inst-1".into(),
            protocol_version: hearth_proto::PROTOCOL_VERSION.into(),
            max_chunk_bytes: hearth_proto::MAX_CHUNK_BYTES as u32,
        }))
    }

    type SubscribeStream = BoxStream<v1::Announcement>;

    async fn subscribe(
        &self,
        _: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let rx =
            self.announcements.lock().unwrap().take().ok_or_else(|| Status::unavailable("subscribed"))?;
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|a| (Ok(a), rx)) });
        Ok(Response::new(Box::pin(stream)))
    }

    type DownloadModelStream = BoxStream<v1::ModelChunk>;

    async fn download_model(
        &self,
        _: Request<v1::ModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        Err(Status::unavailable("this coordinator serves no model"))
    }

    async fn upload_update(
        &self,
        _: Request<Streaming<v1::UpdateChunk>>,
    ) -> Result<Response<v1::UploadReceipt>, Status> {
        Err(Status::unavailable("no plain rounds here"))
    }

    async fn decline_round(
        &self,
        req: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::DeclineReply>, Status> {
        let d = req.into_inner();
        self.seen.lock().unwrap().declined.push((d.job_id, d.reason));
        Ok(Response::new(v1::DeclineReply {}))
    }

    async fn sec_agg_send(
        &self,
        req: Request<Streaming<v1::SecAggChunk>>,
    ) -> Result<Response<v1::SecAggAck>, Status> {
        let mut stream = req.into_inner();
        let Some(v1::SecAggChunk { kind: Some(sec_agg_chunk::Kind::Header(h)) }) = stream.message().await?
        else {
            return Err(Status::invalid_argument("no header"));
        };
        let mut payload = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if let Some(sec_agg_chunk::Kind::Data(bytes)) = chunk.kind {
                payload.extend_from_slice(&bytes);
            }
        }
        let mut seen = self.seen.lock().unwrap();
        seen.sent.push((h.job_id.clone(), h.round, h.phase));
        seen.payloads.push(payload);
        seen.instances.push(h.instance);
        Ok(Response::new(v1::SecAggAck { job_id: h.job_id, round: h.round, phase: h.phase }))
    }

    async fn submit_job(&self, _: Request<v1::JobSpec>) -> Result<Response<v1::JobAccepted>, Status> {
        Err(Status::unimplemented("test coordinator"))
    }

    type WatchJobStream = BoxStream<v1::JobEvent>;

    async fn watch_job(
        &self,
        _: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        Err(Status::unimplemented("test coordinator"))
    }

    async fn get_status(&self, _: Request<v1::StatusRequest>) -> Result<Response<v1::StatusReply>, Status> {
        Err(Status::unimplemented("test coordinator"))
    }

    async fn cancel_job(&self, _: Request<v1::JobRef>) -> Result<Response<v1::JobStatus>, Status> {
        Err(Status::unimplemented("test coordinator"))
    }

    async fn resume_job(&self, _: Request<v1::JobRef>) -> Result<Response<v1::JobStatus>, Status> {
        Err(Status::unimplemented("test coordinator"))
    }

    async fn get_job(&self, _: Request<v1::JobRef>) -> Result<Response<v1::JobDetail>, Status> {
        Err(Status::unimplemented("test coordinator"))
    }

    /// A revocation list of its own making (signed by another CA): participants must not take it.
    async fn get_revocations(
        &self,
        _: Request<v1::RevocationsRequest>,
    ) -> Result<Response<v1::RevocationsReply>, Status> {
        let other = hearth_crypto::pki::ConsortiumCa::generate("not the consortium").unwrap();
        let pem = other.sign_crl(99, &[], std::time::SystemTime::now()).unwrap();
        let crl_der = hearth_crypto::pki::crl_der_from_pem(&pem).unwrap();
        Ok(Response::new(v1::RevocationsReply { crl_der: crl_der.into() }))
    }
}

fn der(pki: &std::path::Path, name: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(pki.join(format!("{name}.pem"))).unwrap();
    hearth_crypto::pki::cert_der_from_pem(&pem).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_coordinator_is_refused_by_real_participants() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = d.join("pki");
    let names: Vec<String> = (1..=8).map(|i| format!("inst-{i}")).collect();
    hearth_ok(&["pki", "init", "--dir", s(&pki), "--participants", &names.join(",")]);

    // The stand-in coordinator, on the coordinator's certificate.
    let tls = hearth_transport::TlsMaterial::load(
        &pki.join("ca.pem"),
        &pki.join("coordinator.pem"),
        &pki.join("coordinator.key"),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let svc =
        CoordinatorServer::new(Deviant { announcements: Mutex::new(Some(rx)), seen: Arc::clone(&seen) });
    let router = tonic::service::Routes::new(svc).into_axum_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_tls = hearth_transport::server_config(&tls).unwrap();
    tokio::spawn(hearth_transport::serve(
        listener,
        server_tls,
        router,
        hearth_transport::ServeOptions::default(),
        std::future::pending(),
    ));

    // A real participant process of institution inst-1 (with the starter policy `hearth pki init` signed).
    let ready = d.join("inst-1.addr");
    let mut participant = hearth()
        .args(["participant", "--ready-file", s(&ready)])
        .env("HEARTH_PARTICIPANT__COORDINATOR", addr.to_string())
        .env("HEARTH_PARTICIPANT__LISTEN", "127.0.0.1:0")
        .env("HEARTH_PARTICIPANT__DATA_DIR", d.join("data/inst-1"))
        .env("HEARTH_PARTICIPANT__TLS__CA", pki.join("ca.pem"))
        .env("HEARTH_PARTICIPANT__TLS__CERT", pki.join("inst-1.pem"))
        .env("HEARTH_PARTICIPANT__TLS__KEY", pki.join("inst-1.key"))
        .env("HEARTH_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.join("inst-1.log")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !(ready.exists() && seen.lock().unwrap().registered) {
        assert!(started.elapsed() < Duration::from_secs(60), "the participant registers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // subscribed

    let spec = IntentSpec::new(
        vec!["a".into(), "b".into()],
        FeatureConfig { dim: 1024, ..FeatureConfig::default() },
    )
    .unwrap();
    let num_params = spec.num_params() as u64;
    let roster = |members: &[&str]| -> Vec<v1::RosterMember> {
        members
            .iter()
            .map(|m| v1::RosterMember { participant_id: (*m).into(), certificate_der: der(&pki, m).into() })
            .collect()
    };
    let five = ["inst-1", "inst-2", "inst-3", "inst-4", "inst-5"];
    let fair = GraphRule::default().choose(5).unwrap();
    let setup = |members: &[&str], degree: u32, threshold: u32, vector_len: u64| v1::SecAggSetup {
        suite: "international".into(),
        roster: roster(members),
        degree,
        threshold,
        modulus_bits: 32,
        your_index: 0,
        clip: 1.0,
        weight_cap: 100.0,
        vector_len,
        phase_deadline_unix_ms: now_ms() + 10_000,
        noise_headroom: 0,
        instance: 1,
        min_survivors: 3,
    };
    let open = |job: &str, s: v1::SecAggSetup, privacy: Option<v1::PrivacySpec>| {
        let vector_len = s.vector_len;
        v1::Announcement {
            kind: Some(announcement::Kind::RoundOpen(v1::RoundOpen {
                job_id: job.into(),
                round: 1,
                base_version: 0,
                deadline_unix_ms: now_ms() + 8_000,
                train: Some(v1::TrainParams {
                    local_epochs: 1,
                    learning_rate: 0.5,
                    batch_size: 8,
                    l2: 0.0,
                    seed: 1,
                }),
                model_spec_json: spec.to_json().into(),
                num_params: if privacy.is_some() { vector_len } else { vector_len - 2 },
                secagg: Some(s),
                privacy,
            })),
        }
    };
    // A DP round as an honest coordinator would announce it (noise for 5 survivors), but for `sigma`.
    let dp = |sigma: f64, rounds: u64| v1::PrivacySpec {
        family: "intent".into(),
        clipping_norm: 0.1,
        noise_multiplier: sigma,
        sampling_rate: 1.0,
        privacy_unit: "record".into(),
        min_survivors: 5,
        declared_records: 1_000,
        bias_scale: 0.3,
        max_cohort: 5,
        delta: 1e-5,
        rounds,
    };
    let dp_setup = |min_survivors: u32| v1::SecAggSetup {
        clip: RoundShape::for_job(0.1, 1_000, 1, num_params, 32).quantizer_clip,
        min_survivors,
        ..setup(&five, fair.degree, fair.threshold, num_params)
    };

    let mut deviations: Vec<(&str, v1::Announcement, &str)> = Vec::new();
    // Sybil: the victim and four copies of the coordinator's own certificate.
    let sybil = ["inst-1", "coordinator", "coordinator", "coordinator", "coordinator"];
    let mut sybil_setup = setup(&five, fair.degree, fair.threshold, num_params + 2);
    sybil_setup.roster = sybil
        .iter()
        .map(|m| v1::RosterMember { participant_id: (*m).into(), certificate_der: der(&pki, m).into() })
        .collect();
    deviations.push(("sybil", open("sybil", sybil_setup, None), "only participants may be members"));
    // A participant certificate the operator minted with the CA key: real, but on no member list the
    // institutions signed (`hearth pki init` wrote and every participant signed pki/members.json).
    hearth_ok(&["pki", "issue", "--dir", s(&pki), "--role", "participant", "--id", "minted"]);
    let minted = ["inst-1", "inst-2", "inst-3", "inst-4", "minted"];
    deviations.push((
        "unlisted",
        open("unlisted", setup(&minted, fair.degree, fair.threshold, num_params + 2), None),
        "(participant:minted) with this certificate is not on the member list",
    ));
    // Weak parameters: eight members, degree and threshold 2: two colluders around the victim unmask it.
    let eight: Vec<&str> = names.iter().map(String::as_str).collect();
    deviations.push((
        "weak",
        open("weak", setup(&eight, 2, 2, num_params + 2), None),
        "degree 2 and threshold 2 for 8 members",
    ));
    // A DP round whose noise is for 5 survivors, announced with a survivor floor of 3.
    deviations.push((
        "few-survivors",
        open("few-survivors", dp_setup(3), Some(dp(4.0, 10))),
        "this participant requires at least 5",
    ));
    // Noise below the institution's own floor (the starter policy's 0.5).
    deviations.push((
        "low-noise",
        open("low-noise", dp_setup(5), Some(dp(0.1, 10))),
        "below the policy's floor of 0.5",
    ));
    // A job the institution's own budget (epsilon 10 a month for intent) cannot pay for, whatever the
    // coordinator's ledger says.
    deviations.push((
        "over-budget",
        open("over-budget", dp_setup(5), Some(dp(0.6, 10_000))),
        "intent budget",
    ));

    // The control: an honest round, which the participant joins (its key advertisement arrives).
    tx.send(open("honest", setup(&five, fair.degree, fair.threshold, num_params + 2), None)).await.unwrap();
    for (_, a, _) in &deviations {
        tx.send(a.clone()).await.unwrap();
    }
    let wait = |what: &str, done: &dyn Fn(&Seen) -> bool| {
        let started = Instant::now();
        while !done(&seen.lock().unwrap()) {
            assert!(started.elapsed() < Duration::from_secs(30), "{what}: {:?}", seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("the honest round is joined", &|s: &Seen| s.sent.iter().any(|(j, _, p)| j == "honest" && *p == 0));
    for (job, _, reason) in &deviations {
        wait(job, &|s: &Seen| s.declined.iter().any(|(j, _)| j == job));
        let got: Vec<String> =
            seen.lock().unwrap().declined.iter().filter(|(j, _)| j == job).map(|(_, r)| r.clone()).collect();
        assert!(got.iter().any(|r| r.contains(reason)), "{job}: declined with {got:?}, expected {reason:?}");
    }

    // The honest round goes on with a list of graph-seed commitments in which the participant's own is
    // altered (a coordinator trying to fix the neighbour graph after seeing the contributions): the
    // participant reveals nothing, leaves the round, declines it with the reason and audits it.
    // It does so in a retry (a new instance of the round), which takes the round's relay queue over: the
    // first instance ends there and must not take the retry's queue with it.
    let mut retry = setup(&five, fair.degree, fair.threshold, num_params + 2);
    retry.instance = 2;
    tx.send(open("honest", retry, None)).await.unwrap();
    wait("the retry is joined", &|s: &Seen| {
        s.sent.iter().filter(|(j, _, p)| j == "honest" && *p == 0).count() == 2
    });
    tokio::time::sleep(Duration::from_millis(200)).await; // the first instance has ended
    let advertisement = {
        let s = seen.lock().unwrap();
        let i = s.sent.iter().rposition(|(j, _, p)| j == "honest" && *p == 0).unwrap();
        // Each advertisement names the instance it belongs to.
        let first = s.sent.iter().position(|(j, _, p)| j == "honest" && *p == 0).unwrap();
        assert_eq!((s.instances[first], s.instances[i]), (1, 2));
        s.payloads[i].clone()
    };
    // The context (bytes 2..34 of every message's header) binds the list to this round instance.
    let context: [u8; 32] = advertisement[2..34].try_into().unwrap();
    let ground = hearth_secagg::SeedCommitments {
        recipient: 0,
        commitments: (0..5u32).map(|c| (c, [c as u8 + 1; 32])).collect(),
    };
    let relay = |instance: u64| v1::Announcement {
        kind: Some(announcement::Kind::Secagg(v1::SecAggRelay {
            job_id: "honest".into(),
            round: 1,
            phase: 1,
            payload: ground.encode(&context).into(),
            instance,
        })),
    };
    // Relayed as the given-up first instance's, the list never reaches the retry's work.
    tx.send(relay(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !seen.lock().unwrap().declined.iter().any(|(j, r)| j == "honest" && r.contains("own commitment")),
        "a relay of another instance was handed to the retry"
    );
    tx.send(relay(2)).await.unwrap();
    wait("the altered commitments are refused", &|s: &Seen| {
        s.declined.iter().any(|(j, r)| j == "honest" && r.contains("own commitment is missing or altered"))
    });
    assert!(
        !seen.lock().unwrap().sent.iter().any(|(j, _, p)| j == "honest" && *p > 0),
        "no seed reveal (or anything after it) left the participant"
    );

    // A replay of the honest round's instance is refused too.
    tx.send(open("honest", setup(&five, fair.degree, fair.threshold, num_params + 2), None)).await.unwrap();
    wait("the replay is declined", &|s: &Seen| {
        s.declined.iter().any(|(j, r)| j == "honest" && r.contains("joined before"))
    });

    // No protocol message for any deviation: no key advertised, so nothing of the victim's is shared.
    let sent = seen.lock().unwrap().sent.clone();
    for (job, _, _) in &deviations {
        assert!(!sent.iter().any(|(j, _, _)| j == job), "{job}: the participant sent {sent:?}");
    }
    // Each refusal is in the participant's own audit log.
    let audit = std::fs::read_to_string(d.join("data/inst-1/audit/entries.jsonl")).unwrap();
    for (job, _, reason) in &deviations {
        assert!(
            audit.lines().any(|l| l.contains("round.join")
                && l.contains("refused")
                && l.contains(&format!("job {job} round 1"))
                && l.contains(reason)),
            "{job} is audited as refused:\n{audit}"
        );
    }
    assert!(
        audit
            .lines()
            .any(|l| l.contains("round.join") && l.contains("\"ok\"") && l.contains("job honest round 1")),
        "{audit}"
    );
    assert!(
        audit.lines().any(|l| l.contains("round.abandon")
            && l.contains("refused")
            && l.contains("job honest round 1")
            && l.contains("own commitment is missing or altered")),
        "the altered commitments are audited:\n{audit}"
    );
    // The revocation list this coordinator made up (signed by another CA) was refused, and audited.
    assert!(
        audit.lines().any(|l| l.contains("revocations.update")
            && l.contains("refused")
            && l.contains("relayed by the coordinator")),
        "a forged revocation list is refused:\n{audit}"
    );
    let _ = participant.kill();
    let _ = participant.wait();
    // Its log, written to a file, is plain text: no terminal colour codes.
    let log = std::fs::read_to_string(d.join("inst-1.log")).unwrap();
    assert!(log.contains("WARN") && !log.contains('\u{1b}'), "colour codes in a log file:\n{log}");
}
