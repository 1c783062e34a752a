//! Tests against a real SoftHSM2 token, no mocks. The process gets its own token directory (a
//! `SOFTHSM2_CONF` pointing at a temporary directory, set before the module is first initialised) and each
//! test initialises a fresh token in it through `C_InitToken`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::*;
use crate::keystore::tests::{check_contract, label};
use crate::keystore::Argon2Params;
use crate::suite::CryptoSuite;

const USER_PIN: &str = "user-pin-1234";
const SO_PIN: &str = "so-pin-5678";

/// The SoftHSM2 module: `HEARTH_PKCS11_MODULE`, or where Debian and a source build put it.
pub(crate) fn module() -> PathBuf {
    if let Some(m) = std::env::var_os("HEARTH_PKCS11_MODULE") {
        return m.into();
    }
    let candidates = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ];
    candidates.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| {
        panic!("SoftHSM2 is not installed (looked in {candidates:?}); scripts/test.sh installs it")
    })
}

/// Creates this process's token directory and points SoftHSM2 at it, once, before any initialisation.
fn token_dir() {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        remove_stale_token_dirs();
        let prefix = format!("hearth-softhsm-{}-", std::process::id());
        let dir = tempfile::Builder::new().prefix(&prefix).tempdir().unwrap().keep();
        std::fs::create_dir(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        // Set before the first C_Initialize, which is the only time SoftHSM2 reads it.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        dir
    });
}

/// The token directory lives as long as the process (statics are never dropped), so each run removes
/// the directories of earlier test processes that have exited; a running one's is left alone.
fn remove_stale_token_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid =
            name.to_str().and_then(|n| n.strip_prefix("hearth-softhsm-")).and_then(|r| r.split('-').next());
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Initialises a new token (its own label, SO and user PINs) and returns its configuration.
pub(crate) fn fresh_token(name: &str) -> Pkcs11Config {
    static SERIAL: Mutex<()> = Mutex::new(());
    static N: AtomicUsize = AtomicUsize::new(0);
    token_dir();
    // Two tests must not race for the same free slot.
    let _g = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let ctx = context(&module()).unwrap();
    let label = format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed));
    let slot = ctx
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
        .expect("SoftHSM2 always offers one free slot");
    let so = AuthPin::new(SO_PIN.into());
    ctx.init_token(slot, &so, &label).unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    s.login(UserType::So, Some(&so)).unwrap();
    s.init_pin(&AuthPin::new(USER_PIN.into())).unwrap();
    s.logout().unwrap();
    Pkcs11Config::new(module(), label, USER_PIN)
}

/// A second, independent session on the token, for poking at objects directly.
fn raw_session(config: &Pkcs11Config) -> Session {
    let ctx = context(&config.module).unwrap();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == config.token_label)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    match s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    s
}

fn find(s: &Session, object_label: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[Attribute::Label(object_label.as_bytes().to_vec())]).unwrap()
}

#[test]
fn international_token_keeps_the_contract() {
    let config = fresh_token("intl");
    let ks = Pkcs11KeyStore::open(&config, SuiteId::International, None).unwrap();
    assert_eq!((ks.suite(), ks.location()), (SuiteId::International, KeyLocation::Token));
    check_contract(&ks);
    assert_eq!(ks.sealed_state().unwrap(), None, "the token persists its own keys");
    let shown = format!("{ks:?}");
    assert!(shown.contains("node-signing") && shown.contains(&config.token_label), "{shown}");
}

#[test]
fn national_keys_sealed_by_the_token_keep_the_contract_and_survive_reopening() {
    let config = fresh_token("natl");
    let ks = Pkcs11KeyStore::open(&config, SuiteId::National, None).unwrap();
    assert_eq!((ks.suite(), ks.location()), (SuiteId::National, KeyLocation::SealedByToken));
    check_contract(&ks);
    let shown = format!("{ks:?}");
    assert!(shown.contains("node-signing") && shown.contains("hearth/seal/sm-keystore/v1"), "{shown}");
    let state = ks.sealed_state().unwrap().unwrap();
    let sig = ks.sign(&label("audit"), b"tree head").unwrap();
    drop(ks);

    let again = Pkcs11KeyStore::open(&config, SuiteId::National, Some(&state)).unwrap();
    again.verify(&sig.key, b"tree head", &sig.signature).unwrap();
    assert_eq!(again.current(&label("kek")).unwrap().version.get(), 2);

    let mut tampered = state.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let e = Pkcs11KeyStore::open(&config, SuiteId::National, Some(&tampered)).unwrap_err();
    assert!(matches!(e, KeyStoreError::Tampered { .. }), "{e}");

    // The blob is useless without the token that sealed it.
    let other = fresh_token("natl-other");
    let e = Pkcs11KeyStore::open(&other, SuiteId::National, Some(&state)).unwrap_err();
    assert!(matches!(e, KeyStoreError::UnknownKey { .. }), "{e}");
}

