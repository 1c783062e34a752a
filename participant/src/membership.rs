//! The consortium's member list, signed by the institutions themselves: the operator holds the CA key and
//! could mint participant certificates at will (and fill a roster with "real" participants of its own), so
//! a participant accepts as roster members only the certificates on a list the members signed.
//!
//! The list names each member and the SHA-256 of its certificate (DER): a certificate the CA issues for a
//! new name, or re-issues for a listed name with another key, is on no list. Each member signs the list
//! with its own participant key (`hearth members sign`). A participant pins the list it first accepts
//! (signed by at least `threshold` of the members it names, itself among them) in its store, and
//! afterwards accepts a new version (a member joins or leaves, a certificate is renewed) only if it is
//! signed by at least `threshold` members *of the pinned list*; an older version, or another list under
//! the pinned version number, is refused. The file is read at every round, so a new signed version
//! applies without a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{bail, Context};
use hearth_crypto::digest::content_digest;
use hearth_crypto::pki::Role;
use hearth_crypto::SuiteId;
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// The file name of the signed member list (beside the CA certificate unless configured).
pub const MEMBERS_FILE: &str = "members.json";
/// Largest signed member list read, in bytes.
pub const MAX_MEMBERS_BYTES: u64 = 4 << 20;

/// One member: its participant id and the SHA-256 of its certificate (DER), in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The participant id its certificate carries.
    pub id: String,
    /// SHA-256 of its certificate (DER), hex.
    pub certificate_sha256: String,
}

/// The member list as written (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberList {
    /// Increases with every change.
    pub version: u64,
    /// Signatures of members of the pinned list a new version needs (and of its own members, the first).
    pub threshold: u32,
    /// The members.
    #[serde(rename = "member", default)]
    pub members: Vec<Member>,
}

impl MemberList {
    /// Parses and checks a list: a version from 1, a threshold of at least 1 and at most the members, no
    /// member twice, fingerprints of 32 bytes.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let list: MemberList = toml::from_str(text).context("the member list")?;
        if list.version == 0 {
            bail!("the member list's version must be at least 1");
        }
        if list.threshold == 0 || list.threshold as usize > list.members.len() {
            bail!(
                "threshold {} for {} members: must be 1..={}",
                list.threshold,
                list.members.len(),
                list.members.len()
            );
        }
        let mut ids = BTreeSet::new();
        for m in &list.members {
            if !ids.insert(m.id.as_str()) {
                bail!("member {:?} is listed twice", m.id);
            }
            hex::decode(&m.certificate_sha256)
                .ok()
                .filter(|b| b.len() == 32)
                .with_context(|| format!("member {:?}: certificate_sha256 is not 32 bytes of hex", m.id))?;
        }
        Ok(list)
    }

    /// Writes the list as TOML.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// Whether `id` with the certificate `cert_der` is a member.
    pub fn admits(&self, id: &str, cert_der: &[u8]) -> bool {
        let fingerprint = hex::encode(content_digest(cert_der));
        self.members.iter().any(|m| m.id == id && m.certificate_sha256 == fingerprint)
    }
}

/// A member whose signature verified: its participant id and certificate (DER).
pub type Signer = (String, Vec<u8>);

/// One member's signature over the list's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSignature {
    /// The signer's participant certificate (PEM).
    pub signer_certificate_pem: String,
    /// The signature over `list_toml`'s bytes with that certificate's key, hex.
    pub signature_hex: String,
}

/// A member list with its members' signatures: what `hearth members sign` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedMembers {
    /// The list (TOML), exactly as signed.
    pub list_toml: String,
    /// The signatures.
    pub signatures: Vec<MemberSignature>,
}

impl SignedMembers {
    /// Adds the signature of the participant holding `cert_pem` / `key_pem` to `self` (a list not signed
    /// yet has no signatures).
    pub fn sign(&mut self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        MemberList::from_toml(&self.list_toml)?;
        let secret = hearth_crypto::pki::p256_secret_from_pem(key_pem).context("the member's private key")?;
        let signature = SuiteId::International.suite().sign(&secret, self.list_toml.as_bytes())?;
        self.signatures.retain(|s| s.signer_certificate_pem != cert_pem);
        self.signatures.push(MemberSignature {
            signer_certificate_pem: cert_pem.to_string(),
            signature_hex: hex::encode(signature),
        });
        Ok(())
    }

