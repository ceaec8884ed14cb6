//! What a publisher hands to every sink: the metric catalogue and one round of values.
//!
//! Sinks (the `metrics` facade for Prometheus, OpenTelemetry) do not compute anything: they
//! turn a [`Publication`] into their own instruments. Names, units and help texts are defined
//! once, in [`CATALOGUE`] (one [`Metric`] per entry); docs/METRICS.md lists them for users.

/// Whether a metric is a gauge (a value over the rolling window) or a monotonic counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A cumulative count since the process started.
    Counter,
    /// Quantiles of a distribution with the cumulative count and sum of its observations
    /// (carried in [`Publication::summaries`], not as [`Sample`]s).
    Summary,
}

/// A metric's name (with the `moe_routing_` prefix), kind, unit and help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Full name, e.g. `moe_routing_usage_entropy_bits`.
    pub name: &'static str,
    /// Gauge or counter.
    pub kind: Kind,
    /// Unit in UCUM-like words (`bits`, `ratio`, `experts`, `tokens`, `seconds`), or "" for
    /// a dimensionless number.
    pub unit: &'static str,
    /// One-sentence help text (Prometheus HELP line).
    pub help: &'static str,
    /// Label names, in the order samples carry them.
    pub labels: &'static [&'static str],
}

/// One value of one metric with its label values (same order as the descriptor's names).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric.
    pub metric: Metric,
    /// Label values, aligned with `metric.descriptor().labels`.
    pub labels: Vec<String>,
    /// The value; never NaN or infinite (undefined figures are left out).
    pub value: f64,
}

/// One value of a [`Kind::Summary`] metric: quantiles over the last interval, with the count
/// and sum of every observation since start (Prometheus' summary).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The metric (of kind [`Kind::Summary`]).
    pub metric: Metric,
    /// Label values, aligned with `metric.descriptor().labels` (the `quantile` label is not
    /// among them).
    pub labels: Vec<String>,
    /// (quantile in [0, 1], value) pairs, ascending; empty when nothing was observed in the
    /// last interval.
    pub quantiles: Vec<(f64, f64)>,
    /// Observations since start.
    pub count: u64,
    /// Sum of the observations since start.
    pub sum: f64,
}

/// One round of values: everything a sink should show now. A label set absent from a round
/// is gone (a language that stopped coming), not frozen at its last value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Publication {
    /// The samples of gauges and counters, in no particular order.
    pub samples: Vec<Sample>,
    /// The summaries.
    pub summaries: Vec<Summary>,
}

impl Publication {
    /// Samples of `metric`.
    pub fn samples_of(&self, metric: Metric) -> impl Iterator<Item = &Sample> + '_ {
        self.samples.iter().filter(move |s| s.metric == metric)
    }

    /// The value of `metric` for exactly these label values (in the descriptor's order), if
    /// present.
    pub fn value(&self, metric: Metric, labels: &[&str]) -> Option<f64> {
        self.samples_of(metric)
            .find(|s| {
                s.labels
                    .iter()
                    .map(String::as_str)
                    .eq(labels.iter().copied())
            })
            .map(|s| s.value)
    }
}

macro_rules! catalogue {
    ($( $variant:ident = $name:literal, $kind:ident, $unit:literal, [$($label:literal),*], $help:literal; )*) => {
        /// A metric of the [`CATALOGUE`]: the typed key of every sample.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Metric {
            $( #[doc = concat!("`", $name, "`: ", $help)] $variant, )*
        }

        /// Every metric moescope publishes, in [`Metric`] order.
        pub const CATALOGUE: &[Descriptor] = &[
            $( Descriptor { name: $name, kind: Kind::$kind, unit: $unit, help: $help, labels: &[$($label),*] }, )*
        ];

        impl Metric {
            /// Every metric, in catalogue order.
            pub const ALL: &'static [Metric] = &[$(Metric::$variant),*];
        }
    };
}

impl Metric {
    /// Its name, unit, kind, help text and label names.
    pub fn descriptor(self) -> &'static Descriptor {
        &CATALOGUE[self as usize]
    }

    /// Its full name, e.g. `moe_routing_usage_entropy_bits`.
    pub fn name(self) -> &'static str {
        self.descriptor().name
    }

    /// The metric with this full name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.name() == name)
    }
}

