//! Interoperability with a real peer, the system's OpenSSL 3 command (`openssl`, installed by
//! `scripts/test.sh` when missing): SM3 and SHA-256 digests, SM4 (ECB block, CTR keystream, and SM4-GCM
//! rebuilt from OpenSSL's SM4 plus a GHASH written here), SM2 and ECDSA P-256 signatures in both
//! directions, and the standards' published
//! examples (GB/T 32905 SM3 "abc", GB/T 32907 SM4 block, GM/T 0003.5 SM2 signature).
//!
//! OpenSSL 3.0's `pkeyutl` does not default to the SM2 distinguishing identifier of GB/T 32918
//! (`1234567812345678`), which Hearth uses: every SM2 command here passes it with `-pkeyopt distid:`.

use std::path::Path;

use hearth_crypto::{SecretBytes, SuiteId};

mod openssl;
use openssl::{hex, openssl, raw_signature, unhex, verify_with_openssl, DISTID};

/// Messages of several lengths, including the empty one and the GB/T 32905 "abc".
fn messages() -> Vec<Vec<u8>> {
    vec![vec![], b"abc".to_vec(), (0..=255u8).cycle().take(1000).collect(), "智能客服".as_bytes().to_vec()]
}

#[test]
fn sm3_and_sha256_digests_match_openssl_dgst() {
    let dir = tempfile::tempdir().unwrap();
    for (i, m) in messages().iter().enumerate() {
        let f = format!("m{i}");
        std::fs::write(dir.path().join(&f), m).unwrap();
        for (alg, suite) in [("-sm3", SuiteId::National), ("-sha256", SuiteId::International)] {
            let out = String::from_utf8(openssl(&["dgst", alg, "-r", &f], dir.path())).unwrap();
            let theirs = out.split_whitespace().next().unwrap().to_string();
            assert_eq!(hex(&suite.suite().hash(&[m])), theirs, "{alg} of message {i}");
        }
    }
    // GB/T 32905-2016 appendix A.1, to be sure both agree with the standard and not only each other.
    assert_eq!(
        hex(&SuiteId::National.suite().hash(&[b"abc"])),
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    );
}

/// SM4 of one block under `key`, by `openssl enc -sm4-ecb`.
fn sm4_block(key: &[u8], block: &[u8; 16], dir: &Path) -> [u8; 16] {
    std::fs::write(dir.join("block"), block).unwrap();
    let out = openssl(&["enc", "-sm4-ecb", "-K", &hex(key), "-nopad", "-in", "block"], dir);
    out.try_into().unwrap()
}

/// Multiplication in GF(2^128) as GCM defines it (NIST SP 800-38D, algorithm 1).
fn gf_mul(x: u128, y: u128) -> u128 {
    let r: u128 = 0xe1 << 120;
    let (mut z, mut v) = (0u128, y);
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 { (v >> 1) ^ r } else { v >> 1 };
    }
    z
}

fn ghash(h: u128, aad: &[u8], ct: &[u8]) -> u128 {
    let mut y = 0u128;
    for data in [aad, ct] {
        for chunk in data.chunks(16) {
            let mut b = [0u8; 16];
            b[..chunk.len()].copy_from_slice(chunk);
            y = gf_mul(y ^ u128::from_be_bytes(b), h);
        }
    }
    let lens = ((aad.len() as u128 * 8) << 64) | (ct.len() as u128 * 8);
    gf_mul(y ^ lens, h)
}

