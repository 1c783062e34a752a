//! The values a keystore speaks in: labels, versions, kinds, data keys, and the events a service audits.
//! Secret values ([`DataKey`]) are wiped on drop and print as `[redacted]`; everything else is public.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::KeyStoreError;
use crate::suite::{fill_random, SuiteId};

/// The name of a key, without its version: 1 to 64 of `[a-z0-9._-]`, starting with a letter or digit
/// (e.g. `node-signing`, `audit`, `kek.tenant-a`). The rules keep labels safe inside token object labels
/// and log lines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyLabel(String);

/// Longest accepted key label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

impl KeyLabel {
    /// Checks and wraps a label.
    pub fn new(label: &str) -> Result<Self, KeyStoreError> {
        let bad =
            |reason| Err(KeyStoreError::InvalidLabel { label: label.chars().take(80).collect(), reason });
        if label.is_empty() {
            return bad("it is empty");
        }
        if label.len() > MAX_LABEL_LEN {
            return bad("it is longer than 64 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            return bad("only a-z, 0-9, '.', '_' and '-' are allowed");
        }
        if !label.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("it must start with a letter or digit");
        }
        Ok(Self(label.to_string()))
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyLabel {
    type Err = KeyStoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A key version: 1 for the generated key, one more at each rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyVersion(u32);

impl KeyVersion {
    /// The first version of every key.
    pub const FIRST: KeyVersion = KeyVersion(1);

    /// Wraps a version number; 0 is not a version.
    pub fn new(v: u32) -> Option<Self> {
        (v > 0).then_some(Self(v))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The version a rotation creates, or `None` after `u32::MAX` rotations.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One version of one key: what a signature, a wrapped data key or an identity hash names so that it can
/// be checked or opened after rotation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId {
    /// The key's label.
    pub label: KeyLabel,
    /// The version.
    pub version: KeyVersion,
}

impl KeyId {
    pub(crate) fn unknown_version(&self) -> KeyStoreError {
        KeyStoreError::UnknownVersion { label: self.label.to_string(), version: self.version.get() }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@v{}", self.label, self.version)
    }
}

/// What a key is for (DESIGN.md, "Keys"). A key has one kind for all its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The node's signing key for protocol messages (ECDSA P-256 or SM2).
    Signing,
    /// The audit key, which signs the audit log's tree heads (ECDSA P-256 or SM2).
    Audit,
    /// A key-encryption key, which wraps per-object data keys (AES-256-GCM or SM4-GCM).
    KeyEncryption,
    /// The identity-hash key, which keys the MAC of customers' channel identifiers (HMAC-SHA-256 or
    /// HMAC-SM3).
    IdentityHash,
    /// The node's TLS key: ECDSA P-256 under both suites (the TLS stack has no SM2), so that a node on a
    /// token keeps its TLS key out of files under the national suite too.
    Tls,
}

impl KeyKind {
    /// Every kind.
    pub const ALL: [KeyKind; 5] =
        [KeyKind::Signing, KeyKind::Audit, KeyKind::KeyEncryption, KeyKind::IdentityHash, KeyKind::Tls];

    /// Lower-case name, as in configuration and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Signing => "signing",
            KeyKind::Audit => "audit",
            KeyKind::KeyEncryption => "kek",
            KeyKind::IdentityHash => "identity-hash",
            KeyKind::Tls => "tls",
        }
    }

    /// Whether keys of this kind are signature key pairs with a public half.
    pub fn is_signing(self) -> bool {
        matches!(self, KeyKind::Signing | KeyKind::Audit | KeyKind::Tls)
    }

    /// The suite whose algorithms keys of this kind use in a keystore of `suite`: always the
    /// international one for TLS keys.
    pub fn suite_in(self, suite: SuiteId) -> SuiteId {
        match self {
            KeyKind::Tls => SuiteId::International,
            _ => suite,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            KeyKind::Signing => 1,
            KeyKind::Audit => 2,
            KeyKind::KeyEncryption => 3,
            KeyKind::IdentityHash => 4,
            KeyKind::Tls => 5,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == c)
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyKind {
    type Err = KeyStoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| KeyStoreError::UnknownKind(s.chars().take(80).collect()))
    }
}

/// Where a keystore's secret keys are, as an auditor needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyLocation {
    /// In a blob sealed under a passphrase-derived key (Argon2id), held in this process's memory.
    SealedPassphrase,
    /// Generated and used inside a PKCS#11 token, never extractable.
    Token,
    /// In a blob sealed by a non-extractable AES key inside a PKCS#11 token, held in this process's
    /// memory while in use: the national suite's arrangement, since tokens lack SM mechanisms.
    SealedByToken,
}

