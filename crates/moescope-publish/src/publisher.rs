//! The publisher: every interval, the window's statistics as one [`Publication`].
//!
//! One round: take the rolling window as a snapshot with only the buckets not seen before
//! ([`Recorder::snapshot_with_buckets_after`]), score collapse in those buckets once (closed
//! buckets are kept between rounds, so each is scored once in its life), run
//! [`live_analysis`] for exactly the figures published, feed each language's collapse evidence
//! to its [`CollapseDetector`] (hysteresis lives here, across rounds), read the totals and
//! drop counters, and time it all. A figure the statistics leave undefined is simply not
//! published, and a language absent from the window publishes nothing, so its series
//! disappear instead of freezing. A round whose statistics fail is counted
//! (`moe_routing_monitor_analysis_errors_total`) and its error kept in [`Round::error`].

use std::collections::BTreeMap;
use std::mem::size_of;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moescope_core::background::PeriodicThread;
use moescope_core::{DropReason, LanguageCounts, Recorder, Snapshot};
use moescope_stats::{
    bucket_collapse_scores, live_analysis, AnalysisError, CollapseConfig, CollapseDetector,
    ConfigError, LayerDetail, LayerSelection, LiveAnalysis, LiveConfig,
};

use crate::publication::{Metric, Publication, Sample, Summary};
use crate::sink::Sink;

/// How a [`Publisher`] computes and labels its figures. [`Publisher::new`] checks it.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// The `model` label (default: the spec's name); must not be empty.
    pub model_label: Option<String>,
    /// The reference language the others are compared with (default
    /// [`AnalysisConfig::DEFAULT_REFERENCE`](moescope_stats::AnalysisConfig::DEFAULT_REFERENCE)).
    pub reference: String,
    /// LSI class threshold τ, in [0, 1) (default
    /// [`AnalysisConfig::DEFAULT_LSI_THRESHOLD`](moescope_stats::AnalysisConfig::DEFAULT_LSI_THRESHOLD)).
    pub lsi_threshold: f64,
    /// Collapse detector settings (default [`CollapseConfig::DEFAULT`]).
    pub collapse: CollapseConfig,
    /// Healthy collapse scores per language, in bits (default none: 0). The detector flags
    /// C − baseline > θ, so a language whose deep layers differ from the reference's with no
    /// collapse (unlike scripts do, by a few tenths of a bit) does not sit at the threshold;
    /// each configured language also gets `moe_routing_deep_collapse_baseline_bits`. Measure
    /// a baseline on a known-good window (docs/RUNBOOK.md).
    pub collapse_baselines: BTreeMap<String, f64>,
    /// Publish `moe_routing_expert_selections_total{model,layer,lang,expert}` (off by default:
    /// L × E series per language).
    pub expert_selections: bool,
    /// The languages and layers that get every per-layer metric, beyond the usage entropy
    /// (default: none; each selected language adds up to 11 series per selected layer).
    pub layer_detail: LayerDetail,
    /// How many languages (the busiest in the window) get
    /// `moe_routing_pair_js_divergence_bits` for every ordered pair on the pair layers:
    /// n·(n − 1)·|layers| series (default
    /// [`LiveConfig::DEFAULT_PAIR_LANGUAGES`]; 0 turns it off; at most
    /// [`PublisherConfig::MAX_PAIR_LANGUAGES`]).
    pub pair_languages: usize,
    /// The layers of the pair JSD (default: the deep layers).
    pub pair_layers: LayerSelection,
    /// How often [`spawn`] publishes (default [`PublisherConfig::DEFAULT_INTERVAL`]; at least
    /// 1 ms).
    pub interval: Duration,
}

impl PublisherConfig {
    /// The default publication interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    /// The largest `pair_languages` accepted (64 languages: 4 032 ordered pairs per layer).
    pub const MAX_PAIR_LANGUAGES: usize = 64;

