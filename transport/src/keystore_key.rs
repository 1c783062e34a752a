//! A TLS private key that never leaves the node's keystore: rustls asks [`KeystoreTlsKey`] to sign each
//! handshake, and the signature is made by the keystore (inside the PKCS#11 token, with that backend).
//! Only ECDSA P-256 with SHA-256 is offered, the algorithm of every Hearth node certificate.

use std::fmt;
use std::sync::Arc;

use hearth_crypto::keystore::{KeyLabel, KeyStore};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// The keystore key `label` (a P-256 signing key) as a rustls signing key.
#[derive(Clone)]
pub struct KeystoreTlsKey {
    keystore: Arc<dyn KeyStore>,
    label: KeyLabel,
}

impl fmt::Debug for KeystoreTlsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoreTlsKey").field("label", &self.label.as_str()).finish_non_exhaustive()
    }
}

impl KeystoreTlsKey {
    /// The key `label` of `keystore`. Its certificate must certify this key's public half.
    pub fn new(keystore: Arc<dyn KeyStore>, label: KeyLabel) -> Self {
        Self { keystore, label }
    }
}

impl SigningKey for KeystoreTlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for KeystoreTlsKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let s = self
            .keystore
            .sign(&self.label, message)
            .map_err(|e| rustls::Error::General(format!("the keystore could not sign the handshake: {e}")))?;
        fixed_to_der(&s.signature)
            .ok_or_else(|| rustls::Error::General("the keystore returned a malformed ECDSA signature".into()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// `r || s` (32 bytes each) as the DER `SEQUENCE { INTEGER r, INTEGER s }` TLS carries.
fn fixed_to_der(rs: &[u8]) -> Option<Vec<u8>> {
    if rs.len() != 64 {
        return None;
    }
    let int = |x: &[u8]| {
        let x = &x[x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1)..];
        let mut out = vec![0x02];
        if x[0] & 0x80 != 0 {
            out.push(x.len() as u8 + 1);
            out.push(0);
        } else {
            out.push(x.len() as u8);
        }
        out.extend_from_slice(x);
        out
    };
    let (r, s) = (int(&rs[..32]), int(&rs[32..]));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_signatures_become_der_integers_with_the_sign_bit_padded_and_zeros_stripped() {
        let mut rs = [0u8; 64];
        rs[0] = 0x80; // r's high bit set: needs a leading zero
        rs[31] = 1;
        rs[62] = 0x7f; // s = 0x7f01 after stripping leading zeros
        rs[63] = 1;
        let der = fixed_to_der(&rs).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 2 + 2, 0x02, 33]);
        assert_eq!(der[4], 0);
        assert_eq!(&der[der.len() - 4..], &[0x02, 2, 0x7f, 1]);
        assert!(fixed_to_der(&rs[..63]).is_none());
        let zero = fixed_to_der(&[0u8; 64]).unwrap();
        assert_eq!(zero, vec![0x30, 6, 2, 1, 0, 2, 1, 0]);
    }
}
