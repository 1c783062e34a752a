//! The exact noise path: a participant's discrete Gaussian share, in the integer units of the secure
//! aggregation quantiser, added after quantisation and before masking.
//!
//! It never sees the data or the masks; it only turns a [`DpConfig`] and the round's quantisation
//! [`Grid`] into the `hearth_policies` mechanism (which carries its privacy map) and draws from it.
//!
//! # The grid and the sensitivity
//! The quantiser (`hearth_secagg::Quantizer`) clamps each coordinate of a participant's clipped
//! sum to `[-clip, clip]`, multiplies by its `scale`, and rounds each coordinate up or down at random
//! (unbiased). Adding or removing one record moves the clipped sum by at most `C` in L2 norm, so the
//! scaled vector by at most `C * scale` (clamping is 1-Lipschitz per coordinate). Rounding each
//! coordinate of both vectors with the *same* uniform draw (a coupling of the two roundings) changes a
//! coordinate by at most one more level, so the rounded vectors differ by at most
//! `Delta_2 = C * scale + sqrt(d)` in L2 and `Delta_1 = sqrt(d) * C * scale + d` in L1 norm. Rényi
//! divergence is jointly quasi-convex (van Erven and Harremoës 2014, Theorem 13), so the mixture over the
//! coupled roundings costs at most the worst fixed pair: the distributed discrete Gaussian's bound
//! (Kairouz, Liu, Steinke 2021, Proposition 14) at these sensitivities covers the randomised rounding.
//! With 32-bit rings `C * scale` is millions of levels, so the inflation `sqrt(d) / (C * scale)` is
//! negligible; on a coarse grid the accountant shows it.
//!
//! # Cost
//! A share is one exact draw per parameter (`hearth_policies`' integer sampler; OpenDP's, over
//! arbitrary-precision rationals, would take about 4 s for the model below). Measured with
//! `tests/clinc150_dp_simulation.rs` on the shared 2-core machine: 73 ms for the 618 647 parameters of
//! the 4096-bucket intent model (120 ns a draw), so about 0.6 s for the default 32 768-bucket model,
//! per participant per round.

use hearth_policies::DistributedDiscreteGaussian;

use super::{invalid, DpConfig, DpError, DpParams, PrivacyTarget};

/// Probability, per round, that the noise of some coordinate exceeds the headroom and the modular
/// sum wraps (which corrupts that round's sum, never its privacy): 2^-40.
const WRAP_PROBABILITY_LOG2: f64 = -40.0;

/// How a round quantises the vectors that are summed: what noise shares are expressed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Integer levels per unit of the gradient: the round quantiser's `Quantizer::scale()`.
    pub scale: f64,
    /// Length of the vector the noise is added to (the model's parameters).
    pub dimension: u64,
    /// Participants invited to the round.
    pub cohort: u32,
}

impl DpConfig {
    /// The distributed discrete Gaussian each participant draws its share from on `grid`: shares of
    /// standard parameter `noise_multiplier * clip_norm * scale / sqrt(min_survivors)` levels, calibrated
    /// so that any `min_survivors` of them sum to the target, and the sensitivities of the module
    /// documentation. Its privacy map is the worst case over survivor counts in
    /// `min_survivors..=cohort`.
    pub fn share_mechanism(&self, grid: &Grid) -> Result<DistributedDiscreteGaussian, DpError> {
        if !(grid.scale > 0.0 && grid.scale.is_finite()) {
            return Err(invalid("scale", grid.scale, "a finite number > 0"));
        }
        if grid.dimension == 0 {
            return Err(invalid("dimension", 0.0, "at least 1"));
        }
        if grid.cohort < self.min_survivors() {
            return Err(invalid("cohort", f64::from(grid.cohort), "at least min_survivors"));
        }
        let d = grid.dimension as f64;
        let levels = self.clip_norm() * grid.scale;
        Ok(DistributedDiscreteGaussian::calibrate(
            self.noise_multiplier() * levels,
            self.min_survivors(),
            grid.cohort,
            levels + d.sqrt(),
            d.sqrt() * levels + d,
            grid.dimension,
        )?)
    }

