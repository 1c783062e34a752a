//! Noise mechanisms on integers, each a value carrying its privacy map: a mechanism is built from its
//! noise scale *and* the sensitivity it protects, so nothing can add its noise without the cost being
//! known. They never decide whether a cost is affordable; that is `budget`'s job.
//!
//! - [`DiscreteGaussian`]: `N_Z(0, sigma^2)` added to each coordinate of an integer vector whose
//!   L2 sensitivity is `Delta_2`. Guarantee: `rho`-zCDP with `rho = Delta_2^2 / (2 sigma^2)`, so RDP
//!   `alpha * rho` at every order (Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential
//!   Privacy", NeurIPS 2020: Theorem 4 for one coordinate, and its multivariate form for independent
//!   coordinates in the same paper, which bounds the divergence by the L2 norm of the shift).
//! - [`DiscreteLaplace`]: `L_Z(0, b)` per coordinate, for counts and histograms with L1 sensitivity
//!   `Delta_1`. Guarantee: pure `epsilon = Delta_1 / b` DP (the geometric mechanism, Ghosh, Roughgarden,
//!   Sundararajan 2009; CKS20 Section 2.2), hence also `epsilon^2 / 2`-zCDP (Bun and Steinke 2016,
//!   Proposition 3.3).
//! - [`DistributedDiscreteGaussian`] (in `mechanism/distributed.rs`): each of `n` participants adds its
//!   own discrete Gaussian share and only the securely aggregated sum is released (Kairouz, Liu, Steinke,
//!   ICML 2021).
//! - [`PoissonSubsampled`]: any of the above applied to a Poisson sample of units, with the general
//!   amplification bound of Zhu and Wang 2019.
//!
//! # Sampling
//! Every draw is exact: no floating-point arithmetic touches the noise, so the output distribution is
//! exactly the stated one, closing the attacks on floating-point Laplace and Gaussian samplers (Mironov,
//! CCS 2012). The discrete Laplace uses OpenDP's sampler (`opendp::traits::samplers::
//! sample_discrete_laplace`, CKS20 over arbitrary-precision rationals, the scale converted from its
//! `f64` exactly). The discrete Gaussian uses the same CKS20 algorithm written in machine integers
//! (`mechanism/sampler.rs`), 29 to 42 times faster than OpenDP's `sample_discrete_gaussian` (110 to 135
//! against 3,400 to 5,300 nanoseconds a draw, `sampler.rs` says how it was measured), which a participant's share of a model of millions of parameters needs every
//! round; it samples with a variance at least `scale^2` (larger by a relative 2^-51 at most), and is
//! tested against the exact mass function and against OpenDP's sampler. Outside the scales it handles
//! (below 1/16, from 2^30 on) OpenDP's sampler is used. Where OpenDP does not fit:
//! - its *measurements with privacy maps* (`make_gaussian`, `make_laplace`) compile only with OpenDP's
//!   `contrib` feature (constructors whose proofs have not completed OpenDP's vetting), are typed over
//!   OpenDP domains and metrics, and know nothing of secure aggregation, drop-outs or subsampling; so
//!   the maps here are written out with their theorems instead, and only the samplers (outside
//!   `contrib`) are used;
//! - the distributed discrete Gaussian has no OpenDP constructor.
//!
//! Randomness: the Gaussian samplers draw from a ChaCha20 generator keyed from the operating system
//! (`getrandom`) afresh for every call (one vector of noise, or one draw). OpenDP's samplers, with
//! default features disabled, draw from `rand` 0.7's `thread_rng` (a ChaCha-family CSPRNG seeded and
//! periodically reseeded from the operating system), which OpenDP itself labels "non-secure" relative
//! to its OpenSSL option. The crate feature `openssl-rng` switches OpenDP to OpenSSL's
//! `RAND_priv_bytes`, at the cost of building OpenSSL from C source (measured in `policies/README.md`).
//! Noise is never seeded from the caller, so it cannot be replayed; the one exception,
//! `DistributedDiscreteGaussian::add_share_seeded`, exists only with the `seeded-noise` feature, for
//! simulations that must be reproducible.

mod distributed;
mod sampler;
mod subsampled;

pub use distributed::{DistributedDiscreteGaussian, DistributedDiscreteGaussianSpec};
pub use subsampled::PoissonSubsampled;

use dashu::{integer::IBig, rational::RBig};
use opendp::traits::samplers::{sample_discrete_gaussian, sample_discrete_laplace};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use self::sampler::FastDiscreteGaussian;

use crate::accountant::{AccountantError, RdpMechanism};

/// Why a mechanism could not be built or could not draw noise.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MechanismError {
    /// A scale, sensitivity or count is outside its domain (negative, zero where a positive value is
    /// needed, NaN or infinite); usually a policy or job spec typed wrongly.
    #[error("{name} = {value} is invalid: expected {expected}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The domain it must lie in.
        expected: &'static str,
    },
    /// The sampler failed, in practice because the system could not supply randomness.
    #[error("noise sampler failed: {0}")]
    Sampling(String),
    /// Adding the noise would overflow an `i64` coordinate; the quantised values or the scale are far
    /// larger than any secure aggregation field.
    #[error("adding noise {noise} to coordinate {index} (value {value}) overflows i64")]
    Overflow {
        /// The coordinate.
        index: usize,
        /// Its value before noise.
        value: i64,
        /// The noise drawn.
        noise: i64,
    },
}

