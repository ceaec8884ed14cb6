//! Finding the router of every MoE layer in an ONNX graph.
//!
//! Works on the ONNX protobuf (standard `op_type` strings, node and tensor names as the
//! exporter wrote them), before tract translates anything, so the same rules hold for any
//! exporter. Four ways, see [`RouterSelector`]:
//!
//! - **graph shape** (the default). A router is a `MatMul`/`Gemm` (the gate) whose output
//!   reaches a `TopK` through ops that are not matrix products: walking back from a `TopK`'s
//!   data input over every data input (not shape inputs, not through `Shape`), the walk meets
//!   exactly one `MatMul`/`Gemm`. Several `TopK`s may hang off one gate: DeepSeek-V2/V3,
//!   GLM-4.5 and Kimi-K2 take a per-group `topk(2)` and a `topk(topk_group)` before the final
//!   `topk(k)` on the masked scores. The routing decision is the **last** of them in graph
//!   order (ONNX nodes are topologically sorted), the only one whose indices are expert ids.
//!   Attention's `MatMul → Softmax` never reaches a `TopK`, and a sigmoid shared-expert gate
//!   (Qwen2-MoE) has none either, so neither is taken for a router.
//! - **name pattern**: tensors or nodes whose name matches a `*` glob (`*mlp.gate*`); each
//!   match stands for the gate its walk back reaches, several matches per gate are one router.
//! - **explicit list**: tensor names, node names or `node:ix` (the gate, its logits, the
//!   scores, even the masked scores): each stands for its gate, as above.
//! - **explicit tensors**: the routing ids and the selection scores of each layer, named
//!   separately, used as they are.
//!
//! For each router, the **scores** recorded are the model's own selection scores: the output
//! of the first `Softmax` or `Sigmoid` after the gate, plus a constant bias added right after
//! a sigmoid (DeepSeek-V3's `e_score_correction_bias`). Without either, the logits are
//! recorded and the recorder takes their softmax.

use std::collections::{BTreeMap, HashMap};

use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

/// How far a forward walk from a gate goes looking for its `Softmax`/`Sigmoid`.
pub const MAX_HOPS: usize = 6;

/// How many nodes a backward walk from a `TopK` visits at most before giving up.
const MAX_VISITS: usize = 512;

/// How to find the router of each MoE layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RouterSelector {
    /// By graph shape: the `MatMul`/`Gemm` gate of each MoE block and its final `TopK`.
    #[default]
    GraphShape,
    /// Tensors or nodes whose name matches one of these `*` globs, each standing for the gate
    /// it comes from (several matches of one gate are one router).
    NamePatterns(Vec<String>),
    /// Exactly these tensors or nodes (`name`, `node`, `node:ix`): each names one router,
    /// by its gate, logits, scores or masked scores. They are taken in graph order; a name
    /// given out of that order is reported in [`MoeModel::warnings`](crate::MoeModel::warnings).
    Names(Vec<String>),
    /// Per MoE layer, the tensors to record, named separately (in graph order).
    Tensors(Vec<RouterTensors>),
}

/// One MoE layer's routing tensors, named explicitly ([`RouterSelector::Tensors`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterTensors {
    /// The routing decision: integer expert ids, `… × k` (a `TopK`'s indices output).
    pub ids: String,
    /// The selection scores over the experts, `… × E`, f32: probabilities, or scores such as
    /// sigmoid plus bias (masked entries, `-inf`, and negative scores count as 0); or logits,
    /// with `scores_are_logits`.
    pub scores: String,
    /// The scores are logits: the recorder takes their softmax.
    pub scores_are_logits: bool,
}

/// How a router's recorded scores relate to its logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// The scores are a softmax of the logits.
    Softmax,
    /// The scores are a sigmoid of the logits.
    Sigmoid,
    /// The scores are a sigmoid of the logits plus a constant bias (DeepSeek-V3).
    SigmoidWithBias,
    /// No scoring function was found: the logits are recorded, the recorder takes the softmax.
    Logits,
    /// The scores tensor was named by the user.
    Given,
}

