//! Rényi divergence of the Poisson-subsampled Gaussian mechanism, one order at a time.
//!
//! This is the numerical core of [`super::RdpAccountant`]. It computes, in log space, the quantity
//! `A_alpha` of Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism" (arXiv:1908.10530): for integer orders by the binomial expansion (their Section 3.2), for
//! fractional orders by the two-sided series with complementary error functions (their Section 3.3). The
//! RDP of one step at order `alpha` is then `ln(A_alpha) / (alpha - 1)`.
//!
//! The arithmetic deliberately follows the same steps as Google's `dp-accounting` `RdpAccountant`
//! (same series, same stopping rule, same treatment of sampling rates 0 and 1) so that the two agree to
//! floating-point accuracy; the reference fixture in `policies/fixtures/` checks that they do. Nothing here
//! validates its inputs: callers pass `0 < q < 1`, `sigma > 0` and `alpha > 1`.

use std::f64::consts::{LN_2, PI, SQRT_2};

/// Most terms summed for a fractional order before the order is given up as not converging (and so
/// excluded from the epsilon minimisation by returning an infinite divergence), as `dp-accounting` does.
const MAX_TERMS_FRACTIONAL: u32 = 1000;

/// `ln(exp(a) + exp(b))` without overflow; `-inf` stands for zero.
pub(super) fn log_add(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    (lo - hi).exp().ln_1p() + hi
}

/// `ln C(n, k)` for real `n`, `k`, through `ln |Gamma|`. For fractional `n` and `k > n + 1` the
/// coefficient's magnitude is used, exactly as the reference implementation does.
fn log_binomial(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `ln(erfc(x))`, accurate also where `erfc(x)` underflows a double.
pub(super) fn log_erfc(x: f64) -> f64 {
    // erfc(25) is about 8e-274, still a normal double with full relative precision; past that use the
    // asymptotic (Laurent) series of ln(erfc(x)) at infinity, whose first omitted term is O(x^-10).
    if x < 25.0 {
        return libm::erfc(x).ln();
    }
    let x2 = x * x;
    -PI.ln() / 2.0 - x.ln() - x2 - 0.5 / x2 + 0.625 / (x2 * x2) - 37.0 / 24.0 / (x2 * x2 * x2)
        + 353.0 / 64.0 / (x2 * x2 * x2 * x2)
}

/// `ln(A_alpha)` for an integer order: the expectation of the privacy loss moment written as the
/// binomial sum over how many times the differing record is sampled.
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let two_sigma2 = 2.0 * sigma * sigma;
    let a = alpha as f64;
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let i = i as f64;
        let term = log_binomial(a, i) + i * ln_q + (a - i) * ln_1mq + (i * i - i) / two_sigma2;
        log_a = log_add(log_a, term);
    }
    log_a
}

/// `ln(A_alpha)` for a fractional order: the integral split at `z0` into two series, summed until both
/// are decreasing and negligible (30 nats below the total). Returns `+inf` when it does not converge.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let sigma2 = sigma * sigma;
    let z0 = sigma2 * (1.0 / q - 1.0).ln() + 0.5;
    let scale = SQRT_2 * sigma;
    let ln_half = -LN_2;

    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_TERMS_FRACTIONAL {
        let i = f64::from(i);
        let j = alpha - i;
        let log_coef = log_binomial(alpha, i);
        let log_t0 = log_coef + i * ln_q + j * ln_1mq;
        let log_t1 = log_coef + j * ln_q + i * ln_1mq;
        let log_e0 = ln_half + log_erfc((i - z0) / scale);
        let log_e1 = ln_half + log_erfc((z0 - j) / scale);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma2) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma2) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// RDP at order `alpha` of one step of the Gaussian mechanism with noise multiplier `sigma` applied to a
/// Poisson sample taken with rate `q` (add/remove-one neighbours). Rate 0 costs nothing; rate 1 is the
/// plain Gaussian mechanism, `alpha / (2 sigma^2)`; zero noise is not private at all.
pub(super) fn subsampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if alpha.is_infinite() || sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    // Orders that are whole numbers take the exact binomial sum, as in the reference; the cast is exact
    // because `alpha` is integral and orders are bounded far below 2^53 by the accountant.
    let log_a = if alpha.fract() == 0.0 {
        log_a_integer(q, sigma, alpha as u64)
    } else {
        log_a_fractional(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_is_continuous_where_the_series_takes_over() {
        let below = log_erfc(25.0 - 1e-9);
        let above = log_erfc(25.0);
        assert!((below - above).abs() < 1e-6, "{below} vs {above}");
        assert!((log_erfc(0.0) - 0.0).abs() < 1e-15);
        assert!((log_erfc(-30.0) - LN_2).abs() < 1e-15);
    }

    #[test]
    fn full_sampling_is_the_gaussian_mechanism() {
        assert_eq!(subsampled_gaussian_rdp(1.0, 2.0, 3.0), 3.0 / 8.0);
        assert_eq!(subsampled_gaussian_rdp(0.0, 0.0, 3.0), 0.0);
        assert_eq!(subsampled_gaussian_rdp(0.5, 0.0, 3.0), f64::INFINITY);
    }

    #[test]
    fn integer_and_fractional_paths_agree_near_an_integer() {
        // The RDP curve is continuous in the order, so the fractional series just off an integer must be
        // close to the binomial sum at that integer.
        let exact = subsampled_gaussian_rdp(0.05, 1.1, 4.0);
        let near = subsampled_gaussian_rdp(0.05, 1.1, 4.0 + 1e-7);
        assert!((exact - near).abs() / exact < 1e-5, "{exact} vs {near}");
    }
}
