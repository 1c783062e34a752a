//! An institution's whole certificate life, with real processes: a fourth institution joins a running
//! consortium by request (its key made on its own side, the CA signing only the request), the member
//! list grows to take it, and it contributes to a securely aggregated job. The CA then revokes its
//! certificate: the coordinator picks the new list up by itself, closes the institution's stream, its
//! next handshakes fail (at the coordinator, and at another participant once that one has fetched the
//! list from the coordinator), and the next job's roster leaves it out. It renews with a new key, the
//! member list takes the renewed certificate, and only the renewed institution restarts: the next job
//! has it back among the contributors.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use hearth_models::dirichlet_split;
use hearth_proto::v1;

/// How many participants `job`'s last committed round aggregated.
async fn contributors(cluster: &Cluster, job: &str) -> u32 {
    let mut op = cluster.client("operator").await;
    let detail = op.get_job(v1::JobRef { job_id: job.into() }).await.unwrap().into_inner();
    detail.rounds.last().expect("a committed round").participants
}

/// Whether a request as `tls` to the mTLS endpoint at `addr` fails (the handshake, or the first request
/// on the connection: under TLS 1.3 the server judges the client's certificate after the client is done).
async fn refused(addr: &str, tls: &hearth_transport::TlsMaterial) -> bool {
    let cfg = hearth_transport::client_config(tls).unwrap();
    let attempt = async {
        let ch = hearth_transport::connect(addr, "localhost", cfg).await.ok()?;
        let mut c = v1::coordinator_client::CoordinatorClient::new(ch);
        c.get_status(v1::StatusRequest {}).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(20), attempt).await.ok().flatten().is_none()
}

/// Whether an HTTPS request as `tls` to a participant's endpoint fails.
async fn https_refused(addr: &str, tls: &hearth_transport::TlsMaterial) -> bool {
    use http_body_util::{BodyExt, Full};
    let mut cfg = (*hearth_transport::client_config(tls).unwrap()).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
        let stream = connector.connect(name, tcp).await.ok()?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method("GET")
            .uri("/v1/health")
            .header("host", "localhost")
            .body(Full::new(bytes::Bytes::new()))
            .ok()?;
        let resp = send.send_request(req).await.ok()?;
        resp.into_body().collect().await.ok()
    };
    tokio::time::timeout(Duration::from_secs(20), attempt).await.ok().flatten().is_none()
}

/// A member list of `names`' certificates (version `version`), signed by `signers`, installed as the
/// consortium's members.json.
fn install_members(pki: &Path, version: u64, names: &[&str], signers: &[&str]) {
    let certs: Vec<String> = names.iter().map(|n| s(&pki.join(format!("{n}.pem"))).to_string()).collect();
    let version_text = version.to_string();
    let mut args = vec!["members", "list", "--version", &version_text, "--threshold", "3"];
    args.extend(certs.iter().map(String::as_str));
    let list = hearth_ok(&args).stdout;
    let toml = pki.join(format!("members-v{version}.toml"));
    std::fs::write(&toml, list).unwrap();
    let signed = pki.join(format!("members-v{version}.json"));
    for signer in signers {
        hearth_ok(&[
            "members",
            "sign",
            "--list",
            s(&toml),
            "--as",
            s(&pki.join(signer)),
            "--out",
            s(&signed),
        ]);
    }
    std::fs::rename(&signed, pki.join("members.json")).unwrap();
}