#[test]
fn token_keys_persist_across_sessions_and_old_versions_stay_usable() {
    let config = fresh_token("persist");
    let (sig, wrapped, dk) = {
        let ks = Pkcs11KeyStore::open(&config, SuiteId::International, None).unwrap();
        ks.generate(&label("audit"), KeyKind::Audit).unwrap();
        ks.generate(&label("kek"), KeyKind::KeyEncryption).unwrap();
        let dk = DataKey::generate(SuiteId::International).unwrap();
        let wrapped = ks.wrap(&label("kek"), b"model v3", &dk).unwrap();
        let sig = ks.sign(&label("audit"), b"head 1").unwrap();
        ks.rotate(&label("kek")).unwrap();
        (sig, wrapped, dk)
    };
    let ks = Pkcs11KeyStore::open(&config, SuiteId::International, None).unwrap();
    assert_eq!(ks.list().unwrap().len(), 2);
    assert_eq!(ks.current(&label("kek")).unwrap().version.get(), 2);
    ks.verify(&sig.key, b"head 1", &sig.signature).unwrap();
    assert_eq!(ks.unwrap(&wrapped.kek, b"model v3", &wrapped.bytes).unwrap(), dk);
    // Token ECDSA signatures verify with the pure-Rust P-256 verifier, whatever the sign of s.
    let public = ks.public_key(&sig.key).unwrap();
    for i in 0..16u8 {
        let s = ks.sign(&label("audit"), &[i]).unwrap();
        crate::suite::International.verify(&public, &[i], &s.signature).unwrap();
    }
}

#[test]
fn token_keys_cannot_be_exported() {
    let config = fresh_token("export");
    let ks = Pkcs11KeyStore::open(&config, SuiteId::International, None).unwrap();
    ks.generate(&label("node-signing"), KeyKind::Signing).unwrap();
    ks.generate(&label("kek"), KeyKind::KeyEncryption).unwrap();
    ks.generate(&label("identity-hash"), KeyKind::IdentityHash).unwrap();
    let s = raw_session(&config);
    // An extractable key that may wrap: the export route an attacker with the PIN would try.
    let wrapper = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
            ],
        )
        .unwrap();
    for object in
        ["hearth/signing/node-signing/v1", "hearth/kek/kek/v1", "hearth/identity-hash/identity-hash/v1"]
    {
        let secret = find(&s, object)
            .into_iter()
            .find(|h| {
                let class = s.get_attributes(*h, &[AttributeType::Class]).unwrap();
                !matches!(class.first(), Some(Attribute::Class(c)) if *c == cryptoki::object::ObjectClass::PUBLIC_KEY)
            })
            .unwrap_or_else(|| panic!("{object} not found"));
        let info = s.get_attribute_info(secret, &[AttributeType::Value]).unwrap();
        assert!(matches!(info.as_slice(), [AttributeInfo::Sensitive]), "{object}: {info:?}");
        assert!(
            s.get_attributes(secret, &[AttributeType::Value]).unwrap().is_empty(),
            "{object}: value returned"
        );
        let flags = s
            .get_attributes(
                secret,
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                ],
            )
            .unwrap();
        assert_eq!(
            flags,
            vec![
                Attribute::Extractable(false),
                Attribute::Sensitive(true),
                Attribute::NeverExtractable(true),
                Attribute::AlwaysSensitive(true)
            ],
            "{object}"
        );
        let e = s.wrap_key(&Mechanism::AesKeyWrapPad, wrapper, secret).unwrap_err();
        assert!(matches!(e, P11Error::Pkcs11(RvError::KeyUnextractable, _)), "{object}: {e}");
        assert!(
            s.update_attributes(secret, &[Attribute::Extractable(true)]).is_err(),
            "{object}: made extractable"
        );
    }
}

