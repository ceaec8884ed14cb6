//! The recorder: the serving path's one entry point, and the window's reader side.
//!
//! # Writers
//!
//! [`Recorder::record`] takes one [`RouterBatch`](crate::RouterBatch) per MoE layer per forward
//! step. It claims a staging stripe (one compare-and-swap; see the `stage` module) and counts
//! the batch straight
//! into it: per routed slot one plain increment of `counts[layer][expert]` of the token's
//! language, as a hand-written array would. It takes no lock, never waits, allocates nothing
//! after warm-up (a stripe's arrays for a language are created the first time that stripe
//! sees the language), never reads the clock, and never panics: bad input is counted by
//! [`DropReason`] and skipped.
//!
//! # Readers
//!
//! [`Recorder::snapshot`] and [`Recorder::upkeep`] share a mutex that writers never touch.
//! They fold the stripes into the reader-owned rolling window ([`crate::window`]), rotate it
//! when a bucket boundary has passed, and read its running sums into a
//! [`Snapshot`](crate::Snapshot).

use crate::sync::atomic::{AtomicU64, Ordering};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch::DropReason;
use crate::clock::Clock;
use crate::lang::{LangId, LanguageRegistry};
use crate::sampling::{threshold_for_rate, SamplingConfig};
use crate::spec::ModelSpec;
use crate::stage::Stripe;
use crate::window::{Ring, WindowConfig};

mod builder;
mod read;
mod write;

pub use builder::{ConfigError, RecorderBuilder};
pub use read::UpkeepThread;

/// One `record` call in this many (per thread) is timed for [`Recorder::take_record_times`]:
/// two clock reads and a histogram record, about 60 ns, spread over 64 calls.
pub const RECORD_TIME_SAMPLE_EVERY: u32 = 64;

/// Most staging stripes a recorder may have.
pub const MAX_WRITER_STRIPES: usize = 256;

struct ReaderState {
    ring: Ring,
    /// The epoch of every stripe outside a rotation (see [`crate::stage`]).
    epoch: u64,
    /// When the current bucket ends (aligned to multiples of the bucket length).
    next_boundary_ms: u64,
}

/// Records routing decisions into a rolling window and reads them back as [`Snapshot`](crate::Snapshot)s.
/// Share it between threads with an `Arc`; every method takes `&self`.
pub struct Recorder {
    spec: ModelSpec,
    layers: usize,
    experts: usize,
    top_k: usize,
    window: WindowConfig,
    registry: LanguageRegistry,
    pub(crate) stripes: Box<[Stripe]>,
    /// Keep-thresholds per language, by epoch parity: writers read those of their stripe's
    /// epoch; the reader writes the other parity's before moving stripes to the next epoch.
    pub(crate) thresholds: [Box<[AtomicU64]>; 2],
    sampling: SamplingConfig,
    clock: Arc<dyn Clock>,
    pub(crate) salt: u64,
    pub(crate) drops: [AtomicU64; DropReason::COUNT],
    /// Sampled durations of `record` calls, in ns. Writers only `try_lock` it (a busy
    /// histogram skips the sample); the reader drains it.
    record_times: Mutex<hdrhistogram::Histogram<u64>>,
    reader: Mutex<ReaderState>,
}

/// Upper bounds (seconds) of the cumulative buckets of [`RecordTimes::buckets`]: 100 ns to
/// 10 ms, for a Prometheus histogram of the record call's duration.
pub const RECORD_TIME_BUCKETS_SECONDS: [f64; 12] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3, 1e-2,
];

/// Sampled durations of `record` calls since the last [`Recorder::take_record_times`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordTimes {
    /// Calls timed (one in [`RECORD_TIME_SAMPLE_EVERY`] per thread).
    pub samples: u64,
    /// Sum of the timed durations, in seconds.
    pub sum_seconds: f64,
    /// Timed calls that took at most each bound of [`RECORD_TIME_BUCKETS_SECONDS`]
    /// (cumulative, as a Prometheus histogram's `le` buckets; `samples` is the `+Inf` one).
    pub buckets: Vec<(f64, u64)>,
    /// Median, in seconds.
    pub p50_seconds: f64,
    /// 90th percentile, in seconds.
    pub p90_seconds: f64,
    /// 99th percentile, in seconds.
    pub p99_seconds: f64,
    /// Longest, in seconds.
    pub max_seconds: f64,
}

/// One language's totals since the recorder started (sampling-weighted), for counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LanguageTotals {
    /// Tokens: the largest per-layer count.
    pub tokens: f64,
    /// Tokens per MoE layer.
    pub layer_tokens: Vec<f64>,
    /// Selections per `[layer][expert]`.
    pub expert_selections: Vec<Vec<f64>>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("model", &self.spec.name)
            .field("window", &self.window)
            .field("stripes", &self.stripes.len())
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// The model.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The window's shape.
    pub fn window_config(&self) -> WindowConfig {
        self.window
    }

    /// The language registry (ids, tags, invalid and over-cap counts).
    pub fn registry(&self) -> &LanguageRegistry {
        &self.registry
    }

    /// The id of a request's language tag, interning it the first time. Untrusted input is
    /// fine: see [`LanguageRegistry::intern`]. Call it once per request, not per layer.
    pub fn language(&self, tag: &str) -> LangId {
        self.registry
            .intern_with(tag, self.clock.now_unix_ms(), |id, tag| {
                // Before the id is visible: its sampling threshold in both epochs.
                let t = threshold_for_rate(self.sampling.rate_for_tag(tag).initial_rate());
                for parity in &self.thresholds {
                    parity[id.index()].store(t, Ordering::Relaxed);
                }
            })
    }

    /// Tokens dropped so far for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }

    /// Bytes the recorder holds for counts now (see [`RecorderBuilder::memory_bound`] for the
    /// bound).
    pub fn allocated_bytes(&self) -> usize {
        let ring = self.lock().ring.bytes();
        ring + self.stripes.iter().map(Stripe::bytes).sum::<usize>()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReaderState> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
