//! The models in service: one slot per family, written by the federation client when a round commits
//! (or from its store at start) and read by the endpoints and the desk on every request.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use hearth_models::encoder::SharedEncoder;
use hearth_models::{EmotionModel, IntentModel};

use crate::recommend::Recommender;
use crate::ModelRef;

/// The model each family serves; `null` for a family without one yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ServedModels {
    /// The intent model.
    pub intent: Option<ModelRef>,
    /// The intent cascade's fast stage, which answers the queries it is sure of while `intent` is of the
    /// encoder tier (`null` while no cascade runs: no stage, the cascade off, other labels, or a
    /// fast-tier `intent`).
    #[serde(default)]
    pub intent_fast: Option<ModelRef>,
    /// The emotion model.
    pub emotion: Option<ModelRef>,
    /// The recommender.
    pub recommend: Option<ModelRef>,
}

/// A model in service, with where it came from.
#[derive(Debug)]
pub struct Served<M> {
    /// The model, calibrated on this institution's data.
    pub model: M,
    /// The job that trained it.
    pub job_id: String,
    /// Its global version (the round that committed it).
    pub version: u64,
}

impl<M> Served<M> {
    /// `model`, trained by `job_id` and committed as `version`.
    pub fn new(model: M, job_id: &str, version: u64) -> Self {
        Self { model, job_id: job_id.to_string(), version }
    }
}

/// The models in service, one slot per family. A request loads one `Arc` and answers from it entirely,
/// so a model swapped in between rounds never fails or tears a request.
#[derive(Debug)]
pub struct Slots {
    /// The intent classifier.
    pub intent: ArcSwapOption<Served<IntentModel>>,
    /// The intent cascade's first stage: the fast-tier intent model put in service here last, as the
    /// intent model itself or (while an encoder-tier model is served) as the stage alone. While `intent`
    /// holds an encoder-tier model over the same labels, this one answers the queries it is sure of (see
    /// [`Slots::cascade_confidence`]) and the encoder tier's model the rest. Never an encoder-tier model.
    pub intent_fast: ArcSwapOption<Served<IntentModel>>,
    /// The emotion classifier with its escalation rule.
    pub emotion: ArcSwapOption<Served<EmotionModel>>,
    /// The recommender with this institution's customers and popular items.
    pub recommend: ArcSwapOption<Served<Recommender>>,
    /// Set on an inference replica (`hearth inference`), which never holds the recommender: it needs the
    /// institution's purchase histories, which stay with the participant.
    pub replica: bool,
    /// The encoder tier's sentence encoder, loaded when an encoder-tier model first needs it (shared
    /// with whatever embeds this node's data).
    pub encoder: Arc<SharedEncoder>,
    /// The fast model's confidence at which it answers alone in the intent cascade; `None` turns the
    /// cascade off (an encoder-tier model answers every query). Default
    /// [`hearth_models::cascade::CASCADE_CONFIDENCE`].
    pub cascade_confidence: Option<f32>,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            intent: ArcSwapOption::empty(),
            intent_fast: ArcSwapOption::empty(),
            emotion: ArcSwapOption::empty(),
            recommend: ArcSwapOption::empty(),
            replica: false,
            encoder: Arc::default(),
            cascade_confidence: Some(hearth_models::cascade::CASCADE_CONFIDENCE),
        }
    }
}

impl Slots {
    /// The empty slots of an inference replica (see [`Slots::replica`]).
    pub fn for_replica() -> Self {
        Self { replica: true, ..Self::default() }
    }

    /// The cascade's fast model for `encoder_model`, the encoder-tier model in service: the fast stage
    /// when the cascade is on, `encoder_model` is of the encoder tier and both know the same labels.
    pub fn cascade_stage(&self, encoder_model: &IntentModel) -> Option<(Arc<Served<IntentModel>>, f32)> {
        let confidence = self.cascade_confidence?;
        let fast = self.intent_fast.load_full()?;
        hearth_models::cascade::Cascade::new(&fast.model, encoder_model, confidence).ok()?;
        Some((fast, confidence))
    }
}

/// The slots the endpoints and the desk read and the federation client writes.
pub type ModelSlots = Arc<Slots>;

/// A model of some family, calibrated and ready to serve.
#[derive(Debug)]
pub enum Calibrated {
    /// An intent classifier.
    Intent(Served<IntentModel>),
    /// The intent cascade's fast stage (see [`Slots::intent_fast`]), as a replica fetches it.
    IntentFast(Served<IntentModel>),
    /// An emotion classifier.
    Emotion(Served<EmotionModel>),
    /// A recommender.
    Recommend(Box<Served<Recommender>>),
}