/// Everything `dir`'s audit log holds, including the entries of the last second that the next checkpoint
/// has not signed yet (this test runs in a few seconds; the log signs a checkpoint each second).
fn audit_log(dir: &Path, out: &Path) -> String {
    hearth_ok(&["audit", "export", "--state-dir", s(dir), "-o", s(out), "--include-unsigned"]);
    std::fs::read_to_string(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_institution_enrols_by_request_is_revoked_and_renewed() {
    let (train, _) = clinc_slice(6);
    let split = dirichlet_split(&train, 4, 1.0, 11).unwrap();
    let labels = labels_of(&train);
    let mut cluster = Cluster::start(&split.shards[..3]);
    let pki = cluster.pki();
    let d = cluster.dir.path().to_path_buf();

    // inst-4 makes its key on its own side and sends only a request; the CA checks the identity it
    // verified and signs. The CA never had the key.
    let csr = d.join("inst-4.csr");
    hearth_ok(&[
        "pki",
        "request",
        "--id",
        "inst-4",
        "--key-out",
        s(&pki.join("inst-4.key")),
        "--out",
        s(&csr),
    ]);
    let wrong = hearth_run(&[
        "pki",
        "sign",
        "--dir",
        s(&pki),
        "--request",
        s(&csr),
        "--role",
        "participant",
        "--id",
        "inst-5",
    ]);
    assert_ne!(wrong.0, 0, "a request for inst-4 is not signed as inst-5: {}", wrong.2);
    hearth_ok(&[
        "pki",
        "sign",
        "--dir",
        s(&pki),
        "--request",
        s(&csr),
        "--role",
        "participant",
        "--id",
        "inst-4",
    ]);
    let ca_log = audit_log(&pki.join("ca-log"), &d.join("ca-log.jsonl"));
    assert!(ca_log.contains("by request"), "the issuance log records the signing");
    // The consortium's members (threshold 2 of 3 in force) take inst-4 in.
    install_members(&pki, 2, &["inst-1", "inst-2", "inst-3", "inst-4"], &["inst-1", "inst-2", "inst-3"]);
    let csv = d.join("inst-4.csv");
    write_csv(&csv, &split.shards[3]);
    cluster.import("inst-4", &csv);
    cluster.start_participant("inst-4");

    // grpc.health.v1 answers on the coordinator's and a participant's gRPC ports (over mTLS).
    for (addr, service) in [
        (cluster.coordinator_addr.clone(), "hearth.v1.Coordinator"),
        (cluster.participant_addr("inst-1"), "hearth.v1.Inference"),
    ] {
        let cfg = hearth_transport::client_config(&cluster.tls("operator")).unwrap();
        let ch = hearth_transport::connect(&addr, "localhost", cfg).await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
        for name in ["", service] {
            let reply = health
                .check(tonic_health::pb::HealthCheckRequest { service: name.into() })
                .await
                .unwrap_or_else(|e| panic!("{addr} {name:?}: {e}"))
                .into_inner();
            assert_eq!(reply.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
        }
    }
    cluster.run(intent_job("before", labels.clone(), 1, 4)).await;
    assert_eq!(contributors(&cluster, "before").await, 4);

    // The CA revokes inst-4's certificate. The coordinator reads pki/crl.pem (beside its CA) by itself.
    let old_tls = cluster.tls("inst-4");
    hearth_ok(&[
        "pki",
        "revoke",
        "--dir",
        s(&pki),
        "--cert",
        s(&pki.join("inst-4.pem")),
        "--reason",
        "key-compromise",
    ]);
    let mut gone = false;
    for _ in 0..100 {
        if refused(&cluster.coordinator_addr, &old_tls).await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "the coordinator refuses the revoked certificate at the handshake");
    assert!(!refused(&cluster.coordinator_addr, &cluster.tls("inst-1")).await, "the others still get in");
    // `hearth keys list` shows the certificate's expiry and that the CA's list revokes it.
    let config = cluster.participant_config("inst-4");
    let listed = hearth_ok(&["keys", "list", "--config", s(&config), "--service", "participant"]).stdout;
    let listed = String::from_utf8_lossy(&listed);
    assert!(listed.contains("certificate participant:inst-4") && listed.contains("REVOKED"), "{listed}");
    let json =
        hearth_ok(&["keys", "list", "--config", s(&config), "--service", "participant", "--json"]).stdout;
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["certificate"]["revoked"], true, "{json}");
    assert!((88..=90).contains(&json["certificate"]["days_left"].as_i64().unwrap()), "{json}");

    // The next job runs without it: the roster leaves it out, and the three others contribute.
    cluster.run(intent_job("during", labels.clone(), 1, 3)).await;
    assert_eq!(contributors(&cluster, "during").await, 3);
    // inst-1 fetched the list from the coordinator for that round: it refuses inst-4 too.
    assert!(https_refused(&cluster.participant_addr("inst-1"), &old_tls).await);
    // The operations endpoints say so: the coordinator and inst-1 hold list #1 revoking one certificate,
    // their own certificates are not revoked and expire in about 90 days; inst-4, cut off from the
    // coordinator, is not ready, the others are.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for node in ["coordinator", "inst-1"] {
        let (status, metrics) = http_get(&cluster.ops_addr(node), "/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        let value = |name: &str| -> f64 {
            let line = metrics
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in {metrics}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(value("hearth_revocation_list_number "), 1.0, "{node}: {metrics}");
        assert_eq!(value("hearth_revoked_certificates "), 1.0, "{node}: {metrics}");
        assert_eq!(value("hearth_certificate_revoked{"), 0.0, "{node}: {metrics}");
        let days = (value("hearth_certificate_expiry_timestamp_seconds{") - now) / 86_400.0;
        assert!((89.0..=90.1).contains(&days), "{node}: {days} days");
        assert_eq!(http_get(&cluster.ops_addr(node), "/readyz").await.0, 200, "{node}");
    }
    // The coordinator counted the revoked certificate's handshakes apart from other refusals.
    let (_, metrics) = http_get(&cluster.ops_addr("coordinator"), "/metrics").await;
    let revoked = metrics
        .lines()
        .find(|l| l.starts_with("hearth_connections_refused_total{reason=\"revoked\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(revoked.is_some_and(|n| n >= 1.0), "{metrics}");
    let (status, why) = http_get(&cluster.ops_addr("inst-4"), "/readyz").await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("coordinator"), "{why}");
    assert!(!https_refused(&cluster.participant_addr("inst-1"), &cluster.tls("inst-2/app")).await);

    // Renewal: a new key and request on inst-4's side; the CA renews for the same identity.
    cluster.stop_participant("inst-4");
    let csr2 = d.join("inst-4-2.csr");
    let key2 = d.join("inst-4-2.key");
    hearth_ok(&["pki", "request", "--id", "inst-4", "--key-out", s(&key2), "--out", s(&csr2)]);
    let renewed = d.join("inst-4-renewed.pem");
    let revoked_renewal = hearth_run(&[
        "pki",
        "renew",
        "--dir",
        s(&pki),
        "--cert",
        s(&pki.join("inst-4.pem")),
        "--request",
        s(&csr2),
    ]);
    assert_ne!(revoked_renewal.0, 0, "a revoked certificate is not renewed, it is signed anew");
    hearth_ok(&[
        "pki",
        "sign",
        "--dir",
        s(&pki),
        "--request",
        s(&csr2),
        "--role",
        "participant",
        "--id",
        "inst-4",
        "--out",
        s(&renewed),
    ]);
    std::fs::rename(&renewed, pki.join("inst-4.pem")).unwrap();
    std::fs::rename(&key2, pki.join("inst-4.key")).unwrap();
    install_members(&pki, 3, &["inst-1", "inst-2", "inst-3", "inst-4"], &["inst-1", "inst-2", "inst-3"]);
    // Only inst-4 restarts.
    cluster.start_participant("inst-4");
    cluster.run(intent_job("after", labels, 1, 4)).await;
    assert_eq!(contributors(&cluster, "after").await, 4);

    // The coordinator's log has the list taken, the refusal of the revoked certificate and the
    // cohort without it; inst-1's has the list relayed to it.
    let coordinator = audit_log(&d.join("coordinator"), &d.join("coordinator.jsonl"));
    assert!(coordinator.contains("\"action\":\"revocations.update\""), "list taken");
    assert!(
        coordinator.contains("\"action\":\"cert.revoked\"") || coordinator.contains("connection.refused")
    );
    let inst1 = audit_log(&cluster.data_dir("inst-1"), &d.join("inst-1.jsonl"));
    assert!(
        inst1.contains("\"action\":\"revocations.update\"") && inst1.contains("relayed by the coordinator")
    );
    assert!(ca_log.contains("cert.issue"));
    let ca_log = audit_log(&pki.join("ca-log"), &d.join("ca-log.jsonl"));
    assert!(ca_log.contains("\"action\":\"cert.revoke\""), "the revocation is in the CA's log");
}
