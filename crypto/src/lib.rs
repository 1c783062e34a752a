//! Hearth cryptography, as pure values: no sockets, no files.
//!
//! - [`suite`]: the two algorithm suites (international, national SM2/SM3/SM4) behind one trait; nothing
//!   above this crate names an algorithm.
//! - [`pki`]: the consortium CA, node certificates, and reading a node's identity from a certificate.
//! - [`keystore`]: the [`keystore::KeyStore`] trait (signing, audit, key-encryption and identity-hash
//!   keys, by label and version, with rotation) and its backends: a sealed software keystore and a
//!   PKCS#11 token.
//! - [`digest`]: the content digest transfers and files are checked with, and secrets compared by.
//! - [`envelope`]: envelope encryption of stored objects under a keystore's key-encryption key.
//!
//! The secure-aggregation protocol (`hearth-secagg`) and the audit log (`hearth-audit`) are crates of
//! their own built on [`suite`]. The PKCS#11 keystore backend is behind the `pkcs11` feature, which the
//! node crate turns on: a library that needs only the suites (the audit log's offline verifier) links no
//! PKCS#11 stack.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod digest;
pub mod envelope;
pub mod keystore;
pub mod pki;
pub mod suite;

pub use suite::{CryptoError, CryptoSuite, SecretBytes, SuiteId};
