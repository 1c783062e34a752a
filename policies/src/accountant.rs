//! Rényi-DP accounting: how much privacy a sequence of noisy releases costs, as (epsilon, delta).
//!
//! # What it guarantees
//! [`RdpAccountant`] keeps, for each Rényi order `alpha` in a fixed grid, an upper bound on the Rényi
//! divergence of order `alpha` between the outputs on two neighbouring data sets (add/remove one privacy
//! unit). Rényi DP composes by addition (Mironov, "Rényi Differential Privacy", CSF 2017, Proposition 1),
//! so composing `steps` runs of a mechanism adds `steps` times its curve. [`RdpAccountant::epsilon`] turns
//! the curve into an (epsilon, delta)-DP guarantee for the whole sequence with the conversion of Canonne,
//! Kamath and Steinke, "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020, Proposition 12 of
//! arXiv:2004.00010v4; also Asoodeh et al., arXiv:2001.05990, eq. 20):
//! `epsilon = min_alpha rdp(alpha) + ln(1 - 1/alpha) - (ln(delta) + ln(alpha)) / (alpha - 1)`,
//! tighter than the classical `rdp - ln(delta) / (alpha - 1)`, together with the bound through the KL
//! divergence, `delta <= sqrt(1 - exp(-rdp))`, which gives epsilon 0 when it holds.
//!
//! # Assumptions
//! - Each step's RDP curve is an upper bound for that step given everything released before it
//!   (adaptive composition): true for the Poisson-subsampled Gaussian with fresh sampling and fresh noise
//!   per step, whatever the clipped function computes.
//! - The sampling in [`SubsampledGaussian`] is Poisson (each unit independently with `sampling_rate`),
//!   and the sensitivity the noise is scaled to (the clipping norm) bounds one unit's contribution.
//!
//! The numbers reproduce Google's `dp-accounting` `RdpAccountant` (same default orders, series and
//! conversion; `policies/fixtures/rdp_reference.csv` holds its values and a test checks every row).
//! Any other mechanism joins the same ledger by implementing [`RdpMechanism`].

mod gaussian;
mod pld;

pub use pld::{PldAccountant, DEFAULT_INTERVAL as PLD_INTERVAL};

use serde::{Deserialize, Serialize};

/// Why an accounting question has no answer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountantError {
    /// A mechanism or conversion parameter is outside its domain: a negative, NaN or infinite value, a
    /// sampling rate above 1, or a delta outside (0, 1). Usually a policy or job spec typed wrongly.
    #[error("{name} = {value} is invalid: expected {expected}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The domain it must lie in.
        expected: &'static str,
    },
    /// No noise multiplier up to the search limit reaches the target epsilon; the target is too strict
    /// for this many steps at this sampling rate.
    #[error(
        "no noise multiplier up to {limit} reaches epsilon {target_epsilon} at delta {delta} \
         (sampling rate {sampling_rate}, {steps} steps)"
    )]
    Unreachable {
        /// The epsilon asked for.
        target_epsilon: f64,
        /// The delta it was asked at.
        delta: f64,
        /// The sampling rate.
        sampling_rate: f64,
        /// The number of steps.
        steps: u64,
        /// The largest noise multiplier tried.
        limit: f64,
    },
    /// The privacy loss distribution would need more grid points than [`PldAccountant`] allows: a very
    /// small noise multiplier or a very long composition, where epsilon is large anyway. The RDP
    /// accountant still answers.
    #[error(
        "the privacy loss distribution needs {points} grid points, more than {limit}: use a coarser \
         interval, or the RDP accountant"
    )]
    GridTooLarge {
        /// Grid points needed.
        points: u64,
        /// Most allowed.
        limit: u64,
    },
}

/// `delta` in (0, 1), or the error naming it.
fn check_delta(delta: f64) -> Result<(), AccountantError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(AccountantError::InvalidParameter {
            name: "delta",
            value: delta,
            expected: "a number in (0, 1)",
        });
    }
    Ok(())
}

/// `epsilon` finite and `>= 0`, or the error naming it.
fn check_epsilon(epsilon: f64) -> Result<(), AccountantError> {
    if !(epsilon >= 0.0 && epsilon.is_finite()) {
        return Err(AccountantError::InvalidParameter {
            name: "epsilon",
            value: epsilon,
            expected: "a finite number >= 0",
        });
    }
    Ok(())
}

