use super::*;
use crate::keystore::tests::{check_contract, label};

const SUITES: [SuiteId; 2] = [SuiteId::International, SuiteId::National];

fn fast() -> Argon2Params {
    Argon2Params::insecure_for_tests()
}

#[test]
fn sealed_keystores_keep_the_contract_in_both_suites() {
    for suite in SUITES {
        let ks = SealedKeyStore::create(suite, b"correct horse", fast()).unwrap();
        assert_eq!(ks.location(), KeyLocation::SealedPassphrase);
        check_contract(&ks);
    }
}

#[test]
fn a_reopened_keystore_has_the_same_keys_and_opens_old_wrappings() {
    for suite in SUITES {
        let ks = SealedKeyStore::create(suite, b"correct horse", fast()).unwrap();
        let kek = label("kek");
        ks.generate(&kek, KeyKind::KeyEncryption).unwrap();
        ks.generate(&label("audit"), KeyKind::Audit).unwrap();
        let dk = DataKey::generate(suite).unwrap();
        let old = ks.wrap(&kek, b"shard 1", &dk).unwrap();
        ks.rotate(&kek).unwrap();
        let sig = ks.sign(&label("audit"), b"tree head 1").unwrap();

        let bytes = ks.sealed_state().unwrap().unwrap();
        let again = SealedKeyStore::open(&bytes, b"correct horse").unwrap();
        assert_eq!(again.suite(), suite);
        assert_eq!(again.list().unwrap(), ks.list().unwrap());
        assert_eq!(again.unwrap(&old.kek, b"shard 1", &old.bytes).unwrap(), dk);
        again.verify(&sig.key, b"tree head 1", &sig.signature).unwrap();
        // Re-sealing uses a fresh nonce, and the result opens too.
        let twice = again.to_sealed_bytes().unwrap();
        assert_ne!(twice, bytes);
        SealedKeyStore::open(&twice, b"correct horse").unwrap();
    }
}

fn sample() -> Vec<u8> {
    let ks = SealedKeyStore::create(SuiteId::National, b"pass", fast()).unwrap();
    ks.generate(&label("signing"), KeyKind::Signing).unwrap();
    ks.to_sealed_bytes().unwrap()
}

/// Offsets in a passphrase-sealed header.
const FORMAT_AT: usize = 8;
const MEMORY_AT: usize = 12;
const SALT_AT: usize = 25;
const NONCE_AT: usize = SALT_AT + SALT_LEN + CHECK_LEN;

#[test]
fn opening_errors_say_what_is_wrong() {
    let bytes = sample();
    assert_eq!(SealedKeyStore::open(&bytes, b"wrong").unwrap_err(), KeyStoreError::WrongPassphrase);
    assert_eq!(SealedKeyStore::open(&bytes, b"").unwrap_err(), KeyStoreError::EmptyPassphrase);

    let mut body = bytes.clone();
    *body.last_mut().unwrap() ^= 1;
    assert!(matches!(SealedKeyStore::open(&body, b"pass"), Err(KeyStoreError::Tampered { .. })));

    let mut nonce = bytes.clone();
    nonce[NONCE_AT] ^= 1;
    assert!(matches!(SealedKeyStore::open(&nonce, b"pass"), Err(KeyStoreError::Tampered { .. })));

    let mut salt = bytes.clone();
    salt[SALT_AT] ^= 1;
    assert_eq!(SealedKeyStore::open(&salt, b"pass").unwrap_err(), KeyStoreError::WrongPassphrase);

    let mut version = bytes.clone();
    version[FORMAT_AT + 1] = 2;
    assert_eq!(
        SealedKeyStore::open(&version, b"pass").unwrap_err(),
        KeyStoreError::UnsupportedFormat { found: 2, supported: 1 }
    );

    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert_eq!(SealedKeyStore::open(&magic, b"pass").unwrap_err(), KeyStoreError::NotAKeystore);
    assert_eq!(SealedKeyStore::open(b"", b"pass").unwrap_err(), KeyStoreError::NotAKeystore);

    let mut extra = bytes.clone();
    extra.push(0);
    assert!(matches!(SealedKeyStore::open(&extra, b"pass"), Err(KeyStoreError::Malformed(_))));
}

#[test]
fn every_truncation_is_refused() {
    let bytes = sample();
    for cut in 0..bytes.len() {
        assert!(SealedKeyStore::open(&bytes[..cut], b"pass").is_err(), "cut at {cut}");
    }
}

#[test]
fn hostile_header_parameters_are_refused_before_any_work() {
    let mut bytes = sample();
    // 4 GiB of memory: refused by the bounds check, never allocated.
    bytes[MEMORY_AT..MEMORY_AT + 4].copy_from_slice(&(4u32 << 20).to_be_bytes());
    assert!(matches!(SealedKeyStore::open(&bytes, b"pass"), Err(KeyStoreError::InvalidParams(_))));
}

#[test]
fn weak_parameters_are_refused_outside_tests() {
    assert!(Argon2Params::new(8 * 1024, 3, 1).is_err());
    assert!(Argon2Params::new(64 * 1024, 1, 1).is_err());
    assert!(Argon2Params::new(64 * 1024, 3, 0).is_err());
    assert!(Argon2Params::new(u32::MAX, 3, 1).is_err());
    assert_eq!(Argon2Params::new(64 * 1024, 3, 1).unwrap(), Argon2Params::RECOMMENDED);
    assert!(matches!(
        SealedKeyStore::create(SuiteId::National, b"", fast()),
        Err(KeyStoreError::EmptyPassphrase)
    ));
}

#[test]
fn debug_output_names_keys_but_no_secret() {
    let ks = SealedKeyStore::create(SuiteId::International, b"hunter2", fast()).unwrap();
    ks.generate(&label("kek"), KeyKind::KeyEncryption).unwrap();
    let Sealer::Passphrase { key, .. } = &ks.sealer else { unreachable!() };
    let shown = format!("{ks:?}");
    assert!(shown.contains("kek") && !shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains(&format!("{:?}", &key[..])), "{shown}");
}
