//! The consortium's public-key infrastructure: one CA per consortium, one certificate per node.
//!
//! A node's identity is the `urn:hearth:<role>:<id>` URI in its certificate's subject alternative names.
//! Services read identity only from there (through [`identity_from_cert_der`]), never from a request.
//! Everything here takes and returns PEM strings; writing files is the caller's business.
//!
//! A receiver of signed protocol messages checks the sender's certificate with [`verify_node_cert`]: it
//! returns the identity and the verifying key of the suite's protocol signatures (the certificate's own
//! P-256 key under the international suite, an SM2 key in a Hearth extension under the national suite;
//! see [`SM2_KEY_EXTENSION_OID`]).
//!
//! Node certificates live [`DEFAULT_LIFETIME_DAYS`] days by default (at most [`MAX_LIFETIME_DAYS`]),
//! starting [`CLOCK_SKEW`] before they are signed; the CA certificate ten years. A node can enrol without
//! its private key ever leaving it: it makes a certificate request with [`CertRequest::generate`], and the
//! CA checks it with [`CertRequest::parse_and_verify`] and signs it with [`ConsortiumCa::sign_request`].
//! The CA withdraws certificates in a signed revocation list ([`ConsortiumCa::sign_crl`]); a node checks
//! one with [`RevocationList::verify`] and asks it [`RevocationList::is_revoked`].

mod crl;
mod peer;
mod request;

pub use crl::{
    crl_der_from_pem, RevocationList, RevocationReason, RevokedEntry, UnknownReason, CRL_VALIDITY,
};
pub use peer::{
    cert_der_from_pem, public_key_of_cert_der, verify_node_cert, IssueOptions, VerifiedCertCache,
    VerifiedPeer, SM2_KEY_EXTENSION_OID, SM2_KEY_EXTENSION_OID_STR,
};
pub use request::{
    possession_message, CertRequest, KeystoreRequestKey, Sm2Possession, VerifiedRequest,
    SM2_POSSESSION_DOMAIN, SM2_POSSESSION_EXTENSION_OID, SM2_POSSESSION_EXTENSION_OID_STR,
};

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;

/// Errors of the PKI.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A node id does not follow the rules (1 to 64 of `[a-z0-9._-]`, starting with a letter or digit).
    #[error("invalid node id {id:?}: {reason}")]
    InvalidId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A role name is not one of coordinator, participant, operator, app.
    #[error("unknown role {0:?}: expected coordinator, participant, operator or app")]
    UnknownRole(String),
    /// Generating or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A PEM or DER input could not be parsed.
    #[error("could not parse {what}: {reason}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A certificate carries no Hearth identity, or more than one.
    #[error("certificate carries no usable Hearth identity: {0}")]
    NoIdentity(String),
    /// A certificate was not issued by the consortium CA, or is not acceptable as a node certificate
    /// (a CA certificate, an unsupported algorithm, an unknown critical extension): a peer from another
    /// consortium, a forged or altered certificate.
    #[error("certificate is not trusted: {0}")]
    Untrusted(String),
    /// The certificate is expired or not yet valid at the time of the check.
    #[error("certificate is not valid at {at} (valid from {not_before} to {not_after})")]
    OutsideValidity {
        /// The time of the check.
        at: String,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// The certificate carries no verifying key for this suite's protocol signatures: under the national
    /// suite, it was issued without the SM2 key extension.
    #[error("certificate carries no {0} protocol signing key")]
    NoProtocolKey(crate::suite::SuiteId),
    /// A public key given to the CA is not a valid key of the expected curve.
    #[error("invalid {what}: {reason}")]
    InvalidKey {
        /// Which key.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A certificate lifetime outside 1 to [`MAX_LIFETIME_DAYS`] days was asked for.
    #[error("a certificate lifetime of {0} days is outside 1 to {MAX_LIFETIME_DAYS} days")]
    InvalidLifetime(u32),
    /// A certificate request is not one Hearth makes: an unexpected extension or attribute, no Hearth
    /// identity or more than one, a malformed name, an SM2 key without its proof of possession.
    #[error("certificate request refused: {0}")]
    BadRequest(String),
    /// A certificate request's self-signature does not verify under the key it carries: it was altered
    /// after signing, or whoever made it does not hold the private key.
    #[error("the certificate request's signature does not verify under its own public key (altered, or made without the private key)")]
    RequestSignature,
    /// The SM2 key in a certificate request comes without a valid proof that its holder made the request:
    /// the proof was copied from another request, or made with another key.
    #[error("the certificate request's SM2 key proof does not verify: {0}")]
    Sm2Possession(String),
    /// A request (or a certificate being renewed) asks for another identity than the one the CA operator
    /// verified: both are named.
    #[error("the request asks for {requested}, but the identity verified out of band is {expected}")]
    IdentityMismatch {
        /// What the request asks for.
        requested: String,
        /// What the CA operator stated.
        expected: String,
    },
    /// A revocation list is malformed or not one the consortium CA signs (no CRL number, no next update,
    /// an unknown critical extension, a version other than 2).
    #[error("revocation list refused: {0}")]
    BadCrl(String),
}

/// What a node is allowed to do, fixed in its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs rounds and aggregates.
    Coordinator,
    /// An institution's node: trains and serves.
    Participant,
    /// The consortium operator: submits jobs, reads status.
    Operator,
    /// A customer-service application calling inference.
    App,
    /// A data protection officer: sets the privacy policy, reads budgets.
    Dpo,
    /// An analyst: runs federated analytics queries, charged to the privacy budget.
    Analyst,
    /// An institution's inference replica (`hearth inference`): fetches the models its participant
    /// serves and answers the institution's apps; holds no customer or training data.
    Inference,
    /// A contact-centre agent of one institution: works the desk's queues (claims conversations,
    /// replies, transfers, closes); sees only the context the retention policy keeps.
    Agent,
}

