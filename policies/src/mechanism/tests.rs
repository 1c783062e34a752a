use super::*;
use crate::accountant::RdpAccountant;

/// Mean and variance of `n` draws.
fn moments(n: usize, mut draw: impl FnMut() -> i64) -> (f64, f64) {
    let samples: Vec<f64> = (0..n).map(|_| draw() as f64).collect();
    let mean = samples.iter().sum::<f64>() / n as f64;
    let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n as f64 - 1.0);
    (mean, var)
}

#[test]
fn discrete_gaussian_draws_have_the_stated_variance() {
    // The variance of N_Z(0, sigma^2) is below sigma^2 by a gap that decays like exp(-2 pi^2 sigma^2),
    // invisible at sigma = 3.5, so sigma^2 is the target. With 20000 draws the sample variance has a
    // relative standard error of sqrt(2/20000) = 1%; 5% is a 5-sigma band.
    let m = DiscreteGaussian::new(3.5, 1.0).unwrap();
    let (mean, var) = moments(20_000, || m.sample().unwrap());
    assert!(mean.abs() < 5.0 * 3.5 / (20_000f64).sqrt(), "mean {mean}");
    assert!((var / (3.5 * 3.5) - 1.0).abs() < 0.05, "variance {var}, expected {}", 3.5 * 3.5);
}

#[test]
fn discrete_laplace_draws_have_the_stated_variance() {
    // Kurtosis 6: relative standard error of the sample variance about sqrt(5/20000) = 1.6%.
    let m = DiscreteLaplace::for_epsilon(0.5, 1.0).unwrap();
    assert_eq!(m.scale(), 2.0);
    let (_, var) = moments(20_000, || m.sample().unwrap());
    assert!((var / m.variance() - 1.0).abs() < 0.08, "variance {var}, expected {}", m.variance());
}

#[test]
fn distributed_shares_sum_to_the_central_variance() {
    let m = DistributedDiscreteGaussian::calibrate(6.0, 4, 4, 1.0, 1.0, 1).unwrap();
    let (_, var) = moments(10_000, || (0..4).map(|_| m.sample_share().unwrap()).sum());
    assert!((var / 36.0 - 1.0).abs() < 0.07, "variance of a sum of 4 shares {var}");
}

#[test]
fn noise_is_added_in_place_and_overflow_is_an_error() {
    let m = DiscreteGaussian::new(2.0, 1.0).unwrap();
    let mut v = vec![1_000_000_i64; 64];
    m.add_noise(&mut v).unwrap();
    assert!(v.iter().all(|x| (x - 1_000_000).abs() < 100));
    assert!(v.iter().any(|&x| x != 1_000_000));
    let mut edge = vec![i64::MAX; 64];
    assert!(matches!(m.add_noise(&mut edge), Err(MechanismError::Overflow { .. })));
}

#[test]
fn privacy_maps_follow_their_theorems() {
    let g = DiscreteGaussian::new(4.0, 2.0).unwrap();
    assert_eq!(g.rho(), 0.125);
    assert_eq!(g.rdp(&[2.0, 10.0]).unwrap(), vec![0.25, 1.25]);
    let l = DiscreteLaplace::new(4.0, 2.0).unwrap();
    assert_eq!(l.epsilon(), 0.5);
    assert_eq!(l.rdp(&[2.0, 100.0]).unwrap(), vec![0.25, 0.5]);
    // A discrete Gaussian composed in the accountant costs what a continuous one with the same ratio does.
    let mut discrete = RdpAccountant::new();
    discrete.compose(g, 10).unwrap();
    let mut continuous = RdpAccountant::new();
    continuous.compose(crate::SubsampledGaussian { sampling_rate: 1.0, noise_multiplier: 2.0 }, 10).unwrap();
    assert_eq!(discrete.epsilon(1e-5).unwrap(), continuous.epsilon(1e-5).unwrap());
}

#[test]
fn bad_parameters_are_errors_and_specs_round_trip() {
    for (scale, sens) in [(0.0, 1.0), (-1.0, 1.0), (f64::NAN, 1.0), (1.0, 0.0), (1.0, f64::INFINITY)] {
        assert!(DiscreteGaussian::new(scale, sens).is_err());
        assert!(DiscreteLaplace::new(scale, sens).is_err());
    }
    assert_eq!(
        DiscreteGaussian::new(-1.0, 1.0).unwrap_err().to_string(),
        "scale = -1 is invalid: expected a finite number > 0"
    );
    let g = DiscreteGaussian::new(1.5, 3.0).unwrap();
    let json = serde_json::to_string(&g).unwrap();
    assert_eq!(json, r#"{"scale":1.5,"l2_sensitivity":3.0}"#);
    assert_eq!(serde_json::from_str::<DiscreteGaussian>(&json).unwrap(), g);
    assert!(serde_json::from_str::<DiscreteGaussian>(r#"{"scale":-1,"l2_sensitivity":3}"#).is_err());
}

#[test]
fn a_federated_histogram_has_the_error_its_mechanism_states() {
    // Five participants, 20 bins each; each adds its distributed discrete Gaussian share to its local
    // counts, and only the sum is looked at. Over 200 repetitions the error of every summed bin must
    // have the stated aggregate variance (5 shares of local_scale^2 = 100 / 5 each).
    let m = DistributedDiscreteGaussian::calibrate(10.0, 5, 5, 1.0, 1.0, 20).unwrap();
    let truth: Vec<i64> = (0..20).map(|bin| 5 * (bin * 7 % 13)).collect();
    let mut errors = Vec::new();
    for _ in 0..200 {
        let mut sum = [0_i64; 20];
        for participant in 0..5 {
            let mut local: Vec<i64> =
                truth.iter().map(|&t| t / 5 + i64::from(participant == 0) * (t % 5)).collect();
            m.add_share(&mut local).unwrap();
            sum.iter_mut().zip(&local).for_each(|(s, l)| *s += l);
        }
        errors.extend(sum.iter().zip(&truth).map(|(s, t)| (s - t) as f64));
    }
    let n = errors.len() as f64;
    let variance = errors.iter().map(|e| e * e).sum::<f64>() / n;
    let stated = m.aggregate_variance(5);
    assert!((stated - 100.0).abs() < 1e-9);
    // 4000 errors: relative standard error of the variance about 2.2%; 10% is a 4.5-sigma band.
    assert!((variance / stated - 1.0).abs() < 0.10, "empirical {variance}, stated {stated}");
}
