//! The client side of a round, as a chain of states: each `handle` consumes its state, checks one
//! server message, and returns the next state with the message to send back.
//!
//! Responsibility: a participant's part of the protocol (Bonawitz et al. 2017, figure 4, restricted to
//! the SecAgg+ neighbourhood). It verifies every other client's signature itself, so a server cannot
//! impersonate one client to another, and it reveals, per neighbour, a share of either the self-mask
//! seed or the mask key, never both, according to the survivor set it signed. It computes the neighbour
//! graph itself from the contributions every client committed to before any was revealed, its own among
//! them ([`super::graph`]). It never touches the network: bytes in, bytes out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chacha20::ChaCha20Rng;
use rand_core::{CryptoRng, SeedableRng};
use zeroize::Zeroizing;

use hearth_crypto::suite::{fill_random, CryptoError, CryptoSuite, SecretBytes, SuiteId, NONCE_LEN};

use super::graph::{graph_seed, seed_commitment, NeighbourGraph};
use super::mask::{apply_masks, channel_key, pairwise_seed, pairwise_sign, self_mask_seed, Sign};
use super::messages::{
    AdvertiseKeys, ConsistencySignature, EncryptedShare, EncryptedShares, KeysBroadcast, MaskedInput,
    RevealedShare, SecretKind, SeedCommitments, SeedReveal, ShareKeys, Signature, SurvivorSet, UnmaskRequest,
    UnmaskShares, SHARE_PLAINTEXT_LEN,
};
use super::shamir::{self, Share, SHARE_LEN};
use super::verified::ClientRound;
use super::{Phase, RoundParams, SecAggError};

/// Signs protocol messages with the node's signing key. A keystore (or an HSM) implements this so the
/// key never has to leave it; [`SuiteSigner`] holds the key in memory.
pub trait MessageSigner: Send + Sync + std::fmt::Debug {
    /// Signs `message` with the suite's signature algorithm; the verifying key must be this client's
    /// roster entry.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// One signer shared by every round a node takes part in.
impl<T: MessageSigner + ?Sized> MessageSigner for Arc<T> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        (**self).sign(message)
    }
}

/// A [`MessageSigner`] over a signing secret held in memory (wiped on drop).
#[derive(Debug)]
pub struct SuiteSigner {
    suite: SuiteId,
    secret: SecretBytes,
}

impl SuiteSigner {
    /// Signs with `secret` under `suite`.
    pub fn new(suite: SuiteId, secret: SecretBytes) -> Self {
        Self { suite, secret }
    }
}

impl MessageSigner for SuiteSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.suite.suite().sign(&self.secret, message)
    }
}

/// A CSPRNG (ChaCha20) seeded from the operating system: what a participant passes as `rng` for its
/// self-mask seed and Shamir coefficients.
pub fn os_rng() -> Result<ChaCha20Rng, SecAggError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    fill_random(seed.as_mut())?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

/// What every client state carries.
struct Core {
    params: Arc<RoundParams>,
    me: u32,
    signer: Box<dyn MessageSigner>,
}

impl Core {
    fn suite(&self) -> &'static dyn CryptoSuite {
        self.params.suite().suite()
    }

    fn sign(&self, bytes: &[u8]) -> Result<Signature, SecAggError> {
        let sig = self.signer.sign(bytes)?;
        sig.as_slice().try_into().map_err(|_| {
            SecAggError::Crypto(CryptoError::Length(format!(
                "signer produced {} bytes, expected 64",
                sig.len()
            )))
        })
    }

    fn verify(&self, signer: u32, signed: &[u8], signature: &[u8]) -> Result<(), SecAggError> {
        let key = self
            .params
            .verifying_key(signer)
            .ok_or(SecAggError::UnknownClient { index: signer, n: self.params.n() })?;
        self.suite().verify(key, signed, signature).map_err(|_| SecAggError::BadSignature { signer })
    }

    fn check_recipient(&self, addressed: u32) -> Result<(), SecAggError> {
        if addressed == self.me {
            Ok(())
        } else {
            Err(SecAggError::WrongRecipient { addressed, me: self.me })
        }
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client {} of round {:02x?}", self.me, &self.params.context()[..4])
    }
}

