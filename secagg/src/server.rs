//! The server side of a round, as a chain of phase types. Within a phase, `receive` checks one client
//! message (decode, sender, membership, duplicate, signature) and either records it or refuses it with a
//! precise error, leaving the state unchanged; `close` consumes the phase when the service decides it is
//! over (all expected messages in, or a deadline) and returns the next phase with the messages to relay.
//!
//! Responsibility: relay and unmask. The server never holds an individual vector: masked inputs are
//! folded into a running sum as they arrive. It rebuilds only the secrets it needs (a self-mask seed per
//! survivor, a mask key per client that dropped after sharing and has surviving neighbours), never both
//! of one client, and only from at least t shares; its one output is [`UnmaskedSum`], which nothing
//! outside this module can construct.
//!
//! Every error `receive` returns is about the message the authenticated peer `from` just sent (malformed,
//! out of order, replayed, duplicated, forged or misaddressed): the service audits it under that peer and
//! carries on; errors from `close` abort the round.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hearth_crypto::suite::SecretBytes;

use super::graph::{graph_seed, seed_commitment, NeighbourGraph};
use super::mask::{agreement_public, apply_masks, fold, pairwise_seed, pairwise_sign, self_mask_seed, Sign};
use super::messages::{
    AdvertiseKeys, ConsistencySignature, EncryptedShare, EncryptedShares, KeysBroadcast, MaskedInputView,
    SecretKind, SeedCommitments, SeedReveal, ShareKeys, Signature, SurvivorSet, UnmaskRequest, UnmaskShares,
};
use super::shamir::{self, ShamirError, Share};
use super::wire::signed_part;
use super::{ClientIndex, MessageKind, Phase, RoundParams, SecAggError};

/// A message for one client, produced when a phase closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The recipient.
    pub to: ClientIndex,
    /// The encoded message, opaque to the service.
    pub bytes: Vec<u8>,
}

/// The aggregate of a finished round: the modular sum of the survivors' inputs. Only this module can
/// make one, after removing every mask with secrets rebuilt from at least t shares each, so holding an
/// `UnmaskedSum` proves the round completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskedSum {
    values: Vec<u32>,
    contributors: Vec<ClientIndex>,
    modulus_bits: u8,
}

impl UnmaskedSum {
    /// The sum modulo 2^bits, element by element (decode with [`super::Quantizer::decode_sum`]).
    pub fn values(&self) -> &[u32] {
        &self.values
    }

    /// The clients whose inputs the sum contains (U3).
    pub fn contributors(&self) -> &[ClientIndex] {
        &self.contributors
    }

    /// Bits of the ring.
    pub fn modulus_bits(&self) -> u8 {
        self.modulus_bits
    }

    /// The sum, consumed.
    pub fn into_values(self) -> Vec<u32> {
        self.values
    }
}

/// Checks what every client message must satisfy: the sender field is the authenticated peer, the
/// peer may speak in this phase, and it has not spoken yet.
fn admit<T>(
    kind: MessageKind,
    claimed: u32,
    from: ClientIndex,
    allowed: impl Fn(u32) -> bool,
    seen: &BTreeMap<u32, T>,
) -> Result<(), SecAggError> {
    if claimed != from.0 {
        return Err(SecAggError::SenderMismatch { claimed, authenticated: from.0 });
    }
    if !allowed(claimed) {
        return Err(SecAggError::NotInRound { kind, sender: claimed });
    }
    if seen.contains_key(&claimed) {
        return Err(SecAggError::Duplicate { kind, sender: claimed });
    }
    Ok(())
}

fn verify(params: &RoundParams, signer: u32, signed: &[u8], signature: &[u8]) -> Result<(), SecAggError> {
    let key =
        params.verifying_key(signer).ok_or(SecAggError::UnknownClient { index: signer, n: params.n() })?;
    params.suite().suite().verify(key, signed, signature).map_err(|_| SecAggError::BadSignature { signer })
}

/// At least the survivor floor (t, or the round's `min_survivors` if larger) is still in the round: with
/// fewer, no client would sign the survivor set.
fn enough(phase: Phase, got: usize, params: &RoundParams) -> Result<(), SecAggError> {
    let need = params.survivor_floor();
    if got < need {
        Err(SecAggError::TooFewSurvivors { phase, got, need })
    } else {
        Ok(())
    }
}

/// Phase 0: collecting [`AdvertiseKeys`].
#[derive(Debug)]
pub struct ServerAdvertise {
    params: Arc<RoundParams>,
    keys: BTreeMap<u32, AdvertiseKeys>,
}

