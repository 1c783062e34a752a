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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_audit::{AuditError, SignatureType, TreeHeadSigner, VerifierKey};
use hearth_crypto::envelope;
use hearth_crypto::keystore::{
    KeyEvent, KeyId, KeyKind, KeyLabel, KeyLocation, KeyStore, Pkcs11Config, Pkcs11KeyStore, SealedKeyStore,
};
use hearth_crypto::suite::DIGEST_LEN;
use hearth_crypto::SuiteId;
use zeroize::Zeroizing;

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

/// The keys a coordinator makes on first start.
pub const COORDINATOR_KEYS: &[(&str, KeyKind)] =
    &[(AUDIT_KEY, KeyKind::Audit), (KEK, KeyKind::KeyEncryption)];
/// The keys a participant makes on first start.
pub const PARTICIPANT_KEYS: &[(&str, KeyKind)] =
    &[(AUDIT_KEY, KeyKind::Audit), (KEK, KeyKind::KeyEncryption), (IDENTITY_HASH_KEY, KeyKind::IdentityHash)];

fn label(l: &str) -> Result<KeyLabel, NodeError> {
    KeyLabel::new(l).map_err(NodeError::keystore(format!("key label {l:?}")))
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
        Ok((Self { keystore: Arc::new(store), state_path: Some(path), name }, dirty))
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
                Ok((Self { keystore: Arc::new(store), state_path: None, name }, false))
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
                Ok((Self { keystore: Arc::new(store), state_path: Some(path), name }, dirty))
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
    pub fn seal(&self, object: &str, plaintext: &[u8]) -> Result<Vec<u8>, NodeError> {
        let kek = label(KEK)?;
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