/// Nonce of the share sent from `from` to `to`: unique per channel key and direction.
fn share_nonce(from: u32, to: u32) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&from.to_le_bytes());
    n[4..8].copy_from_slice(&to.to_le_bytes());
    n
}

fn share_aad(context: &[u8; 32], from: u32, to: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(48);
    aad.extend_from_slice(context);
    aad.extend_from_slice(b"share");
    aad.extend_from_slice(&from.to_le_bytes());
    aad.extend_from_slice(&to.to_le_bytes());
    aad
}

/// Starts a client's round: makes the two key pairs, the self-mask seed and the graph-seed
/// contribution, and returns the state waiting for the commitments with the signed [`AdvertiseKeys`]
/// (carrying this client's commitment) to send. It takes only a [`ClientRound`]: a round whose roster and
/// terms the client checked ([`crate::verified`]).
pub fn start_client<R: CryptoRng + ?Sized>(
    round: &ClientRound,
    signer: Box<dyn MessageSigner>,
    rng: &mut R,
) -> Result<(ClientAwaitCommitments, Vec<u8>), SecAggError> {
    let (params, me) = (Arc::clone(round.params()), round.me());
    if me.0 >= params.n() {
        return Err(SecAggError::UnknownClient { index: me.0, n: params.n() });
    }
    let core = Core { params, me: me.0, signer };
    let suite = core.suite();
    let (channel_secret, channel_public) = suite.agreement_keypair()?;
    let (mask_secret, mask_public) = suite.agreement_keypair()?;
    let mut b = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(b.as_mut());
    let mut contribution = [0u8; 32];
    rng.fill_bytes(&mut contribution);
    let seed_commitment = seed_commitment(core.params.suite(), core.params.context(), core.me, &contribution);
    let mut msg =
        AdvertiseKeys { sender: core.me, channel_public, mask_public, seed_commitment, signature: [0; 64] };
    msg.signature = core.sign(&msg.signed_bytes(core.params.context()))?;
    let out = msg.encode(core.params.context());
    let secrets = Secrets { channel_secret, mask_secret, self_seed: SecretBytes::new(*b) };
    Ok((ClientAwaitCommitments { core, secrets, contribution, seed_commitment }, out))
}

/// The client's secrets until it shares them.
struct Secrets {
    channel_secret: SecretBytes,
    mask_secret: SecretBytes,
    self_seed: SecretBytes,
}

/// After phase 0: waiting for the list of graph-seed commitments ([`SeedCommitments`]).
pub struct ClientAwaitCommitments {
    core: Core,
    secrets: Secrets,
    contribution: [u8; 32],
    seed_commitment: [u8; 32],
}

impl std::fmt::Debug for ClientAwaitCommitments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientAwaitCommitments({:?})", self.core)
    }
}

impl ClientAwaitCommitments {
    /// Checks the list of commitments (this client's own is in it, unaltered; at least the survivor
    /// floor of clients committed) and returns the signed [`SeedReveal`] opening this client's
    /// commitment. Every contribution that will enter the seed is fixed from here on.
    pub fn handle(self, msg: &[u8]) -> Result<(ClientAwaitKeys, Vec<u8>), SecAggError> {
        let core = self.core;
        let params = Arc::clone(&core.params);
        let ctx = params.context();
        let list = SeedCommitments::decode(msg, params.limits())?;
        core.check_recipient(list.recipient)?;
        let commitments: BTreeMap<u32, [u8; 32]> = list.commitments.into_iter().collect();
        if commitments.get(&core.me) != Some(&self.seed_commitment) {
            return Err(SecAggError::SeedExchange {
                reason: format!("client {}'s own commitment is missing or altered", core.me),
            });
        }
        let floor = params.survivor_floor();
        if commitments.len() < floor {
            return Err(SecAggError::TooFewSurvivors {
                phase: Phase::SeedReveal,
                got: commitments.len(),
                need: floor,
            });
        }
        let mut out = SeedReveal { sender: core.me, contribution: self.contribution, signature: [0; 64] };
        out.signature = core.sign(&out.signed_bytes(ctx))?;
        let bytes = out.encode(ctx);
        Ok((ClientAwaitKeys { core, secrets: self.secrets, commitments }, bytes))
    }
}

