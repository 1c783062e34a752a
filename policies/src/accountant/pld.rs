//! Privacy-loss-distribution (PLD) accounting of the Poisson-subsampled Gaussian: tighter than Rényi DP
//! for the same mechanism, because it composes the whole distribution of the privacy loss instead of a
//! few of its moments.
//!
//! # What it computes
//! For neighbouring data sets `D`, `D'` and a mechanism `M`, the privacy loss of an output `o` is
//! `ln(P[M(D) = o] / P[M(D') = o])`; its distribution under `M(D)` is the PLD. The mechanism is
//! (epsilon, delta)-DP exactly when `delta >= E[(1 - e^(epsilon - L))+]` (the hockey-stick divergence),
//! and the PLD of a composition is the convolution of the parts' PLDs (Dwork and Rothblum 2016;
//! Koskela, Jälkö, Honkela 2020). Under add/remove-one neighbours both orders of the pair matter, so two
//! PLDs are kept, one per direction, and the guarantee is the worse of the two.
//!
//! # How (dominating: every figure is an upper bound, up to the FFT's rounding, about 1e-16 a mass)
//! - One step is discretised on a grid of losses `i * interval` by "connect the dots" (Doroshenko,
//!   Ghazi, Kamath, Kumar, Manurangsi, "Connect the Dots: Tighter Discrete Approximations of Privacy Loss
//!   Distributions", PETS 2022): masses placed so that the discrete PLD's hockey-stick divergence equals
//!   the mechanism's exactly at every grid point and is linear in `e^epsilon` between them. The true
//!   curve is convex in `e^epsilon`, so the discrete one lies above it: a pessimistic PLD, without the
//!   drift of rounding every step's loss up.
//! - The exact hockey-stick divergence of one step, in closed form: with `G(e)` the Gaussian mechanism's
//!   (Balle and Wang, ICML 2018, Theorem 8) and rate `q`, removing a unit gives `q G(ln(1 + (e^e - 1)/q))`;
//!   adding one gives the same through the Gaussian's symmetry (see [`add_delta`]).
//! - Composition by FFT convolution (binary powers for `steps` runs); after each convolution a tail of
//!   mass below 1e-15 is cut at each end: the low end's mass moves up to the lowest kept loss, the high
//!   end's to an infinite loss (both pessimistic).
//! - Without subsampling (`q = 1`) composition is exact in closed form: `k` runs of the Gaussian with
//!   noise multipliers `s_i` are the Gaussian with `mu = sqrt(sum 1/s_i^2)`; no grid is used unless
//!   subsampled steps are composed too.
//!
//! The numbers agree with Google's `dp-accounting` `PLDAccountant` (same interval, 1e-4):
//! `policies/fixtures/pld_reference.csv` holds its values and a test checks every row.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use super::gaussian::log_erfc;
use super::{check_delta, check_epsilon, AccountantError, SubsampledGaussian};

/// The loss grid's spacing by default, as `dp-accounting`'s.
pub const DEFAULT_INTERVAL: f64 = 1e-4;

/// Probability mass cut from each end of a PLD after a convolution (moved pessimistically).
const TAIL_MASS: f64 = 1e-15;

/// How many standard deviations of the noise one step's grid spans beyond the sensitivity: the Gaussian
/// mass outside is below 1e-17.
const SIGMAS: f64 = 8.5;

/// Most grid points one PLD may span (a convolution's FFT buffers, two of at most this many complex
/// values, then take 64 MiB).
const MAX_POINTS: usize = 1 << 21;

fn too_large(points: usize) -> AccountantError {
    AccountantError::GridTooLarge { points: points as u64, limit: MAX_POINTS as u64 }
}

/// A discrete PLD: `masses[i]` is the probability of loss `(lowest + i) * interval`; `infinity` that of
/// an infinite loss (an output only one of the two data sets can give, or a cut tail).
#[derive(Debug, Clone, PartialEq)]
struct Pmf {
    lowest: i64,
    masses: Vec<f64>,
    infinity: f64,
}

