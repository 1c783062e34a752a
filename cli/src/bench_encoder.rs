//! `hearth bench encoder`: what the encoder tier costs beside the fast tier, in process, on the demo's
//! datasets. Two tables:
//! - **embedding throughput**: texts per second embedding CLINC150 queries and GoEmotions comments, with
//!   1 and with 2 threads (median of the repeats, with the slowest and fastest), and the time all of each
//!   dataset would take at that rate: what `hearth data import` and the demo's first run pay once;
//! - **one message**: the latency of classifying a single query, the fast tier (hashed n-grams, softmax)
//!   against the encoder tier (the same, plus embedding the query), median and p99 over the queries,
//!   and their ratio: what a served request pays per message.
//!
//! Both tiers are timed in the same run, on the same machine, so the ratio is the figure to compare.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use hearth_models::emotion::{parse_emotion_labels, parse_goemotions};
use hearth_models::encoder::{default_dir, Encoder};
use hearth_models::{parse_clinc150, FeatureConfig, IntentModel, IntentSpec};
use serde::Serialize;

/// Arguments of `hearth bench encoder`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hearth bench encoder
  hearth bench encoder --texts 4000 --repeats 5 --json

Needs the encoder installed (`hearth model fetch-encoder`).")]
pub struct EncoderBenchArgs {
    /// Texts of each dataset embedded per repeat.
    #[arg(long, default_value_t = 2000)]
    pub texts: usize,
    /// Repeats of each throughput measurement (the median is reported, with the range).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Single queries timed for the latency table.
    #[arg(long, default_value_t = 500)]
    pub queries: usize,
    /// The datasets directory (default: the repository's `data/`).
    #[arg(long, env = "HEARTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON document instead of the tables.
    #[arg(long)]
    pub json: bool,
}

/// One row of the throughput table.
#[derive(Debug, Serialize)]
pub struct Throughput {
    pub dataset: &'static str,
    pub threads: usize,
    pub texts: usize,
    pub texts_per_s_median: f64,
    pub texts_per_s_min: f64,
    pub texts_per_s_max: f64,
    /// Texts in the whole dataset, and the seconds they would take at the median rate.
    pub dataset_texts: usize,
    pub dataset_seconds: f64,
}

/// One row of the latency table.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub tier: &'static str,
    pub queries: usize,
    pub median_us: f64,
    pub p99_us: f64,
}

/// The whole `--json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Latency>,
    /// Encoder tier over fast tier, median single-message latency.
    pub latency_ratio: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(a: EncoderBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.texts > 0 && a.repeats > 0 && a.queries > 0,
        "--texts, --repeats and --queries must be at least 1"
    );
    let data = crate::demo::data_dir(a.data_dir.as_deref());
    let read = |rel: &str| {
        let p = data.join(rel);
        std::fs::read_to_string(&p).with_context(|| format!("reading {} (set --data-dir)", p.display()))
    };
    let clinc = parse_clinc150(&read("clinc150/data_full.json")?).context("parsing CLINC150")?;
    let labels = parse_emotion_labels(&read("goemotions/ekman/labels.txt")?)?;
    let go = parse_goemotions(&read("goemotions/ekman/train.tsv")?, &labels).examples;
    let clinc_all = clinc.train.len() + clinc.val.len() + clinc.test.len();
    // GoEmotions' three splits: train is 80% of the 54,263 comments.
    let go_all = go.len() * 5 / 4;
    let encoder = Encoder::load(&default_dir())?;

    let clinc_texts: Vec<&str> = clinc.test.iter().map(|e| e.text.as_str()).cycle().take(a.texts).collect();
    let go_texts: Vec<&str> = go.iter().map(|e| e.text.as_str()).cycle().take(a.texts).collect();
    let mut throughput = Vec::new();
    for (dataset, texts, all) in [("clinc150", &clinc_texts, clinc_all), ("goemotions", &go_texts, go_all)] {
        for threads in [1, 2] {
            let mut rates: Vec<f64> = (0..a.repeats)
                .map(|_| {
                    let t = Instant::now();
                    let out = encoder.embed_parallel(texts, threads, &|_| {});
                    out.len() as f64 / t.elapsed().as_secs_f64()
                })
                .collect();
            rates.sort_by(f64::total_cmp);
            let median = quantile(&rates, 0.5);
            throughput.push(Throughput {
                dataset,
                threads,
                texts: texts.len(),
                texts_per_s_median: median,
                texts_per_s_min: rates[0],
                texts_per_s_max: rates[rates.len() - 1],
                dataset_texts: all,
                dataset_seconds: all as f64 / median,
            });
        }
    }

    let mut names: Vec<String> = clinc.train.iter().map(|e| e.label.clone()).collect();
    names.sort();
    names.dedup();
    let fast = IntentModel::zeroed(IntentSpec::new(names.clone(), FeatureConfig::default())?);
    let tier = IntentModel::zeroed(IntentSpec::encoder_tier(names)?);
    let queries: Vec<&str> = clinc.test.iter().map(|e| e.text.as_str()).cycle().take(a.queries).collect();
    let time = |f: &dyn Fn(&str)| -> Vec<f64> {
        let mut us: Vec<f64> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                f(q);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        us.sort_by(f64::total_cmp);
        us
    };
    let fast_us = time(&|q| {
        std::hint::black_box(fast.predict(q, 3));
    });
    let tier_us = time(&|q| {
        let e = encoder.embed_one(q);
        std::hint::black_box(tier.predict_embedded(q, Some(&e), 3).ok());
    });
    let latency = vec![
        Latency {
            tier: "fast",
            queries: a.queries,
            median_us: quantile(&fast_us, 0.5),
            p99_us: quantile(&fast_us, 0.99),
        },
        Latency {
            tier: "encoder",
            queries: a.queries,
            median_us: quantile(&tier_us, 0.5),
            p99_us: quantile(&tier_us, 0.99),
        },
    ];
    let report = Report { latency_ratio: latency[1].median_us / latency[0].median_us, throughput, latency };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("embedding throughput (median of {} repeats, range in brackets)", a.repeats);
    println!("{:<11} {:>7} {:>6} {:>24} {:>16}", "dataset", "threads", "texts", "texts/s", "whole dataset");
    for r in &report.throughput {
        println!(
            "{:<11} {:>7} {:>6} {:>9.0} [{:>5.0}, {:>5.0}] {:>8} in {:>4.0} s",
            r.dataset,
            r.threads,
            r.texts,
            r.texts_per_s_median,
            r.texts_per_s_min,
            r.texts_per_s_max,
            r.dataset_texts,
            r.dataset_seconds
        );
    }
    println!();
    println!("one query, classified (CLINC150 test queries)");
    println!("{:<8} {:>8} {:>12} {:>12}", "tier", "queries", "median µs", "p99 µs");
    for l in &report.latency {
        println!("{:<8} {:>8} {:>12.1} {:>12.1}", l.tier, l.queries, l.median_us, l.p99_us);
    }
    println!("encoder / fast, median: {:.0}x", report.latency_ratio);
    Ok(())
}
