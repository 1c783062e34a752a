//! The consortium CA's issuance log: `hearth pki init` and `hearth pki issue` record every certificate
//! they issue (its SHA-256) in a signed, append-only audit log beside the CA, before writing its files.
//! An institution witnesses the log (cosigns a head only if it extends the last one it cosigned), and an
//! auditor verifies the export offline: a certificate the operator mints for the CA shows up there, and an
//! export with its entry removed no longer verifies.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use hearth_crypto::digest::content_digest;

/// Every certificate file under `dir`, with its SHA-256 (hex).
fn certificates(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(certificates(&path));
        } else if path.extension().is_some_and(|e| e == "pem") {
            let pem = std::fs::read_to_string(&path).unwrap();
            let der = hearth_crypto::pki::cert_der_from_pem(&pem).unwrap();
            out.push((path, hex::encode(content_digest(&der))));
        }
    }
    out
}

/// The `cert.issue` entries of an export: (certificate SHA-256, detail).
fn issued(export: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(export)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["entry"]["action"] == "cert.issue")
        .map(|v| {
            let e = &v["entry"];
            (e["objects"][0].as_str().unwrap().to_string(), e["detail"].as_str().unwrap().to_string())
        })
        .collect()
}

fn cosign(export: &Path, vkey: &str, witness: &Path, out: &Path) -> std::process::Output {
    hearth()
        .args(["audit", "cosign", s(export), "--log-key", vkey, "--state-dir", s(witness), "-o", s(out)])
        .output()
        .unwrap()
}

#[test]
fn every_certificate_the_ca_issues_is_in_its_witnessed_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = d.join("pki");
    hearth_ok(&["pki", "init", "--dir", s(&pki), "--participants", "bank-a,airline-b,retail-c"]);
    let vkey = format!("@{}", s(&pki.join("ca-log.vkey")));
    let log = pki.join("ca-log");

    // Every certificate `pki init` wrote is in the log, and the log verifies under its key.
    let export = d.join("ca-log-1.jsonl");
    hearth_ok(&["audit", "export", "--state-dir", s(&log), "-o", s(&export)]);
    hearth_ok(&["audit", "verify", s(&export), "--trusted-key", &vkey]);
    let first = issued(&export);
    let certs = certificates(&pki);
    // Per institution its participant, app, DPO, agent and inference replicas; the CA, coordinator and
    // four consortium roles.
    assert_eq!(certs.len(), 3 * 5 + 6, "{certs:?}");
    for (path, sha) in &certs {
        assert!(first.iter().any(|(s, _)| s == sha), "{} is not in the issuance log", path.display());
    }
    assert_eq!(first.len(), certs.len(), "one entry per certificate: {first:?}");

    // An institution witnesses the head.
    let witness = d.join("bank-a-witness");
    let head1 = d.join("ca-head-1.txt");
    let out = cosign(&export, &vkey, &witness, &head1);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wkey = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // The operator mints a participant certificate: it is in the log, and the witnessed head covers it.
    hearth_ok(&["pki", "issue", "--dir", s(&pki), "--role", "participant", "--id", "minted"]);
    let export2 = d.join("ca-log-2.jsonl");
    hearth_ok(&["audit", "export", "--state-dir", s(&log), "-o", s(&export2)]);
    let minted = certificates(&pki).into_iter().find(|(p, _)| p.ends_with("minted.pem")).unwrap().1;
    let second = issued(&export2);
    assert!(
        second
            .iter()
            .any(|(sha, detail)| *sha == minted && detail.contains("participant certificate \"minted\"")),
        "{second:?}"
    );
    let head2 = d.join("ca-head-2.txt");
    let out = cosign(&export2, &vkey, &witness, &head2);
    assert!(
        out.status.success(),
        "the grown log extends the witnessed head: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = hearth_ok(&[
        "audit",
        "verify",
        s(&export2),
        "--trusted-key",
        &vkey,
        "--checkpoint",
        s(&head2),
        "--witness-key",
        &wkey,
    ]);
    let text = String::from_utf8_lossy(&verified.stdout);
    // The CA's own entry, every certificate pki init issued, and the one minted since.
    let size = first.len() + 2;
    assert!(
        text.contains(&format!("size {size}: Matches; cosigned by [hearth/witness/bank-a-witness/witness]")),
        "{text}"
    );

    // An export with the minted certificate's entry taken out does not verify, and the witness refuses it.
    let hidden = d.join("ca-log-hidden.jsonl");
    let full = std::fs::read_to_string(&export2).unwrap();
    let kept: Vec<&str> = full.lines().filter(|l| !l.contains(&minted)).collect();
    std::fs::write(&hidden, kept.join("\n") + "\n").unwrap();
    let out = hearth().args(["audit", "verify", s(&hidden), "--trusted-key", &vkey]).output().unwrap();
    assert!(!out.status.success(), "an export hiding a certificate verified");
    let out = cosign(&hidden, &vkey, &witness, &d.join("ca-head-hidden.txt"));
    assert!(!out.status.success(), "a witness cosigned an export hiding a certificate");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to cosign"));

    // A second CA is not made over the first (its log would be forged from the start).
    let out = hearth().args(["pki", "init", "--dir", s(&pki), "--participants", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a CA"));
}
