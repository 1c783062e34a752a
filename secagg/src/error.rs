//! The one error type of secure aggregation. Each variant names the bad input and says who most likely
//! caused it: a misconfigured coordinator, a malformed or hostile peer, or too many drop-outs.

use std::fmt;

use hearth_crypto::suite::CryptoError;

/// A step of the protocol, numbered as in Bonawitz et al. 2017, figure 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Round 0: clients advertise their two key-agreement public keys and commit to a contribution to
    /// the graph seed.
    AdvertiseKeys,
    /// Round 1 (added here to SecAgg+): clients reveal their graph-seed contributions once every
    /// commitment is fixed.
    SeedReveal,
    /// Round 1: clients send Shamir shares of their secrets, encrypted to each neighbour.
    ShareKeys,
    /// Round 2: clients upload their masked input vectors.
    MaskedInputCollection,
    /// Round 3: survivors sign the set of survivors.
    ConsistencyCheck,
    /// Round 4: survivors reveal the shares the server needs to remove the masks.
    Unmasking,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::AdvertiseKeys => "advertise-keys (0)",
            Phase::SeedReveal => "seed reveal (1)",
            Phase::ShareKeys => "share-keys (2)",
            Phase::MaskedInputCollection => "masked-input collection (3)",
            Phase::ConsistencyCheck => "consistency check (4)",
            Phase::Unmasking => "unmasking (5)",
        })
    }
}

/// The type byte of a wire message. Client-to-server kinds are odd, server-to-client kinds even.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// Client to server, phase 0: [`super::AdvertiseKeys`].
    AdvertiseKeys = 1,
    /// Server to client, end of phase 1: [`super::KeysBroadcast`].
    KeysBroadcast = 2,
    /// Client to server, phase 2: [`super::ShareKeys`].
    ShareKeys = 3,
    /// Server to client, end of phase 2: [`super::EncryptedShares`].
    EncryptedShares = 4,
    /// Client to server, phase 3: [`super::MaskedInput`].
    MaskedInput = 5,
    /// Server to client, end of phase 3: [`super::SurvivorSet`].
    SurvivorSet = 6,
    /// Client to server, phase 4: [`super::ConsistencySignature`].
    ConsistencySignature = 7,
    /// Server to client, end of phase 4: [`super::UnmaskRequest`].
    UnmaskRequest = 8,
    /// Client to server, phase 5: [`super::UnmaskShares`].
    UnmaskShares = 9,
    /// Server to client, end of phase 0: [`super::SeedCommitments`].
    SeedCommitments = 10,
    /// Client to server, phase 1: [`super::SeedReveal`].
    SeedReveal = 11,
}

