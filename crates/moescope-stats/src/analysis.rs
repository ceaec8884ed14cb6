//! The metrics of one [`Snapshot`]: per-layer rows, language pairs, LSI, deep-layer collapse and
//! the controls (split halves, bucket spread, tokenization), gathered in an [`Analysis`] whose
//! JSON form is `moescope.analysis/v1`.
//!
//! Everything here is a pure function of the snapshot. Undefined figures are `None` (JSON `null`),
//! never NaN; no function panics on any snapshot, however inconsistent: [`analyze`] checks the
//! snapshot first with [`Snapshot::validate`] and the per-layer helpers return `None` for counts
//! that do not fit the model.

use std::collections::BTreeMap;
use std::fmt;

use moescope_core::{LanguageCounts, LayerCounts, Snapshot};
use serde::Serialize;

use crate::collapse::{
    collapse_score, deep_layers, middle_layers, CollapseConfig, CollapseEvidence, CollapseScore,
};
use crate::vector::{
    active_experts, classify_lsi, cosine_similarity, gini, js_divergence_bits, kendall_tau_b, lsi,
    normalized_entropy, sample_std, spearman_rho, topk_overlap_ratio, usage_entropy_bits,
    LsiClasses,
};

/// The `format` key of an analysis document.
pub const ANALYSIS_FORMAT: &str = "moescope.analysis/v1";

/// The LSI thresholds of the paper's sensitivity sweep.
pub const LSI_SWEEP: [f64; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];

/// Why a snapshot could not be analyzed. The message names the offending field or value.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisError {
    /// The reference language is not among the snapshot's languages.
    UnknownReference {
        /// The requested reference.
        reference: String,
        /// The languages the snapshot holds.
        available: Vec<String>,
    },
    /// The snapshot's counts do not fit its model, or a number is negative or not finite.
    InvalidSnapshot {
        /// JSON path of the field, e.g. `languages.he.layers[3].expert_tokens`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A configuration value is out of range.
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for AnalysisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnalysisError::UnknownReference {
                reference,
                available,
            } => write!(
                f,
                "reference language {reference:?} is not in the snapshot (languages: {})",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            AnalysisError::InvalidSnapshot { field, problem } => {
                write!(f, "invalid snapshot: {field}: {problem}")
            }
            AnalysisError::InvalidConfig { field, problem } => {
                write!(f, "invalid setting {field}: {problem}")
            }
        }
    }
}

impl std::error::Error for AnalysisError {}

/// [`Snapshot::validate`] as an [`AnalysisError`]: the snapshot's counts fit its model
/// (the one home of the snapshot invariants).
pub(crate) fn check_snapshot(snapshot: &Snapshot) -> Result<(), AnalysisError> {
    snapshot.validate().map_err(|e| match e {
        moescope_core::SnapshotError::Invalid { field, reason } => AnalysisError::InvalidSnapshot {
            field,
            problem: reason,
        },
        other => AnalysisError::InvalidSnapshot {
            field: other.field().unwrap_or("snapshot").to_string(),
            problem: other.to_string(),
        },
    })
}

/// Mean router probability a_e = `prob_sum[e] / prob_tokens` of one layer.
///
/// `None` when no probabilities were recorded (`prob_sum` absent or `prob_tokens` ≤ 0) or a
/// number is invalid.
pub fn mean_router_probability(layer: &LayerCounts) -> Option<Vec<f64>> {
    let ps = layer.prob_sum.as_ref()?;
    let t = layer.prob_tokens;
    if !(t > 0.0 && t.is_finite()) || ps.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return None;
    }
    Some(ps.iter().map(|x| x / t).collect())
}

/// Selection entropy: mean over tokens of −Σ_e π_{t,e} log2 π_{t,e}, i.e.
/// `selection_entropy_sum_bits / prob_tokens`, in [0, log2 E].
///
/// `None` when it was not recorded or `prob_tokens` ≤ 0.
pub fn selection_entropy_bits(layer: &LayerCounts) -> Option<f64> {
    let s = layer.selection_entropy_sum_bits?;
    let t = layer.prob_tokens;
    let v = s / t;
    (t > 0.0 && s >= 0.0 && v.is_finite()).then_some(v)
}

/// Mean summed top-k router weight per token (`topk_weight_sum / tokens`): how much probability
/// mass the selected experts carry. `None` when not recorded or no tokens.
pub fn mean_topk_weight(layer: &LayerCounts) -> Option<f64> {
    let s = layer.topk_weight_sum?;
    let v = s / layer.tokens;
    (layer.tokens > 0.0 && s >= 0.0 && v.is_finite()).then_some(v)
}

/// The per-layer metrics of one language.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LayerMetrics {
    /// Usage entropy H in bits.
    pub usage_entropy_bits: Option<f64>,
    /// H / log2 E.
    pub normalized_entropy: Option<f64>,
    /// Gini coefficient of the expert load.
    pub gini: Option<f64>,
    /// Experts with share ≥ α/E.
    pub active_experts: Option<usize>,
    /// Mean per-token router entropy, in bits.
    pub selection_entropy_bits: Option<f64>,
    /// Mean summed top-k weight per token.
    pub mean_topk_weight: Option<f64>,
}

