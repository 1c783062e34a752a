//! `hearth bench serve --json` end to end, briefly: a participant trained on the datasets in data/ serves
//! `POST /v1/messages` with all three models to the bench's load generator over both paths (mTLS as the
//! app certificate, and the loopback API-key listener), and the report carries a row per path with
//! `rps` and `p99_ms`, every answer a 2xx, and the ratio of the two; then `POST /v1/intent` on the mTLS
//! port with the fast tier, the encoder tier and the cascade asked for. (The throughput bars themselves
//! are measured with the default runs and reported in README.md; this checks the command, not the
//! machine.)

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
            "--runs",
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
    assert_eq!(v["models"], serde_json::json!({"intent": true, "emotion": true, "recommend": true}), "{v}");
    let rows = v["rows"].as_array().unwrap();
    let key = |r: &serde_json::Value| {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        (s("endpoint"), s("path"), s("backend"), s("tier"))
    };
    let keys: Vec<_> = rows.iter().map(key).collect();
    let expected: Vec<_> = [
        ("POST /v1/messages", "mtls", "-"),
        ("POST /v1/messages", "api-key", "-"),
        ("POST /v1/intent", "mtls", "fast"),
        ("POST /v1/intent", "mtls", "encoder"),
        ("POST /v1/intent", "mtls", "cascade"),
    ]
    .iter()
    .map(|(e, p, t)| (e.to_string(), p.to_string(), "embedded".to_string(), t.to_string()))
    .collect();
    assert_eq!(keys, expected, "{v}");
    for r in rows {
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        assert!(r["rps"].as_f64().unwrap() > 0.0 && r["rps_min"].as_f64() <= r["rps_max"].as_f64(), "{r}");
        let ms = |k: &str| r[k].as_f64().unwrap();
        assert!(0.0 < ms("p50_ms") && ms("p50_ms") <= ms("p99_ms") && ms("p99_ms") <= ms("max_ms"), "{r}");
        assert_eq!((&r["non_2xx"], &r["socket_errors"]), (&0.into(), &0.into()), "{r}");
    }
    // Two runs of each path for /v1/messages, one for each tier of /v1/intent.
    assert!(rows[..2].iter().all(|r| r["runs"] == 2) && rows[2..].iter().all(|r| r["runs"] == 1), "{v}");
    let ratio = v["mtls_to_api_key"].as_f64().unwrap();
    assert!(ratio > 0.0 && v["mtls_to_api_key_min"].as_f64().unwrap() <= ratio, "{v}");
    // The fast tier's model gave every answer of the fast row, the encoder tier's every answer of the
    // encoder row, and the cascade some share.
    assert_eq!(rows[2]["answered_by_fast"], 1.0, "{v}");
    assert_eq!(rows[3]["answered_by_fast"], 0.0, "{v}");
    assert!((0.0..=1.0).contains(&rows[4]["answered_by_fast"].as_f64().unwrap()), "{v}");
    assert!(
        rows[2]["rps"].as_f64().unwrap() > rows[3]["rps"].as_f64().unwrap(),
        "hashing a query is cheaper than embedding it: {v}"
    );
}
