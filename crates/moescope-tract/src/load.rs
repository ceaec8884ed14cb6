//! [`MoeModel::load`], in named steps: parse → find routers → check inputs → translate →
//! expose router outputs → type → check router facts → build the spec → optimize and plan.

use std::path::Path;

use moescope_core::ModelSpec;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceModel;

use crate::detect::{layer_number, Found, GraphIndex, NameProblem, RouterSelector};
use crate::inputs::{declared_inputs, fixed_facts, recognise, InputLayout, SUPPORTED};
use crate::model::{MoeModel, RouterNode, Slots};
use crate::onnx_meta::node_namespaces;
use crate::{Error, LoadOptions};

pub(crate) fn model_name(path: &Path) -> String {
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

pub(crate) fn chain(e: &TractError) -> String {
    format!("{e:#}")
}

/// A hint for tract's shape errors on exports it cannot type symbolically.
pub(crate) fn hint(detail: &str, fixed: Option<usize>) -> String {
    let symbolic = ["symbol", "broadcast", "Undetermined", "Can not compute"]
        .iter()
        .any(|s| detail.contains(s))
        // A node whose result does not have the shape typing gave it.
        || (detail.contains(", expected ") && detail.contains(", got "));
    match (symbolic, fixed) {
        (false, _) => String::new(),
        (true, None) => " (hint: tract could not type this export with symbolic shapes; load it \
                         with a fixed token count, LoadOptions::fixed_tokens, and batches are \
                         padded to it; see docs/EXPORT.md)"
            .into(),
        (true, Some(n)) => format!(
            " (hint: with the token count fixed at {n} this still fails: the export may have \
             baked the tracing input's length into the graph; export with the same length, \
             or with an explicit attention mask, see docs/EXPORT.md)"
        ),
    }
}

/// The pieces the steps pass along.
struct Loading<'a> {
    name: String,
    path: &'a Path,
    options: &'a LoadOptions,
    warnings: Vec<String>,
}

