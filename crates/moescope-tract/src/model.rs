//! [`MoeModel`]: an ONNX MoE model loaded with tract, its routers exposed as extra outputs.
//!
//! Loading: parse the protobuf, find the routers ([`crate::detect`]), translate with
//! tract-onnx, add each router's logits (and its `TopK` indices, when the graph has one) to
//! the model's outputs, and only then optimize, so fusion cannot remove them. Running gives
//! [`MoeOutputs`]: the model's own outputs, then the routers'. Recording hands each MoE layer's
//! top-k ids and logits to a [`Recorder`] with each token's language.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use moescope_core::{LangId, Languages, Recorded, Recorder, RouterBatch, Segment};
use moescope_core::{ModelSpec, RecordError};
use tract_onnx::prelude::*;

use crate::detect::{layer_number, Found, GraphIndex, RouterSelector};

/// Why a model could not be loaded, run or recorded. Every message names the model, and the
/// node where one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or parsed, or tract could not translate or optimize it.
    #[error("model {model}: {detail}")]
    Load {
        /// The model (file name).
        model: String,
        /// What went wrong, with tract's chain of causes.
        detail: String,
    },
    /// The graph has an operator tract does not implement.
    #[error(
        "model {model}: node {node:?} uses operator {op}, which tract-onnx does not implement"
    )]
    UnsupportedOperator {
        /// The model.
        model: String,
        /// The node.
        node: String,
        /// Its ONNX `op_type`.
        op: String,
    },
    /// No router was found.
    #[error("model {model}: no router found ({how}); name the router tensors explicitly")]
    NoRouter {
        /// The model.
        model: String,
        /// How they were searched for.
        how: String,
    },
    /// An explicitly named router is not in the graph.
    #[error("model {model}: router {name:?} is neither a tensor nor a node of the graph")]
    RouterNotFound {
        /// The model.
        model: String,
        /// The name given.
        name: String,
    },
    /// A router's output does not have the expected shape.
    #[error("model {model}: router node {node:?} ({tensor}): {detail}")]
    ShapeMismatch {
        /// The model.
        model: String,
        /// The node producing the router logits.
        node: String,
        /// The router-logits tensor.
        tensor: String,
        /// What was expected and found.
        detail: String,
    },
    /// The model's spec does not match the graph.
    #[error("model {model}: {detail}")]
    SpecMismatch {
        /// The model.
        model: String,
        /// The mismatch.
        detail: String,
    },
    /// Running the model failed.
    #[error("model {model}: run failed: {detail}")]
    Run {
        /// The model.
        model: String,
        /// tract's error chain.
        detail: String,
    },
    /// The recorder rejected a layer's batch (a language list of the wrong length, say).
    #[error("model {model}: recording router node {node:?}: {source}")]
    Record {
        /// The model.
        model: String,
        /// The router node.
        node: String,
        /// The recorder's error.
        source: RecordError,
    },
}

/// How [`MoeModel::load`] finds the routers and names the model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// How to find the routers (default: graph shape).
    pub routers: RouterSelector,
    /// The `model` label (default: the file's parent folder name, or its stem).
    pub name: Option<String>,
    /// The model's spec (say from its Hugging Face `config.json`); checked against the graph.
    /// Default: built from the graph (E from the router's shape, k from its `TopK`).
    pub spec: Option<ModelSpec>,
    /// Experts per token, when the graph has no `TopK` after the routers and no spec is given.
    pub top_k: Option<usize>,
}

/// One MoE layer's router, as found in the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterNode {
    /// The MoE layer's depth index (0..L).
    pub index: usize,
    /// The model's own layer number (from the node name, or the depth index).
    pub layer_number: u32,
    /// The router-logits tensor (ONNX name).
    pub tensor: String,
    /// The node producing it.
    pub node: String,
    /// The `TopK` indices tensor downstream of it, when the graph has one: recorded as the
    /// model's own routing decision.
    pub topk_ids: Option<String>,
}

