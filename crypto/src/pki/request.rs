//! Enrolment by request: a node makes its keys where they will live and sends the CA only a PKCS#10
//! certificate request, so the CA never sees a private key.
//!
//! A Hearth request carries, in its extension request attribute:
//! - the subject alternative names the node asks for: exactly one `urn:hearth:<role>:<id>` URI (and an
//!   `urn:hearth:institution:<id>` URI for an app, DPO or operator acting for one), DNS names and IP
//!   addresses, nothing else;
//! - under the national suite, the node's SM2 protocol key in the extension the CA copies into the
//!   certificate ([`SM2_KEY_EXTENSION_OID_STR`](super::SM2_KEY_EXTENSION_OID_STR)), and beside it a proof
//!   that the requester holds that key ([`SM2_POSSESSION_EXTENSION_OID_STR`], `1.3.6.1.3.43278.1.2`, the
//!   next arc of the same provisional Hearth subtree): an SM2 signature, under that key, of
//!   [`SM2_POSSESSION_DOMAIN`] followed by the request's P-256 public key (SEC1 uncompressed), as a DER
//!   OCTET STRING holding the 64-byte `r || s`. Binding the proof to the P-256 key means a proof copied
//!   from another node's request does not verify with the copier's key, so nobody can have the CA
//!   certify someone else's SM2 key as theirs.
//!
//! The request is self-signed with its P-256 key (ECDSA, SHA-256), which proves possession of the TLS key
//! and covers both extensions. [`CertRequest::parse_and_verify`] accepts nothing else: any other
//! extension or attribute, a second identity, another curve or algorithm is refused with a
//! [`PkiError`] naming it. The subject name is ignored: the CA writes its own from the identity.

use std::fmt;
use std::net::IpAddr;

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use super::peer::{
    check_ecdsa_p256_sha256, check_p256, check_sm2, oid_is, point_of, sm2_extension, SigFailure,
    P256_SPKI_PREFIX, SM2_SPKI_PREFIX,
};
use super::{
    gen_err, identity_from_general_names, identity_sans, node_dn, ConsortiumCa, IssueOptions, NodeIdentity,
    PkiError, Role, SM2_KEY_EXTENSION_OID,
};
use crate::suite::{SecretBytes, SuiteId};

/// The arcs of the SM2 proof-of-possession extension's OID (see the module documentation).
pub const SM2_POSSESSION_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 3, 43278, 1, 2];
/// The same OID, dotted.
pub const SM2_POSSESSION_EXTENSION_OID_STR: &str = "1.3.6.1.3.43278.1.2";
/// What the SM2 proof of possession signs before the request's P-256 key: a tag of its own, so the
/// signature can never be mistaken for (or replayed as) a protocol message signature.
pub const SM2_POSSESSION_DOMAIN: &[u8] = b"hearth/pki/sm2-key-possession/v1\0";

/// The subject alternative name extension.
const SAN_OID: &[u64] = &[2, 5, 29, 17];
/// The PKCS#9 extension request attribute.
const EXTENSION_REQUEST_OID: &[u64] = &[1, 2, 840, 113549, 1, 9, 14];
/// The most names (DNS and IP) a request may ask for: a node has a handful; a request with thousands is
/// not a node's.
const MAX_NAMES: usize = 64;
/// Length of an SM2 signature as the suite writes it (`r || s`).
const SM2_SIGNATURE_LEN: usize = 64;

/// A certificate request made on the node, with the private keys that stay there.
pub struct CertRequest {
    /// The PKCS#10 request (PEM, `CERTIFICATE REQUEST`), to send to the CA.
    pub csr_pem: String,
    /// The node's P-256 TLS private key (PKCS#8 PEM), wiped from memory on drop. Never sent.
    pub key_pem: Zeroizing<String>,
    /// The node's SM2 protocol signing key, under the national suite (participants and coordinators).
    /// Never sent.
    pub sm2_secret: Option<SecretBytes>,
}

impl fmt::Debug for CertRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertRequest")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"[redacted]")
            .field("sm2_secret", &self.sm2_secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// A certificate request whose self-signature, structure and (if any) SM2 proof of possession
/// [`CertRequest::parse_and_verify`] checked. Only that function makes one, so holding one means the
/// checks ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    identity: NodeIdentity,
    p256_public_key: Vec<u8>,
    dns_names: Vec<String>,
    ip_addrs: Vec<IpAddr>,
    sm2_public_key: Option<Vec<u8>>,
}

