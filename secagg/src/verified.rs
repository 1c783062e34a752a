//! What a client establishes before it takes part in a round, as types no caller can skip.
//!
//! A server (the coordinator) announces a roster and the round's terms; a client that took them at their
//! word could be placed among Sybils of the server, or in a graph too sparse to hide its input. So
//! [`start_client`](super::start_client) takes only a [`ClientRound`], and a `ClientRound` is built only by
//! [`ClientRound::new`] from a [`VerifiedRoster`], which is built only by [`VerifiedRoster::verify`]:
//!
//! - every announced member goes through the caller's [`MemberVerifier`], which establishes who the
//!   member is and which protocol key it signs with (Hearth's participant checks the certificate against
//!   the consortium CA, its role and the member list the institutions signed; this library knows no
//!   certificates). Keys come from the verifier, never from the announcement;
//! - no identity and no protocol key appears twice;
//! - the roster has at least the client's own floor of members (and at least 3);
//! - the client's own entry is its own identity, as the caller knows it (its own certificate);
//! - the announced degree and threshold keep the privacy bound of the client's [`GraphRule`] for the
//!   roster's size: the client computes it itself;
//! - the announced survivor floor reaches the client's own floor.
//!
//! As with a TLS library's verified-certificate types, the verifier is the caller's: a verifier that
//! accepts everything gets a roster of whatever was announced. What the types guarantee is that no round
//! starts without a verifier having been asked about every member and without the checks above.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use hearth_crypto::suite::SuiteId;

use super::graph::GraphRule;
use super::params::{ClientIndex, RoundConfig, RoundParams};
use super::SecAggError;

/// A roster member whose identity and protocol verifying key a [`MemberVerifier`] established.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedMember {
    id: String,
    verifying_key: Vec<u8>,
}

impl VerifiedMember {
    /// A member as the caller's verifier established it: `id` from its certificate (or whatever the
    /// caller's trust rests on), `verifying_key` its protocol key from the same source.
    pub fn new(id: impl Into<String>, verifying_key: impl Into<Vec<u8>>) -> Self {
        Self { id: id.into(), verifying_key: verifying_key.into() }
    }

    /// The member's identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The member's protocol verifying key.
    pub fn verifying_key(&self) -> &[u8] {
        &self.verifying_key
    }
}

impl fmt::Debug for VerifiedMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifiedMember({:?})", self.id)
    }
}

/// Establishes who an announced roster member is. Implemented by the caller, which holds the trust
/// anchors (Hearth's participant: the consortium CA, roles, the signed member list).
pub trait MemberVerifier {
    /// A member as the server announced it (Hearth: a participant id and a certificate).
    type Announced;

    /// Verifies member `index` of the announced roster, or says which check it fails.
    fn verify_member(
        &self,
        index: usize,
        announced: &Self::Announced,
    ) -> Result<VerifiedMember, MemberRefusal>;
}

/// Why a [`MemberVerifier`] refused an announced member. Each names the member by its roster index.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberRefusal {
    /// Its credential does not verify against the caller's trust anchor (an unknown issuer, an expired or
    /// malformed certificate).
    #[error("roster member {index} ({claimed:?}): certificate: {reason}")]
    Credential {
        /// Roster index.
        index: usize,
        /// Who the server says it is.
        claimed: String,
        /// What the credential check said.
        reason: String,
    },
    /// Its credential names someone other than the server says.
    #[error("roster member {index} claims to be {claimed:?}, its certificate says {actual}")]
    Misnamed {
        /// Roster index.
        index: usize,
        /// Who the server says it is.
        claimed: String,
        /// Who its credential says it is.
        actual: String,
    },
    /// Its credential is for a role that takes no part in rounds (a coordinator, an operator, an app).
    #[error("roster member {index} is {who}: only participants may be members")]
    NotAParticipant {
        /// Roster index.
        index: usize,
        /// Its identity, role included.
        who: String,
    },
    /// It is not on the member list the caller trusts, or not with this credential.
    #[error(
        "roster member {index} ({who}) with this certificate is not on the member list the institutions signed \
         (version {list_version})"
    )]
    NotListed {
        /// Roster index.
        index: usize,
        /// Its identity.
        who: String,
        /// The member list's version.
        list_version: u64,
    },
    /// Its credential carries no protocol key of the round's suite.
    #[error("roster member {index}: {reason}")]
    NoProtocolKey {
        /// Roster index.
        index: usize,
        /// What is missing.
        reason: String,
    },
}

