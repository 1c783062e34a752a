//! Who signs tree heads and how their keys are named: signature types, key IDs, verifier keys (vkeys),
//! the [`TreeHeadSigner`] trait through which the keystore or an HSM signs, and a software signer.
//!
//! # Signature types and key IDs (a Hearth definition, in the spirit of the spec)
//!
//! The signed-note spec assigns type bytes to Ed25519 and to the witness's ECDSA encoding; it reserves
//! `0xff` for types it does not assign, to be followed by a longer identifier. Hearth's types are `0xff`
//! followed by an ASCII name (no identifier is a prefix of another):
//!
//! | [`SignatureType`] | identifier | signed message | signature bytes |
//! |---|---|---|---|
//! | `Log(International)` | `0xff "hearth-ecdsa-p256-sha256"` | note text | ECDSA P-256/SHA-256, `r \|\| s` (64) |
//! | `Log(National)` | `0xff "hearth-sm2-sm3"` | note text | SM2 with SM3 and the default id, `r \|\| s` (64) |
//! | `Cosignature(International)` | `0xff "hearth-cosignature/v1-ecdsa-p256-sha256"` | see below | `u64 time \|\| r \|\| s` (72) |
//! | `Cosignature(National)` | `0xff "hearth-cosignature/v1-sm2-sm3"` | see below | `u64 time \|\| r \|\| s` (72) |
//!
//! The key ID follows the spec's recommendation with the suite's hash in place of SHA-256 (so a national
//! deployment needs no international algorithm): `key ID = H(key name || 0x0A || identifier || public
//! key)[:4]`, public keys in SEC1 uncompressed form (65 bytes). Verifier keys are written as the spec's
//! vkeys: `<name>+<hex key ID>+<base64(identifier || public key)>`.
//!
//! A cosignature follows c2sp.org/tlog-cosignature v1: the witness signs `"cosignature/v1\n"`, `"time
//! <T>\n"` (T in POSIX seconds, decimal) and the note text, and the signature line carries T as 8
//! big-endian bytes before the signature. It states that, at time T, this was the largest consistent head
//! the witness had seen for the origin: a witness must check consistency with its last cosigned head
//! (see [`verify_consistency`](super::verify_consistency)) before cosigning.
//!
//! These are Hearth's definitions: a generic signed-note verifier ignores such signatures (as the spec
//! requires for unknown keys) rather than misreading them.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use hearth_crypto::{CryptoError, SecretBytes, SuiteId};

use super::AuditError;

/// Longest origin or key name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest cosignature time: the spec bounds it to 2^63 - 1.
pub const MAX_COSIGNATURE_TIME: u64 = i64::MAX as u64;

const COSIGNATURE_HEADER: &str = "cosignature/v1\n";

fn malformed(what: &'static str, reason: impl Into<String>) -> AuditError {
    AuditError::Malformed { what, reason: reason.into() }
}

/// Checks a key name or origin: non-empty, bounded, no Unicode space, no `+`, no control character.
pub(super) fn check_name(what: &'static str, name: &str) -> Result<(), AuditError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(malformed(what, format!("{} bytes, expected 1 to {MAX_NAME_LEN}", name.len())));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '+') {
        return Err(malformed(
            what,
            format!("{name:?} contains {c:?}; spaces, '+' and controls are not allowed"),
        ));
    }
    Ok(())
}

/// How a signature line was made: which algorithm, and whether it is the log's signature or a witness's
/// timestamped cosignature. See the module docs for the identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureType {
    /// The log's signature over the note text.
    Log(SuiteId),
    /// A witness's timestamped cosignature (tlog-cosignature v1 message).
    Cosignature(SuiteId),
}

const TYPES: [SignatureType; 4] = [
    SignatureType::Log(SuiteId::International),
    SignatureType::Log(SuiteId::National),
    SignatureType::Cosignature(SuiteId::International),
    SignatureType::Cosignature(SuiteId::National),
];

impl SignatureType {
    /// The suite whose signature algorithm (and hash, for key IDs) this type uses.
    pub fn suite(self) -> SuiteId {
        match self {
            SignatureType::Log(s) | SignatureType::Cosignature(s) => s,
        }
    }

