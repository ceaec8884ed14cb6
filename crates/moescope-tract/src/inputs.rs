//! The token inputs of a model: which layout it takes, checked at load, and a batch of
//! requests turned into those inputs.
//!
//! Two layouts are supported ([`InputLayout`]):
//!
//! - **packed** (the bundled model; vLLM/SGLang style): `input_ids`, `position_ids`,
//!   `segment_ids`, each `[T]` int64. The requests of a batch are concatenated; positions
//!   restart and attention stays within each request.
//! - **Hugging Face** (a plain `torch.onnx.export` of a `*ForCausalLM`): `input_ids [B, S]`
//!   int64, plus `attention_mask [B, S]` and `position_ids [B, S]` when the export has them.
//!   One request per row, right-padded; pad tokens are masked out and never recorded.
//!
//! With [`LoadOptions::fixed_tokens`](crate::LoadOptions::fixed_tokens) the token axis is
//! pinned to a number (and the batch axis to 1) before tract types the graph: exports that
//! tract cannot type with symbolic shapes then run, and every batch is padded to that length.

use moescope_core::{LangId, Segment};
use tract_onnx::pb::{tensor_proto::DataType, type_proto, ModelProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceFact;

/// How a model takes its tokens (recognised from its inputs at load).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputLayout {
    /// `input_ids`, `position_ids`, `segment_ids`, each `[T]` int64: requests concatenated.
    Packed,
    /// `input_ids [B, S]` int64, with `attention_mask` / `position_ids` `[B, S]` int64 when
    /// the model has them: one request per row, right-padded.
    HuggingFace {
        /// The model takes an `attention_mask` (1 for tokens, 0 for padding).
        attention_mask: bool,
        /// The model takes `position_ids` (0, 1, 2, ... within each request).
        position_ids: bool,
    },
}

/// What the layouts need, for error messages.
pub(crate) const SUPPORTED: &str = "packed: input_ids, position_ids, segment_ids, each [T] \
     int64; Hugging Face: input_ids [B, S] int64, optionally attention_mask and position_ids \
     [B, S] int64";

/// One graph input as the file declares it.
#[derive(Clone, Debug)]
pub(crate) struct DeclaredInput {
    pub name: String,
    pub dtype: Option<DataType>,
    /// Each axis: a number, a symbol, or unknown (`None`).
    pub dims: Option<Vec<Option<String>>>,
}

impl DeclaredInput {
    fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }
    pub fn describe(&self) -> String {
        let dt = self
            .dtype
            .map_or("?".to_owned(), |d| d.as_str_name().to_lowercase());
        let dims = self.dims.as_ref().map_or("[?]".to_owned(), |d| {
            let d: Vec<&str> = d.iter().map(|x| x.as_deref().unwrap_or("?")).collect();
            format!("[{}]", d.join(", "))
        });
        format!("{} {dt} {dims}", self.name)
    }
}

/// The graph inputs that are not initializers, in the model's order.
pub(crate) fn declared_inputs(proto: &ModelProto) -> Vec<DeclaredInput> {
    let Some(graph) = proto.graph.as_ref() else {
        return Vec::new();
    };
    graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .map(|i| {
            let tensor = i.r#type.as_ref().and_then(|t| match &t.value {
                Some(type_proto::Value::TensorType(t)) => Some(t),
                _ => None,
            });
            let dtype = tensor.and_then(|t| DataType::try_from(t.elem_type).ok());
            let dims = tensor.and_then(|t| t.shape.as_ref()).map(|s| {
                s.dim
                    .iter()
                    .map(|d| {
                        use tract_onnx::pb::tensor_shape_proto::dimension::Value;
                        match &d.value {
                            Some(Value::DimValue(v)) => Some(v.to_string()),
                            Some(Value::DimParam(p)) if !p.is_empty() => Some(p.clone()),
                            _ => None,
                        }
                    })
                    .collect()
            });
            DeclaredInput {
                name: i.name.clone(),
                dtype,
                dims,
            }
        })
        .collect()
}

