//! A misbehaving participant (a real client with a real consortium certificate) sends malformed,
//! oversized, wrong-dimension, non-finite, replayed and out-of-round updates. Each gets a clear error,
//! lands in the audit log, and the round still commits with the honest participants. Peers without a
//! consortium certificate, and certificates of the wrong role, are refused.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hearth_crypto::digest::content_digest;
use hearth_crypto::pki::{ConsortiumCa, Role};
use hearth_models::{dirichlet_split, IntentSpec};
use hearth_proto::v1::{self, announcement, job_event, update_chunk};
use hearth_proto::MAX_CHUNK_BYTES;
use tonic::Code;

fn header(o: &v1::RoundOpen, n: u64, raw: &[u8], nonce: [u8; 16]) -> v1::UpdateHeader {
    v1::UpdateHeader {
        job_id: o.job_id.clone(),
        round: o.round,
        base_version: o.base_version,
        num_examples: 10,
        train_loss: 1.0,
        num_params: n,
        nonce: nonce.to_vec().into(),
        sha256: content_digest(raw).to_vec().into(),
    }
}

fn stream_of(h: Option<v1::UpdateHeader>, raw: Bytes, chunk: usize) -> Vec<v1::UpdateChunk> {
    let mut v: Vec<v1::UpdateChunk> =
        h.into_iter().map(|h| v1::UpdateChunk { kind: Some(update_chunk::Kind::Header(h)) }).collect();
    for s in (0..raw.len()).step_by(chunk) {
        v.push(v1::UpdateChunk {
            kind: Some(update_chunk::Kind::Data(raw.slice(s..(s + chunk).min(raw.len())))),
        });
    }
    v
}

