//! Building a [`Recorder`]: the spec, the window, the language cap, sampling, the clock.

use crate::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::{ReaderState, Recorder, MAX_WRITER_STRIPES};
use crate::clock::{Clock, SystemClock};
use crate::lang::{LanguageRegistry, DEFAULT_MAX_LANGUAGES};
use crate::sampling::{mix64, threshold_for_rate, SamplingConfig};
use crate::spec::ModelSpec;
use crate::stage::Stripe;
use crate::window::{Ring, WindowConfig};

/// Configures a [`Recorder`].
///
/// ```
/// use moescope_core::{ModelSpec, Recorder, SamplingConfig, SamplingRate, WindowConfig};
/// let recorder = Recorder::builder(ModelSpec::preset("olmoe-1b-7b")?)
///     .window(WindowConfig { bucket_ms: 5_000, buckets: 12 })
///     .max_languages(16)
///     .sampling(SamplingConfig::new(SamplingRate::TargetTokensPerSecond(5_000.0))?)
///     .build()?;
/// assert_eq!(recorder.spec().num_experts, 64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct RecorderBuilder {
    spec: ModelSpec,
    window: WindowConfig,
    max_languages: usize,
    sampling: SamplingConfig,
    clock: Arc<dyn Clock>,
    seed: u64,
    stripes: usize,
    allowlist: Option<Vec<String>>,
}

impl RecorderBuilder {
    /// The rolling window's shape (default: 30 buckets of 10 s).
    pub fn window(mut self, window: WindowConfig) -> Self {
        self.window = window;
        self
    }

    /// The cap on tracked languages (default 32); later tags count as `other`.
    pub fn max_languages(mut self, max: usize) -> Self {
        self.max_languages = max;
        self
    }

    /// Only these language tags get series of their own; every other tag counts as `other`
    /// (default: any valid tag, up to the cap). With an allowlist no client can take a slot
    /// that a real language needs.
    pub fn allowed_languages<S: AsRef<str>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.allowlist = Some(tags.into_iter().map(|t| t.as_ref().to_owned()).collect());
        self
    }

    /// The sampling policy (default: every token).
    pub fn sampling(mut self, sampling: SamplingConfig) -> Self {
        self.sampling = sampling;
        self
    }

    /// The clock that times buckets (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Seeds the hash that samples sequences and splits them into halves (default fixed, so
    /// runs are reproducible; replicas with the same seed split the same sequence ids alike).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Staging stripes: how many threads can record at the same instant (default: twice the
    /// machine's logical CPUs, at least 4, at most 64). A call that finds every stripe busy
    /// drops its batch, counted as [`DropReason::WriterContention`](crate::DropReason::WriterContention). Memory per stripe is
    /// allocated only when a thread first uses it.
    pub fn writer_stripes(mut self, stripes: usize) -> Self {
        self.stripes = stripes;
        self
    }

    /// An upper bound of the bytes the recorder will hold for counts (what
    /// [`Recorder::allocated_bytes`] reports) once `languages` languages were recorded
    /// (count `und` and `other` if they get tokens), with or without router probabilities, by
    /// `writer_threads` threads at once. The formula is in [`crate::window`]'s docs.
    ///
    /// ```
    /// use moescope_core::{ModelSpec, Recorder};
    /// let builder = Recorder::builder(ModelSpec::preset("qwen3-30b-a3b")?);
    /// // 16 languages plus `und` and `other`, with probabilities, from 4 threads.
    /// assert!(builder.memory_bound(18, true, 4) < 64 << 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn memory_bound(
        &self,
        languages: usize,
        with_probabilities: bool,
        writer_threads: usize,
    ) -> usize {
        crate::window::memory_bytes(
            &self.window,
            self.spec.num_moe_layers(),
            self.spec.num_experts as usize,
            languages,
            with_probabilities,
            self.max_languages,
            writer_threads,
        )
    }

    /// Builds the recorder.
    ///
    /// # Errors
    /// [`ConfigError`] naming the invalid field of the spec or the window.
    pub fn build(self) -> Result<Recorder, ConfigError> {
        self.spec.validate().map_err(|e| match e {
            crate::spec::SpecError::Invalid { field, reason } => {
                ConfigError::new(format!("spec.{field}"), reason)
            }
            other => ConfigError::new("spec", other.to_string()),
        })?;
        self.window
            .validate()
            .map_err(|(field, reason)| ConfigError::new(format!("window.{field}"), reason))?;
        if !(1..=crate::lang::MAX_LANGUAGES_LIMIT).contains(&self.max_languages) {
            return Err(ConfigError::new(
                "max_languages",
                format!(
                    "must be between 1 and {}, got {}",
                    crate::lang::MAX_LANGUAGES_LIMIT,
                    self.max_languages
                ),
            ));
        }
        if !(1..=MAX_WRITER_STRIPES).contains(&self.stripes) {
            return Err(ConfigError::new(
                "writer_stripes",
                format!(
                    "must be between 1 and {MAX_WRITER_STRIPES}, got {}",
                    self.stripes
                ),
            ));
        }
        let mut registry = LanguageRegistry::new(self.max_languages);
        if let Some(list) = &self.allowlist {
            registry = registry
                .with_allowlist(list)
                .map_err(|e| ConfigError::new("allowed_languages", e.to_string()))?;
        }
        let lang_slots = registry.slot_count();
        let (layers, experts) = (self.spec.num_moe_layers(), self.spec.num_experts as usize);
        let now = self.clock.now_unix_ms();
        let bucket = self.window.bucket_ms;
        let initial = threshold_for_rate(self.sampling.default_rate().initial_rate());
        let thresholds =
            std::array::from_fn(|_| (0..lang_slots).map(|_| AtomicU64::new(initial)).collect());
        Ok(Recorder {
            top_k: self.spec.top_k as usize,
            layers,
            experts,
            stripes: (0..self.stripes)
                .map(|i| Stripe::new(i, lang_slots, layers, experts))
                .collect(),
            thresholds,
            reader: Mutex::new(ReaderState {
                ring: Ring::new(&self.window, layers, experts, lang_slots, now),
                epoch: 0,
                next_boundary_ms: (now / bucket + 1) * bucket,
            }),
            spec: self.spec,
            window: self.window,
            registry,
            sampling: self.sampling,
            clock: self.clock,
            salt: mix64(self.seed),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            record_times: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 2)
                    .map_err(|e| ConfigError::new("record_times", e.to_string()))?,
            ),
        })
    }
}

impl Recorder {
    /// A builder for a recorder of `spec`'s model.
    pub fn builder(spec: ModelSpec) -> RecorderBuilder {
        RecorderBuilder {
            spec,
            window: WindowConfig::default(),
            max_languages: DEFAULT_MAX_LANGUAGES,
            sampling: SamplingConfig::default(),
            clock: Arc::new(SystemClock),
            seed: 0x6d6f_6573_636f_7065, // "moescope"
            stripes: default_stripes(),
            allowlist: None,
        }
    }

    /// A recorder with the defaults (30 × 10 s window, 32 languages, every token).
    ///
    /// # Errors
    /// [`ConfigError`] if `spec` is invalid.
    pub fn new(spec: ModelSpec) -> Result<Recorder, ConfigError> {
        Recorder::builder(spec).build()
    }
}

/// An invalid recorder configuration: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid recorder configuration: {field}: {reason}")]
pub struct ConfigError {
    field: String,
    reason: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field, e.g. `window.bucket_ms`, `max_languages`, `spec.top_k`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it, with the offending value.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

fn default_stripes() -> usize {
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    (2 * cpus).clamp(4, 64)
}