/// Computes [`LayerMetrics`] of one layer with active-expert level `alpha`. Never panics.
pub fn layer_metrics(layer: &LayerCounts, alpha: f64) -> LayerMetrics {
    let n = &layer.expert_tokens;
    LayerMetrics {
        usage_entropy_bits: usage_entropy_bits(n),
        normalized_entropy: normalized_entropy(n),
        gini: gini(n),
        active_experts: active_experts(n, alpha),
        selection_entropy_bits: selection_entropy_bits(layer),
        mean_topk_weight: mean_topk_weight(layer),
    }
}

/// Metrics comparing one layer of a language with the same layer of a reference, on usage
/// vectors n_e.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct PairMetrics {
    /// Δ = H_r − H_ℓ, in bits (positive: the language is more concentrated than the reference).
    pub entropy_gap_bits: Option<f64>,
    /// Cosine similarity of the usage vectors.
    pub cosine_similarity: Option<f64>,
    /// Jensen–Shannon divergence, base 2.
    pub js_divergence_bits: Option<f64>,
    /// |TopK ∩ TopK| / K.
    pub topk_overlap_ratio: Option<f64>,
    /// Spearman ρ over experts.
    pub spearman_rho: Option<f64>,
    /// Kendall τ-b over experts.
    pub kendall_tau_b: Option<f64>,
}

/// Computes [`PairMetrics`] of `lang` against `reference` with top-K size `k`. Never panics.
pub fn pair_metrics(lang: &LayerCounts, reference: &LayerCounts, k: usize) -> PairMetrics {
    let (a, b) = (&lang.expert_tokens, &reference.expert_tokens);
    let gap = match (usage_entropy_bits(a), usage_entropy_bits(b)) {
        (Some(hl), Some(hr)) => Some(hr - hl),
        _ => None,
    };
    PairMetrics {
        entropy_gap_bits: gap,
        cosine_similarity: cosine_similarity(a, b),
        js_divergence_bits: js_divergence_bits(a, b),
        topk_overlap_ratio: topk_overlap_ratio(a, b, k),
        spearman_rho: spearman_rho(a, b),
        kendall_tau_b: kendall_tau_b(a, b),
    }
}

/// What the LSI was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LsiBasis {
    /// Mean router probabilities a_e (both languages recorded them in every layer).
    Probability,
    /// Usage shares p_e (probabilities missing somewhere).
    Usage,
}

impl LsiBasis {
    /// The name used in JSON and tables: `probability` or `usage`.
    pub fn as_str(self) -> &'static str {
        match self {
            LsiBasis::Probability => "probability",
            LsiBasis::Usage => "usage",
        }
    }
}

/// The LSI basis for a pair: `Probability` when both languages have mean router probabilities in
/// every layer, else `Usage`.
pub fn lsi_basis(lang: &LanguageCounts, reference: &LanguageCounts) -> LsiBasis {
    let has = |lc: &LanguageCounts| {
        !lc.layers.is_empty()
            && lc
                .layers
                .iter()
                .all(|l| mean_router_probability(l).is_some())
    };
    if has(lang) && has(reference) {
        LsiBasis::Probability
    } else {
        LsiBasis::Usage
    }
}

fn lsi_input(layer: &LayerCounts, basis: LsiBasis) -> Option<Vec<f64>> {
    match basis {
        LsiBasis::Probability => mean_router_probability(layer),
        LsiBasis::Usage => crate::vector::normalize(&layer.expert_tokens),
    }
}

/// Per-layer LSI of every expert of `lang` against `reference` on `basis`, in depth order;
/// `None` for a layer where either language has no data. Never panics.
pub fn lsi_per_layer(
    lang: &LanguageCounts,
    reference: &LanguageCounts,
    basis: LsiBasis,
) -> Vec<Option<Vec<f64>>> {
    lang.layers
        .iter()
        .zip(&reference.layers)
        .map(|(a, b)| lsi(&lsi_input(a, basis)?, &lsi_input(b, basis)?))
        .collect()
}

/// The paper's view: each expert index's LSI averaged over the MoE layers (an expert unused by
/// both languages in a layer contributes 0 for that layer). Layers where either language has no
/// data are left out of the average; `None` when no layer has data for both. Never panics.
pub fn lsi_layer_averaged(
    lang: &LanguageCounts,
    reference: &LanguageCounts,
    basis: LsiBasis,
) -> Option<Vec<f64>> {
    average_layers(lsi_per_layer(lang, reference, basis))
}

/// The LSI inputs of one language on `basis`, per layer in depth order (what
/// [`lsi_per_layer`] compares): mean router probabilities or usage shares.
pub(crate) fn lsi_inputs(lc: &LanguageCounts, basis: LsiBasis) -> Vec<Option<Vec<f64>>> {
    lc.layers.iter().map(|l| lsi_input(l, basis)).collect()
}

