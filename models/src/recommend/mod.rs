//! The recommender: what a customer will buy next, from consortium-wide purchase statistics gathered
//! under secure aggregation, the products' descriptions, and the customer's own recent purchases.
//!
//! # Design
//!
//! A recommendation is made for a moment, `now` (the day of the purchase being predicted; in service,
//! today, or the last day the model knows if that is earlier). Each catalogue item `j` gets
//!
//! `score(j) = w_pop * recent(j) + w_content * content(j) + w_cooc * cooc(j)`,
//!
//! each term scaled so that its best item scores 1:
//! - `recent(j)`: the customers who first bought `j` in the `recent_days` days before `now` (not on
//!   `now` itself): what is selling now. Purchases after `now` never count.
//! - `content(j)`: the customer's history items' description similarity to `j` (TF-IDF over description
//!   words, cosine), each history item weighted by `2^(-age / half_life_days)`: a customer who just
//!   bought a red lunch bag is offered the other lunch bags.
//! - `cooc(j)`: how many customers bought `j` together with each history item (the same recency
//!   weights): "customers who bought this also bought".
//!
//! The weights, `recent_days` and `half_life_days` are the spec's [`Scoring`], chosen on a validation
//! split carved from the training data (see `tests/online_retail_federated_simulation.rs`).
//!
//! **What is learned federated** is two tables of sums, the model's parameters:
//! - per item and day of the spec's window (`first_day`, `days`): customers who first bought the item
//!   that day (`items * days` numbers);
//! - per pair of items: customers who bought both (`items * (items - 1) / 2` numbers; beyond
//!   [`MAX_PAIR_SLOTS`], pairs share hashed slots).
//!
//! A participant counts them over its customers and divides by its number of customers; the
//! coordinator's example-weighted average of those is the pooled count divided by the pooled number of
//! customers, which is all the scores need (each term is scaled by its maximum). Under secure
//! aggregation the coordinator sees only that average. One round computes it; later rounds recompute it
//! from the participants present, which is why a recommend job must average plainly (server learning
//! rate 1, no momentum; the coordinator refuses anything else). The centralized comparison is the same
//! counting on pooled data, so federated and centralized differ only by the secure-aggregation rounding,
//! as long as no institution has more customers than the job's `secagg_weight_cap` (default 100,000):
//! above it, an institution counts as that many.
//!
//! Why sums rather than factors: an earlier version trained implicit-feedback matrix factorisation.
//! Trained centrally on the validation split it reached HR@10 0.040, below recent popularity's 0.043,
//! and adding it to the description term did not help. The price is size: the pair table grows with the
//! square of the catalogue (4.1 million numbers for Online Retail's 2,862 products), uploaded once per
//! round; from 2,897 products on, pairs share the [`MAX_PAIR_SLOTS`] slots, and the co-purchase term
//! grows noisier with the catalogue.
//!
//! Cost per request: the popularity term reads every item once; the description and co-purchase terms
//! read one row per history item, for the [`MAX_SCORED_HISTORY`] most recent ones at most, and leave
//! out those older than ten half-lives.
//!
//! What the tables show: the pooled counts are not noised, like every recommend job's model
//! (differential privacy is offered for intent only). A pair of products that one customer in the whole
//! consortium bought together shows as a count of one; whoever receives the model learns that someone
//! did, not who.
//!
//! Cold start: a customer without history gets the institution's most popular items, which the
//! participant computes from its own data and stores in the model file's calibration
//! ([`popular_items`]). Data preparation is [`data`]'s; finding the items a message names, [`mentions`]'.

pub mod data;
pub mod eval;
pub mod mentions;
pub mod split;
mod stats;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::file::FileModel;
use crate::spec::MAX_NUM_PARAMS;
use crate::train::TrainParams;
use crate::ModelError;

pub use data::{day_number, day_string, encode, Interactions, PopularItem};
pub use eval::{evaluate, evaluate_time_sliced, Ranked, RankingMetrics};
pub use mentions::ItemMentions;
pub use split::{leave_last_out, partition_by_country, HeldOut, Institution, LeaveLastOut};
pub use stats::train_local;

