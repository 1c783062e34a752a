//! The budget ledger: every reservation ever made, and from them what each (tenant, family) has spent,
//! holds in reserve and has left. Pure state; the service serialises it after each change and keeps it
//! behind one lock, which is what makes concurrent submissions unable to overspend: each
//! [`Ledger::reserve`] sees every reservation made before it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::policy::PrivacyPolicy;
use super::{BudgetError, Charge, Cost, FamilyId, TenantId, Timestamp};

const SECONDS_PER_DAY: u64 = 86_400;

/// Identifies a reservation within one ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationId(pub u64);

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeState {
    /// Work may still release; the worst case is held.
    Open,
    /// Finished; what was released is spent, the rest returned.
    Committed,
    /// Abandoned; rounds already committed stay spent, the rest returned.
    Released,
}

impl fmt::Display for ChargeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChargeState::Open => "open",
            ChargeState::Committed => "committed",
            ChargeState::Released => "released",
        })
    }
}

/// One tenant's part of a reservation: a job over five institutions charges each of their budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantShare {
    /// The tenant charged.
    pub tenant: TenantId,
    /// The delta this tenant's family accounts each charge at.
    pub delta: f64,
    /// Worst-case cost, held while the reservation is open.
    pub reserved: Cost,
    /// Cost of what has been released so far.
    pub spent: Cost,
}

/// A job or query's claim on budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// Its id.
    pub id: ReservationId,
    /// The job or query id the caller chose; unique in the ledger.
    pub key: String,
    /// The family charged.
    pub family: FamilyId,
    /// What the work releases.
    pub charge: Charge,
    /// When it was reserved; decides the budget period it counts in.
    pub reserved_at: Timestamp,
    /// Where it stands.
    pub state: ChargeState,
    /// Round numbers committed (a retried round is one entry).
    pub rounds: BTreeSet<u64>,
    /// Each tenant's part.
    pub shares: Vec<TenantShare>,
}

impl Reservation {
    /// What this share counts against budgets: the worst case while open, the spend afterwards.
    fn held(&self, share: &TenantShare) -> Cost {
        match self.state {
            ChargeState::Open => share.reserved,
            ChargeState::Committed | ChargeState::Released => share.spent,
        }
    }
}

/// All reservations, in the order they were made.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ledger {
    reservations: Vec<Reservation>,
}

