//! Differentially private federated training on the real CLINC150 data, through the production noise
//! path: 5 institutions (Dirichlet 0.5, seed 42), record-level epsilon 8 at delta 1e-5, every round one
//! DP-SGD step. Each institution computes its clipped-gradient sum, quantises it with the
//! secure-aggregation quantiser (`hearth_secagg::Quantizer`, 32-bit ring) and adds its exact
//! discrete Gaussian share; the shares are summed modulo 2^32 (what unmasking a secure-aggregation round
//! yields: the masks cancel exactly, so they are left out here and tested in `hearth_secagg`), decoded,
//! and the coordinator's `DpServer` takes the step. The epsilon is the one the budget ledger charges for
//! this job (`DpConfig::training_plan`).
//!
//! The shares come from the production sampler keyed by a seed (`add_share_seeded`, feature
//! `seeded-noise`) rather than from the operating system, and the quantiser's rounding from a seeded
//! generator, so that a run replays: the test accuracy of a DP model varies from one noise draw to the
//! next (mostly through the out-of-scope threshold chosen on the validation set), so an unseeded test
//! would fail now and then whatever the code does. Measured over the noise seeds 42 and 1 to 9 with this
//! configuration: accuracy 0.798 on average, standard deviation 0.013, lowest 0.777; macro-F1 0.839,
//! standard deviation 0.007, lowest 0.828 (the same-features non-private model: 0.831 and 0.862). One share is also drawn the production way (`noise_share`, keyed from
//! the operating system) and timed.
//!
//! The private model must come within 5 points of test accuracy of the non-private federated model
//! (FedAvgM, the demo's defaults) on the same split with the same features. The DP model uses 4096
//! hash buckets instead of the default 32 768: its accuracy hardly depends on the dimension (the
//! features have unit norm, so the noise a logit receives does not grow with it; measured: half a point
//! better at 16 384), while the noise every participant draws, quantises and masks each round grows
//! with it. The non-private model at the default dimension is printed too, and checked with a margin of
//! 6 points.
//!
//! ```sh
//! cargo test --release -p hearth-models --test clinc150_dp_simulation -- --nocapture
//! ```
//! Environment overrides for tuning runs: `DIM CLIP ROUNDS NMIN SLR BETA BIAS_SCALE EPS SEED`, and
//! `ENCODER=W` to add the encoder tier's sentence embedding at weight W (the encoder installed);
//! `AVG=K` also evaluates the mean of the last K rounds' models (post-processing: no privacy cost);
//! `BASELINE=0` skips the non-private runs (and the checks against them).

use std::time::{Duration, Instant};

