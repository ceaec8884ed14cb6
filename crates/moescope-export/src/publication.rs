//! What a publisher hands to every sink: the metric catalogue and one round of values.
//!
//! Sinks (the `metrics` facade for Prometheus, OpenTelemetry) do not compute anything: they
//! turn a [`Publication`] into their own instruments. Names, units and help texts are defined
//! once, in [`CATALOGUE`]; docs/METRICS.md lists them for users.

/// Whether a metric is a gauge (a value over the rolling window) or a monotonic counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A cumulative count since the process started.
    Counter,
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
    /// Index into [`CATALOGUE`].
    pub metric: usize,
    /// Label values, aligned with `CATALOGUE[metric].labels`.
    pub labels: Vec<String>,
    /// The value; never NaN or infinite (undefined figures are left out).
    pub value: f64,
}

/// One round of values: everything a sink should show now. A label set absent from a round
/// is gone (a language that stopped coming), not frozen at its last value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Publication {
    /// The samples, in no particular order.
    pub samples: Vec<Sample>,
}

impl Publication {
    /// Samples of the metric named `name`.
    pub fn samples_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| CATALOGUE.get(s.metric).is_some_and(|d| d.name == name))
    }

    /// The value of `name` for exactly these label values, if present.
    pub fn value(&self, name: &str, labels: &[&str]) -> Option<f64> {
        self.samples_of(name)
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
    ($( $const:ident = $name:literal, $kind:ident, $unit:literal, [$($label:literal),*], $help:literal; )*) => {
        /// Every metric moescope publishes.
        pub const CATALOGUE: &[Descriptor] = &[
            $( Descriptor { name: $name, kind: Kind::$kind, unit: $unit, help: $help, labels: &[$($label),*] }, )*
        ];
        catalogue!(@index 0usize, $($const)*);
    };
    (@index $i:expr, $first:ident $($rest:ident)*) => {
        #[doc = concat!("Index of `", stringify!($first), "` in [`CATALOGUE`].")]
        pub const $first: usize = $i;
        catalogue!(@index $i + 1usize, $($rest)*);
    };
    (@index $i:expr,) => {};
}

