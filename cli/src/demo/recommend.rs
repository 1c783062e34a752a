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
//! leave-last-out (each customer's last new item, by invoice date) with HR@10 and NDCG@10, each a mean
//! and standard deviation over bootstrap resamples of the test customers: the federated model beside
//! the same statistics counted centrally, the same with co-purchases counted only before each
//! customer's day, and the baselines (popular before the day, popular in the 60 days before it,
//! item-to-item, each institution's own popular items). The scoring was chosen on a validation split
//! carved from the training data; its figures are reported too.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hearth_models::recommend::data::{
    clean, descriptions, encode, parse_transactions, spec_for, CleaningReport, Transaction,
};
use hearth_models::recommend::{
    self, evaluate, leave_last_out, partition_by_country, HeldOut, Interactions, Ranked, Scoring,
};
use hearth_models::{ModelSpec, RecommendModel, RecommendSpec};
use hearth_proto::v1;
use serde::Serialize;

use super::{follow, Ctx, Task};

/// The cut-off of the ranking metrics.
const K: usize = 10;
/// The seeds of the bootstrap resamples every method is scored on.
const SEEDS: [u64; 20] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20];

/// The window of the "popular recently" baseline, in days.
const RECENT_DAYS: u32 = 60;

/// One row of the per-round table.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRow {
    pub round: u64,
    pub participants: u32,
    pub hr_at_10: f64,
    pub ndcg_at_10: f64,
    pub seconds: f64,
    /// Where each test customer's held-out item landed under this round's model.
    #[serde(skip)]
    ranked: Ranked,
}

/// Ranking quality of one way of recommending on the held-out items: the mean and standard deviation
/// over the bootstrap resamples of [`SEEDS`], and the figure over every test customer.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub hr_at_10: f64,
    pub hr_at_10_sd: f64,
    pub ndcg_at_10: f64,
    pub ndcg_at_10_sd: f64,
    pub hr_at_10_all: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

