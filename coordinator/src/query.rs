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

use hearth_crypto::pki::{NodeIdentity, Role};
use hearth_policies::accountant::{calibrate_noise_multiplier, RdpAccountant};
use hearth_policies::budget::{Charge, FamilyId, PrivacyUnit, QueryNoise, QueryPlan, TenantId};
use hearth_policies::mechanism::DistributedDiscreteGaussian;
use hearth_proto::v1::analytics_server::Analytics;
use hearth_proto::v1::{self, announcement};
use tonic::{Request, Response, Status};

use crate::driver::{run_secure_round, SecureEvent, SecureRoundSpec, Shared};

/// Statistics a participant knows how to count.
pub(crate) const STATISTICS: [&str; 1] = ["label"];
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

/// The distributed mechanism for (epsilon, delta) on counts of L2 and L1 sensitivity 1 (one record
/// counts once), `dimension` bins, shares calibrated for `min_survivors` of `cohort`: the smallest
/// central scale (on a 2% grid above the continuous Gaussian's) whose accounted epsilon is within target.
fn mechanism(
    epsilon: f64,
    delta: f64,
    min_survivors: u32,
    cohort: u32,
    dimension: u64,
) -> Result<(DistributedDiscreteGaussian, f64), String> {
    let mut scale = calibrate_noise_multiplier(epsilon, delta, 1.0, 1).map_err(|e| e.to_string())?;
    for _ in 0..200 {
        let m = DistributedDiscreteGaussian::calibrate(scale, min_survivors, cohort, 1.0, 1.0, dimension)
            .map_err(|e| e.to_string())?;
        let mut acc = RdpAccountant::new();
        acc.compose(&m, 1).map_err(|e| e.to_string())?;
        let spent = acc.epsilon(delta).map_err(|e| e.to_string())?;
        if spent <= epsilon {
            return Ok((m, spent));
        }
        scale *= 1.02;
    }
    Err(format!("no noise scale reaches epsilon {epsilon} at delta {delta}"))
}

fn check_request(q: &v1::QueryRequest) -> Result<(), String> {
    hearth_crypto::pki::validate_node_id(&q.family).map_err(|e| format!("family: {e}"))?;
    if !STATISTICS.contains(&q.statistic.as_str()) {
        return Err(format!("statistic {:?} is not one of {STATISTICS:?}", q.statistic));
    }
    if q.bins.is_empty() || q.bins.len() > MAX_BINS {
        return Err(format!("{} bins; a query has 1 to {MAX_BINS}", q.bins.len()));
    }
    let mut seen = HashSet::new();
    for b in &q.bins {
        if b.is_empty() || b.len() > 200 || !seen.insert(b.as_str()) {
            return Err(format!("bin {b:?} is empty, over 200 bytes, or repeated"));
        }
    }
    if !(q.epsilon.is_finite() && q.epsilon > 0.0 && q.epsilon <= 100.0) {
        return Err(format!("epsilon {} must be in (0, 100]", q.epsilon));
    }
    if !(q.delta > 0.0 && q.delta < 1e-2) {
        return Err(format!("delta {} must be in (0, 0.01)", q.delta));
    }
    if q.min_participants < 3 {
        return Err(format!("min_participants {} is below 3", q.min_participants));
    }
    Ok(())
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    async fn run_query(&self, req: Request<v1::QueryRequest>) -> Result<Response<v1::QueryResult>, Status> {
        let who = hearth_transport::peer_identity(&req)?;
        if !matches!(who.role, Role::Analyst | Role::Operator) {
            self.shared.audit.record(&who.to_string(), "query.run", "denied", "role not allowed");
            return Err(Status::permission_denied(format!(
                "queries are not allowed for a {} certificate",
                who.role
            )));
        }
        let mut q = req.into_inner();
        let refuse = |detail: String| {
            self.shared.audit.record(&who.to_string(), "query.run", "refused", &detail);
            Status::invalid_argument(detail)
        };
        check_request(&q).map_err(refuse)?;
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
        shared.audit.record(&actor, "query.run", "refused", &detail);
        return Err(Status::failed_precondition(detail));
    }
    let cohort = connected.len() as u32;
    let (m, epsilon) = mechanism(q.epsilon, q.delta, q.min_participants, cohort, q.bins.len() as u64)
        .map_err(|e| Status::invalid_argument(format!("calibrating the noise: {e}")))?;
    // Reserve before anyone counts: the release is charged even if its result is later refused.
    let reservation = if enforced {
        let charge = Charge::Query(QueryPlan {
            noise: QueryNoise::DistributedGaussian(m.clone()),
            privacy_unit: PrivacyUnit::Record,
            participants: cohort,
            records: 0,
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
                shared.audit.record(&actor, "query.run", "refused", &format!("{}: {e}", q.query_id));
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
        deadline: Duration::from_secs(u64::from(deadline_s)),
        vector_len: q.bins.len(),
        // Counts are integers: the quantiser's scale does not apply (the participants encode them directly).
        clip: 1.0,
        weight_cap: 1.0,
    };
    let local_noise_scale = m.spec().local_scale;
    let open = |setup: v1::SecAggSetup| {
        announcement::Kind::Query(v1::QueryOpen {
            query_id: q.query_id.clone(),
            statistic: q.statistic.clone(),
            bins: q.bins.clone(),
            deadline_unix_ms,
            secagg: Some(setup),
            local_noise_scale,
            min_survivors: q.min_participants,
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
            shared.audit.record(&actor, "query.run", "error", &format!("{}: {e}", q.query_id));
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
    shared.audit.record(
        &actor,
        "query.run",
        "ok",
        &format!(
            "{} family {} statistic {} over {} bins from [{}]: epsilon {epsilon:.4}, delta {}",
            q.query_id,
            q.family,
            q.statistic,
            q.bins.len(),
            contributors.join(","),
            q.delta
        ),
    );
    Ok(v1::QueryResult {
        query_id: q.query_id.clone(),
        bins: q
            .bins
            .iter()
            .zip(counts)
            .map(|(name, count)| v1::QueryBin { name: name.clone(), count })
            .collect(),
        noise_stddev,
        epsilon,
        delta: q.delta,
        participants: contributors.len() as u32,
        mechanism: "distributed discrete Gaussian (Kairouz, Liu, Steinke 2021), summed by secure aggregation"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calibrated_mechanism_meets_its_target() {
        let (m, spent) = mechanism(1.0, 1e-6, 3, 5, 151).unwrap();
        assert!(spent <= 1.0 && spent > 0.9, "{spent}");
        // Five shares of the local scale carry at least the central noise of three.
        assert!(m.aggregate_variance(5) > m.aggregate_variance(3));
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
        };
        assert!(check_request(&ok).is_ok());
        for (bad, what) in [
            (v1::QueryRequest { statistic: "salary".into(), ..ok.clone() }, "statistic"),
            (v1::QueryRequest { bins: vec![], ..ok.clone() }, "bins"),
            (v1::QueryRequest { bins: vec!["a".into(), "a".into()], ..ok.clone() }, "repeated"),
            (v1::QueryRequest { epsilon: f64::NAN, ..ok.clone() }, "epsilon"),
            (v1::QueryRequest { delta: 0.5, ..ok.clone() }, "delta"),
            (v1::QueryRequest { min_participants: 2, ..ok.clone() }, "min_participants"),
        ] {
            let e = check_request(&bad).unwrap_err();
            assert!(e.contains(what), "{e}");
        }
    }
}
