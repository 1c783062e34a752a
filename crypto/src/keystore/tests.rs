//! The behaviour every [`KeyStore`] must show, checked against each backend by its own tests.

use super::*;

pub(crate) fn label(s: &str) -> KeyLabel {
    KeyLabel::new(s).unwrap()
}

/// Generates, uses and rotates one key of each kind in an empty keystore.
pub(crate) fn check_contract(ks: &dyn KeyStore) {
    let suite = ks.suite();
    let s = suite.suite();

    // Signing: generate, sign, verify here and as a peer would, rotate, old signatures still verify.
    let signing = label("node-signing");
    let ev = ks.generate(&signing, KeyKind::Signing).unwrap();
    assert_eq!(
        (ev.action, ev.key.version.get(), ev.previous, ev.kind),
        (KeyAction::Generated, 1, None, KeyKind::Signing)
    );
    assert_eq!(ev.location, ks.location());
    let public = ev.public_key.clone().unwrap();
    assert_eq!(public.len(), 65);
    assert_eq!(ks.public_key(&ev.key).unwrap(), public);
    assert!(matches!(ks.generate(&signing, KeyKind::Signing), Err(KeyStoreError::AlreadyExists { .. })));
    let sig = ks.sign(&signing, b"round 7 keys").unwrap();
    assert_eq!(sig.key, ev.key);
    ks.verify(&sig.key, b"round 7 keys", &sig.signature).unwrap();
    s.verify(&public, b"round 7 keys", &sig.signature).unwrap();
    assert!(matches!(
        ks.verify(&sig.key, b"round 8 keys", &sig.signature),
        Err(KeyStoreError::BadSignature { .. })
    ));
    let rot = ks.rotate(&signing).unwrap();
    assert_eq!(
        (rot.action, rot.key.version.get(), rot.previous),
        (KeyAction::Rotated, 2, Some(KeyVersion::FIRST))
    );
    assert_ne!(rot.public_key.as_ref(), Some(&public));
    let sig2 = ks.sign(&signing, b"round 9").unwrap();
    assert_eq!(sig2.key.version.get(), 2);
    ks.verify(&sig.key, b"round 7 keys", &sig.signature).unwrap();
    assert!(ks.verify(&sig2.key, b"round 7 keys", &sig.signature).is_err(), "v1 signature is not v2's");

    // Audit keys are signing keys too.
    let audit = label("audit");
    ks.generate(&audit, KeyKind::Audit).unwrap();
    let a = ks.sign(&audit, b"tree head").unwrap();
    ks.verify(&a.key, b"tree head", &a.signature).unwrap();

    // Wrapping: bound to the associated data and to the KEK version; old versions unwrap after rotation.
    let kek = label("kek");
    ks.generate(&kek, KeyKind::KeyEncryption).unwrap();
    let dk = DataKey::generate(suite).unwrap();
    let w1 = ks.wrap(&kek, b"object 1", &dk).unwrap();
    assert_eq!(w1.kek.version.get(), 1);
    assert_eq!(ks.unwrap(&w1.kek, b"object 1", &w1.bytes).unwrap(), dk);
    assert!(matches!(ks.unwrap(&w1.kek, b"object 2", &w1.bytes), Err(KeyStoreError::UnwrapFailed { .. })));
    let mut bad = w1.bytes.clone();
    bad[20] ^= 1;
    assert!(matches!(ks.unwrap(&w1.kek, b"object 1", &bad), Err(KeyStoreError::UnwrapFailed { .. })));
    assert!(matches!(
        ks.unwrap(&w1.kek, b"object 1", &w1.bytes[..5]),
        Err(KeyStoreError::UnwrapFailed { .. })
    ));
    ks.rotate(&kek).unwrap();
    let w2 = ks.wrap(&kek, b"object 1", &dk).unwrap();
    assert_eq!(w2.kek.version.get(), 2);
    assert_eq!(ks.unwrap(&w1.kek, b"object 1", &w1.bytes).unwrap(), dk, "old version still unwraps");
    assert!(ks.unwrap(&w2.kek, b"object 1", &w1.bytes).is_err(), "a v1 wrapping does not open as v2");
    let v9 = KeyId { label: kek.clone(), version: KeyVersion::new(9).unwrap() };
    assert!(matches!(
        ks.unwrap(&v9, b"object 1", &w1.bytes),
        Err(KeyStoreError::UnknownVersion { version: 9, .. })
    ));

    // Identity hashing: deterministic per version, different across versions.
    let ih = label("identity-hash");
    ks.generate(&ih, KeyKind::IdentityHash).unwrap();
    let v1 = ks.current(&ih).unwrap();
    let m1 = ks.identity_mac(&v1, &[b"wechat:", b"o6_bmjrPTlm6_2sgVt7hMZOPfL2M"]).unwrap();
    assert_eq!(m1, ks.identity_mac(&v1, &[b"wechat:o6_bmjrPTlm6_2sgVt7hMZOPfL2M"]).unwrap());
    ks.rotate(&ih).unwrap();
    let v2 = ks.current(&ih).unwrap();
    assert_ne!(ks.identity_mac(&v2, &[b"wechat:o6_bmjrPTlm6_2sgVt7hMZOPfL2M"]).unwrap(), m1);
    assert_eq!(ks.identity_mac(&v1, &[b"wechat:o6_bmjrPTlm6_2sgVt7hMZOPfL2M"]).unwrap(), m1);

    // Kinds are enforced, unknown names are precise errors.
    assert!(matches!(ks.sign(&kek, b"x"), Err(KeyStoreError::WrongKind { .. })));
    assert!(matches!(ks.wrap(&signing, b"x", &dk), Err(KeyStoreError::WrongKind { .. })));
    assert!(matches!(ks.public_key(&w1.kek), Err(KeyStoreError::WrongKind { .. })));
    assert!(matches!(ks.identity_mac(&sig.key, &[b"x"]), Err(KeyStoreError::WrongKind { .. })));
    let e = ks.current(&label("nope")).unwrap_err();
    assert!(matches!(e, KeyStoreError::UnknownKey { .. }) && e.to_string().contains("nope"), "{e}");
    assert!(matches!(ks.rotate(&label("nope")), Err(KeyStoreError::UnknownKey { .. })));

    let listed: Vec<(String, u32, KeyKind)> =
        ks.list().unwrap().into_iter().map(|(id, k)| (id.label.to_string(), id.version.get(), k)).collect();
    assert_eq!(
        listed,
        vec![
            ("audit".into(), 1, KeyKind::Audit),
            ("identity-hash".into(), 2, KeyKind::IdentityHash),
            ("kek".into(), 2, KeyKind::KeyEncryption),
            ("node-signing".into(), 2, KeyKind::Signing),
        ]
    );
    assert_eq!(ks.kind(&kek).unwrap(), KeyKind::KeyEncryption);
}
