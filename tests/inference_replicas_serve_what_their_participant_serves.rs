//! Stateless inference replicas (`hearth inference`): two replicas of one institution, started in empty
//! directories, serve the intent model its participant serves, answer as it does, follow it to a newer
//! job's model and back after `hearth model rollback`, and keep serving while the participant is down;
//! they write nothing. The recommender stays with the participant (503 `not_served_here`). Only the
//! institution's own inference certificates may fetch models (`hearth.v1.ModelSource`), and the
//! participant's audit log records every model handed out and every refusal; another institution's app
//! is refused by the replica too.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hearth_proto::v1;
use hearth_proto::v1::model_source_client::ModelSourceClient;

struct Replica {
    child: Child,
    addr: String,
    ops: String,
    dir: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PIN: &str = "4321";

fn softhsm_module() -> String {
    ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("SoftHSM2 is not installed; scripts/test.sh installs it")
        .to_string()
}

/// A replica key made in a SoftHSM2 token (`hearth pki request --config` with a `[keystore]` naming
/// it) and certified by the CA: the key never exists as a file. Returns the replica's key arguments
/// and environment.
fn token_key(c: &Cluster, institution: &str) -> (Vec<String>, Vec<(String, String)>) {
    let d = c.dir.path().join("replica-hsm");
    let tokens = d.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = d.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let init = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "replicas", "--so-pin", "5678", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util (scripts/test.sh installs softhsm2)");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let env = vec![
        ("SOFTHSM2_CONF".to_string(), s(&conf).to_string()),
        ("HEARTH_PKCS11_PIN".to_string(), PIN.to_string()),
    ];
    let keys = d.join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "data_dir = {:?}\n[keystore]\nbackend = \"pkcs11\"\nmodule = {:?}\ntoken_label = \"replicas\"\n",
            d.join("keys"),
            softhsm_module()
        ),
    )
    .unwrap();
    let csr = d.join("replicas.csr");
    let out = hearth()
        .args(["pki", "request", "--config", s(&keys), "--service", "participant", "--role", "inference"])
        .args(["--id", "replicas-hsm", "--institution", institution, "--out", s(&csr)])
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cert = d.join("replicas.pem");
    hearth_ok(&[
        "pki",
        "sign",
        "--dir",
        s(&c.pki()),
        "--request",
        s(&csr),
        "--role",
        "inference",
        "--id",
        "replicas-hsm",
        "--institution",
        institution,
        "--out",
        s(&cert),
    ]);
    assert!(files_under(&d).iter().all(|f| !f.to_string_lossy().ends_with(".key")), "no key file");
    let args = ["--cert", s(&cert), "--pkcs11-module", &softhsm_module(), "--token-label", "replicas"];
    (args.iter().map(|a| a.to_string()).collect(), env)
}

fn replica(c: &Cluster, institution: &str, n: usize, hsm: bool) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let ready = c.dir.path().join(format!("replica-{institution}-{n}.addr"));
    let pki = c.pki();
    let (key_args, env) = if hsm {
        token_key(c, institution)
    } else {
        (
            vec![
                "--cert".to_string(),
                s(&pki.join(institution).join("inference.pem")).to_string(),
                "--key".to_string(),
                s(&pki.join(institution).join("inference.key")).to_string(),
            ],
            Vec::new(),
        )
    };
    let child = hearth()
        .current_dir(dir.path())
        .args(["inference", "--ready-file", s(&ready), "--poll-seconds", "1"])
        .args(["--participant", &c.participant_addr(institution), "--participant-name", "localhost"])
        .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .args(["--ca", s(&pki.join("ca.pem"))])
        .args(&key_args)
        .envs(env)
        .env("HEARTH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log(&c.dir.path().join(format!("replica-{institution}-{n}.log"))))
        .spawn()
        .unwrap();
    let addr = wait_file(&ready);
    let ops = wait_file(&ready.with_extension("ops"));
    Replica { child, addr, ops, dir }
}

/// (job, version) of the intent model served at `addr`.
async fn served(addr: &str, app: &hearth_transport::TlsMaterial) -> (String, u64) {
    let (status, v) = https_json(addr, app, "GET", "/v1/health", vec![]).await;
    assert_eq!(status, 200, "{v}");
    let m = &v["models"]["intent"];
    (m["job_id"].as_str().unwrap_or_default().to_string(), m["version"].as_u64().unwrap_or(0))
}

