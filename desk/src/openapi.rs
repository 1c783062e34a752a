//! The OpenAPI 3.1 document of every HTTP endpoint a participant serves (`GET /v1/openapi.json`),
//! generated from the routes and types: the desk's routes ([`crate::api::api`]) and the inference
//! endpoints' ([`hearth_inference::api`]), each declared once with its operation; the request and answer
//! schemas derived from the Rust types, with every limit the handlers enforce. This module adds what
//! is common to every operation: the errors any caller may get and how callers authenticate.

use std::sync::LazyLock;

use hearth_inference::ErrorBody;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::info::InfoBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::ComponentsBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{OpenApi, Ref, RefOr, Response};
use utoipa::ToSchema;

/// The shape of the document itself, for the `GET /v1/openapi.json` answer.
#[derive(Debug, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct DocumentShape {
    /// The OpenAPI version, 3.1.
    #[schema(pattern = r"^3\.1\.[0-9]+$")]
    pub openapi: String,
    /// Title, version and description.
    #[schema(value_type = Object)]
    pub info: serde_json::Value,
    /// Every path and its operations.
    #[schema(value_type = Object)]
    pub paths: serde_json::Value,
    /// Schemas and security schemes.
    #[schema(value_type = Object)]
    pub components: serde_json::Value,
}

fn error(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(ErrorBody::name()))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
}

/// The errors every operation may answer, added where the operation can meet them.
fn add_common_errors(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let ops = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
        for op in ops.into_iter().flatten() {
            let r = &mut op.responses.responses;
            let mut add = |code: &str, what: &str| {
                r.entry(code.to_string()).or_insert_with(|| error(what));
            };
            if op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                add(
                    "400",
                    "the request cannot be answered as sent; `reason` says why: invalid_json, invalid_utf8, \
                     unknown_field, invalid_request, or the endpoint's own (empty_text, invalid_identifier...)",
                );
            }
            if op.request_body.is_some() {
                let limit = hearth_inference::MAX_BODY_BYTES;
                add("413", &format!("`too_large`: the body is over {limit} bytes"));
            }
            add("401", "`bad_api_key`: on the loopback listener, the API key is missing or wrong");
            add(
                "403",
                "`forbidden`: the caller's role may not call this endpoint (recorded in the audit log)",
            );
        }
    }
}

/// The document.
pub fn document() -> OpenApi {
    let mut doc = crate::api::api().into_openapi();
    doc.merge(hearth_inference::openapi());
    doc.info = InfoBuilder::new()
        .title("Hearth participant")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The endpoints a Hearth participant serves to its institution's apps, on its mTLS port. The \
             caller is its client certificate, from the consortium CA, with its role (app, operator, dpo) in \
             a urn:hearth:<role>:<id> SAN and the institution it acts for in a urn:hearth:institution:<id> \
             SAN: only this institution's callers are answered. The optional loopback listener takes the \
             API key as a bearer token instead and acts as this institution's app. Every error is {\"error\": {\"code\", \"reason\", \
             \"message\"}} with a stable reason. The same inference answers are served over gRPC \
             (hearth.v1.Inference) on the same port.",
        ))
        .build();
    let extra = ComponentsBuilder::new()
        .schema_from::<ErrorBody>()
        .security_scheme(
            "mutualTLS",
            SecurityScheme::MutualTls {
                description: Some(
                    "a client certificate from the consortium CA; the role comes from its \
                     urn:hearth:<role>:<id> SAN"
                        .into(),
                ),
                extensions: None,
            },
        )
        .security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the loopback listener only ([service.local]); acts as an app"))
                    .build(),
            ),
        )
        .build();
    match &mut doc.components {
        Some(c) => {
            c.schemas.extend(extra.schemas);
            c.security_schemes.extend(extra.security_schemes);
        }
        None => doc.components = Some(extra),
    }
    doc.security = Some(vec![
        SecurityRequirement::new("mutualTLS", Vec::<String>::new()),
        SecurityRequirement::new("apiKey", Vec::<String>::new()),
    ]);
    doc.tags = Some(vec![
        TagBuilder::new()
            .name("desk")
            .description(Some("customer messages, identities, history, erasure, rules and workflows"))
            .build(),
        TagBuilder::new()
            .name("agent")
            .description(Some("the contact-centre agents' queues and conversations"))
            .build(),
        TagBuilder::new()
            .name("inference")
            .description(Some("the served models, one endpoint per family"))
            .build(),
    ]);
    add_common_errors(&mut doc);
    doc
}

/// The document as served, built once.
pub fn served() -> &'static serde_json::Value {
    // Serialising plain data (strings, maps, numbers) cannot fail; the unit tests read this value.
    static DOC: LazyLock<serde_json::Value> =
        LazyLock::new(|| serde_json::to_value(document()).unwrap_or_default());
    &DOC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_schemas() {
        let doc = served();
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path) in [
            ("post", "/v1/messages"),
            ("get", "/v1/customers/{id}/history"),
            ("delete", "/v1/customers/{id}"),
            ("post", "/v1/admin/rules/reload"),
            ("get", "/v1/admin/workflows/{id}"),
            ("get", "/v1/admin/dead-letters"),
            ("get", "/v1/agent/queues"),
            ("post", "/v1/agent/claim"),
            ("get", "/v1/agent/conversations/{id}"),
            ("post", "/v1/agent/conversations/{id}/reply"),
            ("post", "/v1/agent/conversations/{id}/transfer"),
            ("post", "/v1/agent/conversations/{id}/close"),
            ("get", "/v1/openapi.json"),
            ("post", "/v1/intent"),
            ("post", "/v1/emotion"),
            ("post", "/v1/recommend"),
            ("get", "/v1/health"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not in the OpenAPI document");
            let ok = &op["responses"]["200"]["content"]["application/json"]["schema"];
            assert!(ok["$ref"].is_string(), "{method} {path}: its answer has no schema of its own: {ok}");
            for code in ["401", "403"] {
                assert!(op["responses"][code].is_object(), "{method} {path} does not document {code}");
            }
        }
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["mutualTLS"]["type"], "mutualTLS");
        assert_eq!(schemes["apiKey"]["scheme"], "bearer");
    }

    #[test]
    fn the_message_schema_states_what_the_desk_enforces() {
        let doc = served();
        let body = &doc["components"]["schemas"]["MessageBody"];
        assert_eq!(body["additionalProperties"], false, "{body}");
        let text = &body["properties"]["text"];
        assert_eq!(text["minLength"], 1);
        assert_eq!(text["maxLength"], hearth_inference::MAX_TEXT_CHARS);
        assert_eq!(
            body["properties"]["channel"]["enum"].as_array().unwrap().len(),
            crate::rules::CHANNELS.len()
        );
        let ids = &body["properties"]["identifiers"];
        assert_eq!(ids["minProperties"], 1, "{ids}");
        assert_eq!(ids["additionalProperties"], false, "{ids}");
    }
}
