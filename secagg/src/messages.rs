//! The protocol's messages and their canonical, versioned binary encoding.
//!
//! Responsibility: turn each message into bytes and back, refusing anything that does not fit the
//! round's [`Limits`] before allocating. It checks shapes (lengths, index ranges, canonical order), never
//! signatures or protocol state: that is the client's and server's job.
//!
//! Every message starts with `version (1) | type (1) | context hash (32)`. Client messages continue with
//! `sender (u32)`, their body, and end with a 64-byte signature over everything before it (the
//! consistency signature also covers the survivor set it endorses). Server messages continue with
//! `recipient (u32)` and their body; they carry no signature of their own: what they relay is signed or
//! authenticated end to end by clients. Integers are little-endian; lists are `count (u32)` then entries
//! in strictly increasing client index.

use zeroize::Zeroizing;

use hearth_crypto::suite::{NONCE_LEN, SIGNATURE_LEN, TAG_LEN};

use super::shamir::SHARE_LEN;
use super::wire::{header, Ascending, Reader, HEADER_LEN};
use super::{Limits, MessageKind, SecAggError};

/// Plaintext of one encrypted share: sender, recipient, share of b, share of the mask key.
pub(crate) const SHARE_PLAINTEXT_LEN: usize = 8 + 2 * SHARE_LEN;
/// Ciphertext of one encrypted share: plaintext plus AEAD tag.
pub const SHARE_CIPHERTEXT_LEN: usize = SHARE_PLAINTEXT_LEN + TAG_LEN;
const _: () = assert!(NONCE_LEN == 12);

/// A signature, 64 bytes in both suites.
pub type Signature = [u8; SIGNATURE_LEN];

/// Phase 0, client to server: the client's two key-agreement public keys (share channel, masks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseKeys {
    /// The sending client.
    pub sender: u32,
    /// Public key for the share channel (c_u^PK in Bonawitz et al.).
    pub channel_public: Vec<u8>,
    /// Public key for pairwise masks (s_u^PK).
    pub mask_public: Vec<u8>,
    /// Commitment to the sender's contribution to the neighbour graph's seed (see
    /// [`super::graph::seed_commitment`]), opened in [`SeedReveal`] once every commitment is fixed.
    pub seed_commitment: [u8; 32],
    /// The sender's signature over the rest.
    pub signature: Signature,
}

/// Phase 0 result, server to client: the graph-seed commitment of every client that advertised keys.
/// A client reveals its own contribution only after it has the list, so no contribution in it can
/// depend on the recipient's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedCommitments {
    /// The client this is for.
    pub recipient: u32,
    /// `(client, commitment)` by increasing client.
    pub commitments: Vec<(u32, [u8; 32])>,
}

/// Phase 1, client to server: the sender's graph-seed contribution, opening its commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReveal {
    /// The sending client.
    pub sender: u32,
    /// The 32 random bytes committed to in the sender's [`AdvertiseKeys`].
    pub contribution: [u8; 32],
    /// The sender's signature over the rest.
    pub signature: Signature,
}

/// Phase 1 result, server to client: every committed contribution (from which the recipient computes
/// the graph seed itself) and the signed advertisements of the recipient's neighbours in that graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysBroadcast {
    /// The client this is for.
    pub recipient: u32,
    /// `(client, contribution)` for every client of [`SeedCommitments`], by increasing client.
    pub reveals: Vec<(u32, [u8; 32])>,
    /// The neighbours' advertisements, by increasing sender.
    pub advertisements: Vec<AdvertiseKeys>,
}

/// One encrypted share addressed to a neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    /// The other client: recipient in [`ShareKeys`], sender in [`EncryptedShares`].
    pub peer: u32,
    /// AEAD ciphertext of `sender | recipient | share of b | share of the mask key`.
    pub ciphertext: Vec<u8>,
}

/// Phase 1, client to server: one encrypted share pair per live neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareKeys {
    /// The sending client.
    pub sender: u32,
    /// One ciphertext per neighbour, by increasing recipient.
    pub shares: Vec<EncryptedShare>,
    /// The sender's signature over the rest.
    pub signature: Signature,
}

