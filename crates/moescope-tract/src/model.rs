//! [`MoeModel`]: an ONNX MoE model loaded with tract, its routers exposed as extra outputs;
//! running it ([`MoeModel::run`]) and recording its routing ([`MoeModel::record`]) are
//! separate steps, so a recording problem never costs the caller the model's output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use moescope_core::{DropReason, ExpertId, Languages, ModelSpec, Recorded, Recorder, RouterBatch};
use tract_onnx::prelude::*;

use crate::detect::{RouterSelector, Scoring};
use crate::inputs::{lay_out, InputLayout, ModelInputs, TokenBatch};
use crate::load::chain;
use crate::{clear_upper_simd_state, Error};

/// How [`MoeModel::load`] finds the routers, names the model and shapes its inputs.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// How to find the routers (default: graph shape).
    pub routers: RouterSelector,
    /// The `model` label (default: the file's parent folder name, or its stem).
    pub name: Option<String>,
    /// The model's spec (say from its Hugging Face `config.json`); checked against the graph,
    /// and the source of the MoE layer numbers. Default: built from the graph (E from the
    /// router's shape, k from its `TopK`, layer numbers from node metadata or names).
    pub spec: Option<ModelSpec>,
    /// Experts per token, when the graph has no `TopK` after the routers and no spec is given.
    pub top_k: Option<usize>,
    /// Pin the token axis of every input to this length (and the batch axis to 1) before
    /// tract types the graph. For exports that tract cannot type with symbolic shapes (a
    /// causal mask built from the sequence length, say); batches are padded to this length
    /// and the pad tokens are never recorded.
    pub fixed_tokens: Option<usize>,
}

/// One MoE layer's router, as found in the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterNode {
    /// The MoE layer's depth index (0..L).
    pub index: usize,
    /// The model's own layer number (from the spec, node metadata, node names, or depth).
    pub layer_number: u32,
    /// The router-logits tensor (ONNX name).
    pub tensor: String,
    /// The node producing it.
    pub node: String,
    /// The gate node (the router's `MatMul`/`Gemm`).
    pub gate: String,
    /// The routing decision's ids tensor (the final `TopK`'s indices), when the graph has
    /// one: recorded as the model's own routing decision.
    pub topk_ids: Option<String>,
    /// The selection-scores tensor recorded, when it is not the logits.
    pub scores: Option<String>,
    /// How the scores relate to the logits.
    pub scoring: Scoring,
}

/// Output slots of one router.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slots {
    pub logits: usize,
    pub scores: Option<usize>,
    pub ids: Option<usize>,
}

/// An ONNX MoE model ready to run, with its routers as extra outputs.
#[derive(Debug, Clone)]
pub struct MoeModel {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) plan: Arc<TypedRunnableModel>,
    pub(crate) model_outputs: usize,
    pub(crate) routers: Vec<RouterNode>,
    pub(crate) slots: Vec<Slots>,
    pub(crate) spec: ModelSpec,
    pub(crate) layout: InputLayout,
    pub(crate) input_names: Vec<String>,
    pub(crate) fixed_tokens: Option<usize>,
    pub(crate) warnings: Vec<String>,
}

/// Buffers [`MoeModel::record_with`] reuses between calls (no allocation once warm).
#[derive(Clone, Debug, Default)]
pub struct RecordScratch {
    ids: Vec<u32>,
    scores: Vec<f32>,
}

impl MoeModel {
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

    /// The model's input layout, recognised at load.
    pub fn layout(&self) -> InputLayout {
        self.layout
    }

    /// The model's input names, in its order.
    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// The pinned token count ([`LoadOptions::fixed_tokens`]), if any.
    pub fn fixed_tokens(&self) -> Option<usize> {
        self.fixed_tokens
    }

    /// What loading had to guess (layer numbers by depth, names reordered): print these.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Lays `batch` out as this model's inputs (padding as its layout needs), with the
    /// languages of the router rows (pad rows excluded).
    ///
    /// # Errors
    /// [`Error::Batch`] when the batch does not fit: longer than the fixed length, or several
    /// requests for a fixed-length Hugging Face layout (run them one at a time).
    pub fn inputs(&self, batch: &TokenBatch) -> Result<ModelInputs, Error> {
        lay_out(batch, self.layout, &self.input_names, self.fixed_tokens).map_err(|detail| {
            Error::Batch {
                model: self.name.clone(),
                layout: self.layout,
                detail,
            }
        })
    }

