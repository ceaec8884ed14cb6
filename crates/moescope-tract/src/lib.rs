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

mod bundled;
pub mod detect;
mod error;
mod failures;
mod inputs;
mod load;
mod model;
mod onnx_meta;
mod plain;
mod simd;

pub use bundled::{bundled_config_path, bundled_model_path, byte_tokens};
pub use detect::{RouterSelector, RouterTensors, Scoring};
pub use error::Error;
pub use failures::FailureLog;
pub use inputs::{InputLayout, ModelInputs, PackedBatch, TokenBatch};
pub use model::{top_k_into, LoadOptions, MoeModel, MoeOutputs, RecordScratch, RouterNode};
pub use plain::PlainModel;
pub use simd::clear_upper_simd_state;
pub use tract_onnx::prelude::{tract_ndarray as ndarray, TValue, TVec, Tensor};
