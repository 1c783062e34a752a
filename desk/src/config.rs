//! The desk's configuration (`[service]` in a participant's file), parsed once when it is loaded: durations
//! as [`Duration`]s (`"30m"`, `"365d"`, humantime's syntax), addresses as [`SocketAddr`]s, the country code
//! as a [`CountryCode`]. A value that does not parse is refused by the loader, naming the file and key;
//! [`DeskConfig::check`] then states what the types cannot (a loopback-only listener).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::api::ApiKey;
use crate::error::LocalError;
use crate::policy::RetentionConfig;

/// The `[service]` section of a participant's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeskConfig {
    /// The routing and workflow rules file; default `<data_dir>/rules.toml`, written from the shipped
    /// default on first start.
    pub rules_file: Option<PathBuf>,
    /// How often the rules file's modification time is checked.
    #[serde(with = "humantime_serde")]
    pub rules_poll: Duration,
    /// A message within this long of the customer's last one continues the session, whatever the
    /// channel.
    #[serde(with = "humantime_serde")]
    pub session_window: Duration,
    /// Country calling code given to phone numbers written without `+` (e.g. `"86"`); none by default.
    pub default_country_code: Option<CountryCode>,
    /// How often the retention job runs.
    #[serde(with = "humantime_serde")]
    pub retention_sweep: Duration,
    /// The data minimisation policy.
    pub retention: RetentionConfig,
    /// The loopback listener for local apps (plain HTTP, API key); off unless `listen` is set.
    pub local: LocalConfig,
    /// A file holding the secret workflow webhooks are signed with (Standard Webhooks: `whsec_` and the
    /// base64 of 24 to 64 random bytes), which the receiving systems verify them with. Unset: calls go
    /// unsigned.
    pub webhook_secret_file: Option<PathBuf>,
    /// A PEM file of the CA certificates `https://` webhook receivers' certificates must chain to. Unset:
    /// the system's bundle (`/etc/ssl/certs/ca-certificates.crt`).
    pub webhook_ca_file: Option<PathBuf>,
}

impl Default for DeskConfig {
    fn default() -> Self {
        Self {
            rules_file: None,
            rules_poll: Duration::from_secs(1),
            session_window: Duration::from_secs(30 * 60),
            default_country_code: None,
            retention_sweep: Duration::from_secs(60),
            retention: RetentionConfig::default(),
            local: LocalConfig::default(),
            webhook_secret_file: None,
            webhook_ca_file: None,
        }
    }
}

impl DeskConfig {
    /// What the types cannot say: the local listener is on loopback, the periodic jobs have a period.
    /// The error is the key under `[service]` and the problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(addr) = self.local.listen.filter(|a| !a.ip().is_loopback()) {
            return Err(("local.listen", LocalError::NotLoopback(addr).to_string()));
        }
        for (key, period) in [("rules_poll", self.rules_poll), ("retention_sweep", self.retention_sweep)] {
            if period.is_zero() {
                return Err((key, "must be longer than 0s".into()));
            }
        }
        Ok(())
    }
}

/// A text that is not a country calling code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a country calling code: give 1 to 3 digits, e.g. \"86\"")]
pub struct CountryCodeError(pub String);

/// A country calling code: 1 to 3 digits, written without `+` (`"86"`; a TOML integer `86` is read too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryCode(String);

