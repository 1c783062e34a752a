//! Privacy budgets: the DPO's policy, what a job or query costs, and the ledger that refuses work a
//! budget cannot pay for. Pure values: a service parses the policy, keeps the [`Ledger`] behind one lock,
//! persists it after every change (it is serde-serialisable) and passes the current time in.
//!
//! # Composition rule
//! - *Within* a training job, rounds compose under Rényi DP: the job's cost after `r` rounds is what
//!   [`RdpAccountant`] gives for `r` runs of its mechanism, converted at the family's `delta_per_charge`;
//!   for continuous Gaussian noise ([`TrainingNoise::Gaussian`]) the tighter of that and what the
//!   privacy-loss-distribution accountant ([`crate::PldAccountant`]) gives, both being valid bounds.
//!   The distributed discrete Gaussian is charged by RDP alone: its bound (Kairouz, Liu, Steinke 2021)
//!   is a Rényi one, and no PLD of the sum of discrete shares is established here.
//!   Never typed by hand: a [`Charge`] carries the mechanism and the cost is computed from it.
//! - *Across* jobs and queries of a (tenant, family), and across families for a tenant-wide cap,
//!   costs add by basic composition (Dwork, Kenthapadi, McSherry, Mironov, Naor 2006; Dwork and Roth
//!   2014, Theorem 3.16): `k` releases that are `(eps_i, delta_i)`-DP are together
//!   `(sum eps_i, sum delta_i)`-DP. Loose but valid whatever the jobs are, including jobs whose
//!   mechanisms the accountant could compose more tightly; it is also what a DPO can check by hand.
//! - A budget period (`period_days`) starts a fresh sum: charges reserved in an earlier period no longer
//!   count. That is a *policy* choice (data and customers churn), not a DP theorem; without
//!   `period_days` a budget is for the lifetime of the policy.
//!
//! # Reservations
//! Work is checked *before* it starts: [`Ledger::reserve`] holds the worst case (every round of a job)
//! against every applicable budget (each tenant's family budget and tenant-wide cap) or refuses,
//! naming what remains. [`Ledger::commit_round`] records a finished round by its number, so a retried
//! round is charged once; [`Ledger::commit`] settles the job at the cost of the rounds actually
//! committed; [`Ledger::release`] gives back what was reserved but never released to anyone.

mod charge;
mod ledger;
mod policy;

pub use charge::{Charge, QueryNoise, QueryPlan, TrainingNoise, TrainingPlan};
pub use ledger::{ChargeLine, ChargeState, FamilyReport, Ledger, Report, Reservation, ReservationId};
pub use policy::{
    retirement_statement, FamilyPolicy, PolicyFile, PrivacyPolicy, PrivacyUnit, TenantPolicy, MODEL_FAMILIES,
};

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::accountant::{AccountantError, RdpAccountant};
use crate::mechanism::MechanismError;

/// Why a policy was rejected or a charge refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// The policy file is not valid TOML or has a field that is unknown or of the wrong type.
    #[error("policy file: {0}")]
    Parse(String),
    /// A policy field has a value outside its domain.
    #[error("policy {path}: {field} = {value} is invalid: expected {expected}")]
    InvalidPolicy {
        /// Where in the policy, e.g. `tenants.bank-a.families.intent`.
        path: String,
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// Its domain.
        expected: &'static str,
    },
    /// The tenant has no entry in the policy, so nothing may be charged to it.
    #[error("tenant {0} has no privacy policy")]
    UnknownTenant(TenantId),
    /// The family has no budget for this tenant.
    #[error("tenant {tenant} has no budget for family {family}")]
    UnknownFamily {
        /// The tenant.
        tenant: TenantId,
        /// The family asked for.
        family: FamilyId,
    },
    /// Running the work could exceed a budget; nothing was reserved.
    #[error(
        "{key} needs epsilon {needed_epsilon:.4} delta {needed_delta:e} from tenant {tenant} \
         ({scope}) but only epsilon {remaining_epsilon:.4} delta {remaining_delta:e} remains this period"
    )]
    Exceeded {
        /// The job or query refused.
        key: String,
        /// The tenant whose budget is short.
        tenant: TenantId,
        /// `family <name>` or `all families` for a tenant-wide cap.
        scope: String,
        /// Worst-case epsilon of the work.
        needed_epsilon: f64,
        /// Its delta.
        needed_delta: f64,
        /// Epsilon still available.
        remaining_epsilon: f64,
        /// Delta still available.
        remaining_delta: f64,
    },
    /// Fewer participants or records than the policy's minimum cohort.
    #[error("{what} {got} is below the policy minimum of {minimum} for tenant {tenant} family {family}")]
    CohortTooSmall {
        /// `participants` or `records`.
        what: &'static str,
        /// What the round or query has.
        got: u64,
        /// The policy minimum.
        minimum: u64,
        /// The tenant.
        tenant: TenantId,
        /// The family.
        family: FamilyId,
    },
    /// The work does not meet a rule of the family other than its budget (privacy unit, clipping).
    #[error("{key} violates the policy of tenant {tenant} family {family}: {reason}")]
    Violation {
        /// The job or query.
        key: String,
        /// The tenant.
        tenant: TenantId,
        /// The family.
        family: FamilyId,
        /// What is wrong, naming the field and values.
        reason: String,
    },
    /// The mechanism's parameters are invalid or give no finite epsilon (for example no noise).
    #[error("{key}: {reason}")]
    InvalidCharge {
        /// The job or query.
        key: String,
        /// Why.
        reason: String,
    },
    /// No reservation has this id (a ledger from another service, or a forged id).
    #[error("no reservation {0}")]
    UnknownReservation(ReservationId),
    /// The reservation key is already used by different work; keys identify one job or query.
    #[error("key {0} is already reserved for different work")]
    KeyReused(String),
    /// The reservation was already settled the other way (committed work cannot be released, released
    /// work cannot be committed or charged further).
    #[error("reservation {id} is already {state}")]
    AlreadySettled {
        /// The reservation.
        id: ReservationId,
        /// Its state.
        state: ChargeState,
    },
    /// A round number beyond the rounds reserved for the job.
    #[error("round {round} is beyond the {reserved} rounds reserved by reservation {id}")]
    RoundOutOfRange {
        /// The reservation.
        id: ReservationId,
        /// The round given.
        round: u64,
        /// Rounds reserved.
        reserved: u64,
    },
}

