//! The model file: what a participant stores and serves, readable by any later version of Hearth.
//!
//! Layout, all integers little-endian:
//! `b"HEARTHM\0"` · `u16` format version (1) · `u32` header length · header (JSON: family, spec,
//! num_params, oos_threshold, metadata) · `num_params` × `f32` · SHA-256 over everything before it.
//! Decoding checks the magic, version and sizes before allocating anything, then the checksum, then that
//! every parameter is finite.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::intent::{IntentModel, IntentSpec};

const MAGIC: &[u8; 8] = b"HEARTHM\0";
const VERSION: u16 = 1;
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
    #[error("format version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u16),
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

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    family: String,
    spec: IntentSpec,
    num_params: usize,
    oos_threshold: Option<f32>,
    metadata: serde_json::Value,
}

/// Encodes `model` with free-form `metadata` (which job, which rounds...).
pub fn encode_model_file(model: &IntentModel, metadata: &serde_json::Value) -> Vec<u8> {
    let header = Header {
        family: "intent".into(),
        spec: model.spec.clone(),
        num_params: model.params.len(),
        oos_threshold: model.oos_threshold,
        metadata: metadata.clone(),
    };
    // Serialising plain data cannot fail.
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(PREFIX + h.len() + model.params.len() * 4 + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    for p in &model.params {
        out.extend_from_slice(&p.to_le_bytes());
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Decodes a model file of at most `max_bytes`.
pub fn decode_model_file(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<(IntentModel, serde_json::Value), FileError> {
    if bytes.len() > max_bytes {
        return Err(FileError::TooLarge { len: bytes.len(), max: max_bytes });
    }
    if bytes.len() < PREFIX + 32 || &bytes[..8] != MAGIC {
        return Err(FileError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(FileError::UnsupportedVersion(version));
    }
    let hlen = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if hlen > MAX_HEADER || PREFIX + hlen + 32 > bytes.len() {
        return Err(FileError::Length {
            len: bytes.len(),
            expected: PREFIX.saturating_add(hlen).saturating_add(32),
        });
    }
    let header: Header = serde_json::from_slice(&bytes[PREFIX..PREFIX + hlen])
        .map_err(|e| FileError::Header(e.to_string()))?;
    if header.family != "intent" {
        return Err(FileError::Header(format!("unknown model family {:?}", header.family)));
    }
    let spec = IntentSpec::new(header.spec.labels, header.spec.features)
        .map_err(|e| FileError::Header(e.to_string()))?;
    if header.num_params != spec.num_params() {
        return Err(FileError::Header(format!(
            "num_params {} but the spec needs {}",
            header.num_params,
            spec.num_params()
        )));
    }
    let expected = header
        .num_params
        .checked_mul(4)
        .and_then(|b| b.checked_add(PREFIX + hlen + 32))
        .ok_or(FileError::Header("num_params overflows".into()))?;
    if bytes.len() != expected {
        return Err(FileError::Length { len: bytes.len(), expected });
    }
    let body = &bytes[..bytes.len() - 32];
    if Sha256::digest(body).as_slice() != &bytes[bytes.len() - 32..] {
        return Err(FileError::Checksum);
    }
    let params: Vec<f32> =
        body[PREFIX + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if let Some(i) = params.iter().position(|p| !p.is_finite()) {
        return Err(FileError::NonFinite(i));
    }
    if let Some(t) = header.oos_threshold.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(FileError::Header(format!("oos_threshold {t} is outside [0, 1]")));
    }
    Ok((IntentModel { spec, params, oos_threshold: header.oos_threshold }, header.metadata))
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
    fn hostile_files_are_refused_with_distinct_errors() {
        let bytes = encode_model_file(&model(), &serde_json::Value::Null);
        assert_eq!(decode_model_file(b"garbage", 1 << 30).unwrap_err(), FileError::BadMagic);
        assert!(matches!(decode_model_file(&bytes, 10), Err(FileError::TooLarge { .. })));
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
    }
}
