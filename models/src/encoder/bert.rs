//! The transformer of all-MiniLM-L6-v2 (a 6-layer BERT, hidden size 384, 12 heads, GELU feed-forward
//! of 1536), its forward pass over a batch of token sequences, and the sentence embedding the model
//! is published with: the mean of the last layer over each sequence's tokens, scaled to unit length.
//!
//! A batch is packed without padding: every token-wise step (embeddings, the six linear maps, layer
//! norms, GELU) runs on one `[tokens, 384]` matrix, and only attention looks at each sequence's own
//! rows. So a short query costs its own length, and no attention mask is needed.

use std::ops::Range;

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, Slice};

use super::safetensors::{SafetensorsError, Tensors};

/// Width of every token's vector.
pub const HIDDEN: usize = 384;
const HEADS: usize = 12;
const HEAD_DIM: usize = HIDDEN / HEADS;
const INTERMEDIATE: usize = 1536;
const LAYERS: usize = 6;
/// Positions the model has embeddings for.
pub const MAX_POSITIONS: usize = 512;
const LAYER_NORM_EPS: f32 = 1e-12;

struct Linear {
    /// `[out, in]`, as stored.
    weight: Array2<f32>,
    bias: Array1<f32>,
}

impl Linear {
    fn load(t: &Tensors, name: &str, out: usize, input: usize) -> Result<Self, SafetensorsError> {
        let weight = t.f32(&format!("{name}.weight"), &[out, input])?;
        let bias = t.f32(&format!("{name}.bias"), &[out])?;
        Ok(Self { weight: matrix(weight, out, input), bias: Array1::from(bias) })
    }

    fn apply(&self, x: &Array2<f32>) -> Array2<f32> {
        let mut y = x.dot(&self.weight.t());
        y += &self.bias;
        y
    }
}

struct LayerNorm {
    gamma: Array1<f32>,
    beta: Array1<f32>,
}

impl LayerNorm {
    fn load(t: &Tensors, name: &str) -> Result<Self, SafetensorsError> {
        Ok(Self {
            gamma: Array1::from(t.f32(&format!("{name}.weight"), &[HIDDEN])?),
            beta: Array1::from(t.f32(&format!("{name}.bias"), &[HIDDEN])?),
        })
    }

    /// Normalises each row in place.
    fn apply(&self, x: &mut Array2<f32>) {
        for mut row in x.rows_mut() {
            let n = row.len() as f32;
            let mean = row.sum() / n;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(t: &Tensors, i: usize) -> Result<Self, SafetensorsError> {
        let p = format!("encoder.layer.{i}");
        Ok(Self {
            query: Linear::load(t, &format!("{p}.attention.self.query"), HIDDEN, HIDDEN)?,
            key: Linear::load(t, &format!("{p}.attention.self.key"), HIDDEN, HIDDEN)?,
            value: Linear::load(t, &format!("{p}.attention.self.value"), HIDDEN, HIDDEN)?,
            attention_out: Linear::load(t, &format!("{p}.attention.output.dense"), HIDDEN, HIDDEN)?,
            attention_norm: LayerNorm::load(t, &format!("{p}.attention.output.LayerNorm"))?,
            intermediate: Linear::load(t, &format!("{p}.intermediate.dense"), INTERMEDIATE, HIDDEN)?,
            output: Linear::load(t, &format!("{p}.output.dense"), HIDDEN, INTERMEDIATE)?,
            output_norm: LayerNorm::load(t, &format!("{p}.output.LayerNorm"))?,
        })
    }

    /// One transformer block over the packed batch; `spans` are each sequence's rows.
    fn apply(&self, x: Array2<f32>, spans: &[(usize, usize)]) -> Array2<f32> {
        let (q, k, v) = (self.query.apply(&x), self.key.apply(&x), self.value.apply(&x));
        let mut context = Array2::<f32>::zeros(x.raw_dim());
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        for &(start, end) in spans {
            for h in 0..HEADS {
                let cols = h * HEAD_DIM..(h + 1) * HEAD_DIM;
                let qh = block(&q, start..end, cols.clone());
                let kh = block(&k, start..end, cols.clone());
                let vh = block(&v, start..end, cols.clone());
                let mut scores = qh.dot(&kh.t());
                for mut row in scores.rows_mut() {
                    let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
                    let mut sum = 0.0;
                    for s in row.iter_mut() {
                        *s = (*s * scale - max).exp();
                        sum += *s;
                    }
                    row /= sum;
                }
                block_mut(&mut context, start..end, cols).assign(&scores.dot(&vh));
            }
        }
        let mut attended = self.attention_out.apply(&context);
        attended += &x;
        self.attention_norm.apply(&mut attended);
        let mut hidden = self.intermediate.apply(&attended);
        hidden.mapv_inplace(gelu);
        let mut out = self.output.apply(&hidden);
        out += &attended;
        self.output_norm.apply(&mut out);
        out
    }
}

/// The rows `rows` and columns `cols` of `x`.
fn block(x: &Array2<f32>, rows: Range<usize>, cols: Range<usize>) -> ArrayView2<'_, f32> {
    let mut view = x.view();
    view.slice_axis_inplace(Axis(0), Slice::from(rows));
    view.slice_axis_inplace(Axis(1), Slice::from(cols));
    view
}

fn block_mut(x: &mut Array2<f32>, rows: Range<usize>, cols: Range<usize>) -> ArrayViewMut2<'_, f32> {
    let mut view = x.view_mut();
    view.slice_axis_inplace(Axis(0), Slice::from(rows));
    view.slice_axis_inplace(Axis(1), Slice::from(cols));
    view
}

