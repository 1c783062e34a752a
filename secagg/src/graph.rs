//! The SecAgg+ neighbour graph, and the rule that picks its degree and the Shamir threshold.
//!
//! Responsibility: who is whose neighbour in a round. The graph is a Harary graph H(n, k) (a ring where
//! each client is joined to the k/2 nearest on each side) laid over a uniformly random permutation of
//! the roster, as in Bell et al. 2020 (section 3, "SecAgg+ with a Harary graph"). When `k = n - 1` the
//! graph is complete and the protocol is the original SecAgg of Bonawitz et al. 2017.
//!
//! The permutation comes from a seed no one chooses: every client commits to 32 random bytes in its
//! signed phase-0 advertisement ([`seed_commitment`]), the server relays the list of commitments, and
//! only then does each client reveal its bytes; the seed is the hash of all revealed contributions
//! ([`graph_seed`]). Each client checks every reveal against its commitment and computes the seed
//! itself, and its own contribution is in it, so when the server and any colluders fix what goes into
//! the seeds a client sees, that client's contribution is still unknown to them: they cannot grind
//! seeds to place colluders around it. A committed contribution that is not revealed aborts the round
//! (the server may not drop a revealer after seeing the reveals); each participant joins a bounded
//! number of instances of a round, which bounds the choice that aborting gives.
//!
//! [`GraphRule::choose`] turns a stated adversary (a colluding fraction γ of clients, fixed before the
//! graph seed is drawn, plus the server) and a drop-out fraction δ into the smallest even degree `k` and
//! a threshold `t` such that, with `c = floor(γ n)` colluders and `m = floor(δ n)` drop-outs (at least
//! `min_dropouts`, at most `floor((n - 2) / 2)`: none in a cohort of three), by union bounds over the n
//! clients:
//!
//! * **privacy**: `P[some client has at least 2t - k colluding neighbours] + P[the graph minus colluders
//!   and drop-outs is disconnected] <= 2^-σ`. With fewer than `2t - k` colluding holders, even a server
//!   that lies about who survived cannot collect t shares of both secrets of one client (honest holders
//!   reveal one kind each), and fewer than t colluders never reach t shares alone. Connectivity matters
//!   because each connected part of honest survivors would otherwise be summed separately. The
//!   neighbourhood of one client is a uniform k-subset of the others, so the colluder count is
//!   hypergeometric. In a Harary ring two survivors at consecutive positions are joined unless k/2 or
//!   more removed positions lie between them, and a ring with one such gap is still a path, so
//!   disconnection needs two disjoint runs of k/2 removed positions.
//! * **correctness**: `P[some client has more than k - t dropped neighbours] <= 2^-η`, so every
//!   needed secret still has t holders alive.
//!
//! The threshold must also satisfy `2t > k` (two contradictory survivor sets cannot both be endorsed by
//! t of the same k holders). Among the valid thresholds the rule takes the largest that keeps
//! correctness, which maximises the privacy margin.

use hearth_crypto::suite::{SecretBytes, SuiteId};

use super::SecAggError;

/// The commitment of client `client` to its graph-seed contribution in the round of `context`.
pub fn seed_commitment(suite: SuiteId, context: &[u8; 32], client: u32, contribution: &[u8; 32]) -> [u8; 32] {
    suite.suite().hash(&[
        b"hearth-secagg/v1 graph seed commitment",
        context,
        &client.to_le_bytes(),
        contribution,
    ])
}

/// The graph seed of the round of `context`: the hash of every revealed contribution, by increasing
/// client (`reveals` must be in that order, as the wire format guarantees).
pub fn graph_seed(suite: SuiteId, context: &[u8; 32], reveals: &[(u32, [u8; 32])]) -> [u8; 32] {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + 2 * reveals.len());
    let indices: Vec<[u8; 4]> = reveals.iter().map(|(v, _)| v.to_le_bytes()).collect();
    parts.push(b"hearth-secagg/v1 graph seed");
    parts.push(context);
    for ((_, r), i) in reveals.iter().zip(&indices) {
        parts.push(i);
        parts.push(r);
    }
    suite.suite().hash(&parts)
}

/// The neighbour lists of one round: sorted, symmetric, without self-loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourGraph {
    degree: u32,
    neighbours: Vec<Vec<u32>>,
}

