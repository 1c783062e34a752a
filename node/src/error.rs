//! The node crate's error: each variant names the file, key label or entry concerned, and never a secret.

use std::path::PathBuf;

use hearth_audit::AuditError;
use hearth_crypto::envelope::EnvelopeError;
use hearth_crypto::keystore::KeyStoreError;

/// What went wrong opening or using a node's keys or audit log.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A secret (passphrase, PIN) is not configured: neither the file nor the environment variable is set.
    #[error(
        "the {what} is not set: export {env} (or set {file_key} in the [keystore] section to a file holding it)"
    )]
    MissingSecret {
        /// `keystore passphrase` or `PKCS#11 user PIN`.
        what: &'static str,
        /// The environment variable that was read.
        env: String,
        /// The configuration key naming a file instead.
        file_key: &'static str,
    },
    /// The configuration is inconsistent (a PKCS#11 backend without a module, a suite mismatch).
    #[error("{0}")]
    Config(String),
    /// The keystore refused an operation; `context` names the file or key label.
    #[error("{context}: {source}")]
    KeyStore {
        /// The keystore file or key label concerned.
        context: String,
        /// The keystore's error.
        source: KeyStoreError,
    },
    /// An object could not be sealed or opened; `object` names it.
    #[error("stored object {object}: {source}")]
    Envelope {
        /// The object's id (its associated data).
        object: String,
        /// The envelope error.
        source: EnvelopeError,
    },
    /// A revocation list was refused (not signed by the consortium CA, malformed).
    #[error("revocation list from {from}: {source}")]
    Revocation {
        /// Where it came from (a file, the coordinator).
        from: String,
        /// Why it was refused.
        source: hearth_crypto::pki::PkiError,
    },
    /// The current key-encryption key version has wrapped as many data keys as it safely can.
    #[error(
        "key-encryption key version {version} has wrapped {wraps} data keys, its limit: rotate it \
         (hearth keys rotate --label kek) and move old objects with hearth keys rewrap"
    )]
    KekWornOut {
        /// The version.
        version: u32,
        /// Wraps counted under it.
        wraps: u64,
    },
    /// The audit log's files are inconsistent, or appending failed.
    #[error("audit log {path}: {reason}")]
    Audit {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong, naming the entry or checkpoint.
        reason: String,
    },
    /// An audit library call failed.
    #[error("audit log: {0}")]
    AuditLib(#[from] AuditError),
    /// Another process holds the node directory's lock.
    #[error(
        "another hearth process is using {path} (its lock is held); stop that node before running this command"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

impl NodeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> NodeError {
        let path = path.into();
        move |source| NodeError::Io { path, source }
    }

    pub(crate) fn keystore(context: impl Into<String>) -> impl FnOnce(KeyStoreError) -> NodeError {
        let context = context.into();
        move |source| NodeError::KeyStore { context, source }
    }
}