/// One router found in the ONNX graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// The router-logits tensor (an ONNX tensor name).
    pub logits: String,
    /// The node that produces it.
    pub node: String,
    /// Graph position of the gate node (depth order).
    pub position: usize,
    /// The gate node's name (for layer numbers).
    pub gate: String,
    /// The selection scores, when they differ from the logits.
    pub scores: Option<String>,
    /// How the scores were computed.
    pub scoring: Scoring,
    /// The routing `TopK`'s indices output, if any.
    pub topk_ids: Option<String>,
    /// Its `k`, when a constant.
    pub topk_k: Option<usize>,
}

/// Op types an element-wise walk may pass through between a gate and its scoring function.
const PASS_THROUGH: &[&str] = &[
    "Cast",
    "Identity",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Transpose",
];

/// Ops whose outputs do not depend on their inputs' values (a walk back stops there).
const VALUE_FREE: &[&str] = &[
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "EyeLike",
    "Range",
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
];

/// Matrix products: candidate gates.
fn is_gate_op(op: &str) -> bool {
    matches!(op, "MatMul" | "Gemm")
}

pub(crate) struct GraphIndex<'a> {
    graph: &'a GraphProto,
    /// tensor name → index of the node producing it
    producer: HashMap<&'a str, usize>,
    /// tensor name → indices of nodes consuming it
    consumers: HashMap<&'a str, Vec<usize>>,
    /// initializer name → index in `graph.initializer`
    initializers: HashMap<&'a str, usize>,
}

/// Why a user's router name does not stand for a router.
pub(crate) enum NameProblem {
    /// Not a tensor or node of the graph.
    NotFound,
    /// A `TopK`'s indices: not a router but its decision.
    TopKIndices,
    /// Its walk back meets no gate or several.
    NoGate(usize),
}

impl<'a> GraphIndex<'a> {
    pub fn new(model: &'a ModelProto) -> Option<GraphIndex<'a>> {
        let graph = model.graph.as_ref()?;
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for t in &n.input {
                consumers.entry(t.as_str()).or_default().push(i);
            }
        }
        let initializers = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        Some(GraphIndex {
            graph,
            producer,
            consumers,
            initializers,
        })
    }

