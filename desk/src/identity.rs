//! Channel identifiers (phone, email, WeChat OpenID, device fingerprint): checked, normalised, and turned
//! into keyed hashes ([`LinkHash`]) under the node's `identity-hash` key (HMAC-SHA-256, or HMAC-SM3 under
//! the national suite). The clear identifier never leaves this module: it is not stored, logged or
//! returned.
//!
//! Normalisation, so one person's identifier hashes the same whichever channel typed it:
//! - phone: separators (space, `-`, `.`, `(`, `)`) removed, a leading `00` becomes `+`; a number without
//!   `+` gets the configured default country code; then `+` and 6 to 15 digits (E.164's maximum);
//! - email: trimmed and lower-cased (the whole address: providers that treat the local part as
//!   case-sensitive are rare, and a missed link is worse here than a false one);
//! - openid, device: trimmed, 1 to 128 printable ASCII characters, case kept.
//!
//! Anything else (control characters, spaces inside, overlong values, quotes and shell or SQL syntax in
//! an OpenID) is refused with `invalid_identifier`, naming the kind but never echoing the value.

use hearth_node::keys::NodeKeys;

use hearth_inference::ApiError;

/// Most identifiers one message may carry.
pub const MAX_IDENTIFIERS: usize = 8;
/// Longest opaque identifier (OpenID, device fingerprint), in bytes.
pub const MAX_OPAQUE_BYTES: usize = 128;
/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A keyed hash of one normalised identifier: what links a customer's channels.
pub type LinkHash = [u8; 32];

/// The kinds of identifier a message may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A phone number.
    Phone,
    /// An email address.
    Email,
    /// A WeChat (or other platform) OpenID.
    OpenId,
    /// A device fingerprint.
    Device,
}

impl Kind {
    /// The field name in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Phone => "phone",
            Kind::Email => "email",
            Kind::OpenId => "openid",
            Kind::Device => "device",
        }
    }
}

fn invalid(kind: Kind, why: &str) -> ApiError {
    ApiError::bad("invalid_identifier", format!("identifiers.{}: {why}", kind.as_str()))
}

/// The normalised form of `raw`, or why it is refused.
pub fn normalise(kind: Kind, raw: &str, default_country_code: Option<&str>) -> Result<String, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid(kind, "is empty"));
    }
    if raw.len() > MAX_EMAIL_BYTES.max(MAX_OPAQUE_BYTES) {
        return Err(invalid(kind, "is too long"));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid(kind, "contains control characters"));
    }
    match kind {
        Kind::Phone => {
            let mut s: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
            if let Some(rest) = s.strip_prefix("00") {
                s = format!("+{rest}");
            }
            let digits = match s.strip_prefix('+') {
                Some(d) => d.to_string(),
                None => format!("{}{s}", default_country_code.unwrap_or("")),
            };
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    kind,
                    "must be digits, optionally with +, spaces, dashes or parentheses",
                ));
            }
            if !(6..=15).contains(&digits.len()) {
                return Err(invalid(kind, "must have 6 to 15 digits with its country code"));
            }
            Ok(format!("+{digits}"))
        }
        Kind::Email => {
            let s = raw.to_lowercase();
            let ok = s.len() <= MAX_EMAIL_BYTES
                && s.split_once('@').is_some_and(|(l, d)| {
                    !l.is_empty()
                        && d.contains('.')
                        && !d.starts_with('.')
                        && !d.ends_with('.')
                        && !d.contains('@')
                })
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ';' | '<' | '>' | '\\'));
            if ok {
                Ok(s)
            } else {
                Err(invalid(kind, "is not an email address"))
            }
        }
        Kind::OpenId | Kind::Device => {
            if raw.len() > MAX_OPAQUE_BYTES {
                return Err(invalid(kind, &format!("is longer than {MAX_OPAQUE_BYTES} bytes")));
            }
            if raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:=+/".contains(&b)) {
                Ok(raw.to_string())
            } else {
                Err(invalid(kind, "may hold only letters, digits and - _ . : = + /"))
            }
        }
    }
}