/// Recognises the layout of `inputs`, or says why none fits.
pub(crate) fn recognise(inputs: &[DeclaredInput]) -> Result<InputLayout, String> {
    let int64 = |i: &DeclaredInput| matches!(i.dtype, Some(DataType::Int64) | None);
    let find = |n: &str| inputs.iter().find(|i| i.name == n);
    let Some(ids) = find("input_ids") else {
        return Err("no input named input_ids".into());
    };
    if !int64(ids) {
        return Err(format!("input_ids is {}, expected int64", ids.describe()));
    }
    match ids.rank() {
        Some(1) | None
            if inputs.len() == 3
                && ["position_ids", "segment_ids"]
                    .iter()
                    .all(|n| find(n).is_some_and(|i| int64(i) && i.rank().unwrap_or(1) == 1)) =>
        {
            Ok(InputLayout::Packed)
        }
        Some(2) | None => {
            let mut layout = InputLayout::HuggingFace {
                attention_mask: false,
                position_ids: false,
            };
            for i in inputs.iter().filter(|i| i.name != "input_ids") {
                let ok = int64(i) && i.rank().unwrap_or(2) == 2;
                match (i.name.as_str(), &mut layout) {
                    (
                        "attention_mask",
                        InputLayout::HuggingFace {
                            attention_mask: a, ..
                        },
                    ) if ok => *a = true,
                    (
                        "position_ids",
                        InputLayout::HuggingFace {
                            position_ids: p, ..
                        },
                    ) if ok => *p = true,
                    _ => return Err(format!("input {} does not fit", i.describe())),
                }
            }
            Ok(layout)
        }
        _ => Err(format!("input_ids is {}", ids.describe())),
    }
}

/// The input facts that pin the token axis to `tokens` (and the batch axis to 1).
pub(crate) fn fixed_facts(layout: InputLayout, tokens: usize) -> InferenceFact {
    match layout {
        InputLayout::Packed => InferenceFact::dt_shape(i64::datum_type(), [tokens]),
        InputLayout::HuggingFace { .. } => InferenceFact::dt_shape(i64::datum_type(), [1, tokens]),
    }
}

/// Requests to run together: each request's tokens, language and sequence id. Turn it into
/// a model's inputs with [`MoeModel::inputs`](crate::MoeModel::inputs) (any layout), or, for
/// the packed layout, [`TokenBatch::inputs`].
#[derive(Clone, Debug, Default)]
pub struct TokenBatch {
    tokens: Vec<i64>,
    segments: Vec<Segment>,
}

/// The packed layout's batch (the former name of [`TokenBatch`]).
pub type PackedBatch = TokenBatch;

impl TokenBatch {
    /// An empty batch.
    pub fn new() -> TokenBatch {
        TokenBatch::default()
    }

    /// Appends one request's tokens, tagged `lang`. Empty requests are skipped.
    pub fn push(&mut self, tokens: &[i64], lang: LangId, sequence_id: Option<u64>) {
        if tokens.is_empty() {
            return;
        }
        self.tokens.extend_from_slice(tokens);
        self.segments.push(Segment {
            lang,
            tokens: tokens.len() as u32,
            sequence_id,
        });
    }

