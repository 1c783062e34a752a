//! The recommender on Online Retail, in process. Every scoring choice is made on a validation split
//! carved from the training data (each training customer's last new item held out again); the test
//! split is scored once, at the end. Institutions are countries (United Kingdom, Germany, France,
//! Belgium, the rest grouped). Checks: the tuned defaults ([`Scoring::default`]) are the validation
//! grid's best (within 0.002 HR@10), the federated statistics equal the pooled ones, and on the test
//! split the model beats recent popularity by at least 15% in HR@10. GRID=0 skips the grid.

use std::collections::BTreeMap;
use std::time::Instant;

use hearth_models::recommend::data::{clean, descriptions, encode, parse_transactions, spec_for};
use hearth_models::recommend::{
    self, evaluate, leave_last_out, partition_by_country, HeldOut, Interactions, Scoring,
};
use hearth_models::*;

mod common;
use common::{env, fedavgm, read_data};

const K: usize = 10;

fn hr(m: &RecommendModel, s: &Scoring, train: &Interactions, test: &[HeldOut]) -> f64 {
    evaluate(m, s, train, test, K).metrics().hit_rate
}

#[test]
fn scoring_chosen_on_validation_beats_recent_popularity_and_federation_changes_nothing() {
    let report = parse_transactions(&read_data("online-retail/transactions.csv")).unwrap();
    assert!(report.errors.is_empty(), "{:?}", &report.errors[..report.errors.len().min(5)]);
    let (purchases, _) = clean(&report.examples);
    let names: BTreeMap<String, String> = descriptions(&report.examples);
    let split = leave_last_out(&purchases);

    // Validation: the training data split again; its own window and statistics.
    let val = leave_last_out(&split.train);
    let vspec = spec_for(&split.train, &names).unwrap();
    let vtrain = encode(&vspec, &val.train);
    let vmodel = RecommendModel::counted(vspec.clone(), &vtrain).unwrap();
    let d = Scoring::default();
    let default_hr = hr(&vmodel, &d, &vtrain, &val.test);
    let recent_hr = hr(&vmodel, &Scoring::popular_recent(60), &vtrain, &val.test);
    eprintln!(
        "validation: {} customers; default scoring HR@10 {default_hr:.4}, popular in the last 60 days {recent_hr:.4}",
        val.test.len()
    );
    if env("GRID", 1) == 1 {
        let t = Instant::now();
        let mut best = (0.0, d);
        for recent_days in [30, 60, 90] {
            for half_life_days in [3.0, 30.0, 365.0] {
                for content in [0.0, 0.5, 1.0, 2.0] {
                    for cooccurrence in [0.0, 0.3, 1.0] {
                        let s =
                            Scoring { recent_days, half_life_days, popularity: 1.0, content, cooccurrence };
                        let h = hr(&vmodel, &s, &vtrain, &val.test);
                        eprintln!("  {recent_days:>3} days, half-life {half_life_days:>5}, content {content:>3}, co-purchases {cooccurrence:>3}: {h:.4}");
                        if h > best.0 {
                            best = (h, s);
                        }
                    }
                }
            }
        }
        eprintln!("grid best {:.4} at {:?} ({:.0}s)", best.0, best.1, t.elapsed().as_secs_f64());
        assert!(default_hr >= best.0 - 0.002, "defaults {default_hr} vs the grid's best {best:?}");
    }

    // Test, once: federated over five institutions against the same counting on pooled data.
    let spec = spec_for(&purchases, &names).unwrap();
    let spec = RecommendSpec::new(spec.items, spec.names, spec.first_day, spec.days, d).unwrap();
    let pooled = encode(&spec, &split.train);
    let institutions = partition_by_country(&split.train, 5).unwrap();
    let shards: Vec<_> = institutions.iter().map(|i| encode(&spec, &i.purchases)).collect();
    let defaults = ModelSpec::Recommend(spec.clone()).defaults();
    let global = fedavgm(
        vec![0.0; spec.num_params()],
        &shards,
        defaults.rounds,
        f64::from(defaults.server_learning_rate),
        f64::from(defaults.server_momentum),
        |p, d, _, _| recommend::train_local(&spec, p, d, &defaults.train).unwrap().examples,
        |_, _| {},
    );
    let central = RecommendModel::counted(spec.clone(), &pooled).unwrap();
    let worst = global.iter().zip(&central.params).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "federated statistics differ from pooled ones by {worst}");
    let fed = RecommendModel::from_params(spec.clone(), global).unwrap();
    let fm = hr(&fed, &d, &pooled, &split.test);
    let cm = hr(&central, &d, &pooled, &split.test);
    let recent = hr(&central, &Scoring::popular_recent(60), &pooled, &split.test);
    let popular = hr(&central, &Scoring::popular(&spec), &pooled, &split.test);
    let i2i = hr(&central, &Scoring::item_to_item(&spec), &pooled, &split.test);
    let sliced = recommend::evaluate_time_sliced(&central, &d, &pooled, &split.test, K).metrics().hit_rate;
    eprintln!("test: {} customers", split.test.len());
    eprintln!(" federated             HR@10 {fm:.4}");
    eprintln!(" centralized           HR@10 {cm:.4}");
    eprintln!(" co-purchases before   HR@10 {sliced:.4} (pairs counted only before each customer's day)");
    eprintln!(" popular (before date) HR@10 {popular:.4}");
    eprintln!(" popular, last 60 days HR@10 {recent:.4}");
    eprintln!(" item-to-item          HR@10 {i2i:.4}");
    assert!(fm >= 1.15 * recent, "federated {fm} vs recent popularity {recent}");
    assert!(sliced >= 1.15 * recent, "without later co-purchases {sliced} vs recent popularity {recent}");
}
