//! The tamper-evident audit log, as a library: values and bytes in and out, the service owns the file.
//!
//! Every security-relevant action of a node becomes an [`Entry`]; entries are the leaves of a Merkle tree
//! built exactly as in RFC 9162 (Certificate Transparency v2) §2.1, with the consortium suite's hash
//! (SHA-256 or SM3). The log periodically signs its tree head as a checkpoint in the C2SP signed-note
//! format; other consortium members or auditors cosign checkpoints as witnesses. An export bundle carries
//! entries, keys and checkpoints to an auditor, whose [`verify_export`] recomputes everything offline.
//!
//! Where to start reading:
//!
//! - [`action`]: the [`Action`]s Hearth's nodes record, one enum.
//! - [`entry`]: the typed entry and its canonical bytes (what is hashed). Read its rules on what an entry
//!   may contain: no secrets, no customer text.
//! - [`merkle`]: leaf and node hashes, the append-only [`CompactTree`] (O(log n) state), roots of any prefix.
//! - [`proof`]: inclusion and consistency proofs, generation and verification (RFC 9162 §2.1.3, §2.1.4).
//! - [`log`]: [`AuditLog`], the writer's state machine: sequence numbers, monotone time, signed heads.
//! - [`checkpoint`]: checkpoints as signed notes, signing, witness cosigning, verification against [`Trust`].
//! - [`keys`]: signature types, key IDs and verifier keys; the [`TreeHeadSigner`] trait the keystore
//!   implements.
//! - [`export`]: the export bundle container.
//! - [`verify`]: the offline verifier; [`report`]: its [`Report`] and [`Problem`]s.
//! - [`query`]: filters for `hearth audit query` and the counts a compliance report needs.
//!
//! # Example
//!
//! ```
//! use hearth_audit::{
//!     verify_export, Action, AuditError, AuditLog, Event, ExportBundle, Outcome, SignatureType, SoftwareSigner,
//!     Trust, VerifierKey,
//! };
//! use hearth_crypto::SuiteId;
//!
//! # fn main() -> Result<(), AuditError> {
//! let suite = SuiteId::National;
//! // In production the key stays in the keystore, behind `TreeHeadSigner`.
//! let key = SoftwareSigner::generate("hearth.example/audit", suite)?;
//! let mut log = AuditLog::new(suite, "hearth.example/audit")?;
//! let event = Event::new("urn:hearth:participant:bank-a", Action::UpdateUpload, Outcome::Refused)
//!     .detail("stale base version 2")
//!     .object("job-7");
//! let appended = log.append(event, 1_700_000_000_000)?; // the service stores these bytes and hash
//! let head = log.sign_checkpoint(&key)?;
//!
//! // The auditor's side, offline, with the log's key obtained out of band.
//! let trust = Trust { log_keys: vec![VerifierKey::of(&key, SignatureType::Log(suite))?], witnesses: vec![] };
//! let export = ExportBundle {
//!     suite,
//!     origin: log.origin().into(),
//!     keys: trust.log_keys.clone(),
//!     checkpoints: vec![head],
//!     entries: vec![(appended.entry, appended.leaf_hash)],
//! };
//! let report = verify_export(&export.encode(), &trust);
//! assert!(report.is_ok(), "{report}");
//! # Ok(())
//! # }
//! ```
//!
//! # What a verifier learns, and under which assumptions
//!
//! Assuming the suite's hash is collision resistant and its signature unforgeable, and that the auditor
//! obtained the log's public key honestly (not from the export being checked):
//!
//! - every entry up to the largest checkpoint that verifies and matches is exactly what the log committed
//!   to when it signed that checkpoint: no entry was altered, inserted, removed or reordered since;
//! - two checkpoints that cannot both describe one append-only history (a *fork*, or split view) are
//!   caught when both reach the verifier, whoever collected them; witness cosignatures say which
//!   independent parties saw a given head, so a fork needs their collusion to stay hidden;
//! - entries appended after the last checkpoint are only as trustworthy as the export itself: the report
//!   says how many there are.
//!
//! The log does not prove that the operator recorded every event: a node that never writes an entry
//! leaves no trace. It proves that what was written, and signed, was not changed afterwards.
//!
//! # References
//!
//! - RFC 9162 §2.1: Merkle tree hash, inclusion and consistency proofs.
//! - C2SP signed-note (<https://c2sp.org/signed-note>), tlog-checkpoint (<https://c2sp.org/tlog-checkpoint>),
//!   tlog-cosignature (<https://c2sp.org/tlog-cosignature>).
//! - RFC 8785 (JSON canonicalization scheme), whose output the entry encoding coincides with.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod checkpoint;
pub mod entry;
pub mod export;
pub mod keys;
pub mod log;
pub mod merkle;
pub mod proof;
pub mod query;
pub mod report;
pub mod verify;
#[cfg(test)]
mod verify_tests;