catalogue! {
    UsageEntropyBits = "moe_routing_usage_entropy_bits", Gauge, "bits", ["model", "layer", "lang"],
        "Usage entropy of the language's expert assignments in the layer over the rolling window (max log2 E).";
    EntropyGapBits = "moe_routing_entropy_gap_bits", Gauge, "bits", ["model", "layer", "lang", "reference"],
        "Layer detail: usage entropy of the reference language minus that of the language, per layer.";
    Gini = "moe_routing_gini", Gauge, "", ["model", "layer", "lang"],
        "Layer detail: Gini coefficient of the language's expert load in the layer (0 = equal load).";
    ActiveExperts = "moe_routing_active_experts", Gauge, "experts", ["model", "layer", "lang"],
        "Layer detail: experts receiving at least a tenth of a uniform share of the language's assignments.";
    SelectionEntropyBits = "moe_routing_selection_entropy_bits", Gauge, "bits", ["model", "layer", "lang"],
        "Layer detail: mean per-token entropy of the router's probabilities (needs recorded logits or probabilities).";
    CosineSimilarity = "moe_routing_cosine_similarity", Gauge, "", ["model", "layer", "lang", "reference"],
        "Layer detail: cosine similarity of the language's and the reference's expert usage vectors in the layer.";
    JsDivergenceBits = "moe_routing_js_divergence_bits", Gauge, "bits", ["model", "layer", "lang", "reference"],
        "Layer detail: Jensen-Shannon divergence (base 2) between the language's and the reference's expert usage.";
    TopkOverlapRatio = "moe_routing_topk_overlap_ratio", Gauge, "ratio", ["model", "layer", "lang", "reference"],
        "Layer detail: share of the reference's top-K experts that are also among the language's top-K.";
    SpearmanRho = "moe_routing_spearman_rho", Gauge, "", ["model", "layer", "lang", "reference"],
        "Layer detail: Spearman rank correlation of expert usage between the language and the reference.";
    KendallTauB = "moe_routing_kendall_tau_b", Gauge, "", ["model", "layer", "lang", "reference"],
        "Layer detail: Kendall tau-b rank correlation of expert usage between the language and the reference.";
    PairJsDivergenceBits = "moe_routing_pair_js_divergence_bits", Gauge, "bits", ["model", "layer", "lang_a", "lang_b"],
        "Jensen-Shannon divergence (base 2) between the expert usage of two of the busiest languages, both orders, on the pair layers (default: the deep layers).";
    SplitHalfCosineSimilarity = "moe_routing_split_half_cosine_similarity", Gauge, "", ["model", "layer", "lang"],
        "Layer detail: cosine similarity between two random halves of the language's traffic (the noise floor).";
    LsiExperts = "moe_routing_lsi_experts", Gauge, "experts", ["model", "lang", "reference", "class"],
        "Experts by language-specificity class (lang_specific, reference_specific, shared), LSI averaged over layers.";
    DeepCollapseScoreBits = "moe_routing_deep_collapse_score_bits", Gauge, "bits", ["model", "lang", "reference"],
        "Deep-layer collapse score: how much the entropy gap to the reference widens in the deep layers.";
    DeepCollapseBaselineBits = "moe_routing_deep_collapse_baseline_bits", Gauge, "bits", ["model", "lang", "reference"],
        "The language's configured healthy collapse score; the detector flags the score minus it above theta (only languages with a baseline).";
    DeepCollapse = "moe_routing_deep_collapse", Gauge, "", ["model", "lang", "reference"],
        "1 while the collapse detector (with hysteresis) flags deep-layer routing collapse, else 0.";
    DeepUsageEntropyBits = "moe_routing_deep_usage_entropy_bits", Gauge, "bits", ["model", "lang"],
        "Mean usage entropy over the deep layers D (the last max(2, round(L/8)) MoE layers, at most L/2).";
    MiddleUsageEntropyBits = "moe_routing_middle_usage_entropy_bits", Gauge, "bits", ["model", "lang"],
        "Mean usage entropy over the middle layers M (L/4 <= l < 3L/4, before D).";
    DeepCollapseThresholdBits = "moe_routing_deep_collapse_threshold_bits", Gauge, "bits", ["model"],
        "The collapse detector's threshold theta on the score.";
    WindowTokens = "moe_routing_window_tokens", Gauge, "tokens", ["model", "lang"],
        "Content tokens of the language in the rolling window (sampling-weighted estimate).";
    TokensPerChar = "moe_routing_tokens_per_char", Gauge, "", ["model", "lang"],
        "Tokens per character of the language's text in the window (needs Recorder::record_text).";
    TokensPerWord = "moe_routing_tokens_per_word", Gauge, "", ["model", "lang"],
        "Tokens per whitespace-separated word of the language's text in the window (needs Recorder::record_text).";
    TokensTotal = "moe_routing_tokens_total", Counter, "tokens", ["model", "lang"],
        "Content tokens recorded per language since start (sampling-weighted estimate).";
    DroppedTotal = "moe_routing_dropped_total", Counter, "tokens", ["model", "reason"],
        "Tokens the recorder dropped, by reason.";
    ExpertSelectionsTotal = "moe_routing_expert_selections_total", Counter, "", ["model", "layer", "lang", "expert"],
        "Opt-in: selections of each expert per layer and language since start, for fleet-wide recomputation.";
    MonitorRecordSeconds = "moe_routing_monitor_record_seconds", Summary, "seconds", ["model"],
        "Time one record call takes (sampled 1 call in 64 per thread): quantiles over the last publication interval, count and sum since start.";
    MonitorUpkeepSeconds = "moe_routing_monitor_upkeep_seconds", Gauge, "seconds", ["model"],
        "Time the last publication round took (fold, rotate, snapshot, statistics).";
    MonitorRoundBytes = "moe_routing_monitor_round_bytes", Gauge, "bytes", ["model"],
        "Memory the last publication round held: its snapshot, its analysis, its samples and the per-bucket scores kept between rounds.";
    MonitorAnalysisErrorsTotal = "moe_routing_monitor_analysis_errors_total", Counter, "", ["model"],
        "Publication rounds whose statistics failed (their figures are left out; Round::error says why).";
    MonitorWindowFillRatio = "moe_routing_monitor_window_fill_ratio", Gauge, "ratio", ["model"],
        "How much of the rolling window holds data (0 right after start, 1 once full).";
    MonitorLanguagesOverCapTotal = "moe_routing_monitor_languages_over_cap_total", Counter, "", ["model"],
        "New language tags seen after the cap on tracked languages was reached (counted under 'other').";
    MonitorInvalidTagsTotal = "moe_routing_monitor_invalid_tags_total", Counter, "", ["model"],
        "Language tags rejected as invalid (counted under 'und').";
    MonitorLastPublishTimestampSeconds = "moe_routing_monitor_last_publish_timestamp_seconds", Gauge, "seconds", ["model"],
        "Unix time of the last publication: stale when it stops advancing.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_prefixed() {
        let mut names: Vec<&str> = CATALOGUE.iter().map(|d| d.name).collect();
        assert!(names.iter().all(|n| n.starts_with("moe_routing_")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        assert_eq!(Metric::DeepCollapse.name(), "moe_routing_deep_collapse");
        assert_eq!(Metric::TokensTotal.descriptor().kind, Kind::Counter);
        assert_eq!(Metric::ALL.len(), CATALOGUE.len());
        for &m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(m));
        }
        assert_eq!(Metric::from_name("moe_routing_nope"), None);
        assert!(CATALOGUE
            .iter()
            .filter(|d| d.kind == Kind::Counter)
            .all(|d| d.name.ends_with("_total")));
    }

    #[test]
    fn publication_finds_values_by_labels() {
        let p = Publication {
            samples: vec![Sample {
                metric: Metric::Gini,
                labels: vec!["m".into(), "47".into(), "he".into()],
                value: 0.5,
            }],
            summaries: Vec::new(),
        };
        assert_eq!(p.value(Metric::Gini, &["m", "47", "he"]), Some(0.5));
        assert_eq!(p.value(Metric::Gini, &["m", "47", "en"]), None);
        assert_eq!(p.value(Metric::ActiveExperts, &["m", "47", "he"]), None);
    }
}
