//! The sealed software keystore, Hearth's embedded default: every key in one blob, authenticated-encrypted
//! under a key derived from a passphrase with Argon2id (or, for the national suite on a PKCS#11 node, under
//! an AES key inside the token). The library takes and returns bytes; the service owns the file.
//!
//! Blob format, version 1 (all integers big-endian):
//!
//! ```text
//! "HEARTHKS"  format:u16=1  suite:u8 (1 international, 2 national)  sealing:u8
//!   sealing 1 (passphrase): memory_kib:u32 iterations:u32 parallelism:u32 salt:len8+bytes check:[16]
//!   sealing 2 (token):      token key label:len8+bytes
//! nonce:[12]  body:len32+bytes  (suite AEAD, or AES-256-GCM in the token; associated data = all bytes before body)
//! ```
//!
//! The passphrase yields, through Argon2id and the suite's HKDF, an AEAD key and a 16-byte check value
//! kept in the header. The check value tells a wrong passphrase apart from a tampered body; it gives an
//! attacker nothing the body's tag did not already give (either confirms a passphrase guess offline).
//! Altering the salt, parameters, suite or check value reads as a wrong passphrase: the two cannot be told
//! apart. The derived key is kept (zeroizing) while the store is open, so re-sealing after a rotation needs
//! no passphrase and no new Argon2id run; every seal uses a fresh random nonce.

use std::fmt;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

#[cfg(feature = "pkcs11")]
use super::pkcs11::TokenSealer;
use super::ring::{Change, Ring};
use super::{
    CodecError, DataKey, KeyAction, KeyEvent, KeyId, KeyKind, KeyLabel, KeyLocation, KeySignature, KeyStore,
    KeyStoreError, KeyVersion, Reader, WrappedKey, Writer,
};
use crate::suite::{fill_random, CryptoError, SuiteId, DIGEST_LEN, NONCE_LEN};

const MAGIC: &[u8; 8] = b"HEARTHKS";
/// The blob format this build writes and reads.
const FORMAT_VERSION: u16 = 1;
const SEALING_PASSPHRASE: u8 = 1;
const SEALING_TOKEN: u8 = 2;
const SALT_LEN: usize = 16;
const CHECK_LEN: usize = 16;
/// Largest sealed body accepted (64 MiB); real stores hold a handful of keys in a few kilobytes.
const MAX_BODY_LEN: usize = 64 << 20;

/// Argon2id cost parameters, stored in each blob's header so that they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl Argon2Params {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106 §4's second recommended option, with one lane because this
    /// build computes lanes sequentially anyway.
    pub const RECOMMENDED: Argon2Params =
        Argon2Params { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };

    /// Smallest accepted by [`Argon2Params::new`]: OWASP's floor for Argon2id (19 MiB, 2 passes).
    pub const MIN_MEMORY_KIB: u32 = 19 * 1024;
    /// Largest memory cost accepted, from configuration or from a blob header (2 GiB).
    pub const MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;
    /// Largest number of passes accepted.
    pub const MAX_ITERATIONS: u32 = 32;
    /// Largest number of lanes accepted.
    pub const MAX_PARALLELISM: u32 = 16;

    /// Checked parameters: at least 19 MiB and 2 passes, at most 2 GiB, 32 passes and 16 lanes.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, KeyStoreError> {
        if memory_kib < Self::MIN_MEMORY_KIB || iterations < 2 {
            return Err(KeyStoreError::InvalidParams(format!(
                "argon2id memory {memory_kib} KiB and {iterations} passes are below the floor of \
                 {} KiB and 2 passes",
                Self::MIN_MEMORY_KIB
            )));
        }
        Self::checked(memory_kib, iterations, parallelism)
    }

    /// 64 KiB and one pass: fast enough for unit and integration tests, worthless against guessing.
    /// Never use it for a real node.
    pub fn insecure_for_tests() -> Self {
        Self { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    /// Memory cost in KiB.
    pub fn memory_kib(&self) -> u32 {
        self.memory_kib
    }

    /// Number of passes.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Number of lanes.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// The bounds every header must respect, whatever floor was used to write it.
    fn checked(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, KeyStoreError> {
        if memory_kib > Self::MAX_MEMORY_KIB
            || iterations == 0
            || iterations > Self::MAX_ITERATIONS
            || parallelism == 0
            || parallelism > Self::MAX_PARALLELISM
            || memory_kib < 8 * parallelism
        {
            return Err(KeyStoreError::InvalidParams(format!(
                "argon2id memory {memory_kib} KiB, {iterations} passes, {parallelism} lanes are out of range"
            )));
        }
        Ok(Self { memory_kib, iterations, parallelism })
    }

    /// Runs Argon2id and splits the result with the suite's HKDF into the AEAD key and the check value.
    fn derive(
        &self,
        suite: SuiteId,
        passphrase: &[u8],
        salt: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, [u8; CHECK_LEN]), KeyStoreError> {
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(DIGEST_LEN))
                .map_err(|e| KeyStoreError::InvalidParams(e.to_string()))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut master = Zeroizing::new([0u8; DIGEST_LEN]);
        a.hash_password_into(passphrase, salt, master.as_mut())
            .map_err(|e| KeyStoreError::InvalidParams(e.to_string()))?;
        let s = suite.suite();
        let mut key = Zeroizing::new(vec![0u8; s.aead_key_len()]);
        s.kdf(master.as_ref(), salt, b"hearth/keystore/seal/v1/key", &mut key)?;
        let mut check = [0u8; CHECK_LEN];
        s.kdf(master.as_ref(), salt, b"hearth/keystore/seal/v1/check", &mut check)?;
        Ok((key, check))
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::RECOMMENDED
    }
}

/// How the blob is sealed.
enum Sealer {
    Passphrase {
        params: Argon2Params,
        salt: [u8; SALT_LEN],
        key: Zeroizing<Vec<u8>>,
        check: [u8; CHECK_LEN],
    },
    #[cfg(feature = "pkcs11")]
    Token(TokenSealer),
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sealer::Passphrase { params, .. } => {
                f.debug_struct("Passphrase").field("argon2id", params).finish_non_exhaustive()
            }
            #[cfg(feature = "pkcs11")]
            Sealer::Token(t) => t.fmt(f),
        }
    }
}