/// Phase 1 result, server to client: the ciphertexts neighbours addressed to the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShares {
    /// The client this is for.
    pub recipient: u32,
    /// By increasing sender (`peer`).
    pub shares: Vec<EncryptedShare>,
}

/// Phase 2, client to server: the masked input vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedInput {
    /// The sending client.
    pub sender: u32,
    /// `x_u + masks`, each element below 2^bits.
    pub values: Vec<u32>,
    /// The sender's signature over the rest.
    pub signature: Signature,
}

/// Phase 2 result, server to client: who uploaded a masked input (U3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurvivorSet {
    /// The client this is for.
    pub recipient: u32,
    /// The survivors, increasing.
    pub survivors: Vec<u32>,
}

/// Phase 3, client to server: the sender's signature over the survivor set it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencySignature {
    /// The signing client.
    pub sender: u32,
    /// Signature over the header, sender and the encoded survivor set.
    pub signature: Signature,
}

/// Phase 3 result, server to client: the consistency signatures of the recipient's neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// The client this is for.
    pub recipient: u32,
    /// `(signer, signature)` by increasing signer.
    pub signatures: Vec<(u32, Signature)>,
}

/// Which secret a revealed share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A share of the self-mask seed b_v of a survivor.
    SelfMask = 0,
    /// A share of the mask secret key s_v^SK of a client that dropped out after sharing.
    MaskKey = 1,
}

/// A Shamir share revealed in phase 4. Wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct RevealedShare {
    /// Whose secret.
    pub owner: u32,
    /// Which secret.
    pub kind: SecretKind,
    /// The share's y values.
    pub share: Zeroizing<[u8; SHARE_LEN]>,
}

impl std::fmt::Debug for RevealedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RevealedShare {{ owner: {}, kind: {:?}, share: [redacted] }}", self.owner, self.kind)
    }
}

/// Phase 4, client to server: one share per neighbour that sent shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskShares {
    /// The revealing client.
    pub sender: u32,
    /// By increasing owner.
    pub shares: Vec<RevealedShare>,
    /// The sender's signature over the rest.
    pub signature: Signature,
}

/// Any message, for callers that route by type before choosing a state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// See [`AdvertiseKeys`].
    AdvertiseKeys(AdvertiseKeys),
    /// See [`SeedCommitments`].
    SeedCommitments(SeedCommitments),
    /// See [`SeedReveal`].
    SeedReveal(SeedReveal),
    /// See [`KeysBroadcast`].
    KeysBroadcast(KeysBroadcast),
    /// See [`ShareKeys`].
    ShareKeys(ShareKeys),
    /// See [`EncryptedShares`].
    EncryptedShares(EncryptedShares),
    /// See [`MaskedInput`].
    MaskedInput(MaskedInput),
    /// See [`SurvivorSet`].
    SurvivorSet(SurvivorSet),
    /// See [`ConsistencySignature`].
    ConsistencySignature(ConsistencySignature),
    /// See [`UnmaskRequest`].
    UnmaskRequest(UnmaskRequest),
    /// See [`UnmaskShares`].
    UnmaskShares(UnmaskShares),
}

/// Reads the message type of `bytes` without decoding the rest.
pub fn peek_kind(bytes: &[u8]) -> Result<MessageKind, SecAggError> {
    match bytes {
        [v, ..] if *v != super::wire::VERSION => {
            Err(SecAggError::UnsupportedVersion { got: *v, supported: super::wire::VERSION })
        }
        [_, k, ..] => MessageKind::from_byte(*k).ok_or(SecAggError::UnknownMessageType(*k)),
        _ => Err(SecAggError::Truncated { what: "message header", needed: 2, available: bytes.len() }),
    }
}