impl Pmf {
    /// No release: loss 0 with certainty.
    fn identity() -> Pmf {
        Pmf { lowest: 0, masses: vec![1.0], infinity: 0.0 }
    }

    /// The PLD of running both (independent) mechanisms.
    fn convolve(&self, other: &Pmf) -> Result<Pmf, AccountantError> {
        let len = self.masses.len() + other.masses.len() - 1;
        if len > MAX_POINTS {
            return Err(too_large(len));
        }
        let masses = if self.masses.len().min(other.masses.len()) <= 64 {
            // Direct, when one side is short (no FFT rounding at all).
            let mut out = vec![0.0; len];
            for (i, a) in self.masses.iter().enumerate() {
                for (j, b) in other.masses.iter().enumerate() {
                    out[i + j] += a * b;
                }
            }
            out
        } else {
            let n = len.next_power_of_two();
            let mut planner = FftPlanner::<f64>::new();
            let (forward, inverse) = (planner.plan_fft_forward(n), planner.plan_fft_inverse(n));
            let spectrum = |m: &[f64]| {
                let mut v: Vec<Complex<f64>> = m.iter().map(|&x| Complex::new(x, 0.0)).collect();
                v.resize(n, Complex::new(0.0, 0.0));
                forward.process(&mut v);
                v
            };
            let mut a = spectrum(&self.masses);
            if std::ptr::eq(self, other) {
                a.iter_mut().for_each(|x| *x = *x * *x);
            } else {
                let b = spectrum(&other.masses);
                a.iter_mut().zip(&b).for_each(|(x, y)| *x *= *y);
            }
            inverse.process(&mut a);
            // FFT rounding leaves tiny negative values where the true mass is (nearly) zero.
            a[..len].iter().map(|c| (c.re / n as f64).max(0.0)).collect()
        };
        let infinity = 1.0 - (1.0 - self.infinity) * (1.0 - other.infinity);
        let mut out = Pmf { lowest: self.lowest + other.lowest, masses, infinity };
        out.truncate();
        Ok(out)
    }

    /// `steps` independent runs of this mechanism.
    fn self_compose(&self, mut steps: u64) -> Result<Pmf, AccountantError> {
        let mut result = Pmf::identity();
        let mut base = self.clone();
        while steps > 0 {
            if steps & 1 == 1 {
                result = result.convolve(&base)?;
            }
            steps >>= 1;
            if steps > 0 {
                base = base.convolve(&base)?;
            }
        }
        Ok(result)
    }

    /// Cuts at most [`TAIL_MASS`] from each end: the low end's mass joins the lowest kept loss, the high
    /// end's the infinite loss.
    fn truncate(&mut self) {
        let mut low = 0.0;
        let mut start = 0;
        while start + 1 < self.masses.len() && low + self.masses[start] <= TAIL_MASS {
            low += self.masses[start];
            start += 1;
        }
        let mut high = 0.0;
        let mut end = self.masses.len();
        while end > start + 1 && high + self.masses[end - 1] <= TAIL_MASS {
            high += self.masses[end - 1];
            end -= 1;
        }
        self.masses.truncate(end);
        self.masses.drain(..start);
        self.masses[0] += low;
        self.lowest += start as i64;
        self.infinity += high;
    }

    /// The hockey-stick divergence at `epsilon`: the smallest delta for which the PLD is
    /// (epsilon, delta)-DP.
    fn delta(&self, epsilon: f64, interval: f64) -> f64 {
        let mut delta = self.infinity;
        for (i, &p) in self.masses.iter().enumerate().rev() {
            let loss = (self.lowest + i as i64) as f64 * interval;
            if loss <= epsilon {
                break;
            }
            delta -= p * (epsilon - loss).exp_m1();
        }
        delta.min(1.0)
    }