/// Largest spec JSON accepted (the catalogue and its descriptions are in it).
const MAX_SPEC_BYTES: usize = 32 << 20;
/// Most items a catalogue may hold.
pub const MAX_ITEMS: usize = 500_000;
/// Longest item id, in bytes.
pub const MAX_ITEM_BYTES: usize = 64;
/// Longest item description, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most days the popularity window may cover (ten years).
pub const MAX_DAYS: u32 = 3660;
/// Most slots of the pair table: a catalogue with more pairs shares slots between pairs.
pub const MAX_PAIR_SLOTS: usize = 1 << 22;
/// Most items a request's history may list.
pub const MAX_HISTORY: usize = 10_000;
/// Most recommendations a request may ask for.
pub const MAX_TOP_K: usize = 100;
/// Largest parameter magnitude a model may hold: shares lie in [0, 1], with room for rounding.
const MAX_SHARE: f32 = 2.0;

/// How the three terms combine (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    /// Days before `now` whose first purchases make an item's recent popularity.
    pub recent_days: u32,
    /// Age, in days, at which a history item counts half.
    pub half_life_days: f64,
    /// Weight of recent popularity.
    pub popularity: f64,
    /// Weight of description similarity to the history.
    pub content: f64,
    /// Weight of co-purchases with the history.
    pub cooccurrence: f64,
}

impl Default for Scoring {
    /// The values chosen on the validation split (`tests/online_retail_federated_simulation.rs` prints
    /// the grid and checks these are its best).
    fn default() -> Self {
        Self { recent_days: 90, half_life_days: 30.0, popularity: 1.0, content: 1.0, cooccurrence: 0.3 }
    }
}

impl Scoring {
    /// Most popular over the whole window before `now`: the plain baseline.
    pub fn popular(spec: &RecommendSpec) -> Self {
        Self { recent_days: spec.days, half_life_days: 1.0, popularity: 1.0, content: 0.0, cooccurrence: 0.0 }
    }

    /// Most popular in the `days` before `now`: the time-aware baseline.
    pub fn popular_recent(days: u32) -> Self {
        Self { recent_days: days, half_life_days: 1.0, popularity: 1.0, content: 0.0, cooccurrence: 0.0 }
    }

    /// Items most often bought with the history, all of it alike (ties to the recently popular): the
    /// item-to-item baseline.
    pub fn item_to_item(spec: &RecommendSpec) -> Self {
        Self {
            recent_days: spec.days,
            half_life_days: 1e6,
            popularity: 1e-4,
            content: 0.0,
            cooccurrence: 1.0,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_DAYS).contains(&self.recent_days) {
            return Err(format!("recent_days {} must be 1 to {MAX_DAYS}", self.recent_days));
        }
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0 && self.half_life_days <= 1e6) {
            return Err(format!("half_life_days {} must be in (0, 1000000]", self.half_life_days));
        }
        let w =
            [("popularity", self.popularity), ("content", self.content), ("cooccurrence", self.cooccurrence)];
        for (name, v) in w {
            if !(v.is_finite() && (0.0..=1000.0).contains(&v)) {
                return Err(format!("weight {name} {v} must be in [0, 1000]"));
            }
        }
        if w.iter().all(|(_, v)| *v == 0.0) {
            return Err("at least one scoring weight must be positive".into());
        }
        Ok(())
    }
}

/// What a recommender is: its item catalogue, the days its popularity table covers, and its scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendSpec {
    /// Item ids (stock codes), the stable vocabulary.
    pub items: Vec<String>,
    /// The items' descriptions (same order; empty when unknown), or none at all.
    pub names: Vec<String>,
    /// First day of the popularity window (see [`day_number`]).
    pub first_day: i32,
    /// Days in the window.
    pub days: u32,
    /// How scores are made.
    pub scoring: Scoring,
}

/// The JSON form: the spec's fields with `"family": "recommend"` and the first day as `YYYY-MM-DD`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecJson {
    family: String,
    items: Vec<String>,
    #[serde(default)]
    names: Vec<String>,
    first_day: String,
    days: u32,
    scoring: Scoring,
}

