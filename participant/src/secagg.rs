//! The participant's side of a secure-aggregation round: it runs the protocol's client phases
//! (`hearth_secagg`) and sends its update only masked.
//!
//! Before taking part it checks the round it was invited to, trusting nothing the coordinator announces.
//! The library takes the round only as a `hearth_secagg::ClientRound` built from a `VerifiedRoster`
//! (`hearth_secagg::verified`), so none of these checks can be skipped:
//! - every roster certificate must verify against the consortium CA, carry the `participant` role (a
//!   coordinator, operator or app certificate is no member) and be on the member list the institutions
//!   signed, and each member's protocol key is taken from that member's certificate, never from the
//!   coordinator's word (this module's `CertificateVerifier`);
//! - no identity and no protocol key appears twice (a coordinator padding the roster with copies of
//!   itself or of one colluder would otherwise hold most of a victim's shares);
//! - the roster has at least this participant's own floor of members ([`SecAggIdentity::min_members`]);
//! - its own entry carries its own identity, read from its own certificate, not from the coordinator;
//! - the announced degree and threshold keep the privacy bound of [`GraphRule::default`] for the
//!   announced cohort size: the participant computes it itself, so a coordinator announcing `k = t = 2`
//!   in a cohort of 50 is refused;
//! - the survivor floor (or the threshold, if larger) reaches this participant's own.
//!
//! What it masks is `[w·δ, w, w·loss]` with `w = min(n, cap) / cap` (see the coordinator's `secagg`
//! module): its example count and loss reach the coordinator only inside the sum.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use hearth_crypto::keystore::{KeyLabel, KeyStore};
use hearth_crypto::pki::{identity_from_cert_der, NodeIdentity, Role, VerifiedCertCache};
use hearth_crypto::SuiteId;
use hearth_proto::v1::coordinator_client::CoordinatorClient;
use hearth_proto::v1::{self, sec_agg_chunk};
use hearth_proto::MAX_CHUNK_BYTES;
use hearth_secagg::{
    os_rng, start_client, ClientPolicy, ClientRound, GraphRule, MemberRefusal, MemberVerifier, MessageSigner,
    Quantizer, QuantizerSpec, RoundTerms, VerifiedMember, VerifiedRoster,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// How many relayed messages may wait for one round: one per phase, with room to spare.
pub const RELAY_QUEUE: usize = 8;

/// Relayed protocol messages for one round: (phase, payload).
pub type RelayRx = mpsc::Receiver<(u32, Bytes)>;

/// What a participant needs to take part in secure aggregation.
#[derive(Debug)]
pub struct SecAggIdentity {
    /// The consortium's suite; a round announcing another one is refused.
    pub suite: SuiteId,
    /// The consortium CA (DER), against which every roster certificate is checked.
    pub ca_der: Vec<u8>,
    /// Signs with this node's protocol signing key (its certificate carries the verifying half): in
    /// memory, or inside the keystore's token.
    pub signing: Arc<dyn MessageSigner>,
    /// Roster certificates already verified: the cohort is mostly the same every round.
    pub verified: VerifiedCertCache,
    /// This node, as its own certificate says.
    pub me: NodeIdentity,
    /// The fewest members a roster may have (default [`DEFAULT_MIN_MEMBERS`]).
    pub min_members: usize,
    /// The member list the institutions signed: every roster member must be on it (`None`: no list is
    /// configured, and any participant certificate from the CA may be a member).
    pub members: Option<Arc<crate::membership::Membership>>,
    /// The newest revocation list this participant holds: a roster member it revokes is refused.
    pub revocations: Option<Arc<hearth_node::revocation::RevocationState>>,
}

/// A [`MessageSigner`] over a keystore key: the signature is made inside the keystore (the PKCS#11 token),
/// the key never in this process.
#[derive(Debug)]
pub struct KeystoreSigner {
    keystore: Arc<dyn KeyStore>,
    label: KeyLabel,
}

impl KeystoreSigner {
    /// Signs with the current version of `label`.
    pub fn new(keystore: Arc<dyn KeyStore>, label: KeyLabel) -> Self {
        Self { keystore, label }
    }
}

impl MessageSigner for KeystoreSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, hearth_crypto::CryptoError> {
        self.keystore
            .sign(&self.label, message)
            .map(|s| s.signature)
            .map_err(|e| hearth_crypto::CryptoError::Signer(e.to_string()))
    }
}

