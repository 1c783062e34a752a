//! A participant process with a real emotion model (trained by a short federated job on GoEmotions)
//! routes an angry message to the senior queue and starts the compensation workflow of its default rules
//! file; the workflow's webhooks land on a real HTTP server in this test, which fails the first attempt
//! of the payment step: the retry carries the same idempotency key, so every step is applied exactly
//! once. Then a second run is cut by SIGKILL while its last step is failing; after a restart it resumes
//! and finishes without repeating the steps already done. A third run meets a CRM that refuses the call
//! (404): it is not retried, and the failed run is listed, with why, among the dead letters. Last, an
//! agent (the institution's agent certificate, over mTLS) claims the customer's conversation from the
//! senior queue, sees what the policy keeps of it, and replies: the reply reaches the WeChat gateway,
//! the channel the customer wrote on.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use hearth_models::{EmotionSpec, FeatureConfig, ModelSpec};
use hearth_proto::v1::{self, job_event};
use serde_json::{json, Value};

/// What the webhook server saw.
#[derive(Default)]
struct Seen {
    /// (path, idempotency key) of every attempt, in order.
    attempts: Vec<(String, String)>,
    /// How many times each idempotency key was answered 2xx: a call the participant had to repeat after
    /// a success would show here as 2.
    applied: HashMap<String, u32>,
}

#[derive(Clone)]
struct Hooks {
    seen: Arc<Mutex<Seen>>,
    /// While set, the CRM step answers 503.
    crm_down: Arc<AtomicBool>,
    /// While set, the CRM step answers 404.
    crm_gone: Arc<AtomicBool>,
}

