use std::time::Duration;

use super::*;
use crate::keystore::{Argon2Params, KeyKind, KeyLabel, KeyStore, SealedKeyStore};
use crate::suite::CryptoSuite;

/// A day from now: inside the validity of a certificate issued now (from five minutes ago for 90 days).
fn tomorrow() -> SystemTime {
    SystemTime::now() + Duration::from_secs(24 * 3_600)
}

fn der(pem: &str) -> Vec<u8> {
    cert_der_from_pem(pem).unwrap()
}

fn keystore(suite: SuiteId) -> (SealedKeyStore, KeyLabel) {
    let ks = SealedKeyStore::create(suite, b"pw", Argon2Params::insecure_for_tests()).unwrap();
    let label = KeyLabel::new("node-signing").unwrap();
    ks.generate(&label, KeyKind::Signing).unwrap();
    (ks, label)
}

#[test]
fn international_protocol_signatures_verify_against_the_certificate_key() {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let (ks, label) = keystore(SuiteId::International);
    let public = ks.public_key(&ks.current(&label).unwrap()).unwrap();
    let cert =
        ca.issue_for_key(Role::Participant, "bank-a", &[], &[], &public, &IssueOptions::default()).unwrap();

    let peer = verify_node_cert(&der(&ca.cert_pem()), &der(&cert), tomorrow()).unwrap();
    assert_eq!(
        peer.identity,
        NodeIdentity { role: Role::Participant, id: "bank-a".into(), institution: None }
    );
    assert_eq!(peer.tls_public_key, public);
    let sig = ks.sign(&label, b"round 4: my ephemeral key").unwrap();
    let key = peer.protocol_key(SuiteId::International).unwrap();
    crate::suite::International.verify(key, b"round 4: my ephemeral key", &sig.signature).unwrap();
    assert!(matches!(peer.protocol_key(SuiteId::National), Err(PkiError::NoProtocolKey(SuiteId::National))));
}

#[test]
fn national_protocol_signatures_verify_against_the_embedded_sm2_key() {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let (ks, label) = keystore(SuiteId::National);
    let sm2 = ks.public_key(&ks.current(&label).unwrap()).unwrap();
    let options = IssueOptions { sm2_verifying_key: Some(sm2.clone()), ..Default::default() };
    let issued = ca.issue_with(Role::Participant, "bank-b", &["localhost".into()], &[], &options).unwrap();

    let cert_der = der(&issued.cert_pem);
    let peer = verify_node_cert(&der(&ca.cert_pem()), &cert_der, tomorrow()).unwrap();
    assert_eq!(peer.sm2_public_key.as_deref(), Some(sm2.as_slice()));
    let sig = ks.sign(&label, b"share for bank-c").unwrap();
    crate::suite::National
        .verify(peer.protocol_key(SuiteId::National).unwrap(), b"share for bank-c", &sig.signature)
        .unwrap();
    // The TLS key is the one in the returned PEM.
    let tls = KeyPair::from_pem(&issued.key_pem).unwrap();
    assert_eq!(peer.tls_public_key, tls.public_key_raw());

    // The extension is non-critical, under the documented OID, and holds an SM2 SubjectPublicKeyInfo.
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
    let ext = cert.extensions().iter().find(|e| e.oid.to_id_string() == SM2_KEY_EXTENSION_OID_STR).unwrap();
    assert!(!ext.critical);
    assert_eq!(ext.value, spki(&SM2_SPKI_PREFIX, &sm2));
}