/// The keyed hash of a normalised identifier. The kind is part of the input, so a phone number and an
/// OpenID that happen to be the same string never link.
pub fn link_hash(keys: &NodeKeys, kind: Kind, normalised: &str) -> Result<LinkHash, ApiError> {
    keys.identity_hash(&[b"hearth/identity/v1/", kind.as_str().as_bytes(), b":", normalised.as_bytes()])
        .map(|(_, mac)| mac)
        .map_err(|e| ApiError::Internal(format!("identity hash: {e}")))
}

/// The keyed hash a customer's stored record is filed under, so the pseudonymous id itself never appears
/// in the store file.
pub fn customer_ref(keys: &NodeKeys, customer_id: &str) -> Result<LinkHash, ApiError> {
    keys.identity_hash(&[b"hearth/customer/v1/", customer_id.as_bytes()])
        .map(|(_, mac)| mac)
        .map_err(|e| ApiError::Internal(format!("identity hash: {e}")))
}

/// A pseudonymous customer id: `c-` and 32 hex digits, random (not derived from any identifier, so it
/// reveals nothing and survives the identifiers changing).
pub fn new_customer_id() -> String {
    format!("c-{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Checks a customer id taken from a URL path: exactly the shape [`new_customer_id`] makes, so no path
/// traversal, injection or overlong value reaches the store.
pub fn checked_customer_id(id: &str) -> Result<&str, ApiError> {
    checked_random_id(
        id,
        "c-",
        "invalid_customer_id",
        "a customer id is c- followed by 32 lower-case hex digits",
    )
}

/// `id` if it is `prefix` and 32 lower-case hex digits (the desk's random ids); else a 400 with `reason`.
pub fn checked_random_id<'a>(
    id: &'a str,
    prefix: &str,
    reason: &'static str,
    message: &'static str,
) -> Result<&'a str, ApiError> {
    let ok = id.len() == prefix.len() + 32
        && id.starts_with(prefix)
        && id[prefix.len()..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(id)
    } else {
        Err(ApiError::bad(reason, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_to_one_form() {
        let n = |s| normalise(Kind::Phone, s, Some("44")).unwrap();
        assert_eq!(n("+44 7700 900123"), "+447700900123");
        assert_eq!(n("0044-7700-900123"), "+447700900123");
        assert_eq!(n("(7700) 900.123"), "+447700900123");
        assert_eq!(normalise(Kind::Phone, "7700900123", None).unwrap(), "+7700900123");
        for bad in ["12", "+1234567890123456", "123; rm -rf /", "+44 7700\u{0}900", "' OR 1=1 --"] {
            assert_eq!(
                normalise(Kind::Phone, bad, None).unwrap_err().reason(),
                "invalid_identifier",
                "{bad}"
            );
        }
    }

    #[test]
    fn emails_lowercase_and_hostile_values_are_refused_without_echo() {
        assert_eq!(normalise(Kind::Email, " Ann.Lee@Example.COM ", None).unwrap(), "ann.lee@example.com");
        for bad in
            ["ann", "a@b", "@example.com", "a@@example.com", "a b@example.com", "x'; DROP TABLE c;--@e.com"]
        {
            let e = normalise(Kind::Email, bad, None).unwrap_err();
            assert_eq!(e.reason(), "invalid_identifier", "{bad}");
            assert!(!format!("{e:?}").contains(bad), "the value is not echoed");
        }
        assert!(normalise(Kind::Email, &format!("{}@example.com", "a".repeat(300)), None).is_err());
    }

    #[test]
    fn opaque_ids_keep_case_and_refuse_traversal_and_shell() {
        assert_eq!(
            normalise(Kind::OpenId, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", None).unwrap(),
            "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
        );
        // `/` and `.` are allowed (base64 fingerprints): an identifier is only ever hashed, never a path.
        for bad in ["$(reboot)", "a b", "\u{1b}[2J", "x\"; DROP", &"x".repeat(129)] {
            assert!(normalise(Kind::Device, bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn customer_ids_from_paths_are_checked() {
        let id = new_customer_id();
        assert_eq!(checked_customer_id(&id).unwrap(), id);
        for bad in
            ["../../service.redb", "c-", "c-XYZ", &format!("{id}0"), "c-0000000000000000000000000000000G"]
        {
            assert_eq!(checked_customer_id(bad).unwrap_err().reason(), "invalid_customer_id", "{bad}");
        }
    }
}
