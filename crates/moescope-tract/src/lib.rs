//! moescope-tract: the CPU path. Runs an ONNX Mixture-of-Experts model with
//! [tract](https://github.com/sonos/tract), exposes each MoE layer's routing as extra outputs
//! and records it, with each token's language, into a moescope [`Recorder`].
//!
//! Data flow: [`MoeModel::load`] parses the ONNX file, finds the routers (by graph shape, a
//! name pattern, an explicit list, or named ids and scores tensors: [`RouterSelector`]),
//! checks the model's inputs against the supported layouts ([`InputLayout`]: a plain Hugging
//! Face export or the packed layout), adds the routers' logits, selection scores and routing
//! ids to the outputs *before* tract optimizes, and plans the model. [`MoeModel::inputs`]
//! lays a [`TokenBatch`] out for the model; [`MoeModel::run`] runs it; [`MoeModel::record`],
//! a separate call so that monitoring never fails inference, hands every layer's routing to
//! the recorder as one [`RouterBatch`](moescope_core::RouterBatch) per layer.
//!
//! The routing decision recorded is the graph's own: the last `TopK` fed by each router's gate,
//! which for DeepSeek-V3-style group-limited routing is the final `topk(k)` on the masked
//! scores. Which transformers families and exporters work, and how to export one, is in
//! `docs/EXPORT.md` of the repository; `models/hf/` of this crate holds tiny exports of each
//! as test fixtures. The bundled model ([`bundled_model_path`]) is a tiny Qwen3-MoE decoder
//! in the packed layout with a byte-level tokenizer ([`byte_tokens`]); see its README.
//!
//! ```
//! use moescope_core::{Languages, Recorder};
//! use moescope_tract::{byte_tokens, bundled_model_path, LoadOptions, MoeModel, TokenBatch};
//!
//! let model = MoeModel::load(bundled_model_path(), &LoadOptions::default())?;
//! let recorder = Recorder::new(model.spec().clone())?;
//! let he = recorder.language("he");
//!
//! let mut batch = TokenBatch::new();
//! batch.push(&byte_tokens("שלום עולם"), he, Some(1));
//! let inputs = model.inputs(&batch)?;
//! let out = model.run(inputs.values)?;
//! // Recording is separate: its failure would leave `out` usable.
//! model.record(&recorder, &out, Languages::Segments(&inputs.segments), &mut Vec::new())?;
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
mod simd;

pub use bundled::{bundled_config_path, bundled_model_path, byte_tokens};
pub use detect::{RouterSelector, RouterTensors, Scoring};
pub use error::Error;
pub use failures::FailureLog;
pub use inputs::{InputLayout, ModelInputs, PackedBatch, TokenBatch};
pub use model::{top_k_into, LoadOptions, MoeModel, MoeOutputs, RecordScratch, RouterNode};
pub use simd::clear_upper_simd_state;
pub use tract_onnx::prelude::{tract_ndarray as ndarray, TValue, TVec, Tensor};
