//! `POST /v1/recommend` and `Inference/Recommend`: items to offer a customer, from any of: their
//! purchase history at this institution (`customer_id`), items they just bought or looked at (`items`),
//! and the products the conversation names (`text`). With none of these (a new customer, a message that
//! names no product) the answer is this institution's most popular items, `cold_start: true`.
//!
//! ```text
//! POST /v1/recommend {"customer_id": "17850", "text": "my red retrospot lunch bag arrived broken", "top_k": 3}
//! 200 {"items": [{"item": "22382", "score": 1.56, "description": "LUNCH BAG SPACEBOY DESIGN"}, ...],
//!      "cold_start": false, "mentioned_items": ["20725"], "history_items": 31,
//!      "model": {"job_id": "recommend", "version": 2}}
//! ```
//!
//! An unknown customer is a 404 (`unknown_customer`), not a silent cold start: a mistyped id should not
//! look like a new customer. An unknown item is a 404 too (`unknown_item`), naming it. When the
//! customer's history and the request's items together pass [`MAX_HISTORY`], the most recent ones count.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::{Extension, Json};
use bytes::Bytes;
use hearth_models::recommend::{Interactions, ItemMentions, Seen, MAX_HISTORY, MAX_ITEM_BYTES, MAX_TOP_K};
use hearth_models::{ModelError, RecommendModel};
use hearth_proto::v1;
use hearth_transport::PeerIdentity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::slots::{ModelSlots, Slots};
use crate::text::{items_schema, optional_customer_schema, optional_text_schema};
use crate::{
    blocking, body_bytes, checked_text, checked_utf8, parse_body, ApiError, Auditor, Body, ErrorBody,
    ModelRef,
};

/// A recommender in service: the global model with this institution's popular items, its customers'
/// histories and its product descriptions.
#[derive(Debug)]
pub struct Recommender {
    /// The model, its calibration holding the popular items.
    pub model: RecommendModel,
    /// This institution's customers and what each bought, against the model's catalogue.
    customers: Interactions,
    /// Finds the products a message names.
    mentions: ItemMentions,
    /// Descriptions of the catalogue's items this institution sells.
    descriptions: HashMap<String, String>,
}

impl Recommender {
    /// The served recommender: `model` with this institution's `customers`, the products a message may
    /// name (`mentions`) and the descriptions of the items it sells.
    pub fn new(
        model: RecommendModel,
        customers: Interactions,
        mentions: ItemMentions,
        descriptions: HashMap<String, String>,
    ) -> Self {
        Self { model, customers, mentions, descriptions }
    }
}

/// Items returned when the request does not say.
pub const DEFAULT_TOP_K: u32 = 10;
/// Most products taken from one message.
pub const MAX_MENTIONS: usize = 3;

/// Body of `POST /v1/recommend`; every field optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendBody {
    /// The customer, as this institution knows them.
    #[serde(default)]
    #[schema(schema_with = optional_customer_schema)]
    pub customer_id: Option<String>,
    /// Items (stock codes) bought or looked at recently; repeats count more.
    #[serde(default)]
    #[schema(schema_with = history_items)]
    pub items: Vec<String>,
    /// The conversation: products it names join the history.
    #[serde(default)]
    #[schema(schema_with = optional_text_schema)]
    pub text: Option<String>,
    /// How many items to return (absent or `null`: 10).
    #[serde(default, deserialize_with = "crate::whole_number")]
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: Option<u32>,
}

fn history_items() -> utoipa::openapi::schema::ArrayBuilder {
    items_schema(MAX_REQUEST_ITEMS)
}

/// Most items one request may name (the customer's stored history may hold up to [`MAX_HISTORY`]).
pub const MAX_REQUEST_ITEMS: usize = 1000;

impl Body for RecommendBody {
    const FIELDS: &'static [&'static str] = &["customer_id", "items", "text", "top_k"];
}

/// A recommended item.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemScore {
    /// Item id (stock code).
    pub item: String,
    /// Predicted preference; for a cold start, the item's buyers at this institution.
    pub score: f32,
    /// The product's description, when this institution's data has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

/// Answer of `POST /v1/recommend`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecommendAnswer {
    /// Best first; never an item of the history.
    pub items: Vec<ItemScore>,
    /// True when there was no history: the items are this institution's most popular.
    pub cold_start: bool,
    /// Items the conversation was understood to name.
    pub mentioned_items: Vec<String>,
    /// Purchases in the history the recommendation started from.
    pub history_items: usize,
    /// Job and version of the model that answered.
    pub model: ModelRef,
}

fn checked_customer(id: &str) -> Result<&str, ApiError> {
    let id = id.trim();
    if id.is_empty() || id.len() > MAX_ITEM_BYTES || id.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "invalid_customer_id",
            format!("customer_id must be 1 to {MAX_ITEM_BYTES} bytes without control characters"),
        ));
    }
    Ok(id)
}

