//! The DPO's privacy policy: a TOML file parsed into a [`PolicyFile`] (raw, as written) and validated
//! into a [`PrivacyPolicy`] (the only form the ledger accepts). Unknown fields are errors, so a typo
//! cannot silently drop a rule.
//!
//! `policies/privacy-policy.example.toml` is a complete, tested example; in short:
//!
//! ```toml
//! [tenants.bank-a.families.intent]
//! epsilon = 8.0               # budget per period
//! delta = 1e-5
//! privacy_unit = "record"     # record | customer
//! period_days = 30            # optional; absent: the budget never resets
//! min_participants = 3
//! min_noise_multiplier = 0.8  # optional: the least noise one release may carry
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BudgetError, Cost, FamilyId, TenantId};

/// Whose privacy a budget protects: neighbouring data sets differ in one record, or in all records of
/// one customer. A customer-level guarantee implies the record-level one, not the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyUnit {
    /// One conversation or example.
    Record,
    /// Everything of one customer.
    Customer,
}

/// The budget and rules of one (tenant, family).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyPolicy {
    /// Total epsilon per period.
    pub epsilon: f64,
    /// Total delta per period.
    pub delta: f64,
    /// Delta each charge is accounted at; at most `delta`. Default `delta / 10`.
    #[serde(default)]
    pub delta_per_charge: Option<f64>,
    /// The privacy unit the budget protects.
    pub privacy_unit: PrivacyUnit,
    /// Length of a budget period in days; absent, the budget never resets. Periods are aligned to the
    /// Unix epoch (period `p` covers days `[p * n, (p + 1) * n)` since 1970-01-01 UTC) and a charge
    /// counts in the period it was reserved in.
    #[serde(default)]
    pub period_days: Option<u32>,
    /// Largest L2 clipping norm a training job may use.
    #[serde(default)]
    pub clipping_norm: Option<f64>,
    /// Fewest participants a round or query may aggregate.
    pub min_participants: u32,
    /// Least noise a release may carry, in multiples of its sensitivity: for Gaussian noise its noise
    /// multiplier (standard deviation over L2 sensitivity; for distributed noise, of the sum over the
    /// fewest survivors), for Laplace noise its scale over the L1 sensitivity. A noise floor on top of
    /// the budget, so that no single release is nearly noiseless however much budget is left.
    #[serde(default)]
    pub min_noise_multiplier: Option<f64>,
    /// Fewest records a statistic may cover.
    #[serde(default)]
    pub min_records: Option<u64>,
    /// Recall on the anger class an emotion-escalation model must reach before it is served.
    #[serde(default)]
    pub target_anger_recall: Option<f64>,
}

impl FamilyPolicy {
    /// The family's budget per period.
    pub fn budget(&self) -> Cost {
        Cost { epsilon: self.epsilon, delta: self.delta }
    }

    /// The delta each charge is accounted at.
    pub fn charge_delta(&self) -> f64 {
        self.delta_per_charge.unwrap_or(self.delta / 10.0)
    }
}

/// One tenant's families and optional tenant-wide cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// Tenant-wide epsilon over all families, per `period_days`.
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// Tenant-wide delta over all families.
    #[serde(default)]
    pub delta: Option<f64>,
    /// Period of the tenant-wide cap, in days; absent: never resets.
    #[serde(default)]
    pub period_days: Option<u32>,
    /// Budgets per model or query family.
    #[serde(default)]
    pub families: BTreeMap<FamilyId, FamilyPolicy>,
}

impl TenantPolicy {
    /// The tenant-wide cap, if the policy sets one.
    pub fn cap(&self) -> Option<Cost> {
        Some(Cost { epsilon: self.epsilon?, delta: self.delta? })
    }
}

/// A policy file as written, before validation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The model families (`intent`, `emotion`, `recommend`) whose training jobs must be differentially
    /// private while the policy is in force; absent: every family. A family left out trains under secure
    /// aggregation only, as without a policy (differential privacy covers intent models today, so a
    /// consortium that trains emotion or recommend models under a policy lists `["intent"]`).
    #[serde(default)]
    pub private_model_families: Option<Vec<String>>,
    /// Policies per tenant.
    #[serde(default)]
    pub tenants: BTreeMap<TenantId, TenantPolicy>,
}

/// The statement a DPO signs to retire policy `version` whose text has SHA-256 `sha256`: both the
/// command that signs and the coordinator that checks build it here.
pub fn retirement_statement(version: u64, sha256: &[u8; 32]) -> String {
    let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    format!("hearth: retire privacy policy version {version} sha256 {hex}")
}

/// The model families a policy's `private_model_families` may name.
pub const MODEL_FAMILIES: [&str; 3] = ["intent", "emotion", "recommend"];

/// A validated policy: every budget positive and finite, every delta in (0, 1), every rule in range.
/// Obtained only through [`PrivacyPolicy::from_toml`] or [`PrivacyPolicy::validate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct PrivacyPolicy(PolicyFile);

