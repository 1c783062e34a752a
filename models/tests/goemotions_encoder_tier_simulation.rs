//! The emotion family's encoder tier on GoEmotions (Ekman mapping), in process: every text embedded by
//! the Rust encoder (cached under the temporary directory, see `common::embed_cached`), then federated
//! averaging over 5 institutions (Dirichlet 0.5 over each text's primary label) of the one-vs-rest head
//! over the hashed n-grams and the sentence embedding, beside the same model trained centrally.
//!
//! By default a slice (the first texts of each split), small enough for every test run: on it the
//! encoder tier, federated with its defaults, must beat the fast tier (n-grams alone, its own defaults)
//! on the same split by [`SLICE_MARGIN`] of dev macro-F1, and on test too.
//!
//! `FULL=1` runs all of GoEmotions with the defaults of `hearth_models::emotion::encoder_tier` and
//! asserts the bars: test macro-F1 at least [`MACRO_F1_BAR`] federated and centrally, the anger
//! escalation threshold (chosen on dev for recall [`TARGET_ANGER_RECALL`]) reaching that recall on test
//! at precision at least [`ANGER_PRECISION_BAR`], and federated within [`FEDERATED_GAP`] of centralized.
//! It does not yet: with the defaults chosen on dev, the one run on test (split seed 42) gave macro-F1
//! 0.574 federated and 0.591 centrally, anger precision 0.382 and 0.376 at recall 0.731 and 0.756.
//!
//! `GRID=1` (with or without `FULL`) sweeps the embedding's weight, the local learning rate, the server
//! momentum and the local epochs on dev only, federated, and never reads test (how the defaults were
//! chosen); the values swept are lists in `WEIGHTS`, `LRS`, `MOMENTA`, `EPOCHS` (comma-separated), and
//! `CENTRAL=1` adds the centrally trained model's dev figures to each line. Other knobs override the
//! defaults: ROUNDS, SLR, BATCH, L2, DIM (in the grid too), WEIGHT, LR, BETA, LOCAL_EPOCHS; and
//! SPLIT_SEED, TAIL=k (the mean of the last k rounds' global models instead of the last, exploratory),
//! TRACE=1 for per-round dev macro-F1. Needs the encoder installed (`hearth model fetch-encoder`).

use std::time::Instant;

use hearth_models::emotion::{
    self, calibrate_escalation, calibrate_thresholds, encoder_tier, evaluate_emotion, EmotionMetrics,
};
use hearth_models::*;

mod common;
use common::{embed_cached, env, fedavgm, read_data};

/// The anger recall the escalation policy asks for.
const TARGET_ANGER_RECALL: f32 = 0.7;
/// Test macro-F1 the full run must reach, federated and centrally.
const MACRO_F1_BAR: f64 = 0.60;
/// Anger escalation precision on test the full run must reach (at the recall target).
const ANGER_PRECISION_BAR: f64 = 0.40;
/// Largest federated-to-centralized macro-F1 gap on test in the full run.
const FEDERATED_GAP: f64 = 0.01;
/// How much the encoder tier must beat the fast tier by on the slice.
const SLICE_MARGIN: f64 = 0.03;
/// The slice: this many texts from the start of train, and of dev and test each.
const SLICE_TRAIN: usize = 600;
const SLICE_EVAL: usize = 300;

struct Data {
    labels: Vec<String>,
    train: Vec<EmotionExample>,
    dev: Vec<EmotionExample>,
    test: Vec<EmotionExample>,
}

fn load(split: &str, labels: &[String], keep: usize) -> Vec<EmotionExample> {
    let r = emotion::parse_goemotions(&read_data(&format!("goemotions/ekman/{split}.tsv")), labels);
    assert!(r.errors.is_empty(), "{split}: {:?}", &r.errors[..r.errors.len().min(5)]);
    let mut v = r.examples;
    v.truncate(keep);
    v
}

