//! The member list: who may be in a roster, and how the list changes.

use hearth_crypto::pki::{ConsortiumCa, IssuedCert};

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    ca: ConsortiumCa,
    store: Arc<Store>,
    certs: Vec<(String, IssuedCert)>,
}

fn der(c: &IssuedCert) -> Vec<u8> {
    hearth_crypto::pki::cert_der_from_pem(&c.cert_pem).unwrap()
}

impl Fixture {
    /// A CA and participants a, b, c.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), crate::store::test_keys(dir.path())).unwrap());
        let ca = ConsortiumCa::generate("c").unwrap();
        let certs = ["a", "b", "c"]
            .iter()
            .map(|id| (id.to_string(), ca.issue(Role::Participant, id, &[], &[]).unwrap()))
            .collect();
        Self { dir, ca, store, certs }
    }

    fn cert(&self, id: &str) -> &IssuedCert {
        &self.certs.iter().find(|(i, _)| i == id).unwrap().1
    }

    fn list(&self, version: u64, threshold: u32, members: &[(&str, &IssuedCert)]) -> MemberList {
        MemberList {
            version,
            threshold,
            members: members
                .iter()
                .map(|(id, c)| Member {
                    id: id.to_string(),
                    certificate_sha256: hex::encode(content_digest(&der(c))),
                })
                .collect(),
        }
    }

    /// Writes `list` signed by `signers` as the file participants read.
    fn publish(&self, list: &MemberList, signers: &[&IssuedCert]) {
        let mut signed = SignedMembers { list_toml: list.to_toml().unwrap(), signatures: Vec::new() };
        for s in signers {
            signed.sign(&s.cert_pem, &s.key_pem).unwrap();
        }
        std::fs::write(self.path(), serde_json::to_vec(&signed).unwrap()).unwrap();
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(MEMBERS_FILE)
    }

    /// Participant `a`'s membership, opened afresh (as after a restart).
    fn membership(&self) -> Membership {
        let ca_der = hearth_crypto::pki::cert_der_from_pem(&self.ca.cert_pem()).unwrap();
        Membership::open(self.path(), ca_der, ("a".into(), der(self.cert("a"))), Arc::clone(&self.store))
            .unwrap()
    }

    fn abc(&self) -> MemberList {
        self.list(1, 2, &[("a", self.cert("a")), ("b", self.cert("b")), ("c", self.cert("c"))])
    }
}

fn err(r: anyhow::Result<MemberList>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn only_listed_members_with_their_certificates_are_admitted() {
    let f = Fixture::new();
    f.publish(&f.abc(), &[f.cert("a"), f.cert("b"), f.cert("c")]);
    let list = f.membership().current().unwrap();
    assert!(list.admits("b", &der(f.cert("b"))));
    // A participant certificate the CA minted for a name nobody listed: no member.
    let sybil = f.ca.issue(Role::Participant, "sybil", &[], &[]).unwrap();
    assert!(!list.admits("sybil", &der(&sybil)));
    // A certificate the CA issued again for a listed name (another key): no member either.
    let again = f.ca.issue(Role::Participant, "b", &[], &[]).unwrap();
    assert!(!list.admits("b", &der(&again)));
}

#[test]
fn a_first_list_needs_its_threshold_and_this_participant() {
    let f = Fixture::new();
    f.publish(&f.abc(), &[f.cert("a")]);
    assert!(err(f.membership().current()).contains("signed by 1 of its members; it needs 2"));
    // Signatures by certificates not on the list, or by a non-participant, do not count.
    let outsider = f.ca.issue(Role::Participant, "d", &[], &[]).unwrap();
    let operator = f.ca.issue(Role::Operator, "operator", &[], &[]).unwrap();
    f.publish(&f.abc(), &[f.cert("a"), &outsider, &operator]);
    assert!(err(f.membership().current()).contains("signed by 1 of its members"));
    let without_me = f.list(1, 1, &[("b", f.cert("b")), ("c", f.cert("c"))]);
    f.publish(&without_me, &[f.cert("b"), f.cert("c")]);
    assert!(err(f.membership().current()).contains("(a) is not on the list"));
    assert!(f.membership().current().is_err(), "nothing was pinned");
}

#[test]
fn a_new_version_needs_a_threshold_of_the_pinned_members() {
    let f = Fixture::new();
    f.publish(&f.abc(), &[f.cert("a"), f.cert("b")]);
    f.membership().current().unwrap();
    // d joins: signed by d and one pinned member is not enough (threshold 2 of the pinned list).
    let d = f.ca.issue(Role::Participant, "d", &[], &[]).unwrap();
    let v2 = f.list(2, 2, &[("a", f.cert("a")), ("b", f.cert("b")), ("c", f.cert("c")), ("d", &d)]);
    f.publish(&v2, &[&d, f.cert("c")]);
    let e = err(f.membership().current());
    assert!(e.contains("signed by 1 members of the pinned version 1; it needs 2"), "{e}");
    // Two pinned members sign: accepted, pinned (also after a restart).
    f.publish(&v2, &[&d, f.cert("c"), f.cert("b")]);
    assert_eq!(f.membership().current().unwrap().version, 2);
    std::fs::remove_file(f.path()).unwrap();
    assert_eq!(f.membership().current().unwrap(), v2, "the pinned list stays in force without the file");
}

#[test]
fn an_older_or_altered_list_is_refused() {
    let f = Fixture::new();
    let v2 = f.list(2, 2, &[("a", f.cert("a")), ("b", f.cert("b")), ("c", f.cert("c"))]);
    f.publish(&v2, &[f.cert("a"), f.cert("b"), f.cert("c")]);
    f.membership().current().unwrap();
    f.publish(&f.abc(), &[f.cert("a"), f.cert("b"), f.cert("c")]);
    assert!(err(f.membership().current()).contains("older than the pinned version 2"));
    let sybil = f.ca.issue(Role::Participant, "sybil", &[], &[]).unwrap();
    let other = f.list(2, 1, &[("a", f.cert("a")), ("sybil", &sybil)]);
    f.publish(&other, &[f.cert("a"), f.cert("b"), f.cert("c")]);
    assert!(err(f.membership().current()).contains("another list under the pinned version 2"));
    // A tampered text does not verify: no signature counts.
    let mut signed = SignedMembers { list_toml: v2.to_toml().unwrap(), signatures: Vec::new() };
    signed.sign(&f.cert("a").cert_pem, &f.cert("a").key_pem).unwrap();
    signed.list_toml = signed.list_toml.replace("threshold = 2", "threshold = 1");
    let (_, signers) =
        signed.verify(&hearth_crypto::pki::cert_der_from_pem(&f.ca.cert_pem()).unwrap()).unwrap();
    assert!(signers.is_empty());
}