/// Checks `value` is finite and `> 0`.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<f64, MechanismError> {
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(MechanismError::InvalidParameter { name, value, expected: "a finite number > 0" })
    }
}

/// Converts a validated scale to the exact rational OpenDP samples with.
fn rational(name: &'static str, value: f64) -> Result<RBig, MechanismError> {
    RBig::try_from(value).map_err(|_| MechanismError::InvalidParameter {
        name,
        value,
        expected: "a finite number > 0",
    })
}

fn to_i64(draw: IBig) -> Result<i64, MechanismError> {
    i64::try_from(draw).map_err(|_| MechanismError::Sampling("draw does not fit in i64".into()))
}

/// Adds one independent draw of `sample` to each coordinate, refusing on overflow.
fn add_each(
    values: &mut [i64],
    mut sample: impl FnMut() -> Result<i64, MechanismError>,
) -> Result<(), MechanismError> {
    for (index, value) in values.iter_mut().enumerate() {
        let noise = sample()?;
        *value = value.checked_add(noise).ok_or(MechanismError::Overflow { index, value: *value, noise })?;
    }
    Ok(())
}

/// A ChaCha20 generator keyed from the operating system's randomness, one per batch of draws.
fn os_rng() -> Result<ChaCha20Rng, MechanismError> {
    ChaCha20Rng::try_from_os_rng().map_err(|e| MechanismError::Sampling(format!("system randomness: {e}")))
}

/// Exact draws of `N_Z(0, scale^2)`, the building block of the Gaussian mechanisms: the fast sampler of
/// `mechanism/sampler.rs` when the scale fits its machine words (every scale from 1/16 to 2^30), with a
/// variance at least `scale^2`; OpenDP's otherwise.
#[derive(Debug, Clone, PartialEq)]
struct GaussianDraws {
    exact_scale: RBig,
    fast: Option<FastDiscreteGaussian>,
}

impl GaussianDraws {
    /// Draws for a validated `scale` (finite, `> 0`).
    fn new(name: &'static str, scale: f64) -> Result<Self, MechanismError> {
        Ok(Self { exact_scale: rational(name, scale)?, fast: FastDiscreteGaussian::new(scale) })
    }

    fn draw(&self, rng: &mut ChaCha20Rng) -> Result<i64, MechanismError> {
        match &self.fast {
            Some(fast) => fast.sample(rng),
            None => sample_discrete_gaussian(self.exact_scale.clone())
                .map_err(|e| MechanismError::Sampling(e.to_string()))
                .and_then(to_i64),
        }
    }

    /// One draw.
    fn one(&self) -> Result<i64, MechanismError> {
        self.draw(&mut os_rng()?)
    }

    /// Adds an independent draw to each coordinate, refusing on overflow.
    fn add_to(&self, values: &mut [i64]) -> Result<(), MechanismError> {
        self.add_to_with(values, &mut os_rng()?)
    }

    fn add_to_with(&self, values: &mut [i64], rng: &mut ChaCha20Rng) -> Result<(), MechanismError> {
        add_each(values, || self.draw(rng))
    }
}

/// The discrete Gaussian mechanism on integer vectors. See the module documentation for its guarantee;
/// the assumption is that one privacy unit changes the vector by at most `l2_sensitivity` in L2 norm
/// (after clipping and quantisation, including rounding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DiscreteGaussianSpec", into = "DiscreteGaussianSpec")]
pub struct DiscreteGaussian {
    spec: DiscreteGaussianSpec,
    draws: GaussianDraws,
}

/// The parameters of a [`DiscreteGaussian`], as written in a policy or job spec.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscreteGaussianSpec {
    /// `sigma`, in units of the integer grid.
    pub scale: f64,
    /// L2 sensitivity of the integer vector, in units of the grid.
    pub l2_sensitivity: f64,
}

impl TryFrom<DiscreteGaussianSpec> for DiscreteGaussian {
    type Error = MechanismError;
    fn try_from(spec: DiscreteGaussianSpec) -> Result<Self, MechanismError> {
        Self::new(spec.scale, spec.l2_sensitivity)
    }
}

impl From<DiscreteGaussian> for DiscreteGaussianSpec {
    fn from(m: DiscreteGaussian) -> Self {
        m.spec
    }
}

impl DiscreteGaussian {
    /// A discrete Gaussian of standard parameter `scale` protecting an L2 sensitivity of
    /// `l2_sensitivity`; both finite and `> 0`.
    pub fn new(scale: f64, l2_sensitivity: f64) -> Result<Self, MechanismError> {
        let scale = positive("scale", scale)?;
        let l2_sensitivity = positive("l2_sensitivity", l2_sensitivity)?;
        let draws = GaussianDraws::new("scale", scale)?;
        Ok(Self { spec: DiscreteGaussianSpec { scale, l2_sensitivity }, draws })
    }

