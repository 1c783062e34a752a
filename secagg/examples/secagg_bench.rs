//! Measures secure aggregation: mask expansion against the raw keystream for each suite, then whole
//! simulated rounds. Nothing is asserted; it prints tables.
//!
//! `cargo run --release -p hearth-secagg --example secagg_bench [quick]`; `SECAGG_THREADS=2` lets each
//! party expand masks on two threads.

use std::time::Instant;

use hearth_crypto::suite::{SecretBytes, SuiteId};
use hearth_secagg::mask::{apply_masks, MaskExpander, Sign};
use hearth_secagg::quantize::{Quantizer, QuantizerSpec};
use hearth_secagg::simulate::Simulation;
use hearth_secagg::{os_rng, simulate_round, Dropouts};

fn mb_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

fn mask_expansion(suite: SuiteId, words: usize, reps: usize) {
    let s = suite.suite();
    let seed = SecretBytes::new([7; 32]);
    let bytes = 4 * words;
    let mut raw = vec![0u8; bytes];
    s.keystream(&seed, &mut raw);
    let t = Instant::now();
    for _ in 0..reps {
        s.keystream(&seed, &mut raw);
    }
    let raw_big = mb_per_s(reps * bytes, t.elapsed().as_secs_f64());
    let mut block = vec![0u8; 64 * 1024];
    let t = Instant::now();
    for _ in 0..reps * bytes / block.len() {
        s.keystream(&seed, &mut block);
    }
    let raw_block = mb_per_s(reps * bytes, t.elapsed().as_secs_f64());
    let mut ex = MaskExpander::new(suite);
    let mut v = vec![0u32; words];
    ex.apply(&seed, Sign::Add, &mut v);
    let t = Instant::now();
    for _ in 0..reps {
        ex.apply(&seed, Sign::Add, &mut v);
    }
    let mask = mb_per_s(reps * bytes, t.elapsed().as_secs_f64());
    // A client of a 50-client round: its self mask and 22 pairwise masks, folded block by block.
    let masks: Vec<(SecretBytes, Sign)> = (0..23u8).map(|i| (SecretBytes::new([i; 32]), Sign::Add)).collect();
    let t = Instant::now();
    for _ in 0..reps.div_ceil(masks.len()) {
        apply_masks(suite, &masks, &mut v, 1);
    }
    let all = mb_per_s(reps.div_ceil(masks.len()) * masks.len() * bytes, t.elapsed().as_secs_f64());
    let best = raw_big.max(raw_block);
    println!(
        "| {suite} | {raw_big:.0} | {raw_block:.0} | {mask:.0} | {:.0}% | {all:.0} | {:.0}% |",
        100.0 * mask / best,
        100.0 * all / best
    );
}

/// Quantising a client's update: what a participant does before masking.
fn quantize(words: usize, reps: usize) {
    let q =
        Quantizer::new(QuantizerSpec { clip: 1.0, max_summands: 50, noise_headroom: 0, modulus_bits: 32 })
            .expect("a valid spec");
    let values: Vec<f32> = (0..words).map(|i| ((i % 2001) as f32 - 1000.0) * 1e-3).collect();
    let mut rng = os_rng().expect("an OS-seeded generator");
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(q.encode(&values, &mut rng).expect("no NaN"));
    }
    println!("| {words} | {:.2} |", 1e3 * t.elapsed().as_secs_f64() / reps as f64);
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    println!("mask expansion, 4 MiB vectors (MB/s of mask)\n");
    println!("| suite | raw keystream, one 4 MiB call | raw keystream, 64 KiB calls | one mask into u32 | mask / best raw | 23 masks into u32 | 23 masks / best raw |");
    println!("|---|---|---|---|---|---|---|");
    mask_expansion(SuiteId::International, 1 << 20, if quick { 5 } else { 25 });
    mask_expansion(SuiteId::National, 1 << 20, if quick { 1 } else { 3 });

    println!("\nquantisation (clip, scale, randomised rounding)\n");
    println!("| coordinates | ms per vector |");
    println!("|---|---|");
    quantize(1 << 20, if quick { 3 } else { 20 });

    println!("\nsimulated rounds (parties run one after another; client = median client; 32-bit ring)\n");
    println!("| suite | n | d | drop-outs | k | t | client s (phases 0-5) | server s (phases 0-5) | sent/client MB | correct | wall s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut cases = vec![];
    for n in [10u32, 50] {
        for d in [100_000u32, 1_000_000] {
            for drop in [0u32, n / 10] {
                cases.push((SuiteId::International, n, d, drop));
            }
        }
    }
    cases.push((SuiteId::National, 10, 100_000, 0));
    cases.push((SuiteId::National, 10, 100_000, 1));
    if quick {
        cases.retain(|c| c.1 == 10 && c.2 == 100_000);
    }
    let threads: usize = std::env::var("SECAGG_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    for (suite, n, d, drop) in cases {
        let sim = Simulation {
            suite,
            n,
            vector_len: d,
            modulus_bits: 32,
            degree_threshold: None,
            dropouts: Dropouts::spread(n, drop, u64::from(n) * 7 + u64::from(drop)),
            seed: 1,
            threads,
            mask_ahead: false,
        };
        match simulate_round(&sim) {
            Ok(r) => {
                let fmt = |a: [f64; 6]| a.map(|s| format!("{s:.3}")).join(" / ");
                println!(
                    "| {suite} | {n} | {d} | {drop} | {} | {} | {:.3} ({}) | {:.3} ({}) | {:.2} | {} | {:.1} |",
                    r.degree,
                    r.threshold,
                    r.client_median_seconds,
                    fmt(r.client_phase_seconds),
                    r.server_phase_seconds.iter().sum::<f64>(),
                    fmt(r.server_phase_seconds),
                    r.bytes_sent_per_client / 1e6,
                    r.correct,
                    r.wall_seconds
                );
            }
            Err(e) => println!("| {suite} | {n} | {d} | {drop} | round failed: {e} |"),
        }
    }
}
