//! A participant whose keys live in a PKCS#11 token: a fresh SoftHSM2 token per run (its own token
//! directory, initialised with `softhsm2-util`), `backend = "pkcs11"` in the participant's keystore
//! section, the PIN from the environment. It imports data, trains in a real federated job next to a
//! participant on the sealed-file keystore, serves the model; its audit log verifies under the token's
//! audit key; its store holds no training sentence. A KEK rotation inside the token leaves the stored
//! model readable while new rows use the new version; `hearth keys rewrap` moves everything to the new
//! version, after which the old one is destroyed in the token and the participant serves on. Under the national suite, the SM
//! keys are sealed by the token's AES key into a file, as documented.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use hearth_models::dirichlet_split;

const PIN: &str = "1234";

/// The SoftHSM2 module: `HEARTH_PKCS11_MODULE`, or where Debian and a source build put it.
fn module() -> PathBuf {
    if let Some(m) = std::env::var_os("HEARTH_PKCS11_MODULE") {
        return m.into();
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM2 is not installed; scripts/test.sh installs it")
}

/// A SoftHSM2 configuration with its own token directory under `dir`, and a fresh token `label` in it.
fn fresh_token(dir: &Path, label: &str) -> PathBuf {
    let tokens = dir.join("softhsm-tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens.display()),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util (scripts/test.sh installs softhsm2)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    conf
}

fn pkcs11_env(conf: &Path, token: &str, suite: &str) -> Vec<(String, String)> {
    vec![
        ("SOFTHSM2_CONF".into(), conf.display().to_string()),
        ("HEARTH_PARTICIPANT__SUITE".into(), suite.into()),
        ("HEARTH_PARTICIPANT__KEYSTORE__BACKEND".into(), "pkcs11".into()),
        ("HEARTH_PARTICIPANT__KEYSTORE__MODULE".into(), module().display().to_string()),
        ("HEARTH_PARTICIPANT__KEYSTORE__TOKEN_LABEL".into(), token.into()),
        ("HEARTH_PKCS11_PIN".into(), PIN.into()),
    ]
}

fn keys_json(cluster: &Cluster, name: &str, dir: &Path) -> serde_json::Value {
    let out = cluster
        .hearth_as(name, &["keys", "list", "--service", "participant", "--state-dir", s(dir), "--json"]);
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_keys_in_a_softhsm2_token() {
    let (train, _) = clinc_slice(5);
    let split = dirichlet_split(&train, 2, 1.0, 5).unwrap();
    let hsm = tempfile::tempdir().unwrap();
    let conf = fresh_token(hsm.path(), "hearth-inst-1");
    let env = pkcs11_env(&conf, "hearth-inst-1", "international");
    let mut cluster =
        Cluster::start_with(&split.shards, |name| if name == "inst-1" { env.clone() } else { Vec::new() });
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    cluster.run_job("hsm", labels, 2, 2).await;

    let d = cluster.dir.path().to_path_buf();
    let p1 = d.join("data/inst-1");
    // Served, from the token-backed node.
    let app = cluster.tls("inst-1/app");
    let body = serde_json::to_vec(&serde_json::json!({ "text": "what is my balance" })).unwrap();
    // The participant installs the final model just after the job ends: wait for it.
    let mut status = 0;
    for _ in 0..300 {
        let addr = cluster.participant_addr("inst-1");
        status = https(&addr, &app, "POST", "/v1/intent", body.clone()).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    cluster.stop_participant("inst-1");

    // The keys are in the token: nothing sealed on disk, the location says so.
    assert!(!p1.join("keystore.sealed").exists());
    let keys = keys_json(&cluster, "inst-1", &p1);
    assert_eq!(keys["location"], "pkcs11-token", "{keys}");
    let labels: Vec<&str> =
        keys["keys"].as_array().unwrap().iter().map(|k| k["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["audit", "identity-hash", "kek", "tls"]);
    // No private key of this participant exists as a file: its TLS key (which also signs its protocol
    // messages) was made in the token by `hearth pki request --config`, and the CA signed the request.
    assert!(!cluster.pki().join("inst-1.key").exists());
    for f in files_under(&p1) {
        let raw = std::fs::read(&f).unwrap();
        assert!(!raw.windows(11).any(|w| w == b"PRIVATE KEY"), "{} holds a private key", f.display());
    }
    // A key file put back beside the certificate is refused at start, naming it.
    std::fs::copy(cluster.pki().join("inst-2.key"), cluster.pki().join("inst-1.key")).unwrap();
    let d0 = cluster.dir.path();
    let out = hearth()
        .args(["participant"])
        .env("HEARTH_PARTICIPANT__COORDINATOR", &cluster.coordinator_addr)
        .env("HEARTH_PARTICIPANT__LISTEN", "127.0.0.1:0")
        .env("HEARTH_PARTICIPANT__DATA_DIR", &p1)
        .env("HEARTH_PARTICIPANT__TLS__CA", d0.join("pki/ca.pem"))
        .env("HEARTH_PARTICIPANT__TLS__CERT", d0.join("pki/inst-1.pem"))
        .env("HEARTH_PARTICIPANT__TLS__KEY", d0.join("pki/inst-1.key"))
        .envs(env.clone())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is a private key file"), "{err}");
    std::fs::remove_file(cluster.pki().join("inst-1.key")).unwrap();
    let vkey = keys["keys"][0]["vkeys"][0].as_str().unwrap().to_string();

    // Its audit log, signed inside the token, verifies; its store holds no sentence in the clear.
    let export = d.join("inst-1.jsonl");
    hearth_ok(&["audit", "export", "--state-dir", s(&p1), "-o", s(&export)]);
    hearth_ok(&["audit", "verify", s(&export), "--trusted-key", &vkey]);
    let sentence = split.shards[0].iter().map(|e| e.text.as_str()).find(|t| t.len() > 20).unwrap();
    for f in files_under(&p1) {
        let raw = std::fs::read(&f).unwrap();
        assert!(!raw.windows(sentence.len()).any(|w| w == sentence.as_bytes()), "{}", f.display());
    }

    // Rotate the KEK inside the token; the stored model (sealed under v1) still opens after a restart,
    // and rows imported now use v2.
    cluster.hearth_as(
        "inst-1",
        &["keys", "rotate", "--service", "participant", "--state-dir", s(&p1), "--label", "kek"],
    );
    let csv = d.join("more.csv");
    write_csv(&csv, &split.shards[0][..5]);
    cluster.import("inst-1", &csv);
    let stats = cluster.hearth_as("inst-1", &["data", "stats", "--data-dir", s(&p1)]);
    // Five rows and the encoder tier's embedding of each, computed at import.
    assert!(
        stats.contains("sealed under kek@v1") && stats.contains("10 values sealed under kek@v2"),
        "{stats}"
    );
    // v1 cannot be retired while values are sealed under it; after a rewrap none is, and it goes.
    let participant = ["--service", "participant", "--state-dir", s(&p1)];
    let refused = hearth()
        .args(["keys", "retire", "--version", "1"])
        .args(participant)
        .envs(env.clone())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("still sealed under kek@v1"), "{err}");
    cluster.hearth_as("inst-1", &[&["keys", "rewrap", "--batch", "7"][..], &participant[..]].concat());
    let stats = cluster.hearth_as("inst-1", &["data", "stats", "--data-dir", s(&p1)]);
    assert!(!stats.contains("kek@v1") && stats.contains("sealed under kek@v2"), "{stats}");
    cluster.hearth_as("inst-1", &[&["keys", "retire", "--version", "1"][..], &participant[..]].concat());
    let listed = keys_json(&cluster, "inst-1", &p1);
    assert!(listed["kek_wraps"]["kek@v2"].as_u64().unwrap() > 5, "{listed}");
    cluster.start_participant("inst-1");
    let (status, answer) = https(&cluster.participant_addr("inst-1"), &app, "POST", "/v1/intent", body).await;
    assert_eq!(
        status,
        200,
        "the model sealed before the rotation is served after it: {}",
        String::from_utf8_lossy(&answer)
    );
    cluster.stop_participant("inst-1");
    hearth_ok(&["audit", "export", "--state-dir", s(&p1), "-o", s(&export)]);
    hearth_ok(&["audit", "verify", s(&export), "--trusted-key", &vkey]);
    let log = std::fs::read_to_string(&export).unwrap();
    assert!(log.contains("\"action\":\"key.rotated\"") && log.contains("kek@v2"), "rotation audited");
    assert!(log.contains("\"action\":\"key.rewrap\"") && log.contains("\"action\":\"key.retired\""), "{log}");

    // National suite on a token: SM keys sealed by the token's AES key into keystore.sealed.
    let nat = tempfile::tempdir().unwrap();
    let conf2 = fresh_token(nat.path(), "hearth-national");
    let nenv = pkcs11_env(&conf2, "hearth-national", "national");
    let ndir = nat.path().join("node");
    let csv = nat.path().join("few.csv");
    write_csv(&csv, &split.shards[1][..10]);
    let out = hearth()
        .args(["data", "import", "--data-dir", s(&ndir), s(&csv)])
        .envs(nenv.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(ndir.join("keystore.sealed").exists(), "SM keys sealed into a file");
    let out = hearth()
        .args(["keys", "list", "--service", "participant", "--state-dir", s(&ndir), "--json"])
        .envs(nenv.clone())
        .output()
        .unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (keys["location"].as_str(), keys["suite"].as_str()),
        (Some("sealed-by-pkcs11-token"), Some("national")),
        "{keys}"
    );
    // Enrolment on the national suite with a token: the TLS key (P-256) and the SM2 protocol key are made
    // in the keystore, sealed by the token's AES key (the stated exception: no token has SM2), and the
    // request carries the SM2 key with its proof of possession. No key file is written.
    let config = nat.path().join("national.toml");
    std::fs::write(&config, format!("data_dir = {:?}\nsuite = \"national\"\n", ndir)).unwrap();
    let csr = nat.path().join("national.csr");
    let out = hearth()
        .args(["pki", "request", "--config", s(&config), "--service", "participant", "--id", "hospital-n"])
        .args(["--out", s(&csr)])
        .envs(nenv.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let request =
        hearth_crypto::pki::CertRequest::parse_and_verify(&std::fs::read_to_string(&csr).unwrap()).unwrap();
    assert!(request.sm2_public_key().is_some(), "the request carries the SM2 protocol key");
    let out = hearth()
        .args(["keys", "list", "--service", "participant", "--state-dir", s(&ndir), "--json"])
        .envs(nenv)
        .output()
        .unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: Vec<&str> =
        keys["keys"].as_array().unwrap().iter().map(|k| k["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"tls") && labels.contains(&"protocol"), "{keys}");
    for f in files_under(nat.path()) {
        assert!(!f.to_string_lossy().ends_with(".key"), "{}", f.display());
        let raw = std::fs::read(&f).unwrap();
        assert!(!raw.windows(11).any(|w| w == b"PRIVATE KEY"), "{} holds a private key", f.display());
    }
}
