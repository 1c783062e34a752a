//! The encoder tier on CLINC150, in process: the texts embedded once by the Rust encoder, then
//! federated averaging over 5 institutions (Dirichlet 0.5) of a softmax head over the hashed n-grams and
//! the sentence embedding, beside the fast tier (n-grams alone) on the same split.
//!
//! By default a slice (the first 30 intents and every out-of-scope query), small enough for every test
//! run; the encoder tier must beat the fast tier on validation accuracy. `FULL=1` runs all of CLINC150;
//! `GRID=1` sweeps the embedding's weight, the learning rate and the server momentum on the validation
//! split (how `hearth_models::intent::encoder_tier` was chosen); `CASCADE=1` prints, per confidence
//! threshold, the cascade's validation figures and the share of queries the fast tier's model answered
//! alone (how `hearth_models::cascade::CASCADE_CONFIDENCE` was chosen); `FINAL=1` also prints the test split's figures
//! (report them once). Needs the encoder installed (`hearth model fetch-encoder`).

use hearth_models::intent::encoder_tier;
use hearth_models::*;

mod common;
use common::{embed_clinc, env, fedavgm, read_data};

struct Run {
    val: Metrics,
    test: Metrics,
    model: IntentModel,
}

/// Federated training of `spec` at `lr` and server `momentum`, threshold chosen on validation.
fn federated(spec: &IntentSpec, d: &Clinc150, lr: f32, server_lr: f64, momentum: f64) -> Run {
    let split = dirichlet_split(&d.train, 5, 0.5, 42).unwrap();
    let shards: Vec<EncodedSet> = split.shards.iter().map(|s| encode(spec, s).unwrap()).collect();
    let tp = TrainParams { learning_rate: lr, ..TrainParams::default() };
    let global = fedavgm(
        vec![0.0; spec.num_params()],
        &shards,
        env("ROUNDS", DEFAULT_ROUNDS),
        server_lr,
        momentum,
        |params, shard, r, i| {
            let p = TrainParams { seed: tp.seed ^ (r * 31 + i as u64), ..tp.clone() };
            train_local(spec, params, shard, &p).unwrap().examples
        },
        |_, _| {},
    );
    let mut model = IntentModel::from_params(spec.clone(), global).unwrap();
    model.oos_threshold = Some(choose_oos_threshold(&model, &d.val));
    Run { val: evaluate(&model, &d.val), test: evaluate(&model, &d.test), model }
}

fn slice(d: Clinc150, intents: usize) -> Clinc150 {
    let mut labels: Vec<String> =
        d.train.iter().map(|e| e.label.clone()).filter(|l| l != OOS_LABEL).collect();
    labels.sort();
    labels.dedup();
    labels.truncate(intents);
    let keep = |v: Vec<Example>| -> Vec<Example> {
        v.into_iter().filter(|e| e.label == OOS_LABEL || labels.contains(&e.label)).collect()
    };
    Clinc150 { train: keep(d.train), val: keep(d.val), test: keep(d.test) }
}

fn line(name: &str, r: &Run) -> String {
    let v = &r.val;
    format!(
        "{name}: val accuracy {:.4} in-scope {:.4} oos recall {:.4}",
        v.accuracy, v.in_scope_accuracy, v.oos_recall
    )
}

#[test]
fn the_encoder_tier_beats_the_fast_tier_federated() {
    let mut d = parse_clinc150(&read_data("clinc150/data_full.json")).unwrap();
    if env("FULL", 0u8) == 0 {
        d = slice(d, 30);
    }
    let started = std::time::Instant::now();
    embed_clinc(&mut d);
    eprintln!(
        "embedded {} texts in {:.1} s",
        d.train.len() + d.val.len() + d.test.len(),
        started.elapsed().as_secs_f64()
    );
    let mut labels: Vec<String> = d.train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();

    let fast_spec = IntentSpec::new(labels.clone(), FeatureConfig::default()).unwrap();
    let fast = {
        let f = ModelSpec::Intent(fast_spec.clone()).defaults();
        federated(
            &fast_spec,
            &d,
            f.train.learning_rate,
            f64::from(f.server_learning_rate),
            f64::from(f.server_momentum),
        )
    };
    eprintln!("{}", line("fast tier", &fast));
    let spec = IntentSpec::encoder_tier(labels.clone()).unwrap();
    let tier =
        federated(&spec, &d, encoder_tier::LEARNING_RATE, 1.0, f64::from(encoder_tier::SERVER_MOMENTUM));
    eprintln!("{}", line("encoder tier", &tier));
    if env("CASCADE", 0u8) == 1 {
        // The cascade at each confidence threshold, on validation: its figures beside the encoder tier's
        // alone, and the share of queries the fast tier's model answered alone.
        let e = &tier.val;
        eprintln!(
            "encoder tier alone: val accuracy {:.4} in-scope {:.4} oos recall {:.4}",
            e.accuracy, e.in_scope_accuracy, e.oos_recall
        );
        for t in [0.5f32, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98] {
            let c = cascade::Cascade::new(&fast.model, &tier.model, t).unwrap();
            let m = cascade::evaluate_cascade(&c, &d.val).unwrap();
            let v = &m.metrics;
            eprintln!(
                "cascade at {t}: val accuracy {:.4} in-scope {:.4} oos recall {:.4}, {:.3} answered by the fast tier",
                v.accuracy, v.in_scope_accuracy, v.oos_recall, m.answered_by_fast
            );
        }
    }
    if env("GRID", 0u8) == 1 {
        for weight in [1.0f32, 2.0, 3.0, 5.0] {
            for lr in [1.0f32, 2.0, 4.0] {
                for momentum in [0.0, 0.5, 0.9] {
                    let mut features = spec.features.clone();
                    features.encoder.as_mut().unwrap().weight = weight;
                    let s = IntentSpec::new(labels.clone(), features).unwrap();
                    let r = federated(&s, &d, lr, 1.0, momentum);
                    eprintln!("{}", line(&format!("weight {weight} lr {lr} momentum {momentum}"), &r));
                }
            }
        }
    }
    if env("FINAL", 0u8) == 1 {
        for (name, r) in [("fast tier", &fast), ("encoder tier", &tier)] {
            let t = &r.test;
            eprintln!(
                "{name}: TEST accuracy {:.4} in-scope {:.4} oos recall {:.4} macro-F1 {:.4}",
                t.accuracy, t.in_scope_accuracy, t.oos_recall, t.macro_f1
            );
        }
    }
    assert!(
        tier.val.accuracy >= fast.val.accuracy + 0.02,
        "encoder tier {} vs fast tier {} on validation",
        tier.val.accuracy,
        fast.val.accuracy
    );
}
