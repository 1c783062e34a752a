//! A seeded non-IID split of a labelled set over N simulated institutions.
//!
//! For each label (a multi-label example's primary label), the shares of its examples that go to each
//! institution are drawn from a symmetric Dirichlet(alpha): small alpha gives each institution few
//! labels, large alpha approaches an even split. The same seed always gives the same split.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};

use crate::{Example, ModelError};

/// Shards and what each holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// One shard per institution.
    pub shards: Vec<Vec<Example>>,
    /// Per shard, the count of each label it holds (labels sorted).
    pub label_counts: Vec<Vec<(String, usize)>>,
}

/// Splits labelled `examples` over `n` shards by their label; every shard gets at least one example.
pub fn dirichlet_split(examples: &[Example], n: usize, alpha: f64, seed: u64) -> Result<Split, ModelError> {
    let shards = dirichlet_split_by(examples, |e| e.label.as_str(), n, alpha, seed)?;
    let label_counts = shards
        .iter()
        .map(|s| {
            let mut m: std::collections::BTreeMap<String, usize> = Default::default();
            for e in s {
                *m.entry(e.label.clone()).or_default() += 1;
            }
            m.into_iter().collect()
        })
        .collect();
    Ok(Split { shards, label_counts })
}

/// Splits any items over `n` shards, drawing each key's shares from a Dirichlet(alpha); `key` gives an
/// item's class (a multi-label example's primary label, say). Every shard gets at least one item.
pub fn dirichlet_split_by<'a, T: Clone, K: Ord>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
    n: usize,
    alpha: f64,
    seed: u64,
) -> Result<Vec<Vec<T>>, ModelError> {
    if n == 0 {
        return Err(ModelError::InvalidSplit("zero shards".into()));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(ModelError::InvalidSplit(format!("alpha {alpha} must be positive")));
    }
    if items.len() < n {
        return Err(ModelError::InvalidSplit(format!("{} examples cannot fill {n} shards", items.len())));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let gamma = Gamma::new(alpha, 1.0).map_err(|e| ModelError::InvalidSplit(e.to_string()))?;
    let mut by_key: std::collections::BTreeMap<K, Vec<&T>> = std::collections::BTreeMap::new();
    for e in items {
        by_key.entry(key(e)).or_default().push(e);
    }
    let mut shards: Vec<Vec<T>> = vec![Vec::new(); n];
    for (_, mut group) in by_key {
        group.shuffle(&mut rng);
        let mut w: Vec<f64> = (0..n).map(|_| gamma.sample(&mut rng)).collect();
        let total: f64 = w.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            w = vec![1.0; n];
        }
        let total: f64 = w.iter().sum();
        // Cumulative rounding: shard i takes up to round(len * cumsum_i / total).
        let mut start = 0;
        let mut acc = 0.0;
        for (i, wi) in w.iter().enumerate() {
            acc += wi;
            let end =
                if i + 1 == n { group.len() } else { ((group.len() as f64) * acc / total).round() as usize };
            let end = end.clamp(start, group.len());
            shards[i].extend(group[start..end].iter().map(|e| (*e).clone()));
            start = end;
        }
    }
    // No institution may be empty: take from the largest.
    for i in 0..n {
        if shards[i].is_empty() {
            let largest = (0..n).max_by_key(|&j| shards[j].len()).unwrap_or(0);
            if let Some(e) = shards[largest].pop() {
                shards[i].push(e);
            }
        }
    }
    for s in &mut shards {
        s.shuffle(&mut rng);
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<Example> {
        (0..1000)
            .map(|i| Example { text: format!("t{i}"), label: format!("l{}", i % 10), embedding: None })
            .collect()
    }

    #[test]
    fn split_keeps_every_example_once_and_is_seeded() {
        let d = data();
        let s = dirichlet_split(&d, 5, 0.5, 42).unwrap();
        assert_eq!(s.shards.iter().map(Vec::len).sum::<usize>(), 1000);
        let mut texts: Vec<&str> = s.shards.iter().flatten().map(|e| e.text.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), 1000);
        assert!(s.shards.iter().all(|x| !x.is_empty()));
        assert_eq!(s, dirichlet_split(&d, 5, 0.5, 42).unwrap());
        assert_ne!(s, dirichlet_split(&d, 5, 0.5, 43).unwrap());
    }

    #[test]
    fn small_alpha_is_more_skewed() {
        let d = data();
        let skew = |alpha| {
            let s = dirichlet_split(&d, 5, alpha, 1).unwrap();
            s.label_counts.iter().map(|c| c.len()).sum::<usize>()
        };
        assert!(skew(0.05) < skew(100.0), "fewer labels per shard with small alpha");
    }

    #[test]
    fn impossible_splits_are_errors() {
        assert!(dirichlet_split(&data(), 0, 0.5, 1).is_err());
        assert!(dirichlet_split(&data(), 5, 0.0, 1).is_err());
        assert!(dirichlet_split(&data()[..3], 5, 0.5, 1).is_err());
    }
}