pub use action::{Action, UnknownAction};
pub use checkpoint::{
    witness_cosign, Checkpoint, CosignatureSeen, SignedCheckpoint, Trust, VerifiedCheckpoint,
};
pub use entry::{Entry, Event, Outcome};
pub use export::{ExportBundle, ExportHeader};
pub use keys::{SignatureType, SoftwareSigner, TreeHeadSigner, VerifierKey};
pub use log::{Appended, AuditLog};
pub use merkle::{CompactTree, Hash, LeafStore};
pub use proof::{
    consistency_proof, inclusion_proof, verify_consistency, verify_entry_inclusion, verify_inclusion,
};
pub use query::{summarize, Filter, Summary};
pub use report::{CheckpointReport, CheckpointSource, CheckpointStatus, Problem, Report};
pub use verify::{verify_export, verify_export_with};

use hearth_crypto::CryptoError;

/// Errors of the audit log library.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// An entry field breaks the entry rules (see [`entry`]): a caller passed an over-long value, a control
    /// character or an empty actor or action, or an exported entry was edited.
    #[error("invalid audit entry field {field}: {reason}")]
    InvalidEntry {
        /// The field's name as it appears in the canonical encoding.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Bytes that should be an entry, a checkpoint, a verifier key or an export are not: the input was
    /// truncated, edited, or is not what the caller thinks it is.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong, naming the bad part.
        reason: String,
    },
    /// A leaf index or tree size is outside the tree: the caller asked for a proof about leaves the tree
    /// does not have yet, or for a consistency proof from a larger tree to a smaller one.
    #[error("{0}")]
    OutOfRange(String),
    /// A proof does not verify: it was made for other sizes or another root, or was altered.
    #[error("{kind} proof does not verify: {reason}")]
    ProofFailed {
        /// `inclusion` or `consistency`.
        kind: &'static str,
        /// Which check failed.
        reason: String,
    },
    /// A signature by a trusted key does not verify over a checkpoint: the checkpoint was altered after
    /// signing, or someone else signed it under that key's name and id.
    #[error(
        "signature by trusted key {key} does not verify over the checkpoint for {origin} at size {size}"
    )]
    BadSignature {
        /// The key's name.
        key: String,
        /// The checkpoint's origin line.
        origin: String,
        /// The checkpoint's tree size.
        size: u64,
    },
    /// No trusted log key signed a checkpoint: it comes from another log, or the verifier was configured
    /// with the wrong key.
    #[error("no trusted log key signed the checkpoint for {origin} at size {size}")]
    NoTrustedSignature {
        /// The checkpoint's origin line.
        origin: String,
        /// The checkpoint's tree size.
        size: u64,
    },
    /// A signer (software key, keystore, HSM) could not sign.
    #[error("signing with key {key} failed: {reason}")]
    Signer {
        /// The signer's key name.
        key: String,
        /// The backend's explanation.
        reason: String,
    },
    /// A cryptographic primitive refused its input, e.g. a public key that is not a curve point.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