    fn node(&self, i: usize) -> &'a NodeProto {
        &self.graph.node[i]
    }

    /// Whether `name` is a tensor of the graph (produced by a node or a graph input).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.producer.contains_key(name) || self.graph.input.iter().any(|i| i.name == name)
    }

    /// Graph position of the node producing `tensor` (graph inputs come first).
    pub fn position(&self, tensor: &str) -> usize {
        self.producer.get(tensor).map_or(0, |&p| p + 1)
    }

    /// Resolves a user's name (tensor, node, or `node:ix`) to a tensor name and its node.
    pub fn resolve(&self, name: &str) -> Option<(String, String)> {
        if let Some(&p) = self.producer.get(name) {
            return Some((name.to_owned(), self.node(p).name.clone()));
        }
        if self.graph.input.iter().any(|i| i.name == name) {
            return Some((name.to_owned(), String::new()));
        }
        if let Some(n) = self.graph.node.iter().find(|n| n.name == name) {
            return n.output.first().map(|o| (o.clone(), n.name.clone()));
        }
        let (node, ix) = name.rsplit_once(':')?;
        let ix: usize = ix.parse().ok()?;
        let n = self.graph.node.iter().find(|n| n.name == node)?;
        n.output.get(ix).map(|o| (o.clone(), n.name.clone()))
    }

    /// Whether `tensor` is a constant: an initializer, or made from constants only.
    fn is_constant(&self, tensor: &str) -> bool {
        if self.initializers.contains_key(tensor) {
            return true;
        }
        let Some(&p) = self.producer.get(tensor) else {
            return false;
        };
        let n = self.node(p);
        n.op_type == "Constant"
            || (matches!(
                n.op_type.as_str(),
                "Cast" | "Unsqueeze" | "Reshape" | "Identity"
            ) && n
                .input
                .first()
                .is_some_and(|t| self.initializers.contains_key(t.as_str())))
    }

    /// The scalar integer value of an initializer or `Constant` output (TopK's `k`).
    fn int_value(&self, tensor: &str) -> Option<usize> {
        let proto = if let Some(&i) = self.initializers.get(tensor) {
            &self.graph.initializer[i]
        } else {
            let n = self.node(*self.producer.get(tensor)?);
            if n.op_type != "Constant" {
                return None;
            }
            n.attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref())?
        };
        let v = proto
            .int64_data
            .first()
            .copied()
            .or_else(|| {
                let raw = proto.raw_data.get(..8)?;
                Some(i64::from_le_bytes(raw.try_into().ok()?))
            })
            .or_else(|| proto.int32_data.first().map(|&v| i64::from(v)))?;
        usize::try_from(v).ok()
    }

    /// The inputs of `n` whose values flow into its outputs (not shapes, axes, `k`, ...).
    fn data_inputs(n: &'a NodeProto) -> impl Iterator<Item = &'a str> + 'a {
        let only_first = matches!(
            n.op_type.as_str(),
            "Reshape"
                | "Expand"
                | "Tile"
                | "Slice"
                | "Squeeze"
                | "Unsqueeze"
                | "TopK"
                | "Pad"
                | "Resize"
                | "ReduceSum"
                | "ReduceMax"
                | "ReduceMean"
                | "ReduceMin"
        );
        let take = if VALUE_FREE.contains(&n.op_type.as_str()) {
            0
        } else if only_first {
            1
        } else {
            n.input.len()
        };
        n.input
            .iter()
            .take(take)
            .map(String::as_str)
            .filter(|t| !t.is_empty())
    }

    /// The gates (`MatMul`/`Gemm` node indices, sorted) a backward walk from `tensor` meets,
    /// not passing through them; `None` if the walk is too long to finish.
    fn gates_behind(&self, tensor: &'a str) -> Option<Vec<usize>> {
        let mut gates = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![tensor];
        let mut visits = 0;
        while let Some(t) = stack.pop() {
            if self.initializers.contains_key(t) {
                continue;
            }
            let Some(&p) = self.producer.get(t) else {
                continue;
            };
            if !seen.insert(p) {
                continue;
            }
            visits += 1;
            if visits > MAX_VISITS {
                return None;
            }
            let n = self.node(p);
            if is_gate_op(&n.op_type) {
                gates.push(p);
                continue;
            }
            stack.extend(Self::data_inputs(n));
        }
        gates.sort_unstable();
        Some(gates)
    }

    /// Every gate with its routing `TopK` (the last `TopK` whose walk back meets only that
    /// gate), in graph order.
    fn gates_with_topk(&self) -> BTreeMap<usize, usize> {
        let mut by_gate = BTreeMap::new();
        for (i, n) in self.graph.node.iter().enumerate() {
            if n.op_type != "TopK" {
                continue;
            }
            let Some(data) = n.input.first() else {
                continue;
            };
            if let Some([gate]) = self.gates_behind(data).as_deref() {
                // Nodes are in graph order: a later TopK of the same gate replaces an earlier.
                by_gate.insert(*gate, i);
            }
        }
        by_gate
    }

    /// The router of `gate` whose routing decision is `topk` (node indices).
    fn router(&self, gate: usize, topk: Option<usize>) -> Found {
        let g = self.node(gate);
        let gate_out = g.output.first().cloned().unwrap_or_default();
        // Forward from the gate to its scoring function, through reshapes and casts.
        let mut tensor = gate_out.clone();
        let mut scoring = Scoring::Logits;
        let mut logits = gate_out.clone();
        let mut scores = None;
        'walk: for _ in 0..MAX_HOPS {
            let consumers = self.consumers.get(tensor.as_str()).map_or(&[][..], |v| v);
            let mut next = None;
            for &c in consumers {
                let n = self.node(c);
                match n.op_type.as_str() {
                    "Softmax" | "Sigmoid" if n.input.first() == Some(&tensor) => {
                        logits = tensor.clone();
                        let out = n.output.first().cloned().unwrap_or_default();
                        if n.op_type == "Softmax" {
                            scoring = Scoring::Softmax;
                            scores = Some(out);
                        } else {
                            scoring = Scoring::Sigmoid;
                            scores = Some(self.with_bias(out, &mut scoring));
                        }
                        break 'walk;
                    }
                    op if PASS_THROUGH.contains(&op) && next.is_none() => {
                        next = n.output.first().cloned();
                    }
                    // A bias right after the product is part of the logits (Linear with bias).
                    "Add" if next.is_none() && n.input.iter().any(|t| self.is_constant(t)) => {
                        next = n.output.first().cloned();
                    }
                    _ => {}
                }
            }
            match next {
                Some(t) => tensor = t,
                None => break,
            }
        }
        let (topk_ids, topk_k) = topk.map_or((None, None), |t| {
            let n = self.node(t);
            (
                n.output.get(1).filter(|s| !s.is_empty()).cloned(),
                n.input.get(1).and_then(|k| self.int_value(k)),
            )
        });
        if scoring == Scoring::Logits {
            // No scoring function: the routing TopK's own input (logits, maybe with a bias).
            if let Some(t) = topk.and_then(|t| self.node(t).input.first()) {
                logits = t.clone();
            }
        }
        let node = self
            .producer
            .get(logits.as_str())
            .map_or(g.name.clone(), |&p| self.node(p).name.clone());
        Found {
            logits,
            node,
            position: gate,
            gate: g.name.clone(),
            scores,
            scoring,
            topk_ids,
            topk_k,
        }
    }

    /// A sigmoid's output, or the output of a constant bias added right after it.
    fn with_bias(&self, sigmoid_out: String, scoring: &mut Scoring) -> String {
        let consumers = self
            .consumers
            .get(sigmoid_out.as_str())
            .map_or(&[][..], |v| v);
        for &c in consumers {
            let n = self.node(c);
            if n.op_type == "Add"
                && n.input.len() == 2
                && n.input
                    .iter()
                    .any(|t| *t != sigmoid_out && self.is_constant(t))
            {
                if let Some(out) = n.output.first() {
                    *scoring = Scoring::SigmoidWithBias;
                    return out.clone();
                }
            }
        }
        sigmoid_out
    }

    /// Graph shape: every gate with a routing `TopK`, in graph order.
    pub fn by_graph_shape(&self) -> Vec<Found> {
        self.gates_with_topk()
            .into_iter()
            .map(|(gate, topk)| self.router(gate, Some(topk)))
            .collect()
    }

    /// The gate a tensor stands for: itself when a gate's output, else the one gate its walk
    /// back meets.
    fn gate_of(&self, tensor: &'a str) -> Result<usize, NameProblem> {
        let gates = self.gates_behind(tensor).unwrap_or_default();
        match gates.as_slice() {
            [g] => Ok(*g),
            _ => Err(NameProblem::NoGate(gates.len())),
        }
    }

    /// The router a user's name stands for.
    pub fn by_name(&self, name: &str) -> Result<Found, NameProblem> {
        let (tensor, _) = self.resolve(name).ok_or(NameProblem::NotFound)?;
        if let Some(&p) = self.producer.get(tensor.as_str()) {
            let n = self.node(p);
            if n.op_type == "TopK" && n.output.get(1) == Some(&tensor) {
                return Err(NameProblem::TopKIndices);
            }
        }
        let gate = self.gate_of(&tensor)?;
        let topk = self.gates_with_topk().get(&gate).copied();
        Ok(self.router(gate, topk))
    }

    /// Name patterns: every tensor or node matching, grouped by the gate it stands for, in
    /// graph order (only gates with a routing `TopK`). Also returns how many names matched,
    /// how many stood for no such gate, and how many matched each router.
    pub fn by_patterns(&self, patterns: &[String]) -> (Vec<Found>, usize, usize, Vec<usize>) {
        let mut gates = BTreeMap::new();
        let (mut matched, mut stray) = (0, 0);
        let with_topk = self.gates_with_topk();
        for n in &self.graph.node {
            let node_hit = patterns.iter().any(|p| glob(p, &n.name));
            for (i, o) in n.output.iter().enumerate() {
                if o.is_empty() || !(patterns.iter().any(|p| glob(p, o)) || node_hit && i == 0) {
                    continue;
                }
                matched += 1;
                let is_ids = n.op_type == "TopK" && i == 1;
                match self.gate_of(o) {
                    Ok(g) if !is_ids && with_topk.contains_key(&g) => {
                        *gates.entry(g).or_insert(0usize) += 1;
                    }
                    _ => stray += 1,
                }
            }
        }
        let per_router = gates.values().copied().collect();
        let found = gates
            .into_keys()
            .map(|g| self.router(g, with_topk.get(&g).copied()))
            .collect();
        (found, matched, stray, per_router)
    }

    /// Explicit tensors: used as they are.
    pub fn by_tensors(&self, t: &RouterTensors) -> Found {
        let node = self
            .producer
            .get(t.scores.as_str())
            .map_or(String::new(), |&p| self.node(p).name.clone());
        let position = self.position(&t.ids);
        let gate = self
            .gate_of(&t.scores)
            .map_or(node.clone(), |g| self.node(g).name.clone());
        Found {
            logits: t.scores.clone(),
            node,
            position,
            gate,
            scores: None,
            scoring: if t.scores_are_logits {
                Scoring::Logits
            } else {
                Scoring::Given
            },
            topk_ids: Some(t.ids.clone()),
            topk_k: None,
        }
    }
}