/// An ONNX MoE model ready to run, with its routers as extra outputs.
#[derive(Debug, Clone)]
pub struct MoeModel {
    name: String,
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    model_outputs: usize,
    routers: Vec<RouterNode>,
    /// Output index of each router's TopK indices, when exposed.
    ids_output: Vec<Option<usize>>,
    spec: ModelSpec,
}

fn model_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "model" {
        if let Some(dir) = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
        {
            return dir.to_owned();
        }
    }
    stem.to_owned()
}

fn chain(e: &TractError) -> String {
    format!("{e:#}")
}

impl MoeModel {
    /// Loads `path`, finds its routers and builds the optimized plan.
    ///
    /// # Errors
    /// [`Error::Load`] (unreadable file, translation or optimization failure),
    /// [`Error::UnsupportedOperator`], [`Error::NoRouter`], [`Error::RouterNotFound`],
    /// [`Error::ShapeMismatch`] (a router that is not `… × E` with a known E, or routers with
    /// different E), [`Error::SpecMismatch`]. Never panics.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<MoeModel, Error> {
        let path = path.as_ref();
        let name = options.name.clone().unwrap_or_else(|| model_name(path));
        let load_err = |what: &str, e: TractError| Error::Load {
            model: name.clone(),
            detail: format!("{what}: {}", chain(&e)),
        };
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_path(path)
            .map_err(|e| load_err(&format!("reading {}", path.display()), e))?;
        let index = GraphIndex::new(&proto).ok_or_else(|| Error::Load {
            model: name.clone(),
            detail: "the ONNX file has no graph".into(),
        })?;
        let found = find_routers(&index, &options.routers, &name)?;

