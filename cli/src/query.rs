//! `hearth query`: federated analytics over the institutions' own data, differentially private and
//! securely aggregated, charged to the privacy budget.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_proto::v1::analytics_client::AnalyticsClient;
use hearth_proto::v1::{self};

use crate::operator::Connection;

/// `hearth query ...`
#[derive(Debug, clap::Subcommand)]
pub enum QueryCommand {
    /// A histogram: how many records fall in each bin, summed over the institutions, with noise.
    #[command(
        after_help = "Examples:\n  hearth query histogram --family intent-stats --bins balance,transfer,oos --epsilon 1 --tls-dir pki\n  hearth query histogram --family intent-stats --bins-from labels.csv --epsilon 0.5 --json --tls-dir pki\n\nEach institution counts its own records (statistic `label`: its examples' labels), adds its share of\ndiscrete Gaussian noise and sends its counts masked; the coordinator releases only the noisy sum. The\nrelease costs (epsilon, delta) per record and is charged, before anyone counts, to the family's budget\nat every institution the privacy policy lists; a query that does not fit is refused saying what\nremains. Counts may come back negative: the noise is not clipped, so the counts stay unbiased."
    )]
    Histogram(HistogramArgs),
    /// The sum, count and mean of the institutions' purchase values, with noise.
    #[command(
        after_help = "Examples:\n  hearth query spend --family retail-stats --value-bound 200 --epsilon 1 --tls-dir pki\n\nEach institution sums the value (quantity x unit price) of each of its purchases, clipped to\n[0, --value-bound] (cancellations are not spend), and counts them; it adds its share of discrete\nGaussian noise to both and sends them masked. One purchase changes the released pair by at most the\nbound and one, so a lower bound gives less noise on the sum but clips more purchases. The mean is\nthe noisy sum over the noisy count (post-processing: no further cost)."
    )]
    Spend(SpendArgs),
}

/// What every query takes: who asks, what budget pays, the release's privacy, the output form.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Certificate to authenticate with (an analyst's, or the operator's).
    #[arg(long = "as", default_value = "analyst")]
    pub cert: String,
    /// The budget family the query is charged to.
    #[arg(long)]
    pub family: String,
    /// Epsilon of the release (per record).
    #[arg(long)]
    pub epsilon: f64,
    /// Delta of the release.
    #[arg(long, default_value_t = 1e-6)]
    pub delta: f64,
    /// Fewest institutions the sum may cover.
    #[arg(long, default_value_t = 3)]
    pub min_participants: u32,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hearth query spend`.
#[derive(Debug, clap::Args)]
pub struct SpendArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    /// The most one purchase may contribute to the sum.
    #[arg(long)]
    pub value_bound: f64,
}

/// Arguments of `hearth query histogram`.
#[derive(Debug, clap::Args)]
pub struct HistogramArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    /// What each record counts for: `label` (intent examples' labels) or `emotion` (emotion examples'
    /// primary labels).
    #[arg(long, default_value = "label", value_parser = ["label", "emotion"])]
    pub statistic: String,
    /// The bins, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "bins_from")]
    pub bins: Vec<String>,
    /// Take the bins from the distinct labels of a CSV or JSON Lines file.
    #[arg(long)]
    pub bins_from: Option<PathBuf>,
}

pub async fn run(cmd: QueryCommand) -> anyhow::Result<()> {
    match cmd {
        QueryCommand::Histogram(a) => {
            let mut bins = a.bins;
            if let Some(path) = &a.bins_from {
                let mut labels: Vec<String> =
                    crate::data::read_labelled(path)?.into_iter().map(|e| e.label).collect();
                labels.sort();
                labels.dedup();
                bins = labels;
            }
            if bins.is_empty() {
                bail!("give the bins with --bins or --bins-from");
            }
            let result = run_query(&a.query, a.statistic, bins, 0.0).await?;
            print_result(&result, a.query.json, "noisy count", 0)
        }
        QueryCommand::Spend(a) => {
            let result = run_query(&a.query, "spend".into(), vec![], a.value_bound).await?;
            print_result(&result, a.query.json, "noisy value", 2)
        }
    }
}

/// Runs one query through the coordinator's `Analytics` service.
async fn run_query(
    q: &QueryArgs,
    statistic: String,
    bins: Vec<String>,
    value_bound: f64,
) -> anyhow::Result<v1::QueryResult> {
    let mut client = AnalyticsClient::new(q.conn.channel_as(&q.cert).await?);
    let result = client
        .run_query(v1::QueryRequest {
            query_id: String::new(),
            family: q.family.clone(),
            statistic,
            bins,
            epsilon: q.epsilon,
            delta: q.delta,
            min_participants: q.min_participants,
            round_deadline_s: 0,
            value_bound,
        })
        .await
        .context("running the query")?
        .into_inner();
    Ok(result)
}

fn print_result(result: &v1::QueryResult, json: bool, what: &str, decimals: usize) -> anyhow::Result<()> {
    if json {
        let bins: Vec<serde_json::Value> = result
            .bins
            .iter()
            .map(|b| serde_json::json!({"name": b.name, "count": b.count, "stddev": b.stddev}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "query_id": result.query_id,
                "bins": bins,
                "noise_stddev": result.noise_stddev,
                "epsilon": result.epsilon,
                "delta": result.delta,
                "participants": result.participants,
                "mechanism": result.mechanism,
            }))?
        );
        return Ok(());
    }
    println!("{:<40} {:>14} {:>12}", "bin", what, "noise sd");
    for b in &result.bins {
        println!("{:<40} {:>14.decimals$} {:>12.2}", b.name, b.count, b.stddev);
    }
    println!(
        "\nquery {}: {} institutions; spent epsilon {:.4}, delta {}\n{}",
        result.query_id, result.participants, result.epsilon, result.delta, result.mechanism
    );
    Ok(())
}
