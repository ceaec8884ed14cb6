//! Routing-health statistics for Mixture-of-Experts models, per language.
//!
//! The recorder in `moescope-core` counts, per MoE layer and language, how many (token, slot)
//! assignments each routed expert received and, optionally, the summed router probabilities;
//! its upkeep merges a rolling window into a [`Snapshot`](moescope_core::Snapshot). This crate
//! turns a snapshot into the diagnostics of the paper *Mixture of Experts for Low-Resource LLMs*:
//! usage entropy, Gini, active experts, selection entropy, the Language Specificity Index (LSI),
//! cosine similarity, Jensen–Shannon divergence, top-K overlap, Spearman ρ and Kendall τ-b, the
//! controls (split halves, spread across time buckets, tokenization), and the deep-layer collapse
//! score with a hysteresis detector. The definitions are in `docs/METRICS.md`.
//!
//! The crate is pure: no I/O, no threads, no global state. Functions return `None` (JSON `null`)
//! where a figure is undefined — no tokens, a zero vector, mismatched lengths, a negative or
//! non-finite count — so no NaN ever reaches an output, and nothing here panics on any input.
//!
//! Three layers of API:
//! - [`vector`]: metrics of one layer's per-expert vectors (`&[f64]`), e.g.
//!   [`usage_entropy_bits`], [`js_divergence_bits`], [`lsi`].
//! - [`analysis`]: snapshot-level rows and [`analyze`], whose [`Analysis`] serializes to the
//!   `moescope.analysis/v1` JSON document; [`diff`](diff()) compares two analyses.
//! - [`collapse`]: [`collapse_score`] and the stateful [`CollapseDetector`] for the live path.
//! - [`live`]: [`live_analysis`], the figures a publisher publishes each round and nothing
//!   more, equal to the offline analysis's figures of the same names.
//!
//! ```
//! use moescope_core::Snapshot;
//! use moescope_stats::{analyze, usage_entropy_bits, AnalysisConfig};
//!
//! // Four experts, top-1, two MoE layers; English spreads evenly, Hebrew leans on expert 0.
//! let snapshot = Snapshot::from_json_str(r#"{
//!   "format": "moescope.snapshot/v1",
//!   "model": { "name": "toy", "num_experts": 4, "top_k": 1, "layers": [0, 1] },
//!   "languages": {
//!     "en": { "tokens": 8, "layers": [
//!       { "tokens": 8, "expert_tokens": [2, 2, 2, 2], "prob_sum": null, "prob_tokens": 0 },
//!       { "tokens": 8, "expert_tokens": [2, 2, 2, 2], "prob_sum": null, "prob_tokens": 0 } ] },
//!     "he": { "tokens": 8, "layers": [
//!       { "tokens": 8, "expert_tokens": [6, 2, 0, 0], "prob_sum": null, "prob_tokens": 0 },
//!       { "tokens": 8, "expert_tokens": [6, 2, 0, 0], "prob_sum": null, "prob_tokens": 0 } ] }
//!   }
//! }"#).unwrap();
//!
//! // p = (0.75, 0.25, 0, 0): H = 0.811278 bits.
//! let h = usage_entropy_bits(&snapshot.languages["he"].layers[0].expert_tokens).unwrap();
//! assert!((h - 0.811278).abs() < 1e-6);
//!
//! let analysis = analyze(&snapshot, &AnalysisConfig::new("en")).unwrap();
//! let gap = analysis.pair_row("he", "en", 0).unwrap().metrics.entropy_gap_bits.unwrap();
//! assert!((gap - (2.0 - 0.811278)).abs() < 1e-6); // H_en − H_he
//! ```

#![warn(missing_docs)]

pub mod analysis;
pub mod collapse;
pub mod diff;
pub mod live;
pub mod vector;

pub use analysis::{
    analyze, bucket_collapse_scores, collapse_evidence, collapse_evidence_with_bucket_scores,
    collapse_score_of, depth_means, layer_entropies, layer_metrics, lsi_basis, lsi_layer_averaged,
    lsi_per_layer, mean_router_probability, mean_topk_weight, pair_metrics, selection_entropy_bits,
    split_half_collapse_evidence, tokenization, Analysis, AnalysisConfig, AnalysisError,
    CollapseRow, DepthMeansRow, LayerMetrics, LayerRow, LsiBasis, LsiLayerRow, LsiRow, ModelInfo,
    PairMetrics, PairRow, SettingsEcho, SplitHalfCollapseRow, SplitHalfRow, SpreadRow,
    TokenizationRow, Window, ANALYSIS_FORMAT, LSI_SWEEP,
};
pub use collapse::{
    collapse_score, deep_layers, middle_layers, CollapseConfig, CollapseDetector, CollapseEvidence,
    CollapseScore, ConfigError,
};
pub use diff::{
    diff, AnalysisDiff, Change, CollapseChange, CollapseStatus, DiffConfig, DiffError, LayerChange,
    LsiChange, LsiCounts, DIFF_FORMAT,
};
pub use live::{
    live_analysis, LanguagePairRow, LanguageSelection, LayerDetail, LayerSelection, LiveAnalysis,
    LiveConfig,
};
pub use vector::{
    active_experts, average_ranks, classify_lsi, cosine_similarity, gini, js_divergence_bits,
    kendall_tau_b, kendall_tau_b_pairwise, lsi, normalize, normalized_entropy, sample_std,
    spearman_rho, topk_indices, topk_overlap_ratio, total_mass, usage_entropy_bits, LsiClasses,
};
