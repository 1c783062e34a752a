//! A small federated job on real processes; then the coordinator's audit log is exported with
//! `hearth audit export`, verifies with `hearth audit verify` (exit 0), and every kind of tampering with
//! a copy is caught with a non-zero exit naming the entry: a modified, deleted, reordered or inserted
//! entry, a log truncated and re-extended, and a tree head signed by another key. Along the way: the
//! participants' stores hold no training sentence in the clear, `query`, `report` and a witness's
//! `cosign` work on the same export, and a witness refuses a rolled-back log.

mod common;

use std::path::Path;

use common::*;
use hearth_audit::export::{checkpoint_line, entry_line, parse_entry_line, ExportHeader};
use hearth_audit::merkle::leaf_hash;
use hearth_audit::{Action, Checkpoint, Entry, Event, Outcome, SignedCheckpoint, SoftwareSigner};
use hearth_models::dirichlet_split;

/// The export split into its header, checkpoint lines and entry lines.
struct Lines {
    header: ExportHeader,
    checkpoints: Vec<String>,
    entries: Vec<String>,
}

impl Lines {
    fn read(path: &Path) -> Lines {
        let text = std::fs::read_to_string(path).unwrap();
        let mut it = text.lines();
        let header = ExportHeader::parse_line(it.next().unwrap().as_bytes()).unwrap();
        let checkpoints = it.by_ref().take(header.checkpoints as usize).map(str::to_string).collect();
        let entries = it.map(str::to_string).collect();
        Lines { header, checkpoints, entries }
    }

    fn write(&self, path: &Path) {
        let mut h = self.header.clone();
        h.checkpoints = self.checkpoints.len() as u64;
        h.entries = self.entries.len() as u64;
        let mut out = String::from_utf8(h.encode_line()).unwrap();
        for l in self.checkpoints.iter().chain(&self.entries) {
            out.push_str(l);
            out.push('\n');
        }
        std::fs::write(path, out).unwrap();
    }

    fn entry(&self, i: usize) -> Entry {
        parse_entry_line(self.entries[i].as_bytes()).unwrap().0
    }
}

/// A forged entry line with a correct leaf hash (what an attacker who rewrites the file can compute).
fn forged(suite: hearth_crypto::SuiteId, seq: u64, time_ms: u64, detail: &str) -> String {
    let e = Entry::new(seq, time_ms, Event::new("system", Action::JobSubmit, Outcome::Ok).detail(detail))
        .unwrap();
    let line = entry_line(&e, &leaf_hash(suite, &e.canonical()));
    String::from_utf8(line).unwrap().trim_end().to_string()
}

