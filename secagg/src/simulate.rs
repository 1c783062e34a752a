//! A whole round in memory: n clients and the server exchanging real encoded messages, with chosen
//! drop-outs, timed per phase.
//!
//! Responsibility: measurement and end-to-end checking for tests and `hearth bench secagg`; it runs
//! every client in turn on the calling thread, so client times are per client and server times are the
//! server's alone. It knows the plaintext inputs only to check the result, and it draws the self-mask
//! seeds and Shamir coefficients from a seeded generator: it is for measurement, never for a real round
//! (a participant uses [`super::os_rng`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use hearth_crypto::suite::SuiteId;

use super::client::{start_client, ClientAwaitShares, PremaskedInput, SuiteSigner};
use super::server::{Outgoing, ServerAdvertise, UnmaskedSum};
use super::verified::ClientRound;
use super::{ClientIndex, GraphRule, NeighbourGraph, RoundConfig, RoundParams, SecAggError};

/// The protocol's phases: advertise, reveal, share, mask, consistency, unmask.
pub const PHASES: usize = 6;

/// Which clients stop, and where. A client listed in several sets stops at the earliest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropouts {
    /// Never send anything.
    pub before_advertise: BTreeSet<u32>,
    /// Advertise keys and reveal the graph-seed contribution, then vanish before sharing. (A client
    /// that vanishes between committing and revealing aborts the round, by design.)
    pub after_advertise: BTreeSet<u32>,
    /// Share keys, then vanish before uploading a masked input.
    pub after_share_keys: BTreeSet<u32>,
    /// Upload a masked input, then vanish before the consistency check.
    pub after_masked_input: BTreeSet<u32>,
    /// Sign the survivor set, then vanish before revealing shares.
    pub during_unmasking: BTreeSet<u32>,
}

impl Dropouts {
    /// `count` distinct clients out of `n`, chosen with `seed`, spread over the five drop points in
    /// turn.
    pub fn spread(n: u32, count: u32, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut order: Vec<u32> = (0..n).collect();
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut d = Self::default();
        for (i, &u) in order.iter().take(count.min(n) as usize).enumerate() {
            let set = match i % 5 {
                0 => &mut d.after_advertise,
                1 => &mut d.after_share_keys,
                2 => &mut d.after_masked_input,
                3 => &mut d.during_unmasking,
                _ => &mut d.before_advertise,
            };
            set.insert(u);
        }
        d
    }

    /// Whether client `u` stops before phase `step` (0..=5).
    fn stops_before(&self, u: u32, step: usize) -> bool {
        let none = BTreeSet::new();
        let sets = [
            &self.before_advertise,
            &none,
            &self.after_advertise,
            &self.after_share_keys,
            &self.after_masked_input,
            &self.during_unmasking,
        ];
        sets.iter().take(step + 1).any(|s| s.contains(&u))
    }
}

/// What a simulated round cost and produced.
#[derive(Debug, Clone)]
pub struct SimulationReport {
    /// The server's result.
    pub sum: UnmaskedSum,
    /// Whether it equals the plaintext modular sum of the survivors' inputs.
    pub correct: bool,
    /// Degree and threshold used.
    pub degree: u32,
    /// The neighbour graph the clients drew (the same for the same seed and clients).
    pub graph: NeighbourGraph,
    /// Shamir threshold used.
    pub threshold: u32,
    /// Seconds each client spent, per phase 0..=5, averaged over the clients that ran the phase.
    pub client_phase_seconds: [f64; PHASES],
    /// Median over clients of a client's total seconds.
    pub client_median_seconds: f64,
    /// Seconds the server spent per phase (receiving all messages and closing).
    pub server_phase_seconds: [f64; PHASES],
    /// Mean bytes a client sent.
    pub bytes_sent_per_client: f64,
    /// Mean bytes a client received.
    pub bytes_received_per_client: f64,
    /// Wall-clock seconds of the whole simulation.
    pub wall_seconds: f64,
}

/// The parameters of a simulation.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Suite.
    pub suite: SuiteId,
    /// Clients.
    pub n: u32,
    /// Vector length.
    pub vector_len: u32,
    /// Ring bits.
    pub modulus_bits: u8,
    /// Degree and threshold; `None` picks them with [`GraphRule::default`].
    pub degree_threshold: Option<(u32, u32)>,
    /// Who drops out where.
    pub dropouts: Dropouts,
    /// Seed of the inputs, self-mask seeds and Shamir coefficients (key pairs come from the OS).
    pub seed: u64,
    /// Threads each party uses to expand masks (clients still run one after another).
    pub threads: usize,
    /// Each client masks its input right after phase 1 with [`ClientAwaitShares::mask_plan`], as a
    /// participant does, rather than on the phase-2 message.
    pub mask_ahead: bool,
}