impl PrivacyPolicy {
    /// Parses and validates a TOML policy.
    pub fn from_toml(text: &str) -> Result<Self, BudgetError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| BudgetError::Parse(e.to_string()))?;
        Self::validate(file)
    }

    /// Validates a policy, naming the first bad field and its value.
    pub fn validate(file: PolicyFile) -> Result<Self, BudgetError> {
        for f in file.private_model_families.iter().flatten() {
            if !MODEL_FAMILIES.contains(&f.as_str()) {
                return Err(invalid("policy", "private_model_families", f, "intent, emotion or recommend"));
            }
        }
        for (tenant, t) in &file.tenants {
            let path = format!("tenants.{tenant}");
            match (t.epsilon, t.delta) {
                (None, None) => {}
                (Some(epsilon), Some(delta)) => {
                    check_epsilon(&path, "epsilon", epsilon)?;
                    check_delta(&path, "delta", delta)?;
                }
                (e, d) => {
                    return Err(invalid(
                        &path,
                        "delta",
                        format!("{d:?} with epsilon {e:?}"),
                        "both set or neither",
                    ))
                }
            }
            check_period(&path, t.period_days)?;
            for (family, f) in &t.families {
                let path = format!("tenants.{tenant}.families.{family}");
                check_epsilon(&path, "epsilon", f.epsilon)?;
                check_delta(&path, "delta", f.delta)?;
                if let Some(d) = f.delta_per_charge {
                    check_delta(&path, "delta_per_charge", d)?;
                    if d > f.delta {
                        return Err(invalid(&path, "delta_per_charge", d, "at most the family's delta"));
                    }
                }
                check_period(&path, f.period_days)?;
                if let Some(c) = f.clipping_norm {
                    if !(c > 0.0 && c.is_finite()) {
                        return Err(invalid(&path, "clipping_norm", c, "a finite number > 0"));
                    }
                }
                if let Some(m) = f.min_noise_multiplier {
                    if !(m > 0.0 && m.is_finite()) {
                        return Err(invalid(&path, "min_noise_multiplier", m, "a finite number > 0"));
                    }
                }
                if f.min_participants == 0 {
                    return Err(invalid(&path, "min_participants", 0, "at least 1"));
                }
                if let Some(r) = f.target_anger_recall {
                    if !(0.0..=1.0).contains(&r) {
                        return Err(invalid(&path, "target_anger_recall", r, "a number in [0, 1]"));
                    }
                }
            }
        }
        Ok(Self(file))
    }

    /// Whether a training job of model family `family` must be differentially private under this policy.
    pub fn requires_private(&self, family: &str) -> bool {
        self.0.private_model_families.as_ref().is_none_or(|f| f.iter().any(|x| x == family))
    }

    /// The policy as written.
    pub fn file(&self) -> &PolicyFile {
        &self.0
    }

    /// The tenant's policy, or an error if it has none.
    pub fn tenant(&self, tenant: &TenantId) -> Result<&TenantPolicy, BudgetError> {
        self.0.tenants.get(tenant).ok_or_else(|| BudgetError::UnknownTenant(tenant.clone()))
    }

    /// The (tenant, family) policy, or an error naming what is missing.
    pub fn family(&self, tenant: &TenantId, family: &FamilyId) -> Result<&FamilyPolicy, BudgetError> {
        self.tenant(tenant)?
            .families
            .get(family)
            .ok_or_else(|| BudgetError::UnknownFamily { tenant: tenant.clone(), family: family.clone() })
    }

    /// Refuses a round or query over fewer participants or records than the family's minimum cohort.
    pub fn check_cohort(
        &self,
        tenant: &TenantId,
        family: &FamilyId,
        participants: u32,
        records: u64,
    ) -> Result<(), BudgetError> {
        let f = self.family(tenant, family)?;
        let too_small = |what, got, minimum| BudgetError::CohortTooSmall {
            what,
            got,
            minimum,
            tenant: tenant.clone(),
            family: family.clone(),
        };
        if participants < f.min_participants {
            return Err(too_small("participants", u64::from(participants), u64::from(f.min_participants)));
        }
        match f.min_records {
            Some(minimum) if records < minimum => Err(too_small("records", records, minimum)),
            _ => Ok(()),
        }
    }
}

fn invalid(path: &str, field: &'static str, value: impl ToString, expected: &'static str) -> BudgetError {
    BudgetError::InvalidPolicy { path: path.to_string(), field, value: value.to_string(), expected }
}

fn check_epsilon(path: &str, field: &'static str, epsilon: f64) -> Result<(), BudgetError> {
    if epsilon > 0.0 && epsilon.is_finite() {
        Ok(())
    } else {
        Err(invalid(path, field, epsilon, "a finite number > 0"))
    }
}

fn check_delta(path: &str, field: &'static str, delta: f64) -> Result<(), BudgetError> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(invalid(path, field, delta, "a number in (0, 1)"))
    }
}

fn check_period(path: &str, days: Option<u32>) -> Result<(), BudgetError> {
    match days {
        Some(0) => Err(invalid(path, "period_days", 0, "at least 1")),
        _ => Ok(()),
    }
}
