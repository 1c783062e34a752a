//! The coordinator's half of a DP-SGD round: from the decoded noisy sum to the next global model.
//!
//! Everything here is post-processing of the released sum, so it costs no privacy whatever it does
//! (Dwork and Roth 2014, Proposition 2.1); it must never read anything but that sum and public
//! constants (the configuration, the declared number of records, the learning-rate schedule).

use super::{invalid, DpConfig, DpError};
use crate::intent::IntentSpec;

/// The server optimizer of a DP training job: SGD with heavy-ball momentum on the noisy mean gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct DpServer {
    learning_rate: f64,
    momentum: f64,
    expected_batch: f64,
    /// Where the biases start in the parameter vector, and the value of their constant feature.
    bias_at: usize,
    bias_scale: f64,
    velocity: Vec<f32>,
}

impl DpConfig {
    /// The denominator of the noisy mean: `sampling_rate * declared_records`, with `declared_records`
    /// the total the institutions declared when the job was submitted (public), never a count taken
    /// from a round's data.
    pub fn expected_batch(&self, declared_records: u64) -> f64 {
        self.sampling_rate() * declared_records as f64
    }
}

impl DpServer {
    /// A server for models of `spec` trained under `cfg`, starting with zero velocity: `learning_rate`
    /// finite and `> 0`, `momentum` in [0, 1), and an expected batch
    /// ([`DpConfig::expected_batch`] of `declared_records`) of at least 1.
    pub fn new(
        spec: &IntentSpec,
        cfg: &DpConfig,
        learning_rate: f64,
        momentum: f64,
        declared_records: u64,
    ) -> Result<Self, DpError> {
        if !(learning_rate > 0.0 && learning_rate.is_finite()) {
            return Err(invalid("learning_rate", learning_rate, "a finite number > 0"));
        }
        if !(0.0..1.0).contains(&momentum) {
            return Err(invalid("momentum", momentum, "a number in [0, 1)"));
        }
        let expected_batch = cfg.expected_batch(declared_records);
        if !(expected_batch >= 1.0 && expected_batch.is_finite()) {
            return Err(invalid("expected_batch", expected_batch, "a finite number >= 1"));
        }
        let shape = spec.shape();
        Ok(Self {
            learning_rate,
            momentum,
            expected_batch,
            bias_at: shape.dim * shape.outputs,
            bias_scale: cfg.bias_scale(),
            velocity: vec![0.0; shape.num_params()],
        })
    }

    /// One step: `velocity = momentum * velocity + noisy_sum / expected_batch`, then
    /// `params -= learning_rate * velocity`, where the biases' entries of the sum are first multiplied
    /// by `bias_scale` (the sum holds the gradient of the bias feature's weights; the model's biases are
    /// `bias_scale` times those weights). `noisy_sum` is the decoded aggregate (the quantiser's
    /// `decode_sum`); both vectors must have the model's length, and the sum must be finite.
    pub fn step(&mut self, params: &mut [f32], noisy_sum: &[f64]) -> Result<(), DpError> {
        let n = self.velocity.len();
        if params.len() != n {
            return Err(DpError::Length { what: "parameters", got: params.len(), expected: n });
        }
        if noisy_sum.len() != n {
            return Err(DpError::Length { what: "the noisy sum", got: noisy_sum.len(), expected: n });
        }
        if let Some(bad) = noisy_sum.iter().find(|x| !x.is_finite()) {
            return Err(invalid("noisy sum coordinate", *bad, "a finite number"));
        }
        let inv = 1.0 / self.expected_batch;
        for (i, ((p, v), s)) in params.iter_mut().zip(self.velocity.iter_mut()).zip(noisy_sum).enumerate() {
            let g = if i >= self.bias_at { s * self.bias_scale * inv } else { s * inv };
            let next = self.momentum * f64::from(*v) + g;
            *v = next as f32;
            *p -= (self.learning_rate * next) as f32;
        }
        Ok(())
    }