impl NeighbourGraph {
    /// Builds H(n, k) over the permutation drawn from `seed` with the suite's keystream. `k` must be
    /// even and below `n - 1`, or exactly `n - 1` (complete graph); [`super::RoundParams`] checks this.
    pub(crate) fn new(suite: SuiteId, n: u32, degree: u32, seed: &[u8; 32]) -> Self {
        let nu = n as usize;
        if degree + 1 >= n {
            let neighbours = (0..n).map(|u| (0..n).filter(|&v| v != u).collect()).collect();
            return Self { degree: n - 1, neighbours };
        }
        // Public randomness: 64-bit words from the keystream of a seed derived for this use only.
        let s = suite.suite();
        let mut derived = [0u8; 32];
        // HKDF output of 32 bytes cannot fail.
        let _ = s.kdf(seed, b"hearth-secagg/v1", b"neighbour graph permutation", &mut derived);
        let mut stream = vec![0u8; 8 * nu];
        s.keystream(&SecretBytes::new(derived), &mut stream);
        let words = stream.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        });
        // Fisher-Yates: position -> client. The multiply-shift bound has bias below n / 2^64.
        let mut order: Vec<u32> = (0..n).collect();
        for (i, w) in (1..nu).rev().zip(words) {
            let j = ((u128::from(w) * (i as u128 + 1)) >> 64) as usize;
            order.swap(i, j);
        }
        let mut position = vec![0usize; nu];
        for (p, &u) in order.iter().enumerate() {
            position[u as usize] = p;
        }
        let half = (degree / 2) as usize;
        let neighbours = (0..nu)
            .map(|u| {
                let p = position[u];
                let mut list: Vec<u32> =
                    (1..=half).flat_map(|j| [order[(p + j) % nu], order[(p + nu - j) % nu]]).collect();
                list.sort_unstable();
                list
            })
            .collect();
        Self { degree, neighbours }
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.neighbours.len()
    }

    /// Whether the graph has no clients (never, for a validated round).
    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty()
    }

    /// The degree k.
    pub fn degree(&self) -> u32 {
        self.degree
    }

    /// The sorted neighbours of `u` (empty for an index outside the roster).
    pub fn neighbours(&self, u: u32) -> &[u32] {
        self.neighbours.get(u as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `a` and `b` are neighbours.
    pub fn are_neighbours(&self, a: u32, b: u32) -> bool {
        self.neighbours(a).binary_search(&b).is_ok()
    }
}

/// The adversary and drop-out rate a deployment states; [`GraphRule::choose`] derives k and t from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphRule {
    /// Fraction γ of the cohort that may collude with the server (fixed before the graph seed is drawn).
    pub colluding_fraction: f64,
    /// Fraction δ of the cohort that may drop out during the round.
    pub dropout_fraction: f64,
    /// σ: privacy may fail with probability at most 2^-σ.
    pub security_bits: u32,
    /// η: a round may abort for lack of shares with probability at most 2^-η.
    pub correctness_bits: u32,
    /// At least this many drop-outs are tolerated whatever the cohort size: with δ·n rounded down, a
    /// cohort of five would otherwise tolerate none, and one lost participant would abort its round.
    pub min_dropouts: u32,
}

impl Default for GraphRule {
    /// γ = 1/5, δ = 1/10 (and at least one drop-out), σ = 40, η = 20.
    fn default() -> Self {
        Self {
            colluding_fraction: 0.2,
            dropout_fraction: 0.1,
            security_bits: 40,
            correctness_bits: 20,
            min_dropouts: 1,
        }
    }
}

/// A degree and threshold with the failure probabilities (log2) that justify them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphChoice {
    /// Degree k (n − 1 means the complete graph).
    pub degree: u32,
    /// Shamir threshold t.
    pub threshold: u32,
    /// log2 of the bound on the privacy failure probability (−inf when impossible).
    pub security_log2: f64,
    /// log2 of the bound on the abort probability (−inf when impossible).
    pub correctness_log2: f64,
}

/// ln(i!) for i in 0..=n.
fn ln_factorials(n: usize) -> Vec<f64> {
    let mut t = Vec::with_capacity(n + 1);
    let mut acc = 0.0;
    t.push(0.0);
    for i in 1..=n {
        acc += (i as f64).ln();
        t.push(acc);
    }
    t
}

fn ln_choose(lf: &[f64], a: usize, b: usize) -> f64 {
    if b > a {
        return f64::NEG_INFINITY;
    }
    lf[a] - lf[b] - lf[a - b]
}