/// The sealed software keystore. See the module documentation for the format.
pub struct SealedKeyStore {
    ring: RwLock<Ring>,
    sealer: Sealer,
}

impl fmt::Debug for SealedKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKeyStore")
            .field("suite", &self.suite())
            .field("sealed_by", &self.sealer)
            .field("keys", &self.read().list())
            .finish_non_exhaustive()
    }
}

fn malformed(e: CodecError) -> KeyStoreError {
    KeyStoreError::Malformed(e.0)
}

fn suite_code(s: SuiteId) -> u8 {
    match s {
        SuiteId::International => 1,
        SuiteId::National => 2,
    }
}

/// The parsed header, before anything is decrypted.
struct Header<'a> {
    suite: SuiteId,
    sealing: Sealing<'a>,
    nonce: [u8; NONCE_LEN],
    /// All bytes before the body: the associated data.
    aad: &'a [u8],
    body: &'a [u8],
}

enum Sealing<'a> {
    Passphrase {
        params: Argon2Params,
        salt: [u8; SALT_LEN],
        check: [u8; CHECK_LEN],
    },
    /// Read by the PKCS#11 backend alone; without it a token-sealed blob is only recognised and refused.
    #[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
    Token {
        key_label: &'a str,
    },
}

fn parse(bytes: &[u8]) -> Result<Header<'_>, KeyStoreError> {
    let mut r = Reader::new(bytes);
    if r.bytes("magic", MAGIC.len()).map_err(|_| KeyStoreError::NotAKeystore)? != MAGIC {
        return Err(KeyStoreError::NotAKeystore);
    }
    let format = r.u16("format version").map_err(malformed)?;
    if format != FORMAT_VERSION {
        return Err(KeyStoreError::UnsupportedFormat { found: format, supported: FORMAT_VERSION });
    }
    let suite = match r.u8("suite").map_err(malformed)? {
        1 => SuiteId::International,
        2 => SuiteId::National,
        c => return Err(KeyStoreError::Malformed(format!("unknown suite code {c}"))),
    };
    let sealing = match r.u8("sealing").map_err(malformed)? {
        SEALING_PASSPHRASE => {
            let m = r.u32("argon2id memory").map_err(malformed)?;
            let t = r.u32("argon2id passes").map_err(malformed)?;
            let p = r.u32("argon2id lanes").map_err(malformed)?;
            let params = Argon2Params::checked(m, t, p)?;
            let salt = r.short_bytes("salt", SALT_LEN).map_err(malformed)?;
            let salt: [u8; SALT_LEN] = salt
                .try_into()
                .map_err(|_| KeyStoreError::Malformed(format!("salt of {} bytes", salt.len())))?;
            let check = r.array("passphrase check").map_err(malformed)?;
            Sealing::Passphrase { params, salt, check }
        }
        SEALING_TOKEN => {
            let label = r.short_bytes("token key label", 128).map_err(malformed)?;
            let key_label = std::str::from_utf8(label)
                .map_err(|_| KeyStoreError::Malformed("token key label is not UTF-8".into()))?;
            Sealing::Token { key_label }
        }
        c => return Err(KeyStoreError::Malformed(format!("unknown sealing code {c}"))),
    };
    let nonce = r.array("nonce").map_err(malformed)?;
    let aad_len = bytes.len() - r.rest_len();
    let body = r.long_bytes("sealed body", MAX_BODY_LEN).map_err(malformed)?;
    r.finish("the sealed body").map_err(malformed)?;
    Ok(Header { suite, sealing, nonce, aad: &bytes[..aad_len], body })
}

