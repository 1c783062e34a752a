//! This institution's own say over its data, checked by its participant whatever the coordinator
//! announces: the privacy policy its data protection officer signed, and the ledger of every release of
//! its data.
//!
//! Under GDPR and PIPL each institution is a controller of its customers' data: its DPO decides which
//! families may use it, with which budget and how little noise. The DPO signs a policy in the consortium
//! policy format with one tenant, this institution (`hearth budget sign`); the participant reads and
//! verifies it at every use, so a DPO replaces the file and it applies to the next round without a
//! restart. The signer's certificate must chain to the consortium CA, carry the DPO role and act for this
//! institution.
//!
//! Then, for every round or query the coordinator announces, the participant itself:
//! - takes part only in families the policy lists (without a policy: non-private training of the
//!   families it holds, as before, but no differentially private round and no query, since there is no
//!   budget to charge them to);
//! - refuses a release below the family's noise floor, with a weaker privacy unit or a larger clipping
//!   norm than the policy allows, and survivor floors below its `min_participants` (the floor is part of
//!   the round's protocol context, and no client signs a smaller survivor set);
//! - charges every release to its own ledger just before the masked input leaves, and refuses one the
//!   budget cannot pay for: a DP job reserves its announced rounds (composed under Rényi DP, as the
//!   coordinator accounts them), each masked input is one release of it, and a retried round is a fresh
//!   release (new sample, new noise) charged again, beyond the reservation as a job of its own;
//! - joins each instance of a round once, never sends a second masked input to a non-private round it
//!   already contributed to (two sums over different cohorts would difference its update out), and
//!   answers each query once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hearth_crypto::pki::{NodeIdentity, Role};
use hearth_crypto::SuiteId;
use hearth_policies::budget::{
    Charge, FamilyId, Ledger, PrivacyPolicy, PrivacyUnit, QueryNoise, QueryPlan, ReservationId, TenantId,
    Timestamp,
};
use hearth_policies::mechanism::DistributedDiscreteGaussian;
use hearth_proto::v1;
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// Largest signed policy file read, in bytes.
pub const MAX_SIGNED_POLICY_BYTES: u64 = 1 << 20;

/// The file name of an institution's signed policy, in its directory of the PKI (`pki/<participant>/`).
pub const SIGNED_POLICY_FILE: &str = "privacy-policy.json";

/// The most instances (attempts) of one round this participant joins. The coordinator tries a round at
/// most three times and may start over once after a restart; a coordinator that aborts instances to draw
/// the neighbour graph again (each instance's graph seed is fresh and random, see `hearth_secagg::graph`)
/// gets no more than this many draws.
pub const MAX_INSTANCES_PER_ROUND: usize = 6;

/// A privacy policy with its DPO's signature: what `hearth budget sign` writes and a participant reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    /// The policy, in the consortium's TOML policy format, with exactly one tenant: the institution.
    pub policy_toml: String,
    /// The signature over `policy_toml`'s bytes with the key of `signer_certificate_pem`, in hex.
    pub signature_hex: String,
    /// The DPO's certificate (PEM).
    pub signer_certificate_pem: String,
}

impl SignedPolicy {
    /// Signs `policy_toml` with a DPO's key (PEM, the TLS key beside `cert_pem`). Checks the policy first,
    /// so a mistake is reported before anything is signed.
    pub fn sign(policy_toml: String, cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        PrivacyPolicy::from_toml(&policy_toml).context("the policy")?;
        let secret = hearth_crypto::pki::p256_secret_from_pem(key_pem).context("the DPO's private key")?;
        let signature = SuiteId::International.suite().sign(&secret, policy_toml.as_bytes())?;
        Ok(Self {
            policy_toml,
            signature_hex: hex::encode(signature),
            signer_certificate_pem: cert_pem.to_string(),
        })
    }

