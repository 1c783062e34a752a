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
/// (`hearth model fetch-encoder`; `$HEARTH_ENCODER_DIR` names another copy), cached as [`embed_cached`] caches.
pub fn embed_clinc(d: &mut hearth_models::Clinc150) {
    let sets = [&mut d.train, &mut d.val, &mut d.test];
    let texts: Vec<String> = sets.iter().flat_map(|s| s.iter().map(|e| e.text.clone())).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut rows = embed_cached("clinc150", &refs).into_iter();
    for set in sets {
        for e in set.iter_mut() {
            e.embedding = rows.next();
        }
    }
}

/// The sentence embeddings of `texts`, in order, from the installed encoder, cached in a file so that
/// tuning runs embed each split once (all of GoEmotions takes minutes on two threads).
///
/// The file is `$HEARTH_EMBED_CACHE` (default `$TMPDIR/hearth-embeddings`) `/<key>-<hash>.f32`: `key`
/// names the texts for people (a dataset and split), the hash is over the model's name and every text,
/// so a changed slice or dataset never reads another's embeddings. The file is little-endian `f32`
/// rows; one of the wrong length is ignored and rewritten. `NO_EMBED_CACHE=1` embeds afresh and writes
/// nothing.
pub fn embed_cached(key: &str, texts: &[&str]) -> Vec<std::sync::Arc<[f32]>> {
    use hearth_models::encoder::EMBEDDING_DIM;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    };
    mix(hearth_models::features::ENCODER_MODEL.as_bytes());
    for t in texts {
        mix(&[0x1e]);
        mix(t.as_bytes());
    }
    let dir = std::env::var_os("HEARTH_EMBED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hearth-embeddings"));
    let path = dir.join(format!("{key}-{h:016x}.f32"));
    let use_cache = env("NO_EMBED_CACHE", 0u8) == 0;
    let rows = |flat: Vec<f32>| -> Vec<std::sync::Arc<[f32]>> {
        flat.chunks_exact(EMBEDDING_DIM).map(std::sync::Arc::from).collect()
    };
    if use_cache {
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() == texts.len() * EMBEDDING_DIM * 4 {
                let flat =
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                return rows(flat);
            }
        }
    }
    let encoder = hearth_models::encoder::Encoder::load(&hearth_models::encoder::default_dir())
        .unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    let embedded = encoder.embed_parallel(texts, 2, &|_| {});
    eprintln!("embedded {} {key} texts in {:.1} s", texts.len(), started.elapsed().as_secs_f64());
    let flat: Vec<f32> = embedded.into_iter().flatten().collect();
    if use_cache {
        let bytes: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
        // Written whole to a temporary name and renamed, so a run killed mid-write leaves no torn file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            eprintln!("not caching embeddings at {}: {e}", path.display());
        }
    }
    rows(flat)
}