    /// The smallest epsilon `>= 0` for which the PLD is (epsilon, `delta`)-DP; `+inf` if none.
    fn epsilon(&self, delta: f64, interval: f64) -> f64 {
        // A NaN mass (never expected) counts as too much.
        if self.infinity.is_nan() || self.infinity > delta {
            return f64::INFINITY;
        }
        // delta(e) = infinity + s1 - e^e s2 between consecutive losses, s1 and s2 summing p and p e^-loss
        // over the losses above e; delta(e) falls as e grows, so walk down until it passes `delta`.
        let (mut s1, mut s2) = (0.0, 0.0);
        for (i, &p) in self.masses.iter().enumerate().rev() {
            let loss = (self.lowest + i as i64) as f64 * interval;
            if loss <= 0.0 {
                break;
            }
            s1 += p;
            s2 += p * (-loss).exp();
            let below = (loss - interval).max(0.0);
            if self.infinity + s1 - below.exp() * s2 > delta {
                // The answer lies in [below, loss).
                return ((self.infinity + s1 - delta) / s2).ln().clamp(below, loss);
            }
        }
        // Between 0 and the lowest positive loss (when every loss is above one grid step).
        if s2 > 0.0 && self.infinity + s1 - s2 > delta {
            let lowest = ((self.lowest.max(0)) as f64 * interval).max(0.0);
            return ((self.infinity + s1 - delta) / s2).ln().clamp(0.0, lowest);
        }
        0.0
    }
}

