//! Why a round, a query or a job was refused or did not complete, as types that name what was wrong. They
//! become a gRPC status or an audit detail at the edge; nothing parses them back.

use hearth_models::DpError;
use hearth_policies::{AccountantError, MechanismError};
use hearth_secagg::SecAggError;

/// Why a round did not commit. The round is retried; the job fails after three attempts.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum RoundError {
    /// A plain round was closed before it could be read.
    #[error("round {round}: no round is open")]
    NotOpen { round: u64 },
    /// Too few invited participants have a certificate with a protocol key.
    #[error("round {round}: only {able} of the {needed} participants it needs can take part in secure aggregation")]
    CohortTooSmall { round: u64, able: usize, needed: u32 },
    /// Fewer masked inputs than the round needs: the sum is never unmasked.
    #[error(
        "round {round}: {got} masked inputs, fewer than the {needed} required; aborted before unmasking{missing}"
    )]
    TooFewMasked { round: u64, got: usize, needed: u32, missing: Missing },
    /// Too few participants holding the job's data connected within the round's deadline.
    #[error(
        "round {round} waited {waited_s} s for {needed} connected participants holding {family} data and \
         found {connected}{missing}"
    )]
    CohortUnreachable {
        round: u64,
        family: String,
        connected: usize,
        needed: u32,
        waited_s: u32,
        missing: Missing,
    },
    /// The job stopped (cancelled) while the round waited.
    #[error("round {round}: the job stopped")]
    Stopped { round: u64 },
    /// The protocol refused to go on (not enough shares, a phase without survivors, bad parameters).
    #[error("round {round}: secure aggregation aborted in phase {phase}: {source}{missing}")]
    SecAgg { round: u64, phase: u32, source: SecAggError, missing: Missing },
    /// The protocol's state was not what the phase expected (closed, already decoded, no sum).
    #[error("round {round}: secure aggregation aborted in phase {phase}: {what}")]
    Protocol { round: u64, phase: u32, what: &'static str },
    /// The unmasking task stopped (a panic, or the runtime shutting down).
    #[error("round {round}: the unmasking task failed: {message}")]
    Task { round: u64, message: String },
    /// The DP noise plan of the round could not be computed.
    #[error("round {round}: the noise plan: {source}")]
    Noise { round: u64, source: DpError },
    /// The unmasked sum is not a sum this round can use.
    #[error("round {round}: {source}")]
    Decode { round: u64, source: DecodeError },
    /// Fewer updates than `min_participants` arrived.
    #[error("round {round} gathered {got} of the {needed} updates it needs ({invited} invited){missing}")]
    TooFewUpdates { round: u64, got: u32, needed: u32, invited: usize, missing: Missing },
    /// The DP server step failed (a spec or a sum that does not fit the job).
    #[error("round {round}: the DP server step: {source}")]
    DpStep { round: u64, source: DpStepError },
}

/// The participants a round waited for in vain, sorted; displayed as `; missing: a, b` (nothing when
/// empty), so every failure that comes from an absent participant names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Missing(pub(crate) Vec<String>);

impl Missing {
    pub(crate) fn of(ids: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<String> = ids.into_iter().collect();
        v.sort();
        v.dedup();
        Self(v)
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "; missing: {}", self.0.join(", "))
        }
    }
}

/// Why an unmasked sum was not decoded.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The sum has another length than the round's vector.
    #[error("unmasked sum has {got} values, expected {expected}")]
    Length { got: usize, expected: usize },
    /// The summed weight is outside what the contributors' honest weights can sum to (zero, negative,
    /// not finite, or poisoned by one of them).
    #[error(
        "the total weight of {contributors} contributors is {total}, outside [{low}, {high}] that honest \
         weights reach: refused (one participant may have poisoned the sum)"
    )]
    Weight {
        /// The decoded total weight.
        total: f64,
        /// How many inputs are in the sum.
        contributors: u32,
        /// The least honest total.
        low: f64,
        /// The most honest total.
        high: f64,
    },
    /// A coordinate of the sum is beyond what the contributors' clipped inputs can sum to (a wrapped
    /// or forged input).
    #[error("coordinate {index} of the sum is {value}, beyond the {reach} honest inputs can reach: refused")]
    OutOfReach {
        /// The coordinate.
        index: usize,
        /// Its decoded value.
        value: f64,
        /// The honest bound.
        reach: f64,
    },
}

