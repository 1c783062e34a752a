//! A node's keys: the keystore chosen in `[keystore]`, opened (or created on first start) with the keys
//! the node needs, its sealed state persisted after every change, rotation, envelope encryption of stored
//! objects, and the audit log's tree-head signer.
//!
//! | label | kind | who | used for |
//! |---|---|---|---|
//! | `audit` | audit | both | signs the audit log's checkpoints |
//! | `kek` | key-encryption | both | wraps the data key of every stored object ([`NodeKeys::seal`]) |
//! | `identity-hash` | identity-hash | participant | keys the MAC of customers' channel identifiers |
//! | `witness` | audit | a node acting as witness | cosigns other logs' checkpoints (`hearth audit cosign`) |
//!
//! Opening runs Argon2id (sealed backend) or token calls (PKCS#11): call it from `spawn_blocking` in
//! async code. Every generated or rotated key comes back as a [`KeyEvent`] for the caller to audit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use hearth_audit::{AuditError, SignatureType, TreeHeadSigner, VerifierKey};
use hearth_crypto::envelope;
use hearth_crypto::keystore::{
    KeyEvent, KeyId, KeyKind, KeyLabel, KeyLocation, KeyStore, KeyVersion, Pkcs11Config, Pkcs11KeyStore,
    SealedKeyStore,
};
use hearth_crypto::suite::DIGEST_LEN;
use hearth_crypto::SuiteId;
use zeroize::Zeroizing;

use hearth_transport::{KeystoreTlsKey, TlsMaterial, TlsPaths};

use crate::config::{Backend, KeystoreConfig};
use crate::files::write_atomic;
use crate::NodeError;

/// Label of the audit key.
pub const AUDIT_KEY: &str = "audit";
/// Label of the key-encryption key.
pub const KEK: &str = "kek";
/// Label of the identity-hash key.
pub const IDENTITY_HASH_KEY: &str = "identity-hash";
/// Label of the key a node cosigns other logs' checkpoints with, when it acts as a witness.
pub const WITNESS_KEY: &str = "witness";
/// Label of the node's TLS key (kind `tls`, ECDSA P-256 under both suites) when the keystore is a PKCS#11
/// token: it signs the TLS handshakes and, under the international suite, the node's protocol messages.
/// `hearth pki request --config` generates it there.
pub const TLS_KEY: &str = "tls";
/// Label of the node's SM2 protocol signing key (kind `signing`) under the national suite when the
/// keystore is a PKCS#11 token (sealed by the token's AES key; the token has no SM2 mechanism).
pub const PROTOCOL_KEY: &str = "protocol";

/// The keys a coordinator makes on first start.
pub const COORDINATOR_KEYS: &[(&str, KeyKind)] =
    &[(AUDIT_KEY, KeyKind::Audit), (KEK, KeyKind::KeyEncryption)];
/// The keys a participant makes on first start.
pub const PARTICIPANT_KEYS: &[(&str, KeyKind)] =
    &[(AUDIT_KEY, KeyKind::Audit), (KEK, KeyKind::KeyEncryption), (IDENTITY_HASH_KEY, KeyKind::IdentityHash)];

/// The CA and certificate files, with the TLS key `keystore` holds under [`TLS_KEY`] signing every
/// handshake (it never leaves the keystore); refused when the keystore holds none or the certificate
/// certifies another key. `name` names the keystore in errors. A node on a token and an inference
/// replica on one both use it.
pub fn keystore_tls_material(
    keystore: &Arc<dyn KeyStore>,
    name: &str,
    ca: &Path,
    cert: &Path,
) -> Result<TlsMaterial, NodeError> {
    let label = label(TLS_KEY)?;
    let key = keystore.current(&label).map_err(|_| {
        NodeError::Config(format!(
            "{name} holds no TLS key {TLS_KEY:?}: make it there and have it certified with \
             hearth pki request --config <a configuration whose [keystore] names it> (then hearth pki sign at the CA)"
        ))
    })?;
    let public = keystore.public_key(&key).map_err(NodeError::keystore(name))?;
    let cert_pem = std::fs::read_to_string(cert).map_err(NodeError::io(cert))?;
    let certified = hearth_crypto::pki::cert_der_from_pem(&cert_pem)
        .and_then(|der| hearth_crypto::pki::public_key_of_cert_der(&der))
        .map_err(|e| NodeError::Config(format!("{}: {e}", cert.display())))?;
    if certified != public {
        return Err(NodeError::Config(format!(
            "{} does not certify {name}'s TLS key {key}: it was issued for another key (install the \
             certificate the CA signed for this token's request)",
            cert.display()
        )));
    }
    let signer = Arc::new(KeystoreTlsKey::new(Arc::clone(keystore), label));
    TlsMaterial::load_with_signer(ca, cert, signer).map_err(|e| NodeError::Config(e.to_string()))
}

