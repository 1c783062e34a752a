//! Secure aggregation end to end, with real participant processes over mTLS gRPC.
//!
//! 1. The same job run twice on the same cluster and seed, once with plain federated averaging and once
//!    with secure aggregation, produces the same model up to quantisation error: secure aggregation changes
//!    what the coordinator sees, not what the consortium learns.
//! 2. A participant killed (SIGKILL) in the middle of a secure round does not stop the round: the survivors
//!    complete the protocol and the round commits with their sum (on a retry, when the kill fell between
//!    its graph-seed commitment and its reveal, which aborts the attempt by design).
//! 3. A message naming another instance of the round (a stale attempt's) is refused before the open
//!    attempt sees it, and its sender stays in that attempt.

mod common;

use std::time::Duration;

use common::*;
use hearth_models::{dirichlet_split, evaluate, IntentModel, IntentSpec};
use hearth_proto::v1::{self, job_event};

fn job(id: &str, spec: &IntentSpec, rounds: u64, participants: u32, plain: bool) -> v1::JobSpec {
    v1::JobSpec {
        job_id: id.into(),
        model_spec_json: spec.to_json().into(),
        rounds,
        train: Some(v1::TrainParams { local_epochs: 1, learning_rate: 1.0, batch_size: 8, l2: 0.0, seed: 3 }),
        participants_per_round: 0,
        min_participants: 3,
        round_deadline_s: 120,
        wait_for_participants: participants,
        server_momentum: hearth_models::DEFAULT_SERVER_MOMENTUM,
        plain_aggregation: plain,
        ..Default::default()
    }
}

/// Follows a job to its end; returns the committed rounds' summaries.
async fn follow(
    op: &mut v1::coordinator_client::CoordinatorClient<tonic::transport::Channel>,
    job: &str,
    cluster: &Cluster,
) -> Vec<v1::RoundSummary> {
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job.into() }).await.unwrap().into_inner();
    let mut committed = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(180), events.message())
        .await
        .expect("the job progresses")
        .unwrap()
    {
        match ev.kind {
            Some(job_event::Kind::Committed(s)) => committed.push(s),
            Some(job_event::Kind::Failed(f)) => {
                panic!("round {} failed: {}\n{}", f.round, f.reason, cluster.log("coordinator"))
            }
            Some(job_event::Kind::Finished(_)) => break,
            _ => {}
        }
    }
    committed
}

