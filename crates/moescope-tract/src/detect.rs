//! Finding the router of every MoE layer in an ONNX graph.
//!
//! Works on the ONNX protobuf (standard `op_type` strings, node and tensor names as the
//! exporter wrote them), before tract translates anything, so the same rules hold for any
//! exporter. Three ways, see [`RouterSelector`]:
//!
//! - **graph shape** (the default): every `TopK` whose data input goes back, through at most
//!   [`MAX_HOPS`] element-wise steps (`Softmax`, `Sigmoid`, `Cast`, `Add`, `Mul`, `Div`,
//!   `Identity`, `Reshape`, ...), to a `MatMul` or `Gemm` is a router's top-k. The router logits
//!   are the input of the first `Softmax`/`Sigmoid` on that path (or the `MatMul`'s output
//!   when the top-k is taken on the logits). Attention's `MatMul → Softmax` never reaches a
//!   `TopK`, so it is not mistaken for a router.
//! - **name pattern**: tensors or nodes whose name matches a `*` glob (`*mlp.gate`,
//!   `*block_sparse_moe/gate/MatMul*`); a matched node stands for its first output.
//! - **explicit list**: tensor names, node names or `node:ix`, in depth order.
//!
//! Layers are in graph order (ONNX nodes are topologically sorted, so that is depth order);
//! each layer's number is read from the name (`layers.7`, `layers/7`, `layers_7`, `h.7`,
//! `blocks.7`) when every router's name has one, else 0, 1, 2, ...

use std::collections::HashMap;

use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

/// How far back from a `TopK` the graph-shape search walks.
pub const MAX_HOPS: usize = 6;

/// How to find the router logits of each MoE layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RouterSelector {
    /// By graph shape: the `MatMul`/`Gemm` feeding each MoE block's `Softmax`/`TopK`.
    #[default]
    GraphShape,
    /// Tensors or nodes whose name matches one of these `*` globs, in graph order.
    NamePatterns(Vec<String>),
    /// Exactly these tensors or nodes (`name`, `node`, `node:ix`), in depth order.
    Names(Vec<String>),
}

/// One router found in the ONNX graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// The router-logits tensor (an ONNX tensor name).
    pub logits: String,
    /// The node that produces it.
    pub node: String,
    /// The `TopK` node downstream of it, if any: its indices output and its `k`.
    pub topk_ids: Option<String>,
    pub topk_k: Option<usize>,
}

/// Op types an element-wise walk may pass through between a router `MatMul` and its `TopK`.
const PASS_THROUGH: &[&str] = &[
    "Softmax",
    "Sigmoid",
    "Cast",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Identity",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "LogSoftmax",
];

pub(crate) struct GraphIndex<'a> {
    graph: &'a GraphProto,
    /// tensor name → index of the node producing it
    producer: HashMap<&'a str, usize>,
    /// tensor name → indices of nodes consuming it
    consumers: HashMap<&'a str, Vec<usize>>,
    /// initializer name → index in `graph.initializer`
    initializers: HashMap<&'a str, usize>,
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

    /// Resolves a user's name (tensor, node, or `node:ix`) to a tensor name and its node.
    pub fn resolve(&self, name: &str) -> Option<(String, String)> {
        if let Some(&p) = self.producer.get(name) {
            return Some((name.to_owned(), self.node(p).name.clone()));
        }
        if let Some(n) = self.graph.node.iter().find(|n| n.name == name) {
            return n.output.first().map(|o| (o.clone(), n.name.clone()));
        }
        let (node, ix) = name.rsplit_once(':')?;
        let ix: usize = ix.parse().ok()?;
        let n = self.graph.node.iter().find(|n| n.name == node)?;
        n.output.get(ix).map(|o| (o.clone(), n.name.clone()))
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

    /// Graph shape: every TopK fed (through element-wise steps) by a MatMul/Gemm.
    pub fn by_graph_shape(&self) -> Vec<Found> {
        let mut found = Vec::new();
        for n in &self.graph.node {
            if n.op_type != "TopK" || n.input.is_empty() {
                continue;
            }
            let mut tensor = n.input[0].as_str();
            let mut logits: Option<&str> = None;
            let mut matmul: Option<(&str, &str)> = None;
            for _ in 0..MAX_HOPS {
                let Some(&p) = self.producer.get(tensor) else {
                    break;
                };
                let prod = self.node(p);
                match prod.op_type.as_str() {
                    "MatMul" | "Gemm" => {
                        matmul = Some((tensor, prod.name.as_str()));
                        break;
                    }
                    "Softmax" | "Sigmoid" | "LogSoftmax" => {
                        logits = prod.input.first().map(String::as_str);
                    }
                    op if PASS_THROUGH.contains(&op) => {}
                    _ => break,
                }
                // Follow the data input (not a bias or a shape constant).
                match prod
                    .input
                    .iter()
                    .find(|t| !self.initializers.contains_key(t.as_str()))
                {
                    Some(t) => tensor = t.as_str(),
                    None => break,
                }
            }
            let Some((mm_out, mm_node)) = matmul else {
                continue;
            };
            let logits = logits.unwrap_or(mm_out);
            let node = self
                .producer
                .get(logits)
                .map_or(mm_node.to_owned(), |&p| self.node(p).name.clone());
            found.push(Found {
                logits: logits.to_owned(),
                node,
                topk_ids: n.output.get(1).filter(|s| !s.is_empty()).cloned(),
                topk_k: n.input.get(1).and_then(|k| self.int_value(k)),
            });
        }
        found
    }

    /// Name patterns: tensors, then nodes (standing for their first output), in graph order.
    pub fn by_patterns(&self, patterns: &[String]) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        for n in &self.graph.node {
            let hit = n
                .output
                .iter()
                .find(|o| patterns.iter().any(|p| glob(p, o)))
                .or_else(|| {
                    patterns
                        .iter()
                        .any(|p| glob(p, &n.name))
                        .then(|| n.output.first())
                        .flatten()
                });
            if let Some(t) = hit {
                if !found.iter().any(|f| &f.logits == t) {
                    found.push(self.with_topk(t.clone(), n.name.clone()));
                }
            }
        }
        found
    }

    /// Adds the downstream TopK (if a short element-wise path reaches one) to a router tensor.
    pub fn with_topk(&self, logits: String, node: String) -> Found {
        let mut frontier = vec![logits.as_str()];
        for _ in 0..MAX_HOPS {
            let mut next = Vec::new();
            for t in frontier {
                for &c in self.consumers.get(t).map_or(&[][..], |v| v.as_slice()) {
                    let n = self.node(c);
                    if n.op_type == "TopK" && n.input.first().map(String::as_str) == Some(t) {
                        return Found {
                            topk_ids: n.output.get(1).filter(|s| !s.is_empty()).cloned(),
                            topk_k: n.input.get(1).and_then(|k| self.int_value(k)),
                            logits,
                            node,
                        };
                    }
                    if PASS_THROUGH.contains(&n.op_type.as_str()) {
                        next.extend(n.output.iter().map(String::as_str));
                    }
                }
            }
            frontier = next;
        }
        Found {
            logits,
            node,
            topk_ids: None,
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
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
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
    let mut best = None;
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
                best = Some((start, n));
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
    }
}