/// Attaches every text's embedding, from the cache when the same texts were embedded before.
fn attach(set: &mut [EmotionExample], key: &str) {
    let texts: Vec<&str> = set.iter().map(|e| e.text.as_str()).collect();
    let rows = embed_cached(key, &texts);
    for (e, row) in set.iter_mut().zip(rows) {
        e.embedding = Some(row);
    }
}

fn data(full: bool) -> Data {
    let labels = emotion::parse_emotion_labels(&read_data("goemotions/ekman/labels.txt")).unwrap();
    let (n_train, n_eval) = if full { (usize::MAX, usize::MAX) } else { (SLICE_TRAIN, SLICE_EVAL) };
    let mut d = Data {
        train: load("train", &labels, n_train),
        dev: load("dev", &labels, n_eval),
        test: load("test", &labels, n_eval),
        labels,
    };
    let which = if full { "full" } else { "slice" };
    attach(&mut d.train, &format!("goemotions-ekman-train-{which}"));
    attach(&mut d.dev, &format!("goemotions-ekman-dev-{which}"));
    attach(&mut d.test, &format!("goemotions-ekman-test-{which}"));
    d
}

/// How a model is trained: the spec's features plus the optimiser's settings.
#[derive(Debug, Clone)]
struct Setting {
    spec: EmotionSpec,
    train: TrainParams,
    rounds: u64,
    server_lr: f64,
    momentum: f64,
}

impl Setting {
    /// The family's defaults for `spec` ([`ModelSpec::defaults`]), with the environment's overrides.
    fn defaults(spec: EmotionSpec) -> Self {
        let d = ModelSpec::Emotion(spec.clone()).defaults();
        let train = TrainParams {
            local_epochs: env("LOCAL_EPOCHS", d.train.local_epochs),
            learning_rate: env("LR", d.train.learning_rate),
            batch_size: env("BATCH", d.train.batch_size),
            l2: env("L2", d.train.l2),
            ..d.train
        };
        Setting {
            spec,
            train,
            rounds: env("ROUNDS", d.rounds),
            server_lr: env("SLR", f64::from(d.server_learning_rate)),
            momentum: env("BETA", f64::from(d.server_momentum)),
        }
    }

    fn describe(&self) -> String {
        let w = self.spec.features.encoder.as_ref().map_or("none".to_string(), |e| e.weight.to_string());
        format!(
            "weight {w} lr {} epochs {} momentum {} server lr {} batch {} l2 {} dim {} rounds {}",
            self.train.learning_rate,
            self.train.local_epochs,
            self.momentum,
            self.server_lr,
            self.train.batch_size,
            self.train.l2,
            self.spec.features.dim,
            self.rounds
        )
    }
}

fn encoder_spec(labels: &[String], weight: f32) -> EmotionSpec {
    let mut spec = EmotionSpec::encoder_tier(labels.to_vec()).unwrap();
    if let Some(e) = spec.features.encoder.as_mut() {
        e.weight = weight;
    }
    spec.features.dim = env("DIM", spec.features.dim);
    spec
}

/// Thresholds and the anger escalation calibrated on dev.
fn calibrated(spec: &EmotionSpec, params: Vec<f32>, dev: &[EmotionExample]) -> EmotionModel {
    let mut m = EmotionModel::from_params(spec.clone(), params).unwrap();
    calibrate_thresholds(&mut m, dev).unwrap();
    calibrate_escalation(&mut m, dev, emotion::ANGER, TARGET_ANGER_RECALL).unwrap();
    m
}

