//! A federated histogram over five real participants: each counts its own examples' labels, adds its share
//! of discrete Gaussian noise and sends its counts masked; the coordinator releases the noisy sum. The
//! errors against the true counts have the standard deviation the mechanism states, and each release is
//! charged to the family's budget until it runs out: each institution's own (its DPO's policy, charged by
//! its participant) as well as the coordinator's.

mod common;

use std::collections::HashMap;

use common::*;
use hearth_crypto::SuiteId;
use hearth_models::dirichlet_split;
use hearth_models::recommend::data::Transaction;
use hearth_proto::v1::{self, analytics_client::AnalyticsClient, privacy_client::PrivacyClient};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_query_releases_noisy_counts_at_the_stated_scale() {
    let (train, _) = clinc_slice(30);
    let split = dirichlet_split(&train, 5, 0.5, 3).unwrap();
    let cluster = Cluster::start(&split.shards);
    let mut truth: HashMap<String, f64> = HashMap::new();
    for e in &train {
        *truth.entry(e.label.clone()).or_default() += 1.0;
    }
    let mut bins: Vec<String> = truth.keys().cloned().collect();
    bins.sort();
    // Each institution's DPO lets its data answer label-stats queries (the starter policy lists none).
    for i in 1..=5 {
        cluster.sign_institution_policy(
            &format!("inst-{i}"),
            &institution_policy(&format!("inst-{i}"), "label-stats", 100.0),
        );
    }
    let mut op = cluster.client("operator").await;
    for _ in 0..100 {
        if op.get_status(v1::StatusRequest {}).await.unwrap().into_inner().participants.len() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let channel = |name: &str| {
        let cfg = hearth_transport::client_config(&cluster.tls(name)).unwrap();
        let addr = cluster.coordinator_addr.clone();
        async move { hearth_transport::connect(&addr, "localhost", cfg).await.unwrap() }
    };
    let mut analyst = AnalyticsClient::new(channel("analyst").await);
    let query = |epsilon: f64| v1::QueryRequest {
        query_id: String::new(),
        family: "label-stats".into(),
        statistic: "label".into(),
        bins: bins.clone(),
        epsilon,
        delta: 1e-6,
        min_participants: 3,
        round_deadline_s: 60,
        value_bound: 0.0,
    };

    // An app may not run queries.
    let mut app = AnalyticsClient::new(channel("app").await);
    assert_eq!(app.run_query(query(1.0)).await.unwrap_err().code(), Code::PermissionDenied);

    // Three releases at epsilon 0.5: the errors' spread matches the stated noise.
    let mut errors = Vec::new();
    let mut stated = 0.0;
    for _ in 0..3 {
        let r = analyst.run_query(query(0.5)).await.unwrap().into_inner();
        assert_eq!(r.participants, 5);
        assert!(r.epsilon <= 0.5 && r.epsilon > 0.4, "spent {}", r.epsilon);
        stated = r.noise_stddev;
        for b in &r.bins {
            errors.push(b.count - truth[&b.name]);
            assert_eq!(b.count.fract(), 0.0, "counts stay integers");
        }
    }
    let n = errors.len() as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let sd = (errors.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / (n - 1.0)).sqrt();
    eprintln!("{} noisy counts: error mean {mean:.2}, sd {sd:.2}; stated sd {stated:.2}", errors.len());
    assert!(stated > 1.0, "there is noise: {stated}");
    assert!((0.7..1.35).contains(&(sd / stated)), "error sd {sd:.2} vs stated {stated:.2}");
    assert!(mean.abs() < 3.0 * stated / n.sqrt(), "unbiased: mean error {mean:.2}");

    // Each participant charged its own ledger: inst-5's DPO now allows less than it has spent, so inst-5
    // refuses the next query whatever the coordinator (which has no policy yet) says; the others answer.
    cluster.sign_institution_policy("inst-5", &institution_policy("inst-5", "label-stats", 1.0));
    let r = analyst.run_query(query(0.5)).await.unwrap().into_inner();
    assert_eq!(r.participants, 4, "inst-5 refused on its own ledger");
    let inst5 = std::fs::read_to_string(cluster.dir.path().join("data/inst-5/audit/entries.jsonl")).unwrap();
    let refusal = inst5
        .lines()
        .find(|l| l.contains("query.answer") && l.contains("refused"))
        .unwrap_or_else(|| panic!("inst-5 audits its refusal:\n{inst5}"));
    assert!(
        refusal.contains("the institution's label-stats budget") && refusal.contains("remains"),
        "{refusal}"
    );
    // It told the coordinator, which stopped waiting for it and recorded why.
    let coordinator =
        std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    assert!(
        coordinator
            .lines()
            .any(|l| l.contains("round.decline") && l.contains("inst-5") && l.contains("budget")),
        "{coordinator}"
    );
    cluster.sign_institution_policy("inst-5", &institution_policy("inst-5", "label-stats", 100.0));

    // Under a policy, releases are charged to each institution's budget for the family until it runs out.
    let mut policy = String::new();
    for i in 1..=5 {
        policy.push_str(&format!(
            "[tenants.inst-{i}.families.label-stats]\nepsilon = 1.2\ndelta = 1e-5\nprivacy_unit = \"record\"\nmin_participants = 3\n\n"
        ));
    }
    let dpo = cluster.tls("dpo");
    let secret = hearth_crypto::pki::p256_secret_from_pem(&dpo.key_pem).unwrap();
    let signature = SuiteId::International.suite().sign(&secret, policy.as_bytes()).unwrap();
    PrivacyClient::new(channel("dpo").await)
        .set_policy(v1::SetPolicyRequest { policy_toml: policy, signature: signature.into() })
        .await
        .unwrap();
    analyst.run_query(query(0.5)).await.unwrap();
    analyst.run_query(query(0.5)).await.unwrap();
    let err = analyst.run_query(query(0.5)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("remain"), "{err}");

    let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    assert!(audit.matches("query.run").count() >= 6, "{audit}");
    let participant_audit =
        std::fs::read_to_string(cluster.dir.path().join("data/inst-1/audit/entries.jsonl")).unwrap();
    assert!(participant_audit.contains("query.answer"), "{participant_audit}");
}

/// The other statistics over four institutions holding real GoEmotions and Online Retail rows: a histogram
/// of primary emotion labels (the share of conversations that are angry is one bin over the total), and
/// the sum, count and mean of purchase values clipped to a bound. Each released value is within five
/// stated standard deviations of the truth computed here from the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emotion_histograms_and_spend_sums_are_released_with_their_noise() {
    const N: usize = 4;
    const BOUND: f64 = 50.0;
    let (labels, emotions) = goemotions("dev");
    let emotions: Vec<_> = emotions.into_iter().take(2_000).collect();
    let rows: Vec<Transaction> = online_retail().into_iter().take(8_000).collect();
    let cluster = Cluster::start_importing(N, |name, dir, data_dir| {
        let i = name_index(name);
        let mine = |k: usize| k % N == i;
        let e: Vec<_> =
            emotions.iter().enumerate().filter(|(k, _)| mine(*k)).map(|(_, e)| e.clone()).collect();
        let f = dir.join(format!("{name}-emotion.csv"));
        write_emotion_csv(&f, &e);
        hearth_ok(&["data", "import", "--data-dir", s(data_dir), "--family", "emotion", s(&f)]);
        let t: Vec<_> = rows.iter().enumerate().filter(|(k, _)| mine(*k)).map(|(_, t)| t.clone()).collect();
        let f = dir.join(format!("{name}-tx.csv"));
        write_transactions_csv(&f, &t);
        hearth_ok(&["data", "import", "--data-dir", s(data_dir), "--family", "recommend", s(&f)]);
    });
    let mut op = cluster.client("operator").await;
    for _ in 0..100 {
        if op.get_status(v1::StatusRequest {}).await.unwrap().into_inner().participants.len() == N {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for i in 1..=N {
        let name = format!("inst-{i}");
        let policy =
            institution_policy(&name, "cs-stats", 100.0) + &institution_policy(&name, "rare-stats", 100.0);
        cluster.sign_institution_policy(&name, &policy);
    }
    let cfg = hearth_transport::client_config(&cluster.tls("analyst")).unwrap();
    let mut analyst = AnalyticsClient::new(
        hearth_transport::connect(&cluster.coordinator_addr, "localhost", cfg).await.unwrap(),
    );
    let base = v1::QueryRequest {
        query_id: String::new(),
        family: "cs-stats".into(),
        statistic: "emotion".into(),
        bins: labels.clone(),
        epsilon: 1.0,
        delta: 1e-6,
        min_participants: 3,
        round_deadline_s: 60,
        value_bound: 0.0,
    };

    let r = analyst.run_query(base.clone()).await.unwrap().into_inner();
    assert_eq!(r.participants, N as u32);
    for b in &r.bins {
        let truth = emotions.iter().filter(|e| e.labels.first() == Some(&b.name)).count() as f64;
        assert!(
            (b.count - truth).abs() < 5.0 * b.stddev,
            "{}: {} vs {truth} (sd {})",
            b.name,
            b.count,
            b.stddev
        );
    }
    let total: f64 = r.bins.iter().map(|b| b.count).sum();
    let anger = r.bins.iter().find(|b| b.name == "anger").unwrap().count;
    eprintln!("share of angry conversations: {:.3} (noisy)", anger / total);

    let r = analyst
        .run_query(v1::QueryRequest {
            statistic: "spend".into(),
            bins: vec![],
            value_bound: BOUND,
            ..base.clone()
        })
        .await
        .unwrap()
        .into_inner();
    // The truth as the participants count it: what was stored (products of known customers), purchases
    // only, each value clipped and rounded to the grid of BOUND / 100.
    let stored: Vec<f64> = rows
        .iter()
        .filter(|t| t.customer.is_some() && hearth_models::recommend::data::is_product(&t.stock_code))
        .filter(|t| t.quantity > 0 && !t.invoice.starts_with('C'))
        .map(|t| {
            ((t.quantity as f64 * t.unit_price).clamp(0.0, BOUND) / (BOUND / 100.0)).round() * (BOUND / 100.0)
        })
        .collect();
    let (sum, count) = (stored.iter().sum::<f64>(), stored.len() as f64);
    let bin = |name: &str| r.bins.iter().find(|b| b.name == name).unwrap().clone();
    let (s_, c_, m_) = (bin("sum"), bin("count"), bin("mean"));
    eprintln!(
        "spend: sum {:.1} (truth {sum:.1}), count {:.1} (truth {count}), mean {:.3} (truth {:.3})",
        s_.count,
        c_.count,
        m_.count,
        sum / count
    );
    assert!((s_.count - sum).abs() < 5.0 * s_.stddev, "sum {} vs {sum}, sd {}", s_.count, s_.stddev);
    assert!((c_.count - count).abs() < 5.0 * c_.stddev, "count {} vs {count}, sd {}", c_.count, c_.stddev);
    assert!((m_.count - sum / count).abs() < 5.0 * m_.stddev, "mean {} vs {}", m_.count, sum / count);
    assert!(s_.stddev > 0.0 && c_.stddev > 0.0, "there is noise");
    assert!(r.epsilon <= 1.0 && r.epsilon > 0.9, "spent {}", r.epsilon);

    // Hostile or mistaken requests are refused naming the problem.
    for (bad, what) in [
        (
            v1::QueryRequest { statistic: "spend".into(), bins: vec![], value_bound: -1.0, ..base.clone() },
            "value_bound",
        ),
        (
            v1::QueryRequest { statistic: "spend".into(), value_bound: 10.0, ..base.clone() },
            "leave bins empty",
        ),
        (v1::QueryRequest { statistic: "salary".into(), ..base.clone() }, "statistic"),
    ] {
        let e = analyst.run_query(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(what), "{e}");
    }

    // A policy's minimum cohort in records: judged on the noisy count, nothing released below it.
    let mut policy = String::new();
    for i in 1..=N {
        policy.push_str(&format!(
            "[tenants.inst-{i}.families.rare-stats]\nepsilon = 10.0\ndelta = 1e-5\nprivacy_unit = \"record\"\n\
             min_participants = 3\nmin_records = 100000\n\n"
        ));
    }
    let dpo = cluster.tls("dpo");
    let secret = hearth_crypto::pki::p256_secret_from_pem(&dpo.key_pem).unwrap();
    let signature = SuiteId::International.suite().sign(&secret, policy.as_bytes()).unwrap();
    let cfg = hearth_transport::client_config(&dpo).unwrap();
    PrivacyClient::new(hearth_transport::connect(&cluster.coordinator_addr, "localhost", cfg).await.unwrap())
        .set_policy(v1::SetPolicyRequest { policy_toml: policy, signature: signature.into() })
        .await
        .unwrap();
    let e = analyst
        .run_query(v1::QueryRequest { family: "rare-stats".into(), ..base.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("fewer than the policy's minimum of 100000"), "{e}");
}

/// An institution's own policy letting `family` use its data with a budget of `epsilon`.
fn institution_policy(institution: &str, family: &str, epsilon: f64) -> String {
    format!(
        "[tenants.{institution}.families.{family}]\nepsilon = {epsilon}\ndelta = 1e-4\nprivacy_unit = \"record\"\n\
         min_participants = 3\n\n"
    )
}
