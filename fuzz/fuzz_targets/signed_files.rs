//! The signed files a participant reads at every round: its institution's privacy policy and the
//! consortium's member list (JSON around TOML, with certificates and signatures). No input may panic.
#![no_main]

use std::sync::OnceLock;

use hearth_participant::membership::{MemberList, SignedMembers};
use hearth_participant::privacy::SignedPolicy;
use hearth_policies::budget::PrivacyPolicy;
use libfuzzer_sys::fuzz_target;

fn ca_der() -> &'static [u8] {
    static CA: OnceLock<Vec<u8>> = OnceLock::new();
    CA.get_or_init(|| {
        let ca = hearth_crypto::pki::ConsortiumCa::generate("fuzz").unwrap();
        hearth_crypto::pki::cert_der_from_pem(&ca.cert_pem()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            if let Ok(signed) = serde_json::from_slice::<SignedPolicy>(bytes) {
                let _ = signed.verify(ca_der(), "bank-a");
            }
        }
        1 => {
            if let Ok(signed) = serde_json::from_slice::<SignedMembers>(bytes) {
                let _ = signed.verify(ca_der());
            }
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let _ = PrivacyPolicy::from_toml(text);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let _ = MemberList::from_toml(text);
            }
        }
    }
});
