//! The service end to end in process: linking, sessions, erasure, retention, merges, hostile input.

use std::time::Duration;

use hearth_node::config::KeystoreConfig;
use hearth_node::keys::{Create, PARTICIPANT_KEYS};

use super::*;
use hearth_inference::parse_body;
use hearth_inference::Slots;
use policy::StorableField;

fn open(dir: &Path) -> Desk {
    open_with(dir, hearth_crypto::SuiteId::International, &DeskConfig::default())
}

fn open_with(dir: &Path, suite: hearth_crypto::SuiteId, config: &DeskConfig) -> Desk {
    Desk::open(config, dir, "bank-a", keys(dir, suite), Arc::new(Slots::default()), None).unwrap()
}

/// A participant's keys in `dir`, under a passphrase keystore.
fn keys(dir: &Path, suite: hearth_crypto::SuiteId) -> Arc<NodeKeys> {
    let pass = dir.join("pass");
    std::fs::write(&pass, "service test").unwrap();
    let cfg = KeystoreConfig {
        passphrase_file: Some(pass),
        argon2_memory_kib: 19 * 1024,
        argon2_iterations: 2,
        ..Default::default()
    };
    Arc::new(NodeKeys::open(&cfg, suite, dir, PARTICIPANT_KEYS, Create::IfMissing, None).unwrap().0)
}