impl Calibrated {
    /// The job and version the model comes from.
    pub fn served_as(&self) -> (String, u64) {
        match self {
            Calibrated::Intent(s) | Calibrated::IntentFast(s) => (s.job_id.clone(), s.version),
            Calibrated::Emotion(s) => (s.job_id.clone(), s.version),
            Calibrated::Recommend(s) => (s.job_id.clone(), s.version),
        }
    }

    /// The family's name, as model files and jobs spell it.
    pub fn family(&self) -> &'static str {
        match self {
            Calibrated::Intent(_) => "intent",
            Calibrated::IntentFast(_) => FAST_STAGE,
            Calibrated::Emotion(_) => "emotion",
            Calibrated::Recommend(_) => "recommend",
        }
    }
}

/// Whether `s` is a fast-tier intent model (one that reads no sentence embeddings).
fn is_fast(s: &Served<IntentModel>) -> bool {
    !s.model.spec.features.needs_encoder()
}

/// The name of the intent cascade's fast stage, as its model file (`intent-fast.hearthm`), the store and
/// replicas spell it.
pub const FAST_STAGE: &str = "intent-fast";

/// Swaps `new` into `slot` unless it already serves the same or a later version of the same job (a
/// refresh that finished after a newer one). Returns whether it swapped.
fn swap_in<M>(slot: &ArcSwapOption<Served<M>>, new: Arc<Served<M>>) -> bool {
    let mut swapped = false;
    slot.rcu(|cur| match cur {
        Some(c) if c.job_id == new.job_id && c.version >= new.version => {
            swapped = false;
            Some(Arc::clone(c))
        }
        _ => {
            swapped = true;
            Some(Arc::clone(&new))
        }
    });
    swapped
}

impl Slots {
    /// Puts a calibrated model in service in its family's slot; see [`swap_in`]. A fast-tier intent
    /// model becomes the cascade's fast stage too (the same `Arc`); an encoder-tier model is never the
    /// fast stage.
    pub fn install(&self, c: Calibrated) -> bool {
        match c {
            Calibrated::Intent(s) => {
                let (fast, new) = (is_fast(&s), Arc::new(s));
                let swapped = swap_in(&self.intent, Arc::clone(&new));
                if swapped && fast {
                    self.intent_fast.store(Some(new));
                }
                swapped
            }
            Calibrated::IntentFast(s) => is_fast(&s) && swap_in(&self.intent_fast, Arc::new(s)),
            Calibrated::Emotion(s) => swap_in(&self.emotion, Arc::new(s)),
            Calibrated::Recommend(s) => swap_in(&self.recommend, Arc::new(*s)),
        }
    }

    /// Puts `c` in service whatever its family's slot serves now (a rollback to an older model, or what
    /// a replica fetched). A fast-tier intent model becomes the cascade's fast stage too, as in
    /// [`Slots::install`].
    pub fn replace(&self, c: Calibrated) {
        match c {
            Calibrated::Intent(s) => {
                let (fast, new) = (is_fast(&s), Arc::new(s));
                self.intent.store(Some(Arc::clone(&new)));
                if fast {
                    self.intent_fast.store(Some(new));
                }
            }
            Calibrated::IntentFast(s) => {
                if is_fast(&s) {
                    self.intent_fast.store(Some(Arc::new(s)));
                }
            }
            Calibrated::Emotion(s) => self.emotion.store(Some(Arc::new(s))),
            Calibrated::Recommend(s) => self.recommend.store(Some(Arc::new(*s))),
        }
    }

    /// Whether some family (or the cascade's fast stage) already serves version `version` (or a later
    /// one) of `job`.
    pub fn serves(&self, job: &str, version: u64) -> bool {
        let at = |j: Option<(String, u64)>| j.is_some_and(|(j, v)| j == job && v >= version);
        at(self.intent.load().as_ref().map(|s| (s.job_id.clone(), s.version)))
            || at(self.intent_fast.load().as_ref().map(|s| (s.job_id.clone(), s.version)))
            || at(self.emotion.load().as_ref().map(|s| (s.job_id.clone(), s.version)))
            || at(self.recommend.load().as_ref().map(|s| (s.job_id.clone(), s.version)))
    }

