//! The log writer's state: it numbers entries, keeps time monotone, grows the Merkle tree and signs tree
//! heads. It never touches storage: [`AuditLog::append`] returns the bytes and the leaf hash, and the
//! service persists them (entries, leaf hashes for proofs, and [`CompactTree::nodes`] to resume).
//!
//! Guarantees of a log written through this type: sequence numbers run 0, 1, 2, … without gaps, equal to
//! leaf indices; times never decrease; every checkpoint it signs extends the previous one (the tree is
//! append-only), so an honest log never signs a fork.

use hearth_crypto::SuiteId;

use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::entry::{Entry, Event, MAX_SAFE_INTEGER};
use super::keys::TreeHeadSigner;
use super::merkle::{CompactTree, Hash};
use super::AuditError;

/// What one append produced, for the service to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry, with its sequence number and time.
    pub entry: Entry,
    /// Its canonical bytes: what was hashed, and what an export carries.
    pub canonical: Vec<u8>,
    /// Its leaf hash, `H(0x00 || canonical)`: keep it for inclusion and consistency proofs.
    pub leaf_hash: Hash,
}

/// An append-only audit log's in-memory state: O(log n) hashes whatever its length.
#[derive(Debug, Clone)]
pub struct AuditLog {
    origin: String,
    tree: CompactTree,
    last_time_ms: u64,
}

impl AuditLog {
    /// An empty log named `origin` (a schema-less URL such as `hearth.example/coordinator-audit`, which is
    /// also its signing key's name) hashing with `suite`.
    pub fn new(suite: SuiteId, origin: impl Into<String>) -> Result<Self, AuditError> {
        Self::resume(origin, CompactTree::new(suite), 0)
    }

    /// A log continuing from persisted state: its tree and the time of its last entry. Compare
    /// [`AuditLog::root`] with the last signed checkpoint before appending, to catch stale state.
    pub fn resume(
        origin: impl Into<String>,
        tree: CompactTree,
        last_time_ms: u64,
    ) -> Result<Self, AuditError> {
        let origin = origin.into();
        // Validates the origin once, so that every later checkpoint can be built.
        Checkpoint::new(origin.clone(), tree.size(), tree.root())?;
        Ok(Self { origin, tree, last_time_ms })
    }

    /// Appends `event` at `now_ms` (milliseconds since the Unix epoch). If the clock stepped back, the
    /// entry takes the previous entry's time, so that times never decrease; services should record the
    /// clock step itself as an event.
    pub fn append(&mut self, event: Event, now_ms: u64) -> Result<Appended, AuditError> {
        let seq = self.tree.size();
        if seq > MAX_SAFE_INTEGER {
            return Err(AuditError::OutOfRange(format!(
                "audit log {} is full at {seq} entries",
                self.origin
            )));
        }
        let entry = Entry::new(seq, now_ms.max(self.last_time_ms), event)?;
        let canonical = entry.canonical();
        let leaf_hash = self.tree.append(&canonical);
        self.last_time_ms = entry.time_ms();
        Ok(Appended { entry, canonical, leaf_hash })
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Current root hash.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Time of the last entry (0 for an empty log).
    pub fn last_time_ms(&self) -> u64 {
        self.last_time_ms
    }

    /// The tree state to persist for [`AuditLog::resume`].
    pub fn tree(&self) -> &CompactTree {
        &self.tree
    }

    /// The current tree head, unsigned.
    pub fn checkpoint(&self) -> Checkpoint {
        // The origin was validated by `resume`.
        Checkpoint::new_unchecked(self.origin.clone(), self.size(), self.root())
    }

    /// The current tree head signed by `signer` (the log's audit key, whose name should be the origin).
    pub fn sign_checkpoint(&self, signer: &dyn TreeHeadSigner) -> Result<SignedCheckpoint, AuditError> {
        SignedCheckpoint::sign(self.checkpoint(), signer)
    }
}

#[cfg(test)]
mod tests {
    use super::super::checkpoint::Trust;
    use super::super::entry::Outcome;
    use super::super::keys::{SignatureType, SoftwareSigner, VerifierKey};
    use super::super::merkle::tests::mth;
    use super::*;

    #[test]
    fn appends_number_entries_and_keep_time_monotone() {
        for suite in [SuiteId::International, SuiteId::National] {
            let mut log = AuditLog::new(suite, "hearth.example/audit").unwrap();
            let mut leaves = Vec::new();
            for (i, now) in [100u64, 200, 150, 300].into_iter().enumerate() {
                let a = log.append(Event::new("system", crate::Action::NodeStart, Outcome::Ok), now).unwrap();
                assert_eq!(a.entry.seq(), i as u64);
                assert_eq!(a.canonical, a.entry.canonical());
                leaves.push(a.leaf_hash);
            }
            let times: Vec<u64> = [100, 200, 200, 300].into();
            assert_eq!(log.last_time_ms(), 300);
            assert_eq!(log.root(), mth(suite, &leaves));
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            // A refused event does not consume a sequence number.
            assert!(log.append(Event::new("", crate::Action::NodeStart, Outcome::Ok), 400).is_err());
            assert_eq!(log.size(), 4);

            let resumed =
                AuditLog::resume("hearth.example/audit", log.tree().clone(), log.last_time_ms()).unwrap();
            assert_eq!(resumed.root(), log.root());

            let key = SoftwareSigner::generate("hearth.example/audit", suite).unwrap();
            let cp = log.sign_checkpoint(&key).unwrap();
            let trust = Trust {
                log_keys: vec![VerifierKey::of(&key, SignatureType::Log(suite)).unwrap()],
                witnesses: vec![],
            };
            let v = cp.verify(&trust).unwrap();
            assert_eq!((v.checkpoint.size(), *v.checkpoint.root()), (4, log.root()));
        }
        assert!(AuditLog::new(SuiteId::International, "has space").is_err());
    }
}
