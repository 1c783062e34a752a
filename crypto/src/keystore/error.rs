//! The keystore's error type: one enum for both backends, so a service handles a sealed file and a token
//! the same way. Messages name the key label and version, never key material or a passphrase.

use crate::suite::{CryptoError, SuiteId};

/// What went wrong in a [`KeyStore`](super::KeyStore) operation.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyStoreError {
    /// A key label breaks the naming rules (1 to 64 of `[a-z0-9._-]`, starting with a letter or digit):
    /// usually a typo in configuration.
    #[error("invalid key label {label:?}: {reason}")]
    InvalidLabel {
        /// The label given (cut to 80 characters).
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key kind named in configuration is not one of signing, audit, kek, identity-hash.
    #[error("unknown key kind {0:?}: expected signing, audit, kek or identity-hash")]
    UnknownKind(String),
    /// No key has this label: it was never generated here, or the configuration points at another
    /// keystore or token.
    #[error("no key labelled {label:?} in this keystore")]
    UnknownKey {
        /// The label asked for.
        label: String,
    },
    /// The label exists but not this version: data written under a version that was never created here,
    /// or a keystore restored from a backup older than the data.
    #[error("key {label:?} has no version {version}")]
    UnknownVersion {
        /// The label asked for.
        label: String,
        /// The version asked for.
        version: u32,
    },
    /// `generate` was called for a label that already exists: use `rotate` to make a new version.
    #[error("a key labelled {label:?} already exists; rotate it instead of generating it again")]
    AlreadyExists {
        /// The label.
        label: String,
    },
    /// The key exists but is of another kind than the operation needs (e.g. signing with a KEK).
    #[error("key {label:?} is a {kind} key and cannot be used to {operation}")]
    WrongKind {
        /// The label.
        label: String,
        /// The key's kind.
        kind: &'static str,
        /// The refused operation.
        operation: &'static str,
    },
    /// A signature did not verify under the named key version.
    #[error("signature does not verify under key {label:?} version {version}")]
    BadSignature {
        /// The label.
        label: String,
        /// The version.
        version: u32,
    },
    /// Unwrapping a data key failed authentication: the wrapped key or its associated data was altered,
    /// or it was wrapped under another key.
    #[error("unwrapping a data key under key {label:?} version {version} failed: the wrapped key or its associated data was altered")]
    UnwrapFailed {
        /// The KEK label.
        label: String,
        /// The KEK version.
        version: u32,
    },
    /// The passphrase does not open this sealed keystore (or the salt and parameters in its header were
    /// altered, which cannot be told apart from a wrong passphrase).
    #[error("wrong passphrase for the sealed keystore")]
    WrongPassphrase,
    /// A passphrase was empty.
    #[error("the keystore passphrase is empty")]
    EmptyPassphrase,
    /// The sealed keystore's key checked out but its contents failed authentication: the blob was altered
    /// or truncated after it was sealed.
    #[error("the sealed keystore failed authentication: {what} was altered or truncated")]
    Tampered {
        /// Which part.
        what: &'static str,
    },
    /// The bytes are not a Hearth keystore (wrong magic): the wrong file was given.
    #[error("not a Hearth sealed keystore (bad magic bytes)")]
    NotAKeystore,
    /// The keystore was written by a format version this build does not read.
    #[error(
        "sealed keystore format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat {
        /// Version in the header.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The blob is structurally invalid: truncated, a length out of bounds, an unknown code.
    #[error("malformed sealed keystore: {0}")]
    Malformed(String),
    /// The keystore is sealed another way than the caller expects (passphrase vs token key).
    #[error("the keystore is sealed by {found}, not by {expected}")]
    WrongSealing {
        /// How it is sealed.
        found: &'static str,
        /// What the caller tried.
        expected: &'static str,
    },
    /// Key-derivation parameters are out of the accepted range (in configuration or a blob header).
    #[error("invalid key-derivation parameters: {0}")]
    InvalidParams(String),
    /// The keystore uses another suite than the caller expects.
    #[error("the keystore uses the {found} suite, expected {expected}")]
    WrongSuite {
        /// The keystore's suite.
        found: SuiteId,
        /// The expected suite.
        expected: SuiteId,
    },
    /// The international-suite PKCS#11 backend keeps every key in the token and persists nothing, but a
    /// sealed state was given to it: the configuration mixes suites.
    #[error("the {suite} PKCS#11 keystore keeps its keys in the token and takes no sealed state")]
    UnexpectedState {
        /// The suite.
        suite: SuiteId,
    },
    /// A data key has the wrong length for the suite (it belongs to another suite or was corrupted).
    #[error("data key is {len} bytes, the {suite} suite uses {expected}")]
    DataKeyLength {
        /// The suite.
        suite: SuiteId,
        /// Length found.
        len: usize,
        /// Length expected.
        expected: usize,
    },
    /// No slot holds a token with this label: the token is not initialised or `token_label` is wrong.
    #[error("no PKCS#11 token labelled {label:?} in module {module}")]
    TokenNotFound {
        /// The token label.
        label: String,
        /// The module path.
        module: String,
    },
    /// The token refused the user PIN (wrong, or the PIN is locked after too many tries).
    #[error("login to PKCS#11 token {label:?} refused: wrong user PIN or PIN locked")]
    Login {
        /// The token label.
        label: String,
    },
    /// The token lacks a mechanism the backend needs.
    #[error("PKCS#11 token {token:?} does not offer mechanism {mechanism}")]
    MechanismUnsupported {
        /// The token label.
        token: String,
        /// The mechanism.
        mechanism: &'static str,
    },
    /// A PKCS#11 call failed; `detail` is the module's return code.
    #[error("PKCS#11 {operation} failed: {detail}")]
    Pkcs11 {
        /// What the backend was doing.
        operation: &'static str,
        /// The module's error, as cryptoki prints it (return-code names only).
        detail: String,
    },
    /// A primitive failed (bad key encoding, randomness unavailable).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