/// After phase 1: waiting for every revealed contribution and the neighbours' advertised keys
/// ([`KeysBroadcast`]).
pub struct ClientAwaitKeys {
    core: Core,
    secrets: Secrets,
    commitments: BTreeMap<u32, [u8; 32]>,
}

impl std::fmt::Debug for ClientAwaitKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientAwaitKeys({:?}, {} commitments)", self.core, self.commitments.len())
    }
}

/// A neighbour's keys and the share channel to it.
struct Peer {
    mask_public: Vec<u8>,
    channel_key: Zeroizing<Vec<u8>>,
}

impl ClientAwaitKeys {
    /// Checks every revealed contribution against its commitment (each committed one must be there),
    /// computes the graph seed and the graph itself, checks the neighbours' signed keys, Shamir-shares
    /// the self-mask seed and the mask key among them (t of the live neighbours rebuild either),
    /// encrypts one share pair to each, and returns the signed [`ShareKeys`].
    pub fn handle<R: CryptoRng + ?Sized>(
        self,
        msg: &[u8],
        rng: &mut R,
    ) -> Result<(ClientAwaitShares, Vec<u8>), SecAggError> {
        let core = self.core;
        let Secrets { channel_secret, mask_secret, self_seed } = self.secrets;
        let params = Arc::clone(&core.params);
        let ctx = params.context();
        let broadcast = KeysBroadcast::decode(msg, params.limits())?;
        core.check_recipient(broadcast.recipient)?;
        let revealed: Vec<u32> = broadcast.reveals.iter().map(|(v, _)| *v).collect();
        if !revealed.iter().eq(self.commitments.keys()) {
            return Err(SecAggError::SeedExchange {
                reason: format!(
                    "reveals from {revealed:?}, commitments from {:?}",
                    self.commitments.keys().collect::<Vec<_>>()
                ),
            });
        }
        for (v, contribution) in &broadcast.reveals {
            if Some(&seed_commitment(params.suite(), ctx, *v, contribution)) != self.commitments.get(v) {
                return Err(SecAggError::SeedMismatch { client: *v });
            }
        }
        let graph = Arc::new(params.graph_for(&graph_seed(params.suite(), ctx, &broadcast.reveals)));
        let mut seen_keys = BTreeSet::new();
        let mut peers = BTreeMap::new();
        for ad in &broadcast.advertisements {
            if !graph.are_neighbours(core.me, ad.sender) {
                return Err(SecAggError::NotANeighbour { a: core.me, b: ad.sender });
            }
            core.verify(ad.sender, &ad.signed_bytes(ctx), &ad.signature)?;
            if self.commitments.get(&ad.sender) != Some(&ad.seed_commitment) {
                return Err(SecAggError::SeedMismatch { client: ad.sender });
            }
            // Bonawitz et al. require all advertised keys to differ: a reused key would let one
            // agreement serve two purposes.
            if !seen_keys.insert(ad.channel_public.clone()) || !seen_keys.insert(ad.mask_public.clone()) {
                return Err(SecAggError::InvalidPeerKey {
                    client: ad.sender,
                    reason: "public key reused".into(),
                });
            }
            let channel_key =
                channel_key(params.suite(), ctx, &channel_secret, &ad.channel_public, core.me, ad.sender)
                    .map_err(|e| SecAggError::InvalidPeerKey { client: ad.sender, reason: e.to_string() })?;
            peers.insert(ad.sender, Peer { mask_public: ad.mask_public.clone(), channel_key });
        }
        let t = params.threshold();
        if peers.len() < t {
            return Err(SecAggError::TooFewNeighbours { phase: Phase::ShareKeys, got: peers.len(), need: t });
        }
        let xs: Vec<u32> = peers.keys().map(|v| v + 1).collect();
        let b_shares = shamir::split(&self_seed, t, &xs, rng).map_err(|_| SecAggError::TooFewNeighbours {
            phase: Phase::ShareKeys,
            got: xs.len(),
            need: t,
        })?;
        let s_shares = shamir::split(&mask_secret, t, &xs, rng)
            .map_err(|_| SecAggError::TooFewNeighbours { phase: Phase::ShareKeys, got: xs.len(), need: t })?;
        let suite = core.suite();
        let mut shares = Vec::with_capacity(peers.len());
        for (((&v, peer), b), s) in peers.iter().zip(&b_shares).zip(&s_shares) {
            let mut plain = Zeroizing::new(Vec::with_capacity(SHARE_PLAINTEXT_LEN));
            plain.extend_from_slice(&core.me.to_le_bytes());
            plain.extend_from_slice(&v.to_le_bytes());
            plain.extend_from_slice(b.to_bytes().as_ref());
            plain.extend_from_slice(s.to_bytes().as_ref());
            let ciphertext = suite.seal(
                &peer.channel_key,
                &share_nonce(core.me, v),
                &share_aad(ctx, core.me, v),
                &plain,
            )?;
            shares.push(EncryptedShare { peer: v, ciphertext });
        }
        let mut out = ShareKeys { sender: core.me, shares, signature: [0; 64] };
        out.signature = core.sign(&out.signed_bytes(ctx))?;
        let bytes = out.encode(ctx);
        Ok((ClientAwaitShares { core, graph, mask_secret, self_seed, peers }, bytes))
    }
}

