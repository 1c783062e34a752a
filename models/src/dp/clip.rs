//! The participant's statistic: the sum of per-example clipped gradients over a Poisson sample.
//!
//! It must never add noise, quantise or read another participant's data; its output leaves the
//! participant only quantised, with a noise share, inside secure aggregation.
//!
//! For softmax regression the gradient of one example `(x, y)` is `x ⊗ r` for the weights and `r` for
//! the biases, where `r = softmax(z) - e_y` is the gradient of the loss with respect to the logits. The
//! biases are trained as the weights of a constant feature of value `s = bias_scale` (the model's bias
//! is `s` times that weight, see [`super::DpServer`]), whose gradient is `s r`. The L2 norm of the
//! whole gradient is therefore `sqrt(|x|^2 + s^2) * |r|`, known without forming the gradient, and the
//! clipped gradient is the same outer product scaled by `min(1, C / norm)`. So the cost of an example is
//! proportional to its non-zero features times the labels, never to the model size; the only dense work
//! is allocating the output.

use rand::{CryptoRng, Rng};

use super::{DpConfig, DpError};
use crate::intent::IntentSpec;
use crate::linear::{logits, Objective, Softmax};
use crate::train::EncodedSet;

/// A participant's clipped-gradient sum for one round.
#[derive(Debug, Clone, PartialEq)]
pub struct ClippedSum {
    /// Sum over the sampled records of their gradients, each clipped to L2 norm `clip_norm`; laid out
    /// as the parameters (`[feature][label]`, then the biases, in the units of the bias feature's
    /// weights: `bias_scale` times the logits' gradients). Its L2 sensitivity to adding or removing one
    /// record is `clip_norm`.
    pub values: Vec<f32>,
    /// Records in this round's sample. Depends on the data and is not protected: keep it local (logs on
    /// the participant's own node at most), never upload it.
    pub sampled: usize,
    /// How many of them had a gradient longer than `clip_norm`; local diagnostics for tuning the clip
    /// norm, not protected either.
    pub clipped: usize,
}

