//! The request and answer of `POST /v1/messages`, as apps see them (the OpenAPI document in
//! `openapi.rs` describes the same shapes).

use serde::{Deserialize, Serialize};

use super::rules;
use hearth_inference::Body;

/// The identifiers a message may carry; at least one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifiers {
    /// A phone number.
    pub phone: Option<String>,
    /// An email address.
    pub email: Option<String>,
    /// A WeChat OpenID (or another platform's user id).
    pub openid: Option<String>,
    /// A device fingerprint.
    pub device: Option<String>,
}

/// Body of `POST /v1/messages`.
#[derive(Debug, Deserialize)]
pub struct MessageBody {
    /// `app`, `web`, `wechat`, `sms`, `email` or `phone` (a call transcript).
    pub channel: String,
    /// What the channel knows about the sender.
    pub identifiers: Identifiers,
    /// The message.
    pub text: String,
    /// The customer's tier as the app knows it (`gold`...), for rules.
    #[serde(default)]
    pub tier: Option<String>,
    /// The order the message is about, passed to workflows.
    #[serde(default)]
    pub order_id: Option<String>,
}

impl Body for MessageBody {
    const FIELDS: &'static [&'static str] = &["channel", "identifiers", "text", "tier", "order_id"];
}

/// The session in an answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionView {
    /// `s-` and 32 hex digits.
    pub id: String,
    /// Whether this message continued it (within the window, any channel).
    pub continued: bool,
    /// Channels it went through.
    pub channels: Vec<String>,
    /// Messages in it so far.
    pub messages: u32,
}

/// A started workflow in an answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartedWorkflow {
    /// The workflow's name.
    pub workflow: String,
    /// Its run id.
    pub run_id: String,
}

/// Answer of `POST /v1/messages`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageAnswer {
    /// The pseudonymous customer id.
    pub customer_id: String,
    /// Whether this message made a new customer.
    pub new_customer: bool,
    /// Customers found to be the same person and merged into this one.
    pub merged_customers: Vec<String>,
    /// The session.
    pub session: SessionView,
    /// The intent model's answer; `null` when there is none (see `unavailable`).
    pub intent: Option<hearth_inference::intent::IntentAnswer>,
    /// The emotion model's answer; `null` when there is none.
    pub emotion: Option<hearth_inference::emotion::EmotionAnswer>,
    /// Recommendations from the products the message names or this institution's popular items.
    pub recommendations: Option<hearth_inference::recommend::RecommendAnswer>,
    /// For each family that did not answer, why.
    pub unavailable: std::collections::BTreeMap<String, String>,
    /// How urgent (`low`, `normal`, `high`, `urgent`).
    pub priority: rules::Priority,
    /// Where it goes (`self_service`, `bot`, `human`, `senior`).
    pub route: rules::Route,
    /// Suggested replies.
    pub replies: Vec<String>,
    /// The rules that fired, in order.
    pub rules_fired: Vec<String>,
    /// Workflows started.
    pub workflows: Vec<StartedWorkflow>,
    /// The message fields the policy stored.
    pub stored: Vec<String>,
}