impl CountryCode {
    /// `code` if it is 1 to 3 digits.
    pub fn new(code: &str) -> Result<Self, CountryCodeError> {
        let code = code.strip_prefix('+').unwrap_or(code);
        if code.is_empty() || code.len() > 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CountryCodeError(code.chars().take(20).collect()));
        }
        Ok(Self(code.to_string()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for CountryCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CountryCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a country calling code of 1 to 3 digits, e.g. \"86\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CountryCode, E> {
                CountryCode::new(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CountryCode, E> {
                CountryCode::new(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CountryCode, E> {
                CountryCode::new(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Shortest API key accepted.
pub const MIN_API_KEY_CHARS: usize = 24;

/// `[service.local]`: the loopback API-key listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// A loopback address (`127.0.0.1:7880`, `[::1]:7880`); unset: no listener.
    pub listen: Option<SocketAddr>,
    /// The environment variable holding the API key.
    pub api_key_env: String,
    /// A file whose first line is the API key (wins over the variable).
    pub api_key_file: Option<PathBuf>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self { listen: None, api_key_env: "HEARTH_SERVICE_API_KEY".into(), api_key_file: None }
    }
}

impl LocalConfig {
    /// The address to listen on and the key's digest, or why the listener cannot start.
    pub fn resolve(&self) -> Result<Option<(SocketAddr, ApiKey)>, LocalError> {
        let Some(addr) = self.listen else { return Ok(None) };
        if !addr.ip().is_loopback() {
            return Err(LocalError::NotLoopback(addr));
        }
        let key = match &self.api_key_file {
            Some(p) => Zeroizing::new(
                std::fs::read_to_string(p)
                    .map_err(|source| LocalError::KeyFile { path: p.clone(), source })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            None => Zeroizing::new(
                std::env::var(&self.api_key_env).map_err(|_| LocalError::NoKey(self.api_key_env.clone()))?,
            ),
        };
        if key.chars().count() < MIN_API_KEY_CHARS {
            return Err(LocalError::ShortKey(MIN_API_KEY_CHARS));
        }
        Ok(Some((addr, ApiKey::new(&key))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_addresses_and_country_codes_parse_once_and_name_what_is_wrong() {
        let c: DeskConfig = toml::from_str(
            "session_window = \"45m\"\ndefault_country_code = 86\n[local]\nlisten = \"127.0.0.1:7880\"\n",
        )
        .unwrap();
        assert_eq!(c.session_window, Duration::from_secs(45 * 60));
        assert_eq!(c.default_country_code.as_ref().map(CountryCode::as_str), Some("86"));
        assert_eq!(c.local.listen, Some("127.0.0.1:7880".parse().unwrap()));
        let text: DeskConfig = toml::from_str("default_country_code = \"+44\"").unwrap();
        assert_eq!(text.default_country_code.unwrap().as_str(), "44");
        for (bad, says) in [
            ("session_window = \"30\"", "session_window"),
            ("retention_sweep = \"soon\"", "retention_sweep"),
            ("default_country_code = \"0086\"", "country calling code"),
            ("[local]\nlisten = \"localhost\"", "listen"),
        ] {
            let e = toml::from_str::<DeskConfig>(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let outside = DeskConfig {
            local: LocalConfig { listen: Some("0.0.0.0:7880".parse().unwrap()), ..Default::default() },
            ..Default::default()
        };
        let (key, problem) = outside.check().unwrap_err();
        assert_eq!(key, "local.listen");
        assert!(problem.contains("not a loopback"), "{problem}");
        // The defaults write out as the reference file shows them.
        let written = toml::to_string(&DeskConfig::default()).unwrap();
        assert!(written.contains("session_window = \"30m\""), "{written}");
    }

    #[test]
    fn the_api_key_comes_from_a_file_or_a_variable_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "short\n").unwrap();
        let c = LocalConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            api_key_file: Some(file.clone()),
            ..Default::default()
        };
        assert!(matches!(c.resolve(), Err(LocalError::ShortKey(_))));
        std::fs::write(&file, "a-long-enough-api-key-0123456789\n").unwrap();
        let (_, key) = c.resolve().unwrap().unwrap();
        assert!(key.matches("a-long-enough-api-key-0123456789"));
        let missing = LocalConfig { api_key_env: "HEARTH_TEST_NO_SUCH_VARIABLE".into(), ..c };
        let missing = LocalConfig { api_key_file: None, ..missing };
        assert!(
            matches!(missing.resolve(), Err(LocalError::NoKey(v)) if v == "HEARTH_TEST_NO_SUCH_VARIABLE")
        );
        let outside = LocalConfig { listen: Some("10.0.0.1:7880".parse().unwrap()), ..missing };
        assert!(matches!(outside.resolve(), Err(LocalError::NotLoopback(_))));
        assert!(LocalConfig::default().resolve().unwrap().is_none());
    }
}