catalogue! {
    USAGE_ENTROPY_BITS = "moe_routing_usage_entropy_bits", Gauge, "bits", ["model", "layer", "lang"],
        "Usage entropy of the language's expert assignments in the layer over the rolling window (max log2 E).";
    ENTROPY_GAP_BITS = "moe_routing_entropy_gap_bits", Gauge, "bits", ["model", "layer", "lang", "reference"],
        "Usage entropy of the reference language minus that of the language, per layer.";
    GINI = "moe_routing_gini", Gauge, "", ["model", "layer", "lang"],
        "Gini coefficient of the language's expert load in the layer (0 = equal load).";
    ACTIVE_EXPERTS = "moe_routing_active_experts", Gauge, "experts", ["model", "layer", "lang"],
        "Experts receiving at least a tenth of a uniform share of the language's assignments.";
    SELECTION_ENTROPY_BITS = "moe_routing_selection_entropy_bits", Gauge, "bits", ["model", "layer", "lang"],
        "Mean per-token entropy of the router's probabilities (needs recorded logits or probabilities).";
    COSINE_SIMILARITY = "moe_routing_cosine_similarity", Gauge, "", ["model", "layer", "lang", "reference"],
        "Cosine similarity of the language's and the reference's expert usage vectors in the layer.";
    JS_DIVERGENCE_BITS = "moe_routing_js_divergence_bits", Gauge, "bits", ["model", "layer", "lang", "reference"],
        "Jensen-Shannon divergence (base 2) between the language's and the reference's expert usage.";
    TOPK_OVERLAP_RATIO = "moe_routing_topk_overlap_ratio", Gauge, "ratio", ["model", "layer", "lang", "reference"],
        "Share of the reference's top-K experts that are also among the language's top-K.";
    SPEARMAN_RHO = "moe_routing_spearman_rho", Gauge, "", ["model", "layer", "lang", "reference"],
        "Spearman rank correlation of expert usage between the language and the reference.";
    KENDALL_TAU = "moe_routing_kendall_tau_b", Gauge, "", ["model", "layer", "lang", "reference"],
        "Kendall tau-b rank correlation of expert usage between the language and the reference.";
    PAIR_JS_DIVERGENCE_BITS = "moe_routing_pair_js_divergence_bits", Gauge, "bits", ["model", "layer", "lang_a", "lang_b"],
        "Jensen-Shannon divergence (base 2) between the expert usage of two languages, for every pair of the busiest languages.";
    SPLIT_HALF_COSINE_SIMILARITY = "moe_routing_split_half_cosine_similarity", Gauge, "", ["model", "layer", "lang"],
        "Cosine similarity between two random halves of the language's traffic: the noise floor.";
    LSI_EXPERTS = "moe_routing_lsi_experts", Gauge, "experts", ["model", "lang", "reference", "class"],
        "Experts by language-specificity class (lang_specific, reference_specific, shared), LSI averaged over layers.";
    DEEP_COLLAPSE_SCORE_BITS = "moe_routing_deep_collapse_score_bits", Gauge, "bits", ["model", "lang", "reference"],
        "Deep-layer collapse score: how much the entropy gap to the reference widens in the deep layers.";
    DEEP_COLLAPSE = "moe_routing_deep_collapse", Gauge, "", ["model", "lang", "reference"],
        "1 while the collapse detector (with hysteresis) flags deep-layer routing collapse, else 0.";
    DEEP_USAGE_ENTROPY_BITS = "moe_routing_deep_usage_entropy_bits", Gauge, "bits", ["model", "lang"],
        "Mean usage entropy over the deep layers D (the last max(2, round(L/8)) MoE layers).";
    MIDDLE_USAGE_ENTROPY_BITS = "moe_routing_middle_usage_entropy_bits", Gauge, "bits", ["model", "lang"],
        "Mean usage entropy over the middle layers M (L/4 <= l < 3L/4).";
    DEEP_COLLAPSE_THRESHOLD_BITS = "moe_routing_deep_collapse_threshold_bits", Gauge, "bits", ["model"],
        "The collapse detector's threshold theta on the score.";
    WINDOW_TOKENS = "moe_routing_window_tokens", Gauge, "tokens", ["model", "lang"],
        "Content tokens of the language in the rolling window (sampling-weighted estimate).";
    TOKENS_PER_CHAR = "moe_routing_tokens_per_char", Gauge, "", ["model", "lang"],
        "Tokens per character of the language's text in the window (needs Recorder::record_text).";
    TOKENS_PER_WORD = "moe_routing_tokens_per_word", Gauge, "", ["model", "lang"],
        "Tokens per whitespace-separated word of the language's text in the window (needs Recorder::record_text).";
    TOKENS_TOTAL = "moe_routing_tokens_total", Counter, "tokens", ["model", "lang"],
        "Content tokens recorded per language since start (sampling-weighted estimate).";
    DROPPED_TOTAL = "moe_routing_dropped_total", Counter, "tokens", ["model", "reason"],
        "Tokens the recorder dropped, by reason.";
    EXPERT_SELECTIONS_TOTAL = "moe_routing_expert_selections_total", Counter, "", ["model", "layer", "lang", "expert"],
        "Opt-in: selections of each expert per layer and language since start, for fleet-wide recomputation.";
    MONITOR_RECORD_SECONDS = "moe_routing_monitor_record_seconds", Gauge, "seconds", ["model", "quantile"],
        "Time one record call takes (sampled), by quantile over the last publication interval.";
    MONITOR_UPKEEP_SECONDS = "moe_routing_monitor_upkeep_seconds", Gauge, "seconds", ["model"],
        "Time the last publication took (fold, rotate, snapshot, statistics).";
    MONITOR_WINDOW_FILL_RATIO = "moe_routing_monitor_window_fill_ratio", Gauge, "ratio", ["model"],
        "How much of the rolling window holds data (0 right after start, 1 once full).";
    MONITOR_LANGUAGES_OVER_CAP_TOTAL = "moe_routing_monitor_languages_over_cap_total", Counter, "", ["model"],
        "New language tags seen after the cap on tracked languages was reached (counted under 'other').";
    MONITOR_INVALID_TAGS_TOTAL = "moe_routing_monitor_invalid_tags_total", Counter, "", ["model"],
        "Language tags rejected as invalid (counted under 'und').";
    MONITOR_LAST_PUBLISH_TIMESTAMP_SECONDS = "moe_routing_monitor_last_publish_timestamp_seconds", Gauge, "seconds", ["model"],
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
        assert_eq!(CATALOGUE[DEEP_COLLAPSE].name, "moe_routing_deep_collapse");
        assert_eq!(CATALOGUE[TOKENS_TOTAL].kind, Kind::Counter);
        assert!(CATALOGUE
            .iter()
            .filter(|d| d.kind == Kind::Counter)
            .all(|d| d.name.ends_with("_total")));
    }

    #[test]
    fn publication_finds_values_by_labels() {
        let p = Publication {
            samples: vec![Sample {
                metric: GINI,
                labels: vec!["m".into(), "47".into(), "he".into()],
                value: 0.5,
            }],
        };
        assert_eq!(p.value("moe_routing_gini", &["m", "47", "he"]), Some(0.5));
        assert_eq!(p.value("moe_routing_gini", &["m", "47", "en"]), None);
    }
}
