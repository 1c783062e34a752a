//! Four participant processes, each with its own emotion texts and purchase transactions imported with
//! `hearth data import`, train an emotion job and a recommend job at the same time under secure
//! aggregation over mTLS; both models learn; every participant then serves both from the latest
//! committed versions over HTTPS and gRPC, swapped in without a failed request, with cold starts,
//! customers' histories and the products a message names; hostile requests get clear errors with stable
//! reasons; the model files carry their card; a restarted participant serves both again at once.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hearth_models::emotion::{calibrate_escalation, calibrate_thresholds, evaluate_emotion, ANGER};
use hearth_models::recommend::data::{clean, descriptions, encode, spec_for, Transaction};
use hearth_models::recommend::{evaluate, leave_last_out, partition_by_country, Scoring};
use hearth_models::{
    dirichlet_split_by, EmotionModel, EmotionSpec, FeatureConfig, ModelSpec, RecommendModel,
};
use hearth_proto::v1::coordinator_client::CoordinatorClient;
use hearth_proto::v1::{self, job_event};
use tonic::transport::Channel;

const PARTICIPANTS: usize = 4;
const ROUNDS: u64 = 5;
const TARGET_RECALL: f32 = 0.7;

fn job(id: &str, spec: &ModelSpec) -> v1::JobSpec {
    let d = spec.defaults();
    v1::JobSpec {
        job_id: id.into(),
        model_spec_json: spec.to_json().into(),
        rounds: ROUNDS,
        train: Some(v1::TrainParams {
            local_epochs: d.train.local_epochs,
            learning_rate: d.train.learning_rate,
            batch_size: d.train.batch_size,
            l2: d.train.l2,
            seed: 5,
        }),
        min_participants: PARTICIPANTS as u32,
        round_deadline_s: 120,
        wait_for_participants: PARTICIPANTS as u32,
        server_learning_rate: d.server_learning_rate,
        server_momentum: d.server_momentum,
        escalation_target_recall: if matches!(spec, ModelSpec::Emotion(_)) { TARGET_RECALL } else { 0.0 },
        data_description: format!("test slice for {id}"),
        ..Default::default()
    }
}

/// Follows a job to its end; returns the committed rounds.
async fn follow(op: &mut CoordinatorClient<Channel>, job: &str, cluster: &Cluster) -> Vec<v1::RoundSummary> {
    let mut events = op.watch_job(v1::WatchJobRequest { job_id: job.into() }).await.unwrap().into_inner();
    let mut committed = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(240), events.message())
        .await
        .expect("the job progresses")
        .unwrap()
    {
        match ev.kind {
            Some(job_event::Kind::Committed(s)) => committed.push(s),
            Some(job_event::Kind::Failed(f)) => {
                panic!("{job}: round {} failed: {}\n{}", f.round, f.reason, cluster.log("coordinator"))
            }
            Some(job_event::Kind::Finished(_)) => break,
            _ => {}
        }
    }
    committed
}

async fn final_params(op: &mut CoordinatorClient<Channel>, job: &str) -> Vec<f32> {
    download_model(op, job).await.1
}