#[test]
fn certificates_from_elsewhere_or_altered_are_refused() {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let ca_der = der(&ca.cert_pem());
    let good = der(&ca.issue(Role::Participant, "bank-a", &[], &[]).unwrap().cert_pem);
    verify_node_cert(&ca_der, &good, tomorrow()).unwrap();

    // Another CA with the same name: the issuer matches, the signature does not.
    let twin = ConsortiumCa::generate("consortium").unwrap();
    let forged = der(&twin.issue(Role::Participant, "bank-a", &[], &[]).unwrap().cert_pem);
    let e = verify_node_cert(&ca_der, &forged, tomorrow()).unwrap_err();
    assert!(matches!(&e, PkiError::Untrusted(m) if m.contains("signature")), "{e}");

    // Another CA under another name.
    let other = ConsortiumCa::generate("other consortium").unwrap();
    let foreign = der(&other.issue(Role::Participant, "bank-a", &[], &[]).unwrap().cert_pem);
    let e = verify_node_cert(&ca_der, &foreign, tomorrow()).unwrap_err();
    assert!(matches!(&e, PkiError::Untrusted(m) if m.contains("issuer")), "{e}");

    // An identity edited after signing.
    let at = good.windows(6).position(|w| w == b"bank-a").unwrap();
    let mut edited = good.clone();
    edited[at + 5] = b'b';
    assert!(matches!(verify_node_cert(&ca_der, &edited, tomorrow()), Err(PkiError::Untrusted(_))));

    // Outside the validity period: before it was issued (less the clock-skew allowance), and after its
    // 90 days.
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3_600);
    for at in [now - Duration::from_secs(6 * 60), now + 91 * day] {
        let e = verify_node_cert(&ca_der, &good, at).unwrap_err();
        assert!(matches!(e, PkiError::OutsideValidity { .. }), "{e}");
    }
    verify_node_cert(&ca_der, &good, now - Duration::from_secs(4 * 60)).unwrap();
    verify_node_cert(&ca_der, &good, now + 89 * day).unwrap();

    // The CA certificate is self-signed, but it is not a node certificate.
    let e = verify_node_cert(&ca_der, &ca_der, tomorrow()).unwrap_err();
    assert!(matches!(&e, PkiError::Untrusted(m) if m.contains("CA certificate")), "{e}");

    // A node certificate is not a CA.
    assert!(matches!(verify_node_cert(&good, &good, tomorrow()), Err(PkiError::Parse { .. })));

    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(verify_node_cert(&ca_der, &trailing, tomorrow()), Err(PkiError::Parse { .. })));
    assert!(verify_node_cert(&ca_der, b"garbage", tomorrow()).is_err());
}

#[test]
fn invalid_keys_are_refused_at_issue() {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let (_, p256) = crate::suite::International.signing_keypair().unwrap();
    let (_, sm2) = crate::suite::National.signing_keypair().unwrap();
    for bad in [vec![4u8; 65], vec![1, 2, 3], p256.clone()] {
        let options = IssueOptions { sm2_verifying_key: Some(bad), ..Default::default() };
        let e = ca.issue_with(Role::Participant, "bank-a", &[], &[], &options).unwrap_err();
        assert!(matches!(e, PkiError::InvalidKey { what: "SM2 verifying key", .. }), "{e}");
    }
    for bad in [vec![4u8; 65], vec![], sm2] {
        let e = ca
            .issue_for_key(Role::Participant, "bank-a", &[], &[], &bad, &IssueOptions::default())
            .unwrap_err();
        assert!(matches!(e, PkiError::InvalidKey { what: "P-256 public key", .. }), "{e}");
    }
    ca.issue_for_key(Role::Participant, "bank-a", &[], &[], &p256, &IssueOptions::default()).unwrap();
}

#[test]
fn lifetimes_are_bounded_and_serials_are_unique() {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let ca_der = der(&ca.cert_pem());
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let years =
        (ca_cert.validity().not_after.timestamp() - ca_cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(years, 3_652, "the CA certificate lives ten years");

    let (_, p256) = crate::suite::International.signing_keypair().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    for days in [1u32, 30, 825] {
        let options = IssueOptions { lifetime_days: days, ..Default::default() };
        let cert = ca.issue_for_key(Role::Participant, "bank-a", &[], &[], &p256, &options).unwrap();
        let info = crate::pki::inspect_issued_cert(&ca_der, &der(&cert)).unwrap();
        let from = info.not_before.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let until = info.not_after.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((now - 300 - from).abs() < 60, "starts five minutes ago");
        assert!((now + i64::from(days) * 86_400 - until).abs() < 60, "{days} days");
    }
    for days in [0u32, 826] {
        let options = IssueOptions { lifetime_days: days, ..Default::default() };
        let e = ca.issue_for_key(Role::Participant, "bank-a", &[], &[], &p256, &options).unwrap_err();
        assert!(matches!(e, PkiError::InvalidLifetime(d) if d == days), "{e}");
    }

    // The same key certified twice gets two serials: revoking one must not revoke the other.
    let serial = |pem: &str| crate::pki::inspect_issued_cert(&ca_der, &der(pem)).unwrap().serial;
    let a = ca.issue_for_key(Role::Participant, "bank-a", &[], &[], &p256, &IssueOptions::default()).unwrap();
    let b = ca.issue_for_key(Role::Participant, "bank-a", &[], &[], &p256, &IssueOptions::default()).unwrap();
    assert_ne!(serial(&a), serial(&b));
    assert_eq!(serial(&a).len(), 16);

    // Inspecting checks the issuer: another CA's certificate is refused.
    let other = ConsortiumCa::generate("consortium").unwrap();
    let foreign = other.issue(Role::Participant, "bank-a", &[], &[]).unwrap().cert_pem;
    assert!(matches!(crate::pki::inspect_issued_cert(&ca_der, &der(&foreign)), Err(PkiError::Untrusted(_))));
}
