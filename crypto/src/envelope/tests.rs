use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::keystore::{Argon2Params, KeyKind, SealedKeyStore};

fn kek() -> KeyLabel {
    KeyLabel::new("kek").unwrap()
}

/// One keystore per suite, with a KEK, shared by the tests (keystores are `Sync`).
fn store(suite: SuiteId) -> &'static SealedKeyStore {
    static STORES: OnceLock<[SealedKeyStore; 2]> = OnceLock::new();
    let stores = STORES.get_or_init(|| {
        [SuiteId::International, SuiteId::National].map(|s| {
            let ks = SealedKeyStore::create(s, b"pass", Argon2Params::insecure_for_tests()).unwrap();
            ks.generate(&kek(), KeyKind::KeyEncryption).unwrap();
            ks
        })
    });
    &stores[usize::from(suite == SuiteId::National)]
}

fn fresh(suite: SuiteId) -> SealedKeyStore {
    let ks = SealedKeyStore::create(suite, b"pass", Argon2Params::insecure_for_tests()).unwrap();
    ks.generate(&kek(), KeyKind::KeyEncryption).unwrap();
    ks
}

#[test]
fn objects_open_after_kek_rotation_and_new_ones_use_the_new_version() {
    for suite in [SuiteId::International, SuiteId::National] {
        let ks = fresh(suite);
        let old = seal(&ks, &kek(), b"tenant-a/shard-1", b"customer utterances").unwrap();
        assert_eq!(kek_of(&old).unwrap().version.get(), 1);
        ks.rotate(&kek()).unwrap();
        let new = seal(&ks, &kek(), b"tenant-a/shard-2", b"more utterances").unwrap();
        assert_eq!(kek_of(&new).unwrap().version.get(), 2);
        assert_eq!(open(&ks, b"tenant-a/shard-1", &old).unwrap(), b"customer utterances");
        assert_eq!(open(&ks, b"tenant-a/shard-2", &new).unwrap(), b"more utterances");
    }
}

#[test]
fn hostile_envelopes_get_precise_errors() {
    let ks = store(SuiteId::International);
    let env = seal(ks, &kek(), b"obj", b"model weights").unwrap();

    assert_eq!(
        open(ks, b"other obj", &env),
        Err(EnvelopeError::Tampered { what: "the wrapped data key or the header" })
    );
    assert_eq!(open(ks, b"obj", b"HEN"), Err(EnvelopeError::NotAnEnvelope));
    assert_eq!(open(ks, b"obj", b"PK\x03\x04 a zip file"), Err(EnvelopeError::NotAnEnvelope));

    let mut v2 = env.clone();
    v2[4] = 2;
    assert_eq!(open(ks, b"obj", &v2), Err(EnvelopeError::UnsupportedVersion { found: 2, supported: 1 }));

    let mut national = env.clone();
    national[5] = 2;
    assert_eq!(
        open(ks, b"obj", &national),
        Err(EnvelopeError::WrongSuite { found: SuiteId::National, expected: SuiteId::International })
    );
    let from_other_suite = seal(store(SuiteId::National), &kek(), b"obj", b"x").unwrap();
    assert!(matches!(open(ks, b"obj", &from_other_suite), Err(EnvelopeError::WrongSuite { .. })));

    // The KEK version field: 6 (magic, version, suite) + 1 + 3 ("kek").
    let mut v9 = env.clone();
    v9[10..14].copy_from_slice(&9u32.to_be_bytes());
    assert_eq!(open(ks, b"obj", &v9), Err(EnvelopeError::UnknownKek { label: "kek".into(), version: 9 }));
    let mut other_label = env.clone();
    other_label[7..10].copy_from_slice(b"kez");
    assert_eq!(
        open(ks, b"obj", &other_label),
        Err(EnvelopeError::UnknownKek { label: "kez".into(), version: 1 })
    );
    let mut bad_label = env.clone();
    bad_label[7] = b'K';
    assert!(matches!(open(ks, b"obj", &bad_label), Err(EnvelopeError::Malformed(_))));

    let mut body = env.clone();
    *body.last_mut().unwrap() ^= 1;
    assert_eq!(
        open(ks, b"obj", &body),
        Err(EnvelopeError::Tampered { what: "the ciphertext or the header" })
    );
    let mut nonce = env.clone();
    let nonce_at = env.len() - b"model weights".len() - TAG_LEN - NONCE_LEN;
    nonce[nonce_at] ^= 1;
    assert_eq!(
        open(ks, b"obj", &nonce),
        Err(EnvelopeError::Tampered { what: "the ciphertext or the header" })
    );

    // A store without that KEK.
    let empty =
        SealedKeyStore::create(SuiteId::International, b"p", Argon2Params::insecure_for_tests()).unwrap();
    assert!(matches!(open(&empty, b"obj", &env), Err(EnvelopeError::UnknownKek { .. })));
    assert!(matches!(
        seal(&empty, &kek(), b"obj", b"x"),
        Err(EnvelopeError::KeyStore(KeyStoreError::UnknownKey { .. }))
    ));
}

#[test]
fn empty_plaintexts_and_aad_round_trip() {
    let ks = store(SuiteId::National);
    let env = seal(ks, &kek(), b"", b"").unwrap();
    assert_eq!(open(ks, b"", &env).unwrap(), b"");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trips_in_both_suites(
        national in any::<bool>(),
        aad in proptest::collection::vec(any::<u8>(), 0..64),
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let ks = store(if national { SuiteId::National } else { SuiteId::International });
        let env = seal(ks, &kek(), &aad, &plaintext).unwrap();
        prop_assert_eq!(open(ks, &aad, &env).unwrap(), plaintext);
    }

    #[test]
    fn any_flipped_bit_or_truncation_is_refused(
        national in any::<bool>(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let ks = store(if national { SuiteId::National } else { SuiteId::International });
        let env = seal(ks, &kek(), b"obj", &plaintext).unwrap();
        let i = at.index(env.len());
        let mut flipped = env.clone();
        flipped[i] ^= 1 << bit;
        prop_assert!(open(ks, b"obj", &flipped).is_err(), "flip at {}", i);
        prop_assert!(open(ks, b"obj", &env[..i]).is_err(), "cut at {}", i);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let ks = store(SuiteId::International);
        let mut framed = b"HENV\x01\x01".to_vec();
        framed.extend_from_slice(&bytes);
        prop_assert!(open(ks, b"obj", &bytes).is_err());
        prop_assert!(open(ks, b"obj", &framed).is_err());
    }
}