fn label(l: &str) -> Result<KeyLabel, NodeError> {
    KeyLabel::new(l).map_err(NodeError::keystore(format!("key label {l:?}")))
}

/// Most data keys one version of the key-encryption key wraps before [`NodeKeys::seal`] refuses and asks
/// for a rotation. Wraps use random 96-bit nonces (AES-GCM, SM4-GCM), whose collision chance must stay
/// negligible: the usual bound is 2^32 encryptions per key; stopping at 2^30 keeps the chance of any
/// repeated nonce below 2^-37.
pub const KEK_WRAP_LIMIT: u64 = 1 << 30;
/// From this many wraps under one version on, each seal logs a warning to rotate.
const KEK_WRAP_WARN: u64 = KEK_WRAP_LIMIT / 4 * 3;
/// Wraps counted ahead in the usage file, so that it is written once per this many seals. A crash loses
/// at most this many counts, always upwards: the count on disk is never below the wraps made.
const KEK_USAGE_BLOCK: u64 = 4096;
/// The file, in the node directory, that counts wraps per key-encryption key version.
pub const KEK_USAGE_FILE: &str = "kek-usage.json";

/// How many data keys each key-encryption key version has wrapped, counted ahead in blocks.
#[derive(Debug)]
struct KekUsage {
    path: PathBuf,
    /// Per version: (wraps made, wraps recorded as made in the file).
    counts: Mutex<BTreeMap<u32, (u64, u64)>>,
    limit: u64,
}

impl KekUsage {
    fn load(node_dir: &Path) -> Result<Self, NodeError> {
        let path = node_dir.join(KEK_USAGE_FILE);
        let recorded: BTreeMap<u32, u64> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| NodeError::Config(format!("{}: not a usage count file: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(NodeError::Io { path, source: e }),
        };
        // What the file recorded may all have been used: start from there.
        let counts = recorded.into_iter().map(|(v, n)| (v, (n, n))).collect();
        Ok(Self { path, counts: Mutex::new(counts), limit: KEK_WRAP_LIMIT })
    }

    /// Counts one wrap under `version`; refuses past the limit.
    fn take(&self, version: KeyVersion) -> Result<(), NodeError> {
        // The lock guards a map update and, once per block, a small file write.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = counts.entry(version.get()).or_insert((0, 0));
        if entry.0 >= self.limit {
            return Err(NodeError::KekWornOut { version: version.get(), wraps: entry.0 });
        }
        entry.0 += 1;
        if entry.0 >= KEK_WRAP_WARN && entry.0 % KEK_USAGE_BLOCK == 0 {
            tracing::warn!(
                kek_version = version.get(),
                wraps = entry.0,
                limit = self.limit,
                "the key-encryption key is near its wrap limit: run hearth keys rotate --label kek"
            );
        }
        if entry.0 > entry.1 {
            entry.1 = entry.0 + KEK_USAGE_BLOCK;
            let recorded: BTreeMap<u32, u64> = counts.iter().map(|(v, (_, r))| (*v, *r)).collect();
            let json = serde_json::to_vec(&recorded).unwrap_or_default();
            write_atomic(&self.path, &json, false)?;
        }
        Ok(())
    }

    fn snapshot(&self) -> BTreeMap<u32, u64> {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.iter().map(|(v, (n, _))| (*v, *n)).collect()
    }
}

/// Whether [`NodeKeys::open`] may create a keystore that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Create it (and the missing keys): a service starting, or `hearth data import` on a new node.
    IfMissing,
    /// Fail if it does not exist: CLI commands that inspect or change an existing node.
    Never,
}

