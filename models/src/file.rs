//! The model file: what a participant stores and serves, readable by any later version of Hearth.
//!
//! Layout, all integers little-endian:
//! `b"HEARTHM\0"` · `u16` format version · `u32` header length · header (JSON) · `num_params` × `f32` ·
//! SHA-256 over everything before it. Version 2's header is `{family, spec, num_params, calibration,
//! metadata}`: the family names the model (`intent`, `emotion`, `recommend`), `calibration` holds what
//! an institution tuned locally on its own data (thresholds, popular items), `metadata` is free-form and
//! carries the [`crate::ModelCard`]. Version 1 (intent only, `oos_threshold` in place of `calibration`)
//! is still read.
//!
//! Decoding checks the magic, version and sizes before allocating anything, then the checksum, then that
//! every parameter is finite, then hands spec, parameters and calibration to the family, which validates
//! them as it would a job's.

use hearth_crypto::digest::{content_digest, CONTENT_DIGEST_LEN};
use serde::{Deserialize, Serialize};

use crate::emotion::EmotionModel;
use crate::intent::{IntentModel, IntentSpec};
use crate::recommend::RecommendModel;
use crate::ModelCard;

const MAGIC: &[u8; 8] = b"HEARTHM\0";
const VERSION: u16 = 2;
const MAX_HEADER: usize = 4 << 20;
const PREFIX: usize = 8 + 2 + 4;

/// Why a model file was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    /// Not a Hearth model file.
    #[error("not a Hearth model file (bad magic)")]
    BadMagic,
    /// Written by a newer format version.
    #[error("format version {0} is not supported (this build reads versions 1 and {VERSION})")]
    UnsupportedVersion(u16),
    /// A model of another family than the caller asked for.
    #[error("the file holds a {found:?} model, not {expected:?}")]
    Family {
        /// The family the caller asked for.
        expected: &'static str,
        /// The family in the file.
        found: String,
    },
    /// Over the caller's size limit.
    #[error("file of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter or longer than its header says.
    #[error("file is {len} bytes but its header implies {expected}")]
    Length {
        /// Actual size.
        len: usize,
        /// Size implied by the header.
        expected: usize,
    },
    /// The header is not valid.
    #[error("bad header: {0}")]
    Header(String),
    /// The checksum does not match: the file is damaged.
    #[error("checksum mismatch: the file is damaged")]
    Checksum,
    /// A parameter is NaN or infinite.
    #[error("parameter {0} is not finite")]
    NonFinite(usize),
}

/// A model family as its file stores it: a spec, parameters, and what was calibrated locally.
pub trait FileModel: Sized {
    /// The family named in the header.
    const FAMILY: &'static str;
    /// The spec, as JSON.
    fn spec_json(&self) -> serde_json::Value;
    /// The flat parameters.
    fn params(&self) -> &[f32];
    /// Values tuned on an institution's own data (thresholds, popular items); `null` when none.
    fn calibration(&self) -> serde_json::Value;
    /// Rebuilds and validates a model from a file's parts; the error says what is wrong.
    fn from_parts(
        spec: serde_json::Value,
        params: Vec<f32>,
        calibration: serde_json::Value,
    ) -> Result<Self, String>;
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    family: String,
    spec: serde_json::Value,
    num_params: usize,
    calibration: serde_json::Value,
    metadata: serde_json::Value,
}

/// The header of format version 1, intent only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderV1 {
    family: String,
    spec: serde_json::Value,
    num_params: usize,
    oos_threshold: Option<f32>,
    metadata: serde_json::Value,
}