/// Federated averaging over 5 institutions with `s`; the model calibrated on dev.
fn federated(s: &Setting, d: &Data) -> EmotionModel {
    let shards = dirichlet_split_by(&d.train, |e| e.primary_label(), 5, 0.5, env("SPLIT_SEED", 42)).unwrap();
    let encoded: Vec<_> = shards.iter().map(|sh| emotion::encode(&s.spec, sh).unwrap()).collect();
    // TAIL=k (exploratory, not what the coordinator does): the model is the mean of the last k rounds'
    // global models instead of the last one.
    let tail: u64 = env("TAIL", 1u64).clamp(1, s.rounds.max(1));
    let mut tail_sum = vec![0.0f64; s.spec.num_params()];
    let global = fedavgm(
        vec![0.0; s.spec.num_params()],
        &encoded,
        s.rounds,
        s.server_lr,
        s.momentum,
        |p, data, r, i| {
            let tp = TrainParams { seed: s.train.seed ^ (r * 31 + i as u64), ..s.train.clone() };
            emotion::train_local(&s.spec, p, data, &tp).unwrap().examples
        },
        |r, g| {
            if r + tail >= s.rounds {
                tail_sum.iter_mut().zip(g).for_each(|(t, x)| *t += f64::from(*x));
            }
            if env("TRACE", 0u8) == 1 {
                let m = calibrated(&s.spec, g.to_vec(), &d.dev);
                let e = evaluate_emotion(&m, &d.dev).unwrap();
                eprintln!("round {r}: dev macro-F1 {:.4}", e.macro_f1);
            }
        },
    );
    if tail > 1 {
        let mean = tail_sum.iter().map(|t| (t / tail as f64) as f32).collect();
        return calibrated(&s.spec, mean, &d.dev);
    }
    calibrated(&s.spec, global, &d.dev)
}

/// The same model trained centrally on the pooled data: as many epochs as the federation ran rounds
/// times local epochs, at the local learning rate (as `goemotions_federated_simulation.rs` compares).
fn central(s: &Setting, d: &Data) -> EmotionModel {
    let pooled = emotion::encode(&s.spec, &d.train).unwrap();
    let mut params = vec![0.0f32; s.spec.num_params()];
    let tp = TrainParams { local_epochs: s.train.local_epochs * s.rounds as u32, ..s.train.clone() };
    emotion::train_local(&s.spec, &mut params, &pooled, &tp).unwrap();
    calibrated(&s.spec, params, &d.dev)
}

fn summary(m: &EmotionMetrics) -> String {
    let esc = m.escalation.as_ref().expect("escalation calibrated");
    let per: Vec<String> = m.per_class.iter().map(|c| format!("{} {:.3}", c.label, c.f1)).collect();
    format!(
        "macro-F1 {:.4}  anger P {:.4} R {:.4} (escalate at {:.4})  [{}]",
        m.macro_f1,
        esc.score.precision,
        esc.score.recall,
        esc.threshold,
        per.join(", ")
    )
}

/// A comma-separated list from the environment, or `default`.
fn list<T: std::str::FromStr + Clone>(k: &str, default: &[T]) -> Vec<T> {
    match std::env::var(k) {
        Ok(v) => v.split(',').map(|x| x.trim().parse().ok().unwrap_or_else(|| panic!("{k}: {x}"))).collect(),
        Err(_) => default.to_vec(),
    }
}

/// The dev-only sweep.
fn grid(d: &Data) {
    for weight in list("WEIGHTS", &[1.0f32, 2.0, 3.0, 5.0]) {
        for lr in list("LRS", &[1.0f32, 2.0, 4.0]) {
            for momentum in list("MOMENTA", &[0.0f64, 0.5, 0.8]) {
                for epochs in list("EPOCHS", &[1u32, 2]) {
                    let mut s = Setting::defaults(encoder_spec(&d.labels, weight));
                    s.train.learning_rate = lr;
                    s.train.local_epochs = epochs;
                    s.momentum = momentum;
                    let t = Instant::now();
                    let fed = evaluate_emotion(&federated(&s, d), &d.dev).unwrap();
                    let mut line = format!("GRID {} | fed dev {}", s.describe(), summary(&fed));
                    if env("CENTRAL", 0u8) == 1 {
                        let c = evaluate_emotion(&central(&s, d), &d.dev).unwrap();
                        line += &format!(" | central dev {}", summary(&c));
                    }
                    eprintln!("{line} ({:.0} s)", t.elapsed().as_secs_f64());
                }
            }
        }
    }
}

