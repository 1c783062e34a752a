//! No institution, and not the consortium's own operator or DPO, reaches another institution's customers:
//! two real participants; inst-1's desk and inference answer inst-1's app and DPO, and refuse, with a 403
//! recorded in inst-1's audit log, inst-2's app and DPO and the consortium's operator, DPO and app.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn institutions_are_walled_off_from_each_other() {
    let cluster = Cluster::start_importing(2, |_, _, _| {});
    let addr = cluster.participant_addr("inst-1");
    let message =
        json!({"channel": "app", "identifiers": {"phone": "+447700900555"}, "text": "where is my card?"});

    // inst-1's own app and DPO are served.
    let (s, v) = call_json(&addr, &cluster.tls("inst-1/app"), "POST", "/v1/messages", message.clone()).await;
    assert_eq!(s, 200, "{v}");
    let id = v["customer_id"].as_str().unwrap().to_string();
    let history = format!("/v1/customers/{id}/history");
    let (s, v) = call_json(&addr, &cluster.tls("inst-1/dpo"), "GET", &history, Value::Null).await;
    assert_eq!(s, 200, "{v}");

    // Everyone else is refused, on every customer endpoint and on inference.
    let outsiders = ["inst-2/app", "inst-2/dpo", "operator", "dpo", "app"];
    for who in outsiders {
        let tls = cluster.tls(who);
        for (method, path, body) in [
            ("POST", "/v1/messages", message.clone()),
            ("GET", history.as_str(), Value::Null),
            ("DELETE", &format!("/v1/customers/{id}"), Value::Null),
            ("POST", "/v1/admin/rules/reload", Value::Null),
            ("POST", "/v1/intent", json!({"text": "where is my card?"})),
            ("POST", "/v1/recommend", json!({"top_k": 3})),
        ] {
            let (s, v) = call_json(&addr, &tls, method, path, body).await;
            assert_eq!(s, 403, "{who}: {method} {path}: {v}");
            assert_eq!(v["error"]["reason"], "forbidden", "{who}: {v}");
        }
    }
    // The customer is still there, untouched.
    let (s, v) = call_json(&addr, &cluster.tls("inst-1/dpo"), "GET", &history, Value::Null).await;
    assert_eq!((s, v["messages"].as_array().map(Vec::len)), (200, Some(1)), "{v}");

    // Every refusal is in inst-1's audit log, naming the caller.
    let mut audit = String::new();
    for f in files_under(&cluster.data_dir("inst-1")) {
        if f.components().any(|c| c.as_os_str() == "audit") {
            audit.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
        }
    }
    for caller in ["app:app@inst-2", "dpo:dpo@inst-2", "operator:operator", "dpo:dpo\"", "app:app\""] {
        assert!(audit.contains(caller), "{caller} is not in inst-1's audit log");
    }
    assert!(audit.contains("service.call") && audit.contains("inference.call") && audit.contains("denied"));
}
