//! Binding protocol signing keys to CA-issued identities, and checking a peer's certificate.
//!
//! Under the international suite a node signs protocol messages with ECDSA P-256, the key type of its
//! certificate, so the certificate's own key is the protocol key: issue the certificate for the keystore's
//! signing key with [`ConsortiumCa::issue_for_key`]. Under the national suite the protocol key is an SM2
//! key, which the CA embeds in the (P-256, TLS) certificate as a non-critical extension:
//!
//! - OID [`SM2_KEY_EXTENSION_OID_STR`] (`1.3.6.1.3.43278.1.1`): arc 1.3.6.1.3 is the IANA "experimental"
//!   subtree (RFC 1155); 43278 spells HEART on a telephone keypad; `.1` Hearth X.509 extensions; `.1` the
//!   SM2 verifying key. **Provisional**: Hearth has no IANA Private Enterprise Number yet; before a
//!   production deployment register one and move the extension under it (only this constant changes).
//!   A UUID-based `2.25` arc was not possible because the certificate library takes 64-bit arcs only.
//! - Value: the DER `SubjectPublicKeyInfo` of the SM2 key (`id-ecPublicKey` with the curve
//!   `sm2p256v1`, 1.2.156.10197.1.301, and the uncompressed point), the encoding GM/T 0015 and OpenSSL use
//!   for SM2 keys, so `openssl asn1parse` shows it.
//!
//! [`verify_node_cert`] checks a certificate against the consortium CA (issuer, signature, validity,
//! critical extensions, identity) and returns [`VerifiedPeer`], whose [`VerifiedPeer::protocol_key`]
//! gives the key for [`CryptoSuite::verify`](crate::CryptoSuite::verify).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{CustomExtension, KeyPair, SubjectPublicKeyInfo};
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;
use zeroize::Zeroizing;

use super::{
    gen_err, identity_from_cert_der, node_params, pem_to_der, ConsortiumCa, IssuedCert, NodeIdentity,
    PkiError, Role,
};
use crate::suite::SuiteId;

/// The arcs of the SM2 verifying-key extension's OID (see the module documentation).
pub const SM2_KEY_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 3, 43278, 1, 1];
/// The same OID, dotted.
pub const SM2_KEY_EXTENSION_OID_STR: &str = "1.3.6.1.3.43278.1.1";

/// DER prefix of a P-256 `SubjectPublicKeyInfo` with an uncompressed point (the 65 point bytes follow).
pub(super) const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// DER prefix of an SM2 (`sm2p256v1`) `SubjectPublicKeyInfo` with an uncompressed point.
pub(super) const SM2_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x81,
    0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d, 0x03, 0x42, 0x00,
];
/// ecdsa-with-SHA256 (RFC 5758).
const ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
/// Extensions a node certificate may mark critical: basic constraints, key usage, extended key usage,
/// subject alternative names, and ours.
const KNOWN_CRITICAL: [&[u64]; 5] =
    [&[2, 5, 29, 19], &[2, 5, 29, 15], &[2, 5, 29, 37], &[2, 5, 29, 17], SM2_KEY_EXTENSION_OID];

/// Choices for [`ConsortiumCa::issue_with`] and [`ConsortiumCa::issue_for_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueOptions {
    /// The node's SM2 verifying key (SEC1 uncompressed, 65 bytes) to embed for national-suite protocol
    /// signatures.
    pub sm2_verifying_key: Option<Vec<u8>>,
    /// The institution an app, DPO or operator certificate acts for (a participant's id).
    pub institution: Option<String>,
    /// How many days the certificate is valid (from [`CLOCK_SKEW`](super::CLOCK_SKEW) before now): 1 to
    /// [`MAX_LIFETIME_DAYS`](super::MAX_LIFETIME_DAYS); default
    /// [`DEFAULT_LIFETIME_DAYS`](super::DEFAULT_LIFETIME_DAYS).
    pub lifetime_days: u32,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self { sm2_verifying_key: None, institution: None, lifetime_days: super::DEFAULT_LIFETIME_DAYS }
    }
}

/// A certificate that [`verify_node_cert`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// Who the peer is.
    pub identity: NodeIdentity,
    /// The certificate's P-256 key (SEC1 uncompressed, 65 bytes): the international protocol key.
    pub tls_public_key: Vec<u8>,
    /// The SM2 key from the Hearth extension, if the CA embedded one: the national protocol key.
    pub sm2_public_key: Option<Vec<u8>>,
    /// The certificate's notAfter, in seconds since the Unix epoch.
    pub valid_until_unix: i64,
}