/// After phase 1: waiting for the shares neighbours encrypted to this client ([`EncryptedShares`]).
pub struct ClientAwaitShares {
    core: Core,
    graph: Arc<NeighbourGraph>,
    mask_secret: SecretBytes,
    self_seed: SecretBytes,
    peers: BTreeMap<u32, Peer>,
}

impl std::fmt::Debug for ClientAwaitShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientAwaitShares({:?}, {} peers)", self.core, self.peers.len())
    }
}

/// The two shares a neighbour entrusted to this client.
struct Held {
    self_mask: Share,
    mask_key: Share,
}

impl ClientAwaitShares {
    /// Opens the neighbours' shares, masks `input` (length d, every element below 2^bits: the
    /// [`super::Quantizer`]'s output) with the self mask and one pairwise mask per neighbour that shared,
    /// and returns the signed [`MaskedInput`]. The client's own secrets are wiped here: only the
    /// neighbours' shares are kept.
    pub fn handle(self, msg: &[u8], input: &[u32]) -> Result<(ClientAwaitSurvivors, Vec<u8>), SecAggError> {
        self.handle_with_threads(msg, input, 1)
    }

    /// [`ClientAwaitShares::handle`], expanding the masks on `threads` scoped threads (see
    /// [`super::mask::apply_masks`]).
    pub fn handle_with_threads(
        self,
        msg: &[u8],
        input: &[u32],
        threads: usize,
    ) -> Result<(ClientAwaitSurvivors, Vec<u8>), SecAggError> {
        check_input(&self.core.params, input)?;
        let held = self.open_shares(msg)?;
        let masked = self.plan_for(held.keys().copied())?.apply(input.to_vec(), threads)?;
        self.finish(held, masked.values)
    }

    /// What [`MaskPlan::apply`] needs to mask an input before the phase-2 message arrives: the self mask
    /// and a pairwise mask for every neighbour that advertised keys. Expanding masks is most of a
    /// client's work in a round; done ahead, it overlaps the wait for the other clients' shares.
    pub fn mask_plan(&self) -> Result<MaskPlan, SecAggError> {
        self.plan_for(self.peers.keys().copied())
    }

    /// The self mask and the pairwise masks with `neighbours` (each one of this client's peers).
    fn plan_for(&self, neighbours: impl Iterator<Item = u32>) -> Result<MaskPlan, SecAggError> {
        let params = &self.core.params;
        let me = self.core.me;
        let peers = neighbours
            .map(|v| {
                let peer = self.peers.get(&v).ok_or(SecAggError::NotANeighbour { a: me, b: v })?;
                Ok((v, peer.mask_public.clone()))
            })
            .collect::<Result<_, SecAggError>>()?;
        Ok(MaskPlan {
            params: Arc::clone(params),
            me,
            self_mask: self_mask_seed(params.suite(), params.context(), &self.self_seed, me)?,
            mask_secret: self.mask_secret.clone(),
            peers,
        })
    }

