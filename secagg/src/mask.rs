//! Masks: key derivations from key agreement, and expansion of a seed into a mask added in place.
//!
//! Responsibility: the arithmetic of masking. A mask is the suite's keystream read as little-endian
//! u32 words and added to (or subtracted from) a vector with wrapping arithmetic, so masks cancel
//! exactly modulo 2^32, hence modulo 2^b for every b <= 32. It never decides which masks a party applies.
//!
//! Speed: a mask is cut into blocks of [`BLOCK_BYTES`], each with its own seed derived from the mask seed
//! and the block number, so any block can be computed alone and threads split a vector by blocks. Within
//! a block the keystream is read [`CHUNK_BYTES`] at a time into one reused scratch buffer and folded into
//! the vector at once, while both are in the L1 cache. [`apply_masks`] takes a vector block by block and
//! folds every mask into a block before moving on, so each block of the vector is read from memory once
//! however many masks there are. Nothing is allocated per element; per block and mask there is one MAC
//! and one cipher set-up, about 1% of the block's keystream.

use zeroize::Zeroizing;

use hearth_crypto::suite::{CryptoError, CryptoSuite, SecretBytes, SuiteId, DIGEST_LEN};

/// Keystream bytes per mask block (the unit of seed derivation and of splitting among threads).
pub const BLOCK_BYTES: usize = 64 * 1024;
const BLOCK_WORDS: usize = BLOCK_BYTES / 4;
/// Keystream bytes produced per step: with the vector words they are folded into, well inside L1.
pub const CHUNK_BYTES: usize = 4 * 1024;

/// Whether a mask is added or subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Add the mask.
    Add,
    /// Subtract the mask.
    Subtract,
}

impl Sign {
    /// The opposite sign.
    pub fn flip(self) -> Self {
        match self {
            Sign::Add => Sign::Subtract,
            Sign::Subtract => Sign::Add,
        }
    }
}

/// Expands mask seeds into vectors. Holds the reusable scratch buffer.
pub struct MaskExpander {
    suite: &'static dyn CryptoSuite,
    scratch: Zeroizing<[u8; CHUNK_BYTES]>,
}

impl std::fmt::Debug for MaskExpander {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaskExpander({:?})", self.suite.id())
    }
}

impl MaskExpander {
    /// An expander for `suite`, with a [`CHUNK_BYTES`] scratch buffer.
    pub fn new(suite: SuiteId) -> Self {
        Self { suite: suite.suite(), scratch: Zeroizing::new([0u8; CHUNK_BYTES]) }
    }

    /// Adds or subtracts the mask of `seed` to `out`, modulo 2^32.
    pub fn apply(&mut self, seed: &SecretBytes, sign: Sign, out: &mut [u32]) {
        self.apply_at(seed, sign, out, 0);
    }

    /// Like [`MaskExpander::apply`] for the part of a vector that starts at block `first_block` (word
    /// `first_block * BLOCK_BYTES / 4`), so that parts of one vector can be masked independently.
    pub fn apply_at(&mut self, seed: &SecretBytes, sign: Sign, out: &mut [u32], first_block: usize) {
        for (i, words) in out.chunks_mut(BLOCK_WORDS).enumerate() {
            self.apply_block(seed, sign, words, first_block + i);
        }
    }

    /// Folds block `block` of the mask of `seed` into `words` (at most one block long).
    fn apply_block(&mut self, seed: &SecretBytes, sign: Sign, words: &mut [u32], block: usize) {
        let block = (block as u64).to_le_bytes();
        let block_seed =
            SecretBytes::new(self.suite.mac(seed.expose(), &[b"hearth-secagg/v1 mask block", &block]));
        let mut stream = self.suite.keystream_reader(&block_seed);
        for chunk in words.chunks_mut(CHUNK_BYTES / 4) {
            let bytes = &mut self.scratch[..chunk.len() * 4];
            stream.read(bytes);
            fold(chunk, bytes, sign);
        }
    }

    /// Folds every mask into `out`, one block of `out` at a time (see the module notes).
    fn apply_all_at(&mut self, masks: &[(SecretBytes, Sign)], out: &mut [u32], first_block: usize) {
        for (i, words) in out.chunks_mut(BLOCK_WORDS).enumerate() {
            for (seed, sign) in masks {
                self.apply_block(seed, *sign, words, first_block + i);
            }
        }
    }
}

