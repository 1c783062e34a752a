//! Training the item factors: gradient steps for a participant's round ([`train_local`]) and alternating
//! least squares for the centralized comparison ([`train_als`]), on the same loss (see the module doc of
//! [`crate::recommend`]).

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::recommend::linalg::{add_outer, cholesky_solve, dot, gram, row, solve_user};
use crate::recommend::{Interactions, RecommendSpec};
use crate::train::{TrainParams, TrainStats};
use crate::ModelError;

fn check_params(spec: &RecommendSpec, params: &[f32]) -> Result<(), ModelError> {
    if params.len() != spec.num_params() {
        return Err(ModelError::InvalidParams(format!(
            "{} parameters, the spec needs {}",
            params.len(),
            spec.num_params()
        )));
    }
    Ok(())
}

/// The item factors `Y0 + params`.
fn factors(spec: &RecommendSpec, params: &[f32]) -> Vec<f32> {
    let mut y = spec.initial_factors();
    y.iter_mut().zip(params).for_each(|(f, p)| *f += p);
    y
}

/// Writes `y - Y0` back into `params`.
fn store(spec: &RecommendSpec, params: &mut [f32], y: &[f32]) {
    for ((p, f), f0) in params.iter_mut().zip(y).zip(spec.initial_factors()) {
        *p = f - f0;
    }
}

/// A customer's loss at their solved factor `x`:
/// `x^T G x + sum_obs [c (1 - x.y)^2 - (x.y)^2] + user_l2 |x|^2`.
fn user_loss(
    spec: &RecommendSpec,
    y: &[f32],
    g: &[f64],
    x: &[f32],
    hist: &[(u32, f32)],
) -> Result<f64, ModelError> {
    let k = spec.k();
    let mut loss = 0.0f64;
    for (a, &xa) in x.iter().enumerate() {
        let ga = &g[a * k..a * k + k];
        loss += f64::from(xa) * ga.iter().zip(x).map(|(gab, &xb)| gab * f64::from(xb)).sum::<f64>();
    }
    for &(i, r) in hist {
        let s = f64::from(dot(x, row(y, i, k)?));
        let c = 1.0 + f64::from(spec.alpha) * f64::from(r);
        loss += c * (1.0 - s) * (1.0 - s) - s * s;
    }
    Ok(loss + f64::from(spec.user_l2) * x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>())
}

/// Trains the item factors in place on one institution's customers: `local_epochs` passes, each a
/// sequence of gradient steps over batches of `batch_size` customers (a batch at least as large as the
/// institution makes each pass one full gradient step). Each customer's factor is solved exactly for
/// the factors the batch starts from and is then discarded. `examples` in the result counts customers:
/// the weight the coordinator should give this update.
pub fn train_local(
    spec: &RecommendSpec,
    params: &mut [f32],
    data: &Interactions,
    p: &TrainParams,
) -> Result<TrainStats, ModelError> {
    p.validate()?;
    check_params(spec, params)?;
    let k = spec.k();
    let mut y = factors(spec, params);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
    let mut grad = vec![0.0f32; y.len()];
    let mut last_loss = f32::NAN;
    for _ in 0..p.local_epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0f64;
        for batch in order.chunks(p.batch_size as usize) {
            let g = gram(&y, k);
            let mut s = vec![0.0f64; k * k];
            grad.iter_mut().for_each(|v| *v = 0.0);
            for &u in batch {
                let hist = data.rows.get(u).map_or(&[][..], Vec::as_slice);
                let x = solve_user(&y, &g, k, hist, spec)?;
                loss_sum += user_loss(spec, &y, &g, &x, hist)?;
                add_outer(&mut s, &x, 1.0, k);
                for &(i, r) in hist {
                    let c = 1.0 + spec.alpha * r;
                    let coef = (c - 1.0) * dot(&x, row(&y, i, k)?) - c;
                    let start = i as usize * k;
                    if let Some(gi) = grad.get_mut(start..start + k) {
                        gi.iter_mut().zip(&x).for_each(|(gv, xv)| *gv += coef * xv);
                    }
                }
            }
            // Gradient of mean loss + l2 |Y|^2: (2 / B) (S y_i + observed terms) + 2 l2 y_i.
            let scale = 2.0 / batch.len() as f32;
            for (yi, gi) in y.chunks_exact_mut(k).zip(grad.chunks_exact(k)) {
                let step: Vec<f32> = (0..k)
                    .map(|a| {
                        let sy: f64 = s[a * k..a * k + k]
                            .iter()
                            .zip(yi.iter())
                            .map(|(sab, &yb)| sab * f64::from(yb))
                            .sum();
                        scale * (sy as f32 + gi[a]) + 2.0 * p.l2 * yi[a]
                    })
                    .collect();
                yi.iter_mut().zip(step).for_each(|(v, d)| *v -= p.learning_rate * d);
            }
        }
        last_loss = (loss_sum / data.len().max(1) as f64) as f32;
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::InvalidTrainParams(format!(
            "training diverged (non-finite item factors); lower learning_rate {}",
            p.learning_rate
        )));
    }
    store(spec, params, &y);
    Ok(TrainStats { mean_loss: last_loss, examples: data.len() })
}

