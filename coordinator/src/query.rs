//! Federated analytics queries: the gRPC `Analytics` service.
//!
//! A query is one secure round whose vector is a histogram: each institution counts its own records into
//! the bins, adds its share of distributed discrete Gaussian noise (Kairouz, Liu, Steinke 2021; the
//! shares are calibrated so the survivors' sum carries the query's noise while at least
//! `min_participants` remain), and sends its counts masked. The coordinator unmasks only the noisy sum,
//! charges the release to the budget of the query's family at every institution the policy lists (the
//! only ones asked), and returns the counts with the noise's standard deviation and the privacy actually
//! spent. Counts travel as 32-bit two's-complement integers: no quantisation.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hearth_audit::{Action, Outcome};
use hearth_crypto::pki::{NodeIdentity, Role};
use hearth_policies::accountant::{calibrate_noise_multiplier, RdpAccountant};
use hearth_policies::budget::{Charge, FamilyId, PrivacyUnit, QueryNoise, QueryPlan, TenantId};
use hearth_policies::mechanism::DistributedDiscreteGaussian;
use hearth_proto::v1::analytics_server::Analytics;
use hearth_proto::v1::{self, announcement};
use hearth_proto::SPEND_UNITS;
use tonic::{Request, Response, Status};

use crate::driver::{run_secure_round, SecureEvent, SecureRoundSpec, Shared};
use crate::error::QueryError;

/// Statistics a participant knows how to count: histograms of intent labels and of primary emotion labels,
/// and the sum and count (hence mean) of purchase values.
pub(crate) const STATISTICS: [&str; 3] = ["label", "emotion", "spend"];
/// The bins of a `spend` query, as its participants send them.
const SPEND_BINS: [&str; 2] = ["sum", "count"];

/// What one record can change in a query's vector: (L2, L1) sensitivity in grid units. Under `spend` it
/// moves each of the two coordinates by at most [`SPEND_UNITS`], so the noise is the same, relative to
/// one record, on the sum and the count.
fn sensitivity(statistic: &str) -> (f64, f64) {
    if statistic == "spend" {
        let u = SPEND_UNITS as f64;
        (u * std::f64::consts::SQRT_2, 2.0 * u)
    } else {
        (1.0, 1.0)
    }
}
/// Most bins a query may have.
pub(crate) const MAX_BINS: usize = 10_000;

/// The service object.
#[derive(Debug, Clone)]
pub(crate) struct AnalyticsService {
    shared: Arc<Shared>,
}

impl AnalyticsService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// The distributed mechanism for (epsilon, delta) on a vector of `dimension` coordinates that one record
/// changes by at most `(l2, l1)` (a histogram: 1 and 1), shares calibrated for `min_survivors` of
/// `cohort`: the smallest central scale (on a 2% grid above the continuous Gaussian's) whose accounted
/// epsilon is within target.
fn mechanism(
    epsilon: f64,
    delta: f64,
    min_survivors: u32,
    cohort: u32,
    dimension: u64,
    (l2, l1): (f64, f64),
) -> Result<(DistributedDiscreteGaussian, f64), QueryError> {
    let mut scale = l2 * calibrate_noise_multiplier(epsilon, delta, 1.0, 1)?;
    for _ in 0..200 {
        let m = DistributedDiscreteGaussian::calibrate(scale, min_survivors, cohort, l2, l1, dimension)?;
        let mut acc = RdpAccountant::new();
        acc.compose(&m, 1)?;
        let spent = acc.epsilon(delta)?;
        if spent <= epsilon {
            return Ok((m, spent));
        }
        scale *= 1.02;
    }
    Err(QueryError::NoScale { epsilon, delta })
}

fn check_request(q: &v1::QueryRequest) -> Result<(), QueryError> {
    hearth_crypto::pki::validate_node_id(&q.family).map_err(QueryError::Family)?;
    if !STATISTICS.contains(&q.statistic.as_str()) {
        return Err(QueryError::Statistic { given: q.statistic.clone(), known: &STATISTICS });
    }
    if q.statistic == "spend" {
        if !q.bins.is_empty() {
            return Err(QueryError::SpendBins);
        }
        if !(q.value_bound.is_finite() && q.value_bound > 0.0 && q.value_bound <= 1e9) {
            return Err(QueryError::ValueBound(q.value_bound));
        }
        return check_privacy(q);
    }
    if q.value_bound != 0.0 {
        return Err(QueryError::ValueBoundUnused(q.statistic.clone()));
    }
    if q.bins.is_empty() || q.bins.len() > MAX_BINS {
        return Err(QueryError::BinCount { got: q.bins.len(), max: MAX_BINS });
    }
    let mut seen = HashSet::new();
    for b in &q.bins {
        if b.is_empty() || b.len() > 200 || !seen.insert(b.as_str()) {
            return Err(QueryError::Bin(b.chars().take(200).collect()));
        }
    }
    check_privacy(q)
}

