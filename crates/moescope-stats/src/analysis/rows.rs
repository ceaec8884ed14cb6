//! The rows of an [`Analysis`]: what the `moescope.analysis/v1` document holds, one type per
//! section.

use serde::Serialize;

use super::{DepthMeansRow, LayerMetrics, LsiBasis, PairMetrics, TokenizationRow};
use crate::collapse::{CollapseConfig, CollapseEvidence};
use crate::vector::{classify_lsi, LsiClasses};

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
    /// The language's configured healthy score, in bits (0 when none); the verdict judges
    /// C − baseline.
    pub baseline_bits: f64,
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
            baseline_bits: ev.baseline_bits,
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

/// Everything [`analyze`](super::analyze) computes; serializes to `moescope.analysis/v1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// Always [`ANALYSIS_FORMAT`](super::ANALYSIS_FORMAT).
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