    /// Checks the signature, the signer (a DPO of `institution`, under the consortium CA) and the policy
    /// (valid, naming `institution` as its only tenant). Returns the policy and who signed it.
    pub fn verify(&self, ca_der: &[u8], institution: &str) -> anyhow::Result<(PrivacyPolicy, NodeIdentity)> {
        let cert_der = hearth_crypto::pki::cert_der_from_pem(&self.signer_certificate_pem)
            .context("the signer's certificate")?;
        let peer = hearth_crypto::pki::verify_node_cert(ca_der, &cert_der, SystemTime::now())
            .context("the signer's certificate")?;
        let signer = peer.identity;
        if signer.role != Role::Dpo || signer.institution.as_deref() != Some(institution) {
            bail!("signed by {signer}, not by a data protection officer of {institution}");
        }
        let signature = hex::decode(self.signature_hex.trim()).context("the signature is not hex")?;
        SuiteId::International
            .suite()
            .verify(&peer.tls_public_key, self.policy_toml.as_bytes(), &signature)
            .map_err(|_| anyhow::anyhow!("the signature does not verify with {signer}'s certificate"))?;
        let policy = PrivacyPolicy::from_toml(&self.policy_toml).context("the policy")?;
        let tenants: Vec<&str> = policy.file().tenants.keys().map(|t| t.0.as_str()).collect();
        if tenants != [institution] {
            bail!("the policy names tenants {tenants:?}; an institution's own policy names only {institution:?}");
        }
        Ok((policy, signer))
    }

    /// Reads a signed policy file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
        if len > MAX_SIGNED_POLICY_BYTES {
            bail!("{}: {len} bytes, more than a policy may have ({MAX_SIGNED_POLICY_BYTES})", path.display());
        }
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{}: not a signed policy", path.display()))
    }
}

/// What this participant did in one (job, round).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RoundLog {
    /// The instances (attempts) it joined.
    instances: BTreeSet<u64>,
    /// Whether a masked input of it left this node.
    masked_sent: bool,
}

/// The persisted state: the ledger and what was contributed where.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    ledger: Ledger,
    /// `job#round` → what happened in it.
    rounds: BTreeMap<String, RoundLog>,
    /// DP job → masked inputs (releases) sent.
    releases: BTreeMap<String, u64>,
    /// Queries answered.
    queries: BTreeSet<String>,
}

const STATE_KEY: &str = "local";

/// What a round is, as far as this institution's policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A securely aggregated round of a training job without differential privacy.
    Secure,
    /// A differentially private training round.
    Private,
}

/// The policy, the ledger and the record of contributions, behind one lock and persisted in the store
/// after every change, before the caller acts on the answer.
pub struct LocalPrivacy {
    institution: String,
    policy_path: PathBuf,
    ca_der: Vec<u8>,
    store: Arc<Store>,
    state: Mutex<State>,
}

impl std::fmt::Debug for LocalPrivacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPrivacy")
            .field("institution", &self.institution)
            .field("policy_path", &self.policy_path)
            .finish_non_exhaustive()
    }
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn round_key(job: &str, round: u64) -> String {
    format!("{job}#{round}")
}