impl From<AccountantError> for BudgetError {
    fn from(e: AccountantError) -> Self {
        BudgetError::InvalidCharge { key: String::new(), reason: e.to_string() }
    }
}

impl From<MechanismError> for BudgetError {
    fn from(e: MechanismError) -> Self {
        BudgetError::InvalidCharge { key: String::new(), reason: e.to_string() }
    }
}

/// A tenant (institution) as named in the policy and in its certificate's SAN.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

/// A model or query family: the unit a budget is kept for (`intent`, `emotion-escalation`,
/// `weekly-intent-histogram`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FamilyId(pub String);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time, seconds since the Unix epoch; the caller's clock, passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

/// An (epsilon, delta) pair: a budget, a spend or what remains.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Cost {
    /// Epsilon.
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
}

impl Cost {
    /// Nothing spent.
    pub const ZERO: Cost = Cost { epsilon: 0.0, delta: 0.0 };

    /// Basic composition: epsilons and deltas add.
    pub fn plus(self, other: Cost) -> Cost {
        Cost { epsilon: self.epsilon + other.epsilon, delta: self.delta + other.delta }
    }

    /// What is left of `self` after `used`, never below zero.
    pub fn minus(self, used: Cost) -> Cost {
        Cost { epsilon: (self.epsilon - used.epsilon).max(0.0), delta: (self.delta - used.delta).max(0.0) }
    }

    /// Whether `self` fits within `budget` in both coordinates.
    pub fn fits_in(self, budget: Cost) -> bool {
        self.epsilon <= budget.epsilon && self.delta <= budget.delta
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epsilon {:.4} delta {:e}", self.epsilon, self.delta)
    }
}

/// How many PLD epsilons [`gaussian_cost`] remembers.
const PLD_CACHE_SIZE: usize = 64;

/// PLD epsilons already computed, by (rate, noise multiplier, steps, delta) as bits: a ledger prices the
/// same charge on every committed round and every report, and one PLD of a subsampled mechanism takes up
/// to a second. A pure function's memo: the answers do not depend on it.
static PLD_EPSILONS: std::sync::Mutex<Vec<(PldKey, f64)>> = std::sync::Mutex::new(Vec::new());

/// (sampling rate, noise multiplier, steps, delta), the floats as bits.
type PldKey = (u64, u64, u64, u64);

/// Cost of `steps` runs of the Poisson-subsampled Gaussian at `delta`: the tighter of the two valid
/// bounds, the RDP accountant's and the privacy-loss-distribution accountant's (both upper bounds on the
/// same mechanism's epsilon, so their minimum is one too).
pub(crate) fn gaussian_cost(
    mechanism: crate::accountant::SubsampledGaussian,
    steps: u64,
    delta: f64,
) -> Result<Cost, BudgetError> {
    let rdp = rdp_cost(mechanism, steps, delta)?;
    let key =
        (mechanism.sampling_rate.to_bits(), mechanism.noise_multiplier.to_bits(), steps, delta.to_bits());
    let cached =
        PLD_EPSILONS.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(k, _)| *k == key).map(|e| e.1);
    let epsilon = match cached {
        Some(epsilon) => epsilon,
        None => {
            let mut pld = crate::accountant::PldAccountant::new();
            let epsilon = match pld.compose(mechanism, steps).and_then(|p| p.epsilon(delta)) {
                Ok(epsilon) => epsilon,
                // Beyond the PLD grid's reach (tiny noise, huge compositions) the RDP bound stands alone.
                Err(AccountantError::GridTooLarge { .. }) => f64::INFINITY,
                Err(e) => return Err(e.into()),
            };
            let mut cache = PLD_EPSILONS.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= PLD_CACHE_SIZE {
                cache.remove(0);
            }
            cache.push((key, epsilon));
            epsilon
        }
    };
    Ok(Cost { epsilon: rdp.epsilon.min(epsilon), ..rdp })
}

/// Cost of `steps` runs of a mechanism, converted at `delta`; an error if there is no finite epsilon.
pub(crate) fn rdp_cost(
    mechanism: impl crate::accountant::RdpMechanism,
    steps: u64,
    delta: f64,
) -> Result<Cost, BudgetError> {
    let mut accountant = RdpAccountant::new();
    accountant.compose(mechanism, steps)?;
    let epsilon = accountant.epsilon(delta)?;
    if !epsilon.is_finite() {
        return Err(BudgetError::InvalidCharge {
            key: String::new(),
            reason: "the mechanism gives no finite epsilon (is there any noise?)".into(),
        });
    }
    Ok(Cost { epsilon, delta: if steps == 0 { 0.0 } else { delta } })
}

#[cfg(test)]
mod tests;
