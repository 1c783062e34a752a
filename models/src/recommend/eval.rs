//! Ranking quality on a leave-last-out split: hit rate and NDCG at k, for the factorisation and for the
//! most-popular baseline, scored the same way (items the customer already bought are never ranked; ties
//! go to the lower item index).

use serde::{Deserialize, Serialize};

use crate::recommend::split::HeldOut;
use crate::recommend::{Interactions, RecommendModel, RecommendSpec};

/// Hit rate and NDCG at `k`, each a mean over the held-out customers, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    /// Share of customers whose held-out item is in their top `k`.
    pub hit_rate: f64,
    /// Mean of `1 / log2(rank + 2)` for a hit at 0-based `rank`, 0 for a miss.
    pub ndcg: f64,
    /// The cut-off.
    pub k: usize,
    /// Customers evaluated.
    pub customers: usize,
}

/// The `k` best items by `scores`, skipping `exclude` (sorted or not); ties go to the lower index.
pub(crate) fn top_k(scores: &[f32], exclude: &[u32], k: usize) -> Vec<u32> {
    let mut skip = exclude.to_vec();
    skip.sort_unstable();
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        let i = i as u32;
        if skip.binary_search(&i).is_ok() || !s.is_finite() {
            continue;
        }
        if best.len() == k && best.last().is_some_and(|&(w, _)| s <= w) {
            continue;
        }
        let at = best.partition_point(|&(b, _)| b >= s);
        best.insert(at, (s, i));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// Items by distinct buyers in `data`, most first, ties to the lower index; items nobody bought are left
/// out.
pub(crate) fn popularity_order(spec: &RecommendSpec, data: &Interactions) -> Vec<(u32, u32)> {
    let mut buyers = vec![0u32; spec.items.len()];
    for row in &data.rows {
        for &(i, _) in row {
            if let Some(b) = buyers.get_mut(i as usize) {
                *b += 1;
            }
        }
    }
    let mut order: Vec<(u32, u32)> =
        buyers.into_iter().enumerate().filter(|(_, b)| *b > 0).map(|(i, b)| (i as u32, b)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    order
}

#[derive(Default)]
struct Tally {
    hits: f64,
    gain: f64,
    n: usize,
}

impl Tally {
    fn add(&mut self, ranked: &[u32], target: Option<u32>) {
        self.n += 1;
        if let Some(rank) = target.and_then(|t| ranked.iter().position(|&i| i == t)) {
            self.hits += 1.0;
            self.gain += 1.0 / ((rank + 2) as f64).log2();
        }
    }

    fn finish(self, k: usize) -> RankingMetrics {
        let d = self.n.max(1) as f64;
        RankingMetrics { hit_rate: self.hits / d, ndcg: self.gain / d, k, customers: self.n }
    }
}

/// Evaluates `model` on `test`, each customer's history taken from `train` (a customer missing from it is
/// a cold start and gets the model's popular items). A held-out item outside the catalogue is a miss.
pub fn evaluate_ranking(
    model: &RecommendModel,
    train: &Interactions,
    test: &[HeldOut],
    k: usize,
) -> RankingMetrics {
    let index = model.spec.item_index();
    let mut t = Tally::default();
    for h in test {
        let target = index.get(h.item.as_str()).copied();
        let ranked = match train.row_of(&h.customer).filter(|r| !r.is_empty()) {
            Some(row) => {
                let seen: Vec<u32> = row.iter().map(|&(i, _)| i).collect();
                // A customer whose system cannot be solved (non-finite factors) gets nothing: a miss.
                model.scores(row).map_or_else(|_| Vec::new(), |s| top_k(&s, &seen, k))
            }
            None => model
                .calibration
                .popular
                .iter()
                .take(k)
                .filter_map(|p| index.get(p.item.as_str()).copied())
                .collect(),
        };
        t.add(&ranked, target);
    }
    t.finish(k)
}

/// The most-popular baseline: every customer gets the items with the most buyers in `popularity_from`
/// that they have not bought, their history taken from `train`.
pub fn evaluate_popular(
    spec: &RecommendSpec,
    popularity_from: &Interactions,
    train: &Interactions,
    test: &[HeldOut],
    k: usize,
) -> RankingMetrics {
    let index = spec.item_index();
    let order = popularity_order(spec, popularity_from);
    let mut t = Tally::default();
    for h in test {
        let seen: Vec<u32> =
            train.row_of(&h.customer).map_or(Vec::new(), |r| r.iter().map(|&(i, _)| i).collect());
        let ranked: Vec<u32> = order.iter().map(|&(i, _)| i).filter(|i| !seen.contains(i)).take(k).collect();
        t.add(&ranked, index.get(h.item.as_str()).copied());
    }
    t.finish(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_skips_excluded_and_breaks_ties_low() {
        let s = [0.5, 0.9, 0.9, 0.1, f32::NAN, 0.7];
        assert_eq!(top_k(&s, &[], 3), vec![1, 2, 5]);
        assert_eq!(top_k(&s, &[1], 3), vec![2, 5, 0]);
        assert_eq!(top_k(&s, &[], 10), vec![1, 2, 5, 0, 3]);
    }

    #[test]
    fn tally_follows_the_definitions() {
        let mut t = Tally::default();
        t.add(&[3, 4, 5], Some(3));
        t.add(&[3, 4, 5], Some(5));
        t.add(&[3, 4, 5], Some(9));
        t.add(&[3, 4, 5], None);
        let m = t.finish(3);
        assert!((m.hit_rate - 0.5).abs() < 1e-12);
        assert!((m.ndcg - (1.0 + 0.5) / 4.0).abs() < 1e-12);
        assert_eq!(Tally::default().finish(10).hit_rate, 0.0);
    }
}