impl Outcome {
    fn of(r: &Ranked, train_seconds: Option<f64>) -> Self {
        let runs: Vec<_> = SEEDS.iter().map(|&s| r.resampled(s)).collect();
        let (hr, hr_sd) = mean_sd(&runs.iter().map(|m| m.hit_rate).collect::<Vec<_>>());
        let (ndcg, ndcg_sd) = mean_sd(&runs.iter().map(|m| m.ndcg).collect::<Vec<_>>());
        Self {
            hr_at_10: hr,
            hr_at_10_sd: hr_sd,
            ndcg_at_10: ndcg,
            ndcg_at_10_sd: ndcg_sd,
            hr_at_10_all: r.metrics().hit_rate,
            train_seconds,
        }
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

/// HR@10 on the validation split (each training customer's last new item held out again), where the
/// scoring was chosen.
#[derive(Debug, Serialize)]
pub struct Validation {
    pub customers: usize,
    pub model_hr_at_10: f64,
    pub popular_recent_hr_at_10: f64,
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
    /// Every figure below is a mean (and standard deviation) over bootstrap resamples of the test
    /// customers drawn from these seeds, the same customers for every method.
    pub seeds: Vec<u64>,
    pub validation: Validation,
    pub rounds: Vec<RoundRow>,
    pub federated: Outcome,
    /// The same statistics counted on the pooled data.
    pub centralized: Outcome,
    /// The same, but co-purchases counted only from pairs that existed before each customer's day (the
    /// served tables cover the whole training period, other customers' later purchases included).
    pub time_sliced: Outcome,
    /// The items most customers first bought before the customer's held-out day.
    pub popular: Outcome,
    /// The items most customers first bought in the 60 days before the customer's held-out day.
    pub popular_recent: Outcome,
    /// The items most often bought by customers who bought the customer's items.
    pub item_to_item: Outcome,
    /// Every customer gets the items most customers of their own institution first bought before the
    /// customer's held-out day.
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
    /// The validation split: training purchases with each customer's last new item held out again.
    validation: (Interactions, Vec<HeldOut>, RecommendSpec),
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
    let names = descriptions(&rows);
    let spec = spec_for(&purchases, &names)?;
    let split = leave_last_out(&purchases);
    let val = leave_last_out(&split.train);
    let vspec = spec_for(&split.train, &names)?;
    let validation = (encode(&vspec, &val.train), val.test, vspec);
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
        validation,
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
        format!("{:>5} {:>12} {:>9} {:>9}", "round", "participants", "HR@10", "NDCG@10")
    }

    fn evaluate(&self, s: &v1::RoundSummary, spec: ModelSpec, params: Vec<f32>) -> anyhow::Result<RoundRow> {
        let ModelSpec::Recommend(spec) = spec else {
            anyhow::bail!("the recommend job's model is a {}", spec.family())
        };
        let scoring = spec.scoring;
        let model = RecommendModel::from_params(spec, params)?;
        let ranked = evaluate(&model, &scoring, &self.pooled, &self.test, K);
        let m = ranked.metrics();
        Ok(RoundRow {
            round: s.round,
            participants: s.participants,
            hr_at_10: m.hit_rate,
            ndcg_at_10: m.ndcg,
            seconds: s.seconds,
            ranked,
        })
    }

    fn line(&self, r: &RoundRow) -> String {
        format!("{:>5} {:>12} {:>9.4} {:>9.4}", r.round, r.participants, r.hr_at_10, r.ndcg_at_10)
    }
}

/// Runs the federated job, then scores it beside the same statistics pooled and the baselines.
pub(crate) async fn run(ctx: &mut Ctx, p: Prepared) -> anyhow::Result<Summary> {
    let mut plan = ctx.plan("demo-recommend", ModelSpec::Recommend(p.spec.clone()));
    plan.data_description = format!(
        "Online Retail (UCI 352, 40,000-row sample) transactions, leave-last-out train, {} institutions by country",
        p.institutions.len()
    );
    eprintln!("recommend: federated statistics, {} rounds", plan.rounds);
    let task = Arc::new(RecommendTask { pooled: Arc::clone(&p.pooled), test: Arc::clone(&p.test) });
    let (rows, fed_seconds) = follow(ctx, &plan, task).await?;
    let Some(fed) = rows.last().map(|r| r.ranked.clone()) else {
        anyhow::bail!("the recommend job committed no round")
    };

    eprintln!("recommend: the same statistics pooled, the baselines, and the validation split...");
    let start = std::time::Instant::now();
    let (spec, pooled, test) = (p.spec.clone(), Arc::clone(&p.pooled), Arc::clone(&p.test));
    let (homes, (vtrain, vtest, vspec)) = (p.homes, p.validation);
    let scored = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let sc = spec.scoring;
        let central_model = RecommendModel::counted(spec.clone(), &pooled)?;
        let central_seconds = start.elapsed().as_secs_f64();
        let on = |s: &Scoring| evaluate(&central_model, s, &pooled, &test, K);
        let sliced = recommend::evaluate_time_sliced(&central_model, &sc, &pooled, &test, K);
        let (central, popular, recent, i2i) = (
            on(&sc),
            on(&Scoring::popular(&spec)),
            on(&Scoring::popular_recent(RECENT_DAYS)),
            on(&Scoring::item_to_item(&spec)),
        );
        // Each institution's own popular items, for its own customers, in the test's order.
        let mut at_home = Ranked { ranks: vec![None; test.len()], k: K };
        for home in &homes {
            let mine: Vec<usize> = (0..test.len())
                .filter(|&t| home.customers().binary_search(&test[t].customer).is_ok())
                .collect();
            let held: Vec<HeldOut> = mine.iter().map(|&t| test[t].clone()).collect();
            let r = evaluate(
                &RecommendModel::counted(spec.clone(), home)?,
                &Scoring::popular(&spec),
                home,
                &held,
                K,
            );
            for (t, rank) in mine.into_iter().zip(r.ranks) {
                at_home.ranks[t] = rank;
            }
        }
        let vmodel = RecommendModel::counted(vspec.clone(), &vtrain)?;
        let validation = Validation {
            customers: vtest.len(),
            model_hr_at_10: evaluate(&vmodel, &sc, &vtrain, &vtest, K).metrics().hit_rate,
            popular_recent_hr_at_10: evaluate(
                &vmodel,
                &Scoring::popular_recent(RECENT_DAYS),
                &vtrain,
                &vtest,
                K,
            )
            .metrics()
            .hit_rate,
        };
        Ok(((central, central_seconds), sliced, popular, recent, i2i, at_home, validation))
    })
    .await??;
    let ((central, central_seconds), sliced, popular, recent, i2i, at_home, validation) = scored;
    let sc = p.spec.scoring;
    Ok(Summary {
        dataset: "Online Retail".into(),
        cleaning: p.cleaning,
        institutions: p.institutions,
        items: p.spec.items.len(),
        test_customers: p.test.len(),
        secure_aggregation: ctx.secure_aggregation,
        train: serde_json::json!({
            "rounds": plan.rounds,
            "first_day": recommend::day_string(p.spec.first_day),
            "days": p.spec.days,
            "parameters": p.spec.num_params(),
            "scoring": sc,
        }),
        seeds: SEEDS.to_vec(),
        validation,
        rounds: rows,
        federated: Outcome::of(&fed, Some(fed_seconds)),
        centralized: Outcome::of(&central, Some(central_seconds)),
        time_sliced: Outcome::of(&sliced, None),
        popular: Outcome::of(&popular, None),
        popular_recent: Outcome::of(&recent, None),
        item_to_item: Outcome::of(&i2i, None),
        popular_at_home: Outcome::of(&at_home, None),
    })
}

pub(crate) fn print_final(s: &Summary) {
    println!();
    println!(
        "recommend ({}, {} items, {} test customers; leave-last-out, institutions by country; mean +- sd over {} bootstrap resamples)",
        s.dataset,
        s.items,
        s.test_customers,
        s.seeds.len()
    );
    println!("{:<22} {:>16} {:>16} {:>9}", "", "HR@10", "NDCG@10", "seconds");
    let secs = |o: &Outcome| o.train_seconds.map_or("-".to_string(), |x| format!("{x:.1}"));
    for (name, o) in [
        ("federated", &s.federated),
        ("centralized", &s.centralized),
        ("co-purchases before", &s.time_sliced),
        ("popular before the day", &s.popular),
        ("popular, last 60 days", &s.popular_recent),
        ("item-to-item", &s.item_to_item),
        ("popular at home", &s.popular_at_home),
    ] {
        println!(
            "{:<22} {:>8.4} +- {:.4} {:>8.4} +- {:.4} {:>9}",
            name,
            o.hr_at_10,
            o.hr_at_10_sd,
            o.ndcg_at_10,
            o.ndcg_at_10_sd,
            secs(o)
        );
    }
    let rel = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "federated HR@10 is {:.2}x popular in the last 60 days ({:.2}x on validation, where the scoring was chosen)",
        rel(s.federated.hr_at_10, s.popular_recent.hr_at_10),
        rel(s.validation.model_hr_at_10, s.validation.popular_recent_hr_at_10)
    );
}
