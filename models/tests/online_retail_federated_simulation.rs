//! In-process federated collaborative filtering on Online Retail: institutions are countries (United
//! Kingdom, Germany, France, Belgium, the rest grouped), each customer's last new item is held out, the
//! family's default recipe ([`ModelSpec::defaults`]). The federated model must reach at least 90% of the
//! centralized model's HR@10 (the same factorisation trained by ALS on the pooled data) and beat the
//! most-popular baseline. Also printed: the same gradient training on pooled data, and each
//! institution's own popular items (what a cold start gets). Knobs for tuning runs: FACTORS, ALPHA,
//! USER_L2, SEED, EPOCHS, LR, BATCH, L2, ROUNDS, BETA, SLR, ALS_ITERS, and TRACE=1 for per-round HR@10.

use std::time::Instant;

use hearth_models::recommend::data::{catalogue, clean, encode, parse_transactions};
use hearth_models::recommend::{
    self, evaluate_popular, evaluate_ranking, leave_last_out, partition_by_country,
};
use hearth_models::*;

mod common;
use common::{env, fedavgm, read_data};

const K: usize = 10;

#[test]
fn federated_recommender_comes_within_ten_percent_of_centralized_and_beats_popular() {
    let report = parse_transactions(&read_data("online-retail/transactions.csv")).unwrap();
    assert!(report.errors.is_empty(), "{:?}", &report.errors[..report.errors.len().min(5)]);
    let (purchases, cleaning) = clean(&report.examples);
    let d = RecommendSpec::with_defaults(catalogue(&purchases)).unwrap();
    let spec = RecommendSpec::new(
        d.items.clone(),
        env("FACTORS", d.factors),
        env("ALPHA", d.alpha),
        env("USER_L2", d.user_l2),
        env("SEED", d.seed),
    )
    .unwrap();
    let split = leave_last_out(&purchases);
    let institutions = partition_by_country(&split.train, 5).unwrap();
    let defaults = ModelSpec::Recommend(spec.clone()).defaults();
    let base = defaults.train;
    let tp = TrainParams {
        local_epochs: env("EPOCHS", base.local_epochs),
        learning_rate: env("LR", base.learning_rate),
        batch_size: env("BATCH", base.batch_size),
        l2: env("L2", base.l2),
        seed: 42,
    };
    let rounds: u64 = env("ROUNDS", defaults.rounds);
    let momentum: f64 = env("BETA", f64::from(defaults.server_momentum));
    let server_lr: f64 = env("SLR", f64::from(defaults.server_learning_rate));
    eprintln!("Online Retail: {cleaning:?}");
    eprintln!(
        " {} items, {} test customers, {tp:?}, rounds {rounds}, server lr {server_lr} momentum {momentum}, factors {} alpha {} user_l2 {}",
        spec.items.len(),
        split.test.len(),
        spec.factors,
        spec.alpha,
        spec.user_l2
    );
    for i in &institutions {
        eprintln!("  {:<16} {:>5} customers {:>6} purchases", i.name, i.customers(), i.purchases.len());
    }
    let pooled = encode(&spec, &split.train);

    let t = Instant::now();
    let shards: Vec<_> = institutions.iter().map(|i| encode(&spec, &i.purchases)).collect();
    let global = fedavgm(
        vec![0.0; spec.num_params()],
        &shards,
        rounds,
        server_lr,
        momentum,
        |p, d, r, i| {
            let p2 = TrainParams { seed: tp.seed ^ (r * 31 + i as u64), ..tp.clone() };
            recommend::train_local(&spec, p, d, &p2).unwrap().examples
        },
        |r, g| {
            if env("TRACE", 0) == 1 {
                let m = RecommendModel::from_params(spec.clone(), g.to_vec()).unwrap();
                let e = evaluate_ranking(&m, &pooled, &split.test, K);
                eprintln!("  round {r}: HR@10 {:.4} NDCG@10 {:.4}", e.hit_rate, e.ndcg);
            }
        },
    );
    let fed_secs = t.elapsed().as_secs_f64();
    let fed = RecommendModel::from_params(spec.clone(), global).unwrap();
    let fm = evaluate_ranking(&fed, &pooled, &split.test, K);

    let t = Instant::now();
    let mut params = vec![0.0f32; spec.num_params()];
    let als = TrainParams { local_epochs: env("ALS_ITERS", 10), ..tp.clone() };
    recommend::train_als(&spec, &mut params, &pooled, &als).unwrap();
    let central_secs = t.elapsed().as_secs_f64();
    let cm = evaluate_ranking(
        &RecommendModel::from_params(spec.clone(), params).unwrap(),
        &pooled,
        &split.test,
        K,
    );

    let t = Instant::now();
    let mut params = vec![0.0f32; spec.num_params()];
    let gd = TrainParams { local_epochs: tp.local_epochs * rounds as u32, ..tp.clone() };
    recommend::train_local(&spec, &mut params, &pooled, &gd).unwrap();
    let gd_secs = t.elapsed().as_secs_f64();
    let gm = evaluate_ranking(
        &RecommendModel::from_params(spec.clone(), params).unwrap(),
        &pooled,
        &split.test,
        K,
    );

    let pm = evaluate_popular(&spec, &pooled, &pooled, &split.test, K);
    // What a cold start gets: each institution's own popular items, for its own customers.
    let (mut hits, mut gain, mut n) = (0.0, 0.0, 0usize);
    for shard in &shards {
        let mine: Vec<_> = split
            .test
            .iter()
            .filter(|h| shard.customers().binary_search(&h.customer).is_ok())
            .cloned()
            .collect();
        let m = evaluate_popular(&spec, shard, shard, &mine, K);
        hits += m.hit_rate * m.customers as f64;
        gain += m.ndcg * m.customers as f64;
        n += m.customers;
    }
    let n = n.max(1) as f64;
    eprintln!(" federated        HR@10 {:.4} NDCG@10 {:.4} ({fed_secs:.1}s)", fm.hit_rate, fm.ndcg);
    eprintln!(" centralized ALS  HR@10 {:.4} NDCG@10 {:.4} ({central_secs:.1}s)", cm.hit_rate, cm.ndcg);
    eprintln!(" centralized GD   HR@10 {:.4} NDCG@10 {:.4} ({gd_secs:.1}s)", gm.hit_rate, gm.ndcg);
    eprintln!(" most popular     HR@10 {:.4} NDCG@10 {:.4} (over all institutions)", pm.hit_rate, pm.ndcg);
    eprintln!(" popular at home  HR@10 {:.4} NDCG@10 {:.4} (each institution's own)", hits / n, gain / n);
    assert!(fm.hit_rate >= 0.9 * cm.hit_rate, "federated {} vs centralized {}", fm.hit_rate, cm.hit_rate);
    assert!(fm.hit_rate > pm.hit_rate, "federated {} vs most popular {}", fm.hit_rate, pm.hit_rate);
    assert!(fm.hit_rate > hits / n, "federated {} vs popular at home {}", fm.hit_rate, hits / n);
}
