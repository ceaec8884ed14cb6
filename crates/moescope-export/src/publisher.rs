//! The publisher: every interval, the window's statistics as one [`Publication`].
//!
//! One round: take the rolling window as a snapshot (with its buckets, for the spread of the
//! collapse score), run [`moescope_stats::analyze`] against the reference language, feed each
//! language's collapse evidence to its [`CollapseDetector`] (hysteresis lives here, across
//! rounds), read the totals and drop counters, and time it all. A figure the statistics leave
//! undefined is simply not published, and a language absent from the window publishes nothing,
//! so its series disappear instead of freezing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moescope_core::{DropReason, Recorder, Snapshot};
use moescope_stats::{
    analyze, collapse_evidence, deep_layers, js_divergence_bits, layer_entropies, layer_metrics,
    middle_layers, tokenization, Analysis, AnalysisConfig, CollapseConfig, CollapseDetector,
};

use crate::publication::*;

/// How a [`Publisher`] computes and labels its figures.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// The `model` label (default: the spec's name).
    pub model_label: Option<String>,
    /// The reference language the others are compared with (default `en`).
    pub reference: String,
    /// LSI class threshold τ (default 0.2).
    pub lsi_threshold: f64,
    /// Collapse detector settings (θ, minimum tokens, hysteresis).
    pub collapse: CollapseConfig,
    /// Publish `moe_routing_expert_selections_total{model,layer,lang,expert}` (off by default:
    /// L × E series per language).
    pub expert_selections: bool,
    /// How many languages (the busiest in the window) get
    /// `moe_routing_pair_js_divergence_bits` for every ordered pair: n·(n − 1)·L series
    /// (default 6; 0 turns it off).
    pub pair_languages: usize,
    /// How often [`spawn`](crate::spawn) publishes (default 5 s).
    pub interval: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            model_label: None,
            reference: "en".into(),
            lsi_threshold: 0.2,
            collapse: CollapseConfig::default(),
            expert_selections: false,
            pair_languages: 6,
            interval: Duration::from_secs(5),
        }
    }
}

/// One round's inputs and outputs.
#[derive(Clone, Debug)]
pub struct Round {
    /// The window the round was computed from.
    pub snapshot: Snapshot,
    /// The analysis against the reference; `None` while the reference has no traffic.
    pub analysis: Option<Analysis>,
    /// What the sinks get.
    pub publication: Publication,
}

/// Computes publications from a recorder; keeps the collapse detectors between rounds.
pub struct Publisher {
    recorder: Arc<Recorder>,
    model: String,
    analysis: AnalysisConfig,
    expert_selections: bool,
    pair_languages: usize,
    interval: Duration,
    detectors: BTreeMap<String, CollapseDetector>,
}

impl Publisher {
    /// A publisher of `recorder`'s window.
    pub fn new(recorder: Arc<Recorder>, config: PublisherConfig) -> Publisher {
        let mut analysis = AnalysisConfig::new(config.reference);
        analysis.lsi_threshold = config.lsi_threshold;
        analysis.collapse = config.collapse;
        Publisher {
            model: config
                .model_label
                .unwrap_or_else(|| recorder.spec().name.clone()),
            recorder,
            analysis,
            expert_selections: config.expert_selections,
            pair_languages: config.pair_languages,
            interval: config.interval,
            detectors: BTreeMap::new(),
        }
    }

