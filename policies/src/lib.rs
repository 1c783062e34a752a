//! Hearth policies: the rules that decide whether a piece of work may run, as pure values.
//!
//! Like `crypto` and `models`, this crate knows nothing of the network or of a node's files: a service
//! loads a policy, asks it questions and persists the values it returns.
//!
//! # Map
//! - [`round`]: [`RoundPolicy`], the consortium's bounds on a training job's shape.
//! - [`accountant`]: [`RdpAccountant`], Rényi-DP accounting of the Poisson-subsampled Gaussian
//!   mechanism (and any [`RdpMechanism`]) converted to (epsilon, delta); checked against Google's
//!   `dp-accounting` in `fixtures/rdp_reference.csv`. Start here for the privacy argument.
//! - [`budget`]: the DPO's [`PrivacyPolicy`] (TOML) and the [`Ledger`] of reservations that refuses
//!   work a budget cannot pay for; a [`Charge`] names the mechanism, never a hand-typed epsilon.
//! - [`mechanism`]: the noise mechanisms, each a value with its privacy map: [`DiscreteGaussian`],
//!   [`DiscreteLaplace`], [`DistributedDiscreteGaussian`] (secure aggregation, drop-outs) and
//!   [`PoissonSubsampled`]; exact sampling through OpenDP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accountant;
pub mod budget;
pub mod mechanism;
pub mod round;

pub use accountant::{
    calibrate_noise_multiplier, AccountantError, RdpAccountant, RdpMechanism, SubsampledGaussian,
};
pub use budget::{
    BudgetError, Charge, Cost, FamilyId, Ledger, PrivacyPolicy, PrivacyUnit, QueryNoise, QueryPlan, Report,
    ReservationId, TenantId, Timestamp, TrainingNoise, TrainingPlan,
};
pub use mechanism::{
    DiscreteGaussian, DiscreteLaplace, DistributedDiscreteGaussian, MechanismError, PoissonSubsampled,
};
pub use round::{JobShape, PolicyError, RoundPolicy};