        let mut model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| load_err("translating the graph", e))?;
        if let Some(n) = model
            .nodes()
            .iter()
            .find(|n| n.op.name().starts_with("Unimplemented("))
        {
            let op = n.op.name();
            let op = op
                .trim_start_matches("Unimplemented(")
                .trim_end_matches(')');
            return Err(Error::UnsupportedOperator {
                model: name,
                node: n.name.clone(),
                op: op.to_owned(),
            });
        }
        let mut outputs: Vec<String> = Vec::new();
        for outlet in model.output_outlets().map_err(|e| load_err("outputs", e))? {
            outputs.push(
                model
                    .outlet_label(*outlet)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{}:{}", model.node(outlet.node).name, outlet.slot)),
            );
        }
        let model_outputs = outputs.len();
        for f in &found {
            outputs.push(f.logits.clone());
        }
        let mut ids_output = Vec::with_capacity(found.len());
        for f in &found {
            ids_output.push(f.topk_ids.as_ref().map(|t| {
                outputs.push(t.clone());
                outputs.len() - 1
            }));
        }
        // Before optimizing: fusion may otherwise remove the intermediate outlets.
        model
            .select_outputs_by_name(&outputs)
            .map_err(|e| load_err("exposing the router outputs", e))?;
        let typed = model
            .into_typed()
            .map_err(|e| load_err("typing the graph", e))?;

        let mut experts: Option<usize> = None;
        for (i, f) in found.iter().enumerate() {
            let mismatch = |detail: String| Error::ShapeMismatch {
                model: name.clone(),
                node: f.node.clone(),
                tensor: f.logits.clone(),
                detail,
            };
            let outlet =
                typed.output_outlets().map_err(|e| load_err("outputs", e))?[model_outputs + i];
            let fact = typed
                .outlet_fact(outlet)
                .map_err(|e| load_err("router fact", e))?;
            if fact.datum_type != f32::datum_type() {
                return Err(mismatch(format!(
                    "router logits are {:?}, expected f32",
                    fact.datum_type
                )));
            }
            if fact.rank() < 2 {
                return Err(mismatch(format!(
                    "router logits have shape {:?}, expected tokens × experts",
                    fact.shape
                )));
            }
            let e = fact.shape[fact.rank() - 1].as_i64().ok_or_else(|| {
                mismatch(format!(
                    "the expert dimension of shape {:?} is not a known number",
                    fact.shape
                ))
            })? as usize;
            match experts {
                Some(prev) if prev != e => {
                    return Err(mismatch(format!(
                        "{e} experts, but the routers before it have {prev}"
                    )))
                }
                _ => experts = Some(e),
            }
        }
        let num_experts = experts.unwrap_or(0);

        let spec = build_spec(&name, &found, num_experts, options)?;
        let optimized = typed
            .into_optimized()
            .map_err(|e| load_err("optimizing", e))?;
        let plan = optimized
            .into_runnable()
            .map_err(|e| load_err("planning", e))?;
        let routers = found
            .iter()
            .enumerate()
            .map(|(i, f)| RouterNode {
                index: i,
                layer_number: spec.moe_layers[i],
                tensor: f.logits.clone(),
                node: f.node.clone(),
                topk_ids: f.topk_ids.clone(),
            })
            .collect();
        Ok(MoeModel {
            name,
            path: path.to_owned(),
            plan,
            model_outputs,
            routers,
            ids_output,
            spec,
        })
    }

    /// The model label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The routers, in depth order.
    pub fn routers(&self) -> &[RouterNode] {
        &self.routers
    }

    /// The model's spec (E, k, MoE layer numbers): build the [`Recorder`] from it.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// How many outputs the model itself has (the routers' come after them).
    pub fn model_outputs(&self) -> usize {
        self.model_outputs
    }

    /// Runs the model on `inputs` (in the model's input order).
    ///
    /// # Errors
    /// [`Error::Run`] with tract's message (wrong input type or shape, say).
    pub fn run(&self, inputs: TVec<TValue>) -> Result<MoeOutputs, Error> {
        let outputs = self.plan.run(inputs);
        clear_upper_simd_state();
        let outputs = outputs.map_err(|e| Error::Run {
            model: self.name.clone(),
            detail: chain(&e),
        })?;
        Ok(MoeOutputs {
            outputs,
            model_outputs: self.model_outputs,
            routers: self.routers.len(),
        })
    }

    /// The router logits of MoE layer `index` in `out`, row-major `T × E`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the output is not f32 with a last dimension of E.
    pub fn router_logits<'a>(&self, out: &'a MoeOutputs, index: usize) -> Result<&'a [f32], Error> {
        let r = self.router(index)?;
        let t = &out.outputs[self.model_outputs + index];
        let e = self.spec.num_experts as usize;
        let mismatch = |detail: String| Error::ShapeMismatch {
            model: self.name.clone(),
            node: r.node.clone(),
            tensor: r.tensor.clone(),
            detail,
        };
        if t.shape().last() != Some(&e) {
            return Err(mismatch(format!(
                "output shape {:?}, expected … × {e}",
                t.shape()
            )));
        }
        t.try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(|err| mismatch(format!("not f32 logits: {err}")))
    }

    /// The model's own top-k indices of MoE layer `index` (from its `TopK`), when exposed.
    pub fn topk_ids<'a>(&self, out: &'a MoeOutputs, index: usize) -> Option<&'a [i64]> {
        let ix = (*self.ids_output.get(index)?)?;
        out.outputs[ix]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<i64>())
            .ok()
    }

    fn router(&self, index: usize) -> Result<&RouterNode, Error> {
        self.routers.get(index).ok_or_else(|| Error::SpecMismatch {
            model: self.name.clone(),
            detail: format!(
                "MoE layer index {index}, but the model has {} routers",
                self.routers.len()
            ),
        })
    }

    /// Records every MoE layer of `out` into `recorder`: the model's `TopK` indices when the
    /// graph has them (else the top-k of the logits, ties to the lower index), with the logits
    /// for probabilities, and `languages` for the tokens. `scratch` holds computed ids between
    /// calls (no allocation once warm).
    ///
    /// # Errors
    /// [`Error::Record`] naming the router node when the recorder rejects a batch (the
    /// languages do not cover the tokens, say; the recorder counts it as a drop too), or
    /// [`Error::ShapeMismatch`] for a router output of the wrong shape.
    pub fn record(
        &self,
        recorder: &Recorder,
        out: &MoeOutputs,
        languages: Languages<'_>,
        scratch: &mut Vec<u32>,
    ) -> Result<Recorded, Error> {
        let mut total = Recorded::default();
        let k = self.spec.top_k as usize;
        let e = self.spec.num_experts as usize;
        for r in &self.routers {
            let logits = self.router_logits(out, r.index)?;
            let result = match self.topk_ids(out, r.index) {
                Some(ids) => {
                    recorder.record(&RouterBatch::at_depth(r.index, ids, languages).logits(logits))
                }
                None => {
                    top_k_into(logits, e, k, scratch);
                    recorder.record(
                        &RouterBatch::at_depth(r.index, scratch.as_slice(), languages)
                            .logits(logits),
                    )
                }
            };
            let rec = result.map_err(|source| Error::Record {
                model: self.name.clone(),
                node: r.node.clone(),
                source,
            })?;
            total.recorded += rec.recorded;
            total.sampled_out += rec.sampled_out;
            total.excluded += rec.excluded;
            total.dropped += rec.dropped;
        }
        Ok(total)
    }
}