/// Centralized alternating least squares on the same loss as [`train_local`] with a full batch:
/// `local_epochs` sweeps, each solving every customer and then every item exactly (the item ridge is
/// `customers * l2`, which makes the two losses identical). Needs all customers in one place, so it is
/// the centralized comparison only; `learning_rate`, `batch_size` and `seed` are unused.
pub fn train_als(
    spec: &RecommendSpec,
    params: &mut [f32],
    data: &Interactions,
    p: &TrainParams,
) -> Result<TrainStats, ModelError> {
    p.validate()?;
    check_params(spec, params)?;
    let k = spec.k();
    let mut y = factors(spec, params);
    // Item -> (customer, invoices), the inverted index the item solves need.
    let mut buyers: Vec<Vec<(usize, f32)>> = vec![Vec::new(); spec.items.len()];
    for (u, hist) in data.rows.iter().enumerate() {
        for &(i, r) in hist {
            if let Some(b) = buyers.get_mut(i as usize) {
                b.push((u, r));
            }
        }
    }
    let ridge = data.len() as f64 * f64::from(p.l2);
    let mut last_loss = f32::NAN;
    for _ in 0..p.local_epochs {
        let g = gram(&y, k);
        let xs: Vec<Vec<f32>> =
            data.rows.iter().map(|h| solve_user(&y, &g, k, h, spec)).collect::<Result<_, _>>()?;
        let mut loss_sum = 0.0;
        for (x, h) in xs.iter().zip(&data.rows) {
            loss_sum += user_loss(spec, &y, &g, x, h)?;
        }
        last_loss = (loss_sum / data.len().max(1) as f64) as f32;
        let s = gram(&xs.concat(), k);
        for (yi, bi) in y.chunks_exact_mut(k).zip(&buyers) {
            let mut a = s.clone();
            for d in a.iter_mut().step_by(k + 1) {
                *d += ridge.max(1e-9);
            }
            let mut b = vec![0.0f64; k];
            for &(u, r) in bi {
                let Some(x) = xs.get(u) else { continue };
                let c = 1.0 + f64::from(spec.alpha) * f64::from(r);
                add_outer(&mut a, x, c - 1.0, k);
                b.iter_mut().zip(x).for_each(|(bv, &xv)| *bv += c * f64::from(xv));
            }
            cholesky_solve(&mut a, &mut b, k)?;
            yi.iter_mut().zip(b).for_each(|(v, n)| *v = n as f32);
        }
    }
    store(spec, params, &y);
    Ok(TrainStats { mean_loss: last_loss, examples: data.len() })
}
