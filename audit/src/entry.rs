//! Audit entries and their canonical bytes: the one place that decides what a leaf of the log contains.
//!
//! An [`Event`] is what a service records (who, which tenant, what action, what outcome, a short detail,
//! the ids of the objects touched); the log turns it into an [`Entry`] by giving it a sequence number and
//! a time. An entry's canonical encoding ([`Entry::canonical`]) is what the Merkle tree hashes.
//!
//! # What an entry may contain
//!
//! Entries are shown to auditors and regulators and kept for years: **no secret and no customer text ever
//! goes into an entry**. Actors are certificate identities (`urn:hearth:participant:bank-a`) or `system`;
//! details are short operator-facing facts ("round 3 refused: stale base version 2"); object ids are
//! opaque identifiers (job ids, round numbers, key handles, hashed channel ids), never a customer's
//! message, name or number, and never key material. The rules below bound lengths and refuse control
//! characters; they cannot tell a customer's words from an operator's, so callers must.
//!
//! # Canonical encoding
//!
//! The canonical form is a JSON object with every key present, keys in sorted order, no whitespace:
//!
//! ```text
//! {"action":"update.upload","actor":"urn:hearth:participant:bank-a","detail":"round 3","objects":["job-7"],"outcome":"ok","seq":41,"tenant":null,"time_ms":1700000000000,"v":1}
//! ```
//!
//! Strings contain no control characters, so the only escapes are `\"` and `\\`; integers are at most
//! 2^53 - 1. Under these rules the encoding is exactly the RFC 8785 (JCS) canonicalisation of the object,
//! so an auditor can recompute leaves with any JCS implementation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::AuditError;

/// Version of the entry format, the `v` field.
pub const ENTRY_VERSION: u32 = 1;
/// Largest sequence number or time: integers above 2^53 - 1 have no exact JSON (JCS) encoding.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Longest actor, in bytes.
pub const MAX_ACTOR_LEN: usize = 256;
/// Longest tenant id, in bytes.
pub const MAX_TENANT_LEN: usize = 128;
/// Longest action name, in bytes.
pub const MAX_ACTION_LEN: usize = 64;
/// Longest detail, in bytes.
pub const MAX_DETAIL_LEN: usize = 1024;
/// Most object ids in one entry.
pub const MAX_OBJECTS: usize = 16;
/// Longest object id, in bytes.
pub const MAX_OBJECT_ID_LEN: usize = 128;
/// Upper bound of a canonical entry's length; decoders refuse anything longer before parsing.
pub const MAX_ENTRY_BYTES: usize = 8 * 1024;

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action was carried out.
    Ok,
    /// The request was refused as invalid (stale round, wrong length, replayed nonce).
    Refused,
    /// The caller was not allowed to do this (role, tenant, certificate).
    Denied,
    /// The action failed on our side.
    Error,
}

impl Outcome {
    /// `Ok` for a success, `Error` for a failure on our side.
    pub fn of<T, E>(result: &Result<T, E>) -> Self {
        if result.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Error
        }
    }

    /// The lower-case name used in the canonical encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a service records, before the log gives it a sequence number and a time. Build with
/// [`Event::new`] and the chained setters; the rules are checked when the log appends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Certificate identity of whoever caused the action, or `system`.
    pub actor: String,
    /// The tenant concerned, if any.
    pub tenant: Option<String>,
    /// Dotted lower-case action name, e.g. `update.upload`, `job.submit`, `key.rotated` (what
    /// [`Action::as_str`] gives; entries read back keep whatever name they carry).
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// A short operator-facing fact; never customer text or secrets.
    pub detail: String,
    /// Opaque ids of the objects concerned (job, round, key handle).
    pub objects: Vec<String>,
}

