//! Hearth models: everything about learning from customers' data, as pure functions over values.
//!
//! Three families share one shape: a spec (JSON) that fixes the size of a flat `f32` parameter vector,
//! local training from a participant's data ([`ModelSpec::train_local`]), evaluation, calibration on an
//! institution's own holdout, and one model file format. Start with [`intent`]; then:
//! - [`emotion`]: the multi-label emotion classifier (one sigmoid per label) and its anger escalation
//!   threshold, chosen for a target recall.
//! - [`recommend`]: next-purchase recommendations from recent popularity, description similarity and
//!   co-purchases, the statistics summed across institutions under secure aggregation, with its retail
//!   data preparation.
//! - [`features`]: hashed word and character n-grams; English and Chinese (CJK characters are tokens).
//! - `linear` (private): the linear model over features and the sparse mini-batch SGD loop that intent
//!   and emotion share; a family adds only its loss.
//! - [`train`]: training hyper-parameters, and local training of the intent classifier.
//! - [`dp`]: differentially private training of the intent classifier: one round is one DP-SGD step
//!   whose noise the participants add as discrete Gaussian shares under secure aggregation.
//! - [`eval`]: accuracy, macro-F1, in-scope accuracy and out-of-scope recall as the CLINC150 paper reports
//!   them; the out-of-scope threshold.
//! - [`mod@file`]: the model file format (version, family, dimensions, calibration, checksum), and
//!   [`card`]: the model card its metadata carries (data, rounds, privacy parameters).
//! - [`spec`]: model families and their sizes, as a job names them; the per-family round entry point.
//! - [`data`]: parsers for CLINC150 and for an institution's own CSV / JSON Lines files; request checks.
//! - [`split`]: the seeded non-IID Dirichlet split used to simulate institutions.
//! - [`baseline`]: a linfa Naive Bayes baseline, a sanity check for the classifier.
//!
//! This crate touches neither the network nor the file system: callers pass bytes and strings in. All of
//! it is CPU-bound; services call it from `spawn_blocking`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod calendar;
pub mod card;
pub mod cascade;
pub mod data;
pub mod dp;
pub mod emotion;
pub mod encoder;
pub mod eval;
pub mod features;
pub mod file;
pub mod intent;
mod linear;
pub mod recommend;
pub mod spec;
pub mod split;
pub mod train;

use serde::{Deserialize, Serialize};

pub use baseline::linfa_naive_bayes;
pub use card::{DataCard, ModelCard, PrivacyCard, TrainingCard, CARD_KEY};
pub use data::{
    check_text, detect_format, parse_clinc150, parse_labelled, text_from_utf8, Clinc150, ImportReport,
    InputFormat, RowError,
};
pub use dp::{
    clipped_gradient_sum, noise_share, ClippedSum, DpConfig, DpError, DpParams, DpPlan, DpServer, Grid,
    IntentDpPreset, PrivacyTarget, RoundShape, INTENT_DP_PRESET,
};
pub use emotion::{EmotionExample, EmotionModel, EmotionPrediction, EmotionSpec, Escalation};
pub use eval::{
    choose_oos_threshold, evaluate, evaluation_bins, evaluation_counts, metrics_from_counts, Confusion,
    Metrics, EVALUATION_TOTALS,
};
pub use features::{featurize, FeatureConfig, SparseVec};
pub use file::{
    decode_any_model_file, decode_file, decode_model_file, encode_file, encode_model_file, read_model_file,
    AnyModel, FileModel, RawModelFile,
};
pub use intent::{IntentModel, IntentSpec, Prediction};
pub use linear::Encoded;
pub use recommend::{RecommendModel, RecommendSpec, Recommendations};
pub use spec::{FederatedDefaults, LocalData, ModelSpec};
pub use split::{dirichlet_split, dirichlet_split_by, Split};
pub use train::{
    encode, mean_loss, train_local, EncodedSet, TrainParams, TrainStats, DEFAULT_ROUNDS,
    DEFAULT_SERVER_MOMENTUM,
};

/// The label that means "matches no known intent": such a query should go to a person.
pub const OOS_LABEL: &str = "oos";

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// What the customer wrote.
    pub text: String,
    /// Its intent label (`oos` for out of scope).
    pub label: String,
    /// Its sentence embedding, for encoder-tier models (`None` in the fast tier). Never serialised: a
    /// participant keeps embeddings sealed in its own store, beside the texts, and attaches them when a
    /// job needs them.
    #[serde(skip)]
    pub embedding: Option<std::sync::Arc<[f32]>>,
}

/// Errors of this crate.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A model spec is not acceptable (labels, dimensions, family).
    #[error("invalid model spec: {0}")]
    InvalidSpec(String),
    /// Parameters do not fit the spec, or are not finite.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// An example's label is not one of the model's labels.
    #[error("label {0:?} is not one of the model's labels")]
    UnknownLabel(String),
    /// Training parameters are out of range.
    #[error("invalid training parameters: {0}")]
    InvalidTrainParams(String),
    /// A dataset could not be parsed as a whole (individual bad rows go to [`ImportReport::errors`]).
    #[error("invalid dataset: {0}")]
    InvalidData(String),
    /// A split was asked for with impossible arguments.
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    /// A model file is not one this version can read.
    #[error("model file: {0}")]
    File(#[from] file::FileError),
    /// The linfa baseline failed.
    #[error("linfa baseline: {0}")]
    Baseline(String),
    /// A request's input cannot be used: empty or over-long text, bad UTF-8, too many items.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An item (a stock code) is not in the recommendation model's catalogue.
    #[error("item {0:?} is not in the model's catalogue")]
    UnknownItem(String),
    /// A customer has no history at this institution.
    #[error("customer {0:?} is not known here")]
    UnknownCustomer(String),
    /// A spec, a model or encoded data of one family was given where another was expected.
    #[error("expected a {expected} model, found {found}")]
    WrongFamily {
        /// The family the call needs.
        expected: &'static str,
        /// The family it was given.
        found: String,
    },
}

/// An [`ModelError::InvalidParams`] unless `params` holds exactly the `need` numbers a spec asks for.
pub(crate) fn check_len(params: &[f32], need: usize) -> Result<(), ModelError> {
    if params.len() != need {
        return Err(ModelError::InvalidParams(format!("{} parameters, the spec needs {need}", params.len())));
    }
    Ok(())
}