fn same_period(at: Timestamp, now: Timestamp, days: Option<u32>) -> bool {
    match days {
        None => true,
        Some(days) => {
            let length = u64::from(days.max(1)) * SECONDS_PER_DAY;
            at.0 / length == now.0 / length
        }
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every reservation, oldest first.
    pub fn reservations(&self) -> &[Reservation] {
        &self.reservations
    }

    /// The reservation with this id.
    pub fn reservation(&self, id: ReservationId) -> Option<&Reservation> {
        usize::try_from(id.0).ok().and_then(|i| self.reservations.get(i))
    }

    /// The reservation made for this job or query id.
    pub fn find(&self, key: &str) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.key == key)
    }

    /// What `tenant` holds in the current period: in `family`, or across all families if `None`.
    fn held(&self, tenant: &TenantId, family: Option<&FamilyId>, days: Option<u32>, now: Timestamp) -> Cost {
        self.reservations
            .iter()
            .filter(|r| family.is_none_or(|f| &r.family == f) && same_period(r.reserved_at, now, days))
            .flat_map(|r| r.shares.iter().filter(|s| &s.tenant == tenant).map(move |s| r.held(s)))
            .fold(Cost::ZERO, Cost::plus)
    }

    /// Reserves the worst-case cost of `charge` against the `family` budget of every tenant in
    /// `tenants` (and their tenant-wide caps), all or nothing. Refuses, naming what remains, if any
    /// budget would be exceeded, and refuses work that breaks a rule of the family (privacy unit,
    /// clipping, minimum cohort). Reserving again with the same key and the same work returns the
    /// existing reservation, so a retried submission is not charged twice.
    pub fn reserve(
        &mut self,
        policy: &PrivacyPolicy,
        tenants: &[TenantId],
        family: &FamilyId,
        key: &str,
        charge: Charge,
        now: Timestamp,
    ) -> Result<ReservationId, BudgetError> {
        if let Some(existing) = self.find(key) {
            let same_tenants = existing.shares.iter().map(|s| &s.tenant).eq(tenants.iter());
            let live = existing.state != ChargeState::Released;
            if live && same_tenants && &existing.family == family && existing.charge == charge {
                return Ok(existing.id);
            }
            return Err(BudgetError::KeyReused(key.to_string()));
        }
        let bad = |reason: String| BudgetError::InvalidCharge { key: key.to_string(), reason };
        if tenants.is_empty() {
            return Err(bad("no tenant to charge".into()));
        }
        let mut shares = Vec::with_capacity(tenants.len());
        for (i, tenant) in tenants.iter().enumerate() {
            if tenants[..i].contains(tenant) {
                return Err(bad(format!("tenant {tenant} listed twice")));
            }
            let tenant_policy = policy.tenant(tenant)?;
            let family_policy = policy.family(tenant, family)?;
            charge.check_rules(key, tenant, family, family_policy)?;
            let delta = family_policy.charge_delta();
            let cost = charge.worst_case(delta).map_err(|e| match e {
                BudgetError::InvalidCharge { reason, .. } => bad(reason),
                other => other,
            })?;
            let exceeded = |scope: String, budget: Cost, held: Cost| BudgetError::Exceeded {
                key: key.to_string(),
                tenant: tenant.clone(),
                scope,
                needed_epsilon: cost.epsilon,
                needed_delta: cost.delta,
                remaining_epsilon: budget.minus(held).epsilon,
                remaining_delta: budget.minus(held).delta,
            };
            let held = self.held(tenant, Some(family), family_policy.period_days, now);
            if !held.plus(cost).fits_in(family_policy.budget()) {
                return Err(exceeded(format!("family {family}"), family_policy.budget(), held));
            }
            if let Some(cap) = tenant_policy.cap() {
                let held = self.held(tenant, None, tenant_policy.period_days, now);
                if !held.plus(cost).fits_in(cap) {
                    return Err(exceeded("all families".into(), cap, held));
                }
            }
            shares.push(TenantShare { tenant: tenant.clone(), delta, reserved: cost, spent: Cost::ZERO });
        }
        let id = ReservationId(self.reservations.len() as u64);
        self.reservations.push(Reservation {
            id,
            key: key.to_string(),
            family: family.clone(),
            charge,
            reserved_at: now,
            state: ChargeState::Open,
            rounds: BTreeSet::new(),
            shares,
        });
        Ok(id)
    }

    fn get_mut(&mut self, id: ReservationId) -> Result<&mut Reservation, BudgetError> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| self.reservations.get_mut(i))
            .ok_or(BudgetError::UnknownReservation(id))
    }

    /// Records that round `round` of the job was released (committed by the coordinator) and charges
    /// it. Idempotent: the spend is recomputed from the *set* of committed round numbers, so
    /// committing the same round again changes nothing.
    pub fn commit_round(&mut self, id: ReservationId, round: u64) -> Result<&Reservation, BudgetError> {
        let r = self.get_mut(id)?;
        if r.rounds.contains(&round) {
            return Ok(r);
        }
        if r.state != ChargeState::Open {
            return Err(BudgetError::AlreadySettled { id, state: r.state });
        }
        let reserved = r.charge.steps();
        if r.rounds.len() as u64 >= reserved {
            return Err(BudgetError::RoundOutOfRange { id, round, reserved });
        }
        let count = r.rounds.len() as u64 + 1;
        let mut spent = Vec::with_capacity(r.shares.len());
        for share in &r.shares {
            // Cannot exceed the reserved worst case: cost grows with the number of releases.
            spent.push(r.charge.cost_after(count, share.delta)?);
        }
        r.rounds.insert(round);
        for (share, cost) in r.shares.iter_mut().zip(spent) {
            share.spent = cost;
        }
        Ok(r)
    }

    /// Settles the work: what was released stays spent, the rest of the reservation returns to the
    /// budgets. A query is released once, so committing it charges that release. Idempotent.
    pub fn commit(&mut self, id: ReservationId) -> Result<&Reservation, BudgetError> {
        let state = self.get_mut(id)?.state;
        match state {
            ChargeState::Committed => return self.get_mut(id).map(|r| &*r),
            ChargeState::Released => return Err(BudgetError::AlreadySettled { id, state }),
            ChargeState::Open => {}
        }
        let r = self.get_mut(id)?;
        if matches!(r.charge, Charge::Query(_)) && r.rounds.is_empty() {
            self.commit_round(id, 0)?;
        }
        let r = self.get_mut(id)?;
        r.state = ChargeState::Committed;
        Ok(r)
    }

    /// Abandons the work (an aborted job or query): the unreleased part of the reservation returns to
    /// the budgets; rounds already committed stay spent. Idempotent.
    pub fn release(&mut self, id: ReservationId) -> Result<&Reservation, BudgetError> {
        let r = self.get_mut(id)?;
        match r.state {
            ChargeState::Committed => Err(BudgetError::AlreadySettled { id, state: r.state }),
            ChargeState::Open | ChargeState::Released => {
                r.state = ChargeState::Released;
                Ok(r)
            }
        }
    }

    /// Per tenant and family in `policy`: budget, spent, reserved and remaining in the current period,
    /// and each job or query that counts in it.
    pub fn report(&self, policy: &PrivacyPolicy, now: Timestamp) -> Report {
        let mut families = Vec::new();
        for (tenant, tenant_policy) in &policy.file().tenants {
            for (family, family_policy) in &tenant_policy.families {
                let mut line = FamilyReport {
                    tenant: tenant.clone(),
                    family: family.clone(),
                    budget: family_policy.budget(),
                    spent: Cost::ZERO,
                    reserved: Cost::ZERO,
                    remaining: Cost::ZERO,
                    charges: Vec::new(),
                };
                let counted = self.reservations.iter().filter(|r| {
                    &r.family == family && same_period(r.reserved_at, now, family_policy.period_days)
                });
                for r in counted {
                    for share in r.shares.iter().filter(|s| &s.tenant == tenant) {
                        let outstanding = if r.state == ChargeState::Open {
                            share.reserved.minus(share.spent)
                        } else {
                            Cost::ZERO
                        };
                        line.spent = line.spent.plus(share.spent);
                        line.reserved = line.reserved.plus(outstanding);
                        line.charges.push(ChargeLine {
                            id: r.id,
                            key: r.key.clone(),
                            state: r.state,
                            rounds_committed: r.rounds.len() as u64,
                            spent: share.spent,
                            reserved: outstanding,
                        });
                    }
                }
                line.remaining = line.budget.minus(line.spent.plus(line.reserved));
                families.push(line);
            }
        }
        Report { families }
    }
}