/// Adds `stream`, read as little-endian u32 words, to `words` (or subtracts it), 16 words at a time so
/// the compiler vectorises the loop.
pub(crate) fn fold(words: &mut [u32], stream: &[u8], sign: Sign) {
    let mut w16 = words.chunks_exact_mut(16);
    let mut s64 = stream.chunks_exact(64);
    for (ws, cs) in (&mut w16).zip(&mut s64) {
        let mut tmp = [0u32; 16];
        for (t, c) in tmp.iter_mut().zip(cs.chunks_exact(4)) {
            *t = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        add_words(ws, &tmp, sign);
    }
    let mut tail = [0u32; 16];
    for (t, c) in tail.iter_mut().zip(s64.remainder().chunks_exact(4)) {
        *t = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    // The word remainder has as many words as the byte remainder has 4-byte groups.
    add_words(w16.into_remainder(), &tail, sign);
}

fn add_words(words: &mut [u32], mask: &[u32], sign: Sign) {
    match sign {
        Sign::Add => words.iter_mut().zip(mask).for_each(|(w, m)| *w = w.wrapping_add(*m)),
        Sign::Subtract => words.iter_mut().zip(mask).for_each(|(w, m)| *w = w.wrapping_sub(*m)),
    }
}

/// Applies every `(seed, sign)` mask to `out`, splitting the vector into `threads` contiguous runs of
/// whole blocks, each masked by its own scoped thread (no extra vector is allocated). With `threads`
/// <= 1 or a vector of one block it runs on the calling thread. Call it from a blocking context (e.g.
/// `spawn_blocking`), never on an async worker.
pub fn apply_masks(suite: SuiteId, masks: &[(SecretBytes, Sign)], out: &mut [u32], threads: usize) {
    let blocks = out.len().div_ceil(BLOCK_WORDS);
    if threads <= 1 || blocks <= 1 {
        MaskExpander::new(suite).apply_all_at(masks, out, 0);
        return;
    }
    let blocks_per_thread = blocks.div_ceil(threads);
    std::thread::scope(|scope| {
        for (i, part) in out.chunks_mut(blocks_per_thread * BLOCK_WORDS).enumerate() {
            scope.spawn(move || MaskExpander::new(suite).apply_all_at(masks, part, i * blocks_per_thread));
        }
    });
}

fn derive(
    suite: &dyn CryptoSuite,
    ikm: &[u8],
    context: &[u8; DIGEST_LEN],
    label: &[u8],
    a: u32,
    b: u32,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut info = Vec::with_capacity(label.len() + 8);
    info.extend_from_slice(label);
    info.extend_from_slice(&lo.to_le_bytes());
    info.extend_from_slice(&hi.to_le_bytes());
    suite.kdf(ikm, context, &info, out)
}

/// The AEAD key of the share channel between clients `a` and `b` (symmetric in a and b): HKDF of the
/// agreement of the channel keys, salted with the round context.
pub fn channel_key(
    suite: SuiteId,
    context: &[u8; DIGEST_LEN],
    my_secret: &SecretBytes,
    peer_public: &[u8],
    a: u32,
    b: u32,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let s = suite.suite();
    let shared = s.agree(my_secret, peer_public)?;
    let mut key = Zeroizing::new(vec![0u8; s.aead_key_len()]);
    derive(s, shared.expose(), context, b"hearth-secagg/v1 share channel", a, b, &mut key)?;
    Ok(key)
}

/// The seed of the pairwise mask between clients `a` and `b` (symmetric in a and b).
pub fn pairwise_seed(
    suite: SuiteId,
    context: &[u8; DIGEST_LEN],
    my_secret: &SecretBytes,
    peer_public: &[u8],
    a: u32,
    b: u32,
) -> Result<SecretBytes, CryptoError> {
    let s = suite.suite();
    let shared = s.agree(my_secret, peer_public)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    derive(s, shared.expose(), context, b"hearth-secagg/v1 pairwise mask", a, b, seed.as_mut())?;
    Ok(SecretBytes::new(*seed))
}

/// The seed of client `u`'s self mask from its secret `b_u`.
pub fn self_mask_seed(
    suite: SuiteId,
    context: &[u8; DIGEST_LEN],
    b: &SecretBytes,
    u: u32,
) -> Result<SecretBytes, CryptoError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    derive(suite.suite(), b.expose(), context, b"hearth-secagg/v1 self mask", u, u, seed.as_mut())?;
    Ok(SecretBytes::new(*seed))
}

/// The sign with which client `me` applies its pairwise mask with `peer`: the lower index adds, the
/// higher subtracts, so the two cancel in the sum.
pub fn pairwise_sign(me: u32, peer: u32) -> Sign {
    if me < peer {
        Sign::Add
    } else {
        Sign::Subtract
    }
}

/// The X25519 base point (u = 9).
const X25519_BASE: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 9;
    b
};

