//! The `openssl` command as a peer: running it, and the DER and SubjectPublicKeyInfo encodings it reads and
//! writes. Shared by this crate's interop tests and the audit crate's (`audit/tests/openssl_interop.rs`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use hearth_crypto::SuiteId;

/// The SM2 distinguishing identifier of GB/T 32918, which OpenSSL 3.0 does not default to.
pub const DISTID: &str = "distid:1234567812345678";

pub fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (scripts/test.sh installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

pub fn openssl_ok(args: &[&str], dir: &Path) -> bool {
    Command::new("openssl").args(args).current_dir(dir).output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// A DER INTEGER of a 32-byte big-endian unsigned value.
pub fn der_uint(v: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
    if v.is_empty() || v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    [vec![0x02, v.len() as u8], v].concat()
}

/// `r || s` as the DER `SEQUENCE { r INTEGER, s INTEGER }` OpenSSL reads.
pub fn der_signature(rs: &[u8]) -> Vec<u8> {
    let body = [der_uint(&rs[..32]), der_uint(&rs[32..])].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

/// The DER signature OpenSSL writes, as `r || s`.
pub fn raw_signature(der: &[u8]) -> Vec<u8> {
    assert_eq!(der[0], 0x30);
    let mut out = Vec::new();
    let mut i = 2;
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int: Vec<u8> = int.iter().copied().skip_while(|b| *b == 0).collect();
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend(int);
        i += 2 + len;
    }
    out
}

/// SubjectPublicKeyInfo of a SEC1 point: id-ecPublicKey with the SM2 or P-256 curve.
pub fn spki(suite: SuiteId, point: &[u8]) -> Vec<u8> {
    let prefix = match suite {
        SuiteId::National => "3059301306072a8648ce3d020106082a811ccf5501822d034200",
        SuiteId::International => "3059301306072a8648ce3d020106082a8648ce3d030107034200",
    };
    [unhex(prefix), point.to_vec()].concat()
}

pub fn verify_with_openssl(suite: SuiteId, public: &[u8], msg: &[u8], rs: &[u8], d: &Path) -> bool {
    std::fs::write(d.join("pub.der"), spki(suite, public)).unwrap();
    std::fs::write(d.join("msg"), msg).unwrap();
    std::fs::write(d.join("sig.der"), der_signature(rs)).unwrap();
    let common = [
        "-verify", "-pubin", "-keyform", "DER", "-inkey", "pub.der", "-in", "msg", "-sigfile", "sig.der",
        "-rawin",
    ];
    match suite {
        SuiteId::National => {
            openssl_ok(&[&["pkeyutl"][..], &common, &["-digest", "sm3", "-pkeyopt", DISTID]].concat(), d)
        }
        SuiteId::International => {
            openssl_ok(&[&["pkeyutl"][..], &common, &["-digest", "sha256"]].concat(), d)
        }
    }
}
