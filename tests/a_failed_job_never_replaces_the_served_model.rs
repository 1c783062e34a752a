//! A job's model goes into service only when the job has finished. A job that commits rounds and then
//! fails (here: a participant is killed, and the job needs all four) replaces nothing:
//! every participant keeps serving the last finished job's model and audits the refusal, and `hearth job
//! watch` exits 1 with the reason.

mod common;

use std::time::Duration;

use common::*;
use hearth_models::dirichlet_split;
use hearth_proto::v1::{self, job_event};

fn audit(cluster: &Cluster, name: &str) -> String {
    std::fs::read_to_string(cluster.data_dir(name).join("audit/entries.jsonl")).unwrap()
}

/// Waits until participant `name` audited a `model.install` mentioning `what`.
fn installed(cluster: &Cluster, name: &str, what: &str) {
    let started = std::time::Instant::now();
    while !audit(cluster, name).lines().any(|l| l.contains("model.install") && l.contains(what)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: no {what:?}:\n{}",
            audit(cluster, name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_never_replaces_the_served_model() {
    let (train, _) = clinc_slice(10);
    let split = dirichlet_split(&train, 4, 1.0, 3).unwrap();
    let mut cluster = Cluster::start(&split.shards);
    let labels = labels_of(&train);

    // A good job: four participants, secure aggregation, two rounds.
    cluster.run_job("good", labels.clone(), 2, 4).await;
    for p in ["inst-1", "inst-2", "inst-3"] {
        installed(&cluster, p, "job good version 2");
    }

    // A doomed job: secure, all four participants, four rounds of at most 5 s. After its first commit one
    // of the four is killed: its rounds fail (each waits 5 s for the fourth) until the job does.
    let mut op = cluster.client("operator").await;
    let doomed = v1::JobSpec { round_deadline_s: 5, ..intent_job("doomed", labels, 4, 4) };
    let job = op.submit_job(doomed).await.unwrap().into_inner().job_id;
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job.clone() }).await.unwrap().into_inner();
    let mut committed = 0;
    let finished = loop {
        let ev = tokio::time::timeout(Duration::from_secs(180), events.message())
            .await
            .expect("the job progresses")
            .unwrap()
            .expect("the job ends");
        match ev.kind {
            Some(job_event::Kind::Committed(_)) => {
                committed += 1;
                if committed == 1 {
                    cluster.kill_participant("inst-4");
                }
            }
            Some(job_event::Kind::Finished(f)) => break f,
            _ => {}
        }
    };
    assert!(finished.failed, "{finished:?}");
    assert!(finished.final_version >= 1, "the job committed before failing: {finished:?}");
    assert!(finished.reason.contains("failed 3 times"), "{finished:?}");
    assert!(finished.reason.contains("missing: inst-4"), "the reason names who was missing: {finished:?}");

    // No participant serves any of it: each keeps the good job's model and says why.
    std::thread::sleep(Duration::from_secs(1));
    for p in ["inst-1", "inst-2", "inst-3"] {
        installed(&cluster, p, "job doomed failed");
        let log = audit(&cluster, p);
        let refused = log.lines().find(|l| l.contains("model.install") && l.contains("job doomed")).unwrap();
        assert!(refused.contains("refused") && refused.contains("is not served"), "{refused}");
        assert!(
            !log.lines()
                .any(|l| l.contains("model.install") && l.contains("\"ok\"") && l.contains("job doomed")),
            "{p} served the failed job's model:\n{log}"
        );
    }

    // The operator is told, with a non-zero exit.
    let tls = cluster.pki();
    let (code, _, err) =
        hearth_run(&["job", "watch", &job, "--coordinator", &cluster.coordinator_addr, "--tls-dir", s(&tls)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("job doomed failed at version") && err.contains("keep serving"), "{err}");
    let (code, _, err) = hearth_run(&[
        "job",
        "watch",
        "good",
        "--coordinator",
        &cluster.coordinator_addr,
        "--tls-dir",
        s(&tls),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("job good finished at version 2"), "{err}");
}
