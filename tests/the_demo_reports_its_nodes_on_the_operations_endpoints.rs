//! While `hearth demo` serves, each node's operations endpoints (listed under `"ops"` in its `--json`
//! document) tell the truth: the coordinator's `/metrics` counts exactly the rounds the demo ran, every
//! node is ready, and a participant turns non-ready when its coordinator goes away.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn metric(metrics: &str, name: &str) -> f64 {
    let line = metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .unwrap_or_else(|| panic!("{name} in\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_reports_its_nodes_on_the_operations_endpoints() {
    let (train, test) = clinc_slice(6);
    let dir = tempfile::tempdir().unwrap();
    let (tr, te) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    write_csv(&tr, &train);
    write_csv(&te, &test);
    let work = dir.path().join("work");
    let mut demo = hearth()
        .args(["demo", "--json", "--participants", "3", "--rounds", "2", "--train", s(&tr), "--test", s(&te)])
        // One intent job, so that the round counters match the reported rounds.
        .args(["--tier", "fast"])
        .args(["--dir", s(&work)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The JSON document comes before the serving banner; read stderr until the banner ends.
    let mut stderr = BufReader::new(demo.stderr.take().unwrap());
    let start = Instant::now();
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the demo ended early:\n{seen}");
        seen.push_str(&line);
        if line.contains("Press Ctrl-C") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{seen}");
    }
    assert!(seen.contains("Operations endpoints"), "{seen}");
    // The whole JSON document is on stdout by now: read what is there.
    let mut stdout = demo.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let n = stdout.read(&mut buf).unwrap();
    let mut text = String::from_utf8_lossy(&buf[..n]).into_owned();
    while serde_json::from_str::<serde_json::Value>(&text).is_err() {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "{text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ops = v["ops"].as_object().unwrap_or_else(|| panic!("ops in {v}"));
    assert_eq!(ops.len(), 4, "the coordinator and three participants: {ops:?}");
    let rounds = v["rounds"].as_array().unwrap().len() as f64;

    let coordinator = ops["coordinator"].as_str().unwrap();
    let (status, metrics) = http_get(coordinator, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "hearth_rounds_committed_total"), rounds, "{metrics}");
    assert_eq!(metric(&metrics, "hearth_participants_connected"), 3.0, "{metrics}");
    assert_eq!(metric(&metrics, "hearth_round_duration_seconds_count"), rounds, "{metrics}");
    assert_eq!(metric(&metrics, "hearth_rounds_failed_total"), 0.0, "{metrics}");
    // Nobody dropped out on loopback; the secure rounds' messages went both ways through the coordinator.
    assert_eq!(metric(&metrics, "hearth_round_dropouts_total"), 0.0, "{metrics}");
    let bytes = |direction: &str| {
        metric(&metrics, &format!("hearth_secagg_bytes_total{{direction=\"{direction}\"}}"))
    };
    assert!(bytes("received") > 0.0 && bytes("relayed") > 0.0, "{metrics}");
    // Secure aggregation: every committed round timed each of its phases.
    assert!(
        metrics.contains(&format!("hearth_secagg_phase_duration_seconds_count{{phase=\"0\"}} {rounds}")),
        "{metrics}"
    );
    assert!(metric(&metrics, "hearth_audit_entries") > 0.0, "{metrics}");
    // Every participant registered once: the gRPC method is counted and timed.
    assert!(
        metrics.contains(
            "hearth_request_duration_seconds_count{route=\"/hearth.v1.Coordinator/Register\",method=\"POST\",status=\"2xx\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("hearth_audit_events_total{action=\"round.commit\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(metric(&metrics, "hearth_audit_checkpoint_age_seconds") < 120.0, "{metrics}");
    for (name, addr) in ops {
        let (status, why) = http_get(addr.as_str().unwrap(), "/readyz").await;
        assert_eq!(status, 200, "{name}: {why}");
    }

    // Take the coordinator away: a participant is no longer ready, and says why.
    let cfg = work.join("coordinator.toml");
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f", &format!("coordinator --config {}", cfg.display())])
        .status()
        .unwrap();
    assert!(killed.success(), "the demo's coordinator process");
    let participant = ops.iter().find(|(n, _)| n.as_str() != "coordinator").unwrap().1.as_str().unwrap();
    let mut status = 200;
    let mut why = String::new();
    for _ in 0..100 {
        (status, why) = http_get(participant, "/readyz").await;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("coordinator"), "{why}");
    // SIGTERM: the demo stops its participants on the way out (SIGKILL would leave them running).
    let _ = std::process::Command::new("kill").args(["-TERM", &demo.id().to_string()]).status();
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let _ = demo.wait();
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("--config {}/", work.display())])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "processes left: {}", String::from_utf8_lossy(&left.stdout));
}
