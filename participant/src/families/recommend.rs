//! Recommendations: purchase transactions from the `transactions` table, cleaned as the models crate
//! cleans them (rows without a customer dropped, cancellations netted against the customer's purchases
//! of the item, postage and free lines dropped) every time they are read, so a cancellation imported
//! after its purchase still cancels it.
//!
//! There is no holdout: what a participant calibrates is its popular items (what a cold-start customer
//! gets), counted over all its customers. The served `Recommender` also keeps this institution's
//! customers' histories, so an app may send just a customer id, and its product descriptions, so a
//! recommendation can start from the products a conversation names. Neither leaves the participant:
//! the model file holds only the consortium's summed statistics and the popular items.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use hearth_models::recommend::data::{clean, descriptions, CleaningReport, Purchase};
use hearth_models::recommend::{self, popular_items, Interactions, ItemMentions, MAX_TOP_K};
use hearth_models::{LocalData, RecommendModel, RecommendSpec};

use hearth_inference::Recommender;

use crate::families::Tuned;
use crate::store::Store;

/// The institution's cleaned purchases and its products' descriptions.
#[derive(Debug)]
pub(crate) struct Retail {
    pub(crate) purchases: Vec<Purchase>,
    /// Item id to its most frequent non-empty description in the transactions.
    pub(crate) descriptions: BTreeMap<String, String>,
    pub(crate) cleaning: CleaningReport,
}

/// Reads and cleans the stored transactions.
pub(crate) fn read(store: &Store) -> anyhow::Result<Retail> {
    let rows = store.transactions().context("reading local transactions")?;
    let (purchases, cleaning) = clean(&rows);
    let descriptions = descriptions(&rows);
    Ok(Retail { purchases, descriptions, cleaning })
}

/// Every customer's purchases, encoded against the job's catalogue (purchases of items outside it are
/// skipped and counted by the models crate).
pub(crate) fn encode(spec: &RecommendSpec, retail: &Retail) -> LocalData {
    LocalData::Recommend(recommend::encode(spec, &retail.purchases))
}

/// Wraps `model` with this institution's customers and descriptions.
pub(crate) fn serving(model: RecommendModel, retail: &Retail) -> Recommender {
    let customers = recommend::encode(&model.spec, &retail.purchases);
    serving_with(model, customers, retail)
}

fn serving_with(model: RecommendModel, customers: Interactions, retail: &Retail) -> Recommender {
    let index = model.spec.item_index();
    let descriptions: HashMap<String, String> = retail
        .descriptions
        .iter()
        .filter(|(item, _)| index.contains_key(item.as_str()))
        .map(|(i, d)| (i.clone(), d.clone()))
        .collect();
    let mentions = ItemMentions::new(descriptions.iter().map(|(i, d)| (i.clone(), d.clone())));
    Recommender::new(model, customers, mentions, descriptions)
}

/// Builds the served recommender and sets its popular items (the [`MAX_TOP_K`] items most customers
/// here bought).
pub(crate) fn calibrate(
    spec: RecommendSpec,
    params: Vec<f32>,
    retail: &Retail,
) -> anyhow::Result<Tuned<Recommender>> {
    let mut model = RecommendModel::from_params(spec, params)?;
    let customers = recommend::encode(&model.spec, &retail.purchases);
    model.calibration.popular = popular_items(&model.spec, &customers, MAX_TOP_K);
    let note = format!(
        "cold starts get the {} items most bought here, counted over {} local customers ({} transactions \
         cleaned: {} without a customer, {} cancellations netted)",
        model.calibration.popular.len(),
        customers.len(),
        retail.cleaning.rows,
        retail.cleaning.anonymous,
        retail.cleaning.cancellations
    );
    Ok(Tuned { model: serving_with(model, customers, retail), evaluation: BTreeMap::new(), note })
}
