//! Hearth cryptography, as pure values: no sockets, no files.
//!
//! - [`suite`]: the two algorithm suites (international, national SM2/SM3/SM4) behind one trait; nothing
//!   above this crate names an algorithm.
//! - [`pki`]: the consortium CA, node certificates, and reading a node's identity from a certificate.
//! - [`secagg`]: secure aggregation (SecAgg/SecAgg+): the coordinator learns only the sum of the updates.
//!
//! Keys in an HSM, secure aggregation and the signed audit log will live here too.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod pki;
pub mod secagg;
pub mod suite;

pub use suite::{CryptoError, CryptoSuite, SecretBytes, SuiteId};
