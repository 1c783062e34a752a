//! Inclusion and consistency proofs: generation (RFC 9162 §2.1.3.1, §2.1.4.1) over a [`LeafStore`], and
//! verification (RFC 9162 §2.1.3.2, §2.1.4.2) from hashes alone.
//!
//! - An **inclusion proof** convinces someone holding a signed root of size `n` that a given leaf hash is
//!   leaf `m` of that tree, with about log2(n) hashes. A participant keeps one for the entry recording
//!   its own upload; a regulator can check one entry without the whole log.
//! - A **consistency proof** convinces someone holding roots of sizes `m <= n` that the tree of size `m`
//!   is a prefix of the tree of size `n`: nothing was changed, only appended. A witness checks one
//!   before cosigning a new checkpoint.
//!
//! Verification follows the RFC's algorithms step by step, so a proof with a hash too many or too few,
//! for other sizes, or with any bit changed, fails. Generation reads `O(n)` leaf hashes from the store
//! (it recomputes sibling subtrees); a service answering many proofs over a large log should cache
//! interior nodes.

use hearth_crypto::SuiteId;

use super::merkle::{empty_root, leaf_hash, node_hash, subtree_root, Hash, LeafStore};
use super::{AuditError, Entry};

/// Largest power of two strictly smaller than `n`, for `n >= 2`.
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The audit path of leaf `index` in the tree of the first `size` leaves of `store` (RFC 9162 §2.1.3.1),
/// from the leaf's sibling up to the root's child.
pub fn inclusion_proof<S: LeafStore + ?Sized>(
    suite: SuiteId,
    store: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, AuditError> {
    if index >= size || size > store.leaf_count() {
        return Err(AuditError::OutOfRange(format!(
            "no inclusion proof for leaf {index} in a tree of size {size}: the store holds {} leaves",
            store.leaf_count()
        )));
    }
    let mut out = Vec::new();
    path(suite, store, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<S: LeafStore + ?Sized>(
    suite: SuiteId,
    store: &S,
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), AuditError> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(suite, store, m, lo, lo + k, out)?;
        out.push(subtree_root(suite, store, lo + k, hi)?);
    } else {
        path(suite, store, m - k, lo + k, hi, out)?;
        out.push(subtree_root(suite, store, lo, lo + k)?);
    }
    Ok(())
}

/// The consistency proof between the trees of the first `old_size` and `new_size` leaves of `store`
/// (RFC 9162 §2.1.4.1). Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof<S: LeafStore + ?Sized>(
    suite: SuiteId,
    store: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, AuditError> {
    if old_size > new_size || new_size > store.leaf_count() {
        return Err(AuditError::OutOfRange(format!(
            "no consistency proof from size {old_size} to size {new_size}: the store holds {} leaves",
            store.leaf_count()
        )));
    }
    let mut out = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(suite, store, old_size, 0, new_size, true, &mut out)?;
    }
    Ok(out)
}

fn subproof<S: LeafStore + ?Sized>(
    suite: SuiteId,
    store: &S,
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), AuditError> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(subtree_root(suite, store, lo, hi)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(suite, store, m, lo, lo + k, whole, out)?;
        out.push(subtree_root(suite, store, lo + k, hi)?);
    } else {
        subproof(suite, store, m - k, lo + k, hi, false, out)?;
        out.push(subtree_root(suite, store, lo, lo + k)?);
    }
    Ok(())
}

fn inclusion_failed(reason: impl Into<String>) -> AuditError {
    AuditError::ProofFailed { kind: "inclusion", reason: reason.into() }
}

fn consistency_failed(reason: impl Into<String>) -> AuditError {
    AuditError::ProofFailed { kind: "consistency", reason: reason.into() }
}

