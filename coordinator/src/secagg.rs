//! The coordinator's side of a secure-aggregation round.
//!
//! It drives the protocol's server phases (`hearth_secagg`), relays each phase's outgoing messages
//! to the participants they are addressed to, and turns the unmasked *sum* into the example-weighted
//! average update. It never holds an individual update in the clear: a masked upload is handed to the
//! server state, which folds it into a running sum and keeps nothing else of it, and the only result of a
//! round is the `UnmaskedSum`. There is no code path here that receives an unmasked update.
//!
//! What a participant masks is `[w·δ_1, …, w·δ_d, w, w·loss]` with `w = min(n, cap) / cap` for its `n`
//! training examples: the sum divided by its second-to-last coordinate is exactly the example-weighted
//! mean delta of plain federated averaging (for participants under the cap), and the coordinator learns
//! only the total example count and the mean loss.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_crypto::SuiteId;
use hearth_secagg::{
    ClientIndex, GraphRule, Quantizer, QuantizerSpec, RoundConfig, RoundParams, SecAggError, ServerAdvertise,
    ServerConsistency, ServerMaskedInput, ServerReveal, ServerShareKeys, ServerUnmasking, UnmaskedSum,
};

use crate::aggregate::Aggregator;
use crate::error::DecodeError;

/// Longest a phase other than the masked upload waits for a participant that is still connected.
pub(crate) const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Values are summed modulo 2^32: u32 words, the fastest masking.
pub(crate) const MODULUS_BITS: u8 = 32;
/// Default per-coordinate clip of a weighted update: CLINC150 deltas stay under 3 (measured over the 20
/// rounds of the demo), so 8 never binds there and still leaves 2^31 / (8 n) quantisation levels per unit.
pub(crate) const DEFAULT_CLIP: f64 = 8.0;
/// Default example count at which a participant's weight saturates.
pub(crate) const DEFAULT_WEIGHT_CAP: f64 = 100_000.0;
/// Phases: 0 AdvertiseKeys, 1 SeedReveal, 2 ShareKeys, 3 MaskedInput, 4 ConsistencySignature,
/// 5 UnmaskShares.
pub(crate) const PHASES: u32 = 6;
/// The phase whose messages are the model-sized masked inputs.
pub(crate) const MASKED_PHASE: u32 = 3;

/// The protocol's server state, one variant per phase.
#[derive(Debug)]
enum ServerState {
    Advertise(ServerAdvertise),
    Reveal(ServerReveal),
    ShareKeys(ServerShareKeys),
    Masked(ServerMaskedInput),
    Consistency(ServerConsistency),
    Unmasking(ServerUnmasking),
    /// Closed or aborted: nothing more is accepted.
    Done,
}

/// Why a participant's secure-aggregation message was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecAggRefusal {
    /// The round is in another phase (late or early message).
    #[error("message for phase {got}, the round is in phase {current}")]
    WrongPhase { got: u32, current: u32 },
    /// The sender is not in this round's cohort.
    #[error("participant {0} is not in this round's cohort")]
    NotMember(String),
    /// The sender dropped out of an earlier phase and may not come back.
    #[error("participant {0} dropped out of an earlier phase of this round")]
    NotExpected(String),
    /// A second message from the same participant in one phase.
    #[error("participant {0} already sent its message for this phase")]
    Duplicate(String),
    /// The protocol refused the message (malformed, forged, replayed from another round, wrong shares...).
    #[error("{0}")]
    Protocol(#[from] SecAggError),
}

/// What closing a phase produced.
#[derive(Debug)]
pub(crate) enum PhaseOutcome {
    /// Messages for the next phase, addressed by participant id.
    Relay(Vec<(String, Vec<u8>)>),
    /// The round's result.
    Sum(UnmaskedSum),
}

