//! The recommender: federated collaborative filtering by implicit-feedback matrix factorisation.
//!
//! # Design
//!
//! The model is Hu, Koren and Volinsky's implicit-feedback factorisation (ICDM 2008) trained as in
//! Ammad-ud-din et al., "Federated Collaborative Filtering for Privacy-Preserving Personalized
//! Recommendation System" (2019). Every customer `u` and item `i` has a `k`-dimensional factor; the
//! preference `p_ui` is 1 when `u` bought `i` and 0 otherwise, with confidence `c_ui = 1 + alpha * r_ui`
//! (`r_ui`: the invoices on which `u` bought `i`), and the loss is
//! `sum_u [ sum_i c_ui (p_ui - x_u . y_i)^2 + user_l2 |x_u|^2 ] / customers + l2 |Y|^2`.
//!
//! - **Global parameters are the item factors `Y` only** (`items * factors` floats, the flat vector the
//!   coordinator averages). A customer's factor `x_u` is solved in closed form from `Y` and that
//!   customer's own purchases (a `k x k` linear system) whenever it is needed: during local training, and
//!   again at serving time from the history the app sends. It is never stored, never uploaded, and never
//!   leaves the institution; the coordinator learns only the averaged change of `Y`.
//! - **Local training** ([`train_local`]) takes gradient steps on `Y` over the institution's customers,
//!   each with its freshly solved `x_u`. The loss is a mean over the local customers and the update is
//!   weighted by that count, so one local step averaged by the coordinator is exactly a gradient step on
//!   the pooled loss; more local steps and server momentum are federated averaging as for intent.
//! - **Centralized training of the same model** uses alternating least squares ([`train_als`]), the
//!   optimizer Hu et al. designed for it, on the same loss: the strongest comparison, and one that needs
//!   every customer's factor in one place, which is exactly what federation avoids.
//! - Why this rather than an item-item model: item-item similarities (or EASE) need the item
//!   co-occurrence matrix, `items^2` numbers (8.2 million for the 2,862 products of Online Retail) that
//!   spell out which products each institution's customers buy together; the factors are `items * k`
//!   (92 thousand with `k = 32`), so each round uploads, and DP noise must cover, far fewer numbers.
//!
//! Zero parameters are the initial model, for every family: the item factors are
//! `Y = Y0 + params`, where `Y0` is a small random matrix drawn from the spec's `seed`. Every party
//! derives the same `Y0`, so the coordinator can start from zeros as it does for intent, while the
//! factorisation still starts away from its saddle point at `Y = 0` (where every gradient vanishes).
//!
//! Cold start: a customer without history gets the institution's most popular items, which the
//! participant computes from its own data and stores in the model file's calibration
//! ([`popular_items`]). Data preparation (cancellations, anonymous rows, institutions, leave-last-out)
//! is [`data`]'s; finding the items a customer's message names, [`mentions`]'.

pub mod data;
pub mod eval;
mod linalg;
pub mod mentions;
pub mod split;
mod train;

use std::collections::HashMap;

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::file::FileModel;
use crate::spec::MAX_NUM_PARAMS;
use crate::train::TrainParams;
use crate::ModelError;

pub use data::{encode, Interactions, PopularItem};
pub use eval::{evaluate_popular, evaluate_ranking, RankingMetrics};
pub use mentions::ItemMentions;
pub use split::{leave_last_out, partition_by_country, HeldOut, Institution, LeaveLastOut};
pub use train::{train_als, train_local};

/// Largest spec JSON accepted (the catalogue is in it).
const MAX_SPEC_BYTES: usize = 8 << 20;
/// Most items a catalogue may hold.
pub const MAX_ITEMS: usize = 500_000;
/// Longest item id, in bytes.
pub const MAX_ITEM_BYTES: usize = 64;
/// Most items a request's history may list.
pub const MAX_HISTORY: usize = 10_000;
/// Most recommendations a request may ask for.
pub const MAX_TOP_K: usize = 100;
/// Standard deviation of the seeded initial item factors.
const INIT_STD: f32 = 0.1;

