//! The crate's error type.

use moescope_core::RecordError;

/// Why a model could not be loaded, run or recorded. Every message names the model, and the
/// node where one is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error(
        "model {model}: no router found ({how}); name the routers explicitly: their gates or \
         logits (RouterSelector::Names), or their routing ids and scores \
         (RouterSelector::Tensors)"
    )]
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
    /// The model's inputs fit no supported layout.
    #[error(
        "model {model}: its inputs ({found}) fit no supported layout: {why}. Supported: {supported}"
    )]
    Inputs {
        /// The model.
        model: String,
        /// The model's inputs: name, type and shape of each.
        found: String,
        /// What does not fit.
        why: String,
        /// The supported layouts.
        supported: &'static str,
    },
    /// A batch could not be laid out as the model's inputs.
    #[error("model {model}: inputs ({layout:?}): {detail}")]
    Batch {
        /// The model.
        model: String,
        /// The model's input layout.
        layout: crate::InputLayout,
        /// What does not fit.
        detail: String,
    },
    /// An explicitly named router does not stand for a router.
    #[error("model {model}: router name {name:?}: {detail}")]
    BadRouterName {
        /// The model.
        model: String,
        /// The name given.
        name: String,
        /// Why it does not name a router, and what to name instead.
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
