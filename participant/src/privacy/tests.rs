//! The institution's own policy and ledger: each refusal a malicious or mistaken coordinator meets.

use hearth_crypto::pki::{ConsortiumCa, IssueOptions};

use super::*;

const ME: &str = "bank-a";

struct Fixture {
    _dir: tempfile::TempDir,
    ca: ConsortiumCa,
    path: PathBuf,
    store: Arc<Store>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), crate::store::test_keys(dir.path())).unwrap());
        let path = dir.path().join(SIGNED_POLICY_FILE);
        Self { _dir: dir, ca: ConsortiumCa::generate("c").unwrap(), path, store }
    }

    fn ca_der(&self) -> Vec<u8> {
        hearth_crypto::pki::cert_der_from_pem(&self.ca.cert_pem()).unwrap()
    }

    /// The participant's view, opened afresh from the store (as after a restart).
    fn local(&self) -> LocalPrivacy {
        LocalPrivacy::open(ME.into(), self.path.clone(), self.ca_der(), Arc::clone(&self.store)).unwrap()
    }

    /// `toml` signed by a certificate of `role` acting for `institution`.
    fn signed(&self, toml: &str, role: Role, institution: Option<&str>) -> SignedPolicy {
        let options = IssueOptions { institution: institution.map(str::to_string), ..Default::default() };
        let c = self.ca.issue_with(role, "dpo", &[], &[], &options).unwrap();
        SignedPolicy::sign(toml.to_string(), &c.cert_pem, &c.key_pem).unwrap()
    }

    fn install(&self, toml: &str) {
        let signed = self.signed(toml, Role::Dpo, Some(ME));
        std::fs::write(&self.path, serde_json::to_vec(&signed).unwrap()).unwrap();
    }
}

fn policy(epsilon: f64, extra: &str) -> String {
    format!(
        "[tenants.{ME}.families.intent]\nepsilon = {epsilon}\ndelta = 1e-4\ndelta_per_charge = 1e-5\n\
         privacy_unit = \"record\"\nmin_participants = 3\n{extra}\n\
         [tenants.{ME}.families.label-stats]\nepsilon = {epsilon}\ndelta = 1e-5\nprivacy_unit = \"record\"\n\
         min_participants = 4\n"
    )
}

/// A DP intent job of `rounds` rounds at noise multiplier `sigma`, as a coordinator announces it.
fn dp_spec(sigma: f64, rounds: u64) -> v1::PrivacySpec {
    v1::PrivacySpec {
        family: "intent".into(),
        clipping_norm: 0.1,
        noise_multiplier: sigma,
        sampling_rate: 1.0,
        privacy_unit: "record".into(),
        min_survivors: 3,
        declared_records: 1_000,
        bias_scale: 0.3,
        max_cohort: 5,
        delta: 1e-5,
        rounds,
    }
}

fn charge(sigma: f64, rounds: u64) -> Charge {
    training_charge(&dp_spec(sigma, rounds), 1_000, 32, 3).unwrap()
}