/// One secure-aggregation round in progress.
#[derive(Debug)]
pub(crate) struct SecAggRound {
    pub(crate) round: u64,
    pub(crate) params: Arc<RoundParams>,
    pub(crate) quantizer: Quantizer,
    pub(crate) weight_cap: f64,
    /// Participant id of each client index.
    pub(crate) members: Vec<String>,
    /// The announcement stream each member had when the round opened: a member that reconnects lost its
    /// protocol state and counts as dropped out.
    subscriptions: Vec<u64>,
    index: HashMap<String, u32>,
    pub(crate) phase: u32,
    state: ServerState,
    /// Who may still send in this phase: those who completed the previous one.
    expected: BTreeSet<u32>,
    responded: BTreeSet<u32>,
    /// Members that declined the round (their own checks refused it): gone, like a drop-out; with the
    /// reason each gave (its own words, cut short), for the round's failure message.
    declined: BTreeSet<u32>,
    declined_why: BTreeMap<u32, String>,
    /// Reading a message right now.
    in_flight: BTreeSet<u32>,
    pub(crate) deadline: Instant,
    pub(crate) opened: Instant,
    /// Seconds from `opened` to the close of each phase so far.
    pub(crate) phase_seconds: Vec<f64>,
}

/// Where a secure round in progress lives while participants send it messages: a job's round or an
/// analytics query, registered in `Shared::secure` under its key (the job or query id).
#[derive(Debug, Default)]
pub(crate) struct SecureSlot {
    pub(crate) round: std::sync::Mutex<Option<SecAggRound>>,
    /// Woken when a message lands, a participant disconnects, or the round ends.
    pub(crate) changed: tokio::sync::Notify,
}

/// The public parameters the coordinator picks for a cohort.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) suite: SuiteId,
    pub(crate) job_id: String,
    pub(crate) round: u64,
    /// (participant id, protocol verifying key), in index order.
    pub(crate) cohort: Vec<(String, Vec<u8>)>,
    pub(crate) vector_len: usize,
    pub(crate) clip: f64,
    pub(crate) weight_cap: f64,
    /// Levels kept free for the sum of the participants' noise shares (DP rounds; 0 otherwise).
    pub(crate) noise_headroom: u64,
    /// No member signs a survivor set smaller than this.
    pub(crate) min_survivors: u32,
}

impl SecAggRound {
    /// Chooses the degree and threshold for the cohort and opens phase 0 (the members draw the graph seed
    /// together in phases 0 and 1).
    pub(crate) fn open(
        setup: Setup,
        subscriptions: Vec<u64>,
        deadline: Instant,
    ) -> Result<Self, SecAggError> {
        let n = u32::try_from(setup.cohort.len()).map_err(|_| SecAggError::InvalidParameter {
            name: "cohort",
            reason: "more than 2^32 participants".into(),
        })?;
        let choice = GraphRule::default().choose(n)?;
        // Every attempt of a round is a new instance: a participant joins each one once, and no message of
        // an earlier attempt verifies in this one.
        let mut instance = [0u8; 8];
        hearth_crypto::suite::fill_random(&mut instance)?;
        let vector_len = u32::try_from(setup.vector_len).map_err(|_| SecAggError::InvalidParameter {
            name: "vector_len",
            reason: format!("{} values is more than a round can carry", setup.vector_len),
        })?;
        let params = Arc::new(RoundParams::new(RoundConfig {
            suite: setup.suite,
            job_id: setup.job_id.into_bytes(),
            round: setup.round,
            roster: setup.cohort.iter().map(|(_, key)| key.clone()).collect(),
            degree: choice.degree,
            threshold: choice.threshold,
            vector_len,
            modulus_bits: MODULUS_BITS,
            // Never 0, which a message or relay uses to name no instance.
            instance: u64::from_le_bytes(instance) | 1,
            min_survivors: setup.min_survivors,
        })?);
        let quantizer = Quantizer::new(QuantizerSpec {
            clip: setup.clip,
            max_summands: n,
            noise_headroom: setup.noise_headroom,
            modulus_bits: MODULUS_BITS,
        })?;
        let members: Vec<String> = setup.cohort.into_iter().map(|(id, _)| id).collect();
        let index = members.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        Ok(Self {
            round: setup.round,
            state: ServerState::Advertise(ServerAdvertise::new(Arc::clone(&params))),
            params,
            quantizer,
            weight_cap: setup.weight_cap,
            members,
            subscriptions,
            index,
            phase: 0,
            expected: (0..n).collect(),
            responded: BTreeSet::new(),
            declined: BTreeSet::new(),
            declined_why: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            deadline,
            opened: Instant::now(),
            phase_seconds: Vec::new(),
        })
    }