impl SealedKeyStore {
    /// A new, empty keystore sealed under `passphrase`. Deriving the key takes as long as `params` say
    /// (0.45 s measured for [`Argon2Params::RECOMMENDED`] on the 2-core development machine).
    pub fn create(suite: SuiteId, passphrase: &[u8], params: Argon2Params) -> Result<Self, KeyStoreError> {
        if passphrase.is_empty() {
            return Err(KeyStoreError::EmptyPassphrase);
        }
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        let (key, check) = params.derive(suite, passphrase, &salt)?;
        Ok(Self {
            ring: RwLock::new(Ring::new(suite)),
            sealer: Sealer::Passphrase { params, salt, key, check },
        })
    }

    /// Opens a blob written by [`SealedKeyStore::to_sealed_bytes`]. Errors say which check failed: not a
    /// keystore, unsupported format version, malformed header, wrong passphrase, tampered body. The suite
    /// is the blob's: compare [`KeyStore::suite`] with the configured suite before use.
    pub fn open(bytes: &[u8], passphrase: &[u8]) -> Result<Self, KeyStoreError> {
        let h = parse(bytes)?;
        let Sealing::Passphrase { params, salt, check } = h.sealing else {
            return Err(KeyStoreError::WrongSealing {
                found: "a PKCS#11 token key",
                expected: "a passphrase",
            });
        };
        if passphrase.is_empty() {
            return Err(KeyStoreError::EmptyPassphrase);
        }
        let (key, expected) = params.derive(h.suite, passphrase, &salt)?;
        if !bool::from(expected.ct_eq(&check)) {
            return Err(KeyStoreError::WrongPassphrase);
        }
        let plain = h.suite.suite().open(&key, &h.nonce, h.aad, h.body).map_err(|e| match e {
            CryptoError::Decrypt => KeyStoreError::Tampered { what: "the sealed body or its header" },
            other => KeyStoreError::Crypto(other),
        })?;
        let ring = Ring::decode(h.suite, &Zeroizing::new(plain))?;
        Ok(Self { ring: RwLock::new(ring), sealer: Sealer::Passphrase { params, salt, key, check } })
    }

    #[cfg(feature = "pkcs11")]
    /// A new, empty keystore sealed by a token key (national suite on a PKCS#11 node).
    pub(crate) fn create_token_sealed(suite: SuiteId, sealer: TokenSealer) -> Self {
        Self { ring: RwLock::new(Ring::new(suite)), sealer: Sealer::Token(sealer) }
    }

    #[cfg(feature = "pkcs11")]
    /// Opens a token-sealed blob; `find` resolves the token key named in the header.
    pub(crate) fn open_token_sealed(
        bytes: &[u8],
        find: impl FnOnce(&str) -> Result<TokenSealer, KeyStoreError>,
    ) -> Result<Self, KeyStoreError> {
        let h = parse(bytes)?;
        let Sealing::Token { key_label } = h.sealing else {
            return Err(KeyStoreError::WrongSealing {
                found: "a passphrase",
                expected: "a PKCS#11 token key",
            });
        };
        let sealer = find(key_label)?;
        let plain = Zeroizing::new(sealer.decrypt(&h.nonce, h.aad, h.body)?);
        let ring = Ring::decode(h.suite, &plain)?;
        Ok(Self { ring: RwLock::new(ring), sealer: Sealer::Token(sealer) })
    }

