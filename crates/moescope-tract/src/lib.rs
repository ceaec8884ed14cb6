//! moescope-tract: the CPU path. Runs an ONNX Mixture-of-Experts model with
//! [tract](https://github.com/sonos/tract), exposes each MoE layer's router logits as extra
//! outputs and records them, with each token's language, into a moescope [`Recorder`].
//!
//! Data flow: [`MoeModel::load`] parses the ONNX file, finds the routers (by graph shape, a
//! name pattern or an explicit list: [`RouterSelector`]), adds their logits (and the graph's
//! own `TopK` indices) to the outputs *before* tract optimizes, and plans the model.
//! [`MoeModel::run`] runs it; [`MoeModel::record`] hands every layer's top-k ids and logits
//! to the recorder as one [`RouterBatch`](moescope_core::RouterBatch) per layer. The bundled
//! model ([`bundled_model_path`]) is a tiny Qwen3-MoE decoder with a byte-level tokenizer
//! ([`byte_tokens`]); see its README for what differs from the Hugging Face one.
//!
//! ```
//! use moescope_core::{Languages, Recorder};
//! use moescope_tract::{byte_tokens, bundled_model_path, LoadOptions, MoeModel, PackedBatch};
//!
//! let model = MoeModel::load(bundled_model_path(), &LoadOptions::default())?;
//! let recorder = Recorder::new(model.spec().clone())?;
//! let he = recorder.language("he");
//!
//! let mut batch = PackedBatch::new();
//! batch.push(&byte_tokens("שלום עולם"), he, Some(1));
//! let out = model.run(batch.inputs())?;
//! model.record(&recorder, &out, Languages::Segments(batch.segments()), &mut Vec::new())?;
//!
//! let snapshot = recorder.snapshot();
//! assert_eq!(snapshot.languages["he"].tokens, 17.0); // 9 characters, 17 UTF-8 bytes
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Recorder`]: moescope_core::Recorder
#![warn(missing_docs)]

pub mod detect;
mod model;

pub use detect::RouterSelector;
pub use model::{
    clear_upper_simd_state, top_k_into, Error, LoadOptions, MoeModel, MoeOutputs, PackedBatch,
    PlainModel, RouterNode,
};
pub use tract_onnx::prelude::{tract_ndarray as ndarray, TValue, TVec, Tensor};

/// The bundled tiny Qwen3-MoE model (`models/tiny-qwen3-moe/model.onnx` in this crate).
pub fn bundled_model_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join("tiny-qwen3-moe")
        .join("model.onnx")
}

/// The bundled model's Hugging Face style `config.json`.
pub fn bundled_config_path() -> std::path::PathBuf {
    bundled_model_path().with_file_name("config.json")
}

/// Byte-level tokenization of the bundled model: one token per UTF-8 byte (vocabulary 256).
/// English takes about one token per character, Hebrew two, Japanese three.
pub fn byte_tokens(text: &str) -> Vec<i64> {
    text.bytes().map(i64::from).collect()
}