/// What one run returns: the model's outputs, then the routers' (read them through
/// [`MoeModel::router_logits`] and [`MoeModel::topk_ids`]).
#[derive(Debug)]
pub struct MoeOutputs {
    outputs: TVec<TValue>,
    model_outputs: usize,
    routers: usize,
}

impl MoeOutputs {
    /// The model's own outputs (e.g. `logits`), in its output order.
    pub fn model_outputs(&self) -> &[TValue] {
        &self.outputs[..self.model_outputs]
    }

    /// Every output: the model's, the router logits (one per MoE layer), then the `TopK`
    /// indices that were exposed.
    pub fn all(&self) -> &[TValue] {
        &self.outputs
    }

    /// Number of MoE layers.
    pub fn routers(&self) -> usize {
        self.routers
    }
}

/// Top-k expert ids of each row of `logits` (`T × e`, row-major), largest first, ties to the
/// lower index, into `out` (`T × k`). Rows with NaN keep NaN out of the ranking (a NaN is
/// never above a number); the recorder drops such rows anyway.
pub fn top_k_into(logits: &[f32], e: usize, k: usize, out: &mut Vec<u32>) {
    out.clear();
    if e == 0 || k == 0 {
        return;
    }
    let k = k.min(e);
    for row in logits.chunks_exact(e) {
        let start = out.len();
        for (j, &v) in row.iter().enumerate() {
            let filled = out.len() - start;
            // Position among the current picks (strictly greater goes first: ties keep order).
            let mut pos = filled;
            while pos > 0 && v > row[out[start + pos - 1] as usize] {
                pos -= 1;
            }
            if pos < k {
                if filled < k {
                    out.push(0);
                }
                let end = out.len();
                out.copy_within(start + pos..end - 1, start + pos + 1);
                out[start + pos] = j as u32;
            }
        }
    }
}

/// Clears the upper halves of the AVX registers after tract ran.
///
/// tract 0.23's AVX-512 matrix kernels return with the upper register state dirty. Until a
/// `vzeroupper`, every legacy-SSE instruction of the thread (all scalar `f64` code compiled
/// for baseline x86-64: the recorder's softmax, libm's `exp` and `log2`) pays a false
/// dependency on the whole register: measured here, recording one 264-token batch with
/// logits took 5.6 ms after a tract run and 0.24 ms after a `vzeroupper`.
#[inline]
#[allow(unsafe_code)] // one documented intrinsic call, below
pub fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn zeroupper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX (checked just above), the only requirement of a
            // `#[target_feature(enable = "avx")]` function; `_mm256_zeroupper` is an
            // intrinsic the compiler knows, so it keeps no vector value live across it.
            unsafe { zeroupper() }
        }
    }
}