impl VerifiedRequest {
    /// The identity the request asks for (not yet checked against anything: that is the CA operator's
    /// call, see [`ConsortiumCa::sign_request`]).
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The P-256 public key the certificate will carry (SEC1 uncompressed, 65 bytes).
    pub fn p256_public_key(&self) -> &[u8] {
        &self.p256_public_key
    }

    /// The DNS names asked for.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The IP addresses asked for.
    pub fn ip_addrs(&self) -> &[IpAddr] {
        &self.ip_addrs
    }

    /// The SM2 protocol key (SEC1 uncompressed, 65 bytes), whose possession the request proved.
    pub fn sm2_public_key(&self) -> Option<&[u8]> {
        self.sm2_public_key.as_deref()
    }
}

fn bad(reason: impl Into<String>) -> PkiError {
    PkiError::BadRequest(reason.into())
}

/// The message the SM2 proof of possession signs.
/// What the SM2 proof of possession signs: [`SM2_POSSESSION_DOMAIN`], then the request's P-256 key.
pub fn possession_message(p256_point: &[u8]) -> Vec<u8> {
    [SM2_POSSESSION_DOMAIN, p256_point].concat()
}

/// The SM2 half of a request made with keys held elsewhere: the SM2 verifying key and its proof of
/// possession (an SM2 signature of [`possession_message`] over the request's P-256 key).
#[derive(Debug, Clone)]
pub struct Sm2Possession {
    /// The SM2 verifying key (SEC1 uncompressed, 65 bytes).
    pub public_key: Vec<u8>,
    /// The SM2 signature (`r || s`).
    pub proof: Vec<u8>,
}

/// A key held in a [`KeyStore`](crate::keystore::KeyStore) (a PKCS#11 token) as the signer of a
/// certificate request: the request is signed inside the keystore.
pub struct KeystoreRequestKey<'a> {
    keystore: &'a dyn crate::keystore::KeyStore,
    label: crate::keystore::KeyLabel,
    public: Vec<u8>,
}

impl fmt::Debug for KeystoreRequestKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoreRequestKey").field("label", &self.label.as_str()).finish_non_exhaustive()
    }
}

impl<'a> KeystoreRequestKey<'a> {
    /// The current version of `label`, an ECDSA P-256 key (a TLS key) of `keystore`.
    pub fn new(
        keystore: &'a dyn crate::keystore::KeyStore,
        label: crate::keystore::KeyLabel,
    ) -> Result<Self, PkiError> {
        let key_err = |e: crate::keystore::KeyStoreError| PkiError::InvalidKey {
            what: "TLS key",
            reason: e.to_string(),
        };
        let current = keystore.current(&label).map_err(key_err)?;
        let public = keystore.public_key(&current).map_err(key_err)?;
        check_p256(&public)?;
        Ok(Self { keystore, label, public })
    }

    /// The key's public half (SEC1 uncompressed).
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }
}

