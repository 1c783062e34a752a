//! Hostile input: every malformed, out-of-order, replayed, duplicated or forged message is refused with
//! its precise error, by the server and by the clients, and no decoder panics on any bytes.

use std::sync::Arc;

use chacha20::ChaCha20Rng;
use proptest::prelude::*;
use rand_core::SeedableRng;

use super::tests::{reveal, round, round_with_floor, Round};
use super::*;
use hearth_crypto::suite::SuiteId;

type E = SecAggError;

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(42)
}

fn sign(r: &Round, u: u32, bytes: &[u8]) -> [u8; 64] {
    r.params.suite().suite().sign(&r.signing[u as usize], bytes).unwrap().try_into().unwrap()
}

/// An honest transcript of a full round in which every client takes part.
struct Transcript {
    adverts: Vec<Vec<u8>>,
    commitments: Vec<Outgoing>,
    reveals: Vec<Vec<u8>>,
    key_broadcasts: Vec<Outgoing>,
    share_keys: Vec<Vec<u8>>,
    relayed_shares: Vec<Outgoing>,
    masked: Vec<Vec<u8>>,
    survivor_sets: Vec<Outgoing>,
    consistency: Vec<Vec<u8>>,
    unmask_requests: Vec<Outgoing>,
    unmask_shares: Vec<Vec<u8>>,
}

fn transcript(r: &Round) -> Transcript {
    let mut rng = rng();
    let n = r.params.n();
    let d = r.params.vector_len();
    let mut server = ServerAdvertise::new(Arc::clone(&r.params));
    let (mut s0, mut adverts) = (Vec::new(), Vec::new());
    for u in 0..n {
        let (s, m) = start_client(
            &ClientRound::from_params(Arc::clone(&r.params), ClientIndex(u)),
            r.signer(u),
            &mut rng,
        )
        .unwrap();
        server.receive(ClientIndex(u), &m).unwrap();
        s0.push(s);
        adverts.push(m);
    }
    let (mut server, commitments) = server.close().unwrap();
    let (mut s0r, mut reveals) = (Vec::new(), Vec::new());
    for (s, o) in s0.into_iter().zip(&commitments) {
        let (s, m) = s.handle(&o.bytes).unwrap();
        server.receive(o.to, &m).unwrap();
        s0r.push(s);
        reveals.push(m);
    }
    let (mut server, key_broadcasts) = server.close().unwrap();
    let (mut s1, mut share_keys) = (Vec::new(), Vec::new());
    for (s, o) in s0r.into_iter().zip(&key_broadcasts) {
        let (s, m) = s.handle(&o.bytes, &mut rng).unwrap();
        server.receive(o.to, &m).unwrap();
        s1.push(s);
        share_keys.push(m);
    }
    let (mut server, relayed_shares) = server.close().unwrap();
    let (mut s2, mut masked) = (Vec::new(), Vec::new());
    for (s, o) in s1.into_iter().zip(&relayed_shares) {
        let (s, m) = s.handle(&o.bytes, &vec![1; d]).unwrap();
        server.receive(o.to, &m).unwrap();
        s2.push(s);
        masked.push(m);
    }
    let (mut server, survivor_sets) = server.close().unwrap();
    let (mut s3, mut consistency) = (Vec::new(), Vec::new());
    for (s, o) in s2.into_iter().zip(&survivor_sets) {
        let (s, m) = s.handle(&o.bytes).unwrap();
        server.receive(o.to, &m).unwrap();
        s3.push(s);
        consistency.push(m);
    }
    let (mut server, unmask_requests) = server.close().unwrap();
    let mut unmask_shares = Vec::new();
    for (s, o) in s3.into_iter().zip(&unmask_requests) {
        let m = s.handle(&o.bytes).unwrap();
        server.receive(o.to, &m).unwrap();
        unmask_shares.push(m);
    }
    assert_eq!(server.close().unwrap().values(), vec![n; d].as_slice());
    Transcript {
        adverts,
        commitments,
        reveals,
        key_broadcasts,
        share_keys,
        relayed_shares,
        masked,
        survivor_sets,
        consistency,
        unmask_requests,
        unmask_shares,
    }
}

fn c(u: u32) -> ClientIndex {
    ClientIndex(u)
}