/// Why a client refuses the round a server announced, before taking part in it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoundRefusal {
    /// The verifier refused a member.
    #[error(transparent)]
    Member(#[from] MemberRefusal),
    /// The client's index is not in the roster.
    #[error("my index {index} is outside the roster of {n}")]
    OwnIndexOutside {
        /// The announced index.
        index: u32,
        /// Roster size.
        n: usize,
    },
    /// Fewer members than the client's floor (and at least 3).
    #[error("the roster has {n} members; this participant takes part only with at least {floor}")]
    TooFewMembers {
        /// Roster size.
        n: usize,
        /// The client's floor.
        floor: usize,
    },
    /// One identity twice.
    #[error("roster member {index} ({id}) appears more than once")]
    RepeatedMember {
        /// The second occurrence.
        index: usize,
        /// The identity.
        id: String,
    },
    /// One protocol key for two members.
    #[error("roster members {first} and {second} ({id}) share one protocol key")]
    SharedKey {
        /// The first member with the key.
        first: usize,
        /// The second.
        second: usize,
        /// The second's identity.
        id: String,
    },
    /// The entry at the client's index is someone else.
    #[error("the roster lists {listed:?} at my index, I am {own:?}")]
    ForeignOwnEntry {
        /// Who the roster lists there.
        listed: String,
        /// The client.
        own: String,
    },
    /// The degree and threshold keep privacy only within a larger failure probability than the client's
    /// rule allows for this roster size.
    #[error(
        "degree {degree} and threshold {threshold} for {n} members keep privacy only within 2^{privacy_log2:.1}; \
         this participant requires 2^-{security_bits} (the degree and threshold it would choose: {})",
        .would_choose.map_or_else(|| "none".to_string(), |(k, t)| format!("{k} and {t}"))
    )]
    WeakGraph {
        /// Announced degree.
        degree: u32,
        /// Announced threshold.
        threshold: u32,
        /// Roster size.
        n: u32,
        /// log2 of the privacy failure probability they give (NaN: no bound).
        privacy_log2: f64,
        /// The client's σ.
        security_bits: u32,
        /// The degree and threshold the client's rule chooses, if any.
        would_choose: Option<(u32, u32)>,
    },
    /// The client would sign survivor sets smaller than its own floor.
    #[error("the round would unmask a sum over as few as {fewest} survivors; this participant requires at least {floor}")]
    SurvivorFloor {
        /// The fewest survivors the announced terms let a client sign for.
        fewest: u32,
        /// The client's floor.
        floor: u32,
    },
}

/// A client's own floors: what it requires of any round, whatever the server announces.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// The client's own identity, as its verifier would report it for its own entry.
    pub own_id: String,
    /// The fewest members a roster may have (at least 3 in any case).
    pub min_members: usize,
    /// The fewest survivors this round needs for this client (its DP noise's calibration, its
    /// institution's policy); with `min_members`, the announced survivor floor (or the threshold, if
    /// larger) must reach it.
    pub min_survivors: u32,
    /// The rule whose privacy bound the announced degree and threshold must keep.
    pub rule: GraphRule,
}

/// A roster every member of which was verified, without repeats, at least the client's floor long,
/// with the client's own entry at its index. Built only by [`VerifiedRoster::verify`].
#[derive(Debug, Clone)]
pub struct VerifiedRoster {
    members: Vec<VerifiedMember>,
    me: ClientIndex,
}

impl VerifiedRoster {
    /// Verifies the `announced` roster, in which this client is at `own_index`.
    pub fn verify<V: MemberVerifier>(
        announced: &[V::Announced],
        own_index: u32,
        verifier: &V,
        policy: &ClientPolicy,
    ) -> Result<Self, SecAggError> {
        let n = announced.len();
        if own_index as usize >= n {
            return Err(RoundRefusal::OwnIndexOutside { index: own_index, n }.into());
        }
        let floor = policy.min_members.max(3);
        if n < floor {
            return Err(RoundRefusal::TooFewMembers { n, floor }.into());
        }
        let mut members: Vec<VerifiedMember> = Vec::with_capacity(n);
        let mut ids = HashSet::with_capacity(n);
        let mut keys: HashMap<Vec<u8>, usize> = HashMap::with_capacity(n);
        for (i, a) in announced.iter().enumerate() {
            let m = verifier.verify_member(i, a).map_err(RoundRefusal::from)?;
            if !ids.insert(m.id.clone()) {
                return Err(RoundRefusal::RepeatedMember { index: i, id: m.id }.into());
            }
            if let Some(&first) = keys.get(&m.verifying_key) {
                return Err(RoundRefusal::SharedKey { first, second: i, id: m.id }.into());
            }
            keys.insert(m.verifying_key.clone(), i);
            members.push(m);
        }
        let mine = &members[own_index as usize];
        if mine.id != policy.own_id {
            return Err(RoundRefusal::ForeignOwnEntry {
                listed: mine.id.clone(),
                own: policy.own_id.clone(),
            }
            .into());
        }
        Ok(Self { members, me: ClientIndex(own_index) })
    }

