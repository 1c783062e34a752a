//! Ranking quality on a leave-last-out split: hit rate and NDCG at k, for the model and for baselines
//! that are the same statistics scored another way ([`crate::recommend::Scoring`]). Each customer is
//! scored as of the day they bought their held-out item: popularity counts first purchases before that
//! day, and a history item bought again later counts at its first purchase. The history holds every
//! other item the customer had bought by then, those in the held-out item's own basket included (on
//! Online Retail, 70% of test customers have one): the recommendation is made as the basket fills. The
//! co-purchase table covers the whole training period; [`evaluate_time_sliced`] counts only the pairs
//! that existed before each customer's day. Items the customer already bought are never ranked; ties go
//! to the lower index.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::recommend::split::HeldOut;
use crate::recommend::{Interactions, RecommendModel, Scoring};

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

/// Where each held-out item landed: its 0-based rank in the customer's top `k`, or `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// One per held-out customer, in the test's order.
    pub ranks: Vec<Option<usize>>,
    /// The cut-off.
    pub k: usize,
}

impl Ranked {
    fn metrics_of(&self, picks: impl Iterator<Item = usize>) -> RankingMetrics {
        let (mut hits, mut gain, mut n) = (0.0, 0.0, 0usize);
        for p in picks {
            n += 1;
            if let Some(r) = self.ranks.get(p).copied().flatten() {
                hits += 1.0;
                gain += 1.0 / ((r + 2) as f64).log2();
            }
        }
        let d = n.max(1) as f64;
        RankingMetrics { hit_rate: hits / d, ndcg: gain / d, k: self.k, customers: n }
    }

    /// Over every held-out customer.
    pub fn metrics(&self) -> RankingMetrics {
        self.metrics_of(0..self.ranks.len())
    }

    /// Over a bootstrap resample of the customers drawn from `seed` (the same customers for every
    /// method evaluated on the same test, so methods are compared on equal terms).
    pub fn resampled(&self, seed: u64) -> RankingMetrics {
        let n = self.ranks.len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let picks: Vec<usize> = (0..n).map(|_| rng.random_range(0..n.max(1))).collect();
        self.metrics_of(picks.into_iter().filter(|&p| p < n))
    }
}

/// Ranks every held-out item under `scoring`: each customer's history from `train` as of the held-out
/// day (see the module doc). A customer missing from `train` gets the model's popular items; a held-out
/// item outside the catalogue is a miss.
pub fn evaluate(
    model: &RecommendModel,
    scoring: &Scoring,
    train: &Interactions,
    test: &[HeldOut],
    k: usize,
) -> Ranked {
    let index = model.spec.item_index();
    let ranks =
        test.iter().map(|h| rank_held_out(model, scoring, train, h, model.pairs(), &index, k)).collect();
    Ranked { ranks, k }
}

/// The rank of `h`'s item in its customer's top `k` under `scoring` and the pair table `pairs`, the
/// history taken from `train` as of the held-out day (see the module doc); a customer missing from
/// `train` gets the model's popular items.
fn rank_held_out(
    model: &RecommendModel,
    scoring: &Scoring,
    train: &Interactions,
    h: &HeldOut,
    pairs: &[f32],
    index: &HashMap<&str, u32>,
    k: usize,
) -> Option<usize> {
    let ranked: Vec<u32> = match train.position(&h.customer) {
        Some(u) => {
            let history: Vec<(u32, i32)> = train
                .dated_row(u)
                .map(|(i, first, last)| (i, if last <= h.day { last } else { first }))
                .collect();
            let seen: Vec<u32> = history.iter().map(|&(i, _)| i).collect();
            top_k(&model.scores_with_pairs(scoring, &history, h.day, pairs), &seen, k)
        }
        None => model
            .calibration
            .popular
            .iter()
            .take(k)
            .filter_map(|p| index.get(p.item.as_str()).copied())
            .collect(),
    };
    let target = index.get(h.item.as_str())?;
    ranked.iter().position(|i| i == target)
}

/// Like [`evaluate`], but the co-purchase term counts only pairs that existed before each customer's
/// day: the pair table is rebuilt from `pooled` (every customer's training histories), adding a
/// customer's pair of items on the later of the two first purchases, as the test's days advance. The
/// model's own pair table covers the whole training period, later purchases of other customers
/// included; this shows how much that knowledge of the future is worth.
pub fn evaluate_time_sliced(
    model: &RecommendModel,
    scoring: &Scoring,
    pooled: &Interactions,
    test: &[HeldOut],
    k: usize,
) -> Ranked {
    let spec = &model.spec;
    // (day the pair appeared, slot), oldest first.
    let mut events: Vec<(i32, usize)> = Vec::new();
    for u in 0..pooled.len() {
        let row: Vec<(u32, i32)> = pooled.dated_row(u).map(|(i, first, _)| (i, first)).collect();
        for (x, &(a, da)) in row.iter().enumerate() {
            for &(b, db) in &row[x + 1..] {
                events.push((da.max(db), spec.pair_slot(a, b)));
            }
        }
    }
    events.sort_unstable();
    let per_customer = 1.0 / pooled.len().max(1) as f32;
    let mut pairs = vec![0.0f32; spec.pair_slots()];
    let mut order: Vec<usize> = (0..test.len()).collect();
    order.sort_by_key(|&t| test[t].day);
    let index = spec.item_index();
    let mut ranks = vec![None; test.len()];
    let mut next = 0;
    for t in order {
        let h = &test[t];
        while let Some(&(_, slot)) = events.get(next).filter(|(day, _)| *day < h.day) {
            if let Some(p) = pairs.get_mut(slot) {
                *p += per_customer;
            }
            next += 1;
        }
        ranks[t] = rank_held_out(model, scoring, pooled, h, &pairs, &index, k);
    }
    Ranked { ranks, k }
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
    fn metrics_follow_the_definitions() {
        let r = Ranked { ranks: vec![Some(0), Some(2), None, None], k: 3 };
        let m = r.metrics();
        assert!((m.hit_rate - 0.5).abs() < 1e-12);
        assert!((m.ndcg - (1.0 + 0.5) / 4.0).abs() < 1e-12);
        assert_eq!(Ranked { ranks: vec![], k: 10 }.metrics().hit_rate, 0.0);
        // A resample draws as many customers as there are, with replacement, from its seed.
        let a = r.resampled(1);
        assert_eq!(a.customers, 4);
        assert_eq!(a, r.resampled(1));
        let all_hit = Ranked { ranks: vec![Some(1); 50], k: 3 };
        assert_eq!(all_hit.resampled(7).hit_rate, 1.0);
    }
}
