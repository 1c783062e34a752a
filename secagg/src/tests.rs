//! End-to-end tests of the protocol: sums, drop-outs at every phase, aborts, both suites, and the
//! statistical look of a masked upload.

use std::collections::BTreeSet;
use std::sync::Arc;

use chacha20::ChaCha20Rng;
use proptest::prelude::*;
use rand_core::{Rng, SeedableRng};

use super::mask::{MaskExpander, Sign};
use super::*;
use hearth_crypto::suite::{SecretBytes, SuiteId};

/// A roster with fresh signing keys.
pub(super) struct Round {
    pub params: Arc<RoundParams>,
    pub signing: Vec<SecretBytes>,
}

pub(super) fn round(
    suite: SuiteId,
    n: u32,
    degree: u32,
    threshold: u32,
    d: u32,
    bits: u8,
    round_no: u64,
) -> Round {
    round_with_floor(suite, n, degree, threshold, d, bits, round_no, 0)
}

/// [`round`] whose clients sign no survivor set smaller than `min_survivors`.
#[allow(clippy::too_many_arguments)]
pub(super) fn round_with_floor(
    suite: SuiteId,
    n: u32,
    degree: u32,
    threshold: u32,
    d: u32,
    bits: u8,
    round_no: u64,
    min_survivors: u32,
) -> Round {
    let s = suite.suite();
    let (signing, roster): (Vec<_>, Vec<_>) = (0..n).map(|_| s.signing_keypair().unwrap()).unzip();
    let params = RoundParams::new(RoundConfig {
        suite,
        job_id: b"job-test".to_vec(),
        round: round_no,
        roster,
        degree,
        threshold,
        vector_len: d,
        modulus_bits: bits,
        instance: round_no,
        min_survivors,
    })
    .unwrap();
    Round { params: Arc::new(params), signing }
}

/// Phase 1 run honestly: each client in `states` answers its relayed commitments (`out`, in the same
/// order) and the server closes. Returns the server awaiting shares, the keys broadcasts, and the clients.
pub(super) fn reveal(
    mut server: ServerReveal,
    states: Vec<ClientAwaitCommitments>,
    out: &[Outgoing],
) -> (ServerShareKeys, Vec<Outgoing>, Vec<ClientAwaitKeys>) {
    let mut next = Vec::new();
    for (s, o) in states.into_iter().zip(out) {
        let (s, m) = s.handle(&o.bytes).unwrap();
        server.receive(o.to, &m).unwrap();
        next.push(s);
    }
    let (server, out) = server.close().unwrap();
    (server, out, next)
}

impl Round {
    pub(super) fn signer(&self, u: u32) -> Box<dyn MessageSigner> {
        Box::new(SuiteSigner::new(self.params.suite(), self.signing[u as usize].clone()))
    }
}

fn sim(
    suite: SuiteId,
    n: u32,
    kt: Option<(u32, u32)>,
    d: u32,
    bits: u8,
    dropouts: Dropouts,
    seed: u64,
) -> Simulation {
    Simulation {
        suite,
        n,
        vector_len: d,
        modulus_bits: bits,
        degree_threshold: kt,
        dropouts,
        seed,
        threads: 1 + (seed % 2) as usize,
        // Half the rounds mask ahead, as participants do.
        mask_ahead: seed % 4 < 2,
    }
}

#[test]
fn both_suites_complete_a_round_with_the_exact_sum() {
    for suite in [SuiteId::International, SuiteId::National] {
        let report = simulate_round(&sim(suite, 7, Some((4, 3)), 1000, 32, Dropouts::default(), 1)).unwrap();
        assert!(report.correct, "{suite}");
        assert_eq!(report.sum.contributors().len(), 7);
        // Complete graph (original SecAgg).
        let report = simulate_round(&sim(suite, 5, Some((4, 3)), 300, 20, Dropouts::default(), 2)).unwrap();
        assert!(report.correct, "{suite}");
    }
}