    /// Records that member `who` declined the round: no phase waits for it any more, and it may send
    /// nothing more in it. Returns its index.
    pub(crate) fn decline(&mut self, who: &str, why: &str) -> Result<u32, SecAggRefusal> {
        let u = *self.index.get(who).ok_or_else(|| SecAggRefusal::NotMember(who.to_string()))?;
        self.declined.insert(u);
        self.declined_why.insert(u, why.chars().take(160).collect());
        self.expected.remove(&u);
        Ok(u)
    }

    /// Reserves `who`'s message slot for `phase`, before a byte of the message is read.
    pub(crate) fn begin(&mut self, who: &str, phase: u32) -> Result<u32, SecAggRefusal> {
        let u = *self.index.get(who).ok_or_else(|| SecAggRefusal::NotMember(who.to_string()))?;
        if phase != self.phase || matches!(self.state, ServerState::Done) {
            return Err(SecAggRefusal::WrongPhase { got: phase, current: self.phase });
        }
        if !self.expected.contains(&u) {
            return Err(SecAggRefusal::NotExpected(who.to_string()));
        }
        if self.responded.contains(&u) || !self.in_flight.insert(u) {
            return Err(SecAggRefusal::Duplicate(who.to_string()));
        }
        Ok(u)
    }

    /// Releases a slot whose message could not be read.
    pub(crate) fn abort(&mut self, u: u32) {
        self.in_flight.remove(&u);
    }

    /// Hands client `u`'s complete message for `phase` to the protocol. On refusal the protocol state is
    /// unchanged and the participant may not retry in this phase.
    pub(crate) fn receive(&mut self, u: u32, phase: u32, msg: &[u8]) -> Result<(), SecAggRefusal> {
        self.in_flight.remove(&u);
        if phase != self.phase {
            return Err(SecAggRefusal::WrongPhase { got: phase, current: self.phase });
        }
        let from = ClientIndex(u);
        let result = match &mut self.state {
            ServerState::Advertise(s) => s.receive(from, msg),
            ServerState::Reveal(s) => s.receive(from, msg),
            ServerState::ShareKeys(s) => s.receive(from, msg),
            ServerState::Masked(s) => s.receive(from, msg),
            ServerState::Consistency(s) => s.receive(from, msg),
            ServerState::Unmasking(s) => s.receive(from, msg),
            ServerState::Done => return Err(SecAggRefusal::WrongPhase { got: phase, current: self.phase }),
        };
        match result {
            Ok(()) => {
                self.responded.insert(u);
                Ok(())
            }
            Err(e) => {
                // A participant whose message was refused is out of the round.
                self.expected.remove(&u);
                Err(e.into())
            }
        }
    }

    /// Whether the phase can stop waiting: everyone expected answered or is gone (disconnected, or
    /// reconnected since the round opened), nobody mid-message.
    pub(crate) fn settled(&self, live: &HashMap<String, u64>) -> bool {
        self.in_flight.is_empty()
            && self.expected.iter().all(|&u| {
                let i = u as usize;
                self.responded.contains(&u)
                    || self.declined.contains(&u)
                    || self.members.get(i).and_then(|id| live.get(id)) != self.subscriptions.get(i)
            })
    }

    /// How many answered in this phase.
    pub(crate) fn responded(&self) -> usize {
        self.responded.len()
    }