#[test]
fn sm4_ctr_and_gcm_match_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // GB/T 32907-2016 appendix A.1 through OpenSSL: the standard's block vector.
    let key = unhex("0123456789abcdeffedcba9876543210");
    let block: [u8; 16] = key.clone().try_into().unwrap();
    assert_eq!(hex(&sm4_block(&key, &block, d)), "681edf34d206965e86b3e94f536e4246");

    // The SM4-CTR keystream Hearth expands secure-aggregation masks with equals `openssl enc -sm4-ctr`.
    let iv = unhex("000102030405060708090a0b0c0dfffe");
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&key);
    seed[16..].copy_from_slice(&iv);
    let mut ours = vec![0u8; 100];
    SuiteId::National.suite().keystream(&SecretBytes::new(seed), &mut ours);
    std::fs::write(d.join("zeros"), [0u8; 100]).unwrap();
    let theirs = openssl(&["enc", "-sm4-ctr", "-K", &hex(&key), "-iv", &hex(&iv), "-in", "zeros"], d);
    assert_eq!(hex(&ours), hex(&theirs), "the counter also carries across the low bytes");

    // SM4-GCM (at-rest encryption): the ciphertext is SM4-CTR from nonce || 2, the tag GHASH under
    // H = SM4(K, 0) masked with SM4(K, nonce || 1), all SM4 calls made by OpenSSL.
    let nonce: [u8; 12] = unhex("00001234567800000000abcd").try_into().unwrap();
    for (pt, aad) in [
        (
            b"a customer-service conversation, sealed at rest".to_vec(),
            b"hearth/participant/example/7".to_vec(),
        ),
        (vec![], b"empty".to_vec()),
        ((0..=255u8).collect(), vec![]),
    ] {
        let sealed = SuiteId::National.suite().seal(&key, &nonce, &aad, &pt).unwrap();
        let (ct, tag) = sealed.split_at(sealed.len() - 16);
        let mut ctr0 = [0u8; 16];
        ctr0[..12].copy_from_slice(&nonce);
        ctr0[15] = 2;
        std::fs::write(d.join("pt"), &pt).unwrap();
        let theirs = openssl(&["enc", "-sm4-ctr", "-K", &hex(&key), "-iv", &hex(&ctr0), "-in", "pt"], d);
        assert_eq!(hex(ct), hex(&theirs));
        let h = u128::from_be_bytes(sm4_block(&key, &[0u8; 16], d));
        let mut j0 = ctr0;
        j0[15] = 1;
        let mask = u128::from_be_bytes(sm4_block(&key, &j0, d));
        assert_eq!(hex(tag), hex(&(ghash(h, &aad, ct) ^ mask).to_be_bytes()));
    }
}

#[test]
fn signatures_made_here_verify_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    for suite in [SuiteId::National, SuiteId::International] {
        let s = suite.suite();
        let (secret, public) = s.signing_keypair().unwrap();
        for msg in messages() {
            let sig = s.sign(&secret, &msg).unwrap();
            assert!(
                verify_with_openssl(suite, &public, &msg, &sig, dir.path()),
                "{suite}, {} bytes",
                msg.len()
            );
            let mut forged = sig.clone();
            forged[40] ^= 1;
            assert!(
                !verify_with_openssl(suite, &public, &msg, &forged, dir.path()),
                "{suite}: forgery accepted"
            );
        }
    }
}

#[test]
fn signatures_made_by_openssl_verify_here() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (suite, genargs, digest) in [
        (SuiteId::National, vec!["genpkey", "-algorithm", "SM2", "-out", "key.pem"], "sm3"),
        (
            SuiteId::International,
            vec!["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "key.pem"],
            "sha256",
        ),
    ] {
        openssl(&genargs, d);
        let der = openssl(&["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"], d);
        let public = der[der.len() - 65..].to_vec();
        for msg in messages() {
            std::fs::write(d.join("msg"), &msg).unwrap();
            let mut args =
                vec!["pkeyutl", "-sign", "-inkey", "key.pem", "-in", "msg", "-rawin", "-digest", digest];
            if suite == SuiteId::National {
                args.extend(["-pkeyopt", DISTID]);
            }
            let sig = raw_signature(&openssl(&args, d));
            suite.suite().verify(&public, &msg, &sig).unwrap_or_else(|e| panic!("{suite}: {e}"));
            assert!(suite.suite().verify(&public, b"another message", &sig).is_err());
        }
    }
}

/// The SM2 signature example of GM/T 0003.5-2012 / GB/T 32918.5-2017 annex A (recommended curve, SM3,
/// identifier 1234567812345678, message "message digest"), the vector OpenSSL's own
/// `test/sm2_internal_test.c` uses: the public key derives from the published private key, the published
/// signature verifies here and with the `openssl` command, and a changed message does not.
#[test]
fn sm2_matches_the_published_gmt_0003_5_example() {
    let d = unhex("3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8");
    let public = unhex(
        "0409f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020\
         ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13",
    );
    let rs = unhex(
        "f5a03b0648d2c4630eeac513e1bb81a15944da3827d5b74143ac7eaceee720b3\
         b1b6aa29df212fd8763182bc0d421ca1bb9038fd1f7f42d4840b69c485bbc1aa",
    );
    let s = SuiteId::National.suite();
    let secret = SecretBytes::from_slice("GM/T 0003.5 private key", &d).unwrap();
    assert_eq!(hex(&s.verifying_key(&secret).unwrap()), hex(&public));
    s.verify(&public, b"message digest", &rs).unwrap();
    assert!(s.verify(&public, b"message digesT", &rs).is_err());
    let dir = tempfile::tempdir().unwrap();
    assert!(verify_with_openssl(SuiteId::National, &public, b"message digest", &rs, dir.path()));
    // Our own signature with that key also verifies in both.
    let ours = s.sign(&secret, b"message digest").unwrap();
    assert!(verify_with_openssl(SuiteId::National, &public, b"message digest", &ours, dir.path()));
}
