//! Round parameters: what every message of a round is bound to, validated once.
//!
//! Responsibility: turn a raw [`RoundConfig`] into [`RoundParams`] (checked ranges, the context hash)
//! and derive the decoding [`Limits`]. It knows nothing of keys or messages. The neighbour graph is not
//! a parameter: its seed is drawn jointly by the clients during the round ([`super::graph`]).
//!
//! The context hash covers the suite, job id, round number, roster (every verifying key, in order), n,
//! t, k, vector length, modulus bits, instance and survivor floor. It opens every wire
//! message, is signed in every signature and is the associated data (with the two clients' indices) of
//! every encrypted share, so a message of one round, attempt, job or parameter set is refused by every
//! other.

use std::fmt;

use hearth_crypto::suite::{SuiteId, DIGEST_LEN};

use super::graph::NeighbourGraph;
use super::SecAggError;

/// Most clients one round may have.
pub const MAX_CLIENTS: u32 = 1 << 16;
/// Longest vector one round may aggregate (2^28 elements: 1 GiB at 4 bytes).
pub const MAX_VECTOR_LEN: u32 = 1 << 28;
/// Longest job id.
pub const MAX_JOB_ID_LEN: usize = 256;
/// Longest verifying key in the roster.
pub const MAX_VERIFYING_KEY_LEN: usize = 256;

/// A client's position in the roster: 0..n.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientIndex(pub u32);

impl fmt::Display for ClientIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

/// The unvalidated description of a round, as the coordinator announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundConfig {
    /// Algorithm suite of the consortium.
    pub suite: SuiteId,
    /// Job identifier (opaque bytes, at most [`MAX_JOB_ID_LEN`]).
    pub job_id: Vec<u8>,
    /// Round number within the job.
    pub round: u64,
    /// The cohort: client i's protocol-signing verifying key at position i. Where the keys come from
    /// (certificates, a registry) is the caller's business.
    pub roster: Vec<Vec<u8>>,
    /// Graph degree k: even and below n − 1, or n − 1 for the complete graph. See
    /// [`super::GraphRule`] to choose it.
    pub degree: u32,
    /// Shamir threshold t: `k/2 < t <= k`.
    pub threshold: u32,
    /// Length d of the vectors summed.
    pub vector_len: u32,
    /// The sum is computed modulo 2^bits, 2..=32 (see [`super::Quantizer`]).
    pub modulus_bits: u8,
    /// A fresh number per attempt of a round: a retried round is another instance, and no message of one
    /// instance verifies in another.
    pub instance: u64,
    /// No client signs a survivor set smaller than this (nor than the threshold t): the sum a client
    /// helps unmask covers at least this many inputs. At most n.
    pub min_survivors: u32,
}

/// A validated round: every message of the protocol is checked against it.
#[derive(Debug, Clone)]
pub struct RoundParams {
    config: RoundConfig,
    context: [u8; DIGEST_LEN],
    limits: Limits,
}

fn invalid(name: &'static str, reason: String) -> SecAggError {
    SecAggError::InvalidParameter { name, reason }
}

/// Encoded public-key length of the suite's key agreement.
pub(crate) fn agreement_key_len(suite: SuiteId) -> usize {
    match suite {
        SuiteId::International => 32,
        SuiteId::National => 65,
    }
}

