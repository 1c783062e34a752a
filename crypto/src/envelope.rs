//! Envelope encryption of stored objects: a fresh data key per object, encrypted with the suite's AEAD,
//! and that data key wrapped by the current version of a key-encryption key in a [`KeyStore`]. The KEK
//! never leaves the keystore (inside the token, with the PKCS#11 backend); rotating it changes what new
//! objects use while old objects still open, because each names its KEK version.
//!
//! Format, version 1 (integers big-endian):
//!
//! ```text
//! "HENV"  version:u8=1  suite:u8 (1 international, 2 national)
//! kek label:len8+bytes  kek version:u32  wrapped data key:len8+bytes  nonce:[12]
//! ciphertext+tag (the rest)
//! ```
//!
//! The whole header is associated data of the body, together with the caller's `aad` (an object id, a
//! tenant, a path: whatever names the object, so that one object's ciphertext cannot be passed off as
//! another's). The data key is wrapped with the caller's `aad` too, and the keystore binds the KEK label
//! and version. The caller's `aad` is not stored: give the same value to [`open`].
//!
//! This module never touches files and never sees a KEK; it must not log plaintext or data keys.

use zeroize::Zeroizing;

use crate::keystore::{
    DataKey, KeyId, KeyLabel, KeyStore, KeyStoreError, KeyVersion, Reader, Writer, MAX_LABEL_LEN,
};
use crate::suite::{fill_random, CryptoError, SuiteId, NONCE_LEN, TAG_LEN};

const MAGIC: &[u8; 4] = b"HENV";
/// The envelope format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Longest wrapped data key accepted: nonce, a 32-byte key and a tag fit in 60.
const MAX_WRAPPED_LEN: usize = 128;
/// Domain tag for the associated data of the data-key wrapping.
const WRAP_CONTEXT: &[u8] = b"hearth/envelope/v1";

/// Why an envelope could not be made or opened.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The bytes do not start with the envelope magic: not an envelope, or another object's file.
    #[error("not a Hearth envelope (bad magic bytes)")]
    NotAnEnvelope,
    /// Written by a format version this build does not read.
    #[error("envelope format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version in the header.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// The header is structurally invalid: truncated, an out-of-range length, an unknown suite code.
    #[error("malformed envelope header: {0}")]
    Malformed(String),
    /// The envelope was sealed under another suite than the keystore's: the object comes from another
    /// consortium, or the suite in the header was altered.
    #[error("envelope was sealed under the {found} suite, this keystore uses {expected}")]
    WrongSuite {
        /// Suite in the header.
        found: SuiteId,
        /// The keystore's suite.
        expected: SuiteId,
    },
    /// The KEK named in the header is not in the keystore: the keystore is older than the object (restored
    /// from a backup), or it is the wrong keystore, or the header was altered.
    #[error(
        "envelope names key-encryption key {label:?} version {version}, which this keystore does not have"
    )]
    UnknownKek {
        /// The KEK label in the header.
        label: String,
        /// The KEK version in the header.
        version: u32,
    },
    /// Authentication failed: the header, wrapped key, ciphertext or the caller's associated data differ
    /// from what was sealed.
    #[error("envelope failed authentication: {what} was altered, or the associated data differs")]
    Tampered {
        /// Which check failed.
        what: &'static str,
    },
    /// The keystore refused the operation (wrong key kind, token failure, ...).
    #[error(transparent)]
    KeyStore(KeyStoreError),
    /// A primitive failed (randomness unavailable, plaintext too long for the AEAD).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl From<KeyStoreError> for EnvelopeError {
    fn from(e: KeyStoreError) -> Self {
        EnvelopeError::KeyStore(e)
    }
}

fn suite_code(s: SuiteId) -> u8 {
    match s {
        SuiteId::International => 1,
        SuiteId::National => 2,
    }
}

fn wrap_context(aad: &[u8]) -> Vec<u8> {
    [WRAP_CONTEXT, aad].concat()
}

