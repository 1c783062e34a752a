//! An auditor checks a national-suite tree head with the system's OpenSSL 3 command (`openssl`, installed
//! by `scripts/test.sh` when missing): a checkpoint's signature is SM2 `r || s` over the note body.

use hearth_audit::{Checkpoint, SignedCheckpoint, SoftwareSigner, TreeHeadSigner};
use hearth_crypto::SuiteId;

#[path = "../../crypto/tests/openssl/mod.rs"]
mod openssl;
use openssl::verify_with_openssl;

#[test]
fn an_auditor_can_check_a_national_suite_tree_head_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let signer = SoftwareSigner::generate("hearth/coordinator/consortium", SuiteId::National).unwrap();
    let cp = Checkpoint::new("hearth/coordinator/consortium", 1042, [0x5a; 32]).unwrap();
    let signed = SignedCheckpoint::sign(cp, &signer).unwrap();
    // The signature line's bytes after the 4-byte key ID are r || s over the note text.
    let sig = &signed.signatures()[0].bytes;
    let body = signed.checkpoint().body();
    assert!(verify_with_openssl(SuiteId::National, &signer.public_key(), body.as_bytes(), sig, dir.path()));
}