    /// The statistics' settings.
    pub fn live_config(&self) -> LiveConfig {
        let mut c = LiveConfig::new(self.reference.clone());
        c.lsi_threshold = self.lsi_threshold;
        c.collapse = self.collapse;
        c.collapse_baselines = self.collapse_baselines.clone();
        c.layer_detail = self.layer_detail.clone();
        c.pair_languages = self.pair_languages;
        c.pair_layers = self.pair_layers.clone();
        c
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range: `model_label` (empty),
    /// `reference` (empty), `lsi_threshold` (outside [0, 1)), `collapse.theta_bits`,
    /// `collapse.min_deep_tokens`, `collapse.clear_ratio`, `collapse_baselines` (not finite),
    /// `pair_languages` (above
    /// [`Self::MAX_PAIR_LANGUAGES`]), `interval` (zero).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.model_label.as_deref() == Some("") {
            return Err(ConfigError::new("model_label", "is empty"));
        }
        self.live_config().validate().map_err(|e| match e {
            AnalysisError::InvalidConfig { field, problem } => ConfigError::new(field, problem),
            other => ConfigError::new("config", other.to_string()),
        })?;
        if self.pair_languages > Self::MAX_PAIR_LANGUAGES {
            return Err(ConfigError::new(
                "pair_languages",
                format!(
                    "{} is above the limit of {}",
                    self.pair_languages,
                    Self::MAX_PAIR_LANGUAGES
                ),
            ));
        }
        if self.interval.is_zero() {
            return Err(ConfigError::new("interval", "must be at least 1 ms"));
        }
        Ok(())
    }
}

impl Default for PublisherConfig {
    fn default() -> Self {
        let live = LiveConfig::new(moescope_stats::AnalysisConfig::DEFAULT_REFERENCE);
        PublisherConfig {
            model_label: None,
            reference: live.reference,
            lsi_threshold: live.lsi_threshold,
            collapse: live.collapse,
            collapse_baselines: live.collapse_baselines,
            expert_selections: false,
            layer_detail: live.layer_detail,
            pair_languages: live.pair_languages,
            pair_layers: live.pair_layers,
            interval: Self::DEFAULT_INTERVAL,
        }
    }
}

/// One round's inputs and outputs.
#[derive(Clone, Debug)]
pub struct Round {
    /// The window the round was computed from. Its `buckets` hold only the buckets read this
    /// round (those not seen before, and the open one); the others' collapse scores were kept.
    pub snapshot: Snapshot,
    /// The live statistics; `None` when they failed (see `error`).
    pub analysis: Option<LiveAnalysis>,
    /// Why the statistics failed this round, if they did.
    pub error: Option<AnalysisError>,
    /// What the sinks get.
    pub publication: Publication,
}

/// Collapse scores of one closed bucket, per language.
struct BucketScores {
    start_unix_ms: u64,
    scores: BTreeMap<String, f64>,
}

/// Computes publications from a recorder; keeps the collapse detectors and the closed
/// buckets' collapse scores between rounds.
pub struct Publisher {
    recorder: Arc<Recorder>,
    model: String,
    live: LiveConfig,
    expert_selections: bool,
    interval: Duration,
    detectors: BTreeMap<String, CollapseDetector>,
    closed: Vec<BucketScores>,
    analysis_errors: u64,
    round_bytes: usize,
    record_samples: u64,
    record_seconds: f64,
}

impl Publisher {
    /// A publisher of `recorder`'s window.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting out of range ([`PublisherConfig::validate`]).
    pub fn new(recorder: Arc<Recorder>, config: PublisherConfig) -> Result<Publisher, ConfigError> {
        config.validate()?;
        Ok(Publisher {
            model: config
                .model_label
                .clone()
                .unwrap_or_else(|| recorder.spec().name.clone()),
            live: config.live_config(),
            recorder,
            expert_selections: config.expert_selections,
            interval: config.interval,
            detectors: BTreeMap::new(),
            closed: Vec::new(),
            analysis_errors: 0,
            round_bytes: 0,
            record_samples: 0,
            record_seconds: 0.0,
        })
    }

