//! The consortium's certificate revocation list: an X.509 v2 CRL signed by the CA key.
//!
//! The CA signs a list with [`ConsortiumCa::sign_crl`] after every revocation, and again before its
//! `nextUpdate` ([`CRL_VALIDITY`] after its `thisUpdate`) even when nothing changed, each time with a
//! larger CRL number. A node checks a list with [`RevocationList::verify`] (signed by the consortium CA,
//! well formed) and then asks it [`RevocationList::is_revoked`] for each certificate it is about to
//! trust. Keeping the list current is the node's business: `verify` reports `nextUpdate`
//! ([`RevocationList::next_update`], [`RevocationList::is_stale`]) and does not refuse a stale list, so
//! that a node that could not fetch a fresh one still refuses what the last one revoked. A node should
//! also keep the highest CRL number it accepted and refuse a smaller one (an old list replayed to
//! un-revoke a certificate).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use x509_parser::asn1_rs::{Any, FromDer};

use super::peer::{ca_key, check_ecdsa_p256_sha256, oid_is, parse};
use super::{asn1_to_system_time, gen_err, normalize_serial, ConsortiumCa, PkiError, CLOCK_SKEW};

/// How long a revocation list is current: its `nextUpdate` is this long after its `thisUpdate`. A week,
/// so that a CA refreshing it weekly (`hearth pki crl`) never leaves nodes with a stale one.
pub const CRL_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3_600);

/// Extensions a CRL may mark critical: the issuing distribution point (RFC 5280, 5.2.5).
const KNOWN_CRITICAL_CRL: [&[u64]; 1] = [&[2, 5, 29, 28]];

/// Why a certificate was revoked (the RFC 5280 reason codes Hearth uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    /// No reason given (written as no reason code, as RFC 5280 asks).
    Unspecified,
    /// The private key leaked or may have.
    KeyCompromise,
    /// A newer certificate replaces it (a renewal, a new key).
    Superseded,
    /// The node or institution left the consortium.
    CessationOfOperation,
}

impl RevocationReason {
    /// The name used on the command line and in `revoked.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
        }
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason name that is not one of [`RevocationReason`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown revocation reason {0:?}: expected key-compromise, superseded, cessation-of-operation or unspecified")]
pub struct UnknownReason(pub String);

impl FromStr for RevocationReason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RevocationReason::Unspecified,
            RevocationReason::KeyCompromise,
            RevocationReason::Superseded,
            RevocationReason::CessationOfOperation,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

/// One revoked certificate, as the CA lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Its serial number, big-endian (leading zero bytes are ignored).
    pub serial: Vec<u8>,
    /// When the CA revoked it.
    pub revoked_at: SystemTime,
    /// Why.
    pub reason: RevocationReason,
}

impl ConsortiumCa {
    /// Signs a revocation list numbered `number` (larger than every list signed before: the caller keeps
    /// the count) listing `entries`, current from `this_update` for [`CRL_VALIDITY`]. Returns it as PEM
    /// (`X509 CRL`).
    pub fn sign_crl(
        &self,
        number: u64,
        entries: &[RevokedEntry],
        this_update: SystemTime,
    ) -> Result<String, PkiError> {
        let this_update = time::OffsetDateTime::from(this_update);
        let params = CertificateRevocationListParams {
            this_update,
            next_update: this_update + CRL_VALIDITY,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: entries
                .iter()
                .map(|e| {
                    let serial = normalize_serial(&e.serial);
                    RevokedCertParams {
                        serial_number: SerialNumber::from_slice(if serial.is_empty() {
                            &[0]
                        } else {
                            &serial
                        }),
                        revocation_time: time::OffsetDateTime::from(e.revoked_at),
                        reason_code: Some(e.reason.to_rcgen()),
                        invalidity_date: None,
                    }
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()?).and_then(|crl| crl.pem()).map_err(gen_err)
    }
}

/// The DER of a PEM revocation list (`X509 CRL`, as `hearth pki` writes `crl.pem`).
pub fn crl_der_from_pem(pem: &str) -> Result<Vec<u8>, PkiError> {
    let what = "revocation list";
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::Parse { what, reason: e.to_string() })?;
    if block.label != "X509 CRL" {
        return Err(PkiError::Parse {
            what,
            reason: format!("PEM block is {:?}, not X509 CRL", block.label),
        });
    }
    Ok(block.contents)
}

/// A revocation list that [`RevocationList::verify`] accepted: signed by the consortium CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    number: u64,
    this_update: SystemTime,
    next_update: SystemTime,
    issuer: Vec<u8>,
    revoked: BTreeSet<Vec<u8>>,
}

fn bad(reason: impl Into<String>) -> PkiError {
    PkiError::BadCrl(reason.into())
}

/// The DER of the first element inside the outer SEQUENCE of `der`: the signed part of a CRL.
fn signed_part(der: &[u8]) -> Result<&[u8], PkiError> {
    fn parse_err(e: impl fmt::Display) -> PkiError {
        PkiError::Parse { what: "revocation list", reason: e.to_string() }
    }
    let (_, outer) = Any::from_der(der).map_err(parse_err)?;
    let (after, _) = Any::from_der(outer.data).map_err(parse_err)?;
    Ok(&outer.data[..outer.data.len() - after.len()])
}