impl RoundParams {
    /// Checks every range, builds the graph and computes the context hash.
    pub fn new(config: RoundConfig) -> Result<Self, SecAggError> {
        let n = u32::try_from(config.roster.len()).unwrap_or(u32::MAX);
        if !(3..=MAX_CLIENTS).contains(&n) {
            return Err(invalid("roster", format!("{n} clients; must be 3..={MAX_CLIENTS}")));
        }
        if let Some((i, k)) =
            config.roster.iter().enumerate().find(|(_, k)| k.is_empty() || k.len() > MAX_VERIFYING_KEY_LEN)
        {
            return Err(invalid("roster", format!("verifying key {i} has {} bytes", k.len())));
        }
        if config.job_id.len() > MAX_JOB_ID_LEN {
            return Err(invalid(
                "job_id",
                format!("{} bytes; at most {MAX_JOB_ID_LEN}", config.job_id.len()),
            ));
        }
        let k = config.degree;
        if !(k == n - 1 || (k >= 2 && k < n - 1 && k % 2 == 0)) {
            return Err(invalid(
                "degree",
                format!("{k} for {n} clients; must be even and below {}, or {}", n - 1, n - 1),
            ));
        }
        let t = config.threshold;
        if !(2 * t > k && t <= k) {
            return Err(invalid("threshold", format!("{t} for degree {k}; must satisfy k/2 < t <= k")));
        }
        if !(1..=MAX_VECTOR_LEN).contains(&config.vector_len) {
            return Err(invalid(
                "vector_len",
                format!("{}; must be 1..={MAX_VECTOR_LEN}", config.vector_len),
            ));
        }
        if config.min_survivors > n {
            return Err(invalid(
                "min_survivors",
                format!("{} for {n} clients; must be at most n", config.min_survivors),
            ));
        }
        if !(2..=32).contains(&config.modulus_bits) {
            return Err(invalid("modulus_bits", format!("{}; must be 2..=32", config.modulus_bits)));
        }
        let context = context_hash(&config);
        let limits = Limits {
            context,
            n,
            degree: k,
            vector_len: config.vector_len,
            modulus_bits: config.modulus_bits,
            agreement_key_len: agreement_key_len(config.suite),
        };
        Ok(Self { config, context, limits })
    }

    /// The configuration this was validated from.
    pub fn config(&self) -> &RoundConfig {
        &self.config
    }

    /// The suite.
    pub fn suite(&self) -> SuiteId {
        self.config.suite
    }

    /// Number of clients n.
    pub fn n(&self) -> u32 {
        self.limits.n
    }

    /// Shamir threshold t.
    pub fn threshold(&self) -> usize {
        self.config.threshold as usize
    }

    /// The fewest survivors a client signs a survivor set for: the larger of t and `min_survivors`.
    pub fn survivor_floor(&self) -> usize {
        self.threshold().max(self.config.min_survivors as usize)
    }

    /// Vector length d.
    pub fn vector_len(&self) -> usize {
        self.config.vector_len as usize
    }

    /// Bits of the ring the sum lives in.
    pub fn modulus_bits(&self) -> u8 {
        self.config.modulus_bits
    }

    /// The context hash every message carries and every signature and share encryption binds.
    pub fn context(&self) -> &[u8; DIGEST_LEN] {
        &self.context
    }

    /// The neighbour graph of this round for a graph seed (see [`super::graph::graph_seed`]).
    pub fn graph_for(&self, seed: &[u8; 32]) -> NeighbourGraph {
        NeighbourGraph::new(self.config.suite, self.limits.n, self.config.degree, seed)
    }

    /// The bounds every decoder of this round enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The verifying key of client `i`, if `i` is in the roster.
    pub fn verifying_key(&self, i: u32) -> Option<&[u8]> {
        self.config.roster.get(i as usize).map(Vec::as_slice)
    }
}

