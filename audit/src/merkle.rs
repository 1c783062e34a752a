//! The Merkle tree hash of RFC 9162 §2.1.1, over the suite's hash: leaf and node hashes, and the
//! append-only [`CompactTree`] that keeps O(log n) hashes and yields the root after every append.
//!
//! With `H` the suite's hash (SHA-256 or SM3), the hash of a list of `n` entries `D[n]` is
//!
//! - `MTH({}) = H()`, the hash of the empty string;
//! - `MTH({d0}) = H(0x00 || d0)`, the leaf hash;
//! - `MTH(D[n]) = H(0x01 || MTH(D[0:k]) || MTH(D[k:n]))` for `n > 1`, where `k` is the largest power of two
//!   smaller than `n`.
//!
//! The 0x00/0x01 prefixes separate leaves from interior nodes, so a node can never be presented as a leaf
//! (or the reverse) to forge a proof. With SHA-256 this is byte for byte the tree of RFC 6962 and
//! RFC 9162, and the tests check the published reference roots.
//!
//! This module never sees entries as values: it hashes bytes. The audit log hashes
//! [`Entry::canonical`](super::Entry::canonical).

use hearth_crypto::suite::DIGEST_LEN;
use hearth_crypto::SuiteId;

use super::AuditError;

/// A leaf, node or root hash.
pub type Hash = [u8; DIGEST_LEN];

/// The root of the empty tree: the hash of the empty string.
pub fn empty_root(suite: SuiteId) -> Hash {
    suite.suite().hash(&[])
}

/// `H(0x00 || data)`: the hash of one leaf.
pub fn leaf_hash(suite: SuiteId, data: &[u8]) -> Hash {
    suite.suite().hash(&[&[0x00], data])
}

/// `H(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(suite: SuiteId, left: &Hash, right: &Hash) -> Hash {
    suite.suite().hash(&[&[0x01], left, right])
}

/// Read access to the leaf hashes of a log, for building proofs. The service implements it over its
/// storage; a `Vec<Hash>` or slice works for tests and small logs.
pub trait LeafStore {
    /// How many leaves are stored.
    fn leaf_count(&self) -> u64;

    /// The hash of leaf `index`, or `None` past the end (or if storage failed to read it).
    fn leaf_hash(&self, index: u64) -> Option<Hash>;
}

impl LeafStore for [Hash] {
    fn leaf_count(&self) -> u64 {
        self.len() as u64
    }

    fn leaf_hash(&self, index: u64) -> Option<Hash> {
        usize::try_from(index).ok().and_then(|i| self.get(i)).copied()
    }
}

impl LeafStore for Vec<Hash> {
    fn leaf_count(&self) -> u64 {
        self.as_slice().leaf_count()
    }

    fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.as_slice().leaf_hash(index)
    }
}

/// The root of leaves `[lo, hi)` of `store`, by the recursion of RFC 9162 §2.1.1. Reads `hi - lo` leaves
/// and computes `hi - lo - 1` node hashes.
pub fn subtree_root<S: LeafStore + ?Sized>(
    suite: SuiteId,
    store: &S,
    lo: u64,
    hi: u64,
) -> Result<Hash, AuditError> {
    if lo > hi || hi > store.leaf_count() {
        return Err(AuditError::OutOfRange(format!(
            "leaves {lo}..{hi} are outside a store of {} leaves",
            store.leaf_count()
        )));
    }
    if lo == hi {
        return Ok(empty_root(suite));
    }
    // Fold the range through a compact tree: same result as the recursion, O(log n) memory.
    let mut t = CompactTree::new(suite);
    for i in lo..hi {
        let h = store.leaf_hash(i).ok_or_else(|| missing_leaf(i))?;
        t.push_leaf_hash(h);
    }
    Ok(t.root())
}

pub(super) fn missing_leaf(i: u64) -> AuditError {
    AuditError::OutOfRange(format!("leaf {i} could not be read from the store"))
}

/// An append-only Merkle tree that keeps only the roots of its maximal perfect subtrees (one per set bit
/// of the size, largest first): O(log n) memory, O(1) amortised hashes per append, O(log n) for the root.
///
/// This is the state a log writer persists beside its entries to resume after a restart, and what the
/// offline verifier streams entries through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactTree {
    suite: SuiteId,
    size: u64,
    /// Roots of the perfect subtrees, left to right; `nodes.len() == size.count_ones()`.
    nodes: Vec<Hash>,
}

impl CompactTree {
    /// The empty tree.
    pub fn new(suite: SuiteId) -> Self {
        Self { suite, size: 0, nodes: Vec::new() }
    }

    /// Rebuilds a tree from a persisted [`CompactTree::size`] and [`CompactTree::nodes`]. The node count
    /// must match the size (one node per set bit); the hashes themselves cannot be checked here, so
    /// callers should compare the resulting root with their last signed checkpoint.
    pub fn from_parts(suite: SuiteId, size: u64, nodes: Vec<Hash>) -> Result<Self, AuditError> {
        if nodes.len() != size.count_ones() as usize {
            return Err(AuditError::Malformed {
                what: "compact tree",
                reason: format!(
                    "{} node hashes for size {size}, expected {}",
                    nodes.len(),
                    size.count_ones()
                ),
            });
        }
        Ok(Self { suite, size, nodes })
    }

