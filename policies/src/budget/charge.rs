//! What a job or query will release, described by its mechanism so that its cost is computed, never
//! typed: a [`Charge`] plus the family's accounting delta gives a [`Cost`].

use serde::{Deserialize, Serialize};

use super::policy::{FamilyPolicy, PrivacyUnit};
use super::{gaussian_cost, rdp_cost, BudgetError, Cost, FamilyId, TenantId};
use crate::accountant::SubsampledGaussian;
use crate::mechanism::{DiscreteGaussian, DiscreteLaplace, DistributedDiscreteGaussian, PoissonSubsampled};

/// The noise of one training round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingNoise {
    /// Gaussian noise of `noise_multiplier` times the clipping norm on the sum of the clipped
    /// contributions of a Poisson sample of units (central noise, or the continuous approximation).
    Gaussian(SubsampledGaussian),
    /// Each participant adds a discrete Gaussian share to its quantised update; units are Poisson
    /// sampled with `sampling_rate` (1 for every unit every round).
    DistributedDiscrete {
        /// Probability a unit's data is used in a round.
        sampling_rate: f64,
        /// The shares and the sensitivity, in grid units.
        mechanism: DistributedDiscreteGaussian,
    },
}

/// A DP training job: `rounds` rounds of its noise, each a fresh release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingPlan {
    /// Noise per round.
    pub noise: TrainingNoise,
    /// Rounds the job may run; the worst case reserved.
    pub rounds: u64,
    /// L2 norm each unit's contribution is clipped to.
    pub clipping_norm: f64,
    /// The unit clipping is per (per record, or per customer).
    pub privacy_unit: PrivacyUnit,
    /// Fewest participants a round may commit with.
    pub min_participants: u32,
}

/// The noise of a federated analytics query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryNoise {
    /// Discrete Laplace on each count (pure DP).
    Laplace(DiscreteLaplace),
    /// Central discrete Gaussian on each count.
    Gaussian(DiscreteGaussian),
    /// Distributed discrete Gaussian shares, summed by secure aggregation.
    DistributedGaussian(DistributedDiscreteGaussian),
}

/// One federated analytics query (counts, sums, a histogram), released once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryPlan {
    /// The noise and the sensitivity it covers.
    pub noise: QueryNoise,
    /// The unit the sensitivity is computed for.
    pub privacy_unit: PrivacyUnit,
    /// Participants the query aggregates.
    pub participants: u32,
    /// Records it covers (for the minimum cohort), when known before the release. `None`: only the
    /// release itself can tell (the coordinator then checks the noisy count of covered records against
    /// [`min_records`](crate::budget::FamilyPolicy::min_records) before it publishes anything).
    pub records: Option<u64>,
}

/// The work a reservation pays for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charge {
    /// A training job.
    Training(TrainingPlan),
    /// An analytics query.
    Query(QueryPlan),
}

impl Charge {
    /// Releases the work makes at most: rounds for a job, 1 for a query.
    pub fn steps(&self) -> u64 {
        match self {
            Charge::Training(plan) => plan.rounds,
            Charge::Query(_) => 1,
        }
    }

    /// Cost of the first `steps` releases, accounted at `delta` (pure-DP queries cost delta 0).
    pub fn cost_after(&self, steps: u64, delta: f64) -> Result<Cost, BudgetError> {
        match self {
            Charge::Training(plan) => match &plan.noise {
                TrainingNoise::Gaussian(m) => gaussian_cost(*m, steps, delta),
                TrainingNoise::DistributedDiscrete { sampling_rate, mechanism } => {
                    rdp_cost(PoissonSubsampled { sampling_rate: *sampling_rate, mechanism }, steps, delta)
                }
            },
            Charge::Query(plan) => {
                let steps = steps.min(1);
                match &plan.noise {
                    QueryNoise::Laplace(m) => Ok(Cost { epsilon: m.epsilon() * steps as f64, delta: 0.0 }),
                    QueryNoise::Gaussian(m) => rdp_cost(m, steps, delta),
                    QueryNoise::DistributedGaussian(m) => rdp_cost(m, steps, delta),
                }
            }
        }
    }

