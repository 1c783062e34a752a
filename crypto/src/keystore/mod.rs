//! Keys that never leave their backend: the [`KeyStore`] trait and its two backends.
//!
//! A node holds four kinds of key ([`KeyKind`]): its protocol signing key, its audit key (signs the audit
//! log's tree heads), key-encryption keys (wrap the per-object data keys of [`crate::envelope`]) and the
//! identity-hash key (keys the MAC of customers' channel identifiers). Each key has a [`KeyLabel`] and
//! versions; [`KeyStore::rotate`] makes a new current version while older ones stay usable for verifying,
//! unwrapping and recomputing identity hashes, so data written before a rotation stays readable. Both
//! `generate` and `rotate` return a [`KeyEvent`] that the service must write to its audit log.
//!
//! | backend | where the secrets are | persistence |
//! |---|---|---|
//! | [`SealedKeyStore`] (embedded default) | one blob sealed under an Argon2id passphrase-derived key | the service writes [`KeyStore::sealed_state`] to a file |
//! | [`Pkcs11KeyStore`], international suite | generated inside the token, non-extractable (ECDSA P-256, AES-256, HMAC-SHA-256 generic secret) | the token |
//! | [`Pkcs11KeyStore`], national suite | SM2/SM4/HMAC-SM3 keys in the sealed format, sealed by a non-extractable AES-256 key inside the token | the service writes [`KeyStore::sealed_state`] |
//!
//! The national row is a compromise, stated plainly: no common PKCS#11 token (SoftHSM2 included) offers
//! SM2, SM3 or SM4 mechanisms, so SM private keys cannot be generated or used inside one. They are
//! generated in this process, kept in memory while the keystore is open, and at rest exist only sealed by
//! the token's AES key, which never leaves the token. An attacker with the sealed blob but without the
//! token (and its PIN) learns nothing; an attacker who can read this process's memory learns the SM keys.
//!
//! This module never touches files: backends take and return bytes, and the service stores them. Every
//! method blocks (Argon2id takes about half a second when a sealed keystore is opened; token calls are
//! synchronous FFI): async services call them from `spawn_blocking` or a dedicated thread.

mod codec;
mod error;
#[cfg(feature = "pkcs11")]
mod pkcs11;
mod ring;
mod sealed;
mod types;

use std::fmt;

pub(crate) use codec::{CodecError, Reader, Writer};
pub use error::KeyStoreError;
#[cfg(feature = "pkcs11")]
pub use pkcs11::{Pkcs11Config, Pkcs11KeyStore};
pub use sealed::{Argon2Params, SealedKeyStore};
pub use types::{
    DataKey, KeyAction, KeyEvent, KeyId, KeyKind, KeyLabel, KeyLocation, KeySignature, KeyVersion,
    WrappedKey, MAX_LABEL_LEN,
};

use crate::suite::{CryptoError, SuiteId, DIGEST_LEN};

