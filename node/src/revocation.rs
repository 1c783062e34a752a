//! The consortium's revocation list as a node holds it: the newest list signed by the consortium CA that
//! it has seen, from its own file or from the coordinator, never replaced by an older one.
//!
//! [`RevocationState`] is asked at every TLS handshake (as [`hearth_transport::Revocations`]) and at
//! every secure-aggregation roster. A list is accepted only when [`RevocationList::verify`] accepts it
//! (signed by the CA) and its CRL number is larger than the one held: whoever relays it (the coordinator)
//! can withhold a newer list but cannot forge one or bring back an older one. The newest list accepted is
//! written to the node's directory, so a restart does not forget a revocation.

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use base64::Engine;
use hearth_crypto::pki::{crl_der_from_pem, PkiError, RevocationList};

use crate::files::write_atomic;
use crate::NodeError;

/// The file, in a node's directory, holding the newest revocation list it accepted.
pub const REVOCATIONS_FILE: &str = "revocations.pem";

/// What offering a list did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// It is newer than the one held and replaced it.
    Adopted {
        /// Its CRL number.
        number: u64,
        /// How many certificates it revokes.
        revoked: usize,
    },
    /// It is not newer than the one held (the same list, or an older one): nothing changed.
    NotNewer {
        /// The number of the list offered.
        offered: u64,
        /// The number of the list held.
        held: u64,
    },
}

#[derive(Debug)]
struct Held {
    list: RevocationList,
    der: Vec<u8>,
}

/// The newest revocation list a node accepted.
#[derive(Debug)]
pub struct RevocationState {
    ca_der: Vec<u8>,
    held: RwLock<Option<Held>>,
    /// Where the newest accepted list is kept across restarts.
    store: Option<PathBuf>,
}

impl RevocationState {
    /// A node that trusts the CA `ca_der` and keeps its newest list in `node_dir`
    /// ([`REVOCATIONS_FILE`]), starting from what it kept there last time.
    pub fn open(ca_der: Vec<u8>, node_dir: Option<&Path>) -> Result<Self, NodeError> {
        let store = node_dir.map(|d| d.join(REVOCATIONS_FILE));
        let state = Self { ca_der, held: RwLock::new(None), store: None };
        if let Some(path) = &store {
            state.offer_file(path)?;
        }
        Ok(Self { store, ..state })
    }

    /// Offers the PEM list in `path` when the file exists; `None` when it does not.
    pub fn offer_file(&self, path: &Path) -> Result<Option<Offered>, NodeError> {
        let pem = match std::fs::read_to_string(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NodeError::Io { path: path.to_path_buf(), source: e }),
        };
        let bad = |source: PkiError| NodeError::Revocation { from: path.display().to_string(), source };
        let der = crl_der_from_pem(&pem).map_err(bad)?;
        self.offer_der(&der).map(Some).map_err(bad)
    }

    /// Offers a DER list (from the coordinator): adopted when the CA signed it and it is newer.
    pub fn offer_der(&self, der: &[u8]) -> Result<Offered, PkiError> {
        let list = RevocationList::verify(&self.ca_der, der, SystemTime::now())?;
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = held.as_ref().filter(|h| h.list.number() >= list.number()) {
            return Ok(Offered::NotNewer { offered: list.number(), held: h.list.number() });
        }
        let offered = Offered::Adopted { number: list.number(), revoked: list.len() };
        if let Some(path) = &self.store {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let mut pem = String::from("-----BEGIN X509 CRL-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END X509 CRL-----\n");
            // Best effort: the list is in force in memory either way; the next offer writes it again.
            if let Err(e) = write_atomic(path, pem.as_bytes(), false) {
                tracing::warn!(error = %e, "could not keep the revocation list on disk");
            }
        }
        *held = Some(Held { list, der: der.to_vec() });
        Ok(offered)
    }

    /// The list held, DER, to relay.
    pub fn der(&self) -> Option<Vec<u8>> {
        self.held.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|h| h.der.clone())
    }

    /// The CRL number of the list held.
    pub fn number(&self) -> Option<u64> {
        self.held.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|h| h.list.number())
    }

    /// Whether the list held revokes `cert_der` (never, when no list is held).
    pub fn is_revoked(&self, cert_der: &[u8]) -> bool {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|h| h.list.is_revoked(cert_der))
    }

    /// The list held: number, entries, and when the CA means to publish the next one.
    pub fn summary(&self) -> Option<(u64, usize, SystemTime)> {
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        held.as_ref().map(|h| (h.list.number(), h.list.len(), h.list.next_update()))
    }
}

impl hearth_transport::Revocations for RevocationState {
    fn is_revoked(&self, cert_der: &[u8]) -> bool {
        RevocationState::is_revoked(self, cert_der)
    }
}

#[cfg(test)]
mod tests {
    use hearth_crypto::pki::{cert_der_from_pem, ConsortiumCa, RevocationReason, RevokedEntry, Role};

    use super::*;

    #[test]
    fn a_newer_list_replaces_the_held_one_an_older_or_foreign_one_never_does_and_it_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ConsortiumCa::generate("c").unwrap();
        let ca_der = cert_der_from_pem(&ca.cert_pem()).unwrap();
        let cert = ca.issue(Role::Participant, "bank-a", &[], &[]).unwrap();
        let cert_der = cert_der_from_pem(&cert.cert_pem).unwrap();
        let info = hearth_crypto::pki::inspect_issued_cert(&ca_der, &cert_der).unwrap();
        let entry = RevokedEntry {
            serial: info.serial.clone(),
            revoked_at: SystemTime::now(),
            reason: RevocationReason::KeyCompromise,
        };
        let der = |n: u64, entries: &[RevokedEntry]| {
            crl_der_from_pem(&ca.sign_crl(n, entries, SystemTime::now()).unwrap()).unwrap()
        };
        let state = RevocationState::open(ca_der.clone(), Some(dir.path())).unwrap();
        assert!(!state.is_revoked(&cert_der), "nothing held, nothing revoked");
        assert_eq!(state.offer_der(&der(1, &[])).unwrap(), Offered::Adopted { number: 1, revoked: 0 });
        assert_eq!(
            state.offer_der(&der(2, std::slice::from_ref(&entry))).unwrap(),
            Offered::Adopted { number: 2, revoked: 1 }
        );
        assert!(state.is_revoked(&cert_der));
        // The older list (which did not revoke it) is not taken back.
        assert_eq!(state.offer_der(&der(1, &[])).unwrap(), Offered::NotNewer { offered: 1, held: 2 });
        assert!(state.is_revoked(&cert_der));
        // A list signed by another CA is refused.
        let other = ConsortiumCa::generate("other").unwrap();
        let forged = crl_der_from_pem(&other.sign_crl(9, &[], SystemTime::now()).unwrap()).unwrap();
        assert!(state.offer_der(&forged).is_err());
        assert_eq!(state.number(), Some(2));
        // Restarted: the kept list is in force again.
        let again = RevocationState::open(ca_der, Some(dir.path())).unwrap();
        assert_eq!(again.number(), Some(2));
        assert!(again.is_revoked(&cert_der));
    }
}
