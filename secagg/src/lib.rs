//! Secure aggregation: the server learns the sum of the clients' vectors and nothing else.
//!
//! A pure library (no network, files or async): the coordinator drives the server phases and the
//! participants drive the client phases, relaying the encoded messages as opaque bytes.
//!
//! # Protocol
//!
//! Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving Machine Learning",
//! CCS'17, figure 4) restricted to a sparse neighbour graph as in SecAgg+ (Bell et al. 2020, "Secure
//! Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS'20, section 3):
//!
//! | phase | client sends | server relays |
//! |---|---|---|
//! | 0 AdvertiseKeys | two key-agreement public keys and a commitment to 32 random bytes, signed | every client's commitment |
//! | 1 SeedReveal | the committed bytes, signed | every client's bytes (each client hashes them into the graph seed itself) and its neighbours' keys |
//!
//! Phase 1 is Hearth's addition to SecAgg+: there the graph seed is public randomness the server
//! draws, which a malicious server could grind; here it is committed and revealed by the clients
//! ([`graph`] says why no one can choose it). A client that committed and does not reveal aborts the
//! round before any share is sent.
//! | 2 ShareKeys | t-of-k Shamir shares of its self-mask seed b_u and mask key s_u, encrypted per neighbour | the ciphertexts addressed to each client |
//! | 3 MaskedInputCollection | `x_u + PRG(b_u) + sum_v ±PRG(s_uv)` over neighbours v that shared, signed | the survivor set U3 |
//! | 4 ConsistencyCheck | a signature over U3 | the neighbours' signatures |
//! | 5 Unmasking | per neighbour: the share of b_v if v is in U3, else of s_v | (server rebuilds, unmasks the sum) |
//!
//! Keys: pairwise mask seeds and share-channel keys are HKDF of the suite's key agreement, salted with
//! the round's context hash; masks are the suite's keystream added as u32 words ([`mask`]); shares are
//! sealed with the suite's AEAD, the context hash and both indices in the associated data.
//!
//! # What it guarantees, and under which assumptions
//!
//! * **Privacy** (Bonawitz et al. theorem 6.2, Bell et al. theorem 3.6): against an honest-but-curious
//!   server colluding with a set C of clients fixed before the graph seed is known, the view of the
//!   server and C reveals nothing about honest clients' inputs beyond the sum of the honest survivors'
//!   inputs, provided no client has `2t - k` or more colluding neighbours and the graph minus colluders
//!   and drop-outs stays connected. [`GraphRule::choose`] picks k and t so that this fails with
//!   probability at most 2^-σ for a stated colluding fraction; with the complete graph (k = n − 1) the
//!   condition is simply `|C| < 2t - k`. Every client message is signed with the client's node key and
//!   verified by the receiving clients, so the server cannot impersonate one client to another; the
//!   consistency signatures bind every survivor to one survivor set.
//! * **Checked before joining**: a client starts only a [`ClientRound`] ([`start_client`] takes nothing
//!   else), built only from a [`VerifiedRoster`] (every member through the caller's [`MemberVerifier`],
//!   no repeated identity or key, at least the client's floor of members, its own entry its own) and
//!   terms whose degree and threshold keep the client's [`GraphRule`] bound and whose survivor floor
//!   reaches its own ([`verified`]); so no caller starts a round from what the server merely announced.
//! * **Drop-outs**: any client may vanish at any phase. The round completes while every needed secret
//!   still has t live holders; with the rule's k and t this fails with probability at most 2^-η for the
//!   stated drop-out fraction. Otherwise the round aborts with [`SecAggError::TooFewSurvivors`] or
//!   [`SecAggError::NotEnoughShares`] and the server has rebuilt nothing.
//! * **Only the sum**: the server's one output is [`UnmaskedSum`], constructible only here, after
//!   unmasking with secrets rebuilt from at least t shares each; it rebuilds b_u or s_u of a client,
//!   never both. What the sum reveals is the business of the differential-privacy noise that
//!   participants add before masking (see [`Quantizer::add_integer_noise`]).
//! * **Integrity** is not guaranteed against a malicious server or clients (a client may submit any
//!   vector in range); corrupted shares are detected when more than t arrive.
//!
//! # Degree and threshold
//!
//! [`GraphRule`] states the adversary (default: colluding fraction 1/5, drop-out fraction 1/10,
//! σ = 40, η = 20) and returns the smallest even degree k with the largest threshold t (`k/2 < t <= k`)
//! meeting both bounds; its doc gives the formulas. For the default rule: n = 10 gives k = 6, t = 5;
//! n = 50 gives k = 22, t = 17; n = 100 gives k = 42, t = 32 (these three with failure probability
//! zero: the counts cannot reach the limits); n = 1000 gives k = 138, t = 102; n = 10000 gives k = 182,
//! t = 134.
//!
//! # Quantisation
//!
//! [`Quantizer`] maps clipped floats to Z_{2^b} (b <= 32) with unbiased randomised rounding; the sum of
//! N values decodes with error at most `N / scale` per coordinate (standard deviation at most
//! `sqrt(N) / (2 scale)`), where `scale = floor((2^(b-1) - 1 - H) / N) / clip` and H is the headroom
//! reserved for noise.
//!
//! # Speed: where a round's time goes
//!
//! Measured on the project's 2-core AMD EPYC machines (AVX-512), international suite, 32-bit ring.
//!
//! * **Mask expansion** is most of a client's work: k + 1 masks of d words each (a client of a 50-client
//!   round with d = 1,000,000 expands 23 x 4 MB). [`mask::apply_masks`] folds every mask into one 64 KiB
//!   block of the vector before moving to the next, from a 4 KiB keystream buffer, and runs at 87-101%
//!   of the raw ChaCha20 keystream: about 4.1 GB/s against 4.3-4.7 GB/s raw with the chacha20 crate's
//!   AVX-512 backend (enabled in `.cargo/config.toml`; AVX2 gives 2.3 GB/s). The national suite's SM4-CTR
//!   runs at about 0.1 GB/s (software SM4), 40 times slower.
//! * **Per client** (`cargo run --release -p hearth-secagg --example secagg_bench`), n = 50, d = 1M:
//!   34 ms, of which 30 ms in phase 3: about 23 ms expanding masks, the rest hashing the 4 MB masked
//!   vector for its signature (SHA-256), copying it into the message, and 22 key agreements. Quantising
//!   the update first takes about 3 ms. The other phases take 4 ms together (key agreements, Shamir
//!   sharing, share encryption, 44 signature checks).
//! * **Server**, same round: 0.19 s, of which 0.13 s checking and folding 50 masked uploads (mostly the
//!   SHA-256 of each signature check) and 0.05 s removing 50 self masks (on one core; the coordinator
//!   uses all).
//! * **Whole rounds** (`hearth bench secagg`, which prints the median time of each phase as the
//!   coordinator saw it): at n = 50, d = 1M a secure round takes about 1.6 s against 0.6 s for plain
//!   averaging (2.6x), and 1.3 s of it is the masked-input phase. The bench runs all 50 simulated participants in one
//!   process on the same 2 cores as the coordinator, and both kinds of round keep the cores busy (about
//!   1.85 CPUs used), so the ratio is the ratio of total CPU work: the 50 clients' masking (1.2 CPU-s
//!   per round) on top of everything plain averaging does. In a deployment each participant masks on its
//!   own machine, in parallel. A participant masks as soon as its input is ready and its neighbours' keys
//!   are known ([`ClientAwaitShares::mask_plan`]), overlapping the wait for the other clients' shares.
//!
//! # Where to start reading
//!
//! [`params`] (what a round is), [`client`] and [`server`] (the two state machines), [`messages`]
//! (the wire format), then [`mask`], [`shamir`], [`graph`], [`quantize`]; [`simulate`] runs a whole
//! round in memory for tests and benchmarks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
mod error;
pub mod graph;
pub mod mask;
pub mod messages;
pub mod params;
pub mod quantize;
pub mod server;
pub mod shamir;
pub mod simulate;
pub mod verified;
mod wire;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;

