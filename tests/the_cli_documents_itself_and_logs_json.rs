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

#[test]
fn services_log_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    hearth_ok(&["pki", "init", "--dir", s(&pki), "--participants", "bank-a"]);
    let ready = dir.path().join("coordinator.addr");
    let log = dir.path().join("coordinator.log");
    let mut child = hearth()
        .args(["--log-format", "json", "coordinator", "--ready-file", s(&ready)])
        .env("HEARTH_COORDINATOR__LISTEN", "127.0.0.1:0")
        .env("HEARTH_COORDINATOR__STATE_DIR", dir.path().join("state"))
        .env("HEARTH_COORDINATOR__TLS__CA", pki.join("ca.pem"))
        .env("HEARTH_COORDINATOR__TLS__CERT", pki.join("coordinator.pem"))
        .env("HEARTH_COORDINATOR__TLS__KEY", pki.join("coordinator.key"))
        .stdout(Stdio::null())
        .stderr(common::log(&log))
        .spawn()
        .unwrap();
    wait_file(&ready);
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
    let (train, _) = common::clinc_slice(4);
    let labels = common::labels_of(&train);
    let shards: Vec<Vec<_>> = (0..3).map(|i| train.iter().skip(i).step_by(3).cloned().collect()).collect();
    let c = common::Cluster::start_with(&shards, |_| vec![("HEARTH_LOG_FORMAT".into(), "json".into())]);
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