impl ServerAdvertise {
    /// A new round.
    pub fn new(params: Arc<RoundParams>) -> Self {
        Self { params, keys: BTreeMap::new() }
    }

    /// Records the keys of client `from` (the peer the transport authenticated).
    pub fn receive(&mut self, from: ClientIndex, msg: &[u8]) -> Result<(), SecAggError> {
        let ad = AdvertiseKeys::decode(msg, self.params.limits())?;
        admit(MessageKind::AdvertiseKeys, ad.sender, from, |_| true, &self.keys)?;
        verify(&self.params, ad.sender, &ad.signed_bytes(self.params.context()), &ad.signature)?;
        self.keys.insert(ad.sender, ad);
        Ok(())
    }

    /// Clients heard from so far.
    pub fn received(&self) -> usize {
        self.keys.len()
    }

    /// Ends phase 0: each client that advertised gets every advertiser's graph-seed commitment. Aborts
    /// below the survivor floor.
    pub fn close(self) -> Result<(ServerReveal, Vec<Outgoing>), SecAggError> {
        enough(Phase::AdvertiseKeys, self.keys.len(), &self.params)?;
        let ctx = self.params.context();
        let commitments: Vec<(u32, [u8; 32])> =
            self.keys.iter().map(|(u, ad)| (*u, ad.seed_commitment)).collect();
        let out = self
            .keys
            .keys()
            .map(|&u| Outgoing {
                to: ClientIndex(u),
                bytes: SeedCommitments { recipient: u, commitments: commitments.clone() }.encode(ctx),
            })
            .collect();
        Ok((ServerReveal { params: self.params, keys: self.keys, reveals: BTreeMap::new() }, out))
    }
}

/// Phase 1: collecting [`SeedReveal`]s, each opening its sender's phase-0 commitment.
#[derive(Debug)]
pub struct ServerReveal {
    params: Arc<RoundParams>,
    keys: BTreeMap<u32, AdvertiseKeys>,
    reveals: BTreeMap<u32, [u8; 32]>,
}

impl ServerReveal {
    /// Records client `from`'s graph-seed contribution, which must open its commitment.
    pub fn receive(&mut self, from: ClientIndex, msg: &[u8]) -> Result<(), SecAggError> {
        let m = SeedReveal::decode(msg, self.params.limits())?;
        admit(MessageKind::SeedReveal, m.sender, from, |u| self.keys.contains_key(&u), &self.reveals)?;
        let ctx = self.params.context();
        verify(&self.params, m.sender, &m.signed_bytes(ctx), &m.signature)?;
        let committed = self.keys.get(&m.sender).map(|ad| ad.seed_commitment);
        if committed != Some(seed_commitment(self.params.suite(), ctx, m.sender, &m.contribution)) {
            return Err(SecAggError::SeedMismatch { client: m.sender });
        }
        self.reveals.insert(m.sender, m.contribution);
        Ok(())
    }

    /// Clients heard from so far.
    pub fn received(&self) -> usize {
        self.reveals.len()
    }

    /// Ends phase 1: every client that committed must have revealed (otherwise the round aborts: no one
    /// may choose among seeds by withholding). Computes the graph seed and the graph, and sends each
    /// client every contribution and its neighbours' signed keys.
    pub fn close(self) -> Result<(ServerShareKeys, Vec<Outgoing>), SecAggError> {
        let missing: Vec<u32> = self.keys.keys().copied().filter(|u| !self.reveals.contains_key(u)).collect();
        if !missing.is_empty() {
            return Err(SecAggError::SeedWithheld { missing });
        }
        let ctx = self.params.context();
        let reveals: Vec<(u32, [u8; 32])> = self.reveals.into_iter().collect();
        let graph = Arc::new(self.params.graph_for(&graph_seed(self.params.suite(), ctx, &reveals)));
        let out = self
            .keys
            .keys()
            .map(|&u| {
                let advertisements =
                    graph.neighbours(u).iter().filter_map(|v| self.keys.get(v).cloned()).collect();
                Outgoing {
                    to: ClientIndex(u),
                    bytes: KeysBroadcast { recipient: u, reveals: reveals.clone(), advertisements }
                        .encode(ctx),
                }
            })
            .collect();
        Ok((ServerShareKeys { params: self.params, graph, keys: self.keys, shares: BTreeMap::new() }, out))
    }
}

