//! `--tier encoder`: the demo's texts with their sentence embeddings. Computed once with a progress bar
//! (the encoder installed first when it is missing: the set-up step) and kept in
//! `~/.cache/hearth/embeddings/` (`$XDG_CACHE_HOME`), keyed by the model and the exact texts, so later
//! runs read them back in a moment. These are the public datasets' texts; an institution's own texts are
//! embedded by its participant and kept sealed in its store (`hearth data import`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hearth_crypto::digest::ContentDigest;
use hearth_models::encoder::{self, Encoder, EMBEDDING_DIM, PINNED};
use hearth_models::Example;

/// Where computed embeddings of the demo's datasets are kept between runs.
pub(crate) fn cache_dir() -> PathBuf {
    encoder::cache_root().join("embeddings")
}

/// Attaches its embedding to every example of `sets`, from the cache when it holds these texts, else
/// computed (and cached).
pub(crate) fn attach(
    dataset: &str,
    sets: &mut [&mut Vec<Example>],
    cache: &Path,
    mp: &indicatif::MultiProgress,
) -> anyhow::Result<()> {
    let texts: Vec<&str> = sets.iter().flat_map(|s| s.iter().map(|e| e.text.as_str())).collect();
    let mut digest = ContentDigest::new();
    digest.update(PINNED[0].1.as_bytes());
    for t in &texts {
        digest.update(&(t.len() as u64).to_le_bytes());
        digest.update(t.as_bytes());
    }
    let stem: String =
        dataset.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(40).collect();
    let file = cache.join(format!("{stem}-{}.f32", &hex::encode(digest.finish())[..16]));
    let flat = match read_cache(&file, texts.len()) {
        Some(v) => {
            eprintln!("intent (encoder tier): {} embeddings read from {}", texts.len(), file.display());
            v
        }
        None => {
            let dir = encoder::default_dir();
            crate::encoder_setup::fetch(&dir, true).context(
                "installing the encoder for the encoder tier (the default; `--tier fast` runs without it)",
            )?;
            let encoder = Encoder::load(&dir)?;
            let flat = embed(&encoder, &texts, mp);
            std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
            let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
            hearth_node::files::write_atomic(&file, &bytes, false)?;
            flat
        }
    };
    let mut rows = flat.chunks_exact(EMBEDDING_DIM);
    for set in sets.iter_mut() {
        for e in set.iter_mut() {
            e.embedding = rows.next().map(Arc::from);
        }
    }
    Ok(())
}

fn read_cache(file: &Path, texts: usize) -> Option<Vec<f32>> {
    let bytes = std::fs::read(file).ok()?;
    (bytes.len() == texts * EMBEDDING_DIM * 4)
        .then(|| bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn embed(encoder: &Encoder, texts: &[&str], mp: &indicatif::MultiProgress) -> Vec<f32> {
    let bar = mp.add(indicatif::ProgressBar::new(texts.len() as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "intent (encoder tier): embedding {bar:30} {pos}/{len} texts, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let out = encoder.embed_parallel(texts, threads, &|done| bar.set_position(done as u64));
    bar.finish_and_clear();
    eprintln!(
        "intent (encoder tier): embedded {} texts in {:.1} s (cached for later runs)",
        texts.len(),
        started.elapsed().as_secs_f64()
    );
    out.into_iter().flatten().collect()
}