/// [`lsi_layer_averaged`] from both languages' [`lsi_inputs`] (a caller comparing many
/// languages with one reference computes the reference's once).
pub(crate) fn lsi_layer_averaged_from(
    lang: &[Option<Vec<f64>>],
    reference: &[Option<Vec<f64>>],
) -> Option<Vec<f64>> {
    average_layers(
        lang.iter()
            .zip(reference)
            .map(|(a, b)| lsi(a.as_deref()?, b.as_deref()?))
            .collect(),
    )
}

fn average_layers(per_layer: Vec<Option<Vec<f64>>>) -> Option<Vec<f64>> {
    let per_layer: Vec<Vec<f64>> = per_layer.into_iter().flatten().collect();
    let first = per_layer.first()?;
    let e = first.len();
    let mut avg = vec![0.0; e];
    let mut n = 0usize;
    for v in &per_layer {
        if v.len() != e {
            continue;
        }
        n += 1;
        for (s, x) in avg.iter_mut().zip(v) {
            *s += x;
        }
    }
    for s in &mut avg {
        *s = (*s / n as f64).clamp(-1.0, 1.0);
    }
    Some(avg)
}

/// Per-layer usage entropies of a language in depth order.
pub fn layer_entropies(lc: &LanguageCounts) -> Vec<Option<f64>> {
    lc.layers
        .iter()
        .map(|l| usage_entropy_bits(&l.expert_tokens))
        .collect()
}

fn min_deep_tokens(layer_sets: &[&[LayerCounts]]) -> Option<f64> {
    let mut min: Option<f64> = None;
    for layers in layer_sets {
        for l in deep_layers(layers.len()) {
            let t = layers.get(l)?.tokens;
            if !t.is_finite() {
                return None;
            }
            min = Some(min.map_or(t, |m: f64| m.min(t)));
        }
    }
    min
}

/// The collapse score of `lang` against `reference` (or alone when `None`) over one set of
/// counts (a window or one bucket); `None` when either language is absent or the score is
/// undefined. Never panics.
pub fn collapse_score_of(
    langs: &BTreeMap<String, LanguageCounts>,
    lang: &str,
    reference: Option<&str>,
) -> Option<CollapseScore> {
    let l = langs.get(lang)?;
    match reference {
        Some(r) => {
            let r = langs.get(r)?;
            collapse_score(&layer_entropies(l), Some(&layer_entropies(r)))
        }
        None => collapse_score(&layer_entropies(l), None),
    }
}

/// The collapse score of every language other than `reference` against it in one bucket (or
/// window): what a live reader keeps per closed bucket for the bucket spread. Languages with
/// an undefined score are left out; empty without the reference. Never panics.
pub fn bucket_collapse_scores(
    langs: &BTreeMap<String, LanguageCounts>,
    reference: &str,
) -> BTreeMap<String, f64> {
    let Some(r) = langs.get(reference) else {
        return BTreeMap::new();
    };
    let hr = layer_entropies(r);
    langs
        .iter()
        .filter(|(name, _)| name.as_str() != reference)
        .filter_map(|(name, lc)| {
            let s = collapse_score(&layer_entropies(lc), Some(&hr))?;
            Some((name.clone(), s.score_bits))
        })
        .collect()
}

/// Collapse evidence of language `lang` against `reference` (or alone when `None`) over the
/// snapshot's window, with the bucket spread of the score when the snapshot has buckets.
/// An absent language gives an undefined score. Never panics.
pub fn collapse_evidence(
    snapshot: &Snapshot,
    lang: &str,
    reference: Option<&str>,
) -> CollapseEvidence {
    let bucket_scores: Vec<f64> = snapshot
        .buckets
        .iter()
        .filter_map(|b| collapse_score_of(&b.languages, lang, reference).map(|s| s.score_bits))
        .collect();
    collapse_evidence_with_bucket_scores(snapshot, lang, reference, &bucket_scores)
}

/// [`collapse_evidence`] with the per-bucket scores given (by a reader that computed each
/// closed bucket's score once and kept it) instead of computed from `snapshot.buckets`.
/// Never panics.
pub fn collapse_evidence_with_bucket_scores(
    snapshot: &Snapshot,
    lang: &str,
    reference: Option<&str>,
    bucket_scores: &[f64],
) -> CollapseEvidence {
    let tokens = snapshot.languages.get(lang).and_then(|l| match reference {
        Some(r) => {
            let r = snapshot.languages.get(r)?;
            min_deep_tokens(&[&l.layers, &r.layers])
        }
        None => min_deep_tokens(&[&l.layers]),
    });
    CollapseEvidence {
        score: collapse_score_of(&snapshot.languages, lang, reference),
        min_deep_tokens: tokens,
        bucket_score_std_bits: sample_std(bucket_scores),
    }
}

/// Mean usage entropy of one language over the deep set D and the middle set M.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepthMeansRow {
    /// Language tag.
    pub lang: String,
    /// Mean over D of the layers' usage entropy, in bits (layers with an undefined entropy left
    /// out; `None` when none is defined).
    pub deep_usage_entropy_bits: Option<f64>,
    /// Mean over M likewise.
    pub middle_usage_entropy_bits: Option<f64>,
}