impl Message {
    /// Decodes any message of the round described by `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        Ok(match peek_kind(bytes)? {
            MessageKind::AdvertiseKeys => Self::AdvertiseKeys(AdvertiseKeys::decode(bytes, limits)?),
            MessageKind::SeedCommitments => Self::SeedCommitments(SeedCommitments::decode(bytes, limits)?),
            MessageKind::SeedReveal => Self::SeedReveal(SeedReveal::decode(bytes, limits)?),
            MessageKind::KeysBroadcast => Self::KeysBroadcast(KeysBroadcast::decode(bytes, limits)?),
            MessageKind::ShareKeys => Self::ShareKeys(ShareKeys::decode(bytes, limits)?),
            MessageKind::EncryptedShares => Self::EncryptedShares(EncryptedShares::decode(bytes, limits)?),
            MessageKind::MaskedInput => Self::MaskedInput(MaskedInput::decode(bytes, limits)?),
            MessageKind::SurvivorSet => Self::SurvivorSet(SurvivorSet::decode(bytes, limits)?),
            MessageKind::ConsistencySignature => {
                Self::ConsistencySignature(ConsistencySignature::decode(bytes, limits)?)
            }
            MessageKind::UnmaskRequest => Self::UnmaskRequest(UnmaskRequest::decode(bytes, limits)?),
            MessageKind::UnmaskShares => Self::UnmaskShares(UnmaskShares::decode(bytes, limits)?),
        })
    }
}

fn advertise_len(limits: &Limits) -> usize {
    HEADER_LEN + 4 + 2 * (2 + limits.agreement_key_len) + 32 + SIGNATURE_LEN
}

/// Writes a list of `(client, 32 bytes)` pairs.
fn encode_pairs(out: &mut Vec<u8>, pairs: &[(u32, [u8; 32])]) {
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (v, bytes) in pairs {
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(bytes);
    }
}

/// Reads a list of at most n `(client, 32 bytes)` pairs in strictly increasing client order.
fn decode_pairs(
    r: &mut Reader<'_>,
    what: &'static str,
    limits: &Limits,
) -> Result<Vec<(u32, [u8; 32])>, SecAggError> {
    let count = r.count(what, limits.n as usize, 36)?;
    let mut order = Ascending::new(what);
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let v = r.client(what, limits)?;
        order.check(v)?;
        pairs.push((v, r.array(what)?));
    }
    Ok(pairs)
}

impl SeedCommitments {
    /// The encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = header(MessageKind::SeedCommitments, context, 48 + 36 * self.commitments.len());
        out.extend_from_slice(&self.recipient.to_le_bytes());
        encode_pairs(&mut out, &self.commitments);
        out
    }

    /// Decodes: at most n commitments, by increasing client.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let max = HEADER_LEN + 8 + limits.n as usize * 36;
        let mut r = Reader::open(bytes, MessageKind::SeedCommitments, limits, max)?;
        let recipient = r.client("recipient", limits)?;
        let commitments = decode_pairs(&mut r, "seed commitments", limits)?;
        r.finish()?;
        Ok(Self { recipient, commitments })
    }
}

impl SeedReveal {
    /// The encoding without the signature: what the sender signs.
    pub fn signed_bytes(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = header(MessageKind::SeedReveal, context, 128);
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&self.contribution);
        out
    }

    /// The full encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = self.signed_bytes(context);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let mut r =
            Reader::open(bytes, MessageKind::SeedReveal, limits, HEADER_LEN + 4 + 32 + SIGNATURE_LEN)?;
        let sender = r.client("sender", limits)?;
        let contribution = r.array("seed contribution")?;
        let signature = r.signature()?;
        r.finish()?;
        Ok(Self { sender, contribution, signature })
    }
}

fn max_list(limits: &Limits) -> usize {
    limits.degree as usize
}

impl AdvertiseKeys {
    /// The encoding without the signature: what the sender signs.
    pub fn signed_bytes(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = header(MessageKind::AdvertiseKeys, context, 128);
        out.extend_from_slice(&self.sender.to_le_bytes());
        for key in [&self.channel_public, &self.mask_public] {
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
        }
        out.extend_from_slice(&self.seed_commitment);
        out
    }

    /// The full encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = self.signed_bytes(context);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes and checks the key lengths of the round's suite.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let mut r = Reader::open(bytes, MessageKind::AdvertiseKeys, limits, advertise_len(limits))?;
        let sender = r.client("sender", limits)?;
        let channel_public = r.exact_field("channel public key", limits.agreement_key_len)?.to_vec();
        let mask_public = r.exact_field("mask public key", limits.agreement_key_len)?.to_vec();
        let seed_commitment = r.array("seed commitment")?;
        let signature = r.signature()?;
        r.finish()?;
        Ok(Self { sender, channel_public, mask_public, seed_commitment, signature })
    }
}