#[test]
fn drop_outs_at_every_phase_still_sum_the_survivors() {
    let cases = [
        ("before advertising", Dropouts { before_advertise: [1].into(), ..Default::default() }),
        ("after key advertisement", Dropouts { after_advertise: [2, 7].into(), ..Default::default() }),
        ("after share distribution", Dropouts { after_share_keys: [0, 5].into(), ..Default::default() }),
        ("after masked upload", Dropouts { after_masked_input: [3, 9].into(), ..Default::default() }),
        ("during unmasking", Dropouts { during_unmasking: [4, 8].into(), ..Default::default() }),
        ("all at once", Dropouts::spread(16, 4, 5)),
    ];
    // k = 10, t = 6: losing any 4 clients leaves every client 6 live neighbours. Masking ahead, a client
    // must remove again the masks of neighbours that advertised keys and then vanished.
    for ((name, dropouts), mask_ahead) in cases.iter().flat_map(|c| [(c, false), (c, true)]) {
        let mut s = sim(SuiteId::International, 16, Some((10, 6)), 257, 32, dropouts.clone(), 3);
        s.mask_ahead = mask_ahead;
        let report = simulate_round(&s).unwrap_or_else(|e| panic!("{name}, masking ahead {mask_ahead}: {e}"));
        assert!(report.correct, "{name}, masking ahead {mask_ahead}");
        let gone: BTreeSet<u32> =
            [&dropouts.before_advertise, &dropouts.after_advertise, &dropouts.after_share_keys]
                .into_iter()
                .flatten()
                .copied()
                .collect();
        assert_eq!(report.sum.contributors().len(), 16 - gone.len(), "{name}: uploads after phase 2 count");
    }
}