/// The fewest members a secure-aggregation roster may have unless configured otherwise.
pub const DEFAULT_MIN_MEMBERS: usize = 3;

impl SecAggIdentity {
    /// The identity of the node holding `cert_der` (its own certificate), this CA and signing key.
    pub fn new(
        suite: SuiteId,
        ca_der: Vec<u8>,
        cert_der: &[u8],
        signing: Arc<dyn MessageSigner>,
    ) -> anyhow::Result<Self> {
        let me = identity_from_cert_der(cert_der).context("this node's own certificate")?;
        Ok(Self {
            suite,
            ca_der,
            signing,
            verified: VerifiedCertCache::new(4096),
            me,
            min_members: DEFAULT_MIN_MEMBERS,
            members: None,
            revocations: None,
        })
    }
}

/// A validated invitation: the protocol parameters and this participant's index.
#[derive(Debug, Clone)]
pub struct Invitation {
    round: ClientRound,
    quantizer: Quantizer,
    weight_cap: f64,
}

/// Which secure round a message belongs to: a job's round, or an analytics query (round 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRef {
    /// The job or query id.
    pub job_id: String,
    /// The round.
    pub round: u64,
    /// When the round closes.
    pub deadline_unix_ms: u64,
}

impl RoundRef {
    /// The round a `RoundOpen` announces.
    pub fn of(open: &v1::RoundOpen) -> Self {
        Self { job_id: open.job_id.clone(), round: open.round, deadline_unix_ms: open.deadline_unix_ms }
    }
}

/// Checks a round's secure-aggregation setup and builds its parameters. `vector_len` is what this
/// participant expects to mask (a model's parameters plus 2, a query's bins); a setup announcing another
/// length is refused. `min_survivors` is the fewest survivors this round needs for this participant (its
/// DP noise's calibration, its institution's policy); with its own roster floor, the announced survivor
/// floor must reach it, and no survivor set below the announced floor is ever signed.
pub fn accept(
    who: &SecAggIdentity,
    at: &RoundRef,
    vector_len: u64,
    setup: &v1::SecAggSetup,
    min_survivors: u32,
) -> anyhow::Result<Invitation> {
    let suite: SuiteId = setup.suite.parse().context("secure-aggregation setup")?;
    if suite != who.suite {
        bail!("the round uses the {suite} suite, this participant is configured for {}", who.suite);
    }
    if who.me.role != Role::Participant {
        bail!("this node's certificate is {}, not a participant's", who.me);
    }
    let members = who
        .members
        .as_ref()
        .map(|m| m.current())
        .transpose()
        .context("the member list the institutions signed")?;
    let policy = ClientPolicy {
        own_id: who.me.id.clone(),
        min_members: who.min_members,
        min_survivors,
        rule: GraphRule::default(),
    };
    let verifier = CertificateVerifier { who, suite, members: members.as_ref(), now: SystemTime::now() };
    let roster = VerifiedRoster::verify(&setup.roster, setup.your_index, &verifier, &policy)?;
    if setup.vector_len != vector_len {
        bail!("the round masks {} values, this participant expects {vector_len}", setup.vector_len);
    }
    let n = u32::try_from(setup.roster.len()).context("roster too large")?;
    let modulus_bits = u8::try_from(setup.modulus_bits).context("modulus bits out of range")?;
    let terms = RoundTerms {
        suite,
        job_id: at.job_id.clone().into_bytes(),
        round: at.round,
        degree: setup.degree,
        threshold: setup.threshold,
        vector_len: u32::try_from(setup.vector_len).context("vector too long")?,
        modulus_bits,
        instance: setup.instance,
        min_survivors: setup.min_survivors,
    };
    let round = ClientRound::new(terms, roster, &policy)?;
    if !(setup.weight_cap.is_finite() && setup.weight_cap >= 1.0) {
        bail!("weight cap {} must be at least 1", setup.weight_cap);
    }
    let quantizer = Quantizer::new(QuantizerSpec {
        clip: setup.clip,
        max_summands: n,
        noise_headroom: setup.noise_headroom,
        modulus_bits,
    })
    .context("quantiser")?;
    Ok(Invitation { round, quantizer, weight_cap: setup.weight_cap })
}