/// A store of keys that performs operations with them and never hands out a private or secret key.
///
/// Implementations are shared between tasks (`Arc<dyn KeyStore>`), so every method takes `&self`.
/// Signing and wrapping always use the current version of a key; verifying, unwrapping and identity
/// hashing take an explicit [`KeyId`] so that older versions stay usable after a rotation.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The algorithm suite of every key here.
    fn suite(&self) -> SuiteId;

    /// Where the secret keys live.
    fn location(&self) -> KeyLocation;

    /// Generates version 1 of a new key inside the backend. Fails with
    /// [`KeyStoreError::AlreadyExists`] if the label is taken. The service must audit the returned event
    /// and, when [`KeyStore::sealed_state`] returns bytes, write them out.
    fn generate(&self, label: &KeyLabel, kind: KeyKind) -> Result<KeyEvent, KeyStoreError>;

    /// Generates the next version of an existing key and makes it current; older versions stay usable for
    /// verifying, unwrapping and identity hashing. Same duties for the caller as [`KeyStore::generate`].
    fn rotate(&self, label: &KeyLabel) -> Result<KeyEvent, KeyStoreError>;

    /// Destroys one old version of a key-encryption key. Refused for the current version and for other
    /// kinds (old signatures must stay checkable and old identity hashes matchable). The caller checks
    /// first that nothing is sealed under it any more (`hearth keys rewrap`), audits the returned event and
    /// writes [`KeyStore::sealed_state`] out.
    fn retire(&self, key: &KeyId) -> Result<KeyEvent, KeyStoreError>;

    /// The versions of a key that exist, oldest first (retired ones are gone).
    fn versions(&self, label: &KeyLabel) -> Result<Vec<KeyVersion>, KeyStoreError>;

    /// Every key: its label, kind and current version, sorted by label.
    fn list(&self) -> Result<Vec<(KeyId, KeyKind)>, KeyStoreError>;

    /// The kind of a key.
    fn kind(&self, label: &KeyLabel) -> Result<KeyKind, KeyStoreError>;

    /// The current (newest) version of a key.
    fn current(&self, label: &KeyLabel) -> Result<KeyId, KeyStoreError>;

    /// The encoded verifying key (SEC1 uncompressed, 65 bytes) of one version of a signing or audit key.
    fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, KeyStoreError>;

    /// Signs `msg` with the current version of a signing or audit key.
    fn sign(&self, label: &KeyLabel, msg: &[u8]) -> Result<KeySignature, KeyStoreError>;

    /// Checks a signature made by one version of a signing or audit key. Peers without this keystore use
    /// [`crate::CryptoSuite::verify`] with the published public key instead.
    fn verify(&self, key: &KeyId, msg: &[u8], signature: &[u8]) -> Result<(), KeyStoreError> {
        let public = self.public_key(key)?;
        let suite = self.kind(&key.label)?.suite_in(self.suite());
        suite.suite().verify(&public, msg, signature).map_err(|e| match e {
            CryptoError::BadSignature => {
                KeyStoreError::BadSignature { label: key.label.to_string(), version: key.version.get() }
            }
            other => KeyStoreError::Crypto(other),
        })
    }

    /// Wraps a data key under the current version of a key-encryption key, binding `aad` (the caller's
    /// context, e.g. an object id) and the KEK's label and version.
    fn wrap(&self, kek: &KeyLabel, aad: &[u8], data_key: &DataKey) -> Result<WrappedKey, KeyStoreError>;

    /// Unwraps what [`KeyStore::wrap`] produced under version `kek`, with the same `aad`.
    fn unwrap(&self, kek: &KeyId, aad: &[u8], wrapped: &[u8]) -> Result<DataKey, KeyStoreError>;

    /// The MAC (HMAC-SHA-256 or HMAC-SM3) of the concatenation of `parts` under one version of an
    /// identity-hash key. Use [`KeyStore::current`] for new records; older versions find older records.
    fn identity_mac(&self, key: &KeyId, parts: &[&[u8]]) -> Result<[u8; DIGEST_LEN], KeyStoreError>;

    /// The bytes the service must store after any `generate` or `rotate` to keep the keys, or `None` when
    /// the backend persists its keys itself (the international PKCS#11 token).
    fn sealed_state(&self) -> Result<Option<Vec<u8>>, KeyStoreError>;
}

/// Length of the nonce at the start of a wrapped key.
pub(crate) const WRAP_NONCE_LEN: usize = crate::suite::NONCE_LEN;

/// The associated data actually bound when wrapping: a domain tag, the suite, the KEK's label and version,
/// then the caller's data. Binding the KEK version means a wrapped key cannot be replayed under another
/// version or label, in either backend.
pub(crate) fn wrap_aad(suite: SuiteId, kek: &KeyId, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + kek.label.as_str().len() + aad.len());
    let mut w = Writer(&mut out);
    w.raw(b"hearth/keystore/wrap/v1");
    w.short_bytes(suite.as_str().as_bytes());
    w.short_bytes(kek.label.as_str().as_bytes());
    w.u32(kek.version.get());
    w.raw(aad);
    out
}

#[cfg(test)]
mod tests;
