//! moescope-core: watch a Mixture-of-Experts router per language, live, in the serving process.
//!
//! A serving binary builds a [`Recorder`] for its model ([`ModelSpec`]), interns each
//! request's language tag to a [`LangId`] once, and hands the recorder every MoE layer's
//! routing decisions as a [`RouterBatch`] (top-k expert ids, optionally gate weights and
//! router logits or probabilities, and the language of each token). The recorder counts them
//! lock-free into a rolling window of time buckets; [`Recorder::snapshot`] merges the window
//! into a [`Snapshot`], the `moescope.snapshot/v1` interchange format that the statistics,
//! the exporters and the offline CLI read.
//!
//! ```
//! use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch};
//!
//! let spec = ModelSpec::new("tiny", 8, 2, vec![0, 1, 2, 3])?; // 8 experts, top-2, 4 layers
//! let recorder = Recorder::new(spec)?;
//! let he = recorder.language("he");
//!
//! // Layer 3, three tokens of a Hebrew request: each row is a token's top-2 experts.
//! let ids: [u32; 6] = [5, 1, 5, 2, 5, 7];
//! recorder.record(&RouterBatch::at_depth(3, &ids, Languages::All(he)))?;
//!
//! let snapshot = recorder.snapshot();
//! let layer = &snapshot.languages["he"].layers[3];
//! assert_eq!(layer.tokens, 3.0);
//! assert_eq!(layer.expert_tokens, [0.0, 1.0, 1.0, 0.0, 0.0, 3.0, 0.0, 1.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules, in the order data flows: [`spec`] (the model), [`lang`] (tags to ids),
//! [`batch`] (what the serving path passes), [`recorder`] (the hot path and the reader),
//! [`sampling`] (per-language rates), [`window`] (the bucket ring, its running sums and its
//! memory bound), [`snapshot`] (the interchange format); and the small shared pieces
//! [`clock`], [`rng`] and [`background`].

pub mod background;
pub mod batch;
pub mod bulk;
pub mod clock;
pub mod lang;
// The one module of core with `unsafe`: a lock-free once-cell (each block carries its SAFETY).
#[allow(unsafe_code)]
mod lazy;
pub mod recorder;
pub mod rng;
pub mod sampling;
pub mod snapshot;
pub mod spec;
mod stage;
mod sync;
pub mod window;

pub use batch::{
    DropReason, ExpertId, Languages, RecordError, Recorded, RouterBatch, RouterScores, Segment,
    MAX_BATCH_TOKENS,
};
pub use bulk::{sequence_half, BulkCounts, BulkError, BulkProbs};
pub use clock::{Clock, ManualClock, SystemClock};
pub use lang::{LangId, LanguageRegistry, Tag, TagError, DEFAULT_MAX_LANGUAGES, MAX_TAG_LEN};
pub use recorder::{
    ConfigError, LanguageTotals, RecordTimes, Recorder, RecorderBuilder, UpkeepThread,
    MAX_WRITER_STRIPES, RECORD_TIME_BUCKETS_SECONDS, RECORD_TIME_SAMPLE_EVERY,
};
pub use sampling::{SamplingConfig, SamplingError, SamplingRate};
pub use snapshot::{
    BucketCounts, HalfCounts, LanguageCounts, LayerCounts, Snapshot, SnapshotError, WindowRange,
    SNAPSHOT_FORMAT,
};
pub use spec::{ModelSpec, SpecError};
pub use window::WindowConfig;