    /// The noise of one release in multiples of its sensitivity: a Gaussian's noise multiplier
    /// (distributed noise: of the sum over the fewest survivors it is calibrated for), a Laplace's scale
    /// over its L1 sensitivity.
    pub fn noise_multiplier(&self) -> f64 {
        let distributed = |m: &DistributedDiscreteGaussian| {
            let s = m.spec();
            s.local_scale * f64::from(s.min_survivors).sqrt() / s.l2_sensitivity
        };
        match self {
            Charge::Training(plan) => match &plan.noise {
                TrainingNoise::Gaussian(m) => m.noise_multiplier,
                TrainingNoise::DistributedDiscrete { mechanism, .. } => distributed(mechanism),
            },
            Charge::Query(plan) => match &plan.noise {
                QueryNoise::Laplace(m) => 1.0 / m.epsilon(),
                QueryNoise::Gaussian(m) => m.scale() / m.l2_sensitivity(),
                QueryNoise::DistributedGaussian(m) => distributed(m),
            },
        }
    }

    /// Cost if every release happens.
    pub fn worst_case(&self, delta: f64) -> Result<Cost, BudgetError> {
        self.cost_after(self.steps(), delta)
    }

    /// Checks the rules of `policy` other than the budget: unit, clipping, cohort.
    pub(crate) fn check_rules(
        &self,
        key: &str,
        tenant: &TenantId,
        family: &FamilyId,
        policy: &FamilyPolicy,
    ) -> Result<(), BudgetError> {
        let violation = |reason: String| BudgetError::Violation {
            key: key.to_string(),
            tenant: tenant.clone(),
            family: family.clone(),
            reason,
        };
        let too_small = |what, got: u64, minimum: u64| BudgetError::CohortTooSmall {
            what,
            got,
            minimum,
            tenant: tenant.clone(),
            family: family.clone(),
        };
        let unit = match self {
            Charge::Training(plan) => plan.privacy_unit,
            Charge::Query(plan) => plan.privacy_unit,
        };
        // A customer-level guarantee covers a record-level policy; the reverse does not hold.
        if unit < policy.privacy_unit {
            return Err(violation(format!(
                "privacy_unit {unit:?} is weaker than the policy's {:?}",
                policy.privacy_unit
            )));
        }
        if let Some(floor) = policy.min_noise_multiplier {
            let noise = self.noise_multiplier();
            if noise.is_nan() || noise < floor {
                return Err(violation(format!(
                    "noise multiplier {noise:.4} is below the policy's floor of {floor}"
                )));
            }
        }
        let minimum = u64::from(policy.min_participants);
        match self {
            Charge::Training(plan) => {
                if !(plan.clipping_norm > 0.0 && plan.clipping_norm.is_finite()) {
                    return Err(violation(format!(
                        "clipping_norm {} is not a finite number > 0",
                        plan.clipping_norm
                    )));
                }
                if let Some(limit) = policy.clipping_norm {
                    if plan.clipping_norm > limit {
                        return Err(violation(format!(
                            "clipping_norm {} exceeds the policy's {limit}",
                            plan.clipping_norm
                        )));
                    }
                }
                let mut fewest = plan.min_participants;
                if let TrainingNoise::DistributedDiscrete { mechanism, .. } = &plan.noise {
                    fewest = fewest.min(mechanism.spec().min_survivors);
                }
                if u64::from(fewest) < minimum {
                    return Err(too_small("participants", u64::from(fewest), minimum));
                }
            }
            Charge::Query(plan) => {
                if u64::from(plan.participants) < minimum {
                    return Err(too_small("participants", u64::from(plan.participants), minimum));
                }
                if let (Some(minimum), Some(records)) = (policy.min_records, plan.records) {
                    if records < minimum {
                        return Err(too_small("records", records, minimum));
                    }
                }
            }
        }
        Ok(())
    }
}
