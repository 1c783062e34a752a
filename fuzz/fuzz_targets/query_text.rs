//! The text of a query an app sends to `/v1/intent` or `/v1/emotion`, as both tiers read it: the fast
//! tier's hashed n-grams, and the encoder tier's tokenizer (normalisation, punctuation split, WordPiece
//! over a vocabulary with multi-byte pieces, truncation). No input may panic; the ids always start with
//! `[CLS]`, end with `[SEP]` and fit the limit.
#![no_main]

use std::sync::OnceLock;

use hearth_models::encoder::WordPiece;
use hearth_models::{featurize, FeatureConfig};
use libfuzzer_sys::fuzz_target;

fn vocab() -> &'static WordPiece {
    static VOCAB: OnceLock<WordPiece> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "##a", "ca", "##fe", "##é", "中", "文", "##s", "!", "'",
            "ü", "##ß", "x", "##x", "##xx", "😀",
        ];
        WordPiece::from_vocab(&words.join("\n")).expect("a valid vocabulary")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = featurize(&FeatureConfig { dim: 1024, ..FeatureConfig::default() }, text);
    for max in [2, 7, 256] {
        let ids = vocab().encode(text, max);
        assert!(ids.len() >= 2 && ids.len() <= max);
        assert_eq!((ids[0], ids[ids.len() - 1]), (2, 3));
    }
});