impl Loading<'_> {
    fn load_err(&self, what: &str, e: &TractError) -> Error {
        let detail = chain(e);
        Error::Load {
            model: self.name.clone(),
            detail: format!(
                "{what}: {detail}{}",
                hint(&detail, self.options.fixed_tokens)
            ),
        }
    }

    fn parse(&self) -> Result<ModelProto, Error> {
        tract_onnx::onnx()
            .proto_model_for_path(self.path)
            .map_err(|e| self.load_err(&format!("reading {}", self.path.display()), &e))
    }

    fn check_inputs(&self, proto: &ModelProto) -> Result<InputLayout, Error> {
        let declared = declared_inputs(proto);
        recognise(&declared).map_err(|why| Error::Inputs {
            model: self.name.clone(),
            found: declared
                .iter()
                .map(|i| i.describe())
                .collect::<Vec<_>>()
                .join(", "),
            why,
            supported: SUPPORTED,
        })
    }

    fn translate(&self, proto: &ModelProto) -> Result<InferenceModel, Error> {
        let model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(|e| self.load_err("translating the graph", &e))?;
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
                model: self.name.clone(),
                node: n.name.clone(),
                op: op.to_owned(),
            });
        }
        Ok(model)
    }

    /// Pins the token axis of every input, when asked to.
    fn fix_inputs(&self, model: &mut InferenceModel, layout: InputLayout) -> Result<(), Error> {
        if let Some(tokens) = self.options.fixed_tokens {
            for i in 0..model.inputs.len() {
                model
                    .set_input_fact(i, fixed_facts(layout, tokens))
                    .map_err(|e| self.load_err("fixing the input shapes", &e))?;
            }
        }
        Ok(())
    }

    /// Adds the routers' tensors to the outputs (before optimizing: fusion may otherwise
    /// remove the intermediate outlets). Returns the model's own output count and the slots.
    fn expose(
        &self,
        model: &mut InferenceModel,
        found: &[Found],
    ) -> Result<(usize, Vec<Slots>), Error> {
        let mut outputs: Vec<String> = Vec::new();
        for outlet in model
            .output_outlets()
            .map_err(|e| self.load_err("outputs", &e))?
        {
            outputs.push(
                model
                    .outlet_label(*outlet)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{}:{}", model.node(outlet.node).name, outlet.slot)),
            );
        }
        let model_outputs = outputs.len();
        let slot = |t: &String, outputs: &mut Vec<String>| match outputs
            .iter()
            .skip(model_outputs)
            .position(|o| o == t)
        {
            Some(i) => model_outputs + i,
            None => {
                outputs.push(t.clone());
                outputs.len() - 1
            }
        };
        let slots = found
            .iter()
            .map(|f| Slots {
                logits: slot(&f.logits, &mut outputs),
                scores: f.scores.as_ref().map(|t| slot(t, &mut outputs)),
                ids: f.topk_ids.as_ref().map(|t| slot(t, &mut outputs)),
            })
            .collect();
        model
            .select_outputs_by_name(&outputs)
            .map_err(|e| self.load_err("exposing the router outputs", &e))?;
        Ok((model_outputs, slots))
    }

    /// E from the routers' logits facts (all equal), and k from the ids facts when known.
    fn check_facts(
        &self,
        typed: &TypedModel,
        found: &[Found],
        slots: &[Slots],
    ) -> Result<(usize, Option<usize>), Error> {
        let outlets = typed
            .output_outlets()
            .map_err(|e| self.load_err("outputs", &e))?;
        let mut experts: Option<usize> = None;
        let mut ids_k: Option<usize> = None;
        for (f, s) in found.iter().zip(slots) {
            let mismatch = |detail: String| Error::ShapeMismatch {
                model: self.name.clone(),
                node: f.node.clone(),
                tensor: f.logits.clone(),
                detail,
            };
            let fact_of = |slot: usize| {
                typed
                    .outlet_fact(outlets[slot])
                    .map_err(|e| self.load_err("router fact", &e))
            };
            for slot in std::iter::once(s.logits).chain(s.scores) {
                let fact = fact_of(slot)?;
                if fact.datum_type != f32::datum_type() {
                    return Err(mismatch(format!(
                        "router logits or scores are {:?}, expected f32",
                        fact.datum_type
                    )));
                }
                if fact.rank() < 2 {
                    return Err(mismatch(format!(
                        "router logits or scores have shape {:?}, expected tokens × experts",
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
            if let Some(slot) = s.ids {
                let fact = fact_of(slot)?;
                if ![i64::datum_type(), i32::datum_type()].contains(&fact.datum_type) {
                    return Err(mismatch(format!(
                        "routing ids {:?} are {:?}, expected int64 or int32",
                        f.topk_ids.as_deref().unwrap_or(""),
                        fact.datum_type
                    )));
                }
                let k = fact
                    .shape
                    .iter()
                    .last()
                    .and_then(|d| d.as_i64())
                    .map(|k| k as usize);
                if let (Some(k), Some(graph_k)) = (k, f.topk_k) {
                    if k != graph_k {
                        return Err(mismatch(format!(
                            "routing ids have {k} columns, the TopK takes {graph_k}"
                        )));
                    }
                }
                if let (Some(k), Some(prev)) = (k, ids_k) {
                    if k != prev {
                        return Err(mismatch(format!(
                            "routing ids have {k} columns, an earlier router's {prev}"
                        )));
                    }
                }
                ids_k = ids_k.or(k);
            }
        }
        Ok((experts.unwrap_or(0), ids_k))
    }

    /// The MoE layer numbers, from node metadata or names, else by depth (with a warning).
    fn layer_numbers(&mut self, found: &[Found]) -> Vec<u32> {
        let increasing = |n: &[u32]| n.windows(2).all(|w| w[0] < w[1]);
        let by_names: Option<Vec<u32>> = found
            .iter()
            .map(|f| {
                layer_number(&f.gate)
                    .or_else(|| layer_number(&f.node))
                    .or_else(|| layer_number(&f.logits))
            })
            .collect();
        let wanted: Vec<&str> = found.iter().map(|f| f.gate.as_str()).collect();
        let namespaces = std::fs::read(self.path)
            .map(|bytes| node_namespaces(&bytes, &wanted))
            .unwrap_or_default();
        let by_meta: Option<Vec<u32>> = found
            .iter()
            .map(|f| namespaces.get(&f.gate).and_then(|ns| layer_number(ns)))
            .collect();
        match (by_meta, by_names) {
            (Some(n), _) if increasing(&n) => n,
            (_, Some(n)) if increasing(&n) => n,
            _ => {
                self.warnings.push(format!(
                    "model {}: no layer numbers in the routers' node metadata or names; the {} \
                     MoE layers are numbered 0..{} by depth. Pass the model's config.json \
                     (LoadOptions::spec, `--config`) for its own numbers",
                    self.name,
                    found.len(),
                    found.len()
                ));
                (0..found.len() as u32).collect()
            }
        }
    }

    fn build_spec(
        &mut self,
        found: &[Found],
        num_experts: usize,
        ids_k: Option<usize>,
    ) -> Result<ModelSpec, Error> {
        let name = self.name.clone();
        let mismatch = |detail: String| Error::SpecMismatch {
            model: name.clone(),
            detail,
        };
        let graph_k = found.iter().find_map(|f| f.topk_k).or(ids_k);
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
        if let Some(spec) = &self.options.spec {
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
                        "the spec says top-{}, the graph's routing TopK takes {k}",
                        spec.top_k
                    )));
                }
            }
            let mut spec = spec.clone();
            if let Some(n) = &self.options.name {
                spec.name = n.clone();
            }
            return Ok(spec);
        }
        let k = graph_k.or(self.options.top_k).ok_or_else(|| {
            mismatch(format!(
                "top-k unknown: no TopK follows router node {:?}; pass LoadOptions::top_k",
                found.first().map_or("", |f| f.node.as_str())
            ))
        })?;
        let layers = self.layer_numbers(found);
        let to_u32 = |v: usize, what: &str| {
            u32::try_from(v).map_err(|_| mismatch(format!("{what} {v} is too large")))
        };
        ModelSpec::new(
            &self.name,
            to_u32(num_experts, "experts")?,
            to_u32(k, "top-k")?,
            layers,
        )
        .map_err(|e| mismatch(e.to_string()))
    }
}