    /// Tokens in the batch (without padding).
    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token was pushed.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The requests, in order (for [`Languages::Segments`](moescope_core::Languages) with
    /// the packed layout and no padding).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The packed layout's inputs `input_ids`, `position_ids`, `segment_ids`, each `[T]`.
    pub fn inputs(&self) -> TVec<TValue> {
        self.packed(self.tokens.len()).0
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.segments.clear();
    }

    fn requests(&self) -> impl Iterator<Item = (&Segment, &[i64])> {
        let mut start = 0;
        self.segments.iter().map(move |s| {
            let end = start + s.tokens as usize;
            let r = (s, &self.tokens[start..end]);
            start = end;
            r
        })
    }

    /// Packed inputs padded to `len` tokens (pad tokens: id 0, their own segment).
    pub(crate) fn packed(&self, len: usize) -> (TVec<TValue>, Vec<Segment>) {
        let mut ids = Vec::with_capacity(len);
        let mut pos = Vec::with_capacity(len);
        let mut seg = Vec::with_capacity(len);
        for (i, (_, toks)) in self.requests().enumerate() {
            ids.extend_from_slice(toks);
            pos.extend(0..toks.len() as i64);
            seg.extend(std::iter::repeat_n(i as i64, toks.len()));
        }
        let mut segments = self.segments.clone();
        let pad = len.saturating_sub(ids.len());
        if pad > 0 {
            ids.resize(len, 0);
            pos.extend(0..pad as i64);
            seg.resize(len, self.segments.len() as i64);
            segments.push(pad_segment(pad));
        }
        let t = ids.len();
        (
            tvec![vector(ids, &[t]), vector(pos, &[t]), vector(seg, &[t])],
            segments,
        )
    }
}

fn pad_segment(tokens: usize) -> Segment {
    Segment {
        lang: LangId::EXCLUDED,
        tokens: tokens as u32,
        sequence_id: None,
    }
}

fn vector(v: Vec<i64>, shape: &[usize]) -> TValue {
    // The length always matches the shape (built just above).
    tract_ndarray::ArrayD::from_shape_vec(shape, v)
        .map(|a| Tensor::from(a).into_tvalue())
        .unwrap_or_else(|_| Tensor::from(0i64).into_tvalue())
}

/// A batch laid out for one model: its input tensors in the model's order, and the
/// languages of the router rows (pad tokens are [`LangId::EXCLUDED`] segments).
#[derive(Debug)]
pub struct ModelInputs {
    /// The input tensors, in the model's input order.
    pub values: TVec<TValue>,
    /// The languages of the router rows, for [`Languages::Segments`](moescope_core::Languages).
    pub segments: Vec<Segment>,
}

/// Lays `batch` out for a model with `layout`, its inputs named `names` (in its order).
/// `fixed` is the pinned token count, if any.
pub(crate) fn lay_out(
    batch: &TokenBatch,
    layout: InputLayout,
    names: &[String],
    fixed: Option<usize>,
) -> Result<ModelInputs, String> {
    if let Some(n) = fixed {
        let longest = match layout {
            InputLayout::Packed => batch.tokens(),
            InputLayout::HuggingFace { .. } => {
                batch.requests().map(|r| r.1.len()).max().unwrap_or(0)
            }
        };
        if longest > n {
            return Err(format!(
                "{longest} tokens do not fit the model's fixed length of {n}"
            ));
        }
        if matches!(layout, InputLayout::HuggingFace { .. }) && batch.segments.len() > 1 {
            return Err(format!(
                "{} requests, but with a fixed length the model takes one request per run",
                batch.segments.len()
            ));
        }
    }
    let (by_name, segments) = match layout {
        InputLayout::Packed => {
            let (v, s) = batch.packed(fixed.unwrap_or(batch.tokens()));
            let named: Vec<(&str, TValue)> = ["input_ids", "position_ids", "segment_ids"]
                .into_iter()
                .zip(v)
                .collect();
            (named, s)
        }
        InputLayout::HuggingFace { .. } => {
            let rows = batch.segments.len().max(1);
            let width = fixed.unwrap_or_else(|| {
                batch
                    .requests()
                    .map(|r| r.1.len())
                    .max()
                    .unwrap_or(1)
                    .max(1)
            });
            let mut ids = vec![0i64; rows * width];
            let mut mask = vec![0i64; rows * width];
            let mut pos = vec![0i64; rows * width];
            let mut segments = Vec::with_capacity(2 * rows);
            for (r, (seg, toks)) in batch.requests().enumerate() {
                let row = r * width;
                ids[row..row + toks.len()].copy_from_slice(toks);
                mask[row..row + toks.len()].fill(1);
                for (j, p) in pos[row..row + width].iter_mut().enumerate() {
                    *p = j as i64;
                }
                segments.push(*seg);
                if width > toks.len() {
                    segments.push(pad_segment(width - toks.len()));
                }
            }
            if batch.segments.is_empty() {
                segments.push(pad_segment(width));
            }
            let shape = [rows, width];
            let named = vec![
                ("input_ids", vector(ids, &shape)),
                ("attention_mask", vector(mask, &shape)),
                ("position_ids", vector(pos, &shape)),
            ];
            (named, segments)
        }
    };
    let mut values = TVec::new();
    for n in names {
        match by_name.iter().find(|(k, _)| k == n) {
            Some((_, v)) => values.push(v.clone()),
            None => return Err(format!("no value for input {n}")),
        }
    }
    Ok(ModelInputs { values, segments })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, dtype: DataType, dims: &[&str]) -> DeclaredInput {
        DeclaredInput {
            name: name.into(),
            dtype: Some(dtype),
            dims: Some(dims.iter().map(|d| Some((*d).to_owned())).collect()),
        }
    }