/// What `hearth budget show` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// One entry per (tenant, family) in the policy.
    pub families: Vec<FamilyReport>,
}

/// One (tenant, family) in a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyReport {
    /// The tenant.
    pub tenant: TenantId,
    /// The family.
    pub family: FamilyId,
    /// Its budget per period.
    pub budget: Cost,
    /// Spent this period (released work, basic composition across jobs).
    pub spent: Cost,
    /// Held by open reservations beyond what they have spent.
    pub reserved: Cost,
    /// Budget minus spent minus reserved.
    pub remaining: Cost,
    /// Each job or query counted.
    pub charges: Vec<ChargeLine>,
}

/// One job or query in a [`FamilyReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeLine {
    /// The reservation.
    pub id: ReservationId,
    /// The job or query id.
    pub key: String,
    /// Where it stands.
    pub state: ChargeState,
    /// Releases charged so far.
    pub rounds_committed: u64,
    /// What it spent.
    pub spent: Cost,
    /// What it still holds.
    pub reserved: Cost,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:<24} {:>10} {:>10} {:>10} {:>10}",
            "tenant", "family", "budget", "spent", "reserved", "left"
        )?;
        for line in &self.families {
            writeln!(
                f,
                "{:<16} {:<24} {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
                line.tenant.0,
                line.family.0,
                line.budget.epsilon,
                line.spent.epsilon,
                line.reserved.epsilon,
                line.remaining.epsilon
            )?;
            for c in &line.charges {
                writeln!(
                    f,
                    "    {:<36} {:<9} rounds {:>5}  spent {:.4}  reserved {:.4}",
                    c.key, c.state, c.rounds_committed, c.spent.epsilon, c.reserved.epsilon
                )?;
            }
        }
        Ok(())
    }
}