    /// Runs the model on `inputs` (in the model's input order; see [`MoeModel::inputs`]).
    ///
    /// # Errors
    /// [`Error::Run`] with tract's message (wrong input type or shape, say) and, for a
    /// wrong number of inputs, the inputs the model takes.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<MoeOutputs, Error> {
        if inputs.len() != self.input_names.len() {
            return Err(Error::Run {
                model: self.name.clone(),
                detail: format!(
                    "{} inputs given, the model takes {} ({}, {:?} layout); build them with \
                     MoeModel::inputs",
                    inputs.len(),
                    self.input_names.len(),
                    self.input_names.join(", "),
                    self.layout
                ),
            });
        }
        let outputs = self.plan.run(inputs);
        clear_upper_simd_state();
        let outputs = outputs.map_err(|e| {
            let detail = chain(&e);
            Error::Run {
                model: self.name.clone(),
                detail: format!("{detail}{}", crate::load::hint(&detail, self.fixed_tokens)),
            }
        })?;
        Ok(MoeOutputs {
            outputs,
            model_outputs: self.model_outputs,
            routers: self.routers.len(),
        })
    }

    fn mismatch(&self, r: &RouterNode, detail: String) -> Error {
        Error::ShapeMismatch {
            model: self.name.clone(),
            node: r.node.clone(),
            tensor: r.tensor.clone(),
            detail,
        }
    }

    fn f32_output<'a>(
        &self,
        out: &'a MoeOutputs,
        r: &RouterNode,
        slot: usize,
    ) -> Result<&'a [f32], Error> {
        let t = out.outputs.get(slot).ok_or_else(|| {
            self.mismatch(
                r,
                format!(
                    "the outputs have {} tensors, not {}: are they another model's?",
                    out.outputs.len(),
                    slot + 1
                ),
            )
        })?;
        let e = self.spec.num_experts as usize;
        if t.shape().last() != Some(&e) {
            return Err(self.mismatch(r, format!("output shape {:?}, expected … × {e}", t.shape())));
        }
        t.try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(|err| self.mismatch(r, format!("not f32: {err}")))
    }

    /// The router logits of MoE layer `index` in `out`, row-major `T × E` (for routers named
    /// by [`RouterSelector::Tensors`], the named scores).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the output is not f32 with a last dimension of E.
    pub fn router_logits<'a>(&self, out: &'a MoeOutputs, index: usize) -> Result<&'a [f32], Error> {
        let r = self.router(index)?;
        self.f32_output(out, r, self.slots[index].logits)
    }

    /// The selection scores of MoE layer `index` (the softmax, the sigmoid plus bias, ...;
    /// the logits when the router has no scoring function), row-major `T × E`.
    ///
    /// # Errors
    /// As [`MoeModel::router_logits`].
    pub fn router_scores<'a>(&self, out: &'a MoeOutputs, index: usize) -> Result<&'a [f32], Error> {
        let r = self.router(index)?;
        let s = &self.slots[index];
        self.f32_output(out, r, s.scores.unwrap_or(s.logits))
    }

    /// The model's own top-k indices of MoE layer `index` (from its routing `TopK`, int64),
    /// when exposed.
    pub fn topk_ids<'a>(&self, out: &'a MoeOutputs, index: usize) -> Option<&'a [i64]> {
        let ix = self.slots.get(index)?.ids?;
        out.outputs
            .get(ix)?
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

    /// Records every MoE layer of `out` into `recorder`: the model's routing ids when the
    /// graph has them (else the top-k of the scores, ties to the lower index), its selection
    /// scores for probabilities, and `languages` for the tokens. `scratch` holds computed ids
    /// between calls; [`MoeModel::record_with`] also keeps the score buffer, so that nothing is
    /// allocated once warm.
    ///
    /// A failing layer does not stop the others. The recorder counts the tokens of a batch it
    /// rejects under its drop reason (`moe_routing_dropped_total{reason}`); the error
    /// is returned for the caller to log (at most once per interval: see
    /// [`FailureLog`](crate::FailureLog)). Inference results are not affected either way.
    ///
    /// # Errors
    /// The first layer's error: [`Error::Record`] naming the router node when the recorder
    /// rejects a batch (the languages do not cover the tokens, say), or
    /// [`Error::ShapeMismatch`] for a router output of the wrong shape.
    pub fn record(
        &self,
        recorder: &Recorder,
        out: &MoeOutputs,
        languages: Languages<'_>,
        scratch: &mut Vec<u32>,
    ) -> Result<Recorded, Error> {
        let mut s = RecordScratch {
            ids: std::mem::take(scratch),
            scores: Vec::new(),
        };
        let result = self.record_with(recorder, out, languages, &mut s);
        *scratch = s.ids;
        result
    }

    /// [`MoeModel::record`] with all of its buffers kept in `scratch`.
    ///
    /// # Errors
    /// As [`MoeModel::record`].
    pub fn record_with(
        &self,
        recorder: &Recorder,
        out: &MoeOutputs,
        languages: Languages<'_>,
        scratch: &mut RecordScratch,
    ) -> Result<Recorded, Error> {
        let mut total = Recorded::default();
        let mut first = None;
        for r in &self.routers {
            match self.record_layer(recorder, out, r, languages, scratch) {
                Ok(rec) => {
                    total.recorded += rec.recorded;
                    total.sampled_out += rec.sampled_out;
                    total.excluded += rec.excluded;
                    total.dropped += rec.dropped;
                }
                Err(e) => {
                    // The recorder counted what it rejected; a router output that could not
                    // be read never reached it: count its tokens here.
                    if !matches!(e, Error::Record { .. }) {
                        recorder.add_dropped(DropReason::ShapeMismatch, tokens_of(languages, out));
                    }
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    fn record_layer(
        &self,
        recorder: &Recorder,
        out: &MoeOutputs,
        r: &RouterNode,
        languages: Languages<'_>,
        scratch: &mut RecordScratch,
    ) -> Result<Recorded, Error> {
        let (k, e) = (self.spec.top_k as usize, self.spec.num_experts as usize);
        let scores = self.router_scores(out, r.index)?;
        let logits = r.scoring == Scoring::Logits;
        // Masked (−inf) and negative selection scores count as 0 (only the routed experts'
        // scores matter for selection; the recorder refuses negative probabilities).
        let scores = if !logits && scores.iter().any(|&x| x < 0.0) {
            scratch.scores.clear();
            scratch
                .scores
                .extend(scores.iter().map(|&x| if x < 0.0 { 0.0 } else { x }));
            &scratch.scores[..]
        } else {
            scores
        };
        let with_scores = (scores, logits);
        let ids = match self.slots[r.index].ids {
            Some(ix) => Some(out.outputs.get(ix).ok_or_else(|| {
                self.mismatch(r, "the routing ids are missing from the outputs".to_owned())
            })?),
            None => None,
        };
        let result = match ids {
            Some(t) => match t.try_as_plain_ram() {
                Ok(v) if v.as_slice::<i64>().is_ok() => {
                    let ids = v.as_slice::<i64>().unwrap_or_default();
                    record_ids(recorder, r.index, ids, languages, with_scores)
                }
                Ok(v) if v.as_slice::<i32>().is_ok() => {
                    let ids = v.as_slice::<i32>().unwrap_or_default();
                    record_ids(recorder, r.index, ids, languages, with_scores)
                }
                _ => {
                    return Err(self.mismatch(
                        r,
                        format!(
                            "routing ids are {:?}, expected int64 or int32",
                            t.datum_type()
                        ),
                    ))
                }
            },
            None => {
                top_k_into(scores, e, k, &mut scratch.ids);
                record_ids(recorder, r.index, &scratch.ids, languages, with_scores)
            }
        };
        result.map_err(|source| Error::Record {
            model: self.name.clone(),
            node: r.node.clone(),
            source,
        })
    }
}

/// How many tokens a batch has: from its languages, else from the model's first output.
fn tokens_of(languages: Languages<'_>, out: &MoeOutputs) -> u64 {
    match languages {
        Languages::PerToken(l) => l.len() as u64,
        Languages::Segments(s) => s.iter().map(|s| u64::from(s.tokens)).sum(),
        Languages::All(_) => out
            .model_outputs()
            .first()
            .and_then(|t| t.shape().iter().rev().nth(1).copied())
            .map_or(1, |n| n as u64),
    }
}

fn record_ids<'a, I: ExpertId>(
    recorder: &Recorder,
    layer: usize,
    ids: &'a [I],
    languages: Languages<'a>,
    (scores, logits): (&'a [f32], bool),
) -> Result<Recorded, moescope_core::RecordError> {
    let batch = RouterBatch::at_depth(layer, ids, languages);
    let batch = if logits {
        batch.logits(scores)
    } else {
        batch.probabilities(scores)
    };
    recorder.record(&batch)
}

/// What one run returns: the model's outputs, then the routers' (read them through
/// [`MoeModel::router_logits`], [`MoeModel::router_scores`] and [`MoeModel::topk_ids`]).
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

    /// Every output: the model's, then the routers' logits, scores and ids.
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
}