pub use client::{
    os_rng, start_client, ClientAwaitCommitments, ClientAwaitKeys, ClientAwaitShares, ClientAwaitSurvivors,
    ClientAwaitUnmask, MaskPlan, MessageSigner, PremaskedInput, SuiteSigner,
};
pub use error::{MessageKind, Phase, SecAggError};
pub use graph::{GraphChoice, GraphRule, NeighbourGraph};
pub use messages::{
    peek_kind, AdvertiseKeys, ConsistencySignature, EncryptedShare, EncryptedShares, KeysBroadcast,
    MaskedInput, Message, RevealedShare, SecretKind, SeedCommitments, SeedReveal, ShareKeys, SurvivorSet,
    UnmaskRequest, UnmaskShares,
};
pub use params::{ClientIndex, Limits, RoundConfig, RoundParams};
pub use quantize::{Quantizer, QuantizerSpec};
pub use server::{
    Outgoing, ServerAdvertise, ServerConsistency, ServerMaskedInput, ServerReveal, ServerShareKeys,
    ServerUnmasking, UnmaskedSum,
};
pub use simulate::{simulate_round, Dropouts, Simulation, SimulationReport};
pub use verified::{
    ClientPolicy, ClientRound, MemberRefusal, MemberVerifier, RoundRefusal, RoundTerms, VerifiedMember,
    VerifiedRoster,
};
pub use wire::VERSION;