#[test]
fn the_server_refuses_malformed_and_forged_advertisements() {
    let r = round(SuiteId::International, 5, 4, 3, 8, 12, 1);
    let t = transcript(&r);
    let mut s = ServerAdvertise::new(Arc::clone(&r.params));
    let m = &t.adverts[0];
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = m.clone();
        f(&mut b);
        b
    };
    assert!(matches!(s.receive(c(0), &m[..m.len() - 1]), Err(E::Truncated { what: "signature", .. })));
    assert!(matches!(s.receive(c(0), &m[..1]), Err(E::Truncated { what: "type byte", .. })));
    assert!(matches!(s.receive(c(0), &[]), Err(E::Truncated { what: "version byte", .. })));
    assert!(matches!(s.receive(c(0), &with(&|b| b.push(0))), Err(E::TooLong { what: "advertise-keys", .. })));
    assert_eq!(s.receive(c(0), &with(&|b| b[0] = 3)), Err(E::UnsupportedVersion { got: 3, supported: 2 }));
    assert_eq!(s.receive(c(0), &with(&|b| b[1] = 42)), Err(E::UnknownMessageType(42)));
    assert_eq!(
        s.receive(c(0), &t.consistency[0]),
        Err(E::UnexpectedMessage {
            expected: MessageKind::AdvertiseKeys,
            got: MessageKind::ConsistencySignature
        })
    );
    let other_round = round(SuiteId::International, 5, 4, 3, 8, 12, 2);
    let replayed = transcript(&other_round).adverts[0].clone();
    assert_eq!(s.receive(c(0), &replayed), Err(E::ContextMismatch));
    assert_eq!(s.receive(c(0), &with(&|b| *b.last_mut().unwrap() ^= 1)), Err(E::BadSignature { signer: 0 }));
    assert_eq!(s.receive(c(1), m), Err(E::SenderMismatch { claimed: 0, authenticated: 1 }));
    // Client 0 tries to pass off keys as client 1's: the signature is checked against client 1's key.
    let ad = AdvertiseKeys::decode(m, r.params.limits()).unwrap();
    let mut forged = AdvertiseKeys { sender: 1, ..ad.clone() };
    forged.signature = sign(&r, 0, &forged.signed_bytes(r.params.context()));
    assert_eq!(s.receive(c(1), &forged.encode(r.params.context())), Err(E::BadSignature { signer: 1 }));
    let short = AdvertiseKeys { channel_public: vec![1; 31], ..ad.clone() }.encode(r.params.context());
    assert_eq!(
        s.receive(c(0), &short),
        Err(E::WrongLength { what: "channel public key", expected: 32, got: 31 })
    );
    let stranger = AdvertiseKeys { sender: 99, ..ad }.encode(r.params.context());
    assert_eq!(s.receive(c(0), &stranger), Err(E::UnknownClient { index: 99, n: 5 }));
    // Nothing refused above was recorded; the honest message goes through once.
    assert_eq!(s.received(), 0);
    s.receive(c(0), m).unwrap();
    assert_eq!(s.receive(c(0), m), Err(E::Duplicate { kind: MessageKind::AdvertiseKeys, sender: 0 }));
}