impl Role {
    /// The lower-case name used in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Participant => "participant",
            Role::Operator => "operator",
            Role::App => "app",
            Role::Dpo => "dpo",
            Role::Analyst => "analyst",
            Role::Inference => "inference",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "coordinator" => Ok(Role::Coordinator),
            "participant" => Ok(Role::Participant),
            "operator" => Ok(Role::Operator),
            "app" => Ok(Role::App),
            "dpo" => Ok(Role::Dpo),
            "analyst" => Ok(Role::Analyst),
            "inference" => Ok(Role::Inference),
            "agent" => Ok(Role::Agent),
            other => Err(PkiError::UnknownRole(other.to_string())),
        }
    }
}

/// Who a peer is, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// Its role.
    pub role: Role,
    /// Its id, unique within the role (and the institution, when it has one).
    pub id: String,
    /// The institution an app, DPO, operator or inference replica acts for (a participant's id), from a second SAN URI
    /// `urn:hearth:institution:<id>`; `None` for consortium roles (the consortium's operator and DPO)
    /// and for the coordinator and participants themselves.
    pub institution: Option<String>,
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.id)?;
        match &self.institution {
            Some(i) => write!(f, "@{i}"),
            None => Ok(()),
        }
    }
}

impl NodeIdentity {
    /// Whether this caller acts for `institution` (never true of a consortium role).
    pub fn acts_for(&self, institution: &str) -> bool {
        self.institution.as_deref() == Some(institution)
    }
}

/// The roles a certificate may bind to one institution.
pub const INSTITUTION_ROLES: [Role; 5] = [Role::App, Role::Dpo, Role::Operator, Role::Inference, Role::Agent];

/// Checks a node id: 1 to 64 characters of `[a-z0-9._-]`, starting with a letter or digit.
pub fn validate_node_id(id: &str) -> Result<(), PkiError> {
    let bad = |reason| Err(PkiError::InvalidId { id: id.chars().take(80).collect(), reason });
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
        return bad("only a-z, 0-9, '.', '_' and '-' are allowed");
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    Ok(())
}

const URI_PREFIX: &str = "urn:hearth:";
/// The SAN URI binding an app, DPO or operator certificate to one institution.
const INSTITUTION_URI_PREFIX: &str = "urn:hearth:institution:";

fn gen_err(e: impl fmt::Display) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// A certificate and its private key, as PEM.
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8), wiped from memory on drop.
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// The consortium's certificate authority.
pub struct ConsortiumCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: Zeroizing<String>,
}

