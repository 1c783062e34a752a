//! Hearth cryptography, as pure values: no sockets, no files.
//!
//! - [`suite`]: the two algorithm suites (international, national SM2/SM3/SM4) behind one trait; nothing
//!   above this crate names an algorithm.
//! - [`pki`]: the consortium CA, node certificates, and reading a node's identity from a certificate.
//! - [`keystore`]: the [`keystore::KeyStore`] trait (signing, audit, key-encryption and identity-hash
//!   keys, by label and version, with rotation) and its backends: a sealed software keystore and a
//!   PKCS#11 token.
//! - [`envelope`]: envelope encryption of stored objects under a keystore's key-encryption key.
//! - [`audit`]: the tamper-evident audit log: entries, an RFC 9162 Merkle tree, proofs, signed checkpoints
//!   (C2SP signed notes) with witness cosignatures, the export bundle and its offline verifier.
//! - [`secagg`]: secure aggregation (SecAgg/SecAgg+): the coordinator learns only the sum of the updates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod envelope;
pub mod keystore;
pub mod pki;
pub mod secagg;
pub mod suite;

pub use suite::{CryptoError, CryptoSuite, SecretBytes, SuiteId};
