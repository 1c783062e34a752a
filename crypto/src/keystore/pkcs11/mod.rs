//! The PKCS#11 backend: keys generated and used inside a hardware token (an HSM; SoftHSM2 in development
//! and tests), through the `cryptoki` crate.
//!
//! - **International suite**: every key lives in the token and is non-extractable: ECDSA P-256 signing
//!   and audit keys, AES-256 key-encryption keys (data keys wrapped with AES-GCM inside the token),
//!   HMAC-SHA-256 identity-hash keys (generic secrets). The token persists them; nothing is written by
//!   the service.
//! - **National suite**: no common PKCS#11 token offers SM2, SM3 or SM4 mechanisms (SoftHSM2 does not), so
//!   SM keys cannot live in the token. They live in the sealed keystore format (see
//!   [`SealedKeyStore`](super::SealedKeyStore)), sealed by a non-extractable AES-256 key generated inside
//!   the token (object label `hearth/seal/sm-keystore/v1`). The SM keys are in this process's memory while
//!   the keystore is open; at rest they exist only wrapped by the token key. The service stores
//!   [`KeyStore::sealed_state`](super::KeyStore::sealed_state) and hands it back to [`Pkcs11KeyStore::open`].
//!
//! The module is loaded and `C_Initialize`d once per process and never finalised: PKCS#11 allows one
//! initialisation per process, and finalising would break every other keystore on the same module.

mod token;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectHandle;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use self::token::{object_label, p11, Token, SEAL_TAG};
use super::sealed::SealedKeyStore;
use super::{
    DataKey, KeyAction, KeyEvent, KeyId, KeyKind, KeyLabel, KeyLocation, KeySignature, KeyStore,
    KeyStoreError, KeyVersion, WrappedKey,
};
use crate::suite::{SuiteId, DIGEST_LEN, NONCE_LEN};

/// How to reach the token.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so` on Debian.
    pub module: PathBuf,
    /// The label the token was initialised with (`softhsm2-util --init-token --label ...`).
    pub token_label: String,
    /// The token's user PIN. Wiped on drop; `Debug` prints `[redacted]`.
    pub user_pin: Zeroizing<String>,
}

impl Pkcs11Config {
    /// A configuration from its three parts.
    pub fn new(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
        user_pin: impl Into<String>,
    ) -> Self {
        Self {
            module: module.into(),
            token_label: token_label.into(),
            user_pin: Zeroizing::new(user_pin.into()),
        }
    }
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("user_pin", &"[redacted]")
            .finish()
    }
}

/// One initialised context per module path, for the life of the process.
pub(crate) fn context(module: &Path) -> Result<Pkcs11, KeyStoreError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| KeyStoreError::Pkcs11 {
        operation: "loading the PKCS#11 module",
        detail: format!("{}: {e}", module.display()),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another library in this process initialised the module first: it is usable.
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(p11("initialising the PKCS#11 module")(e)),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// Opens a read-write session on the token labelled `config.token_label` and logs in as its user.
fn open_token(config: &Pkcs11Config) -> Result<Token, KeyStoreError> {
    let ctx = context(&config.module)?;
    let slots = ctx.get_slots_with_initialized_token().map_err(p11("listing slots"))?;
    let slot = slots
        .into_iter()
        .find(|s| ctx.get_token_info(*s).map(|i| i.label() == config.token_label).unwrap_or(false))
        .ok_or_else(|| KeyStoreError::TokenNotFound {
            label: config.token_label.clone(),
            module: config.module.display().to_string(),
        })?;
    let session = ctx.open_rw_session(slot).map_err(p11("opening a session"))?;
    let pin = AuthPin::new(config.user_pin.as_str().into());
    match session.login(UserType::User, Some(&pin)) {
        // Login is per application: another keystore on this token already logged in.
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(P11Error::Pkcs11(
            RvError::PinIncorrect | RvError::PinLocked | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => return Err(KeyStoreError::Login { label: config.token_label.clone() }),
        Err(e) => return Err(p11("logging in")(e)),
    }
    Ok(Token::new(ctx, slot, session, config.token_label.clone()))
}

// A panic while the token is locked cannot leave the index inconsistent (each change is one insert after
// the token call succeeded), so a poisoned lock is still safe to use.
fn lock(t: &Mutex<Token>) -> MutexGuard<'_, Token> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The token's AES key that seals the national suite's keystore blob.
pub(crate) struct TokenSealer {
    token: Arc<Mutex<Token>>,
    key_label: String,
    key: ObjectHandle,
}

impl TokenSealer {
    /// The key's object label, written in the blob header.
    pub(crate) fn key_label(&self) -> &str {
        &self.key_label
    }

    /// AES-256-GCM inside the token.
    pub(crate) fn encrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        pt: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        lock(&self.token).gcm_encrypt(self.key, nonce, aad, pt)
    }

    /// AES-256-GCM decryption inside the token; an authentication failure is [`KeyStoreError::Tampered`].
    pub(crate) fn decrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let plain = lock(&self.token).gcm_decrypt(self.key, nonce, aad, ct)?;
        let plain = plain.ok_or(KeyStoreError::Tampered { what: "the token-sealed body or its header" })?;
        Ok(plain.to_vec())
    }
}

impl fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSealer").field("key_label", &self.key_label).finish_non_exhaustive()
    }
}