/// log2 of P[X >= at_least] for X hypergeometric: `draws` from `population` holding `marked`.
fn hypergeometric_tail_log2(
    lf: &[f64],
    population: usize,
    marked: usize,
    draws: usize,
    at_least: usize,
) -> f64 {
    let total = ln_choose(lf, population, draws);
    let terms: Vec<f64> = (at_least..=draws.min(marked))
        .map(|x| ln_choose(lf, marked, x) + ln_choose(lf, population - marked, draws - x) - total)
        .filter(|v| v.is_finite())
        .collect();
    log_sum_exp(&terms) / std::f64::consts::LN_2
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

impl GraphRule {
    /// The bounds for a given n, k, t (see the module doc): (privacy, correctness), as log2.
    pub fn failure_log2(&self, n: u32, degree: u32, threshold: u32) -> (f64, f64) {
        self.bounds(&ln_factorials(n as usize), n as usize, degree as usize, threshold as usize)
    }

    fn bounds(&self, lf: &[f64], n: usize, k: usize, t: usize) -> (f64, f64) {
        use std::f64::consts::LN_2;
        let colluders = ((self.colluding_fraction * n as f64).floor() as usize).min(n - 1);
        let dropped = self.dropouts(n);
        let union = (n as f64).log2();
        let neighbourhood =
            hypergeometric_tail_log2(lf, n - 1, colluders, k, (2 * t).saturating_sub(k).max(1));
        // Disconnection needs two disjoint runs of h removed positions: union bound over the at most
        // n(n-1)/2 pairs of run starts.
        let (h, s) = (k / 2, (colluders + dropped).min(n));
        let disconnect = if k + 1 >= n || 2 * h > s {
            f64::NEG_INFINITY
        } else {
            (n as f64 * (n as f64 - 1.0) / 2.0).log2()
                + (ln_choose(lf, n - 2 * h, s - 2 * h) - ln_choose(lf, n, s)) / LN_2
                - union
        };
        let privacy = union + log_sum_exp(&[neighbourhood * LN_2, disconnect * LN_2]) / LN_2;
        let correctness = union + hypergeometric_tail_log2(lf, n - 1, dropped, k, k - t + 1);
        (privacy, correctness)
    }

    /// How many drop-outs the rule plans for among `n` clients: `floor(δ n)`, at least `min_dropouts`, but
    /// never more than even the complete graph survives while keeping `2t > k`: with `k = n - 1` and
    /// `d` drop-outs the threshold must satisfy `k / 2 < t <= k - d`, so `d <= (n - 2) / 2` (rounded
    /// down). A cohort of three or two therefore tolerates none: every member must finish its round.
    fn dropouts(&self, n: usize) -> usize {
        ((self.dropout_fraction * n as f64).floor() as usize)
            .max(self.min_dropouts as usize)
            .min(n.saturating_sub(2) / 2)
    }

    /// How many drop-outs a round of `n` clients tolerates under this rule (see [`Self::choose`]).
    pub fn tolerated_dropouts(&self, n: u32) -> u32 {
        self.dropouts(n as usize) as u32
    }

    /// The smallest valid degree with a threshold meeting both bounds for `n` clients (see the module
    /// doc). An error if not even the complete graph does.
    pub fn choose(&self, n: u32) -> Result<GraphChoice, SecAggError> {
        let fractions_ok =
            (0.0..1.0).contains(&self.colluding_fraction) && (0.0..1.0).contains(&self.dropout_fraction);
        if !fractions_ok {
            return Err(SecAggError::InvalidParameter {
                name: "graph rule",
                reason: "colluding and drop-out fractions must lie in [0, 1)".into(),
            });
        }
        if n < 3 {
            return Err(SecAggError::InvalidParameter {
                name: "n",
                reason: format!("{n} clients; at least 3"),
            });
        }
        let lf = ln_factorials(n as usize);
        let degrees = (2..n - 1).step_by(2).chain(std::iter::once(n - 1));
        for k in degrees {
            for t in (k / 2 + 1..=k).rev() {
                let (privacy, correctness) = self.bounds(&lf, n as usize, k as usize, t as usize);
                if correctness > -f64::from(self.correctness_bits) {
                    continue;
                }
                if privacy <= -f64::from(self.security_bits) {
                    return Ok(GraphChoice {
                        degree: k,
                        threshold: t,
                        security_log2: privacy,
                        correctness_log2: correctness,
                    });
                }
                // Smaller t only weakens privacy.
                break;
            }
        }
        Err(SecAggError::InvalidParameter {
            name: "graph rule",
            reason: format!(
                "no degree and threshold for {n} clients keep privacy within 2^-{} and aborts within 2^-{} \
                 against a colluding fraction {} and a drop-out fraction {}",
                self.security_bits, self.correctness_bits, self.colluding_fraction, self.dropout_fraction
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harary_graph_is_symmetric_regular_and_seed_dependent() {
        for suite in [SuiteId::International, SuiteId::National] {
            for (n, k) in [(10u32, 4u32), (50, 16), (7, 6), (101, 20)] {
                let g = NeighbourGraph::new(suite, n, k, &[3; 32]);
                for u in 0..n {
                    let ns = g.neighbours(u);
                    assert_eq!(ns.len(), k.min(n - 1) as usize, "n {n} k {k} u {u}");
                    assert!(!ns.contains(&u));
                    for &v in ns {
                        assert!(g.are_neighbours(v, u), "asymmetric {u} {v}");
                    }
                }
            }
            assert_ne!(
                NeighbourGraph::new(suite, 50, 8, &[1; 32]),
                NeighbourGraph::new(suite, 50, 8, &[2; 32])
            );
            assert_eq!(
                NeighbourGraph::new(suite, 50, 8, &[1; 32]),
                NeighbourGraph::new(suite, 50, 8, &[1; 32])
            );
        }
    }

    #[test]
    fn the_rule_yields_log_degree_and_meets_its_bounds() {
        let rule = GraphRule::default();
        let mut rows = Vec::new();
        for n in [10u32, 50, 100, 1000, 10000] {
            let c = rule.choose(n).unwrap();
            assert!(2 * c.threshold > c.degree && c.threshold <= c.degree);
            assert!(c.security_log2 <= -40.0 && c.correctness_log2 <= -20.0);
            rows.push((n, c));
        }
        // Sparse once n is large: the degree grows far slower than n.
        assert!(rows[3].1.degree < 200 && rows[4].1.degree < 250, "{rows:?}");
        for (n, c) in &rows {
            println!(
                "n {n:>6}: k {:>5} t {:>5} privacy 2^{:.1} abort 2^{:.1}",
                c.degree, c.threshold, c.security_log2, c.correctness_log2
            );
        }
    }

    #[test]
    fn hypergeometric_tail_matches_a_direct_count() {
        // 10 items, 3 marked, draw 4: P[X >= 2] = (C(3,2)C(7,2) + C(3,3)C(7,1)) / C(10,4) = (63 + 7) / 210.
        let lf = ln_factorials(10);
        let p = hypergeometric_tail_log2(&lf, 10, 3, 4, 2).exp2();
        assert!((p - 70.0 / 210.0).abs() < 1e-12, "{p}");
        assert_eq!(hypergeometric_tail_log2(&lf, 10, 3, 4, 4), f64::NEG_INFINITY);
    }

    #[test]
    fn impossible_rules_are_errors() {
        // 12 colluders need t >= 16 of 19; 6 drop-outs leave at most 13 holders.
        let rule = GraphRule { colluding_fraction: 0.6, dropout_fraction: 0.3, ..GraphRule::default() };
        assert!(rule.choose(20).is_err());
        // With two drop-outs, k = 18 and t = 16 do: 2t - k = 14 exceeds the 12 colluders, 18 - 16 = 2
        // holders may drop, and 14 removed clients cannot cut the ring in two runs of 9.
        let ok = GraphRule { colluding_fraction: 0.6, ..GraphRule::default() }.choose(20).unwrap();
        assert_eq!((ok.degree, ok.threshold), (18, 16));
        assert!(GraphRule::default().choose(2).is_err());
    }

    #[test]
    fn small_cohorts_trade_drop_out_tolerance_for_privacy() {
        let rule = GraphRule::default();
        // Three clients: the complete graph with threshold 2, every member must finish.
        let three = rule.choose(3).unwrap();
        assert_eq!((three.degree, three.threshold, rule.tolerated_dropouts(3)), (2, 2, 0));
        assert_eq!(three.security_log2, f64::NEG_INFINITY);
        // Four and five: one drop-out, as the rule's floor asks.
        for n in [4u32, 5] {
            let c = rule.choose(n).unwrap();
            assert_eq!((c.degree, c.threshold, rule.tolerated_dropouts(n)), (n - 1, 2 + n - 4, 1), "n {n}");
            assert!(2 * c.threshold > c.degree);
        }
        assert_eq!(rule.tolerated_dropouts(10), 1);
        assert_eq!(rule.tolerated_dropouts(50), 5);
        assert!(GraphRule { dropout_fraction: 1.5, ..GraphRule::default() }.choose(20).is_err());
    }
}
