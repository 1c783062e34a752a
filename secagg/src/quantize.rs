//! Fixed-point quantisation of clipped float vectors into the ring Z_{2^b}, and decoding of their sum.
//!
//! Responsibility: map each summand to integers so that the modular sum of up to N of them, plus the
//! caller's integer noise, is exactly the integer sum (no wrap-around), and map that sum back to floats.
//! It never sees masks or other clients' values.
//!
//! Encoding: clip to `[-clip, clip]`, multiply by `scale`, round randomly to a neighbouring integer (up
//! with probability equal to the fractional part, to within 2^-32, so the rounding is unbiased up to
//! that; see [`Quantizer::encode`]), and store the integer in two's complement modulo 2^b. With `M = floor((2^(b-1) - 1 - H) / N)` levels per summand and
//! `scale = M / clip`, every summand has `|q| <= M`, so N summands plus noise of magnitude at most `H`
//! stay inside `(-2^(b-1), 2^(b-1))` and the signed reading of the modular sum is the true integer sum.
//!
//! Error bound, per coordinate, for a sum of `N` clipped values (before the caller's noise):
//! `|decoded - sum of clipped values| <= N / scale`, deterministically (each rounding moves a value by at
//! most one level); the error has mean zero and standard deviation at most `sqrt(N) / (2 scale)`.
//! [`Quantizer::error_bound`] returns the deterministic bound; the unit tests check it.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::SecAggError;

/// Coordinates whose rounding randomness [`Quantizer::encode`] draws in one call.
const RANDOM_CHUNK: usize = 512;

/// What the quantiser must accommodate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizerSpec {
    /// Every coordinate is clipped to `[-clip, clip]` (e.g. the DP-SGD clipping norm bounds each
    /// coordinate too). Must be finite and positive.
    pub clip: f64,
    /// Most summands the aggregate may contain (the cohort size).
    pub max_summands: u32,
    /// Extra integer room, in quantisation levels, for noise the caller adds after encoding: the total
    /// noise of all summands in one coordinate must stay within `[-noise_headroom, noise_headroom]`.
    pub noise_headroom: u64,
    /// Bits of the ring, 2..=32: the secure-aggregation round's `modulus_bits`.
    pub modulus_bits: u8,
}

/// A validated quantiser: the scale and ring size that make the sum of `max_summands` values exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    spec: QuantizerSpec,
    max_level: i64,
    scale: f64,
}

fn invalid(name: &'static str, reason: impl Into<String>) -> SecAggError {
    SecAggError::InvalidParameter { name, reason: reason.into() }
}

/// 1.5 * 2^52: adding it to a double `w` with `|w| < 2^51` rounds `w` to the nearest integer (ties to even)
/// and leaves that integer, plus 2^51, in the low bits of the sum's mantissa.
const ROUNDING_MAGIC: f64 = 6_755_399_441_055_744.0;

/// `qs[i]` = `xs[i]` clipped to `[-clip, clip]`, scaled, and rounded randomly with the random word
/// `rs[i]`, in two's complement reduced by `mask`.
///
/// With `s = (rs[i] as i32 + 1/2) / 2^32`, uniform on a grid of 2^-32 inside (-1/2, 1/2), the nearest
/// integer to `v + s` is `floor(v) + 1` with probability `frac(v)` (to within 2^-32) and `floor(v)`
/// otherwise: randomised rounding. (At the largest scales the f64 sum `v + s` can itself round onto a
/// tie, so a value can move by exactly one level; never by more.) The nearest integer comes from adding [`ROUNDING_MAGIC`]: `|v + s| <= max_level
/// < 2^31`, so the sum's low 32 bits are that integer modulo 2^32. Only adds, multiplies, min/max and a
/// bit cast: no branch, no call, no float-to-integer conversion, so the loop vectorises.
fn round_randomly(xs: &[f32], rs: &[u32], qs: &mut [u32], clip: f64, scale: f64, max_level: f64, mask: u32) {
    for ((q, &x), &r) in qs.iter_mut().zip(xs).zip(rs) {
        // Reading the random word as signed centres it; the half step keeps s off -1/2.
        let s = (f64::from(r as i32) + 0.5) * (1.0 / (1u64 << 32) as f64);
        let w = (f64::from(x).max(-clip).min(clip) * scale + s).max(-max_level).min(max_level);
        *q = ((w + ROUNDING_MAGIC).to_bits() as u32) & mask;
    }
}

