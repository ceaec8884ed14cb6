//! The recorder: the serving path's one entry point, and the window's reader side.
//!
//! # Writers
//!
//! [`Recorder::record`] takes one [`RouterBatch`] per MoE layer per forward step. It claims a
//! staging stripe (one compare-and-swap; see [`crate::stage`]) and counts the batch straight
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
//! when a bucket boundary has passed, and merge its buckets into a [`Snapshot`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::batch::{
    DropReason, ExpertId, Languages, RecordError, Recorded, RouterBatch, RouterScores,
    MAX_BATCH_TOKENS,
};
use crate::clock::{Clock, SystemClock};
use crate::lang::{LangId, LanguageRegistry, DEFAULT_MAX_LANGUAGES};
use crate::sampling::{mix64, threshold_for_rate, weight_for_threshold, SamplingConfig};
use crate::snapshot::{
    BucketCounts, HalfCounts, LanguageCounts, LayerCounts, Snapshot, WindowRange,
};
use crate::spec::ModelSpec;
use crate::stage::{bump, bump_f64, StageBlock, Stripe};
use crate::window::{BucketRead, Ring, WindowConfig};

/// One `record` call in this many (per thread) is timed for [`Recorder::take_record_times`]:
/// two clock reads and a histogram record, about 60 ns, spread over 64 calls.
pub const RECORD_TIME_SAMPLE_EVERY: u32 = 64;

/// Most staging stripes a recorder may have.
pub const MAX_WRITER_STRIPES: usize = 256;

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
pub struct RecorderBuilder {
    spec: ModelSpec,
    window: WindowConfig,
    max_languages: usize,
    sampling: SamplingConfig,
    clock: Arc<dyn Clock>,
    seed: u64,
    stripes: usize,
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
    /// drops its batch, counted as [`DropReason::WriterContention`]. Memory per stripe is
    /// allocated only when a thread first uses it.
    pub fn writer_stripes(mut self, stripes: usize) -> Self {
        self.stripes = stripes;
        self
    }

    /// Builds the recorder.
    ///
    /// # Errors
    /// [`ConfigError`] naming the invalid field of the spec or the window.
    pub fn build(self) -> Result<Recorder, ConfigError> {
        self.spec
            .validate()
            .map_err(|e| ConfigError(format!("model spec: {e}")))?;
        self.window.validate().map_err(|e| ConfigError(e.into()))?;
        if !(1..=crate::lang::MAX_LANGUAGES_LIMIT).contains(&self.max_languages) {
            return Err(ConfigError(format!(
                "max_languages must be between 1 and {}, got {}",
                crate::lang::MAX_LANGUAGES_LIMIT,
                self.max_languages
            )));
        }
        if !(1..=MAX_WRITER_STRIPES).contains(&self.stripes) {
            return Err(ConfigError(format!(
                "writer_stripes must be between 1 and {MAX_WRITER_STRIPES}, got {}",
                self.stripes
            )));
        }
        let registry = LanguageRegistry::new(self.max_languages);
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
                    .map_err(|e| ConfigError(format!("record-time histogram: {e}")))?,
            ),
        })
    }
}

/// An invalid recorder configuration; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid recorder configuration: {0}")]
pub struct ConfigError(String);

struct ReaderState {
    ring: Ring,
    /// The epoch of every stripe outside a rotation (see [`crate::stage`]).
    epoch: u64,
    /// When the current bucket ends (aligned to multiples of the bucket length).
    next_boundary_ms: u64,
}

/// Records routing decisions into a rolling window and reads them back as [`Snapshot`]s.
/// Share it between threads with an `Arc`; every method takes `&self`.
pub struct Recorder {
    spec: ModelSpec,
    layers: usize,
    experts: usize,
    top_k: usize,
    window: WindowConfig,
    registry: LanguageRegistry,
    stripes: Box<[Stripe]>,
    /// Keep-thresholds per language, by epoch parity: writers read those of their stripe's
    /// epoch; the reader writes the other parity's before moving stripes to the next epoch.
    thresholds: [Box<[AtomicU64]>; 2],
    sampling: SamplingConfig,
    clock: Arc<dyn Clock>,
    salt: u64,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Sampled durations of `record` calls, in ns. Writers only `try_lock` it (a busy
    /// histogram skips the sample); the reader drains it.
    record_times: Mutex<hdrhistogram::Histogram<u64>>,
    reader: Mutex<ReaderState>,
}

/// Sampled durations of `record` calls since the last [`Recorder::take_record_times`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecordTimes {
    /// Calls timed (one in [`RECORD_TIME_SAMPLE_EVERY`] per thread).
    pub samples: u64,
    /// Median, in seconds.
    pub p50_seconds: f64,
    /// 90th percentile, in seconds.
    pub p90_seconds: f64,
    /// 99th percentile, in seconds.
    pub p99_seconds: f64,
    /// Longest, in seconds.
    pub max_seconds: f64,
    /// Sum of the sampled durations, in seconds (mean × samples).
    pub sum_seconds: f64,
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

thread_local! {
    /// The stripe this thread tries first.
    static PREFERRED_STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
    /// Calls until this thread times one (const-initialized: no allocation, no destructor).
    static TIMING_COUNTDOWN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

fn default_stripes() -> usize {
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    (2 * cpus).clamp(4, 64)
}

/// What every token of one call shares.
struct Call<'a, I: ExpertId> {
    batch: &'a RouterBatch<'a, I>,
    stripe: &'a Stripe,
    thresholds: &'a [AtomicU64],
    issued: usize,
    alternate: u64,
    row: &'a mut [f64],
    /// The language of the current run, and what to do with its tokens.
    run_lang: LangId,
    run: Run<'a>,
    /// Tokens of the current run not yet added to its layer count (halves packed).
    pending_tokens: u64,
    out: Recorded,
    drops: [u32; DropReason::ALL.len()],
}

/// What a run of tokens of one language does.
#[derive(Clone, Copy)]
enum Run<'a> {
    Excluded,
    Unknown,
    Count {
        threshold: u64,
        block: &'a StageBlock,
    },
}

