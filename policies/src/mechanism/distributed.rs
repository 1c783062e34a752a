//! The distributed discrete Gaussian: every participant adds its own discrete Gaussian share to its
//! quantised update before secure aggregation, so only the *sum* of the shares, never one share alone,
//! protects what the coordinator sees.
//!
//! # Guarantee (Kairouz, Liu, Steinke, ICML 2021, arXiv:2102.06387)
//! Let each of `k` survivors add independent `N_Z(0, sigma^2)^d` noise, `sigma >= 1/2`, and let one
//! privacy unit change the sum of the quantised vectors by at most `Delta_2` in L2 norm and `Delta_1` in
//! L1 norm (in units of the integer grid). The sum of the shares is not a discrete Gaussian, but it is
//! close to one: with `tau_k = 10 * sum_{j=1}^{k-1} exp(-2 pi^2 sigma^2 j / (j + 1))` (Theorem 1),
//! `a = Delta_2 / (sqrt(k) sigma)` and `b = Delta_1 / (sqrt(k) sigma)`, the release has Rényi divergence
//! of order `alpha` at most (Proposition 14)
//!
//! `min( alpha/2 * a^2 + tau_k d,  alpha/2 * (a^2 + 2 b tau_k + tau_k^2 d),  alpha/2 * (a + sqrt(d) tau_k)^2 )`.
//!
//! For `sigma` a few grid units, `tau_k` is negligible (about `10 k e^{-pi^2 sigma^2}`) and this is the
//! continuous Gaussian's `alpha a^2 / 2`; for `sigma` near 1/2 it is not, and the accounting shows it.
//!
//! # Drop-outs
//! Noise comes only from participants whose masked update is in the aggregate: if some drop out after
//! adding their share, the sum carries less noise. The mechanism is therefore calibrated to the
//! *minimum number of survivors* `n_min` the round protocol accepts (the secure aggregation threshold):
//! each share has `sigma = central_scale / sqrt(n_min)`, so any `k >= n_min` survivors give at least the
//! target central variance. Because `tau_k` grows with `k` while `a` shrinks, the privacy map takes the
//! worst case over every `k` in `[n_min, cohort]` rather than assuming more survivors is always better.
//! A round with fewer than `n_min` survivors must abort without unmasking (the coordinator's rule).

use serde::{Deserialize, Serialize};

use super::{positive, GaussianDraws, MechanismError};
use crate::accountant::{AccountantError, RdpMechanism};

/// Largest cohort the privacy map iterates over; far above any consortium.
const MAX_COHORT: u32 = 10_000;

/// The parameters of a [`DistributedDiscreteGaussian`], as written in a job spec.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedDiscreteGaussianSpec {
    /// `sigma` of each participant's share, in grid units, `>= 0.5`.
    pub local_scale: f64,
    /// Fewest participants whose shares can be in an unmasked aggregate, `>= 1`.
    pub min_survivors: u32,
    /// Participants invited to the round, `>= min_survivors`, at most 10 000.
    pub cohort: u32,
    /// L2 sensitivity of the aggregated integer vector to one privacy unit, in grid units.
    pub l2_sensitivity: f64,
    /// L1 sensitivity, in grid units (at most `sqrt(dimension) * l2_sensitivity`).
    pub l1_sensitivity: f64,
    /// Length of the vector.
    pub dimension: u64,
}

/// The distributed discrete Gaussian mechanism; see the module documentation for its guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DistributedDiscreteGaussianSpec", into = "DistributedDiscreteGaussianSpec")]
pub struct DistributedDiscreteGaussian {
    spec: DistributedDiscreteGaussianSpec,
    draws: GaussianDraws,
}

impl TryFrom<DistributedDiscreteGaussianSpec> for DistributedDiscreteGaussian {
    type Error = MechanismError;
    fn try_from(spec: DistributedDiscreteGaussianSpec) -> Result<Self, MechanismError> {
        Self::new(spec)
    }
}

impl From<DistributedDiscreteGaussian> for DistributedDiscreteGaussianSpec {
    fn from(m: DistributedDiscreteGaussian) -> Self {
        m.spec
    }
}