    /// The recorder.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// The publication interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Computes one round. Never panics; figures that cannot be computed are left out.
    pub fn collect(&mut self) -> Round {
        let started = Instant::now();
        let snapshot = self.recorder.snapshot_with_buckets();
        let mut out = Out {
            model: self.model.clone(),
            samples: Vec::new(),
        };
        let analysis = if snapshot.languages.contains_key(&self.analysis.reference) {
            analyze(&snapshot, &self.analysis).ok()
        } else {
            None
        };
        match &analysis {
            Some(a) => self.publish_analysis(&snapshot, a, &mut out),
            None => self.publish_layers_only(&snapshot, &mut out),
        }
        self.publish_pairs(&snapshot, &mut out);
        let layers = snapshot.model.num_moe_layers();
        let mean = |h: &[Option<f64>]| -> Option<f64> {
            let v: Vec<f64> = h.iter().flatten().copied().collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        for (tag, lang) in &snapshot.languages {
            out.push(WINDOW_TOKENS, &[tag], lang.tokens);
            let tok = tokenization(tag, lang);
            out.push_opt(TOKENS_PER_CHAR, &[tag], tok.tokens_per_char);
            out.push_opt(TOKENS_PER_WORD, &[tag], tok.tokens_per_word);
            let h = layer_entropies(lang);
            out.push_opt(
                DEEP_USAGE_ENTROPY_BITS,
                &[tag],
                mean(&h[deep_layers(layers)]),
            );
            out.push_opt(
                MIDDLE_USAGE_ENTROPY_BITS,
                &[tag],
                mean(&h[middle_layers(layers)]),
            );
        }
        out.push(
            DEEP_COLLAPSE_THRESHOLD_BITS,
            &[],
            self.analysis.collapse.theta_bits,
        );
        self.publish_totals(&mut out);
        self.publish_monitor(&snapshot, started, &mut out);
        Round {
            snapshot,
            analysis,
            publication: Publication {
                samples: out.samples,
            },
        }
    }

    fn publish_analysis(&mut self, snapshot: &Snapshot, a: &Analysis, out: &mut Out) {
        let reference = a.reference.as_str();
        for row in &a.layers {
            let layer = row.layer.to_string();
            let l = [layer.as_str(), row.lang.as_str()];
            let m = &row.metrics;
            out.push_opt(USAGE_ENTROPY_BITS, &l, m.usage_entropy_bits);
            out.push_opt(GINI, &l, m.gini);
            out.push_opt(ACTIVE_EXPERTS, &l, m.active_experts.map(|n| n as f64));
            out.push_opt(SELECTION_ENTROPY_BITS, &l, m.selection_entropy_bits);
        }
        for row in a.pairs.iter().filter(|p| p.reference == reference) {
            let layer = row.layer.to_string();
            let l = [layer.as_str(), row.lang.as_str(), reference];
            let m = &row.metrics;
            out.push_opt(ENTROPY_GAP_BITS, &l, m.entropy_gap_bits);
            out.push_opt(COSINE_SIMILARITY, &l, m.cosine_similarity);
            out.push_opt(JS_DIVERGENCE_BITS, &l, m.js_divergence_bits);
            out.push_opt(TOPK_OVERLAP_RATIO, &l, m.topk_overlap_ratio);
            out.push_opt(SPEARMAN_RHO, &l, m.spearman_rho);
            out.push_opt(KENDALL_TAU, &l, m.kendall_tau_b);
        }
        for row in &a.split_half {
            let layer = row.layer.to_string();
            out.push_opt(
                SPLIT_HALF_COSINE_SIMILARITY,
                &[layer.as_str(), row.lang.as_str()],
                row.metrics.cosine_similarity,
            );
        }
        for row in a.lsi.iter().filter(|r| r.reference == reference) {
            for (class, n) in [
                ("lang_specific", row.lang_specific),
                ("reference_specific", row.reference_specific),
                ("shared", row.shared),
            ] {
                out.push_opt(
                    LSI_EXPERTS,
                    &[row.lang.as_str(), reference, class],
                    n.map(|n| n as f64),
                );
            }
        }
        // Collapse: the score as computed, the flag through each language's detector.
        let config = self.analysis.collapse;
        self.detectors
            .retain(|lang, _| snapshot.languages.contains_key(lang));
        for row in a.collapse.iter().filter(|r| r.reference == reference) {
            let l = [row.lang.as_str(), reference];
            out.push_opt(DEEP_COLLAPSE_SCORE_BITS, &l, row.score_bits);
            let evidence = collapse_evidence(snapshot, &row.lang, Some(reference));
            let detector = self
                .detectors
                .entry(row.lang.clone())
                .or_insert_with(|| CollapseDetector::new(config));
            let flag = detector.observe(&evidence);
            out.push(DEEP_COLLAPSE, &l, if flag { 1.0 } else { 0.0 });
        }
    }

    /// Without the reference in the window: the per-language figures only. Detectors keep
    /// their state until the reference is back.
    fn publish_layers_only(&mut self, snapshot: &Snapshot, out: &mut Out) {
        let alpha = self.analysis.active_alpha;
        for (tag, lang) in &snapshot.languages {
            for (layer, counts) in snapshot.model.moe_layers.iter().zip(&lang.layers) {
                let layer = layer.to_string();
                let l = [layer.as_str(), tag.as_str()];
                let m = layer_metrics(counts, alpha);
                out.push_opt(USAGE_ENTROPY_BITS, &l, m.usage_entropy_bits);
                out.push_opt(GINI, &l, m.gini);
                out.push_opt(ACTIVE_EXPERTS, &l, m.active_experts.map(|n| n as f64));
                out.push_opt(SELECTION_ENTROPY_BITS, &l, m.selection_entropy_bits);
            }
        }
    }

    /// JSD between every ordered pair of the busiest languages, per layer (symmetric: computed
    /// once per unordered pair).
    fn publish_pairs(&self, snapshot: &Snapshot, out: &mut Out) {
        let mut busiest: Vec<(&String, f64)> = snapshot
            .languages
            .iter()
            .map(|(tag, l)| (tag, l.tokens))
            .collect();
        busiest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        busiest.truncate(self.pair_languages);
        for (i, &(a, _)) in busiest.iter().enumerate() {
            for &(b, _) in &busiest[i + 1..] {
                let (la, lb) = (&snapshot.languages[a].layers, &snapshot.languages[b].layers);
                for ((layer, x), y) in snapshot.model.moe_layers.iter().zip(la).zip(lb) {
                    let Some(jsd) = js_divergence_bits(&x.expert_tokens, &y.expert_tokens) else {
                        continue;
                    };
                    let layer = layer.to_string();
                    out.push(PAIR_JS_DIVERGENCE_BITS, &[&layer, a, b], jsd);
                    out.push(PAIR_JS_DIVERGENCE_BITS, &[&layer, b, a], jsd);
                }
            }
        }
    }

    fn publish_totals(&self, out: &mut Out) {
        let totals = self.recorder.totals();
        for (tag, t) in &totals {
            out.push(TOKENS_TOTAL, &[tag], t.tokens);
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
                        out.push(EXPERT_SELECTIONS_TOTAL, &[&layer, tag, &expert], n);
                    }
                }
            }
        }
        for reason in DropReason::ALL {
            out.push(
                DROPPED_TOTAL,
                &[reason.as_str()],
                self.recorder.dropped(reason) as f64,
            );
        }
    }

    fn publish_monitor(&self, snapshot: &Snapshot, started: Instant, out: &mut Out) {
        let times = self.recorder.take_record_times();
        if times.samples > 0 {
            for (q, v) in [
                ("0.5", times.p50_seconds),
                ("0.9", times.p90_seconds),
                ("0.99", times.p99_seconds),
                ("1", times.max_seconds),
            ] {
                out.push(MONITOR_RECORD_SECONDS, &[q], v);
            }
        }
        let registry = self.recorder.registry();
        out.push(
            MONITOR_LANGUAGES_OVER_CAP_TOTAL,
            &[],
            registry.over_cap_tags() as f64,
        );
        out.push(
            MONITOR_INVALID_TAGS_TOTAL,
            &[],
            registry.invalid_tags() as f64,
        );
        if let Some(w) = snapshot.window {
            let window = self.recorder.window_config();
            let span = (window.buckets as u64 * window.bucket_ms) as f64;
            let filled = w.end_unix_ms.saturating_sub(w.start_unix_ms) as f64;
            out.push(MONITOR_WINDOW_FILL_RATIO, &[], (filled / span).min(1.0));
        }
        out.push(MONITOR_UPKEEP_SECONDS, &[], started.elapsed().as_secs_f64());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        out.push(MONITOR_LAST_PUBLISH_TIMESTAMP_SECONDS, &[], now);
    }
}

/// Collects samples, prefixing the model label.
struct Out {
    model: String,
    samples: Vec<Sample>,
}

impl Out {
    fn push(&mut self, metric: usize, labels: &[&str], value: f64) {
        if !value.is_finite() {
            return;
        }
        let mut all = Vec::with_capacity(labels.len() + 1);
        all.push(self.model.clone());
        all.extend(labels.iter().map(|s| (*s).to_owned()));
        debug_assert_eq!(all.len(), CATALOGUE[metric].labels.len());
        self.samples.push(Sample {
            metric,
            labels: all,
            value,
        });
    }

    fn push_opt(&mut self, metric: usize, labels: &[&str], value: Option<f64>) {
        if let Some(v) = value {
            self.push(metric, labels, v);
        }
    }
}
