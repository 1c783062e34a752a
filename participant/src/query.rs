//! Answering a federated analytics query: count this institution's own records into the query's bins,
//! add this participant's share of the discrete Gaussian noise (an exact sampler), and send the counts
//! masked through secure aggregation. Nothing leaves in the clear: the coordinator sees only the noisy sum
//! over the institutions that answered.

use anyhow::{bail, Context};
use hearth_policies::mechanism::{DistributedDiscreteGaussian, DistributedDiscreteGaussianSpec};
use hearth_proto::v1;

use crate::secagg::{self, RelayRx, RoundRef, SecAggIdentity};

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
    DistributedDiscreteGaussian::new(DistributedDiscreteGaussianSpec {
        local_scale: q.local_noise_scale,
        min_survivors: q.min_survivors,
        cohort,
        l2_sensitivity: 1.0,
        l1_sensitivity: 1.0,
        dimension: q.bins.len() as u64,
    })
    .context("the query's noise")
}

/// Runs this participant's part of query `q`; `labels` are its records' labels. Returns the bins counted.
pub(crate) async fn answer(
    client: v1::coordinator_client::CoordinatorClient<tonic::transport::Channel>,
    who: &SecAggIdentity,
    my_id: &str,
    q: &v1::QueryOpen,
    labels: Vec<String>,
    relays: RelayRx,
) -> anyhow::Result<usize> {
    if q.statistic != "label" {
        bail!(
            "query {} asks for statistic {:?}, which this participant does not count",
            q.query_id,
            q.statistic
        );
    }
    let setup = q.secagg.as_ref().context("the query has no secure-aggregation setup")?;
    let at = RoundRef { job_id: q.query_id.clone(), round: 1, deadline_unix_ms: q.deadline_unix_ms };
    let inv = secagg::accept(who, my_id, &at, q.bins.len() as u64, setup)?;
    let noise = noise_share(q, inv.cohort())?;
    let encoder = inv.clone();
    let bins = q.bins.clone();
    let input = async move {
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u32>> {
            let mut counts = label_counts(&bins, labels.iter().map(String::as_str));
            noise.add_share(&mut counts).context("sampling the noise share")?;
            encoder.encode_counts(&counts)
        })
        .await?
    };
    secagg::run_client(client, who, &at, inv, relays, input, None).await?;
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