impl VerifiedPeer {
    /// The key that verifies this peer's protocol signatures under `suite`.
    pub fn protocol_key(&self, suite: SuiteId) -> Result<&[u8], PkiError> {
        match suite {
            SuiteId::International => Ok(&self.tls_public_key),
            SuiteId::National => self.sm2_public_key.as_deref().ok_or(PkiError::NoProtocolKey(suite)),
        }
    }
}

/// The ECDSA P-256 public key a certificate certifies, as a SEC1 uncompressed point (65 bytes): to check
/// that a certificate belongs to a key held elsewhere (a token's), without verifying its issuer.
pub fn public_key_of_cert_der(cert_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::Parse { what: "certificate", reason: e.to_string() })?;
    point_of(&P256_SPKI_PREFIX, cert.public_key().raw)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| PkiError::Parse { what: "certificate", reason: "its key is not ECDSA P-256".into() })
}

pub(super) fn spki(prefix: &[u8; 26], point: &[u8]) -> Vec<u8> {
    [prefix.as_slice(), point].concat()
}

/// The point of an SPKI that must be exactly `prefix` and a 65-byte point.
pub(super) fn point_of<'a>(prefix: &[u8; 26], der: &'a [u8]) -> Option<&'a [u8]> {
    der.strip_prefix(prefix.as_slice()).filter(|p| p.len() == 65)
}

pub(super) fn check_sm2(point: &[u8]) -> Result<(), PkiError> {
    sm2::PublicKey::from_sec1_bytes(point)
        .map(|_| ())
        .map_err(|e| PkiError::InvalidKey { what: "SM2 verifying key", reason: e.to_string() })
}

pub(super) fn check_p256(point: &[u8]) -> Result<(), PkiError> {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
        .map(|_| ())
        .map_err(|e| PkiError::InvalidKey { what: "P-256 public key", reason: e.to_string() })
}

/// A node certificate's parameters under `options`: [`node_params`] and the SM2 key extension.
fn params_with(
    role: Role,
    id: &str,
    dns_names: &[String],
    ip_addrs: &[IpAddr],
    options: &IssueOptions,
) -> Result<rcgen::CertificateParams, PkiError> {
    let mut params =
        node_params(role, id, dns_names, ip_addrs, options.institution.as_deref(), options.lifetime_days)?;
    params.custom_extensions.extend(sm2_extension(options)?);
    Ok(params)
}

pub(super) fn sm2_extension(options: &IssueOptions) -> Result<Option<CustomExtension>, PkiError> {
    let Some(point) = &options.sm2_verifying_key else { return Ok(None) };
    if point.len() != 65 || point[0] != 0x04 {
        return Err(PkiError::InvalidKey {
            what: "SM2 verifying key",
            reason: format!("{} bytes, expected a 65-byte uncompressed point", point.len()),
        });
    }
    check_sm2(point)?;
    // Non-critical (the default): TLS stacks that do not know the OID ignore it.
    Ok(Some(CustomExtension::from_oid_content(SM2_KEY_EXTENSION_OID, spki(&SM2_SPKI_PREFIX, point))))
}

impl ConsortiumCa {
    /// Issues a node certificate like [`ConsortiumCa::issue`] (a fresh P-256 key, returned as PEM), with
    /// the options, e.g. the node's SM2 protocol key embedded in the Hearth extension.
    pub fn issue_with(
        &self,
        role: Role,
        id: &str,
        dns_names: &[String],
        ip_addrs: &[IpAddr],
        options: &IssueOptions,
    ) -> Result<IssuedCert, PkiError> {
        let params = params_with(role, id, dns_names, ip_addrs, options)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let cert = params.signed_by(&key, &self.issuer()?).map_err(gen_err)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
    }

    /// Issues a node certificate for a P-256 key held elsewhere (SEC1 uncompressed, 65 bytes): typically
    /// the node's signing key in its [`KeyStore`](crate::keystore::KeyStore), so that its international
    /// protocol signatures verify against its certificate. Returns the certificate PEM; there is no
    /// private key to return.
    pub fn issue_for_key(
        &self,
        role: Role,
        id: &str,
        dns_names: &[String],
        ip_addrs: &[IpAddr],
        p256_public_key: &[u8],
        options: &IssueOptions,
    ) -> Result<String, PkiError> {
        if p256_public_key.len() != 65 || p256_public_key[0] != 0x04 {
            return Err(PkiError::InvalidKey {
                what: "P-256 public key",
                reason: format!("{} bytes, expected a 65-byte uncompressed point", p256_public_key.len()),
            });
        }
        check_p256(p256_public_key)?;
        let public = SubjectPublicKeyInfo::from_der(&spki(&P256_SPKI_PREFIX, p256_public_key))
            .map_err(|e| PkiError::InvalidKey { what: "P-256 public key", reason: e.to_string() })?;
        let params = params_with(role, id, dns_names, ip_addrs, options)?;
        Ok(params.signed_by(&public, &self.issuer()?).map_err(gen_err)?.pem())
    }
}

