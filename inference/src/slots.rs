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
#[derive(Debug, Default)]
pub struct Slots {
    /// The intent classifier.
    pub intent: ArcSwapOption<Served<IntentModel>>,
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
}

impl Slots {
    /// The empty slots of an inference replica (see [`Slots::replica`]).
    pub fn for_replica() -> Self {
        Self { replica: true, ..Self::default() }
    }
}

/// The slots the endpoints and the desk read and the federation client writes.
pub type ModelSlots = Arc<Slots>;

/// A model of some family, calibrated and ready to serve.
#[derive(Debug)]
pub enum Calibrated {
    /// An intent classifier.
    Intent(Served<IntentModel>),
    /// An emotion classifier.
    Emotion(Served<EmotionModel>),
    /// A recommender.
    Recommend(Box<Served<Recommender>>),
}

impl Calibrated {
    /// The job and version the model comes from.
    pub fn served_as(&self) -> (String, u64) {
        match self {
            Calibrated::Intent(s) => (s.job_id.clone(), s.version),
            Calibrated::Emotion(s) => (s.job_id.clone(), s.version),
            Calibrated::Recommend(s) => (s.job_id.clone(), s.version),
        }
    }

    /// The family's name, as model files and jobs spell it.
    pub fn family(&self) -> &'static str {
        match self {
            Calibrated::Intent(_) => "intent",
            Calibrated::Emotion(_) => "emotion",
            Calibrated::Recommend(_) => "recommend",
        }
    }
}

/// Swaps `new` into `slot` unless it already serves the same or a later version of the same job (a
/// refresh that finished after a newer one). Returns whether it swapped.
fn swap_in<M>(slot: &ArcSwapOption<Served<M>>, new: Served<M>) -> bool {
    let new = Arc::new(new);
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
    /// Puts a calibrated model in service in its family's slot; see [`swap_in`].
    pub fn install(&self, c: Calibrated) -> bool {
        match c {
            Calibrated::Intent(s) => swap_in(&self.intent, s),
            Calibrated::Emotion(s) => swap_in(&self.emotion, s),
            Calibrated::Recommend(s) => swap_in(&self.recommend, *s),
        }
    }

    /// Puts `c` in service whatever its family's slot serves now (a rollback to an older model).
    pub fn replace(&self, c: Calibrated) {
        match c {
            Calibrated::Intent(s) => self.intent.store(Some(Arc::new(s))),
            Calibrated::Emotion(s) => self.emotion.store(Some(Arc::new(s))),
            Calibrated::Recommend(s) => self.recommend.store(Some(Arc::new(*s))),
        }
    }

    /// Whether some family already serves version `version` (or a later one) of `job`.
    pub fn serves(&self, job: &str, version: u64) -> bool {
        let at = |j: Option<(String, u64)>| j.is_some_and(|(j, v)| j == job && v >= version);
        at(self.intent.load().as_ref().map(|s| (s.job_id.clone(), s.version)))
            || at(self.emotion.load().as_ref().map(|s| (s.job_id.clone(), s.version)))
            || at(self.recommend.load().as_ref().map(|s| (s.job_id.clone(), s.version)))
    }

    /// Job and version served per family (`null` for a family without a model), for `/v1/health`.
    pub fn summary(&self) -> ServedModels {
        fn one<M>(s: &ArcSwapOption<Served<M>>) -> Option<ModelRef> {
            s.load().as_ref().map(|m| ModelRef { job_id: m.job_id.clone(), version: m.version })
        }
        ServedModels {
            intent: one(&self.intent),
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
}
