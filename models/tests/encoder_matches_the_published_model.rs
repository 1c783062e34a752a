//! The encoder tier's sentence encoder against the published model: the token ids of the model's own
//! tokenizer and the embeddings of its reference implementation (`models/fixtures/encoder/`, made by
//! `gen_reference.py` there), for sentences that reach each tokenizer rule: accents, punctuation, CJK,
//! emoji, controls, a word too long for WordPiece, truncation at 256 tokens.
//!
//! Needs the model installed by the set-up step (`hearth model fetch-encoder`, which `./scripts/test.sh` runs);
//! `$HEARTH_ENCODER_DIR` names another copy.

use hearth_models::encoder::{self, Encoder, EncoderError, MAX_TOKENS};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    max_tokens: usize,
    tokens: Vec<Tokens>,
    embeddings: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Tokens {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Embedding {
    text: String,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/encoder/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn encoder() -> Encoder {
    let dir = encoder::default_dir();
    Encoder::load(&dir).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn token_ids_and_embeddings_match_the_reference() {
    let reference = reference();
    assert_eq!(reference.max_tokens, MAX_TOKENS);
    let encoder = encoder();
    for t in &reference.tokens {
        assert_eq!(encoder.tokens(&t.text), t.ids, "token ids of {:?}", t.text);
    }
    let texts: Vec<&str> = reference.embeddings.iter().map(|e| e.text.as_str()).collect();
    let batched = encoder.embed_parallel(&texts, 2, &|_| {});
    let mut worst = 0.0f32;
    for (e, ours) in reference.embeddings.iter().zip(&batched) {
        // Alone and in a batch the same: packing never lets one sequence see another.
        let alone = encoder.embed_one(&e.text);
        for ((a, b), r) in alone.iter().zip(ours).zip(&e.embedding) {
            assert!((a - b).abs() < 1e-5, "{:?}: batched {b} alone {a}", e.text);
            worst = worst.max((a - r).abs());
        }
        let cosine: f32 = ours.iter().zip(&e.embedding).map(|(a, b)| a * b).sum();
        assert!(cosine > 0.99999, "{:?}: cosine {cosine} to the reference", e.text);
    }
    assert!(worst < 1e-4, "largest difference from the reference {worst}");
    eprintln!("largest coordinate difference from the reference: {worst:.2e}");
}

#[test]
fn a_tampered_model_file_is_refused_by_its_hash() {
    let source = encoder::default_dir();
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in encoder::PINNED {
        std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
    }
    encoder::verify(dir.path()).unwrap();
    let mut vocab = std::fs::read(dir.path().join("vocab.txt")).unwrap();
    vocab[1000] ^= 1;
    std::fs::write(dir.path().join("vocab.txt"), vocab).unwrap();
    let err = Encoder::load(dir.path()).unwrap_err();
    assert!(matches!(err, EncoderError::Digest { .. }), "{err}");
    assert!(err.to_string().contains("not the pinned sentence-transformers/all-MiniLM-L6-v2 file"), "{err}");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = encoder::verify(dir.path()).unwrap_err();
    assert!(err.to_string().contains("hearth model fetch-encoder"), "{err}");
}