/// A mechanism whose privacy loss is described by a Rényi-DP curve, so that the accountant can compose
/// it with everything else a budget has paid for.
pub trait RdpMechanism {
    /// The RDP of one run at each of `orders` (all `> 1`), or an error naming a parameter outside its
    /// domain. Values may be `+inf` (no guarantee at that order).
    fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, AccountantError>;
}

/// A borrowed mechanism costs what the mechanism costs, so `compose(&m, steps)` needs no clone.
impl<M: RdpMechanism + ?Sized> RdpMechanism for &M {
    fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, AccountantError> {
        (**self).rdp(orders)
    }
}

/// The Gaussian mechanism applied to a Poisson sample: each privacy unit is included independently with
/// probability `sampling_rate`, contributions are clipped to norm `C`, and Gaussian noise of standard
/// deviation `noise_multiplier * C` is added to their sum. This is one step of DP-SGD or one round of
/// DP federated averaging. Guarantee: RDP of Mironov, Talwar and Zhang (arXiv:1908.10530, Sections 3.2
/// and 3.3) per step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsampledGaussian {
    /// Probability that a given unit takes part in one step, in [0, 1]. 1 means no subsampling.
    pub sampling_rate: f64,
    /// Noise standard deviation divided by the sensitivity (clipping norm), `>= 0`. 0 means no noise
    /// and an infinite epsilon.
    pub noise_multiplier: f64,
}

impl SubsampledGaussian {
    /// Checks both parameters are in their domains.
    pub fn validate(&self) -> Result<(), AccountantError> {
        if !(0.0..=1.0).contains(&self.sampling_rate) {
            return Err(AccountantError::InvalidParameter {
                name: "sampling_rate",
                value: self.sampling_rate,
                expected: "a number in [0, 1]",
            });
        }
        if !(self.noise_multiplier >= 0.0 && self.noise_multiplier.is_finite()) {
            return Err(AccountantError::InvalidParameter {
                name: "noise_multiplier",
                value: self.noise_multiplier,
                expected: "a finite number >= 0",
            });
        }
        Ok(())
    }
}

impl RdpMechanism for SubsampledGaussian {
    fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, AccountantError> {
        self.validate()?;
        Ok(orders
            .iter()
            .map(|&alpha| gaussian::subsampled_gaussian_rdp(self.sampling_rate, self.noise_multiplier, alpha))
            .collect())
    }
}

/// The Rényi orders `dp-accounting` uses by default: 1.1 to 10.9 in steps of 0.1, the integers 11 to 63,
/// and 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let fractional = (1..100).map(|x| 1.0 + f64::from(x) / 10.0);
    let integers = (11..64).map(f64::from);
    fractional.chain(integers).chain([128.0, 256.0, 512.0, 1024.0]).collect()
}