impl MessageKind {
    /// The kind for a type byte, if it is one.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::AdvertiseKeys,
            2 => Self::KeysBroadcast,
            3 => Self::ShareKeys,
            4 => Self::EncryptedShares,
            5 => Self::MaskedInput,
            6 => Self::SurvivorSet,
            7 => Self::ConsistencySignature,
            8 => Self::UnmaskRequest,
            9 => Self::UnmaskShares,
            10 => Self::SeedCommitments,
            11 => Self::SeedReveal,
            _ => return None,
        })
    }

    /// Lower-case name, as used in error messages and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdvertiseKeys => "advertise-keys",
            Self::KeysBroadcast => "keys-broadcast",
            Self::ShareKeys => "share-keys",
            Self::EncryptedShares => "encrypted-shares",
            Self::MaskedInput => "masked-input",
            Self::SurvivorSet => "survivor-set",
            Self::ConsistencySignature => "consistency-signature",
            Self::UnmaskRequest => "unmask-request",
            Self::UnmaskShares => "unmask-shares",
            Self::SeedCommitments => "seed-commitments",
            Self::SeedReveal => "seed-reveal",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of secure aggregation. A service audits the variants that name a peer (`sender`, `signer`,
/// `from`) as that peer's misbehaviour; the `TooFew*`/`NotEnoughShares` variants abort the round.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecAggError {
    /// A round or quantiser parameter is out of range: the coordinator's configuration is wrong.
    #[error("invalid secure-aggregation parameter {name}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A client refuses the round the server announced before taking part (see [`crate::verified`]).
    #[error(transparent)]
    RoundRefused(#[from] crate::verified::RoundRefusal),
    /// A message ends before a field it announces: a truncated transfer or a malformed peer.
    #[error("message truncated: {what} needs {needed} bytes, {available} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes follow the end of a message: a malformed peer or two messages glued together.
    #[error("{extra} trailing bytes after the {what} message")]
    TrailingBytes {
        /// The message kind.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// The version byte is not ours: the peer runs another Hearth release.
    #[error("unsupported secure-aggregation message version {got}; this build speaks version {supported}")]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The type byte names no message: garbage or a newer peer.
    #[error("unknown secure-aggregation message type {0}")]
    UnknownMessageType(u8),
    /// A well-formed message of another phase: out of order, replayed from an earlier phase, or sent to
    /// the wrong side.
    #[error("unexpected {got} message while waiting for {expected}")]
    UnexpectedMessage {
        /// The kind this state accepts.
        expected: MessageKind,
        /// The kind received.
        got: MessageKind,
    },
    /// A message or a list in it is longer than the round allows, refused before allocating.
    #[error("{what} has length {len}, more than the limit {max}")]
    TooLong {
        /// The message or field.
        what: &'static str,
        /// Its announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field has a length other than the one the round fixes (a public key of another suite, a masked
    /// vector of another dimension).
    #[error("{what} has length {got}, expected {expected}")]
    WrongLength {
        /// The field.
        what: &'static str,
        /// The length the round fixes.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The message was made for another job, round, cohort or parameter set: a replay across rounds, or
    /// a peer configured differently.
    #[error("message belongs to another job, round or parameter set (context hash mismatch)")]
    ContextMismatch,
    /// A value is outside its range (an element of a masked vector at or above 2^bits, a field element
    /// at or above the Shamir prime, a non-finite float).
    #[error("{what} is out of range: {reason}")]
    OutOfRange {
        /// The value.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A client index is not in the roster.
    #[error("client index {index} is not in the roster of {n} clients")]
    UnknownClient {
        /// The index received.
        index: u32,
        /// Roster size.
        n: u32,
    },
    /// A list is not sorted in strictly increasing order: a non-canonical encoding.
    #[error("{what} is not in strictly increasing order of client index")]
    NotCanonical {
        /// The list.
        what: &'static str,
    },
    /// A list names the same client twice.
    #[error("{what} lists client {index} twice")]
    DuplicateEntry {
        /// The list.
        what: &'static str,
        /// The repeated client.
        index: u32,
    },
    /// A server-to-client message is addressed to another client: misrouted by the service.
    #[error("message addressed to client {addressed}, but this is client {me}")]
    WrongRecipient {
        /// The recipient named in the message.
        addressed: u32,
        /// This client.
        me: u32,
    },
    /// The sender field differs from the client the transport authenticated: impersonation attempt.
    #[error("message claims to come from client {claimed} but arrived from client {authenticated}")]
    SenderMismatch {
        /// The sender field.
        claimed: u32,
        /// The authenticated peer.
        authenticated: u32,
    },
    /// A signature does not verify under the roster key of its claimed signer: forgery or tampering.
    #[error("signature of client {signer} does not verify")]
    BadSignature {
        /// Claimed signer.
        signer: u32,
    },
    /// A second message of the same kind from the same client in one round: replay or duplicate send.
    #[error("duplicate {kind} message from client {sender}")]
    Duplicate {
        /// Message kind.
        kind: MessageKind,
        /// The sender.
        sender: u32,
    },
    /// A client that dropped out earlier in the round (or was never in it) sent a message for a later
    /// phase.
    #[error("client {sender} may not send {kind} now: it did not complete the earlier phases")]
    NotInRound {
        /// Message kind.
        kind: MessageKind,
        /// The sender.
        sender: u32,
    },
    /// Two clients that are not neighbours in the round's graph exchanged protocol material.
    #[error("client {a} and client {b} are not neighbours in this round's graph")]
    NotANeighbour {
        /// One client.
        a: u32,
        /// The other.
        b: u32,
    },
    /// A share-keys message does not carry exactly one ciphertext per live neighbour of its sender.
    #[error("client {sender} sent shares to the wrong set of recipients: {reason}")]
    WrongShareRecipients {
        /// The sender.
        sender: u32,
        /// What was wrong.
        reason: String,
    },
    /// An encrypted share does not decrypt, or decrypts to shares for another pair of clients: tampered
    /// in transit, or relayed to the wrong recipient.
    #[error("encrypted share from client {from} does not open or is not meant for this client")]
    ShareDecryption {
        /// Claimed sender of the share.
        from: u32,
    },
    /// A peer advertised a key that is invalid for the suite, or reused one of its keys.
    #[error("client {client} advertised an unusable public key: {reason}")]
    InvalidPeerKey {
        /// The client.
        client: u32,
        /// Why.
        reason: String,
    },
    /// A reveal for a neighbour carries the wrong kind of share (a self-mask share for a dropped client,
    /// or a mask-key share for a survivor) or a share for a client the sender holds none of.
    #[error("client {sender} revealed a share of client {owner} that the server must not receive")]
    WrongShareKind {
        /// The revealing client.
        sender: u32,
        /// Whose secret the share belongs to.
        owner: u32,
    },
    /// An unmask-shares message omits a neighbour the sender holds shares of.
    #[error("client {sender} did not reveal its share for client {owner}")]
    IncompleteShares {
        /// The revealing client.
        sender: u32,
        /// The neighbour left out.
        owner: u32,
    },
    /// The survivor set sent by the server contradicts what this client saw (it omits this client, or
    /// names a neighbour whose shares never arrived).
    #[error("inconsistent survivor set: {reason}")]
    InconsistentSurvivors {
        /// What is inconsistent.
        reason: String,
    },
    /// A revealed graph-seed contribution does not open the commitment its client signed in phase 0,
    /// or a relayed advertisement carries another commitment than the one listed: the server or that
    /// client equivocated.
    #[error("client {client}'s graph-seed contribution does not match its commitment")]
    SeedMismatch {
        /// The client.
        client: u32,
    },
    /// The commitments or reveals relayed to this client are not the ones it expects: its own is
    /// missing or altered, or a committed contribution was not revealed.
    #[error("graph-seed exchange refused: {reason}")]
    SeedExchange {
        /// What was wrong.
        reason: String,
    },
    /// Clients committed to a graph-seed contribution and did not reveal it: the round aborts before any
    /// share is sent (a withheld reveal must not let anyone choose among seeds).
    #[error("round aborted in the seed reveal: clients {missing:?} committed and did not reveal")]
    SeedWithheld {
        /// The clients that did not reveal.
        missing: Vec<u32>,
    },
    /// Fewer clients than the threshold remain: the round aborts and reveals nothing.
    #[error("round aborted in {phase}: {got} clients remain, at least {need} are required")]
    TooFewSurvivors {
        /// Where the round stopped.
        phase: Phase,
        /// Clients left.
        got: usize,
        /// The threshold.
        need: usize,
    },
    /// This client has fewer live neighbours (or valid consistency signatures from them) than the
    /// threshold: the round cannot finish for it, so it stops before revealing anything.
    #[error("client stops in {phase}: {got} live neighbours, at least {need} are required")]
    TooFewNeighbours {
        /// Where the client stopped.
        phase: Phase,
        /// Neighbours left.
        got: usize,
        /// The threshold.
        need: usize,
    },
    /// Fewer than t shares of a secret the server needs arrived: the round aborts, nothing is unmasked.
    #[error("round aborted: {got} shares of client {owner}'s secret arrived, at least {need} are required")]
    NotEnoughShares {
        /// Whose secret.
        owner: u32,
        /// Shares received.
        got: usize,
        /// The threshold.
        need: usize,
    },
    /// The shares of one secret do not lie on one polynomial, or rebuild a key that does not match the
    /// advertised one: some neighbour revealed a corrupted share.
    #[error("shares of client {owner}'s secret are inconsistent: a neighbour revealed a corrupted share")]
    InconsistentShares {
        /// Whose secret.
        owner: u32,
    },
    /// An input vector handed to the client or quantiser does not fit the round.
    #[error("input vector: {reason}")]
    BadInput {
        /// What is wrong.
        reason: String,
    },
    /// A primitive failed (operating-system randomness, a key of the wrong suite for our own signer).
    #[error("cryptographic primitive failed: {0}")]
    Crypto(#[from] CryptoError),
}
