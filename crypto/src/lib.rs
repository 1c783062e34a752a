//! Hearth cryptography, as pure values: no sockets, no files.
//!
//! - [`pki`]: the consortium CA, node certificates, and reading a node's identity from a certificate.
//!
//! Keys in an HSM, secure aggregation and the signed audit log will live here too.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod pki;