struct Stats {
    sent: Vec<u64>,
    received: Vec<u64>,
    seconds: Vec<[f64; PHASES]>,
}

impl Stats {
    fn deliver(&mut self, out: &[Outgoing]) {
        for o in out {
            if let Some(r) = self.received.get_mut(o.to.0 as usize) {
                *r += o.bytes.len() as u64;
            }
        }
    }
}

fn input_of(seed: u64, u: u32, d: usize, bits: u8) -> Vec<u32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ (u64::from(u) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mask = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
    (0..d).map(|_| rng.next_u32() & mask).collect()
}

/// Runs one round with fresh signing keys for every client and random inputs; an error if the round
/// aborts (too many drop-outs) or a party refuses a message.
pub fn simulate_round(sim: &Simulation) -> Result<SimulationReport, SecAggError> {
    let wall = Instant::now();
    let suite = sim.suite.suite();
    let mut signing = Vec::with_capacity(sim.n as usize);
    let mut roster = Vec::with_capacity(sim.n as usize);
    for _ in 0..sim.n {
        let (sk, pk) = suite.signing_keypair()?;
        signing.push(sk);
        roster.push(pk);
    }
    let (degree, threshold) = match sim.degree_threshold {
        Some(kt) => kt,
        None => {
            let c = GraphRule::default().choose(sim.n)?;
            (c.degree, c.threshold)
        }
    };
    let params = Arc::new(RoundParams::new(RoundConfig {
        suite: sim.suite,
        job_id: b"simulation".to_vec(),
        round: 1,
        roster,
        degree,
        threshold,
        vector_len: sim.vector_len,
        modulus_bits: sim.modulus_bits,
        instance: 0,
        min_survivors: 0,
    })?);
    let n = sim.n as usize;
    let mut rng = ChaCha20Rng::seed_from_u64(sim.seed);
    let mut stats = Stats { sent: vec![0; n], received: vec![0; n], seconds: vec![[0.0; PHASES]; n] };
    let mut server_seconds = [0.0; PHASES];
    let drop = &sim.dropouts;

    // Phase 0.
    let mut server = ServerAdvertise::new(Arc::clone(&params));
    let mut waiting = Vec::new();
    for (u, sk) in signing.into_iter().enumerate() {
        let u = u as u32;
        if drop.stops_before(u, 0) {
            continue;
        }
        let t = Instant::now();
        let (state, msg) = start_client(
            &ClientRound::from_params(Arc::clone(&params), ClientIndex(u)),
            Box::new(SuiteSigner::new(sim.suite, sk)),
            &mut rng,
        )?;
        stats.seconds[u as usize][0] += t.elapsed().as_secs_f64();
        stats.sent[u as usize] += msg.len() as u64;
        let t = Instant::now();
        server.receive(ClientIndex(u), &msg)?;
        server_seconds[0] += t.elapsed().as_secs_f64();
        waiting.push((u, state));
    }
    let t = Instant::now();
    let (mut server, out) = server.close()?;
    server_seconds[0] += t.elapsed().as_secs_f64();
    stats.deliver(&out);

    // Phase 1: the graph-seed reveal.
    let mut revealed = Vec::new();
    for (o, (u, state)) in out.iter().zip(waiting) {
        if drop.stops_before(u, 1) {
            continue;
        }
        let t = Instant::now();
        let (state, msg) = state.handle(&o.bytes)?;
        stats.seconds[u as usize][1] += t.elapsed().as_secs_f64();
        stats.sent[u as usize] += msg.len() as u64;
        let t = Instant::now();
        server.receive(ClientIndex(u), &msg)?;
        server_seconds[1] += t.elapsed().as_secs_f64();
        revealed.push((u, state));
    }
    let t = Instant::now();
    let (mut server, out) = server.close()?;
    server_seconds[1] += t.elapsed().as_secs_f64();
    stats.deliver(&out);
    let graph = server.graph().clone();

    // Phase 2 (and, masking ahead, the masking that overlaps the wait for phase 3).
    let d = sim.vector_len as usize;
    let mut sharing: Vec<(u32, ClientAwaitShares, Option<PremaskedInput>)> = Vec::new();
    for (o, (u, state)) in out.iter().zip(revealed) {
        if drop.stops_before(u, 2) {
            continue;
        }
        let t = Instant::now();
        let (state, msg) = state.handle(&o.bytes, &mut rng)?;
        stats.seconds[u as usize][2] += t.elapsed().as_secs_f64();
        stats.sent[u as usize] += msg.len() as u64;
        let t = Instant::now();
        server.receive(ClientIndex(u), &msg)?;
        server_seconds[2] += t.elapsed().as_secs_f64();
        let premasked = if sim.mask_ahead {
            let input = input_of(sim.seed, u, d, sim.modulus_bits);
            let t = Instant::now();
            let premasked = state.mask_plan()?.apply(input, sim.threads)?;
            stats.seconds[u as usize][3] += t.elapsed().as_secs_f64();
            Some(premasked)
        } else {
            None
        };
        sharing.push((u, state, premasked));
    }
    let t = Instant::now();
    let (mut server, out) = server.close()?;
    server_seconds[2] += t.elapsed().as_secs_f64();
    stats.deliver(&out);

    // Phase 3.
    let ring = if sim.modulus_bits == 32 { u32::MAX } else { (1u32 << sim.modulus_bits) - 1 };
    let mut expected = vec![0u32; d];
    let mut uploaded = Vec::new();
    for (o, (u, state, premasked)) in out.iter().zip(sharing) {
        if drop.stops_before(u, 3) {
            continue;
        }
        let input = input_of(sim.seed, u, d, sim.modulus_bits);
        let t = Instant::now();
        let (state, msg) = match premasked {
            Some(premasked) => state.handle_premasked(&o.bytes, premasked)?,
            None => state.handle_with_threads(&o.bytes, &input, sim.threads)?,
        };
        stats.seconds[u as usize][3] += t.elapsed().as_secs_f64();
        stats.sent[u as usize] += msg.len() as u64;
        let t = Instant::now();
        server.receive(ClientIndex(u), &msg)?;
        server_seconds[3] += t.elapsed().as_secs_f64();
        expected.iter_mut().zip(&input).for_each(|(e, x)| *e = e.wrapping_add(*x) & ring);
        uploaded.push((u, state));
    }
    let t = Instant::now();
    let (mut server, out) = server.close()?;
    server_seconds[3] += t.elapsed().as_secs_f64();
    stats.deliver(&out);

    // Phase 4.
    let mut signed = Vec::new();
    for (o, (u, state)) in out.iter().zip(uploaded) {
        if drop.stops_before(u, 4) {
            continue;
        }
        let t = Instant::now();
        let (state, msg) = state.handle(&o.bytes)?;
        stats.seconds[u as usize][4] += t.elapsed().as_secs_f64();
        stats.sent[u as usize] += msg.len() as u64;
        let t = Instant::now();
        server.receive(ClientIndex(u), &msg)?;
        server_seconds[4] += t.elapsed().as_secs_f64();
        signed.push((u, state));
    }
    let t = Instant::now();
    let (mut server, out) = server.close()?;
    server_seconds[4] += t.elapsed().as_secs_f64();
    stats.deliver(&out);

    // Phase 5.
    for (o, (u, state)) in out.iter().zip(signed) {
        if drop.stops_before(u, 5) {
            continue;
        }
        let t = Instant::now();
        let msg = state.handle(&o.bytes)?;
        stats.seconds[u as usize][5] += t.elapsed().as_secs_f64();
        stats.sent[u as usize] += msg.len() as u64;
        let t = Instant::now();
        server.receive(ClientIndex(u), &msg)?;
        server_seconds[5] += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    let sum = server.close_with_threads(sim.threads)?;
    server_seconds[5] += t.elapsed().as_secs_f64();

    let mut client_phase_seconds = [0.0; PHASES];
    for (phase, slot) in client_phase_seconds.iter_mut().enumerate() {
        let ran: Vec<f64> = stats.seconds.iter().map(|s| s[phase]).filter(|&s| s > 0.0).collect();
        *slot = if ran.is_empty() { 0.0 } else { ran.iter().sum::<f64>() / ran.len() as f64 };
    }
    let mut totals: Vec<f64> = stats.seconds.iter().map(|s| s.iter().sum()).collect();
    totals.sort_by(f64::total_cmp);
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    Ok(SimulationReport {
        correct: sum.values() == expected.as_slice(),
        sum,
        degree,
        graph,
        threshold,
        client_phase_seconds,
        client_median_seconds: totals.get(totals.len() / 2).copied().unwrap_or(0.0),
        server_phase_seconds: server_seconds,
        bytes_sent_per_client: mean(&stats.sent),
        bytes_received_per_client: mean(&stats.received),
        wall_seconds: wall.elapsed().as_secs_f64(),
    })
}