impl MoeModel {
    /// Loads `path`, finds its routers, checks its inputs and builds the optimized plan.
    ///
    /// # Errors
    /// [`Error::Load`] (unreadable file, translation or optimization failure, with a hint for
    /// shapes tract cannot type), [`Error::Inputs`] (inputs of no supported layout),
    /// [`Error::UnsupportedOperator`], [`Error::NoRouter`], [`Error::RouterNotFound`],
    /// [`Error::BadRouterName`], [`Error::ShapeMismatch`] (a router that is not `… × E` with a
    /// known E, or routers with different E), [`Error::SpecMismatch`]. Never panics.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<MoeModel, Error> {
        let path = path.as_ref();
        let mut cx = Loading {
            name: options.name.clone().unwrap_or_else(|| model_name(path)),
            path,
            options,
            warnings: Vec::new(),
        };
        let proto = cx.parse()?;
        let index = GraphIndex::new(&proto).ok_or_else(|| Error::Load {
            model: cx.name.clone(),
            detail: "the ONNX file has no graph".into(),
        })?;
        let found = find_routers(&index, &options.routers, &cx.name, &mut cx.warnings)?;
        let mut model = cx.translate(&proto)?;
        let layout = cx.check_inputs(&proto)?;
        cx.fix_inputs(&mut model, layout)?;
        let input_names = model
            .input_outlets()
            .map_err(|e| cx.load_err("inputs", &e))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let (model_outputs, slots) = cx.expose(&mut model, &found)?;
        let typed = model
            .into_typed()
            .map_err(|e| cx.load_err("typing the graph", &e))?;
        let (num_experts, ids_k) = cx.check_facts(&typed, &found, &slots)?;
        let spec = cx.build_spec(&found, num_experts, ids_k)?;
        let plan = typed
            .into_optimized()
            .map_err(|e| cx.load_err("optimizing", &e))?
            .into_runnable()
            .map_err(|e| cx.load_err("planning", &e))?;
        let routers = found
            .iter()
            .enumerate()
            .map(|(i, f)| RouterNode {
                index: i,
                layer_number: spec.moe_layers[i],
                tensor: f.logits.clone(),
                node: f.node.clone(),
                gate: f.gate.clone(),
                topk_ids: f.topk_ids.clone(),
                scores: f.scores.clone(),
                scoring: f.scoring,
            })
            .collect();
        Ok(MoeModel {
            name: cx.name,
            path: path.to_owned(),
            plan,
            model_outputs,
            routers,
            slots,
            spec,
            layout,
            input_names,
            fixed_tokens: options.fixed_tokens,
            warnings: cx.warnings,
        })
    }
}