/// Validates and answers one request against the served recommender.
pub fn answer(slots: &Slots, req: RecommendBody) -> Result<RecommendAnswer, ApiError> {
    let k = req.top_k.unwrap_or(DEFAULT_TOP_K) as usize;
    if !(1..=MAX_TOP_K).contains(&k) {
        return Err(ApiError::bad("top_k_out_of_range", format!("top_k {k} must be 1 to {MAX_TOP_K}")));
    }
    if req.items.len() > MAX_REQUEST_ITEMS {
        return Err(ApiError::bad(
            "too_many_items",
            format!("{} items; at most {MAX_REQUEST_ITEMS}", req.items.len()),
        ));
    }
    let text = req.text.as_deref().map(checked_text).transpose()?;
    let customer = req.customer_id.as_deref().map(checked_customer).transpose()?;
    // One load: the whole answer comes from a single model even if a swap happens meanwhile.
    if slots.replica {
        return Err(ApiError::NotServedHere("recommend"));
    }
    let served = slots.recommend.load_full().ok_or(ApiError::NoModel("recommend"))?;
    let r = &served.model;
    let mut history: Vec<Seen> = match customer {
        None => Vec::new(),
        Some(c) => r.customers.history(&r.model.spec, c).map_err(|_| ApiError::NotFound {
            reason: "unknown_customer",
            message: format!(
                "customer {c:?} has no purchase history at this institution; send their recent items or \
                 the conversation, or leave customer_id out to get this institution's popular items"
            ),
        })?,
    };
    r.model.lookup(&req.items).map_err(|e| match e {
        ModelError::UnknownItem(item) => {
            let item: String = item.chars().take(MAX_ITEM_BYTES).collect();
            ApiError::NotFound {
                reason: "unknown_item",
                message: format!("item {item:?} is not in the model's catalogue"),
            }
        }
        other => ApiError::bad("invalid_request", other.to_string()),
    })?;
    history.extend(req.items.iter().map(|i| Seen::now(i.trim())));
    let mentioned = text.map_or_else(Vec::new, |t| r.mentions.find(t, MAX_MENTIONS));
    history.extend(mentioned.iter().map(Seen::now));
    // The most recent purchases count when there are more than a history may hold.
    let over = history.len().saturating_sub(MAX_HISTORY);
    history.drain(..over);
    let recs = r.model.recommend(&history, k).map_err(|e| ApiError::Internal(e.to_string()))?;
    let items = recs
        .items
        .into_iter()
        .map(|i| ItemScore {
            description: r.descriptions.get(&i.item).cloned(),
            item: i.item,
            score: i.score,
        })
        .collect();
    Ok(RecommendAnswer {
        items,
        cold_start: recs.cold_start,
        mentioned_items: mentioned,
        history_items: history.len(),
        model: ModelRef { job_id: served.job_id.clone(), version: served.version },
    })
}

/// Items to offer a customer (callers: this institution's app and operator certificates).
#[utoipa::path(post, path = "/v1/recommend", operation_id = "recommend", tag = "inference", request_body = RecommendBody,
    responses(
        (status = 200, body = RecommendAnswer, description = "items to offer, best first"),
        (status = 404, body = ErrorBody, description = "`unknown_customer` (no purchase history here) or `unknown_item` (not in the catalogue)"),
        (status = 503, body = ErrorBody, description = "`no_model`: no recommender has been committed yet"),
    ))]
pub(crate) async fn http(
    Extension(slots): Extension<ModelSlots>,
    Extension(peer): Extension<PeerIdentity>,
    Extension(auditor): Extension<Auditor>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RecommendAnswer>, ApiError> {
    auditor.check(&peer.0)?;
    let body: RecommendBody = parse_body(&body_bytes(body)?)?;
    blocking(move || answer(&slots, body)).await.map(Json)
}

pub(crate) fn grpc(slots: &Arc<Slots>, req: v1::RecommendRequest) -> Result<v1::RecommendReply, ApiError> {
    let body = RecommendBody {
        customer_id: (!req.customer_id.is_empty()).then_some(req.customer_id),
        items: req.items,
        text: if req.text.is_empty() { None } else { Some(checked_utf8(&req.text)?.to_string()) },
        top_k: (req.top_k != 0).then_some(req.top_k),
    };
    let a = answer(slots, body)?;
    Ok(v1::RecommendReply {
        items: a
            .items
            .into_iter()
            .map(|i| v1::ItemScore {
                item: i.item,
                score: i.score,
                description: i.description.unwrap_or_default(),
            })
            .collect(),
        cold_start: a.cold_start,
        mentioned_items: a.mentioned_items,
        history_items: a.history_items as u32,
        job_id: a.model.job_id,
        model_version: a.model.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_states_the_limits() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        let body = &doc["components"]["schemas"]["RecommendBody"]["properties"];
        assert_eq!(body["top_k"]["maximum"], MAX_TOP_K, "{body}");
        assert_eq!(body["items"]["maxItems"], MAX_REQUEST_ITEMS, "{body}");
    }

    #[test]
    fn refuses_bad_requests_before_touching_the_model() {
        let slots = Slots::default();
        let reason = |b: RecommendBody| answer(&slots, b).unwrap_err().reason();
        assert_eq!(reason(RecommendBody { top_k: Some(0), ..Default::default() }), "top_k_out_of_range");
        assert_eq!(reason(RecommendBody { top_k: Some(101), ..Default::default() }), "top_k_out_of_range");
        let many = vec!["85123A".to_string(); MAX_REQUEST_ITEMS + 1];
        assert_eq!(reason(RecommendBody { items: many, ..Default::default() }), "too_many_items");
        assert_eq!(reason(RecommendBody { text: Some(" ".into()), ..Default::default() }), "empty_text");
        assert_eq!(
            reason(RecommendBody { customer_id: Some("".into()), ..Default::default() }),
            "invalid_customer_id"
        );
        assert_eq!(reason(RecommendBody::default()), "no_model");
        let bad = v1::RecommendRequest { text: Bytes::from_static(&[0xc3]), ..Default::default() };
        assert_eq!(grpc(&Arc::new(Slots::default()), bad).unwrap_err().reason(), "invalid_utf8");
    }
}
