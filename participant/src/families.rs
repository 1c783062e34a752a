//! The model families a participant trains and serves. Each is a small module with the same three
//! parts, and the round protocol (`federation`) and the endpoint (`serve`) reach them only through
//! [`Local`] and [`Slots`]:
//! - its **local data**: which store table it reads, what it keeps out of training to calibrate on, and
//!   how it encodes the rest for a job's spec;
//! - its **calibration**: what it tunes on this institution's own data after each commit (the
//!   out-of-scope threshold, per-label thresholds and the anger escalation threshold, the popular items
//!   a cold start gets);
//! - its **served model**: what the inference endpoint answers from, one per family, so a participant
//!   serves intent, emotion and recommendations at once.
//!
//! Everything here is CPU work on local data: callers run it on `spawn_blocking`. Nothing here logs
//! customer text.

pub(crate) mod emotion;
pub(crate) mod intent;
pub(crate) mod recommend;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context};
use hearth_models::{
    decode_any_model_file, encode_file, AnyModel, EmotionExample, Example, LocalData, ModelCard, ModelSpec,
};

use hearth_inference::{Calibrated, Served, Slots};
use hearth_models::encoder::SharedEncoder;
use hearth_models::IntentSpec;

use crate::store::Store;

/// Largest model file the participant will load from its own store.
pub(crate) const MAX_MODEL_FILE_BYTES: usize = 1 << 30;

/// A text family's local data: what trains, and what stays out to calibrate on.
#[derive(Debug)]
pub(crate) struct Split<T> {
    pub(crate) train: Vec<T>,
    pub(crate) holdout: Vec<T>,
}

/// Keeps a deterministic `fraction` (at most half) of `all`, chosen by a hash of each text, out of
/// training. Fewer than 20 rows are all kept for training.
pub(crate) fn split_holdout<T>(all: Vec<T>, fraction: f64, text: impl Fn(&T) -> &str) -> Split<T> {
    if all.len() < 20 || fraction <= 0.0 {
        return Split { train: all, holdout: vec![] };
    }
    let cut = (fraction.min(0.5) * 1000.0) as u64;
    let (holdout, train) = all.into_iter().partition(|e| fxhash(text(e)) % 1000 < cut);
    Split { train, holdout }
}

/// FNV-1a: a hash stable across runs and platforms.
pub(crate) fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A model tuned on local data, with what its card should say about that.
#[derive(Debug)]
pub(crate) struct Tuned<M> {
    pub(crate) model: M,
    /// Metrics and chosen values, added to the card's `evaluation` (`local_` metrics are measured on the
    /// data they were calibrated on, so they are optimistic).
    pub(crate) evaluation: BTreeMap<String, f64>,
    /// One sentence on what was calibrated on which local data.
    pub(crate) note: String,
}

/// A committed global model as downloaded, with what the coordinator said about it.
#[derive(Debug)]
pub(crate) struct Global {
    pub(crate) job_id: String,
    pub(crate) version: u64,
    pub(crate) spec: ModelSpec,
    pub(crate) params: Vec<f32>,
    /// The coordinator's model card, if it sent one.
    pub(crate) card: Option<ModelCard>,
    /// Emotion jobs: the recall the escalation threshold must reach.
    pub(crate) escalation_target_recall: Option<f32>,
}

/// What the promotion gate decided, and on what figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Promotion {
    Promote(String),
    Refuse(String),
}

/// The institution's data for each family, read from the store on first use and kept for the process's
/// life (data imported while the participant runs is used after a restart).
#[derive(Debug)]
pub(crate) struct Local {
    store: Arc<Store>,
    holdout_fraction: f64,
    /// Intent examples with the embeddings stored for them; re-read once an encoder-tier job has had
    /// the missing ones embedded.
    intent: Mutex<Option<Arc<Split<Example>>>>,
    emotion: OnceLock<Arc<Split<EmotionExample>>>,
    retail: OnceLock<Arc<recommend::Retail>>,
    encoder: Arc<SharedEncoder>,
}