    /// The learning rate of the next steps (a public schedule: the coordinator may change it every
    /// round, it is post-processing); finite and `> 0`.
    pub fn set_learning_rate(&mut self, learning_rate: f64) -> Result<(), DpError> {
        if !(learning_rate > 0.0 && learning_rate.is_finite()) {
            return Err(invalid("learning_rate", learning_rate, "a finite number > 0"));
        }
        self.learning_rate = learning_rate;
        Ok(())
    }

    /// The velocity, to persist with the model (a restarted coordinator resumes with
    /// [`Self::with_velocity`]).
    pub fn velocity(&self) -> &[f32] {
        &self.velocity
    }

    /// Replaces the velocity by a persisted one of the same length.
    pub fn with_velocity(mut self, velocity: Vec<f32>) -> Result<Self, DpError> {
        if velocity.len() != self.velocity.len() {
            return Err(DpError::Length {
                what: "velocity",
                got: velocity.len(),
                expected: self.velocity.len(),
            });
        }
        self.velocity = velocity;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureConfig;

    /// A model of one weight row of 1024 x 2 and 2 biases, where the sum is easy to write.
    fn spec() -> IntentSpec {
        IntentSpec::new(vec!["a".into(), "b".into()], FeatureConfig { dim: 1024, ..Default::default() })
            .unwrap()
    }

    fn cfg(sampling_rate: f64, bias_scale: f64) -> DpConfig {
        crate::dp::test_config(1.0, sampling_rate, bias_scale)
    }

    #[test]
    fn a_step_divides_by_the_expected_batch_and_keeps_momentum() {
        let s = spec();
        let n = s.num_params();
        // q 0.5 of 8 declared records: expected batch 4.
        let mut server = DpServer::new(&s, &cfg(0.5, 0.5), 0.5, 0.9, 8).unwrap();
        let mut p = vec![1.0f32; n];
        let mut sum = vec![0.0; n];
        sum[0] = 4.0;
        sum[1] = -8.0;
        sum[n - 1] = 8.0;
        server.step(&mut p, &sum).unwrap();
        assert_eq!(&server.velocity()[..2], [1.0, -2.0]);
        assert_eq!((p[0], p[1], p[2]), (0.5, 2.0, 1.0));
        // The bias entry is scaled by bias_scale: 8 / 4 * 0.5.
        assert_eq!((server.velocity()[n - 1], p[n - 1]), (1.0, 0.5));
        server.step(&mut p, &vec![0.0; n]).unwrap();
        assert_eq!(&server.velocity()[..2], [0.9, -1.8]);
        assert!((p[0] - 0.05).abs() < 1e-6 && (p[1] - 2.9).abs() < 1e-6, "{:?}", &p[..2]);
    }

    #[test]
    fn bad_parameters_and_lengths_are_errors() {
        let s = spec();
        let c = cfg(1.0, 1.0);
        for (lr, m, records, name) in [
            (0.0, 0.9, 10, "learning_rate"),
            (f64::NAN, 0.9, 10, "learning_rate"),
            (1.0, 1.0, 10, "momentum"),
            (1.0, -0.1, 10, "momentum"),
            (1.0, 0.9, 0, "expected_batch"),
        ] {
            match DpServer::new(&s, &c, lr, m, records) {
                Err(DpError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        let n = s.num_params();
        let mut server = DpServer::new(&s, &c, 1.0, 0.0, 1).unwrap();
        assert!(matches!(server.step(&mut vec![0.0; n - 1], &vec![0.0; n]), Err(DpError::Length { .. })));
        assert!(matches!(server.step(&mut vec![0.0; n], &vec![0.0; n - 1]), Err(DpError::Length { .. })));
        let mut inf = vec![0.0; n];
        inf[3] = f64::INFINITY;
        assert!(server.step(&mut vec![0.0; n], &inf).is_err());
        assert!(server.set_learning_rate(-1.0).is_err());
        assert!(server.clone().with_velocity(vec![0.0; 2]).is_err());
        assert!(server.with_velocity(vec![1.0; n]).is_ok());
    }
}