fn f32_bytes(v: &[f32]) -> Bytes {
    Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_updates_are_refused_and_the_round_survives() {
    let (train, _) = clinc_slice(5);
    let split = dirichlet_split(&train, 2, 1.0, 5).unwrap();
    let mut cluster = Cluster::start(&split.shards);
    // A third institution's certificate, driven by this test instead of a participant process.
    hearth_ok(&["pki", "issue", "--dir", s(&cluster.pki()), "--role", "participant", "--id", "rogue"]);
    // A fourth, honest but slow, also driven by the test: it uploads last, so the round stays open while the
    // rogue's replays are tried.
    hearth_ok(&["pki", "issue", "--dir", s(&cluster.pki()), "--role", "participant", "--id", "slow"]);

    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let spec = IntentSpec::new(labels, Default::default()).unwrap();
    let n = spec.num_params() as u64;

    let mut rogue = cluster.client("rogue").await;
    rogue
        .register(v1::RegisterRequest {
            protocol_version: "1.0".into(),
            software_version: "rogue".into(),
            families: None,
        })
        .await
        .unwrap();
    // A wrong protocol major version is refused.
    let err = rogue
        .register(v1::RegisterRequest {
            protocol_version: "9.0".into(),
            software_version: "x".into(),
            families: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let mut announcements = rogue.subscribe(v1::SubscribeRequest {}).await.unwrap().into_inner();
    let mut slow = cluster.client("slow").await;
    slow.register(v1::RegisterRequest {
        protocol_version: "1.0".into(),
        software_version: "slow".into(),
        families: None,
    })
    .await
    .unwrap();
    let _slow_announcements = slow.subscribe(v1::SubscribeRequest {}).await.unwrap().into_inner();

    let mut op = cluster.client("operator").await;
    // Only operators submit jobs.
    let err = rogue.submit_job(v1::JobSpec::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A job that breaks the policy is refused with the reason.
    let err = op
        .submit_job(v1::JobSpec {
            model_spec_json: spec.to_json().into(),
            rounds: 0,
            train: Some(v1::TrainParams {
                local_epochs: 1,
                learning_rate: 0.5,
                batch_size: 8,
                l2: 0.0,
                seed: 1,
            }),
            min_participants: 1,
            round_deadline_s: 10,
            plain_aggregation: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("rounds"), "{err}");

    let job = op
        .submit_job(v1::JobSpec {
            job_id: "hostile".into(),
            model_spec_json: spec.to_json().into(),
            rounds: 1,
            train: Some(v1::TrainParams {
                local_epochs: 1,
                learning_rate: 0.5,
                batch_size: 8,
                l2: 0.0,
                seed: 1,
            }),
            participants_per_round: 0,
            min_participants: 2,
            round_deadline_s: 60,
            wait_for_participants: 4,
            plain_aggregation: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;

    let open = loop {
        let a = announcements.message().await.unwrap().expect("announcement stream open");
        if let Some(announcement::Kind::RoundOpen(o)) = a.kind {
            break o;
        }
    };
    assert_eq!(open.num_params, n);
    let zeros = f32_bytes(&vec![0.0; n as usize]);

    let base = rogue.clone();
    let expect = |code: Code, what: &str, chunks: Vec<v1::UpdateChunk>| {
        let mut c = base.clone();
        let what = what.to_string();
        async move {
            let err = c.upload_update(futures::stream::iter(chunks)).await.unwrap_err();
            assert_eq!(err.code(), code, "{what}: {err}");
            assert!(!err.message().is_empty(), "{what}: error has a message");
        }
    };
    // Data before the header.
    expect(Code::InvalidArgument, "no header", stream_of(None, zeros.clone(), MAX_CHUNK_BYTES)).await;
    // Wrong dimension.
    let short = f32_bytes(&[0.0; 10]);
    expect(
        Code::InvalidArgument,
        "wrong dimension",
        stream_of(Some(header(&open, 10, &short, [1; 16])), short.clone(), MAX_CHUNK_BYTES),
    )
    .await;
    // Claims the right dimension but sends too few values.
    let h = header(&open, n, &short, [2; 16]);
    expect(Code::InvalidArgument, "truncated", stream_of(Some(h), short.clone(), MAX_CHUNK_BYTES)).await;
    // NaN and infinity.
    let mut bad = vec![0.0f32; n as usize];
    bad[n as usize / 2] = f32::NAN;
    let raw = f32_bytes(&bad);
    expect(
        Code::InvalidArgument,
        "NaN",
        stream_of(Some(header(&open, n, &raw, [3; 16])), raw, MAX_CHUNK_BYTES),
    )
    .await;
    bad[n as usize / 2] = f32::INFINITY;
    let raw = f32_bytes(&bad);
    expect(
        Code::InvalidArgument,
        "inf",
        stream_of(Some(header(&open, n, &raw, [4; 16])), raw, MAX_CHUNK_BYTES),
    )
    .await;
    // A chunk over the message limit is refused by the transport.
    let big = Bytes::from(vec![0u8; 3 * MAX_CHUNK_BYTES]);
    let mut unlimited = rogue.clone().max_encoding_message_size(usize::MAX);
    let err = unlimited
        .upload_update(futures::stream::iter(stream_of(
            Some(header(&open, n, &zeros, [5; 16])),
            big,
            3 * MAX_CHUNK_BYTES,
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "oversized message: {err}");
    // Chunks that split a float.
    expect(
        Code::InvalidArgument,
        "odd chunk",
        stream_of(Some(header(&open, n, &zeros, [6; 16])), zeros.clone(), 1023),
    )
    .await;
    // Checksum mismatch.
    let mut h = header(&open, n, &zeros, [7; 16]);
    h.sha256 = vec![0u8; 32].into();
    expect(Code::DataLoss, "checksum", stream_of(Some(h), zeros.clone(), MAX_CHUNK_BYTES)).await;
    // A round that is not open.
    let mut h = header(&open, n, &zeros, [8; 16]);
    h.round = 99;
    expect(Code::FailedPrecondition, "closed round", stream_of(Some(h), zeros.clone(), MAX_CHUNK_BYTES))
        .await;
    // Negative loss, zero examples, short nonce.
    let mut h = header(&open, n, &zeros, [9; 16]);
    h.num_examples = 0;
    expect(Code::InvalidArgument, "zero examples", stream_of(Some(h), zeros.clone(), MAX_CHUNK_BYTES)).await;
    let mut h = header(&open, n, &zeros, [10; 16]);
    h.nonce = vec![1, 2, 3].into();
    expect(Code::InvalidArgument, "short nonce", stream_of(Some(h), zeros.clone(), MAX_CHUNK_BYTES)).await;

    // A valid update is accepted once; the same upload replayed is refused.
    let good = stream_of(Some(header(&open, n, &zeros, [42; 16])), zeros.clone(), MAX_CHUNK_BYTES);
    rogue.upload_update(futures::stream::iter(good.clone())).await.expect("valid update accepted");
    expect(Code::AlreadyExists, "replay", good).await;
    expect(
        Code::AlreadyExists,
        "duplicate",
        stream_of(Some(header(&open, n, &zeros, [43; 16])), zeros.clone(), MAX_CHUNK_BYTES),
    )
    .await;

    // The slow participant's update closes the round, which commits with all four updates.
    slow.upload_update(futures::stream::iter(stream_of(
        Some(header(&open, n, &zeros, [77; 16])),
        zeros.clone(),
        MAX_CHUNK_BYTES,
    )))
    .await
    .expect("slow participant's update accepted");
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job }).await.unwrap().into_inner();
    let mut committed = None;
    while let Some(ev) = events.message().await.unwrap() {
        match ev.kind {
            Some(job_event::Kind::Committed(s)) => committed = Some(s),
            Some(job_event::Kind::Failed(f)) => panic!("round failed: {}", f.reason),
            Some(job_event::Kind::Finished(_)) => break,
            _ => {}
        }
    }
    assert_eq!(committed.expect("round committed").participants, 4);
    // An update for the now closed round is refused.
    expect(
        Code::FailedPrecondition,
        "after close",
        stream_of(Some(header(&open, n, &zeros, [44; 16])), zeros.clone(), MAX_CHUNK_BYTES),
    )
    .await;

    // Refusals are in the audit log, with who and why.
    let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    let refused: Vec<&str> =
        audit.lines().filter(|l| l.contains("update.upload") && l.contains("refused")).collect();
    assert!(refused.len() >= 12, "{audit}");
    assert!(refused.iter().all(|l| l.contains("participant:rogue")), "{audit}");
    assert!(audit.contains("replay"), "{audit}");

    // A peer whose certificate comes from another CA never gets a response.
    let other = ConsortiumCa::generate("another consortium").unwrap();
    let cert = other.issue(Role::Operator, "operator", &[], &[]).unwrap();
    let tls = hearth_transport::TlsMaterial::from_pem(
        std::fs::read_to_string(cluster.pki().join("ca.pem")).unwrap(),
        cert.cert_pem,
        cert.key_pem,
    );
    let cfg = hearth_transport::client_config(&tls).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let ch = hearth_transport::connect(&cluster.coordinator_addr, "localhost", cfg).await?;
        let mut c = v1::coordinator_client::CoordinatorClient::new(ch);
        c.get_status(v1::StatusRequest {}).await.map_err(|e| anyhow_like(e.to_string()))?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await
    .expect("refusal is prompt");
    assert!(outcome.is_err(), "a certificate from another CA must be refused");
    // The coordinator is still serving.
    op.get_status(v1::StatusRequest {}).await.expect("coordinator still up");
    cluster.kill_participant("inst-1");
}

fn anyhow_like(s: String) -> Box<dyn std::error::Error + Send + Sync> {
    s.into()
}