/// `*` glob match (no other metacharacters).
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if text.len() < first.len() + last.len()
        || !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The layer number in a name: the digits after `layers.`, `layers/`, `layers_`, `layer.`,
/// `h.`, `blocks.` (the last such occurrence).
pub fn layer_number(name: &str) -> Option<u32> {
    const KEYS: &[&str] = &["layers", "layer", "blocks", "block", "h"];
    let bytes = name.as_bytes();
    let mut best: Option<(usize, u32)> = None;
    for key in KEYS {
        let mut from = 0;
        while let Some(i) = name[from..].find(key) {
            let start = from + i;
            let end = start + key.len();
            from = end;
            // The key must start a path component.
            let boundary = start == 0 || matches!(bytes[start - 1], b'.' | b'/' | b'_' | b':');
            if !boundary || end >= bytes.len() || !matches!(bytes[end], b'.' | b'/' | b'_') {
                continue;
            }
            let digits: String = name[end + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                if best.is_none_or(|(s, _)| start > s) {
                    best = Some((start, n));
                }
            }
        }
    }
    best.map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_only() {
        assert!(glob("*mlp.gate", "model.layers.3.mlp.gate"));
        assert!(glob(
            "*mlp/gate/MatMul*",
            "/model/layers.3/mlp/gate/MatMul_output_0"
        ));
        assert!(glob("a*b*c", "a--b--c"));
        assert!(!glob("a*b*c", "a--c--b"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn layer_numbers_from_exporter_names() {
        assert_eq!(layer_number("model.layers.12.mlp.gate"), Some(12));
        assert_eq!(
            layer_number("/model/layers.3/mlp/gate/MatMul_output_0"),
            Some(3)
        );
        assert_eq!(layer_number("transformer.h.5.moe.router"), Some(5));
        assert_eq!(layer_number("router_logits"), None);
        assert_eq!(layer_number("shape.heads"), None);
        // The last occurrence wins, whichever key it uses.
        assert_eq!(
            layer_number(
                ": Qwen3MoeModel/model.layers.1: Qwen3MoeDecoderLayer/model.layers.1.mlp.gate: \
                 Qwen3MoeTopKRouter"
            ),
            Some(1)
        );
        assert_eq!(layer_number("blocks.2/h.7"), Some(7));
    }
}
