//! The HTTP API a participant serves is the one its OpenAPI document describes: `hearth demo` trains
//! every family and serves; the document it serves passes the OpenAPI 3.1 validator; then
//! `scripts/fuzz-api.sh` (Schemathesis) sends schema-valid and schema-invalid requests to every
//! operation and finds no server error, no status or body outside the document, and no schema-valid
//! request refused. The checkers come from `scripts/install-api-tools.sh`, which `./scripts/test.sh` runs.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The demo, stopped with Ctrl-C (so it stops its participants) when the test ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the demo's banner and returns the first participant's address.
fn serving_address(log: &Path, demo: &mut Demo) -> String {
    let start = Instant::now();
    loop {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(log) {
            f.read_to_string(&mut text).unwrap();
        }
        if text.contains("Press Ctrl-C to stop.") {
            let line = text
                .lines()
                .find(|l| l.contains(": https://") && l.contains("/v1/{intent,emotion,recommend}"))
                .unwrap_or_else(|| panic!("no participant address in the banner:\n{text}"));
            let addr = line.split("https://").nth(1).unwrap().split('/').next().unwrap();
            return addr.replace("127.0.0.1", "localhost");
        }
        if let Ok(Some(status)) = demo.0.try_wait() {
            panic!("hearth demo exited ({status}) before serving:\n{text}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "hearth demo did not serve in 15 minutes:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fuzzed_api_answers_every_request_as_documented() {
    let bin = api_tools();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let log = dir.path().join("demo.log");
    let child = hearth()
        .args(["demo", "--participants", "3", "--rounds", "2", "--plain", "--dir", s(&work)])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start hearth demo");
    let mut demo = Demo(child);
    let addr = serving_address(&log, &mut demo);
    let pki = work.join("pki");

    // The document it serves is valid OpenAPI 3.1.
    let app = hearth_transport::TlsMaterial::load(
        &pki.join("ca.pem"),
        &pki.join("institution-1/app.pem"),
        &pki.join("institution-1/app.key"),
    )
    .unwrap();
    let local = addr.replace("localhost", "127.0.0.1");
    let (status, doc) = call_json(&local, &app, "GET", "/v1/openapi.json", serde_json::Value::Null).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let v = Command::new(bin.join("openapi-spec-validator")).arg(&file).output().unwrap();
    assert!(
        v.status.success(),
        "the served OpenAPI document is not valid:\n{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // Customers and a workflow run that exist, so that the fuzzer sees history, erasure and runs too.
    let mut customers = Vec::new();
    let mut runs = Vec::new();
    let mut conversations = Vec::new();
    for (i, text) in ["where is my parcel?", "This is the third time you charged me twice! Unacceptable!"]
        .iter()
        .enumerate()
    {
        let m = serde_json::json!({"channel": "app", "identifiers": {"phone": format!("+4477009001{i:02}")},
            "text": text, "order_id": format!("A-{i}")});
        let (status, v) = call_json(&local, &app, "POST", "/v1/messages", m).await;
        assert_eq!(status, 200, "{v}");
        customers.push(v["customer_id"].as_str().unwrap().to_string());
        conversations.extend(v["conversation_id"].as_str().map(str::to_string));
        runs.extend(
            v["workflows"].as_array().unwrap().iter().map(|w| w["run_id"].as_str().unwrap().to_string()),
        );
    }

    // Every operation, fuzzed, answers as documented.
    let fuzz = || {
        let out = Command::new(root().join("scripts/fuzz-api.sh"))
            .args([addr.as_str(), s(&pki), "institution-1"])
            .env("HEARTH_FUZZ_CUSTOMERS", customers.join(" "))
            .env("HEARTH_FUZZ_RUNS", runs.join(" "))
            .env("HEARTH_FUZZ_CONVERSATIONS", conversations.join(" "))
            .output()
            .unwrap();
        let report =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), report)
    };
    // What the nodes said while being fuzzed: refused connections and panics name a cause.
    let said = || {
        let mut said = std::fs::read_to_string(&log).unwrap_or_default();
        for node in files_under(&work.join("logs")) {
            said += &std::fs::read_to_string(node).unwrap_or_default();
        }
        let lines: Vec<&str> = said
            .lines()
            .filter(|l| ["WARN", "ERROR", "panicked", "refused"].iter().any(|w| l.contains(w)))
            .collect();
        lines.join("\n")
    };
    let (mut ok, mut report) = fuzz();
    // A run whose only errors are connection errors on the client's side (no check failed, the nodes
    // logged nothing) is run once more, and shown: one was seen in CI and never reproduced here.
    if !ok && report.contains("Network Error") && !report.contains("FAILURES") && said().is_empty() {
        eprintln!(
            "the API fuzzer's run had a connection error only; running it again. The first run:\n{report}"
        );
        (ok, report) = fuzz();
    }
    if !ok {
        panic!("the API fuzzer found failures:\n{report}\nthe demo's warnings and errors:\n{}", said());
    }
    // The app's six operations, the agent's six, the data protection officer's five: all seventeen.
    for selected in ["6 selected / 17 total", "6 selected / 16 total", "5 selected / "] {
        assert!(report.contains(selected), "the fuzzer did not test {selected} operations:\n{report}");
    }
    assert!(!conversations.is_empty(), "the angry message queued a conversation for the agents");
    assert!(report.matches(" generated, ").count() == 3 && !report.contains("failed"), "{report}");
    assert!(!report.contains("Missing test data"), "the known ids were not used:\n{report}");
    drop(demo);
}