/// A keystore backed by a PKCS#11 token. See the module documentation for where each suite's keys live.
pub struct Pkcs11KeyStore {
    inner: Inner,
}

enum Inner {
    /// International: every key in the token.
    Token(Arc<Mutex<Token>>),
    /// National: SM keys sealed by the token's AES key.
    Sealed(SealedKeyStore),
}

impl fmt::Debug for Pkcs11KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Token(t) => {
                let t = lock(t);
                f.debug_struct("Pkcs11KeyStore").field("token", &t.label).field("keys", &t.list()).finish()
            }
            Inner::Sealed(s) => f.debug_struct("Pkcs11KeyStore").field("sealed", s).finish(),
        }
    }
}

const INTERNATIONAL_MECHANISMS: [(MechanismType, &str); 6] = [
    (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
    (MechanismType::ECDSA, "CKM_ECDSA"),
    (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    (MechanismType::AES_GCM, "CKM_AES_GCM"),
    (MechanismType::GENERIC_SECRET_KEY_GEN, "CKM_GENERIC_SECRET_KEY_GEN"),
    (MechanismType::SHA256_HMAC, "CKM_SHA256_HMAC"),
];

const NATIONAL_MECHANISMS: [(MechanismType, &str); 2] =
    [(MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"), (MechanismType::AES_GCM, "CKM_AES_GCM")];

/// The label-part of the national suite's sealing key.
const SEALING_KEY: &str = "sm-keystore";

impl Pkcs11KeyStore {
    /// Opens the keystore on the configured token, logging in with the user PIN.
    ///
    /// - International suite: `sealed_state` must be `None`; the keys are read from the token.
    /// - National suite: `sealed_state` is what [`KeyStore::sealed_state`] returned last time, or `None`
    ///   for a new, empty keystore (the token's sealing key is generated on first use).
    ///
    /// Fails if the token lacks a needed mechanism ([`KeyStoreError::MechanismUnsupported`]).
    pub fn open(
        config: &Pkcs11Config,
        suite: SuiteId,
        sealed_state: Option<&[u8]>,
    ) -> Result<Self, KeyStoreError> {
        let mut token = open_token(config)?;
        match suite {
            SuiteId::International => {
                if sealed_state.is_some() {
                    return Err(KeyStoreError::UnexpectedState { suite });
                }
                token.require(&INTERNATIONAL_MECHANISMS)?;
                token.load_index()?;
                Ok(Self { inner: Inner::Token(Arc::new(Mutex::new(token))) })
            }
            SuiteId::National => {
                token.require(&NATIONAL_MECHANISMS)?;
                let token = Arc::new(Mutex::new(token));
                let sealed = match sealed_state {
                    None => {
                        let key_label = object_label(SEAL_TAG, SEALING_KEY, KeyVersion::FIRST);
                        let key = {
                            let t = lock(&token);
                            match t.find_secret(&key_label)? {
                                Some(k) => k,
                                None => t.generate_aes(&key_label)?,
                            }
                        };
                        SealedKeyStore::create_token_sealed(suite, TokenSealer { token, key_label, key })
                    }
                    Some(bytes) => SealedKeyStore::open_token_sealed(bytes, |key_label| {
                        let key = lock(&token)
                            .find_secret(key_label)?
                            .ok_or_else(|| KeyStoreError::UnknownKey { label: key_label.to_string() })?;
                        Ok(TokenSealer { token: token.clone(), key_label: key_label.to_string(), key })
                    })?,
                };
                if sealed.suite() != suite {
                    return Err(KeyStoreError::WrongSuite { found: sealed.suite(), expected: suite });
                }
                Ok(Self { inner: Inner::Sealed(sealed) })
            }
        }
    }

    fn token_event(
        &self,
        action: KeyAction,
        key: KeyId,
        previous: Option<KeyVersion>,
        kind: KeyKind,
        public_key: Option<Vec<u8>>,
    ) -> KeyEvent {
        KeyEvent {
            action,
            key,
            previous,
            kind,
            suite: SuiteId::International,
            location: KeyLocation::Token,
            public_key,
        }
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn suite(&self) -> SuiteId {
        match &self.inner {
            Inner::Token(_) => SuiteId::International,
            Inner::Sealed(s) => s.suite(),
        }
    }

    fn location(&self) -> KeyLocation {
        match &self.inner {
            Inner::Token(_) => KeyLocation::Token,
            Inner::Sealed(s) => s.location(),
        }
    }

    fn generate(&self, label: &KeyLabel, kind: KeyKind) -> Result<KeyEvent, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => {
                let mut t = lock(t);
                if t.kind(label).is_ok() {
                    return Err(KeyStoreError::AlreadyExists { label: label.to_string() });
                }
                let public = t.add_version(label, kind, KeyVersion::FIRST)?;
                let key = KeyId { label: label.clone(), version: KeyVersion::FIRST };
                Ok(self.token_event(KeyAction::Generated, key, None, kind, public))
            }
            Inner::Sealed(s) => s.generate(label, kind),
        }
    }

    fn rotate(&self, label: &KeyLabel) -> Result<KeyEvent, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => {
                let mut t = lock(t);
                let kind = t.kind(label)?;
                let previous = t.current(label)?.version;
                let version = previous.next().ok_or_else(|| {
                    KeyStoreError::InvalidParams(format!("key {label:?} has no version after {previous}"))
                })?;
                let public = t.add_version(label, kind, version)?;
                let key = KeyId { label: label.clone(), version };
                Ok(self.token_event(KeyAction::Rotated, key, Some(previous), kind, public))
            }
            Inner::Sealed(s) => s.rotate(label),
        }
    }

    fn retire(&self, key: &KeyId) -> Result<KeyEvent, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => {
                let kind = lock(t).retire(key)?;
                Ok(self.token_event(KeyAction::Retired, key.clone(), None, kind, None))
            }
            Inner::Sealed(s) => s.retire(key),
        }
    }

    fn versions(&self, label: &KeyLabel) -> Result<Vec<KeyVersion>, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => lock(t).versions(label),
            Inner::Sealed(s) => s.versions(label),
        }
    }

    fn list(&self) -> Result<Vec<(KeyId, KeyKind)>, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => Ok(lock(t).list()),
            Inner::Sealed(s) => s.list(),
        }
    }

    fn kind(&self, label: &KeyLabel) -> Result<KeyKind, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => lock(t).kind(label),
            Inner::Sealed(s) => s.kind(label),
        }
    }

    fn current(&self, label: &KeyLabel) -> Result<KeyId, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => lock(t).current(label),
            Inner::Sealed(s) => s.current(label),
        }
    }

    fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => lock(t).public_key(key),
            Inner::Sealed(s) => s.public_key(key),
        }
    }

    fn sign(&self, label: &KeyLabel, msg: &[u8]) -> Result<KeySignature, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => {
                let (key, signature) = lock(t).sign(label, msg)?;
                Ok(KeySignature { key, signature })
            }
            Inner::Sealed(s) => s.sign(label, msg),
        }
    }

    fn wrap(&self, kek: &KeyLabel, aad: &[u8], data_key: &DataKey) -> Result<WrappedKey, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => {
                let (kek, bytes) = lock(t).wrap(kek, aad, data_key)?;
                Ok(WrappedKey { kek, bytes })
            }
            Inner::Sealed(s) => s.wrap(kek, aad, data_key),
        }
    }

    fn unwrap(&self, kek: &KeyId, aad: &[u8], wrapped: &[u8]) -> Result<DataKey, KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => lock(t).unwrap(kek, aad, wrapped),
            Inner::Sealed(s) => s.unwrap(kek, aad, wrapped),
        }
    }

    fn identity_mac(&self, key: &KeyId, parts: &[&[u8]]) -> Result<[u8; DIGEST_LEN], KeyStoreError> {
        match &self.inner {
            Inner::Token(t) => lock(t).identity_mac(key, parts),
            Inner::Sealed(s) => s.identity_mac(key, parts),
        }
    }

    fn sealed_state(&self) -> Result<Option<Vec<u8>>, KeyStoreError> {
        match &self.inner {
            Inner::Token(_) => Ok(None),
            Inner::Sealed(s) => s.sealed_state(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