impl fmt::Debug for ConsortiumCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsortiumCa").field("cert_pem", &self.cert_pem).field("key", &"[redacted]").finish()
    }
}

impl ConsortiumCa {
    /// Generates a new CA (ECDSA P-256, valid ten years from now, may sign only end-entity certificates
    /// and revocation lists).
    pub fn generate(consortium_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, consortium_name);
        dn.push(DnType::OrganizationName, "Hearth consortium");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::from(SystemTime::now());
        params.not_before = now;
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Loads a CA written by [`ConsortiumCa::cert_pem`] and [`ConsortiumCa::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let ca = Self {
            cert_pem: cert_pem.to_string(),
            cert_der: pem_to_der(cert_pem, "CA certificate")?,
            key_pem: Zeroizing::new(key_pem.to_string()),
        };
        // Fail now, not at the first issue, if the pair is unusable.
        ca.issuer()?;
        Ok(ca)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)
            .map_err(|e| PkiError::Parse { what: "CA private key", reason: e.to_string() })?;
        Issuer::from_ca_cert_der(&self.cert_der.clone().into(), key)
            .map_err(|e| PkiError::Parse { what: "CA certificate", reason: e.to_string() })
    }

    /// The CA certificate, to distribute to every node.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA private key: keep it offline.
    pub fn key_pem(&self) -> Zeroizing<String> {
        self.key_pem.clone()
    }

    /// Issues a node certificate (ECDSA P-256, valid [`DEFAULT_LIFETIME_DAYS`] days) naming `role` and `id`,
    /// usable for both
    /// TLS client and server authentication, valid for the given DNS names and IP addresses. The same as
    /// [`ConsortiumCa::issue_with`] with default options.
    pub fn issue(
        &self,
        role: Role,
        id: &str,
        dns_names: &[String],
        ip_addrs: &[IpAddr],
    ) -> Result<IssuedCert, PkiError> {
        self.issue_with(role, id, dns_names, ip_addrs, &IssueOptions::default())
    }
}

/// The default lifetime of a node certificate. Short, so that a key that leaks or an institution that
/// leaves stops being trusted within weeks even where the revocation list is not consulted; long enough
/// that renewing is a quarterly chore, not a weekly one.
pub const DEFAULT_LIFETIME_DAYS: u32 = 90;
/// The longest lifetime a node certificate may be given (the ceiling public TLS certificates once had).
pub const MAX_LIFETIME_DAYS: u32 = 825;
/// How far before its signing a certificate starts to be valid: a node whose clock is a little behind
/// the CA's accepts a certificate issued a minute ago.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The CA certificate's lifetime: ten years (of 365.25 days).
const CA_LIFETIME: Duration = Duration::from_secs(3_652 * 24 * 3_600 + 12 * 3_600);

/// A fresh serial number: 16 random bytes, positive and of fixed length. Random rather than derived
/// from the key (rcgen's default) so that a certificate renewed for the same key has a serial of its
/// own, and revoking one never revokes the other.
fn random_serial() -> Result<rcgen::SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    crate::suite::fill_random(&mut bytes).map_err(gen_err)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// Checks `identity`'s id, institution and role (only app, DPO, operator and inference certificates act
/// for an institution, and an inference certificate must) and returns its subject alternative names: the identity URI (and institution URI), then
/// the DNS names and IP addresses.
fn identity_sans(
    role: Role,
    id: &str,
    institution: Option<&str>,
    dns_names: &[String],
    ip_addrs: &[IpAddr],
) -> Result<Vec<SanType>, PkiError> {
    validate_node_id(id)?;
    if let Some(i) = institution {
        validate_node_id(i)?;
        if !INSTITUTION_ROLES.contains(&role) {
            return Err(PkiError::InvalidId {
                id: id.to_string(),
                reason: "only app, dpo, operator, inference and agent certificates act for an institution",
            });
        }
    } else if role == Role::Inference {
        return Err(PkiError::InvalidId {
            id: id.to_string(),
            reason: "an inference certificate serves one institution: name it (--institution)",
        });
    } else if role == Role::Agent {
        return Err(PkiError::InvalidId {
            id: id.to_string(),
            reason: "an agent certificate works one institution's queues: name it (--institution)",
        });
    }
    let uri = format!("{URI_PREFIX}{role}:{id}");
    let mut sans = vec![SanType::URI(uri.try_into().map_err(gen_err)?)];
    if let Some(i) = institution {
        sans.push(SanType::URI(format!("{INSTITUTION_URI_PREFIX}{i}").try_into().map_err(gen_err)?));
    }
    for d in dns_names {
        sans.push(SanType::DnsName(
            d.clone().try_into().map_err(|e| PkiError::Generate(format!("invalid DNS name {d:?}: {e}")))?,
        ));
    }
    sans.extend(ip_addrs.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(sans)
}

/// The subject name of a node certificate (and request): its id, and its role as the unit. Informative
/// only: identity is read from the SAN URI.
fn node_dn(role: Role, id: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn
}

/// The parameters of a node certificate: identity URI, names, a random serial, validity from
/// [`CLOCK_SKEW`] ago for `lifetime_days` days, key usages.
fn node_params(
    role: Role,
    id: &str,
    dns_names: &[String],
    ip_addrs: &[IpAddr],
    institution: Option<&str>,
    lifetime_days: u32,
) -> Result<CertificateParams, PkiError> {
    if !(1..=MAX_LIFETIME_DAYS).contains(&lifetime_days) {
        return Err(PkiError::InvalidLifetime(lifetime_days));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name = node_dn(role, id);
    params.subject_alt_names = identity_sans(role, id, institution, dns_names, ip_addrs)?;
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let now = time::OffsetDateTime::from(SystemTime::now());
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + Duration::from_secs(u64::from(lifetime_days) * 24 * 3_600);
    Ok(params)
}

fn pem_to_der(pem: &str, what: &'static str) -> Result<Vec<u8>, PkiError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::Parse { what, reason: e.to_string() })?;
    if block.label != "CERTIFICATE" {
        return Err(PkiError::Parse {
            what,
            reason: format!("PEM block is {:?}, not CERTIFICATE", block.label),
        });
    }
    Ok(block.contents)
}

/// The secret scalar of a node's P-256 private key (PKCS#8 PEM, as `hearth pki` writes it): the node's
/// international protocol signing key, whose public half its certificate carries.
pub fn p256_secret_from_pem(key_pem: &str) -> Result<crate::suite::SecretBytes, PkiError> {
    use p256::pkcs8::DecodePrivateKey;
    let (_, block) = x509_parser::pem::parse_x509_pem(key_pem.as_bytes())
        .map_err(|e| PkiError::Parse { what: "private key", reason: e.to_string() })?;
    if block.label != "PRIVATE KEY" {
        return Err(PkiError::Parse {
            what: "private key",
            reason: format!("PEM block is {:?}, not PRIVATE KEY (PKCS#8)", block.label),
        });
    }
    let key = Zeroizing::new(block.contents);
    let secret = p256::SecretKey::from_pkcs8_der(&key)
        .map_err(|e| PkiError::InvalidKey { what: "P-256 private key", reason: e.to_string() })?;
    crate::suite::SecretBytes::from_slice("P-256 private key", &secret.to_bytes())
        .map_err(|e| PkiError::InvalidKey { what: "P-256 private key", reason: e.to_string() })
}

/// Reads the Hearth identity from a DER certificate: exactly one `urn:hearth:<role>:<id>` SAN URI.
pub fn identity_from_cert_der(der: &[u8]) -> Result<NodeIdentity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::Parse { what: "peer certificate", reason: e.to_string() })?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse { what: "subject alternative names", reason: e.to_string() })?
        .ok_or_else(|| PkiError::NoIdentity("no subject alternative names".into()))?;
    identity_from_general_names(&san.value.general_names)
}

/// The Hearth identity among subject alternative names (of a certificate or a request).
fn identity_from_general_names(
    names: &[x509_parser::extensions::GeneralName<'_>],
) -> Result<NodeIdentity, PkiError> {
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with(URI_PREFIX) => Some(*u),
            _ => None,
        })
        .collect();
    let (institutions, uris): (Vec<&str>, Vec<&str>) =
        uris.into_iter().partition(|u| u.starts_with(INSTITUTION_URI_PREFIX));
    let institution = match institutions.as_slice() {
        [] => None,
        [one] => {
            let i = &one[INSTITUTION_URI_PREFIX.len()..];
            validate_node_id(i)?;
            Some(i.to_string())
        }
        more => {
            return Err(PkiError::NoIdentity(format!(
                "{} institution URIs, expected at most one",
                more.len()
            )))
        }
    };
    let [uri] = uris.as_slice() else {
        return Err(PkiError::NoIdentity(format!("{} urn:hearth: URIs, expected exactly one", uris.len())));
    };
    let rest = &uri[URI_PREFIX.len()..];
    let (role, id) =
        rest.split_once(':').ok_or_else(|| PkiError::NoIdentity(format!("malformed URI {uri:?}")))?;
    let role: Role = role.parse()?;
    validate_node_id(id)?;
    if institution.is_some() && !INSTITUTION_ROLES.contains(&role) {
        return Err(PkiError::NoIdentity(format!("a {role} certificate may not act for an institution")));
    }
    Ok(NodeIdentity { role, id: id.to_string(), institution })
}

/// What the CA's tools need to know of a certificate it issued: its serial, validity and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number, big-endian, without leading zero bytes (as [`RevocationList`] compares them).
    pub serial: Vec<u8>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Its Hearth identity.
    pub identity: NodeIdentity,
    /// The SM2 protocol key the CA embedded (national suite; SEC1 uncompressed), if any; not checked as
    /// a key (see [`verify_node_cert`] for that).
    pub sm2_public_key: Option<Vec<u8>>,
}

impl CertInfo {
    /// The serial number in lower-case hex, as `revoked.json` and the issuance log write it.
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }
}

/// A serial number as compared everywhere: big-endian, without the leading zero bytes DER may add.
fn normalize_serial(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    raw[start..].to_vec()
}

fn asn1_to_system_time(t: x509_parser::time::ASN1Time, what: &'static str) -> Result<SystemTime, PkiError> {
    let secs = u64::try_from(t.timestamp())
        .map_err(|_| PkiError::Parse { what, reason: format!("{t} is before 1970") })?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Checks that `cert_der` was signed by the consortium CA `ca_cert_der` and describes it, whatever its
/// validity period: the CA revokes and renews certificates that may have expired already.
pub fn inspect_issued_cert(ca_cert_der: &[u8], cert_der: &[u8]) -> Result<CertInfo, PkiError> {
    let cert = peer::check_signed_by_ca(ca_cert_der, cert_der)?;
    let validity = cert.validity();
    Ok(CertInfo {
        serial: normalize_serial(cert.raw_serial()),
        not_before: asn1_to_system_time(validity.not_before, "certificate validity")?,
        not_after: asn1_to_system_time(validity.not_after, "certificate validity")?,
        identity: identity_from_cert_der(cert_der)?,
        sm2_public_key: cert
            .extensions()
            .iter()
            .find(|e| peer::oid_is(&e.oid, SM2_KEY_EXTENSION_OID))
            .and_then(|e| peer::point_of(&peer::SM2_SPKI_PREFIX, e.value))
            .map(<[u8]>::to_vec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        pem_to_der(pem, "test").unwrap()
    }

    #[test]
    fn an_app_certificate_carries_the_institution_it_acts_for() {
        let ca = ConsortiumCa::generate("c").unwrap();
        let opts = IssueOptions { institution: Some("bank-a".into()), ..Default::default() };
        let c = ca.issue_with(Role::App, "crm", &[], &[], &opts).unwrap();
        let id = identity_from_cert_der(&der(&c.cert_pem)).unwrap();
        assert_eq!(id.institution.as_deref(), Some("bank-a"));
        assert!(id.acts_for("bank-a") && !id.acts_for("airline-b"));
        assert_eq!(id.to_string(), "app:crm@bank-a");
        let replica = ca.issue_with(Role::Inference, "replicas", &["localhost".into()], &[], &opts).unwrap();
        let replica = identity_from_cert_der(&der(&replica.cert_pem)).unwrap();
        assert_eq!(replica.to_string(), "inference:replicas@bank-a");
        let e = ca.issue(Role::Inference, "replicas", &[], &[]).unwrap_err().to_string();
        assert!(e.contains("--institution"), "{e}");
        // Consortium roles act for no institution; a participant or coordinator cannot be given one.
        let op =
            identity_from_cert_der(&der(&ca.issue(Role::Operator, "operator", &[], &[]).unwrap().cert_pem));
        assert!(!op.unwrap().acts_for("bank-a"));
        for role in [Role::Participant, Role::Coordinator, Role::Analyst] {
            assert!(ca.issue_with(role, "x", &[], &[], &opts).is_err(), "{role}");
        }
    }

    #[test]
    fn issued_certificates_carry_their_identity() {
        let ca = ConsortiumCa::generate("test").unwrap();
        for role in
            [Role::Coordinator, Role::Participant, Role::Operator, Role::App, Role::Dpo, Role::Analyst]
        {
            let c = ca.issue(role, "bank-a.1", &["localhost".into()], &[[127, 0, 0, 1].into()]).unwrap();
            let id = identity_from_cert_der(&der(&c.cert_pem)).unwrap();
            assert_eq!(id, NodeIdentity { role, id: "bank-a.1".into(), institution: None });
            assert_eq!(id.to_string(), format!("{role}:bank-a.1"));
        }
    }

    #[test]
    fn a_reloaded_ca_issues_certificates() {
        let ca = ConsortiumCa::generate("test").unwrap();
        let again = ConsortiumCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        let c = again.issue(Role::App, "app", &[], &[]).unwrap();
        assert_eq!(identity_from_cert_der(&der(&c.cert_pem)).unwrap().role, Role::App);
        assert!(ConsortiumCa::from_pem("garbage", &ca.key_pem()).is_err());
        assert!(ConsortiumCa::from_pem(&ca.cert_pem(), "garbage").is_err());
    }

    #[test]
    fn invalid_ids_are_rejected() {
        let ca = ConsortiumCa::generate("test").unwrap();
        for bad in ["Bank A", "", &"a".repeat(65), "../x", "-x", "a:b", "é"] {
            assert!(validate_node_id(bad).is_err(), "{bad:?}");
            assert!(ca.issue(Role::Participant, bad, &[], &[]).is_err(), "{bad:?}");
        }
        for good in ["a", "bank-a", "inst_1.eu", &"a".repeat(64)] {
            validate_node_id(good).unwrap();
        }
    }

    #[test]
    fn certificates_without_identity_are_rejected() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let plain = params.self_signed(&key).unwrap();
        assert!(matches!(identity_from_cert_der(plain.der()), Err(PkiError::NoIdentity(_))));
        assert!(identity_from_cert_der(b"not a certificate").is_err());
    }

    #[test]
    fn a_node_key_signs_what_its_certificate_verifies() {
        use crate::suite::SuiteId;
        let ca = ConsortiumCa::generate("test").unwrap();
        let node = ca.issue(Role::Participant, "bank-a", &[], &[]).unwrap();
        let secret = p256_secret_from_pem(&node.key_pem).unwrap();
        let der = cert_der_from_pem(&node.cert_pem).unwrap();
        let ca_der = cert_der_from_pem(&ca.cert_pem()).unwrap();
        let peer = verify_node_cert(&ca_der, &der, SystemTime::now()).unwrap();
        let sig = SuiteId::International.suite().sign(&secret, b"round 1").unwrap();
        let key = peer.protocol_key(SuiteId::International).unwrap();
        SuiteId::International.suite().verify(key, b"round 1", &sig).unwrap();
        assert!(p256_secret_from_pem(&node.cert_pem).is_err(), "a certificate is not a key");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let ca = ConsortiumCa::generate("test").unwrap();
        let c = ca.issue(Role::App, "app", &[], &[]).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
        assert!(!format!("{c:?}").contains("PRIVATE"));
    }

    #[test]
    fn roles_parse_and_print() {
        for r in ["coordinator", "participant", "operator", "app"] {
            assert_eq!(r.parse::<Role>().unwrap().to_string(), r);
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
