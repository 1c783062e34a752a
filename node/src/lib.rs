//! Node-side keys and audit log, shared by the coordinator, the participant and the `hearth` CLI.
//!
//! Start with [`keys::NodeKeys::open`], which every node runs before anything else; then
//! [`audit::AuditLog`], the signed log every security-relevant action goes to.
//!
//! - [`config`]: the `[keystore]` and `[audit]` configuration sections; secrets come from the environment
//!   or a file, never from the TOML.
//! - [`keys`]: opens or creates the keystore, makes the node's keys on first start, persists sealed
//!   state, rotates keys; envelope encryption of stored objects; [`keys::KeystoreSigner`], the
//!   `TreeHeadSigner` over the keystore's audit key.
//! - [`audit`]: the durable audit log (one file of entries, one of signed checkpoints, a persisted tree
//!   state), its background checkpointing, replay after a restart, and export for auditors.
//! - [`files`]: atomic writes and the directory lock that keeps two processes from writing one node.
//! - [`refusal`]: a rate-limited transport refusal hook that audits refused connections.
//! - [`metrics`]: the node's key and certificate metrics for its operations endpoint.
//! - [`revocation`]: the newest CA-signed revocation list the node has seen, asked at every handshake.
//! - [`rewrap`]: moves stored objects to the current key-encryption key version, and counts them per version.
//!
//! Nothing here touches the network, and nothing here ever logs or returns a passphrase, a PIN or key
//! material.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod config;
pub mod files;
pub mod keys;
pub mod metrics;
pub mod refusal;
pub mod revocation;
pub mod rewrap;

mod error;

pub use error::NodeError;