use chacha20::rand_core::SeedableRng as _;
use hearth_models::*;
use hearth_policies::{Charge, DistributedDiscreteGaussian};
use hearth_secagg::{Quantizer, QuantizerSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod common;
use common::{env, fedavgm, read_data};

/// The chosen configuration (the sweep behind it is in the commit that introduced it), which `hearth demo
/// --dp` runs too.
const P: IntentDpPreset = INTENT_DP_PRESET;
/// Shares calibrated so that all 5 together carry the noise: a round from which an institution drops
/// out after uploading cannot be unmasked and is retried. With 4 (one drop-out tolerated) every round
/// carries 12% more noise than needed when all 5 answer, which cost a point of mean accuracy (0.788,
/// standard deviation 0.011, over 8 noise seeds against 0.799 over 10).
const MIN_SURVIVORS: u32 = 5;
const INSTITUTIONS: usize = 5;
/// The secure-aggregation ring.
const MODULUS_BITS: u8 = 32;

struct Run {
    metrics: Metrics,
    /// Accuracy on the validation split (what tuning looks at).
    val_accuracy: f64,
    secs: f64,
}

/// The hashed n-grams, with the encoder tier's sentence embedding at weight `ENCODER` when that is set
/// (above 0; the preset's encoder tier uses `P.encoder_weight`).
fn features(dim: u32) -> FeatureConfig {
    let weight: f32 = env("ENCODER", 0.0);
    let tier = IntentDpPreset { feature_dim: dim, encoder_weight: weight, ..P };
    tier.features(weight > 0.0)
}

/// With `ENCODER` set, every text's embedding attached.
fn embedded(mut d: Clinc150) -> Clinc150 {
    if env("ENCODER", 0.0f32) <= 0.0 {
        return d;
    }
    common::embed_clinc(&mut d);
    d
}

/// Test metrics and validation accuracy, with the out-of-scope threshold chosen on the validation set.
fn evaluate_params(spec: &IntentSpec, params: Vec<f32>, d: &Clinc150) -> (Metrics, f64) {
    let mut m = IntentModel::from_params(spec.clone(), params).unwrap();
    m.oos_threshold = Some(choose_oos_threshold(&m, &d.val));
    (evaluate(&m, &d.test), evaluate(&m, &d.val).accuracy)
}

fn show(name: &str, r: &Run) {
    let m = &r.metrics;
    eprintln!(
        "{name:<26} val acc {:.4} | test acc {:.4}  in-scope {:.4}  oos recall {:.4}  macro-F1 {:.4}  ({:.1}s)",
        r.val_accuracy, m.accuracy, m.in_scope_accuracy, m.oos_recall, m.macro_f1, r.secs
    );
}

fn shards(spec: &IntentSpec, d: &Clinc150) -> Vec<EncodedSet> {
    let split = dirichlet_split(&d.train, INSTITUTIONS, 0.5, 42).unwrap();
    split.shards.iter().map(|s| encode(spec, s).unwrap()).collect()
}

/// Non-private federated averaging with server momentum, as the demo runs it.
fn non_private(d: &Clinc150, labels: &[String], dim: u32) -> Run {
    let t = Instant::now();
    let spec = IntentSpec::new(labels.to_vec(), features(dim)).unwrap();
    let shards = shards(&spec, d);
    let tp = TrainParams::default();
    let params = fedavgm(
        vec![0.0; spec.num_params()],
        &shards,
        DEFAULT_ROUNDS,
        1.0,
        f64::from(DEFAULT_SERVER_MOMENTUM),
        |local, shard, r, i| {
            let p = TrainParams { seed: tp.seed ^ (r * 31 + i as u64), ..tp.clone() };
            train_local(&spec, local, shard, &p).unwrap().examples
        },
        |_, _| {},
    );
    let (metrics, val_accuracy) = evaluate_params(&spec, params, d);
    Run { metrics, val_accuracy, secs: t.elapsed().as_secs_f64() }
}

/// A 32-byte seed for round `round` of institution `institution`.
fn seed(base: u64, round: u64, institution: usize, stream: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&base.to_le_bytes());
    s[8..16].copy_from_slice(&round.to_le_bytes());
    s[16..24].copy_from_slice(&(institution as u64).to_le_bytes());
    s[24] = stream;
    s
}

/// One institution's upload for one round: its clipped-gradient sum, quantised, plus its noise share.
/// Returns the ring words and the time spent drawing the noise.
#[allow(clippy::too_many_arguments)]
fn upload(
    spec: &IntentSpec,
    global: &[f32],
    shard: &EncodedSet,
    cfg: &DpConfig,
    quantizer: &Quantizer,
    share: &DistributedDiscreteGaussian,
    sampling_rng: &mut ChaCha20Rng,
    seeds: ([u8; 32], [u8; 32]),
) -> (Vec<u32>, Duration) {
    let sum = clipped_gradient_sum(spec, global, shard, cfg, sampling_rng).unwrap();
    let mut words = quantizer.encode(&sum.values, &mut chacha20::ChaCha20Rng::from_seed(seeds.0)).unwrap();
    let t = Instant::now();
    let mut noise = vec![0i64; words.len()];
    share.add_share_seeded(&mut noise, seeds.1).unwrap();
    let noise_time = t.elapsed();
    quantizer.add_integer_noise(&mut words, &noise).unwrap();
    (words, noise_time)
}