async fn hook(State(h): State<Hooks>, uri: Uri, headers: HeaderMap, body: String) -> StatusCode {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut seen = h.seen.lock().unwrap();
    seen.attempts.push((uri.path().to_string(), key.clone()));
    assert_eq!(body["step"].as_str().map(|s| key.ends_with(s)), Some(true), "key names the step: {key}");
    let tries = seen.attempts.iter().filter(|(_, k)| *k == key).count();
    // The payment system fails the first attempt of every run's credit call.
    if uri.path() == "/payments/credit" && tries == 1 {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if uri.path() == "/crm/notes" && h.crm_gone.load(Ordering::SeqCst) {
        return StatusCode::NOT_FOUND;
    }
    if uri.path() == "/crm/notes" && h.crm_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    *seen.applied.entry(key).or_default() += 1;
    StatusCode::OK
}

async fn wait_run(addr: &str, op: &hearth_transport::TlsMaterial, run: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (s, v) = call_json(addr, op, "GET", &format!("/v1/admin/workflows/{run}"), Value::Null).await;
        if s == 200 && v["status"] == status {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run} never reached {status}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn angry_customer_goes_to_seniors_and_compensation_runs_once() {
    // The institution's systems: one webhook server for orders, payments and the CRM.
    let hooks = Hooks { seen: Arc::default(), crm_down: Arc::default(), crm_gone: Arc::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app_router = axum::Router::new().fallback(hook).with_state(hooks.clone());
    tokio::spawn(async move { axum::serve(listener, app_router).await.unwrap() });

    // One participant with emotion data and the default rules pointed at the webhook server.
    let (labels, train) = goemotions("train");
    let train: Vec<_> = train.into_iter().take(8_000).collect();
    let rules = hearth_desk::rules::DEFAULT_RULES.replace("http://127.0.0.1:9900", &base)
        + "\n[replies]\nwechat = { path = \"/channels/wechat/send\" }\n";
    let mut cluster = Cluster::start_importing(1, |name, dir, data_dir| {
        let f = dir.join(format!("{name}-emotion.jsonl"));
        write_emotion_jsonl(&f, &train);
        hearth_ok(&["data", "import", "--data-dir", s(data_dir), "--family", "emotion", s(&f)]);
        std::fs::write(data_dir.join("rules.toml"), &rules).unwrap();
    });
    let spec = ModelSpec::Emotion(EmotionSpec::new(labels, FeatureConfig::default()).unwrap());
    let d = spec.defaults();
    let mut op = cluster.client("operator").await;
    op.submit_job(v1::JobSpec {
        job_id: "emotion".into(),
        model_spec_json: spec.to_json().into(),
        rounds: 3,
        train: Some(v1::TrainParams {
            local_epochs: d.train.local_epochs,
            learning_rate: d.train.learning_rate,
            batch_size: d.train.batch_size,
            l2: d.train.l2,
            seed: 5,
        }),
        min_participants: 1,
        round_deadline_s: 120,
        wait_for_participants: 1,
        plain_aggregation: true,
        server_learning_rate: d.server_learning_rate,
        server_momentum: d.server_momentum,
        escalation_target_recall: 0.7,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut events =
        op.watch_job(v1::WatchJobRequest { job_id: "emotion".into() }).await.unwrap().into_inner();
    while let Some(ev) =
        tokio::time::timeout(Duration::from_secs(240), events.message()).await.unwrap().unwrap()
    {
        match ev.kind {
            Some(job_event::Kind::Failed(f)) => panic!("round {} failed: {}", f.round, f.reason),
            Some(job_event::Kind::Finished(_)) => break,
            _ => {}
        }
    }
    let addr = cluster.participant_addr("inst-1");
    let (app, operator) = (cluster.tls("inst-1/app"), cluster.tls("inst-1/dpo"));
    for _ in 0..300 {
        let (_, h) = call_json(&addr, &app, "GET", "/v1/health", Value::Null).await;
        if h["models"]["emotion"]["version"].as_u64() == Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. The angry message: the served model's escalation flag sends it to the seniors.
    let angry = json!({
        "channel": "wechat",
        "identifiers": { "openid": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M" },
        "text": "I am furious. You charged me twice, nobody answers, this is outrageous and I am sick of it!",
        "order_id": "ORD-7781",
    });
    let (s, v) = call_json(&addr, &app, "POST", "/v1/messages", angry.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["emotion"]["escalate"], true, "the model escalates anger: {}", v["emotion"]);
    assert_eq!(v["emotion"]["model"]["job_id"], "emotion");
    assert_eq!(v["route"], "senior", "{v}");
    assert_eq!(v["priority"], "urgent");
    assert!(v["rules_fired"].as_array().unwrap().contains(&json!("angry-customer-to-senior")), "{v}");
    assert_eq!(v["workflows"][0]["workflow"], "compensation");
    let run = v["workflows"][0]["run_id"].as_str().unwrap().to_string();

    // 2. The run finishes; each step applied exactly once, the failed payment call retried with its key.
    let done = wait_run(&addr, &operator, &run, "done").await;
    assert_eq!(done["next"], 3);
    {
        let seen = hooks.seen.lock().unwrap();
        let of = |step: &str| format!("{run}/{step}");
        let tries = |step: &str| seen.attempts.iter().filter(|(_, k)| *k == of(step)).count();
        assert_eq!((tries("check_order"), tries("credit_payment"), tries("update_crm")), (1, 2, 1));
        for step in ["check_order", "credit_payment", "update_crm"] {
            assert_eq!(seen.applied.get(&of(step)), Some(&1), "{step} applied once");
        }
        let paths: Vec<&str> = seen.attempts.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/orders/check", "/payments/credit", "/payments/credit", "/crm/notes"]);
    }

    // 3. A second run, killed while its CRM step is failing; restarted, it resumes at that step.
    hooks.crm_down.store(true, Ordering::SeqCst);
    let (s, v) = call_json(&addr, &app, "POST", "/v1/messages", angry.clone()).await;
    assert_eq!((s, v["route"].as_str()), (200, Some("senior")), "{v}");
    let run2 = v["workflows"][0]["run_id"].as_str().unwrap().to_string();
    let crm_key = format!("{run2}/update_crm");
    let mut failing = false;
    for _ in 0..1000 {
        if hooks.seen.lock().unwrap().attempts.iter().any(|(_, k)| *k == crm_key) {
            failing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failing, "the second run reached its CRM step");
    cluster.kill_participant("inst-1");
    hooks.crm_down.store(false, Ordering::SeqCst);
    cluster.start_participant("inst-1");
    let addr = cluster.participant_addr("inst-1");
    let done = wait_run(&addr, &operator, &run2, "done").await;
    assert_eq!(done["next"], 3);
    {
        let seen = hooks.seen.lock().unwrap();
        let tries = |step: &str| seen.attempts.iter().filter(|(_, k)| *k == format!("{run2}/{step}")).count();
        assert_eq!(tries("check_order"), 1, "not repeated after the restart");
        assert_eq!(
            tries("credit_payment"),
            2,
            "the injected failure and its retry, not repeated after the restart"
        );
        assert!(tries("update_crm") >= 2, "failed before the kill, succeeded after");
        assert_eq!(seen.applied.get(&crm_key), Some(&1));
    }
    let log = cluster.log("inst-1");
    assert!(log.contains("resuming a workflow run"), "{log}");
    let (s, v) = call_json(&addr, &operator, "GET", "/v1/admin/dead-letters", Value::Null).await;
    assert_eq!((s, v["runs"].as_array().map(Vec::len)), (200, Some(0)), "nothing failed yet: {v}");

    // 4. A CRM that refuses the call (404): a repeat would not change that, so the step is called once and
    // the run fails; the operator finds it among the dead letters, with the answer it failed on.
    hooks.crm_gone.store(true, Ordering::SeqCst);
    let (s, v) = call_json(&addr, &app, "POST", "/v1/messages", angry).await;
    assert_eq!(s, 200, "{v}");
    let run3 = v["workflows"][0]["run_id"].as_str().unwrap().to_string();
    let failed = wait_run(&addr, &operator, &run3, "failed").await;
    assert!(
        failed["failure"].as_str().unwrap().contains("update_crm: attempt 1: answered HTTP 404, not retried"),
        "{failed}"
    );
    let tries = hooks
        .seen
        .lock()
        .unwrap()
        .attempts
        .iter()
        .filter(|(_, k)| *k == format!("{run3}/update_crm"))
        .count();
    assert_eq!(tries, 1, "a refused call is not repeated");
    let (s, v) = call_json(&addr, &operator, "GET", "/v1/admin/dead-letters", Value::Null).await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [run3.as_str()], "{v}");
    let (s, _) = call_json(&addr, &app, "GET", "/v1/admin/dead-letters", Value::Null).await;
    assert_eq!(s, 403, "an app certificate does not read the dead letters");

    // 5. An agent works the senior queue: the customer's three angry messages are one urgent conversation.
    let agent = cluster.tls("inst-1/agent");
    let (s, q) = call_json(&addr, &agent, "GET", "/v1/agent/queues", Value::Null).await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(
        (q["queues"][1]["queue"].as_str(), q["queues"][1]["waiting"].as_u64()),
        (Some("senior"), Some(1)),
        "{q}"
    );
    let (s, v) = call_json(&addr, &app, "POST", "/v1/agent/claim", json!({})).await;
    assert_eq!(s, 403, "an app certificate works no queue: {v}");
    let (s, c) = call_json(&addr, &agent, "POST", "/v1/agent/claim", json!({"queue": "senior"})).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        (c["conversation"]["priority"].as_str(), c["conversation"]["channel"].as_str()),
        (Some("urgent"), Some("wechat"))
    );
    assert!(c["emotion"].is_string() && c["intent"].is_null(), "the stored emotion; no intent model: {c}");
    assert_eq!(c["messages"].as_array().unwrap().len(), 3, "{c}");
    assert!(!c.to_string().contains("o6_bmjrPTlm6"), "no identifier reaches the agent: {c}");
    let id = c["conversation"]["id"].as_str().unwrap();
    let (s, r) = call_json(
        &addr,
        &agent,
        "POST",
        &format!("/v1/agent/conversations/{id}/reply"),
        json!({"text": "I am sorry. The double charge is refunded; you will see it within two days."}),
    )
    .await;
    assert_eq!((s, r["channel"].as_str()), (200, Some("wechat")), "{r}");
    let run = r["run_id"].as_str().unwrap();
    wait_run(&addr, &operator, run, "done").await;
    let delivered =
        hooks.seen.lock().unwrap().attempts.iter().filter(|(p, _)| p == "/channels/wechat/send").count();
    assert_eq!(delivered, 1, "the reply went to the WeChat gateway once");
    let (s, c) =
        call_json(&addr, &agent, "POST", &format!("/v1/agent/conversations/{id}/close"), json!({})).await;
    assert_eq!((s, c["conversation"]["status"].as_str()), (200, Some("closed")), "{c}");
}