async fn final_params(
    op: &mut v1::coordinator_client::CoordinatorClient<tonic::transport::Channel>,
    job: &str,
) -> Vec<f32> {
    download_model(op, job).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_aggregation_learns_what_plain_averaging_learns() {
    let (train, test) = clinc_slice(10);
    let split = dirichlet_split(&train, 4, 0.5, 11).unwrap();
    let cluster = Cluster::start(&split.shards);
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let spec = IntentSpec::new(labels, Default::default()).unwrap();
    let mut op = cluster.client("operator").await;
    let rounds = 4;

    op.submit_job(job("plain", &spec, rounds, 4, true)).await.unwrap();
    let plain_rounds = follow(&mut op, "plain", &cluster).await;
    op.submit_job(job("secure", &spec, rounds, 4, false)).await.unwrap();
    let secure_rounds = follow(&mut op, "secure", &cluster).await;
    assert_eq!(plain_rounds.len() as u64, rounds);
    assert_eq!(secure_rounds.len() as u64, rounds);
    for (p, s) in plain_rounds.iter().zip(&secure_rounds) {
        assert_eq!(s.participants, 4, "every participant's update is in the sum");
        // Under secure aggregation the coordinator learns the total example count only through the sum.
        assert!(p.examples.abs_diff(s.examples) <= 1, "examples {} vs {}", p.examples, s.examples);
        assert!((p.train_loss - s.train_loss).abs() < 1e-3, "loss {} vs {}", p.train_loss, s.train_loss);
        // Where the secure round's time went: the five phases closed in order, before the commit.
        assert!(p.phase_seconds.is_empty(), "a plain round has no phases: {:?}", p.phase_seconds);
        assert_eq!(s.phase_seconds.len(), 6, "{:?}", s.phase_seconds);
        assert!(s.phase_seconds.windows(2).all(|w| w[0] <= w[1]), "{:?}", s.phase_seconds);
        assert!(
            s.phase_seconds[0] > 0.0 && s.phase_seconds[5] <= s.seconds,
            "{:?} {}",
            s.phase_seconds,
            s.seconds
        );
    }

    let plain = final_params(&mut op, "plain").await;
    let secure = final_params(&mut op, "secure").await;
    let max_diff = plain.iter().zip(&secure).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max_diff < 1e-3, "models differ by up to {max_diff}");
    let acc =
        |p: Vec<f32>| evaluate(&IntentModel::from_params(spec.clone(), p).unwrap(), &test).in_scope_accuracy;
    let (a_plain, a_secure) = (acc(plain), acc(secure));
    assert!((a_plain - a_secure).abs() <= 0.005, "in-scope accuracy {a_plain} plain vs {a_secure} secure");
    assert!(a_secure >= 0.85, "secure model learned: in-scope accuracy {a_secure}");

    // The coordinator's audit log says which rounds were securely aggregated.
    let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    let secure_commits =
        audit.lines().filter(|l| l.contains("round.commit") && l.contains("securely aggregated")).count();
    assert_eq!(secure_commits as u64, rounds, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_killed_mid_secure_round_does_not_stop_it() {
    let (train, _) = clinc_slice(5);
    let split = dirichlet_split(&train, 5, 1.0, 12).unwrap();
    let mut cluster = Cluster::start(&split.shards);
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let spec = IntentSpec::new(labels, Default::default()).unwrap();
    let mut op = cluster.client("operator").await;
    let rounds = 3;
    op.submit_job(job("killed", &spec, rounds, 5, false)).await.unwrap();
    let mut events =
        op.watch_job(v1::WatchJobRequest { job_id: "killed".into() }).await.unwrap().into_inner();
    let mut committed = Vec::new();
    let mut killed = false;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(180), events.message())
        .await
        .expect("the job progresses")
        .unwrap()
    {
        match ev.kind {
            // Kill inst-5 as soon as round 2 opens: it is somewhere in the protocol's first phases.
            Some(job_event::Kind::Opened(o)) if o.round == 2 && !killed => {
                cluster.kill_participant("inst-5");
                killed = true;
            }
            Some(job_event::Kind::Committed(s)) => committed.push(s),
            // Killed after committing to its share of the neighbour graph's seed and before revealing it,
            // inst-5 aborts that attempt, by design (no one may choose the graph by withholding a reveal):
            // the round is retried without it. Any other failure is the test's.
            Some(job_event::Kind::Failed(f))
                if f.round == 2 && f.reason.contains("committed and did not reveal; missing: inst-5") => {}
            Some(job_event::Kind::Failed(f)) => {
                panic!("round {} failed: {}\n{}", f.round, f.reason, cluster.log("coordinator"))
            }
            Some(job_event::Kind::Finished(_)) => break,
            _ => {}
        }
    }
    let participants: Vec<u32> = committed.iter().map(|s| s.participants).collect();
    assert_eq!(participants, vec![5, 4, 4], "round 2 commits with the four survivors");
    let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    let round2 = audit
        .lines()
        .find(|l| l.contains("round.commit") && l.contains("round 2"))
        .unwrap_or_else(|| panic!("no commit of round 2:\n{audit}"));
    assert!(round2.contains("securely aggregated") && !round2.contains("inst-5"), "{round2}");
}

/// A message naming another instance of the round (a stale attempt's: one given up, or one from before the
/// coordinator restarted) is refused before it reaches the open attempt, and its sender stays in that
/// attempt: the round commits with every participant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_another_instance_is_refused_and_its_sender_stays_in_the_round() {
    let (train, _) = clinc_slice(5);
    let split = dirichlet_split(&train, 3, 1.0, 13).unwrap();
    let cluster = Cluster::start(&split.shards);
    let spec = IntentSpec::new(labels_of(&train), Default::default()).unwrap();
    let mut op = cluster.client("operator").await;
    op.submit_job(job("stale", &spec, 1, 3, false)).await.unwrap();
    // inst-1's own connection sends an advertisement of instance 0xdead until a round is open to refuse it.
    let stale = cluster.client("inst-1").await;
    let send = |mut c: v1::coordinator_client::CoordinatorClient<tonic::transport::Channel>| async move {
        let header =
            v1::SecAggHeader { job_id: "stale".into(), round: 1, phase: 0, length: 4, instance: 0xdead };
        let chunks = vec![
            v1::SecAggChunk { kind: Some(v1::sec_agg_chunk::Kind::Header(header)) },
            v1::SecAggChunk { kind: Some(v1::sec_agg_chunk::Kind::Data(vec![0u8; 4].into())) },
        ];
        c.sec_agg_send(futures::stream::iter(chunks)).await
    };
    let started = std::time::Instant::now();
    let refusal = loop {
        let e = send(stale.clone()).await.expect_err("a stale instance's message is never accepted");
        if !e.message().contains("no secure") {
            break e;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no secure round opened: {e}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(refusal.code(), tonic::Code::FailedPrecondition, "{refusal}");
    assert!(refusal.message().contains("instance 0xdead of round 1 of stale;"), "{refusal}");
    let committed = follow(&mut op, "stale", &cluster).await;
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].participants, 3, "inst-1 stayed in the round");
    let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    assert!(audit.lines().any(|l| l.contains("secagg") && l.contains("instance 0xdead")), "{audit}");
}