fn body(json: &str) -> MessageBody {
    parse_body(json.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_link_sessions_continue_and_erasure_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Handle::current();
    let id = {
        let s = open(dir.path());
        let a = s
            .message(body(r#"{"channel": "app", "identifiers": {"phone": "+44 7700 900123"}, "text": "where is my parcel"}"#), &rt)
            .unwrap();
        assert!(a.new_customer && !a.session.continued);
        assert!(a.intent.is_none() && a.unavailable.contains_key("intent"), "no model: null with a reason");
        let b = s
            .message(
                body(r#"{"channel": "email", "identifiers": {"phone": "00447700900123", "email": "Ann@Example.com"}, "text": "still no parcel"}"#),
                &rt,
            )
            .unwrap();
        assert_eq!(b.customer_id, a.customer_id);
        assert_eq!((b.session.id.as_str(), b.session.continued), (a.session.id.as_str(), true));
        assert_eq!(b.session.channels, ["app", "email"]);
        s.writer.flush().await.unwrap();
        a.customer_id
    };
    // Reopened from the file: the email alone finds them, and the history has both channels.
    let s = open(dir.path());
    let c = s
        .message(
            body(r#"{"channel": "web", "identifiers": {"email": "ann@example.com"}, "text": "hello?"}"#),
            &rt,
        )
        .unwrap();
    assert_eq!(c.customer_id, id);
    let h = json(s.history(&id).unwrap());
    let channels: Vec<&str> =
        h["messages"].as_array().unwrap().iter().map(|m| m["channel"].as_str().unwrap()).collect();
    assert_eq!(channels, ["app", "email", "web"]);
    assert_eq!(json(s.erase(&id, "dpo:test").await.unwrap())["messages"], 3);
    assert_eq!(s.history(&id).unwrap_err().reason(), "unknown_customer");
    assert_eq!(s.erase("../../service.redb", "dpo:test").await.unwrap_err().reason(), "invalid_customer_id");
    let raw = std::fs::read(dir.path().join(store::SERVICE_FILE)).unwrap();
    for needle in ["7700900123", "ann@example.com", "Ann@Example.com", "parcel", "hello?", id.as_str()] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in service.redb");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_refused_with_stable_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let rt = tokio::runtime::Handle::current();
    let reason = |json: &str| match parse_body::<MessageBody>(json.as_bytes()) {
        Err(e) => e.reason(),
        Ok(b) => s.message(b, &rt).err().map_or("accepted", |e| e.reason()),
    };
    assert_eq!(
        reason(r#"{"channel": "fax", "identifiers": {"phone": "+4477009001"}, "text": "x"}"#),
        "invalid_channel"
    );
    assert_eq!(reason(r#"{"channel": "sms", "identifiers": {}, "text": "x"}"#), "no_identifier");
    assert_eq!(reason(r#"{"channel": "sms", "identifiers": {"ssn": "1"}, "text": "x"}"#), "invalid_request");
    assert_eq!(
        reason(r#"{"channel": "sms", "identifiers": {"phone": "1; DROP TABLE"}, "text": "x"}"#),
        "invalid_identifier"
    );
    assert_eq!(
        reason(r#"{"channel": "sms", "identifiers": {"openid": "a\u0000b"}, "text": "x"}"#),
        "invalid_identifier"
    );
    assert_eq!(
        reason(r#"{"channel": "sms", "identifiers": {"phone": "+4477009001"}, "text": " "}"#),
        "empty_text"
    );
    assert_eq!(
        reason(
            r#"{"channel": "sms", "identifiers": {"phone": "+4477009001"}, "text": "x", "tier": "../../x"}"#
        ),
        "invalid_request"
    );
    assert_eq!(
        reason(r#"{"channel": "sms", "identifiers": {"phone": "+4477009001"}, "text": "x", "admin": true}"#),
        "unknown_field"
    );
    assert_eq!(
        reason(r#"{"channel": "sms", "identifiers": {"phone": "+4477009001"}, "text": "x"}"#),
        "accepted"
    );
    assert_eq!(s.customers(), 1, "nothing refused was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_strips_fields_and_erases_inactive_customers_under_the_national_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = DeskConfig::default();
    config.retention.fields = [
        (StorableField::Text, Duration::from_secs(5)),
        (StorableField::Channel, Duration::from_secs(86_400)),
    ]
    .into();
    config.retention.customer = Duration::from_secs(3600);
    let s = open_with(dir.path(), hearth_crypto::SuiteId::National, &config);
    let rt = tokio::runtime::Handle::current();
    let a = s
        .message(body(r#"{"channel": "wechat", "identifiers": {"openid": "o6_bmjrPTlm6"}, "text": "退款进度", "tier": "gold"}"#), &rt)
        .unwrap();
    assert_eq!(a.stored, ["channel", "text"]);
    let h = json(s.history(&a.customer_id).unwrap());
    assert_eq!(h["messages"][0]["text"], "退款进度");
    assert!(h["messages"][0].get("tier").is_none(), "tier is not in the policy: dropped at the door");
    let now = unix_now();
    assert_eq!(s.sweep(now + 10).unwrap(), (0, 0));
    let h = json(s.history(&a.customer_id).unwrap());
    assert!(h["messages"][0].get("text").is_none() && h["messages"][0]["channel"] == "wechat", "{h}");
    assert_eq!(s.sweep(now + 3601).unwrap(), (1, 0));
    assert_eq!(s.history(&a.customer_id).unwrap_err().reason(), "unknown_customer");
    let b = s
        .message(
            body(r#"{"channel": "wechat", "identifiers": {"openid": "o6_bmjrPTlm6"}, "text": "hi"}"#),
            &rt,
        )
        .unwrap();
    assert!(b.new_customer, "the links were erased with the customer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_customers_workflow_runs_are_erased_with_the_customer_they_joined() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"sms-flow\"\nwhen = { channel = [\"sms\"] }\nthen = { workflow = \"w\" }\n\
         [workflows.w]\nsteps = [{ name = \"s\", url = \"http://127.0.0.1:9/x\", retries = 0, timeout_ms = 200 }]\n",
    )
    .unwrap();
    let config = DeskConfig { rules_file: Some(rules), ..Default::default() };
    let s = open_with(dir.path(), hearth_crypto::SuiteId::International, &config);
    let rt = tokio::runtime::Handle::current();
    let older = s
        .message(body(r#"{"channel": "web", "identifiers": {"email": "b@example.org"}, "text": "hi"}"#), &rt)
        .unwrap();
    let newer = s
        .message(body(r#"{"channel": "sms", "identifiers": {"phone": "+447700900999"}, "text": "hi"}"#), &rt)
        .unwrap();
    let run = newer.workflows[0].run_id.clone();
    let merged = s
        .message(
            body(r#"{"channel": "email", "identifiers": {"email": "b@example.org", "phone": "+447700900999"}, "text": "both"}"#),
            &rt,
        )
        .unwrap();
    assert_eq!(merged.customer_id, older.customer_id);
    assert_eq!(merged.merged_customers.len(), 1);
    assert_eq!(merged.merged_customers[0], newer.customer_id);
    assert_eq!(s.history(&newer.customer_id).unwrap_err().reason(), "unknown_customer");
    assert_eq!(json(s.history(&older.customer_id).unwrap())["messages"].as_array().unwrap().len(), 3);
    // Let the run fail (nothing listens), then erase: the run goes with the customer it now belongs to.
    for _ in 0..100 {
        if s.engine.get(&run).is_some_and(|r| r.status != workflows::RunStatus::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.engine.get(&run).unwrap().customer, older.customer_id);
    assert_eq!(json(s.erase(&older.customer_id, "dpo:test").await.unwrap())["workflow_runs"], 1);
    assert!(s.engine.get(&run).is_none());
}

/// What a receiver was sent: each call's headers and body.
type Calls = Arc<Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>;

/// A receiver that answers the scripted statuses in turn (each with its `Retry-After`, if any), then 200;
/// returns its URL and the calls it took.
async fn scripted_receiver(script: Vec<(u16, Option<&'static str>)>) -> (String, Calls) {
    scripted_receiver_over(script, None).await
}

/// [`scripted_receiver`], over TLS 1.3 with `tls` when given (an `https://` URL).
async fn scripted_receiver_over(
    script: Vec<(u16, Option<&'static str>)>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
    let app = axum::Router::new().route(
        "/x",
        axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
            let (seen, script) = (Arc::clone(&seen), Arc::clone(&script));
            async move {
                seen.lock().unwrap().push((headers, body));
                let (status, retry_after) = script.lock().unwrap().pop_front().unwrap_or((200, None));
                let mut r = axum::response::Response::builder().status(status);
                if let Some(v) = retry_after {
                    r = r.header("retry-after", v);
                }
                r.body(axum::body::Body::empty()).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let Some(tls) = tls else {
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        return (format!("http://{addr}/x"), calls);
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                if let Ok(stream) = acceptor.accept(tcp).await {
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                }
            });
        }
    });
    (format!("https://{addr}/x"), calls)
}

/// A CA (its PEM) and a TLS 1.3 server configuration whose certificate it issued for 127.0.0.1.
fn receiver_tls() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap();
    (ca_pem, Arc::new(config))
}

/// Starts a run of a one-step workflow calling `url` (3 retries, 30 s of backoff) on a desk with
/// `webhook_secret` (if any) and waits for its end.
async fn run_one_step(url: &str, webhook_secret: Option<&str>) -> (workflows::RunStatus, Duration) {
    let (run, took) = run_one_step_trusting(url, webhook_secret, None).await;
    (run.status, took)
}

/// [`run_one_step`] on a desk whose `webhook_ca_file` holds `ca_pem`, if given; returns the ended run.
async fn run_one_step_trusting(
    url: &str,
    webhook_secret: Option<&str>,
    ca_pem: Option<&str>,
) -> (Run, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[rule]]\nname = \"sms-flow\"\nwhen = {{ channel = [\"sms\"] }}\nthen = {{ workflow = \"w\" }}\n\
             [workflows.w]\nsteps = [{{ name = \"s\", url = \"{url}\", retries = 3, backoff_ms = 30000, timeout_ms = 2000 }}]\n"
        ),
    )
    .unwrap();
    let webhook_secret_file = webhook_secret.map(|secret| {
        let f = dir.path().join("webhook-secret");
        std::fs::write(&f, format!("{secret}\n")).unwrap();
        f
    });
    let webhook_ca_file = ca_pem.map(|pem| {
        let f = dir.path().join("webhook-ca.pem");
        std::fs::write(&f, pem).unwrap();
        f
    });
    let config =
        DeskConfig { rules_file: Some(rules), webhook_secret_file, webhook_ca_file, ..Default::default() };
    let s = open_with(dir.path(), hearth_crypto::SuiteId::International, &config);
    let rt = tokio::runtime::Handle::current();
    let started = std::time::Instant::now();
    let m = s
        .message(body(r#"{"channel": "sms", "identifiers": {"phone": "+447700900123"}, "text": "hi"}"#), &rt)
        .unwrap();
    let run = m.workflows[0].run_id.clone();
    loop {
        let ended = s.engine.get(&run).unwrap();
        if ended.status != workflows::RunStatus::Running {
            return (ended, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the run never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_says_later_is_retried_when_it_asks_and_one_that_refuses_is_not() {
    // 503 with `Retry-After: 1`: the retry comes after that second, not after the step's 15 to 30 s of backoff.
    let (url, calls) = scripted_receiver(vec![(503, Some("1"))]).await;
    let (status, took) = run_one_step(&url, None).await;
    assert_eq!((status, calls.lock().unwrap().len()), (workflows::RunStatus::Done, 2));
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "{took:?}");
    assert!(calls.lock().unwrap().iter().all(|(h, _)| !h.contains_key("webhook-signature")), "no secret");
    // 404: the receiver refuses the call; a repeat would not change that, so there is none.
    let (url, calls) = scripted_receiver(vec![(404, None)]).await;
    let (status, _) = run_one_step(&url, None).await;
    assert_eq!((status, calls.lock().unwrap().len()), (workflows::RunStatus::Failed, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_calls_are_signed_as_standard_webhooks_receivers_verify_them() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (url, calls) = scripted_receiver(vec![(500, Some("0"))]).await;
    let (status, _) = run_one_step(&url, Some(secret)).await;
    assert_eq!(status, workflows::RunStatus::Done);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "the 500 and its retry");
    // Verified as a receiver would, with HMAC-SHA256 written out here (RFC 2104), not the desk's signer;
    // the helper itself reproduces the standard's published example first.
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap()
    };
    let expected = |id: &str, ts: u64, body: &[u8]| {
        use base64::Engine as _;
        let signed = [id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body].concat();
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, &signed)))
    };
    assert_eq!(
        expected("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    let now = unix_now();
    for (h, body) in &calls {
        let get = |k: &str| h.get(k).unwrap_or_else(|| panic!("no {k}: {h:?}")).to_str().unwrap().to_string();
        let (id, ts) = (get("webhook-id"), get("webhook-timestamp").parse::<u64>().unwrap());
        assert_eq!(id, get("idempotency-key"), "the message id is the call's idempotency key");
        assert!(ts.abs_diff(now) < 60, "timestamp {ts} against {now}");
        assert_eq!(get("webhook-signature"), expected(&id, ts, body), "verifies under the secret");
        // Altered, the body no longer verifies.
        assert_ne!(get("webhook-signature"), expected(&id, ts, &[body.as_ref(), b" "].concat()));
    }
    assert_eq!(calls[0].0.get("webhook-id"), calls[1].0.get("webhook-id"), "a retry keeps its id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_reach_receivers_the_configured_ca_vouches_for_and_no_others() {
    let (ca_pem, server) = receiver_tls();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (url, calls) = scripted_receiver_over(vec![(503, Some("0"))], Some(server)).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (run, _) = run_one_step_trusting(&url, Some(secret), Some(&ca_pem)).await;
    assert_eq!((run.status, run.failure), (workflows::RunStatus::Done, None));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "the 503 and its retry, over TLS");
    assert!(calls.iter().all(|(h, _)| h.contains_key("webhook-signature")), "signed over https too");
    // A receiver whose certificate another CA issued (here: the desk trusts only the system's CAs) fails
    // the handshake: not retried, and the run's failure says why.
    let (_, other) = receiver_tls();
    let (url, calls) = scripted_receiver_over(vec![], Some(other)).await;
    let (run, took) = run_one_step_trusting(&url, None, None).await;
    assert_eq!(run.status, workflows::RunStatus::Failed);
    let failure = run.failure.unwrap();
    assert!(
        failure.contains("attempt 1: TLS: the handshake with 127.0.0.1 failed")
            && failure.contains("not retried"),
        "{failure}"
    );
    assert!(took < Duration::from_secs(10), "no retry after the 15 to 30 s backoff: {took:?}");
    assert!(calls.lock().unwrap().is_empty(), "nothing was sent to it");
    // Trusting another CA than the receiver's is the same refusal.
    let (other_ca, _) = receiver_tls();
    let (url, _) = scripted_receiver_over(vec![], Some(receiver_tls().1)).await;
    let (run, _) = run_one_step_trusting(&url, None, Some(&other_ca)).await;
    assert_eq!(run.status, workflows::RunStatus::Failed);
    assert!(run.failure.unwrap().contains("TLS"));
}

#[test]
fn a_bad_webhook_ca_file_stops_the_desk_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("webhook-ca.pem");
    std::fs::write(&f, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let config = DeskConfig { webhook_ca_file: Some(f.clone()), ..Default::default() };
    let keys = keys(dir.path(), hearth_crypto::SuiteId::International);
    let Err(e) = Desk::open(&config, dir.path(), "bank-a", keys, Arc::new(Slots::default()), None) else {
        panic!("a CA file without a certificate is refused")
    };
    let msg = e.to_string();
    assert!(msg.contains(&f.display().to_string()) && msg.contains("no PEM certificate"), "{msg}");
}

/// HMAC-SHA256 (RFC 2104) over SHA-256, for keys of at most one block.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    assert!(key.len() <= 64);
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |x: u8| block.iter().map(|b| b ^ x).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

#[test]
fn a_bad_webhook_secret_file_stops_the_desk_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("webhook-secret");
    std::fs::write(&f, "hunter2").unwrap();
    let config = DeskConfig { webhook_secret_file: Some(f.clone()), ..Default::default() };
    let keys = keys(dir.path(), hearth_crypto::SuiteId::International);
    let Err(e) = Desk::open(&config, dir.path(), "bank-a", keys, Arc::new(Slots::default()), None) else {
        panic!("a bad secret file is refused")
    };
    let msg = e.to_string();
    assert!(msg.contains(&f.display().to_string()) && msg.contains("must start with whsec_"), "{msg}");
    assert!(!msg.contains("hunter2"), "the error never shows the secret: {msg}");
}

/// An answer as its JSON.
fn json(v: impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_claim_by_priority_reply_through_the_channel_used_last_transfer_and_close() {
    let (url, calls) = scripted_receiver(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[rule]]\nname = \"sms-humans\"\nwhen = {{ channel = [\"sms\"] }}\nthen = {{ route = \"human\", priority = \"high\" }}\n\
             [[rule]]\nname = \"email-senior\"\nwhen = {{ channel = [\"email\"] }}\nthen = {{ route = \"senior\", priority = \"urgent\" }}\n\
             [replies]\nsms = {{ url = \"{url}\" }}\nemail = {{ url = \"{url}\", retries = 1 }}\n"
        ),
    )
    .unwrap();
    let config = DeskConfig { rules_file: Some(rules), ..Default::default() };
    let rt = tokio::runtime::Handle::current();
    let (alice, bob) = ("agent:alice@bank-a", "agent:bob@bank-a");
    let (ann_conversation, ann) = {
        let s = open_with(dir.path(), hearth_crypto::SuiteId::International, &config);
        let post = |json: &str| s.message(body(json), &rt).unwrap();
        let ann = post(
            r#"{"channel": "sms", "identifiers": {"phone": "+447700900001"}, "text": "my card is blocked"}"#,
        );
        let ben = post(
            r#"{"channel": "email", "identifiers": {"email": "ben@example.org"}, "text": "I was charged twice"}"#,
        );
        let bot = post(
            r#"{"channel": "app", "identifiers": {"phone": "+447700900002"}, "text": "opening hours?"}"#,
        );
        assert!(bot.conversation_id.is_none(), "the bot's route queues nothing");
        let (a, b) = (ann.conversation_id.clone().unwrap(), ben.conversation_id.clone().unwrap());
        // Ann writes again on the same channel: the same conversation.
        let again =
            post(r#"{"channel": "sms", "identifiers": {"phone": "+447700900001"}, "text": "hello?"}"#);
        assert_eq!(again.conversation_id.as_deref(), Some(a.as_str()));

        let q = json(s.queues(alice));
        assert_eq!(q["queues"][0]["queue"], "human");
        assert_eq!(
            (q["queues"][0]["waiting"].as_u64(), q["queues"][0]["by_priority"]["high"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(q["queues"][1]["by_priority"]["urgent"], 1);
        let order: Vec<&str> =
            q["waiting"].as_array().unwrap().iter().map(|w| w["conversation_id"].as_str().unwrap()).collect();
        assert_eq!(order, [b.as_str(), a.as_str()], "urgent before high");
        // Alice claims the next: Ben's (urgent); nothing else waits in senior; Bob gets Ann's.
        let claimed = json(s.claim(alice, None).unwrap());
        assert_eq!(claimed["conversation"]["id"], b.as_str());
        assert_eq!(claimed["conversation"]["status"], "claimed");
        assert_eq!(s.claim(bob, Some("senior")).unwrap_err().reason(), "queue_empty");
        assert_eq!(s.claim(bob, Some("vip")).unwrap_err().reason(), "unknown_queue");
        let anns = json(s.claim(bob, None).unwrap());
        assert_eq!(anns["conversation"]["id"], a.as_str());
        // What Bob sees: the session's two messages, no customer id, no identifier.
        let texts: Vec<&str> =
            anns["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["my card is blocked", "hello?"]);
        let seen = anns.to_string();
        assert!(!seen.contains(&ann.customer_id) && !seen.contains("7700900001"), "{seen}");
        // Nobody else's: Alice cannot read or reply on Bob's conversation.
        assert_eq!(s.conversation(alice, &a).unwrap_err().reason(), "not_yours");
        assert_eq!(s.reply(alice, &a, "hi", &rt).unwrap_err().reason(), "not_yours");
        assert_eq!(s.conversation(alice, "v-00").unwrap_err().reason(), "invalid_conversation_id");
        let nobody = format!("v-{}", "0".repeat(32));
        assert_eq!(s.conversation(alice, &nobody).unwrap_err().reason(), "unknown_conversation");
        assert_eq!(s.reply(bob, &a, "  ", &rt).unwrap_err().reason(), "empty_text");

        // Bob replies: delivered through sms, the channel Ann used.
        let replied = s.reply(bob, &a, "Your card is unblocked now.", &rt).unwrap();
        assert_eq!(replied.channel, "sms");
        // Ann moves to the app; the next reply would go there, and the rules file has no route for it.
        post(
            r#"{"channel": "app", "identifiers": {"phone": "+447700900001"}, "text": "thanks, one more thing"}"#,
        );
        assert_eq!(s.reply(bob, &a, "Yes?", &rt).unwrap_err().reason(), "no_reply_route");
        let view = json(s.conversation(bob, &a).unwrap());
        assert_eq!(view["conversation"]["channel"], "app");
        let by: Vec<&str> =
            view["messages"].as_array().unwrap().iter().filter_map(|m| m["by_agent"].as_str()).collect();
        assert_eq!(by, [bob], "the reply is kept in the session");
        assert!(view["conversation"]["first_reply_at"].is_u64());
        // Bob transfers Ann to senior at urgent: she waits again, before nobody (the only one).
        let t = json(s.transfer(bob, &a, "senior", Some(rules::Priority::Urgent)).unwrap());
        assert_eq!(
            (t["conversation"]["status"].as_str(), t["conversation"]["queue"].as_str()),
            (Some("waiting"), Some("senior"))
        );
        assert_eq!(s.close(bob, &a).unwrap_err().reason(), "not_yours", "it is no longer his");
        assert_eq!(json(s.close(alice, &b).unwrap())["conversation"]["status"], "closed");
        // The delivery reached the receiver, with the text, the channel and the conversation.
        for _ in 0..100 {
            if !calls.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delivered: serde_json::Value = serde_json::from_slice(&calls.lock().unwrap()[0].1).unwrap();
        assert_eq!(delivered["workflow"], "reply");
        assert_eq!(delivered["context"]["text"], "Your card is unblocked now.");
        assert_eq!(
            (delivered["context"]["channel"].as_str(), delivered["context"]["conversation_id"].as_str()),
            (Some("sms"), Some(a.as_str()))
        );
        let mut metrics = hearth_transport::ops::MetricsText::new();
        s.render_agent_metrics(&mut metrics);
        let text = metrics.finish();
        assert!(text.contains(r#"hearth_desk_queue_waiting{queue="senior",priority="urgent"} 1"#), "{text}");
        assert!(text.contains(r#"hearth_desk_agent_actions_total{action="claim"} 2"#), "{text}");
        assert!(text.contains("hearth_desk_first_reply_seconds_count 1"), "{text}");
        s.writer.flush().await.unwrap();
        (a, ann.customer_id)
    };
    // Reopened: the queue is as it was (kept in the sealed customer records); erasing Ann takes hers.
    let s = open_with(dir.path(), hearth_crypto::SuiteId::International, &config);
    let claimed = json(s.claim(alice, Some("senior")).unwrap());
    assert_eq!(claimed["conversation"]["id"], ann_conversation.as_str());
    assert_eq!(s.claim(alice, None).unwrap_err().reason(), "queue_empty", "Ben's is closed");
    s.erase(&ann, "dpo:test").await.unwrap();
    assert_eq!(s.conversation(alice, &ann_conversation).unwrap_err().reason(), "unknown_conversation");
    assert!(json(s.queues(alice))["mine"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_back_after_the_session_window_joins_their_open_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"h\"\nwhen = { channel = [\"sms\"] }\nthen = { route = \"human\" }\n",
    )
    .unwrap();
    let config =
        DeskConfig { rules_file: Some(rules), session_window: Duration::from_secs(1), ..Default::default() };
    let s = open_with(dir.path(), hearth_crypto::SuiteId::International, &config);
    let rt = tokio::runtime::Handle::current();
    let post = |text: &str| {
        let m =
            format!(r#"{{"channel": "sms", "identifiers": {{"phone": "+447700900003"}}, "text": "{text}"}}"#);
        s.message(body(&m), &rt).unwrap()
    };
    let first = post("is anyone there");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = post("still waiting");
    assert_ne!(first.session.id, second.session.id, "a new session after the window");
    assert_eq!(first.conversation_id, second.conversation_id, "the same open conversation");
    let agent = "agent:alice@bank-a";
    let v = json(s.claim(agent, None).unwrap());
    let texts: Vec<&str> =
        v["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["is anyone there", "still waiting"], "both sessions' messages: {v}");
    assert_eq!(v["conversation"]["session"], second.session.id.as_str());
}