/// Encrypts `plaintext` for storage under a fresh data key wrapped by the current version of the
/// key-encryption key `kek`. `aad` names the object and must be given again to [`open`].
pub fn seal(
    keystore: &dyn KeyStore,
    kek: &KeyLabel,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let suite = keystore.suite();
    let data_key = DataKey::generate(suite)?;
    let wrapped = keystore.wrap(kek, &wrap_context(aad), &data_key)?;
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;

    let mut out = Vec::with_capacity(96 + plaintext.len() + TAG_LEN);
    let mut w = Writer(&mut out);
    w.raw(MAGIC);
    w.u8(FORMAT_VERSION);
    w.u8(suite_code(suite));
    w.short_bytes(wrapped.kek.label.as_str().as_bytes());
    w.u32(wrapped.kek.version.get());
    w.short_bytes(&wrapped.bytes);
    w.raw(&nonce);
    let body = suite.suite().seal(data_key.expose(), &nonce, &[out.as_slice(), aad].concat(), plaintext)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The parsed header.
struct Header<'a> {
    suite: SuiteId,
    kek: KeyId,
    wrapped: &'a [u8],
    nonce: [u8; NONCE_LEN],
    header_len: usize,
}

fn malformed(e: crate::keystore::CodecError) -> EnvelopeError {
    EnvelopeError::Malformed(e.0)
}

fn parse(envelope: &[u8]) -> Result<Header<'_>, EnvelopeError> {
    let mut r = Reader::new(envelope);
    if r.bytes("magic", MAGIC.len()).map_err(|_| EnvelopeError::NotAnEnvelope)? != MAGIC {
        return Err(EnvelopeError::NotAnEnvelope);
    }
    let version = r.u8("format version").map_err(malformed)?;
    if version != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let suite = match r.u8("suite").map_err(malformed)? {
        1 => SuiteId::International,
        2 => SuiteId::National,
        c => return Err(EnvelopeError::Malformed(format!("unknown suite code {c}"))),
    };
    let label = r.short_bytes("key-encryption key label", MAX_LABEL_LEN).map_err(malformed)?;
    let label = std::str::from_utf8(label)
        .ok()
        .and_then(|l| KeyLabel::new(l).ok())
        .ok_or_else(|| EnvelopeError::Malformed("invalid key-encryption key label".into()))?;
    let version = r.u32("key-encryption key version").map_err(malformed)?;
    let version = KeyVersion::new(version)
        .ok_or_else(|| EnvelopeError::Malformed("key-encryption key version 0".into()))?;
    let wrapped = r.short_bytes("wrapped data key", MAX_WRAPPED_LEN).map_err(malformed)?;
    let nonce = r.array("nonce").map_err(malformed)?;
    let header_len = envelope.len() - r.rest_len();
    if r.rest_len() < TAG_LEN {
        return Err(EnvelopeError::Malformed(format!(
            "body of {} bytes is shorter than a tag",
            r.rest_len()
        )));
    }
    Ok(Header { suite, kek: KeyId { label, version }, wrapped, nonce, header_len })
}

/// The KEK version an envelope was sealed under, read from its header without decrypting: for finding
/// the objects still under an old version after a rotation.
pub fn kek_of(envelope: &[u8]) -> Result<KeyId, EnvelopeError> {
    Ok(parse(envelope)?.kek)
}

/// Verifies and decrypts what [`seal`] produced, with the same `aad`.
pub fn open(keystore: &dyn KeyStore, aad: &[u8], envelope: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let h = parse(envelope)?;
    let suite = keystore.suite();
    if h.suite != suite {
        return Err(EnvelopeError::WrongSuite { found: h.suite, expected: suite });
    }
    let data_key = keystore.unwrap(&h.kek, &wrap_context(aad), h.wrapped).map_err(|e| match e {
        KeyStoreError::UnknownKey { .. } | KeyStoreError::UnknownVersion { .. } => {
            EnvelopeError::UnknownKek { label: h.kek.label.to_string(), version: h.kek.version.get() }
        }
        KeyStoreError::UnwrapFailed { .. } => {
            EnvelopeError::Tampered { what: "the wrapped data key or the header" }
        }
        other => EnvelopeError::KeyStore(other),
    })?;
    let (header, body) = envelope.split_at(h.header_len);
    let body_aad = Zeroizing::new([header, aad].concat());
    suite.suite().open(data_key.expose(), &h.nonce, &body_aad, body).map_err(|e| match e {
        CryptoError::Decrypt => EnvelopeError::Tampered { what: "the ciphertext or the header" },
        other => EnvelopeError::Crypto(other),
    })
}

#[cfg(test)]
mod tests;