/// A node's open keystore and where its state is persisted.
pub struct NodeKeys {
    keystore: Arc<dyn KeyStore>,
    /// Where sealed state is written after a change; `None` when the token persists everything.
    state_path: Option<PathBuf>,
    /// What to call the keystore in messages.
    name: String,
    /// Wraps per key-encryption key version.
    usage: KekUsage,
    /// Whether the node's own private keys (TLS, protocol) must live in the keystore: a PKCS#11 token.
    token: bool,
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeys")
            .field("keystore", &self.name)
            .field("suite", &self.keystore.suite())
            .field("location", &self.keystore.location())
            .finish_non_exhaustive()
    }
}

impl NodeKeys {
    /// Opens the keystore configured in `cfg` for the node whose directory is `node_dir`, creating it
    /// when allowed, and generates whichever of `wanted` is missing. `passphrase` overrides the
    /// configured source (the demo passes the one it generated). Returns the keys and the events of
    /// every key generated, which the caller must audit.
    pub fn open(
        cfg: &KeystoreConfig,
        suite: SuiteId,
        node_dir: &Path,
        wanted: &[(&str, KeyKind)],
        create: Create,
        passphrase: Option<&Zeroizing<String>>,
    ) -> Result<(Self, Vec<KeyEvent>), NodeError> {
        let (keys, mut dirty) = match cfg.backend {
            Backend::Sealed => Self::open_sealed(cfg, suite, node_dir, create, passphrase)?,
            Backend::Pkcs11 => Self::open_pkcs11(cfg, suite, node_dir, create)?,
        };
        if keys.keystore.suite() != suite {
            return Err(NodeError::Config(format!(
                "{} holds {} suite keys, but the configuration says suite = \"{}\"",
                keys.name,
                keys.keystore.suite(),
                suite
            )));
        }
        let mut events = Vec::new();
        for (l, kind) in wanted {
            let l = label(l)?;
            match keys.keystore.kind(&l) {
                Ok(k) if k == *kind => {}
                Ok(k) => {
                    return Err(NodeError::Config(format!(
                        "{}: key {l} is a {k} key, this node needs a {kind} key under that label",
                        keys.name
                    )))
                }
                Err(_) => {
                    events.push(
                        keys.keystore
                            .generate(&l, *kind)
                            .map_err(NodeError::keystore(format!("{}: generating key {l}", keys.name)))?,
                    );
                    dirty = true;
                }
            }
        }
        if dirty {
            keys.persist()?;
        }
        Ok((keys, events))
    }

