//! `hearth demo --no-serve --json` on your own CSV files: real processes, one JSON document on stdout with
//! the documented keys, accuracies as fractions.

mod common;

use common::*;

#[test]
fn demo_runs_end_to_end_on_bring_your_own_data() {
    let (train, test) = clinc_slice(8);
    let dir = tempfile::tempdir().unwrap();
    let (tr, te) = (dir.path().join("train.csv"), dir.path().join("test.jsonl"));
    write_csv(&tr, &train);
    let jsonl: String = test
        .iter()
        .map(|e| serde_json::json!({"text": e.text, "label": e.label}).to_string() + "\n")
        .collect();
    std::fs::write(&te, jsonl).unwrap();
    let work = dir.path().join("work");
    let out = hearth_ok(&[
        "demo",
        "--no-serve",
        "--json",
        "--participants",
        "3",
        "--rounds",
        "3",
        "--train",
        s(&tr),
        "--test",
        s(&te),
        "--dir",
        s(&work),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stdout is one JSON document: {e}\n{}", String::from_utf8_lossy(&out.stdout))
    });
    assert_eq!(v["participants"], 3);
    assert!(v["dataset"].as_str().unwrap().contains("train.csv"));
    assert!(v["seed"].is_u64());
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3);
    for r in rounds {
        for k in ["round", "participants", "train_loss", "accuracy", "macro_f1"] {
            assert!(!r[k].is_null(), "round row lacks {k}: {r}");
        }
    }
    for section in ["federated", "centralized"] {
        for k in ["accuracy", "macro_f1", "in_scope_accuracy", "oos_recall"] {
            let x = v[section][k].as_f64().unwrap_or_else(|| panic!("{section}.{k} missing"));
            assert!((0.0..=1.0).contains(&x), "{section}.{k} = {x}");
        }
    }
    assert!(v["federated"]["accuracy"].as_f64().unwrap() > 0.6, "{v}");
    // Both intent tiers ran (the encoder tier by default), each with its figures, and so did the cascade
    // of the two that the participants serve; the encoder tier's model's figures are the top level's.
    for tier in ["fast", "encoder", "cascade"] {
        for k in ["accuracy", "macro_f1", "in_scope_accuracy", "oos_recall"] {
            let x = v["tiers"][tier][k].as_f64().unwrap_or_else(|| panic!("tiers.{tier}.{k} missing: {v}"));
            assert!((0.0..=1.0).contains(&x), "tiers.{tier}.{k} = {x}");
        }
    }
    assert_eq!(v["tiers"]["encoder"]["accuracy"], v["federated"]["accuracy"]);
    let share = v["tiers"]["cascade"]["answered_by_fast"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{v}");
    assert_eq!(v["tiers"]["cascade"]["cascade_confidence"], 0.8, "{v}");
    assert!(v["model"]["features"]["encoder"]["model"] == "all-MiniLM-L6-v2", "{v}");
    // Logs went to files and stderr, not stdout.
    assert!(work.join("logs/coordinator.log").exists());
}