    /// [`ClientAwaitShares::handle`] for an input masked ahead by this state's [`MaskPlan`]: opens the
    /// shares, removes again the pairwise mask of every neighbour that advertised keys but did not
    /// share (none, unless one dropped out in between), and signs. The result is the same message
    /// [`ClientAwaitShares::handle`] would have produced.
    pub fn handle_premasked(
        self,
        msg: &[u8],
        premasked: PremaskedInput,
    ) -> Result<(ClientAwaitSurvivors, Vec<u8>), SecAggError> {
        let params = &self.core.params;
        if premasked.context != *params.context() || premasked.me != self.core.me {
            return Err(SecAggError::BadInput {
                reason: "the input was masked for another round or client".into(),
            });
        }
        let held = self.open_shares(msg)?;
        if let Some(v) = held.keys().find(|v| !premasked.pairwise.contains_key(v)) {
            return Err(SecAggError::BadInput {
                reason: format!("the input was masked without neighbour {v}"),
            });
        }
        let PremaskedInput { mut values, mut pairwise, .. } = premasked;
        pairwise.retain(|v, _| !held.contains_key(v));
        let undo: Vec<_> = pairwise.into_values().map(|(seed, sign)| (seed, sign.flip())).collect();
        apply_masks(params.suite(), &undo, &mut values, 1);
        self.finish(held, values)
    }

    /// Decodes the relayed [`EncryptedShares`] and opens each; at least t neighbours must have shared.
    fn open_shares(&self, msg: &[u8]) -> Result<BTreeMap<u32, Held>, SecAggError> {
        let core = &self.core;
        let params = &core.params;
        let ctx = params.context();
        let relayed = EncryptedShares::decode(msg, params.limits())?;
        core.check_recipient(relayed.recipient)?;
        let suite = core.suite();
        let mut held = BTreeMap::new();
        for entry in &relayed.shares {
            let from = entry.peer;
            let peer = self.peers.get(&from).ok_or(SecAggError::NotANeighbour { a: core.me, b: from })?;
            let plain = Zeroizing::new(
                suite
                    .open(
                        &peer.channel_key,
                        &share_nonce(from, core.me),
                        &share_aad(ctx, from, core.me),
                        &entry.ciphertext,
                    )
                    .map_err(|_| SecAggError::ShareDecryption { from })?,
            );
            held.insert(from, parse_share_plaintext(&plain, from, core.me)?);
        }
        let t = params.threshold();
        if held.len() < t {
            return Err(SecAggError::TooFewNeighbours {
                phase: Phase::MaskedInputCollection,
                got: held.len(),
                need: t,
            });
        }
        Ok(held)
    }

    /// Reduces the masked `values` to the ring, signs them and moves on; the client's own secrets are
    /// dropped (wiped) with `self`.
    fn finish(
        self,
        held: BTreeMap<u32, Held>,
        mut values: Vec<u32>,
    ) -> Result<(ClientAwaitSurvivors, Vec<u8>), SecAggError> {
        let core = self.core;
        let params = Arc::clone(&core.params);
        let bits = params.modulus_bits();
        let ring = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
        values.iter_mut().for_each(|v| *v &= ring);
        let mut out = MaskedInput { sender: core.me, values, signature: [0; 64] };
        let signed = out.signed_bytes(params.context(), params.limits());
        out.signature = core.sign(&signed)?;
        let mut bytes = signed;
        bytes.extend_from_slice(&out.signature);
        Ok((ClientAwaitSurvivors { core, graph: self.graph, held }, bytes))
    }
}

/// The input must have the round's length d and every element below 2^bits.
fn check_input(params: &RoundParams, input: &[u32]) -> Result<(), SecAggError> {
    let (d, bits) = (params.vector_len(), params.modulus_bits());
    if input.len() != d {
        return Err(SecAggError::BadInput {
            reason: format!("{} elements, the round sums {d}", input.len()),
        });
    }
    if let Some(i) = input.iter().position(|&v| u64::from(v) >> bits != 0) {
        return Err(SecAggError::BadInput { reason: format!("element {i} is not below 2^{bits}") });
    }
    Ok(())
}