    /// The members that have not answered the current phase, each with why it declined if it did
    /// (`p1 (declined: ...)`), for a failure message.
    pub(crate) fn silent_why(&self) -> impl Iterator<Item = String> + '_ {
        self.members.iter().enumerate().filter(|(i, _)| !self.responded.contains(&(*i as u32))).map(
            |(i, id)| match self.declined_why.get(&(i as u32)) {
                Some(why) => format!("{id} (declined: {why})"),
                None => id.clone(),
            },
        )
    }

    /// Closes the current phase. Phases 0 to 4 return the messages that open the next one; phase 5 returns
    /// the unmasked sum. An error aborts the round (fewer than t remain, or shares do not add up); the
    /// state is then `Done` and nothing was reconstructed.
    pub(crate) fn close_phase(&mut self, next_deadline: Instant) -> Result<PhaseOutcome, SecAggError> {
        let state = std::mem::replace(&mut self.state, ServerState::Done);
        let (next, out) = match state {
            ServerState::Advertise(s) => s.close().map(|(n, o)| (ServerState::Reveal(n), o))?,
            ServerState::Reveal(s) => s.close().map(|(n, o)| (ServerState::ShareKeys(n), o))?,
            ServerState::ShareKeys(s) => s.close().map(|(n, o)| (ServerState::Masked(n), o))?,
            ServerState::Masked(s) => s.close().map(|(n, o)| (ServerState::Consistency(n), o))?,
            ServerState::Consistency(s) => s.close().map(|(n, o)| (ServerState::Unmasking(n), o))?,
            ServerState::Unmasking(s) => {
                // Removing every survivor's self mask runs over the whole vector: on every core.
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let sum = s.close_with_threads(threads)?;
                self.phase_seconds.push(self.opened.elapsed().as_secs_f64());
                return Ok(PhaseOutcome::Sum(sum));
            }
            ServerState::Done => {
                return Err(SecAggError::InvalidParameter {
                    name: "phase",
                    reason: "the round is closed".into(),
                })
            }
        };
        self.state = next;
        self.phase_seconds.push(self.opened.elapsed().as_secs_f64());
        self.phase += 1;
        self.expected = std::mem::take(&mut self.responded);
        self.in_flight.clear();
        self.deadline = next_deadline;
        let relay = out
            .into_iter()
            .filter_map(|o| self.members.get(o.to.0 as usize).map(|id| (id.clone(), o.bytes)))
            .collect();
        Ok(PhaseOutcome::Relay(relay))
    }

    /// Decodes the unmasked sum into the round's aggregate: the example-weighted sum of deltas with its
    /// total weight, as plain federated averaging would have accumulated it.
    pub(crate) fn aggregate(&self, sum: &UnmaskedSum, num_params: usize) -> Result<Aggregator, DecodeError> {
        let values = self.quantizer.decode_sum(sum.values());
        let count = sum.contributors().len() as u32;
        self.check_sum(&values, count, num_params)?;
        let total_weight = values[num_params];
        let weighted_loss = values[num_params + 1];
        let examples = (total_weight * self.weight_cap).round().max(0.0) as u64;
        let mut deltas = values;
        deltas.truncate(num_params);
        Ok(Aggregator::from_sums(deltas, total_weight, weighted_loss, count, examples))
    }

    /// Checks a decoded sum of `count` contributors against what honest inputs can reach, so that one
    /// participant cannot poison the average through the sum: each contributor's weight is in
    /// `[1/cap, 1]` (it trained on at least one example) and each coordinate of its input in `[-clip,
    /// clip]`, so the total weight lies in `[count/cap, count]` and every coordinate within
    /// `count * clip`, up to the quantiser's error (one level per summand). A weight driven towards zero
    /// (which would multiply the global delta by millions) or a wrapped coordinate is refused.
    fn check_sum(&self, values: &[f64], count: u32, num_params: usize) -> Result<(), DecodeError> {
        if values.len() != num_params + 2 {
            return Err(DecodeError::Length { got: values.len(), expected: num_params + 2 });
        }
        let slack = self.quantizer.error_bound(count);
        let n = f64::from(count);
        let total_weight = values[num_params];
        let (low, high) = (n / self.weight_cap - slack, n + slack);
        if !(total_weight.is_finite() && total_weight > 0.0 && (low..=high).contains(&total_weight)) {
            return Err(DecodeError::Weight { total: total_weight, contributors: count, low, high });
        }
        let reach = n * self.quantizer.spec().clip + slack;
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| v.is_nan() || v.abs() > reach) {
            return Err(DecodeError::OutOfReach { index: i, value: *v, reach });
        }
        Ok(())
    }

    /// Decodes the unmasked sum of a DP round: the survivors' clipped-gradient sums with their noise, in
    /// the units of the gradient. Nothing else is in it (no weight, no loss).
    pub(crate) fn decode_noisy(&self, sum: &UnmaskedSum, num_params: usize) -> Result<Vec<f64>, DecodeError> {
        let values = self.quantizer.decode_sum(sum.values());
        if values.len() != num_params {
            return Err(DecodeError::Length { got: values.len(), expected: num_params });
        }
        Ok(values)
    }

    /// Participant ids of the clients whose inputs are in the sum.
    pub(crate) fn contributors(&self, sum: &UnmaskedSum) -> Vec<String> {
        sum.contributors().iter().filter_map(|c| self.members.get(c.0 as usize).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_secagg::{
        start_client, ClientPolicy, ClientRound, MemberRefusal, MemberVerifier, RoundTerms, SuiteSigner,
        VerifiedMember, VerifiedRoster,
    };

    /// The test's members are its own keys.
    struct OwnKeys;

    impl MemberVerifier for OwnKeys {
        type Announced = Vec<u8>;

        fn verify_member(&self, i: usize, key: &Vec<u8>) -> Result<VerifiedMember, MemberRefusal> {
            Ok(VerifiedMember::new(format!("p{i}"), key.clone()))
        }
    }

    /// Client `me`'s view of the round, checked as a participant checks it.
    fn client_round(r: &SecAggRound, me: u32) -> ClientRound {
        let config = r.params.config();
        let policy = ClientPolicy {
            own_id: format!("p{me}"),
            min_members: 3,
            min_survivors: 0,
            rule: GraphRule::default(),
        };
        let roster = VerifiedRoster::verify(&config.roster, me, &OwnKeys, &policy).unwrap();
        ClientRound::new(RoundTerms::from(config), roster, &policy).unwrap()
    }

    fn round(n: usize) -> (SecAggRound, Vec<hearth_crypto::SecretBytes>) {
        let suite = SuiteId::International.suite();
        let mut keys = Vec::new();
        let mut cohort = Vec::new();
        for i in 0..n {
            let (sk, pk) = suite.signing_keypair().unwrap();
            keys.push(sk);
            cohort.push((format!("p{i}"), pk));
        }
        let setup = Setup {
            suite: SuiteId::International,
            job_id: "job".into(),
            round: 1,
            cohort,
            vector_len: 6,
            clip: DEFAULT_CLIP,
            weight_cap: DEFAULT_WEIGHT_CAP,
            noise_headroom: 0,
            min_survivors: 0,
        };
        (SecAggRound::open(setup, (0..n as u64).collect(), Instant::now() + PHASE_TIMEOUT).unwrap(), keys)
    }

    #[test]
    fn refuses_strangers_wrong_phases_duplicates_and_forgeries() {
        let (mut r, keys) = round(5);
        assert!(matches!(r.begin("stranger", 0), Err(SecAggRefusal::NotMember(_))));
        assert!(matches!(r.begin("p0", 2), Err(SecAggRefusal::WrongPhase { got: 2, current: 0 })));
        let u = r.begin("p0", 0).unwrap();
        assert!(matches!(r.begin("p0", 0), Err(SecAggRefusal::Duplicate(_))), "in flight");
        // p0 sends a message signed with p1's key: a forgery, refused, and p0 is out of the round.
        let mut rng = hearth_secagg::os_rng().unwrap();
        let signer = Box::new(SuiteSigner::new(SuiteId::International, keys[1].clone()));
        let (_, forged) = start_client(&client_round(&r, 0), signer, &mut rng).unwrap();
        assert!(matches!(r.receive(u, 0, &forged), Err(SecAggRefusal::Protocol(_))));
        assert!(matches!(r.begin("p0", 0), Err(SecAggRefusal::NotExpected(_))));
        // p1 sends its own message once; a second one is a duplicate.
        let u1 = r.begin("p1", 0).unwrap();
        let signer = Box::new(SuiteSigner::new(SuiteId::International, keys[1].clone()));
        let (_, good) = start_client(&client_round(&r, 1), signer, &mut rng).unwrap();
        r.receive(u1, 0, &good).unwrap();
        assert!(matches!(r.begin("p1", 0), Err(SecAggRefusal::Duplicate(_))));
        assert_eq!(r.responded(), 1);
        // Nothing settles while p2..p4 are connected and silent; it does once they are gone.
        let all: HashMap<String, u64> = (0..5u64).map(|i| (format!("p{i}"), i)).collect();
        assert!(!r.settled(&all));
        let only_p1: HashMap<String, u64> = [("p1".to_string(), 1)].into();
        assert!(r.settled(&only_p1));
        // p2..p4 reconnected since the round opened: they lost their protocol state.
        let reconnected: HashMap<String, u64> = (0..5u64).map(|i| (format!("p{i}"), i + 10)).collect();
        assert!(r.settled(&reconnected));
        // p2 declines, with its reason: the failure message says so; p3 and p4 are merely silent.
        r.decline("p2", "round 1 of job job: this participant already sent its masked update").unwrap();
        let silent: Vec<String> = r.silent_why().collect();
        assert_eq!(
            silent,
            [
                "p0",
                "p2 (declined: round 1 of job job: this participant already sent its masked update)",
                "p3",
                "p4"
            ]
        );
        // One survivor is below the threshold: the round aborts and accepts nothing more.
        assert!(r.close_phase(Instant::now()).is_err());
        assert!(matches!(r.begin("p1", 0), Err(SecAggRefusal::WrongPhase { .. })));
    }

    #[test]
    fn a_poisoned_sum_is_refused() {
        let (r, _) = round(5);
        let clip = r.quantizer.spec().clip;
        // Five honest contributors: weights 0.5 each, coordinates within the clip.
        let honest = vec![1.0, -2.0, clip * 4.0, 0.3, 2.5, 1.2];
        assert!(r.check_sum(&honest, 5, 4).is_ok());
        // One participant cancels the others' weight: the total is ~2e-8, which would multiply the
        // global delta by ~5e7.
        let mut tiny = honest.clone();
        tiny[4] = 2e-8;
        assert!(matches!(r.check_sum(&tiny, 5, 4), Err(DecodeError::Weight { .. })));
        // Or claims more weight than five contributors can have.
        let mut heavy = honest.clone();
        heavy[4] = 6.0;
        assert!(matches!(r.check_sum(&heavy, 5, 4), Err(DecodeError::Weight { .. })));
        // Or wraps a coordinate past what five clipped inputs can sum to.
        let mut wrapped = honest.clone();
        wrapped[2] = clip * 5.5;
        let e = r.check_sum(&wrapped, 5, 4).unwrap_err();
        assert!(matches!(e, DecodeError::OutOfReach { index: 2, .. }), "{e}");
        assert!(e.to_string().contains("coordinate 2"), "{e}");
    }

    #[test]
    fn a_cohort_of_three_runs_the_complete_graph_and_two_cannot_run() {
        let suite = SuiteId::International.suite();
        let setup = |n: usize| Setup {
            suite: SuiteId::International,
            job_id: "job".into(),
            round: 1,
            cohort: (0..n).map(|i| (format!("p{i}"), suite.signing_keypair().unwrap().1)).collect(),
            vector_len: 4,
            clip: DEFAULT_CLIP,
            weight_cap: DEFAULT_WEIGHT_CAP,
            noise_headroom: 0,
            min_survivors: 0,
        };
        let three = SecAggRound::open(setup(3), vec![0; 3], Instant::now()).unwrap();
        let c = three.params.config();
        assert_eq!((c.degree, c.threshold), (2, 2), "every member holds a share of every other's secrets");
        let err = SecAggRound::open(setup(2), vec![0; 2], Instant::now()).unwrap_err();
        assert!(err.to_string().contains("2 clients"), "{err}");
    }
}