    /// The members, in roster order.
    pub fn members(&self) -> &[VerifiedMember] {
        &self.members
    }

    /// This client's index.
    pub fn me(&self) -> ClientIndex {
        self.me
    }
}

/// What a server announces about a round besides its roster (see [`RoundConfig`] for each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundTerms {
    /// Algorithm suite.
    pub suite: SuiteId,
    /// Job identifier.
    pub job_id: Vec<u8>,
    /// Round number within the job.
    pub round: u64,
    /// Graph degree k.
    pub degree: u32,
    /// Shamir threshold t.
    pub threshold: u32,
    /// Vector length d.
    pub vector_len: u32,
    /// The sum is computed modulo 2^bits.
    pub modulus_bits: u8,
    /// The attempt's fresh number.
    pub instance: u64,
    /// No client signs a survivor set smaller than this.
    pub min_survivors: u32,
}

impl From<&RoundConfig> for RoundTerms {
    fn from(c: &RoundConfig) -> Self {
        Self {
            suite: c.suite,
            job_id: c.job_id.clone(),
            round: c.round,
            degree: c.degree,
            threshold: c.threshold,
            vector_len: c.vector_len,
            modulus_bits: c.modulus_bits,
            instance: c.instance,
            min_survivors: c.min_survivors,
        }
    }
}

/// A round this client checked and may take part in: the only way to [`start_client`](super::start_client).
#[derive(Debug, Clone)]
pub struct ClientRound {
    params: Arc<RoundParams>,
    me: ClientIndex,
}

impl ClientRound {
    /// Checks the announced `terms` against the client's `policy` for the verified `roster` and builds the
    /// round's parameters: the degree and threshold must keep `policy.rule`'s privacy bound for the
    /// roster's size, and the survivor floor must reach the client's own.
    pub fn new(
        terms: RoundTerms,
        roster: VerifiedRoster,
        policy: &ClientPolicy,
    ) -> Result<Self, SecAggError> {
        let n = u32::try_from(roster.members.len()).unwrap_or(u32::MAX);
        let rule = &policy.rule;
        let (privacy_log2, _) = rule.failure_log2(n, terms.degree.min(n - 1), terms.threshold);
        if privacy_log2.is_nan() || privacy_log2 > -f64::from(rule.security_bits) {
            return Err(RoundRefusal::WeakGraph {
                degree: terms.degree,
                threshold: terms.threshold,
                n,
                privacy_log2,
                security_bits: rule.security_bits,
                would_choose: rule.choose(n).ok().map(|c| (c.degree, c.threshold)),
            }
            .into());
        }
        let floor = policy.min_survivors.max(u32::try_from(policy.min_members).unwrap_or(u32::MAX));
        // No client signs a survivor set below the larger of t and the announced floor.
        let fewest = terms.min_survivors.max(terms.threshold);
        if fewest < floor {
            return Err(RoundRefusal::SurvivorFloor { fewest, floor }.into());
        }
        let me = roster.me;
        let params = RoundParams::new(RoundConfig {
            suite: terms.suite,
            job_id: terms.job_id,
            round: terms.round,
            roster: roster.members.into_iter().map(|m| m.verifying_key).collect(),
            degree: terms.degree,
            threshold: terms.threshold,
            vector_len: terms.vector_len,
            modulus_bits: terms.modulus_bits,
            instance: terms.instance,
            min_survivors: terms.min_survivors,
        })?;
        Ok(Self { params: Arc::new(params), me })
    }

    /// A round from parameters built elsewhere in this crate (the in-process simulation and the tests,
    /// whose rosters are their own keys).
    pub(crate) fn from_params(params: Arc<RoundParams>, me: ClientIndex) -> Self {
        Self { params, me }
    }

    /// The round's parameters.
    pub fn params(&self) -> &Arc<RoundParams> {
        &self.params
    }