impl Event {
    /// An event with no tenant, detail or objects.
    pub fn new(actor: impl Into<String>, action: Action, outcome: Outcome) -> Self {
        Self {
            actor: actor.into(),
            tenant: None,
            action: action.as_str().into(),
            outcome,
            detail: String::new(),
            objects: Vec::new(),
        }
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Adds an object id.
    pub fn object(mut self, id: impl Into<String>) -> Self {
        self.objects.push(id.into());
        self
    }
}

/// One audit entry: an [`Event`] with its sequence number and time. Every value of this type satisfies the
/// entry rules, so its canonical encoding is well defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawEntry")]
pub struct Entry {
    // Fields in sorted key order: the derived serialisation then matches `canonical`, which tests check.
    action: String,
    actor: String,
    detail: String,
    objects: Vec<String>,
    outcome: Outcome,
    seq: u64,
    tenant: Option<String>,
    time_ms: u64,
    v: u32,
}

/// The unchecked shape of an entry, as decoded from JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    action: String,
    actor: String,
    detail: String,
    objects: Vec<String>,
    outcome: Outcome,
    seq: u64,
    tenant: Option<String>,
    time_ms: u64,
    v: u32,
}

impl TryFrom<RawEntry> for Entry {
    type Error = AuditError;

    fn try_from(r: RawEntry) -> Result<Self, AuditError> {
        if r.v != ENTRY_VERSION {
            return Err(bad("v", format!("version {} is not supported; expected {ENTRY_VERSION}", r.v)));
        }
        let event = Event {
            actor: r.actor,
            tenant: r.tenant,
            action: r.action,
            outcome: r.outcome,
            detail: r.detail,
            objects: r.objects,
        };
        Entry::new(r.seq, r.time_ms, event)
    }
}

fn bad(field: &'static str, reason: impl Into<String>) -> AuditError {
    AuditError::InvalidEntry { field, reason: reason.into() }
}