    /// The suite whose hash builds this tree.
    pub fn suite(&self) -> SuiteId {
        self.suite
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Roots of the maximal perfect subtrees, largest (leftmost) first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends the leaf whose data is `data` and returns its leaf hash.
    pub fn append(&mut self, data: &[u8]) -> Hash {
        let h = leaf_hash(self.suite, data);
        self.push_leaf_hash(h);
        h
    }

    /// Appends a leaf given by its hash.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        // Like incrementing a binary counter: each trailing one bit of the old size is a perfect subtree
        // of the same height as the carry, and merges with it.
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            // One node exists per set bit, so a trailing one bit always has a node to pop.
            let Some(left) = self.nodes.pop() else { break };
            h = node_hash(self.suite, &left, &h);
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The root of the current tree: `MTH` of all leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else { return empty_root(self.suite) };
        // The rightmost (smallest) subtree joins the one to its left first: that is the k-split of
        // RFC 9162 applied from the right.
        it.fold(*last, |right, left| node_hash(self.suite, left, &right))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    pub(crate) fn h(s: &str) -> Hash {
        unhex(s).try_into().unwrap()
    }

    /// The eight leaves of the RFC 6962 reference tree used across CT implementations.
    pub(crate) fn reference_leaves() -> Vec<Vec<u8>> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|s| unhex(s))
            .collect()
    }

    /// Published roots of the reference tree for sizes 0..=8.
    pub(crate) const REFERENCE_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// RFC 9162's recursive definition, written out literally, as the reference for property tests.
    pub(crate) fn mth(suite: SuiteId, leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(suite),
            1 => leaves[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(suite, &mth(suite, &leaves[..k]), &mth(suite, &leaves[k..]))
            }
        }
    }

    #[test]
    fn reference_roots_match_rfc6962() {
        let s = SuiteId::International;
        let mut t = CompactTree::new(s);
        assert_eq!(t.root(), h(REFERENCE_ROOTS[0]), "empty tree is SHA-256 of the empty string");
        for (i, leaf) in reference_leaves().iter().enumerate() {
            t.append(leaf);
            assert_eq!(t.root(), h(REFERENCE_ROOTS[i + 1]), "size {}", i + 1);
        }
    }

    #[test]
    fn small_trees_by_hand_in_both_suites() {
        for s in [SuiteId::International, SuiteId::National] {
            let hash = |parts: &[&[u8]]| s.suite().hash(parts);
            assert_eq!(empty_root(s), hash(&[b""]));
            let (a, b, c) = (hash(&[b"\x00a"]), hash(&[b"\x00b"]), hash(&[b"\x00c"]));
            let ab = hash(&[b"\x01", &a, &b]);
            let abc = hash(&[b"\x01", &ab, &c]);
            let mut t = CompactTree::new(s);
            t.append(b"a");
            assert_eq!(t.root(), a, "{s}: one leaf");
            t.append(b"b");
            assert_eq!(t.root(), ab, "{s}: two leaves");
            t.append(b"c");
            assert_eq!(t.root(), abc, "{s}: three leaves split 2 + 1");
            assert_eq!(t.nodes(), &[ab, c]);
            let resumed = CompactTree::from_parts(s, 3, vec![ab, c]).unwrap();
            assert_eq!(resumed, t);
            assert!(CompactTree::from_parts(s, 3, vec![ab]).is_err());
        }
        // SM3 of the empty string, GB/T 32905 as computed by OpenSSL's `sm3` digest.
        assert_eq!(
            empty_root(SuiteId::National),
            h("1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b")
        );
    }

    #[test]
    fn subtree_root_reads_any_range() {
        let s = SuiteId::International;
        let leaves: Vec<Hash> = reference_leaves().iter().map(|d| leaf_hash(s, d)).collect();
        for n in 0..=8 {
            assert_eq!(subtree_root(s, &leaves, 0, n).unwrap(), h(REFERENCE_ROOTS[n as usize]));
        }
        assert!(subtree_root(s, &leaves, 0, 9).is_err());
        assert!(subtree_root(s, &leaves, 5, 4).is_err());
    }

    proptest! {
        #[test]
        fn compact_tree_matches_the_recursive_definition(n in 0usize..70) {
            for s in [SuiteId::International, SuiteId::National] {
                let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(s, &i.to_le_bytes())).collect();
                let mut t = CompactTree::new(s);
                for (i, l) in leaves.iter().enumerate() {
                    t.push_leaf_hash(*l);
                    prop_assert_eq!(t.root(), mth(s, &leaves[..=i]));
                }
                prop_assert_eq!(t.root(), mth(s, &leaves));
            }
        }
    }
}