impl Quantizer {
    /// Chooses the largest scale for which `max_summands` clipped values plus `noise_headroom` cannot
    /// wrap modulo 2^`modulus_bits`. Refuses a spec that leaves less than one level per summand.
    pub fn new(spec: QuantizerSpec) -> Result<Self, SecAggError> {
        if !(spec.clip.is_finite() && spec.clip > 0.0) {
            return Err(invalid("clip", format!("{} is not a finite positive number", spec.clip)));
        }
        if !(2..=32).contains(&spec.modulus_bits) {
            return Err(invalid("modulus_bits", format!("{} is outside 2..=32", spec.modulus_bits)));
        }
        if spec.max_summands == 0 {
            return Err(invalid("max_summands", "must be at least 1"));
        }
        let half = (1u64 << (spec.modulus_bits - 1)) - 1;
        let room = half.checked_sub(spec.noise_headroom).ok_or_else(|| {
            invalid("noise_headroom", format!("{} exceeds the ring's half range {half}", spec.noise_headroom))
        })?;
        let max_level = room / u64::from(spec.max_summands);
        if max_level == 0 {
            return Err(invalid(
                "modulus_bits",
                format!(
                    "{} bits leave no quantisation level for {} summands with headroom {}",
                    spec.modulus_bits, spec.max_summands, spec.noise_headroom
                ),
            ));
        }
        // max_level < 2^31, exact in both i64 and f64.
        let max_level = max_level as i64;
        Ok(Self { spec, max_level, scale: max_level as f64 / spec.clip })
    }

    /// The spec this quantiser was built from.
    pub fn spec(&self) -> QuantizerSpec {
        self.spec
    }

    /// Integer levels per unit of the input.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Largest magnitude of one encoded summand, `M`.
    pub fn max_level(&self) -> i64 {
        self.max_level
    }

    /// Deterministic per-coordinate bound on `|decoded sum - sum of clipped inputs|` for `summands`
    /// values: `summands / scale`.
    pub fn error_bound(&self, summands: u32) -> f64 {
        f64::from(summands) / self.scale
    }

    fn ring_mask(&self) -> u64 {
        (1u64 << self.spec.modulus_bits) - 1
    }

    /// Clips, scales and rounds `values` (randomised rounding, see below) into ring elements. A NaN is
    /// an error; infinities clip like any other large value.
    ///
    /// Rounding: a scaled value `v` rounds up with probability `frac(v)` to within 2^-32, drawing 32 bits
    /// per coordinate from the ChaCha20 keystream of a 32-byte key taken from `rng` (see
    /// `round_randomly`). That bias (below 2^-32 of a level) and the f64 arithmetic (errors up to 2^-22 of
    /// a level at the largest scales) are far below the rounding's own spread, so the rounding is unbiased
    /// for every purpose. Speed: about 1.5 ms per million coordinates here, half of it the keystream
    /// (`cargo run --release -p hearth-secagg --example secagg_bench`).
    pub fn encode<R: CryptoRng + ?Sized>(
        &self,
        values: &[f32],
        rng: &mut R,
    ) -> Result<Vec<u32>, SecAggError> {
        if let Some(i) = values.iter().position(|x| x.is_nan()) {
            return Err(SecAggError::BadInput { reason: format!("coordinate {i} is NaN") });
        }
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        let mut stream = ChaCha20::new(&(*key).into(), &[0u8; 12].into());
        let mut random = Zeroizing::new([0u8; 4 * RANDOM_CHUNK]);
        let mut words = Zeroizing::new([0u32; RANDOM_CHUNK]);
        let mut out = vec![0u32; values.len()];
        let mask = self.ring_mask() as u32;
        let (clip, scale, max_level) = (self.spec.clip, self.scale, self.max_level as f64);
        for (xs, qs) in values.chunks(RANDOM_CHUNK).zip(out.chunks_mut(RANDOM_CHUNK)) {
            let random = &mut random[..4 * xs.len()];
            stream.write_keystream(random);
            for (w, r) in words.iter_mut().zip(random.chunks_exact(4)) {
                *w = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            }
            round_randomly(xs, &words[..xs.len()], qs, clip, scale, max_level, mask);
        }
        Ok(out)
    }

    /// Adds integer noise (in quantisation levels) to encoded values, modulo 2^b. The caller keeps the
    /// total noise of all summands within `noise_headroom` per coordinate.
    pub fn add_integer_noise(&self, encoded: &mut [u32], noise: &[i64]) -> Result<(), SecAggError> {
        if encoded.len() != noise.len() {
            return Err(SecAggError::BadInput {
                reason: format!("{} noise values for {} coordinates", noise.len(), encoded.len()),
            });
        }
        let mask = self.ring_mask();
        for (e, &z) in encoded.iter_mut().zip(noise) {
            *e = (u64::from(*e).wrapping_add(z as u64) & mask) as u32;
        }
        Ok(())
    }

    /// Reads one ring element as the signed integer sum it stands for.
    pub fn to_signed(&self, word: u32) -> i64 {
        let bits = self.spec.modulus_bits;
        let w = u64::from(word) & self.ring_mask();
        if w >> (bits - 1) == 1 {
            w as i64 - (1i64 << bits)
        } else {
            w as i64
        }
    }

    /// Decodes a modular sum (e.g. [`super::UnmaskedSum::values`]) to floats: signed reading, then
    /// division by the scale.
    pub fn decode_sum(&self, sum: &[u32]) -> Vec<f64> {
        sum.iter().map(|&w| self.to_signed(w) as f64 / self.scale).collect()
    }
}

#[cfg(test)]
mod tests {
    use chacha20::ChaCha20Rng;
    use proptest::prelude::*;
    use rand_core::SeedableRng;

    use super::*;

