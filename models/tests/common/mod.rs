//! Helpers shared by the simulations: where the datasets are, and environment overrides.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The file `rel` under the datasets directory: `$HEARTH_DATA_DIR/rel` when that is set, else the
/// repository's own `data/rel`.
pub fn data_path(rel: &str) -> PathBuf {
    match std::env::var_os("HEARTH_DATA_DIR") {
        Some(dir) => Path::new(&dir).join(rel),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../data").join(rel),
    }
}

/// Reads a dataset file, naming it when it is missing.
pub fn read_data(rel: &str) -> String {
    let p = data_path(rel);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e} (set HEARTH_DATA_DIR)", p.display()))
}

/// A number from the environment, for tuning runs, or `default`.
pub fn env<T: std::str::FromStr>(k: &str, default: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// In-process federated averaging with server momentum, as the coordinator runs it: every round each
/// shard trains from the global parameters (`train` returns its example count), the example-weighted
/// mean delta feeds `velocity = momentum * velocity + mean`, and the global model moves by
/// `server_lr * velocity`.
pub fn fedavgm<D>(
    init: Vec<f32>,
    shards: &[D],
    rounds: u64,
    server_lr: f64,
    momentum: f64,
    mut train: impl FnMut(&mut [f32], &D, u64, usize) -> usize,
    mut after_round: impl FnMut(u64, &[f32]),
) -> Vec<f32> {
    let mut global = init;
    let mut velocity = vec![0.0f64; global.len()];
    for r in 0..rounds {
        let mut sum = vec![0.0f64; global.len()];
        let mut total = 0usize;
        for (i, shard) in shards.iter().enumerate() {
            let mut local = global.clone();
            let n = train(&mut local, shard, r, i);
            for ((s, l), g) in sum.iter_mut().zip(&local).zip(&global) {
                *s += n as f64 * f64::from(l - g);
            }
            total += n;
        }
        for ((g, s), v) in global.iter_mut().zip(&sum).zip(velocity.iter_mut()) {
            *v = momentum * *v + s / total.max(1) as f64;
            *g += (server_lr * *v) as f32;
        }
        after_round(r, &global);
    }
    global
}

/// Attaches every text's sentence embedding to CLINC150's three splits, with the installed encoder
/// (`hearth model fetch-encoder`; `$HEARTH_ENCODER_DIR` names another copy).
pub fn embed_clinc(d: &mut hearth_models::Clinc150) {
    let dir = hearth_models::encoder::default_dir();
    let encoder = hearth_models::encoder::Encoder::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let sets = [&mut d.train, &mut d.val, &mut d.test];
    let texts: Vec<String> = sets.iter().flat_map(|s| s.iter().map(|e| e.text.clone())).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut rows = encoder.embed_parallel(&refs, 2, &|_| {}).into_iter();
    for set in sets {
        for e in set.iter_mut() {
            e.embedding = rows.next().map(std::sync::Arc::from);
        }
    }
}
