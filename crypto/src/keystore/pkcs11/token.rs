//! One logged-in session on a PKCS#11 token and the token objects Hearth keeps there. Keys are created
//! with `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` true and `CKA_EXTRACTABLE` false, so the token never
//! reveals them; every operation runs inside the token.
//!
//! Object labels are `hearth/<kind>/<label>/v<version>` (kind: signing, audit, kek, identity-hash, seal);
//! a signing key is a private and a public object under the same label. The index of Hearth's keys is
//! rebuilt from these labels when the token is opened, so the token alone is the source of truth.
//!
//! Mechanisms (all checked present when the token is opened, measured on SoftHSM2 2.6.1):
//! `CKM_EC_KEY_PAIR_GEN` on P-256 and `CKM_ECDSA` over a SHA-256 digest computed here (SoftHSM2 does not
//! offer `CKM_ECDSA_SHA256`); `CKM_AES_KEY_GEN` (256-bit) and `CKM_AES_GCM` (`C_Encrypt`/`C_Decrypt`,
//! 96-bit nonce, 128-bit tag, associated data) for wrapping data keys; `CKM_GENERIC_SECRET_KEY_GEN`
//! (32 bytes) and `CKM_SHA256_HMAC` for identity hashes. `C_WrapKey` with `CKM_AES_KEY_WRAP` is not used:
//! it wraps only token objects and binds no associated data.

use std::collections::BTreeMap;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use sha2_11::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keystore::{
    wrap_aad, DataKey, KeyId, KeyKind, KeyLabel, KeyStoreError, KeyVersion, Reader, WRAP_NONCE_LEN,
};
use crate::suite::{fill_random, SuiteId, DIGEST_LEN, NONCE_LEN, SIGNATURE_LEN};

/// DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7), the value of `CKA_EC_PARAMS`.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// The AES-GCM tag length the backend asks for.
const GCM_TAG_BITS: u64 = 128;
/// Object-label kind tag of the national suite's sealing key.
pub(super) const SEAL_TAG: &str = "seal";

/// Turns a cryptoki error into the keystore's, naming what the backend was doing.
pub(super) fn p11(operation: &'static str) -> impl Fn(P11Error) -> KeyStoreError {
    move |e| KeyStoreError::Pkcs11 { operation, detail: e.to_string() }
}

/// The token objects of one version of one key.
#[derive(Debug, Clone)]
struct Objects {
    /// The private key (signing kinds) or the secret key.
    secret: ObjectHandle,
    /// The verifying key, SEC1 uncompressed (signing kinds).
    public: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Entry {
    kind: KeyKind,
    versions: BTreeMap<KeyVersion, Objects>,
}

/// A logged-in session and the index of Hearth's keys in the token.
#[derive(Debug)]
pub(crate) struct Token {
    ctx: Pkcs11,
    slot: Slot,
    pub(super) session: Session,
    pub(super) label: String,
    keys: BTreeMap<KeyLabel, Entry>,
}

pub(super) fn object_label(tag: &str, label: &str, version: KeyVersion) -> String {
    format!("hearth/{tag}/{label}/v{version}")
}

/// Reads `hearth/<tag>/<label>/v<n>`; anything else is not Hearth's and is ignored.
fn parse_object_label(s: &str) -> Option<(&str, KeyLabel, KeyVersion)> {
    let mut parts = s.strip_prefix("hearth/")?.split('/');
    let (tag, label, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let v = KeyVersion::new(version.strip_prefix('v')?.parse().ok()?)?;
    Some((tag, KeyLabel::new(label).ok()?, v))
}

/// The SEC1 point inside `CKA_EC_POINT`, which PKCS#11 specifies as a DER OCTET STRING, checked to be a
/// P-256 point.
fn ec_point(attr: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
    let bad =
        |why: &str| KeyStoreError::Pkcs11 { operation: "reading an EC public key", detail: why.to_string() };
    let point = match attr {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        raw if raw.len() == 65 => raw,
        _ => return Err(bad("CKA_EC_POINT is not a 65-byte uncompressed P-256 point")),
    };
    p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| bad("CKA_EC_POINT is not on P-256"))?;
    Ok(point.to_vec())
}

fn private_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
    ]
}

impl Token {
    pub(super) fn new(ctx: Pkcs11, slot: Slot, session: Session, label: String) -> Self {
        Self { ctx, slot, session, label, keys: BTreeMap::new() }
    }