/// Waits until `name` serves version `version` of both jobs.
async fn wait_served(cluster: &Cluster, name: &str, version: u64) {
    let (addr, app) = (cluster.participant_addr(name), cluster.tls(&format!("{name}/app")));
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        let (status, body) = https(&addr, &app, "GET", "/v1/health", vec![]).await;
        assert_eq!(status, 200);
        last = serde_json::from_slice(&body).unwrap();
        let v = |f: &str| last["models"][f]["version"].as_u64().unwrap_or(0);
        if v("emotion") == version && v("recommend") == version {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} does not serve version {version} of both models: {last}\n{}", cluster.log(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emotion_and_recommend_train_securely_and_serve() {
    // Emotion: a slice of GoEmotions (Ekman) over the institutions, non-IID by primary label.
    let (labels, train) = goemotions("train");
    let train: Vec<_> = train.into_iter().take(12_000).collect();
    let (_, dev) = goemotions("dev");
    let (_, test) = goemotions("test");
    let emotion_shards = dirichlet_split_by(&train, |e| e.primary_label(), PARTICIPANTS, 0.5, 3).unwrap();
    let emotion_spec = EmotionSpec::new(labels.clone(), FeatureConfig::default()).unwrap();

    // Recommend: Online Retail, institutions by country, each customer's last new item held out.
    let rows = online_retail();
    let (purchases, _) = clean(&rows);
    let recommend_spec = spec_for(&purchases, &descriptions(&rows)).unwrap();
    let split = leave_last_out(&purchases);
    let institutions = partition_by_country(&split.train, PARTICIPANTS).unwrap();
    let home: HashMap<&str, usize> = institutions
        .iter()
        .enumerate()
        .flat_map(|(i, inst)| inst.purchases.iter().map(move |p| (p.customer.as_str(), i)))
        .collect();
    let held: HashSet<(&str, &str)> =
        split.test.iter().map(|h| (h.customer.as_str(), h.item.as_str())).collect();
    let mut retail_shards: Vec<Vec<Transaction>> = vec![Vec::new(); PARTICIPANTS];
    for r in &rows {
        // Anonymous rows go to the first institution: the import must leave them out.
        let i = r.customer.as_deref().map_or(Some(0), |c| home.get(c).copied());
        let is_held = r.customer.as_deref().is_some_and(|c| held.contains(&(c, r.stock_code.as_str())));
        if let (Some(i), false) = (i, is_held) {
            retail_shards[i].push(r.clone());
        }
    }

    // Each institution imports its own files; the formats differ by institution. A fifth one holds only
    // intent data: the emotion and recommend jobs must not wait for it or invite it.
    let (intent_only, _) = clinc_slice(3);
    let cluster = Cluster::start_importing(PARTICIPANTS + 1, |name, dir, data_dir| {
        let i = name_index(name);
        if i == PARTICIPANTS {
            let csv = dir.join(format!("{name}.csv"));
            write_csv(&csv, &intent_only);
            hearth_ok(&["data", "import", "--data-dir", s(data_dir), s(&csv)]);
            return;
        }
        let shard = &emotion_shards[i];
        let emotion_file = match i {
            0 => {
                let f = dir.join(format!("{name}-emotion.csv"));
                write_emotion_csv(&f, shard);
                f
            }
            _ => {
                let f = dir.join(format!("{name}-emotion.jsonl"));
                write_emotion_jsonl(&f, shard);
                f
            }
        };
        hearth_ok(&["data", "import", "--data-dir", s(data_dir), "--family", "emotion", s(&emotion_file)]);
        let tx = dir.join(format!("{name}-transactions.csv"));
        write_transactions_csv(&tx, &retail_shards[i]);
        let out = hearth_ok(&["data", "import", "--data-dir", s(data_dir), "--family", "recommend", s(&tx)]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("without a CustomerID"), "{said}");
    });
    let app = cluster.tls("inst-1/app");
    let addr = cluster.participant_addr("inst-1");

    // Nothing committed yet: a clear 503, per family.
    let (status, v) = https_json(&addr, &app, "POST", "/v1/recommend", b"{}".to_vec()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("no_model")), "{v}");

    // An app asks for emotions the whole time: once a model is served, every request succeeds while
    // models are swapped in, and the versions it sees never go backwards.
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (stop, addr, app) = (Arc::clone(&stop), addr.clone(), app.clone());
        tokio::spawn(async move {
            let cfg = hearth_transport::client_config(&app).unwrap();
            let ch = hearth_transport::connect(&addr, "localhost", cfg).await.unwrap();
            let mut inf = v1::inference_client::InferenceClient::new(ch);
            let (mut versions, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let req =
                    v1::EmotionRequest { text: "why is my refund still not here, this is outrageous".into() };
                match inf.emotion(req).await {
                    Ok(r) => versions.push(r.into_inner().model_version),
                    Err(e) if versions.is_empty() && e.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (versions, failures)
        })
    };

    // Both jobs at once, securely aggregated (the default).
    let mut op = cluster.client("operator").await;
    let (emotion_job, recommend_job) =
        (ModelSpec::Emotion(emotion_spec.clone()), ModelSpec::Recommend(recommend_spec.clone()));
    // The policy's target recall is part of an emotion job, and of no other.
    let e = op
        .submit_job(v1::JobSpec { escalation_target_recall: 0.0, ..job("no-target", &emotion_job) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("escalation_target_recall 0 must be in (0, 1]"), "{e}");
    let e = op
        .submit_job(v1::JobSpec { escalation_target_recall: 0.7, ..job("stray-target", &recommend_job) })
        .await
        .unwrap_err();
    assert!(e.message().contains("applies to emotion jobs only"), "{e}");
    // A recommend job's model is the average itself: momentum would add past rounds' statistics to it.
    let e = op
        .submit_job(v1::JobSpec { server_momentum: 0.5, ..job("momentum", &recommend_job) })
        .await
        .unwrap_err();
    assert!(e.message().contains("server_momentum 0.5 must be in {0}: a recommend job's model"), "{e}");
    // Participants embed only their intent texts so far: an emotion model reading embeddings is refused.
    let encoder_emotion = ModelSpec::Emotion(EmotionSpec::encoder_tier(emotion_spec.labels.clone()).unwrap());
    let e = op.submit_job(job("emotion-encoder", &encoder_emotion)).await.unwrap_err();
    assert!(e.message().contains("an emotion model with an encoder block"), "{e}");
    op.submit_job(job("emotion", &emotion_job)).await.unwrap();
    op.submit_job(job("recommend", &recommend_job)).await.unwrap();
    let mut op2 = cluster.client("operator").await;
    let (emotion_rounds, recommend_rounds) =
        tokio::join!(follow(&mut op, "emotion", &cluster), follow(&mut op2, "recommend", &cluster));
    let participants = |r: &[v1::RoundSummary]| r.iter().map(|s| s.participants).collect::<Vec<_>>();
    assert_eq!(
        participants(&emotion_rounds),
        vec![PARTICIPANTS as u32; ROUNDS as usize],
        "every participant in every sum"
    );
    assert_eq!(participants(&recommend_rounds), vec![PARTICIPANTS as u32; ROUNDS as usize]);
    // Every emotion round's model was evaluated on the institutions' held-out data, from secure sums;
    // recommend models have no federated evaluation yet.
    // On a miss, what the coordinator recorded of its evaluations (the reason one did not run).
    let evaluations = || {
        let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl"));
        audit
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("model.evaluate"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for s in &emotion_rounds {
        let e = s.evaluation.as_ref().unwrap_or_else(|| {
            panic!("round {} has no evaluation; the audit log:\n{}", s.round, evaluations())
        });
        assert!(e.examples > 0 && e.institutions == PARTICIPANTS as u32, "{e:?}");
        assert!(e.macro_f1 > 0.0 && e.macro_f1 <= 1.0 && e.oos_examples == 0, "{e:?}");
    }
    assert!(recommend_rounds.iter().all(|s| s.evaluation.is_none()));
    let audit = std::fs::read_to_string(cluster.dir.path().join("coordinator/audit/entries.jsonl")).unwrap();
    let secure =
        audit.lines().filter(|l| l.contains("round.commit") && l.contains("securely aggregated")).count();
    assert_eq!(secure as u64, 2 * ROUNDS, "{audit}");
    let outsider = format!("inst-{}", PARTICIPANTS + 1);
    assert!(
        audit.lines().filter(|l| l.contains("round.commit")).all(|l| !l.contains(&outsider)),
        "{outsider} holds no emotion or transaction data and was not in any round: {audit}"
    );
    assert!(audit.contains("holds emotion,recommend") && audit.contains("holds intent"), "{audit}");

    // Both models learned. Emotion: calibrated on dev as the demo does, evaluated on test.
    let mut emotion_model =
        EmotionModel::from_params(emotion_spec.clone(), final_params(&mut op, "emotion").await).unwrap();
    calibrate_thresholds(&mut emotion_model, &dev).unwrap();
    calibrate_escalation(&mut emotion_model, &dev, ANGER, TARGET_RECALL).unwrap();
    let m = evaluate_emotion(&emotion_model, &test).unwrap();
    let anger = m.escalation.as_ref().unwrap().score.recall;
    assert!(m.macro_f1 > 0.4, "emotion macro-F1 {}", m.macro_f1);
    assert!(anger >= 0.6, "anger recall {anger} at the dev-chosen threshold");
    // Recommend: above the recently-popular baseline on the held-out items, and the federated
    // statistics are the pooled ones (up to the secure-aggregation rounding).
    let rec = RecommendModel::from_params(recommend_spec.clone(), final_params(&mut op, "recommend").await)
        .unwrap();
    let pooled = encode(&recommend_spec, &split.train);
    let fed = evaluate(&rec, &recommend_spec.scoring, &pooled, &split.test, 10).metrics();
    let popular = evaluate(&rec, &Scoring::popular_recent(60), &pooled, &split.test, 10).metrics();
    assert!(
        fed.hit_rate > popular.hit_rate,
        "HR@10 {} vs recently popular {}",
        fed.hit_rate,
        popular.hit_rate
    );

    // Every participant serves the final version of both.
    for i in 1..=PARTICIPANTS {
        wait_served(&cluster, &format!("inst-{i}"), ROUNDS).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (versions, failures) = hammer.await.unwrap();
    assert!(failures.is_empty(), "requests failed during model swaps: {failures:?}");
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "served versions went backwards");
    let mut distinct = versions.clone();
    distinct.dedup();
    // A job's model is served once the job has finished, never a round's model on the way.
    assert_eq!(distinct, [ROUNDS], "the app saw only the finished job's model");

    // Emotion over HTTP: every label scored, the escalation rule this participant calibrated.
    let angry = r#"{"text": "I am absolutely furious, this is the worst service I have ever had"}"#;
    let (status, v) = https_json(&addr, &app, "POST", "/v1/emotion", angry.into()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], serde_json::json!({"job_id": "emotion", "version": ROUNDS}));
    assert_eq!(v["scores"].as_array().unwrap().len(), labels.len());
    assert!(labels.contains(&v["label"].as_str().unwrap().to_string()), "{v}");
    let esc = &v["escalation"];
    assert_eq!(esc["label"], "anger", "{v}");
    assert!((0.0..=1.0).contains(&esc["threshold"].as_f64().unwrap()), "{v}");
    assert!((esc["target_recall"].as_f64().unwrap() - f64::from(TARGET_RECALL)).abs() < 1e-6);
    let anger_score = v["scores"].as_array().unwrap().iter().find(|s| s["label"] == "anger").unwrap()
        ["score"]
        .as_f64()
        .unwrap();
    assert_eq!(v["escalate"].as_bool().unwrap(), anger_score >= esc["threshold"].as_f64().unwrap(), "{v}");
    // The model learned which of two messages is the angry one.
    let (_, calm) = https_json(
        &addr,
        &app,
        "POST",
        "/v1/emotion",
        br#"{"text": "thank you so much, that is wonderful news"}"#.to_vec(),
    )
    .await;
    let score = |v: &serde_json::Value, l: &str| {
        v["scores"].as_array().unwrap().iter().find(|s| s["label"] == l).unwrap()["score"].as_f64().unwrap()
    };
    assert!(anger_score > score(&calm, "anger"), "{v}\n{calm}");
    assert!(score(&calm, "joy") > score(&v, "joy"), "{v}\n{calm}");
    // The same over gRPC.
    let cfg = hearth_transport::client_config(&app).unwrap();
    let mut inf = v1::inference_client::InferenceClient::new(
        hearth_transport::connect(&addr, "localhost", cfg).await.unwrap(),
    );
    let text =
        serde_json::from_str::<serde_json::Value>(angry).unwrap()["text"].as_str().unwrap().to_string();
    let r = inf.emotion(v1::EmotionRequest { text: text.into() }).await.unwrap().into_inner();
    assert_eq!(
        (r.label.as_str(), r.escalate, r.model_version),
        (v["label"].as_str().unwrap(), v["escalate"].as_bool().unwrap(), ROUNDS)
    );
    assert_eq!(r.escalation.unwrap().label, "anger");

    // Recommend: a customer of inst-1 by id; their history is never recommended back.
    let customer = &split.test.iter().find(|h| home.get(h.customer.as_str()) == Some(&0)).unwrap().customer;
    let bought: HashSet<&str> = institutions[0]
        .purchases
        .iter()
        .filter(|p| &p.customer == customer)
        .map(|p| p.item.as_str())
        .collect();
    let body = serde_json::json!({"customer_id": customer, "top_k": 5}).to_string();
    let (status, v) = https_json(&addr, &app, "POST", "/v1/recommend", body.into()).await;
    assert_eq!(status, 200, "{v}");
    let items: Vec<&str> =
        v["items"].as_array().unwrap().iter().map(|i| i["item"].as_str().unwrap()).collect();
    assert_eq!(items.len(), 5, "{v}");
    assert!(items.iter().all(|i| !bought.contains(i)), "recommended back a purchase: {v}");
    assert_eq!(v["cold_start"], false);
    assert!(v["history_items"].as_u64().unwrap() >= bought.len() as u64, "{v}");
    let r = inf
        .recommend(v1::RecommendRequest { customer_id: customer.clone(), top_k: 5, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.items.iter().map(|i| i.item.as_str()).collect::<Vec<_>>(), items, "gRPC agrees with HTTP");

    // A new customer (no history) gets the institution's popular items.
    let (status, v) = https_json(&addr, &app, "POST", "/v1/recommend", br#"{"top_k": 3}"#.to_vec()).await;
    assert_eq!((status, v["cold_start"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    assert!(v["items"][0]["description"].is_string(), "popular items carry their description: {v}");

    // The conversation: the product a message names starts the history.
    let mut descriptions: BTreeMap<&str, &str> = BTreeMap::new();
    for r in retail_shards[0].iter().filter(|r| r.customer.is_some() && !r.description.is_empty()) {
        descriptions.entry(r.stock_code.as_str()).or_insert(r.description.as_str());
    }
    let (item, description) = descriptions
        .iter()
        .find(|(i, d)| recommend_spec.items.contains(&i.to_string()) && d.split(' ').count() >= 3)
        .unwrap();
    let body =
        serde_json::json!({"text": format!("hello, my {} arrived broken!", description.to_lowercase())});
    let (status, v) = https_json(&addr, &app, "POST", "/v1/recommend", body.to_string().into()).await;
    assert_eq!(status, 200, "{v}");
    let mentioned: Vec<&str> =
        v["mentioned_items"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    assert!(mentioned.contains(item), "{item} ({description}) not found in the message: {v}");
    assert_eq!(v["cold_start"], false, "{v}");
    // Recent items work too.
    let body = serde_json::json!({"items": [item], "top_k": 4}).to_string();
    let (status, v) = https_json(&addr, &app, "POST", "/v1/recommend", body.into()).await;
    assert_eq!((status, v["items"].as_array().map(Vec::len)), (200, Some(4)), "{v}");

    // Hostile requests: clear errors with stable reasons, on both endpoints and both faces.
    let long_text = serde_json::json!({ "text": "a".repeat(10_001) }).to_string();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/emotion", br#"{"text": ""}"#.to_vec(), 400, "empty_text"),
        ("/v1/emotion", br#"{"text": "   "}"#.to_vec(), 400, "empty_text"),
        ("/v1/emotion", long_text.clone().into(), 400, "text_too_long"),
        (
            "/v1/emotion",
            vec![b'{', b'"', b't', b'e', b'x', b't', b'"', b':', b'"', 0xff, 0xfe, b'"', b'}'],
            400,
            "invalid_utf8",
        ),
        ("/v1/emotion", br#"{"text": "hi", "customer": "x"}"#.to_vec(), 400, "unknown_field"),
        ("/v1/emotion", b"{not json".to_vec(), 400, "invalid_json"),
        ("/v1/emotion", br#"{"text": 3}"#.to_vec(), 400, "invalid_request"),
        ("/v1/recommend", br#"{"customer_id": "no-such-customer"}"#.to_vec(), 404, "unknown_customer"),
        ("/v1/recommend", br#"{"items": ["85123A", "NOT-AN-ITEM"]}"#.to_vec(), 404, "unknown_item"),
        ("/v1/recommend", br#"{"top_k": 0}"#.to_vec(), 400, "top_k_out_of_range"),
        ("/v1/recommend", br#"{"top_k": 101}"#.to_vec(), 400, "top_k_out_of_range"),
        ("/v1/recommend", br#"{"text": ""}"#.to_vec(), 400, "empty_text"),
        ("/v1/recommend", long_text.into(), 400, "text_too_long"),
        ("/v1/recommend", br#"{"customer_id": "a\u0000b"}"#.to_vec(), 400, "invalid_customer_id"),
        ("/v1/recommend", br#"{"items": "85123A"}"#.to_vec(), 400, "invalid_request"),
        ("/v1/recommend", br#"{"top_k": 3, "limit": 5}"#.to_vec(), 400, "unknown_field"),
        ("/v1/recommend", vec![0xc3, 0x28], 400, "invalid_utf8"),
    ];
    for (path, body, want, reason) in cases {
        let (status, v) = https_json(&addr, &app, "POST", path, body.clone()).await;
        assert_eq!(status, want, "{path} {}: {v}", String::from_utf8_lossy(&body));
        assert_eq!(v["error"]["reason"], reason, "{path}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
    }
    for path in ["/v1/emotion", "/v1/recommend"] {
        let huge = serde_json::to_vec(&serde_json::json!({ "text": "a".repeat(300_000) })).unwrap();
        let (status, v) = https_json(&addr, &app, "POST", path, huge).await;
        assert_eq!((status, v["error"]["reason"].as_str()), (413, Some("too_large")), "{path}: {v}");
        let (status, v) =
            https_json(&addr, &cluster.tls("inst-2"), "POST", path, br#"{"text": "hi"}"#.to_vec()).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{path}: a participant is no app"
        );
    }
    let reason =
        |e: &tonic::Status| e.metadata().get("hearth-error-reason").map(|v| v.to_str().unwrap().to_string());
    let e = inf.emotion(v1::EmotionRequest { text: vec![b'o', b'k', 0xff].into() }).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_deref()),
        (tonic::Code::InvalidArgument, Some("invalid_utf8")),
        "{e}"
    );
    assert!(e.message().contains("offset 2"), "{e}");
    let e = inf.emotion(v1::EmotionRequest { text: "".into() }).await.unwrap_err();
    assert_eq!(reason(&e).as_deref(), Some("empty_text"));
    let e = inf
        .recommend(v1::RecommendRequest { customer_id: "no-such-customer".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((e.code(), reason(&e).as_deref()), (tonic::Code::NotFound, Some("unknown_customer")));
    let e = inf
        .recommend(v1::RecommendRequest { items: vec!["NOT-AN-ITEM".into()], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((e.code(), reason(&e).as_deref()), (tonic::Code::NotFound, Some("unknown_item")));
    let e = inf.recommend(v1::RecommendRequest { top_k: 1000, ..Default::default() }).await.unwrap_err();
    assert_eq!(reason(&e).as_deref(), Some("top_k_out_of_range"));

    // The model files carry their card: which data, which rounds, which protections.
    let file = cluster.data_dir("inst-1").join("models/emotion.hearthm");
    let out = hearth_ok(&["model", "show", "--json", s(&file)]);
    let card: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(card["family"], "emotion");
    assert_eq!(card["version"], ROUNDS);
    assert_eq!(card["card"]["training"]["job_id"], "emotion");
    assert_eq!(card["card"]["training"]["rounds"], ROUNDS);
    assert_eq!(card["card"]["data"]["institutions"], PARTICIPANTS);
    assert_eq!(card["card"]["data"]["dataset"], "test slice for emotion");
    assert_eq!(card["card"]["privacy"]["secure_aggregation"], true);
    assert!(card["card"]["privacy"]["epsilon"].is_null(), "no differential privacy is claimed");
    assert!(card["card"]["evaluation"]["escalation_threshold"].is_f64(), "{card}");
    assert_eq!(card["calibration"]["escalation"]["label"], "anger");
    let out = hearth_ok(&["model", "show", s(&cluster.data_dir("inst-3").join("models/recommend.hearthm"))]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("secure aggregation true") && text.contains("popular items"), "{text}");

    // A restarted participant serves both models again from its store, before any new round.
    let mut cluster = cluster;
    cluster.kill_participant("inst-2");
    cluster.start_participant("inst-2");
    let (addr2, app2) = (cluster.participant_addr("inst-2"), cluster.tls("inst-2/app"));
    let (status, body) = https(&addr2, &app2, "GET", "/v1/health", vec![]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["models"]["emotion"]["version"], ROUNDS, "{v}");
    assert_eq!(v["models"]["recommend"]["version"], ROUNDS, "{v}");
    let (status, v) = https_json(&addr2, &app2, "POST", "/v1/recommend", br#"{"top_k": 2}"#.to_vec()).await;
    assert_eq!((status, v["cold_start"].as_bool()), (200, Some(true)), "{v}");
}

#[test]
fn data_import_reports_bad_rows_by_line_for_each_family() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // CLINC150 as shipped (one JSON document): its train split, 15,000 in scope and 100 out of scope.
    let out = hearth_ok(&["data", "import", "--data-dir", s(&data), s(&clinc150_path())]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("imported 15100 intent examples"), "{said}");
    // Another JSON document is named as such, once.
    let doc = dir.path().join("export.json");
    std::fs::write(&doc, "{\n  \"rows\": [\n    {\"text\": \"hi\", \"label\": \"x\"}\n  ]\n}\n").unwrap();
    let out = hearth().args(["data", "import", "--data-dir", s(&data), s(&doc)]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("one JSON document") && err.contains("not JSON Lines"), "{err}");
    let emotion = dir.path().join("emotion.csv");
    std::fs::write(&emotion, "text,labels\nok,anger\n,joy\nno labels,\nfine,joy;surprise\n").unwrap();
    let out = hearth()
        .args(["data", "import", "--data-dir", s(&data), "--family", "emotion", s(&emotion)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("emotion.csv:3: empty text") && err.contains("emotion.csv:4: no label"), "{err}");
    assert!(err.contains("nothing imported"), "{err}");
    let out = hearth_ok(&[
        "data",
        "import",
        "--data-dir",
        s(&data),
        "--family",
        "emotion",
        "--skip-bad",
        s(&emotion),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 2 emotion examples"));

    let tx = dir.path().join("tx.csv");
    std::fs::write(
        &tx,
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n\
         536365,85123A,WHITE HANGING HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom\n\
         536366,22633,HAND WARMER,six,12/1/2010 8:28,1.85,17850,United Kingdom\n\
         536367,84879,ASSORTED BIRD,32,12/1/2010 8:34,1.69,,United Kingdom\n",
    )
    .unwrap();
    let out = hearth()
        .args(["data", "import", "--data-dir", s(&data), "--family", "recommend", s(&tx)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tx.csv:3: quantity \"six\" is not a whole number"), "{err}");
    let out =
        hearth_ok(&["data", "import", "--data-dir", s(&data), "--family", "recommend", "--skip-bad", s(&tx)]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("imported 1 transactions") && said.contains("1 without a CustomerID"), "{said}");
    let missing = dir.path().join("bad-header.csv");
    std::fs::write(&missing, "InvoiceNo,StockCode\n1,2\n").unwrap();
    let out = hearth()
        .args(["data", "import", "--data-dir", s(&data), "--family", "recommend", s(&missing)])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no \"Quantity\" column"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