/// Waits (up to 30 s) until `addr` serves `job`'s intent model.
async fn wait_serving(addr: &str, app: &hearth_transport::TlsMaterial, job: &str) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = served(addr, app).await;
        if now.0 == job {
            return now;
        }
        assert!(Instant::now() < deadline, "{addr} never served {job}; it serves {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn intent(addr: &str, app: &hearth_transport::TlsMaterial, text: &str) -> serde_json::Value {
    let (status, v) = call_json(addr, app, "POST", "/v1/intent", serde_json::json!({ "text": text })).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn fetch_as(c: &Cluster, who: &str, participant: &str) -> tonic::Status {
    let cfg = hearth_transport::client_config(&c.tls(who)).unwrap();
    let ch = hearth_transport::connect(&c.participant_addr(participant), "localhost", cfg).await.unwrap();
    let r = ModelSourceClient::new(ch)
        .served_model(v1::ServedModelRequest { family: "intent".into(), have_sha256: String::new() })
        .await;
    match r {
        Ok(_) => panic!("{who} was handed {participant}'s model"),
        Err(status) => status,
    }
}

fn audit(c: &Cluster, name: &str) -> String {
    std::fs::read_to_string(c.data_dir(name).join("audit/entries.jsonl")).unwrap()
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[tokio::test(flavor = "multi_thread")]
async fn inference_replicas_serve_what_their_participant_serves() {
    let (train, _) = clinc_slice(6);
    let labels = labels_of(&train);
    let shards: Vec<Vec<_>> = (0..3).map(|i| train.iter().skip(i).step_by(3).cloned().collect()).collect();
    let mut c = Cluster::start(&shards);
    c.run_job("intent-first", labels.clone(), 2, 3).await;
    let participant = c.participant_addr("inst-1");
    let app = c.tls("inst-1/app");
    let first = wait_serving(&participant, &app, "intent-first").await;

    // One replica with its key in a file, one with its key in a PKCS#11 token.
    let replicas = [replica(&c, "inst-1", 1, false), replica(&c, "inst-1", 2, true)];
    for r in &replicas {
        assert_eq!(wait_serving(&r.addr, &app, "intent-first").await, first);
    }
    // The same model answers the same way, on the participant and on each replica.
    let text = "how do I transfer money to my savings account";
    let direct = intent(&participant, &app, text).await;
    for r in &replicas {
        let v = intent(&r.addr, &app, text).await;
        assert_eq!(
            (&v["label"], &v["confidence"], &v["top_k"]),
            (&direct["label"], &direct["confidence"], &direct["top_k"])
        );
        assert_eq!(v["model"]["job_id"], "intent-first");
    }
    let r = &replicas[0];
    // The recommender stays with the participant.
    let (status, v) =
        call_json(&r.addr, &app, "POST", "/v1/recommend", serde_json::json!({"items": ["85123A"]})).await;
    assert_eq!((status, v["error"]["reason"].as_str()), (503, Some("not_served_here")), "{v}");
    // Another institution's app is refused by the replica as by the participant.
    let (status, v) =
        call_json(&r.addr, &c.tls("inst-2/app"), "POST", "/v1/intent", serde_json::json!({"text": text}))
            .await;
    assert_eq!(status, 403, "{v}");
    // Ready, and its metrics say what it serves.
    assert_eq!(http_get(&r.ops, "/readyz").await.0, 200);
    let (_, metrics) = http_get(&r.ops, "/metrics").await;
    assert!(metrics.contains("hearth_replica_source_up 1"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "hearth_replica_model_version{{family=\"intent\",job=\"intent-first\"}} {}",
            first.1
        )),
        "{metrics}"
    );
    // It fetched the intent cascade's fast stage too (here the same fast-tier model).
    assert!(
        metrics.contains(&format!(
            "hearth_replica_model_version{{family=\"intent-fast\",job=\"intent-first\"}} {}",
            first.1
        )),
        "{metrics}"
    );

    // A newer job's model, once the participant serves it, is swapped in.
    let mut second = intent_job("intent-second", labels.clone(), 1, 3);
    second.promotion_tolerance_points = -1.0;
    c.run(second).await;
    wait_serving(&participant, &app, "intent-second").await;
    for r in &replicas {
        wait_serving(&r.addr, &app, "intent-second").await;
    }
    // The institution rolls back: the replicas follow it to the older model.
    let config = c.participant_config("inst-1");
    let out =
        hearth().args(["model", "rollback", "--family", "intent", "--config", s(&config)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_serving(&participant, &app, "intent-first").await;
    for r in &replicas {
        assert_eq!(wait_serving(&r.addr, &app, "intent-first").await, first);
    }

    // Only the institution's own replicas may fetch models; each refusal is audited.
    let refused = fetch_as(&c, "inst-1/app", "inst-1").await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let refused = fetch_as(&c, "inst-2/inference", "inst-1").await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("inst-2"), "{refused:?}");
    let log = audit(&c, "inst-1");
    let fetches: Vec<&str> = log.lines().filter(|l| l.contains("model.fetch")).collect();
    for who in ["inference:inference@inst-1", "inference:replicas-hsm@inst-1"] {
        let n = fetches.iter().filter(|l| l.contains("\"ok\"") && l.contains(who)).count();
        assert!(n >= 3, "{who} fetched three models:\n{}", fetches.join("\n"));
    }
    assert!(
        fetches.iter().any(|l| l.contains("denied") && l.contains("app:app@inst-1")),
        "{}",
        fetches.join("\n")
    );
    assert!(
        fetches.iter().any(|l| l.contains("denied") && l.contains("inference:inference@inst-2")),
        "{}",
        fetches.join("\n")
    );

    // The participant goes down: the replicas keep serving the model they have, and say so.
    c.kill_participant("inst-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = http_get(&r.ops, "/metrics").await;
        if metrics.contains("hearth_replica_source_up 0") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never noticed its participant is down:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(intent(&r.addr, &app, text).await["model"]["job_id"], "intent-first");
    assert_eq!(http_get(&r.ops, "/readyz").await.0, 200);
    // Stateless: nothing was written where they ran.
    for r in &replicas {
        assert!(
            is_empty(r.dir.path()),
            "a replica wrote into its directory: {:?}",
            files_under(r.dir.path())
        );
    }
}