fn check_text(field: &'static str, s: &str, max: usize, may_be_empty: bool) -> Result<(), AuditError> {
    if s.len() > max {
        return Err(bad(field, format!("{} bytes, at most {max} allowed", s.len())));
    }
    if !may_be_empty && s.is_empty() {
        return Err(bad(field, "empty"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(bad(field, format!("contains control character U+{:04X}", u32::from(c))));
    }
    Ok(())
}

pub(crate) fn check_action(action: &str) -> Result<(), AuditError> {
    check_text("action", action, MAX_ACTION_LEN, false)?;
    let ok_chars =
        action.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let ok_shape = !action.starts_with('.') && !action.ends_with('.') && !action.contains("..");
    if !ok_chars || !ok_shape {
        return Err(bad(
            "action",
            format!("{action:?} is not a dotted lower-case name like \"update.upload\""),
        ));
    }
    Ok(())
}

impl Entry {
    /// Checks `event` against the entry rules and gives it a sequence number and a time (milliseconds
    /// since the Unix epoch).
    pub fn new(seq: u64, time_ms: u64, event: Event) -> Result<Self, AuditError> {
        if seq > MAX_SAFE_INTEGER {
            return Err(bad("seq", format!("{seq} exceeds 2^53 - 1")));
        }
        if time_ms > MAX_SAFE_INTEGER {
            return Err(bad("time_ms", format!("{time_ms} exceeds 2^53 - 1")));
        }
        check_text("actor", &event.actor, MAX_ACTOR_LEN, false)?;
        if let Some(t) = &event.tenant {
            check_text("tenant", t, MAX_TENANT_LEN, false)?;
        }
        check_action(&event.action)?;
        check_text("detail", &event.detail, MAX_DETAIL_LEN, true)?;
        if event.objects.len() > MAX_OBJECTS {
            return Err(bad(
                "objects",
                format!("{} ids, at most {MAX_OBJECTS} allowed", event.objects.len()),
            ));
        }
        for o in &event.objects {
            check_text("objects", o, MAX_OBJECT_ID_LEN, false)?;
        }
        Ok(Self {
            action: event.action,
            actor: event.actor,
            detail: event.detail,
            objects: event.objects,
            outcome: event.outcome,
            seq,
            tenant: event.tenant,
            time_ms,
            v: ENTRY_VERSION,
        })
    }

    /// Position in the log, from 0; equal to the entry's leaf index.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Milliseconds since the Unix epoch; never decreases along the log.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// Certificate identity of whoever caused the action, or `system`.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The tenant concerned, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Dotted action name.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// How the action ended.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The short detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Ids of the objects concerned.
    pub fn objects(&self) -> &[String] {
        &self.objects
    }

    /// The canonical bytes: what the Merkle tree hashes (see the module docs for the format).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.actor.len() + self.detail.len());
        out.extend_from_slice(b"{\"action\":");
        push_str(&mut out, &self.action);
        out.extend_from_slice(b",\"actor\":");
        push_str(&mut out, &self.actor);
        out.extend_from_slice(b",\"detail\":");
        push_str(&mut out, &self.detail);
        out.extend_from_slice(b",\"objects\":[");
        for (i, o) in self.objects.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(&mut out, o);
        }
        out.extend_from_slice(b"],\"outcome\":\"");
        out.extend_from_slice(self.outcome.as_str().as_bytes());
        out.extend_from_slice(b"\",\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.extend_from_slice(b",\"tenant\":");
        match &self.tenant {
            Some(t) => push_str(&mut out, t),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"time_ms\":");
        out.extend_from_slice(self.time_ms.to_string().as_bytes());
        out.extend_from_slice(b",\"v\":");
        out.extend_from_slice(self.v.to_string().as_bytes());
        out.push(b'}');
        out
    }

    /// Decodes canonical bytes, refusing anything over [`MAX_ENTRY_BYTES`], anything breaking the entry
    /// rules, and any other spelling of the same values (so that one entry has one encoding).
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, AuditError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(AuditError::Malformed {
                what: "audit entry",
                reason: format!("{} bytes, at most {MAX_ENTRY_BYTES} allowed", bytes.len()),
            });
        }
        let entry: Entry = serde_json::from_slice(bytes)
            .map_err(|e| AuditError::Malformed { what: "audit entry", reason: e.to_string() })?;
        if entry.canonical() != bytes {
            return Err(AuditError::Malformed {
                what: "audit entry",
                reason: "not in canonical form (sorted keys, no whitespace, minimal escapes)".into(),
            });
        }
        Ok(entry)
    }
}

