//! Federated averaging, one update at a time: the coordinator folds each validated update into a running
//! weighted sum and never keeps the updates themselves. Under secure aggregation the same sums arrive
//! already added up ([`Aggregator::from_sums`]), decoded from the unmasked total.

/// Running weighted sum of model deltas for one round.
///
/// Sums are kept in `f64` so that adding fifty `f32` updates loses no precision that matters; only the
/// final average is rounded back to `f32`.
#[derive(Debug)]
pub(crate) struct Aggregator {
    sum: Vec<f64>,
    total_weight: f64,
    loss_sum: f64,
    count: u32,
    examples: u64,
}

impl Aggregator {
    pub(crate) fn new(num_params: usize) -> Self {
        Self { sum: vec![0.0; num_params], total_weight: 0.0, loss_sum: 0.0, count: 0, examples: 0 }
    }

    /// An aggregate whose sums were added up elsewhere (by secure aggregation): `sum` is the weighted sum
    /// of deltas, `total_weight` the sum of the weights, `weighted_loss` the weighted sum of losses.
    pub(crate) fn from_sums(
        sum: Vec<f64>,
        total_weight: f64,
        weighted_loss: f64,
        count: u32,
        examples: u64,
    ) -> Self {
        Self { sum, total_weight, loss_sum: weighted_loss, count, examples }
    }

    /// Adds `delta`, weighted by the number of examples it was trained on. The caller has checked the
    /// length and finiteness.
    pub(crate) fn add(&mut self, delta: &[f32], weight: u64, loss: f32) {
        debug_assert_eq!(delta.len(), self.sum.len());
        let w = weight as f64;
        for (s, d) in self.sum.iter_mut().zip(delta) {
            *s += w * f64::from(*d);
        }
        self.total_weight += w;
        self.examples += weight;
        self.loss_sum += w * f64::from(loss);
        self.count += 1;
    }

    /// Number of updates folded in so far.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Total examples behind the updates folded in so far.
    pub(crate) fn examples(&self) -> u64 {
        self.examples
    }

    /// Example-weighted mean of the reported training losses.
    pub(crate) fn mean_loss(&self) -> f32 {
        if self.total_weight <= 0.0 {
            return f32::NAN;
        }
        (self.loss_sum / self.total_weight) as f32
    }

    /// The new global model. With `d = sum / total_weight` the example-weighted mean delta, the server
    /// optimizer keeps `velocity = momentum * velocity + d` and returns `global + lr * velocity` (FedAvgM;
    /// momentum 0 and lr 1 is plain federated averaging, and then `velocity` is left empty). Returns
    /// `global` unchanged when nothing was added (the caller refuses to commit such a round anyway).
    pub(crate) fn apply(&self, global: &[f32], velocity: &mut Vec<f32>, lr: f32, momentum: f32) -> Vec<f32> {
        if self.total_weight <= 0.0 {
            return global.to_vec();
        }
        let inv = 1.0 / self.total_weight;
        if momentum == 0.0 {
            velocity.clear();
            let lr = f64::from(lr);
            return global
                .iter()
                .zip(&self.sum)
                .map(|(g, s)| (f64::from(*g) + lr * s * inv) as f32)
                .collect();
        }
        if velocity.len() != global.len() {
            *velocity = vec![0.0; global.len()];
        }
        global
            .iter()
            .zip(&self.sum)
            .zip(velocity.iter_mut())
            .map(|((g, s), v)| {
                *v = momentum * *v + (s * inv) as f32;
                g + lr * *v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_average_of_deltas() {
        let mut agg = Aggregator::new(2);
        agg.add(&[1.0, 0.0], 1, 2.0);
        agg.add(&[0.0, 4.0], 3, 1.0);
        assert_eq!(agg.count(), 2);
        assert_eq!(agg.examples(), 4);
        let mut v = Vec::new();
        assert_eq!(agg.apply(&[10.0, 10.0], &mut v, 1.0, 0.0), vec![10.25, 13.0]);
        assert!(v.is_empty());
        // With momentum the velocity accumulates across rounds.
        assert_eq!(agg.apply(&[10.0, 10.0], &mut v, 1.0, 0.5), vec![10.25, 13.0]);
        assert_eq!(agg.apply(&[10.0, 10.0], &mut v, 1.0, 0.5), vec![10.375, 14.5]);
        assert!((agg.mean_loss() - 1.25).abs() < 1e-6);
    }

    #[test]
    fn empty_round_leaves_global_unchanged() {
        let agg = Aggregator::new(3);
        assert_eq!(agg.apply(&[1.0, 2.0, 3.0], &mut Vec::new(), 1.0, 0.9), vec![1.0, 2.0, 3.0]);
        assert!(agg.mean_loss().is_nan());
    }
}