    /// The list and who signed it validly: participants under the CA `ca_der`, each as (id, certificate
    /// DER). Signatures that do not verify are skipped (and do not count).
    pub fn verify(&self, ca_der: &[u8]) -> anyhow::Result<(MemberList, Vec<Signer>)> {
        let list = MemberList::from_toml(&self.list_toml)?;
        let mut signers: Vec<Signer> = Vec::new();
        for s in &self.signatures {
            let Ok(der) = hearth_crypto::pki::cert_der_from_pem(&s.signer_certificate_pem) else { continue };
            let Ok(peer) = hearth_crypto::pki::verify_node_cert(ca_der, &der, SystemTime::now()) else {
                continue;
            };
            if peer.identity.role != Role::Participant
                || signers.iter().any(|(id, _)| *id == peer.identity.id)
            {
                continue;
            }
            let Ok(signature) = hex::decode(s.signature_hex.trim()) else { continue };
            if SuiteId::International
                .suite()
                .verify(&peer.tls_public_key, self.list_toml.as_bytes(), &signature)
                .is_ok()
            {
                signers.push((peer.identity.id, der));
            }
        }
        Ok((list, signers))
    }

    /// Reads a signed member list.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
        if len > MAX_MEMBERS_BYTES {
            bail!("{}: {len} bytes, more than a member list may have", path.display());
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a signed member list", path.display()))
    }
}

/// How many of `signers` are members of `list` (same id and certificate).
fn signed_by_members(list: &MemberList, signers: &[Signer]) -> usize {
    signers.iter().filter(|(id, der)| list.admits(id, der)).count()
}

const PINNED_KEY: &str = "members";

/// The member list this participant accepted, pinned in its store, and where new versions come from.
pub struct Membership {
    path: PathBuf,
    ca_der: Vec<u8>,
    /// This participant (id, certificate DER): the first list must name it.
    me: (String, Vec<u8>),
    store: Arc<Store>,
    pinned: Mutex<Option<MemberList>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Membership {
    /// The membership of participant `me` (its id and certificate), reading lists from `path` and pinning
    /// them in `store`.
    pub fn open(
        path: PathBuf,
        ca_der: Vec<u8>,
        me: (String, Vec<u8>),
        store: Arc<Store>,
    ) -> anyhow::Result<Self> {
        let pinned = match store.load_privacy(PINNED_KEY)? {
            Some(json) => {
                Some(serde_json::from_slice(&json).context("the pinned member list is unreadable")?)
            }
            None => None,
        };
        Ok(Self { path, ca_der, me, store, pinned: Mutex::new(pinned) })
    }

    /// Where lists are read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The list in force: the file's, if it is the pinned one or a valid successor (then pinned), else an
    /// error naming why; the pinned one if the file is gone.
    pub fn current(&self) -> anyhow::Result<MemberList> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        if !self.path.exists() {
            return pinned.clone().with_context(|| format!("no member list at {}", self.path.display()));
        }
        let signed = SignedMembers::read(&self.path)?;
        let (list, signers) =
            signed.verify(&self.ca_der).with_context(|| format!("{}", self.path.display()))?;
        let accepted = match pinned.as_ref() {
            Some(p) if list.version < p.version => {
                bail!(
                    "{}: version {} is older than the pinned version {}",
                    self.path.display(),
                    list.version,
                    p.version
                )
            }
            Some(p) if list.version == p.version => {
                if list != *p {
                    bail!("{}: another list under the pinned version {}", self.path.display(), p.version);
                }
                return Ok(p.clone());
            }
            Some(p) => {
                let n = signed_by_members(p, &signers);
                if n < p.threshold as usize {
                    bail!(
                        "{}: version {} is signed by {n} members of the pinned version {}; it needs {}",
                        self.path.display(),
                        list.version,
                        p.version,
                        p.threshold
                    );
                }
                list
            }
            None => {
                if !list.admits(&self.me.0, &self.me.1) {
                    bail!("{}: this participant ({}) is not on the list", self.path.display(), self.me.0);
                }
                let n = signed_by_members(&list, &signers);
                if n < list.threshold as usize {
                    bail!(
                        "{}: signed by {n} of its members; it needs {}",
                        self.path.display(),
                        list.threshold
                    );
                }
                list
            }
        };
        self.store
            .save_privacy(PINNED_KEY, &serde_json::to_vec(&accepted)?)
            .context("pinning the member list")?;
        *pinned = Some(accepted.clone());
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests;