fn find_routers(
    index: &GraphIndex<'_>,
    selector: &RouterSelector,
    model: &str,
) -> Result<Vec<Found>, Error> {
    let found = match selector {
        RouterSelector::GraphShape => {
            let f = index.by_graph_shape();
            if f.is_empty() {
                return Err(Error::NoRouter {
                    model: model.to_owned(),
                    how: "no MatMul/Gemm reaches a TopK through Softmax/Sigmoid or element-wise \
                          steps"
                        .into(),
                });
            }
            f
        }
        RouterSelector::NamePatterns(patterns) => {
            let f = index.by_patterns(patterns);
            if f.is_empty() {
                return Err(Error::NoRouter {
                    model: model.to_owned(),
                    how: format!("no tensor or node name matches {patterns:?}"),
                });
            }
            f
        }
        RouterSelector::Names(names) => {
            if names.is_empty() {
                return Err(Error::NoRouter {
                    model: model.to_owned(),
                    how: "the explicit router list is empty".into(),
                });
            }
            let mut f = Vec::new();
            for n in names {
                let (tensor, node) = index.resolve(n).ok_or_else(|| Error::RouterNotFound {
                    model: model.to_owned(),
                    name: n.clone(),
                })?;
                debug_assert!(index.has_tensor(&tensor));
                f.push(index.with_topk(tensor, node));
            }
            f
        }
    };
    Ok(found)
}

fn build_spec(
    name: &str,
    found: &[Found],
    num_experts: usize,
    options: &LoadOptions,
) -> Result<ModelSpec, Error> {
    let mismatch = |detail: String| Error::SpecMismatch {
        model: name.to_owned(),
        detail,
    };
    let graph_k = found.iter().find_map(|f| f.topk_k);
    if let Some(f) = found
        .iter()
        .find(|f| f.topk_k.is_some() && f.topk_k != graph_k)
    {
        return Err(mismatch(format!(
            "router node {:?} selects top-{} but an earlier one top-{}",
            f.node,
            f.topk_k.unwrap_or(0),
            graph_k.unwrap_or(0)
        )));
    }
    if let Some(spec) = &options.spec {
        if spec.num_experts as usize != num_experts {
            return Err(mismatch(format!(
                "the spec says {} experts, the router outputs have {num_experts}",
                spec.num_experts
            )));
        }
        if spec.num_moe_layers() != found.len() {
            return Err(mismatch(format!(
                "the spec has {} MoE layers, the graph {} routers",
                spec.num_moe_layers(),
                found.len()
            )));
        }
        if let Some(k) = graph_k {
            if k != spec.top_k as usize {
                return Err(mismatch(format!(
                    "the spec says top-{}, the graph's TopK takes {k}",
                    spec.top_k
                )));
            }
        }
        let mut spec = spec.clone();
        if let Some(n) = &options.name {
            spec.name = n.clone();
        }
        return Ok(spec);
    }
    let k = graph_k.or(options.top_k).ok_or_else(|| {
        mismatch(format!(
            "top-k unknown: no TopK follows router node {:?}; pass LoadOptions::top_k",
            found.first().map_or("", |f| f.node.as_str())
        ))
    })?;
    let numbers: Option<Vec<u32>> = found
        .iter()
        .map(|f| layer_number(&f.node).or_else(|| layer_number(&f.logits)))
        .collect();
    let layers = match numbers {
        Some(n) if n.windows(2).all(|w| w[0] < w[1]) => n,
        _ => (0..found.len() as u32).collect(),
    };
    let to_u32 = |v: usize, what: &str| {
        u32::try_from(v).map_err(|_| mismatch(format!("{what} {v} is too large")))
    };
    ModelSpec::new(
        name,
        to_u32(num_experts, "experts")?,
        to_u32(k, "top-k")?,
        layers,
    )
    .map_err(|e| mismatch(e.to_string()))
}

/// A batch of requests packed into one flat token stream, the layout of the bundled model
/// (`input_ids`, `position_ids`, `segment_ids`, each `[T]` int64): positions restart and
/// attention stays within each request. Keeps the [`Segment`]s (language, sequence id) for
/// the recorder.
#[derive(Clone, Debug, Default)]
pub struct PackedBatch {
    input_ids: Vec<i64>,
    position_ids: Vec<i64>,
    segment_ids: Vec<i64>,
    segments: Vec<Segment>,
}