fn find_routers(
    index: &GraphIndex<'_>,
    selector: &RouterSelector,
    model: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<Found>, Error> {
    let no_router = |how: String| Error::NoRouter {
        model: model.to_owned(),
        how,
    };
    let mut found = match selector {
        RouterSelector::GraphShape => {
            let f = index.by_graph_shape();
            if f.is_empty() {
                return Err(no_router(
                    "no MatMul/Gemm reaches a TopK without passing another matrix product".into(),
                ));
            }
            f
        }
        RouterSelector::NamePatterns(patterns) => {
            let (f, matched, stray, per_router) = index.by_patterns(patterns);
            if f.is_empty() {
                return Err(no_router(format!(
                    "{matched} tensors or nodes match {patterns:?}, none of them a router gate \
                     with a TopK or a tensor between the two"
                )));
            }
            if stray > 0 || per_router.iter().any(|&n| n > 1) {
                warnings.push(format!(
                    "model {model}: the router patterns {patterns:?} matched {matched} tensors \
                     or nodes: {} routers (matches per router: {per_router:?}), {stray} not \
                     part of a router",
                    f.len()
                ));
            }
            f
        }
        RouterSelector::Names(names) => {
            if names.is_empty() {
                return Err(no_router("the explicit router list is empty".into()));
            }
            let mut f = Vec::new();
            for n in names {
                let router = index.by_name(n).map_err(|p| match p {
                    NameProblem::NotFound => Error::RouterNotFound {
                        model: model.to_owned(),
                        name: n.clone(),
                    },
                    NameProblem::TopKIndices => Error::BadRouterName {
                        model: model.to_owned(),
                        name: n.clone(),
                        detail: "this is a TopK's indices (the routing decision), not a router; \
                                 name the router's gate or logits, or give ids and scores with \
                                 RouterSelector::Tensors"
                            .into(),
                    },
                    NameProblem::NoGate(g) => Error::BadRouterName {
                        model: model.to_owned(),
                        name: n.clone(),
                        detail: format!(
                            "a walk back from it meets {g} matrix products instead of one \
                             router gate; name the gate, its logits or its scores"
                        ),
                    },
                })?;
                if let Some(prev) = f.iter().find(|p: &&Found| p.position == router.position) {
                    return Err(Error::BadRouterName {
                        model: model.to_owned(),
                        name: n.clone(),
                        detail: format!(
                            "names the same router (gate {:?}) as an earlier name",
                            prev.gate
                        ),
                    });
                }
                f.push(router);
            }
            f
        }
        RouterSelector::Tensors(list) => {
            if list.is_empty() {
                return Err(no_router("the explicit router list is empty".into()));
            }
            let mut f = Vec::new();
            for t in list {
                for name in [&t.ids, &t.scores] {
                    if !index.has_tensor(name) {
                        return Err(Error::RouterNotFound {
                            model: model.to_owned(),
                            name: name.clone(),
                        });
                    }
                }
                f.push(index.by_tensors(t));
            }
            f
        }
    };
    if found.windows(2).any(|w| w[0].position > w[1].position) {
        warnings.push(format!(
            "model {model}: the routers were named out of graph order; they are taken in graph \
             order ({})",
            {
                let mut sorted: Vec<&str> = Vec::new();
                let mut f = found.clone();
                f.sort_by_key(|f| f.position);
                sorted.extend(f.iter().map(|f| f.gate.as_str()));
                sorted.join(", ")
            }
        ));
        found.sort_by_key(|f| f.position);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_shape_failures_get_a_hint_and_others_do_not() {
        let flatten = "Flatten: Can not compute a shape with square of symbols";
        assert!(hint(flatten, None).contains("LoadOptions::fixed_tokens"));
        assert!(hint("Slice: Undetermined symbol in expression", None).contains("fixed"));
        assert!(hint("Add: Can not broadcast 55 against 2", Some(64))
            .contains("fixed at 64 this still fails"));
        let run = "Evaluating #61 \"/model/model/And_1\" And: output 0, expected 1,1,T,T,Bool, \
                   got 1,1,2,32,Bool";
        assert!(hint(run, None).contains("fixed"));
        assert_eq!(hint("No such file or directory", None), "");
    }
}
