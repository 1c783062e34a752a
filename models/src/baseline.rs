//! A sanity baseline from a well-kept library: linfa's multinomial Naive Bayes on hashed word counts.
//!
//! It shares nothing with the softmax model but the data, so when both land in the same range the
//! features and the evaluation are probably right. It needs a dense matrix (examples × `dim`), so `dim`
//! is kept small (4096 f64 columns for CLINC150's 15,100 training examples is about 500 MB; 2048 is
//! about 250 MB).

use linfa::prelude::*;
use linfa_bayes::MultinomialNb;
use ndarray::{Array1, Array2};

use crate::eval::{evaluate_predictions, Metrics};
use crate::features::tokens;
use crate::{Example, ModelError};

fn counts(examples: &[Example], dim: usize) -> Array2<f64> {
    let mut x = Array2::<f64>::zeros((examples.len(), dim));
    for (r, e) in examples.iter().enumerate() {
        for t in tokens(&e.text) {
            let h = t
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            x[[r, (h % dim as u64) as usize]] += 1.0;
        }
    }
    x
}

/// Trains multinomial Naive Bayes on `train` and evaluates it on `test` (out of scope as a class).
pub fn linfa_naive_bayes(train: &[Example], test: &[Example], dim: u32) -> Result<Metrics, ModelError> {
    let dim = dim.clamp(16, 1 << 14) as usize;
    let mut labels: Vec<&str> = train.iter().map(|e| e.label.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    let index = |l: &str| labels.binary_search(&l).ok();
    let y: Array1<usize> = train.iter().map(|e| index(&e.label).unwrap_or(0)).collect();
    let ds = Dataset::new(counts(train, dim), y);
    let model = MultinomialNb::params().fit(&ds).map_err(|e| ModelError::Baseline(e.to_string()))?;
    let pred = model.predict(&counts(test, dim));
    let preds: Vec<&str> = pred.iter().map(|&i| labels.get(i).copied().unwrap_or("")).collect();
    Ok(evaluate_predictions(test, &preds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_bayes_learns_a_toy_task() {
        let ex = |t: &str, l: &str| Example { text: t.into(), label: l.into(), embedding: None };
        let train = vec![
            ex("balance money account", "balance"),
            ex("my balance please", "balance"),
            ex("send transfer money", "transfer"),
            ex("transfer to friend", "transfer"),
        ];
        let test = vec![ex("account balance", "balance"), ex("transfer friend", "transfer")];
        let m = linfa_naive_bayes(&train, &test, 256).unwrap();
        assert_eq!(m.accuracy, 1.0);
    }
}
