//! The data protection officer's privacy policy and the budget ledger, on the coordinator.
//!
//! The ledger (`hearth_policies::Ledger`) decides; this module keeps it behind one lock and persists it
//! after every change, before the caller acts on the answer, so that concurrent submissions cannot
//! overspend and spent budget survives a restart. A DP job reserves its worst case against every
//! participating institution's budget when it is submitted; each committed round is charged by its
//! number (a retried round is charged once); the job's end settles the reservation. Every change is
//! audited; a policy change also carries the DPO's signature, verified against their certificate.

use std::sync::{Arc, Mutex};

use hearth_crypto::digest::content_digest;
use hearth_policies::accountant::SubsampledGaussian;
use hearth_policies::budget::{
    BudgetError, Charge, FamilyId, Ledger, PrivacyPolicy, PrivacyUnit, Report, ReservationId, TenantId,
    Timestamp, TrainingNoise, TrainingPlan,
};
use serde::{Deserialize, Serialize};

use crate::store::{JobPrivacy, Store, StoreError};

/// Largest policy accepted, in bytes.
pub(crate) const MAX_POLICY_BYTES: usize = 1 << 20;

/// A policy as the DPO set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredPolicy {
    pub(crate) toml: String,
    pub(crate) version: u64,
    pub(crate) sha256: [u8; 32],
    pub(crate) set_by: String,
    pub(crate) set_unix_ms: u64,
    pub(crate) signature: Vec<u8>,
    pub(crate) signer_certificate_der: Vec<u8>,
    /// Set when a DPO retired the policy: (who, when). A retired policy is kept for its version number
    /// and the record; it is not in force.
    #[serde(default)]
    pub(crate) retired: Option<(String, u64)>,
}

struct State {
    policy: Option<(PrivacyPolicy, StoredPolicy)>,
    /// The last version set, in force or retired: the next one is numbered after it.
    last_version: u64,
    ledger: Ledger,
}

/// The policy in force and the ledger.
pub(crate) struct Privacy {
    state: Mutex<State>,
    store: Arc<Store>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy").finish_non_exhaustive()
    }
}

/// Why a privacy operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrivacyError {
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

const POLICY_KEY: &str = "policy";
const LEDGER_KEY: &str = "ledger";

fn now_ts() -> Timestamp {
    Timestamp(crate::audit::now_ms() / 1000)
}

impl Privacy {
    /// Loads the stored policy and ledger (none the first time).
    pub(crate) fn open(store: Arc<Store>) -> Result<Self, PrivacyError> {
        let corrupt =
            |what: &str, e: String| StoreError::Db(format!("stored privacy {what} is unreadable: {e}"));
        let (policy, last_version) = match store.load_privacy(POLICY_KEY)? {
            Some(json) => {
                let stored: StoredPolicy =
                    serde_json::from_slice(&json).map_err(|e| corrupt("policy", e.to_string()))?;
                let version = stored.version;
                if stored.retired.is_some() {
                    (None, version)
                } else {
                    let parsed = PrivacyPolicy::from_toml(&stored.toml)?;
                    (Some((parsed, stored)), version)
                }
            }
            None => (None, 0),
        };
        let ledger = match store.load_privacy(LEDGER_KEY)? {
            Some(json) => serde_json::from_slice(&json).map_err(|e| corrupt("ledger", e.to_string()))?,
            None => Ledger::new(),
        };
        Ok(Self { state: Mutex::new(State { policy, last_version, ledger }), store })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section completes its writes (or returns before any); a poisoned lock still holds
        // a consistent ledger.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist_ledger(&self, ledger: &Ledger) -> Result<(), PrivacyError> {
        let json = serde_json::to_vec(ledger).map_err(|e| PrivacyError::Invalid(e.to_string()))?;
        Ok(self.store.save_privacy(LEDGER_KEY, &json)?)
    }

    /// Whether a policy is in force: then every training job must be differentially private and fit the
    /// budgets.
    pub(crate) fn enforced(&self) -> bool {
        self.lock().policy.is_some()
    }

    /// The institutions the policy gives a budget in `family`: the ones a DP job of that family is
    /// charged to, and the only ones that may take part in it.
    pub(crate) fn family_tenants(&self, family: &str) -> Vec<String> {
        let state = self.lock();
        let Some((policy, _)) = state.policy.as_ref() else { return Vec::new() };
        let family = FamilyId(family.to_string());
        policy
            .file()
            .tenants
            .iter()
            .filter(|(_, t)| t.families.contains_key(&family))
            .map(|(id, _)| id.0.clone())
            .collect()
    }