    /// The recorder.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// The publication interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Rounds whose statistics failed so far.
    pub fn analysis_errors(&self) -> u64 {
        self.analysis_errors
    }

    /// The memory the last round held, in bytes (an estimate from the lengths of what it
    /// allocated: the snapshot, the analysis, the samples), plus the per-bucket scores kept
    /// between rounds. Published as `moe_routing_monitor_round_bytes`; not part of the
    /// recorder's own memory bound.
    pub fn round_bytes(&self) -> usize {
        self.round_bytes
    }

    /// Computes one round. Never panics; figures that cannot be computed are left out.
    pub fn collect(&mut self) -> Round {
        let started = Instant::now();
        let after = self.closed.last().map_or(0, |b| b.start_unix_ms);
        let snapshot = self.recorder.snapshot_with_buckets_after(after);
        let bucket_scores = self.bucket_scores(&snapshot);
        let mut out = Out {
            model: self.model.clone(),
            samples: Vec::new(),
            summaries: Vec::new(),
        };
        let (analysis, error) = match live_analysis(&snapshot, &self.live, &bucket_scores) {
            Ok(a) => (Some(a), None),
            Err(e) => {
                self.analysis_errors += 1;
                (None, Some(e))
            }
        };
        if let Some(a) = &analysis {
            self.publish_analysis(&snapshot, a, &mut out);
        }
        for (tag, lang) in &snapshot.languages {
            out.push(Metric::WindowTokens, &[tag], lang.tokens);
        }
        out.push(
            Metric::DeepCollapseThresholdBits,
            &[],
            self.live.collapse.theta_bits,
        );
        self.publish_totals(&mut out);
        let bytes = snapshot_bytes(&snapshot)
            + analysis.as_ref().map_or(0, analysis_bytes)
            + scores_bytes(&bucket_scores)
            + self
                .closed
                .iter()
                .map(|b| size_of::<BucketScores>() + scores_map_bytes(&b.scores))
                .sum::<usize>();
        self.publish_monitor(&snapshot, started, bytes, &mut out);
        self.round_bytes = bytes + samples_bytes(&out.samples);
        Round {
            snapshot,
            analysis,
            error,
            publication: Publication {
                samples: out.samples,
                summaries: out.summaries,
            },
        }
    }

    /// Scores the buckets of `snapshot` not seen before, keeps the closed ones, forgets those
    /// that left the window, and returns every language's scores across the window's buckets
    /// (oldest first, the open bucket last).
    fn bucket_scores(&mut self, snapshot: &Snapshot) -> BTreeMap<String, Vec<f64>> {
        let reference = self.live.reference.as_str();
        let window_start = snapshot.window.map_or(0, |w| w.start_unix_ms);
        self.closed.retain(|b| b.start_unix_ms >= window_start);
        let mut open = BTreeMap::new();
        let last = snapshot.buckets.len().saturating_sub(1);
        for (i, bucket) in snapshot.buckets.iter().enumerate() {
            let scores = bucket_collapse_scores(&bucket.languages, reference);
            let start = bucket.window.start_unix_ms;
            if i == last {
                open = scores; // still filling: scored again next round
            } else if self.closed.last().is_none_or(|b| b.start_unix_ms < start) {
                self.closed.push(BucketScores {
                    start_unix_ms: start,
                    scores,
                });
            }
        }
        let mut by_lang: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for scores in self.closed.iter().map(|b| &b.scores).chain([&open]) {
            for (lang, &s) in scores {
                by_lang.entry(lang.clone()).or_default().push(s);
            }
        }
        by_lang
    }