impl RecommendSpec {
    /// Validates and builds a spec: 2 to [`MAX_ITEMS`] unique item ids of 1 to 64 bytes without control
    /// characters; no names or one per item (at most [`MAX_NAME_BYTES`], no control characters); 1 to
    /// [`MAX_DAYS`] days; a valid [`Scoring`].
    pub fn new(
        items: Vec<String>,
        names: Vec<String>,
        first_day: i32,
        days: u32,
        scoring: Scoring,
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
        if !names.is_empty() && names.len() != items.len() {
            return bad(format!(
                "{} names for {} items: give one per item or none",
                names.len(),
                items.len()
            ));
        }
        if let Some(n) = names.iter().find(|n| n.len() > MAX_NAME_BYTES || n.chars().any(char::is_control)) {
            return bad(format!(
                "name {:?} must be at most {MAX_NAME_BYTES} bytes without control characters",
                n.chars().take(80).collect::<String>()
            ));
        }
        if !(1..=MAX_DAYS).contains(&days) {
            return bad(format!("days {days} must be 1 to {MAX_DAYS}"));
        }
        if !(0..=day_number("9999-01-01").unwrap_or(i32::MAX)).contains(&first_day) {
            return bad(format!("first_day {first_day} is before 1970 or after 9999"));
        }
        scoring.validate().map_err(ModelError::InvalidSpec)?;
        let spec = Self { items, names, first_day, days, scoring };
        if spec.num_params() > MAX_NUM_PARAMS {
            return bad(format!(
                "{} items x {days} days and their pairs exceed {MAX_NUM_PARAMS} parameters",
                spec.items.len()
            ));
        }
        Ok(spec)
    }

    /// A spec with the tuned scoring ([`Scoring::default`]).
    pub fn with_defaults(
        items: Vec<String>,
        names: Vec<String>,
        first_day: i32,
        days: u32,
    ) -> Result<Self, ModelError> {
        Self::new(items, names, first_day, days, Scoring::default())
    }

    /// The last day of the window.
    pub fn last_day(&self) -> i32 {
        self.first_day.saturating_add(self.days as i32 - 1)
    }

    /// Whether every pair of items has a slot of its own (the catalogue's pairs fit [`MAX_PAIR_SLOTS`]).
    pub(crate) fn pairs_exact(&self) -> bool {
        let n = self.items.len();
        n * (n - 1) / 2 <= MAX_PAIR_SLOTS
    }

    /// Slots of the pair table: one per pair of items, up to [`MAX_PAIR_SLOTS`].
    pub fn pair_slots(&self) -> usize {
        let n = self.items.len();
        (n * (n - 1) / 2).min(MAX_PAIR_SLOTS)
    }

    /// Number of `f32` parameters: the daily table then the pair table.
    pub fn num_params(&self) -> usize {
        self.items.len() * self.days as usize + self.pair_slots()
    }

    /// The pair table's slot of items `a != b` (either order).
    pub(crate) fn pair_slot(&self, a: u32, b: u32) -> usize {
        debug_assert!(a != b, "an item has no pair with itself");
        let (lo, hi) = if a < b { (u64::from(a), u64::from(b)) } else { (u64::from(b), u64::from(a)) };
        let exact = hi * hi.saturating_sub(1) / 2 + lo;
        if self.pairs_exact() {
            return exact as usize;
        }
        // SplitMix64's finaliser: pairs spread evenly over the shared slots.
        let mut z = exact.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % MAX_PAIR_SLOTS as u64) as usize
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
            names: self.names.clone(),
            first_day: day_string(self.first_day),
            days: self.days,
            scoring: self.scoring,
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
        let first_day = day_number(&j.first_day).filter(|_| j.first_day.len() == 10).ok_or_else(|| {
            ModelError::InvalidSpec(format!("first_day {:?} is not YYYY-MM-DD", j.first_day))
        })?;
        Self::new(j.items, j.names, first_day, j.days, j.scoring)
    }

    /// Item id to index.
    pub fn item_index(&self) -> HashMap<&str, u32> {
        self.items.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect()
    }
}