/// What a recommender is: its item catalogue and the factorisation's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendSpec {
    /// Item ids (stock codes), the stable vocabulary: item `i`'s factor is row `i`.
    pub items: Vec<String>,
    /// Factor dimension `k`.
    pub factors: u16,
    /// Confidence per purchase: `c = 1 + alpha * invoices`.
    pub alpha: f32,
    /// Regularisation of the customer factors solved locally.
    pub user_l2: f32,
    /// Seed of the shared initial item factors `Y0`.
    pub seed: u64,
}

/// The JSON form: the spec's fields with `"family": "recommend"`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecJson {
    family: String,
    items: Vec<String>,
    factors: u16,
    alpha: f32,
    user_l2: f32,
    seed: u64,
}

impl RecommendSpec {
    /// Validates and builds a spec: 2 to [`MAX_ITEMS`] unique item ids of 1 to 64 bytes without control
    /// characters, 1 to 256 factors, `alpha` in [0, 10000], `user_l2` in (0, 10000].
    pub fn new(
        items: Vec<String>,
        factors: u16,
        alpha: f32,
        user_l2: f32,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let bad = |m: String| Err(ModelError::InvalidSpec(m));
        if !(2..=MAX_ITEMS).contains(&items.len()) {
            return bad(format!("{} items; a recommender needs 2 to {MAX_ITEMS}", items.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for it in &items {
            if it.is_empty() || it.len() > MAX_ITEM_BYTES || it.chars().any(char::is_control) {
                return bad(format!(
                    "item {it:?} must be 1 to {MAX_ITEM_BYTES} bytes without control characters"
                ));
            }
            if !seen.insert(it.as_str()) {
                return bad(format!("item {it:?} appears twice"));
            }
        }
        if !(1..=256).contains(&factors) {
            return bad(format!("factors {factors} must be 1 to 256"));
        }
        if items.len() * usize::from(factors) > MAX_NUM_PARAMS {
            return bad(format!(
                "{} items x {factors} factors exceeds {MAX_NUM_PARAMS} parameters",
                items.len()
            ));
        }
        if !(alpha.is_finite() && (0.0..=1e4).contains(&alpha)) {
            return bad(format!("alpha {alpha} must be in [0, 10000]"));
        }
        if !(user_l2.is_finite() && user_l2 > 0.0 && user_l2 <= 1e4) {
            return bad(format!("user_l2 {user_l2} must be in (0, 10000]"));
        }
        Ok(Self { items, factors, alpha, user_l2, seed })
    }

    /// A spec with this crate's tuned defaults for the given catalogue (see
    /// `tests/online_retail_federated_simulation.rs`).
    pub fn with_defaults(items: Vec<String>) -> Result<Self, ModelError> {
        Self::new(items, 32, 10.0, 30.0, 42)
    }

    /// Number of `f32` parameters: `items * factors`.
    pub fn num_params(&self) -> usize {
        self.items.len() * usize::from(self.factors)
    }

    /// The JSON form carried in job specs and model files: the spec with `"family": "recommend"`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }

    fn to_value(&self) -> serde_json::Value {
        // Serialising plain strings and numbers cannot fail.
        let j = SpecJson {
            family: "recommend".into(),
            items: self.items.clone(),
            factors: self.factors,
            alpha: self.alpha,
            user_l2: self.user_l2,
            seed: self.seed,
        };
        serde_json::to_value(j).unwrap_or_default()
    }

    /// Parses and validates the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(ModelError::InvalidSpec(format!(
                "spec of {} bytes exceeds {MAX_SPEC_BYTES}",
                bytes.len()
            )));
        }
        let j: SpecJson = serde_json::from_slice(bytes)
            .map_err(|e| ModelError::InvalidSpec(format!("not a recommend spec: {e}")))?;
        Self::from_spec_json(j)
    }

    fn from_spec_json(j: SpecJson) -> Result<Self, ModelError> {
        if j.family != "recommend" {
            return Err(ModelError::WrongFamily { expected: "recommend", found: j.family });
        }
        Self::new(j.items, j.factors, j.alpha, j.user_l2, j.seed)
    }

    /// Item id to index.
    pub fn item_index(&self) -> HashMap<&str, u32> {
        self.items.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect()
    }

    /// The initial item factors `Y0`, drawn from `seed`; the model's factors are `Y0 + params`.
    pub(crate) fn initial_factors(&self) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        (0..self.num_params())
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut rng);
                INIT_STD * z
            })
            .collect()
    }

    pub(crate) fn k(&self) -> usize {
        usize::from(self.factors)
    }
}

