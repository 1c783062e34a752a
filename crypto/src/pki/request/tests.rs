use std::time::SystemTime;

use rcgen::{CertificateParams, KeyPair, SanType};

use super::*;
use crate::pki::{cert_der_from_pem, identity_from_cert_der, verify_node_cert};

fn participant(id: &str) -> NodeIdentity {
    NodeIdentity { role: Role::Participant, id: id.into(), institution: None }
}

fn der_of(csr_pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).unwrap().1.contents
}

#[test]
fn a_request_round_trips_and_the_ca_certifies_its_key() {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let req = CertRequest::generate(
        &participant("bank-a"),
        &["bank-a.example.org".into()],
        &[[10, 0, 0, 7].into(), std::net::Ipv6Addr::LOCALHOST.into()],
        SuiteId::International,
    )
    .unwrap();
    assert!(req.sm2_secret.is_none());
    assert!(!format!("{req:?}").contains("PRIVATE KEY"));
    let verified = CertRequest::parse_and_verify(&req.csr_pem).unwrap();
    assert_eq!(verified.identity(), &participant("bank-a"));
    assert_eq!(verified.dns_names(), ["bank-a.example.org".to_string()]);
    assert_eq!(verified.ip_addrs().len(), 2);
    let key = KeyPair::from_pem(&req.key_pem).unwrap();
    assert_eq!(verified.p256_public_key(), key.public_key_raw());

    let cert = ca.sign_request(&verified, &participant("bank-a"), 30).unwrap();
    let cert_der = cert_der_from_pem(&cert).unwrap();
    let peer =
        verify_node_cert(&cert_der_from_pem(&ca.cert_pem()).unwrap(), &cert_der, SystemTime::now()).unwrap();
    assert_eq!(peer.identity, participant("bank-a"));
    assert_eq!(peer.tls_public_key, key.public_key_raw(), "the certificate carries the request's key");
    assert!(peer.sm2_public_key.is_none());
}

#[test]
fn a_national_request_carries_its_sm2_key_with_proof_and_the_certificate_embeds_it() {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let req = CertRequest::generate(&participant("bank-b"), &[], &[], SuiteId::National).unwrap();
    let secret = req.sm2_secret.as_ref().unwrap();
    let national = SuiteId::National.suite();
    let sm2_public = national.verifying_key(secret).unwrap();
    let verified = CertRequest::parse_and_verify(&req.csr_pem).unwrap();
    assert_eq!(verified.sm2_public_key(), Some(sm2_public.as_slice()));

    let cert = ca.sign_request(&verified, &participant("bank-b"), 90).unwrap();
    let peer = verify_node_cert(
        &cert_der_from_pem(&ca.cert_pem()).unwrap(),
        &cert_der_from_pem(&cert).unwrap(),
        SystemTime::now(),
    )
    .unwrap();
    let sig = national.sign(secret, b"round 3").unwrap();
    national.verify(peer.protocol_key(SuiteId::National).unwrap(), b"round 3", &sig).unwrap();

    // Apps and DPOs sign no protocol messages: no SM2 key even under the national suite.
    let app = NodeIdentity { role: Role::App, id: "crm".into(), institution: Some("bank-b".into()) };
    let req = CertRequest::generate(&app, &[], &[], SuiteId::National).unwrap();
    assert!(req.sm2_secret.is_none());
    let verified = CertRequest::parse_and_verify(&req.csr_pem).unwrap();
    assert_eq!(verified.identity(), &app);
    let cert = ca.sign_request(&verified, &app, 90).unwrap();
    assert_eq!(identity_from_cert_der(&cert_der_from_pem(&cert).unwrap()).unwrap(), app);
}

#[test]
fn the_ca_signs_only_the_identity_it_verified() {
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let req = CertRequest::generate(&participant("bank-a"), &[], &[], SuiteId::International).unwrap();
    let verified = CertRequest::parse_and_verify(&req.csr_pem).unwrap();
    for other in [
        participant("bank-b"),
        NodeIdentity { role: Role::Coordinator, id: "bank-a".into(), institution: None },
    ] {
        let e = ca.sign_request(&verified, &other, 90).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PkiError::IdentityMismatch { .. }), "{e}");
        assert!(msg.contains("participant:bank-a") && msg.contains(&other.to_string()), "{msg}");
    }
    assert!(matches!(
        ca.sign_request(&verified, &participant("bank-a"), 0),
        Err(PkiError::InvalidLifetime(0))
    ));
}

#[test]
fn truncated_and_garbage_requests_are_refused() {
    let req = CertRequest::generate(&participant("bank-a"), &[], &[], SuiteId::National).unwrap();
    let der = der_of(&req.csr_pem);
    for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
        let e = CertRequest::verify_der(&der[..cut]).unwrap_err();
        assert!(matches!(e, PkiError::Parse { .. }), "cut at {cut}: {e}");
    }
    let mut trailing = der.clone();
    trailing.push(0);
    assert!(matches!(CertRequest::verify_der(&trailing), Err(PkiError::Parse { .. })));
    for garbage in
        ["", "garbage", "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"]
    {
        assert!(matches!(CertRequest::parse_and_verify(garbage), Err(PkiError::Parse { .. })), "{garbage:?}");
    }
    // A certificate is not a request.
    let ca = ConsortiumCa::generate("c").unwrap();
    let e = CertRequest::parse_and_verify(&ca.cert_pem()).unwrap_err();
    assert!(matches!(&e, PkiError::Parse { reason, .. } if reason.contains("CERTIFICATE")), "{e}");
    // Every single-byte flip is refused (or, if the parser reads it the same, still verifies): no panic.
    for i in 0..der.len() {
        let mut flipped = der.clone();
        flipped[i] ^= 0x01;
        if let Ok(v) = CertRequest::verify_der(&flipped) {
            assert_eq!(v, CertRequest::verify_der(&der).unwrap(), "byte {i} changed what was accepted");
        }
    }
}

