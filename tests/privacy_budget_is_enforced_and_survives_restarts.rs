//! The DPO's privacy policy over the real coordinator: set with a signature checked against the DPO's
//! certificate; while it is in force a job that is not differentially private is refused, DP jobs reserve
//! their worst case against every institution's budget, parallel submissions cannot overspend, and what is
//! reserved survives a restart of the coordinator. A job is accounted at the policy's delta or refused;
//! the same policy set twice is one version; a retired policy requires nothing, and a policy may cover
//! only some model families. Every decision is in the audit log.

mod common;

use common::*;
use hearth_models::IntentSpec;
use hearth_proto::v1::{self, privacy_client::PrivacyClient};
use tonic::Code;

const POLICY: &str = r#"
[tenants.inst-1.families.intent]
epsilon = 8.0
delta = 1e-5
privacy_unit = "record"
clipping_norm = 1.0
min_participants = 3

[tenants.inst-2.families.intent]
epsilon = 8.0
delta = 1e-5
privacy_unit = "record"
clipping_norm = 1.0
min_participants = 3

[tenants.inst-3.families.intent]
epsilon = 8.0
delta = 1e-5
privacy_unit = "record"
clipping_norm = 1.0
min_participants = 3
"#;

const DECLARED_RECORDS: u64 = 1_000;

/// The noise multiplier for which one job (50 rounds at sampling rate 0.1, rounds of up to 100
/// participants, as `dp_job` describes) costs epsilon 3 at delta 1e-6, as the coordinator accounts it.
fn sigma_for_epsilon_3(spec: &IntentSpec) -> f64 {
    let base = hearth_models::DpParams {
        clip_norm: 1.0,
        sampling_rate: 0.1,
        noise_multiplier: 1.0,
        rounds: 50,
        min_survivors: 3,
        bias_scale: 1.0,
    };
    let shape = hearth_models::RoundShape::for_job(1.0, DECLARED_RECORDS, 100, spec.num_params() as u64, 32);
    let target = hearth_models::PrivacyTarget { epsilon: 3.0, delta: 1e-6 };
    hearth_models::DpConfig::plan(base, target, shape).unwrap().config.noise_multiplier()
}