/// Establishes each announced roster member from its certificate, never from the coordinator's word: it
/// must verify against the consortium CA, name the member the coordinator says it is, carry the
/// participant role and, when the institutions signed a member list, be on it; the member's protocol key
/// is the one its certificate carries.
struct CertificateVerifier<'a> {
    who: &'a SecAggIdentity,
    suite: SuiteId,
    members: Option<&'a crate::membership::MemberList>,
    now: SystemTime,
}

impl MemberVerifier for CertificateVerifier<'_> {
    type Announced = v1::RosterMember;

    fn verify_member(&self, index: usize, m: &v1::RosterMember) -> Result<VerifiedMember, MemberRefusal> {
        let claimed = &m.participant_id;
        let peer = self.who.verified.verify(&self.who.ca_der, &m.certificate_der, self.now).map_err(|e| {
            MemberRefusal::Credential { index, claimed: claimed.clone(), reason: e.to_string() }
        })?;
        let who = peer.identity.to_string();
        if self.who.revocations.as_ref().is_some_and(|r| r.is_revoked(&m.certificate_der)) {
            return Err(MemberRefusal::Credential {
                index,
                claimed: claimed.clone(),
                reason: format!("the consortium CA revoked the certificate of {who}"),
            });
        }
        if peer.identity.id != *claimed {
            return Err(MemberRefusal::Misnamed { index, claimed: claimed.clone(), actual: who });
        }
        if peer.identity.role != Role::Participant {
            return Err(MemberRefusal::NotAParticipant { index, who });
        }
        if let Some(list) = self.members {
            if !list.admits(&peer.identity.id, &m.certificate_der) {
                return Err(MemberRefusal::NotListed { index, who, list_version: list.version });
            }
        }
        let key = peer
            .protocol_key(self.suite)
            .map_err(|e| MemberRefusal::NoProtocolKey { index, reason: e.to_string() })?;
        Ok(VerifiedMember::new(peer.identity.id.clone(), key.to_vec()))
    }
}

/// The vector a participant masks: its delta and loss weighted by `w = min(n, cap) / cap`, then `w`.
pub fn weighted_input(delta: &[f32], examples: usize, loss: f32, weight_cap: f64) -> Vec<f32> {
    let w = (examples as f64).min(weight_cap) / weight_cap;
    let mut v: Vec<f32> = delta.iter().map(|d| (f64::from(*d) * w) as f32).collect();
    v.push(w as f32);
    let loss = if loss.is_finite() { f64::from(loss) } else { 0.0 };
    v.push((loss * w) as f32);
    v
}

impl Invitation {
    /// The round's quantiser (its scale is the grid DP noise shares are drawn on).
    pub fn quantizer(&self) -> &Quantizer {
        &self.quantizer
    }

    /// Encodes a DP round's input: `values` (a clipped-gradient sum) quantised with randomised rounding,
    /// then `noise` (this participant's discrete Gaussian share, in levels) added in the ring. CPU work:
    /// call it off the async workers.
    pub fn encode_noisy(&self, values: &[f32], noise: &[i64]) -> anyhow::Result<Vec<u32>> {
        let mut rng = os_rng()?;
        let mut encoded = self.quantizer.encode(values, &mut rng).context("quantising the gradient sum")?;
        self.quantizer.add_integer_noise(&mut encoded, noise).context("adding the noise share")?;
        Ok(encoded)
    }

    /// Encodes a model update for masking: `[w·delta, w, w·loss]` quantised (randomised rounding), as
    /// the round's quantiser says. CPU work: call it off the async workers.
    pub fn encode_update(&self, delta: &[f32], examples: usize, loss: f32) -> anyhow::Result<Vec<u32>> {
        let input = weighted_input(delta, examples, loss, self.weight_cap);
        let mut rng = os_rng()?;
        Ok(self.quantizer.encode(&input, &mut rng)?)
    }

