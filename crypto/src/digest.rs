//! Content digests: the fixed, unkeyed hash that the wire protocol and the file formats use to check that
//! bytes arrived or were stored whole (a model download, an update upload, a model file, a signed
//! policy's fingerprint), and the digest a secret is compared by. Both are SHA-256 whatever the
//! consortium's suite, because the formats fix it; services name [`ContentDigest`], never the algorithm.
//!
//! What a content digest does not do: authenticate. It catches damage and truncation; who sent the
//! bytes is the business of mTLS and the protocol's signatures.

use sha2_11::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Length of a content digest in bytes.
pub const CONTENT_DIGEST_LEN: usize = 32;

/// A content digest computed over bytes fed in pieces (a streamed transfer).
#[derive(Debug, Clone, Default)]
pub struct ContentDigest(Sha256);

impl ContentDigest {
    /// An empty digest.
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> [u8; CONTENT_DIGEST_LEN] {
        self.0.finalize().into()
    }

    /// Whether everything fed has the digest `expected` (any length: a wrong-length one never matches).
    pub fn matches(self, expected: &[u8]) -> bool {
        bool::from(self.finish().as_slice().ct_eq(expected))
    }
}

/// The content digest of `bytes`.
pub fn content_digest(bytes: &[u8]) -> [u8; CONTENT_DIGEST_LEN] {
    Sha256::digest(bytes).into()
}

/// A secret kept only as its digest and compared in constant time (an API key a listener checks): the
/// process never holds the secret itself, and timing reveals nothing about it.
#[derive(Clone)]
pub struct SecretDigest([u8; CONTENT_DIGEST_LEN]);

impl SecretDigest {
    /// Keeps only the digest of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        Self(content_digest(secret))
    }

    /// Whether `presented` is the secret.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(content_digest(presented).ct_eq(&self.0))
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_and_whole_digests_agree_and_check_what_they_should() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut d = ContentDigest::new();
        for chunk in data.chunks(777) {
            d.update(chunk);
        }
        let whole = content_digest(&data);
        assert_eq!(d.clone().finish(), whole);
        assert!(d.clone().matches(&whole));
        assert!(!d.clone().matches(&whole[..31]), "a short digest never matches");
        let mut other = whole;
        other[0] ^= 1;
        assert!(!d.matches(&other));
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hex::encode(content_digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn secrets_compare_by_digest_and_never_print() {
        let k = SecretDigest::of(b"a-long-enough-api-key-0123456789");
        assert!(k.matches(b"a-long-enough-api-key-0123456789"));
        assert!(!k.matches(b"a-long-enough-api-key-012345678"));
        assert!(!format!("{k:?}").contains("long"));
    }
}