    fn publish_analysis(&mut self, snapshot: &Snapshot, a: &LiveAnalysis, out: &mut Out) {
        let layer_label = |d: usize| -> String {
            snapshot
                .model
                .moe_layers
                .get(d)
                .map_or_else(|| d.to_string(), u32::to_string)
        };
        for (lang, h) in &a.usage_entropy_bits {
            for (d, h) in h.iter().enumerate() {
                out.push_opt(Metric::UsageEntropyBits, &[&layer_label(d), lang], *h);
            }
        }
        for row in &a.depth_means {
            let l = [row.lang.as_str()];
            out.push_opt(
                Metric::DeepUsageEntropyBits,
                &l,
                row.deep_usage_entropy_bits,
            );
            out.push_opt(
                Metric::MiddleUsageEntropyBits,
                &l,
                row.middle_usage_entropy_bits,
            );
        }
        for row in &a.tokenization {
            let l = [row.lang.as_str()];
            out.push_opt(Metric::TokensPerChar, &l, row.tokens_per_char);
            out.push_opt(Metric::TokensPerWord, &l, row.tokens_per_word);
        }
        for row in &a.layers {
            let layer = row.layer.to_string();
            let l = [layer.as_str(), row.lang.as_str()];
            let m = &row.metrics;
            out.push_opt(Metric::Gini, &l, m.gini);
            out.push_opt(
                Metric::ActiveExperts,
                &l,
                m.active_experts.map(|n| n as f64),
            );
            out.push_opt(Metric::SelectionEntropyBits, &l, m.selection_entropy_bits);
        }
        for row in &a.pairs {
            let layer = row.layer.to_string();
            let l = [layer.as_str(), row.lang.as_str(), row.reference.as_str()];
            let m = &row.metrics;
            out.push_opt(Metric::EntropyGapBits, &l, m.entropy_gap_bits);
            out.push_opt(Metric::CosineSimilarity, &l, m.cosine_similarity);
            out.push_opt(Metric::JsDivergenceBits, &l, m.js_divergence_bits);
            out.push_opt(Metric::TopkOverlapRatio, &l, m.topk_overlap_ratio);
            out.push_opt(Metric::SpearmanRho, &l, m.spearman_rho);
            out.push_opt(Metric::KendallTauB, &l, m.kendall_tau_b);
        }
        for row in &a.split_half {
            let layer = row.layer.to_string();
            out.push_opt(
                Metric::SplitHalfCosineSimilarity,
                &[layer.as_str(), row.lang.as_str()],
                row.metrics.cosine_similarity,
            );
        }
        for row in &a.lsi {
            for (class, n) in [
                ("lang_specific", row.lang_specific),
                ("reference_specific", row.reference_specific),
                ("shared", row.shared),
            ] {
                out.push_opt(
                    Metric::LsiExperts,
                    &[row.lang.as_str(), row.reference.as_str(), class],
                    n.map(|n| n as f64),
                );
            }
        }
        for row in &a.language_pairs {
            let layer = row.layer.to_string();
            let (x, y) = (row.lang_a.as_str(), row.lang_b.as_str());
            out.push(
                Metric::PairJsDivergenceBits,
                &[&layer, x, y],
                row.js_divergence_bits,
            );
            out.push(
                Metric::PairJsDivergenceBits,
                &[&layer, y, x],
                row.js_divergence_bits,
            );
        }
        // Collapse: the score as computed, the flag through each language's detector. Without
        // the reference in the window there are no rows, and detectors keep their state until
        // it is back.
        if a.reference.is_some() {
            self.detectors
                .retain(|lang, _| snapshot.languages.contains_key(lang));
        }
        let config = self.live.collapse;
        for row in &a.collapse {
            let l = [row.lang.as_str(), row.reference.as_str()];
            out.push_opt(Metric::DeepCollapseScoreBits, &l, row.score_bits);
            if self.live.collapse_baselines.contains_key(&row.lang) {
                out.push(Metric::DeepCollapseBaselineBits, &l, row.baseline_bits);
            }
            let detector = self
                .detectors
                .entry(row.lang.clone())
                .or_insert_with(|| CollapseDetector::new(config));
            let flag = detector.observe(&row.evidence);
            out.push(Metric::DeepCollapse, &l, if flag { 1.0 } else { 0.0 });
        }
    }