    /// The signature-type identifier: `0xff` followed by an ASCII name.
    pub fn identifier(self) -> &'static [u8] {
        match self {
            SignatureType::Log(SuiteId::International) => b"\xffhearth-ecdsa-p256-sha256",
            SignatureType::Log(SuiteId::National) => b"\xffhearth-sm2-sm3",
            SignatureType::Cosignature(SuiteId::International) => {
                b"\xffhearth-cosignature/v1-ecdsa-p256-sha256"
            }
            SignatureType::Cosignature(SuiteId::National) => b"\xffhearth-cosignature/v1-sm2-sm3",
        }
    }
}

/// A public key a verifier trusts, with its name and signature type; encodes to and from a vkey string.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    kind: SignatureType,
    public: Vec<u8>,
    id: u32,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({})", self.encode())
    }
}

impl VerifierKey {
    /// A key named `name` of type `kind`; `public` must be a valid point of the type's suite.
    pub fn new(name: impl Into<String>, kind: SignatureType, public: Vec<u8>) -> Result<Self, AuditError> {
        let name = name.into();
        check_name("key name", &name)?;
        // The suites check the key before the signature: an all-zero signature separates "not a point"
        // from "does not verify" without a dedicated parsing API.
        if let Err(e @ CryptoError::InvalidKey { .. }) = kind.suite().suite().verify(&public, b"", &[0u8; 64])
        {
            return Err(e.into());
        }
        let digest = kind.suite().suite().hash(&[name.as_bytes(), b"\n", kind.identifier(), &public]);
        let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        Ok(Self { name, kind, public, id })
    }

    /// The key of `signer`, as a verifier of signatures of type `kind` must configure it.
    pub fn of(signer: &dyn TreeHeadSigner, kind: SignatureType) -> Result<Self, AuditError> {
        Self::new(signer.key_name(), kind, signer.public_key())
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's signature type.
    pub fn kind(&self) -> SignatureType {
        self.kind
    }

    /// The SEC1 public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The 4-byte key ID, derived as in the module docs.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The vkey string: `<name>+<hex key ID>+<base64(identifier || public key)>`.
    pub fn encode(&self) -> String {
        let material = [self.kind.identifier(), &self.public].concat();
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(material))
    }

    /// Parses a vkey string, refusing one whose key ID does not match its name, type and key.
    pub fn parse(vkey: &str) -> Result<Self, AuditError> {
        let what = "verifier key";
        if vkey.len() > MAX_NAME_LEN + 512 {
            return Err(malformed(what, format!("{} bytes is too long for a vkey", vkey.len())));
        }
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed(what, "expected <name>+<key id>+<key material>"));
        };
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(malformed(what, format!("key id {id:?} is not 8 lower-case hex digits")));
        }
        let id = u32::from_str_radix(id, 16).map_err(|e| malformed(what, e.to_string()))?;
        let material = B64.decode(material).map_err(|e| malformed(what, format!("key material: {e}")))?;
        let Some((kind, public)) =
            TYPES.iter().find_map(|t| material.strip_prefix(t.identifier()).map(|p| (*t, p.to_vec())))
        else {
            return Err(malformed(what, format!("key of {name}: unknown signature type")));
        };
        let key = Self::new(name, kind, public)?;
        if key.id != id {
            return Err(malformed(
                what,
                format!("key id {id:08x} of {name} does not match its key ({:08x})", key.id),
            ));
        }
        Ok(key)
    }

    pub(super) fn verify(&self, body: &str, sig: &[u8]) -> Result<Option<u64>, CryptoError> {
        let suite = self.kind.suite().suite();
        match self.kind {
            SignatureType::Log(_) => suite.verify(&self.public, body.as_bytes(), sig).map(|()| None),
            SignatureType::Cosignature(_) => {
                let (time, sig) = sig.split_at_checked(8).ok_or(CryptoError::BadSignature)?;
                let mut t = [0u8; 8];
                t.copy_from_slice(time);
                let time = u64::from_be_bytes(t);
                if time > MAX_COSIGNATURE_TIME {
                    return Err(CryptoError::BadSignature);
                }
                suite.verify(&self.public, cosigned_message(time, body).as_bytes(), sig).map(|()| Some(time))
            }
        }
    }
}

pub(super) fn cosigned_message(time: u64, body: &str) -> String {
    format!("{COSIGNATURE_HEADER}time {time}\n{body}")
}