/// Hyper-parameters of local training: none matter (a participant counts), but a job carries them.
pub fn default_train_params() -> TrainParams {
    TrainParams { local_epochs: 1, learning_rate: 1.0, batch_size: 65_536, l2: 0.0, seed: 42 }
}

/// Rounds of a recommend job: the first computes the statistics, the second recomputes them (with any
/// participant the first missed).
pub const DEFAULT_ROUNDS: u64 = 2;

/// Server learning rate for recommend jobs: the average replaces the model.
pub const SERVER_LEARNING_RATE: f32 = 1.0;

/// Server momentum for recommend jobs: none (the average is the answer, not a step towards it).
pub const SERVER_MOMENTUM: f32 = 0.0;

/// Values the institution computed from its own data, stored in the model file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendCalibration {
    /// The institution's most popular items, most popular first: a cold-start customer gets these.
    pub popular: Vec<PopularItem>,
}

/// An item the customer bought or looked at, and when (`None`: now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Item id.
    pub item: String,
    /// Day (see [`day_number`]).
    pub day: Option<i32>,
}

impl Seen {
    /// An item seen now.
    pub fn now(item: impl Into<String>) -> Self {
        Self { item: item.into(), day: None }
    }
}

/// A recommended item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Item id (stock code).
    pub item: String,
    /// The item's score (see the module doc), or for a cold start its buyers at the institution.
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

/// Description words indexed for similarity: each item's unit-length TF-IDF vector, and per word the
/// items holding it.
#[derive(Debug, Clone, PartialEq, Default)]
struct Content {
    vectors: Vec<Vec<(u32, f32)>>,
    postings: Vec<Vec<(u32, f32)>>,
}

impl Content {
    fn new(names: &[String]) -> Self {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let docs: Vec<Vec<u32>> = names
            .iter()
            .map(|n| {
                mentions::words(n)
                    .into_iter()
                    .map(|w| {
                        let next = vocab.len() as u32;
                        *vocab.entry(w).or_insert(next)
                    })
                    .collect()
            })
            .collect();
        let mut df = vec![0u32; vocab.len()];
        docs.iter().flatten().for_each(|&w| df[w as usize] += 1);
        let n = names.len().max(1) as f32;
        let mut postings: Vec<Vec<(u32, f32)>> = vec![Vec::new(); vocab.len()];
        let vectors = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut v: Vec<(u32, f32)> =
                    d.iter().map(|&w| (w, (n / df[w as usize] as f32).ln())).collect();
                let norm = v.iter().map(|(_, x)| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|(_, x)| *x /= norm);
                }
                for &(w, x) in &v {
                    postings[w as usize].push((i as u32, x));
                }
                v
            })
            .collect();
        Self { vectors, postings }
    }

    /// Adds `weight` times item `h`'s similarity to every other item into `acc`.
    fn add_similar(&self, h: u32, weight: f32, acc: &mut [f32]) {
        let Some(v) = self.vectors.get(h as usize) else { return };
        for &(w, x) in v {
            for &(j, y) in self.postings.get(w as usize).map_or(&[][..], Vec::as_slice) {
                if j != h {
                    if let Some(a) = acc.get_mut(j as usize) {
                        *a += weight * x * y;
                    }
                }
            }
        }
    }
}

/// A trained (or initial) recommender.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendModel {
    /// Its spec.
    pub spec: RecommendSpec,
    /// Flat parameters: the daily table then the pair table (see the module doc).
    pub params: Vec<f32>,
    /// Popular items for cold starts.
    pub calibration: RecommendCalibration,
    /// Per item, running sums of the daily table: `days + 1` numbers, the first 0.
    running: Vec<f32>,
    content: Content,
    index: HashMap<String, u32>,
}

/// Scales `v` so that its largest value is 1 (unchanged when nothing is positive).
fn scaled(v: &mut [f32]) {
    let max = v.iter().copied().fold(0.0f32, f32::max);
    if max > 0.0 {
        v.iter_mut().for_each(|x| *x /= max);
    }
}