/// Hyper-parameters of local training for the recommender: five full-batch gradient steps on the item
/// factors per round (`batch_size` is customers per step; 65,536 covers any institution here) at
/// learning rate 2, item regularisation `l2` 0.03. Measured on Online Retail by
/// `tests/online_retail_federated_simulation.rs` together with the spec defaults of
/// [`RecommendSpec::with_defaults`] (chosen by a grid over factors, alpha, user_l2 and l2 with
/// centralized ALS).
pub fn default_train_params() -> TrainParams {
    TrainParams { local_epochs: 5, learning_rate: 2.0, batch_size: 65_536, l2: 0.03, seed: 42 }
}

/// Server learning rate for recommend jobs.
pub const SERVER_LEARNING_RATE: f32 = 1.0;

/// Server momentum for recommend jobs: none. Measured: with intent's 0.9 the federated HR@10 swung
/// between 0.032 and 0.048 from round to round (the item factors overshoot); plain averaging rises
/// steadily and levels off within about 10 rounds.
pub const SERVER_MOMENTUM: f32 = 0.0;

/// Values the institution computed from its own data, stored in the model file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendCalibration {
    /// The institution's most popular items, most popular first: a cold-start customer gets these.
    pub popular: Vec<PopularItem>,
}

/// A recommended item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Item id (stock code).
    pub item: String,
    /// Predicted preference (`x_u . y_i`), or for a cold start the item's buyers at the institution.
    pub score: f32,
}

/// The answer to a recommendation request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendations {
    /// Best first; never an item of the history.
    pub items: Vec<Recommendation>,
    /// True when the history was empty and the institution's popular items were returned.
    pub cold_start: bool,
}

/// A trained (or initial) recommender.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendModel {
    /// Its spec.
    pub spec: RecommendSpec,
    /// Flat parameters (the item factors' offset from `Y0`), `spec.num_params()` long.
    pub params: Vec<f32>,
    /// Popular items for cold starts.
    pub calibration: RecommendCalibration,
    /// `Y0 + params`, items x factors, row-major.
    factors: Vec<f32>,
    /// `Y^T Y`, k x k.
    gram: Vec<f64>,
    index: HashMap<String, u32>,
}

impl RecommendModel {
    /// Wraps parameters after checking their length and that every one is finite.
    pub fn from_params(spec: RecommendSpec, params: Vec<f32>) -> Result<Self, ModelError> {
        if params.len() != spec.num_params() {
            return Err(ModelError::InvalidParams(format!(
                "{} parameters, the spec needs {}",
                params.len(),
                spec.num_params()
            )));
        }
        if let Some(i) = params.iter().position(|p| !p.is_finite()) {
            return Err(ModelError::InvalidParams(format!("parameter {i} is {}", params[i])));
        }
        let mut factors = spec.initial_factors();
        factors.iter_mut().zip(&params).for_each(|(f, p)| *f += p);
        let gram = linalg::gram(&factors, spec.k());
        let index = spec.items.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
        Ok(Self { spec, params, calibration: RecommendCalibration::default(), factors, gram, index })
    }

    /// The initial model (zero parameters).
    pub fn initial(spec: RecommendSpec) -> Self {
        let n = spec.num_params();
        // Zeros are finite and of the right length.
        Self::from_params(spec, vec![0.0; n]).unwrap_or_else(|_| unreachable!())
    }

    /// Index of each history item; an unknown one is an error naming it.
    pub fn lookup<S: AsRef<str>>(&self, history: &[S]) -> Result<Vec<u32>, ModelError> {
        if history.len() > MAX_HISTORY {
            return Err(ModelError::InvalidInput(format!(
                "history of {} items exceeds the limit of {MAX_HISTORY}",
                history.len()
            )));
        }
        history
            .iter()
            .map(|s| {
                let s = s.as_ref().trim();
                self.index.get(s).copied().ok_or_else(|| ModelError::UnknownItem(s.to_string()))
            })
            .collect()
    }