/// Runs `hearth audit verify --json` and returns (exit code, first bad entry, first problem, stdout).
fn verify(export: &Path, key: &str, extra: &[&str]) -> (i32, Option<u64>, String, String) {
    let mut args = vec!["audit", "verify", s(export), "--trusted-key", key, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = hearth_run(&args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let first = v["first_bad_entry"].as_u64();
    let problem = v["first_problem"].as_str().unwrap_or_default().to_string();
    (code, first, problem, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_verifies_and_tampering_is_caught() {
    let (train, _) = clinc_slice(5);
    let split = dirichlet_split(&train, 2, 1.0, 3).unwrap();
    let mut cluster = Cluster::start(&split.shards);
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    cluster.run_job("audited", labels, 3, 2).await;

    // Encryption at rest: no training sentence of a participant appears in any of its files.
    for (i, shard) in split.shards.iter().enumerate() {
        let sentence = shard.iter().map(|e| e.text.as_str()).find(|t| t.len() > 20).unwrap();
        let files = files_under(&cluster.dir.path().join("data").join(format!("inst-{}", i + 1)));
        assert!(files.iter().any(|f| f.ends_with("participant.redb")), "{files:?}");
        for f in files {
            // The running participant writes temporary files and renames them into place: one listed a
            // moment ago may be gone, and then holds nothing at rest.
            let Ok(raw) = std::fs::read(&f) else { continue };
            assert!(
                !raw.windows(sentence.len()).any(|w| w == sentence.as_bytes()),
                "{sentence:?} in {}",
                f.display()
            );
        }
    }

    // A client that never completes a TLS handshake is refused and recorded by the transport's hook; a
    // participant's certificate calling another participant's inference is denied and recorded.
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(&cluster.coordinator_addr).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }
    let body = br#"{"text":"what is my balance"}"#.to_vec();
    let (status, _) =
        https(&cluster.participant_addr("inst-1"), &cluster.tls("inst-2"), "POST", "/v1/intent", body).await;
    assert_eq!(status, 403);

    let d = cluster.dir.path().to_path_buf();
    let coord = d.join("coordinator");
    // An auditor keeps a tree head from before the stop, as a witness or a participant would; the
    // background thread signs within a second of the last entry.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let head_before = d.join("head-before.txt");
    let head = hearth_ok(&["audit", "checkpoint", "--state-dir", s(&coord)]).stdout;
    std::fs::write(&head_before, &head).unwrap();
    cluster.stop_coordinator();

    // The log's key, from the keystore (the operator gives it to the auditor out of band).
    let listing = hearth_ok(&["keys", "list", "--state-dir", s(&coord), "--json"]).stdout;
    let listing: serde_json::Value = serde_json::from_slice(&listing).unwrap();
    let audit_key = listing["keys"].as_array().unwrap().iter().find(|k| k["label"] == "audit").unwrap();
    let key = audit_key["vkeys"][0].as_str().unwrap().to_string();
    assert!(listing["keys"].as_array().unwrap().iter().any(|k| k["label"] == "kek"));

    // Without the passphrase, or with a wrong one, the keystore stays shut and the error says why.
    let bare = |pass: Option<&str>| {
        let mut c = std::process::Command::new(HEARTH);
        c.args(["keys", "list", "--state-dir", s(&coord)]).env_remove("HEARTH_KEYSTORE_PASSPHRASE");
        if let Some(p) = pass {
            c.env("HEARTH_KEYSTORE_PASSPHRASE", p);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(bare(None).contains("export HEARTH_KEYSTORE_PASSPHRASE"), "{}", bare(None));
    // Without a trusted key a verification proves nothing: refused unless trust on first use is asked.
    let export0 = d.join("export-tofu.jsonl");
    hearth_ok(&["audit", "export", "--state-dir", s(&coord), "-o", s(&export0)]);
    let (code, _, err) = hearth_run(&["audit", "verify", s(&export0)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no --trusted-key") && err.contains("hearth keys vkeys"), "{err}");
    let (code, out, err) = hearth_run(&["audit", "verify", s(&export0), "--trust-on-first-use"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("proves only that the export is internally consistent"), "{err}");
    // The public verifier keys need no passphrase.
    let out = std::process::Command::new(HEARTH)
        .args(["keys", "vkeys", "--state-dir", s(&coord)])
        .env_remove("HEARTH_KEYSTORE_PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().next(), Some(key.as_str()));
    assert!(bare(Some("not the passphrase")).contains("wrong passphrase"));

    let export = d.join("export.jsonl");
    hearth_ok(&["audit", "export", "--state-dir", s(&coord), "-o", s(&export)]);
    let (code, first, problem, out) = verify(&export, &key, &["--checkpoint", s(&head_before)]);
    assert_eq!((code, first), (0, None), "{problem}\n{out}");
    let human = hearth_ok(&["audit", "verify", s(&export), "--trusted-key", &key]).stdout;
    let human = String::from_utf8_lossy(&human);
    assert!(human.starts_with("OK: audit log hearth/coordinator/coordinator"), "{human}");
    // A summary by default (checkpoints counted), every checkpoint with --detail.
    assert!(
        human.lines().count() <= 4 && human.contains("checkpoints: ") && human.contains("newest: "),
        "{human}"
    );
    let detail = hearth_ok(&["audit", "verify", s(&export), "--trusted-key", &key, "--detail"]).stdout;
    let detail = String::from_utf8_lossy(&detail);
    assert!(detail.contains("cosigned by") && !detail.contains("checkpoints: "), "{detail}");

    let lines = Lines::read(&export);
    let text = lines.entries.join("\n");
    for action in [
        "node.start",
        "key.generated",
        "participant.register",
        "job.submit",
        "round.commit",
        "job.end",
        "connection.refused",
        "node.stop",
    ] {
        assert!(text.contains(&format!("\"action\":\"{action}\"")), "{action} missing:\n{text}");
    }
    let n = lines.entries.len();
    let k = n / 2;
    let suite = lines.header.suite;
    let tampered = d.join("tampered.jsonl");
    let check = |lines: &Lines, what: &str, expect: &dyn Fn(Option<u64>) -> bool, extra: &[&str]| {
        lines.write(&tampered);
        let (code, first, problem, out) = verify(&tampered, &key, extra);
        assert_eq!(code, 1, "{what} not caught:\n{out}");
        assert!(expect(first), "{what}: first bad entry {first:?}, first problem {problem}\n{out}");
    };

    // Modified entry (its recorded leaf kept): named exactly.
    let mut m = Lines::read(&export);
    m.entries[k] = m.entries[k].replacen("\"detail\":\"", "\"detail\":\"edited ", 1);
    check(&m, "modified entry", &|f| f == Some(k as u64), &[]);

    // Deleted entry.
    let mut del = Lines::read(&export);
    del.entries.remove(k);
    check(&del, "deleted entry", &|f| f == Some(k as u64), &[]);

    // Reordered entries.
    let mut re = Lines::read(&export);
    re.entries.swap(k, k + 1);
    check(&re, "reordered entries", &|f| f == Some(k as u64), &[]);

    // Inserted entry, with a correct leaf hash and the sequence number of its position.
    let mut ins = Lines::read(&export);
    let t = ins.entry(k).time_ms();
    ins.entries.insert(k, forged(suite, k as u64, t, "forged job"));
    check(&ins, "inserted entry", &|f| f.is_some_and(|f| f <= k as u64 + 1), &[]);

    // Truncated at k and re-extended with forged entries (correct leaf hashes), keeping the checkpoints,
    // which the forger cannot re-sign.
    let mut tr = Lines::read(&export);
    tr.entries.truncate(k);
    let t = tr.entry(k - 1).time_ms();
    for i in k..n {
        tr.entries.push(forged(suite, i as u64, t, "rewritten history"));
    }
    check(&tr, "truncated and re-extended", &|f| f.is_some_and(|f| f <= k as u64), &[]);
    // Same, with every checkpoint past the cut dropped too: the auditor's earlier head catches it.
    let cut = tr.checkpoints.iter().filter(|c| {
        let cp = hearth_audit::export::parse_checkpoint_line(c.as_bytes()).unwrap();
        cp.checkpoint().size() <= k as u64
    });
    tr.checkpoints = cut.cloned().collect();
    check(&tr, "re-extended, later heads dropped", &|f| f.is_some_and(|f| f <= k as u64), &[]);
    check(
        &tr,
        "re-extended, auditor's head",
        &|f| f.is_some_and(|f| f <= k as u64),
        &["--checkpoint", s(&head_before), "--allow-unsigned"],
    );

    // A tree head signed by another key under the log's name: refused, and nothing vouches for entries.
    let mut other = Lines::read(&export);
    let impostor = SoftwareSigner::generate(lines.header.origin.clone(), suite).unwrap();
    let cp = Checkpoint::new(lines.header.origin.clone(), n as u64, [7; 32]).unwrap();
    let forged_head =
        String::from_utf8(checkpoint_line(&SignedCheckpoint::sign(cp, &impostor).unwrap())).unwrap();
    other.checkpoints = vec![forged_head.trim_end().to_string()];
    lines_check_rejected(&other, &tampered, &key);

    // Queries and the compliance report on the verified export.
    let q = hearth_ok(&[
        "audit",
        "query",
        s(&export),
        "--trusted-key",
        &key,
        "--action",
        "participant.*",
        "--json",
    ])
    .stdout;
    let q = String::from_utf8(q).unwrap();
    assert!(q.lines().count() >= 2 && q.lines().all(|l| l.contains("participant.register")), "{q}");
    let table = String::from_utf8(
        hearth_ok(&["audit", "query", s(&export), "--tenant", "inst-1", "--from", "2020-01-01"]).stdout,
    )
    .unwrap();
    assert!(table.contains("participant:inst-1") && !table.contains("participant:inst-2"), "{table}");
    let (html, json) = (d.join("report.html"), d.join("report.json"));
    // The template alone is refused: its placeholders are the operator's to state.
    let (code, _, err) = hearth_run(&["audit", "report", s(&export), "--json", s(&json)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not complete") && err.contains("controller.name") && err.contains("legal_basis"),
        "{err}"
    );
    // A record for the coordinator: the training activity, every placeholder stated.
    let template =
        String::from_utf8(hearth_ok(&["audit", "report", "--print-ropa-template"]).stdout).unwrap();
    let (training, _) = template.split_once("\n[[activities]]\nname = \"Answering").unwrap();
    let ropa = d.join("ropa.toml");
    std::fs::write(&ropa, training.replace("\"CHANGE ME", "\"stated by the operator; was: CHANGE ME"))
        .unwrap();
    hearth_ok(&[
        "audit",
        "report",
        s(&export),
        "--ropa",
        s(&ropa),
        "--trusted-key",
        &key,
        "--html",
        s(&html),
        "--json",
        s(&json),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["audit_log"]["verified"], true);
    assert_eq!(r["operations"]["total"].as_u64(), Some(n as u64));
    assert!(r["record_of_processing"]["activities"][0]["security_measures"].as_array().unwrap().len() >= 3);
    // The job above ran two participants, plainly averaged: the report says so, from the log.
    assert_eq!(
        (r["facts"]["plain_rounds"].as_u64(), r["facts"]["secure_rounds"].as_u64()),
        (Some(3), Some(0))
    );
    let recipients = r["record_of_processing"]["activities"][0]["recipients"].to_string();
    assert!(recipients.contains("in the clear in 3 rounds"), "{recipients}");
    assert!(!r["key_operations"].as_array().unwrap().is_empty());
    assert!(std::fs::read_to_string(&html).unwrap().contains("Record of processing activities"));

    // A witness cosigns the head; an auditor sees the cosignature; a rolled-back log is refused.
    let witness = d.join("witness");
    let cosigned = d.join("cosigned.txt");
    let wkey = hearth_ok(&[
        "audit",
        "cosign",
        s(&export),
        "--log-key",
        &key,
        "--state-dir",
        s(&witness),
        "-o",
        s(&cosigned),
    ])
    .stdout;
    let wkey = String::from_utf8(wkey).unwrap().trim().to_string();
    let out = hearth_ok(&[
        "audit",
        "verify",
        s(&export),
        "--trusted-key",
        &key,
        "--checkpoint",
        s(&cosigned),
        "--witness-key",
        &wkey,
    ])
    .stdout;
    assert!(
        String::from_utf8_lossy(&out).contains("cosigned by [hearth/witness/witness/witness]"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let mut short = Lines::read(&export);
    short.entries.truncate(k);
    short.checkpoints.retain(|c| {
        hearth_audit::export::parse_checkpoint_line(c.as_bytes()).unwrap().checkpoint().size() <= k as u64
    });
    let rolled = d.join("rolled-back.jsonl");
    short.write(&rolled);
    let (code, _, err) = hearth_run(&[
        "audit",
        "cosign",
        s(&rolled),
        "--log-key",
        &key,
        "--state-dir",
        s(&witness),
        "-o",
        s(&cosigned),
    ]);
    assert_eq!(code, 1, "a rollback was cosigned: {err}");
    assert!(err.contains("refusing to cosign"), "{err}");

    // A participant's own log verifies too, under its own key.
    let p1 = d.join("data/inst-1");
    cluster.stop_participant("inst-1");
    let plist: serde_json::Value =
        serde_json::from_slice(&hearth_ok(&["keys", "list", "--state-dir", s(&p1), "--json"]).stdout)
            .unwrap();
    let pkey = plist["keys"].as_array().unwrap().iter().find(|k| k["label"] == "audit").unwrap()["vkeys"][0]
        .as_str()
        .unwrap()
        .to_string();
    let pexport = d.join("inst-1.jsonl");
    hearth_ok(&["audit", "export", "--state-dir", s(&p1), "-o", s(&pexport)]);
    let (code, _, problem, _) = verify(&pexport, &pkey, &[]);
    assert_eq!(code, 0, "{problem}");
    let ptext = std::fs::read_to_string(&pexport).unwrap();
    for action in ["data.import", "update.upload", "model.install", "inference.call", "node.stop"] {
        assert!(
            ptext.contains(&format!("\"action\":\"{action}\"")),
            "{action} missing in the participant's log"
        );
    }
}

fn lines_check_rejected(lines: &Lines, tampered: &Path, key: &str) {
    lines.write(tampered);
    let (code, _, problem, out) = verify(tampered, key, &[]);
    assert_eq!(code, 1, "a head signed by another key was accepted:\n{out}");
    assert!(problem.contains("rejected") || problem.contains("no checkpoint"), "{problem}");
    assert!(out.contains("no trusted log key signed the checkpoint"), "{out}");
}