impl RecommendModel {
    /// Wraps parameters after checking their length and that every one is finite.
    pub fn from_params(spec: RecommendSpec, params: Vec<f32>) -> Result<Self, ModelError> {
        crate::check_len(&params, spec.num_params())?;
        if let Some(i) = params.iter().position(|p| !p.is_finite()) {
            return Err(ModelError::InvalidParams(format!("parameter {i} is {}", params[i])));
        }
        // Shares of customers lie in [0, 1]; secure aggregation's rounding moves them by far less.
        if let Some(i) = params.iter().position(|p| p.abs() > MAX_SHARE) {
            return Err(ModelError::InvalidParams(format!(
                "parameter {i} is {}; a recommender's parameters are shares of customers, in [0, 1]",
                params[i]
            )));
        }
        let days = spec.days as usize;
        let mut running = Vec::with_capacity(spec.items.len() * (days + 1));
        for row in params.chunks_exact(days).take(spec.items.len()) {
            let mut acc = 0.0f64;
            running.push(0.0);
            for &v in row {
                acc += f64::from(v);
                running.push(acc as f32);
            }
        }
        let content = Content::new(&spec.names);
        let index = spec.items.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
        Ok(Self { spec, params, calibration: RecommendCalibration::default(), running, content, index })
    }

    /// The statistics of `data` counted in one place: what one institution sends, or the pooled data's
    /// (the centralized comparison).
    pub fn counted(spec: RecommendSpec, data: &Interactions) -> Result<Self, ModelError> {
        let mut params = vec![0.0; spec.num_params()];
        train_local(&spec, &mut params, data, &default_train_params())?;
        Self::from_params(spec, params)
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

    /// Today, or the window's last day if the model knows nothing that recent.
    pub fn today(&self) -> i32 {
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        i32::try_from(secs / 86_400).unwrap_or(i32::MAX).min(self.spec.last_day() + 1)
    }

    /// Recommends `top_k` items (1 to [`MAX_TOP_K`]) to a customer who bought or looked at `history`,
    /// as of [`RecommendModel::today`]. An empty history gets the institution's popular items; an
    /// unknown item is an error.
    pub fn recommend(&self, history: &[Seen], top_k: usize) -> Result<Recommendations, ModelError> {
        self.recommend_at(history, self.today(), top_k)
    }

    /// [`RecommendModel::recommend`] as of day `now`.
    pub fn recommend_at(
        &self,
        history: &[Seen],
        now: i32,
        top_k: usize,
    ) -> Result<Recommendations, ModelError> {
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(ModelError::InvalidInput(format!("top_k {top_k} must be 1 to {MAX_TOP_K}")));
        }
        let idx = self.lookup(&history.iter().map(|s| s.item.as_str()).collect::<Vec<_>>())?;
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
        let dated: Vec<(u32, i32)> =
            idx.iter().zip(history).map(|(&i, s)| (i, s.day.unwrap_or(now))).collect();
        let scores = self.scores(&self.spec.scoring, &dated, now);
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

    /// Every item's score under `scoring` for a customer whose `history` is (item, day), as of day
    /// `now` (see the module doc). A history item from after `now` counts as bought `now`.
    pub fn scores(&self, scoring: &Scoring, history: &[(u32, i32)], now: i32) -> Vec<f32> {
        self.scores_with_pairs(scoring, history, now, self.pairs())
    }

    /// The pair table: the parameters after the daily table.
    pub(crate) fn pairs(&self) -> &[f32] {
        self.params.get(self.spec.items.len() * self.spec.days as usize..).unwrap_or(&[])
    }

    /// [`RecommendModel::scores`] with another pair table (the evaluation's time-sliced one).
    pub(crate) fn scores_with_pairs(
        &self,
        scoring: &Scoring,
        history: &[(u32, i32)],
        now: i32,
        pairs: &[f32],
    ) -> Vec<f32> {
        let n = self.spec.items.len();
        let mut total = vec![0.0f32; n];
        if scoring.popularity > 0.0 {
            let days = self.spec.days as i64;
            let end = (i64::from(now) - i64::from(self.spec.first_day)).clamp(0, days) as usize;
            let start = end.saturating_sub(scoring.recent_days as usize);
            let mut recent: Vec<f32> = self
                .running
                .chunks_exact(days as usize + 1)
                .map(|r| r.get(end).copied().unwrap_or(0.0) - r.get(start).copied().unwrap_or(0.0))
                .collect();
            scaled(&mut recent);
            total.iter_mut().zip(&recent).for_each(|(t, r)| *t += scoring.popularity as f32 * r);
        }
        let weights = history_weights(scoring, history, now);
        if scoring.content > 0.0 {
            let mut content = vec![0.0f32; n];
            for &(h, w) in &weights {
                self.content.add_similar(h, w, &mut content);
            }
            scaled(&mut content);
            total.iter_mut().zip(&content).for_each(|(t, c)| *t += scoring.content as f32 * c);
        }
        if scoring.cooccurrence > 0.0 {
            let mut cooc = vec![0.0f32; n];
            for &(h, w) in &weights {
                self.add_pairs(h, w, pairs, &mut cooc);
            }
            scaled(&mut cooc);
            total.iter_mut().zip(&cooc).for_each(|(t, c)| *t += scoring.cooccurrence as f32 * c);
        }
        total
    }

    /// Adds `w` times item `h`'s row of the pair table into `acc`.
    fn add_pairs(&self, h: u32, w: f32, pairs: &[f32], acc: &mut [f32]) {
        let (n, hu) = (self.spec.items.len(), h as usize);
        if hu >= n {
            return;
        }
        if self.spec.pairs_exact() {
            // One slot per pair: h's pairs with lower items are contiguous, with higher ones strided.
            let base = hu * hu.saturating_sub(1) / 2;
            for (a, p) in acc.iter_mut().zip(pairs.get(base..base + hu).unwrap_or(&[])) {
                *a += w * p;
            }
            for (j, a) in acc.iter_mut().enumerate().skip(hu + 1) {
                *a += w * pairs.get(j * (j - 1) / 2 + hu).copied().unwrap_or(0.0);
            }
        } else {
            for (j, a) in acc.iter_mut().enumerate() {
                if j != hu {
                    *a += w * pairs.get(self.spec.pair_slot(h, j as u32)).copied().unwrap_or(0.0);
                }
            }
        }
    }
}

/// Most history items the description and co-purchase terms look at: the most recent ones.
pub const MAX_SCORED_HISTORY: usize = 256;
/// A history item whose recency weight is below this (ten half-lives) is left out.
const MIN_WEIGHT: f32 = 1e-3;

/// Each history item once, at its latest day, with its recency weight; the [`MAX_SCORED_HISTORY`]
/// heaviest, none below [`MIN_WEIGHT`], heaviest first (ties to the lower index).
fn history_weights(scoring: &Scoring, history: &[(u32, i32)], now: i32) -> Vec<(u32, f32)> {
    let mut latest: HashMap<u32, i32> = HashMap::new();
    for &(i, d) in history {
        let e = latest.entry(i).or_insert(d);
        *e = (*e).max(d);
    }
    let mut weights: Vec<(u32, f32)> = latest
        .into_iter()
        .map(|(i, d)| {
            let age = (i64::from(now) - i64::from(d)).max(0) as f64;
            (i, 0.5f64.powf(age / scoring.half_life_days) as f32)
        })
        .filter(|&(_, w)| w >= MIN_WEIGHT)
        .collect();
    weights.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    weights.truncate(MAX_SCORED_HISTORY);
    weights
}

/// The institution's `n` most popular items by distinct buyers (ties to the lower index), for cold
/// starts.
pub fn popular_items(spec: &RecommendSpec, data: &Interactions, n: usize) -> Vec<PopularItem> {
    let mut buyers = vec![0u32; spec.items.len()];
    for row in &data.rows {
        for &(i, _, _) in row {
            if let Some(b) = buyers.get_mut(i as usize) {
                *b += 1;
            }
        }
    }
    let mut order: Vec<(usize, u32)> = buyers.into_iter().enumerate().filter(|(_, b)| *b > 0).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    order
        .into_iter()
        .take(n)
        .filter_map(|(i, buyers)| Some(PopularItem { item: spec.items.get(i)?.clone(), buyers }))
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
