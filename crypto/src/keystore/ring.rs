//! Software keys in memory: the contents of a sealed keystore, for either suite. Generation, rotation and
//! every operation on software keys happen here; sealing the ring to bytes is `sealed.rs`'s business.
//! Nothing here ever returns a secret.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

use super::{
    wrap_aad, DataKey, KeyId, KeyKind, KeyLabel, KeySignature, KeyStoreError, KeyVersion, Reader, WrappedKey,
    Writer, WRAP_NONCE_LEN,
};
use crate::suite::{fill_random, CryptoError, SecretBytes, SuiteId, DIGEST_LEN, NONCE_LEN};

/// Most labels a ring holds (and a blob may claim).
const MAX_LABELS: usize = 4096;
/// Most versions of one label.
const MAX_VERSIONS: usize = 4096;
/// Longest secret of any kind (signing scalars and MAC keys are 32 bytes, SM4 keys 16).
const MAX_SECRET_LEN: usize = 32;

/// One version of one software key.
struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    /// The verifying key, for signing kinds.
    public: Option<Vec<u8>>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug)]
struct Entry {
    kind: KeyKind,
    versions: BTreeMap<KeyVersion, Secret>,
}

impl Entry {
    fn current(&self) -> Option<KeyVersion> {
        self.versions.keys().next_back().copied()
    }
}

/// The software keys of one keystore.
#[derive(Debug)]
pub(crate) struct Ring {
    suite: SuiteId,
    keys: BTreeMap<KeyLabel, Entry>,
}

/// What a generation or rotation changed, for the caller to turn into a [`super::KeyEvent`].
pub(crate) struct Change {
    pub(crate) key: KeyId,
    pub(crate) previous: Option<KeyVersion>,
    pub(crate) kind: KeyKind,
    pub(crate) public_key: Option<Vec<u8>>,
}

fn new_secret(suite: SuiteId, kind: KeyKind) -> Result<Secret, KeyStoreError> {
    let s = kind.suite_in(suite).suite();
    if kind.is_signing() {
        let (secret, public) = s.signing_keypair()?;
        return Ok(Secret { bytes: Zeroizing::new(secret.expose().to_vec()), public: Some(public) });
    }
    let len = match kind {
        KeyKind::KeyEncryption => s.aead_key_len(),
        _ => DIGEST_LEN,
    };
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    fill_random(&mut bytes)?;
    Ok(Secret { bytes, public: None })
}

