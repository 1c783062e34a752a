//! The BERT uncased tokenizer: text to WordPiece ids, as the encoder was trained with.
//!
//! Three steps, each as the published tokenizer (`tokenizer.json` of the model: `BertNormalizer`,
//! `BertPreTokenizer`, `WordPiece`, then `[CLS] ... [SEP]`) does them:
//! 1. *normalise*: drop NUL, U+FFFD and control characters, turn every whitespace character into a
//!    space, put spaces around CJK ideographs (each is a word of its own), lowercase, and strip accents
//!    (canonical decomposition, then drop the non-spacing marks);
//! 2. *pre-tokenise*: split on whitespace, and make every punctuation character (ASCII punctuation or
//!    a Unicode `P*` category) a word of its own;
//! 3. *WordPiece*: cut each word greedily into the longest vocabulary pieces, continuations prefixed
//!    `##`; a word with a part no piece matches, or longer than 100 characters, becomes `[UNK]`.
//!
//! `models/fixtures/encoder/reference.json` holds the ids the reference tokenizer gives for sentences
//! chosen to reach each rule; a test checks every one.

use std::collections::HashMap;

use unicode_general_category::{get_general_category, GeneralCategory};
use unicode_normalization::UnicodeNormalization;

/// Longest word, in characters, WordPiece tries to cut; longer words are `[UNK]`.
const MAX_WORD_CHARS: usize = 100;

/// A WordPiece vocabulary and the ids of its special tokens.
#[derive(Debug, Clone)]
pub struct WordPiece {
    ids: HashMap<String, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
}

/// Why a vocabulary could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VocabError {
    /// A special token the tokenizer needs is not in the vocabulary.
    #[error("the vocabulary has no {0} token")]
    MissingSpecial(&'static str),
    /// The same token appears on two lines.
    #[error("the vocabulary lists {token:?} twice (lines {first} and {second})")]
    Duplicate {
        /// The token.
        token: String,
        /// Its first line, from 1.
        first: usize,
        /// The line that repeats it.
        second: usize,
    },
}

impl WordPiece {
    /// Reads `vocab.txt`: one token per line, its id the line number from 0.
    pub fn from_vocab(text: &str) -> Result<Self, VocabError> {
        let mut ids = HashMap::new();
        for (line, token) in text.lines().enumerate() {
            if let Some(first) = ids.insert(token.to_string(), line as u32) {
                return Err(VocabError::Duplicate {
                    token: token.to_string(),
                    first: first as usize + 1,
                    second: line + 1,
                });
            }
        }
        let special = |name: &'static str| ids.get(name).copied().ok_or(VocabError::MissingSpecial(name));
        let (unk, cls, sep) = (special("[UNK]")?, special("[CLS]")?, special("[SEP]")?);
        Ok(Self { ids, unk, cls, sep })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the vocabulary is empty (never, once read).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids of `text`: `[CLS]`, its pieces, `[SEP]`, at most `max_len` in all (the pieces are cut
    /// at the end, as the reference truncates). `max_len` below 2 is taken as 2.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let budget = max_len.max(2) - 2;
        let mut out = Vec::with_capacity(16);
        out.push(self.cls);
        let normal = normalise(text);
        'words: for word in pre_tokenise(&normal) {
            for id in self.pieces(word) {
                if out.len() > budget {
                    break 'words;
                }
                out.push(id);
            }
        }
        out.push(self.sep);
        out
    }

    /// The WordPiece ids of one pre-tokenised word.
    fn pieces(&self, word: &str) -> Vec<u32> {
        if word.chars().count() > MAX_WORD_CHARS {
            return vec![self.unk];
        }
        let mut ids = Vec::new();
        let mut start = 0;
        let mut piece = String::with_capacity(word.len() + 2);
        while start < word.len() {
            // Longest vocabulary piece starting at `start`, trying ends at character boundaries.
            let mut end = word.len();
            let found = loop {
                piece.clear();
                if start > 0 {
                    piece.push_str("##");
                }
                piece.push_str(&word[start..end]);
                if let Some(&id) = self.ids.get(piece.as_str()) {
                    break Some(id);
                }
                match word[start..end].char_indices().next_back() {
                    Some((last, _)) if last > 0 => end = start + last,
                    _ => break None,
                }
            };
            match found {
                Some(id) => ids.push(id),
                None => return vec![self.unk],
            }
            start = end;
        }
        ids
    }
}