    /// Rebuilds the index of Hearth's keys from the token's object labels (international suite).
    pub(super) fn load_index(&mut self) -> Result<(), KeyStoreError> {
        let handles =
            self.session.find_objects(&[Attribute::Token(true)]).map_err(p11("listing token objects"))?;
        let mut keys: BTreeMap<KeyLabel, Entry> = BTreeMap::new();
        let mut publics = Vec::new();
        for h in handles {
            let attrs = self
                .session
                .get_attributes(h, &[AttributeType::Label, AttributeType::Class])
                .map_err(p11("reading object labels"))?;
            let (mut label, mut class) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Label(l) => label = String::from_utf8(l).ok(),
                    Attribute::Class(c) => class = Some(c),
                    _ => {}
                }
            }
            let (Some(label), Some(class)) = (label, class) else { continue };
            let Some((tag, name, version)) = parse_object_label(&label) else { continue };
            let Some(kind) = KeyKind::ALL.into_iter().find(|k| k.as_str() == tag) else { continue };
            if class == ObjectClass::PUBLIC_KEY {
                publics.push((name, version, h));
                continue;
            }
            let e = keys.entry(name).or_insert_with(|| Entry { kind, versions: BTreeMap::new() });
            if e.kind == kind {
                e.versions.insert(version, Objects { secret: h, public: None });
            }
        }
        for (name, version, h) in publics {
            let point = self.public_point(h)?;
            if let Some(o) = keys.get_mut(&name).and_then(|e| e.versions.get_mut(&version)) {
                o.public = Some(point);
            }
        }
        for (name, e) in &keys {
            if e.kind.is_signing() && e.versions.values().any(|o| o.public.is_none()) {
                return Err(KeyStoreError::Pkcs11 {
                    operation: "reading the token's key index",
                    detail: format!("signing key {name:?} has a private object without its public object"),
                });
            }
        }
        self.keys = keys;
        Ok(())
    }

    fn public_point(&self, h: ObjectHandle) -> Result<Vec<u8>, KeyStoreError> {
        let attrs = self
            .session
            .get_attributes(h, &[AttributeType::EcPoint])
            .map_err(p11("reading an EC public key"))?;
        match attrs.into_iter().next() {
            Some(Attribute::EcPoint(p)) => ec_point(&p),
            _ => Err(KeyStoreError::Pkcs11 {
                operation: "reading an EC public key",
                detail: "no CKA_EC_POINT".into(),
            }),
        }
    }

    /// Checks that the token offers every mechanism in `needed`.
    pub(super) fn require(&self, needed: &[(MechanismType, &'static str)]) -> Result<(), KeyStoreError> {
        let have = self.ctx.get_mechanism_list(self.slot).map_err(p11("listing mechanisms"))?;
        for (m, name) in needed {
            if !have.contains(m) {
                return Err(KeyStoreError::MechanismUnsupported {
                    token: self.label.clone(),
                    mechanism: name,
                });
            }
        }
        Ok(())
    }

    /// Finds a secret key object by its exact label.
    pub(super) fn find_secret(&self, label: &str) -> Result<Option<ObjectHandle>, KeyStoreError> {
        let found = self
            .session
            .find_objects(&[
                Attribute::Token(true),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(p11("finding a key"))?;
        Ok(found.into_iter().next())
    }

    /// Generates a key of `kind` under `object` (an object label) inside the token.
    fn generate_objects(&self, kind: KeyKind, object: &str) -> Result<Objects, KeyStoreError> {
        if kind.is_signing() {
            let public_template = vec![
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                Attribute::Label(object.as_bytes().to_vec()),
                Attribute::Id(object.as_bytes().to_vec()),
            ];
            let mut private = private_template(object);
            private.extend([Attribute::Sign(true), Attribute::Derive(false)]);
            let (pub_h, priv_h) = self
                .session
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public_template, &private)
                .map_err(p11("generating an EC P-256 key pair"))?;
            return Ok(Objects { secret: priv_h, public: Some(self.public_point(pub_h)?) });
        }
        let secret = if kind == KeyKind::KeyEncryption {
            self.generate_aes(object)?
        } else {
            self.generate_hmac(object)?
        };
        Ok(Objects { secret, public: None })
    }

    /// A 256-bit AES key for AES-GCM inside the token.
    pub(super) fn generate_aes(&self, object: &str) -> Result<ObjectHandle, KeyStoreError> {
        let mut t = private_template(object);
        t.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ]);
        self.session.generate_key(&Mechanism::AesKeyGen, &t).map_err(p11("generating an AES-256 key"))
    }

    fn generate_hmac(&self, object: &str) -> Result<ObjectHandle, KeyStoreError> {
        let mut t = private_template(object);
        t.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen((DIGEST_LEN as u64).into()),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ]);
        self.session.generate_key(&Mechanism::GenericSecretKeyGen, &t).map_err(p11("generating an HMAC key"))
    }

    /// AES-256-GCM encryption inside the token; returns ciphertext followed by the 16-byte tag.
    pub(super) fn gcm_encrypt(
        &self,
        key: ObjectHandle,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let mut iv = *nonce;
        let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into()).map_err(p11("preparing AES-GCM"))?;
        self.session.encrypt(&Mechanism::AesGcm(params), key, plaintext).map_err(p11("AES-GCM encryption"))
    }

    /// AES-256-GCM decryption inside the token. `Ok(None)` means authentication failed.
    pub(super) fn gcm_decrypt(
        &self,
        key: ObjectHandle,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeyStoreError> {
        let mut iv = *nonce;
        let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into()).map_err(p11("preparing AES-GCM"))?;
        match self.session.decrypt(&Mechanism::AesGcm(params), key, ciphertext) {
            Ok(p) => Ok(Some(Zeroizing::new(p))),
            // SoftHSM2 reports a failed tag check as CKR_GENERAL_ERROR (measured); the others are what
            // the standard and other tokens use for bad or short ciphertext.
            Err(P11Error::Pkcs11(
                RvError::GeneralError
                | RvError::FunctionFailed
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange,
                _,
            )) => Ok(None),
            Err(e) => Err(p11("AES-GCM decryption")(e)),
        }
    }

    fn entry(&self, label: &KeyLabel) -> Result<&Entry, KeyStoreError> {
        self.keys.get(label).ok_or_else(|| KeyStoreError::UnknownKey { label: label.to_string() })
    }

    fn checked(
        &self,
        label: &KeyLabel,
        ok: fn(KeyKind) -> bool,
        operation: &'static str,
    ) -> Result<&Entry, KeyStoreError> {
        let e = self.entry(label)?;
        if !ok(e.kind) {
            return Err(KeyStoreError::WrongKind {
                label: label.to_string(),
                kind: e.kind.as_str(),
                operation,
            });
        }
        Ok(e)
    }

    fn current_of(
        &self,
        label: &KeyLabel,
        ok: fn(KeyKind) -> bool,
        op: &'static str,
    ) -> Result<(KeyId, &Objects), KeyStoreError> {
        let e = self.checked(label, ok, op)?;
        let (v, o) = e
            .versions
            .iter()
            .next_back()
            .ok_or_else(|| KeyStoreError::UnknownKey { label: label.to_string() })?;
        Ok((KeyId { label: label.clone(), version: *v }, o))
    }

    fn version_of(
        &self,
        key: &KeyId,
        ok: fn(KeyKind) -> bool,
        op: &'static str,
    ) -> Result<&Objects, KeyStoreError> {
        self.checked(&key.label, ok, op)?.versions.get(&key.version).ok_or_else(|| key.unknown_version())
    }

    /// Generates version 1 (`previous` None) or the next version of a key; returns the new id and its
    /// public key.
    pub(super) fn add_version(
        &mut self,
        label: &KeyLabel,
        kind: KeyKind,
        version: KeyVersion,
    ) -> Result<Option<Vec<u8>>, KeyStoreError> {
        let objects = self.generate_objects(kind, &object_label(kind.as_str(), label.as_str(), version))?;
        let public = objects.public.clone();
        self.keys
            .entry(label.clone())
            .or_insert_with(|| Entry { kind, versions: BTreeMap::new() })
            .versions
            .insert(version, objects);
        Ok(public)
    }

    /// Destroys an old version's token object (see [`crate::keystore::KeyStore::retire`]); returns the
    /// key's kind.
    pub(super) fn retire(&mut self, key: &KeyId) -> Result<KeyKind, KeyStoreError> {
        let e = self.entry(&key.label)?;
        let kind = e.kind;
        crate::keystore::ring::check_retirable(key, kind, e.versions.keys().next_back().copied())?;
        let objects = e.versions.get(&key.version).ok_or_else(|| key.unknown_version())?;
        self.session.destroy_object(objects.secret).map_err(p11("destroying a retired key version"))?;
        if let Some(e) = self.keys.get_mut(&key.label) {
            e.versions.remove(&key.version);
        }
        Ok(kind)
    }

    pub(super) fn versions(&self, label: &KeyLabel) -> Result<Vec<KeyVersion>, KeyStoreError> {
        Ok(self.entry(label)?.versions.keys().copied().collect())
    }

    pub(super) fn list(&self) -> Vec<(KeyId, KeyKind)> {
        self.keys
            .iter()
            .filter_map(|(l, e)| {
                Some((KeyId { label: l.clone(), version: *e.versions.keys().next_back()? }, e.kind))
            })
            .collect()
    }

    pub(super) fn kind(&self, label: &KeyLabel) -> Result<KeyKind, KeyStoreError> {
        Ok(self.entry(label)?.kind)
    }

    pub(super) fn current(&self, label: &KeyLabel) -> Result<KeyId, KeyStoreError> {
        Ok(self.current_of(label, |_| true, "use")?.0)
    }

    pub(super) fn public_key(&self, key: &KeyId) -> Result<Vec<u8>, KeyStoreError> {
        let o = self.version_of(key, KeyKind::is_signing, "give a public key")?;
        o.public.clone().ok_or_else(|| key.unknown_version())
    }

    /// ECDSA P-256 over SHA-256: the digest here, the signature in the token.
    pub(super) fn sign(&self, label: &KeyLabel, msg: &[u8]) -> Result<(KeyId, Vec<u8>), KeyStoreError> {
        let (key, o) = self.current_of(label, KeyKind::is_signing, "sign")?;
        let digest = Sha256::digest(msg);
        let sig = self.session.sign(&Mechanism::Ecdsa, o.secret, &digest).map_err(p11("ECDSA signing"))?;
        if sig.len() != SIGNATURE_LEN {
            return Err(KeyStoreError::Pkcs11 {
                operation: "ECDSA signing",
                detail: format!("{}-byte signature", sig.len()),
            });
        }
        Ok((key, sig))
    }

    pub(super) fn wrap(
        &self,
        kek: &KeyLabel,
        aad: &[u8],
        dk: &DataKey,
    ) -> Result<(KeyId, Vec<u8>), KeyStoreError> {
        let (key, o) = self.current_of(kek, |k| k == KeyKind::KeyEncryption, "wrap a data key")?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let ct =
            self.gcm_encrypt(o.secret, &nonce, &wrap_aad(SuiteId::International, &key, aad), dk.expose())?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ct);
        Ok((key, bytes))
    }

    pub(super) fn unwrap(&self, kek: &KeyId, aad: &[u8], wrapped: &[u8]) -> Result<DataKey, KeyStoreError> {
        let o = self.version_of(kek, |k| k == KeyKind::KeyEncryption, "unwrap a data key")?;
        let failed =
            || KeyStoreError::UnwrapFailed { label: kek.label.to_string(), version: kek.version.get() };
        let mut r = Reader::new(wrapped);
        let nonce: [u8; WRAP_NONCE_LEN] = r.array("nonce").map_err(|_| failed())?;
        let plain = self
            .gcm_decrypt(o.secret, &nonce, &wrap_aad(SuiteId::International, kek, aad), r.rest())?
            .ok_or_else(failed)?;
        DataKey::from_bytes(SuiteId::International, plain)
    }

    pub(super) fn identity_mac(
        &self,
        key: &KeyId,
        parts: &[&[u8]],
    ) -> Result<[u8; DIGEST_LEN], KeyStoreError> {
        let o = self.version_of(key, |k| k == KeyKind::IdentityHash, "compute an identity hash")?;
        let data = Zeroizing::new(parts.concat());
        let mac = self.session.sign(&Mechanism::Sha256Hmac, o.secret, &data).map_err(p11("HMAC-SHA-256"))?;
        mac.as_slice().try_into().map_err(|_| KeyStoreError::Pkcs11 {
            operation: "HMAC-SHA-256",
            detail: format!("{}-byte MAC", mac.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::CryptoSuite;

    #[test]
    fn object_labels_round_trip_and_foreign_ones_are_ignored() {
        let l = object_label("kek", "kek.tenant-a", KeyVersion::new(12).unwrap());
        assert_eq!(l, "hearth/kek/kek.tenant-a/v12");
        let (tag, label, v) = parse_object_label(&l).unwrap();
        assert_eq!((tag, label.as_str(), v.get()), ("kek", "kek.tenant-a", 12));
        for foreign in [
            "other",
            "hearth/kek/x",
            "hearth/kek/x/v0",
            "hearth/kek/X/v1",
            "hearth/kek/x/v1/y",
            "hearth/kek/x/1",
        ] {
            assert!(parse_object_label(foreign).is_none(), "{foreign}");
        }
    }

    #[test]
    fn ec_points_are_unwrapped_from_their_octet_string() {
        let (_, public) = crate::suite::International.signing_keypair().unwrap();
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&public);
        assert_eq!(ec_point(&der).unwrap(), public);
        assert_eq!(ec_point(&public).unwrap(), public);
        assert!(ec_point(&der[..40]).is_err());
        let mut off_curve = der.clone();
        off_curve[10] ^= 1;
        assert!(ec_point(&off_curve).is_err());
    }
}