/// Checks a decoded secret's length for its kind and recomputes the public half of signing keys (which
/// also proves the scalar valid).
fn restore_secret(suite: SuiteId, kind: KeyKind, bytes: Zeroizing<Vec<u8>>) -> Result<Secret, String> {
    let expected = match kind {
        KeyKind::KeyEncryption => suite.suite().aead_key_len(),
        _ => 32,
    };
    if bytes.len() != expected {
        return Err(format!("a {kind} key of {} bytes, expected {expected}", bytes.len()));
    }
    let public = if kind.is_signing() {
        let secret = SecretBytes::from_slice("signing key", &bytes).map_err(|e| e.to_string())?;
        Some(kind.suite_in(suite).suite().verifying_key(&secret).map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(Secret { bytes, public })
}

/// Whether version `key` of a key of `kind` whose current version is `current` may be destroyed: only
/// old versions of key-encryption keys.
pub(crate) fn check_retirable(
    key: &KeyId,
    kind: KeyKind,
    current: Option<KeyVersion>,
) -> Result<(), KeyStoreError> {
    if kind != KeyKind::KeyEncryption {
        return Err(KeyStoreError::InvalidParams(format!(
            "only key-encryption key versions can be retired; {} is a {kind} key, whose old versions must stay \
             usable to check signatures or match identity hashes",
            key.label
        )));
    }
    if current == Some(key.version) {
        return Err(KeyStoreError::InvalidParams(format!(
            "{key} is the current version; rotate first (hearth keys rotate --label {}), rewrap, then retire",
            key.label
        )));
    }
    Ok(())
}

fn wrong_kind(label: &KeyLabel, kind: KeyKind, operation: &'static str) -> KeyStoreError {
    KeyStoreError::WrongKind { label: label.to_string(), kind: kind.as_str(), operation }
}

impl Ring {
    pub(crate) fn new(suite: SuiteId) -> Self {
        Self { suite, keys: BTreeMap::new() }
    }

    pub(crate) fn suite(&self) -> SuiteId {
        self.suite
    }

    fn entry(&self, label: &KeyLabel) -> Result<&Entry, KeyStoreError> {
        self.keys.get(label).ok_or_else(|| KeyStoreError::UnknownKey { label: label.to_string() })
    }

    /// The current version of a key, checked to be of an accepted kind for `operation`.
    fn current_of(
        &self,
        label: &KeyLabel,
        ok: fn(KeyKind) -> bool,
        operation: &'static str,
    ) -> Result<(KeyId, &Secret), KeyStoreError> {
        let e = self.entry(label)?;
        if !ok(e.kind) {
            return Err(wrong_kind(label, e.kind, operation));
        }
        let (v, s) = e
            .versions
            .iter()
            .next_back()
            .ok_or_else(|| KeyStoreError::UnknownKey { label: label.to_string() })?;
        Ok((KeyId { label: label.clone(), version: *v }, s))
    }

    fn version_of(
        &self,
        key: &KeyId,
        ok: fn(KeyKind) -> bool,
        operation: &'static str,
    ) -> Result<&Secret, KeyStoreError> {
        let e = self.entry(&key.label)?;
        if !ok(e.kind) {
            return Err(wrong_kind(&key.label, e.kind, operation));
        }
        e.versions.get(&key.version).ok_or_else(|| key.unknown_version())
    }

    pub(crate) fn generate(&mut self, label: &KeyLabel, kind: KeyKind) -> Result<Change, KeyStoreError> {
        if self.keys.contains_key(label) {
            return Err(KeyStoreError::AlreadyExists { label: label.to_string() });
        }
        if self.keys.len() >= MAX_LABELS {
            return Err(KeyStoreError::InvalidParams(format!("a keystore holds at most {MAX_LABELS} keys")));
        }
        let secret = new_secret(self.suite, kind)?;
        let public_key = secret.public.clone();
        let version = KeyVersion::FIRST;
        self.keys.insert(label.clone(), Entry { kind, versions: BTreeMap::from([(version, secret)]) });
        Ok(Change { key: KeyId { label: label.clone(), version }, previous: None, kind, public_key })
    }

    pub(crate) fn rotate(&mut self, label: &KeyLabel) -> Result<Change, KeyStoreError> {
        let suite = self.suite;
        let e =
            self.keys.get_mut(label).ok_or_else(|| KeyStoreError::UnknownKey { label: label.to_string() })?;
        let previous = e.current().ok_or_else(|| KeyStoreError::UnknownKey { label: label.to_string() })?;
        let version = previous.next().filter(|_| e.versions.len() < MAX_VERSIONS).ok_or_else(|| {
            KeyStoreError::InvalidParams(format!("key {label:?} has reached {MAX_VERSIONS} versions"))
        })?;
        let secret = new_secret(suite, e.kind)?;
        let public_key = secret.public.clone();
        e.versions.insert(version, secret);
        Ok(Change {
            key: KeyId { label: label.clone(), version },
            previous: Some(previous),
            kind: e.kind,
            public_key,
        })
    }

    pub(crate) fn retire(&mut self, key: &KeyId) -> Result<Change, KeyStoreError> {
        let e = self
            .keys
            .get_mut(&key.label)
            .ok_or_else(|| KeyStoreError::UnknownKey { label: key.label.to_string() })?;
        check_retirable(key, e.kind, e.current())?;
        e.versions.remove(&key.version).ok_or_else(|| key.unknown_version())?;
        Ok(Change { key: key.clone(), previous: None, kind: e.kind, public_key: None })
    }

    pub(crate) fn versions(&self, label: &KeyLabel) -> Result<Vec<KeyVersion>, KeyStoreError> {
        Ok(self.entry(label)?.versions.keys().copied().collect())
    }

    pub(crate) fn list(&self) -> Vec<(KeyId, KeyKind)> {
        self.keys
            .iter()
            .filter_map(|(l, e)| Some((KeyId { label: l.clone(), version: e.current()? }, e.kind)))
            .collect()
    }

    pub(crate) fn kind(&self, label: &KeyLabel) -> Result<KeyKind, KeyStoreError> {
        Ok(self.entry(label)?.kind)
    }

    pub(crate) fn current(&self, label: &KeyLabel) -> Result<KeyId, KeyStoreError> {
        let version = self
            .entry(label)?
            .current()
            .ok_or_else(|| KeyStoreError::UnknownKey { label: label.to_string() })?;
        Ok(KeyId { label: label.clone(), version })
    }

    pub(crate) fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, KeyStoreError> {
        let s = self.version_of(key, KeyKind::is_signing, "give a public key")?;
        s.public.clone().ok_or_else(|| wrong_kind(&key.label, KeyKind::KeyEncryption, "give a public key"))
    }

    pub(crate) fn sign(&self, label: &KeyLabel, msg: &[u8]) -> Result<KeySignature, KeyStoreError> {
        let (key, s) = self.current_of(label, KeyKind::is_signing, "sign")?;
        let secret = SecretBytes::from_slice("signing key", &s.bytes)?;
        let suite = self.entry(label)?.kind.suite_in(self.suite);
        Ok(KeySignature { key, signature: suite.suite().sign(&secret, msg)? })
    }

    pub(crate) fn wrap(&self, kek: &KeyLabel, aad: &[u8], dk: &DataKey) -> Result<WrappedKey, KeyStoreError> {
        let (key, s) = self.current_of(kek, |k| k == KeyKind::KeyEncryption, "wrap a data key")?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let ct = self.suite.suite().seal(&s.bytes, &nonce, &wrap_aad(self.suite, &key, aad), dk.expose())?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ct);
        Ok(WrappedKey { kek: key, bytes })
    }

    pub(crate) fn unwrap(&self, kek: &KeyId, aad: &[u8], wrapped: &[u8]) -> Result<DataKey, KeyStoreError> {
        let s = self.version_of(kek, |k| k == KeyKind::KeyEncryption, "unwrap a data key")?;
        let failed =
            || KeyStoreError::UnwrapFailed { label: kek.label.to_string(), version: kek.version.get() };
        let mut r = Reader::new(wrapped);
        let nonce: [u8; WRAP_NONCE_LEN] = r.array("nonce").map_err(|_| failed())?;
        let pt =
            self.suite.suite().open(&s.bytes, &nonce, &wrap_aad(self.suite, kek, aad), r.rest()).map_err(
                |e| match e {
                    CryptoError::Decrypt => failed(),
                    other => KeyStoreError::Crypto(other),
                },
            )?;
        DataKey::from_bytes(self.suite, Zeroizing::new(pt))
    }

    pub(crate) fn identity_mac(
        &self,
        key: &KeyId,
        parts: &[&[u8]],
    ) -> Result<[u8; DIGEST_LEN], KeyStoreError> {
        let s = self.version_of(key, |k| k == KeyKind::IdentityHash, "compute an identity hash")?;
        Ok(self.suite.suite().mac(&s.bytes, parts))
    }

    /// The ring as bytes, to be sealed: count, then per label its name, kind and versions.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        let mut w = Writer(&mut out);
        w.u32(u32::try_from(self.keys.len()).unwrap_or(u32::MAX));
        for (label, e) in &self.keys {
            w.short_bytes(label.as_str().as_bytes());
            w.u8(e.kind.code());
            w.u32(u32::try_from(e.versions.len()).unwrap_or(u32::MAX));
            for (v, s) in &e.versions {
                w.u32(v.get());
                w.short_bytes(&s.bytes);
            }
        }
        out
    }

    /// Reads what [`Ring::encode`] wrote. The input has already been authenticated, but is still checked
    /// fully: a bug or a future format must not become a panic or a silently wrong key.
    pub(crate) fn decode(suite: SuiteId, bytes: &[u8]) -> Result<Self, KeyStoreError> {
        let bad = |m: String| KeyStoreError::Malformed(m);
        let mut r = Reader::new(bytes);
        let n = r.u32("key count").map_err(|e| bad(e.0))? as usize;
        if n > MAX_LABELS {
            return Err(bad(format!("{n} keys, at most {MAX_LABELS}")));
        }
        let mut keys = BTreeMap::new();
        for _ in 0..n {
            let raw = r.short_bytes("key label", super::MAX_LABEL_LEN).map_err(|e| bad(e.0))?;
            let label = std::str::from_utf8(raw)
                .map_err(|_| bad("a key label is not UTF-8".into()))
                .and_then(KeyLabel::new)?;
            let code = r.u8("key kind").map_err(|e| bad(e.0))?;
            let kind =
                KeyKind::from_code(code).ok_or_else(|| bad(format!("unknown key kind code {code}")))?;
            let count = r.u32("version count").map_err(|e| bad(e.0))? as usize;
            if count == 0 || count > MAX_VERSIONS {
                return Err(bad(format!("key {label} has {count} versions")));
            }
            let mut versions = BTreeMap::new();
            for _ in 0..count {
                let v = r.u32("version").map_err(|e| bad(e.0))?;
                let v = KeyVersion::new(v).ok_or_else(|| bad(format!("key {label} has version 0")))?;
                let secret =
                    Zeroizing::new(r.short_bytes("secret", MAX_SECRET_LEN).map_err(|e| bad(e.0))?.to_vec());
                let secret =
                    restore_secret(suite, kind, secret).map_err(|m| bad(format!("key {label} v{v}: {m}")))?;
                if versions.insert(v, secret).is_some() {
                    return Err(bad(format!("key {label} lists version {v} twice")));
                }
            }
            if keys.insert(label.clone(), Entry { kind, versions }).is_some() {
                return Err(bad(format!("key {label} is listed twice")));
            }
        }
        r.finish("the last key").map_err(|e| bad(e.0))?;
        Ok(Self { suite, keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> KeyLabel {
        KeyLabel::new(s).unwrap()
    }

    #[test]
    fn encoding_round_trips_every_kind_and_version() {
        for suite in [SuiteId::International, SuiteId::National] {
            let mut ring = Ring::new(suite);
            for (i, kind) in KeyKind::ALL.into_iter().enumerate() {
                ring.generate(&label(&format!("k{i}")), kind).unwrap();
            }
            ring.rotate(&label("k0")).unwrap();
            let again = Ring::decode(suite, &ring.encode()).unwrap();
            assert_eq!(again.list(), ring.list());
            let id = ring.current(&label("k0")).unwrap();
            assert_eq!(id.version.get(), 2);
            assert_eq!(again.public_key(&id).unwrap(), ring.public_key(&id).unwrap());
            let mac_key = ring.current(&label("k3")).unwrap();
            assert_eq!(
                again.identity_mac(&mac_key, &[b"x"]).unwrap(),
                ring.identity_mac(&mac_key, &[b"x"]).unwrap()
            );
        }
    }

    #[test]
    fn decoding_refuses_inconsistent_contents() {
        let mut ring = Ring::new(SuiteId::National);
        ring.generate(&label("kek"), KeyKind::KeyEncryption).unwrap();
        let bytes = ring.encode();
        // An SM4 key read as an international (AES-256) keystore has the wrong length.
        assert!(matches!(Ring::decode(SuiteId::International, &bytes), Err(KeyStoreError::Malformed(_))));
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(matches!(Ring::decode(SuiteId::National, &extra), Err(KeyStoreError::Malformed(_))));
        for cut in 0..bytes.len() {
            assert!(Ring::decode(SuiteId::National, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Ring::decode(SuiteId::National, &[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
