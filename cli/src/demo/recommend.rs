//! The recommendation task on Online Retail.
//!
//! **Institutions are countries**, the dataset's natural partition, as the models crate partitions them
//! (`partition_by_country`): each customer belongs to the country of most of their purchases; the
//! `N - 1` countries with the most customers are institutions of their own and every other country joins
//! one "Other countries" institution. The demo asks for as many institutions as it has participant
//! processes, so participant `i` is the `i`-th institution: with the default 5, United Kingdom, Germany,
//! France, Belgium, and the other 31 countries together. (With more participants than there are
//! countries the demo refuses the task rather than start participants without data.)
//!
//! Each participant imports its customers' raw transaction rows (cancellations included; anonymous rows
//! and non-products never reach it), minus the rows of each customer's held-out item: the evaluation is
//! leave-last-out (each customer's last new item, by invoice date) with HR@10 and NDCG@10, federated
//! beside the same factorisation trained centrally (ALS) beside the most-popular baseline.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hearth_models::recommend::data::{
    catalogue, clean, encode, parse_transactions, CleaningReport, Transaction,
};
use hearth_models::recommend::{
    self, evaluate_popular, evaluate_ranking, leave_last_out, partition_by_country, HeldOut, Interactions,
    RankingMetrics,
};
use hearth_models::{ModelSpec, RecommendModel, RecommendSpec, TrainParams};
use hearth_proto::v1;
use serde::Serialize;

use super::{follow, Ctx, Task};

/// The cut-off of the ranking metrics.
const K: usize = 10;
/// Sweeps of the centralized ALS baseline (measured enough to converge by the models crate's simulation).
const ALS_ITERATIONS: u32 = 10;

/// One row of the per-round table.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRow {
    pub round: u64,
    pub participants: u32,
    pub train_loss: f32,
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    pub seconds: f64,
}

/// Ranking quality of one way of recommending, on the held-out items.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
}

impl Outcome {
    fn of(m: &RankingMetrics, train_seconds: Option<f64>) -> Self {
        Self { hr_at_10: m.hit_rate, ndcg_at_10: m.ndcg, train_seconds }
    }
}

/// One institution of the partition, and the participant that holds it.
#[derive(Debug, Clone, Serialize)]
pub struct InstitutionRow {
    pub participant: String,
    pub name: String,
    pub countries: usize,
    pub customers: usize,
    pub purchases: usize,
    pub transaction_rows: usize,
}

/// The `"recommend"` section of `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dataset: String,
    pub cleaning: CleaningReport,
    pub institutions: Vec<InstitutionRow>,
    pub items: usize,
    pub test_customers: usize,
    pub secure_aggregation: bool,
    pub train: serde_json::Value,
    pub rounds: Vec<RoundRow>,
    pub federated: Outcome,
    pub centralized: Outcome,
    /// Every customer gets the items most customers bought (all institutions pooled), minus their own.
    pub popular: Outcome,
    /// Every customer gets their own institution's most popular items: what a cold start is served.
    pub popular_at_home: Outcome,
}

/// Online Retail, cleaned, split and partitioned.
pub(crate) struct Prepared {
    spec: RecommendSpec,
    cleaning: CleaningReport,
    /// Per institution: its transaction rows for its participant's store.
    shards: Vec<Vec<Transaction>>,
    institutions: Vec<InstitutionRow>,
    /// Every customer's training history, for evaluation.
    pooled: Arc<Interactions>,
    /// Per institution: its customers' training histories (the popular-at-home baseline).
    homes: Vec<Interactions>,
    test: Arc<Vec<HeldOut>>,
}

impl Prepared {
    /// Institution `i`'s transaction rows.
    pub(crate) fn shard(&self, i: usize) -> &[Transaction] {
        self.shards.get(i).map_or(&[], Vec::as_slice)
    }

    /// A customer of institution `i` with a purchase history, for the demo's example request.
    pub(crate) fn example_customer(&self, i: usize) -> Option<String> {
        self.homes.get(i)?.customers().first().cloned()
    }
}