#[test]
fn the_server_refuses_out_of_order_replayed_and_misaddressed_messages() {
    let r = round(SuiteId::International, 6, 4, 3, 8, 12, 3);
    let t = transcript(&r);
    // Phase 0 with client 5 silent.
    let mut s = ServerAdvertise::new(Arc::clone(&r.params));
    for u in 0..5 {
        s.receive(c(u), &t.adverts[u as usize]).unwrap();
    }
    assert_eq!(
        s.receive(c(0), &t.share_keys[0]),
        Err(E::UnexpectedMessage { expected: MessageKind::AdvertiseKeys, got: MessageKind::ShareKeys })
    );
    let (mut s, _) = s.close().unwrap();
    // Client 5 never committed, so it may not reveal; the others reveal.
    assert_eq!(
        s.receive(c(5), &t.reveals[5]),
        Err(E::NotInRound { kind: MessageKind::SeedReveal, sender: 5 })
    );
    (0..5).for_each(|u| s.receive(c(u), &t.reveals[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    // Replay of phase 0 in phase 2.
    assert_eq!(
        s.receive(c(0), &t.adverts[0]),
        Err(E::UnexpectedMessage { expected: MessageKind::ShareKeys, got: MessageKind::AdvertiseKeys })
    );
    // Client 5 never advertised, so it may not share.
    assert_eq!(
        s.receive(c(5), &t.share_keys[5]),
        Err(E::NotInRound { kind: MessageKind::ShareKeys, sender: 5 })
    );
    // The honest share-keys of client 0 addressed client 5 too, which is now gone: refused.
    let sk = ShareKeys::decode(&t.share_keys[0], r.params.limits()).unwrap();
    if s.graph().are_neighbours(0, 5) {
        assert!(matches!(s.receive(c(0), &t.share_keys[0]), Err(E::WrongShareRecipients { sender: 0, .. })));
    }
    // A client that leaves out a neighbour is refused as well.
    let mut partial = ShareKeys { shares: sk.shares[..1].to_vec(), ..sk };
    partial.signature = sign(&r, 0, &partial.signed_bytes(r.params.context()));
    assert!(matches!(
        s.receive(c(0), &partial.encode(r.params.context())),
        Err(E::WrongShareRecipients { sender: 0, .. })
    ));
}

#[test]
fn the_server_checks_masked_inputs_before_summing() {
    let r = round(SuiteId::International, 5, 4, 3, 8, 12, 4);
    let t = transcript(&r);
    let mut s = ServerAdvertise::new(Arc::clone(&r.params));
    (0..5).for_each(|u| s.receive(c(u), &t.adverts[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    (0..5).for_each(|u| s.receive(c(u), &t.reveals[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    (0..4).for_each(|u| s.receive(c(u), &t.share_keys[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    let ctx = r.params.context();
    let limits = r.params.limits();
    let m = MaskedInput::decode(&t.masked[0], limits).unwrap();
    let resign = |mut m: MaskedInput| {
        m.signature = sign(&r, m.sender, &m.signed_bytes(ctx, limits));
        m.encode(ctx, limits)
    };
    let short = MaskedInput { values: m.values[..7].to_vec(), ..m.clone() };
    assert!(matches!(
        s.receive(c(0), &resign(short)),
        Err(E::TooLong { .. }) | Err(E::WrongLength { what: "masked vector", expected: 8, got: 7 })
    ));
    // Right length field, wrong number of bytes.
    let mut bad_len = t.masked[0].clone();
    bad_len[38..42].copy_from_slice(&9u32.to_le_bytes());
    assert_eq!(s.receive(c(0), &bad_len), Err(E::WrongLength { what: "masked vector", expected: 8, got: 9 }));
    // 12-bit ring: two bytes per element, 0xffff is out of range.
    let mut out_of_range = m.clone();
    out_of_range.values[3] = 0xffff;
    assert!(matches!(
        s.receive(c(0), &resign(out_of_range)),
        Err(E::OutOfRange { what: "masked vector element", .. })
    ));
    // A flipped bit anywhere in the vector breaks the signature.
    let mut tampered = t.masked[0].clone();
    tampered[45] ^= 0x01;
    assert_eq!(s.receive(c(0), &tampered), Err(E::BadSignature { signer: 0 }));
    // Client 4 never shared, so its upload cannot be unmasked: refused.
    assert_eq!(
        s.receive(c(4), &t.masked[4]),
        Err(E::NotInRound { kind: MessageKind::MaskedInput, sender: 4 })
    );
    s.receive(c(0), &t.masked[0]).unwrap();
    assert_eq!(
        s.receive(c(0), &t.masked[0]),
        Err(E::Duplicate { kind: MessageKind::MaskedInput, sender: 0 })
    );
}

#[test]
fn the_server_never_accepts_a_share_it_must_not_hold() {
    let r = round(SuiteId::International, 5, 4, 3, 8, 12, 5);
    let t = transcript(&r);
    let mut s = ServerAdvertise::new(Arc::clone(&r.params));
    (0..5).for_each(|u| s.receive(c(u), &t.adverts[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    (0..5).for_each(|u| s.receive(c(u), &t.reveals[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    (0..5).for_each(|u| s.receive(c(u), &t.share_keys[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    (0..5).for_each(|u| s.receive(c(u), &t.masked[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    (0..5).for_each(|u| s.receive(c(u), &t.consistency[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    let ctx = r.params.context();
    let honest = UnmaskShares::decode(&t.unmask_shares[0], r.params.limits()).unwrap();
    // Everyone survived, so a mask-key share (which with the self-mask shares would expose client 1's
    // input) is refused.
    let mut both = honest.clone();
    both.shares[0].kind = SecretKind::MaskKey;
    both.signature = sign(&r, 0, &both.signed_bytes(ctx));
    let owner = both.shares[0].owner;
    assert_eq!(s.receive(c(0), &both.encode(ctx)), Err(E::WrongShareKind { sender: 0, owner }));
    let mut partial = honest.clone();
    let dropped = partial.shares.remove(1).owner;
    partial.signature = sign(&r, 0, &partial.signed_bytes(ctx));
    assert_eq!(s.receive(c(0), &partial.encode(ctx)), Err(E::IncompleteShares { sender: 0, owner: dropped }));
    assert_eq!(s.received(), 0);
    // Fewer than t responders: the round aborts.
    s.receive(c(0), &t.unmask_shares[0]).unwrap();
    s.receive(c(1), &t.unmask_shares[1]).unwrap();
    assert_eq!(s.close().unwrap_err(), E::TooFewSurvivors { phase: Phase::Unmasking, got: 2, need: 3 });
}

/// Client 0 of a fresh run of `t`'s round, stopped before handling the keys broadcast. It draws the same
/// graph-seed contribution as the transcript's client 0 (same generator, same draws), so the transcript's
/// commitments and reveals fit it.
fn client_awaiting_keys(r: &Round, t: &Transcript) -> ClientAwaitKeys {
    let (s, _) =
        start_client(&ClientRound::from_params(Arc::clone(&r.params), c(0)), r.signer(0), &mut rng())
            .unwrap();
    s.handle(&t.commitments[0].bytes).unwrap().0
}

#[test]
fn a_client_refuses_keys_the_server_could_have_forged() {
    let r = round(SuiteId::National, 8, 4, 3, 4, 16, 6);
    let t = transcript(&r);
    let ctx = r.params.context();
    let limits = r.params.limits();
    let honest = KeysBroadcast::decode(&t.key_broadcasts[0].bytes, limits).unwrap();
    let v = honest.advertisements[0].sender;
    // The server swaps in its own key for neighbour v and signs with a key of its own.
    let mut swapped = honest.clone();
    let (server_key, server_pub) = r.params.suite().suite().agreement_keypair().unwrap();
    swapped.advertisements[0].mask_public = server_pub;
    let ad = &mut swapped.advertisements[0];
    ad.signature =
        r.params.suite().suite().sign(&server_key, &ad.signed_bytes(ctx)).unwrap().try_into().unwrap();
    assert_eq!(
        client_awaiting_keys(&r, &t).handle(&swapped.encode(ctx), &mut rng()).unwrap_err(),
        E::BadSignature { signer: v }
    );
    let misrouted = KeysBroadcast { recipient: 1, ..honest.clone() }.encode(ctx);
    assert_eq!(
        client_awaiting_keys(&r, &t).handle(&misrouted, &mut rng()).unwrap_err(),
        E::WrongRecipient { addressed: 1, me: 0 }
    );
    let graph = r.params.graph_for(&graph::graph_seed(r.params.suite(), ctx, &honest.reveals));
    let stranger = (0..8).find(|&w| w != 0 && !graph.are_neighbours(0, w)).unwrap();
    let mut with_stranger = honest.clone();
    with_stranger.advertisements.pop();
    with_stranger.advertisements.push(AdvertiseKeys::decode(&t.adverts[stranger as usize], limits).unwrap());
    with_stranger.advertisements.sort_by_key(|a| a.sender);
    assert_eq!(
        client_awaiting_keys(&r, &t).handle(&with_stranger.encode(ctx), &mut rng()).unwrap_err(),
        E::NotANeighbour { a: 0, b: stranger }
    );
    let mut dup = honest.clone();
    dup.advertisements[1] = dup.advertisements[0].clone();
    assert_eq!(
        client_awaiting_keys(&r, &t).handle(&dup.encode(ctx), &mut rng()).unwrap_err(),
        E::DuplicateEntry { what: "advertisements", index: v }
    );
    let mut unsorted = honest;
    unsorted.advertisements.reverse();
    assert_eq!(
        client_awaiting_keys(&r, &t).handle(&unsorted.encode(ctx), &mut rng()).unwrap_err(),
        E::NotCanonical { what: "advertisements" }
    );
    // One entry too many is refused by length before anything else.
    let mut five = KeysBroadcast::decode(&t.key_broadcasts[0].bytes, limits).unwrap();
    five.advertisements.push(AdvertiseKeys::decode(&t.adverts[stranger as usize], limits).unwrap());
    assert!(matches!(
        client_awaiting_keys(&r, &t).handle(&five.encode(ctx), &mut rng()).unwrap_err(),
        E::TooLong { what: "keys-broadcast", .. }
    ));
}

#[test]
fn the_graph_seed_is_no_ones_choice() {
    let r = round(SuiteId::International, 8, 4, 3, 4, 16, 12);
    let t = transcript(&r);
    let ctx = r.params.context();
    let limits = r.params.limits();
    // The server refuses a reveal that does not open its sender's commitment, and aborts the round when a
    // client that committed withholds its reveal: a last revealer that dislikes the seed cannot get
    // another one from the same instance.
    let mut s = ServerAdvertise::new(Arc::clone(&r.params));
    (0..8).for_each(|u| s.receive(c(u), &t.adverts[u as usize]).unwrap());
    let (mut s, _) = s.close().unwrap();
    let mut other = SeedReveal::decode(&t.reveals[1], limits).unwrap();
    other.contribution[0] ^= 1;
    other.signature = sign(&r, 1, &other.signed_bytes(ctx));
    assert_eq!(s.receive(c(1), &other.encode(ctx)), Err(E::SeedMismatch { client: 1 }));
    (0..7).for_each(|u| s.receive(c(u), &t.reveals[u as usize]).unwrap());
    assert_eq!(s.close().unwrap_err(), E::SeedWithheld { missing: vec![7] });

    // A client reveals only once its own commitment is listed, unaltered.
    let fresh = || {
        start_client(&ClientRound::from_params(Arc::clone(&r.params), c(0)), r.signer(0), &mut rng())
            .unwrap()
            .0
    };
    let commitments = SeedCommitments::decode(&t.commitments[0].bytes, limits).unwrap();
    let mut altered = commitments.clone();
    altered.commitments[0].1[0] ^= 1;
    let mut without = commitments.clone();
    without.commitments.remove(0);
    for list in [altered, without] {
        assert!(matches!(fresh().handle(&list.encode(ctx)).unwrap_err(), E::SeedExchange { .. }));
    }
    // It then refuses a contribution the server swapped, a committed one left out, and an advertisement
    // carrying another commitment than the one listed (re-signed by its client: equivocation).
    let honest = KeysBroadcast::decode(&t.key_broadcasts[0].bytes, limits).unwrap();
    let mut swapped = honest.clone();
    swapped.reveals[3].1[0] ^= 1;
    assert_eq!(
        client_awaiting_keys(&r, &t).handle(&swapped.encode(ctx), &mut rng()).unwrap_err(),
        E::SeedMismatch { client: 3 }
    );
    let mut missing = honest.clone();
    missing.reveals.remove(5);
    assert!(matches!(
        client_awaiting_keys(&r, &t).handle(&missing.encode(ctx), &mut rng()).unwrap_err(),
        E::SeedExchange { .. }
    ));
    let mut equivocal = honest.clone();
    let ad = &mut equivocal.advertisements[0];
    ad.seed_commitment[0] ^= 1;
    ad.signature = sign(&r, ad.sender, &ad.signed_bytes(ctx));
    let v = ad.sender;
    assert_eq!(
        client_awaiting_keys(&r, &t).handle(&equivocal.encode(ctx), &mut rng()).unwrap_err(),
        E::SeedMismatch { client: v }
    );
    assert!(client_awaiting_keys(&r, &t).handle(&honest.encode(ctx), &mut rng()).is_ok());
    // With every other contribution fixed (by the server and colluders, before client 0 reveals), client
    // 0's own fresh contribution still moves its neighbourhood over the whole range: there is nothing
    // left to grind.
    let mut draw = ChaCha20Rng::seed_from_u64(7);
    let neighbourhoods: std::collections::BTreeSet<Vec<u32>> = (0..64)
        .map(|_| {
            let mut reveals = honest.reveals.clone();
            draw.fill_bytes(&mut reveals[0].1);
            let graph = r.params.graph_for(&graph::graph_seed(r.params.suite(), ctx, &reveals));
            graph.neighbours(0).to_vec()
        })
        .collect();
    // 35 neighbourhoods (4 of the 7 others) are possible; 64 uniform draws miss more than 20 of them with
    // probability below 1e-9.
    assert!(neighbourhoods.len() >= 15, "{} distinct neighbourhoods", neighbourhoods.len());
}

/// A fresh honest run of `r` (all clients) up to the relayed shares: the client states and the relays.
fn clients_awaiting_shares(r: &Round) -> (Vec<ClientAwaitShares>, Vec<Outgoing>) {
    let mut rng = rng();
    let mut server = ServerAdvertise::new(Arc::clone(&r.params));
    let mut s0 = Vec::new();
    for u in 0..r.params.n() {
        let (s, m) =
            start_client(&ClientRound::from_params(Arc::clone(&r.params), c(u)), r.signer(u), &mut rng)
                .unwrap();
        server.receive(c(u), &m).unwrap();
        s0.push(s);
    }
    let (server, out) = server.close().unwrap();
    let (mut server, out, s0) = reveal(server, s0, &out);
    let mut s1 = Vec::new();
    for (s, o) in s0.into_iter().zip(&out) {
        let (s, m) = s.handle(&o.bytes, &mut rng).unwrap();
        server.receive(o.to, &m).unwrap();
        s1.push(s);
    }
    let (_, relayed) = server.close().unwrap();
    (s1, relayed)
}

#[test]
fn a_client_refuses_shares_meant_for_someone_else_and_forged_survivor_sets() {
    let r = round(SuiteId::International, 5, 4, 3, 4, 16, 7);
    let ctx = r.params.context();
    let limits = r.params.limits();
    let (s1, relayed) = clients_awaiting_shares(&r);
    let for_0 = EncryptedShares::decode(&relayed[0].bytes, limits).unwrap();
    let for_1 = EncryptedShares::decode(&relayed[1].bytes, limits).unwrap();
    // The ciphertext client 2 made for client 1, handed to client 0 as if from client 2.
    let mut rerouted = for_0.clone();
    let from_2_to_1 = for_1.shares.iter().find(|s| s.peer == 2).unwrap().ciphertext.clone();
    rerouted.shares.iter_mut().find(|s| s.peer == 2).unwrap().ciphertext = from_2_to_1;
    let mut s1 = s1.into_iter();
    let client0 = s1.next().unwrap();
    assert_eq!(client0.handle(&rerouted.encode(ctx), &[0; 4]).unwrap_err(), E::ShareDecryption { from: 2 });
    let client1 = s1.next().unwrap();
    assert_eq!(
        client1.handle(&relayed[0].bytes, &[0; 4]).unwrap_err(),
        E::WrongRecipient { addressed: 0, me: 1 }
    );
    let client2 = s1.next().unwrap();
    assert!(matches!(client2.handle(&relayed[2].bytes, &[0; 3]).unwrap_err(), E::BadInput { .. }));
    let client3 = s1.next().unwrap();
    assert!(matches!(client3.handle(&relayed[3].bytes, &[1 << 16; 4]).unwrap_err(), E::BadInput { .. }));
    // Client 4 proceeds, then is sent a survivor set that leaves it out.
    let client4 = s1.next().unwrap();
    let (client4, _) = client4.handle(&relayed[4].bytes, &[0; 4]).unwrap();
    let without_me = SurvivorSet { recipient: 4, survivors: vec![0, 1, 2, 3] }.encode(ctx);
    assert!(matches!(client4.handle(&without_me).unwrap_err(), E::InconsistentSurvivors { .. }));
}

#[test]
fn a_client_signs_no_survivor_set_below_the_rounds_floor() {
    // t = 3, but the round's noise is calibrated for 4 survivors: a coordinator dropping two honest
    // clients to unmask a sum of three (less noise than promised) gets no signature.
    let r = round_with_floor(SuiteId::International, 5, 4, 3, 4, 16, 9, 4);
    assert_eq!(r.params.survivor_floor(), 4);
    let ctx = r.params.context();
    let (s1, relayed) = clients_awaiting_shares(&r);
    let client0 = s1.into_iter().next().unwrap();
    let (client0, _) = client0.handle(&relayed[0].bytes, &[0; 4]).unwrap();
    let three = SurvivorSet { recipient: 0, survivors: vec![0, 1, 2] }.encode(ctx);
    assert_eq!(
        client0.handle(&three).unwrap_err(),
        E::TooFewSurvivors { phase: Phase::ConsistencyCheck, got: 3, need: 4 }
    );
}

#[test]
fn masking_ahead_checks_the_input_and_takes_only_its_own_premasked_input() {
    let r = round(SuiteId::International, 5, 4, 3, 4, 16, 8);
    let (states, relayed) = clients_awaiting_shares(&r);
    let mut states = states.into_iter();
    let (client0, client1, client2) =
        (states.next().unwrap(), states.next().unwrap(), states.next().unwrap());
    // The same input checks as on the phase-2 message.
    assert!(matches!(client0.mask_plan().unwrap().apply(vec![0; 3], 1).unwrap_err(), E::BadInput { .. }));
    assert!(matches!(
        client0.mask_plan().unwrap().apply(vec![1 << 16; 4], 1).unwrap_err(),
        E::BadInput { .. }
    ));
    // Another client's premasked input is refused, naming the mix-up.
    let by_1 = client1.mask_plan().unwrap().apply(vec![1; 4], 1).unwrap();
    let err = client0.handle_premasked(&relayed[0].bytes, by_1).unwrap_err();
    assert!(err.to_string().contains("another round or client"), "{err}");
    // Its own goes through, and the result unmasks like any other upload: the pairwise masks cancel
    // only in the sum, so one upload must differ from the input.
    let own = client2.mask_plan().unwrap().apply(vec![1; 4], 1).unwrap();
    let (_, bytes) = client2.handle_premasked(&relayed[2].bytes, own).unwrap();
    let upload = MaskedInput::decode(&bytes, r.params.limits()).unwrap();
    assert_eq!(upload.sender, 2);
    assert_ne!(upload.values, vec![1; 4]);
}

#[test]
fn a_client_checks_consistency_signatures_before_revealing() {
    let r = round(SuiteId::International, 5, 4, 3, 4, 16, 8);
    let t = transcript(&r);
    let ctx = r.params.context();
    let limits = r.params.limits();
    let honest = UnmaskRequest::decode(&t.unmask_requests[0].bytes, limits).unwrap();
    // Client 0 is consumed by the transcript; rebuild a client at the same point by re-running.
    let run = |request: &[u8]| -> Result<Vec<u8>, SecAggError> {
        let mut rng = rng();
        let mut server = ServerAdvertise::new(Arc::clone(&r.params));
        let mut st = Vec::new();
        for u in 0..5 {
            let (s, m) =
                start_client(&ClientRound::from_params(Arc::clone(&r.params), c(u)), r.signer(u), &mut rng)
                    .unwrap();
            server.receive(c(u), &m).unwrap();
            st.push(s);
        }
        let (server, out) = server.close().unwrap();
        let (mut server, out, st) = reveal(server, st, &out);
        let mut st1 = Vec::new();
        for (s, o) in st.into_iter().zip(&out) {
            let (s, m) = s.handle(&o.bytes, &mut rng).unwrap();
            server.receive(o.to, &m).unwrap();
            st1.push(s);
        }
        let (_, out) = server.close().unwrap();
        let (s, _) = st1.remove(0).handle(&out[0].bytes, &[0; 4]).unwrap();
        let set = SurvivorSet { recipient: 0, survivors: vec![0, 1, 2, 3, 4] }.encode(ctx);
        let (s, _) = s.handle(&set).unwrap();
        s.handle(request)
    };
    // The honest signatures were made over the same survivor set in the same round context.
    assert!(run(&honest.encode(ctx)).is_ok());
    let mut forged = honest.clone();
    forged.signatures[1].1[10] ^= 1;
    let signer = forged.signatures[1].0;
    assert_eq!(run(&forged.encode(ctx)).unwrap_err(), E::BadSignature { signer });
    let mut too_few = honest;
    too_few.signatures.truncate(2);
    assert_eq!(
        run(&too_few.encode(ctx)).unwrap_err(),
        E::TooFewNeighbours { phase: Phase::Unmasking, got: 2, need: 3 }
    );
}

fn header_then(kind: u8, context: &[u8; 32], tail: &[u8]) -> Vec<u8> {
    let mut b = vec![VERSION, kind];
    b.extend_from_slice(context);
    b.extend_from_slice(tail);
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// No decoder panics on any bytes: raw, behind a valid header of every kind, or a valid message with
    /// one byte changed or cut.
    #[test]
    fn random_bytes_never_panic_a_decoder(
        raw in proptest::collection::vec(any::<u8>(), 0..600),
        kind in 1u8..=11,
        which in 0usize..11,
        pos in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let limits = LIMITS.with(|l| l.clone());
        let _ = Message::decode(&raw, &limits);
        let _ = Message::decode(&header_then(kind, &limits.context, &raw), &limits);
        let mut valid = VALID.with(|v| v[which].clone());
        let i = pos % valid.len();
        if cut { valid.truncate(i) } else { valid[i] = byte }
        let _ = Message::decode(&valid, &limits);
    }
}

thread_local! {
    static ROUND: Round = round(SuiteId::International, 5, 4, 3, 16, 12, 10);
    static LIMITS: Limits = ROUND.with(|r| r.params.limits().clone());
    static VALID: Vec<Vec<u8>> = ROUND.with(|r| {
        let t = transcript(r);
        vec![
            t.adverts[0].clone(),
            t.commitments[0].bytes.clone(),
            t.reveals[0].clone(),
            t.key_broadcasts[0].bytes.clone(),
            t.share_keys[0].clone(),
            t.relayed_shares[0].bytes.clone(),
            t.masked[0].clone(),
            t.survivor_sets[0].bytes.clone(),
            t.consistency[0].clone(),
            t.unmask_requests[0].bytes.clone(),
            t.unmask_shares[0].clone(),
        ]
    });
}

#[test]
fn every_message_round_trips_through_the_generic_decoder() {
    let r = round(SuiteId::National, 5, 4, 3, 16, 24, 11);
    let t = transcript(&r);
    let l = r.params.limits();
    let ctx = r.params.context();
    let all = [
        &t.adverts[1],
        &t.commitments[1].bytes,
        &t.reveals[1],
        &t.key_broadcasts[1].bytes,
        &t.share_keys[1],
        &t.relayed_shares[1].bytes,
        &t.masked[1],
        &t.survivor_sets[1].bytes,
        &t.consistency[1],
        &t.unmask_requests[1].bytes,
        &t.unmask_shares[1],
    ];
    for bytes in all {
        let reencoded = match Message::decode(bytes, l).unwrap() {
            Message::AdvertiseKeys(m) => m.encode(ctx),
            Message::SeedCommitments(m) => m.encode(ctx),
            Message::SeedReveal(m) => m.encode(ctx),
            Message::KeysBroadcast(m) => m.encode(ctx),
            Message::ShareKeys(m) => m.encode(ctx),
            Message::EncryptedShares(m) => m.encode(ctx),
            Message::MaskedInput(m) => m.encode(ctx, l),
            Message::SurvivorSet(m) => m.encode(ctx),
            Message::ConsistencySignature(m) => m.encode(ctx),
            Message::UnmaskRequest(m) => m.encode(ctx),
            Message::UnmaskShares(m) => m.encode(ctx).to_vec(),
        };
        assert_eq!(&reencoded, bytes, "{:?}", peek_kind(bytes));
    }
    // Lists longer than the round allows are refused before allocating.
    let mut huge = header_then(MessageKind::SurvivorSet as u8, ctx, &0u32.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        SurvivorSet::decode(&huge, l),
        Err(E::TooLong { what: "survivors", len: u32::MAX as usize, max: 5 })
    );
}