    /// The `noise_headroom` (in levels) for the round's `QuantizerSpec` with per-coordinate clip
    /// `quantizer_clip`, `cohort` summands, vectors of `dimension` values and a ring of `modulus_bits`:
    /// large enough that the noise of all `cohort` shares exceeds it in some coordinate with probability
    /// at most 2^-40 per round (a sum of discrete Gaussians is sub-Gaussian with the sum of the
    /// variances, CKS20; union bound over coordinates), taking into account that the headroom itself
    /// lowers the quantiser's scale. Mirrors `Quantizer::new`'s formula.
    pub fn noise_headroom(
        &self,
        quantizer_clip: f64,
        cohort: u32,
        dimension: u64,
        modulus_bits: u8,
    ) -> Result<u64, DpError> {
        let round = RoundShape { quantizer_clip, cohort, dimension, modulus_bits };
        round.check()?;
        let tails =
            (2.0 * ((2.0 * dimension as f64).ln() - WRAP_PROBABILITY_LOG2 * std::f64::consts::LN_2)).sqrt();
        // Noise of all shares, in units of the quantiser's clip; times `max_level` it is in levels.
        let a = tails * self.share_std() * f64::from(cohort).sqrt() / quantizer_clip;
        let half = round.half_range() as f64;
        // H >= a * M with M = (half - H) / cohort holds for H = a * half / (cohort + a).
        Ok((a * half / (f64::from(cohort) + a)).ceil() as u64)
    }

    /// Everything a DP job fixes when it is submitted, for the secure-aggregation rounds of `round`:
    /// the smallest noise multiplier meeting `target` when the participants add discrete shares on the
    /// round's grid, the grid, and the quantiser's noise headroom for that noise. `base` gives every
    /// parameter but the noise multiplier.
    ///
    /// The headroom and the noise depend on each other (more headroom is a coarser grid, whose rounding
    /// costs a little more noise), so this starts from the continuous calibration and grows the headroom
    /// until it covers the noise calibrated on the grid it leaves; the discrete accounting never costs
    /// less than the continuous one, so that takes one or two steps. The coordinator and every
    /// participant reach the same plan from the same public inputs; the quantiser built from
    /// `round` and [`DpPlan::noise_headroom`] has scale [`DpPlan::grid`]`.scale` (tested against
    /// `hearth_secagg`'s).
    pub fn plan(base: DpParams, target: PrivacyTarget, round: RoundShape) -> Result<DpPlan, DpError> {
        round.check()?;
        let mut sigma = Self::calibrate(base, target, None)?.noise_multiplier();
        for _ in 0..PLAN_STEPS {
            let noise_headroom = Self::new(DpParams { noise_multiplier: sigma, ..base })?.noise_headroom(
                round.quantizer_clip,
                round.cohort,
                round.dimension,
                round.modulus_bits,
            )?;
            let grid = Grid {
                scale: round.scale(noise_headroom)?,
                dimension: round.dimension,
                cohort: round.cohort,
            };
            let config = Self::calibrate(base, target, Some(&grid))?;
            if config.noise_multiplier() <= sigma {
                return Ok(DpPlan { config, grid, noise_headroom });
            }
            // A little more than needed, so that the next headroom surely covers it.
            sigma = config.noise_multiplier() * 1.01;
        }
        Err(DpError::NoRoomForNoise { modulus_bits: round.modulus_bits, cohort: round.cohort })
    }
}

impl DpConfig {
    /// The noise headroom and the grid of a round of shape `round` under this configuration (its noise
    /// multiplier as given, not calibrated): what the coordinator announces (`noise_headroom`) and
    /// charges ([`Self::training_plan`] on the grid), and what every participant recomputes from the same
    /// public inputs before it adds its share.
    pub fn round_grid(&self, round: RoundShape) -> Result<(Grid, u64), DpError> {
        let headroom =
            self.noise_headroom(round.quantizer_clip, round.cohort, round.dimension, round.modulus_bits)?;
        let grid = Grid { scale: round.scale(headroom)?, dimension: round.dimension, cohort: round.cohort };
        Ok((grid, headroom))
    }
}