impl<'a> Run<'a> {
    /// What to do with a run of tokens of `lang` in a call holding `stripe`: both record loops
    /// resolve a run here. Marks the language's block dirty for the next fold.
    #[inline]
    fn resolve(
        stripe: &'a Stripe,
        thresholds: &[AtomicU64],
        issued: usize,
        lang: LangId,
    ) -> Run<'a> {
        let li = lang.index();
        if lang == LangId::EXCLUDED {
            Run::Excluded
        } else if li >= issued {
            Run::Unknown
        } else {
            let block = stripe.block(li);
            block.dirty.store(true, Ordering::Relaxed);
            Run::Count {
                threshold: thresholds[li].load(Ordering::Relaxed),
                block,
            }
        }
    }
}

impl<I: ExpertId> Call<'_, I> {
    #[inline(always)]
    fn drop_token(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
        self.out.dropped += 1;
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
        }
    }

    /// A recorder with the defaults (30 × 10 s window, 32 languages, every token).
    ///
    /// # Errors
    /// [`ConfigError`] if `spec` is invalid.
    pub fn new(spec: ModelSpec) -> Result<Recorder, ConfigError> {
        Recorder::builder(spec).build()
    }

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
        self.registry.intern_with(tag, |id, tag| {
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

    /// Bytes the recorder holds for counts now (see [`crate::window::memory_bytes`] for the
    /// bound).
    pub fn allocated_bytes(&self) -> usize {
        let ring = self.lock().ring.bytes();
        ring + self.stripes.iter().map(Stripe::bytes).sum::<usize>()
    }

    fn count_drop(&self, reason: DropReason, tokens: u64) {
        self.drops[reason.index()].fetch_add(tokens, Ordering::Relaxed);
    }

    /// Claims a free stripe, starting with this thread's preferred one.
    #[inline]
    fn claim(&self) -> Option<crate::stage::Claim<'_>> {
        let n = self.stripes.len();
        let first = PREFERRED_STRIPE.try_with(|s| *s).unwrap_or(0) % n;
        (0..n).find_map(|i| {
            let j = if first + i >= n {
                first + i - n
            } else {
                first + i
            };
            self.stripes[j].try_claim()
        })
    }

    /// Records one MoE layer's routing decisions for one step.
    ///
    /// Never panics, never blocks, allocates only on warm-up. Tokens with bad values are
    /// dropped one by one and counted by reason; the rest of the batch is recorded.
    ///
    /// # Errors
    /// [`RecordError`] when the batch cannot be read at all (lengths that do not match, a
    /// layer index out of range, too many tokens); its tokens are counted as drops under
    /// [`RecordError::reason`], and nothing already recorded is affected.
    pub fn record<I: ExpertId>(&self, batch: &RouterBatch<'_, I>) -> Result<Recorded, RecordError> {
        let timed = TIMING_COUNTDOWN
            .try_with(|c| match c.get() {
                0 => {
                    c.set(RECORD_TIME_SAMPLE_EVERY - 1);
                    true
                }
                n => {
                    c.set(n - 1);
                    false
                }
            })
            .unwrap_or(false);
        let start = timed.then(std::time::Instant::now);
        let result = self.record_untimed(batch);
        if let Some(start) = start {
            if let Ok(mut h) = self.record_times.try_lock() {
                h.saturating_record(start.elapsed().as_nanos().max(1) as u64);
            }
        }
        result
    }

    fn record_untimed<I: ExpertId>(
        &self,
        batch: &RouterBatch<'_, I>,
    ) -> Result<Recorded, RecordError> {
        let tokens = batch.expert_ids.len() / self.top_k;
        if let Err(err) = self.check_shape(batch) {
            self.count_drop(err.reason(), tokens.max(1) as u64);
            return Err(err);
        }
        let Some(claim) = self.claim() else {
            self.count_drop(DropReason::WriterContention, tokens as u64);
            return Ok(Recorded {
                dropped: tokens as u32,
                ..Recorded::default()
            });
        };
        let stripe = claim.stripe;
        let epoch = stripe.epoch.load(Ordering::Relaxed);
        let mut row_guard = match batch.scores {
            // Only the claimer locks `row`, so this never waits.
            Some(_) => stripe.row.try_lock().ok(),
            None => None,
        };
        let mut spare = Vec::new();
        let row: &mut Vec<f64> = row_guard.as_deref_mut().unwrap_or(&mut spare);
        if batch.scores.is_some() && row.len() < self.experts {
            row.resize(self.experts, 0.0); // warm-up
        }
        // Ids and languages only (the common case): a loop that keeps its state in locals.
        let no_sequences = match batch.languages {
            Languages::Segments(segs) => segs.iter().all(|s| s.sequence_id.is_none()),
            _ => batch.sequence_ids.is_none(),
        };
        if batch.topk_weights.is_none() && batch.scores.is_none() && no_sequences {
            let thresholds = &self.thresholds[(epoch & 1) as usize];
            // Rows of a common top-k are arrays, so the compiler unrolls the count; then the
            // language lookup is specialised per kind of `languages`.
            macro_rules! by_rows {
                ($lang_at:expr) => {{
                    let ids = batch.expert_ids;
                    match self.top_k {
                        8 => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.layer,
                            ids.as_chunks::<8>().0.iter(),
                            $lang_at,
                        ),
                        6 => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.layer,
                            ids.as_chunks::<6>().0.iter(),
                            $lang_at,
                        ),
                        4 => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.layer,
                            ids.as_chunks::<4>().0.iter(),
                            $lang_at,
                        ),
                        2 => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.layer,
                            ids.as_chunks::<2>().0.iter(),
                            $lang_at,
                        ),
                        k => self.count_ids_only(
                            stripe,
                            thresholds,
                            batch.layer,
                            ids.chunks_exact(k),
                            $lang_at,
                        ),
                    }
                }};
            }
            let (out, drops) = match batch.languages {
                Languages::All(lang) => by_rows!(|_| lang),
                Languages::PerToken(langs) => by_rows!(|t| langs[t]),
                Languages::Segments(segs) => {
                    let mut langs = segs
                        .iter()
                        .flat_map(|s| std::iter::repeat_n(s.lang, s.tokens as usize));
                    // The shape check made the segments add up to T.
                    by_rows!(|_| langs.next().unwrap_or(LangId::EXCLUDED))
                }
            };
            drop(row_guard);
            drop(claim);
            self.add_drops(&drops);
            return Ok(out);
        }
        let mut call = Call {
            batch,
            stripe,
            thresholds: &self.thresholds[(epoch & 1) as usize],
            issued: self.registry.issued(),
            alternate: stripe.next_random(),
            row: row.as_mut_slice(),
            run_lang: LangId::EXCLUDED,
            run: Run::Excluded,
            pending_tokens: 0,
            out: Recorded::default(),
            drops: [0; DropReason::ALL.len()],
        };
        match batch.languages {
            Languages::All(lang) => match batch.sequence_ids {
                Some(seqs) => {
                    for (t, &q) in seqs.iter().enumerate() {
                        self.token(&mut call, t, lang, Some(q));
                    }
                }
                None => {
                    for t in 0..tokens {
                        self.token(&mut call, t, lang, None);
                    }
                }
            },
            Languages::PerToken(langs) => match batch.sequence_ids {
                Some(seqs) => {
                    for (t, (&lang, &q)) in langs.iter().zip(seqs).enumerate() {
                        self.token(&mut call, t, lang, Some(q));
                    }
                }
                None => {
                    for (t, &lang) in langs.iter().enumerate() {
                        self.token(&mut call, t, lang, None);
                    }
                }
            },
            Languages::Segments(segs) => {
                let mut t = 0;
                for seg in segs {
                    for _ in 0..seg.tokens {
                        self.token(&mut call, t, seg.lang, seg.sequence_id);
                        t += 1;
                    }
                }
            }
        }
        self.end_run(&mut call);
        let (out, drops) = (call.out, call.drops);
        drop(row_guard);
        drop(claim);
        self.add_drops(&drops);
        Ok(out)
    }

    fn add_drops(&self, drops: &[u32; DropReason::ALL.len()]) {
        for (reason, &n) in DropReason::ALL.iter().zip(drops) {
            if n > 0 {
                self.count_drop(*reason, u64::from(n));
            }
        }
    }

    /// The loop for batches of ids and languages only (no gate weights, no router scores, no
    /// sequence ids): the same steps as [`token`](Self::token), with its state in locals.
    #[inline(always)]
    fn count_ids_only<'b, I: ExpertId, R>(
        &self,
        stripe: &Stripe,
        thresholds: &[AtomicU64],
        layer: usize,
        rows: impl Iterator<Item = R>,
        mut lang_at: impl FnMut(usize) -> LangId,
    ) -> (Recorded, [u32; DropReason::ALL.len()])
    where
        R: Copy + IntoIterator<Item = &'b I>,
    {
        let e = self.experts;
        let issued = self.registry.issued();
        let alternate = stripe.next_random();
        let mut out = Recorded::default();
        let mut drops = [0u32; DropReason::ALL.len()];
        let mut run_lang = LangId::EXCLUDED;
        // The current run's threshold, block and `counts[layer]`; None: excluded or unknown.
        let mut run: Option<(u64, &StageBlock, &[AtomicU64])> = None;
        let mut pending = 0u64;
        for (t, ids) in rows.enumerate() {
            let lang = lang_at(t);
            if lang != run_lang {
                if let (Some((_, block, _)), true) = (run, pending != 0) {
                    bump(&block.layer_tokens[layer], pending);
                }
                pending = 0;
                run_lang = lang;
                run = match Run::resolve(stripe, thresholds, issued, lang) {
                    Run::Count { threshold, block } => {
                        Some((threshold, block, &block.counts[layer * e..(layer + 1) * e]))
                    }
                    Run::Excluded | Run::Unknown => None,
                };
            }
            let Some((threshold, _, counts)) = run else {
                if lang == LangId::EXCLUDED {
                    out.excluded += 1;
                } else {
                    drops[DropReason::UnknownLanguage.index()] += 1;
                    out.dropped += 1;
                }
                continue;
            };
            let h = if threshold == u64::MAX {
                alternate ^ t as u64
            } else {
                let h = stripe.next_random();
                if h >= threshold {
                    out.sampled_out += 1;
                    continue;
                }
                h
            };
            let inc = 1u64 << (32 * (h & 1));
            if count_row(counts, ids, inc) {
                uncount_row(counts, ids, inc);
                drops[DropReason::ExpertOutOfRange.index()] += 1;
                out.dropped += 1;
                continue;
            }
            pending += inc;
            out.recorded += 1;
        }
        if let (Some((_, block, _)), true) = (run, pending != 0) {
            bump(&block.layer_tokens[layer], pending);
        }
        (out, drops)
    }

    fn check_shape<I: ExpertId>(&self, b: &RouterBatch<'_, I>) -> Result<(), RecordError> {
        let (k, e) = (self.top_k, self.experts);
        let n = b.expert_ids.len();
        if !n.is_multiple_of(k) {
            return Err(RecordError::ShapeMismatch {
                field: "expert_ids",
                expected: n.div_ceil(k) * k,
                found: n,
            });
        }
        let t = n / k;
        if t > MAX_BATCH_TOKENS {
            return Err(RecordError::BatchTooLarge { tokens: t });
        }
        if b.layer >= self.layers {
            return Err(RecordError::LayerOutOfRange {
                layer: b.layer,
                layers: self.layers,
            });
        }
        let mismatch = |field, expected, found| {
            if expected == found {
                Ok(())
            } else {
                Err(RecordError::ShapeMismatch {
                    field,
                    expected,
                    found,
                })
            }
        };
        match b.languages {
            Languages::All(_) => {}
            Languages::PerToken(ids) => mismatch("languages", t, ids.len())?,
            Languages::Segments(segs) => {
                let total: u64 = segs.iter().map(|s| u64::from(s.tokens)).sum();
                mismatch("languages", t, total.min(usize::MAX as u64) as usize)?
            }
        }
        if let Some(w) = b.topk_weights {
            mismatch("topk_weights", t * k, w.len())?;
        }
        if let Some(s) = b.scores {
            mismatch("router_scores", t * e, s.values().len())?;
        }
        if let (Some(q), false) = (
            b.sequence_ids,
            matches!(b.languages, Languages::Segments(_)),
        ) {
            mismatch("sequence_ids", t, q.len())?;
        }
        Ok(())
    }

    /// Resolves the language of a new run of tokens (tokens come in runs of one language:
    /// a request's segment, or a whole batch), settling the previous run's token count.
    #[cold]
    fn start_run<'a, I: ExpertId>(&self, c: &mut Call<'a, I>, lang: LangId) {
        self.end_run(c);
        c.run_lang = lang;
        c.run = Run::resolve(c.stripe, c.thresholds, c.issued, lang);
    }

    /// Adds the current run's tokens to its layer's token count.
    fn end_run<I: ExpertId>(&self, c: &mut Call<'_, I>) {
        if let Run::Count { block, .. } = c.run {
            if c.pending_tokens != 0 {
                bump(&block.layer_tokens[c.batch.layer], c.pending_tokens);
            }
        }
        c.pending_tokens = 0;
    }

    /// Validates token `t`, samples it, and counts it into the claimed stripe.
    #[inline(always)]
    fn token<I: ExpertId>(&self, c: &mut Call<'_, I>, t: usize, lang: LangId, seq: Option<u64>) {
        let (k, e) = (self.top_k, self.experts);
        if lang != c.run_lang {
            self.start_run(c, lang);
        }
        let (threshold, block) = match c.run {
            Run::Count { threshold, block } => (threshold, block),
            Run::Excluded => {
                c.out.excluded += 1;
                return;
            }
            Run::Unknown => {
                c.drop_token(DropReason::UnknownLanguage);
                return;
            }
        };
        let h = match seq {
            Some(q) => mix64(q ^ self.salt),
            None if threshold == u64::MAX => c.alternate ^ t as u64,
            None => c.stripe.next_random(),
        };
        if threshold != u64::MAX && h >= threshold {
            c.out.sampled_out += 1;
            return;
        }
        let ids = &c.batch.expert_ids[t * k..(t + 1) * k];
        let mut weight_sum = 0.0f64;
        if let Some(w) = c.batch.topk_weights {
            let w = &w[t * k..(t + 1) * k];
            if let Err(reason) = check_weights(w) {
                c.drop_token(reason);
                return;
            }
            weight_sum = w.iter().map(|&x| f64::from(x)).sum();
        }
        let mut entropy = 0.0;
        if let Some(scores) = c.batch.scores {
            if c.row.len() < e {
                // No row buffer (cannot happen: the claimer owns it); count, never panic.
                c.drop_token(DropReason::WriterContention);
                return;
            }
            match probabilities(scores, t, e, c.row) {
                Ok(h) => entropy = h,
                Err(reason) => {
                    c.drop_token(reason);
                    return;
                }
            }
        }
        // Count the token: plain increments into the claimed stripe. The ids are checked as
        // they are counted (one pass); a row with a bad id is taken back out, which is rare.
        let layer = c.batch.layer;
        let inc = 1u64 << (32 * (h & 1));
        let counts = &block.counts[layer * e..(layer + 1) * e];
        if count_row(counts, ids, inc) {
            uncount_row(counts, ids, inc);
            c.drop_token(DropReason::ExpertOutOfRange);
            return;
        }
        c.pending_tokens += inc;
        if c.batch.topk_weights.is_some() {
            bump_f64(&block.topk_weight[layer], weight_sum);
        }
        if c.batch.scores.is_some() {
            let probs = block.probs(self.layers, e);
            for (acc, &p) in probs.prob_sum[layer * e..(layer + 1) * e]
                .iter()
                .zip(c.row.iter())
            {
                bump_f64(acc, p);
            }
            bump(&probs.prob_tokens[layer], 1);
            bump_f64(&probs.entropy[layer], entropy);
        }
        c.out.recorded += 1;
    }

    /// Records the text length of a request (characters and whitespace-separated words) for
    /// the tokenization statistics. Call it once per request with the text whose tokens you
    /// record (prompt, and generated text if you record decode steps). Text is not sampled.
    pub fn record_text(&self, lang: LangId, chars: u64, words: u64) {
        if lang == LangId::EXCLUDED {
            return;
        }
        if lang.index() >= self.registry.issued() {
            self.count_drop(DropReason::UnknownLanguage, 1);
            return;
        }
        let Some(claim) = self.claim() else {
            self.count_drop(DropReason::WriterContention, 1);
            return;
        };
        let block = claim.stripe.block(lang.index());
        block.dirty.store(true, Ordering::Relaxed);
        bump(&block.text[0], chars);
        bump(&block.text[1], words);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReaderState> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Folds the stripes into the window and rotates it if a bucket boundary has passed.
    /// Call it every few seconds from a background thread ([`spawn_upkeep`](Self::spawn_upkeep)
    /// or an exporter's); [`snapshot`](Self::snapshot) calls it too. Counts recorded since
    /// the last upkeep land in the bucket that is current when it runs.
    pub fn upkeep(&self) {
        let now = self.clock.now_unix_ms();
        let mut st = self.lock();
        self.rotate_due(&mut st, now);
        self.fold_all(&mut st);
    }

    /// The sampled durations of `record` calls since the last call, and resets them.
    pub fn take_record_times(&self) -> RecordTimes {
        let mut h = self
            .record_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let secs = |ns: u64| ns as f64 / 1e9;
        let times = RecordTimes {
            samples: h.len(),
            p50_seconds: secs(h.value_at_quantile(0.5)),
            p90_seconds: secs(h.value_at_quantile(0.9)),
            p99_seconds: secs(h.value_at_quantile(0.99)),
            max_seconds: secs(h.max()),
            sum_seconds: h.mean() * h.len() as f64 / 1e9,
        };
        h.reset();
        times
    }

    /// Totals since start per language tag (folding the stripes first): the source of the
    /// `_total` counters, which unlike the window never forget.
    pub fn totals(&self) -> BTreeMap<String, LanguageTotals> {
        let mut st = self.lock();
        self.fold_all(&mut st);
        let (l, e) = (self.layers, self.experts);
        let mut out: BTreeMap<String, LanguageTotals> = BTreeMap::new();
        for (id, tag) in self.registry.languages() {
            let Some((tokens, selections)) = st.ring.totals(id.index()) else {
                continue;
            };
            let t = out
                .entry(tag.as_str().to_owned())
                .or_insert_with(|| LanguageTotals {
                    tokens: 0.0,
                    layer_tokens: vec![0.0; l],
                    expert_selections: vec![vec![0.0; e]; l],
                });
            for (d, s) in t.layer_tokens.iter_mut().zip(tokens) {
                *d += s;
            }
            for (row, src) in t
                .expert_selections
                .iter_mut()
                .zip(selections.chunks_exact(e))
            {
                for (d, s) in row.iter_mut().zip(src) {
                    *d += s;
                }
            }
            t.tokens = t.layer_tokens.iter().copied().fold(0.0, f64::max);
        }
        out
    }

    /// When the current bucket began (Unix ms), as of the last upkeep.
    pub fn current_bucket_start_unix_ms(&self) -> u64 {
        let st = self.lock();
        st.ring.start_ms(st.ring.current())
    }

    /// Starts a background thread that calls [`upkeep`](Self::upkeep) every `every` until the
    /// returned handle is dropped. A serving binary without an exporter (which runs its own
    /// upkeep) should keep one alive, so that buckets rotate on time.
    ///
    /// # Errors
    /// The OS error if the thread cannot be spawned.
    pub fn spawn_upkeep(self: &Arc<Self>, every: Duration) -> std::io::Result<UpkeepThread> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let recorder = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("moescope-upkeep".into())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => match recorder.upgrade() {
                        Some(r) => r.upkeep(),
                        None => return,
                    },
                    _ => return,
                }
            })?;
        Ok(UpkeepThread {
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// Folds every stripe into the current bucket (waiting for writers to let go of each; the
    /// reader may wait, writers never do).
    fn fold_all(&self, st: &mut ReaderState) {
        for stripe in self.stripes.iter() {
            let claim = stripe.claim_waiting();
            let parity = (stripe.epoch.load(Ordering::Relaxed) & 1) as usize;
            st.ring.fold(&claim, &self.thresholds[parity]);
        }
    }

    fn rotate_due(&self, st: &mut ReaderState, now: u64) {
        let bucket = self.window.bucket_ms;
        let behind = now.saturating_sub(st.next_boundary_ms) / bucket;
        let slots = self.window.ring_slots() as u64;
        if behind > slots {
            // Idle for longer than the window: the last `slots` rotations empty it anyway.
            st.next_boundary_ms += (behind - slots) * bucket;
        }
        // Several boundaries passed since the last upkeep: the buckets in between got no
        // upkeep, so they stay empty, and what the stripes hold goes to the last one closed
        // (still in the window) rather than to the bucket current at the previous upkeep.
        while now >= st.next_boundary_ms + bucket {
            st.ring.rotate(st.next_boundary_ms);
            st.next_boundary_ms += bucket;
        }
        if now >= st.next_boundary_ms {
            let boundary = st.next_boundary_ms;
            self.rotate(st, boundary);
            st.next_boundary_ms += bucket;
        }
    }

    /// Closes the current bucket at `boundary`. See [`crate::stage`] for the epoch protocol.
    fn rotate(&self, st: &mut ReaderState, boundary: u64) {
        // 1. Fold what the stripes hold, so the closing bucket's traffic is known.
        self.fold_all(st);
        // 2. Sampling thresholds of the next bucket, from the closing bucket's traffic.
        let closing = st.ring.current();
        let seconds = boundary.saturating_sub(st.ring.start_ms(closing)).max(1) as f64 / 1000.0;
        let next = &self.thresholds[((st.epoch + 1) & 1) as usize];
        let default = threshold_for_rate(self.sampling.default_rate().initial_rate());
        for t in next.iter() {
            t.store(default, Ordering::Relaxed);
        }
        for (id, tag) in self.registry.languages() {
            let offered = st.ring.weighted_tokens(closing, id.index()) / seconds;
            let rate = self.sampling.rate_for_tag(&tag).next_rate(offered);
            next[id.index()].store(threshold_for_rate(rate), Ordering::Relaxed);
        }
        // 3. Fold the rest of the closing epoch and move each stripe to the next one.
        let current = &self.thresholds[(st.epoch & 1) as usize];
        for stripe in self.stripes.iter() {
            let claim = stripe.claim_waiting();
            st.ring.fold(&claim, current);
            stripe.epoch.store(st.epoch + 1, Ordering::Relaxed); // published by the release
        }
        // 4. Open the next bucket.
        st.ring.rotate(boundary);
        st.epoch += 1;
    }

    /// The rolling window merged into one [`Snapshot`] (folding and rotating first). Languages
    /// with no tokens in the window are left out. Split halves are included.
    pub fn snapshot(&self) -> Snapshot {
        self.read(None)
    }

    /// Like [`snapshot`](Self::snapshot), with each bucket's counts in `buckets` (oldest first)
    /// for the spread of a metric across buckets. Larger: one set of counts per bucket.
    pub fn snapshot_with_buckets(&self) -> Snapshot {
        self.read(Some(None))
    }

    /// Like [`snapshot_with_buckets`](Self::snapshot_with_buckets), with only the buckets that
    /// began after `after_start_unix_ms` in `buckets` (the current, still open bucket is
    /// always among them). A reader that keeps per-bucket results computes each closed bucket
    /// once: pass the start of the newest closed bucket it has seen.
    pub fn snapshot_with_buckets_after(&self, after_start_unix_ms: u64) -> Snapshot {
        self.read(Some(Some(after_start_unix_ms)))
    }

    /// `buckets`: `None` for no buckets, `Some(None)` for all of them, `Some(Some(t))` for
    /// those that began after `t` (and the current one).
    fn read(&self, buckets: Option<Option<u64>>) -> Snapshot {
        let now = self.clock.now_unix_ms();
        let mut st = self.lock();
        self.rotate_due(&mut st, now);
        self.fold_all(&mut st);
        let tags = self.registry.languages();
        let mut snap = Snapshot::new(self.spec.clone());
        let current = st.ring.current();
        let mut start = None;
        for &slot in &st.ring.order {
            let window = WindowRange {
                start_unix_ms: st.ring.start_ms(slot),
                end_unix_ms: if slot == current {
                    now
                } else {
                    st.ring.end_ms(slot)
                },
            };
            start.get_or_insert(window.start_unix_ms);
            let mut langs: BTreeMap<String, LanguageCounts> = BTreeMap::new();
            for (id, tag) in &tags {
                let Some(read) = st.ring.read(slot, id.index()) else {
                    continue;
                };
                if let Some(counts) = self.language_counts(&read) {
                    merge_language(langs.entry(tag.as_str().to_owned()), counts);
                }
            }
            for (tag, counts) in &langs {
                merge_language(snap.languages.entry(tag.clone()), counts.clone());
            }
            let keep = match buckets {
                None => false,
                Some(None) => true,
                Some(Some(after)) => slot == current || window.start_unix_ms > after,
            };
            if keep {
                for counts in langs.values_mut() {
                    counts.halves = None;
                }
                snap.buckets.push(BucketCounts {
                    window,
                    languages: langs,
                });
            }
        }
        for counts in snap.languages.values_mut() {
            counts.tokens = counts.layers.iter().map(|l| l.tokens).fold(0.0, f64::max);
        }
        snap.window = Some(WindowRange {
            start_unix_ms: start.unwrap_or(now),
            end_unix_ms: now,
        });
        snap
    }

    /// One language's counts in one bucket, weighted; `None` if it has none there.
    fn language_counts(&self, read: &BucketRead<'_>) -> Option<LanguageCounts> {
        let (l_count, e) = (self.layers, self.experts);
        let weight = weight_for_threshold(read.threshold);
        let mut any = read.text != [0, 0];
        let mut layers = Vec::with_capacity(l_count);
        let mut halves = [Vec::with_capacity(l_count), Vec::with_capacity(l_count)];
        for l in 0..l_count {
            let tokens = read.layer_tokens[l];
            any |= tokens != 0;
            let mut full = LayerCounts::zeroed(self.spec.num_experts);
            let mut half = [
                LayerCounts::zeroed(self.spec.num_experts),
                LayerCounts::zeroed(self.spec.num_experts),
            ];
            for (j, &c) in read.counts[l * e..(l + 1) * e].iter().enumerate() {
                let (a, b) = unpack(c);
                half[0].expert_tokens[j] = a as f64 * weight;
                half[1].expert_tokens[j] = b as f64 * weight;
                full.expert_tokens[j] = (a + b) as f64 * weight;
            }
            let (ta, tb) = unpack(tokens);
            half[0].tokens = ta as f64 * weight;
            half[1].tokens = tb as f64 * weight;
            full.tokens = (ta + tb) as f64 * weight;
            if read.topk_weight[l] != 0.0 {
                full.topk_weight_sum = Some(read.topk_weight[l] * weight);
            }
            if let Some((prob_sum, prob_tokens, entropy)) = read.probs {
                if prob_tokens[l] != 0 {
                    full.prob_tokens = prob_tokens[l] as f64 * weight;
                    full.prob_sum = Some(
                        prob_sum[l * e..(l + 1) * e]
                            .iter()
                            .map(|v| v * weight)
                            .collect(),
                    );
                    full.selection_entropy_sum_bits = Some(entropy[l] * weight);
                }
            }
            layers.push(full);
            let [a, b] = half;
            halves[0].push(a);
            halves[1].push(b);
        }
        if !any {
            return None;
        }
        let [a, b] = halves;
        Some(LanguageCounts {
            tokens: layers.iter().map(|l| l.tokens).fold(0.0, f64::max),
            chars: (read.text[0] != 0).then_some(read.text[0] as f64),
            words: (read.text[1] != 0).then_some(read.text[1] as f64),
            layers,
            halves: Some([HalfCounts { layers: a }, HalfCounts { layers: b }]),
        })
    }
}

/// The background upkeep thread of [`Recorder::spawn_upkeep`]; dropping it stops the thread.
#[derive(Debug)]
pub struct UpkeepThread {
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for UpkeepThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Adds `src` into the entry (used to merge buckets, and slots that share a tag).
fn merge_language(
    entry: std::collections::btree_map::Entry<'_, String, LanguageCounts>,
    src: LanguageCounts,
) {
    use std::collections::btree_map::Entry;
    match entry {
        Entry::Vacant(v) => {
            v.insert(src);
        }
        Entry::Occupied(mut o) => {
            let dst = o.get_mut();
            dst.tokens += src.tokens;
            dst.chars = add_opt(dst.chars, src.chars);
            dst.words = add_opt(dst.words, src.words);
            for (d, s) in dst.layers.iter_mut().zip(&src.layers) {
                merge_layer(d, s);
            }
            if let (Some(dh), Some(sh)) = (dst.halves.as_mut(), src.halves.as_ref()) {
                for (dh, sh) in dh.iter_mut().zip(sh) {
                    for (d, s) in dh.layers.iter_mut().zip(&sh.layers) {
                        merge_layer(d, s);
                    }
                }
            }
        }
    }
}

fn merge_layer(d: &mut LayerCounts, s: &LayerCounts) {
    d.tokens += s.tokens;
    for (a, b) in d.expert_tokens.iter_mut().zip(&s.expert_tokens) {
        *a += b;
    }
    d.prob_tokens += s.prob_tokens;
    match (&mut d.prob_sum, &s.prob_sum) {
        (Some(a), Some(b)) => a.iter_mut().zip(b).for_each(|(a, b)| *a += b),
        (None, Some(b)) => d.prob_sum = Some(b.clone()),
        _ => {}
    }
    d.selection_entropy_sum_bits =
        add_opt(d.selection_entropy_sum_bits, s.selection_entropy_sum_bits);
    d.topk_weight_sum = add_opt(d.topk_weight_sum, s.topk_weight_sum);
}

fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

#[inline]
fn unpack(v: u64) -> (u64, u64) {
    (v & 0xffff_ffff, v >> 32)
}

/// Adds `inc` to each id's counter; true if an id was out of range (the others are counted,
/// and [`uncount_row`] takes them back out).
#[inline(always)]
fn count_row<'a, I: ExpertId + 'a>(
    counts: &[AtomicU64],
    ids: impl IntoIterator<Item = &'a I>,
    inc: u64,
) -> bool {
    let mut bad = false;
    for id in ids {
        match counts.get(id.expert_index() as usize) {
            Some(n) => bump(n, inc),
            None => bad = true,
        }
    }
    bad
}

/// Takes back what [`count_row`] added for a row that held an out-of-range id.
#[cold]
fn uncount_row<'a, I: ExpertId + 'a>(
    counts: &[AtomicU64],
    ids: impl IntoIterator<Item = &'a I>,
    inc: u64,
) {
    for id in ids {
        if let Some(n) = counts.get(id.expert_index() as usize) {
            bump(n, inc.wrapping_neg());
        }
    }
}

fn check_weights(w: &[f32]) -> Result<(), DropReason> {
    if !w.iter().all(|x| x.is_finite()) {
        return Err(DropReason::NonFinite);
    }
    if w.iter().any(|&x| x < 0.0) {
        return Err(DropReason::InvalidProbability);
    }
    Ok(())
}

/// Token `t`'s routed-expert probabilities into `row`; returns its selection entropy in bits.
fn probabilities(
    scores: RouterScores<'_>,
    t: usize,
    e: usize,
    row: &mut [f64],
) -> Result<f64, DropReason> {
    let values = &scores.values()[t * e..(t + 1) * e];
    if !values.iter().all(|x| x.is_finite()) {
        return Err(DropReason::NonFinite);
    }
    let row = &mut row[..e];
    match scores {
        RouterScores::Logits(_) => {
            let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (p, &x) in row.iter_mut().zip(values) {
                *p = f64::from(x - max).exp();
            }
        }
        RouterScores::Probabilities(_) => {
            if values.iter().any(|&x| x < 0.0) {
                return Err(DropReason::InvalidProbability);
            }
            for (p, &x) in row.iter_mut().zip(values) {
                *p = f64::from(x);
            }
        }
    }
    let sum: f64 = row.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return Err(DropReason::InvalidProbability);
    }
    let mut entropy = 0.0;
    for p in row.iter_mut() {
        *p /= sum;
        if *p > 0.0 {
            entropy -= *p * p.log2();
        }
    }
    Ok(entropy)
}
