//! The request and answer of `POST /v1/messages`, as apps see them; their schemas in the OpenAPI
//! document are derived from these types, with the limits [`crate::identity`] and
//! [`crate::Desk::message`] enforce.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::rules;
use hearth_inference::text::text_schema;
use hearth_inference::Body;

/// A phone number the desk accepts: `+` (or `00`) and 6 to 15 digits with the country code, or a
/// national number of 6 to 12 digits (the configured default country code is put in front); single
/// spaces, dashes, dots or parentheses may separate the digits.
pub const PHONE_PATTERN: &str =
    r"^((\+|00)[0-9]([ ().-]?[0-9]){5,14}|([1-9][0-9]|0[1-9])([ ().-]?[0-9]){4,10})$";
/// An email address the desk accepts (ASCII, so that its length in bytes is its length in characters).
pub const EMAIL_PATTERN: &str = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$";
/// An OpenID or device fingerprint the desk accepts.
pub const OPAQUE_PATTERN: &str = r"^[A-Za-z0-9_.:=+/-]{1,128}$";

/// The identifiers a message may carry; at least one.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Identifiers {
    /// A phone number.
    #[schema(schema_with = phone_schema)]
    pub phone: Option<String>,
    /// An email address (compared in lower case).
    #[schema(schema_with = email_schema)]
    pub email: Option<String>,
    /// A WeChat OpenID (or another platform's user id).
    #[schema(schema_with = opaque_schema)]
    pub openid: Option<String>,
    /// A device fingerprint.
    #[schema(schema_with = opaque_schema)]
    pub device: Option<String>,
}

fn string_schema(pattern: &str, description: &str) -> RefOr<Schema> {
    let s = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(pattern))
        .description(Some(description));
    RefOr::T(s.build().into())
}

fn phone_schema() -> RefOr<Schema> {
    string_schema(
        PHONE_PATTERN,
        "A phone number: + and the country code, or a national number (the default country code is put in front).",
    )
}

fn email_schema() -> RefOr<Schema> {
    let s = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(EMAIL_PATTERN))
        .max_length(Some(crate::identity::MAX_EMAIL_BYTES))
        .description(Some("An email address."));
    RefOr::T(s.build().into())
}

fn opaque_schema() -> RefOr<Schema> {
    string_schema(OPAQUE_PATTERN, "1 to 128 letters, digits and - _ . : = + /.")
}

/// [`Identifiers`] with at least one of them (stated here: the derive has no minimum of properties).
fn identifiers_schema() -> RefOr<Schema> {
    let mut s = <Identifiers as utoipa::PartialSchema>::schema();
    if let RefOr::T(Schema::Object(o)) = &mut s {
        o.min_properties = Some(1);
    }
    s
}

fn channel_schema() -> RefOr<Schema> {
    let s = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(rules::CHANNELS))
        .description(Some("The channel the message came through (`phone`: a call transcript)."));
    RefOr::T(s.build().into())
}

/// A customer's tier or an order id: letters, digits, `-`, `_`, `.`.
fn label_schema(max: usize, description: &str) -> RefOr<Schema> {
    let t = SchemaType::from_iter([Type::String, Type::Null]);
    let s = ObjectBuilder::new()
        .schema_type(t)
        .pattern(Some(format!("^[A-Za-z0-9._-]{{1,{max}}}$")))
        .description(Some(description));
    RefOr::T(s.build().into())
}

fn tier_schema() -> RefOr<Schema> {
    label_schema(MAX_TIER, "The customer's tier as the app knows it (`gold`...), for rules.")
}

fn order_schema() -> RefOr<Schema> {
    label_schema(MAX_ORDER_ID, "The order the message is about, passed to workflows.")
}

/// Longest tier.
pub const MAX_TIER: usize = 32;
/// Longest order id.
pub const MAX_ORDER_ID: usize = 64;

/// Body of `POST /v1/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// `app`, `web`, `wechat`, `sms`, `email` or `phone` (a call transcript).
    #[schema(schema_with = channel_schema)]
    pub channel: String,
    /// What the channel knows about the sender.
    #[schema(schema_with = identifiers_schema)]
    pub identifiers: Identifiers,
    /// The message.
    #[schema(schema_with = text_schema)]
    pub text: String,
    /// The customer's tier as the app knows it (`gold`...), for rules.
    #[serde(default)]
    #[schema(schema_with = tier_schema)]
    pub tier: Option<String>,
    /// The order the message is about, passed to workflows.
    #[serde(default)]
    #[schema(schema_with = order_schema)]
    pub order_id: Option<String>,
}

impl Body for MessageBody {
    const FIELDS: &'static [&'static str] = &["channel", "identifiers", "text", "tier", "order_id"];
}

/// The session in an answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StartedWorkflow {
    /// The workflow's name.
    pub workflow: String,
    /// Its run id.
    pub run_id: String,
}

/// Answer of `POST /v1/messages`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    /// The customer's open conversation with the agents (`human` and `senior` routes queue one; later
    /// messages join it), if any.
    #[schema(pattern = "^v-[0-9a-f]{32}$")]
    pub conversation_id: Option<String>,
    /// Suggested replies.
    pub replies: Vec<String>,
    /// The rules that fired, in order.
    pub rules_fired: Vec<String>,
    /// Workflows started.
    pub workflows: Vec<StartedWorkflow>,
    /// The message fields the policy stored.
    pub stored: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{normalise, Kind};
    use proptest::prelude::*;

    fn from(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
        let unanchored = pattern.trim_start_matches('^').trim_end_matches('$');
        proptest::string::string_regex(unanchored).unwrap()
    }

    proptest! {
        #[test]
        fn every_phone_number_the_schema_allows_is_accepted(p in from(PHONE_PATTERN)) {
            for cc in [None, Some("1"), Some("86"), Some("353")] {
                prop_assert!(normalise(Kind::Phone, &p, cc).is_ok(), "{p:?} with country code {cc:?}");
            }
        }

        #[test]
        fn every_email_address_the_schema_allows_is_accepted(e in from(EMAIL_PATTERN)) {
            // Longer ones break the schema's maxLength.
            if e.len() <= crate::identity::MAX_EMAIL_BYTES {
                prop_assert!(normalise(Kind::Email, &e, None).is_ok(), "{e:?}");
            }
        }

        #[test]
        fn every_opaque_identifier_the_schema_allows_is_accepted(o in from(OPAQUE_PATTERN)) {
            prop_assert!(normalise(Kind::OpenId, &o, None).is_ok(), "{o:?}");
            prop_assert!(normalise(Kind::Device, &o, None).is_ok(), "{o:?}");
        }
    }
}
