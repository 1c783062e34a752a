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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accountant;
pub mod round;

pub use accountant::{
    calibrate_noise_multiplier, AccountantError, RdpAccountant, RdpMechanism, SubsampledGaussian,
};
pub use round::{JobShape, PolicyError, RoundPolicy};