#[test]
fn fewer_than_t_survivors_abort_without_a_sum() {
    // Complete graph of 6, t = 4: three drop after sharing, so only three upload.
    let d = Dropouts { after_share_keys: [0, 1, 2].into(), ..Default::default() };
    let err = simulate_round(&sim(SuiteId::International, 6, Some((5, 4)), 64, 32, d, 4)).unwrap_err();
    assert_eq!(err, SecAggError::TooFewSurvivors { phase: Phase::MaskedInputCollection, got: 3, need: 4 });
    // Enough uploads, but too few reveal: the survivors' self-mask seeds lack shares.
    let d = Dropouts { during_unmasking: [0, 1, 2].into(), ..Default::default() };
    let err = simulate_round(&sim(SuiteId::International, 6, Some((5, 4)), 64, 32, d, 4)).unwrap_err();
    assert_eq!(err, SecAggError::TooFewSurvivors { phase: Phase::Unmasking, got: 3, need: 4 });
    // A client whose neighbours all vanished before sharing cannot be unmasked; the round stops at the
    // client, which refuses to share with fewer than t neighbours.
    let r = round(SuiteId::International, 8, 2, 2, 8, 32, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (state, ad) =
        start_client(&ClientRound::from_params(Arc::clone(&r.params), ClientIndex(0)), r.signer(0), &mut rng)
            .unwrap();
    let ctx = *r.params.context();
    let own = AdvertiseKeys::decode(&ad, r.params.limits()).unwrap().seed_commitment;
    let others = |v: u32| (v, graph::seed_commitment(SuiteId::International, &ctx, v, &[v as u8; 32]));
    let commitments = SeedCommitments {
        recipient: 0,
        commitments: [(0, own)].into_iter().chain((1..8).map(others)).collect(),
    };
    let (state, reveal) = state.handle(&commitments.encode(&ctx)).unwrap();
    let own = SeedReveal::decode(&reveal, r.params.limits()).unwrap().contribution;
    let reveals = [(0, own)].into_iter().chain((1..8).map(|v| (v, [v as u8; 32]))).collect();
    let empty = KeysBroadcast { recipient: 0, reveals, advertisements: vec![] }.encode(&ctx);
    assert_eq!(
        state.handle(&empty, &mut rng).unwrap_err(),
        SecAggError::TooFewNeighbours { phase: Phase::ShareKeys, got: 0, need: 2 }
    );
}

#[test]
fn the_server_aborts_before_rebuilding_when_a_secret_lacks_shares() {
    // n = 8, k = 4, t = 3: client 0's neighbours reveal too little when two of them vanish in unmasking
    // while the round as a whole still has enough responders.
    // The same seed draws the same graph seed, so a first run tells client 0's neighbours.
    let honest =
        simulate_round(&sim(SuiteId::International, 8, Some((4, 3)), 16, 32, Dropouts::default(), 9));
    let neighbours = honest.unwrap().graph.neighbours(0).to_vec();
    let d = Dropouts { during_unmasking: [neighbours[0], neighbours[1]].into(), ..Default::default() };
    let s = sim(SuiteId::International, 8, Some((4, 3)), 16, 32, d, 9);
    match simulate_round(&s) {
        Err(SecAggError::NotEnoughShares { got, need: 3, .. }) => assert!(got < 3),
        other => panic!("expected an abort for lack of shares, got {other:?}"),
    }
}

fn chi_square_bytes(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    bytes.iter().for_each(|&b| counts[b as usize] += 1);
    let expected = bytes.len() as f64 / 256.0;
    counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
}

/// Chi-square critical values for 255 degrees of freedom (Wilson-Hilferty approximation):
/// significance 0.001 -> 330.5, significance 1e-6 -> 377.3.
const CHI2_255_P001: f64 = 330.5;
const CHI2_255_P1E6: f64 = 377.3;

#[test]
fn a_masked_upload_looks_uniform() {
    // Deterministic: fixed seeds, an all-zero input (the most structured), the masks of a client with
    // four neighbours. Tested at significance 0.001.
    let mut v = vec![0u32; 1 << 18];
    for suite in [SuiteId::International, SuiteId::National] {
        let mut ex = MaskExpander::new(suite);
        ex.apply(&SecretBytes::new([1; 32]), Sign::Add, &mut v);
        for i in 0..4u8 {
            ex.apply(
                &SecretBytes::new([i + 2; 32]),
                if i % 2 == 0 { Sign::Add } else { Sign::Subtract },
                &mut v,
            );
        }
        let bytes: Vec<u8> = v.iter().flat_map(|w| w.to_le_bytes()).collect();
        let chi2 = chi_square_bytes(&bytes);
        assert!(chi2 < CHI2_255_P001, "{suite}: chi-square {chi2:.1} over bytes of a masked zero vector");
        v.iter_mut().for_each(|w| *w = 0);
    }
    // The real client's upload (its keys come from the OS, so this run's outcome is random): false alarm
    // probability 1e-6.
    let r = round(SuiteId::International, 5, 4, 3, 1 << 16, 32, 2);
    let upload = upload_of_client_0(&r, &vec![0u32; 1 << 16]);
    let m = MaskedInput::decode(&upload, r.params.limits()).unwrap();
    let bytes: Vec<u8> = m.values.iter().flat_map(|w| w.to_le_bytes()).collect();
    let chi2 = chi_square_bytes(&bytes);
    assert!(chi2 < CHI2_255_P1E6, "chi-square {chi2:.1} over a real masked upload");
    // And the test has power: the unmasked input fails it.
    assert!(chi_square_bytes(&vec![0u8; 1 << 18]) > CHI2_255_P1E6);
}

/// Runs phases 0-3 honestly and returns client 0's masked upload.
pub(super) fn upload_of_client_0(r: &Round, input: &[u32]) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let n = r.params.n();
    let mut server = ServerAdvertise::new(Arc::clone(&r.params));
    let mut states = Vec::new();
    for u in 0..n {
        let (s, m) = start_client(
            &ClientRound::from_params(Arc::clone(&r.params), ClientIndex(u)),
            r.signer(u),
            &mut rng,
        )
        .unwrap();
        server.receive(ClientIndex(u), &m).unwrap();
        states.push(s);
    }
    let (server, out) = server.close().unwrap();
    let (mut server, out, states) = reveal(server, states, &out);
    let mut next = Vec::new();
    for (s, o) in states.into_iter().zip(&out) {
        let (s, m) = s.handle(&o.bytes, &mut rng).unwrap();
        server.receive(o.to, &m).unwrap();
        next.push(s);
    }
    let (_, out) = server.close().unwrap();
    let (_, upload) = next.remove(0).handle(&out[0].bytes, input).unwrap();
    upload
}