/// Checks that `leaf` (a leaf hash, `H(0x00 || data)`) is leaf `index` of the tree of size `size` whose
/// root is `root`, following RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    suite: SuiteId,
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), AuditError> {
    if index >= size {
        return Err(inclusion_failed(format!("leaf index {index} is not below tree size {size}")));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(inclusion_failed(format!("more than the hashes a tree of size {size} needs")));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(suite, p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(suite, &r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(inclusion_failed(format!("fewer than the hashes a tree of size {size} needs")));
    }
    if r != *root {
        return Err(inclusion_failed(format!("recomputed root differs from the root of size {size}")));
    }
    Ok(())
}

/// Checks that `entry` is included, at the position its sequence number says, in the tree of size `size`
/// whose root is `root`. The leaf hash is computed here from the entry's canonical bytes, so a proof cannot
/// pass an interior node off as a leaf.
pub fn verify_entry_inclusion(
    suite: SuiteId,
    entry: &Entry,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), AuditError> {
    let leaf = leaf_hash(suite, &entry.canonical());
    verify_inclusion(suite, entry.seq(), size, &leaf, proof, root)
}

/// Checks that the tree of size `old_size` with root `old_root` is a prefix of the tree of size
/// `new_size` with root `new_root`, following RFC 9162 §2.1.4.2. Equal sizes need equal roots and an
/// empty proof; the empty tree (whose root must be the hash of the empty string) is a prefix of every tree.
pub fn verify_consistency(
    suite: SuiteId,
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), AuditError> {
    if old_size > new_size {
        return Err(consistency_failed(format!("old size {old_size} is larger than new size {new_size}")));
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(consistency_failed(format!(
                "sizes {old_size} and {new_size} need an empty proof, got {} hashes",
                proof.len()
            )));
        }
        if old_size == 0 && *old_root != empty_root(suite) {
            return Err(consistency_failed("old root of size 0 is not the empty tree's root"));
        }
        if old_size == new_size && old_root != new_root {
            return Err(consistency_failed(format!("two different roots for size {old_size}")));
        }
        return Ok(());
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(consistency_failed("empty proof between different sizes"));
    };
    // Step 2: when the old tree is a perfect subtree, its root is the proof's implicit first hash.
    let (start, rest) = if old_size.is_power_of_two() { (old_root, proof) } else { (first, rest) };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in rest {
        if s == 0 {
            return Err(consistency_failed(format!(
                "more than the hashes sizes {old_size} and {new_size} need"
            )));
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(suite, c, &fr);
            sr = node_hash(suite, c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(suite, &sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(consistency_failed(format!(
            "fewer than the hashes sizes {old_size} and {new_size} need"
        )));
    }
    if fr != *old_root {
        return Err(consistency_failed(format!(
            "recomputed root of size {old_size} differs from the old root"
        )));
    }
    if sr != *new_root {
        return Err(consistency_failed(format!(
            "recomputed root of size {new_size} differs from the new root"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::merkle::tests::{h, mth, reference_leaves, REFERENCE_ROOTS};
    use super::*;

    const SHA: SuiteId = SuiteId::International;

    fn reference() -> Vec<Hash> {
        reference_leaves().iter().map(|d| leaf_hash(SHA, d)).collect()
    }

    fn root(n: usize) -> Hash {
        h(REFERENCE_ROOTS[n])
    }

    #[test]
    fn inclusion_proofs_match_published_vectors() {
        // (leaf index, tree size, proof) from the RFC 6962 reference tests shared by CT implementations.
        let vectors: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let leaves = reference();
        for (index, size, proof) in vectors {
            let want: Vec<Hash> = proof.iter().map(|s| h(s)).collect();
            assert_eq!(inclusion_proof(SHA, &leaves, index, size).unwrap(), want, "leaf {index} of {size}");
            let leaf = leaves[index as usize];
            verify_inclusion(SHA, index, size, &leaf, &want, &root(size as usize)).unwrap();
            forged_inclusions_fail(index, size, &leaf, &want, &root(size as usize));
        }
    }

    /// The forgeries of the CT reference tests: wrong index or size, wrong leaf or root, hashes added,
    /// removed or altered.
    fn forged_inclusions_fail(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) {
        let other = h("abacaba000000000000000000000000000000000000000000060061e00123456");
        let mut probes: Vec<(u64, u64, Hash, Vec<Hash>, Hash, String)> = vec![
            (index.wrapping_sub(1), size, *leaf, proof.to_vec(), *root, "index - 1".into()),
            (index + 1, size, *leaf, proof.to_vec(), *root, "index + 1".into()),
            (index ^ 2, size, *leaf, proof.to_vec(), *root, "index ^ 2".into()),
            (index, size * 2, *leaf, proof.to_vec(), *root, "size * 2".into()),
            (index, size / 2, *leaf, proof.to_vec(), *root, "size / 2".into()),
            (index, size, other, proof.to_vec(), *root, "wrong leaf".into()),
            (index, size, *leaf, proof.to_vec(), other, "wrong root".into()),
            (index, size, *leaf, [proof, &[*root]].concat(), *root, "trailing root".into()),
            (index, size, *leaf, [&[*root], proof].concat(), *root, "preceding root".into()),
        ];
        for i in 0..proof.len() {
            let mut p = proof.to_vec();
            p[i][0] ^= 8;
            probes.push((index, size, *leaf, p, *root, format!("proof[{i}] altered")));
        }
        if !proof.is_empty() {
            probes.push((
                index,
                size,
                *leaf,
                proof[..proof.len() - 1].to_vec(),
                *root,
                "hash removed".into(),
            ));
        }
        for (i, s, l, p, r, what) in probes {
            assert!(verify_inclusion(SHA, i, s, &l, &p, &r).is_err(), "{what} accepted for {index}/{size}");
        }
    }

    #[test]
    fn consistency_proofs_match_published_vectors() {
        let vectors: [(u64, u64, &[&str]); 5] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        let leaves = reference();
        for (m, n, proof) in vectors {
            let want: Vec<Hash> = proof.iter().map(|s| h(s)).collect();
            assert_eq!(consistency_proof(SHA, &leaves, m, n).unwrap(), want, "{m} -> {n}");
            let (r1, r2) = (root(m as usize), root(n as usize));
            verify_consistency(SHA, m, n, &r1, &r2, &want).unwrap();
            if want.is_empty() {
                continue;
            }
            let other = h("abacaba000000000000000000000000000000000000000000060061e00123456");
            let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
                (m - 1, n, r1, r2, want.clone()),
                (m + 1, n, r1, r2, want.clone()),
                (m ^ 2, n, r1, r2, want.clone()),
                (m, n * 2, r1, r2, want.clone()),
                (m, n / 2, r1, r2, want.clone()),
                (m, n, other, r2, want.clone()),
                (m, n, r1, other, want.clone()),
                (m, n, r2, r1, want.clone()),
                (m, n, r1, r2, vec![]),
                (m, n, r1, r2, [want.as_slice(), &[r1]].concat()),
                (m, n, r1, r2, [want.as_slice(), &[r2]].concat()),
                (m, n, r1, r2, [&[r1], want.as_slice()].concat()),
                (m, n, r1, r2, [&[want[0]], want.as_slice()].concat()),
                (m, n, r1, r2, want[..want.len() - 1].to_vec()),
            ];
            for i in 0..want.len() {
                let mut p = want.clone();
                p[i][0] ^= 16;
                probes.push((m, n, r1, r2, p));
            }
            for (a, b, ra, rb, p) in probes {
                assert!(verify_consistency(SHA, a, b, &ra, &rb, &p).is_err(), "{a}->{b} {p:?} accepted");
            }
        }
    }

    #[test]
    fn edge_cases_of_consistency_and_ranges() {
        let leaves = reference();
        let e = empty_root(SHA);
        verify_consistency(SHA, 0, 5, &e, &root(5), &[]).unwrap();
        assert!(verify_consistency(SHA, 0, 5, &root(1), &root(5), &[]).is_err(), "size 0 needs H(\"\")");
        assert!(verify_consistency(SHA, 0, 5, &e, &root(5), &[e]).is_err(), "size 0 needs no hashes");
        assert!(verify_consistency(SHA, 3, 3, &root(3), &root(4), &[]).is_err(), "same size, two roots");
        assert!(verify_consistency(SHA, 4, 3, &root(4), &root(3), &[]).is_err(), "shrinking");
        assert!(inclusion_proof(SHA, &leaves, 8, 8).is_err());
        assert!(inclusion_proof(SHA, &leaves, 0, 9).is_err());
        assert!(consistency_proof(SHA, &leaves, 5, 4).is_err());
        assert!(consistency_proof(SHA, &leaves, 5, 9).is_err());
        assert!(verify_inclusion(SHA, 0, 0, &leaves[0], &[], &e).is_err());
    }

    #[test]
    fn a_node_presented_as_a_leaf_fails() {
        // Interior node n01 = H(0x01 || l0 || l1) is the root of the size-2 subtree. Someone presenting its
        // children's concatenation as one leaf's data gets H(0x00 || l0 || l1), which differs.
        let leaves = reference();
        let data = [leaves[0], leaves[1]].concat();
        let forged_leaf = leaf_hash(SHA, &data);
        let proof = inclusion_proof(SHA, &leaves, 0, 4).unwrap();
        assert!(verify_inclusion(SHA, 0, 3, &forged_leaf, &proof[1..], &root(4)).is_err());
        assert!(verify_inclusion(SHA, 0, 2, &forged_leaf, &proof[1..], &root(4)).is_err());
        // The node hash itself, handed over as if it were a leaf hash, would pass `verify_inclusion`: that
        // is why verifiers hash the data themselves, as `verify_entry_inclusion` does.
        let n01 = node_hash(SHA, &leaves[0], &leaves[1]);
        verify_inclusion(SHA, 0, 2, &n01, &proof[1..], &root(4)).unwrap();
    }

    #[test]
    fn entry_inclusion_hashes_the_entry_itself() {
        use super::super::{Entry, Event, Outcome};
        for s in [SuiteId::International, SuiteId::National] {
            let entries: Vec<Entry> = (0..5)
                .map(|i| {
                    Entry::new(i, 10 * i, Event::new("system", crate::Action::NodeStart, Outcome::Ok))
                        .unwrap()
                })
                .collect();
            let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(s, &e.canonical())).collect();
            let r = mth(s, &leaves);
            let p = inclusion_proof(s, &leaves, 3, 5).unwrap();
            verify_entry_inclusion(s, &entries[3], 5, &p, &r).unwrap();
            assert!(verify_entry_inclusion(s, &entries[2], 5, &p, &r).is_err(), "{s}: another entry");
        }
    }

    fn flip(p: &mut [Hash], i: usize, bit: usize) {
        p[i][bit / 8] ^= 1 << (bit % 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn every_generated_proof_verifies_and_any_bit_flip_fails(
            n in 1u64..80, a in any::<u64>(), b in any::<u64>(), bit in 0usize..256, national in any::<bool>()
        ) {
            let s = if national { SuiteId::National } else { SuiteId::International };
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(s, &i.to_be_bytes())).collect();
            let size = 1 + a % n;
            let index = b % size;
            let r = mth(s, &leaves[..size as usize]);
            let p = inclusion_proof(s, &leaves, index, size).unwrap();
            prop_assert!(verify_inclusion(s, index, size, &leaves[index as usize], &p, &r).is_ok());
            if !p.is_empty() {
                let mut bad = p.clone();
                flip(&mut bad, (b as usize) % p.len(), bit);
                prop_assert!(verify_inclusion(s, index, size, &leaves[index as usize], &bad, &r).is_err());
            }
            let mut bad_leaf = leaves[index as usize];
            bad_leaf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(s, index, size, &bad_leaf, &p, &r).is_err());

            let old = b % (size + 1);
            let r_old = mth(s, &leaves[..old as usize]);
            let c = consistency_proof(s, &leaves, old, size).unwrap();
            prop_assert!(verify_consistency(s, old, size, &r_old, &r, &c).is_ok());
            if !c.is_empty() {
                let mut bad = c.clone();
                flip(&mut bad, (a as usize) % c.len(), bit);
                prop_assert!(verify_consistency(s, old, size, &r_old, &r, &bad).is_err());
            }
            if old > 0 {
                let mut bad_root = r_old;
                bad_root[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(s, old, size, &bad_root, &r, &c).is_err());
            }
        }
    }
}
