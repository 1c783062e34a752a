use std::time::{Duration, SystemTime};

use super::*;
use crate::pki::{cert_der_from_pem, inspect_issued_cert, Role};

fn der(pem: &str) -> Vec<u8> {
    cert_der_from_pem(pem).unwrap()
}

struct Fixture {
    ca: ConsortiumCa,
    ca_der: Vec<u8>,
    revoked: Vec<u8>,
    kept: Vec<u8>,
}

fn fixture() -> Fixture {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let ca_der = der(&ca.cert_pem());
    let revoked = der(&ca.issue(Role::Participant, "bank-a", &[], &[]).unwrap().cert_pem);
    let kept = der(&ca.issue(Role::Participant, "bank-b", &[], &[]).unwrap().cert_pem);
    Fixture { ca, ca_der, revoked, kept }
}

fn entry(ca_der: &[u8], cert: &[u8], reason: RevocationReason) -> RevokedEntry {
    let serial = inspect_issued_cert(ca_der, cert).unwrap().serial;
    RevokedEntry { serial, revoked_at: SystemTime::now(), reason }
}

#[test]
fn a_signed_list_verifies_and_names_what_it_revokes() {
    let f = fixture();
    let now = SystemTime::now();
    let entries = [
        entry(&f.ca_der, &f.revoked, RevocationReason::KeyCompromise),
        // Serials given with a leading zero byte are the same serial.
        RevokedEntry { serial: vec![0, 0x42], revoked_at: now, reason: RevocationReason::Unspecified },
    ];
    let pem = f.ca.sign_crl(7, &entries, now).unwrap();
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");
    let list = RevocationList::verify(&f.ca_der, &crl_der_from_pem(&pem).unwrap(), now).unwrap();
    assert_eq!(list.number(), 7);
    assert_eq!(list.len(), 2);
    assert!(list.is_revoked(&f.revoked));
    assert!(!list.is_revoked(&f.kept));
    assert!(list.is_serial_revoked(&[0x42]) && list.is_serial_revoked(&[0, 0, 0x42]));
    let secs = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(list.this_update()), secs(now));
    assert_eq!(secs(list.next_update()), secs(now + CRL_VALIDITY));

    // An empty list is a list too (the refresh of a consortium that revoked nothing yet).
    let empty = f.ca.sign_crl(8, &[], now).unwrap();
    let list = RevocationList::verify(&f.ca_der, &crl_der_from_pem(&empty).unwrap(), now).unwrap();
    assert!(list.is_empty() && !list.is_revoked(&f.revoked));
}

#[test]
fn a_stale_list_is_reported_not_refused() {
    let f = fixture();
    let long_ago = SystemTime::now() - Duration::from_secs(30 * 24 * 3_600);
    let pem =
        f.ca.sign_crl(1, &[entry(&f.ca_der, &f.revoked, RevocationReason::Superseded)], long_ago).unwrap();
    let now = SystemTime::now();
    let list = RevocationList::verify(&f.ca_der, &crl_der_from_pem(&pem).unwrap(), now).unwrap();
    assert!(list.is_stale(now) && list.next_update() < now);
    assert!(list.is_revoked(&f.revoked), "a stale list still revokes");
    assert!(!list.is_stale(long_ago + Duration::from_secs(3_600)));

    // A list from the future (beyond the clock-skew allowance) is refused.
    let ahead = now + Duration::from_secs(3_600);
    let pem = f.ca.sign_crl(2, &[], ahead).unwrap();
    let e = RevocationList::verify(&f.ca_der, &crl_der_from_pem(&pem).unwrap(), now).unwrap_err();
    assert!(matches!(&e, PkiError::BadCrl(m) if m.contains("future")), "{e}");
}

