//! The coordinator is killed (SIGKILL) after committing rounds; restarted on the same address, it reloads
//! the job from its store and continues with the next round. Committed rounds are not redone.

mod common;

use std::time::Duration;

use common::*;
use hearth_models::{dirichlet_split, IntentSpec};
use hearth_proto::v1::{self, job_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_resumes_without_redoing_rounds() {
    let (train, _) = clinc_slice(5);
    let split = dirichlet_split(&train, 2, 1.0, 9).unwrap();
    let mut cluster = Cluster::start(&split.shards);
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let spec = IntentSpec::new(labels, Default::default()).unwrap();
    let rounds = 5;
    let mut op = cluster.client("operator").await;
    let job = op
        .submit_job(v1::JobSpec {
            job_id: "restart".into(),
            model_spec_json: spec.to_json().into(),
            rounds,
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
            wait_for_participants: 2,
            plain_aggregation: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job.clone() }).await.unwrap().into_inner();
    while let Some(ev) = events.message().await.unwrap() {
        if let Some(job_event::Kind::Committed(s)) = ev.kind {
            if s.round == 2 {
                break;
            }
        }
    }
    cluster.kill_coordinator();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.start_coordinator();

    // Reconnect and follow the job to its end.
    let mut op = cluster.client("operator").await;
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job.clone() }).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(120), events.message())
        .await
        .expect("job progresses")
        .unwrap()
    {
        match ev.kind {
            Some(job_event::Kind::Committed(s)) => seen.push(s.round),
            Some(job_event::Kind::Failed(f)) => panic!("round {} failed: {}", f.round, f.reason),
            Some(job_event::Kind::Finished(_)) => break,
            _ => {}
        }
    }
    // History (rounds 1, 2, maybe 3 if it committed before the kill) then the rest, each once.
    assert_eq!(seen, (1..=rounds).collect::<Vec<_>>(), "each round committed exactly once");
    let status = op.get_status(v1::StatusRequest {}).await.unwrap().into_inner();
    let j = status.jobs.iter().find(|j| j.job_id == job).unwrap();
    assert_eq!((j.state.as_str(), j.committed_rounds, j.latest_version), ("finished", rounds, rounds));
    let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    assert!(audit.contains("job.resume"), "{audit}");
    let commits = audit.lines().filter(|l| l.contains("round.commit") && l.contains("\"ok\"")).count();
    assert_eq!(commits as u64, rounds, "no round committed twice:\n{audit}");
}