#[test]
fn an_altered_request_fails_its_signature() {
    let req = CertRequest::generate(&participant("bank-a"), &[], &[], SuiteId::International).unwrap();
    let der = der_of(&req.csr_pem);
    let at = der.windows(6).position(|w| w == b"bank-a").unwrap();
    let mut edited = der.clone();
    edited[at + 5] = b'b';
    assert!(matches!(CertRequest::verify_der(&edited), Err(PkiError::RequestSignature)));
}

#[test]
fn requests_on_other_curves_or_with_other_content_are_refused() {
    let params = |sans: Vec<SanType>| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = sans;
        p
    };
    let hearth_uri = || SanType::URI("urn:hearth:participant:bank-a".try_into().unwrap());

    // P-384 and Ed25519 keys: not the P-256 key a Hearth node certificate carries.
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = KeyPair::generate_for(alg).unwrap();
        let csr = params(vec![hearth_uri()]).serialize_request(&key).unwrap();
        let e = CertRequest::parse_and_verify(&csr.pem().unwrap()).unwrap_err();
        assert!(matches!(e, PkiError::InvalidKey { what: "P-256 public key", .. }), "{e}");
    }

    let p256 = || KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let refused = |p: CertificateParams| {
        let pem = p.serialize_request(&p256()).unwrap().pem().unwrap();
        CertRequest::parse_and_verify(&pem).unwrap_err()
    };
    // No identity, two identities, a foreign URI, an e-mail name.
    assert!(matches!(refused(params(vec![])), PkiError::BadRequest(_)));
    assert!(matches!(
        refused(params(vec![SanType::DnsName("a.example".try_into().unwrap())])),
        PkiError::NoIdentity(_)
    ));
    let two = vec![hearth_uri(), SanType::URI("urn:hearth:coordinator:c".try_into().unwrap())];
    assert!(matches!(refused(params(two)), PkiError::NoIdentity(_)));
    let foreign = vec![hearth_uri(), SanType::URI("https://example.org/".try_into().unwrap())];
    assert!(matches!(refused(params(foreign)), PkiError::BadRequest(m) if m.contains("https://example.org")));
    let mail = vec![hearth_uri(), SanType::Rfc822Name("a@example.org".try_into().unwrap())];
    assert!(matches!(refused(params(mail)), PkiError::BadRequest(_)));
    // A request for a CA certificate, or with another extension.
    let mut ca = params(vec![hearth_uri()]);
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    assert!(matches!(refused(ca), PkiError::BadRequest(m) if m.contains("2.5.29.19")));
    let mut custom = params(vec![hearth_uri()]);
    custom.custom_extensions.push(CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0]));
    assert!(matches!(refused(custom), PkiError::BadRequest(m) if m.contains("1.2.3.4")));
    // An identity that breaks the id rules.
    let bad_id = vec![SanType::URI("urn:hearth:participant:Bank A".try_into().unwrap())];
    assert!(matches!(refused(params(bad_id)), PkiError::InvalidId { .. }));

    // The accepted shape, made by hand, passes: the refusals above are about their content.
    let ok = params(vec![hearth_uri()]).serialize_request(&p256()).unwrap().pem().unwrap();
    CertRequest::parse_and_verify(&ok).unwrap();
}

#[test]
fn an_sm2_key_needs_its_own_proof() {
    let national = SuiteId::National.suite();
    let (_, victim_sm2) = national.signing_keypair().unwrap();
    let (secret, mine) = national.signing_keypair().unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let request = |sm2: &[u8], proof: Option<Vec<u8>>| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI("urn:hearth:participant:bank-a".try_into().unwrap())];
        let options = IssueOptions { sm2_verifying_key: Some(sm2.to_vec()), ..Default::default() };
        p.custom_extensions.extend(sm2_extension(&options).unwrap());
        if let Some(sig) = proof {
            let mut value = vec![0x04, sig.len() as u8];
            value.extend_from_slice(&sig);
            p.custom_extensions.push(CustomExtension::from_oid_content(SM2_POSSESSION_EXTENSION_OID, value));
        }
        CertRequest::parse_and_verify(&p.serialize_request(&key).unwrap().pem().unwrap())
    };
    let msg = possession_message(key.public_key_raw());
    // Someone else's SM2 key: the proof made with my key does not verify under it.
    let e = request(&victim_sm2, Some(national.sign(&secret, &msg).unwrap())).unwrap_err();
    assert!(matches!(e, PkiError::Sm2Possession(_)), "{e}");
    // No proof at all.
    assert!(matches!(request(&mine, None), Err(PkiError::Sm2Possession(_))));
    // A proof for another P-256 key (copied from another request).
    let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let copied = national.sign(&secret, &possession_message(other.public_key_raw())).unwrap();
    assert!(matches!(request(&mine, Some(copied)), Err(PkiError::Sm2Possession(_))));
    // A proof without the domain tag.
    let untagged = national.sign(&secret, key.public_key_raw()).unwrap();
    assert!(matches!(request(&mine, Some(untagged)), Err(PkiError::Sm2Possession(_))));
    // A malformed proof.
    assert!(matches!(request(&mine, Some(vec![1, 2, 3])), Err(PkiError::BadRequest(_))));
    // The real thing.
    let v = request(&mine, Some(national.sign(&secret, &msg).unwrap())).unwrap();
    assert_eq!(v.sm2_public_key(), Some(mine.as_slice()));
}