/// The seed and sign of client `me`'s pairwise mask with each of `peers` (index, mask public key).
fn pairwise_masks<'a>(
    params: &RoundParams,
    me: u32,
    mask_secret: &SecretBytes,
    peers: impl Iterator<Item = (u32, &'a Vec<u8>)>,
) -> Result<BTreeMap<u32, (SecretBytes, Sign)>, SecAggError> {
    peers
        .map(|(v, public)| {
            let seed = pairwise_seed(params.suite(), params.context(), mask_secret, public, me, v)
                .map_err(|e| SecAggError::InvalidPeerKey { client: v, reason: e.to_string() })?;
            Ok((v, (seed, pairwise_sign(me, v))))
        })
        .collect()
}

/// A client's masks, ready to apply before the phase-2 message arrives (see
/// [`ClientAwaitShares::mask_plan`]). Holds the client's mask secret; wiped on drop.
pub struct MaskPlan {
    params: Arc<RoundParams>,
    me: u32,
    self_mask: SecretBytes,
    mask_secret: SecretBytes,
    peers: Vec<(u32, Vec<u8>)>,
}

impl std::fmt::Debug for MaskPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaskPlan(client {}, {} neighbours)", self.me, self.peers.len())
    }
}

impl MaskPlan {
    /// Checks `input` as [`ClientAwaitShares::handle`] does and masks it in place with the self mask and
    /// every advertised neighbour's pairwise mask, expanding on `threads` threads. CPU work: run it off
    /// the async workers.
    pub fn apply(self, input: Vec<u32>, threads: usize) -> Result<PremaskedInput, SecAggError> {
        let params = &self.params;
        check_input(params, &input)?;
        let pairwise =
            pairwise_masks(params, self.me, &self.mask_secret, self.peers.iter().map(|(v, p)| (*v, p)))?;
        let mut masks = Vec::with_capacity(pairwise.len() + 1);
        masks.push((self.self_mask.clone(), Sign::Add));
        masks.extend(pairwise.values().cloned());
        let mut values = input;
        apply_masks(params.suite(), &masks, &mut values, threads);
        Ok(PremaskedInput { context: *params.context(), me: self.me, values, pairwise })
    }
}

/// An input masked ahead by a [`MaskPlan`]; finish it with [`ClientAwaitShares::handle_premasked`].
pub struct PremaskedInput {
    context: [u8; 32],
    me: u32,
    values: Vec<u32>,
    /// The pairwise masks applied, by neighbour, to remove again for a neighbour that did not share.
    pairwise: BTreeMap<u32, (SecretBytes, Sign)>,
}

impl std::fmt::Debug for PremaskedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PremaskedInput(client {}, {} values)", self.me, self.values.len())
    }
}

fn parse_share_plaintext(plain: &[u8], from: u32, me: u32) -> Result<Held, SecAggError> {
    let bad = SecAggError::ShareDecryption { from };
    if plain.len() != SHARE_PLAINTEXT_LEN {
        return Err(bad);
    }
    let (ids, rest) = plain.split_at(8);
    if ids[..4] != from.to_le_bytes() || ids[4..] != me.to_le_bytes() {
        return Err(bad);
    }
    let (b, s) = rest.split_at(SHARE_LEN);
    let mut b_arr = Zeroizing::new([0u8; SHARE_LEN]);
    let mut s_arr = Zeroizing::new([0u8; SHARE_LEN]);
    b_arr.copy_from_slice(b);
    s_arr.copy_from_slice(s);
    let self_mask = Share::from_bytes(me + 1, &b_arr).ok_or(SecAggError::ShareDecryption { from })?;
    let mask_key = Share::from_bytes(me + 1, &s_arr).ok_or(bad)?;
    Ok(Held { self_mask, mask_key })
}

/// After phase 2: waiting for the survivor set ([`SurvivorSet`]).
pub struct ClientAwaitSurvivors {
    core: Core,
    graph: Arc<NeighbourGraph>,
    held: BTreeMap<u32, Held>,
}

impl std::fmt::Debug for ClientAwaitSurvivors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientAwaitSurvivors({:?}, holding shares of {} neighbours)", self.core, self.held.len())
    }
}

