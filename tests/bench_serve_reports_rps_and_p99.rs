//! `hearth bench serve --json` end to end, briefly: a participant trained on the datasets in data/ serves
//! `POST /v1/messages` with all three models to `wrk` on its loopback API-key listener, and the report
//! carries `rps` and `p99_ms` with every answer a 2xx; then `POST /v1/intent` on the mTLS port with the
//! fast tier, the encoder tier and the cascade asked for. (The throughput bar itself is measured with the
//! default 10 s run and reported in README.md; this checks the command, not the machine.)

mod common;

use common::*;

#[test]
fn bench_serve_reports_rps_and_p99() {
    let out = hearth()
        .args([
            "bench",
            "serve",
            "--seconds",
            "2",
            "--connections",
            "4",
            "--customers",
            "500",
            "--intent-train",
            "600",
            "--json",
        ])
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
    // POST /v1/intent on the mTLS port, each tier asked for: the fast tier's model gave every answer of
    // the first row, the encoder tier's every answer of the second, and the cascade some share.
    let rows = v["intent"].as_array().unwrap();
    let tiers: Vec<&str> = rows.iter().map(|r| r["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["fast", "encoder", "cascade"], "{v}");
    for r in rows {
        assert!(r["requests"].as_u64().unwrap() > 0 && r["p99_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!((&r["non_2xx"], &r["socket_errors"]), (&0.into(), &0.into()), "{r}");
    }
    assert_eq!(rows[0]["answered_by_fast"], 1.0, "{v}");
    assert_eq!(rows[1]["answered_by_fast"], 0.0, "{v}");
    assert!((0.0..=1.0).contains(&rows[2]["answered_by_fast"].as_f64().unwrap()), "{v}");
    assert!(
        rows[0]["rps"].as_f64().unwrap() > rows[1]["rps"].as_f64().unwrap(),
        "hashing a query is cheaper than embedding it: {v}"
    );
}
