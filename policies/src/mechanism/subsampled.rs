//! Privacy amplification by Poisson subsampling for any mechanism with a known RDP curve.
//!
//! # Guarantee (Zhu and Wang, "Poisson Subsampled Rényi Differential Privacy", ICML 2019, Theorem 6)
//! If `M` is `(l, eps(l))`-RDP for every integer `l >= 2`, then running `M` on a Poisson sample where
//! each unit is kept with probability `g` is, for integer `alpha >= 2`, `(alpha, e(alpha))`-RDP with
//!
//! `e(alpha) = 1/(alpha-1) ln[ (1-g)^(alpha-1) (alpha g - g + 1) + C(alpha,2) g^2 (1-g)^(alpha-2) e^eps(2)
//!            + 3 sum_{l=3}^{alpha} C(alpha,l) (1-g)^(alpha-l) g^l e^((l-1) eps(l)) ]`.
//!
//! Fractional orders use the next integer (at least 2): Rényi divergence is non-decreasing in its order
//! (van Erven and Harremoës 2014, Theorem 3), so that is an upper bound. Subsampling never hurts, so the
//! result is also capped by `M`'s own curve. For the Gaussian use the tighter, exact
//! [`crate::SubsampledGaussian`] instead: for a distributed discrete Gaussian equivalent to noise
//! multiplier 4 at rate 0.05 over 200 rounds (delta 1e-6) this bound gives epsilon 1.96 where the exact
//! Gaussian analysis gives 0.84 (test `a_distributed_discrete_gaussian_job_is_priced_at_its_worst_survivor_count`).
//! Safe, but it pays to sample every record each round (rate 1) when the shares are large, or to
//! tighten this bound later.

use serde::{Deserialize, Serialize};

use crate::accountant::{AccountantError, RdpMechanism};

/// `mechanism` applied to a Poisson sample with rate `sampling_rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoissonSubsampled<M> {
    /// Probability each unit is in the sample, in [0, 1].
    pub sampling_rate: f64,
    /// The mechanism run on the sample.
    pub mechanism: M,
}

fn ln_binomial(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

impl<M: RdpMechanism> RdpMechanism for PoissonSubsampled<M> {
    fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, AccountantError> {
        let g = self.sampling_rate;
        if !(0.0..=1.0).contains(&g) {
            return Err(AccountantError::InvalidParameter {
                name: "sampling_rate",
                value: g,
                expected: "a number in [0, 1]",
            });
        }
        let own = self.mechanism.rdp(orders)?;
        if g == 0.0 {
            return Ok(vec![0.0; orders.len()]);
        }
        if g == 1.0 {
            return Ok(own);
        }
        // The base curve at every integer order the bound needs.
        let top = orders.iter().map(|a| a.ceil().max(2.0)).fold(2.0, f64::max);
        let integers: Vec<f64> = (0..=top as u32).map(f64::from).collect();
        let mut base = self.mechanism.rdp(&integers[2..])?;
        base.splice(0..0, [0.0, 0.0]);
        let (ln_g, ln_1mg) = (g.ln(), (-g).ln_1p());
        let amplified = |alpha: usize| -> f64 {
            let a = alpha as f64;
            let mut terms = Vec::with_capacity(alpha);
            terms.push((a - 1.0) * ln_1mg + (a * g - g + 1.0).ln());
            terms.push(ln_binomial(a, 2.0) + 2.0 * ln_g + (a - 2.0) * ln_1mg + base[2]);
            for (l, &eps_l) in base.iter().enumerate().take(alpha + 1).skip(3) {
                let lf = l as f64;
                terms.push(
                    3f64.ln() + ln_binomial(a, lf) + (a - lf) * ln_1mg + lf * ln_g + (lf - 1.0) * eps_l,
                );
            }
            log_sum_exp(&terms) / (a - 1.0)
        };
        Ok(orders
            .iter()
            .zip(own)
            .map(|(&alpha, own)| own.min(amplified(alpha.ceil().max(2.0) as usize)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DiscreteGaussian, RdpAccountant, SubsampledGaussian};

    #[test]
    fn amplifies_and_stays_above_the_exact_gaussian_analysis() {
        // A discrete Gaussian with sensitivity 1 and sigma 2 is at least as private as the continuous
        // Gaussian with noise multiplier 2, whose subsampled RDP is known exactly: the generic bound
        // must lie between that and the unsampled curve.
        let orders = [2.0, 3.0, 8.0, 32.0];
        let generic =
            PoissonSubsampled { sampling_rate: 0.01, mechanism: DiscreteGaussian::new(2.0, 1.0).unwrap() }
                .rdp(&orders)
                .unwrap();
        let exact = SubsampledGaussian { sampling_rate: 0.01, noise_multiplier: 2.0 }.rdp(&orders).unwrap();
        for ((&alpha, g), e) in orders.iter().zip(generic).zip(exact) {
            assert!(g >= e * (1.0 - 1e-9), "alpha {alpha}: generic {g} below exact {e}");
            assert!(g < alpha / 8.0, "alpha {alpha}: no amplification ({g})");
        }
        let mut a = RdpAccountant::new();
        a.compose(
            PoissonSubsampled { sampling_rate: 0.01, mechanism: DiscreteGaussian::new(2.0, 1.0).unwrap() },
            100,
        )
        .unwrap();
        assert!(a.epsilon(1e-5).unwrap() < 2.0);
    }

    #[test]
    fn rates_zero_and_one_and_bad_rates() {
        let m = DiscreteGaussian::new(2.0, 1.0).unwrap();
        let p = |g| PoissonSubsampled { sampling_rate: g, mechanism: m.clone() };
        assert_eq!(p(0.0).rdp(&[4.0]).unwrap(), vec![0.0]);
        assert_eq!(p(1.0).rdp(&[4.0]).unwrap(), m.rdp(&[4.0]).unwrap());
        assert!(p(1.5).rdp(&[4.0]).is_err());
        assert!(p(f64::NAN).rdp(&[4.0]).is_err());
    }
}