impl ClientAwaitSurvivors {
    /// Checks the survivor set (this client is in it; every surviving neighbour shared with it; at least
    /// [`RoundParams::survivor_floor`] survivors) and returns the signed [`ConsistencySignature`] over it.
    pub fn handle(self, msg: &[u8]) -> Result<(ClientAwaitUnmask, Vec<u8>), SecAggError> {
        let core = self.core;
        let params = Arc::clone(&core.params);
        let set = SurvivorSet::decode(msg, params.limits())?;
        core.check_recipient(set.recipient)?;
        if set.survivors.binary_search(&core.me).is_err() {
            return Err(SecAggError::InconsistentSurvivors {
                reason: format!("client {} is left out", core.me),
            });
        }
        if let Some(v) = set
            .survivors
            .iter()
            .find(|&&v| self.graph.are_neighbours(core.me, v) && !self.held.contains_key(&v))
        {
            return Err(SecAggError::InconsistentSurvivors {
                reason: format!("neighbour {v} survived but never sent its shares"),
            });
        }
        // Never help unmask a sum over fewer inputs than the round's floor: with fewer survivors, a
        // distributed noise calibrated for the floor is too small, and a small sum says more of each input.
        let floor = params.survivor_floor();
        if set.survivors.len() < floor {
            return Err(SecAggError::TooFewSurvivors {
                phase: Phase::ConsistencyCheck,
                got: set.survivors.len(),
                need: floor,
            });
        }
        let signature =
            core.sign(&ConsistencySignature::signed_bytes(core.me, &set.survivors, params.context()))?;
        let out = ConsistencySignature { sender: core.me, signature }.encode(params.context());
        Ok((ClientAwaitUnmask { core, graph: self.graph, held: self.held, survivors: set.survivors }, out))
    }
}

/// After phase 3: waiting for the neighbours' consistency signatures ([`UnmaskRequest`]).
pub struct ClientAwaitUnmask {
    core: Core,
    graph: Arc<NeighbourGraph>,
    held: BTreeMap<u32, Held>,
    survivors: Vec<u32>,
}

impl std::fmt::Debug for ClientAwaitUnmask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientAwaitUnmask({:?}, {} survivors)", self.core, self.survivors.len())
    }
}

impl ClientAwaitUnmask {
    /// Verifies at least t neighbours' signatures on the same survivor set this client signed, then
    /// reveals, for each neighbour that shared with it, the self-mask share if that neighbour survived
    /// and the mask-key share if it dropped out. Returns the signed [`UnmaskShares`]; the round is over
    /// for this client.
    pub fn handle(self, msg: &[u8]) -> Result<Vec<u8>, SecAggError> {
        let core = self.core;
        let params = Arc::clone(&core.params);
        let ctx = params.context();
        let request = UnmaskRequest::decode(msg, params.limits())?;
        core.check_recipient(request.recipient)?;
        for (signer, signature) in &request.signatures {
            if !self.graph.are_neighbours(core.me, *signer) {
                return Err(SecAggError::NotANeighbour { a: core.me, b: *signer });
            }
            if self.survivors.binary_search(signer).is_err() {
                return Err(SecAggError::InconsistentSurvivors {
                    reason: format!("signer {signer} is not a survivor"),
                });
            }
            core.verify(
                *signer,
                &ConsistencySignature::signed_bytes(*signer, &self.survivors, ctx),
                signature,
            )?;
        }
        let t = params.threshold();
        if request.signatures.len() < t {
            return Err(SecAggError::TooFewNeighbours {
                phase: Phase::Unmasking,
                got: request.signatures.len(),
                need: t,
            });
        }
        let shares = self
            .held
            .iter()
            .map(|(&owner, held)| {
                let (kind, share) = if self.survivors.binary_search(&owner).is_ok() {
                    (SecretKind::SelfMask, &held.self_mask)
                } else {
                    (SecretKind::MaskKey, &held.mask_key)
                };
                RevealedShare { owner, kind, share: share.to_bytes() }
            })
            .collect();
        let mut out = UnmaskShares { sender: core.me, shares, signature: [0; 64] };
        out.signature = core.sign(&out.signed_bytes(ctx))?;
        Ok(out.encode(ctx).to_vec())
    }
}