impl KeysBroadcast {
    /// The encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = header(
            MessageKind::KeysBroadcast,
            context,
            64 + self.reveals.len() * 36 + self.advertisements.len() * 240,
        );
        out.extend_from_slice(&self.recipient.to_le_bytes());
        encode_pairs(&mut out, &self.reveals);
        out.extend_from_slice(&(self.advertisements.len() as u32).to_le_bytes());
        for a in &self.advertisements {
            let enc = a.encode(context);
            out.extend_from_slice(&(enc.len() as u32).to_le_bytes());
            out.extend_from_slice(&enc);
        }
        out
    }

    /// Decodes, including every embedded advertisement.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let entry = 4 + advertise_len(limits);
        let max = HEADER_LEN + 12 + limits.n as usize * 36 + max_list(limits) * entry;
        let mut r = Reader::open(bytes, MessageKind::KeysBroadcast, limits, max)?;
        let recipient = r.client("recipient", limits)?;
        let reveals = decode_pairs(&mut r, "seed reveals", limits)?;
        let count = r.count("advertisements", max_list(limits), entry)?;
        let mut order = Ascending::new("advertisements");
        let mut advertisements = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.u32("advertisement length")? as usize;
            if len != advertise_len(limits) {
                return Err(SecAggError::WrongLength {
                    what: "advertisement",
                    expected: advertise_len(limits),
                    got: len,
                });
            }
            let a = AdvertiseKeys::decode(r.take(len, "advertisement")?, limits)?;
            order.check(a.sender)?;
            advertisements.push(a);
        }
        r.finish()?;
        Ok(Self { recipient, reveals, advertisements })
    }
}

fn encode_shares(out: &mut Vec<u8>, shares: &[EncryptedShare]) {
    out.extend_from_slice(&(shares.len() as u32).to_le_bytes());
    for s in shares {
        out.extend_from_slice(&s.peer.to_le_bytes());
        out.extend_from_slice(&s.ciphertext);
    }
}

fn decode_shares(
    r: &mut Reader<'_>,
    limits: &Limits,
    what: &'static str,
) -> Result<Vec<EncryptedShare>, SecAggError> {
    let count = r.count(what, max_list(limits), 4 + SHARE_CIPHERTEXT_LEN)?;
    let mut order = Ascending::new(what);
    let mut shares = Vec::with_capacity(count);
    for _ in 0..count {
        let peer = r.client("share peer", limits)?;
        order.check(peer)?;
        let ciphertext = r.take(SHARE_CIPHERTEXT_LEN, "share ciphertext")?.to_vec();
        shares.push(EncryptedShare { peer, ciphertext });
    }
    Ok(shares)
}

fn shares_max(limits: &Limits) -> usize {
    HEADER_LEN + 8 + max_list(limits) * (4 + SHARE_CIPHERTEXT_LEN) + SIGNATURE_LEN
}

impl ShareKeys {
    /// The encoding without the signature.
    pub fn signed_bytes(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out =
            header(MessageKind::ShareKeys, context, 128 + self.shares.len() * (4 + SHARE_CIPHERTEXT_LEN));
        out.extend_from_slice(&self.sender.to_le_bytes());
        encode_shares(&mut out, &self.shares);
        out
    }

    /// The full encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = self.signed_bytes(context);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes; ciphertexts must have the fixed share length.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let mut r = Reader::open(bytes, MessageKind::ShareKeys, limits, shares_max(limits))?;
        let sender = r.client("sender", limits)?;
        let shares = decode_shares(&mut r, limits, "encrypted shares")?;
        let signature = r.signature()?;
        r.finish()?;
        Ok(Self { sender, shares, signature })
    }
}

impl EncryptedShares {
    /// The encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = header(
            MessageKind::EncryptedShares,
            context,
            64 + self.shares.len() * (4 + SHARE_CIPHERTEXT_LEN),
        );
        out.extend_from_slice(&self.recipient.to_le_bytes());
        encode_shares(&mut out, &self.shares);
        out
    }

    /// Decodes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let mut r = Reader::open(bytes, MessageKind::EncryptedShares, limits, shares_max(limits))?;
        let recipient = r.client("recipient", limits)?;
        let shares = decode_shares(&mut r, limits, "relayed shares")?;
        r.finish()?;
        Ok(Self { recipient, shares })
    }
}