#[test]
fn demo_reports_bad_rows_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let tr = dir.path().join("train.csv");
    std::fs::write(&tr, "text,label\nhello,greet\n,greet\nbye,\n").unwrap();
    let out = std::process::Command::new(HEARTH)
        .args(["demo", "--no-serve", "--train", s(&tr), "--test", s(&tr)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3:") && err.contains(":4:"), "{err}");
}

/// `hearth demo --no-serve --json` with four participants on a CSV slice of CLINC150 (`per_label`
/// examples per label), working in `DIR/work`, with `extra` arguments: the JSON report and the work dir.
fn demo_on_a_slice(
    dir: &std::path::Path,
    per_label: usize,
    extra: &[&str],
) -> (serde_json::Value, std::path::PathBuf) {
    let (train, test) = clinc_slice(per_label);
    let (tr, te) = (dir.join("train.csv"), dir.join("test.csv"));
    write_csv(&tr, &train);
    write_csv(&te, &test);
    let work = dir.join("work");
    let mut args =
        vec!["demo", "--no-serve", "--json", "--participants", "4", "--train", s(&tr), "--test", s(&te)];
    args.extend(["--dir", s(&work)]);
    args.extend(extra);
    let out = hearth_ok(&args);
    (serde_json::from_slice(&out.stdout).unwrap(), work)
}

#[test]
fn demo_runs_under_the_national_suite_with_secure_aggregation() {
    // SM2 protocol signatures (keys embedded in the certificates by `hearth pki init --suite national`),
    // SM2 key agreement, SM4-GCM share encryption, SM4-CTR masks, SM3 hashing, SM4-GCM at rest.
    let dir = tempfile::tempdir().unwrap();
    let (v, work) = demo_on_a_slice(dir.path(), 6, &["--suite", "national", "--rounds", "2"]);
    assert_eq!(v["suite"], "national");
    assert_eq!(v["secure_aggregation"], true);
    assert_eq!(v["rounds"].as_array().unwrap().len(), 2);
    assert!(v["rounds"].as_array().unwrap().iter().all(|r| r["participants"] == 4), "{v}");
    assert!(work.join("pki/institution-1.sm2.key").exists(), "SM2 protocol keys were issued");
}

#[test]
fn demo_runs_all_three_tasks_and_reports_each_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(HEARTH)
        .args([
            "demo",
            "--no-serve",
            "--json",
            "--participants",
            "4",
            "--rounds",
            "2",
            // The fast tier alone on all of CLINC150: the encoder tier runs on slices in the other tests.
            "--tier",
            "fast",
            "--dir",
            s(dir.path()),
        ])
        .env("HEARTH_DATA_DIR", data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Intent at the top level, as before other tasks existed.
    assert_eq!(v["dataset"], "clinc150");
    assert_eq!(v["rounds"].as_array().unwrap().len(), 2);
    assert!(v["federated"]["accuracy"].is_f64() && v["centralized"]["macro_f1"].is_f64(), "{v}");
    assert_eq!(v["tiers"].as_object().map(|t| t.len()), Some(1), "only the fast tier: {v}");
    let frac = |x: &serde_json::Value, what: &str| {
        let f = x.as_f64().unwrap_or_else(|| panic!("{what} missing: {v}"));
        assert!((0.0..=1.0).contains(&f), "{what} = {f}");
    };
    for side in ["federated", "centralized"] {
        for k in ["macro_f1", "anger_recall", "anger_precision"] {
            frac(&v["emotion"][side][k], &format!("emotion.{side}.{k}"));
        }
    }
    assert_eq!(v["emotion"]["paper_baseline"]["macro_f1"], 0.64);
    assert_eq!(v["emotion"]["secure_aggregation"], true);
    for side in ["federated", "centralized", "popular"] {
        for k in ["hr_at_10", "ndcg_at_10"] {
            frac(&v["recommend"][side][k], &format!("recommend.{side}.{k}"));
        }
    }
    let names: Vec<&str> = v["recommend"]["institutions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["United Kingdom", "Germany", "France", "Other countries"]);
    for k in ["intent", "emotion", "recommend", "training", "total"] {
        assert!(v["seconds"][k].is_f64(), "seconds.{k}: {v}");
    }
    // Every participant wrote a model file per family, with its card.
    for family in ["intent", "emotion", "recommend"] {
        let f = dir.path().join(format!("participants/institution-2/models/{family}.hearthm"));
        let out = hearth_ok(&["model", "show", s(&f)]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("job:       demo-{family}, version 2")), "{text}");
    }
}

#[test]
fn demo_dp_trains_privately_and_reports_the_epsilon_the_ledger_charged() {
    // The DP run's plumbing end to end on a slice (the accuracy bar on full CLINC150 is measured by
    // `models/tests/clinc150_dp_simulation.rs` and by `hearth demo --dp` itself): a DPO policy installed,
    // DP-SGD rounds under secure aggregation, the charge read back from the budget ledger.
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = demo_on_a_slice(dir.path(), 6, &["--dp", "--rounds", "3"]);
    let p = &v["private"];
    for k in ["accuracy", "macro_f1"] {
        let x = p[k].as_f64().unwrap_or_else(|| panic!("private.{k} missing: {v}"));
        assert!((0.0..=1.0).contains(&x), "private.{k} = {x}");
    }
    let epsilon = p["epsilon"].as_f64().unwrap();
    assert!(epsilon > 0.0 && epsilon <= 8.0, "the ledger charged epsilon {epsilon}");
    let card =
        p["card_epsilon"].as_f64().unwrap_or_else(|| panic!("the final model's card states no epsilon: {p}"));
    assert!((card - epsilon).abs() < 1e-3, "charged epsilon {epsilon}, card epsilon {card}");
    assert_eq!(p["delta"], 1e-5);
    assert_eq!(p["rows"].as_array().unwrap().len(), 3, "{p}");
    assert!(p["rows"].as_array().unwrap().iter().all(|r| r["participants"] == 4), "{p}");
    // Beside it, the non-private run of the same demo.
    assert!(v["federated"]["accuracy"].is_f64(), "{v}");
}