/// `ln Phi(z)`, the standard normal distribution function, accurate far into the lower tail.
fn log_normal_cdf(z: f64) -> f64 {
    log_erfc(-z / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
}

/// The Gaussian mechanism's hockey-stick divergence at `epsilon` when the sensitivity is `mu` standard
/// deviations: `Phi(-e/mu + mu/2) - e^e Phi(-e/mu - mu/2)` (Balle and Wang, Theorem 8), computed in
/// logarithms so that it keeps its relative precision in the far tail.
fn gaussian_delta(epsilon: f64, mu: f64) -> f64 {
    if epsilon == f64::INFINITY {
        return 0.0;
    }
    if epsilon == f64::NEG_INFINITY {
        return 1.0;
    }
    let a = log_normal_cdf(-epsilon / mu + mu / 2.0);
    let b = log_normal_cdf(-epsilon / mu - mu / 2.0);
    (a.exp() * -(epsilon + b - a).exp_m1()).clamp(0.0, 1.0)
}

/// Removing a unit from a Poisson sample at rate `q` under Gaussian noise `sigma`: the pair
/// ((1-q) N(0, s^2) + q N(1, s^2), N(0, s^2)); its divergence is `q G(e')` with `e' = ln(1 + (e^e - 1)/q)`,
/// and `1 - e^e` below the smallest loss, `ln(1 - q)`.
fn remove_delta(epsilon: f64, q: f64, sigma: f64) -> f64 {
    let shifted = epsilon.exp_m1() / q;
    if shifted <= -1.0 {
        return -epsilon.exp_m1();
    }
    q * gaussian_delta(shifted.ln_1p(), 1.0 / sigma)
}

/// Adding a unit: the pair (N(0, s^2), (1-q) N(0, s^2) + q N(1, s^2)). With `e' = ln(1 + (e^-e - 1)/q)`
/// the divergence is `q e^e (e^e' - 1 + G(e'))`, and through the Gaussian's symmetry
/// `G(-x) = 1 - e^-x + e^-x G(x)` it is `q e^(e + e') G(-e')` when `e' < 0`, which avoids the
/// cancellation; 0 above the largest loss, `-ln(1 - q)`.
fn add_delta(epsilon: f64, q: f64, sigma: f64) -> f64 {
    let shifted = (-epsilon).exp_m1() / q;
    if shifted <= -1.0 {
        return 0.0;
    }
    let e1 = shifted.ln_1p();
    let mu = 1.0 / sigma;
    let delta = if e1 >= 0.0 {
        q * epsilon.exp() * (e1.exp_m1() + gaussian_delta(e1, mu))
    } else {
        q * (epsilon + e1).exp() * gaussian_delta(-e1, mu)
    };
    delta.clamp(0.0, 1.0)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Remove,
    Add,
}

/// One step's dominating discrete PLD in `direction`, by connect the dots on the grid.
fn discretise(q: f64, sigma: f64, direction: Direction, interval: f64) -> Result<Pmf, AccountantError> {
    // The loss of an output x is monotone in x; the grid spans the losses of x within SIGMAS standard
    // deviations of both means (0 and 1).
    let loss = |x: f64| {
        let u = (2.0 * x - 1.0) / (2.0 * sigma * sigma);
        let l = if q == 1.0 { u } else { (q * u.exp_m1()).ln_1p() };
        match direction {
            Direction::Remove => l,
            Direction::Add => -l,
        }
    };
    let (a, b) = (loss(-SIGMAS * sigma), loss(1.0 + SIGMAS * sigma));
    let (low, high) = (a.min(b), a.max(b));
    // Checked in floating point, before any conversion to integers can overflow.
    let span = (high / interval).ceil() - (low / interval).floor() + 1.0;
    if !(span.is_finite() && low.is_finite() && span <= MAX_POINTS as f64) {
        return Err(too_large(if span.is_finite() { span as usize } else { usize::MAX }));
    }
    let first = (low / interval).floor() as i64;
    let last = ((high / interval).ceil() as i64).max(first + 1);
    let e = |i: usize| (first + i as i64) as f64 * interval;
    let deltas: Vec<f64> = (0..=(last - first) as usize)
        .map(|i| match direction {
            Direction::Remove => remove_delta(e(i), q, sigma),
            Direction::Add => add_delta(e(i), q, sigma),
        })
        .collect();
    if deltas.iter().any(|d| !d.is_finite()) {
        // Not reached for a noise the grid can span; refused rather than trusted if it ever is.
        return Err(AccountantError::InvalidParameter {
            name: "noise_multiplier",
            value: sigma,
            expected: "a noise whose privacy loss the grid can represent",
        });
    }
    let n = deltas.len();
    // slope(i) = sum over grid losses >= e(i) of p e^-loss: minus the curve's slope in e^epsilon between
    // points i-1 and i. Where epsilon <= 0 the curve is near 1 - e^epsilon and its differences cancel, so
    // there slope(i) - 1 is computed instead from the reversed pair's divergence, through
    // delta(e) = 1 - e^e + e^e reverse(-e) (both orders of the pair are one direction or the other).
    let reverse = |i: usize| {
        let r = match direction {
            Direction::Remove => add_delta(-e(i), q, sigma),
            Direction::Add => remove_delta(-e(i), q, sigma),
        };
        e(i).exp() * r
    };
    let width = |i: usize| e(i - 1).exp() * interval.exp_m1();
    // (slope, whether it is stored less 1)
    let slope = |i: usize| -> (f64, bool) {
        if e(i) <= 0.0 {
            ((reverse(i - 1) - reverse(i)) / width(i), true)
        } else {
            ((deltas[i - 1] - deltas[i]) / width(i), false)
        }
    };
    let mut masses = vec![0.0; n];
    let mut next = (0.0, false);
    for i in (1..n).rev() {
        let here = slope(i);
        let difference = match (here.1, next.1) {
            (a, b) if a == b => here.0 - next.0,
            (true, _) => here.0 + 1.0 - next.0,
            (false, _) => here.0 - (next.0 + 1.0),
        };
        masses[i] = (e(i).exp() * difference).max(0.0);
        next = here;
    }
    let infinity = deltas[n - 1];
    masses[0] = (1.0 - infinity - masses[1..].iter().sum::<f64>()).max(0.0);
    let mut pmf = Pmf { lowest: first, masses, infinity };
    pmf.truncate();
    Ok(pmf)
}

/// A privacy-loss-distribution accountant for the Poisson-subsampled Gaussian under add/remove-one
/// neighbours. See the module documentation for what it guarantees.
#[derive(Debug, Clone, PartialEq)]
pub struct PldAccountant {
    interval: f64,
    /// `sum 1/sigma^2` over the composed runs without subsampling (exact in closed form).
    gaussian: f64,
    /// The composed subsampled runs: the remove and the add direction's PLDs.
    sampled: Option<(Pmf, Pmf)>,
    /// A run without noise was composed: no finite epsilon.
    unbounded: bool,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl PldAccountant {
    /// An accountant with nothing spent, on the grid of [`DEFAULT_INTERVAL`].
    pub fn new() -> Self {
        Self { interval: DEFAULT_INTERVAL, gaussian: 0.0, sampled: None, unbounded: false }
    }

    /// An accountant on a grid of `interval` (finite, in [1e-6, 0.1]): finer is tighter and slower.
    pub fn with_interval(interval: f64) -> Result<Self, AccountantError> {
        if !(1e-6..=0.1).contains(&interval) {
            return Err(AccountantError::InvalidParameter {
                name: "interval",
                value: interval,
                expected: "a number in [1e-6, 0.1]",
            });
        }
        Ok(Self { interval, ..Self::new() })
    }

    /// Adds `steps` runs of `mechanism`. Leaves the accountant unchanged if its parameters are invalid.
    pub fn compose(
        &mut self,
        mechanism: SubsampledGaussian,
        steps: u64,
    ) -> Result<&mut Self, AccountantError> {
        mechanism.validate()?;
        let SubsampledGaussian { sampling_rate: q, noise_multiplier: sigma } = mechanism;
        if steps == 0 || q == 0.0 {
            return Ok(self);
        }
        if sigma == 0.0 {
            self.unbounded = true;
            return Ok(self);
        }
        if q == 1.0 {
            self.gaussian += steps as f64 / (sigma * sigma);
            return Ok(self);
        }
        let run = |direction| discretise(q, sigma, direction, self.interval)?.self_compose(steps);
        let (remove, add) = (run(Direction::Remove)?, run(Direction::Add)?);
        self.sampled = Some(match &self.sampled {
            None => (remove, add),
            Some((r, a)) => (r.convolve(&remove)?, a.convolve(&add)?),
        });
        Ok(self)
    }

    /// The two directions' PLDs of everything composed, the closed-form Gaussian part discretised in;
    /// `None` when only that part (or nothing) was composed.
    fn pmfs(&self) -> Result<Option<(Pmf, Pmf)>, AccountantError> {
        let Some((remove, add)) = self.sampled.as_ref() else { return Ok(None) };
        if self.gaussian == 0.0 {
            return Ok(Some((remove.clone(), add.clone())));
        }
        // Without subsampling both directions have the same PLD.
        let g = discretise(1.0, 1.0 / self.gaussian.sqrt(), Direction::Remove, self.interval)?;
        Ok(Some((remove.convolve(&g)?, add.convolve(&g)?)))
    }

    /// The smallest epsilon such that everything composed so far is (epsilon, `delta`)-DP; `+inf` when
    /// there is none (a run without noise, or more mass at an infinite loss than `delta`).
    pub fn epsilon(&self, delta: f64) -> Result<f64, AccountantError> {
        check_delta(delta)?;
        if self.unbounded {
            return Ok(f64::INFINITY);
        }
        if let Some((remove, add)) = self.pmfs()? {
            return Ok(remove.epsilon(delta, self.interval).max(add.epsilon(delta, self.interval)));
        }
        if self.gaussian == 0.0 {
            return Ok(0.0);
        }
        // The closed form: delta falls as epsilon grows; bracket, then bisect to 1e-12.
        let mu = self.gaussian.sqrt();
        if gaussian_delta(0.0, mu) <= delta {
            return Ok(0.0);
        }
        let (mut low, mut high) = (0.0, 1.0);
        while gaussian_delta(high, mu) > delta {
            low = high;
            high *= 2.0;
            if high > 1e6 {
                return Ok(f64::INFINITY);
            }
        }
        while high - low > 1e-12 * high.max(1.0) {
            let mid = 0.5 * (low + high);
            if gaussian_delta(mid, mu) > delta {
                low = mid;
            } else {
                high = mid;
            }
        }
        Ok(high)
    }

    /// The smallest delta such that everything composed so far is (`epsilon`, delta)-DP.
    pub fn delta(&self, epsilon: f64) -> Result<f64, AccountantError> {
        check_epsilon(epsilon)?;
        if self.unbounded {
            return Ok(1.0);
        }
        if let Some((remove, add)) = self.pmfs()? {
            return Ok(remove.delta(epsilon, self.interval).max(add.delta(epsilon, self.interval)));
        }
        if self.gaussian == 0.0 {
            return Ok(0.0);
        }
        Ok(gaussian_delta(epsilon, self.gaussian.sqrt()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grid's discretisation of the closed-form Gaussian, composed on the grid.
    fn gridded_gaussian(sigma: f64, steps: u64, delta: f64) -> f64 {
        let one = discretise(1.0, sigma, Direction::Remove, DEFAULT_INTERVAL).unwrap();
        one.self_compose(steps).unwrap().epsilon(delta, DEFAULT_INTERVAL)
    }

    #[test]
    fn the_grid_reproduces_the_closed_form_without_subsampling() {
        for (sigma, steps, delta) in [(0.5, 1, 1e-5), (2.0, 10, 1e-5), (6.0, 100, 1e-5), (1.5, 50, 1e-6)] {
            let mut a = PldAccountant::new();
            a.compose(SubsampledGaussian { sampling_rate: 1.0, noise_multiplier: sigma }, steps).unwrap();
            let exact = a.epsilon(delta).unwrap();
            let grid = gridded_gaussian(sigma, steps, delta);
            assert!(grid >= exact - 1e-9, "sigma {sigma} x{steps}: grid {grid} below the exact {exact}");
            assert!(grid - exact < 2e-3 * exact, "sigma {sigma} x{steps}: grid {grid}, exact {exact}");
            // And the closed form's delta at its epsilon is the delta asked for.
            let back = a.delta(exact).unwrap();
            assert!((back - delta).abs() < 1e-9 * delta.max(1e-12) + 1e-15, "{back} vs {delta}");
        }
    }

    #[test]
    fn the_divergences_meet_their_limits() {
        // Without subsampling both directions are the Gaussian's; at rate q removal scales it by q.
        for e in [0.0, 0.3, 2.0] {
            let g = gaussian_delta(e, 0.5);
            assert!((remove_delta(e, 1.0, 2.0) - g).abs() < 1e-12);
            assert!((add_delta(e, 1.0, 2.0) - g).abs() < 1e-12, "{} vs {g}", add_delta(e, 1.0, 2.0));
        }
        // Below the smallest loss the removal's divergence is 1 - e^e; above the largest the addition's is 0.
        assert!((remove_delta(-0.2, 0.1, 1.0) - (1.0 - (-0.2f64).exp())).abs() < 1e-12);
        assert_eq!(add_delta(0.2, 0.1, 1.0), 0.0);
        // Each is non-increasing in epsilon.
        for (q, sigma) in [(0.01, 0.8), (0.2, 2.0), (0.5, 1.5)] {
            let mut last = (1.0, 1.0);
            for i in -50..200 {
                let e = f64::from(i) * 0.05;
                let now = (remove_delta(e, q, sigma), add_delta(e, q, sigma));
                assert!(now.0 <= last.0 + 1e-15 && now.1 <= last.1 + 1e-15, "q {q} sigma {sigma} at {e}");
                last = now;
            }
        }
    }

    #[test]
    fn a_discretised_step_is_a_distribution_that_dominates_the_mechanism() {
        for (q, sigma) in [(0.01, 1.1), (0.2, 2.0), (1.0, 0.8)] {
            for direction in [Direction::Remove, Direction::Add] {
                let p = discretise(q, sigma, direction, DEFAULT_INTERVAL).unwrap();
                let total = p.masses.iter().sum::<f64>() + p.infinity;
                assert!((total - 1.0).abs() < 1e-9, "{q} {sigma} {direction:?}: total {total}");
                for e in [0.0, 0.05, 0.5, 1.0, 3.0] {
                    let exact = match direction {
                        Direction::Remove => remove_delta(e, q, sigma),
                        Direction::Add => add_delta(e, q, sigma),
                    };
                    let discrete = p.delta(e, DEFAULT_INTERVAL);
                    assert!(
                        discrete >= exact - 1e-12,
                        "{q} {sigma} {direction:?} at {e}: {discrete} < {exact}"
                    );
                    assert!(
                        discrete <= exact + 1e-6,
                        "{q} {sigma} {direction:?} at {e}: {discrete} >> {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn nothing_composed_costs_nothing_and_no_noise_is_unbounded() {
        let a = PldAccountant::new();
        assert_eq!(a.epsilon(1e-5).unwrap(), 0.0);
        assert_eq!(a.delta(1.0).unwrap(), 0.0);
        let mut b = PldAccountant::new();
        b.compose(SubsampledGaussian { sampling_rate: 0.1, noise_multiplier: 0.0 }, 3).unwrap();
        assert_eq!(b.epsilon(1e-5).unwrap(), f64::INFINITY);
        let mut c = PldAccountant::new();
        c.compose(SubsampledGaussian { sampling_rate: 0.0, noise_multiplier: 1.0 }, 3).unwrap();
        c.compose(SubsampledGaussian { sampling_rate: 0.5, noise_multiplier: 1.0 }, 0).unwrap();
        assert_eq!(c.epsilon(1e-5).unwrap(), 0.0);
    }

    #[test]
    fn invalid_parameters_are_named() {
        let mut a = PldAccountant::new();
        let bad = a.compose(SubsampledGaussian { sampling_rate: 1.5, noise_multiplier: 1.0 }, 1).unwrap_err();
        assert!(bad.to_string().contains("sampling_rate"), "{bad}");
        assert_eq!(a, PldAccountant::new(), "a refused run changes nothing");
        assert!(a.epsilon(0.0).unwrap_err().to_string().contains("delta"));
        assert!(a.delta(f64::NAN).unwrap_err().to_string().contains("epsilon"));
        assert!(PldAccountant::with_interval(0.0).unwrap_err().to_string().contains("interval"));
        // A tiny noise multiplier spans too wide a grid: refused, naming the way out, nothing changed.
        let tiny =
            a.compose(SubsampledGaussian { sampling_rate: 0.5, noise_multiplier: 1e-3 }, 10).unwrap_err();
        assert!(matches!(tiny, AccountantError::GridTooLarge { .. }), "{tiny}");
        assert!(tiny.to_string().contains("RDP accountant"), "{tiny}");
        assert_eq!(a, PldAccountant::new());
        // Noise so small the losses overflow a double: refused, not a panic (debug builds check overflow).
        let huge =
            a.compose(SubsampledGaussian { sampling_rate: 0.5, noise_multiplier: 0.01 }, 1).unwrap_err();
        assert!(matches!(huge, AccountantError::GridTooLarge { .. }), "{huge}");
        // At the edge of a coarse grid's reach the answer is refused or large, never a small epsilon.
        let mut coarse = PldAccountant::with_interval(1e-3).unwrap();
        match coarse.compose(SubsampledGaussian { sampling_rate: 0.5, noise_multiplier: 0.0331961 }, 1) {
            Err(e) => assert!(matches!(e, AccountantError::GridTooLarge { .. }), "{e}"),
            Ok(c) => {
                let e = c.epsilon(1e-5).unwrap();
                assert!(e > 100.0, "epsilon {e}");
                assert!(c.delta(e.min(1e6)).unwrap() <= 1e-5 * (1.0 + 1e-6) || e.is_infinite());
            }
        }
    }
}