    /// Encodes integer counts for masking: two's complement modulo 2^32 (the sum decodes exactly while it
    /// stays within ±2^31).
    pub fn encode_counts(&self, counts: &[i64]) -> anyhow::Result<Vec<u32>> {
        counts
            .iter()
            .map(|&c| i32::try_from(c).map(|c| c as u32).context("a count does not fit 32 bits"))
            .collect()
    }

    /// The cohort's size.
    pub fn cohort(&self) -> u32 {
        self.round.params().n()
    }
}

/// Runs the client phases. `input` resolves to the encoded vector to mask (see
/// [`Invitation::encode_update`] and [`Invitation::encode_counts`]) once local work (training,
/// counting) is done; the key exchange runs meanwhile, and the input is masked as soon as it is ready
/// and the neighbours' keys are known, without waiting for the relay of the neighbours' shares. `release` runs just before
/// the masked input leaves (a participant records and charges it there); if it fails, nothing is sent.
/// `stop_after` ends the participant's part after that phase, as a drop-out would (benchmarks use it; a
/// participant passes `None`). Returns the bytes of messages sent.
#[allow(clippy::too_many_arguments)]
pub async fn run_client(
    mut client: CoordinatorClient<Channel>,
    who: &SecAggIdentity,
    open: &RoundRef,
    inv: Invitation,
    mut relays: RelayRx,
    input: impl std::future::Future<Output = anyhow::Result<Vec<u32>>>,
    release: impl FnOnce() -> anyhow::Result<()>,
    stop_after: Option<u32>,
) -> anyhow::Result<u64> {
    let stops = |phase: u32| stop_after.is_some_and(|p| p <= phase);
    let mut sent = 0u64;
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(open.deadline_unix_ms.saturating_sub(now_ms()).max(1));
    let signer = Box::new(Arc::clone(&who.signing));
    let mut rng = os_rng().context("seeding the protocol's generator")?;
    let instance = inv.round.params().config().instance;
    let (state, msg) = start_client(&inv.round, signer, &mut rng)?;
    sent += send(&mut client, open, instance, 0, msg).await?;
    if stops(0) {
        return Ok(sent);
    }

    // The graph seed: this participant's contribution is revealed only once every commitment is fixed.
    let msg = next_relay(&mut relays, 1, deadline).await?;
    let (state, out) = state.handle(&msg)?;
    sent += send(&mut client, open, instance, 1, out).await?;
    if stops(1) {
        return Ok(sent);
    }

    let msg = next_relay(&mut relays, 2, deadline).await?;
    let (state, out) = state.handle(&msg, &mut rng)?;
    sent += send(&mut client, open, instance, 2, out).await?;
    if stops(2) {
        return Ok(sent);
    }

    // Expanding one mask per neighbour over the whole vector is most of a round's CPU work: it starts as
    // soon as the input is ready, while the other clients are still sharing keys, instead of waiting for
    // the relay of the neighbours' shares.
    let plan = state.mask_plan()?;
    let premask = async {
        let encoded = input.await.context("preparing the input")?;
        let _cpu = cpu_slot().await?;
        anyhow::Ok(tokio::task::spawn_blocking(move || plan.apply(encoded, 1)).await??)
    };
    let (premasked, msg) = tokio::try_join!(premask, next_relay(&mut relays, 3, deadline))?;
    // Signing hashes the whole masked vector: CPU work too.
    let (state, out) = {
        let _cpu = cpu_slot().await?;
        tokio::task::spawn_blocking(move || state.handle_premasked(&msg, premasked)).await??
    };
    release()?;
    sent += send(&mut client, open, instance, 3, out).await?;
    if stops(3) {
        return Ok(sent);
    }

    let msg = next_relay(&mut relays, 4, deadline).await?;
    let (state, out) = state.handle(&msg)?;
    sent += send(&mut client, open, instance, 4, out).await?;
    if stops(4) {
        return Ok(sent);
    }

    let msg = next_relay(&mut relays, 5, deadline).await?;
    let out = state.handle(&msg)?;
    sent += send(&mut client, open, instance, 5, out).await?;
    Ok(sent)
}