fn check_privacy(q: &v1::QueryRequest) -> Result<(), QueryError> {
    if !(q.epsilon.is_finite() && q.epsilon > 0.0 && q.epsilon <= 100.0) {
        return Err(QueryError::Epsilon(q.epsilon));
    }
    if !(q.delta > 0.0 && q.delta < 1e-2) {
        return Err(QueryError::Delta(q.delta));
    }
    if q.min_participants < 3 {
        return Err(QueryError::MinParticipants(q.min_participants));
    }
    Ok(())
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    async fn run_query(&self, req: Request<v1::QueryRequest>) -> Result<Response<v1::QueryResult>, Status> {
        let who = self.shared.require(&req, Action::QueryRun, &[Role::Analyst, Role::Operator])?;
        let mut q = req.into_inner();
        let refuse = |detail: String| {
            self.shared.audit.record(&who.to_string(), Action::QueryRun, Outcome::Refused, &detail);
            Status::invalid_argument(detail)
        };
        check_request(&q).map_err(|e| refuse(e.to_string()))?;
        if q.query_id.is_empty() {
            q.query_id = format!("query-{:08x}", rand::random::<u32>());
        }
        hearth_crypto::pki::validate_node_id(&q.query_id).map_err(|e| refuse(format!("query_id: {e}")))?;
        if crate::job::lock(&self.shared.jobs).contains_key(&q.query_id) {
            return Err(refuse(format!("{} is the id of a job", q.query_id)));
        }
        run(&self.shared, &who, q).await.map(Response::new)
    }
}