/// Step 1: cleaned, CJK-spaced, lowercased, accents stripped.
fn normalise(text: &str) -> String {
    let mut spaced = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            spaced.push(' ');
        } else if is_cjk(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    spaced
        .to_lowercase()
        .nfd()
        .filter(|&c| get_general_category(c) != GeneralCategory::NonspacingMark)
        .collect()
}

/// Step 2: words and punctuation marks, in order.
fn pre_tokenise(text: &str) -> impl Iterator<Item = &str> {
    let mut words = Vec::new();
    for chunk in text.split(is_whitespace) {
        let mut start = 0;
        for (i, c) in chunk.char_indices() {
            if is_punctuation(c) {
                if start < i {
                    words.push(&chunk[start..i]);
                }
                words.push(&chunk[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < chunk.len() {
            words.push(&chunk[start..]);
        }
    }
    words.into_iter()
}

fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Unassigned
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
    )
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            get_general_category(c),
            GeneralCategory::ConnectorPunctuation
                | GeneralCategory::DashPunctuation
                | GeneralCategory::OpenPunctuation
                | GeneralCategory::ClosePunctuation
                | GeneralCategory::InitialPunctuation
                | GeneralCategory::FinalPunctuation
                | GeneralCategory::OtherPunctuation
        )
}

/// The CJK Unified Ideographs blocks BERT treats as one-character words (not Hangul, kana).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        let words =
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "hello", "!", ",", "中", "cafe"];
        WordPiece::from_vocab(&words.join("\n")).unwrap()
    }

    #[test]
    fn cuts_words_into_the_longest_pieces() {
        let v = vocab();
        assert_eq!(v.encode("Unaffable", 64), vec![2, 4, 5, 6, 3]);
        assert_eq!(v.encode("hello, Café!", 64), vec![2, 7, 9, 11, 8, 3]);
        assert_eq!(v.encode("hello中x", 64), vec![2, 7, 10, 1, 3]);
        assert_eq!(v.encode("unknownword", 64), vec![2, 1, 3]);
    }

    #[test]
    fn drops_controls_and_truncates_keeping_the_ends() {
        let v = vocab();
        assert_eq!(v.encode("hel\u{0}lo\u{200b}", 64), vec![2, 7, 3]);
        assert_eq!(v.encode("hello hello hello", 4), vec![2, 7, 7, 3]);
        assert_eq!(v.encode("hello", 0), vec![2, 3]);
        assert_eq!(v.encode(&"a".repeat(101), 64), vec![2, 1, 3]);
    }

    proptest::proptest! {
        #[test]
        fn any_text_gives_cls_pieces_sep_within_the_limit(text in "\\PC{0,200}", max in 0usize..40) {
            let v = vocab();
            let ids = v.encode(&text, max);
            proptest::prop_assert!(ids.len() >= 2 && ids.len() <= max.max(2));
            proptest::prop_assert_eq!((ids[0], ids[ids.len() - 1]), (2, 3));
            proptest::prop_assert!(ids.iter().all(|&id| (id as usize) < v.len()));
        }
    }

    #[test]
    fn refuses_a_vocabulary_without_its_special_tokens_or_with_duplicates() {
        assert_eq!(WordPiece::from_vocab("[UNK]\n[CLS]").unwrap_err(), VocabError::MissingSpecial("[SEP]"));
        let err = WordPiece::from_vocab("[UNK]\n[CLS]\n[UNK]").unwrap_err();
        assert_eq!(err.to_string(), "the vocabulary lists \"[UNK]\" twice (lines 1 and 3)");
    }
}