/// A slot for CPU-bound protocol work, one per core in this process. A participant runs one round at a
/// time, so this rarely waits; where many clients share a process (`hearth bench`), it keeps them from
/// thrashing the cores so that finished clients upload while others still compute.
pub async fn cpu_slot() -> anyhow::Result<tokio::sync::SemaphorePermit<'static>> {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
    slots.acquire().await.context("CPU slots closed")
}

/// Waits for the coordinator's relay of `phase`.
async fn next_relay(
    relays: &mut RelayRx,
    phase: u32,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Vec<u8>> {
    loop {
        let got = tokio::time::timeout_at(deadline, relays.recv())
            .await
            .with_context(|| format!("the round's deadline passed waiting for phase {phase}"))?;
        match got {
            Some((p, payload)) if p == phase => return Ok(payload.to_vec()),
            Some((p, _)) if p < phase => continue,
            Some((p, _)) => {
                bail!("the coordinator relayed phase {p} while this participant awaited phase {phase}")
            }
            None => bail!("the connection to the coordinator closed during phase {phase}"),
        }
    }
}

/// Sends this participant's message for `phase` as a header and chunks; returns the encoded bytes sent.
async fn send(
    client: &mut CoordinatorClient<Channel>,
    open: &RoundRef,
    instance: u64,
    phase: u32,
    msg: Vec<u8>,
) -> anyhow::Result<u64> {
    let msg = Bytes::from(msg);
    let header = v1::SecAggHeader {
        job_id: open.job_id.clone(),
        round: open.round,
        phase,
        length: msg.len() as u64,
        instance,
    };
    let first = v1::SecAggChunk { kind: Some(sec_agg_chunk::Kind::Header(header)) };
    let chunks = (0..msg.len()).step_by(MAX_CHUNK_BYTES).map(move |s| v1::SecAggChunk {
        kind: Some(sec_agg_chunk::Kind::Data(msg.slice(s..(s + MAX_CHUNK_BYTES).min(msg.len())))),
    });
    let messages: Vec<v1::SecAggChunk> = std::iter::once(first).chain(chunks).collect();
    let bytes = messages.iter().map(|m| prost::Message::encoded_len(m) as u64).sum();
    client
        .sec_agg_send(futures::stream::iter(messages))
        .await
        .with_context(|| format!("sending the phase {phase} message"))?;
    Ok(bytes)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_crypto::pki::{ConsortiumCa, IssueOptions};
    use hearth_secagg::SuiteSigner;

    /// A roster of certificates from `ca`, as a coordinator would announce it to member `me`.
    fn setup(
        ca: &ConsortiumCa,
        members: &[(Role, &str)],
        me: u32,
        degree: u32,
        threshold: u32,
    ) -> v1::SecAggSetup {
        let roster = members
            .iter()
            .map(|(role, id)| {
                let c = ca.issue(*role, id, &[], &[]).unwrap();
                let der = hearth_crypto::pki::cert_der_from_pem(&c.cert_pem).unwrap();
                v1::RosterMember { participant_id: id.to_string(), certificate_der: der.into() }
            })
            .collect();
        v1::SecAggSetup {
            suite: "international".into(),
            roster,
            degree,
            threshold,
            modulus_bits: 32,
            your_index: me,
            clip: 1.0,
            weight_cap: 100.0,
            vector_len: 10,
            phase_deadline_unix_ms: 0,
            noise_headroom: 0,
            instance: 1,
            min_survivors: 3,
        }
    }

    fn me(ca: &ConsortiumCa, id: &str) -> SecAggIdentity {
        let c = ca.issue(Role::Participant, id, &[], &[]).unwrap();
        let der = hearth_crypto::pki::cert_der_from_pem(&c.cert_pem).unwrap();
        let ca_der = hearth_crypto::pki::cert_der_from_pem(&ca.cert_pem()).unwrap();
        let key = hearth_crypto::pki::p256_secret_from_pem(&c.key_pem).unwrap();
        let signer = Arc::new(SuiteSigner::new(SuiteId::International, key));
        SecAggIdentity::new(SuiteId::International, ca_der, &der, signer).unwrap()
    }

    fn at() -> RoundRef {
        RoundRef { job_id: "j".into(), round: 1, deadline_unix_ms: 0 }
    }

    fn refusal(who: &SecAggIdentity, s: &v1::SecAggSetup) -> String {
        format!("{:#}", accept(who, &at(), 10, s, 0).unwrap_err())
    }

    const P: Role = Role::Participant;

    #[test]
    fn an_honest_roster_is_accepted() {
        let ca = ConsortiumCa::generate("c").unwrap();
        let c = GraphRule::default().choose(5).unwrap();
        let s =
            setup(&ca, &[(P, "victim"), (P, "b"), (P, "c"), (P, "d"), (P, "e")], 0, c.degree, c.threshold);
        assert!(accept(&me(&ca, "victim"), &at(), 10, &s, 0).is_ok());
    }

    #[test]
    fn a_sybil_roster_of_coordinator_certificates_is_refused() {
        // [victim, coordinator x4] with k = 4, t = 3: the coordinator would hold every share of the
        // victim's secrets. Its certificates are no participant's.
        let ca = ConsortiumCa::generate("c").unwrap();
        let c = Role::Coordinator;
        let s = setup(
            &ca,
            &[(P, "victim"), (c, "coordinator"), (c, "coordinator"), (c, "coordinator"), (c, "coordinator")],
            0,
            4,
            3,
        );
        let e = refusal(&me(&ca, "victim"), &s);
        assert!(e.contains("only participants may be members"), "{e}");
        // Any other non-participant role neither.
        for role in [Role::Operator, Role::App, Role::Dpo, Role::Analyst] {
            let s = setup(&ca, &[(P, "victim"), (P, "b"), (P, "c"), (role, "x"), (P, "e")], 0, 4, 3);
            assert!(refusal(&me(&ca, "victim"), &s).contains("only participants"), "{role}");
        }
    }

    #[test]
    fn a_roster_repeating_a_member_is_refused() {
        let ca = ConsortiumCa::generate("c").unwrap();
        let s = setup(
            &ca,
            &[(P, "victim"), (P, "colluder"), (P, "colluder"), (P, "colluder"), (P, "e")],
            0,
            4,
            3,
        );
        let e = refusal(&me(&ca, "victim"), &s);
        assert!(e.contains("appears more than once"), "{e}");
    }

    #[test]
    fn a_roster_repeating_a_protocol_key_is_refused() {
        // Under the national suite the protocol key is the SM2 key the CA embeds: a CA (held by the
        // operator) can embed one key in several certificates with different ids.
        let ca = ConsortiumCa::generate("c").unwrap();
        let (_, sybil) = SuiteId::National.suite().signing_keypair().unwrap();
        let member = |id: &str, key: Option<Vec<u8>>| {
            let key = key.unwrap_or_else(|| SuiteId::National.suite().signing_keypair().unwrap().1);
            let opts = IssueOptions { sm2_verifying_key: Some(key), ..Default::default() };
            let c = ca.issue_with(P, id, &[], &[], &opts).unwrap();
            let der = hearth_crypto::pki::cert_der_from_pem(&c.cert_pem).unwrap();
            (v1::RosterMember { participant_id: id.into(), certificate_der: der.clone().into() }, der)
        };
        let (victim, victim_der) = member("victim", None);
        let mut roster = vec![victim];
        for id in ["x1", "x2", "x3", "x4"] {
            roster.push(member(id, Some(sybil.clone())).0);
        }
        let mut s = setup(&ca, &[(P, "unused")], 0, 4, 3);
        s.suite = "national".into();
        s.roster = roster;
        let ca_der = hearth_crypto::pki::cert_der_from_pem(&ca.cert_pem()).unwrap();
        let (signing, _) = SuiteId::National.suite().signing_keypair().unwrap();
        let signer = Arc::new(SuiteSigner::new(SuiteId::National, signing));
        let who = SecAggIdentity::new(SuiteId::National, ca_der, &victim_der, signer).unwrap();
        let e = refusal(&who, &s);
        assert!(e.contains("share one protocol key"), "{e}");
    }

    #[test]
    fn a_roster_below_the_local_floor_is_refused() {
        let ca = ConsortiumCa::generate("c").unwrap();
        let mut who = me(&ca, "victim");
        who.min_members = 5;
        let s = setup(&ca, &[(P, "victim"), (P, "b"), (P, "c"), (P, "d")], 0, 3, 2);
        let e = refusal(&who, &s);
        assert!(e.contains("at least 5"), "{e}");
    }

    #[test]
    fn the_own_identity_comes_from_the_own_certificate() {
        // The coordinator places someone else's certificate where this participant should be.
        let ca = ConsortiumCa::generate("c").unwrap();
        let c = GraphRule::default().choose(5).unwrap();
        let s = setup(
            &ca,
            &[(P, "someone-else"), (P, "b"), (P, "c"), (P, "d"), (P, "e")],
            0,
            c.degree,
            c.threshold,
        );
        let e = refusal(&me(&ca, "victim"), &s);
        assert!(e.contains("I am \"victim\""), "{e}");
    }

    #[test]
    fn weak_degree_and_threshold_for_the_cohort_are_refused() {
        // n = 50 with k = t = 2: two colluders around a victim would unmask it.
        let ca = ConsortiumCa::generate("c").unwrap();
        let ids: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
        let members: Vec<(Role, &str)> = ids.iter().map(|i| (P, i.as_str())).collect();
        let who = me(&ca, "p0");
        let e = refusal(&who, &setup(&ca, &members, 0, 2, 2));
        assert!(e.contains("degree 2 and threshold 2 for 50 members"), "{e}");
        let c = GraphRule::default().choose(50).unwrap();
        assert!(accept(&who, &at(), 10, &setup(&ca, &members, 0, c.degree, c.threshold), 0).is_ok());
    }

    #[test]
    fn a_survivor_floor_below_the_participants_is_refused() {
        // A DP round calibrated for 5 survivors, announced with a floor of 3: the sum over 3 survivors would
        // carry too little noise. The floor is in every message's context, so it cannot differ per member.
        let ca = ConsortiumCa::generate("c").unwrap();
        let c = GraphRule::default().choose(6).unwrap();
        let members = [(P, "victim"), (P, "b"), (P, "c"), (P, "d"), (P, "e"), (P, "f")];
        let mut s = setup(&ca, &members, 0, c.degree, c.threshold);
        let who = me(&ca, "victim");
        let e = format!("{:#}", accept(&who, &at(), 10, &s, 5).unwrap_err());
        assert!(e.contains("as few as 3 survivors; this participant requires at least 5"), "{e}");
        s.min_survivors = 5;
        let inv = accept(&who, &at(), 10, &s, 5).unwrap();
        assert_eq!(inv.round.params().survivor_floor(), 5);
        // Its own roster floor counts too, whatever the round needs.
        let mut strict = me(&ca, "victim");
        strict.min_members = 6;
        let e = format!("{:#}", accept(&strict, &at(), 10, &s, 0).unwrap_err());
        assert!(e.contains("requires at least 6"), "{e}");
    }

    #[test]
    fn each_instance_of_a_round_has_its_own_context() {
        let ca = ConsortiumCa::generate("c").unwrap();
        let c = GraphRule::default().choose(5).unwrap();
        let s =
            setup(&ca, &[(P, "victim"), (P, "b"), (P, "c"), (P, "d"), (P, "e")], 0, c.degree, c.threshold);
        let who = me(&ca, "victim");
        let first = accept(&who, &at(), 10, &s, 0).unwrap();
        let retry = accept(&who, &at(), 10, &v1::SecAggSetup { instance: 2, ..s }, 0).unwrap();
        assert_ne!(first.round.params().context(), retry.round.params().context());
    }

    #[test]
    fn the_masked_vector_carries_weight_and_loss_inside_the_sum() {
        let v = weighted_input(&[1.0, -2.0], 50, 0.5, 100.0);
        assert_eq!(v, vec![0.5, -1.0, 0.5, 0.25]);
        // Past the cap the weight saturates at one.
        let v = weighted_input(&[1.0], 500, f32::NAN, 100.0);
        assert_eq!(v, vec![1.0, 1.0, 0.0]);
    }
}