/// Appends `s` as a JSON string. Entries hold no control characters, so only `"` and `\` need escaping.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Entry {
        let e = Event::new("urn:hearth:participant:bank-a", Action::UpdateUpload, Outcome::Refused)
            .tenant("bank-a")
            .detail("round 3 refused: \"stale\" base \\ version 2")
            .object("job-7")
            .object("round-3");
        Entry::new(41, 1_700_000_000_000, e).unwrap()
    }

    #[test]
    fn canonical_form_is_sorted_compact_json() {
        let e = Entry::new(0, 5, Event::new("system", Action::NodeStart, Outcome::Ok)).unwrap();
        assert_eq!(
            String::from_utf8(e.canonical()).unwrap(),
            r#"{"action":"node.start","actor":"system","detail":"","objects":[],"outcome":"ok","seq":0,"tenant":null,"time_ms":5,"v":1}"#
        );
        let s = sample();
        assert_eq!(s.canonical(), serde_json::to_vec(&s).unwrap(), "serde and the hand encoder agree");
        assert_eq!(Entry::from_canonical(&s.canonical()).unwrap(), s);
    }

    #[test]
    fn rules_refuse_bad_fields() {
        let ev = || Event::new("system", Action::JobSubmit, Outcome::Ok);
        let named = |action: &str| Event { action: action.into(), ..ev() };
        let cases: Vec<(Event, &str)> = vec![
            (Event::new("", Action::JobSubmit, Outcome::Ok), "actor"),
            (Event::new("sys\ntem", Action::JobSubmit, Outcome::Ok), "actor"),
            (named("Job.Submit"), "action"),
            (named("job..submit"), "action"),
            (named(""), "action"),
            (ev().tenant(""), "tenant"),
            (ev().detail("x".repeat(MAX_DETAIL_LEN + 1)), "detail"),
            (ev().detail("tab\there"), "detail"),
            (ev().object(""), "objects"),
        ];
        for (event, field) in cases {
            match Entry::new(1, 1, event.clone()) {
                Err(AuditError::InvalidEntry { field: f, .. }) => assert_eq!(f, field, "{event:?}"),
                other => panic!("{event:?} gave {other:?}"),
            }
        }
        let many = (0..=MAX_OBJECTS).fold(ev(), |e, i| e.object(format!("o{i}")));
        assert!(Entry::new(1, 1, many).is_err());
        assert!(Entry::new(MAX_SAFE_INTEGER + 1, 1, ev()).is_err());
        assert!(Entry::new(1, MAX_SAFE_INTEGER + 1, ev()).is_err());
    }

    #[test]
    fn decoder_refuses_other_spellings_and_unknown_fields() {
        let canon = String::from_utf8(sample().canonical()).unwrap();
        let spaced = canon.replacen(",", ", ", 1);
        assert!(Entry::from_canonical(spaced.as_bytes()).is_err(), "whitespace");
        let escaped = canon.replacen("job-7", "job\\u002d7", 1);
        assert!(Entry::from_canonical(escaped.as_bytes()).is_err(), "needless escape");
        let extra = canon.replacen("{", "{\"zz\":1,", 1);
        assert!(Entry::from_canonical(extra.as_bytes()).is_err(), "unknown field");
        let v2 = canon.replacen("\"v\":1", "\"v\":2", 1);
        assert!(Entry::from_canonical(v2.as_bytes()).is_err(), "future version");
        assert!(Entry::from_canonical(&vec![b' '; MAX_ENTRY_BYTES + 1]).is_err(), "oversized");
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[ -~\u{4e00}-\u{4e10}\"\\\\]{{1,{}}}", max.min(40))).unwrap()
    }

    prop_compose! {
        pub(crate) fn arb_entry()(
            seq in 0..MAX_SAFE_INTEGER,
            time_ms in 0..MAX_SAFE_INTEGER,
            actor in text(MAX_ACTOR_LEN),
            tenant in proptest::option::of(text(MAX_TENANT_LEN)),
            action in "[a-z]{1,8}(\\.[a-z0-9_-]{1,8}){0,2}",
            outcome in prop_oneof![Just(Outcome::Ok), Just(Outcome::Refused), Just(Outcome::Denied), Just(Outcome::Error)],
            detail in proptest::option::of(text(MAX_DETAIL_LEN)),
            objects in proptest::collection::vec(text(MAX_OBJECT_ID_LEN), 0..4),
        ) -> Entry {
            let event = Event { actor, tenant, action, outcome, detail: detail.unwrap_or_default(), objects };
            Entry::new(seq, time_ms, event).unwrap()
        }
    }

    proptest! {
        #[test]
        fn canonical_round_trips_and_matches_serde(e in arb_entry()) {
            let bytes = e.canonical();
            prop_assert_eq!(&bytes, &serde_json::to_vec(&e).unwrap());
            prop_assert_eq!(Entry::from_canonical(&bytes).unwrap(), e);
        }

        #[test]
        fn any_bit_flip_changes_or_breaks_the_entry(e in arb_entry(), pos in any::<prop::sample::Index>(), bit in 0..8u8) {
            let mut bytes = e.canonical();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(d) = Entry::from_canonical(&bytes) {
                prop_assert_ne!(d, e);
            }
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Entry::from_canonical(&bytes);
        }
    }
}
