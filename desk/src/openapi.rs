//! The OpenAPI 3.1 document of every HTTP endpoint a participant serves (`GET /v1/openapi.json`),
//! written by hand beside the handlers; a test checks it names every route.

use serde_json::{json, Value};

fn error_responses(extra: &[(&str, &str)]) -> Value {
    let mut r = serde_json::Map::new();
    for (code, what) in [
        ("400", "bad request: invalid_json, invalid_utf8, unknown_field, invalid_request, and the endpoint's own reasons"),
        ("403", "the caller's role may not call this endpoint (recorded in the audit log)"),
        ("413", "body over 65536 bytes"),
    ]
    .iter()
    .chain(extra)
    {
        r.insert(code.to_string(), json!({
            "description": what,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
        }));
    }
    Value::Object(r)
}

fn ok(schema: Value, description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn with_ok(mut errors: Value, ok_response: Value) -> Value {
    if let Some(m) = errors.as_object_mut() {
        m.insert("200".into(), ok_response);
    }
    errors
}

fn text_body(props: Value, required: &[&str]) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": {
        "type": "object", "additionalProperties": false, "properties": props, "required": required
    }}}})
}

fn customer_id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true,
            "schema": { "type": "string", "pattern": "^c-[0-9a-f]{32}$" } })
}

/// The document.
pub fn document() -> Value {
    let any = json!({ "type": "object" });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Hearth participant",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The endpoints a Hearth participant serves to its institution's apps. \
                On the mTLS port the caller is its client certificate (role app, operator, dpo); on the \
                optional loopback listener, the API key as a bearer token, acting as an app. Errors are \
                {\"error\": {\"code\", \"reason\", \"message\"}} with a stable reason."
        },
        "security": [ { "mutualTLS": [] }, { "apiKey": [] } ],
        "paths": {
            "/v1/messages": { "post": {
                "summary": "Attribute, understand and route one customer message (roles: app, operator; API key)",
                "requestBody": text_body(json!({
                    "channel": { "type": "string", "enum": ["app", "web", "wechat", "sms", "email", "phone"] },
                    "identifiers": { "type": "object", "additionalProperties": false, "minProperties": 1,
                        "properties": {
                            "phone": { "type": "string" }, "email": { "type": "string" },
                            "openid": { "type": "string", "maxLength": 128 }, "device": { "type": "string", "maxLength": 128 }
                        } },
                    "text": { "type": "string", "maxLength": 10000 },
                    "tier": { "type": "string", "maxLength": 32 },
                    "order_id": { "type": "string", "maxLength": 64 }
                }), &["channel", "identifiers", "text"]),
                "responses": with_ok(error_responses(&[]), ok(json!({ "$ref": "#/components/schemas/MessageAnswer" }), "the customer, session, models' answers, route and rules"))
            }},
            "/v1/customers/{id}/history": { "get": {
                "summary": "A customer's linked history across channels (roles: operator, dpo)",
                "parameters": [ customer_id_param() ],
                "responses": with_ok(error_responses(&[("404", "unknown_customer")]), ok(any.clone(), "sessions and stored messages"))
            }},
            "/v1/customers/{id}": { "delete": {
                "summary": "Erase a customer everywhere, derived data included; audited (roles: operator, dpo)",
                "parameters": [ customer_id_param() ],
                "responses": with_ok(error_responses(&[("404", "unknown_customer")]), ok(any.clone(), "what was erased, and the audit reference"))
            }},
            "/v1/admin/rules/reload": { "post": {
                "summary": "Reload the rules file now (roles: operator, dpo)",
                "responses": with_ok(error_responses(&[("422", "invalid_rules: the file has an error (line or rule named); the previous rules keep serving")]), ok(any.clone(), "how many rules serve"))
            }},
            "/v1/admin/workflows/{id}": { "get": {
                "summary": "A workflow run's state (roles: operator, dpo)",
                "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": with_ok(error_responses(&[("404", "unknown_run")]), ok(any.clone(), "the run: steps, next step, status"))
            }},
            "/v1/openapi.json": { "get": {
                "summary": "This document",
                "responses": { "200": ok(any.clone(), "OpenAPI 3.1") }
            }},
            "/v1/intent": { "post": {
                "summary": "Intent of a message (roles: app, operator)",
                "requestBody": text_body(json!({ "text": { "type": "string" }, "top_k": { "type": "integer", "minimum": 0, "maximum": 20 } }), &["text"]),
                "responses": with_ok(error_responses(&[("503", "no_model")]), ok(any.clone(), "label, confidence, out_of_scope, top_k, model"))
            }},
            "/v1/emotion": { "post": {
                "summary": "Emotions of a message and whether to escalate (roles: app, operator)",
                "requestBody": text_body(json!({ "text": { "type": "string" } }), &["text"]),
                "responses": with_ok(error_responses(&[("503", "no_model")]), ok(any.clone(), "label, labels, scores, escalate, escalation, model"))
            }},
            "/v1/recommend": { "post": {
                "summary": "Items to offer (roles: app, operator)",
                "requestBody": text_body(json!({
                    "customer_id": { "type": "string" }, "items": { "type": "array", "items": { "type": "string" } },
                    "text": { "type": "string" }, "top_k": { "type": "integer", "minimum": 1, "maximum": 100 }
                }), &[]),
                "responses": with_ok(error_responses(&[("404", "unknown_customer"), ("503", "no_model")]), ok(any.clone(), "items, cold_start, mentioned_items, model"))
            }},
            "/v1/health": { "get": {
                "summary": "Which model version each family serves",
                "responses": { "200": ok(any, "status and models") }
            }}
        },
        "components": {
            "securitySchemes": {
                "mutualTLS": { "type": "mutualTLS", "description": "client certificate from the consortium CA; role from its urn:hearth:<role>:<id> SAN" },
                "apiKey": { "type": "http", "scheme": "bearer", "description": "loopback listener only ([service.local]); acts as an app" }
            },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                    "code": { "type": "string" }, "reason": { "type": "string" }, "message": { "type": "string" } } } } },
                "MessageAnswer": { "type": "object", "properties": {
                    "customer_id": { "type": "string" },
                    "new_customer": { "type": "boolean" },
                    "merged_customers": { "type": "array", "items": { "type": "string" } },
                    "session": { "type": "object", "properties": {
                        "id": { "type": "string" }, "continued": { "type": "boolean" },
                        "channels": { "type": "array", "items": { "type": "string" } }, "messages": { "type": "integer" } } },
                    "intent": { "type": ["object", "null"] },
                    "emotion": { "type": ["object", "null"] },
                    "recommendations": { "type": ["object", "null"] },
                    "unavailable": { "type": "object", "additionalProperties": { "type": "string" } },
                    "priority": { "type": "string", "enum": ["low", "normal", "high", "urgent"] },
                    "route": { "type": "string", "enum": ["self_service", "bot", "human", "senior"] },
                    "replies": { "type": "array", "items": { "type": "string" } },
                    "rules_fired": { "type": "array", "items": { "type": "string" } },
                    "workflows": { "type": "array", "items": { "type": "object", "properties": {
                        "workflow": { "type": "string" }, "run_id": { "type": "string" } } } },
                    "stored": { "type": "array", "items": { "type": "string" } }
                } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented() {
        let doc = document();
        let mut routes: Vec<(&str, &str)> = super::super::api::ROUTES.to_vec();
        routes.extend([
            ("post", "/v1/intent"),
            ("post", "/v1/emotion"),
            ("post", "/v1/recommend"),
            ("get", "/v1/health"),
        ]);
        for (method, path) in routes {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the OpenAPI document");
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