    fn open_sealed(
        cfg: &KeystoreConfig,
        suite: SuiteId,
        node_dir: &Path,
        create: Create,
        passphrase: Option<&Zeroizing<String>>,
    ) -> Result<(Self, bool), NodeError> {
        let path = cfg.sealed_path(node_dir);
        let name = format!("keystore {}", path.display());
        let pass = match passphrase {
            Some(p) => p.clone(),
            None => cfg.passphrase()?,
        };
        let (store, dirty) = match std::fs::read(&path) {
            Ok(bytes) => {
                (SealedKeyStore::open(&bytes, pass.as_bytes()).map_err(NodeError::keystore(&name))?, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create == Create::IfMissing => {
                let store = SealedKeyStore::create(suite, pass.as_bytes(), cfg.argon2()?)
                    .map_err(NodeError::keystore(&name))?;
                tracing::info!(keystore = %path.display(), %suite, "created a sealed keystore");
                (store, true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NodeError::Config(format!(
                    "no keystore at {}: start the node once (or import data) to create it",
                    path.display()
                )))
            }
            Err(e) => return Err(NodeError::Io { path, source: e }),
        };
        let usage = KekUsage::load(node_dir)?;
        Ok((Self { keystore: Arc::new(store), state_path: Some(path), name, usage, token: false }, dirty))
    }

    fn open_pkcs11(
        cfg: &KeystoreConfig,
        suite: SuiteId,
        node_dir: &Path,
        create: Create,
    ) -> Result<(Self, bool), NodeError> {
        let module = cfg.module.clone().ok_or_else(|| {
            NodeError::Config("[keystore] backend = \"pkcs11\" needs module = \"/path/to/module.so\"".into())
        })?;
        let token = cfg.token_label.clone().ok_or_else(|| {
            NodeError::Config("[keystore] backend = \"pkcs11\" needs token_label = \"...\"".into())
        })?;
        let pin = cfg.pin()?;
        let p11 = Pkcs11Config::new(module, token.clone(), pin.as_str());
        let name = format!("PKCS#11 token {token:?}");
        match suite {
            SuiteId::International => {
                let store = Pkcs11KeyStore::open(&p11, suite, None).map_err(NodeError::keystore(&name))?;
                let usage = KekUsage::load(node_dir)?;
                Ok((Self { keystore: Arc::new(store), state_path: None, name, usage, token: true }, false))
            }
            SuiteId::National => {
                let path = cfg.sealed_path(node_dir);
                let name = format!("{name} (SM keys sealed in {})", path.display());
                let (state, dirty) = match std::fs::read(&path) {
                    Ok(b) => (Some(b), false),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && create == Create::IfMissing => {
                        (None, true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(NodeError::Config(format!(
                            "no token-sealed keystore at {}: start the node once to create it",
                            path.display()
                        )))
                    }
                    Err(e) => return Err(NodeError::Io { path, source: e }),
                };
                let store = Pkcs11KeyStore::open(&p11, suite, state.as_deref())
                    .map_err(NodeError::keystore(&name))?;
                let usage = KekUsage::load(node_dir)?;
                Ok((
                    Self { keystore: Arc::new(store), state_path: Some(path), name, usage, token: true },
                    dirty,
                ))
            }
        }
    }

    /// Writes the sealed state, if this backend has one, atomically and readable by the owner only.
    fn persist(&self) -> Result<(), NodeError> {
        let Some(path) = &self.state_path else { return Ok(()) };
        if let Some(bytes) = self.keystore.sealed_state().map_err(NodeError::keystore(&self.name))? {
            write_atomic(path, &bytes, true)?;
        }
        Ok(())
    }

    /// Makes a new current version of `label` and persists the keystore. Data sealed under older versions
    /// stays readable; new data uses the new version. The caller must audit the returned event.
    pub fn rotate(&self, label_text: &str) -> Result<KeyEvent, NodeError> {
        let l = label(label_text)?;
        let event = self
            .keystore
            .rotate(&l)
            .map_err(NodeError::keystore(format!("{}: rotating key {l}", self.name)))?;
        self.persist()?;
        Ok(event)
    }

    /// Destroys an old version of the key-encryption key `label_text` and persists the keystore. The
    /// caller must first check that no stored object is sealed under it (`hearth keys retire` does), and
    /// audit the returned event.
    pub fn retire(&self, label_text: &str, version: KeyVersion) -> Result<KeyEvent, NodeError> {
        let key = KeyId { label: label(label_text)?, version };
        let event = self
            .keystore
            .retire(&key)
            .map_err(NodeError::keystore(format!("{}: retiring {key}", self.name)))?;
        self.persist()?;
        Ok(event)
    }

    /// The versions of `label_text` that exist, oldest first.
    pub fn versions(&self, label_text: &str) -> Result<Vec<KeyVersion>, NodeError> {
        let l = label(label_text)?;
        self.keystore.versions(&l).map_err(NodeError::keystore(format!("{}: key {l}", self.name)))
    }

    /// Whether this node's keystore is a PKCS#11 token, where its TLS key must live (no key file).
    pub fn in_token(&self) -> bool {
        self.token
    }

    /// The node's TLS material. With the sealed keystore: the three PEM files of `paths`. With a PKCS#11
    /// token: the CA and certificate files, and the keystore's [`TLS_KEY`] signing
    /// every handshake; a key file at `paths.key` is refused, and so is a certificate that does not
    /// certify the token's key.
    pub fn tls_material(&self, paths: &TlsPaths) -> Result<TlsMaterial, NodeError> {
        let tls_err = |e: hearth_transport::TransportError| NodeError::Config(e.to_string());
        if !self.token {
            return TlsMaterial::from_paths(paths).map_err(tls_err);
        }
        if paths.key.exists() {
            return Err(NodeError::Config(format!(
                "{} is a private key file, but this node's keys live in {}: the TLS key must be the token's \
                 ({TLS_KEY:?}, made there by hearth pki request). Delete the file (and any copy of it)",
                paths.key.display(),
                self.name
            )));
        }
        keystore_tls_material(&self.keystore, &self.name, &paths.ca, &paths.cert)
    }

    /// The current version of the key-encryption key: what [`NodeKeys::seal`] uses.
    pub fn current_kek(&self) -> Result<KeyId, NodeError> {
        let l = label(KEK)?;
        self.keystore.current(&l).map_err(NodeError::keystore(format!("{}: key {l}", self.name)))
    }

    /// How many data keys each key-encryption key version wrapped (counted ahead by up to 4096 since the
    /// node last started), and the limit past which sealing stops until the key is rotated.
    pub fn kek_usage(&self) -> (BTreeMap<u32, u64>, u64) {
        (self.usage.snapshot(), self.usage.limit)
    }

    /// Generates a key that does not exist yet (e.g. the witness key on first cosigning) and persists.
    pub fn ensure(&self, label_text: &str, kind: KeyKind) -> Result<Option<KeyEvent>, NodeError> {
        let l = label(label_text)?;
        if self.keystore.kind(&l).is_ok() {
            return Ok(None);
        }
        let e = self
            .keystore
            .generate(&l, kind)
            .map_err(NodeError::keystore(format!("{}: generating key {l}", self.name)))?;
        self.persist()?;
        Ok(Some(e))
    }

    /// The keystore, for operations this type does not wrap.
    pub fn keystore(&self) -> &Arc<dyn KeyStore> {
        &self.keystore
    }

    /// The suite of every key here.
    pub fn suite(&self) -> SuiteId {
        self.keystore.suite()
    }

    /// Where the secrets live.
    pub fn location(&self) -> KeyLocation {
        self.keystore.location()
    }

    /// What the keystore is, for messages (`keystore /var/lib/.../keystore.sealed`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every key, with its kind and current version.
    pub fn list(&self) -> Result<Vec<(KeyId, KeyKind)>, NodeError> {
        self.keystore.list().map_err(NodeError::keystore(&self.name))
    }

    /// Envelope-encrypts `plaintext` under the current KEK, binding `object` (the object's id) as
    /// associated data: one object's ciphertext cannot be passed off as another's.
    /// Each seal wraps a fresh data key: counted per KEK version, and refused past [`KEK_WRAP_LIMIT`].
    pub fn seal(&self, object: &str, plaintext: &[u8]) -> Result<Vec<u8>, NodeError> {
        let kek = label(KEK)?;
        let current = self.current_kek()?;
        self.usage.take(current.version)?;
        envelope::seal(self.keystore.as_ref(), &kek, object.as_bytes(), plaintext)
            .map_err(|source| NodeError::Envelope { object: object.to_string(), source })
    }

    /// Opens what [`NodeKeys::seal`] produced for `object`, under whichever KEK version sealed it.
    pub fn open_sealed_object(&self, object: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, NodeError> {
        envelope::open(self.keystore.as_ref(), object.as_bytes(), sealed)
            .map(Zeroizing::new)
            .map_err(|source| NodeError::Envelope { object: object.to_string(), source })
    }

    /// The keyed identity hash of `parts` under the current identity-hash key, with the version used, so
    /// that records made before a rotation can still be matched (recompute with that version).
    pub fn identity_hash(&self, parts: &[&[u8]]) -> Result<(KeyId, [u8; DIGEST_LEN]), NodeError> {
        let l = label(IDENTITY_HASH_KEY)?;
        let ctx = || format!("{}: identity hash", self.name);
        let key = self.keystore.current(&l).map_err(NodeError::keystore(ctx()))?;
        let mac = self.keystore.identity_mac(&key, parts).map_err(NodeError::keystore(ctx()))?;
        Ok((key, mac))
    }

    /// A tree-head signer over the current version of the key `label` (the audit key, or the witness
    /// key), named `name` in signature lines.
    pub fn signer(&self, label_text: &str, name: &str) -> Result<KeystoreSigner, NodeError> {
        KeystoreSigner::new(Arc::clone(&self.keystore), label(label_text)?, name)
    }
}

/// The audit log's [`TreeHeadSigner`] over a keystore key: the private key never leaves the keystore (or
/// the token). It signs with the key version current when it was made; after a rotation it refuses to
/// sign (a signature under a new version would carry the old version's key ID), so make a new one.
pub struct KeystoreSigner {
    keystore: Arc<dyn KeyStore>,
    key: KeyId,
    name: String,
    public: Vec<u8>,
}

impl fmt::Debug for KeystoreSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoreSigner")
            .field("key", &self.key.to_string())
            .field("name", &self.name)
            .finish()
    }
}

impl KeystoreSigner {
    /// A signer over the current version of `label`, which must be a signing or audit key.
    pub fn new(keystore: Arc<dyn KeyStore>, label: KeyLabel, name: &str) -> Result<Self, NodeError> {
        let ctx = format!("audit signer over key {label}");
        let key = keystore.current(&label).map_err(NodeError::keystore(&ctx))?;
        let public = keystore.public_key(&key).map_err(NodeError::keystore(&ctx))?;
        Ok(Self { keystore, key, name: name.to_string(), public })
    }

    /// The key version this signer signs with.
    pub fn key(&self) -> &KeyId {
        &self.key
    }

    /// The verifier key an auditor configures for this signer's signatures of type `kind`.
    pub fn verifier_key(&self, kind: SignatureType) -> Result<VerifierKey, AuditError> {
        VerifierKey::of(self, kind)
    }
}

impl TreeHeadSigner for KeystoreSigner {
    fn key_name(&self) -> &str {
        &self.name
    }

    fn suite(&self) -> SuiteId {
        self.keystore.suite()
    }

    fn public_key(&self) -> Vec<u8> {
        self.public.clone()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AuditError> {
        let err = |reason: String| AuditError::Signer { key: self.key.to_string(), reason };
        let sig = self.keystore.sign(&self.key.label, msg).map_err(|e| err(e.to_string()))?;
        if sig.key != self.key {
            return Err(err(format!("the key was rotated to {} since this signer was made", sig.key)));
        }
        Ok(sig.signature)
    }
}

#[cfg(test)]
mod tests {
    use hearth_audit::{Checkpoint, SignedCheckpoint, Trust};

    use super::*;

    fn fast(dir: &Path) -> KeystoreConfig {
        let f = dir.join("pass");
        std::fs::write(&f, "test passphrase").unwrap();
        KeystoreConfig {
            passphrase_file: Some(f),
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            ..Default::default()
        }
    }

    #[test]
    fn first_open_creates_keys_later_opens_find_them_and_rotation_keeps_old_data_readable() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = fast(dir.path());
        for suite in [SuiteId::International, SuiteId::National] {
            let node = dir.path().join(suite.as_str());
            assert!(NodeKeys::open(&cfg, suite, &node, PARTICIPANT_KEYS, Create::Never, None).is_err());
            let (keys, events) =
                NodeKeys::open(&cfg, suite, &node, PARTICIPANT_KEYS, Create::IfMissing, None).unwrap();
            assert_eq!(events.len(), 3);
            let old = keys.seal("obj-1", b"a training sentence").unwrap();
            drop(keys);
            let (keys, events) =
                NodeKeys::open(&cfg, suite, &node, PARTICIPANT_KEYS, Create::Never, None).unwrap();
            assert!(events.is_empty());
            let e = keys.rotate(KEK).unwrap();
            assert_eq!(e.key.version.get(), 2);
            let new = keys.seal("obj-2", b"another").unwrap();
            assert_eq!(envelope::kek_of(&new).unwrap().version.get(), 2);
            assert_eq!(envelope::kek_of(&old).unwrap().version.get(), 1);
            // Reopen: the rotation was persisted, and both generations open.
            drop(keys);
            let (keys, _) =
                NodeKeys::open(&cfg, suite, &node, PARTICIPANT_KEYS, Create::Never, None).unwrap();
            assert_eq!(keys.open_sealed_object("obj-1", &old).unwrap().as_slice(), b"a training sentence");
            assert_eq!(keys.open_sealed_object("obj-2", &new).unwrap().as_slice(), b"another");
            assert!(keys.open_sealed_object("obj-2", &old).is_err(), "bound to its object id");
            // The configured suite must match the file's.
            let other = if suite == SuiteId::National { SuiteId::International } else { SuiteId::National };
            let e = NodeKeys::open(&cfg, other, &node, PARTICIPANT_KEYS, Create::Never, None).unwrap_err();
            assert!(e.to_string().contains("suite"), "{e}");
        }
    }

    #[test]
    fn kek_wraps_are_counted_ahead_and_refused_past_the_limit_until_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = fast(dir.path());
        let (mut keys, _) = NodeKeys::open(
            &cfg,
            SuiteId::International,
            dir.path(),
            PARTICIPANT_KEYS,
            Create::IfMissing,
            None,
        )
        .unwrap();
        keys.usage.limit = 3;
        for i in 0..3 {
            keys.seal(&format!("o{i}"), b"x").unwrap();
        }
        let e = keys.seal("o3", b"x").unwrap_err();
        assert!(matches!(e, NodeError::KekWornOut { version: 1, wraps: 3 }), "{e}");
        assert!(e.to_string().contains("hearth keys rotate --label kek"), "{e}");
        keys.rotate(KEK).unwrap();
        keys.seal("o3", b"x").unwrap();
        assert_eq!(keys.kek_usage().0, BTreeMap::from([(1, 3), (2, 1)]));
        // Reopened, the counts start from what the file reserved: never below the wraps made.
        drop(keys);
        let (keys, _) =
            NodeKeys::open(&cfg, SuiteId::International, dir.path(), PARTICIPANT_KEYS, Create::Never, None)
                .unwrap();
        let (after, _) = keys.kek_usage();
        assert!(after[&1] >= 3 && after[&2] >= 1, "{after:?}");
        // Retiring: never the current version, never a signing key; an old KEK version goes.
        assert!(keys.retire(KEK, KeyVersion::new(2).unwrap()).is_err(), "current");
        assert!(keys.retire(AUDIT_KEY, KeyVersion::new(1).unwrap()).is_err(), "signing keys stay");
        keys.retire(KEK, KeyVersion::new(1).unwrap()).unwrap();
        assert_eq!(keys.versions(KEK).unwrap(), vec![KeyVersion::new(2).unwrap()]);
    }

    #[test]
    fn the_signer_signs_checkpoints_and_refuses_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = fast(dir.path());
        let (keys, _) =
            NodeKeys::open(&cfg, SuiteId::National, dir.path(), COORDINATOR_KEYS, Create::IfMissing, None)
                .unwrap();
        let signer = keys.signer(AUDIT_KEY, "hearth/coordinator/c").unwrap();
        let cp = Checkpoint::new("hearth/coordinator/c", 3, [7; 32]).unwrap();
        let signed = SignedCheckpoint::sign(cp.clone(), &signer).unwrap();
        let trust = Trust {
            log_keys: vec![signer.verifier_key(SignatureType::Log(SuiteId::National)).unwrap()],
            witnesses: vec![],
        };
        signed.verify(&trust).unwrap();
        keys.rotate(AUDIT_KEY).unwrap();
        assert!(SignedCheckpoint::sign(cp, &signer).is_err());
        assert!(!format!("{keys:?}{signer:?}").contains("test passphrase"));
    }
}