/// The deep and middle means of per-layer usage entropies `h` (depth order) of `lang`.
pub fn depth_means(lang: &str, h: &[Option<f64>]) -> DepthMeansRow {
    let mean = |r: std::ops::Range<usize>| -> Option<f64> {
        let v: Vec<f64> = h.get(r)?.iter().flatten().copied().collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    DepthMeansRow {
        lang: lang.to_string(),
        deep_usage_entropy_bits: mean(deep_layers(h.len())),
        middle_usage_entropy_bits: mean(middle_layers(h.len())),
    }
}

/// Split-half control: collapse evidence of half A against half B of one language (the noise
/// floor of the score). Undefined score when the language or its halves are absent.
pub fn split_half_collapse_evidence(lc: &LanguageCounts) -> CollapseEvidence {
    match &lc.halves {
        Some([a, b]) => CollapseEvidence {
            score: collapse_score(&entropies(&a.layers), Some(&entropies(&b.layers))),
            min_deep_tokens: min_deep_tokens(&[&a.layers, &b.layers]),
            bucket_score_std_bits: None,
        },
        None => CollapseEvidence {
            score: None,
            min_deep_tokens: None,
            bucket_score_std_bits: None,
        },
    }
}

fn entropies(layers: &[LayerCounts]) -> Vec<Option<f64>> {
    layers
        .iter()
        .map(|l| usage_entropy_bits(&l.expert_tokens))
        .collect()
}

/// Tokenization statistics of one language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizationRow {
    /// Language tag.
    pub lang: String,
    /// Content tokens in the window.
    pub tokens: f64,
    /// Characters of the text, when the caller passed them.
    pub chars: Option<f64>,
    /// Whitespace-separated segments of the text, when the caller passed them.
    pub words: Option<f64>,
    /// tokens / chars.
    pub tokens_per_char: Option<f64>,
    /// tokens / words.
    pub tokens_per_word: Option<f64>,
}

/// Tokens per character and per whitespace-separated segment; `None` where the length was not
/// recorded or is zero.
pub fn tokenization(lang: &str, lc: &LanguageCounts) -> TokenizationRow {
    let ratio = |d: Option<f64>| {
        d.and_then(|d| {
            let v = lc.tokens / d;
            (d > 0.0 && v.is_finite()).then_some(v)
        })
    };
    TokenizationRow {
        lang: lang.to_string(),
        tokens: lc.tokens,
        chars: lc.chars,
        words: lc.words,
        tokens_per_char: ratio(lc.chars),
        tokens_per_word: ratio(lc.words),
    }
}

/// Settings of [`analyze`].
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// The reference language r (the paper's English).
    pub reference: String,
    /// τ for the LSI classes (default 0.2); must lie in [0, 1).
    pub lsi_threshold: f64,
    /// Thresholds of the sensitivity sweep (default [`LSI_SWEEP`]).
    pub lsi_sweep: Vec<f64>,
    /// α of the active-expert count (default 0.1).
    pub active_alpha: f64,
    /// K of the top-K overlap; `None` uses the model's top_k.
    pub top_k: Option<usize>,
    /// Compare every pair of languages, not only each language with the reference.
    pub all_pairs: bool,
    /// Collapse verdict settings.
    pub collapse: CollapseConfig,
}

impl AnalysisConfig {
    /// The default reference language.
    pub const DEFAULT_REFERENCE: &'static str = "en";
    /// The default LSI class threshold τ.
    pub const DEFAULT_LSI_THRESHOLD: f64 = 0.2;
    /// The default active-expert level α (a tenth of a uniform share).
    pub const DEFAULT_ACTIVE_ALPHA: f64 = 0.1;

    /// Defaults with the given reference language.
    pub fn new(reference: impl Into<String>) -> Self {
        AnalysisConfig {
            reference: reference.into(),
            lsi_threshold: Self::DEFAULT_LSI_THRESHOLD,
            lsi_sweep: LSI_SWEEP.to_vec(),
            active_alpha: Self::DEFAULT_ACTIVE_ALPHA,
            top_k: None,
            all_pairs: false,
            collapse: CollapseConfig::DEFAULT,
        }
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`AnalysisError::InvalidConfig`] naming the first setting out of range: `lsi_threshold`
    /// and each `lsi_sweep` entry in [0, 1), `active_alpha` ≥ 0, `top_k` ≥ 1, and the collapse
    /// settings ([`CollapseConfig::validate`]).
    pub fn validate(&self) -> Result<(), AnalysisError> {
        let cfg = |field, problem: String| Err(AnalysisError::InvalidConfig { field, problem });
        let t = self.lsi_threshold;
        if !(t.is_finite() && (0.0..1.0).contains(&t)) {
            return cfg("lsi_threshold", format!("{t} is outside [0, 1)"));
        }
        if let Some(t) = self
            .lsi_sweep
            .iter()
            .find(|t| !(t.is_finite() && **t >= 0.0 && **t < 1.0))
        {
            return cfg("lsi_sweep", format!("{t} is outside [0, 1)"));
        }
        if !(self.active_alpha.is_finite() && self.active_alpha >= 0.0) {
            return cfg("active_alpha", format!("{} is not ≥ 0", self.active_alpha));
        }
        if self.top_k == Some(0) {
            return cfg("top_k", "must be at least 1".into());
        }
        self.collapse
            .validate()
            .map_err(|e| AnalysisError::InvalidConfig {
                field: e.field,
                problem: e.problem,
            })
    }
}

