//! What an operator installs beside the binary and feeds to a log collector: shell completions and
//! manual pages generated from the command's own definition, and logs as JSON lines on request.

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn completions_name_every_command_and_manual_pages_cover_each_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = hearth_ok(&["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["hearth", "rewrap", "retire", "request", "revoke", "kit"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let page = String::from_utf8(hearth_ok(&["man"]).stdout).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH hearth"), "{}", &page[..200.min(page.len())]);
    let dir = tempfile::tempdir().unwrap();
    hearth_ok(&["man", "--out-dir", s(dir.path())]);
    for name in
        ["hearth.1", "hearth-pki.1", "hearth-pki-request.1", "hearth-keys-rewrap.1", "hearth-audit-verify.1"]
    {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|_| panic!("{name}"));
        assert!(text.contains(".TH"), "{name}");
    }
    let rewrap = std::fs::read_to_string(dir.path().join("hearth-keys-rewrap.1")).unwrap();
    assert!(rewrap.contains("batch"), "the page documents the command's options");
}

/// A PKI for one institution in `dir`/pki and a coordinator on it, started with the global options
/// `global`, its stderr to `stderr`; once it listens, the process and its address.
fn coordinator(dir: &std::path::Path, global: &[&str], stderr: Stdio) -> (std::process::Child, String) {
    let pki = dir.join("pki");
    hearth_ok(&["pki", "init", "--dir", s(&pki), "--participants", "bank-a"]);
    let ready = dir.join("coordinator.addr");
    let child = hearth()
        .args(global)
        .args(["coordinator", "--ready-file", s(&ready)])
        .env("HEARTH_COORDINATOR__LISTEN", "127.0.0.1:0")
        .env("HEARTH_COORDINATOR__STATE_DIR", dir.join("state"))
        .env("HEARTH_COORDINATOR__TLS__CA", pki.join("ca.pem"))
        .env("HEARTH_COORDINATOR__TLS__CERT", pki.join("coordinator.pem"))
        .env("HEARTH_COORDINATOR__TLS__KEY", pki.join("coordinator.key"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let addr = wait_file(&ready);
    (child, addr)
}

#[test]
fn services_log_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("coordinator.log");
    let (mut child, _) = coordinator(dir.path(), &["--log-format", "json"], common::log(&log));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains("listening"))),
        "{text}"
    );
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{text}");
}

/// With JSON logs, what a participant logs while it works on a round carries the round's span (job and
/// round), so a log collector can group a round's lines across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rounds_log_lines_carry_its_span() {
    let (train, _) = clinc_slice(4);
    let labels = labels_of(&train);
    let shards: Vec<Vec<_>> = (0..3).map(|i| train.iter().skip(i).step_by(3).cloned().collect()).collect();
    let c = Cluster::start_with(&shards, |_| vec![("HEARTH_LOG_FORMAT".into(), "json".into())]);
    c.run_job("spans", labels, 2, 3).await;
    let text = std::fs::read_to_string(c.dir.path().join("inst-1.log")).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    for round in [1, 2] {
        assert!(
            lines.iter().any(|l| l["span"]["name"] == "round"
                && l["span"]["job"] == "spans"
                && l["span"]["round"] == round),
            "no line of round {round} carries its span:\n{text}"
        );
    }
}

/// `--otlp-endpoint`: the coordinator sends its spans, as OTLP/HTTP JSON, to a collector (here a small
/// HTTP server that keeps what it is sent): an operator's call shows up as a `request` span with its
/// gRPC method, in a resource named `hearth-coordinator`, with well-formed ids and times.
#[test]
fn spans_go_to_an_opentelemetry_collector_when_asked() {
    use std::io::{BufRead, BufReader, Read, Write};
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<(String, serde_json::Value)>();
    std::thread::spawn(move || {
        for conn in collector.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
            let _ = tx.send((request_line, serde_json::from_slice(&body).unwrap()));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (mut child, addr) = coordinator(dir.path(), &["--otlp-endpoint", &endpoint], Stdio::null());
    hearth_ok(&["job", "list", "--coordinator", &addr, "--tls-dir", s(&pki)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((line, body)) = rx.recv_timeout(left) else { break None };
        assert!(line.starts_with("POST /v1/traces "), "{line}");
        let resource = &body["resourceSpans"][0];
        assert_eq!(resource["resource"]["attributes"][0]["value"]["stringValue"], "hearth-coordinator");
        let spans = resource["scopeSpans"][0]["spans"].as_array().unwrap().clone();
        if let Some(span) = spans.into_iter().find(|sp| {
            sp["name"] == "request"
                && sp["attributes"].as_array().unwrap().iter().any(|a| {
                    a["key"] == "route"
                        && a["value"]["stringValue"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("/hearth.v1.Coordinator/"))
                })
        }) {
            break Some(span);
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let span = found.expect("the operator's call was exported as a request span");
    let hex_of = |v: &serde_json::Value, n: usize| {
        v.as_str().is_some_and(|s| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(hex_of(&span["traceId"], 32) && hex_of(&span["spanId"], 16), "{span}");
    let time = |k: &str| span[k].as_str().unwrap().parse::<u64>().unwrap();
    assert!(time("endTimeUnixNano") >= time("startTimeUnixNano"), "{span}");
}