/// Headroom refinements [`DpConfig::plan`] tries before giving up.
const PLAN_STEPS: usize = 8;

/// The secure-aggregation rounds of a DP job, as far as its noise is concerned: the inputs of the
/// round's `QuantizerSpec` other than the headroom, and the length of the summed vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundShape {
    /// Each coordinate of a participant's clipped sum is clamped to `[-quantizer_clip,
    /// quantizer_clip]` (`QuantizerSpec::clip`). Clamping never raises the sensitivity, so any value is
    /// private; one that no sum can exceed (the clip norm times the largest declared record count)
    /// never biases the sum.
    pub quantizer_clip: f64,
    /// Participants invited to a round (`QuantizerSpec::max_summands`).
    pub cohort: u32,
    /// Length of the summed vector: the model's parameters.
    pub dimension: u64,
    /// Bits of the ring (`QuantizerSpec::modulus_bits`), 2 to 32.
    pub modulus_bits: u8,
}

impl RoundShape {
    /// The rounds of a job whose records' gradients are clipped to `clip_norm` and whose institutions
    /// declared `declared_records` in all: the quantiser clips each coordinate at `clip_norm *
    /// declared_records`, which no participant's sum of clipped gradients can exceed, so it never biases
    /// a sum. The coordinator, every participant and whoever calibrates a job file use this one shape.
    pub fn for_job(
        clip_norm: f64,
        declared_records: u64,
        cohort: u32,
        dimension: u64,
        modulus_bits: u8,
    ) -> Self {
        Self { quantizer_clip: clip_norm * declared_records.max(1) as f64, cohort, dimension, modulus_bits }
    }

    fn check(&self) -> Result<(), DpError> {
        if !(self.quantizer_clip > 0.0 && self.quantizer_clip.is_finite()) {
            return Err(invalid("quantizer_clip", self.quantizer_clip, "a finite number > 0"));
        }
        if !(2..=32).contains(&self.modulus_bits) {
            return Err(invalid("modulus_bits", f64::from(self.modulus_bits), "2 to 32"));
        }
        if self.cohort == 0 {
            return Err(invalid("cohort", 0.0, "at least 1"));
        }
        if self.dimension == 0 {
            return Err(invalid("dimension", 0.0, "at least 1"));
        }
        Ok(())
    }

    /// `2^(bits - 1) - 1`: the largest magnitude the ring's signed reading holds.
    fn half_range(&self) -> u64 {
        (1u64 << (self.modulus_bits - 1)) - 1
    }

    /// The quantiser's scale with `noise_headroom`: `floor((half - headroom) / cohort) / clip`, as
    /// `Quantizer::new` computes it.
    fn scale(&self, noise_headroom: u64) -> Result<f64, DpError> {
        let max_level = self.half_range().saturating_sub(noise_headroom) / u64::from(self.cohort);
        if max_level == 0 {
            return Err(DpError::NoRoomForNoise { modulus_bits: self.modulus_bits, cohort: self.cohort });
        }
        Ok(max_level as f64 / self.quantizer_clip)
    }
}

/// The result of [`DpConfig::plan`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpPlan {
    /// The job's configuration, its noise multiplier calibrated on [`Self::grid`].
    pub config: DpConfig,
    /// The grid the rounds quantise on.
    pub grid: Grid,
    /// The `QuantizerSpec::noise_headroom` of every round.
    pub noise_headroom: u64,
}

/// A participant's noise share for one round: `len` independent exact draws from `mechanism` (built by
/// [`DpConfig::share_mechanism`] for this round's grid), in quantisation levels, to pass to
/// `Quantizer::add_integer_noise` after encoding and before masking. Fresh draws every call, from the
/// operating system's randomness (never seeded).
pub fn noise_share(mechanism: &DistributedDiscreteGaussian, len: usize) -> Result<Vec<i64>, DpError> {
    let expected = usize::try_from(mechanism.spec().dimension).unwrap_or(usize::MAX);
    if len != expected {
        return Err(DpError::Length { what: "the noise share", got: len, expected });
    }
    let mut noise = vec![0i64; len];
    mechanism.add_share(&mut noise)?;
    Ok(noise)
}