/// Phase 1: collecting [`ShareKeys`].
#[derive(Debug)]
pub struct ServerShareKeys {
    params: Arc<RoundParams>,
    graph: Arc<NeighbourGraph>,
    keys: BTreeMap<u32, AdvertiseKeys>,
    shares: BTreeMap<u32, Vec<EncryptedShare>>,
}

impl ServerShareKeys {
    /// The round's neighbour graph, from the revealed graph seed.
    pub fn graph(&self) -> &NeighbourGraph {
        &self.graph
    }

    /// Records client `from`'s encrypted shares: exactly one for each neighbour that advertised keys.
    pub fn receive(&mut self, from: ClientIndex, msg: &[u8]) -> Result<(), SecAggError> {
        let m = ShareKeys::decode(msg, self.params.limits())?;
        admit(MessageKind::ShareKeys, m.sender, from, |u| self.keys.contains_key(&u), &self.shares)?;
        verify(&self.params, m.sender, &m.signed_bytes(self.params.context()), &m.signature)?;
        let expected: Vec<u32> =
            self.graph.neighbours(m.sender).iter().copied().filter(|v| self.keys.contains_key(v)).collect();
        let got: Vec<u32> = m.shares.iter().map(|s| s.peer).collect();
        if got != expected {
            return Err(SecAggError::WrongShareRecipients {
                sender: m.sender,
                reason: format!("addressed to {got:?}, live neighbours are {expected:?}"),
            });
        }
        self.shares.insert(m.sender, m.shares);
        Ok(())
    }

    /// Clients heard from so far.
    pub fn received(&self) -> usize {
        self.shares.len()
    }

    /// Ends phase 1: each client that shared gets the ciphertexts its sharing neighbours addressed to
    /// it. Aborts below t clients.
    pub fn close(self) -> Result<(ServerMaskedInput, Vec<Outgoing>), SecAggError> {
        enough(Phase::ShareKeys, self.shares.len(), &self.params)?;
        let ctx = self.params.context();
        let out = self
            .shares
            .keys()
            .map(|&u| {
                let shares = self
                    .graph
                    .neighbours(u)
                    .iter()
                    .filter_map(|v| {
                        let list = self.shares.get(v)?;
                        let i = list.binary_search_by_key(&u, |s| s.peer).ok()?;
                        list.get(i).map(|s| EncryptedShare { peer: *v, ciphertext: s.ciphertext.clone() })
                    })
                    .collect();
                Outgoing { to: ClientIndex(u), bytes: EncryptedShares { recipient: u, shares }.encode(ctx) }
            })
            .collect();
        let mask_keys = self
            .shares
            .keys()
            .filter_map(|u| self.keys.get(u).map(|k| (*u, k.mask_public.clone())))
            .collect();
        let sum = vec![0u32; self.params.vector_len()];
        Ok((
            ServerMaskedInput {
                params: self.params,
                graph: self.graph,
                mask_keys,
                sum,
                uploaded: BTreeMap::new(),
            },
            out,
        ))
    }
}

/// Phase 2: collecting [`super::MaskedInput`]s, folded into a running sum as they arrive.
#[derive(Debug)]
pub struct ServerMaskedInput {
    params: Arc<RoundParams>,
    graph: Arc<NeighbourGraph>,
    /// U2 with each client's advertised mask public key.
    mask_keys: BTreeMap<u32, Vec<u8>>,
    sum: Vec<u32>,
    uploaded: BTreeMap<u32, ()>,
}

impl ServerMaskedInput {
    /// Checks client `from`'s masked vector and adds it to the running sum; the vector itself is not
    /// kept.
    pub fn receive(&mut self, from: ClientIndex, msg: &[u8]) -> Result<(), SecAggError> {
        let m = MaskedInputView::decode(msg, self.params.limits())?;
        admit(MessageKind::MaskedInput, m.sender, from, |u| self.mask_keys.contains_key(&u), &self.uploaded)?;
        let (signed, signature) = signed_part(msg).ok_or(SecAggError::BadSignature { signer: m.sender })?;
        verify(&self.params, m.sender, signed, signature)?;
        if m.word_bytes == 4 {
            fold(&mut self.sum, m.raw, Sign::Add);
        } else {
            let mut sum = self.sum.iter_mut();
            m.for_each_value(|v| {
                if let Some(s) = sum.next() {
                    *s = s.wrapping_add(v);
                }
            });
        }
        self.uploaded.insert(m.sender, ());
        Ok(())
    }

    /// Clients heard from so far.
    pub fn received(&self) -> usize {
        self.uploaded.len()
    }

