//! Answering a federated analytics query: count this institution's own records into the query's bins,
//! add this participant's share of the discrete Gaussian noise (an exact sampler), and send the counts
//! masked through secure aggregation. Nothing leaves in the clear: the coordinator sees only the noisy sum
//! over the institutions that answered.

use anyhow::{bail, Context};
use hearth_policies::mechanism::{DistributedDiscreteGaussian, DistributedDiscreteGaussianSpec};
use hearth_proto::{v1, SPEND_UNITS};

use crate::federation::Federation;
use crate::secagg::{self, RelayRx, RoundRef, SecAggIdentity};

/// What this institution's records contribute to a query, read from its store.
#[derive(Debug)]
pub(crate) enum Records {
    /// One label per record (statistics `label` and `emotion`).
    Labels(Vec<String>),
    /// One value per record (statistic `spend`).
    Values(Vec<f64>),
}

/// The query's vector for `records`, before noise: a histogram over the bins, or `[sum, count]` of the
/// values clipped to `[0, bound]` in grid units.
pub(crate) fn statistic_vector(q: &v1::QueryOpen, records: &Records) -> anyhow::Result<Vec<i64>> {
    match (q.statistic.as_str(), records) {
        ("label" | "emotion", Records::Labels(l)) => Ok(label_counts(&q.bins, l.iter().map(String::as_str))),
        ("spend", Records::Values(v)) => {
            if !(q.value_bound.is_finite() && q.value_bound > 0.0) {
                bail!("query {} announces a value bound of {}", q.query_id, q.value_bound);
            }
            if q.bins.len() != 2 {
                bail!("query {} announces {} bins for statistic spend, not 2", q.query_id, q.bins.len());
            }
            Ok(value_sums(v, q.value_bound))
        }
        (other, _) => {
            bail!("query {} asks for statistic {other:?}, which this participant does not count", q.query_id)
        }
    }
}

/// `[sum, count]` in grid units: each value clipped to `[0, bound]` and rounded to `bound / SPEND_UNITS`
/// (so it adds at most `SPEND_UNITS`), each record adding `SPEND_UNITS` to the count. Non-finite values
/// count as 0.
pub(crate) fn value_sums(values: &[f64], bound: f64) -> Vec<i64> {
    let unit = bound / SPEND_UNITS as f64;
    let sum = values
        .iter()
        .map(|v| if v.is_finite() { (v.clamp(0.0, bound) / unit).round() as i64 } else { 0 })
        .sum::<i64>();
    vec![sum, SPEND_UNITS * values.len() as i64]
}

/// Counts of `labels` per bin: each record counts once, in the bin named by its label (or nowhere).
pub(crate) fn label_counts<'a>(bins: &[String], labels: impl Iterator<Item = &'a str>) -> Vec<i64> {
    let index: std::collections::HashMap<&str, usize> =
        bins.iter().enumerate().map(|(i, b)| (b.as_str(), i)).collect();
    let mut counts = vec![0i64; bins.len()];
    for l in labels {
        if let Some(&i) = index.get(l) {
            counts[i] += 1;
        }
    }
    counts
}

/// The noise this participant adds: a discrete Gaussian share of the announced scale on every bin.
pub(crate) fn noise_share(q: &v1::QueryOpen, cohort: u32) -> anyhow::Result<DistributedDiscreteGaussian> {
    if !(q.local_noise_scale.is_finite() && q.local_noise_scale > 0.0) {
        bail!(
            "query {} announces a noise scale of {}: refusing to answer without noise",
            q.query_id,
            q.local_noise_scale
        );
    }
    let (l2, l1) = if q.statistic == "spend" {
        (SPEND_UNITS as f64 * std::f64::consts::SQRT_2, 2.0 * SPEND_UNITS as f64)
    } else {
        (1.0, 1.0)
    };
    DistributedDiscreteGaussian::new(DistributedDiscreteGaussianSpec {
        local_scale: q.local_noise_scale,
        min_survivors: q.min_survivors,
        cohort,
        l2_sensitivity: l2,
        l1_sensitivity: l1,
        dimension: q.bins.len() as u64,
    })
    .context("the query's noise")
}

/// Runs this participant's part of query `q` over its `records`. Returns the bins counted.
pub(crate) async fn answer(
    fed: &Federation,
    client: v1::coordinator_client::CoordinatorClient<tonic::transport::Channel>,
    who: &SecAggIdentity,
    q: &v1::QueryOpen,
    records: Records,
    relays: RelayRx,
) -> anyhow::Result<usize> {
    // Counted before joining the round: a statistic we do not count, or a bad bound, is refused here.
    let mut counts = statistic_vector(q, &records)?;
    let setup = q.secagg.as_ref().context("the query has no secure-aggregation setup")?;
    let at = RoundRef { job_id: q.query_id.clone(), round: 1, deadline_unix_ms: q.deadline_unix_ms };
    // The institution's policy must let the family use its data, the query must be new, and the survivors
    // must be at least the policy's floor and the count the noise is calibrated for.
    let floor = fed.privacy.admit_query(&q.query_id, &q.family)?;
    let inv = secagg::accept(who, &at, q.bins.len() as u64, setup, floor.max(q.min_survivors))?;
    let noise = noise_share(q, inv.cohort())?;
    fed.privacy.check_query(&q.query_id, &q.family, &noise, inv.cohort())?;
    let (id, family, mechanism, cohort) = (q.query_id.clone(), q.family.clone(), noise.clone(), inv.cohort());
    let release = fed.release(move |p| p.release_query(&id, &family, &mechanism, cohort), true);
    let encoder = inv.clone();
    let input = async move {
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u32>> {
            noise.add_share(&mut counts).context("sampling the noise share")?;
            encoder.encode_counts(&counts)
        })
        .await?
    };
    secagg::run_client(client, who, &at, inv, relays, input, release, None).await?;
    Ok(q.bins.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_counts_once_in_its_bin() {
        let bins = vec!["a".to_string(), "b".to_string()];
        assert_eq!(label_counts(&bins, ["a", "b", "a", "zzz"].into_iter()), vec![2, 1]);
    }

    #[test]
    fn spend_values_are_clipped_rounded_and_counted() {
        // 0..=bound maps to 0..=100 units; negative, over-bound and non-finite values are clipped.
        let v = value_sums(&[10.0, 55.0, -3.0, 1e12, f64::NAN], 100.0);
        // 10 + 55 + 0 (negative) + 100 (over the bound) + 0 (NaN).
        assert_eq!(v, vec![165, 500]);
        let q = v1::QueryOpen {
            query_id: "q".into(),
            statistic: "spend".into(),
            bins: vec!["sum".into(), "count".into()],
            value_bound: 100.0,
            ..Default::default()
        };
        assert_eq!(statistic_vector(&q, &Records::Values(vec![20.0])).unwrap(), vec![20, 100]);
        let wrong = v1::QueryOpen { statistic: "salary".into(), ..q.clone() };
        assert!(statistic_vector(&wrong, &Records::Values(vec![]))
            .unwrap_err()
            .to_string()
            .contains("salary"));
        let unbounded = v1::QueryOpen { value_bound: 0.0, ..q };
        assert!(statistic_vector(&unbounded, &Records::Values(vec![])).is_err());
    }

    #[test]
    fn a_query_without_noise_is_refused() {
        let q = v1::QueryOpen {
            query_id: "q".into(),
            bins: vec!["a".into()],
            local_noise_scale: 0.0,
            ..Default::default()
        };
        assert!(noise_share(&q, 5).unwrap_err().to_string().contains("without noise"));
    }
}