    /// This client's index.
    pub fn me(&self) -> ClientIndex {
        self.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Announced members are (id, key); the verifier refuses ids starting with "coordinator".
    struct Names;

    impl MemberVerifier for Names {
        type Announced = (String, Vec<u8>);

        fn verify_member(
            &self,
            i: usize,
            (id, key): &(String, Vec<u8>),
        ) -> Result<VerifiedMember, MemberRefusal> {
            if id.starts_with("coordinator") {
                return Err(MemberRefusal::NotAParticipant { index: i, who: id.clone() });
            }
            Ok(VerifiedMember::new(id.clone(), key.clone()))
        }
    }

    fn roster(n: usize) -> Vec<(String, Vec<u8>)> {
        (0..n).map(|i| (format!("p{i}"), vec![i as u8 + 1; 65])).collect()
    }

    fn policy() -> ClientPolicy {
        ClientPolicy { own_id: "p0".into(), min_members: 3, min_survivors: 0, rule: GraphRule::default() }
    }

    fn terms(n: u32) -> RoundTerms {
        let c = GraphRule::default().choose(n).unwrap();
        RoundTerms {
            suite: SuiteId::International,
            job_id: b"j".to_vec(),
            round: 1,
            degree: c.degree,
            threshold: c.threshold,
            vector_len: 4,
            modulus_bits: 32,
            instance: 1,
            min_survivors: 3,
        }
    }

    fn refusal(r: Result<impl fmt::Debug, SecAggError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn a_round_starts_only_from_a_verified_roster_and_checked_terms() {
        let v = VerifiedRoster::verify(&roster(5), 0, &Names, &policy()).unwrap();
        assert_eq!(v.members()[2].id(), "p2");
        let round = ClientRound::new(terms(5), v, &policy()).unwrap();
        assert_eq!((round.params().n(), round.me()), (5, ClientIndex(0)));
        // The verifier's refusal is the roster's.
        let mut sybils = roster(5);
        sybils[1].0 = "coordinator".into();
        assert!(refusal(VerifiedRoster::verify(&sybils, 0, &Names, &policy())).contains("only participants"));
    }

    #[test]
    fn repeated_members_or_keys_short_rosters_and_a_foreign_own_entry_are_refused() {
        let mut twice = roster(5);
        twice[3].0 = "p1".into();
        let e = refusal(VerifiedRoster::verify(&twice, 0, &Names, &policy()));
        assert!(e.contains("roster member 3 (p1) appears more than once"), "{e}");
        let mut shared = roster(5);
        shared[4].1 = shared[2].1.clone();
        let e = refusal(VerifiedRoster::verify(&shared, 0, &Names, &policy()));
        assert!(e.contains("roster members 2 and 4 (p4) share one protocol key"), "{e}");
        let strict = ClientPolicy { min_members: 6, ..policy() };
        let e = refusal(VerifiedRoster::verify(&roster(5), 0, &Names, &strict));
        assert!(e.contains("at least 6"), "{e}");
        // Even with a floor of 0 configured, no roster below 3.
        let lax = ClientPolicy { min_members: 0, ..policy() };
        assert!(refusal(VerifiedRoster::verify(&roster(2), 0, &Names, &lax)).contains("at least 3"));
        let e = refusal(VerifiedRoster::verify(&roster(5), 1, &Names, &policy()));
        assert!(e.contains("the roster lists \"p1\" at my index, I am \"p0\""), "{e}");
        assert!(refusal(VerifiedRoster::verify(&roster(5), 5, &Names, &policy())).contains("outside"));
    }

    #[test]
    fn weak_terms_and_survivor_floors_below_the_clients_are_refused() {
        let v = || VerifiedRoster::verify(&roster(50), 0, &Names, &policy()).unwrap();
        let weak = RoundTerms { degree: 2, threshold: 2, ..terms(50) };
        let e = refusal(ClientRound::new(weak, v(), &policy()));
        assert!(e.contains("degree 2 and threshold 2 for 50 members"), "{e}");
        // Six members, t = 3: a floor of 3 announced where this client's DP noise needs 5 survivors.
        let six = || VerifiedRoster::verify(&roster(6), 0, &Names, &policy()).unwrap();
        let dp = ClientPolicy { min_survivors: 5, ..policy() };
        let e = refusal(ClientRound::new(terms(6), six(), &dp));
        assert!(e.contains("as few as 3 survivors; this participant requires at least 5"), "{e}");
        let round = ClientRound::new(RoundTerms { min_survivors: 5, ..terms(6) }, six(), &dp).unwrap();
        assert_eq!(round.params().survivor_floor(), 5);
        // With 50 members t = 17 already exceeds the floor: the round is accepted as announced.
        assert!(ClientRound::new(terms(50), v(), &dp).is_ok());
    }
}