    fn publish_totals(&self, out: &mut Out) {
        let totals = self.recorder.totals();
        for (tag, t) in &totals {
            out.push(Metric::TokensTotal, &[tag], t.tokens);
            if self.expert_selections {
                for (layer, row) in self
                    .recorder
                    .spec()
                    .moe_layers
                    .iter()
                    .zip(&t.expert_selections)
                {
                    let layer = layer.to_string();
                    for (expert, &n) in row.iter().enumerate() {
                        let expert = expert.to_string();
                        out.push(Metric::ExpertSelectionsTotal, &[&layer, tag, &expert], n);
                    }
                }
            }
        }
        for &reason in DropReason::ALL {
            out.push(
                Metric::DroppedTotal,
                &[reason.as_str()],
                self.recorder.dropped(reason) as f64,
            );
        }
    }

    fn publish_monitor(
        &mut self,
        snapshot: &Snapshot,
        started: Instant,
        bytes: usize,
        out: &mut Out,
    ) {
        let times = self.recorder.take_record_times();
        self.record_samples += times.samples;
        if times.sum_seconds.is_finite() {
            self.record_seconds += times.sum_seconds;
        }
        let quantiles = if times.samples > 0 {
            vec![
                (0.5, times.p50_seconds),
                (0.9, times.p90_seconds),
                (0.99, times.p99_seconds),
                (1.0, times.max_seconds),
            ]
        } else {
            Vec::new()
        };
        out.summaries.push(Summary {
            metric: Metric::MonitorRecordSeconds,
            labels: vec![self.model.clone()],
            quantiles,
            count: self.record_samples,
            sum: self.record_seconds,
        });
        let registry = self.recorder.registry();
        out.push(
            Metric::MonitorLanguagesOverCapTotal,
            &[],
            registry.over_cap_tags() as f64,
        );
        out.push(
            Metric::MonitorInvalidTagsTotal,
            &[],
            registry.invalid_tags() as f64,
        );
        out.push(
            Metric::MonitorAnalysisErrorsTotal,
            &[],
            self.analysis_errors as f64,
        );
        if let Some(w) = snapshot.window {
            let window = self.recorder.window_config();
            let span = (window.buckets as u64 * window.bucket_ms) as f64;
            let filled = w.end_unix_ms.saturating_sub(w.start_unix_ms) as f64;
            out.push(
                Metric::MonitorWindowFillRatio,
                &[],
                (filled / span).min(1.0),
            );
        }
        // The last round's figures: this round's are known only once it is done.
        out.push(Metric::MonitorRoundBytes, &[], bytes as f64);
        out.push(
            Metric::MonitorUpkeepSeconds,
            &[],
            started.elapsed().as_secs_f64(),
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        out.push(Metric::MonitorLastPublishTimestampSeconds, &[], now);
    }
}

fn language_bytes(lc: &LanguageCounts) -> usize {
    let layers = |ls: &[moescope_core::LayerCounts]| -> usize {
        ls.iter()
            .map(|l| {
                size_of::<moescope_core::LayerCounts>()
                    + 8 * (l.expert_tokens.len() + l.prob_sum.as_ref().map_or(0, Vec::len))
            })
            .sum()
    };
    size_of::<LanguageCounts>()
        + layers(&lc.layers)
        + lc.halves
            .as_ref()
            .map_or(0, |h| h.iter().map(|h| layers(&h.layers)).sum())
}

fn snapshot_bytes(s: &Snapshot) -> usize {
    let langs = |m: &BTreeMap<String, LanguageCounts>| -> usize {
        m.iter().map(|(k, v)| k.len() + language_bytes(v)).sum()
    };
    size_of::<Snapshot>()
        + langs(&s.languages)
        + s.buckets.iter().map(|b| langs(&b.languages)).sum::<usize>()
}

fn analysis_bytes(a: &LiveAnalysis) -> usize {
    let rows = |n: usize, each: usize| n * each;
    a.usage_entropy_bits
        .values()
        .map(|h| 16 * h.len() + 32)
        .sum::<usize>()
        + rows(a.depth_means.len(), 64)
        + rows(a.tokenization.len(), 96)
        + rows(a.layers.len(), 160)
        + rows(a.pairs.len(), 160)
        + rows(a.split_half.len(), 160)
        + rows(a.lsi.len(), 160)
        + rows(a.collapse.len(), 200)
        + rows(a.language_pairs.len(), 80)
}

fn scores_map_bytes(m: &BTreeMap<String, f64>) -> usize {
    m.keys().map(|k| k.len() + 48).sum()
}

fn scores_bytes(m: &BTreeMap<String, Vec<f64>>) -> usize {
    m.iter().map(|(k, v)| k.len() + 48 + 8 * v.len()).sum()
}

fn samples_bytes(samples: &[Sample]) -> usize {
    samples
        .iter()
        .map(|s| {
            size_of::<Sample>()
                + s.labels
                    .iter()
                    .map(|l| size_of::<String>() + l.len())
                    .sum::<usize>()
        })
        .sum()
}

/// Collects samples, prefixing the model label.
struct Out {
    model: String,
    samples: Vec<Sample>,
    summaries: Vec<Summary>,
}

impl Out {
    fn push(&mut self, metric: Metric, labels: &[&str], value: f64) {
        if !value.is_finite() {
            return;
        }
        let mut all = Vec::with_capacity(labels.len() + 1);
        all.push(self.model.clone());
        all.extend(labels.iter().map(|s| (*s).to_owned()));
        debug_assert_eq!(all.len(), metric.descriptor().labels.len());
        self.samples.push(Sample {
            metric,
            labels: all,
            value,
        });
    }