impl DistributedDiscreteGaussian {
    /// Builds the mechanism from explicit parameters, checking each.
    pub fn new(spec: DistributedDiscreteGaussianSpec) -> Result<Self, MechanismError> {
        let invalid = |name, value, expected| MechanismError::InvalidParameter { name, value, expected };
        if !(spec.local_scale >= 0.5 && spec.local_scale.is_finite()) {
            return Err(invalid("local_scale", spec.local_scale, "a finite number >= 0.5"));
        }
        if spec.min_survivors == 0 {
            return Err(invalid("min_survivors", 0.0, "at least 1"));
        }
        if spec.cohort < spec.min_survivors || spec.cohort > MAX_COHORT {
            return Err(invalid("cohort", f64::from(spec.cohort), "between min_survivors and 10000"));
        }
        positive("l2_sensitivity", spec.l2_sensitivity)?;
        positive("l1_sensitivity", spec.l1_sensitivity)?;
        if spec.dimension == 0 {
            return Err(invalid("dimension", 0.0, "at least 1"));
        }
        let draws = GaussianDraws::new("local_scale", spec.local_scale)?;
        Ok(Self { spec, draws })
    }

    /// Calibrates the shares so that any `min_survivors` or more of them sum to noise of standard
    /// parameter at least `central_scale`: `local_scale = central_scale / sqrt(min_survivors)`.
    pub fn calibrate(
        central_scale: f64,
        min_survivors: u32,
        cohort: u32,
        l2_sensitivity: f64,
        l1_sensitivity: f64,
        dimension: u64,
    ) -> Result<Self, MechanismError> {
        let central_scale = positive("central_scale", central_scale)?;
        let survivors = f64::from(min_survivors.max(1));
        Self::new(DistributedDiscreteGaussianSpec {
            local_scale: central_scale / survivors.sqrt(),
            min_survivors,
            cohort,
            l2_sensitivity,
            l1_sensitivity,
            dimension,
        })
    }

    /// The parameters.
    pub fn spec(&self) -> &DistributedDiscreteGaussianSpec {
        &self.spec
    }

    /// Upper bound on the variance of each coordinate of the aggregate noise with `survivors` shares.
    pub fn aggregate_variance(&self, survivors: u32) -> f64 {
        f64::from(survivors) * self.spec.local_scale * self.spec.local_scale
    }

    /// One participant's share for one coordinate: an exact `N_Z(0, local_scale^2)` draw.
    pub fn sample_share(&self) -> Result<i64, MechanismError> {
        self.draws.one()
    }

    /// Adds this participant's share to each coordinate of its quantised update, in place: about 0.1
    /// microsecond a coordinate (see `mechanism/sampler.rs`).
    pub fn add_share(&self, values: &mut [i64]) -> Result<(), MechanismError> {
        self.draws.add_to(values)
    }

    /// [`Self::add_share`] with the draws taken from a ChaCha20 generator keyed by `seed`, so that a
    /// simulation replays exactly (the same exact sampler; scales outside its range fall back to
    /// OpenDP's, which is never seeded). Only with the `seeded-noise` feature, which no service enables:
    /// noise its caller can replay protects nothing.
    #[cfg(feature = "seeded-noise")]
    pub fn add_share_seeded(&self, values: &mut [i64], seed: [u8; 32]) -> Result<(), MechanismError> {
        use rand_chacha::rand_core::SeedableRng;
        self.draws.add_to_with(values, &mut rand_chacha::ChaCha20Rng::from_seed(seed))
    }

    /// `tau_k` of Theorem 1 for every `k` in `1..=last` (index `k - 1`), in one pass.
    fn taus(&self, last: u32) -> Vec<f64> {
        let s2 = self.spec.local_scale * self.spec.local_scale;
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        let mut taus = Vec::with_capacity(last as usize);
        let mut sum = 0.0;
        for k in 1..=last {
            taus.push(10.0 * sum);
            // Term j = k of the sum, which tau_{k+1} includes.
            sum += (-2.0 * pi2 * s2 * f64::from(k) / f64::from(k + 1)).exp();
        }
        taus
    }

