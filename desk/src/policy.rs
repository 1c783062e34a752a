//! The data minimisation policy: which fields of a message may be stored, and for how long; how long an
//! inactive customer and a finished workflow run are kept. Everything the policy does not name is
//! dropped at the door ([`Policy::keep`]); the retention job ([`Policy::expired`]) removes what outlived
//! its period. Channel identifiers are never a storable field: only their keyed hashes are kept, for as
//! long as the customer is.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A field of a message the policy may allow to be stored; channel identifiers are never one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorableField {
    /// The message text.
    Text,
    /// The channel it came on.
    Channel,
    /// The intent model's label.
    Intent,
    /// The emotion model's labels.
    Emotion,
    /// Where the rules routed it.
    Route,
    /// Its priority.
    Priority,
    /// The order it named.
    OrderId,
    /// The customer's tier.
    Tier,
}

impl StorableField {
    /// The field's name in messages and in `[service.retention.fields]`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorableField::Text => "text",
            StorableField::Channel => "channel",
            StorableField::Intent => "intent",
            StorableField::Emotion => "emotion",
            StorableField::Route => "route",
            StorableField::Priority => "priority",
            StorableField::OrderId => "order_id",
            StorableField::Tier => "tier",
        }
    }
}

/// The policy as configured (`[service.retention]`): durations as `"30d"`, `"12h"`, `"15m"`, `"90s"`
/// (humantime's syntax), parsed when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Field to how long it is kept; a field not listed is never stored.
    #[serde(with = "periods")]
    pub fields: BTreeMap<StorableField, Duration>,
    /// A customer (their links, sessions and remaining messages) is erased after this long without a
    /// message.
    #[serde(with = "humantime_serde")]
    pub customer: Duration,
    /// A finished workflow run's record is removed after this long.
    #[serde(with = "humantime_serde")]
    pub workflow: Duration,
    /// Most messages kept per customer (at least 1); the oldest go first.
    pub max_messages: usize,
}

const DAY: u64 = 86_400;

impl Default for RetentionConfig {
    fn default() -> Self {
        use StorableField::*;
        let fields = [
            (Text, 30),
            (Channel, 365),
            (Intent, 365),
            (Emotion, 365),
            (Route, 365),
            (Priority, 365),
            (OrderId, 90),
        ];
        Self {
            fields: fields.iter().map(|(f, days)| (*f, Duration::from_secs(days * DAY))).collect(),
            customer: Duration::from_secs(365 * DAY),
            workflow: Duration::from_secs(90 * DAY),
            max_messages: 200,
        }
    }
}

/// `[service.retention.fields]`: a table of field names to humantime durations.
mod periods {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::StorableField;

    pub(super) fn serialize<S: Serializer>(
        m: &BTreeMap<StorableField, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(f, d)| (f, humantime::format_duration(*d).to_string())))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<StorableField, Duration>, D::Error> {
        let raw = BTreeMap::<StorableField, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(f, v)| match humantime::parse_duration(&v) {
                Ok(d) => Ok((f, d)),
                Err(e) => Err(serde::de::Error::custom(format!(
                    "{}: {v:?} is not a duration like \"30d\": {e}",
                    f.as_str()
                ))),
            })
            .collect()
    }
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    fields: BTreeMap<&'static str, Duration>,
    /// Inactivity after which a customer is erased.
    pub customer: Duration,
    /// Age after which a finished workflow run is removed.
    pub workflow: Duration,
    /// Most messages kept per customer.
    pub max_messages: usize,
}

impl Policy {
    /// The policy a configuration states.
    pub fn from_config(c: &RetentionConfig) -> Self {
        Self {
            fields: c.fields.iter().map(|(f, d)| (f.as_str(), *d)).collect(),
            customer: c.customer,
            workflow: c.workflow,
            max_messages: c.max_messages.max(1),
        }
    }

    /// Whether `field` may be stored at all.
    pub fn keep(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// The fields that may be stored, for the response's `stored` list.
    pub fn kept(&self) -> Vec<&'static str> {
        self.fields.keys().copied().collect()
    }

    /// Whether `field`, stored at `stored_at` (Unix seconds), has outlived its period at `now`.
    pub fn expired(&self, field: &str, stored_at: u64, now: u64) -> bool {
        self.fields.get(field).is_none_or(|d| now.saturating_sub(stored_at) >= d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_fields_are_never_kept_and_listed_ones_expire() {
        let p = Policy::from_config(&RetentionConfig::default());
        assert!(p.keep("text") && !p.keep("tier") && !p.keep("phone"));
        assert!(!p.expired("text", 100, 100 + 29 * 86_400));
        assert!(p.expired("text", 100, 100 + 30 * 86_400));
        assert!(p.expired("tier", 100, 100), "an unlisted field is always expired");
        let e = toml::from_str::<RetentionConfig>("[fields]\nphone = \"1d\"").unwrap_err().to_string();
        assert!(e.contains("unknown variant `phone`") && e.contains("order_id"), "{e}");
        let e = toml::from_str::<RetentionConfig>("[fields]\ntext = \"30\"").unwrap_err().to_string();
        assert!(e.contains("text: \"30\" is not a duration"), "{e}");
        let c: RetentionConfig = toml::from_str("customer = \"2y\"\n[fields]\ntext = \"12h\"").unwrap();
        assert_eq!(c.fields[&StorableField::Text], Duration::from_secs(12 * 3600));
        assert!(c.customer > Duration::from_secs(700 * DAY));
    }
}
