//! A participant's "training" for the recommender: counting, over its customers, first purchases per
//! item and day and co-purchases per pair of items, divided by its number of customers (see the module
//! doc of [`crate::recommend`]).

use crate::recommend::{Interactions, RecommendSpec};
use crate::train::{TrainParams, TrainStats};
use crate::ModelError;

/// Replaces `params` with this institution's statistics: per item and day of the window, the share of
/// its customers who first bought the item that day; per pair of items, the share who bought both.
/// `examples` in the result counts customers, the weight that makes the coordinator's average the
/// pooled shares. `p` is validated but nothing in it changes the counts.
pub fn train_local(
    spec: &RecommendSpec,
    params: &mut [f32],
    data: &Interactions,
    p: &TrainParams,
) -> Result<TrainStats, ModelError> {
    p.validate()?;
    crate::check_len(params, spec.num_params())?;
    let days = spec.days as usize;
    let pairs_at = spec.items.len() * days;
    let mut counts = vec![0u32; params.len()];
    let mut items: Vec<u32> = Vec::new();
    for u in 0..data.len() {
        items.clear();
        for (i, first, _) in data.dated_row(u) {
            items.push(i);
            let d = i64::from(first) - i64::from(spec.first_day);
            if (0..days as i64).contains(&d) {
                if let Some(c) = counts.get_mut(i as usize * days + d as usize) {
                    *c += 1;
                }
            }
        }
        for (x, &a) in items.iter().enumerate() {
            for &b in &items[x + 1..] {
                if let Some(c) = counts.get_mut(pairs_at + spec.pair_slot(a, b)) {
                    *c += 1;
                }
            }
        }
    }
    let per_customer = 1.0 / data.len().max(1) as f64;
    params.iter_mut().zip(&counts).for_each(|(p, &c)| *p = (f64::from(c) * per_customer) as f32);
    Ok(TrainStats { mean_loss: 0.0, examples: data.len() })
}
