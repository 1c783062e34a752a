//! Which catalogue items a customer's message talks about, so that a recommendation can start from the
//! conversation when the app has no purchase history to send ("my red retrospot lunch bag arrived
//! broken" names item `20725`, `LUNCH BAG RED RETROSPOT`).
//!
//! The match is lexical, against the product descriptions an institution holds: a description is
//! mentioned when the message contains most of its words, weighted by how rare each word is among the
//! descriptions (inverse document frequency), so that "red retrospot" counts for more than "bag". A
//! message that only names a kind of product ("a lunch bag") matches nothing: several descriptions share
//! those words, and guessing one of them would put words in the customer's mouth.

use std::collections::{HashMap, HashSet};

use crate::features::tokens;

/// Share of a description's (IDF-weighted) words the message must contain.
const MIN_COVERAGE: f32 = 0.6;
/// Share of a further match's (weighted) words that better matches must not already account for: "my
/// red retrospot lunch bag" names `LUNCH BAG RED RETROSPOT` (all its words), not also `JUMBO BAG RED
/// RETROSPOT`, whose matching words the first one already explains.
const MIN_NEW_EVIDENCE: f32 = 0.5;

/// Words that say nothing about which product is meant.
const STOP_WORDS: [&str; 11] = ["a", "an", "and", "for", "in", "of", "on", "set", "the", "to", "with"];

/// One described item: its id, its words with their weights, and their total weight.
#[derive(Debug, Clone, PartialEq)]
struct Described {
    item: String,
    words: Vec<(String, f32)>,
    total: f32,
}

/// Product descriptions indexed for [`ItemMentions::find`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemMentions {
    described: Vec<Described>,
    /// Word to the descriptions holding it (indices into `described`, ascending), so a message is
    /// compared only with the descriptions it shares a word with, not with the whole catalogue: this
    /// runs on every message the customer-service core answers.
    postings: HashMap<String, Vec<u32>>,
}

/// A word's normal form: lower case (from [`tokens`]), without a possessive or a plural `s`.
fn normal(word: &str) -> Option<String> {
    let w = word.trim_end_matches("'s").trim_matches('\'');
    if STOP_WORDS.contains(&w) || (w.len() < 2 && w.is_ascii()) {
        return None;
    }
    let w = match w.strip_suffix('s') {
        Some(stem) if stem.len() >= 3 && w.is_ascii() && !w.ends_with("ss") => stem,
        _ => w,
    };
    Some(w.to_string())
}

pub(crate) fn words(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    tokens(text).iter().filter_map(|t| normal(t)).filter(|w| seen.insert(w.clone())).collect()
}

impl ItemMentions {
    /// Indexes `(item id, description)` pairs; items with an empty description are left out.
    pub fn new(described: impl IntoIterator<Item = (String, String)>) -> Self {
        let pairs: Vec<(String, Vec<String>)> =
            described.into_iter().map(|(item, d)| (item, words(&d))).filter(|(_, w)| !w.is_empty()).collect();
        let mut df: HashMap<&str, u32> = HashMap::new();
        for (_, ws) in &pairs {
            for w in ws {
                *df.entry(w.as_str()).or_default() += 1;
            }
        }
        let n = pairs.len() as f32;
        let idf = |w: &str| (1.0 + n / df.get(w).copied().unwrap_or(1) as f32).ln();
        let described: Vec<Described> = pairs
            .iter()
            .map(|(item, ws)| {
                let words: Vec<(String, f32)> = ws.iter().map(|w| (w.clone(), idf(w))).collect();
                let total = words.iter().map(|(_, x)| x).sum();
                Described { item: item.clone(), words, total }
            })
            .collect();
        let mut postings: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, d) in described.iter().enumerate() {
            for (w, _) in &d.words {
                // `words` yields each word once per description, so each list stays ascending and unique.
                postings.entry(w.clone()).or_default().push(i as u32);
            }
        }
        Self { described, postings }
    }

    /// Number of items with a description.
    pub fn len(&self) -> usize {
        self.described.len()
    }

    /// Whether no item has a description.
    pub fn is_empty(&self) -> bool {
        self.described.is_empty()
    }

    /// The items `text` mentions, best match first, at most `max`: those whose description's words it
    /// contains for at least 60% of their weight, and at least two of them unless the description has
    /// only one; a match is dropped when better matches already explain most of its words.
    pub fn find(&self, text: &str, max: usize) -> Vec<String> {
        let said: HashSet<String> = words(text).into_iter().collect();
        if said.is_empty() {
            return Vec::new();
        }
        // Only descriptions sharing a word with the message can match; visit them in index order, as a
        // scan of the whole catalogue would.
        let mut candidates: Vec<u32> =
            said.iter().filter_map(|w| self.postings.get(w)).flatten().copied().collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut hits: Vec<(f32, f32, &Described)> = candidates
            .iter()
            .filter_map(|&i| self.described.get(i as usize))
            .filter_map(|d| {
                let matched: Vec<f32> =
                    d.words.iter().filter(|(w, _)| said.contains(w)).map(|(_, x)| *x).collect();
                let weight: f32 = matched.iter().sum();
                let coverage = if d.total > 0.0 { weight / d.total } else { 0.0 };
                let enough = matched.len() >= 2.min(d.words.len());
                (enough && coverage >= MIN_COVERAGE).then_some((coverage, weight, d))
            })
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.item.cmp(&b.2.item)));
        let mut explained: HashSet<&str> = HashSet::new();
        let mut found = Vec::new();
        for (_, weight, d) in hits {
            if found.len() == max {
                break;
            }
            let matched = d.words.iter().filter(|(w, _)| said.contains(w));
            let new: f32 =
                matched.clone().filter(|(w, _)| !explained.contains(w.as_str())).map(|(_, x)| x).sum();
            if new >= MIN_NEW_EVIDENCE * weight {
                explained.extend(matched.map(|(w, _)| w.as_str()));
                found.push(d.item.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ItemMentions {
        let d = [
            ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER"),
            ("22423", "REGENCY CAKESTAND 3 TIER"),
            ("20725", "LUNCH BAG RED RETROSPOT"),
            ("22382", "LUNCH BAG SPACEBOY DESIGN"),
            ("22386", "JUMBO BAG PINK POLKADOT"),
            ("85099B", "JUMBO BAG RED RETROSPOT"),
            ("99999", ""),
        ];
        ItemMentions::new(d.iter().map(|(i, d)| (i.to_string(), d.to_string())))
    }

    #[test]
    fn a_described_product_is_found_in_a_message() {
        let m = index();
        assert_eq!(m.len(), 6);
        assert_eq!(m.find("My red retrospot lunch bag arrived broken!", 3), ["20725"], "not the jumbo bag");
        assert_eq!(m.find("do you still sell the regency cakestands?", 3), ["22423"]);
        let both = m.find("I want the spaceboy lunch bags and a pink polkadot jumbo bag", 3);
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both.contains(&"22382".to_string()) && both.contains(&"22386".to_string()));
    }

    #[test]
    fn vague_or_unrelated_messages_match_nothing() {
        let m = index();
        assert!(m.find("I need a lunch bag", 3).is_empty(), "two lunch bags: no guess");
        assert!(m.find("where is my parcel", 3).is_empty());
        assert!(m.find("", 3).is_empty());
        assert!(m.find("查询余额", 3).is_empty());
        assert!(ItemMentions::default().find("red retrospot lunch bag", 3).is_empty());
        assert_eq!(m.find("red retrospot lunch bag", 0), Vec::<String>::new());
    }
}