/// `cell`'s value, reading it with `read` the first time.
fn cached<T>(cell: &OnceLock<Arc<T>>, read: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<Arc<T>> {
    if let Some(v) = cell.get() {
        return Ok(Arc::clone(v));
    }
    let v = Arc::new(read()?);
    Ok(Arc::clone(cell.get_or_init(|| v)))
}

impl Local {
    pub(crate) fn new(store: Arc<Store>, holdout_fraction: f64, encoder: Arc<SharedEncoder>) -> Self {
        Self {
            store,
            holdout_fraction,
            intent: Mutex::new(None),
            emotion: OnceLock::new(),
            retail: OnceLock::new(),
            encoder,
        }
    }

    fn intent(&self) -> anyhow::Result<Arc<Split<Example>>> {
        let mut cell = self.intent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(split) = cell.as_ref() {
            return Ok(Arc::clone(split));
        }
        let split = Arc::new(intent::read(&self.store, self.holdout_fraction)?);
        *cell = Some(Arc::clone(&split));
        Ok(split)
    }

    /// The intent data a model of `spec` reads: for the encoder tier, every example with its embedding,
    /// the missing ones embedded (and stored, sealed) first.
    fn intent_for(&self, spec: &IntentSpec) -> anyhow::Result<Arc<Split<Example>>> {
        self.intent_read_by(spec.features.needs_encoder())
    }

    /// The intent data, every example embedded when `embedded` (see [`Self::intent_for`]).
    fn intent_read_by(&self, embedded: bool) -> anyhow::Result<Arc<Split<Example>>> {
        let split = self.intent()?;
        if !embedded || split.train.iter().chain(&split.holdout).all(|e| e.embedding.is_some()) {
            return Ok(split);
        }
        let encoder = self.encoder.get().context("the job's model reads sentence embeddings")?;
        let embedded = crate::embedding::embed_missing(&self.store, &encoder, &|_, _| {})?;
        tracing::info!(
            embedded,
            "intent examples embedded for an encoder-tier job; kept, sealed, for later jobs"
        );
        let fresh = Arc::new(intent::read(&self.store, self.holdout_fraction)?);
        *self.intent.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    fn emotion(&self) -> anyhow::Result<Arc<Split<EmotionExample>>> {
        cached(&self.emotion, || emotion::read(&self.store, self.holdout_fraction))
    }

    fn retail(&self) -> anyhow::Result<Arc<recommend::Retail>> {
        cached(&self.retail, || recommend::read(&self.store))
    }

    /// The families this institution holds data for (a non-empty table in the store).
    pub(crate) fn held_families(&self) -> anyhow::Result<Vec<String>> {
        let s = &self.store;
        let counts =
            [("intent", s.count()?), ("emotion", s.emotion_count()?), ("recommend", s.transaction_count()?)];
        Ok(counts.iter().filter(|(_, n)| *n > 0).map(|(f, _)| f.to_string()).collect())
    }

    /// The training data of `spec`'s family, encoded for `spec`. Blocking.
    pub(crate) fn encode(&self, spec: &ModelSpec) -> anyhow::Result<LocalData> {
        let data = match spec {
            ModelSpec::Intent(s) => intent::encode(s, self.intent_for(s)?.as_ref())?,
            ModelSpec::Emotion(s) => emotion::encode(s, self.emotion()?.as_ref())?,
            ModelSpec::Recommend(s) => recommend::encode(s, self.retail()?.as_ref()),
            other => bail!("a {} model has no local training", other.family()),
        };
        if data.is_empty() {
            bail!(
                "no local {} data to train on (import some with `hearth data import --family {}`)",
                spec.family(),
                spec.family()
            );
        }
        Ok(data)
    }

    /// This institution's federated-evaluation counts of a global model (the raw model, no local
    /// calibration) on its held-out data, and how many examples they cover. Intent and emotion models.
    /// Blocking.
    pub(crate) fn evaluation_counts(
        &self,
        spec: &ModelSpec,
        params: Vec<f32>,
    ) -> anyhow::Result<(Vec<i64>, u64)> {
        match spec {
            ModelSpec::Intent(s) => {
                let model = hearth_models::IntentModel::from_params(s.clone(), params)?;
                let data = self.intent_for(s)?;
                Ok((hearth_models::evaluation_counts(&model, &data.holdout), data.holdout.len() as u64))
            }
            ModelSpec::Emotion(s) => {
                let model = hearth_models::EmotionModel::from_params(s.clone(), params)?;
                let data = self.emotion()?;
                let counts = hearth_models::emotion::emotion_evaluation_counts(&model, &data.holdout)?;
                Ok((counts, data.holdout.len() as u64))
            }
            other => bail!("a {} model has no federated evaluation", other.family()),
        }
    }

    /// Calibrates a committed global model on this institution's data; returns it ready to serve and its
    /// model file (with the card). Blocking.
    pub(crate) fn calibrate(&self, g: Global) -> anyhow::Result<(Calibrated, Vec<u8>)> {
        let Global { job_id, version, spec, params, card, escalation_target_recall } = g;
        let family = spec.family();
        let meta = |evaluation: BTreeMap<String, f64>, note: String| {
            let mut meta = serde_json::json!({ "job_id": job_id, "version": version });
            if let Some(mut card) = card.clone() {
                card.evaluation.extend(evaluation);
                let notes = card.data.notes.take().map_or(note.clone(), |n| format!("{n}. {note}"));
                card.data.notes = Some(notes);
                card.insert_into(&mut meta);
            }
            meta
        };
        let calibrated = || -> anyhow::Result<(Calibrated, Vec<u8>)> {
            Ok(match spec {
                ModelSpec::Intent(s) => {
                    if s.features.needs_encoder() {
                        // Serving needs the encoder too: fail here, before the model is installed.
                        self.encoder.get().context("serving a model that reads sentence embeddings")?;
                    }
                    let data = self.intent_for(&s)?;
                    let t = intent::calibrate(s, params, data.as_ref())?;
                    let file = encode_file(&t.model, &meta(t.evaluation, t.note));
                    (Calibrated::Intent(Served::new(t.model, &job_id, version)), file)
                }
                ModelSpec::Emotion(s) => {
                    let t =
                        emotion::calibrate(s, params, self.emotion()?.as_ref(), escalation_target_recall)?;
                    let file = encode_file(&t.model, &meta(t.evaluation, t.note));
                    (Calibrated::Emotion(Served::new(t.model, &job_id, version)), file)
                }
                ModelSpec::Recommend(s) => {
                    let t = recommend::calibrate(s, params, self.retail()?.as_ref())?;
                    let file = encode_file(&t.model.model, &meta(t.evaluation, t.note));
                    (Calibrated::Recommend(Box::new(Served::new(t.model, &job_id, version))), file)
                }
                other => bail!("a {} model cannot be served", other.family()),
            })
        };
        calibrated()
            .with_context(|| format!("calibrating the {family} model of job {job_id} version {version}"))
    }

    /// The promotion gate: whether `new` may replace the model `slots` serves of its family. It compares
    /// the metric of each (intent: accuracy with the model's out-of-scope threshold; emotion: macro-F1 with
    /// its per-label thresholds) on this institution's held-out data, and refuses a model more than
    /// `tolerance_points` points worse. A family without a metric (recommend), no held-out data, nothing
    /// served yet, or a negative tolerance: promoted. Blocking.
    pub(crate) fn promotion(
        &self,
        new: &Calibrated,
        slots: &Slots,
        tolerance_points: f64,
    ) -> anyhow::Result<Promotion> {
        if tolerance_points < 0.0 {
            return Ok(Promotion::Promote("the job turned the promotion gate off".into()));
        }
        let (name, candidate, served) = match new {
            // The cascade's fast stage is compared with the stage it would replace.
            Calibrated::Intent(m) | Calibrated::IntentFast(m) => {
                let current =
                    if matches!(new, Calibrated::IntentFast(_)) { &slots.intent_fast } else { &slots.intent };
                let Some(cur) = current.load_full() else {
                    return Ok(Promotion::Promote("nothing to compare with".into()));
                };
                // Both models on the same examples, embedded when either reads embeddings.
                let embedded =
                    m.model.spec.features.needs_encoder() || cur.model.spec.features.needs_encoder();
                let holdout = &self.intent_read_by(embedded)?.holdout;
                if holdout.is_empty() {
                    return Ok(Promotion::Promote("nothing to compare with".into()));
                }
                let acc = |m: &hearth_models::IntentModel| hearth_models::evaluate(m, holdout).accuracy;
                ("accuracy", acc(&m.model), (acc(&cur.model), cur.job_id.clone(), cur.version))
            }
            Calibrated::Emotion(m) => {
                let holdout = &self.emotion()?.holdout;
                let Some(cur) = slots.emotion.load_full().filter(|_| !holdout.is_empty()) else {
                    return Ok(Promotion::Promote("nothing to compare with".into()));
                };
                let f1 = |m: &hearth_models::EmotionModel| {
                    hearth_models::emotion::evaluate_emotion(m, holdout).map(|e| e.macro_f1)
                };
                ("macro-F1", f1(&m.model)?, (f1(&cur.model)?, cur.job_id.clone(), cur.version))
            }
            Calibrated::Recommend(_) => {
                return Ok(Promotion::Promote("recommend models have no promotion metric yet".into()))
            }
        };
        let (was, job, version) = served;
        let detail = format!(
            "{name} {candidate:.4} on {} held-out local examples against {was:.4} of the served job {job} version \
             {version} (gate: at most {tolerance_points} points worse)",
            self.holdout_len(new.family())?
        );
        Ok(if candidate >= was - tolerance_points / 100.0 {
            Promotion::Promote(detail)
        } else {
            Promotion::Refuse(detail)
        })
    }

    fn holdout_len(&self, family: &str) -> anyhow::Result<usize> {
        Ok(match family {
            "intent" | hearth_inference::FAST_STAGE => self.intent()?.holdout.len(),
            "emotion" => self.emotion()?.holdout.len(),
            _ => 0,
        })
    }

    /// Rebuilds a served model from a model file this participant stored before a restart. Blocking.
    pub(crate) fn restore(&self, file: &[u8]) -> anyhow::Result<Calibrated> {
        let (model, meta) = decode_any_model_file(file, MAX_MODEL_FILE_BYTES)?;
        let job_id = meta.get("job_id").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let version = meta.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(match model {
            AnyModel::Intent(m) => Calibrated::Intent(Served::new(m, &job_id, version)),
            AnyModel::Emotion(m) => Calibrated::Emotion(Served::new(m, &job_id, version)),
            AnyModel::Recommend(m) => {
                let r = recommend::serving(m, self.retail()?.as_ref());
                Calibrated::Recommend(Box::new(Served::new(r, &job_id, version)))
            }
            _ => bail!("the stored model is of a family this build cannot serve"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_deterministic_and_about_the_right_size() {
        let all: Vec<Example> = (0..1000)
            .map(|i| Example { text: format!("message {i}"), label: "x".into(), embedding: None })
            .collect();
        let a = split_holdout(all.clone(), 0.1, |e| &e.text);
        let b = split_holdout(all, 0.1, |e| &e.text);
        assert_eq!(a.holdout, b.holdout);
        assert!((60..140).contains(&a.holdout.len()), "{}", a.holdout.len());
        assert_eq!(a.holdout.len() + a.train.len(), 1000);
        let small: Vec<Example> =
            (0..5).map(|i| Example { text: i.to_string(), label: "x".into(), embedding: None }).collect();
        assert!(split_holdout(small, 0.1, |e| &e.text).holdout.is_empty());
    }
}