    /// Ends phase 2: every client that uploaded gets the survivor set U3. Aborts below t.
    pub fn close(self) -> Result<(ServerConsistency, Vec<Outgoing>), SecAggError> {
        enough(Phase::MaskedInputCollection, self.uploaded.len(), &self.params)?;
        let survivors: Vec<u32> = self.uploaded.keys().copied().collect();
        let ctx = self.params.context();
        let out = survivors
            .iter()
            .map(|&u| Outgoing {
                to: ClientIndex(u),
                bytes: SurvivorSet { recipient: u, survivors: survivors.clone() }.encode(ctx),
            })
            .collect();
        let next = ServerConsistency {
            params: self.params,
            graph: self.graph,
            mask_keys: self.mask_keys,
            sum: self.sum,
            survivors,
            signatures: BTreeMap::new(),
        };
        Ok((next, out))
    }
}

/// Phase 3: collecting [`ConsistencySignature`]s over the survivor set.
#[derive(Debug)]
pub struct ServerConsistency {
    params: Arc<RoundParams>,
    graph: Arc<NeighbourGraph>,
    mask_keys: BTreeMap<u32, Vec<u8>>,
    sum: Vec<u32>,
    survivors: Vec<u32>,
    signatures: BTreeMap<u32, Signature>,
}

impl ServerConsistency {
    /// Records survivor `from`'s signature over the survivor set.
    pub fn receive(&mut self, from: ClientIndex, msg: &[u8]) -> Result<(), SecAggError> {
        let m = ConsistencySignature::decode(msg, self.params.limits())?;
        admit(
            MessageKind::ConsistencySignature,
            m.sender,
            from,
            |u| self.survivors.binary_search(&u).is_ok(),
            &self.signatures,
        )?;
        let signed = ConsistencySignature::signed_bytes(m.sender, &self.survivors, self.params.context());
        verify(&self.params, m.sender, &signed, &m.signature)?;
        self.signatures.insert(m.sender, m.signature);
        Ok(())
    }

    /// Clients heard from so far.
    pub fn received(&self) -> usize {
        self.signatures.len()
    }

    /// Ends phase 3: every signer gets its neighbours' signatures. Aborts below t.
    pub fn close(self) -> Result<(ServerUnmasking, Vec<Outgoing>), SecAggError> {
        enough(Phase::ConsistencyCheck, self.signatures.len(), &self.params)?;
        let ctx = self.params.context();
        let out = self
            .signatures
            .keys()
            .map(|&u| {
                let signatures = self
                    .graph
                    .neighbours(u)
                    .iter()
                    .filter_map(|v| self.signatures.get(v).map(|s| (*v, *s)))
                    .collect();
                Outgoing { to: ClientIndex(u), bytes: UnmaskRequest { recipient: u, signatures }.encode(ctx) }
            })
            .collect();
        let signers = self.signatures.keys().copied().collect();
        let next = ServerUnmasking {
            params: self.params,
            graph: self.graph,
            mask_keys: self.mask_keys,
            sum: self.sum,
            survivors: self.survivors,
            signers,
            shares: BTreeMap::new(),
            responded: BTreeMap::new(),
        };
        Ok((next, out))
    }
}

/// Phase 4: collecting [`UnmaskShares`], then unmasking the sum.
#[derive(Debug)]
pub struct ServerUnmasking {
    params: Arc<RoundParams>,
    graph: Arc<NeighbourGraph>,
    mask_keys: BTreeMap<u32, Vec<u8>>,
    sum: Vec<u32>,
    survivors: Vec<u32>,
    signers: BTreeSet<u32>,
    /// Per owner: the shares of the one secret the server needs of it.
    shares: BTreeMap<u32, Vec<Share>>,
    responded: BTreeMap<u32, ()>,
}

impl ServerUnmasking {
    fn survived(&self, u: u32) -> bool {
        self.survivors.binary_search(&u).is_ok()
    }