/// GELU as BERT defines it, with the exact error function.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn matrix(values: Vec<f32>, rows: usize, cols: usize) -> Array2<f32> {
    // `Tensors::f32` returned exactly rows * cols values.
    Array2::from_shape_vec((rows, cols), values).expect("the shape was checked when the tensor was read")
}

/// The loaded transformer.
pub(crate) struct Bert {
    words: Array2<f32>,
    positions: Array2<f32>,
    token_type: Array1<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl Bert {
    /// Reads every weight, checking names, dtypes and shapes, for a vocabulary of `vocab` tokens.
    pub(crate) fn load(bytes: &[u8], vocab: usize) -> Result<Self, SafetensorsError> {
        let t = Tensors::parse(bytes)?;
        let words = matrix(t.f32("embeddings.word_embeddings.weight", &[vocab, HIDDEN])?, vocab, HIDDEN);
        let positions = matrix(
            t.f32("embeddings.position_embeddings.weight", &[MAX_POSITIONS, HIDDEN])?,
            MAX_POSITIONS,
            HIDDEN,
        );
        let types = t.f32("embeddings.token_type_embeddings.weight", &[2, HIDDEN])?;
        Ok(Self {
            words,
            positions,
            token_type: Array1::from(types[..HIDDEN].to_vec()),
            embedding_norm: LayerNorm::load(&t, "embeddings.LayerNorm")?,
            layers: (0..LAYERS).map(|i| Layer::load(&t, i)).collect::<Result<_, _>>()?,
        })
    }

    /// The unit-length mean-pooled embedding of each sequence, one row each. Every id must be below
    /// the vocabulary size and every sequence non-empty and at most [`MAX_POSITIONS`] long (the
    /// tokenizer guarantees all three).
    pub(crate) fn embed(&self, sequences: &[Vec<u32>]) -> Array2<f32> {
        let total: usize = sequences.iter().map(Vec::len).sum();
        let mut x = Array2::<f32>::zeros((total, HIDDEN));
        let mut spans = Vec::with_capacity(sequences.len());
        let mut row = 0;
        for ids in sequences {
            spans.push((row, row + ids.len()));
            for (position, &id) in ids.iter().enumerate() {
                let mut r = x.row_mut(row);
                r.assign(&self.words.row(id as usize));
                r += &self.positions.row(position);
                r += &self.token_type;
                row += 1;
            }
        }
        self.embedding_norm.apply(&mut x);
        for layer in &self.layers {
            x = layer.apply(x, &spans);
        }
        pool(x.view(), &spans)
    }
}

/// Mean over each span's rows, scaled to unit L2 norm.
fn pool(x: ArrayView2<f32>, spans: &[(usize, usize)]) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((spans.len(), HIDDEN));
    for (mut target, &(start, end)) in out.rows_mut().into_iter().zip(spans) {
        let mean = x
            .slice_axis(Axis(0), Slice::from(start..end))
            .mean_axis(Axis(0))
            .expect("a sequence has [CLS] and [SEP]");
        let norm = mean.dot(&mean).sqrt().max(1e-12);
        target.assign(&(mean / norm));
    }
    out
}
