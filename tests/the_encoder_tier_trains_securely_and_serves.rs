//! The encoder tier end to end, with real processes: each participant embeds its texts with the
//! pretrained encoder once, at import (`hearth data import`), and keeps the embeddings sealed in its
//! store; an encoder-tier intent job (n-grams and sentence embeddings) trains under secure aggregation
//! across three participants, after a fast-tier job; the participant then serves the two as a cascade:
//! the fast model answers the queries it is sure of, the encoder-tier model (embedding the query) the
//! rest; an app may ask for either tier. A restart keeps the cascade.
//!
//! Needs the encoder installed (`hearth model fetch-encoder`, which `./scripts/test.sh` runs).

mod common;

use common::*;
use hearth_models::encoder::{default_dir, Encoder};
use hearth_models::{dirichlet_split, IntentSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_encoder_tier_trains_securely_and_serves() {
    let (train, test) = clinc_slice(10);
    let split = dirichlet_split(&train, 3, 0.5, 7).unwrap();
    let mut cluster = Cluster::start_importing(3, |name, dir, data_dir| {
        let csv = dir.join(format!("{name}.csv"));
        let shard = &split.shards[name_index(name)];
        write_csv(&csv, shard);
        let out = hearth_ok(&["data", "import", "--data-dir", s(data_dir), s(&csv)]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(&format!("embedded {} texts for the encoder tier", shard.len())), "{said}");
    });

    // The embeddings are sealed: the bytes of one, as the encoder computes it, are nowhere in the store.
    let encoder = Encoder::load(&default_dir()).unwrap();
    let first = &split.shards[0][0].text;
    let clear: Vec<u8> = encoder.embed_one(first)[..8].iter().flat_map(|v| v.to_le_bytes()).collect();
    let store = std::fs::read(cluster.data_dir("inst-1").join("participant.redb")).unwrap();
    assert!(!store.windows(clear.len()).any(|w| w == clear.as_slice()), "an embedding is in the clear");

    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    cluster.run(intent_job("it-fast", labels.clone(), 5, 3)).await;
    let spec = IntentSpec::encoder_tier(labels.clone()).unwrap();
    let mut job = intent_job("it-encoder", labels, 5, 3);
    job.model_spec_json = spec.to_json().into();
    job.train = Some(hearth_proto::v1::TrainParams {
        local_epochs: 1,
        learning_rate: hearth_models::intent::encoder_tier::LEARNING_RATE,
        batch_size: 8,
        l2: 0.0,
        seed: 1,
    });
    job.server_momentum = hearth_models::intent::encoder_tier::SERVER_MOMENTUM;
    assert!(!job.plain_aggregation, "three participants train under secure aggregation");
    cluster.run(job).await;

    // Served: the participant embeds each query and answers from the encoder-tier model.
    let (addr, app) = (cluster.participant_addr("inst-2"), cluster.tls("inst-2/app"));
    let started = std::time::Instant::now();
    loop {
        let (status, health) = https_json(&addr, &app, "GET", "/v1/health", vec![]).await;
        assert_eq!(status, 200, "{health}");
        if health["model"]["job_id"] == "it-encoder" {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "never served the encoder-tier model:\n{}",
            cluster.log("inst-2")
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, health) = https_json(&addr, &app, "GET", "/v1/health", vec![]).await;
    assert_eq!(health["models"]["intent_fast"]["job_id"], "it-fast", "the cascade's fast stage: {health}");

    let in_scope: Vec<_> = test.iter().filter(|e| e.label != "oos").collect();
    let confidence = f64::from(hearth_models::cascade::CASCADE_CONFIDENCE);
    let (accuracy, by_fast) = cascade(&addr, &app, &in_scope, confidence).await;
    eprintln!(
        "cascade of a fast and an encoder-tier model, 10 intents, 5 rounds, confidence {confidence}: served \
         in-scope accuracy {accuracy:.3} on {}, {by_fast} answered by the fast model",
        in_scope.len()
    );
    assert!(accuracy >= 0.9, "served in-scope accuracy {accuracy}");
    let (status, why) = https_json(
        &addr,
        &app,
        "POST",
        "/v1/intent",
        serde_json::json!({"text": "hello", "tier": "quantum"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{why}");
    let message = why["error"]["message"].as_str().unwrap();
    assert!(message.contains("quantum") && message.contains("`cascade`, `fast`, `encoder`"), "{why}");

    // A restart serves the same cascade, both models back from the sealed store; this time with the
    // participant's `cascade_confidence` at 0.5, so that the fast model (5 rounds on 10 intents) is
    // sure of some queries.
    cluster.stop_participant("inst-2");
    let env = cluster.participant_env.iter_mut().find(|(n, _)| n == "inst-2").map(|(_, e)| e);
    env.unwrap().push(("HEARTH_PARTICIPANT__CASCADE_CONFIDENCE".into(), "0.5".into()));
    cluster.start_participant("inst-2");
    let addr = cluster.participant_addr("inst-2");
    let (_, health) = https_json(&addr, &app, "GET", "/v1/health", vec![]).await;
    assert_eq!(health["models"]["intent"]["job_id"], "it-encoder", "{health}");
    assert_eq!(health["models"]["intent_fast"]["job_id"], "it-fast", "{health}");
    let (accuracy, by_fast) = cascade(&addr, &app, &in_scope, 0.5).await;
    eprintln!("after the restart, confidence 0.5: in-scope accuracy {accuracy:.3}, {by_fast} answered by the fast model");
    assert!(
        by_fast > 0 && by_fast < in_scope.len(),
        "{by_fast} of {} answered by the fast model",
        in_scope.len()
    );

    // A newer fast-tier job while the encoder-tier model is served refreshes the cascade's fast stage
    // only (its promotion gate compares it with the stage it replaces; off here): the encoder-tier model
    // stays in service.
    let mut newer = intent_job("it-fast-2", labels_of(&train), 6, 3);
    newer.promotion_tolerance_points = -1.0;
    cluster.run(newer).await;
    let started = std::time::Instant::now();
    loop {
        let (_, health) = https_json(&addr, &app, "GET", "/v1/health", vec![]).await;
        assert_eq!(health["models"]["intent"]["job_id"], "it-encoder", "{health}");
        if health["models"]["intent_fast"]["job_id"] == "it-fast-2" {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "the stage never moved to it-fast-2: {health}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let text = &in_scope[0].text;
    assert_eq!(ask(&addr, &app, text, Some("fast")).await["model"]["job_id"], "it-fast-2");
    assert!(cluster.data_dir("inst-2").join("models/intent-fast.hearthm").exists());
}

/// Sends each of `examples` three ways: the fast tier, the encoder tier, and the default, which must be
/// the fast model's answer when that one's confidence is at least `confidence` and the encoder-tier
/// model's otherwise. The default answers' accuracy, and how many the fast model gave.
async fn cascade(
    addr: &str,
    app: &hearth_transport::TlsMaterial,
    examples: &[&hearth_models::Example],
    confidence: f64,
) -> (f64, usize) {
    let (mut correct, mut by_fast) = (0, 0);
    for e in examples {
        let fast = ask(addr, app, &e.text, Some("fast")).await;
        assert_eq!((&fast["tier"], &fast["model"]["job_id"]), (&"fast".into(), &"it-fast".into()), "{fast}");
        let full = ask(addr, app, &e.text, Some("encoder")).await;
        assert_eq!(
            (&full["tier"], &full["model"]["job_id"]),
            (&"encoder".into(), &"it-encoder".into()),
            "{full}"
        );
        let answer = ask(addr, app, &e.text, None).await;
        let sure = fast["confidence"].as_f64().unwrap() >= confidence;
        let expected = if sure { &fast } else { &full };
        assert_eq!(answer, *expected, "cascade for {:?} (fast model sure: {sure})", e.text);
        by_fast += usize::from(sure);
        correct += usize::from(answer["label"] == e.label.as_str());
    }
    (correct as f64 / examples.len() as f64, by_fast)
}

/// `POST /v1/intent` with `text`, asking for `tier` (or the default); the answer, which must be a 200.
async fn ask(
    addr: &str,
    app: &hearth_transport::TlsMaterial,
    text: &str,
    tier: Option<&str>,
) -> serde_json::Value {
    let mut body = serde_json::json!({ "text": text });
    if let Some(t) = tier {
        body["tier"] = t.into();
    }
    let (status, answer) = https_json(addr, app, "POST", "/v1/intent", body.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[test]
fn bench_encoder_reports_throughput_and_both_tiers_latency() {
    let out =
        hearth_ok(&["bench", "encoder", "--texts", "40", "--repeats", "2", "--queries", "20", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["throughput"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "two datasets, 1 and 2 threads: {v}");
    for r in rows {
        let (lo, mid, hi) = (
            r["texts_per_s_min"].as_f64().unwrap(),
            r["texts_per_s_median"].as_f64().unwrap(),
            r["texts_per_s_max"].as_f64().unwrap(),
        );
        assert!(0.0 < lo && lo <= mid && mid <= hi, "{r}");
        assert!(r["dataset_texts"].as_u64().unwrap() > 10_000, "{r}");
    }
    let tiers: Vec<&str> =
        v["latency"].as_array().unwrap().iter().map(|l| l["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["fast", "encoder"]);
    assert!(v["latency_ratio"].as_f64().unwrap() > 1.0, "embedding a query costs more than hashing it: {v}");
}