/// Why a DP round's server step failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum DpStepError {
    /// DP training covers intent models only.
    #[error("a DP round of a {0} model")]
    Family(&'static str),
    /// The job's stored model spec does not parse.
    #[error("the job's model spec: {0}")]
    Spec(hearth_models::ModelError),
    /// The DP library refused a parameter or a vector.
    #[error(transparent)]
    Dp(#[from] DpError),
    /// A DP job's round came without its noisy sum, or a plain round with one.
    #[error("a DP job's round without its noisy sum, or the reverse")]
    Mismatch,
}

/// Why an analytics query was refused before it ran.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    /// The family is not a valid name.
    #[error("family: {0}")]
    Family(hearth_crypto::pki::PkiError),
    /// The statistic is not one Hearth computes.
    #[error("statistic {given:?} is not one of {known:?}")]
    Statistic { given: String, known: &'static [&'static str] },
    /// `spend` has its own bins.
    #[error("statistic \"spend\" has fixed bins (sum, count, mean): leave bins empty")]
    SpendBins,
    /// `value_bound` outside (0, 1e9] for `spend`.
    #[error("value_bound {0} must be in (0, 1e9] for statistic \"spend\"")]
    ValueBound(f64),
    /// `value_bound` given for a histogram.
    #[error("value_bound applies to statistic \"spend\" only, not {0:?}")]
    ValueBoundUnused(String),
    /// Too few or too many bins.
    #[error("{got} bins; a query has 1 to {max}")]
    BinCount { got: usize, max: usize },
    /// A bin name that is empty, too long or repeated.
    #[error("bin {0:?} is empty, over 200 bytes, or repeated")]
    Bin(String),
    /// Epsilon outside (0, 100].
    #[error("epsilon {0} must be in (0, 100]")]
    Epsilon(f64),
    /// Delta outside (0, 0.01).
    #[error("delta {0} must be in (0, 0.01)")]
    Delta(f64),
    /// Fewer than 3 participants.
    #[error("min_participants {0} is below 3")]
    MinParticipants(u32),
    /// The accountant refused a parameter.
    #[error(transparent)]
    Accountant(#[from] AccountantError),
    /// The mechanism refused a parameter.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// No noise scale on the search grid meets the target.
    #[error("no noise scale reaches epsilon {epsilon} at delta {delta}")]
    NoScale { epsilon: f64, delta: f64 },
}

/// Why a job's `[privacy]` section was refused at submission.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobPrivacyError {
    /// DP training covers intent models only.
    #[error("differentially private training covers intent models; this job trains a {0} model")]
    Family(&'static str),
    /// A DP job without secure aggregation.
    #[error(
        "a differentially private job needs secure aggregation: each participant adds only a share of the \
         noise, which protects nobody unless the coordinator sees only the sum"
    )]
    NotSecure,
    /// The budget family is not a valid name.
    #[error("privacy.family: {0}")]
    BudgetFamily(hearth_crypto::pki::PkiError),
    /// A number outside its range.
    #[error("privacy.{field} {value} must be in {range}")]
    Range { field: &'static str, value: f64, range: &'static str },
    /// A unit other than the record.
    #[error(
        "privacy.privacy_unit {0:?}: training clips each record's gradient, so it protects records (intent \
         examples carry no customer id to clip per customer); use \"record\""
    )]
    Unit(String),
    /// `declared_records` out of range.
    #[error(
        "privacy.declared_records {0} must be the institutions' total number of records (1 to 10^12): the \
         noisy gradient sum is divided by sampling_rate x declared_records"
    )]
    DeclaredRecords(u64),
    /// `max_cohort` out of range.
    #[error(
        "privacy.max_cohort {max_cohort} must be between min_participants ({min_participants}) and 10000"
    )]
    MaxCohort { max_cohort: u32, min_participants: u32 },
    /// `min_survivors` out of range.
    #[error(
        "privacy.min_survivors {min_survivors} must be between 1 and min_participants ({min_participants})"
    )]
    MinSurvivors { min_survivors: u32, min_participants: u32 },
    /// The noise does not fit the rounds' grid, or a parameter the DP library refuses.
    #[error("privacy: {0}")]
    Dp(#[from] DpError),
}