/// The model the analysis is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Routed experts E.
    pub num_experts: u32,
    /// Experts per token K.
    pub top_k: u32,
    /// Model layer numbers of the MoE layers.
    pub layers: Vec<u32>,
    /// Shared experts (not routed, not in the metrics).
    pub shared_experts: u32,
    /// Total hidden layers, when known.
    pub num_hidden_layers: Option<u32>,
}

/// Time range of the analyzed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Start, Unix milliseconds.
    pub start_unix_ms: u64,
    /// End, Unix milliseconds.
    pub end_unix_ms: u64,
}

/// Settings echoed in the analysis so a reader knows what produced it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SettingsEcho {
    /// τ of the LSI classes.
    pub lsi_threshold: f64,
    /// α of the active-expert count.
    pub active_alpha: f64,
    /// K of the top-K overlap.
    pub topk: usize,
    /// θ of the collapse verdict, in bits.
    pub theta_bits: f64,
    /// Minimum tokens per deep layer for a collapse verdict.
    pub min_deep_tokens: f64,
}

/// One language in one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    /// The model's layer number.
    pub layer: u32,
    /// Depth index among the MoE layers (0-based).
    pub depth: usize,
    /// In the deep set D.
    pub deep: bool,
    /// Language tag.
    pub lang: String,
    /// Content tokens of the language in this layer.
    pub tokens: f64,
    /// The metrics.
    #[serde(flatten)]
    pub metrics: LayerMetrics,
}

/// One language against another in one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairRow {
    /// The model's layer number.
    pub layer: u32,
    /// Depth index among the MoE layers.
    pub depth: usize,
    /// In the deep set D.
    pub deep: bool,
    /// Language ℓ.
    pub lang: String,
    /// Reference r.
    pub reference: String,
    /// The metrics.
    #[serde(flatten)]
    pub metrics: PairMetrics,
}

/// LSI class counts of a language against the reference at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LsiRow {
    /// Language ℓ.
    pub lang: String,
    /// Reference r.
    pub reference: String,
    /// τ.
    pub threshold: f64,
    /// Probabilities or usage shares.
    pub basis: LsiBasis,
    /// Experts with LSI > τ; `None` when the LSI is undefined.
    pub lang_specific: Option<usize>,
    /// Experts with LSI < −τ.
    pub reference_specific: Option<usize>,
    /// Experts with |LSI| ≤ τ.
    pub shared: Option<usize>,
    /// The layer-averaged LSI per expert index (the paper's Figure 3, panel a); only in the
    /// `lsi` list, empty in the sweep.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
}

impl LsiRow {
    pub(crate) fn new(
        lang: &str,
        reference: &str,
        tau: f64,
        basis: LsiBasis,
        values: Option<&[f64]>,
    ) -> Self {
        let c: Option<LsiClasses> = values.map(|v| classify_lsi(v, tau));
        LsiRow {
            lang: lang.into(),
            reference: reference.into(),
            threshold: tau,
            basis,
            lang_specific: c.map(|c| c.lang_specific),
            reference_specific: c.map(|c| c.reference_specific),
            shared: c.map(|c| c.shared),
            values: Vec::new(),
        }
    }
}

/// LSI class counts within one layer (the per-layer view).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LsiLayerRow {
    /// The model's layer number.
    pub layer: u32,
    /// Depth index.
    pub depth: usize,
    /// Language ℓ.
    pub lang: String,
    /// Reference r.
    pub reference: String,
    /// τ.
    pub threshold: f64,
    /// Probabilities or usage shares.
    pub basis: LsiBasis,
    /// Experts with LSI > τ in this layer; `None` when either language has no data here.
    pub lang_specific: Option<usize>,
    /// Experts with LSI < −τ.
    pub reference_specific: Option<usize>,
    /// Experts with |LSI| ≤ τ (including experts neither language used).
    pub shared: Option<usize>,
}