async fn run(
    shared: &Arc<Shared>,
    who: &NodeIdentity,
    q: v1::QueryRequest,
) -> Result<v1::QueryResult, Status> {
    let actor = who.to_string();
    // Who is asked: with a policy in force, the institutions it gives a budget in the family.
    let enforced = shared.privacy.enforced();
    let tenants = shared.privacy.family_tenants(&q.family);
    let connected: Vec<String> =
        shared.connected().into_iter().filter(|id| !enforced || tenants.contains(id)).collect();
    if connected.len() < q.min_participants as usize {
        let detail = format!(
            "{} institutions can answer, the query needs {}{}",
            connected.len(),
            q.min_participants,
            if enforced { " (only those with a budget in the family are asked)" } else { "" }
        );
        shared.audit.record(&actor, Action::QueryRun, Outcome::Refused, &detail);
        return Err(Status::failed_precondition(detail));
    }
    let cohort = connected.len() as u32;
    let bins: Vec<String> = if q.statistic == "spend" {
        SPEND_BINS.iter().map(|b| b.to_string()).collect()
    } else {
        q.bins.clone()
    };
    let sens = sensitivity(&q.statistic);
    let (m, epsilon) = mechanism(q.epsilon, q.delta, q.min_participants, cohort, bins.len() as u64, sens)
        .map_err(|e| Status::invalid_argument(format!("calibrating the noise: {e}")))?;
    // Reserve before anyone counts: the release is charged even if its result is later refused.
    let reservation = if enforced {
        let charge = Charge::Query(QueryPlan {
            noise: QueryNoise::DistributedGaussian(m.clone()),
            privacy_unit: PrivacyUnit::Record,
            participants: cohort,
            // Known only from the release: checked on the noisy count below, before anything is published.
            records: None,
        });
        let ids: Vec<TenantId> = tenants.iter().map(|t| TenantId(t.clone())).collect();
        let (s2, fam, key) =
            (Arc::clone(shared), FamilyId(q.family.clone()), format!("query:{}", q.query_id));
        let r = tokio::task::spawn_blocking(move || s2.privacy.reserve_charge(&ids, &fam, &key, charge))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match r {
            Ok(id) => Some(id),
            Err(e) => {
                shared.audit.record(
                    &actor,
                    Action::QueryRun,
                    Outcome::Refused,
                    &format!("{}: {e}", q.query_id),
                );
                return Err(Status::resource_exhausted(format!("privacy budget: {e}")));
            }
        }
    } else {
        None
    };
    let deadline_s = if q.round_deadline_s == 0 { 60 } else { q.round_deadline_s };
    let deadline_unix_ms = crate::audit::now_ms() + u64::from(deadline_s) * 1000;
    let spec = SecureRoundSpec {
        key: q.query_id.clone(),
        round: 1,
        min_participants: q.min_participants,
        min_survivors: q.min_participants.max(m.spec().min_survivors),
        deadline: Duration::from_secs(u64::from(deadline_s)),
        vector_len: bins.len(),
        // Counts are integers: the quantiser's scale does not apply (the participants encode them directly).
        clip: 1.0,
        weight_cap: 1.0,
        noise: None,
    };
    let local_noise_scale = m.spec().local_scale;
    let open = |setup: v1::SecAggSetup| {
        announcement::Kind::Query(v1::QueryOpen {
            query_id: q.query_id.clone(),
            statistic: q.statistic.clone(),
            bins: bins.clone(),
            deadline_unix_ms,
            secagg: Some(setup),
            local_noise_scale,
            min_survivors: q.min_participants,
            value_bound: q.value_bound,
            family: q.family.clone(),
        })
    };
    let result = run_secure_round(
        shared,
        spec,
        connected.into_iter().collect(),
        open,
        |_: SecureEvent| {},
        |r, sum| {
            // Two's-complement 32-bit counts: the only values decoded are the noisy sums.
            let counts: Vec<f64> = sum.values().iter().map(|v| f64::from(*v as i32)).collect();
            Ok((counts, r.contributors(sum)))
        },
    )
    .await;
    let (counts, contributors) = match result {
        Ok(x) => x,
        Err(e) => {
            if let Some(id) = reservation {
                let _ = shared.privacy.release(id.0);
            }
            shared.audit.record(&actor, Action::QueryRun, Outcome::Error, &format!("{}: {e}", q.query_id));
            return Err(Status::aborted(format!("query {} failed: {e}", q.query_id)));
        }
    };
    if let Some(id) = reservation {
        let s2 = Arc::clone(shared);
        let settled = tokio::task::spawn_blocking(move || s2.privacy.settle(id.0)).await;
        if !matches!(settled, Ok(Ok(()))) {
            tracing::error!(query = %q.query_id, "could not settle the query's charge");
        }
    }
    let noise_stddev = m.aggregate_variance(contributors.len() as u32).sqrt();
    // The minimum cohort in records: judged on the noisy count of covered records (post-processing of the
    // release, so it costs nothing more); below it nothing is published, though the release was charged.
    if let Some(minimum) = enforced.then(|| shared.privacy.min_records(&q.family, &tenants)).flatten() {
        let covered =
            if q.statistic == "spend" { counts[1] / SPEND_UNITS as f64 } else { counts.iter().sum::<f64>() };
        if covered < minimum as f64 {
            let detail = format!(
                "{}: the statistic covers about {covered:.0} records, fewer than the policy's minimum of \
                 {minimum} for family {}; nothing released (the budget was charged: the query ran)",
                q.query_id, q.family
            );
            shared.audit.record(&actor, Action::QueryRun, Outcome::Refused, &detail);
            return Err(Status::failed_precondition(detail));
        }
    }
    shared.audit.record(
        &actor,
        Action::QueryRun,
        Outcome::Ok,
        &format!(
            "{} family {} statistic {} over {} bins from [{}]: epsilon {epsilon:.4}, delta {}",
            q.query_id,
            q.family,
            q.statistic,
            bins.len(),
            contributors.join(","),
            q.delta
        ),
    );
    let bins = if q.statistic == "spend" {
        spend_bins(&counts, q.value_bound, noise_stddev)
    } else {
        bins.iter()
            .zip(counts)
            .map(|(name, count)| v1::QueryBin { name: name.clone(), count, stddev: noise_stddev })
            .collect()
    };
    Ok(v1::QueryResult {
        query_id: q.query_id.clone(),
        bins,
        noise_stddev: if q.statistic == "spend" { noise_stddev / SPEND_UNITS as f64 } else { noise_stddev },
        epsilon,
        delta: q.delta,
        participants: contributors.len() as u32,
        mechanism: "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021), summed by secure aggregation"
            .into(),
    })
}