#[test]
fn opening_errors_are_precise() {
    let config = fresh_token("errors");
    let mut wrong_pin = config.clone();
    wrong_pin.user_pin = Zeroizing::new("0000".into());
    let e = Pkcs11KeyStore::open(&wrong_pin, SuiteId::International, None).unwrap_err();
    assert!(matches!(e, KeyStoreError::Login { .. }), "{e}");
    assert!(!e.to_string().contains("0000"), "no PIN in messages: {e}");
    assert!(!format!("{config:?}").contains(USER_PIN));

    let mut missing = config.clone();
    missing.token_label = "no-such-token".into();
    let e = Pkcs11KeyStore::open(&missing, SuiteId::International, None).unwrap_err();
    assert!(
        matches!(e, KeyStoreError::TokenNotFound { .. }) && e.to_string().contains("no-such-token"),
        "{e}"
    );

    let e = Pkcs11KeyStore::open(&config, SuiteId::International, Some(b"state")).unwrap_err();
    assert!(matches!(e, KeyStoreError::UnexpectedState { .. }), "{e}");

    let passphrase_sealed =
        SealedKeyStore::create(SuiteId::National, b"pw", Argon2Params::insecure_for_tests())
            .unwrap()
            .to_sealed_bytes()
            .unwrap();
    let e = Pkcs11KeyStore::open(&config, SuiteId::National, Some(&passphrase_sealed)).unwrap_err();
    assert!(matches!(e, KeyStoreError::WrongSealing { .. }), "{e}");

    let mut bad_module = config.clone();
    bad_module.module = "/nonexistent/libpkcs11.so".into();
    let e = Pkcs11KeyStore::open(&bad_module, SuiteId::International, None).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/libpkcs11.so"), "{e}");
}

#[test]
fn envelopes_seal_under_token_keks_in_both_suites() {
    for (name, suite) in [("env-intl", SuiteId::International), ("env-natl", SuiteId::National)] {
        let config = fresh_token(name);
        let ks = Pkcs11KeyStore::open(&config, suite, None).unwrap();
        ks.generate(&label("kek"), KeyKind::KeyEncryption).unwrap();
        let old = crate::envelope::seal(&ks, &label("kek"), b"tenant-a/model-3", b"weights").unwrap();
        ks.rotate(&label("kek")).unwrap();
        let new = crate::envelope::seal(&ks, &label("kek"), b"tenant-a/model-4", b"newer weights").unwrap();
        assert_eq!(crate::envelope::kek_of(&new).unwrap().version.get(), 2);
        assert_eq!(crate::envelope::open(&ks, b"tenant-a/model-3", &old).unwrap(), b"weights");
        assert_eq!(crate::envelope::open(&ks, b"tenant-a/model-4", &new).unwrap(), b"newer weights");
        assert!(crate::envelope::open(&ks, b"tenant-b/model-3", &old).is_err());
    }
}

#[test]
fn a_token_signing_key_gets_a_certificate_and_its_signatures_verify_against_it() {
    use crate::pki::{cert_der_from_pem, verify_node_cert, ConsortiumCa, IssueOptions, Role};
    let config = fresh_token("cert");
    let ks = Pkcs11KeyStore::open(&config, SuiteId::International, None).unwrap();
    let event = ks.generate(&label("node-signing"), KeyKind::Signing).unwrap();
    let ca = ConsortiumCa::generate("consortium").unwrap();
    let public = event.public_key.unwrap();
    let cert =
        ca.issue_for_key(Role::Participant, "bank-a", &[], &[], &public, &IssueOptions::default()).unwrap();
    let at = std::time::SystemTime::now();
    let peer =
        verify_node_cert(&cert_der_from_pem(&ca.cert_pem()).unwrap(), &cert_der_from_pem(&cert).unwrap(), at)
            .unwrap();
    let sig = ks.sign(&label("node-signing"), b"round 1 key").unwrap();
    let key = peer.protocol_key(SuiteId::International).unwrap();
    crate::suite::International.verify(key, b"round 1 key", &sig.signature).unwrap();
}