fn dp_job(id: &str, spec: &IntentSpec, noise_multiplier: f64) -> v1::JobSpec {
    v1::JobSpec {
        job_id: id.into(),
        model_spec_json: spec.to_json().into(),
        rounds: 50,
        train: Some(v1::TrainParams { local_epochs: 1, learning_rate: 1.0, batch_size: 8, l2: 0.0, seed: 1 }),
        min_participants: 3,
        round_deadline_s: 60,
        // More participants than exist: the jobs are accepted (or not) but never start a round.
        wait_for_participants: 100,
        privacy: Some(v1::PrivacySpec {
            family: "intent".into(),
            clipping_norm: 1.0,
            noise_multiplier,
            sampling_rate: 0.1,
            privacy_unit: "record".into(),
            min_survivors: 3,
            declared_records: DECLARED_RECORDS,
            // The policy's delta_per_charge (delta / 10): the delta the charge and the card state epsilon at.
            delta: 1e-6,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cli_conn<'a>(cluster: &'a Cluster, pki: &'a str) -> Vec<&'a str> {
    vec!["--coordinator", &cluster.coordinator_addr, "--coordinator-name", "localhost", "--tls-dir", pki]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_budget_is_enforced_and_survives_restarts() {
    let (train, _) = clinc_slice(4);
    let shards: Vec<Vec<hearth_models::Example>> =
        (0..3).map(|i| train.iter().skip(i).step_by(3).cloned().collect()).collect();
    let mut cluster = Cluster::start(&shards);
    let pki = cluster.pki();
    let pki = s(&pki).to_string();
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let spec = IntentSpec::new(labels, Default::default()).unwrap();
    // Let the three participants register: their institutions are the tenants a job is charged to.
    let mut op = cluster.client("operator").await;
    for _ in 0..100 {
        if op.get_status(v1::StatusRequest {}).await.unwrap().into_inner().participants.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // No policy yet: nothing to show.
    let mut args = vec!["budget", "show"];
    args.extend(cli_conn(&cluster, &pki));
    let out = std::process::Command::new(HEARTH).args(&args).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no privacy policy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Only a DPO may set the policy, and only with a signature that verifies with their certificate.
    let channel = |name: &str| {
        let cfg = hearth_transport::client_config(&cluster.tls(name)).unwrap();
        let addr = cluster.coordinator_addr.clone();
        async move { hearth_transport::connect(&addr, "localhost", cfg).await.unwrap() }
    };
    let mut as_operator = PrivacyClient::new(channel("operator").await);
    let err = as_operator
        .set_policy(v1::SetPolicyRequest { policy_toml: POLICY.into(), signature: vec![0; 64].into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let mut as_dpo = PrivacyClient::new(channel("dpo").await);
    let err = as_dpo
        .set_policy(v1::SetPolicyRequest { policy_toml: POLICY.into(), signature: vec![7; 64].into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("signature"), "{err}");
    let policy_file = cluster.dir.path().join("policy.toml");
    std::fs::write(&policy_file, POLICY).unwrap();
    let mut args = vec!["budget", "set", "--policy", s(&policy_file)];
    args.extend(cli_conn(&cluster, &pki));
    hearth_ok(&args);
    // The same text again changes nothing: no second version.
    let again = hearth_ok(&args);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("policy version 1 unchanged"), "{said}");

    // A job accounted at another delta than the policy's would be charged another epsilon than its card
    // states: refused, naming the delta to use.
    let mut other_delta = dp_job("delta-job", &spec, 1.0);
    other_delta.privacy.as_mut().unwrap().delta = 1e-5;
    let err = op.submit_job(other_delta).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("delta_per_charge 1e-6") && err.message().contains("privacy.delta = 1e-6"),
        "{err}"
    );

    // A job that is not differentially private is refused while the policy is in force.
    let err =
        op.submit_job(v1::JobSpec { privacy: None, ..dp_job("plain-job", &spec, 1.0) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("differentially private"), "{err}");

    // Each job costs about epsilon 3 (calibrated with the accountant): of twelve submitted at once,
    // exactly two fit an epsilon-8 budget.
    let sigma = sigma_for_epsilon_3(&spec);
    let mut handles = Vec::new();
    for i in 0..12 {
        let (mut c, job) = (op.clone(), dp_job(&format!("dp-{i}"), &spec, sigma));
        handles.push(tokio::spawn(async move { c.submit_job(job).await }));
    }
    let mut accepted = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
                assert!(e.message().contains("remain"), "the refusal says what remains: {e}");
            }
        }
    }
    assert_eq!(accepted, 2, "two jobs of epsilon 3 fit a budget of 8");

    let show = |cluster: &Cluster| {
        let mut args = vec!["budget", "show", "--json"];
        let conn = cli_conn(cluster, &pki);
        args.extend(conn);
        let out = hearth_ok(&args);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = show(&cluster);
    let families = report["families"].as_array().unwrap();
    assert_eq!(families.len(), 3);
    for f in families {
        let reserved = f["reserved"]["epsilon"].as_f64().unwrap();
        assert!((reserved - 6.0).abs() < 0.1, "two jobs of about 3 reserved: {f}");
        assert_eq!(f["charges"].as_array().unwrap().len(), 2, "{f}");
    }
    // The coordinator's /metrics states the same budgets as `hearth budget show`.
    let (status, metrics) = http_get(&cluster.ops_addr("coordinator"), "/metrics").await;
    assert_eq!(status, 200);
    for f in families {
        for (metric, field) in [
            ("hearth_privacy_reserved_epsilon", "reserved"),
            ("hearth_privacy_remaining_epsilon", "remaining"),
        ] {
            let labels = format!(
                "{metric}{{institution=\"{}\",family=\"{}\"}} ",
                f["tenant"].as_str().unwrap(),
                f["family"].as_str().unwrap()
            );
            let line = metrics
                .lines()
                .find(|l| l.starts_with(&labels))
                .unwrap_or_else(|| panic!("{labels} in {metrics}"));
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            let shown = f[field]["epsilon"].as_f64().unwrap();
            assert!((value - shown).abs() < 1e-9, "{metric}: {value} vs {shown}");
        }
    }

    // The ledger survives a restart of the coordinator: still no room for a third job.
    cluster.kill_coordinator();
    cluster.start_coordinator();
    let report2 = show(&cluster);
    assert_eq!(report["families"], report2["families"], "the ledger is unchanged across the restart");
    let mut op = cluster.client("operator").await;
    let err = op.submit_job(dp_job("dp-after-restart", &spec, sigma)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");

    // Retired, the policy requires nothing: a job without DP is accepted; the ledger stays.
    let mut args = vec!["budget", "retire"];
    args.extend(cli_conn(&cluster, &pki));
    let out = hearth_ok(&args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy version 1 retired"));
    op.submit_job(v1::JobSpec { privacy: None, ..dp_job("plain-after-retire", &spec, 1.0) }).await.unwrap();
    // A policy that covers intent only lets an emotion job train without DP, and still requires it of
    // intent jobs.
    let scoped = format!("private_model_families = [\"intent\"]\n{POLICY}");
    std::fs::write(&policy_file, scoped).unwrap();
    let mut args = vec!["budget", "set", "--policy", s(&policy_file)];
    args.extend(cli_conn(&cluster, &pki));
    let out = hearth_ok(&args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy version 2 now in force"));
    assert_eq!(show(&cluster)["families"], report2["families"], "retiring and setting again keep the ledger");
    let emotion = hearth_models::EmotionSpec::new(
        ["anger", "joy", "neutral"].map(String::from).to_vec(),
        Default::default(),
    )
    .unwrap();
    let emotion_job = v1::JobSpec {
        model_spec_json: emotion.to_json().into(),
        escalation_target_recall: 0.7,
        privacy: None,
        ..dp_job("emotion-plain", &spec, 1.0)
    };
    op.submit_job(emotion_job).await.unwrap();
    let err =
        op.submit_job(v1::JobSpec { privacy: None, ..dp_job("intent-plain", &spec, 1.0) }).await.unwrap_err();
    assert!(err.message().contains("requires intent jobs to be differentially private"), "{err}");

    let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    assert!(audit.contains("budget.policy_set"), "{audit}");
    assert!(audit.contains("set again unchanged") && audit.contains("retired"), "{audit}");
    assert!(
        audit.matches("budget.reserve").count() >= 13,
        "every reservation and refusal is audited: {audit}"
    );
}