impl PackedBatch {
    /// An empty batch.
    pub fn new() -> PackedBatch {
        PackedBatch::default()
    }

    /// Appends one request's tokens, tagged `lang`.
    pub fn push(&mut self, tokens: &[i64], lang: LangId, sequence_id: Option<u64>) {
        if tokens.is_empty() {
            return;
        }
        let seg = self.segments.len() as i64;
        self.input_ids.extend_from_slice(tokens);
        self.position_ids.extend(0..tokens.len() as i64);
        self.segment_ids
            .extend(std::iter::repeat_n(seg, tokens.len()));
        self.segments.push(Segment {
            lang,
            tokens: tokens.len() as u32,
            sequence_id,
        });
    }

    /// Tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether no token was pushed.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// The requests, in order (for [`Languages::Segments`]).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The model inputs `input_ids`, `position_ids`, `segment_ids`.
    pub fn inputs(&self) -> TVec<TValue> {
        let t = self.input_ids.len();
        let tensor = |v: &[i64]| -> TValue {
            // A 1-D tensor from a slice of the right length cannot fail.
            Tensor::from_shape(&[t], v)
                .unwrap_or_else(|_| Tensor::zero::<i64>(&[t]).unwrap_or_default())
                .into_tvalue()
        };
        tvec![
            tensor(&self.input_ids),
            tensor(&self.position_ids),
            tensor(&self.segment_ids)
        ]
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.input_ids.clear();
        self.position_ids.clear();
        self.segment_ids.clear();
        self.segments.clear();
    }
}

/// The same ONNX file run as plain tract, its outputs untouched and no recorder: the
/// baseline of the overhead benchmark.
#[derive(Debug, Clone)]
pub struct PlainModel {
    name: String,
    plan: Arc<TypedRunnableModel>,
}

impl PlainModel {
    /// Loads and optimizes `path` with tract-onnx, nothing else.
    ///
    /// # Errors
    /// [`Error::Load`].
    pub fn load(path: impl AsRef<Path>) -> Result<PlainModel, Error> {
        let path = path.as_ref();
        let name = model_name(path);
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| Error::Load {
                model: name.clone(),
                detail: chain(&e),
            })?;
        Ok(PlainModel { name, plan })
    }

    /// Runs it.
    ///
    /// # Errors
    /// [`Error::Run`].
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, Error> {
        let outputs = self.plan.run(inputs);
        clear_upper_simd_state();
        outputs.map_err(|e| Error::Run {
            model: self.name.clone(),
            detail: chain(&e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(row: &[f32], k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..row.len() as u32).collect();
        idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        idx.truncate(k);
        idx
    }

    #[test]
    fn top_k_matches_a_sort_with_ties_to_the_lower_index() {
        let rows: Vec<f32> = vec![
            0.1, 0.5, 0.5, -1.0, 2.0, 0.5, //
            3.0, 3.0, 3.0, 3.0, 3.0, 3.0, //
            -5.0, -4.0, -3.0, -2.0, -1.0, 0.0,
        ];
        let mut out = Vec::new();
        for k in 1..=6 {
            top_k_into(&rows, 6, k, &mut out);
            let want: Vec<u32> = rows.chunks(6).flat_map(|r| naive(r, k)).collect();
            assert_eq!(out, want, "k = {k}");
        }
    }

    #[test]
    fn packed_batch_restarts_positions_per_request() {
        let mut b = PackedBatch::new();
        b.push(&[1, 2, 3], LangId::UND, Some(7));
        b.push(&[], LangId::UND, None);
        b.push(&[4, 5], LangId::EXCLUDED, None);
        assert_eq!(b.position_ids, [0, 1, 2, 0, 1]);
        assert_eq!(b.segment_ids, [0, 0, 0, 1, 1]);
        assert_eq!(b.segments().len(), 2);
        assert_eq!(b.inputs()[0].shape(), &[5]);
    }
}