/// Poisson-samples `data` (each record independently with probability `cfg.sampling_rate()`, drawn from
/// `rng`, which must be a secret cryptographic RNG outside tests) and returns the sum of the sampled
/// records' gradients at `params`, each clipped to L2 norm `cfg.clip_norm()`. `params` must be the
/// global model of the round, `spec.num_params()` long.
pub fn clipped_gradient_sum<R: Rng + CryptoRng + ?Sized>(
    spec: &IntentSpec,
    params: &[f32],
    data: &EncodedSet,
    cfg: &DpConfig,
    rng: &mut R,
) -> Result<ClippedSum, DpError> {
    let shape = spec.shape();
    if params.len() != shape.num_params() {
        return Err(DpError::Length { what: "parameters", got: params.len(), expected: shape.num_params() });
    }
    let c = shape.outputs;
    let bias_at = shape.dim * c;
    let q = cfg.sampling_rate();
    let clip = cfg.clip_norm();
    let bias_scale = cfg.bias_scale();
    let s = bias_scale as f32;
    let mut values = vec![0.0f32; params.len()];
    let (mut sampled, mut clipped) = (0, 0);
    let mut z = Vec::with_capacity(c);
    for (x, y) in data.xs.iter().zip(&data.ys) {
        // `q = 1` keeps every record without drawing.
        if q < 1.0 && !rng.random_bool(q) {
            continue;
        }
        if *y as usize >= c || x.indices.last().is_some_and(|&i| i as usize >= shape.dim) {
            // Encoded for another spec; `encode` with this spec never produces it.
            return Err(DpError::Length { what: "an example's features or label", got: 0, expected: c });
        }
        sampled += 1;
        logits(shape, params, x, &mut z);
        Softmax.loss_grad(&mut z, y);
        let x_sq: f64 = x.values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let r_sq: f64 = z.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let norm = ((x_sq + bias_scale * bias_scale) * r_sq).sqrt();
        let factor = if norm > clip {
            clipped += 1;
            (clip / norm) as f32
        } else {
            1.0
        };
        for r in z.iter_mut() {
            *r *= factor;
        }
        for (&i, &v) in x.indices.iter().zip(&x.values) {
            let row = &mut values[i as usize * c..i as usize * c + c];
            for (w, r) in row.iter_mut().zip(&z) {
                *w += v * r;
            }
        }
        for (b, r) in values[bias_at..bias_at + c].iter_mut().zip(&z) {
            *b += s * r;
        }
    }
    Ok(ClippedSum { values, sampled, clipped })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::features::FeatureConfig;
    use crate::train::encode;
    use crate::Example;

    fn spec() -> IntentSpec {
        IntentSpec::new(
            vec!["balance".into(), "transfer".into(), "oos".into()],
            FeatureConfig { dim: 1024, ..Default::default() },
        )
        .unwrap()
    }

    fn cfg(clip_norm: f64, sampling_rate: f64) -> DpConfig {
        with_bias(clip_norm, sampling_rate, 1.0)
    }

    fn with_bias(clip_norm: f64, sampling_rate: f64, bias_scale: f64) -> DpConfig {
        crate::dp::test_config(clip_norm, sampling_rate, bias_scale)
    }

    fn one(text: &str, label: &str) -> EncodedSet {
        encode(&spec(), &[Example { text: text.into(), label: label.into(), embedding: None }]).unwrap()
    }

    fn norm(v: &[f32]) -> f64 {
        v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
    }

    /// The gradient of the mean loss by finite differences, for one example, on the coordinates the
    /// example touches.
    #[test]
    fn unclipped_sum_is_the_gradient_of_the_loss() {
        let s = spec();
        let data = one("what is my balance", "balance");
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut params: Vec<f32> = (0..s.num_params()).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        let g = clipped_gradient_sum(&s, &params, &data, &cfg(100.0, 1.0), &mut rng).unwrap();
        assert_eq!((g.sampled, g.clipped), (1, 0));
        let f = data.xs[0].indices[0] as usize;
        for k in [f * 3, f * 3 + 2, s.num_params() - 1] {
            let h = 1e-2;
            params[k] += h;
            let up = crate::train::mean_loss(&s, &params, &data);
            params[k] -= 2.0 * h;
            let down = crate::train::mean_loss(&s, &params, &data);
            params[k] += h;
            let numeric = (up - down) / (2.0 * h);
            assert!((numeric - g.values[k]).abs() < 1e-3, "coordinate {k}: {numeric} vs {}", g.values[k]);
        }
    }

    proptest! {
        /// Adding any one record to any data set moves the sum by at most the clip norm: the
        /// sensitivity the noise is calibrated to.
        #[test]
        fn one_record_moves_the_sum_by_at_most_the_clip_norm(
            clip in 0.01f64..3.0,
            scale in 0.0f32..20.0,
            seed in any::<u64>(),
            text in "[a-z ]{0,40}",
            label in 0usize..3,
            bias_scale in 0.0f64..=1.0,
        ) {
            let s = spec();
            let base = encode(&s, &[
                Example { text: "what is my balance".into(), label: "balance".into(), embedding: None },
                Example { text: "send money".into(), label: "transfer".into(), embedding: None },
            ]).unwrap();
            let mut more = base.clone();
            let extra = one(&text, &s.labels[label]);
            more.xs.extend(extra.xs);
            more.ys.extend(extra.ys);
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let params: Vec<f32> =
                (0..s.num_params()).map(|_| (rng.random::<f32>() - 0.5) * scale).collect();
            let c = with_bias(clip, 1.0, bias_scale);
            let a = clipped_gradient_sum(&s, &params, &base, &c, &mut rng).unwrap();
            let b = clipped_gradient_sum(&s, &params, &more, &c, &mut rng).unwrap();
            let diff: Vec<f32> = a.values.iter().zip(&b.values).map(|(x, y)| x - y).collect();
            prop_assert!(norm(&diff) <= clip * (1.0 + 1e-5), "moved {} > {clip}", norm(&diff));
        }
    }

    #[test]
    fn the_bias_feature_scales_the_bias_gradient() {
        let s = spec();
        let data = one("what is my balance", "balance");
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let params = vec![0.0; s.num_params()];
        let full = clipped_gradient_sum(&s, &params, &data, &with_bias(100.0, 1.0, 1.0), &mut rng).unwrap();
        let half = clipped_gradient_sum(&s, &params, &data, &with_bias(100.0, 1.0, 0.5), &mut rng).unwrap();
        let none = clipped_gradient_sum(&s, &params, &data, &with_bias(100.0, 1.0, 0.0), &mut rng).unwrap();
        let at = s.num_params() - 3;
        for k in at..s.num_params() {
            assert!((half.values[k] - 0.5 * full.values[k]).abs() < 1e-7);
            assert_eq!(none.values[k], 0.0);
        }
        assert_eq!(full.values[..at], none.values[..at]);
        // Without the bias the norm is |x| |r| = |r|: at uniform probabilities over 3 labels,
        // |r|^2 = (2/3)^2 + 2 (1/3)^2 = 2/3; clipping to half of it scales the weights by half.
        let clip = (2.0f64 / 3.0).sqrt() / 2.0;
        let clipped = clipped_gradient_sum(&s, &params, &data, &with_bias(clip, 1.0, 0.0), &mut rng).unwrap();
        assert_eq!(clipped.clipped, 1);
        assert!((norm(&clipped.values) - clip).abs() < 1e-6, "{}", norm(&clipped.values));
    }

    #[test]
    fn the_poisson_sample_has_the_configured_rate() {
        // 20000 records at rate 0.1: the count is Binomial(20000, 0.1), standard deviation 42.4; a band of
        // 5 standard deviations.
        let s = spec();
        let one = one("balance", "balance");
        let data = EncodedSet { xs: vec![one.xs[0].clone(); 20_000], ys: vec![0; 20_000] };
        let params = vec![0.0; s.num_params()];
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let counts: Vec<usize> = (0..3)
            .map(|_| clipped_gradient_sum(&s, &params, &data, &cfg(1.0, 0.1), &mut rng).unwrap().sampled)
            .collect();
        for n in &counts {
            assert!((*n as f64 - 2000.0).abs() < 5.0 * 42.4, "{counts:?}");
        }
        assert!(counts.windows(2).any(|w| w[0] != w[1]), "fresh samples each round: {counts:?}");
        let all = clipped_gradient_sum(&s, &params, &data, &cfg(1.0, 1.0), &mut rng).unwrap();
        assert_eq!(all.sampled, 20_000);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let s = spec();
        let data = one("balance", "balance");
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let e = clipped_gradient_sum(&s, &[0.0; 3], &data, &cfg(1.0, 1.0), &mut rng).unwrap_err();
        assert!(matches!(e, DpError::Length { what: "parameters", got: 3, .. }), "{e}");
        let mut bad = data.clone();
        bad.ys[0] = 9;
        let params = vec![0.0; s.num_params()];
        assert!(clipped_gradient_sum(&s, &params, &bad, &cfg(1.0, 1.0), &mut rng).is_err());
    }
}