/// The released bins of a `spend` query from the noisy grid sums `[sum units, count units]` whose noise has
/// standard deviation `stddev` (grid units): the sum in currency, the count, and their ratio (with its
/// first-order standard deviation). Post-processing of the release: costs nothing more.
fn spend_bins(units: &[f64], bound: f64, stddev: f64) -> Vec<v1::QueryBin> {
    let u = SPEND_UNITS as f64;
    let (sum, count) = (units[0] * bound / u, units[1] / u);
    let (sum_sd, count_sd) = (stddev * bound / u, stddev / u);
    let (mean, mean_sd) = if count >= 1.0 {
        let mean = sum / count;
        (mean, ((sum_sd / count).powi(2) + (mean * count_sd / count).powi(2)).sqrt())
    } else {
        (f64::NAN, f64::NAN)
    };
    vec![
        v1::QueryBin { name: "sum".into(), count: sum, stddev: sum_sd },
        v1::QueryBin { name: "count".into(), count, stddev: count_sd },
        v1::QueryBin { name: "mean".into(), count: mean, stddev: mean_sd },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calibrated_mechanism_meets_its_target() {
        let (m, spent) = mechanism(1.0, 1e-6, 3, 5, 151, (1.0, 1.0)).unwrap();
        assert!(spent <= 1.0 && spent > 0.9, "{spent}");
        // Five shares of the local scale carry at least the central noise of three.
        assert!(m.aggregate_variance(5) > m.aggregate_variance(3));
        // A spend query's noise scales with its sensitivity: the same epsilon, relative to one record.
        let (s, spent) = mechanism(1.0, 1e-6, 3, 5, 2, sensitivity("spend")).unwrap();
        assert!(spent <= 1.0 && spent > 0.9, "{spent}");
        let ratio = s.aggregate_variance(3).sqrt() / m.aggregate_variance(3).sqrt();
        let expected = SPEND_UNITS as f64 * std::f64::consts::SQRT_2;
        assert!((ratio / expected - 1.0).abs() < 0.05, "noise ratio {ratio}, sensitivity ratio {expected}");
    }

    #[test]
    fn spend_sums_are_rescaled_and_their_mean_derived() {
        let b = spend_bins(&[25_000.0, 1_000.0], 50.0, 200.0);
        assert_eq!((b[0].name.as_str(), b[0].count, b[0].stddev), ("sum", 12_500.0, 100.0));
        assert_eq!((b[1].name.as_str(), b[1].count, b[1].stddev), ("count", 10.0, 2.0));
        assert_eq!((b[2].name.as_str(), b[2].count), ("mean", 1_250.0));
        assert!(b[2].stddev > 0.0 && b[2].stddev.is_finite());
        assert!(spend_bins(&[10.0, 20.0], 50.0, 1.0)[2].count.is_nan(), "no mean of less than one record");
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let ok = v1::QueryRequest {
            query_id: String::new(),
            family: "intent-stats".into(),
            statistic: "label".into(),
            bins: vec!["a".into(), "b".into()],
            epsilon: 1.0,
            delta: 1e-6,
            min_participants: 3,
            round_deadline_s: 0,
            value_bound: 0.0,
        };
        assert!(check_request(&ok).is_ok());
        let spend =
            v1::QueryRequest { statistic: "spend".into(), bins: vec![], value_bound: 500.0, ..ok.clone() };
        assert!(check_request(&spend).is_ok());
        for (bad, what) in [
            (v1::QueryRequest { statistic: "salary".into(), ..ok.clone() }, "statistic"),
            (v1::QueryRequest { bins: vec![], ..ok.clone() }, "bins"),
            (v1::QueryRequest { bins: vec!["a".into(), "a".into()], ..ok.clone() }, "repeated"),
            (v1::QueryRequest { epsilon: f64::NAN, ..ok.clone() }, "epsilon"),
            (v1::QueryRequest { delta: 0.5, ..ok.clone() }, "delta"),
            (v1::QueryRequest { min_participants: 2, ..ok.clone() }, "min_participants"),
            (v1::QueryRequest { value_bound: 5.0, ..ok.clone() }, "value_bound applies"),
            (v1::QueryRequest { bins: vec!["x".into()], ..spend.clone() }, "leave bins empty"),
            (v1::QueryRequest { value_bound: 0.0, ..spend.clone() }, "value_bound 0"),
            (v1::QueryRequest { value_bound: f64::INFINITY, ..spend.clone() }, "value_bound inf"),
        ] {
            let e = check_request(&bad).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }
}