impl rcgen::PublicKeyData for KeystoreRequestKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for KeystoreRequestKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let s = self.keystore.sign(&self.label, msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
        let sig =
            p256::ecdsa::Signature::from_slice(&s.signature).map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

impl CertRequest {
    /// Generates the node's P-256 TLS key and, under the national suite for a participant or coordinator
    /// (the nodes that sign protocol messages), its SM2 protocol key; returns a request for `identity`
    /// with the given names, signed by the TLS key (and carrying the SM2 key with its proof of
    /// possession).
    pub fn generate(
        identity: &NodeIdentity,
        dns_names: &[String],
        ip_addrs: &[IpAddr],
        suite: SuiteId,
    ) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let (sm2_secret, sm2) = match (suite, identity.role) {
            (SuiteId::National, Role::Participant | Role::Coordinator) => {
                let national = SuiteId::National.suite();
                let (secret, public_key) = national.signing_keypair().map_err(gen_err)?;
                let proof =
                    national.sign(&secret, &possession_message(key.public_key_raw())).map_err(gen_err)?;
                (Some(secret), Some(Sm2Possession { public_key, proof }))
            }
            _ => (None, None),
        };
        Ok(Self {
            csr_pem: Self::request_pem(identity, dns_names, ip_addrs, &key, sm2.as_ref())?,
            key_pem: Zeroizing::new(key.serialize_pem()),
            sm2_secret,
        })
    }

    /// A request for `identity` signed by `tls_key` wherever it lives (a [`KeystoreRequestKey`] signs
    /// inside the keystore), carrying `sm2` under the national suite.
    pub fn request_pem(
        identity: &NodeIdentity,
        dns_names: &[String],
        ip_addrs: &[IpAddr],
        tls_key: &impl rcgen::SigningKey,
        sm2: Option<&Sm2Possession>,
    ) -> Result<String, PkiError> {
        let NodeIdentity { role, id, institution } = identity;
        if dns_names.len() + ip_addrs.len() > MAX_NAMES {
            return Err(bad(format!("more than {MAX_NAMES} DNS names and IP addresses")));
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        params.distinguished_name = node_dn(*role, id);
        params.subject_alt_names = identity_sans(*role, id, institution.as_deref(), dns_names, ip_addrs)?;
        if let Some(sm2) = sm2 {
            let options =
                IssueOptions { sm2_verifying_key: Some(sm2.public_key.clone()), ..Default::default() };
            params.custom_extensions.extend(sm2_extension(&options)?);
            let len = u8::try_from(sm2.proof.len()).map_err(gen_err)?;
            let mut value = vec![0x04, len];
            value.extend_from_slice(&sm2.proof);
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(SM2_POSSESSION_EXTENSION_OID, value));
        }
        let csr = params.serialize_request(tls_key).map_err(gen_err)?;
        csr.pem().map_err(gen_err)
    }

    /// Parses a PEM certificate request and checks everything the CA relies on: its self-signature
    /// (ECDSA P-256, SHA-256) under the P-256 key it carries, that it asks for exactly one Hearth identity
    /// and only DNS names and IP addresses besides, and that an SM2 key comes with a valid proof of
    /// possession. Hostile input gives an error, never a panic.
    pub fn parse_and_verify(pem: &str) -> Result<VerifiedRequest, PkiError> {
        let what = "certificate request";
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| PkiError::Parse { what, reason: e.to_string() })?;
        if block.label != "CERTIFICATE REQUEST" {
            return Err(PkiError::Parse {
                what,
                reason: format!("PEM block is {:?}, not CERTIFICATE REQUEST", block.label),
            });
        }
        Self::verify_der(&block.contents)
    }

    /// [`CertRequest::parse_and_verify`] for a DER request.
    pub fn verify_der(der: &[u8]) -> Result<VerifiedRequest, PkiError> {
        let what = "certificate request";
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| PkiError::Parse { what, reason: e.to_string() })?;
        if !rest.is_empty() {
            return Err(PkiError::Parse { what, reason: format!("{} bytes after the request", rest.len()) });
        }
        let info = &csr.certification_request_info;
        if info.version.0 != 0 {
            return Err(bad(format!("version {} (PKCS#10 knows only version 1, encoded 0)", info.version.0)));
        }
        let p256_point =
            point_of(&P256_SPKI_PREFIX, info.subject_pki.raw).ok_or_else(|| PkiError::InvalidKey {
                what: "P-256 public key",
                reason: format!(
                    "the request's key ({}) is not an uncompressed ECDSA P-256 key",
                    info.subject_pki.algorithm.algorithm
                ),
            })?;
        check_p256(p256_point)?;
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(p256_point)
            .map_err(|e| PkiError::InvalidKey { what: "P-256 public key", reason: e.to_string() })?;
        check_ecdsa_p256_sha256(&key, &csr.signature_algorithm, None, info.raw, &csr.signature_value.data)
            .map_err(|f| match f {
                SigFailure::Algorithm => bad("it is not signed with ECDSA and SHA-256"),
                SigFailure::NotDer | SigFailure::DoesNotVerify => PkiError::RequestSignature,
            })?;

        let mut extensions = None;
        for attr in info.iter_attributes() {
            match attr.parsed_attribute() {
                ParsedCriAttribute::ExtensionRequest(req) if oid_is(&attr.oid, EXTENSION_REQUEST_OID) => {
                    if extensions.replace(&req.extensions).is_some() {
                        return Err(bad("two extension request attributes"));
                    }
                }
                _ => return Err(bad(format!("unexpected attribute {}", attr.oid))),
            }
        }
        let extensions = extensions.ok_or_else(|| bad("no extension request (so no Hearth identity)"))?;

        let (mut names, mut sm2, mut proof) = (None, None, None);
        for ext in extensions {
            if oid_is(&ext.oid, SAN_OID) {
                let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() else {
                    return Err(bad("its subject alternative names do not parse"));
                };
                if names.replace(&san.general_names).is_some() {
                    return Err(bad("two subject alternative name extensions"));
                }
            } else if oid_is(&ext.oid, SM2_KEY_EXTENSION_OID) {
                let point = point_of(&SM2_SPKI_PREFIX, ext.value)
                    .ok_or_else(|| bad("its SM2 key extension is not an uncompressed sm2p256v1 key"))?;
                check_sm2(point)?;
                if sm2.replace(point).is_some() {
                    return Err(bad("two SM2 key extensions"));
                }
            } else if oid_is(&ext.oid, SM2_POSSESSION_EXTENSION_OID) {
                let sig = match ext.value {
                    [0x04, len, sig @ ..]
                        if usize::from(*len) == SM2_SIGNATURE_LEN && sig.len() == SM2_SIGNATURE_LEN =>
                    {
                        sig
                    }
                    _ => return Err(bad("its SM2 key proof is not a 64-byte OCTET STRING")),
                };
                if proof.replace(sig).is_some() {
                    return Err(bad("two SM2 key proofs"));
                }
            } else {
                return Err(bad(format!(
                    "unexpected extension {} (Hearth requests carry only names and an SM2 key)",
                    ext.oid
                )));
            }
        }
        let names = names.ok_or_else(|| bad("no subject alternative names (so no Hearth identity)"))?;
        let identity = identity_from_general_names(names)?;
        let (mut dns_names, mut ip_addrs) = (Vec::new(), Vec::new());
        for name in names {
            match name {
                GeneralName::URI(u) if u.starts_with(super::URI_PREFIX) => {}
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(bytes) => ip_addrs.push(match <[u8; 4]>::try_from(*bytes) {
                    Ok(v4) => IpAddr::from(v4),
                    Err(_) => IpAddr::from(
                        <[u8; 16]>::try_from(*bytes)
                            .map_err(|_| bad(format!("an IP address of {} bytes", bytes.len())))?,
                    ),
                }),
                other => return Err(bad(format!("unexpected subject alternative name {other}"))),
            }
        }
        if dns_names.len() + ip_addrs.len() > MAX_NAMES {
            return Err(bad(format!("more than {MAX_NAMES} DNS names and IP addresses")));
        }
        let sm2_public_key = match (sm2, proof) {
            (None, None) => None,
            (Some(_), None) => return Err(PkiError::Sm2Possession("the request carries no proof".into())),
            (None, Some(_)) => return Err(bad("an SM2 key proof without an SM2 key")),
            (Some(point), Some(sig)) => {
                SuiteId::National
                    .suite()
                    .verify(point, &possession_message(p256_point), sig)
                    .map_err(|e| PkiError::Sm2Possession(e.to_string()))?;
                Some(point.to_vec())
            }
        };
        Ok(VerifiedRequest {
            identity,
            p256_public_key: p256_point.to_vec(),
            dns_names,
            ip_addrs,
            sm2_public_key,
        })
    }
}

impl ConsortiumCa {
    /// Signs a verified request: a certificate for the request's own public key (and SM2 key), never a key
    /// the CA made, valid `lifetime_days` days. `verified_identity` is the identity the CA operator checked
    /// out of band; the request must ask for exactly that one ([`PkiError::IdentityMismatch`] otherwise).
    /// Returns the certificate PEM.
    pub fn sign_request(
        &self,
        request: &VerifiedRequest,
        verified_identity: &NodeIdentity,
        lifetime_days: u32,
    ) -> Result<String, PkiError> {
        if request.identity != *verified_identity {
            return Err(PkiError::IdentityMismatch {
                requested: request.identity.to_string(),
                expected: verified_identity.to_string(),
            });
        }
        let options = IssueOptions {
            sm2_verifying_key: request.sm2_public_key.clone(),
            institution: request.identity.institution.clone(),
            lifetime_days,
        };
        self.issue_for_key(
            request.identity.role,
            &request.identity.id,
            &request.dns_names,
            &request.ip_addrs,
            &request.p256_public_key,
            &options,
        )
    }
}

#[cfg(test)]
mod tests;
