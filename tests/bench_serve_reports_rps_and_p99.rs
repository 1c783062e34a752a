//! `hearth bench serve --json` end to end, briefly: a participant trained on the datasets in data/ serves
//! `POST /v1/messages` with all three models to `wrk` on its loopback API-key listener, and the report
//! carries `rps` and `p99_ms` with every answer a 2xx. (The throughput bar itself is measured with the
//! default 10 s run and reported in README.md; this checks the command, not the machine.)

mod common;

use common::*;

#[test]
fn bench_serve_reports_rps_and_p99() {
    let out = hearth()
        .args(["bench", "serve", "--seconds", "2", "--connections", "4", "--customers", "500", "--json"])
        .env("HEARTH_DATA_DIR", data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["rps"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["p99_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["non_2xx"], 0, "{v}");
    assert_eq!(v["models"], serde_json::json!({"intent": true, "emotion": true, "recommend": true}), "{v}");
}