fn err(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn only_the_institutions_own_dpo_signs_its_policy() {
    let f = Fixture::new();
    let ca_der = f.ca_der();
    let toml = policy(8.0, "");
    let (p, signer) = f.signed(&toml, Role::Dpo, Some(ME)).verify(&ca_der, ME).unwrap();
    assert_eq!(signer.role, Role::Dpo);
    assert!(p.family(&TenantId(ME.into()), &FamilyId("intent".into())).is_ok());

    let other = err(f.signed(&toml, Role::Dpo, Some("airline-b")).verify(&ca_der, ME));
    assert!(other.contains("not by a data protection officer of bank-a"), "{other}");
    let consortium = err(f.signed(&toml, Role::Dpo, None).verify(&ca_der, ME));
    assert!(consortium.contains("not by a data protection officer"), "{consortium}");
    let operator = err(f.signed(&toml, Role::Operator, Some(ME)).verify(&ca_der, ME));
    assert!(operator.contains("not by a data protection officer"), "{operator}");

    let mut tampered = f.signed(&toml, Role::Dpo, Some(ME));
    tampered.policy_toml = tampered.policy_toml.replace("epsilon = 8", "epsilon = 80");
    assert!(err(tampered.verify(&ca_der, ME)).contains("does not verify"));

    let foreign = ConsortiumCa::generate("another consortium").unwrap();
    let c = foreign
        .issue_with(
            Role::Dpo,
            "dpo",
            &[],
            &[],
            &IssueOptions { institution: Some(ME.into()), ..Default::default() },
        )
        .unwrap();
    let forged = SignedPolicy::sign(toml.clone(), &c.cert_pem, &c.key_pem).unwrap();
    assert!(err(forged.verify(&ca_der, ME)).contains("signer's certificate"));

    let two = format!("{toml}\n[tenants.airline-b.families.intent]\nepsilon = 1.0\ndelta = 1e-5\nprivacy_unit = \"record\"\nmin_participants = 3\n");
    let e = err(f.signed(&two, Role::Dpo, Some(ME)).verify(&ca_der, ME));
    assert!(e.contains("names only \"bank-a\""), "{e}");
}

#[test]
fn without_a_policy_no_private_round_or_query_is_answered() {
    let f = Fixture::new();
    let local = f.local();
    let e = err(local.admit_round("j", 1, 7, "intent", Kind::Private, Some(&charge(2.0, 10))));
    assert!(e.contains("no signed privacy policy"), "{e}");
    assert!(err(local.admit_query("q", "label-stats")).contains("no signed privacy policy"));
    // Non-private secure training of a held family goes on as before.
    assert_eq!(local.admit_round("j", 1, 8, "emotion", Kind::Secure, None).unwrap(), 0);
    // A policy that is there but does not verify stops everything.
    std::fs::write(
        &f.path,
        b"{\"policy_toml\":\"\",\"signature_hex\":\"00\",\"signer_certificate_pem\":\"x\"}",
    )
    .unwrap();
    assert!(err(local.admit_round("j", 2, 9, "emotion", Kind::Secure, None)).contains("privacy policy"));
}

#[test]
fn only_families_the_policy_lists_may_use_the_data() {
    let f = Fixture::new();
    f.install(&policy(8.0, ""));
    let local = f.local();
    let e = err(local.admit_round("j", 1, 1, "recommend", Kind::Secure, None));
    assert!(e.contains("does not let family \"recommend\" use its data"), "{e}");
    assert!(err(local.admit_query("q", "spend-stats")).contains("\"spend-stats\""));
    // A listed family returns its survivor floor.
    assert_eq!(local.admit_round("j", 1, 2, "intent", Kind::Secure, None).unwrap(), 3);
    assert_eq!(local.admit_query("q", "label-stats").unwrap(), 4);
}

#[test]
fn a_replayed_instance_and_a_repeated_secure_round_are_refused() {
    let f = Fixture::new();
    let local = f.local();
    local.admit_round("j", 4, 100, "intent", Kind::Secure, None).unwrap();
    // The same instance again: a replay.
    let e = err(local.admit_round("j", 4, 100, "intent", Kind::Secure, None));
    assert!(e.contains("was joined before"), "{e}");
    // A retry (new instance) before this node sent anything may go ahead: nothing of it left.
    local.admit_round("j", 4, 101, "intent", Kind::Secure, None).unwrap();
    local.release_round("j", 4, "intent", None).unwrap();
    // Once the masked update left, a repeated round is refused, also after a restart.
    let e = err(f.local().admit_round("j", 4, 102, "intent", Kind::Secure, None));
    assert!(e.contains("already sent its masked update"), "{e}");
    assert!(err(local.release_round("j", 4, "intent", None)).contains("already sent"));
    // The next round is another matter.
    local.admit_round("j", 5, 103, "intent", Kind::Secure, None).unwrap();
}

#[test]
fn a_round_is_joined_in_a_bounded_number_of_instances() {
    let f = Fixture::new();
    let local = f.local();
    // A coordinator aborting every instance before any masked input left, to draw the graph again.
    for instance in 0..MAX_INSTANCES_PER_ROUND as u64 {
        local.admit_round("j", 3, 200 + instance, "intent", Kind::Secure, None).unwrap();
    }
    let e = err(f.local().admit_round("j", 3, 300, "intent", Kind::Secure, None));
    assert!(e.contains("joined 6 instances of it already"), "{e}");
    // Other rounds are not affected.
    local.admit_round("j", 4, 301, "intent", Kind::Secure, None).unwrap();
}

#[test]
fn every_release_is_charged_and_work_past_the_budget_is_refused() {
    let f = Fixture::new();
    let job = charge(2.0, 10);
    let cost = job.worst_case(1e-5).unwrap().epsilon;
    let one = one_step(job.clone()).worst_case(1e-5).unwrap().epsilon;
    // Room for the job and one more release, not for a second job.
    f.install(&policy(cost + 1.5 * one, ""));
    let local = f.local();
    for round in 1..=10 {
        local.admit_round("a", round, round, "intent", Kind::Private, Some(&job)).unwrap();
        local.release_round("a", round, "intent", Some(job.clone())).unwrap();
    }
    let spent = spent_epsilon(&local.lock().ledger, ReservationId(0));
    assert!((spent - cost).abs() < 1e-9, "ten releases cost the job's reservation: {spent} vs {cost}");
    // The ledger knows the job is private: its models are never evaluated with exact counts.
    assert!(local.released_for("a") && !local.released_for("b"));
    // A retried round is a fresh release: charged again, beyond the job's rounds, by basic composition.
    local.admit_round("a", 10, 99, "intent", Kind::Private, Some(&job)).unwrap();
    let detail = local.release_round("a", 10, "intent", Some(job.clone())).unwrap();
    assert!(detail.contains("release 11"), "{detail}");
    // One more does not fit: refused, and nothing is recorded as sent.
    let e = err(local.release_round("a", 10, "intent", Some(job.clone())));
    assert!(e.contains("beyond its 10 rounds") && e.contains("remains"), "{e}");
    // A second job is refused before any work, whatever the coordinator's budget says; also after a restart.
    let e = err(f.local().admit_round("b", 1, 1, "intent", Kind::Private, Some(&job)));
    assert!(e.contains("job b: the institution's intent budget"), "{e}");
    // The announced parameters may not change within a job (the reservation is for them).
    let e = err(f.local().release_round("a", 11, "intent", Some(charge(3.0, 10))));
    assert!(e.contains("job a"), "{e}");
}

#[test]
fn noise_below_the_institutions_floor_is_refused() {
    let f = Fixture::new();
    f.install(&policy(1000.0, "min_noise_multiplier = 1.5"));
    let local = f.local();
    let e = err(local.admit_round("weak", 1, 1, "intent", Kind::Private, Some(&charge(0.5, 10))));
    assert!(e.contains("below the policy's floor of 1.5"), "{e}");
    local.admit_round("strong", 1, 2, "intent", Kind::Private, Some(&charge(2.0, 10))).unwrap();
}

#[test]
fn a_query_is_answered_once_and_charged() {
    use hearth_policies::mechanism::DistributedDiscreteGaussianSpec;
    let f = Fixture::new();
    f.install(&policy(8.0, ""));
    let local = f.local();
    let m = DistributedDiscreteGaussian::new(DistributedDiscreteGaussianSpec {
        local_scale: 3.0,
        min_survivors: 4,
        cohort: 5,
        l2_sensitivity: 1.0,
        l1_sensitivity: 1.0,
        dimension: 10,
    })
    .unwrap();
    local.admit_query("q1", "label-stats").unwrap();
    let detail = local.release_query("q1", "label-stats", &m, 5).unwrap();
    assert!(detail.contains("epsilon"), "{detail}");
    assert!(err(f.local().admit_query("q1", "label-stats")).contains("answered before"));
    assert!(err(local.release_query("q1", "label-stats", &m, 5)).contains("answered before"));
    let report = local.report().unwrap().unwrap();
    let line = report.families.iter().find(|f| f.family.0 == "label-stats").unwrap();
    assert!(line.spent.epsilon > 0.0 && line.charges.len() == 1, "{report}");
}
