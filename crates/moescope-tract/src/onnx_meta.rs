//! Node metadata that tract's ONNX protobuf types do not keep.
//!
//! torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`, the default since torch
//! 2.9) names nodes `node_linear_11` but writes each node's module path into its
//! `metadata_props` (ONNX `NodeProto` field 9), key `namespace`, e.g.
//! `": Qwen3MoeForCausalLM/model: Qwen3MoeModel/model.layers.1: Qwen3MoeDecoderLayer/model.layers.1.mlp.gate: Qwen3MoeTopKRouter"`.
//! tract's generated protobuf types predate that field, so this module reads it from the raw
//! bytes with a minimal protobuf walker (top-level graph only).

use std::collections::HashMap;

/// Reads one varint at `*pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Calls `f(field, value)` for each length-delimited field of a message, skipping the others.
fn fields<'a>(buf: &'a [u8], mut f: impl FnMut(u64, &'a [u8])) -> Option<()> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos = pos.checked_add(8)?,
            5 => pos = pos.checked_add(4)?,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                f(key >> 3, buf.get(pos..end)?);
                pos = end;
            }
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(())
}

/// The `namespace` metadata of the named nodes of a serialized ONNX `ModelProto`. Nodes
/// without one are absent; unreadable bytes give an empty map.
pub(crate) fn node_namespaces(model: &[u8], wanted: &[&str]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut graph = None;
    // ModelProto.graph = 7
    let _ = fields(model, |f, v| {
        if f == 7 {
            graph = Some(v);
        }
    });
    let Some(graph) = graph else {
        return out;
    };
    // GraphProto.node = 1
    let _ = fields(graph, |f, node| {
        if f != 1 {
            return;
        }
        let mut name = None;
        let mut namespace = None;
        // NodeProto.name = 3, metadata_props = 9 (StringStringEntryProto: key 1, value 2)
        let _ = fields(node, |f, v| match f {
            3 => name = std::str::from_utf8(v).ok(),
            9 => {
                let (mut key, mut value) = (None, None);
                let _ = fields(v, |f, s| match f {
                    1 => key = std::str::from_utf8(s).ok(),
                    2 => value = std::str::from_utf8(s).ok(),
                    _ => {}
                });
                if key == Some("namespace") {
                    namespace = value;
                }
            }
            _ => {}
        });
        if let (Some(name), Some(ns)) = (name, namespace) {
            if wanted.contains(&name) {
                out.insert(name.to_owned(), ns.to_owned());
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(no: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![(no << 3 | 2) as u8, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn reads_the_namespace_of_named_nodes() {
        let entry = [
            field(1, b"namespace"),
            field(2, b"m.model.layers.3.mlp.gate"),
        ]
        .concat();
        let other = [field(1, b"pkg.torch"), field(2, b"x")].concat();
        let node = [
            field(1, b"in"),
            field(3, b"node_linear_11"),
            vec![4 << 3, 7], // a varint field (not in NodeProto, but skipped)
            field(9, &other),
            field(9, &entry),
        ]
        .concat();
        let plain = [field(3, b"node_add_2")].concat();
        let graph = [field(1, &node), field(1, &plain)].concat();
        let model = [vec![1 << 3, 8], field(7, &graph)].concat();
        let got = node_namespaces(&model, &["node_linear_11", "node_add_2"]);
        assert_eq!(got.len(), 1);
        assert_eq!(got["node_linear_11"], "m.model.layers.3.mlp.gate");
        assert!(node_namespaces(&model[..5], &["node_linear_11"]).is_empty());
    }
}