/// Deep-layer collapse of one language against the reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollapseRow {
    /// Language ℓ.
    pub lang: String,
    /// Reference r.
    pub reference: String,
    /// drop_ℓ in bits.
    pub drop_bits: Option<f64>,
    /// drop_r in bits.
    pub reference_drop_bits: Option<f64>,
    /// C = drop_ℓ − drop_r in bits.
    pub score_bits: Option<f64>,
    /// The single-evaluation verdict ([`CollapseEvidence::is_collapsed`]).
    pub collapsed: bool,
    /// θ used.
    pub theta_bits: f64,
    /// Smallest deep-layer token count of the two languages.
    pub min_deep_tokens: Option<f64>,
    /// Whether that meets the configured minimum.
    pub enough_tokens: bool,
    /// Sample standard deviation of C across buckets.
    pub bucket_score_std_bits: Option<f64>,
    /// C > that standard deviation (`None` without bucket spread).
    pub above_bucket_std: Option<bool>,
    /// The evidence these fields were computed from, for a detector to observe (not in JSON:
    /// the fields above carry it).
    #[serde(skip)]
    pub evidence: CollapseEvidence,
}

impl CollapseRow {
    /// The row of `lang` against `reference` from its evidence, judged with `cfg`.
    pub fn new(lang: &str, reference: &str, ev: &CollapseEvidence, cfg: &CollapseConfig) -> Self {
        CollapseRow {
            lang: lang.into(),
            reference: reference.into(),
            drop_bits: ev.score.map(|s| s.drop_bits),
            reference_drop_bits: ev.score.and_then(|s| s.reference_drop_bits),
            score_bits: ev.score.map(|s| s.score_bits),
            collapsed: ev.is_collapsed(cfg),
            theta_bits: cfg.theta_bits,
            min_deep_tokens: ev.min_deep_tokens,
            enough_tokens: ev.enough_tokens(cfg),
            bucket_score_std_bits: ev.bucket_score_std_bits,
            above_bucket_std: ev.above_bucket_std(),
            evidence: *ev,
        }
    }
}

/// Split-half control in one layer: half A as ℓ against half B as r.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitHalfRow {
    /// The model's layer number.
    pub layer: u32,
    /// Depth index.
    pub depth: usize,
    /// In the deep set D.
    pub deep: bool,
    /// Language whose halves are compared.
    pub lang: String,
    /// The metrics (gap = H_B − H_A).
    #[serde(flatten)]
    pub metrics: PairMetrics,
}

/// Split-half control of the collapse score: half A against half B of one language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitHalfCollapseRow {
    /// Language.
    pub lang: String,
    /// C of half A against half B, in bits.
    pub score_bits: Option<f64>,
    /// The verdict with the same settings (a healthy control is `false`).
    pub collapsed: bool,
    /// Smallest deep-layer token count of the two halves.
    pub min_deep_tokens: Option<f64>,
}

/// Standard deviation of each metric across the window's buckets, for one language in one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpreadRow {
    /// The model's layer number.
    pub layer: u32,
    /// Depth index.
    pub depth: usize,
    /// Language.
    pub lang: String,
    /// Reference of the pair metrics.
    pub reference: String,
    /// Buckets holding this language.
    pub buckets: usize,
    /// Sample standard deviations (divisor n − 1) of the per-layer metrics.
    pub usage_entropy_bits: Option<f64>,
    /// Std of the normalized entropy.
    pub normalized_entropy: Option<f64>,
    /// Std of Gini.
    pub gini: Option<f64>,
    /// Std of the active expert count.
    pub active_experts: Option<f64>,
    /// Std of the selection entropy.
    pub selection_entropy_bits: Option<f64>,
    /// Std of the entropy gap (`None` for the reference itself).
    pub entropy_gap_bits: Option<f64>,
    /// Std of the cosine similarity.
    pub cosine_similarity: Option<f64>,
    /// Std of the JSD.
    pub js_divergence_bits: Option<f64>,
    /// Std of the top-K overlap.
    pub topk_overlap_ratio: Option<f64>,
    /// Std of Spearman ρ.
    pub spearman_rho: Option<f64>,
    /// Std of Kendall τ-b.
    pub kendall_tau_b: Option<f64>,
}

/// Everything [`analyze`] computes; serializes to `moescope.analysis/v1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// Always [`ANALYSIS_FORMAT`].
    pub format: String,
    /// The model.
    pub model: ModelInfo,
    /// The reference language.
    pub reference: String,
    /// The window, when the snapshot has one.
    pub window: Option<Window>,
    /// Languages in the snapshot, sorted.
    pub languages: Vec<String>,
    /// Model layer numbers of the deep set D.
    pub deep_layers: Vec<u32>,
    /// Model layer numbers of the middle set M.
    pub middle_layers: Vec<u32>,
    /// Settings used.
    pub settings: SettingsEcho,
    /// Per language, per layer (languages sorted, layers in depth order).
    pub layers: Vec<LayerRow>,
    /// Each language against the reference per layer (every pair with `all_pairs`).
    pub pairs: Vec<PairRow>,
    /// Layer-averaged LSI class counts at the configured threshold, with per-expert values.
    pub lsi: Vec<LsiRow>,
    /// Layer-averaged LSI class counts at every threshold of the sweep.
    pub lsi_sweep: Vec<LsiRow>,
    /// Per-layer LSI class counts at the configured threshold.
    pub lsi_layers: Vec<LsiLayerRow>,
    /// Deep and middle mean usage entropy per language (sorted by language).
    pub depth_means: Vec<DepthMeansRow>,
    /// Deep-layer collapse of each language against the reference.
    pub collapse: Vec<CollapseRow>,
    /// Split-half controls per layer, for languages with halves.
    pub split_half: Vec<SplitHalfRow>,
    /// Split-half control of the collapse score.
    pub split_half_collapse: Vec<SplitHalfCollapseRow>,
    /// Spread across buckets (empty without buckets).
    pub spread: Vec<SpreadRow>,
    /// Tokenization statistics per language.
    pub tokenization: Vec<TokenizationRow>,
}