    /// The Proposition 14 bound at order `alpha` with exactly `survivors` shares in the aggregate.
    pub fn rdp_with_survivors(&self, alpha: f64, survivors: u32) -> f64 {
        let survivors = survivors.max(1);
        // `taus(n)` has exactly `n >= 1` entries, so index `n - 1` exists.
        let tau = self.taus(survivors)[survivors as usize - 1];
        self.bound(alpha, survivors, tau)
    }

    fn bound(&self, alpha: f64, survivors: u32, tau: f64) -> f64 {
        let k = f64::from(survivors).sqrt() * self.spec.local_scale;
        let (a, b) = (self.spec.l2_sensitivity / k, self.spec.l1_sensitivity / k);
        let d = self.spec.dimension as f64;
        let first = 0.5 * alpha * a * a + tau * d;
        let second = 0.5 * alpha * (a * a + 2.0 * b * tau + tau * tau * d);
        let third = 0.5 * alpha * (a + d.sqrt() * tau).powi(2);
        first.min(second).min(third)
    }
}

impl RdpMechanism for DistributedDiscreteGaussian {
    /// The worst case over every number of survivors the round may unmask with.
    fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, AccountantError> {
        // `taus` has `cohort` entries and `1 <= min_survivors <= k <= cohort` (checked in `new`).
        let taus = self.taus(self.spec.cohort);
        Ok(orders
            .iter()
            .map(|&alpha| {
                (self.spec.min_survivors..=self.spec.cohort)
                    .map(|k| self.bound(alpha, k, taus[k as usize - 1]))
                    .fold(0.0, f64::max)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddg(local_scale: f64, min_survivors: u32, cohort: u32) -> DistributedDiscreteGaussian {
        DistributedDiscreteGaussian::new(DistributedDiscreteGaussianSpec {
            local_scale,
            min_survivors,
            cohort,
            l2_sensitivity: 10.0,
            l1_sensitivity: 100.0,
            dimension: 1000,
        })
        .unwrap()
    }

    #[test]
    fn with_large_shares_it_costs_what_the_central_gaussian_costs() {
        // 5 shares of sigma 20 sum to variance 2000; the central discrete Gaussian of that variance
        // has rho = 10^2 / (2 * 2000).
        let m = ddg(20.0, 5, 5);
        let rho = 100.0 / 4000.0;
        for alpha in [1.5, 2.0, 32.0] {
            let r = m.rdp(&[alpha]).unwrap()[0];
            assert!((r - alpha * rho).abs() <= 1e-12 * alpha * rho, "alpha {alpha}: {r}");
        }
    }

    #[test]
    fn drop_outs_are_priced_at_the_minimum_number_of_survivors() {
        let calibrated = DistributedDiscreteGaussian::calibrate(40.0, 4, 10, 10.0, 100.0, 1000).unwrap();
        assert_eq!(calibrated.spec().local_scale, 20.0);
        let worst = calibrated.rdp(&[2.0]).unwrap()[0];
        assert_eq!(worst, calibrated.rdp_with_survivors(2.0, 4));
        assert!(calibrated.rdp_with_survivors(2.0, 10) < worst);
        assert!(calibrated.aggregate_variance(4) >= 40.0 * 40.0);
    }

    #[test]
    fn tiny_shares_pay_for_their_distance_from_a_gaussian() {
        let coarse = ddg(0.5, 10, 10);
        let rho_central = 100.0 / (2.0 * 10.0 * 0.25);
        assert!(coarse.rdp(&[2.0]).unwrap()[0] > 2.0 * rho_central * 1.01);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let good = *ddg(2.0, 3, 5).spec();
        for (spec, name) in [
            (DistributedDiscreteGaussianSpec { local_scale: 0.4, ..good }, "local_scale"),
            (DistributedDiscreteGaussianSpec { local_scale: f64::NAN, ..good }, "local_scale"),
            (DistributedDiscreteGaussianSpec { min_survivors: 0, ..good }, "min_survivors"),
            (DistributedDiscreteGaussianSpec { cohort: 2, ..good }, "cohort"),
            (DistributedDiscreteGaussianSpec { l2_sensitivity: -1.0, ..good }, "l2_sensitivity"),
            (DistributedDiscreteGaussianSpec { dimension: 0, ..good }, "dimension"),
        ] {
            match DistributedDiscreteGaussian::new(spec) {
                Err(MechanismError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