/// The DER of the first certificate in a PEM string (e.g. the CA certificate file's contents).
pub fn cert_der_from_pem(pem: &str) -> Result<Vec<u8>, PkiError> {
    pem_to_der(pem, "certificate")
}

pub(super) fn untrusted(reason: impl Into<String>) -> PkiError {
    PkiError::Untrusted(reason.into())
}

pub(super) fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, PkiError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::Parse { what, reason: e.to_string() })?;
    if !rest.is_empty() {
        return Err(PkiError::Parse { what, reason: format!("{} bytes after the certificate", rest.len()) });
    }
    Ok(cert)
}

pub(super) fn oid_is(oid: &x509_parser::der_parser::oid::Oid<'_>, arcs: &[u64]) -> bool {
    oid.iter().is_some_and(|it| it.eq(arcs.iter().copied()))
}

/// Checks a node certificate (DER) against the consortium CA certificate (DER) at time `at`:
/// issued by that CA (issuer name and ECDSA P-256 SHA-256 signature), valid at `at`, not a CA, no
/// unknown critical extension, exactly one Hearth identity, a P-256 key, and a well-formed SM2 key
/// extension if present. Pass the current time in services; tests pass fixed times.
pub fn verify_node_cert(
    ca_cert_der: &[u8],
    cert_der: &[u8],
    at: SystemTime,
) -> Result<VerifiedPeer, PkiError> {
    let cert = check_signed_by_ca(ca_cert_der, cert_der)?;

    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let now = ASN1Time::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map_err(|e| PkiError::Parse { what: "verification time", reason: e.to_string() })?;
    let validity = cert.validity();
    if !validity.is_valid_at(now) {
        return Err(PkiError::OutsideValidity {
            at: now.to_string(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    if cert.is_ca() {
        return Err(untrusted("it is a CA certificate, not a node certificate"));
    }
    let mut sm2_public_key = None;
    for ext in cert.extensions() {
        if oid_is(&ext.oid, SM2_KEY_EXTENSION_OID) {
            let point = point_of(&SM2_SPKI_PREFIX, ext.value)
                .ok_or_else(|| untrusted("its SM2 key extension is not an uncompressed sm2p256v1 key"))?;
            check_sm2(point).map_err(|e| untrusted(e.to_string()))?;
            if sm2_public_key.replace(point.to_vec()).is_some() {
                return Err(untrusted("it has two SM2 key extensions"));
            }
        } else if ext.critical && !KNOWN_CRITICAL.iter().any(|k| oid_is(&ext.oid, k)) {
            return Err(untrusted(format!("it has an unknown critical extension {}", ext.oid)));
        }
    }

    let identity = identity_from_cert_der(cert_der)?;
    let point = point_of(&P256_SPKI_PREFIX, cert.public_key().raw)
        .ok_or_else(|| untrusted("its key is not an uncompressed ECDSA P-256 key"))?;
    check_p256(point).map_err(|e| untrusted(e.to_string()))?;
    let valid_until_unix = validity.not_after.timestamp();
    Ok(VerifiedPeer { identity, tls_public_key: point.to_vec(), sm2_public_key, valid_until_unix })
}

/// The consortium CA's P-256 verifying key, from its certificate (which must be a CA's).
pub(super) fn ca_key<'a>(ca: &X509Certificate<'a>) -> Result<p256::ecdsa::VerifyingKey, PkiError> {
    if !ca.is_ca() {
        return Err(PkiError::Parse { what: "CA certificate", reason: "it is not a CA certificate".into() });
    }
    let ca_point = point_of(&P256_SPKI_PREFIX, ca.public_key().raw).ok_or_else(|| PkiError::Parse {
        what: "CA certificate",
        reason: "its key is not ECDSA P-256".into(),
    })?;
    p256::ecdsa::VerifyingKey::from_sec1_bytes(ca_point)
        .map_err(|e| PkiError::Parse { what: "CA certificate", reason: e.to_string() })
}

/// Why [`check_ecdsa_p256_sha256`] refused a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SigFailure {
    /// Another algorithm, parameters, or an inner identifier that differs from the outer one.
    Algorithm,
    /// The signature is not a DER ECDSA signature.
    NotDer,
    /// The signature does not verify.
    DoesNotVerify,
}

impl SigFailure {
    /// Why a certificate or revocation list is not the consortium CA's.
    pub(super) fn ca_reason(self) -> &'static str {
        match self {
            SigFailure::Algorithm => "it is not signed with ECDSA P-256 and SHA-256",
            SigFailure::NotDer => "its signature is not a DER ECDSA signature",
            SigFailure::DoesNotVerify => "its signature does not verify under the consortium CA key",
        }
    }
}

/// Checks an ECDSA P-256 SHA-256 signature (DER) over `signed` by `key`: the algorithm identifiers
/// (outer and, for certificates and CRLs, the one inside the signed part) must both be
/// ecdsa-with-SHA256 without parameters.
pub(super) fn check_ecdsa_p256_sha256(
    key: &p256::ecdsa::VerifyingKey,
    alg: &x509_parser::x509::AlgorithmIdentifier<'_>,
    inner_alg: Option<&x509_parser::x509::AlgorithmIdentifier<'_>>,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), SigFailure> {
    if !oid_is(&alg.algorithm, ECDSA_SHA256)
        || alg.parameters.is_some()
        || inner_alg.is_some_and(|a| a != alg)
    {
        return Err(SigFailure::Algorithm);
    }
    p256::ecdsa::Signature::from_der(signature).map_err(|_| SigFailure::NotDer)?;
    // Verified with ring (about 9x faster here than the p256 crate, see `suite.rs`): a participant checks
    // every roster certificate it has not seen before, 50 of them in its first round of a 50-member cohort.
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        key.to_sec1_point(false),
    )
    .verify(signed, signature)
    .map_err(|_| SigFailure::DoesNotVerify)
}