    fn push_opt(&mut self, metric: Metric, labels: &[&str], value: Option<f64>) {
        if let Some(v) = value {
            self.push(metric, labels, v);
        }
    }
}

/// The publisher running in its own thread, feeding its sinks every interval. Dropping it
/// stops the thread at once (it waits on a channel, not a sleep).
pub struct PublisherThread {
    latest: Arc<Mutex<Option<Arc<Round>>>>,
    _thread: PeriodicThread,
}

impl PublisherThread {
    /// The last round published, if any.
    pub fn latest(&self) -> Option<Arc<Round>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Publishes one round of `publisher` to every sink and keeps it as the latest.
fn publish_round(
    publisher: &mut Publisher,
    sinks: &mut [Box<dyn Sink>],
    latest: &Mutex<Option<Arc<Round>>>,
) {
    let round = Arc::new(publisher.collect());
    for sink in sinks.iter_mut() {
        sink.publish(&round.publication);
    }
    *latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(round);
}

/// Publishes a first round at once (in the caller's thread), then runs `publisher` every
/// [`Publisher::interval`] in a [`PeriodicThread`], handing each round to every sink.
///
/// # Errors
/// The OS error if the thread cannot be spawned.
pub fn spawn(
    mut publisher: Publisher,
    mut sinks: Vec<Box<dyn Sink>>,
) -> std::io::Result<PublisherThread> {
    let latest = Arc::new(Mutex::new(None));
    publish_round(&mut publisher, &mut sinks, &latest);
    let interval = publisher.interval();
    let thread = {
        let latest = latest.clone();
        PeriodicThread::spawn("moescope-publisher", interval, move || {
            publish_round(&mut publisher, &mut sinks, &latest);
            true
        })?
    };
    Ok(PublisherThread {
        latest,
        _thread: thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moescope_core::{Languages, ModelSpec, RouterBatch};

    /// 8 MoE layers, E = 4, top-1: en uniform everywhere; he uniform except the deep layers
    /// (depths 6, 7) at (700, 100, 100, 100): C = 2 − 1.356780 = 0.643220 bits.
    fn collapsed_he() -> Arc<Recorder> {
        let spec = ModelSpec::new("tiny", 4, 1, (0..8).collect()).unwrap();
        let recorder = Arc::new(Recorder::new(spec).unwrap());
        let (en, he) = (recorder.language("en"), recorder.language("he"));
        let uniform: Vec<u32> = (0..1000).map(|i| i % 4).collect();
        let skewed: Vec<u32> = (0..1000)
            .map(|i| if i < 700 { 0 } else { i % 3 + 1 })
            .collect();
        for depth in 0..8 {
            let he_ids = if depth >= 6 { &skewed } else { &uniform };
            for (lang, ids) in [(en, &uniform), (he, he_ids)] {
                recorder
                    .record(&RouterBatch::at_depth(depth, ids, Languages::All(lang)))
                    .unwrap();
            }
        }
        recorder
    }

    #[test]
    fn a_collapse_baseline_moves_the_flag_not_the_score() {
        let flag_after_three_rounds = |baseline: Option<f64>| {
            let mut config = PublisherConfig::default();
            if let Some(b) = baseline {
                config.collapse_baselines.insert("he".into(), b);
            }
            let mut publisher = Publisher::new(collapsed_he(), config).unwrap();
            let mut last = None;
            for _ in 0..3 {
                last = Some(publisher.collect().publication);
            }
            let p = last.unwrap();
            let l = ["tiny", "he", "en"];
            let score = p.value(Metric::DeepCollapseScoreBits, &l).unwrap();
            assert!((score - 0.643_220).abs() < 1e-5, "score {score}");
            (
                p.value(Metric::DeepCollapse, &l),
                p.value(Metric::DeepCollapseBaselineBits, &l),
            )
        };
        assert_eq!(flag_after_three_rounds(None), (Some(1.0), None));
        // Excess 0.243 < θ = 0.3: not flagged; the baseline is published.
        assert_eq!(flag_after_three_rounds(Some(0.4)), (Some(0.0), Some(0.4)));
        // Excess 0.343 > θ: flagged.
        assert_eq!(flag_after_three_rounds(Some(0.3)), (Some(1.0), Some(0.3)));
        // A baseline that is not finite is refused, naming the setting.
        let mut config = PublisherConfig::default();
        config.collapse_baselines.insert("he".into(), f64::NAN);
        let err = Publisher::new(collapsed_he(), config).err().unwrap();
        assert_eq!(err.field, "collapse_baselines");
    }

    #[test]
    fn a_failing_round_is_counted_and_kept_not_swallowed() {
        let recorder =
            Arc::new(Recorder::new(ModelSpec::new("tiny", 4, 1, vec![0, 1]).unwrap()).unwrap());
        let en = recorder.language("en");
        for depth in 0..2 {
            recorder
                .record(&RouterBatch::at_depth(
                    depth,
                    &[0u32, 1, 2, 3],
                    Languages::All(en),
                ))
                .unwrap();
        }
        let mut publisher = Publisher::new(recorder, PublisherConfig::default()).unwrap();
        // A setting that `Publisher::new` would refuse, slipped in after it: every round's
        // statistics fail from now on.
        publisher.live.lsi_threshold = 1.0;
        for expected in 1..=2u64 {
            let round = publisher.collect();
            assert!(round.analysis.is_none());
            assert!(matches!(
                round.error,
                Some(AnalysisError::InvalidConfig {
                    field: "lsi_threshold",
                    ..
                })
            ));
            assert_eq!(publisher.analysis_errors(), expected);
            let p = &round.publication;
            assert_eq!(
                p.value(Metric::MonitorAnalysisErrorsTotal, &["tiny"]),
                Some(expected as f64)
            );
            // The figures that do not need the statistics are still published.
            assert_eq!(p.value(Metric::WindowTokens, &["tiny", "en"]), Some(4.0));
            assert_eq!(
                p.value(Metric::UsageEntropyBits, &["tiny", "0", "en"]),
                None
            );
        }
    }
}