/// Encodes `model` with free-form `metadata` (which job, which rounds, the model card...).
pub fn encode_file<M: FileModel>(model: &M, metadata: &serde_json::Value) -> Vec<u8> {
    let params = model.params();
    let header = Header {
        family: M::FAMILY.into(),
        spec: model.spec_json(),
        num_params: params.len(),
        calibration: model.calibration(),
        metadata: metadata.clone(),
    };
    // Serialising JSON values and integers cannot fail.
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(PREFIX + h.len() + params.len() * 4 + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    for p in params {
        out.extend_from_slice(&p.to_le_bytes());
    }
    let sum = content_digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Encodes an intent model: [`encode_file`] for [`IntentModel`].
pub fn encode_model_file(model: &IntentModel, metadata: &serde_json::Value) -> Vec<u8> {
    encode_file(model, metadata)
}

/// A checked file whose parameters the family has not yet interpreted.
#[derive(Debug, Clone, PartialEq)]
pub struct RawModelFile {
    /// Format version it was written in.
    pub version: u16,
    /// Model family.
    pub family: String,
    /// The spec, as JSON.
    pub spec: serde_json::Value,
    /// Locally calibrated values.
    pub calibration: serde_json::Value,
    /// Free-form metadata.
    pub metadata: serde_json::Value,
    /// The parameters, all finite.
    pub params: Vec<f32>,
}

impl RawModelFile {
    /// The model card in the metadata, if one was written; an error if it is malformed.
    pub fn card(&self) -> Result<Option<ModelCard>, crate::ModelError> {
        ModelCard::from_metadata(&self.metadata)
    }
}

/// Checks a file of at most `max_bytes` (magic, version, sizes, checksum, finite parameters) without
/// interpreting its spec: what `hearth model show` needs for any family.
pub fn read_model_file(bytes: &[u8], max_bytes: usize) -> Result<RawModelFile, FileError> {
    if bytes.len() > max_bytes {
        return Err(FileError::TooLarge { len: bytes.len(), max: max_bytes });
    }
    if bytes.len() < PREFIX + 32 || &bytes[..8] != MAGIC {
        return Err(FileError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != 1 && version != VERSION {
        return Err(FileError::UnsupportedVersion(version));
    }
    let hlen = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if hlen > MAX_HEADER || PREFIX + hlen + 32 > bytes.len() {
        return Err(FileError::Length {
            len: bytes.len(),
            expected: PREFIX.saturating_add(hlen).saturating_add(32),
        });
    }
    let raw = &bytes[PREFIX..PREFIX + hlen];
    let bad = |e: serde_json::Error| FileError::Header(e.to_string());
    let header = if version == 1 {
        let h: HeaderV1 = serde_json::from_slice(raw).map_err(bad)?;
        let calibration = serde_json::json!({ "oos_threshold": h.oos_threshold });
        Header { family: h.family, spec: h.spec, num_params: h.num_params, calibration, metadata: h.metadata }
    } else {
        serde_json::from_slice(raw).map_err(bad)?
    };
    let expected = header
        .num_params
        .checked_mul(4)
        .and_then(|b| b.checked_add(PREFIX + hlen + 32))
        .ok_or(FileError::Header("num_params overflows".into()))?;
    if bytes.len() != expected {
        return Err(FileError::Length { len: bytes.len(), expected });
    }
    let body = &bytes[..bytes.len() - 32];
    if content_digest(body).as_slice() != &bytes[bytes.len() - CONTENT_DIGEST_LEN..] {
        return Err(FileError::Checksum);
    }
    let params: Vec<f32> =
        body[PREFIX + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if let Some(i) = params.iter().position(|p| !p.is_finite()) {
        return Err(FileError::NonFinite(i));
    }
    Ok(RawModelFile {
        version,
        family: header.family,
        spec: header.spec,
        calibration: header.calibration,
        metadata: header.metadata,
        params,
    })
}

/// Decodes a file of at most `max_bytes` holding a model of family `M`.
pub fn decode_file<M: FileModel>(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<(M, serde_json::Value), FileError> {
    let raw = read_model_file(bytes, max_bytes)?;
    if raw.family != M::FAMILY {
        return Err(FileError::Family { expected: M::FAMILY, found: raw.family });
    }
    let model = M::from_parts(raw.spec, raw.params, raw.calibration).map_err(FileError::Header)?;
    Ok((model, raw.metadata))
}

/// Decodes an intent model file of at most `max_bytes`: [`decode_file`] for [`IntentModel`].
pub fn decode_model_file(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<(IntentModel, serde_json::Value), FileError> {
    decode_file(bytes, max_bytes)
}

/// A model of any family, as a file holds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AnyModel {
    /// An intent classifier.
    Intent(IntentModel),
    /// An emotion classifier.
    Emotion(EmotionModel),
    /// A recommender.
    Recommend(RecommendModel),
}

/// Decodes a file of any family, for a caller that learns the family from the file.
pub fn decode_any_model_file(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<(AnyModel, serde_json::Value), FileError> {
    let raw = read_model_file(bytes, max_bytes)?;
    let (spec, params, cal) = (raw.spec, raw.params, raw.calibration);
    let model = match raw.family.as_str() {
        IntentModel::FAMILY => IntentModel::from_parts(spec, params, cal).map(AnyModel::Intent),
        EmotionModel::FAMILY => EmotionModel::from_parts(spec, params, cal).map(AnyModel::Emotion),
        RecommendModel::FAMILY => RecommendModel::from_parts(spec, params, cal).map(AnyModel::Recommend),
        other => Err(format!("unknown model family {other:?}")),
    }
    .map_err(FileError::Header)?;
    Ok((model, raw.metadata))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentCalibration {
    oos_threshold: Option<f32>,
}

impl FileModel for IntentModel {
    const FAMILY: &'static str = "intent";

    fn spec_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }

    fn params(&self) -> &[f32] {
        &self.params
    }

    fn calibration(&self) -> serde_json::Value {
        serde_json::json!({ "oos_threshold": self.oos_threshold })
    }

    fn from_parts(
        spec: serde_json::Value,
        params: Vec<f32>,
        calibration: serde_json::Value,
    ) -> Result<Self, String> {
        let spec: IntentSpec = serde_json::from_value(spec).map_err(|e| format!("intent spec: {e}"))?;
        let spec = IntentSpec::new(spec.labels, spec.features).map_err(|e| e.to_string())?;
        let cal: IntentCalibration =
            serde_json::from_value(calibration).map_err(|e| format!("intent calibration: {e}"))?;
        if let Some(t) = cal.oos_threshold.filter(|t| !(0.0..=1.0).contains(t)) {
            return Err(format!("oos_threshold {t} is outside [0, 1]"));
        }
        let mut model = IntentModel::from_params(spec, params).map_err(|e| e.to_string())?;
        model.oos_threshold = cal.oos_threshold;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureConfig;
    use proptest::prelude::*;

    fn model() -> IntentModel {
        let spec =
            IntentSpec::new(vec!["a".into(), "b".into()], FeatureConfig { dim: 1024, ..Default::default() })
                .unwrap();
        let params = (0..spec.num_params()).map(|i| (i as f32).sin()).collect();
        IntentModel { spec, params, oos_threshold: Some(0.3) }
    }

    #[test]
    fn round_trips_with_metadata() {
        let m = model();
        let meta = serde_json::json!({"job": "j1", "version": 4});
        let bytes = encode_model_file(&m, &meta);
        let (back, meta2) = decode_model_file(&bytes, 1 << 30).unwrap();
        assert_eq!(back, m);
        assert_eq!(meta2, meta);
    }

    #[test]
    fn version_1_files_are_still_read() {
        let m = model();
        let header = serde_json::json!({
            "family": "intent",
            "spec": m.spec,
            "num_params": m.params.len(),
            "oos_threshold": m.oos_threshold,
            "metadata": {"job_id": "old"},
        });
        let h = serde_json::to_vec(&header).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&(h.len() as u32).to_le_bytes());
        v.extend_from_slice(&h);
        for p in &m.params {
            v.extend_from_slice(&p.to_le_bytes());
        }
        let sum = content_digest(&v);
        v.extend_from_slice(&sum);
        let (back, meta) = decode_model_file(&v, 1 << 30).unwrap();
        assert_eq!(back, m);
        assert_eq!(meta["job_id"], "old");
        let raw = read_model_file(&v, 1 << 30).unwrap();
        assert_eq!((raw.version, raw.family.as_str()), (1, "intent"));
    }

    #[test]
    fn the_card_is_read_back_from_any_family() {
        let card = ModelCard {
            family: "intent".into(),
            data: crate::DataCard {
                dataset: "CLINC150".into(),
                institutions: 5,
                examples: 15_100,
                notes: None,
            },
            training: crate::TrainingCard {
                federated: true,
                job_id: None,
                rounds: 20,
                version: None,
                local: crate::TrainParams::default(),
                server_learning_rate: 1.0,
                server_momentum: 0.9,
            },
            privacy: None,
            evaluation: Default::default(),
        };
        let mut meta = serde_json::json!({"version": 3});
        card.insert_into(&mut meta);
        let raw = read_model_file(&encode_model_file(&model(), &meta), 1 << 30).unwrap();
        assert_eq!(raw.card().unwrap(), Some(card));
        assert_eq!(raw.version, VERSION);
    }

    #[test]
    fn hostile_files_are_refused_with_distinct_errors() {
        let bytes = encode_model_file(&model(), &serde_json::Value::Null);
        assert_eq!(decode_model_file(b"garbage", 1 << 30).unwrap_err(), FileError::BadMagic);
        assert!(matches!(decode_model_file(&bytes, 10), Err(FileError::TooLarge { .. })));
        assert!(matches!(
            decode_file::<EmotionModel>(&bytes, 1 << 30),
            Err(FileError::Family { expected: "emotion", .. })
        ));
        let mut v = bytes.clone();
        v[8] = 9;
        assert_eq!(decode_model_file(&v, 1 << 30).unwrap_err(), FileError::UnsupportedVersion(9));
        let mut v = bytes.clone();
        v[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_model_file(&v, 1 << 30), Err(FileError::Length { .. })));
        let mut v = bytes.clone();
        let n = v.len();
        v[n - 40] ^= 1;
        assert_eq!(decode_model_file(&v, 1 << 30).unwrap_err(), FileError::Checksum);
        assert!(matches!(
            decode_model_file(&bytes[..bytes.len() - 1], 1 << 30),
            Err(FileError::Length { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn truncations_and_bit_flips_never_decode_silently(cut in 0usize..9000, flip in 0usize..9000, bit in 0u8..8) {
            let bytes = encode_model_file(&model(), &serde_json::Value::Null);
            let cut = cut % bytes.len();
            prop_assert!(decode_model_file(&bytes[..cut], 1 << 30).is_err());
            let mut v = bytes.clone();
            let i = flip % v.len();
            v[i] ^= 1 << bit;
            prop_assert!(decode_model_file(&v, 1 << 30).is_err());
        }

        #[test]
        fn other_families_never_decode_silently_either(cut in 0usize..20000, flip in 0usize..20000, bit in 0u8..8) {
            let emotion = EmotionModel::zeroed(
                crate::EmotionSpec::new(vec!["anger".into(), "joy".into()], FeatureConfig { dim: 1024, ..Default::default() })
                    .unwrap(),
            );
            let items = (0..50).map(|i| format!("{i:05}")).collect();
            let recommend = RecommendModel::initial(crate::RecommendSpec::with_defaults(items, vec![], 15_000, 4).unwrap());
            for bytes in [encode_file(&emotion, &serde_json::Value::Null), encode_file(&recommend, &serde_json::Value::Null)] {
                let cut = cut % bytes.len();
                prop_assert!(decode_any_model_file(&bytes[..cut], 1 << 30).is_err());
                let mut v = bytes.clone();
                let i = flip % v.len();
                v[i] ^= 1 << bit;
                prop_assert!(decode_any_model_file(&v, 1 << 30).is_err());
            }
        }
    }
}
