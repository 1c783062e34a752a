//! The data minimisation policy: which fields of a message may be stored, and for how long; how long an
//! inactive customer and a finished workflow run are kept. Everything the policy does not name is
//! dropped at the door ([`Policy::keep`]); the retention job ([`Policy::expired`]) removes what outlived
//! its period. Channel identifiers are never a storable field: only their keyed hashes are kept, for as
//! long as the customer is.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The fields of a message the policy may allow to be stored.
pub const STORABLE_FIELDS: [&str; 8] =
    ["text", "channel", "intent", "emotion", "route", "priority", "order_id", "tier"];

/// The policy as configured (`[service.retention]`): durations as `"30d"`, `"12h"`, `"15m"`, `"90s"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Field name to how long it is kept; a field not listed is never stored.
    pub fields: BTreeMap<String, String>,
    /// A customer (their links, sessions and remaining messages) is erased after this long without a
    /// message.
    pub customer: String,
    /// A finished workflow run's record is removed after this long.
    pub workflow: String,
    /// Most messages kept per customer; the oldest go first.
    pub max_messages: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let fields = [
            ("text", "30d"),
            ("channel", "365d"),
            ("intent", "365d"),
            ("emotion", "365d"),
            ("route", "365d"),
            ("priority", "365d"),
            ("order_id", "90d"),
        ];
        Self {
            fields: fields.iter().map(|(f, d)| (f.to_string(), d.to_string())).collect(),
            customer: "365d".into(),
            workflow: "90d".into(),
            max_messages: 200,
        }
    }
}

/// A checked [`RetentionConfig`].
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

/// Parses `"30d"`, `"12h"`, `"15m"`, `"90s"`, naming `what` in the error.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("{what}: {s:?} is not a duration like \"30d\""))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{what}: {s:?} needs a unit: s, m, h or d (e.g. \"30d\")")),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("{what}: {s:?} is too long"))
}

impl Policy {
    /// Checks the configured policy: every field is storable, every duration parses.
    pub fn from_config(c: &RetentionConfig) -> Result<Self, String> {
        let mut fields = BTreeMap::new();
        for (name, d) in &c.fields {
            let Some(f) = STORABLE_FIELDS.iter().find(|f| **f == name) else {
                return Err(format!(
                    "[service.retention.fields]: {name:?} is not a storable field; choose from {}",
                    STORABLE_FIELDS.join(", ")
                ));
            };
            fields.insert(*f, parse_duration(&format!("[service.retention.fields] {name}"), d)?);
        }
        Ok(Self {
            fields,
            customer: parse_duration("[service.retention] customer", &c.customer)?,
            workflow: parse_duration("[service.retention] workflow", &c.workflow)?,
            max_messages: c.max_messages.max(1),
        })
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
    fn durations_parse_and_errors_name_the_setting() {
        assert_eq!(parse_duration("x", "30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_duration("x", "90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("ttl", "30").unwrap_err().contains("ttl"));
        assert!(parse_duration("ttl", "d").unwrap_err().contains("not a duration"));
        assert!(parse_duration("ttl", "99999999999999999999d").is_err());
    }

    #[test]
    fn unlisted_fields_are_never_kept_and_listed_ones_expire() {
        let p = Policy::from_config(&RetentionConfig::default()).unwrap();
        assert!(p.keep("text") && !p.keep("tier") && !p.keep("phone"));
        assert!(!p.expired("text", 100, 100 + 29 * 86_400));
        assert!(p.expired("text", 100, 100 + 30 * 86_400));
        assert!(p.expired("tier", 100, 100), "an unlisted field is always expired");
        let mut c = RetentionConfig::default();
        c.fields.insert("phone".into(), "1d".into());
        assert!(Policy::from_config(&c).unwrap_err().contains("\"phone\" is not a storable field"));
    }
}