    fn quantizer(clip: f64, n: u32, headroom: u64, bits: u8) -> Quantizer {
        Quantizer::new(QuantizerSpec { clip, max_summands: n, noise_headroom: headroom, modulus_bits: bits })
            .unwrap()
    }

    fn modular_sum(q: &Quantizer, vectors: &[Vec<u32>]) -> Vec<u32> {
        let mask = q.ring_mask() as u32;
        let mut sum = vec![0u32; vectors[0].len()];
        for v in vectors {
            for (s, x) in sum.iter_mut().zip(v) {
                *s = s.wrapping_add(*x) & mask;
            }
        }
        sum
    }

    proptest! {
        #[test]
        fn decoded_sum_is_within_the_documented_bound(
            n in 1u32..60,
            bits in 8u8..=32,
            clip in 0.01f64..100.0,
            d in 1usize..40,
            seed in any::<u64>(),
        ) {
            prop_assume!(u64::from(n) < (1u64 << (bits - 1)) - 1);
            let q = quantizer(clip, n, 0, bits);
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let inputs: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..d).map(|_| ((rng.next_u32() as f64 / u32::MAX as f64) * 3.0 - 1.5) as f32 * clip as f32).collect())
                .collect();
            let encoded: Vec<Vec<u32>> = inputs.iter().map(|v| q.encode(v, &mut rng).unwrap()).collect();
            let decoded = q.decode_sum(&modular_sum(&q, &encoded));
            for (j, got) in decoded.iter().enumerate() {
                let exact: f64 = inputs.iter().map(|v| f64::from(v[j]).clamp(-clip, clip)).sum();
                let bound = q.error_bound(n) * (1.0 + 1e-9) + 1e-12;
                prop_assert!((got - exact).abs() <= bound, "coordinate {j}: |{got} - {exact}| > {bound}");
            }
        }
    }

    #[test]
    fn extreme_values_plus_headroom_do_not_wrap() {
        for bits in [8u8, 16, 24, 32] {
            let headroom = (1u64 << (bits - 2)) / 3;
            let n = 7;
            let q = quantizer(2.5, n, headroom, bits);
            let mut rng = ChaCha20Rng::seed_from_u64(1);
            for sign in [1.0f32, -1.0] {
                let enc: Vec<Vec<u32>> =
                    (0..n).map(|_| q.encode(&[sign * 1e30, sign * 2.5], &mut rng).unwrap()).collect();
                let mut sum = modular_sum(&q, &enc);
                q.add_integer_noise(&mut sum, &[sign as i64 * headroom as i64; 2]).unwrap();
                let expect = sign as i64 * (i64::from(n) * q.max_level() + headroom as i64);
                assert_eq!(q.to_signed(sum[0]), expect, "bits {bits}");
                assert_eq!(q.to_signed(sum[1]), expect, "bits {bits}");
            }
        }
    }

    #[test]
    fn rounding_is_unbiased() {
        // One level is 1/scale; a value 0.3 levels above a grid point must average 0.3 levels up. The
        // standard error of the mean over 200k draws is sqrt(0.21 / 200000) ~ 0.001 levels; 0.01 is ten
        // standard errors.
        // Negative values and an exact grid point too: each must land on its two neighbours only.
        let q = quantizer(1.0, 1, 0, 12);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let draws = 200_000;
        for levels in [5.3, -5.3, -0.7, 2.0] {
            let x = (levels / q.scale()) as f32;
            let encoded = q.encode(&vec![x; draws], &mut rng).unwrap();
            let target = f64::from(x) * q.scale();
            let signed: Vec<i64> = encoded.iter().map(|&w| q.to_signed(w)).collect();
            assert!(
                signed.iter().all(|&v| v == target.floor() as i64 || v == target.ceil() as i64),
                "{levels}"
            );
            let mean = signed.iter().map(|&v| v as f64).sum::<f64>() / draws as f64;
            assert!((mean - target).abs() < 0.01, "mean {mean} vs {target}");
        }
    }

    #[test]
    fn bad_specs_and_inputs_are_errors() {
        let spec = QuantizerSpec { clip: 1.0, max_summands: 10, noise_headroom: 0, modulus_bits: 32 };
        assert!(Quantizer::new(QuantizerSpec { clip: f64::NAN, ..spec }).is_err());
        assert!(Quantizer::new(QuantizerSpec { clip: -1.0, ..spec }).is_err());
        assert!(Quantizer::new(QuantizerSpec { modulus_bits: 33, ..spec }).is_err());
        assert!(Quantizer::new(QuantizerSpec { max_summands: 0, ..spec }).is_err());
        assert!(Quantizer::new(QuantizerSpec { noise_headroom: 1 << 31, ..spec }).is_err());
        assert!(
            Quantizer::new(QuantizerSpec { modulus_bits: 4, ..spec }).is_err(),
            "7 levels for 10 summands"
        );
        let q = Quantizer::new(spec).unwrap();
        assert_eq!(q.max_level(), ((1i64 << 31) - 1) / 10);
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        assert!(matches!(q.encode(&[0.0, f32::NAN], &mut rng), Err(SecAggError::BadInput { .. })));
        assert!(q.add_integer_noise(&mut [0, 0], &[1]).is_err());
    }
}