    /// Job and version served per family (`null` for a family without a model), for `/v1/health`; the
    /// cascade's fast stage only while the cascade runs.
    pub fn summary(&self) -> ServedModels {
        fn one<M>(s: &ArcSwapOption<Served<M>>) -> Option<ModelRef> {
            s.load().as_ref().map(|m| ModelRef { job_id: m.job_id.clone(), version: m.version })
        }
        let intent_fast = self
            .intent
            .load_full()
            .and_then(|i| self.cascade_stage(&i.model))
            .map(|(f, _)| ModelRef { job_id: f.job_id.clone(), version: f.version });
        ServedModels {
            intent: one(&self.intent),
            intent_fast,
            emotion: one(&self.emotion),
            recommend: one(&self.recommend),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_refresh_never_replaces_a_newer_version() {
        let slots = Slots::default();
        let spec = hearth_models::IntentSpec::new(
            vec!["a".into(), "b".into()],
            hearth_models::FeatureConfig { dim: 1024, ..Default::default() },
        )
        .unwrap();
        let served = |job: &str, version| {
            Calibrated::Intent(Served {
                model: IntentModel::zeroed(spec.clone()),
                job_id: job.into(),
                version,
            })
        };
        assert!(slots.install(served("j", 2)));
        assert!(!slots.install(served("j", 1)), "older version of the same job");
        assert!(!slots.install(served("j", 2)), "same version again");
        assert!(slots.serves("j", 2) && !slots.serves("j", 3) && !slots.serves("k", 1));
        assert!(slots.install(served("k", 1)), "a newer job replaces it");
        assert_eq!(slots.summary().intent.unwrap().job_id, "k");
        assert!(slots.summary().emotion.is_none());
    }

    #[test]
    fn a_fast_model_stays_as_the_cascade_stage_under_an_encoder_model() {
        let slots = Slots::default();
        let labels = vec!["a".to_string(), "b".to_string()];
        let fast =
            hearth_models::IntentSpec::new(labels.clone(), hearth_models::FeatureConfig::default()).unwrap();
        let encoder = hearth_models::IntentSpec::encoder_tier(labels).unwrap();
        let served = |spec: &hearth_models::IntentSpec, job: &str| {
            Calibrated::Intent(Served::new(IntentModel::zeroed(spec.clone()), job, 1))
        };
        assert!(slots.install(served(&fast, "fast")));
        assert_eq!(slots.summary().intent_fast, None, "the fast model is the intent model itself");
        assert!(slots.install(served(&encoder, "encoder")));
        let summary = slots.summary();
        assert_eq!(summary.intent.unwrap().job_id, "encoder");
        assert_eq!(summary.intent_fast.unwrap().job_id, "fast");
        let intent = slots.intent.load_full().unwrap();
        let (stage, confidence) = slots.cascade_stage(&intent.model).unwrap();
        assert_eq!((stage.job_id.as_str(), confidence), ("fast", hearth_models::cascade::CASCADE_CONFIDENCE));
        // Off, or over other labels: no cascade.
        let off = Slots { cascade_confidence: None, ..Slots::default() };
        off.replace(served(&encoder, "encoder"));
        off.replace(Calibrated::IntentFast(Served::new(IntentModel::zeroed(fast.clone()), "fast", 1)));
        assert!(off.cascade_stage(&intent.model).is_none());
        // An encoder-tier model is never the fast stage; a rollback to a fast-tier model makes it the stage.
        let as_stage = |spec: &hearth_models::IntentSpec, job: &str| {
            Calibrated::IntentFast(Served::new(IntentModel::zeroed(spec.clone()), job, 2))
        };
        assert!(!slots.install(as_stage(&encoder, "encoder-as-stage")));
        assert_eq!(slots.summary().intent_fast.unwrap().job_id, "fast");
        assert!(slots.install(as_stage(&fast, "fast-2")), "a newer stage under the encoder-tier model");
        assert_eq!(slots.summary().intent.unwrap().job_id, "encoder");
        assert_eq!(slots.summary().intent_fast.unwrap().job_id, "fast-2");
        slots.replace(served(&fast, "rolled-back"));
        assert_eq!(slots.intent_fast.load_full().unwrap().job_id, "rolled-back");
        assert_eq!(slots.summary().intent_fast, None, "no cascade under a fast-tier intent model");
        slots.replace(served(&encoder, "encoder"));
        let other =
            hearth_models::IntentSpec::new(vec!["x".into(), "y".into()], fast.features.clone()).unwrap();
        assert!(slots.install(Calibrated::IntentFast(Served::new(IntentModel::zeroed(other), "other", 1))));
        assert!(slots.cascade_stage(&intent.model).is_none());
    }
}
