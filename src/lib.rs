//! moescope: live, per-language routing health for Mixture-of-Experts serving.
//!
//! A serving binary links this crate, builds a [`Recorder`] for its model, and hands it each
//! MoE layer's router decisions together with the language of every token. The recorder
//! counts them lock-free into a rolling window; [`Recorder::snapshot`] returns the window as
//! a [`Snapshot`] (the `moescope.snapshot/v1` interchange format), and [`stats`] turns a
//! snapshot into the routing metrics of the deep-layer collapse study: usage entropy, Gini,
//! active experts, LSI, cross-language similarity, and the collapse verdict.
//!
//! ```
//! use moescope::prelude::*;
//! use moescope::stats;
//!
//! let recorder = Recorder::new(ModelSpec::preset("qwen3-30b-a3b")?)?;
//! let he = recorder.language("he"); // once per request; untrusted tags are fine
//!
//! // One forward step of the last MoE layer: 4 Hebrew tokens, top-8 expert ids each.
//! let ids: Vec<u32> = (0..4 * 8).map(|i| i % 8).collect();
//! recorder.record(&RouterBatch::at_depth(47, &ids, Languages::All(he)))?;
//!
//! let snapshot = recorder.snapshot();
//! let layer = &snapshot.languages["he"].layers[47];
//! // Every token picked experts 0..8: usage is uniform over 8 of 128 experts, 3 bits.
//! assert_eq!(stats::usage_entropy_bits(&layer.expert_tokens), Some(3.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The pieces live in their own crates, re-exported here: `moescope-core` (model spec,
//! languages, recorder, window, snapshot), `moescope-stats` (the metrics, pure functions),
//! and behind features `publish` (the publisher), `prometheus` (default), `otel`, `sim` and `tract` (run an
//! ONNX MoE on the CPU and record its routers). docs/METRICS.md defines every metric and its
//! Prometheus name.

// The types a serving binary touches, at the root; everything else under its module.
pub use moescope_core::{
    background, batch, bulk, clock, lang, recorder, rng, sampling, snapshot, spec, window,
};
pub use moescope_core::{
    ConfigError, DropReason, LangId, Languages, ModelSpec, RecordError, Recorded, Recorder,
    RecorderBuilder, RouterBatch, SamplingConfig, SamplingRate, Segment, Snapshot, SnapshotError,
    SpecError, WindowConfig,
};

/// `use moescope::prelude::*;` brings what an integration writes most: the recorder, the
/// model spec, a router batch with its languages, and the snapshot.
pub mod prelude {
    pub use crate::{LangId, Languages, ModelSpec, Recorder, RouterBatch, Segment, Snapshot};
}

pub use moescope_stats as stats;

/// The metric catalogue, the publisher and the `Sink` trait (feature `publish`, implied by
/// `prometheus` and `otel`).
#[cfg(feature = "publish")]
pub use moescope_publish as publish;

/// The Prometheus sink, render path and `/metrics` endpoint (feature `prometheus`, on by
/// default).
#[cfg(feature = "prometheus")]
pub use moescope_prometheus as prometheus;

/// OpenTelemetry instruments (feature `otel`; OTLP/HTTP export with `otlp`).
#[cfg(feature = "otel")]
pub use moescope_otel as otel;

/// The routing simulator (feature `sim`).
#[cfg(feature = "sim")]
pub use moescope_sim as sim;

/// The CPU path (feature `tract`): an ONNX MoE model run by tract, its routers recorded.
#[cfg(feature = "tract")]
pub use moescope_tract as tract;

/// The CUDA path (feature `cuda`): count routing on the GPU, in the serving stack's stream.
#[cfg(feature = "cuda")]
pub use moescope_cuda as cuda;

/// HTML reports of a snapshot (feature `report`): the figures of `moescope report` and a live
/// page for a serving process.
#[cfg(feature = "report")]
pub use moescope_report as report;

/// README.md's Rust examples, compiled and run as doc tests (`cargo test -p moescope
/// --features tract --doc`, which the test script runs).
#[cfg(all(doctest, feature = "prometheus", feature = "tract"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