/// Something that signs tree heads: a software key for tests and small deployments, or a handle into the
/// node's keystore or HSM. Implementations never reveal the private key.
pub trait TreeHeadSigner {
    /// The key's name in signature lines; for a log, its origin.
    fn key_name(&self) -> &str;

    /// The suite whose signature algorithm the key uses.
    fn suite(&self) -> SuiteId;

    /// The SEC1 uncompressed public key (65 bytes).
    fn public_key(&self) -> Vec<u8>;

    /// Signs `msg` with the suite's algorithm, returning `r || s` (64 bytes). Backend failures become
    /// [`AuditError::Signer`].
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AuditError>;
}

/// A [`TreeHeadSigner`] over a secret held in memory. Its `Debug` never prints the secret.
#[derive(Debug)]
pub struct SoftwareSigner {
    name: String,
    suite: SuiteId,
    secret: SecretBytes,
    public: Vec<u8>,
}

impl SoftwareSigner {
    /// A signer named `name` for the signing secret `secret` of `suite`.
    pub fn new(name: impl Into<String>, suite: SuiteId, secret: SecretBytes) -> Result<Self, AuditError> {
        let name = name.into();
        check_name("key name", &name)?;
        let public = suite.suite().verifying_key(&secret)?;
        Ok(Self { name, suite, secret, public })
    }

    /// A signer with a fresh random key.
    pub fn generate(name: impl Into<String>, suite: SuiteId) -> Result<Self, AuditError> {
        let (secret, _) = suite.suite().signing_keypair()?;
        Self::new(name, suite, secret)
    }
}

impl TreeHeadSigner for SoftwareSigner {
    fn key_name(&self) -> &str {
        &self.name
    }

    fn suite(&self) -> SuiteId {
        self.suite
    }

    fn public_key(&self) -> Vec<u8> {
        self.public.clone()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AuditError> {
        Ok(self.suite.suite().sign(&self.secret, msg)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITES: [SuiteId; 2] = [SuiteId::International, SuiteId::National];
    const ORIGIN: &str = "hearth.example/audit";

    fn fixed_signer(name: &str, suite: SuiteId, seed: u8) -> SoftwareSigner {
        SoftwareSigner::new(name, suite, SecretBytes::new([seed; 32])).unwrap()
    }

    #[test]
    fn key_ids_are_domain_separated_and_vkeys_round_trip() {
        for suite in SUITES {
            let s = fixed_signer(ORIGIN, suite, 7);
            let log = VerifierKey::of(&s, SignatureType::Log(suite)).unwrap();
            let cos = VerifierKey::of(&s, SignatureType::Cosignature(suite)).unwrap();
            assert_ne!(log.id(), cos.id(), "one key, two types, two ids");
            for k in [&log, &cos] {
                assert_eq!(&VerifierKey::parse(&k.encode()).unwrap(), k);
            }
            let v = log.encode();
            let wrong_id = format!("{}+{:08x}+{}", ORIGIN, log.id() ^ 1, v.splitn(3, '+').nth(2).unwrap());
            assert!(VerifierKey::parse(&wrong_id).is_err());
            assert!(VerifierKey::new(ORIGIN, SignatureType::Log(suite), vec![4; 65]).is_err(), "not a point");
            assert!(VerifierKey::new("a+b", SignatureType::Log(suite), s.public_key()).is_err());
        }
        // The international key id is the spec's recommendation: SHA-256(name || 0x0A || type || key)[:4].
        let s = fixed_signer(ORIGIN, SuiteId::International, 7);
        let k = VerifierKey::of(&s, SignatureType::Log(SuiteId::International)).unwrap();
        let mut msg = format!("{ORIGIN}\n").into_bytes();
        msg.extend_from_slice(b"\xffhearth-ecdsa-p256-sha256");
        msg.extend_from_slice(&s.public_key());
        let d = <sha2::Sha256 as sha2::Digest>::digest(&msg);
        assert_eq!(k.id(), u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
    }

    #[test]
    fn software_signers_keep_their_secret_out_of_debug() {
        let s = fixed_signer(ORIGIN, SuiteId::National, 0x42);
        assert!(!format!("{s:?}").contains("42, 42"), "{s:?}");
        assert!(SoftwareSigner::new("bad name", SuiteId::National, SecretBytes::new([1; 32])).is_err());
    }
}