impl MaskedInput {
    /// The encoding without the signature: `ceil(bits/8)` little-endian bytes per element.
    pub fn signed_bytes(&self, context: &[u8; 32], limits: &Limits) -> Vec<u8> {
        let w = limits.word_bytes();
        let mut out =
            header(MessageKind::MaskedInput, context, HEADER_LEN + 8 + self.values.len() * w + SIGNATURE_LEN);
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        if w == 4 {
            self.values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        } else {
            self.values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()[..w]));
        }
        out
    }

    /// The full encoding.
    pub fn encode(&self, context: &[u8; 32], limits: &Limits) -> Vec<u8> {
        let mut out = self.signed_bytes(context, limits);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes; the vector must have the round's length and every element must be below 2^bits.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let view = MaskedInputView::decode(bytes, limits)?;
        let mut values = Vec::with_capacity(limits.vector_len as usize);
        view.for_each_value(|v| values.push(v));
        Ok(Self { sender: view.sender, values, signature: view.signature })
    }
}

/// A checked [`MaskedInput`] whose vector stays in the received bytes, so the server can fold it into
/// its sum without a copy.
pub(crate) struct MaskedInputView<'a> {
    pub(crate) sender: u32,
    /// `vector_len * word_bytes` little-endian bytes, every element below 2^bits.
    pub(crate) raw: &'a [u8],
    pub(crate) word_bytes: usize,
    pub(crate) signature: Signature,
}

impl<'a> MaskedInputView<'a> {
    pub(crate) fn decode(bytes: &'a [u8], limits: &Limits) -> Result<Self, SecAggError> {
        let w = limits.word_bytes();
        let d = limits.vector_len as usize;
        let max = HEADER_LEN + 8 + d * w + SIGNATURE_LEN;
        let mut r = Reader::open(bytes, MessageKind::MaskedInput, limits, max)?;
        let sender = r.client("sender", limits)?;
        let len = r.u32("vector length")? as usize;
        if len != d {
            return Err(SecAggError::WrongLength { what: "masked vector", expected: d, got: len });
        }
        let raw = r.take(d * w, "masked vector")?;
        let signature = r.signature()?;
        r.finish()?;
        let view = Self { sender, raw, word_bytes: w, signature };
        if limits.modulus_bits < 32 {
            let limit = 1u32 << limits.modulus_bits;
            let mut bad = None;
            let mut i = 0usize;
            view.for_each_value(|v| {
                if v >= limit && bad.is_none() {
                    bad = Some((i, v));
                }
                i += 1;
            });
            if let Some((i, v)) = bad {
                return Err(SecAggError::OutOfRange {
                    what: "masked vector element",
                    reason: format!("element {i} is {v}, not below 2^{}", limits.modulus_bits),
                });
            }
        }
        Ok(view)
    }

    pub(crate) fn for_each_value(&self, mut f: impl FnMut(u32)) {
        for c in self.raw.chunks_exact(self.word_bytes) {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            f(u32::from_le_bytes(b));
        }
    }
}

impl SurvivorSet {
    /// The encoded survivor list alone, as signed in consistency signatures.
    pub(crate) fn encode_list(survivors: &[u32], out: &mut Vec<u8>) {
        out.extend_from_slice(&(survivors.len() as u32).to_le_bytes());
        survivors.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
    }

    /// The encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = header(MessageKind::SurvivorSet, context, HEADER_LEN + 8 + 4 * self.survivors.len());
        out.extend_from_slice(&self.recipient.to_le_bytes());
        Self::encode_list(&self.survivors, &mut out);
        out
    }

    /// Decodes; the list must be strictly increasing indices of the roster.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let n = limits.n as usize;
        let mut r = Reader::open(bytes, MessageKind::SurvivorSet, limits, HEADER_LEN + 8 + 4 * n)?;
        let recipient = r.client("recipient", limits)?;
        let count = r.count("survivors", n, 4)?;
        let mut order = Ascending::new("survivors");
        let mut survivors = Vec::with_capacity(count);
        for _ in 0..count {
            let s = r.client("survivor", limits)?;
            order.check(s)?;
            survivors.push(s);
        }
        r.finish()?;
        Ok(Self { recipient, survivors })
    }
}