impl RevocationList {
    /// Checks a DER revocation list against the consortium CA certificate (DER): version 2, issued by
    /// that CA (issuer name and ECDSA P-256 SHA-256 signature), with a CRL number and a `nextUpdate`, no
    /// unknown critical extension (on the list or an entry), and a `thisUpdate` no later than
    /// [`CLOCK_SKEW`] after `now` (a list from the future means a wrong clock on one side).
    ///
    /// A list past its `nextUpdate` is accepted: see [`RevocationList::is_stale`].
    pub fn verify(ca_cert_der: &[u8], crl_der: &[u8], now: SystemTime) -> Result<Self, PkiError> {
        let ca = parse(ca_cert_der, "CA certificate")?;
        let key = ca_key(&ca)?;
        let (rest, crl) = x509_parser::parse_x509_crl(crl_der)
            .map_err(|e| PkiError::Parse { what: "revocation list", reason: e.to_string() })?;
        if !rest.is_empty() {
            return Err(PkiError::Parse {
                what: "revocation list",
                reason: format!("{} bytes after the list", rest.len()),
            });
        }
        let tbs = &crl.tbs_cert_list;
        if tbs.issuer.as_raw() != ca.subject().as_raw() {
            return Err(PkiError::Untrusted("the revocation list's issuer is not the consortium CA".into()));
        }
        check_ecdsa_p256_sha256(
            &key,
            &crl.signature_algorithm,
            Some(&tbs.signature),
            signed_part(crl_der)?,
            &crl.signature_value.data,
        )
        .map_err(|f| PkiError::Untrusted(format!("revocation list: {}", f.ca_reason())))?;

        if tbs.version.map(|v| v.0) != Some(1) {
            return Err(bad("it is not a version 2 list"));
        }
        for ext in tbs.extensions() {
            if ext.critical && !KNOWN_CRITICAL_CRL.iter().any(|k| oid_is(&ext.oid, k)) {
                return Err(bad(format!("it has an unknown critical extension {}", ext.oid)));
            }
        }
        let number = crl.crl_number().ok_or_else(|| bad("it has no CRL number"))?.to_bytes_be();
        let number = normalize_serial(&number);
        if number.len() > 8 {
            return Err(bad("its CRL number is larger than 2^64"));
        }
        let number = number.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
        let this_update = asn1_to_system_time(tbs.this_update, "revocation list thisUpdate")?;
        let next_update = asn1_to_system_time(
            tbs.next_update.ok_or_else(|| bad("it has no nextUpdate"))?,
            "revocation list nextUpdate",
        )?;
        if next_update <= this_update {
            return Err(bad("its nextUpdate is not after its thisUpdate"));
        }
        if this_update > now + CLOCK_SKEW {
            return Err(bad(format!("its thisUpdate ({}) is in the future", tbs.this_update)));
        }
        let mut revoked = BTreeSet::new();
        for entry in tbs.revoked_certificates.iter() {
            if let Some(ext) = entry.extensions().iter().find(|e| e.critical) {
                return Err(bad(format!(
                    "the entry of serial {} has a critical extension {}",
                    hex::encode(entry.raw_serial()),
                    ext.oid
                )));
            }
            revoked.insert(normalize_serial(entry.raw_serial()));
        }
        Ok(Self { number, this_update, next_update, issuer: ca.subject().as_raw().to_vec(), revoked })
    }

    /// The CRL number: larger in every list the CA signs.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// When the CA signed the list.
    pub fn this_update(&self) -> SystemTime {
        self.this_update
    }

    /// When the CA will have signed the next list at the latest.
    pub fn next_update(&self) -> SystemTime {
        self.next_update
    }

    /// Whether `now` is past the list's `nextUpdate`: a newer list should exist. The list still says
    /// which certificates were revoked when it was signed.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        now > self.next_update
    }

    /// The revoked serial numbers (big-endian, without leading zero bytes).
    pub fn revoked_serials(&self) -> impl Iterator<Item = &[u8]> {
        self.revoked.iter().map(Vec::as_slice)
    }

    /// How many certificates the list revokes.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Whether the list revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// Whether a certificate of this CA with serial number `serial` (big-endian; leading zero bytes are
    /// ignored) is revoked.
    pub fn is_serial_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.contains(&normalize_serial(serial))
    }

    /// Whether the list revokes `cert_der`: a certificate of the same issuer whose serial number it lists.
    /// A certificate of another issuer is not this list's to revoke (false). A certificate that does not
    /// parse counts as revoked: nothing should trust it, and a check that fails open is worse.
    pub fn is_revoked(&self, cert_der: &[u8]) -> bool {
        match x509_parser::parse_x509_certificate(cert_der) {
            Ok((_, cert)) => {
                cert.issuer().as_raw() == self.issuer.as_slice() && self.is_serial_revoked(cert.raw_serial())
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests;