    /// Records survivor `from`'s revealed shares: exactly one per neighbour that shared, of the self
    /// mask for survivors and of the mask key for those who dropped.
    pub fn receive(&mut self, from: ClientIndex, msg: &[u8]) -> Result<(), SecAggError> {
        let m = UnmaskShares::decode(msg, self.params.limits())?;
        admit(MessageKind::UnmaskShares, m.sender, from, |u| self.signers.contains(&u), &self.responded)?;
        verify(&self.params, m.sender, &m.signed_bytes(self.params.context()), &m.signature)?;
        let expected: Vec<u32> = self
            .graph
            .neighbours(m.sender)
            .iter()
            .copied()
            .filter(|v| self.mask_keys.contains_key(v))
            .collect();
        for s in &m.shares {
            let kind = if self.survived(s.owner) { SecretKind::SelfMask } else { SecretKind::MaskKey };
            if s.kind != kind || expected.binary_search(&s.owner).is_err() {
                return Err(SecAggError::WrongShareKind { sender: m.sender, owner: s.owner });
            }
        }
        if let Some(owner) = expected.iter().find(|v| m.shares.binary_search_by_key(*v, |s| s.owner).is_err())
        {
            return Err(SecAggError::IncompleteShares { sender: m.sender, owner: *owner });
        }
        let mut parsed = Vec::with_capacity(m.shares.len());
        for s in &m.shares {
            let share = Share::from_bytes(m.sender + 1, &s.share).ok_or_else(|| SecAggError::OutOfRange {
                what: "revealed share",
                reason: format!("client {}'s share of client {} is not a field element", m.sender, s.owner),
            })?;
            parsed.push((s.owner, share));
        }
        for (owner, share) in parsed {
            self.shares.entry(owner).or_default().push(share);
        }
        self.responded.insert(m.sender, ());
        Ok(())
    }

    /// Clients heard from so far.
    pub fn received(&self) -> usize {
        self.responded.len()
    }

    /// Ends the round. First checks that every needed secret has at least t shares (otherwise aborts
    /// without rebuilding anything), then rebuilds them and removes the masks.
    pub fn close(self) -> Result<UnmaskedSum, SecAggError> {
        self.close_with_threads(1)
    }

    /// [`ServerUnmasking::close`], removing the masks on `threads` scoped threads (see
    /// [`super::mask::apply_masks`]).
    pub fn close_with_threads(self, threads: usize) -> Result<UnmaskedSum, SecAggError> {
        enough(Phase::Unmasking, self.responded.len(), &self.params)?;
        let t = self.params.threshold();
        let graph = &self.graph;
        // Needed: the self-mask seed of every survivor; the mask key of every client that shared but did
        // not upload, if some survivor applied a pairwise mask with it.
        let dropped: Vec<u32> = self
            .mask_keys
            .keys()
            .copied()
            .filter(|&v| !self.survived(v) && graph.neighbours(v).iter().any(|w| self.survived(*w)))
            .collect();
        for &owner in self.survivors.iter().chain(&dropped) {
            let got = self.shares.get(&owner).map_or(0, Vec::len);
            if got < t {
                return Err(SecAggError::NotEnoughShares { owner, got, need: t });
            }
        }
        let suite = self.params.suite();
        let ctx = self.params.context();
        let rebuild = |owner: u32| -> Result<SecretBytes, SecAggError> {
            let shares = self.shares.get(&owner).map(Vec::as_slice).unwrap_or(&[]);
            shamir::reconstruct(shares, t).map_err(|e| match e {
                ShamirError::NotEnough { got } => SecAggError::NotEnoughShares { owner, got, need: t },
                ShamirError::BadCoordinates | ShamirError::Inconsistent => {
                    SecAggError::InconsistentShares { owner }
                }
            })
        };
        let mut seeds = Vec::with_capacity(self.survivors.len() + dropped.len() * graph.degree() as usize);
        for &u in &self.survivors {
            seeds.push((self_mask_seed(suite, ctx, &rebuild(u)?, u)?, Sign::Subtract));
        }
        for &v in &dropped {
            let key = rebuild(v)?;
            let advertised = self.mask_keys.get(&v).map(Vec::as_slice).unwrap_or(&[]);
            if agreement_public(suite, &key).ok().as_deref() != Some(advertised) {
                return Err(SecAggError::InconsistentShares { owner: v });
            }
            for &w in graph.neighbours(v).iter().filter(|w| self.survived(**w)) {
                let public = self.mask_keys.get(&w).map(Vec::as_slice).unwrap_or(&[]);
                let seed = pairwise_seed(suite, ctx, &key, public, v, w)
                    .map_err(|e| SecAggError::InvalidPeerKey { client: w, reason: e.to_string() })?;
                // Survivor w applied this mask with pairwise_sign(w, v); remove it.
                seeds.push((seed, pairwise_sign(w, v).flip()));
            }
        }
        let mut sum = self.sum;
        apply_masks(suite, &seeds, &mut sum, threads);
        let bits = self.params.modulus_bits();
        let ring = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
        sum.iter_mut().for_each(|v| *v &= ring);
        Ok(UnmaskedSum {
            values: sum,
            contributors: self.survivors.iter().map(|&u| ClientIndex(u)).collect(),
            modulus_bits: bits,
        })
    }
}
