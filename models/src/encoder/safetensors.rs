//! Reading the `safetensors` format the encoder's weights ship in: an 8-byte little-endian header
//! length, a JSON header naming each tensor's dtype, shape and byte range, then the raw bytes.
//! Only what the encoder needs is read (`F32` tensors, little-endian); every length and range is
//! checked against the file before use, so a truncated or forged file is an error, never a panic.

use std::collections::HashMap;

use serde::Deserialize;

/// Largest header accepted (the encoder's is about 10 KB).
const MAX_HEADER: u64 = 16 << 20;

/// Why a weights file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SafetensorsError {
    /// The file is shorter than its header says, or its header is not valid JSON of the format.
    #[error("not a safetensors file: {0}")]
    Format(String),
    /// A tensor the model needs is absent.
    #[error("the weights have no tensor {0:?}")]
    Missing(String),
    /// A tensor has another dtype or shape than the model needs.
    #[error("tensor {name:?} is {dtype} {shape:?}, expected F32 {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The shape needed.
        expected: Vec<usize>,
    },
}

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// A parsed weights file, borrowing its bytes.
pub(crate) struct Tensors<'a> {
    entries: HashMap<String, Entry>,
    data: &'a [u8],
}

impl<'a> Tensors<'a> {
    /// Parses the header and checks every tensor's byte range lies inside the file.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, SafetensorsError> {
        let format = |what: String| SafetensorsError::Format(what);
        let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(format(format!("{} bytes, shorter than the 8-byte header length", bytes.len())));
        };
        let len = u64::from_le_bytes(*len);
        if len > MAX_HEADER || len > rest.len() as u64 {
            return Err(format(format!("header length {len} exceeds the file ({} bytes)", bytes.len())));
        }
        let (header, data) = rest.split_at(len as usize);
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| format(format!("header: {e}")))?;
        let mut entries = HashMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let entry: Entry =
                serde_json::from_value(value).map_err(|e| format(format!("tensor {name:?}: {e}")))?;
            let [start, end] = entry.data_offsets;
            if start > end || end > data.len() {
                return Err(format(format!(
                    "tensor {name:?} spans bytes {start}..{end} of a {}-byte data section",
                    data.len()
                )));
            }
            entries.insert(name, entry);
        }
        Ok(Self { entries, data })
    }

    /// The `F32` tensor `name`, which must have exactly `shape`, as values in row-major order.
    pub(crate) fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, SafetensorsError> {
        let entry = self.entries.get(name).ok_or_else(|| SafetensorsError::Missing(name.to_string()))?;
        let [start, end] = entry.data_offsets;
        let count: Option<usize> = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if entry.dtype != "F32"
            || entry.shape != shape
            || count.and_then(|c| c.checked_mul(4)) != Some(end - start)
        {
            return Err(SafetensorsError::Shape {
                name: name.to_string(),
                dtype: entry.dtype.clone(),
                shape: entry.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(self.data[start..end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_a_tensor_and_checks_its_shape() {
        let data: Vec<u8> = [1.0f32, -2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = file(
            r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &data,
        );
        let t = Tensors::parse(&bytes).unwrap();
        assert_eq!(t.f32("w", &[2]).unwrap(), vec![1.0, -2.5]);
        assert!(matches!(t.f32("w", &[1, 2]), Err(SafetensorsError::Shape { .. })));
        assert_eq!(t.f32("v", &[2]), Err(SafetensorsError::Missing("v".into())));
    }

    #[test]
    fn hostile_files_are_errors() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![1, 2, 3],
            u64::MAX.to_le_bytes().to_vec(),
            file("{not json", &[]),
            file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4]),
            file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, &[0; 8]),
            file(r#"{"w":{"dtype":"F32","shape":[2]}}"#, &[0; 8]),
        ];
        for bytes in cases {
            assert!(matches!(Tensors::parse(&bytes), Err(SafetensorsError::Format(_))), "{bytes:?}");
        }
        let overflow =
            file(r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, &[0; 8]);
        let t = Tensors::parse(&overflow).unwrap();
        assert!(matches!(t.f32("w", &[4611686018427387904, 4]), Err(SafetensorsError::Shape { .. })));
    }
}