fn graph_strategy() -> impl Strategy<Value = (u32, u32, u32)> {
    (3u32..40).prop_flat_map(|n| {
        let degrees: Vec<u32> = (2..n - 1).step_by(2).chain([n - 1]).collect();
        proptest::sample::select(degrees).prop_flat_map(move |k| (Just(n), Just(k), (k / 2 + 1)..=k))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For random n, k, t, d, ring size and drop-out sets: the round either returns exactly the
    /// plaintext modular sum of the survivors or aborts for lack of survivors or shares, and it never
    /// aborts when every client keeps t neighbours that never drop.
    #[test]
    fn unmasked_sum_equals_plaintext_sum(
        (n, k, t) in graph_strategy(),
        d in 1u32..48,
        bits in 2u8..=32,
        drop_count in 0u32..6,
        seed in any::<u64>(),
    ) {
        let dropouts = Dropouts::spread(n, drop_count, seed);
        let gone: BTreeSet<u32> = [&dropouts.before_advertise, &dropouts.after_advertise, &dropouts.after_share_keys,
            &dropouts.after_masked_input, &dropouts.during_unmasking].into_iter().flatten().copied().collect();
        // The graph is drawn during the round; whatever it is, every client keeps t live neighbours when no
        // more than k - t clients are gone.
        let must_succeed = gone.len() <= (k - t) as usize && n as usize - gone.len() >= t as usize;
        match simulate_round(&sim(SuiteId::International, n, Some((k, t)), d, bits, dropouts, seed)) {
            Ok(report) => prop_assert!(report.correct, "n {} k {} t {} d {} bits {}", n, k, t, d, bits),
            Err(e) => {
                prop_assert!(!must_succeed, "aborted though every client kept t live neighbours: {}", e);
                let is_abort = matches!(e, SecAggError::TooFewSurvivors { .. } | SecAggError::TooFewNeighbours { .. } | SecAggError::NotEnoughShares { .. });
                prop_assert!(is_abort, "{}", e);
            }
        }
    }
}

#[test]
fn quantised_floats_survive_the_protocol() {
    let q =
        Quantizer::new(QuantizerSpec { clip: 1.0, max_summands: 6, noise_headroom: 1000, modulus_bits: 24 })
            .unwrap();
    let r = round(SuiteId::National, 6, 5, 4, 32, 24, 5);
    // What a participant would use: a CSPRNG seeded from the OS.
    let mut rng = os_rng().unwrap();
    let inputs: Vec<Vec<f32>> =
        (0..6).map(|u| (0..32).map(|j| ((u * 32 + j) as f32 / 97.0).sin()).collect()).collect();
    let mut server = ServerAdvertise::new(Arc::clone(&r.params));
    let mut s0 = Vec::new();
    for u in 0..6 {
        let (s, m) = start_client(
            &ClientRound::from_params(Arc::clone(&r.params), ClientIndex(u)),
            r.signer(u),
            &mut rng,
        )
        .unwrap();
        server.receive(ClientIndex(u), &m).unwrap();
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
    let (mut server, out) = server.close().unwrap();
    let mut s2 = Vec::new();
    for ((s, o), x) in s1.into_iter().zip(&out).zip(&inputs) {
        let encoded = q.encode(x, &mut rng).unwrap();
        let (s, m) = s.handle(&o.bytes, &encoded).unwrap();
        server.receive(o.to, &m).unwrap();
        s2.push(s);
    }
    let (mut server, out) = server.close().unwrap();
    let mut s3 = Vec::new();
    for (s, o) in s2.into_iter().zip(&out) {
        let (s, m) = s.handle(&o.bytes).unwrap();
        server.receive(o.to, &m).unwrap();
        s3.push(s);
    }
    let (mut server, out) = server.close().unwrap();
    for (s, o) in s3.into_iter().zip(&out) {
        let m = s.handle(&o.bytes).unwrap();
        server.receive(o.to, &m).unwrap();
    }
    let sum = server.close().unwrap();
    let decoded = q.decode_sum(sum.values());
    for (j, got) in decoded.iter().enumerate() {
        let exact: f64 = inputs.iter().map(|x| f64::from(x[j])).sum();
        assert!((got - exact).abs() <= q.error_bound(6), "coordinate {j}: {got} vs {exact}");
    }
    let _ = rng.next_u32();
}

/// Prints simulated round costs (measurement only). Run:
/// `cargo test --release -p hearth-secagg simulated_round_costs -- --nocapture`.
#[test]
fn simulated_round_costs() {
    for (suite, n, d, drop) in [(SuiteId::International, 10, 10_000, 0), (SuiteId::National, 10, 10_000, 1)] {
        let r = simulate_round(&sim(suite, n, None, d, 32, Dropouts::spread(n, drop, 1), 1)).unwrap();
        assert!(r.correct);
        println!(
            "{suite:>13} n {n} d {d} dropouts {drop}: k {} t {} | client median {:.3}s (phases {:?}) | server {:?}s | sent/client {:.0} B",
            r.degree,
            r.threshold,
            r.client_median_seconds,
            r.client_phase_seconds.map(|s| (s * 1000.0).round() / 1000.0),
            r.server_phase_seconds.map(|s| (s * 1000.0).round() / 1000.0),
            r.bytes_sent_per_client
        );
    }
}