#[test]
fn dp_federated_training_at_epsilon_8_comes_within_5_points_of_non_private() {
    let d = embedded(parse_clinc150(&read_data("clinc150/data_full.json")).unwrap());
    let mut labels: Vec<String> = d.train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();

    let dim: u32 = env("DIM", P.feature_dim);
    let rounds: u64 = env("ROUNDS", P.rounds);
    let server_lr: f64 = env("SLR", P.server_learning_rate_for(env("ENCODER", 0.0f32) > 0.0));
    let momentum: f64 = env("BETA", P.server_momentum);
    let target = PrivacyTarget { epsilon: env("EPS", P.target.epsilon), delta: P.target.delta };

    let t = Instant::now();
    let spec = IntentSpec::new(labels.clone(), features(dim)).unwrap();
    let shards = shards(&spec, &d);
    // Public: what the institutions declare when the job is submitted.
    let records: u64 = shards.iter().map(|s| s.len() as u64).sum();
    let largest = shards.iter().map(EncodedSet::len).max().unwrap_or(1) as f64;
    let n = spec.num_params() as u64;
    let cohort = INSTITUTIONS as u32;
    let base = DpParams {
        clip_norm: env("CLIP", P.clip_norm),
        sampling_rate: P.sampling_rate,
        noise_multiplier: 1.0,
        rounds,
        min_survivors: env("NMIN", MIN_SURVIVORS),
        bias_scale: env("BIAS_SCALE", P.bias_scale),
    };

    // The rounds' quantiser: a per-coordinate clip no institution's sum can exceed (each of its records
    // moves a coordinate by at most the clip norm), and headroom for the noise, planned with it.
    let round = RoundShape {
        quantizer_clip: largest * base.clip_norm,
        cohort,
        dimension: n,
        modulus_bits: MODULUS_BITS,
    };
    let DpPlan { config: cfg, grid, noise_headroom } = DpConfig::plan(base, target, round).unwrap();
    let quantizer = Quantizer::new(QuantizerSpec {
        clip: round.quantizer_clip,
        max_summands: cohort,
        noise_headroom,
        modulus_bits: MODULUS_BITS,
    })
    .unwrap();
    assert_eq!(quantizer.scale(), grid.scale);
    let share = cfg.share_mechanism(&grid).unwrap();

    let mut server = DpServer::new(&spec, &cfg, server_lr, momentum, records).unwrap();
    let mut global = vec![0.0f32; spec.num_params()];
    // Every random choice is seeded (see the module documentation); with the default rate 1 the Poisson
    // sampling draws nothing.
    let base_seed: u64 = env("SEED", 42);
    let mut sampling: Vec<ChaCha20Rng> =
        (0..shards.len()).map(|i| ChaCha20Rng::seed_from_u64(base_seed ^ ((i as u64) << 32))).collect();
    let mut noise_time = Duration::ZERO;
    let average_last: u64 = env("AVG", 0);
    let mut average = vec![0.0f64; global.len()];
    for r in 0..rounds {
        let uploads: Vec<(Vec<u32>, Duration)> = std::thread::scope(|s| {
            let handles: Vec<_> = shards
                .iter()
                .zip(sampling.iter_mut())
                .enumerate()
                .map(|(i, (shard, rng))| {
                    let (spec, global, cfg, quantizer, share) = (&spec, &global, &cfg, &quantizer, &share);
                    let seeds = (seed(base_seed, r, i, 0), seed(base_seed, r, i, 1));
                    s.spawn(move || upload(spec, global, shard, cfg, quantizer, share, rng, seeds))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut ring_sum = vec![0u32; global.len()];
        for (words, took) in &uploads {
            noise_time += *took;
            for (s, w) in ring_sum.iter_mut().zip(words) {
                *s = s.wrapping_add(*w);
            }
        }
        server.step(&mut global, &quantizer.decode_sum(&ring_sum)).unwrap();
        if r + average_last >= rounds {
            for (a, g) in average.iter_mut().zip(&global) {
                *a += f64::from(*g) / average_last.min(rounds) as f64;
            }
        }
    }
    if average_last > 0 {
        let (metrics, val_accuracy) = evaluate_params(&spec, average.iter().map(|&a| a as f32).collect(), &d);
        show(&format!("private, last {average_last} averaged"), &Run { metrics, val_accuracy, secs: 0.0 });
    }
    let (metrics, val_accuracy) = evaluate_params(&spec, global, &d);
    let private = Run { metrics, val_accuracy, secs: t.elapsed().as_secs_f64() };
    // The production path: one share keyed from the operating system.
    let t_share = Instant::now();
    let production = noise_share(&share, n as usize).unwrap();
    let production_time = t_share.elapsed();
    let local = share.spec().local_scale;
    let variance = production.iter().map(|&z| (z as f64).powi(2)).sum::<f64>() / n as f64;
    // 618 647 draws: relative standard error of the variance 0.18%; a band of 5 of them.
    assert!((variance / (local * local) - 1.0).abs() < 0.01, "share variance {variance}, sigma {local}");
    let charged = Charge::Training(cfg.training_plan(&grid).unwrap()).worst_case(target.delta).unwrap();
    let eps_gaussian = cfg.epsilon_gaussian(target.delta, rounds).unwrap();

    let baseline = env("BASELINE", 1) != 0;
    let same_dim = baseline.then(|| non_private(&d, &labels, dim));
    let default_dim = FeatureConfig::default().dim;
    let default = (baseline && dim != default_dim).then(|| non_private(&d, &labels, default_dim));

    eprintln!(
        "CLINC150, {INSTITUTIONS} institutions, Dirichlet 0.5, seed 42, {records} records\n\
         DP: dim {dim} ({n} params), clip {}, q {}, sigma {:.4}, rounds {rounds}, min survivors {}/{cohort}, \
         bias scale {}, server lr {server_lr} momentum {momentum}, expected batch {}\n\
         grid: quantiser clip {:.1}, scale {:.1} levels per unit, headroom {} levels, \
         share sigma {:.0} levels",
        cfg.clip_norm(),
        cfg.sampling_rate(),
        cfg.noise_multiplier(),
        cfg.min_survivors(),
        cfg.bias_scale(),
        cfg.expected_batch(records),
        round.quantizer_clip,
        grid.scale,
        noise_headroom,
        share.spec().local_scale,
    );
    if let Some(b) = &default {
        show(&format!("non-private dim {default_dim}"), b);
    }
    if let Some(same_dim) = &same_dim {
        show(&format!("non-private dim {dim}"), same_dim);
    }
    show(&format!("private dim {dim}"), &private);
    eprintln!(
        "epsilon charged at delta {:e}: {:.4} (discrete shares on the grid; the continuous Gaussian would \
         cost {eps_gaussian:.4} by the same RDP accounting)\nnoise shares: {:.1} ms per institution per round ({:.0} ns per coordinate, \
         {INSTITUTIONS} threads on the machine's cores); one share with noise_share alone: {:.1} ms",
        target.delta,
        charged.epsilon,
        noise_time.as_secs_f64() * 1e3 / (rounds as f64 * INSTITUTIONS as f64),
        noise_time.as_secs_f64() * 1e9 / (rounds as f64 * INSTITUTIONS as f64 * n as f64),
        production_time.as_secs_f64() * 1e3,
    );

    assert!(charged.epsilon <= target.epsilon, "charged epsilon {}", charged.epsilon);
    if let Some(same_dim) = &same_dim {
        assert!(
            private.metrics.accuracy >= same_dim.metrics.accuracy - 0.05,
            "private accuracy {} vs non-private {} on the same features",
            private.metrics.accuracy,
            same_dim.metrics.accuracy
        );
    }
    if let Some(b) = &default {
        assert!(
            private.metrics.accuracy >= b.metrics.accuracy - 0.06,
            "private accuracy {} vs non-private {} at the default dimension",
            private.metrics.accuracy,
            b.metrics.accuracy
        );
    }
}