/// The running RDP bound of everything composed so far, at a fixed grid of orders. See the module
/// documentation for what it guarantees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant with nothing spent, over [`default_orders`].
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }

    /// An accountant over custom orders; each must be finite and `> 1`, at most 1e6.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, AccountantError> {
        if orders.is_empty() {
            return Err(AccountantError::InvalidParameter {
                name: "orders",
                value: 0.0,
                expected: "at least one order",
            });
        }
        for &alpha in &orders {
            if !(alpha > 1.0 && alpha <= 1e6) {
                return Err(AccountantError::InvalidParameter {
                    name: "order",
                    value: alpha,
                    expected: "a number in (1, 1e6]",
                });
            }
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// Adds `steps` runs of `mechanism` (adaptive composition: RDP curves add). Leaves the accountant
    /// unchanged if the mechanism's parameters are invalid.
    pub fn compose(
        &mut self,
        mechanism: impl RdpMechanism,
        steps: u64,
    ) -> Result<&mut Self, AccountantError> {
        let curve = mechanism.rdp(&self.orders)?;
        if steps == 0 {
            return Ok(self);
        }
        let steps = steps as f64;
        for (total, one) in self.rdp.iter_mut().zip(curve) {
            *total += steps * one;
        }
        Ok(self)
    }

    /// The orders this accountant tracks.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The accumulated RDP at each of [`Self::orders`].
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// The smallest epsilon such that everything composed so far is (epsilon, `delta`)-DP; `+inf` when
    /// no order gives a finite bound (for example a mechanism without noise was composed).
    pub fn epsilon(&self, delta: f64) -> Result<f64, AccountantError> {
        self.epsilon_and_order(delta).map(|(epsilon, _)| epsilon)
    }

    /// Like [`Self::epsilon`], also returning the order that attains it (useful in reports).
    pub fn epsilon_and_order(&self, delta: f64) -> Result<(f64, f64), AccountantError> {
        check_delta(delta)?;
        let ln_delta = delta.ln();
        let mut best = (f64::INFINITY, self.orders[0]);
        for (&alpha, &r) in self.orders.iter().zip(&self.rdp) {
            let epsilon = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
                // Negative values only arise from rounding; the KL bound sqrt(1 - e^-r) <= delta
                // already gives a pure guarantee.
                0.0
            } else if alpha > 1.01 {
                // The improved conversion is unstable as alpha -> 1 (and useless there).
                r + (-1.0 / alpha).ln_1p() - (ln_delta + alpha.ln()) / (alpha - 1.0)
            } else {
                f64::INFINITY
            };
            if epsilon < best.0 {
                best = (epsilon, alpha);
            }
        }
        Ok((best.0.max(0.0), best.1))
    }

    /// The smallest delta such that everything composed so far is (`epsilon`, delta)-DP, capped at 1.
    pub fn delta(&self, epsilon: f64) -> Result<f64, AccountantError> {
        check_epsilon(epsilon)?;
        let mut best = f64::INFINITY;
        for (&alpha, &r) in self.orders.iter().zip(&self.rdp) {
            let mut log_delta = if r <= 0.0 { f64::NEG_INFINITY } else { 0.5 * (-(-r).exp()).ln_1p() };
            if alpha > 1.01 && r > 0.0 {
                let bound = (alpha - 1.0) * (r - epsilon + (-1.0 / alpha).ln_1p()) - alpha.ln();
                log_delta = log_delta.min(bound);
            }
            best = best.min(log_delta);
        }
        Ok(best.exp().min(1.0))
    }
}

/// Upper end of the noise-multiplier search in [`calibrate_noise_multiplier`]: a noise 10^4 times the
/// sensitivity makes any realistic model useless, so needing more is reported as unreachable.
const MAX_NOISE_MULTIPLIER: f64 = 1e4;

/// The smallest noise multiplier (to relative precision 1e-4, rounded up so the target is met) for
/// which `steps` runs of the Poisson-subsampled Gaussian at `sampling_rate` are
/// (`target_epsilon`, `delta`)-DP. Returns 0 when no noise is needed (rate 0 or no steps).
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    steps: u64,
) -> Result<f64, AccountantError> {
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return Err(AccountantError::InvalidParameter {
            name: "target_epsilon",
            value: target_epsilon,
            expected: "a finite number > 0",
        });
    }
    let epsilon_at = |noise_multiplier: f64| -> Result<f64, AccountantError> {
        let mut accountant = RdpAccountant::new();
        accountant.compose(SubsampledGaussian { sampling_rate, noise_multiplier }, steps)?;
        accountant.epsilon(delta)
    };
    if epsilon_at(0.0)? <= target_epsilon {
        return Ok(0.0);
    }
    // Epsilon decreases as the noise grows: bracket the answer by doubling, then bisect.
    let mut high = 1.0;
    while epsilon_at(high)? > target_epsilon {
        high *= 2.0;
        if high > MAX_NOISE_MULTIPLIER {
            return Err(AccountantError::Unreachable {
                target_epsilon,
                delta,
                sampling_rate,
                steps,
                limit: MAX_NOISE_MULTIPLIER,
            });
        }
    }
    let mut low = if high > 1.0 { high / 2.0 } else { 0.0 };
    while high - low > 1e-4 * high {
        let mid = 0.5 * (low + high);
        if epsilon_at(mid)? > target_epsilon {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(high)
}

#[cfg(test)]
mod tests;