/// Loads `online-retail/transactions.csv` under the datasets directory, cleans it, holds out each customer's last new item and
/// partitions the rest by country into `n` institutions.
pub(crate) fn prepare(data: &Path, n: usize) -> anyhow::Result<Prepared> {
    let path = data.join("online-retail/transactions.csv");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("reading Online Retail from {} (set --data-dir or HEARTH_DATA_DIR)", path.display())
    })?;
    let report = parse_transactions(&text).with_context(|| format!("parsing {}", path.display()))?;
    if let Some(e) = report.errors.first() {
        anyhow::bail!("{}: {} bad rows, the first at {e}", path.display(), report.errors.len());
    }
    let rows = report.examples;
    let (purchases, cleaning) = clean(&rows);
    let spec = RecommendSpec::with_defaults(catalogue(&purchases))?;
    let split = leave_last_out(&purchases);
    let institutions = partition_by_country(&split.train, n)?;
    if institutions.len() < n {
        anyhow::bail!(
            "Online Retail has {} countries with customers: run the recommend task with at most that many participants",
            institutions.len()
        );
    }
    // Each customer's institution, and the (customer, item) pairs held out for evaluation.
    let home: HashMap<&str, usize> = institutions
        .iter()
        .enumerate()
        .flat_map(|(i, inst)| inst.purchases.iter().map(move |p| (p.customer.as_str(), i)))
        .collect();
    let held: HashSet<(&str, &str)> =
        split.test.iter().map(|h| (h.customer.as_str(), h.item.as_str())).collect();
    let mut shards: Vec<Vec<Transaction>> = vec![Vec::new(); institutions.len()];
    for r in &rows {
        let Some(c) = r.customer.as_deref() else { continue };
        if held.contains(&(c, r.stock_code.as_str())) {
            continue;
        }
        if let Some(shard) = home.get(c).and_then(|&i| shards.get_mut(i)) {
            shard.push(r.clone());
        }
    }
    let shards: Vec<Vec<Transaction>> = shards.into_iter().map(|s| crate::data::minimise(s).0).collect();
    let homes: Vec<Interactions> = institutions.iter().map(|i| encode(&spec, &i.purchases)).collect();
    let table: Vec<InstitutionRow> = institutions
        .iter()
        .zip(&shards)
        .enumerate()
        .map(|(i, (inst, rows))| InstitutionRow {
            participant: format!("institution-{}", i + 1),
            name: inst.name.clone(),
            countries: inst.countries.len(),
            customers: inst.customers(),
            purchases: inst.purchases.len(),
            transaction_rows: rows.len(),
        })
        .collect();
    let listed: Vec<String> =
        table.iter().map(|t| format!("{} = {} ({} customers)", t.participant, t.name, t.customers)).collect();
    eprintln!(
        "recommend: Online Retail: {} rows, {} purchases kept ({} without a customer, {} cancellations netted); \
         {} items, {} test customers (leave-last-out); institutions by country: {}",
        cleaning.rows,
        cleaning.purchases,
        cleaning.anonymous,
        cleaning.cancellations,
        spec.items.len(),
        split.test.len(),
        listed.join(", ")
    );
    Ok(Prepared {
        pooled: Arc::new(encode(&spec, &split.train)),
        spec,
        cleaning,
        shards,
        institutions: table,
        homes,
        test: Arc::new(split.test),
    })
}

struct RecommendTask {
    pooled: Arc<Interactions>,
    test: Arc<Vec<HeldOut>>,
}

impl Task for RecommendTask {
    type Row = RoundRow;

    fn header(&self) -> String {
        format!("{:>5} {:>12} {:>10} {:>9} {:>9}", "round", "participants", "train_loss", "HR@10", "NDCG@10")
    }

    fn evaluate(&self, s: &v1::RoundSummary, spec: ModelSpec, params: Vec<f32>) -> anyhow::Result<RoundRow> {
        let ModelSpec::Recommend(spec) = spec else {
            anyhow::bail!("the recommend job's model is a {}", spec.family())
        };
        let m = evaluate_ranking(&RecommendModel::from_params(spec, params)?, &self.pooled, &self.test, K);
        Ok(RoundRow {
            round: s.round,
            participants: s.participants,
            train_loss: s.train_loss,
            hr_at_10: m.hit_rate,
            ndcg_at_10: m.ndcg,
            seconds: s.seconds,
        })
    }

    fn line(&self, r: &RoundRow) -> String {
        format!(
            "{:>5} {:>12} {:>10.4} {:>9.4} {:>9.4}",
            r.round, r.participants, r.train_loss, r.hr_at_10, r.ndcg_at_10
        )
    }
}