impl Analysis {
    /// The collapse row of a language, if it was scored.
    pub fn collapse_for(&self, lang: &str) -> Option<&CollapseRow> {
        self.collapse.iter().find(|c| c.lang == lang)
    }

    /// The per-layer row of a language at a depth index.
    pub fn layer_row(&self, lang: &str, depth: usize) -> Option<&LayerRow> {
        self.layers
            .iter()
            .find(|r| r.lang == lang && r.depth == depth)
    }

    /// The pair row of `lang` against `reference` at a depth index.
    pub fn pair_row(&self, lang: &str, reference: &str, depth: usize) -> Option<&PairRow> {
        self.pairs
            .iter()
            .find(|r| r.lang == lang && r.reference == reference && r.depth == depth)
    }
}

/// Computes every metric of a snapshot against a reference language.
///
/// # Errors
/// [`AnalysisError::InvalidSnapshot`] when the counts do not fit the model (see
/// [`Snapshot::validate`]), [`AnalysisError::UnknownReference`] when the reference language is not
/// in the snapshot, [`AnalysisError::InvalidConfig`] for an out-of-range setting.
/// Never panics.
pub fn analyze(snapshot: &Snapshot, config: &AnalysisConfig) -> Result<Analysis, AnalysisError> {
    config.validate()?;
    check_snapshot(snapshot)?;
    let langs = &snapshot.languages;
    let reference = config.reference.as_str();
    let ref_counts = langs
        .get(reference)
        .ok_or_else(|| AnalysisError::UnknownReference {
            reference: reference.to_string(),
            available: langs.keys().cloned().collect(),
        })?;

    let m = &snapshot.model;
    let num_layers = m.moe_layers.len();
    let label = |l: usize| m.moe_layers.get(l).copied().unwrap_or(l as u32);
    let deep = deep_layers(num_layers);
    let k = config.top_k.unwrap_or(m.top_k as usize).max(1);
    let alpha = config.active_alpha;
    let others: Vec<&String> = langs.keys().filter(|l| l.as_str() != reference).collect();

    let mut layers = Vec::new();
    for (name, lc) in langs {
        for (d, layer) in lc.layers.iter().enumerate() {
            layers.push(LayerRow {
                layer: label(d),
                depth: d,
                deep: deep.contains(&d),
                lang: name.clone(),
                tokens: layer.tokens,
                metrics: layer_metrics(layer, alpha),
            });
        }
    }

    // Pairs: each language against the reference; with `all_pairs` also every other unordered
    // pair, the alphabetically first language in the `lang` slot.
    let mut pair_list: Vec<(&str, &str)> = others.iter().map(|l| (l.as_str(), reference)).collect();
    if config.all_pairs {
        for (i, a) in others.iter().enumerate() {
            for b in &others[i + 1..] {
                pair_list.push((a.as_str(), b.as_str()));
            }
        }
    }
    let mut pairs = Vec::new();
    for (a, b) in &pair_list {
        let (la, lb) = (&langs[*a], &langs[*b]);
        for (d, (x, y)) in la.layers.iter().zip(&lb.layers).enumerate() {
            pairs.push(PairRow {
                layer: label(d),
                depth: d,
                deep: deep.contains(&d),
                lang: (*a).to_string(),
                reference: (*b).to_string(),
                metrics: pair_metrics(x, y, k),
            });
        }
    }

    let mut lsi_rows = Vec::new();
    let mut lsi_sweep = Vec::new();
    let mut lsi_layers = Vec::new();
    for name in &others {
        let lc = &langs[name.as_str()];
        let basis = lsi_basis(lc, ref_counts);
        let avg = lsi_layer_averaged(lc, ref_counts, basis);
        let mut row = LsiRow::new(name, reference, config.lsi_threshold, basis, avg.as_deref());
        row.values = avg.clone().unwrap_or_default();
        lsi_rows.push(row);
        for &tau in &config.lsi_sweep {
            lsi_sweep.push(LsiRow::new(name, reference, tau, basis, avg.as_deref()));
        }
        for (d, v) in lsi_per_layer(lc, ref_counts, basis).iter().enumerate() {
            let c = v.as_deref().map(|v| classify_lsi(v, config.lsi_threshold));
            lsi_layers.push(LsiLayerRow {
                layer: label(d),
                depth: d,
                lang: name.to_string(),
                reference: reference.to_string(),
                threshold: config.lsi_threshold,
                basis,
                lang_specific: c.map(|c| c.lang_specific),
                reference_specific: c.map(|c| c.reference_specific),
                shared: c.map(|c| c.shared),
            });
        }
    }

    let collapse = others
        .iter()
        .map(|name| {
            let ev = collapse_evidence(snapshot, name, Some(reference));
            CollapseRow::new(name, reference, &ev, &config.collapse)
        })
        .collect();

    let mut split_half = Vec::new();
    let mut split_half_collapse = Vec::new();
    for (name, lc) in langs {
        if let Some([a, b]) = &lc.halves {
            for (d, (x, y)) in a.layers.iter().zip(&b.layers).enumerate() {
                split_half.push(SplitHalfRow {
                    layer: label(d),
                    depth: d,
                    deep: deep.contains(&d),
                    lang: name.clone(),
                    metrics: pair_metrics(x, y, k),
                });
            }
            let ev = split_half_collapse_evidence(lc);
            split_half_collapse.push(SplitHalfCollapseRow {
                lang: name.clone(),
                score_bits: ev.score.map(|s| s.score_bits),
                collapsed: ev.is_collapsed(&config.collapse),
                min_deep_tokens: ev.min_deep_tokens,
            });
        }
    }

    let depth_means = langs
        .iter()
        .map(|(n, lc)| depth_means(n, &layer_entropies(lc)))
        .collect();
    let spread = spread_rows(snapshot, reference, k, alpha, &label);
    let tokenization = langs.iter().map(|(n, lc)| tokenization(n, lc)).collect();

    Ok(Analysis {
        format: ANALYSIS_FORMAT.to_string(),
        model: ModelInfo {
            name: m.name.clone(),
            num_experts: m.num_experts,
            top_k: m.top_k,
            layers: m.moe_layers.clone(),
            shared_experts: m.shared_experts,
            num_hidden_layers: m.num_hidden_layers,
        },
        reference: reference.to_string(),
        window: snapshot.window.as_ref().map(|w| Window {
            start_unix_ms: w.start_unix_ms,
            end_unix_ms: w.end_unix_ms,
        }),
        languages: langs.keys().cloned().collect(),
        deep_layers: deep.map(label).collect(),
        middle_layers: middle_layers(num_layers).map(label).collect(),
        settings: SettingsEcho {
            lsi_threshold: config.lsi_threshold,
            active_alpha: alpha,
            topk: k,
            theta_bits: config.collapse.theta_bits,
            min_deep_tokens: config.collapse.min_deep_tokens,
        },
        layers,
        pairs,
        lsi: lsi_rows,
        lsi_sweep,
        lsi_layers,
        depth_means,
        collapse,
        split_half,
        split_half_collapse,
        spread,
        tokenization,
    })
}