    /// The whole keystore, sealed, for the service to write (atomically: write a temporary file and
    /// rename). Call it after every `generate` or `rotate`.
    pub fn to_sealed_bytes(&self) -> Result<Vec<u8>, KeyStoreError> {
        let suite = self.suite();
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.raw(MAGIC);
        w.u16(FORMAT_VERSION);
        w.u8(suite_code(suite));
        match &self.sealer {
            Sealer::Passphrase { params, salt, check, .. } => {
                w.u8(SEALING_PASSPHRASE);
                w.u32(params.memory_kib);
                w.u32(params.iterations);
                w.u32(params.parallelism);
                w.short_bytes(salt);
                w.raw(check);
            }
            #[cfg(feature = "pkcs11")]
            Sealer::Token(t) => {
                w.u8(SEALING_TOKEN);
                w.short_bytes(t.key_label().as_bytes());
            }
        }
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        w.raw(&nonce);
        let plain = self.read().encode();
        let body = match &self.sealer {
            Sealer::Passphrase { key, .. } => suite.suite().seal(key, &nonce, &out, &plain)?,
            #[cfg(feature = "pkcs11")]
            Sealer::Token(t) => t.encrypt(&nonce, &out, &plain)?,
        };
        if body.len() > MAX_BODY_LEN {
            return Err(KeyStoreError::InvalidParams(format!(
                "sealed keystore exceeds {MAX_BODY_LEN} bytes"
            )));
        }
        Writer(&mut out).long_bytes(&body);
        Ok(out)
    }

    // A panic while the lock is held cannot leave the ring half-changed (each change is one map insert
    // after all fallible work), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn event(&self, action: KeyAction, c: Change) -> KeyEvent {
        KeyEvent {
            action,
            key: c.key,
            previous: c.previous,
            kind: c.kind,
            suite: self.suite(),
            location: self.location(),
            public_key: c.public_key,
        }
    }
}

impl KeyStore for SealedKeyStore {
    fn suite(&self) -> SuiteId {
        self.read().suite()
    }

    fn location(&self) -> KeyLocation {
        match self.sealer {
            Sealer::Passphrase { .. } => KeyLocation::SealedPassphrase,
            #[cfg(feature = "pkcs11")]
            Sealer::Token(_) => KeyLocation::SealedByToken,
        }
    }

    fn generate(&self, label: &KeyLabel, kind: KeyKind) -> Result<KeyEvent, KeyStoreError> {
        let c = self.write().generate(label, kind)?;
        Ok(self.event(KeyAction::Generated, c))
    }

    fn rotate(&self, label: &KeyLabel) -> Result<KeyEvent, KeyStoreError> {
        let c = self.write().rotate(label)?;
        Ok(self.event(KeyAction::Rotated, c))
    }

    fn retire(&self, key: &KeyId) -> Result<KeyEvent, KeyStoreError> {
        let c = self.write().retire(key)?;
        Ok(self.event(KeyAction::Retired, c))
    }

    fn versions(&self, label: &KeyLabel) -> Result<Vec<KeyVersion>, KeyStoreError> {
        self.read().versions(label)
    }

    fn list(&self) -> Result<Vec<(KeyId, KeyKind)>, KeyStoreError> {
        Ok(self.read().list())
    }

    fn kind(&self, label: &KeyLabel) -> Result<KeyKind, KeyStoreError> {
        self.read().kind(label)
    }

    fn current(&self, label: &KeyLabel) -> Result<KeyId, KeyStoreError> {
        self.read().current(label)
    }

    fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, KeyStoreError> {
        self.read().public_key(key)
    }

    fn sign(&self, label: &KeyLabel, msg: &[u8]) -> Result<KeySignature, KeyStoreError> {
        self.read().sign(label, msg)
    }

    fn wrap(&self, kek: &KeyLabel, aad: &[u8], data_key: &DataKey) -> Result<WrappedKey, KeyStoreError> {
        self.read().wrap(kek, aad, data_key)
    }

    fn unwrap(&self, kek: &KeyId, aad: &[u8], wrapped: &[u8]) -> Result<DataKey, KeyStoreError> {
        self.read().unwrap(kek, aad, wrapped)
    }

    fn identity_mac(&self, key: &KeyId, parts: &[&[u8]]) -> Result<[u8; DIGEST_LEN], KeyStoreError> {
        self.read().identity_mac(key, parts)
    }

    fn sealed_state(&self) -> Result<Option<Vec<u8>>, KeyStoreError> {
        self.to_sealed_bytes().map(Some)
    }
}

#[cfg(test)]
mod tests;