impl ConsistencySignature {
    /// What the sender signs: the header, its index and the survivor set it endorses.
    pub fn signed_bytes(sender: u32, survivors: &[u32], context: &[u8; 32]) -> Vec<u8> {
        let mut out =
            header(MessageKind::ConsistencySignature, context, HEADER_LEN + 8 + 4 * survivors.len());
        out.extend_from_slice(&sender.to_le_bytes());
        SurvivorSet::encode_list(survivors, &mut out);
        out
    }

    /// The encoding (the survivor set is not repeated: the server knows it).
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out = header(MessageKind::ConsistencySignature, context, HEADER_LEN + 4 + SIGNATURE_LEN);
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let mut r =
            Reader::open(bytes, MessageKind::ConsistencySignature, limits, HEADER_LEN + 4 + SIGNATURE_LEN)?;
        let sender = r.client("sender", limits)?;
        let signature = r.signature()?;
        r.finish()?;
        Ok(Self { sender, signature })
    }
}

impl UnmaskRequest {
    /// The encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Vec<u8> {
        let mut out =
            header(MessageKind::UnmaskRequest, context, HEADER_LEN + 8 + self.signatures.len() * 68);
        out.extend_from_slice(&self.recipient.to_le_bytes());
        out.extend_from_slice(&(self.signatures.len() as u32).to_le_bytes());
        for (signer, sig) in &self.signatures {
            out.extend_from_slice(&signer.to_le_bytes());
            out.extend_from_slice(sig);
        }
        out
    }

    /// Decodes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let entry = 4 + SIGNATURE_LEN;
        let max = HEADER_LEN + 8 + max_list(limits) * entry;
        let mut r = Reader::open(bytes, MessageKind::UnmaskRequest, limits, max)?;
        let recipient = r.client("recipient", limits)?;
        let count = r.count("consistency signatures", max_list(limits), entry)?;
        let mut order = Ascending::new("consistency signatures");
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            let signer = r.client("signer", limits)?;
            order.check(signer)?;
            signatures.push((signer, r.signature()?));
        }
        r.finish()?;
        Ok(Self { recipient, signatures })
    }
}

const REVEALED_LEN: usize = 4 + 1 + SHARE_LEN;

impl UnmaskShares {
    /// The encoding without the signature.
    pub fn signed_bytes(&self, context: &[u8; 32]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(header(
            MessageKind::UnmaskShares,
            context,
            HEADER_LEN + 8 + self.shares.len() * REVEALED_LEN + SIGNATURE_LEN,
        ));
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&(self.shares.len() as u32).to_le_bytes());
        for s in &self.shares {
            out.extend_from_slice(&s.owner.to_le_bytes());
            out.push(s.kind as u8);
            out.extend_from_slice(s.share.as_ref());
        }
        out
    }

    /// The full encoding.
    pub fn encode(&self, context: &[u8; 32]) -> Zeroizing<Vec<u8>> {
        let mut out = self.signed_bytes(context);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, SecAggError> {
        let max = HEADER_LEN + 8 + max_list(limits) * REVEALED_LEN + SIGNATURE_LEN;
        let mut r = Reader::open(bytes, MessageKind::UnmaskShares, limits, max)?;
        let sender = r.client("sender", limits)?;
        let count = r.count("revealed shares", max_list(limits), REVEALED_LEN)?;
        let mut order = Ascending::new("revealed shares");
        let mut shares = Vec::with_capacity(count);
        for _ in 0..count {
            let owner = r.client("share owner", limits)?;
            order.check(owner)?;
            let kind = match r.u8("share kind")? {
                0 => SecretKind::SelfMask,
                1 => SecretKind::MaskKey,
                other => {
                    return Err(SecAggError::OutOfRange {
                        what: "share kind",
                        reason: format!("{other} is neither 0 nor 1"),
                    })
                }
            };
            let share = Zeroizing::new(r.array::<SHARE_LEN>("share")?);
            shares.push(RevealedShare { owner, kind, share });
        }
        let signature = r.signature()?;
        r.finish()?;
        Ok(Self { sender, shares, signature })
    }
}
