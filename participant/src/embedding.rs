//! The encoder tier's embeddings of this institution's texts: computed once, by the participant's own
//! process on its own machine, and kept sealed in its store beside the texts (never sent anywhere; only
//! model updates leave). `hearth data import` embeds what it imports when the encoder is installed; an
//! encoder-tier job embeds whatever is still missing first.

use hearth_models::encoder::Encoder;

use crate::store::Store;

/// Texts embedded and stored per transaction: an interrupted run keeps what it finished.
const CHUNK: usize = 512;

/// Embeds every stored intent example that has no embedding yet and stores the embeddings, sealed;
/// `progress(done, total)` is called after each chunk. Returns how many were embedded. Blocking.
pub fn embed_missing(
    store: &Store,
    encoder: &Encoder,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> anyhow::Result<usize> {
    let missing = store.unembedded()?;
    let total = missing.len();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut done = 0;
    for chunk in missing.chunks(CHUNK) {
        let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
        let embedded = encoder.embed_parallel(&texts, threads, &|n| progress(done + n, total));
        let rows: Vec<(u64, Vec<f32>)> = chunk.iter().map(|(k, _)| *k).zip(embedded).collect();
        store.save_embeddings(&rows)?;
        done += chunk.len();
        progress(done, total);
    }
    Ok(total)
}