    /// The largest `min_records` the policy sets for `family` at any of `tenants`: the fewest records a
    /// released statistic may cover.
    pub(crate) fn min_records(&self, family: &str, tenants: &[String]) -> Option<u64> {
        let state = self.lock();
        let (policy, _) = state.policy.as_ref()?;
        let family = FamilyId(family.to_string());
        tenants
            .iter()
            .filter_map(|t| policy.file().tenants.get(&TenantId(t.clone())))
            .filter_map(|t| t.families.get(&family).and_then(|f| f.min_records))
            .max()
    }

    /// The policy in force, if any.
    pub(crate) fn policy(&self) -> Option<StoredPolicy> {
        self.lock().policy.as_ref().map(|(_, s)| s.clone())
    }

    /// Installs a new policy (already authenticated by the caller); returns it with its version, and
    /// whether it is new (the text in force again changes nothing and makes no version).
    pub(crate) fn set_policy(
        &self,
        toml: String,
        set_by: String,
        signature: Vec<u8>,
        signer_certificate_der: Vec<u8>,
    ) -> Result<(StoredPolicy, bool), PrivacyError> {
        if toml.len() > MAX_POLICY_BYTES {
            return Err(PrivacyError::Invalid(format!(
                "policy of {} bytes is over the limit of {MAX_POLICY_BYTES}",
                toml.len()
            )));
        }
        let parsed = PrivacyPolicy::from_toml(&toml)?;
        let mut state = self.lock();
        let sha256 = content_digest(toml.as_bytes());
        if let Some((_, current)) = state.policy.as_ref().filter(|(_, c)| c.sha256 == sha256) {
            // The same text again: the policy in force stays, under its version.
            return Ok((current.clone(), false));
        }
        let version = state.last_version + 1;
        let stored = StoredPolicy {
            sha256,
            toml,
            version,
            set_by,
            set_unix_ms: crate::audit::now_ms(),
            signature,
            signer_certificate_der,
            retired: None,
        };
        let json = serde_json::to_vec(&stored).map_err(|e| PrivacyError::Invalid(e.to_string()))?;
        self.store.save_privacy(POLICY_KEY, &json)?;
        state.policy = Some((parsed, stored.clone()));
        state.last_version = version;
        Ok((stored, true))
    }

    /// Retires the policy in force, which must be `version` (already authenticated by the caller): jobs need
    /// not be private any more; the ledger and the policy's record stay. Returns the retired policy.
    pub(crate) fn retire_policy(&self, version: u64, by: String) -> Result<StoredPolicy, PrivacyError> {
        let mut state = self.lock();
        let Some((_, current)) = state.policy.as_ref() else {
            return Err(PrivacyError::Invalid("no privacy policy is in force".into()));
        };
        if current.version != version {
            return Err(PrivacyError::Invalid(format!(
                "the policy in force is version {}, not {version}",
                current.version
            )));
        }
        let mut retired = current.clone();
        retired.retired = Some((by, crate::audit::now_ms()));
        let json = serde_json::to_vec(&retired).map_err(|e| PrivacyError::Invalid(e.to_string()))?;
        self.store.save_privacy(POLICY_KEY, &json)?;
        state.policy = None;
        Ok(retired)
    }

    /// Whether a training job of model family `family` must be differentially private: a policy is in
    /// force and its `private_model_families` (default: all) names the family.
    pub(crate) fn requires_private(&self, family: &str) -> bool {
        self.lock().policy.as_ref().is_some_and(|(p, _)| p.requires_private(family))
    }