/// Parses `cert_der` and checks only that the consortium CA issued it: issuer name and signature. Not
/// its validity period, extensions or identity ([`verify_node_cert`] does those).
pub(super) fn check_signed_by_ca<'a>(
    ca_cert_der: &[u8],
    cert_der: &'a [u8],
) -> Result<X509Certificate<'a>, PkiError> {
    let ca = parse(ca_cert_der, "CA certificate")?;
    let cert = parse(cert_der, "peer certificate")?;
    let key = ca_key(&ca)?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(untrusted("its issuer is not the consortium CA"));
    }
    check_ecdsa_p256_sha256(
        &key,
        &cert.signature_algorithm,
        Some(&cert.tbs_certificate.signature),
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    )
    .map_err(|f| untrusted(f.ca_reason()))?;
    Ok(cert)
}

/// Remembers certificates [`verify_node_cert`] accepted, so that a roster seen every round costs a hash
/// per member instead of a signature verification. An entry is used only while the certificate is still
/// valid at the time asked about; a certificate that failed is never cached. Holds at most `capacity`
/// entries (it forgets everything when full: rosters are re-verified once).
#[derive(Debug)]
pub struct VerifiedCertCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], VerifiedPeer>>,
    capacity: usize,
}

impl VerifiedCertCache {
    /// An empty cache of at most `capacity` certificates.
    pub fn new(capacity: usize) -> Self {
        Self { entries: std::sync::Mutex::new(std::collections::HashMap::new()), capacity: capacity.max(1) }
    }

    /// [`verify_node_cert`], answered from the cache when this CA already accepted this certificate and
    /// it is still valid at `at`.
    pub fn verify(
        &self,
        ca_cert_der: &[u8],
        cert_der: &[u8],
        at: SystemTime,
    ) -> Result<VerifiedPeer, PkiError> {
        use sha2_11::Digest;
        let mut h = sha2_11::Sha256::new();
        h.update((ca_cert_der.len() as u64).to_le_bytes());
        h.update(ca_cert_der);
        h.update(cert_der);
        let key: [u8; 32] = h.finalize().into();
        let now = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        // The lock guards a map operation only; a poisoned map is still a valid cache.
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = entries.get(&key).filter(|p| now < p.valid_until_unix) {
            return Ok(peer.clone());
        }
        drop(entries);
        let peer = verify_node_cert(ca_cert_der, cert_der, at)?;
        entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, peer.clone());
        Ok(peer)
    }
}

#[cfg(test)]
mod tests;