impl LocalPrivacy {
    /// Loads the ledger of `institution` (this participant's id) from `store` (empty the first time). The
    /// policy is read from `policy_path` at every use and verified against the CA `ca_der`.
    pub fn open(
        institution: String,
        policy_path: PathBuf,
        ca_der: Vec<u8>,
        store: Arc<Store>,
    ) -> anyhow::Result<Self> {
        let state = match store.load_privacy(STATE_KEY)? {
            Some(json) => serde_json::from_slice(&json).context("the stored privacy ledger is unreadable")?,
            None => State::default(),
        };
        Ok(Self { institution, policy_path, ca_der, store, state: Mutex::new(state) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section writes a whole new state (or returns before): a poisoned lock still
        // holds a consistent one.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persists `next` and makes it the state: nothing is acted on before it is on disk.
    fn commit(&self, state: &mut State, next: State) -> anyhow::Result<()> {
        let json = serde_json::to_vec(&next)?;
        self.store.save_privacy(STATE_KEY, &json).context("persisting the privacy ledger")?;
        *state = next;
        Ok(())
    }

    /// The institution's policy in force: `None` when no file is there; an error when one is there but
    /// does not verify (then nothing private runs).
    pub fn policy(&self) -> anyhow::Result<Option<PrivacyPolicy>> {
        if !self.policy_path.exists() {
            return Ok(None);
        }
        let signed = SignedPolicy::read(&self.policy_path)?;
        let (policy, _) = signed
            .verify(&self.ca_der, &self.institution)
            .with_context(|| format!("the institution's privacy policy {}", self.policy_path.display()))?;
        Ok(Some(policy))
    }

    fn tenant(&self) -> TenantId {
        TenantId(self.institution.clone())
    }

    /// The policy for `family`, which must be listed; `None` without a policy.
    fn family_floor(&self, family: &str, required: bool) -> anyhow::Result<Option<(PrivacyPolicy, u32)>> {
        match self.policy()? {
            Some(policy) => {
                let f = policy.family(&self.tenant(), &FamilyId(family.to_string())).with_context(|| {
                    format!("the institution's privacy policy does not let family {family:?} use its data")
                })?;
                let floor = f.min_participants;
                Ok(Some((policy, floor)))
            }
            None if required => bail!(
                "this institution has no signed privacy policy ({}): it takes part in no differentially \
                 private round or query (its DPO signs one with `hearth budget sign`)",
                self.policy_path.display()
            ),
            None => Ok(None),
        }
    }

    /// Admits this participant to instance `instance` of round `round` of `job` (family `family`):
    /// the family must be one the policy lets use the data (a policy is required for a private round),
    /// the instance must be new (and at most [`MAX_INSTANCES_PER_ROUND`] of the round), and a non-private round must not have had a masked input from here
    /// already. Returns the fewest survivors the institution's policy accepts (0: no policy). Records the
    /// instance before returning. For a private round, `charge` (the whole job) is tried against the ledger
    /// first, so a job the budget or the policy's rules refuse is refused before any work.
    pub(crate) fn admit_round(
        &self,
        job: &str,
        round: u64,
        instance: u64,
        family: &str,
        kind: Kind,
        charge: Option<&Charge>,
    ) -> anyhow::Result<u32> {
        let policy = self.family_floor(family, kind == Kind::Private)?;
        let floor = policy.as_ref().map_or(0, |(_, f)| *f);
        let mut state = self.lock();
        if let (Some(charge), Some((policy, _))) = (charge, &policy) {
            // Before any work: would the job's reservation be accepted (rules, noise floor, budget)?
            let mut trial = state.ledger.clone();
            trial
                .reserve(
                    policy,
                    &[self.tenant()],
                    &FamilyId(family.to_string()),
                    &format!("job:{job}"),
                    charge.clone(),
                    now(),
                )
                .with_context(|| format!("job {job}: the institution's {family} budget"))?;
        }
        let key = round_key(job, round);
        let log = state.rounds.get(&key).cloned().unwrap_or_default();
        if log.instances.contains(&instance) {
            bail!("round {round} of job {job}: instance {instance:#x} was joined before; a replayed round is refused");
        }
        if log.instances.len() >= MAX_INSTANCES_PER_ROUND {
            bail!(
                "round {round} of job {job}: this participant joined {} instances of it already, the most it \
                 joins ({MAX_INSTANCES_PER_ROUND}); a coordinator restarting a round over and over could choose \
                 among its neighbour graphs",
                log.instances.len()
            );
        }
        if kind == Kind::Secure && log.masked_sent {
            bail!(
                "round {round} of job {job}: this participant already sent its masked update; a repeated \
                 round (another cohort, the same update) could difference it out"
            );
        }
        let mut next = state.clone();
        next.rounds.entry(key).or_default().instances.insert(instance);
        self.commit(&mut state, next)?;
        Ok(floor)
    }

    /// Records, just before it leaves, that this node sends its masked input to (job, round); for a
    /// private round charges it first as the next release of the job: `charge` is the whole job (its
    /// announced rounds), reserved against the family's budget the first time. Refuses (and nothing is
    /// sent) when the budget cannot pay, a rule of the policy is broken, or the job's parameters changed.
    /// Returns a description of the charge for the audit log.
    pub(crate) fn release_round(
        &self,
        job: &str,
        round: u64,
        family: &str,
        charge: Option<Charge>,
    ) -> anyhow::Result<String> {
        let policy = match &charge {
            Some(_) => self.family_floor(family, true)?.map(|(p, _)| p),
            None => None,
        };
        let mut state = self.lock();
        let key = round_key(job, round);
        if charge.is_none() && state.rounds.get(&key).is_some_and(|l| l.masked_sent) {
            bail!("round {round} of job {job}: a masked update was already sent");
        }
        let mut next = state.clone();
        let mut detail = format!("job {job} round {round}: masked update, no privacy charge (not a DP job)");
        if let (Some(charge), Some(policy)) = (charge, policy) {
            let family_id = FamilyId(family.to_string());
            let release = next.releases.get(job).copied().unwrap_or(0) + 1;
            let steps = charge.steps();
            let (id, step) = if release <= steps {
                let id = next
                    .ledger
                    .reserve(&policy, &[self.tenant()], &family_id, &format!("job:{job}"), charge, now())
                    .with_context(|| format!("job {job}: the institution's {family} budget"))?;
                (id, release)
            } else {
                // More releases than the job announced rounds (retried rounds): each one more is charged
                // on its own, by basic composition.
                let one = one_step(charge);
                let id = next
                    .ledger
                    .reserve(
                        &policy,
                        &[self.tenant()],
                        &family_id,
                        &format!("job:{job}:release:{release}"),
                        one,
                        now(),
                    )
                    .with_context(|| {
                        format!("job {job}: release {release} beyond its {steps} rounds, the {family} budget")
                    })?;
                (id, 1)
            };
            next.ledger.commit_round(id, step)?;
            next.releases.insert(job.to_string(), release);
            let spent = spent_epsilon(&next.ledger, id);
            detail = format!(
                "job {job} round {round}: release {release} charged to family {family} (this job so far: \
                 epsilon {spent:.4})"
            );
        }
        next.rounds.entry(key).or_default().masked_sent = true;
        self.commit(&mut state, next)?;
        Ok(detail)
    }

    /// Whether this institution's ledger holds a DP release of `job` (the job is differentially private).
    pub(crate) fn released_for(&self, job: &str) -> bool {
        self.lock().releases.contains_key(job)
    }

    /// Admits query `query_id` of `family`: a policy listing the family is required, and a query is
    /// answered once. Returns the fewest survivors the policy accepts.
    pub(crate) fn admit_query(&self, query_id: &str, family: &str) -> anyhow::Result<u32> {
        let (_, floor) = self.family_floor(family, true)?.context("no policy")?;
        if self.lock().queries.contains(query_id) {
            bail!("query {query_id} was answered before; a repeated query is refused");
        }
        Ok(floor)
    }

    /// Charges query `query_id`'s release (its noise `mechanism` over a cohort of `participants`) to the
    /// family's budget just before the masked counts leave, and records the query as answered.
    pub(crate) fn release_query(
        &self,
        query_id: &str,
        family: &str,
        mechanism: &DistributedDiscreteGaussian,
        participants: u32,
    ) -> anyhow::Result<String> {
        let mut state = self.lock();
        let mut next = state.clone();
        let id = self.charge_query(&mut next, query_id, family, mechanism, participants)?;
        next.ledger.commit_round(id, 1)?;
        next.ledger.commit(id)?;
        next.queries.insert(query_id.to_string());
        let spent = spent_epsilon(&next.ledger, id);
        self.commit(&mut state, next)?;
        Ok(format!("query {query_id}: charged to family {family}, epsilon {spent:.4}"))
    }

    /// Whether [`Self::release_query`] would be accepted now (policy rules, noise floor, budget), so a
    /// query the institution cannot pay for is refused before it joins.
    pub(crate) fn check_query(
        &self,
        query_id: &str,
        family: &str,
        mechanism: &DistributedDiscreteGaussian,
        participants: u32,
    ) -> anyhow::Result<()> {
        let mut trial = self.lock().clone();
        self.charge_query(&mut trial, query_id, family, mechanism, participants).map(|_| ())
    }

    fn charge_query(
        &self,
        state: &mut State,
        query_id: &str,
        family: &str,
        mechanism: &DistributedDiscreteGaussian,
        participants: u32,
    ) -> anyhow::Result<ReservationId> {
        let (policy, _) = self.family_floor(family, true)?.context("no policy")?;
        if state.queries.contains(query_id) {
            bail!("query {query_id} was answered before; a repeated query is refused");
        }
        let charge = Charge::Query(QueryPlan {
            noise: QueryNoise::DistributedGaussian(mechanism.clone()),
            privacy_unit: PrivacyUnit::Record,
            participants,
            records: None,
        });
        let family_id = FamilyId(family.to_string());
        state
            .ledger
            .reserve(&policy, &[self.tenant()], &family_id, &format!("query:{query_id}"), charge, now())
            .with_context(|| format!("query {query_id}: the institution's {family} budget"))
    }

    /// Settles a finished job's reservation: what was released stays spent, the rest returns.
    pub(crate) fn finish_job(&self, job: &str) -> anyhow::Result<()> {
        let mut state = self.lock();
        let Some(id) = state.ledger.find(&format!("job:{job}")).map(|r| r.id) else { return Ok(()) };
        let mut next = state.clone();
        if next.ledger.commit(id).is_err() {
            return Ok(()); // already settled
        }
        self.commit(&mut state, next)
    }

    /// The ledger's report under the policy in force (none without a policy).
    pub fn report(&self) -> anyhow::Result<Option<hearth_policies::budget::Report>> {
        let Some(policy) = self.policy()? else { return Ok(None) };
        Ok(Some(self.lock().ledger.report(&policy, now())))
    }
}

/// One release of a training job's mechanism, as a job of its own.
fn one_step(charge: Charge) -> Charge {
    match charge {
        Charge::Training(mut plan) => {
            plan.rounds = 1;
            Charge::Training(plan)
        }
        other => other,
    }
}

/// Epsilon spent so far by reservation `id` (its first share: the only tenant is this institution).
fn spent_epsilon(ledger: &Ledger, id: ReservationId) -> f64 {
    ledger.reservation(id).and_then(|r| r.shares.first()).map_or(0.0, |s| s.spent.epsilon)
}

/// The ledger charge of a DP training job as this participant computes it from the announced public
/// parameters: `rounds` releases of the distributed discrete Gaussian each participant adds on the grid of
/// the job's largest cohort (the same accounting as the coordinator's), amplified by Poisson sampling.
pub(crate) fn training_charge(
    privacy: &v1::PrivacySpec,
    num_params: u64,
    modulus_bits: u8,
    min_survivors: u32,
) -> anyhow::Result<Charge> {
    use hearth_models::{DpConfig, DpParams, RoundShape};
    if privacy.rounds == 0 {
        bail!("the job announces no number of rounds: its cost cannot be reserved");
    }
    if privacy.max_cohort == 0 || privacy.declared_records == 0 {
        bail!("the job announces no largest cohort or no declared records: its cost cannot be computed");
    }
    let config = DpConfig::new(DpParams {
        clip_norm: privacy.clipping_norm,
        sampling_rate: privacy.sampling_rate,
        noise_multiplier: privacy.noise_multiplier,
        rounds: privacy.rounds,
        min_survivors: privacy.min_survivors,
        bias_scale: if privacy.bias_scale == 0.0 { 1.0 } else { privacy.bias_scale },
    })
    .context("the job's privacy parameters")?;
    let shape = RoundShape::for_job(
        privacy.clipping_norm,
        privacy.declared_records,
        privacy.max_cohort,
        num_params,
        modulus_bits,
    );
    let (grid, _) = config.round_grid(shape).context("the job's rounds")?;
    let mut plan = config.training_plan(&grid).context("the job's noise")?;
    plan.rounds = privacy.rounds;
    plan.privacy_unit = match privacy.privacy_unit.as_str() {
        "record" | "" => PrivacyUnit::Record,
        "customer" => PrivacyUnit::Customer,
        other => bail!("privacy unit {other:?}: expected record or customer"),
    };
    plan.min_participants = min_survivors;
    Ok(Charge::Training(plan))
}

#[cfg(test)]
mod tests;