    /// The delta the policy accounts charges of budget family `family` at, at every one of `tenants`;
    /// an error when they differ (a job can be accounted at one delta only).
    pub(crate) fn charge_delta(&self, family: &str, tenants: &[String]) -> Result<Option<f64>, PrivacyError> {
        let state = self.lock();
        let Some((policy, _)) = state.policy.as_ref() else { return Ok(None) };
        let fam = FamilyId(family.to_string());
        let mut deltas: Vec<(String, f64)> = Vec::new();
        for t in tenants {
            if let Ok(f) = policy.family(&TenantId(t.clone()), &fam) {
                deltas.push((t.clone(), f.charge_delta()));
            }
        }
        match deltas.first() {
            None => Ok(None),
            Some((_, d)) if deltas.iter().all(|(_, x)| (x - d).abs() <= 1e-15) => Ok(Some(*d)),
            Some(_) => Err(PrivacyError::Invalid(format!(
                "the policy accounts family {family:?} at different deltas per institution ({}): a job is \
                 accounted at one; the DPO sets the same delta_per_charge for all",
                deltas.iter().map(|(t, d)| format!("{t} {d:e}")).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Reserves the worst case of a DP training job against the family budget of every tenant, all or
    /// nothing; returns the reservation (an error states what remains).
    pub(crate) fn reserve_training(
        &self,
        job_id: &str,
        privacy: &JobPrivacy,
        rounds: u64,
        min_participants: u32,
    ) -> Result<ReservationId, PrivacyError> {
        let charge = training_charge(privacy, rounds, min_participants)?;
        let tenants: Vec<TenantId> = privacy.tenants.iter().map(|t| TenantId(t.clone())).collect();
        self.reserve_charge(&tenants, &FamilyId(privacy.family.clone()), &format!("job:{job_id}"), charge)
    }

    /// Reserves `charge` under `key` against the `family` budget of every tenant, all or nothing.
    pub(crate) fn reserve_charge(
        &self,
        tenants: &[TenantId],
        family: &FamilyId,
        key: &str,
        charge: Charge,
    ) -> Result<ReservationId, PrivacyError> {
        let mut state = self.lock();
        let State { policy, ledger, .. } = &mut *state;
        let (policy, _) =
            policy.as_ref().ok_or_else(|| PrivacyError::Invalid("no privacy policy is in force".into()))?;
        let mut next = ledger.clone();
        let id = next.reserve(policy, tenants, family, key, charge, now_ts())?;
        self.persist_ledger(&next)?;
        *ledger = next;
        Ok(id)
    }

    /// Charges committed round `round` of reservation `id` (idempotent).
    pub(crate) fn commit_round(&self, id: u64, round: u64) -> Result<(), PrivacyError> {
        self.update(|l| l.commit_round(ReservationId(id), round).map(|_| ()))
    }

    /// Settles a finished job: what was released stays spent, the rest returns.
    pub(crate) fn settle(&self, id: u64) -> Result<(), PrivacyError> {
        self.update(|l| l.commit(ReservationId(id)).map(|_| ()))
    }

    /// Abandons a failed job's unreleased reservation (committed rounds stay spent).
    pub(crate) fn release(&self, id: u64) -> Result<(), PrivacyError> {
        self.update(|l| l.release(ReservationId(id)).map(|_| ()))
    }

    fn update(&self, f: impl FnOnce(&mut Ledger) -> Result<(), BudgetError>) -> Result<(), PrivacyError> {
        let mut state = self.lock();
        let mut next = state.ledger.clone();
        f(&mut next)?;
        self.persist_ledger(&next)?;
        state.ledger = next;
        Ok(())
    }

    /// The budget report under the policy in force (empty without one).
    pub(crate) fn report(&self) -> Option<Report> {
        let state = self.lock();
        state.policy.as_ref().map(|(p, _)| state.ledger.report(p, now_ts()))
    }
}

/// The ledger charge of a DP training job: `rounds` releases of the distributed discrete Gaussian its
/// participants add on the rounds' quantisation grid (for its largest cohort, which no round exceeds),
/// amplified by Poisson sampling; see `hearth_models::dp`.
pub(crate) fn training_charge(
    p: &JobPrivacy,
    rounds: u64,
    min_participants: u32,
) -> Result<Charge, PrivacyError> {
    let privacy_unit = match p.privacy_unit.as_str() {
        "record" | "" => PrivacyUnit::Record,
        "customer" => PrivacyUnit::Customer,
        other => {
            return Err(PrivacyError::Invalid(format!("privacy_unit {other:?}: expected record or customer")))
        }
    };
    if p.dimension == 0 || p.declared_records == 0 || p.max_cohort == 0 {
        // A job recorded before training ran on the distributed mechanism: the continuous Gaussian's
        // accounting of the same noise multiplier.
        return Ok(Charge::Training(TrainingPlan {
            noise: TrainingNoise::Gaussian(SubsampledGaussian {
                sampling_rate: p.sampling_rate,
                noise_multiplier: p.noise_multiplier,
            }),
            rounds,
            clipping_norm: p.clipping_norm,
            privacy_unit,
            min_participants,
        }));
    }
    let invalid = |e: hearth_models::DpError| PrivacyError::Invalid(e.to_string());
    let config = p.config(rounds).map_err(invalid)?;
    let (grid, _) = config.round_grid(p.round_shape(p.max_cohort)).map_err(invalid)?;
    let mut plan = config.training_plan(&grid).map_err(invalid)?;
    plan.rounds = rounds;
    plan.privacy_unit = privacy_unit;
    plan.min_participants = min_participants;
    Ok(Charge::Training(plan))
}