    #[test]
    fn layouts_are_recognised_by_names_ranks_and_types() {
        let packed = [
            input("input_ids", DataType::Int64, &["T"]),
            input("position_ids", DataType::Int64, &["T"]),
            input("segment_ids", DataType::Int64, &["T"]),
        ];
        assert_eq!(recognise(&packed), Ok(InputLayout::Packed));
        let hf = [
            input("input_ids", DataType::Int64, &["1", "T"]),
            input("attention_mask", DataType::Int64, &["1", "T"]),
        ];
        assert_eq!(
            recognise(&hf),
            Ok(InputLayout::HuggingFace {
                attention_mask: true,
                position_ids: false
            })
        );
        let f32_ids = [input("input_ids", DataType::Float, &["1", "T"])];
        assert!(recognise(&f32_ids).unwrap_err().contains("float"));
        let extra = [
            input("input_ids", DataType::Int64, &["1", "T"]),
            input("past_key_values", DataType::Float, &["1", "2", "T", "16"]),
        ];
        assert!(recognise(&extra).unwrap_err().contains("past_key_values"));
        assert!(recognise(&[]).is_err());
    }

    #[test]
    fn hugging_face_rows_are_right_padded_and_pads_excluded() {
        let mut b = TokenBatch::new();
        b.push(&[5, 6, 7], LangId::UND, Some(1));
        b.push(&[8], LangId::UND, None);
        let names = ["input_ids".to_owned(), "attention_mask".to_owned()];
        let layout = InputLayout::HuggingFace {
            attention_mask: true,
            position_ids: false,
        };
        let m = lay_out(&b, layout, &names, None).unwrap();
        assert_eq!(m.values.len(), 2);
        assert_eq!(m.values[0].shape(), &[2, 3]);
        let ids = m.values[0].try_as_plain_ram().unwrap();
        assert_eq!(ids.as_slice::<i64>().unwrap(), [5, 6, 7, 8, 0, 0]);
        let mask = m.values[1].try_as_plain_ram().unwrap();
        assert_eq!(mask.as_slice::<i64>().unwrap(), [1, 1, 1, 1, 0, 0]);
        let tokens: Vec<(u32, bool)> = m
            .segments
            .iter()
            .map(|s| (s.tokens, s.lang == LangId::EXCLUDED))
            .collect();
        assert_eq!(tokens, [(3, false), (1, false), (2, true)]);

        // A fixed length pads to it, and takes one request per run.
        let err = lay_out(&b, layout, &names, Some(8)).unwrap_err();
        assert!(err.contains("one request per run"), "{err}");
        let mut one = TokenBatch::new();
        one.push(&[1, 2], LangId::UND, None);
        let m = lay_out(&one, layout, &names, Some(4)).unwrap();
        assert_eq!(m.values[0].shape(), &[1, 4]);
        assert!(lay_out(&one, layout, &names, Some(1)).is_err());
    }

    #[test]
    fn packed_batches_restart_positions_and_pad_in_their_own_segment() {
        let mut b = TokenBatch::new();
        b.push(&[1, 2, 3], LangId::UND, Some(7));
        b.push(&[], LangId::UND, None);
        b.push(&[4, 5], LangId::EXCLUDED, None);
        let (v, segs) = b.packed(7);
        let col = |i: usize| {
            v[i].try_as_plain_ram()
                .unwrap()
                .as_slice::<i64>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(col(0), [1, 2, 3, 4, 5, 0, 0]);
        assert_eq!(col(1), [0, 1, 2, 0, 1, 0, 1]);
        assert_eq!(col(2), [0, 0, 0, 1, 1, 2, 2]);
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[2].lang, LangId::EXCLUDED);
        assert_eq!(b.inputs()[0].shape(), &[5]);
    }
}