#[test]
fn a_list_from_another_ca_is_refused_and_revokes_nothing_of_ours() {
    let f = fixture();
    let now = SystemTime::now();
    // A twin CA under the same name: the issuer matches, the signature does not.
    let twin = ConsortiumCa::generate("consortium").unwrap();
    let forged =
        twin.sign_crl(9, &[entry(&f.ca_der, &f.revoked, RevocationReason::KeyCompromise)], now).unwrap();
    let e = RevocationList::verify(&f.ca_der, &crl_der_from_pem(&forged).unwrap(), now).unwrap_err();
    assert!(matches!(&e, PkiError::Untrusted(m) if m.contains("signature")), "{e}");
    // Another CA under another name.
    let other = ConsortiumCa::generate("other consortium").unwrap();
    let foreign = other.sign_crl(1, &[], now).unwrap();
    let e = RevocationList::verify(&f.ca_der, &crl_der_from_pem(&foreign).unwrap(), now).unwrap_err();
    assert!(matches!(&e, PkiError::Untrusted(m) if m.contains("issuer")), "{e}");
    // The other CA's own list, checked against it, does not revoke our certificates of the same serial.
    let theirs =
        other.sign_crl(2, &[entry(&f.ca_der, &f.revoked, RevocationReason::KeyCompromise)], now).unwrap();
    let other_der = der(&other.cert_pem());
    let list = RevocationList::verify(&other_der, &crl_der_from_pem(&theirs).unwrap(), now).unwrap();
    assert!(list.is_serial_revoked(&inspect_issued_cert(&f.ca_der, &f.revoked).unwrap().serial));
    assert!(!list.is_revoked(&f.revoked), "the issuer differs");
    // A node certificate is not a CA.
    let pem = f.ca.sign_crl(3, &[], now).unwrap();
    let crl = crl_der_from_pem(&pem).unwrap();
    assert!(matches!(RevocationList::verify(&f.kept, &crl, now), Err(PkiError::Parse { .. })));
    // A certificate that does not parse counts as revoked.
    let list = RevocationList::verify(&f.ca_der, &crl, now).unwrap();
    assert!(list.is_revoked(b"not a certificate"));
}

#[test]
fn truncated_altered_and_garbage_lists_are_refused() {
    let f = fixture();
    let now = SystemTime::now();
    let pem =
        f.ca.sign_crl(5, &[entry(&f.ca_der, &f.revoked, RevocationReason::KeyCompromise)], now).unwrap();
    let crl = crl_der_from_pem(&pem).unwrap();
    RevocationList::verify(&f.ca_der, &crl, now).unwrap();
    for cut in [0, 1, 2, 10, crl.len() / 2, crl.len() - 1] {
        assert!(RevocationList::verify(&f.ca_der, &crl[..cut], now).is_err(), "cut at {cut}");
    }
    let mut trailing = crl.clone();
    trailing.push(0);
    assert!(matches!(RevocationList::verify(&f.ca_der, &trailing, now), Err(PkiError::Parse { .. })));
    assert!(RevocationList::verify(&f.ca_der, b"garbage", now).is_err());
    assert!(crl_der_from_pem("garbage").is_err());
    assert!(
        matches!(crl_der_from_pem(&f.ca.cert_pem()), Err(PkiError::Parse { .. })),
        "a certificate is not a CRL"
    );

    // Removing the revoked serial (or changing any signed byte) breaks the signature; no flip panics, and
    // none is accepted with different content.
    let original = RevocationList::verify(&f.ca_der, &crl, now).unwrap();
    for i in 0..crl.len() {
        let mut flipped = crl.clone();
        flipped[i] ^= 0x01;
        if let Ok(list) = RevocationList::verify(&f.ca_der, &flipped, now) {
            assert_eq!(list, original, "byte {i} changed what was accepted");
        }
    }
}

#[test]
fn reasons_parse_and_print() {
    for r in ["key-compromise", "superseded", "cessation-of-operation", "unspecified"] {
        assert_eq!(r.parse::<RevocationReason>().unwrap().to_string(), r);
    }
    let e = "compromised".parse::<RevocationReason>().unwrap_err();
    assert!(e.to_string().contains("key-compromise"), "{e}");
}
