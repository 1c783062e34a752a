//! Consortium bounds on training jobs: the [`RoundPolicy`] the coordinator checks a job against before
//! announcing it. Pure values; it never looks at budgets (see `budget`) or data.

use serde::{Deserialize, Serialize};

/// A job that a [`RoundPolicy`] refuses, with what was wrong.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The job asks for fewer participants per round than the consortium allows; a small cohort makes
    /// an aggregate close to a single institution's update.
    #[error("min_participants {requested} is below the consortium floor of {floor}")]
    TooFewParticipants {
        /// What the job asked for.
        requested: u32,
        /// The policy's floor.
        floor: u32,
    },
    /// The job opts out of secure aggregation, which this consortium does not allow: the coordinator
    /// would see each institution's update.
    #[error("plain aggregation is not allowed by this consortium's policy: jobs must use secure aggregation (the coordinator may allow plain rounds with policy.allow_plain_aggregation, e.g. for benchmarks)")]
    PlainAggregationForbidden,
    /// A numeric job parameter is outside its allowed range.
    #[error("{field} = {value} is outside the allowed range {range}")]
    OutOfRange {
        /// The parameter's name as it appears in a job spec.
        field: &'static str,
        /// The value given, formatted.
        value: String,
        /// The allowed range, formatted.
        range: String,
    },
}

/// Consortium-wide bounds on training jobs, checked by the coordinator before a job is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundPolicy {
    /// Every round must aggregate at least this many participants' updates.
    pub min_participants_floor: u32,
    /// Most rounds one job may run.
    pub max_rounds: u64,
    /// Longest a round may stay open, in seconds.
    pub max_round_deadline_s: u32,
    /// Largest model, in parameters (f32), a job may train.
    pub max_num_params: u64,
    /// Whether a job may opt out of secure aggregation. Off by default: the coordinator then has no
    /// path on which it receives an individual update. Benchmarks and comparisons turn it on.
    pub allow_plain_aggregation: bool,
}

impl Default for RoundPolicy {
    fn default() -> Self {
        Self {
            min_participants_floor: 1,
            max_rounds: 10_000,
            max_round_deadline_s: 24 * 3600,
            max_num_params: 64 << 20,
            allow_plain_aggregation: false,
        }
    }
}

/// The parameters of a training job that the [`RoundPolicy`] bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct JobShape {
    /// Rounds requested.
    pub rounds: u64,
    /// Minimum updates for a round to commit.
    pub min_participants: u32,
    /// Seconds a round stays open.
    pub round_deadline_s: u32,
    /// Model size in parameters.
    pub num_params: u64,
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Learning rate of local SGD.
    pub learning_rate: f32,
    /// Mini-batch size of local SGD.
    pub batch_size: u32,
    /// L2 regularisation strength.
    pub l2: f32,
    /// The job opts out of secure aggregation.
    pub plain_aggregation: bool,
}

impl RoundPolicy {
    /// Accepts `job` or says which bound it breaks first.
    pub fn check(&self, job: &JobShape) -> Result<(), PolicyError> {
        if job.min_participants < self.min_participants_floor.max(1) {
            return Err(PolicyError::TooFewParticipants {
                requested: job.min_participants,
                floor: self.min_participants_floor.max(1),
            });
        }
        if job.plain_aggregation && !self.allow_plain_aggregation {
            return Err(PolicyError::PlainAggregationForbidden);
        }
        range("rounds", job.rounds, 1, self.max_rounds)?;
        range("round_deadline_s", u64::from(job.round_deadline_s), 1, u64::from(self.max_round_deadline_s))?;
        range("num_params", job.num_params, 1, self.max_num_params)?;
        range("local_epochs", u64::from(job.local_epochs), 1, 1_000)?;
        range("batch_size", u64::from(job.batch_size), 1, 65_536)?;
        frange("learning_rate", job.learning_rate, f32::MIN_POSITIVE, 100.0)?;
        frange("l2", job.l2, 0.0, 10.0)?;
        Ok(())
    }
}

fn range(field: &'static str, value: u64, lo: u64, hi: u64) -> Result<(), PolicyError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(PolicyError::OutOfRange { field, value: value.to_string(), range: format!("{lo}..={hi}") })
    }
}

fn frange(field: &'static str, value: f32, lo: f32, hi: f32) -> Result<(), PolicyError> {
    // `contains` is false for NaN, so NaN and infinities are refused here too.
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(PolicyError::OutOfRange { field, value: value.to_string(), range: format!("{lo}..={hi}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobShape {
        JobShape {
            rounds: 10,
            min_participants: 2,
            round_deadline_s: 60,
            num_params: 1000,
            local_epochs: 1,
            learning_rate: 0.5,
            batch_size: 32,
            l2: 0.0,
            plain_aggregation: false,
        }
    }

    #[test]
    fn plain_aggregation_needs_the_consortiums_consent() {
        let plain = JobShape { plain_aggregation: true, ..job() };
        assert_eq!(RoundPolicy::default().check(&plain), Err(PolicyError::PlainAggregationForbidden));
        let lenient = RoundPolicy { allow_plain_aggregation: true, ..RoundPolicy::default() };
        assert_eq!(lenient.check(&plain), Ok(()));
    }

    #[test]
    fn accepts_a_reasonable_job() {
        assert_eq!(RoundPolicy::default().check(&job()), Ok(()));
    }

    #[test]
    fn refuses_cohorts_below_the_floor() {
        let policy = RoundPolicy { min_participants_floor: 3, ..RoundPolicy::default() };
        let err = policy.check(&job()).unwrap_err();
        assert_eq!(err, PolicyError::TooFewParticipants { requested: 2, floor: 3 });
        assert_eq!(err.to_string(), "min_participants 2 is below the consortium floor of 3");
    }

    #[test]
    fn refuses_each_out_of_range_field() {
        let p = RoundPolicy::default();
        let cases: Vec<(&str, JobShape)> = vec![
            ("rounds", JobShape { rounds: 0, ..job() }),
            ("round_deadline_s", JobShape { round_deadline_s: 0, ..job() }),
            ("num_params", JobShape { num_params: u64::MAX, ..job() }),
            ("local_epochs", JobShape { local_epochs: 0, ..job() }),
            ("batch_size", JobShape { batch_size: 0, ..job() }),
            ("learning_rate", JobShape { learning_rate: f32::NAN, ..job() }),
            ("learning_rate", JobShape { learning_rate: -1.0, ..job() }),
            ("l2", JobShape { l2: f32::INFINITY, ..job() }),
        ];
        for (field, shape) in cases {
            match p.check(&shape) {
                Err(PolicyError::OutOfRange { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected out of range, got {other:?}"),
            }
        }
    }
}