    /// Recommends `top_k` items (1 to [`MAX_TOP_K`]) to a customer whose purchases so far are `history`
    /// (item ids, repeats counting as more purchases). An empty history gets the institution's popular
    /// items; an unknown item is an error.
    pub fn recommend<S: AsRef<str>>(
        &self,
        history: &[S],
        top_k: usize,
    ) -> Result<Recommendations, ModelError> {
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(ModelError::InvalidInput(format!("top_k {top_k} must be 1 to {MAX_TOP_K}")));
        }
        let idx = self.lookup(history)?;
        if idx.is_empty() {
            let items = self
                .calibration
                .popular
                .iter()
                .take(top_k)
                .map(|p| Recommendation { item: p.item.clone(), score: p.buyers as f32 })
                .collect();
            return Ok(Recommendations { items, cold_start: true });
        }
        let scores = self.scores(&counts(&idx))?;
        let top = eval::top_k(&scores, &idx, top_k);
        let items = top
            .into_iter()
            .filter_map(|i| {
                let item = self.spec.items.get(i as usize)?.clone();
                Some(Recommendation { item, score: scores.get(i as usize).copied()? })
            })
            .collect();
        Ok(Recommendations { items, cold_start: false })
    }

    /// Solves the customer factor for `history` (item index, purchases) and scores every item.
    pub(crate) fn scores(&self, history: &[(u32, f32)]) -> Result<Vec<f32>, ModelError> {
        let k = self.spec.k();
        let x = linalg::solve_user(&self.factors, &self.gram, k, history, &self.spec)?;
        Ok(self.factors.chunks_exact(k).map(|y| y.iter().zip(&x).map(|(a, b)| a * b).sum()).collect())
    }
}

/// Item indices with repeats to (index, count) pairs, sorted by index.
pub(crate) fn counts(idx: &[u32]) -> Vec<(u32, f32)> {
    let mut sorted = idx.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u32, f32)> = Vec::new();
    for i in sorted {
        match out.last_mut() {
            Some((j, c)) if *j == i => *c += 1.0,
            _ => out.push((i, 1.0)),
        }
    }
    out
}

/// The institution's `n` most popular items by distinct buyers (ties to the lower index), for cold starts
/// and the most-popular baseline.
pub fn popular_items(spec: &RecommendSpec, data: &Interactions, n: usize) -> Vec<PopularItem> {
    eval::popularity_order(spec, data)
        .into_iter()
        .take(n)
        .filter_map(|(i, buyers)| Some(PopularItem { item: spec.items.get(i as usize)?.clone(), buyers }))
        .collect()
}

impl FileModel for RecommendModel {
    const FAMILY: &'static str = "recommend";

    fn spec_json(&self) -> serde_json::Value {
        self.spec.to_value()
    }

    fn params(&self) -> &[f32] {
        &self.params
    }

    fn calibration(&self) -> serde_json::Value {
        serde_json::to_value(&self.calibration).unwrap_or_default()
    }

    fn from_parts(
        spec: serde_json::Value,
        params: Vec<f32>,
        calibration: serde_json::Value,
    ) -> Result<Self, String> {
        let j: SpecJson = serde_json::from_value(spec).map_err(|e| format!("recommend spec: {e}"))?;
        let spec = RecommendSpec::from_spec_json(j).map_err(|e| e.to_string())?;
        let cal: RecommendCalibration =
            serde_json::from_value(calibration).map_err(|e| format!("recommend calibration: {e}"))?;
        let mut m = RecommendModel::from_params(spec, params).map_err(|e| e.to_string())?;
        if let Some(p) = cal.popular.iter().find(|p| !m.index.contains_key(&p.item)) {
            return Err(format!("popular item {:?} is not in the catalogue", p.item));
        }
        m.calibration = cal;
        Ok(m)
    }
}

#[cfg(test)]
mod tests;