impl KeyLocation {
    /// Lower-case name for audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyLocation::SealedPassphrase => "sealed-passphrase",
            KeyLocation::Token => "pkcs11-token",
            KeyLocation::SealedByToken => "sealed-by-pkcs11-token",
        }
    }
}

impl fmt::Display for KeyLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAction {
    /// A new key was generated (version 1).
    Generated,
    /// A new version was generated and became current; older versions stay usable for reading.
    Rotated,
    /// An old version of a key-encryption key was destroyed: nothing sealed under it opens any more.
    Retired,
}

impl KeyAction {
    /// Lower-case name for audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAction::Generated => "key.generated",
            KeyAction::Rotated => "key.rotated",
            KeyAction::Retired => "key.retired",
        }
    }
}

/// What a service must write to its audit log after [`generate`](super::KeyStore::generate) or
/// [`rotate`](super::KeyStore::rotate). Public values only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// Generated, rotated or retired.
    pub action: KeyAction,
    /// The new current version (the destroyed version, for a retirement).
    pub key: KeyId,
    /// The version it replaces as current (rotation only).
    pub previous: Option<KeyVersion>,
    /// The key's kind.
    pub kind: KeyKind,
    /// The keystore's suite.
    pub suite: SuiteId,
    /// Where the secret lives.
    pub location: KeyLocation,
    /// For signing keys: the encoded verifying key of the new version, to publish.
    pub public_key: Option<Vec<u8>>,
}

impl fmt::Display for KeyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({} key, {} suite, {})",
            self.action.as_str(),
            self.key,
            self.kind,
            self.suite,
            self.location
        )?;
        if let Some(p) = self.previous {
            write!(f, ", replaces v{p}")?;
        }
        Ok(())
    }
}

/// A signature and the key version that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignature {
    /// The signing key's version: give it to [`verify`](super::KeyStore::verify).
    pub key: KeyId,
    /// The signature (`r || s`, 64 bytes in both suites).
    pub signature: Vec<u8>,
}

/// A data key wrapped by a key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The KEK version that wrapped it: needed to unwrap.
    pub kek: KeyId,
    /// Nonce, ciphertext and tag.
    pub bytes: Vec<u8>,
}

/// A per-object data key for the suite's AEAD: 32 bytes (AES-256-GCM) or 16 (SM4-GCM). Wiped on drop;
/// `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(Zeroizing<Vec<u8>>);

impl DataKey {
    /// A fresh random data key for `suite`.
    pub fn generate(suite: SuiteId) -> Result<Self, KeyStoreError> {
        let mut k = Zeroizing::new(vec![0u8; suite.suite().aead_key_len()]);
        fill_random(&mut k)?;
        Ok(Self(k))
    }

    /// Wraps bytes that must be a data key of `suite` (checked by length).
    pub fn from_bytes(suite: SuiteId, bytes: Zeroizing<Vec<u8>>) -> Result<Self, KeyStoreError> {
        let expected = suite.suite().aead_key_len();
        if bytes.len() != expected {
            return Err(KeyStoreError::DataKeyLength { suite, len: bytes.len(), expected });
        }
        Ok(Self(bytes))
    }

    /// The key bytes. Callers must not log or persist them unencrypted.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_rules() {
        for good in ["a", "node-signing", "kek.tenant_a", &"k".repeat(64)] {
            assert_eq!(KeyLabel::new(good).unwrap().as_str(), good);
        }
        for bad in ["", "Kek", "a:b", "-x", "a/b", "é", &"k".repeat(65)] {
            let e = KeyLabel::new(bad).unwrap_err();
            assert!(matches!(e, KeyStoreError::InvalidLabel { .. }), "{bad:?}");
        }
    }

    #[test]
    fn versions_and_kinds_round_trip() {
        assert!(KeyVersion::new(0).is_none());
        assert_eq!(KeyVersion::FIRST.next().unwrap().get(), 2);
        assert!(KeyVersion(u32::MAX).next().is_none());
        for k in KeyKind::ALL {
            assert_eq!(KeyKind::from_code(k.code()), Some(k));
            assert_eq!(k.as_str().parse::<KeyKind>().unwrap(), k);
        }
        assert_eq!("hsm".parse::<KeyKind>(), Err(KeyStoreError::UnknownKind("hsm".into())));
        assert!(KeyKind::from_code(0).is_none());
    }

    #[test]
    fn data_keys_have_the_suite_length_and_stay_redacted() {
        let k = DataKey::generate(SuiteId::National).unwrap();
        assert_eq!(k.expose().len(), 16);
        assert_eq!(format!("{k:?}"), "DataKey([redacted])");
        let e = DataKey::from_bytes(SuiteId::International, Zeroizing::new(vec![0; 16])).unwrap_err();
        assert!(matches!(e, KeyStoreError::DataKeyLength { len: 16, expected: 32, .. }));
    }
}