fn context_hash(c: &RoundConfig) -> [u8; DIGEST_LEN] {
    let suite = c.suite.suite();
    let n = c.roster.len() as u32;
    let mut parts: Vec<Vec<u8>> = vec![
        b"hearth-secagg/v1/context".to_vec(),
        c.suite.as_str().as_bytes().to_vec(),
        (c.job_id.len() as u32).to_le_bytes().to_vec(),
        c.job_id.clone(),
        c.round.to_le_bytes().to_vec(),
        n.to_le_bytes().to_vec(),
        c.threshold.to_le_bytes().to_vec(),
        c.degree.to_le_bytes().to_vec(),
        c.vector_len.to_le_bytes().to_vec(),
        vec![c.modulus_bits],
        c.instance.to_le_bytes().to_vec(),
        c.min_survivors.to_le_bytes().to_vec(),
    ];
    for key in &c.roster {
        parts.push((key.len() as u32).to_le_bytes().to_vec());
        parts.push(key.clone());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    suite.hash(&refs)
}

/// What a decoder accepts: every length is checked against these before anything is allocated, and the
/// context hash must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Expected context hash.
    pub context: [u8; DIGEST_LEN],
    /// Roster size: every client index must be below it.
    pub n: u32,
    /// Graph degree: no list of neighbours is longer.
    pub degree: u32,
    /// Exact length of a masked vector.
    pub vector_len: u32,
    /// Every element of a masked vector is below 2^modulus_bits.
    pub modulus_bits: u8,
    /// Exact length of an encoded key-agreement public key.
    pub agreement_key_len: usize,
}

impl Limits {
    /// Bytes per element of a masked vector on the wire: ceil(bits / 8).
    pub fn word_bytes(&self) -> usize {
        usize::from(self.modulus_bits).div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config(n: usize) -> RoundConfig {
        RoundConfig {
            suite: SuiteId::International,
            job_id: b"job-7".to_vec(),
            round: 3,
            roster: (0..n).map(|i| vec![i as u8 + 1; 65]).collect(),
            degree: 4,
            threshold: 3,
            vector_len: 10,
            modulus_bits: 32,
            instance: 11,
            min_survivors: 5,
        }
    }

    #[test]
    fn every_field_changes_the_context() {
        let base = RoundParams::new(config(8)).unwrap();
        let variants: Vec<RoundConfig> = vec![
            RoundConfig { suite: SuiteId::National, ..config(8) },
            RoundConfig { job_id: b"job-8".to_vec(), ..config(8) },
            RoundConfig { round: 4, ..config(8) },
            RoundConfig { degree: 6, threshold: 4, ..config(8) },
            RoundConfig { threshold: 4, ..config(8) },
            RoundConfig { vector_len: 11, ..config(8) },
            RoundConfig { modulus_bits: 31, ..config(8) },
            RoundConfig { instance: 12, ..config(8) },
            RoundConfig { min_survivors: 6, ..config(8) },
            config(9),
            RoundConfig {
                roster: {
                    let mut r = config(8).roster;
                    r.swap(0, 1);
                    r
                },
                ..config(8)
            },
        ];
        for v in variants {
            assert_ne!(RoundParams::new(v.clone()).unwrap().context(), base.context(), "{v:?}");
        }
    }

    #[test]
    fn out_of_range_configs_are_refused() {
        let bad = [
            RoundConfig { roster: vec![vec![1]; 2], degree: 1, threshold: 1, ..config(2) },
            RoundConfig { degree: 3, ..config(8) },
            RoundConfig { degree: 8, ..config(8) },
            RoundConfig { threshold: 2, ..config(8) },
            RoundConfig { threshold: 5, ..config(8) },
            RoundConfig { vector_len: 0, ..config(8) },
            RoundConfig { modulus_bits: 33, ..config(8) },
            RoundConfig { job_id: vec![0; 257], ..config(8) },
            RoundConfig { min_survivors: 9, ..config(8) },
            RoundConfig {
                roster: {
                    let mut r = config(8).roster;
                    r[3].clear();
                    r
                },
                ..config(8)
            },
        ];
        for c in bad {
            assert!(
                matches!(RoundParams::new(c.clone()), Err(SecAggError::InvalidParameter { .. })),
                "{c:?}"
            );
        }
        let complete = RoundParams::new(RoundConfig { degree: 7, threshold: 4, ..config(8) }).unwrap();
        assert_eq!(complete.graph_for(&[3; 32]).neighbours(0).len(), 7);
    }
}