/// Runs the federated job, the centralized ALS baseline and the popularity baselines.
pub(crate) async fn run(ctx: &mut Ctx, p: Prepared) -> anyhow::Result<Summary> {
    let mut plan = ctx.plan("demo-recommend", ModelSpec::Recommend(p.spec.clone()));
    plan.data_description = format!(
        "Online Retail (UCI 352, 40,000-row sample) transactions, leave-last-out train, {} institutions by country",
        p.institutions.len()
    );
    eprintln!("recommend: federated training, {} rounds", plan.rounds);
    let task = Arc::new(RecommendTask { pooled: Arc::clone(&p.pooled), test: Arc::clone(&p.test) });
    let (rows, fed_seconds) = follow(ctx, &plan, task).await?;
    let Some(last) = rows.last() else { anyhow::bail!("the recommend job committed no round") };
    let federated =
        Outcome { hr_at_10: last.hr_at_10, ndcg_at_10: last.ndcg_at_10, train_seconds: Some(fed_seconds) };

    eprintln!("recommend: training the centralized baseline (ALS) on the pooled data...");
    let start = std::time::Instant::now();
    let (spec, pooled, test) = (p.spec.clone(), Arc::clone(&p.pooled), Arc::clone(&p.test));
    let als = TrainParams { local_epochs: ALS_ITERATIONS, ..plan.train.clone() };
    let homes = p.homes;
    let (central, popular, at_home) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut params = vec![0.0f32; spec.num_params()];
        recommend::train_als(&spec, &mut params, &pooled, &als)?;
        let central =
            evaluate_ranking(&RecommendModel::from_params(spec.clone(), params)?, &pooled, &test, K);
        let popular = evaluate_popular(&spec, &pooled, &pooled, &test, K);
        // Each institution's own popular items, for its own customers, weighted by customers.
        let (mut hits, mut gain, mut n) = (0.0, 0.0, 0usize);
        for home in &homes {
            let mine: Vec<HeldOut> = test
                .iter()
                .filter(|h| home.customers().binary_search(&h.customer).is_ok())
                .cloned()
                .collect();
            let m = evaluate_popular(&spec, home, home, &mine, K);
            hits += m.hit_rate * m.customers as f64;
            gain += m.ndcg * m.customers as f64;
            n += m.customers;
        }
        let n = n.max(1) as f64;
        let at_home = RankingMetrics { hit_rate: hits / n, ndcg: gain / n, k: K, customers: n as usize };
        Ok((central, popular, at_home))
    })
    .await??;
    let central_seconds = start.elapsed().as_secs_f64();
    let t = &plan.train;
    Ok(Summary {
        dataset: "Online Retail".into(),
        cleaning: p.cleaning,
        institutions: p.institutions,
        items: p.spec.items.len(),
        test_customers: p.test.len(),
        secure_aggregation: ctx.secure_aggregation,
        train: serde_json::json!({
            "rounds": plan.rounds,
            "local_epochs": t.local_epochs,
            "learning_rate": t.learning_rate,
            "batch_size": t.batch_size,
            "l2": t.l2,
            "server_learning_rate": plan.server_learning_rate,
            "server_momentum": plan.server_momentum,
            "factors": p.spec.factors,
            "alpha": p.spec.alpha,
            "user_l2": p.spec.user_l2,
            "als_iterations": ALS_ITERATIONS,
        }),
        rounds: rows,
        federated,
        centralized: Outcome::of(&central, Some(central_seconds)),
        popular: Outcome::of(&popular, None),
        popular_at_home: Outcome::of(&at_home, None),
    })
}

pub(crate) fn print_final(s: &Summary) {
    println!();
    println!(
        "recommend ({}, {} items, {} test customers; leave-last-out, institutions by country)",
        s.dataset, s.items, s.test_customers
    );
    println!("{:<16} {:>9} {:>9} {:>9}", "", "HR@10", "NDCG@10", "seconds");
    let secs = |o: &Outcome| o.train_seconds.map_or("-".to_string(), |x| format!("{x:.1}"));
    for (name, o) in [
        ("federated", &s.federated),
        ("centralized ALS", &s.centralized),
        ("most popular", &s.popular),
        ("popular at home", &s.popular_at_home),
    ] {
        println!("{:<16} {:>9.4} {:>9.4} {:>9}", name, o.hr_at_10, o.ndcg_at_10, secs(o));
    }
    let rel = if s.centralized.hr_at_10 > 0.0 { s.federated.hr_at_10 / s.centralized.hr_at_10 } else { 0.0 };
    println!("federated HR@10 is {:.1}% of centralized", 100.0 * rel);
}