/// The encoded key-agreement public key of `secret`, to check a rebuilt mask key against the one its
/// owner advertised. X25519: the agreement with the base point. SM2: the suite's key agreement uses SM2
/// key pairs, whose public key is the verifying key.
pub fn agreement_public(suite: SuiteId, secret: &SecretBytes) -> Result<Vec<u8>, CryptoError> {
    match suite {
        SuiteId::International => Ok(suite.suite().agree(secret, &X25519_BASE)?.expose().to_vec()),
        SuiteId::National => suite.suite().verifying_key(secret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITES: [SuiteId; 2] = [SuiteId::International, SuiteId::National];

    #[test]
    fn masks_cancel_and_cross_block_boundaries() {
        for id in SUITES {
            let mut ex = MaskExpander::new(id);
            let len = BLOCK_WORDS * 2 + 17;
            let seed = SecretBytes::new([5; 32]);
            let mut v: Vec<u32> = (0..len as u32).collect();
            ex.apply(&seed, Sign::Add, &mut v);
            assert_ne!(v[..10], (0..10).collect::<Vec<u32>>()[..]);
            // Blocks differ from each other (no repeated keystream).
            assert_ne!(v[1..100], v[BLOCK_WORDS + 1..BLOCK_WORDS + 100]);
            ex.apply(&seed, Sign::Subtract, &mut v);
            assert_eq!(v, (0..len as u32).collect::<Vec<u32>>());
            // Split across threads, the same masks give the same vector.
            let masks = [(seed.clone(), Sign::Add), (SecretBytes::new([6; 32]), Sign::Subtract)];
            let mut one = vec![1u32; len];
            let mut three = vec![1u32; len];
            apply_masks(id, &masks, &mut one, 1);
            apply_masks(id, &masks, &mut three, 3);
            assert_eq!(one, three);
            ex.apply(&masks[1].0, Sign::Subtract, &mut v);
            ex.apply(&seed, Sign::Add, &mut v);
            v.iter_mut().zip(0u32..).for_each(|(w, i)| *w = w.wrapping_add(1).wrapping_sub(i));
            assert_eq!(one, v);
            // A prefix of a longer mask equals the shorter mask.
            let mut short = vec![0u32; 100];
            let mut long = vec![0u32; 1000];
            ex.apply(&seed, Sign::Add, &mut short);
            ex.apply(&seed, Sign::Add, &mut long);
            assert_eq!(short[..], long[..100]);
        }
    }

    #[test]
    fn derivations_are_symmetric_and_match_advertised_keys() {
        for id in SUITES {
            let s = id.suite();
            let ctx = [1u8; 32];
            let (a, a_pub) = s.agreement_keypair().unwrap();
            let (b, b_pub) = s.agreement_keypair().unwrap();
            assert_eq!(agreement_public(id, &a).unwrap(), a_pub, "{id}");
            assert_eq!(
                pairwise_seed(id, &ctx, &a, &b_pub, 3, 9).unwrap(),
                pairwise_seed(id, &ctx, &b, &a_pub, 9, 3).unwrap()
            );
            assert_eq!(
                *channel_key(id, &ctx, &a, &b_pub, 3, 9).unwrap(),
                *channel_key(id, &ctx, &b, &a_pub, 9, 3).unwrap()
            );
            assert_ne!(
                pairwise_seed(id, &ctx, &a, &b_pub, 3, 9).unwrap(),
                pairwise_seed(id, &[2; 32], &a, &b_pub, 3, 9).unwrap()
            );
            assert_ne!(
                pairwise_seed(id, &ctx, &a, &b_pub, 3, 9).unwrap(),
                pairwise_seed(id, &ctx, &a, &b_pub, 3, 8).unwrap()
            );
            assert_eq!(channel_key(id, &ctx, &a, &b_pub, 0, 1).unwrap().len(), s.aead_key_len());
        }
    }
}
