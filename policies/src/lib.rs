//! Hearth policies: the rules that decide whether a piece of work may run, as pure values.
//!
//! Like `crypto` and `models`, this crate knows nothing of the network or of a node's files: a service
//! loads a policy, asks it questions and persists the values it returns.
//!
//! # Map
//! - [`round`]: [`RoundPolicy`], the consortium's bounds on a training job's shape.
//! - [`accountant`]: [`RdpAccountant`], Rényi-DP accounting of the Poisson-subsampled Gaussian
//!   mechanism (and any [`RdpMechanism`]) converted to (epsilon, delta); checked against Google's
//!   `dp-accounting` in `fixtures/rdp_reference.csv`; [`PldAccountant`], privacy-loss-distribution
//!   accounting of the same mechanism, tighter (checked in `fixtures/pld_reference.csv`). Start here for
//!   the privacy argument.
//! - [`budget`]: the DPO's [`PrivacyPolicy`] (TOML) and the [`Ledger`] of reservations that refuses
//!   work a budget cannot pay for; a [`Charge`] names the mechanism, never a hand-typed epsilon.
//! - [`mechanism`]: the noise mechanisms, each a value with its privacy map: [`DiscreteGaussian`],
//!   [`DiscreteLaplace`], [`DistributedDiscreteGaussian`] (secure aggregation, drop-outs) and
//!   [`PoissonSubsampled`]; exact sampling (the discrete Gaussian by an integer implementation of
//!   Canonne, Kamath and Steinke's algorithm, tested against OpenDP's; the discrete Laplace by OpenDP's).
//!
//! # The simple path
//! A service parses the DPO's policy once, keeps one [`Ledger`] behind a lock (persisting it after
//! every change), and for each job: reserve the worst case before announcing it, charge each
//! committed round by number, settle at the end.
//!
//! ```
//! use hearth_policies::{
//!     Charge, FamilyId, Ledger, PrivacyPolicy, PrivacyUnit, SubsampledGaussian, TenantId, Timestamp,
//!     TrainingNoise, TrainingPlan,
//! };
//!
//! let policy = PrivacyPolicy::from_toml(
//!     r#"
//!     [tenants.bank-a.families.intent]
//!     epsilon = 8.0
//!     delta = 1e-5
//!     privacy_unit = "record"
//!     min_participants = 3
//!     "#,
//! )?;
//! let job = Charge::Training(TrainingPlan {
//!     noise: TrainingNoise::Gaussian(SubsampledGaussian { sampling_rate: 1.0, noise_multiplier: 4.0 }),
//!     rounds: 20,
//!     clipping_norm: 1.0,
//!     privacy_unit: PrivacyUnit::Record,
//!     min_participants: 3,
//! });
//! let (bank, intent, now) = (TenantId("bank-a".into()), FamilyId("intent".into()), Timestamp(0));
//! let mut ledger = Ledger::new();
//! let id = ledger.reserve(&policy, &[bank], &intent, "job-7", job, now)?;
//! ledger.commit_round(id, 1)?;
//! ledger.commit_round(id, 1)?; // a retried round: charged once
//! ledger.commit(id)?;
//! print!("{}", ledger.report(&policy, now));
//! # Ok::<(), hearth_policies::BudgetError>(())
//! ```
//!
//! The accountant alone: `RdpAccountant::new().compose(SubsampledGaussian { .. }, steps)?.epsilon(delta)`;
//! the noise needed for a target: [`calibrate_noise_multiplier`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accountant;
pub mod budget;
pub mod mechanism;
pub mod round;

pub use accountant::{
    calibrate_noise_multiplier, AccountantError, PldAccountant, RdpAccountant, RdpMechanism,
    SubsampledGaussian,
};
pub use budget::{
    BudgetError, Charge, Cost, FamilyId, Ledger, PrivacyPolicy, PrivacyUnit, QueryNoise, QueryPlan, Report,
    ReservationId, TenantId, Timestamp, TrainingNoise, TrainingPlan,
};
pub use mechanism::{
    DiscreteGaussian, DiscreteLaplace, DistributedDiscreteGaussian, MechanismError, PoissonSubsampled,
};
pub use round::{JobShape, PolicyError, RoundPolicy};