fn spread_rows(
    snapshot: &Snapshot,
    reference: &str,
    k: usize,
    alpha: f64,
    label: &dyn Fn(usize) -> u32,
) -> Vec<SpreadRow> {
    let mut rows = Vec::new();
    if snapshot.buckets.is_empty() {
        return rows;
    }
    let num_layers = snapshot.model.moe_layers.len();
    for name in snapshot.languages.keys() {
        for d in 0..num_layers {
            let mut lm = Vec::new();
            let mut pm = Vec::new();
            for b in &snapshot.buckets {
                let Some(layer) = b.languages.get(name).and_then(|lc| lc.layers.get(d)) else {
                    continue;
                };
                lm.push(layer_metrics(layer, alpha));
                if name != reference {
                    if let Some(r) = b.languages.get(reference).and_then(|lc| lc.layers.get(d)) {
                        pm.push(pair_metrics(layer, r, k));
                    }
                }
            }
            let sd =
                |xs: Vec<Option<f64>>| sample_std(&xs.into_iter().flatten().collect::<Vec<_>>());
            rows.push(SpreadRow {
                layer: label(d),
                depth: d,
                lang: name.clone(),
                reference: reference.to_string(),
                buckets: lm.len(),
                usage_entropy_bits: sd(lm.iter().map(|m| m.usage_entropy_bits).collect()),
                normalized_entropy: sd(lm.iter().map(|m| m.normalized_entropy).collect()),
                gini: sd(lm.iter().map(|m| m.gini).collect()),
                active_experts: sd(lm
                    .iter()
                    .map(|m| m.active_experts.map(|a| a as f64))
                    .collect()),
                selection_entropy_bits: sd(lm.iter().map(|m| m.selection_entropy_bits).collect()),
                entropy_gap_bits: sd(pm.iter().map(|m| m.entropy_gap_bits).collect()),
                cosine_similarity: sd(pm.iter().map(|m| m.cosine_similarity).collect()),
                js_divergence_bits: sd(pm.iter().map(|m| m.js_divergence_bits).collect()),
                topk_overlap_ratio: sd(pm.iter().map(|m| m.topk_overlap_ratio).collect()),
                spearman_rho: sd(pm.iter().map(|m| m.spearman_rho).collect()),
                kendall_tau_b: sd(pm.iter().map(|m| m.kendall_tau_b).collect()),
            });
        }
    }
    rows
}
