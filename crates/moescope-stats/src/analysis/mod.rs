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

use crate::collapse::{deep_layers, middle_layers, CollapseConfig};
use crate::vector::{classify_lsi, sample_std};
use moescope_core::Snapshot;

mod metrics;
mod rows;

pub use metrics::*;
pub use rows::*;

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
    /// Healthy collapse scores per language, in bits (default none: 0): the verdict judges
    /// C − baseline ([`CollapseEvidence::with_baseline`](crate::CollapseEvidence::with_baseline)).
    pub collapse_baselines: BTreeMap<String, f64>,
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
            collapse_baselines: BTreeMap::new(),
        }
    }

    /// The configured healthy collapse score of `lang` (0 when none).
    pub fn baseline_of(&self, lang: &str) -> f64 {
        self.collapse_baselines.get(lang).copied().unwrap_or(0.0)
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`AnalysisError::InvalidConfig`] naming the first setting out of range: `lsi_threshold`
    /// and each `lsi_sweep` entry in [0, 1), `active_alpha` ≥ 0, `top_k` ≥ 1, and the collapse
    /// settings ([`CollapseConfig::validate`]), `collapse_baselines` finite.
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
        if let Some((lang, b)) = self.collapse_baselines.iter().find(|(_, b)| !b.is_finite()) {
            return cfg(
                "collapse_baselines",
                format!("{lang}: {b} is not a finite number of bits"),
            );
        }
        self.collapse
            .validate()
            .map_err(|e| AnalysisError::InvalidConfig {
                field: e.field,
                problem: e.problem,
            })
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
            let ev = collapse_evidence(snapshot, name, Some(reference))
                .with_baseline(config.baseline_of(name));
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