#[test]
fn the_encoder_tier_beats_the_fast_tier_and_meets_the_bars_in_full() {
    let started = Instant::now();
    let full = env("FULL", 0u8) == 1;
    let d = data(full);
    eprintln!(
        "GoEmotions Ekman {}: {} train, {} dev, {} test texts, embeddings ready after {:.1} s",
        if full { "full" } else { "slice" },
        d.train.len(),
        d.dev.len(),
        d.test.len(),
        started.elapsed().as_secs_f64()
    );
    if env("GRID", 0u8) == 1 {
        grid(&d);
        return;
    }
    let weight = env("WEIGHT", encoder_tier::WEIGHT);
    let tier = Setting::defaults(encoder_spec(&d.labels, weight));
    eprintln!("encoder tier: {}", tier.describe());
    let t = Instant::now();
    let fed = federated(&tier, &d);
    let (fed_dev, fed_test) =
        (evaluate_emotion(&fed, &d.dev).unwrap(), evaluate_emotion(&fed, &d.test).unwrap());
    eprintln!(" federated   dev  {}", summary(&fed_dev));
    eprintln!(" federated   test {}  ({:.1} s)", summary(&fed_test), t.elapsed().as_secs_f64());

    if !full {
        let fast_spec = EmotionSpec::new(d.labels.clone(), FeatureConfig::default()).unwrap();
        let fast = federated(&Setting::defaults(fast_spec), &d);
        let (fast_dev, fast_test) =
            (evaluate_emotion(&fast, &d.dev).unwrap(), evaluate_emotion(&fast, &d.test).unwrap());
        eprintln!(" fast tier   dev  {}", summary(&fast_dev));
        eprintln!(" fast tier   test {}", summary(&fast_test));
        eprintln!("slice run took {:.1} s", started.elapsed().as_secs_f64());
        for (split, tier, fast) in
            [("dev", fed_dev.macro_f1, fast_dev.macro_f1), ("test", fed_test.macro_f1, fast_test.macro_f1)]
        {
            assert!(
                tier >= fast + SLICE_MARGIN,
                "{split}: encoder tier macro-F1 {tier:.4} vs fast tier {fast:.4} on the slice"
            );
        }
        return;
    }

    let t = Instant::now();
    let cen = central(&tier, &d);
    let (cen_dev, cen_test) =
        (evaluate_emotion(&cen, &d.dev).unwrap(), evaluate_emotion(&cen, &d.test).unwrap());
    eprintln!(" centralized dev  {}", summary(&cen_dev));
    eprintln!(" centralized test {}  ({:.1} s)", summary(&cen_test), t.elapsed().as_secs_f64());

    let mut failures = Vec::new();
    for (name, m) in [("federated", &fed_test), ("centralized", &cen_test)] {
        if m.macro_f1 < MACRO_F1_BAR {
            failures.push(format!("{name} test macro-F1 {:.4} < {MACRO_F1_BAR}", m.macro_f1));
        }
        let esc = &m.escalation.as_ref().expect("escalation calibrated").score;
        if esc.recall < f64::from(TARGET_ANGER_RECALL) {
            failures.push(format!("{name} anger recall {:.4} < {TARGET_ANGER_RECALL}", esc.recall));
        }
        if esc.precision < ANGER_PRECISION_BAR {
            failures.push(format!("{name} anger precision {:.4} < {ANGER_PRECISION_BAR}", esc.precision));
        }
    }
    let gap = cen_test.macro_f1 - fed_test.macro_f1;
    if gap > FEDERATED_GAP {
        failures.push(format!("federated trails centralized by {gap:.4} > {FEDERATED_GAP}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
}
