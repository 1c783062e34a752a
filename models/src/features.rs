//! Text to sparse vectors: hashed word n-grams and character n-grams, L2-normalised.
//!
//! Hashing (FNV-1a, fixed, identical across processes and platforms) means no vocabulary is built or
//! shared, so no institution's words leave it. English text splits into words at non-alphanumeric
//! characters; CJK characters (Chinese, Japanese kana, Korean) have no spaces, so each one is a word of
//! its own and word bigrams cover the character bigrams that carry most of their meaning.

use serde::{Deserialize, Serialize};

/// How text becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Number of hash buckets; a power of two.
    pub dim: u32,
    /// Word n-grams up to this length (1 = unigrams only).
    pub word_ngrams: u8,
    /// Shortest character n-gram (0 disables character n-grams).
    pub char_ngram_min: u8,
    /// Longest character n-gram.
    pub char_ngram_max: u8,
    /// The encoder tier: the text's sentence embedding joins the n-grams as a dense block of
    /// [`crate::encoder::EMBEDDING_DIM`] features after the `dim` hashed ones. Absent in the fast tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderFeatures>,
}

/// The sentence-embedding block of the encoder tier's features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderFeatures {
    /// The encoder: [`ENCODER_MODEL`], the one there is.
    pub model: String,
    /// Scale of the unit-length embedding beside the unit-length n-gram vector, in (0, 100].
    pub weight: f32,
}

/// The name an encoder-tier spec gives its encoder.
pub const ENCODER_MODEL: &str = "all-MiniLM-L6-v2";

impl Default for FeatureConfig {
    fn default() -> Self {
        Self { dim: 1 << 15, word_ngrams: 2, char_ngram_min: 3, char_ngram_max: 5, encoder: None }
    }
}

impl FeatureConfig {
    /// Features a model reads: the hashed ones, then the embedding's when the spec has an encoder.
    pub fn input_dim(&self) -> usize {
        self.dim as usize + if self.encoder.is_some() { crate::encoder::EMBEDDING_DIM } else { 0 }
    }

    /// Whether the model reads sentence embeddings, so that its texts must be embedded.
    pub fn needs_encoder(&self) -> bool {
        self.encoder.is_some()
    }
}

/// Features of `text` under `cfg`, with `embedding` (its sentence embedding) as the dense block when
/// `cfg` has an encoder. An encoder-tier spec needs the embedding: `None`, or one of another length, is
/// an [`ModelError::InvalidInput`] naming the problem.
pub fn featurize_embedded(
    cfg: &FeatureConfig,
    text: &str,
    embedding: Option<&[f32]>,
) -> Result<SparseVec, crate::ModelError> {
    let mut v = featurize(cfg, text);
    if let Some(encoder) = &cfg.encoder {
        let e = embedding.ok_or_else(|| {
            crate::ModelError::InvalidInput(format!(
                "the model reads {} sentence embeddings; none was given",
                encoder.model
            ))
        })?;
        if e.len() != crate::encoder::EMBEDDING_DIM {
            return Err(crate::ModelError::InvalidInput(format!(
                "an embedding of {} values, the encoder gives {}",
                e.len(),
                crate::encoder::EMBEDDING_DIM
            )));
        }
        v.indices.extend((0..e.len() as u32).map(|i| cfg.dim + i));
        v.values.extend(e.iter().map(|x| x * encoder.weight));
    }
    Ok(v)
}

/// A sparse vector: sorted unique indices and their values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseVec {
    /// Bucket indices, ascending, unique.
    pub indices: Vec<u32>,
    /// Values, one per index.
    pub values: Vec<f32>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// Splits lower-cased text into word tokens; each CJK character is its own token.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if is_cjk(c) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            out.push(c.to_string());
        } else if c.is_alphanumeric() || c == '\'' {
            cur.push(c);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The features of a labelled example for evaluation: with its embedding when the spec reads one and
/// the example has it, else its n-grams alone (an encoder-tier model evaluated on examples without
/// embeddings sees only their n-grams; callers attach the embeddings first).
pub(crate) fn example_features(cfg: &FeatureConfig, text: &str, embedding: Option<&[f32]>) -> SparseVec {
    featurize_embedded(cfg, text, embedding).unwrap_or_else(|_| featurize(cfg, text))
}

/// The hashed n-gram features of `text` under `cfg` (the fast tier's whole input; the encoder tier adds
/// the embedding with [`featurize_embedded`]).
pub fn featurize(cfg: &FeatureConfig, text: &str) -> SparseVec {
    let mask = u64::from(cfg.dim.max(1)) - 1;
    let mut raw: Vec<u32> = Vec::new();
    let toks = tokens(text);
    // Word n-grams, each n in its own hash namespace.
    for n in 1..=usize::from(cfg.word_ngrams.max(1)) {
        for w in toks.windows(n) {
            let mut h = fnv(FNV_OFFSET, &[b'w', n as u8]);
            for t in w {
                h = fnv(h, t.as_bytes());
                h = fnv(h, &[0x1f]);
            }
            raw.push((h & mask) as u32);
        }
    }
    // Character n-grams inside each non-CJK word padded with boundary marks, fastText style.
    if cfg.char_ngram_min > 0 {
        for t in toks.iter().filter(|t| !t.chars().next().is_some_and(is_cjk)) {
            let chars: Vec<char> =
                std::iter::once('<').chain(t.chars()).chain(std::iter::once('>')).collect();
            for n in usize::from(cfg.char_ngram_min)..=usize::from(cfg.char_ngram_max.max(cfg.char_ngram_min))
            {
                for g in chars.windows(n) {
                    let s: String = g.iter().collect();
                    raw.push((fnv(fnv(FNV_OFFSET, b"c"), s.as_bytes()) & mask) as u32);
                }
            }
        }
    }
    raw.sort_unstable();
    let mut v = SparseVec::default();
    for idx in raw {
        match v.indices.last() {
            Some(&last) if last == idx => {
                if let Some(x) = v.values.last_mut() {
                    *x += 1.0;
                }
            }
            _ => {
                v.indices.push(idx);
                v.values.push(1.0);
            }
        }
    }
    // Sublinear term frequency, then unit length.
    for x in &mut v.values {
        *x = 1.0 + x.ln();
    }
    let norm = v.values.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v.values {
            *x /= norm;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_words_and_cjk_characters() {
        assert_eq!(tokens("What's my BALANCE?"), ["what's", "my", "balance"]);
        assert_eq!(tokens("查询余额 please"), ["查", "询", "余", "额", "please"]);
        assert!(tokens("  ,,, ").is_empty());
    }

    #[test]
    fn features_are_deterministic_sorted_and_unit_length() {
        let cfg = FeatureConfig::default();
        for text in ["how do I transfer money", "我想查询我的信用卡余额", "mixed 中文 text"] {
            let a = featurize(&cfg, text);
            assert_eq!(a, featurize(&cfg, text));
            assert!(a.indices.windows(2).all(|w| w[0] < w[1]));
            assert!(a.indices.iter().all(|&i| i < cfg.dim));
            let norm: f32 = a.values.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{text}: {norm}");
        }
        assert!(featurize(&cfg, "").indices.is_empty());
    }

    #[test]
    fn similar_chinese_texts_share_features() {
        let cfg = FeatureConfig::default();
        let a = featurize(&cfg, "查询余额");
        let b = featurize(&cfg, "我要查询余额");
        let c = featurize(&cfg, "预订机票");
        let shared =
            |x: &SparseVec, y: &SparseVec| x.indices.iter().filter(|i| y.indices.contains(i)).count();
        assert!(shared(&a, &b) > shared(&a, &c));
    }
}
