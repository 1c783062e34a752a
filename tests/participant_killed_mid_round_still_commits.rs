//! A participant process killed while a round is open does not stall the round: it commits with the
//! survivors as soon as the coordinator sees the participant gone, long before the deadline.

mod common;

use common::*;
use hearth_models::{dirichlet_split, IntentSpec};
use hearth_proto::v1::{self, job_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_killed_mid_round_still_commits() {
    let (train, _) = clinc_slice(10);
    let split = dirichlet_split(&train, 3, 1.0, 3).unwrap();
    let mut cluster = Cluster::start(&split.shards);
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let spec = IntentSpec::new(labels, Default::default()).unwrap();
    let mut op = cluster.client("operator").await;
    let deadline_s = 120;
    let job = op
        .submit_job(v1::JobSpec {
            job_id: "kill-test".into(),
            model_spec_json: spec.to_json().into(),
            rounds: 3,
            // Many local epochs: each participant trains for a while, so the kill lands mid-round.
            train: Some(v1::TrainParams {
                local_epochs: 100,
                learning_rate: 0.5,
                batch_size: 16,
                l2: 0.0,
                seed: 1,
            }),
            participants_per_round: 0,
            min_participants: 2,
            round_deadline_s: deadline_s,
            wait_for_participants: 3,
            plain_aggregation: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job }).await.unwrap().into_inner();
    let mut committed = Vec::new();
    while let Some(ev) = events.message().await.unwrap() {
        match ev.kind {
            Some(job_event::Kind::Opened(o)) if o.round == 2 => cluster.kill_participant("inst-3"),
            Some(job_event::Kind::Committed(s)) => committed.push(s),
            Some(job_event::Kind::Failed(f)) => panic!("round {} failed: {}", f.round, f.reason),
            Some(job_event::Kind::Finished(_)) => break,
            _ => {}
        }
    }
    assert_eq!(committed.len(), 3, "all rounds commit: {committed:?}");
    assert_eq!(committed[0].participants, 3);
    assert_eq!(committed[1].participants, 2, "round 2 commits with the two survivors");
    assert!(
        committed[1].seconds < f64::from(deadline_s) / 2.0,
        "round 2 took {} s: it waited for the dead participant instead of noticing it left",
        committed[1].seconds
    );
    assert_eq!(committed[2].participants, 2);
    // The coordinator counted the drop-out (round 2's; round 3 invited only the two left).
    let (_, metrics) = http_get(&cluster.ops_addr("coordinator"), "/metrics").await;
    assert!(metrics.contains("\nhearth_round_dropouts_total 1\n"), "{metrics}");
}
