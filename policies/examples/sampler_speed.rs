//! Speed of the discrete Gaussian samplers: this crate's (`DiscreteGaussian::add_noise`, the path of
//! `DistributedDiscreteGaussian::add_share`) against OpenDP's `sample_discrete_gaussian`, per draw, at
//! the scales Hearth uses: a query's few levels, and a training share on a 32-bit grid (about 5e5).
//!
//! `cargo run --release -p hearth-policies --example sampler_speed`

use std::time::Instant;

use dashu::rational::RBig;
use hearth_policies::DiscreteGaussian;
use opendp::traits::samplers::sample_discrete_gaussian;

fn main() {
    println!("| sigma | hearth (ns/draw) | OpenDP (ns/draw) | ratio |");
    println!("|---|---|---|---|");
    for sigma in [0.5, 3.5, 1_000.0, 512_345.678] {
        let m = DiscreteGaussian::new(sigma, 1.0).expect("a valid scale");
        let n = 1_000_000;
        let mut v = vec![0i64; n];
        let t = Instant::now();
        m.add_noise(&mut v).expect("noise");
        let ours = t.elapsed().as_nanos() as f64 / n as f64;

        let exact = RBig::try_from(sigma).expect("a finite scale");
        let n_opendp = 50_000;
        let t = Instant::now();
        let mut sink = 0i64;
        for _ in 0..n_opendp {
            let x = sample_discrete_gaussian(exact.clone()).expect("OpenDP draw");
            sink ^= i64::try_from(x).unwrap_or(0);
        }
        let theirs = t.elapsed().as_nanos() as f64 / n_opendp as f64;
        std::hint::black_box((sink, &v));
        println!("| {sigma} | {ours:.0} | {theirs:.0} | {:.0}x |", theirs / ours);
    }
}