    /// `sigma`. The variance of `N_Z(0, sigma^2)` is slightly *below* `sigma^2` (shown in CKS20),
    /// so `sigma^2` is a safe figure for error bars.
    pub fn scale(&self) -> f64 {
        self.spec.scale
    }

    /// The L2 sensitivity this mechanism was calibrated for.
    pub fn l2_sensitivity(&self) -> f64 {
        self.spec.l2_sensitivity
    }

    /// The zCDP parameter `rho = Delta_2^2 / (2 sigma^2)` of one release (CKS20, multivariate form of Theorem 4).
    pub fn rho(&self) -> f64 {
        let ratio = self.spec.l2_sensitivity / self.spec.scale;
        0.5 * ratio * ratio
    }

    /// Draws one exact sample.
    pub fn sample(&self) -> Result<i64, MechanismError> {
        self.draws.one()
    }

    /// Adds independent noise to every coordinate, in place.
    pub fn add_noise(&self, values: &mut [i64]) -> Result<(), MechanismError> {
        self.draws.add_to(values)
    }
}

impl RdpMechanism for DiscreteGaussian {
    fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, AccountantError> {
        let rho = self.rho();
        Ok(orders.iter().map(|&alpha| alpha * rho).collect())
    }
}

/// The discrete Laplace (two-sided geometric) mechanism on integer vectors, for counts and
/// histograms. Guarantee: `epsilon = l1_sensitivity / scale` pure DP, assuming one privacy unit changes
/// the vector by at most `l1_sensitivity` in L1 norm (a customer in at most that many bins, each by
/// at most one, for a histogram).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DiscreteLaplaceSpec", into = "DiscreteLaplaceSpec")]
pub struct DiscreteLaplace {
    spec: DiscreteLaplaceSpec,
    exact_scale: RBig,
}

/// The parameters of a [`DiscreteLaplace`], as written in a policy or query spec.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscreteLaplaceSpec {
    /// `b`: `P[x] ∝ exp(-|x| / b)`.
    pub scale: f64,
    /// L1 sensitivity of the integer vector.
    pub l1_sensitivity: f64,
}

impl TryFrom<DiscreteLaplaceSpec> for DiscreteLaplace {
    type Error = MechanismError;
    fn try_from(spec: DiscreteLaplaceSpec) -> Result<Self, MechanismError> {
        Self::new(spec.scale, spec.l1_sensitivity)
    }
}

impl From<DiscreteLaplace> for DiscreteLaplaceSpec {
    fn from(m: DiscreteLaplace) -> Self {
        m.spec
    }
}

impl DiscreteLaplace {
    /// A discrete Laplace of scale `scale` protecting an L1 sensitivity of `l1_sensitivity`.
    pub fn new(scale: f64, l1_sensitivity: f64) -> Result<Self, MechanismError> {
        let scale = positive("scale", scale)?;
        let l1_sensitivity = positive("l1_sensitivity", l1_sensitivity)?;
        let exact_scale = rational("scale", scale)?;
        Ok(Self { spec: DiscreteLaplaceSpec { scale, l1_sensitivity }, exact_scale })
    }

    /// The scale that gives `epsilon`-DP for `l1_sensitivity`.
    pub fn for_epsilon(epsilon: f64, l1_sensitivity: f64) -> Result<Self, MechanismError> {
        let epsilon = positive("epsilon", epsilon)?;
        Self::new(positive("l1_sensitivity", l1_sensitivity)? / epsilon, l1_sensitivity)
    }

    /// `b`.
    pub fn scale(&self) -> f64 {
        self.spec.scale
    }

    /// The pure-DP epsilon of one release.
    pub fn epsilon(&self) -> f64 {
        self.spec.l1_sensitivity / self.spec.scale
    }

    /// Variance of one draw: `2 e^{-1/b} / (1 - e^{-1/b})^2`, what a count's error should match.
    pub fn variance(&self) -> f64 {
        let p = (-1.0 / self.spec.scale).exp();
        2.0 * p / ((1.0 - p) * (1.0 - p))
    }

    /// Draws one exact sample.
    pub fn sample(&self) -> Result<i64, MechanismError> {
        sample_discrete_laplace(self.exact_scale.clone())
            .map_err(|e| MechanismError::Sampling(e.to_string()))
            .and_then(to_i64)
    }

    /// Adds independent noise to every coordinate, in place.
    pub fn add_noise(&self, values: &mut [i64]) -> Result<(), MechanismError> {
        add_each(values, || self.sample())
    }
}

impl RdpMechanism for DiscreteLaplace {
    /// Pure epsilon-DP gives RDP `min(epsilon, alpha epsilon^2 / 2)` at order alpha (the first because
    /// the privacy loss is bounded by epsilon, the second through zCDP, Bun and Steinke 2016, Prop. 3.3).
    fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, AccountantError> {
        let epsilon = self.epsilon();
        Ok(orders.iter().map(|&alpha| epsilon.min(0.5 * alpha * epsilon * epsilon)).collect())
    }
}

#[cfg(test)]
mod tests;
