//! The live path's analysis: exactly the figures a publisher publishes, computed once per round.
//!
//! [`analyze`](crate::analyze) is the offline report: every metric of every layer, the LSI
//! sweep, the spread of every metric across buckets. A publisher runs every few seconds and
//! publishes far less, so [`live_analysis`] computes only that:
//! - per language, the usage entropy of every layer, its deep and middle means
//!   ([`DepthMeansRow`]) and the tokenization ratios;
//! - against the reference, the layer-averaged LSI class counts and the collapse evidence (the
//!   spread of the score across buckets comes from the caller, who keeps one score per closed
//!   bucket: [`bucket_collapse_scores`](crate::bucket_collapse_scores));
//! - the Jensen–Shannon divergence between the busiest languages on a layer set;
//! - the full per-layer metrics ([`LayerRow`], [`PairRow`], [`SplitHalfRow`]) only for the
//!   languages and layers of [`LayerDetail`] (none by default).
//!
//! Every figure here equals the offline analysis's figure of the same name on the same
//! snapshot: the rows are the same types, built by the same functions.

use std::collections::BTreeMap;
use std::ops::Range;

use moescope_core::Snapshot;
use serde::Serialize;

use crate::analysis::{
    check_snapshot, collapse_evidence_with_bucket_scores, depth_means, layer_entropies,
    layer_metrics, lsi_inputs, lsi_layer_averaged_from, pair_metrics, tokenization, AnalysisConfig,
    AnalysisError, CollapseRow, DepthMeansRow, LayerRow, LsiBasis, LsiRow, PairRow, SplitHalfRow,
    TokenizationRow,
};
use crate::collapse::{deep_layers, middle_layers, CollapseConfig};
use crate::vector::js_divergence_bits;

/// Which languages get a figure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LanguageSelection {
    /// None of them.
    #[default]
    None,
    /// Every language in the window.
    All,
    /// These language tags (normalized, e.g. `he`, `pt-br`).
    Only(Vec<String>),
}

impl LanguageSelection {
    /// Whether `lang` is selected.
    pub fn contains(&self, lang: &str) -> bool {
        match self {
            LanguageSelection::None => false,
            LanguageSelection::All => true,
            LanguageSelection::Only(tags) => tags.iter().any(|t| t == lang),
        }
    }
}

/// Which MoE layers (by depth index, 0-based) get a figure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LayerSelection {
    /// Every MoE layer.
    #[default]
    All,
    /// The deep set D ([`deep_layers`]).
    Deep,
    /// The middle set M and the deep set D.
    MiddleAndDeep,
    /// These depth indices (indices past the last layer are ignored).
    Depths(Vec<usize>),
}

impl LayerSelection {
    /// The selected depth indices of a model with `num_layers` MoE layers, ascending.
    pub fn depths(&self, num_layers: usize) -> Vec<usize> {
        let range = |r: Range<usize>| r.collect::<Vec<_>>();
        match self {
            LayerSelection::All => range(0..num_layers),
            LayerSelection::Deep => range(deep_layers(num_layers)),
            LayerSelection::MiddleAndDeep => {
                let mut v = range(middle_layers(num_layers));
                v.extend(deep_layers(num_layers));
                v
            }
            LayerSelection::Depths(d) => {
                let mut v: Vec<usize> = d.iter().copied().filter(|&l| l < num_layers).collect();
                v.sort_unstable();
                v.dedup();
                v
            }
        }
    }
}

/// Which languages and layers get every per-layer metric (Gini, active experts, selection
/// entropy, the pair metrics against the reference, the split-half cosine), beyond the usage
/// entropy that every language and layer gets. Off by default: each selected (language,
/// layer) adds up to 11 series.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayerDetail {
    /// The languages (default: none).
    pub languages: LanguageSelection,
    /// The layers of those languages (default: all).
    pub layers: LayerSelection,
}

/// Settings of [`live_analysis`].
#[derive(Debug, Clone, PartialEq)]
pub struct LiveConfig {
    /// The reference language r.
    pub reference: String,
    /// τ of the LSI classes, in [0, 1).
    pub lsi_threshold: f64,
    /// α of the active-expert count.
    pub active_alpha: f64,
    /// K of the top-K overlap; `None` uses the model's top_k.
    pub top_k: Option<usize>,
    /// Collapse verdict settings.
    pub collapse: CollapseConfig,
    /// Healthy collapse scores per language, in bits (default none), as
    /// [`AnalysisConfig::collapse_baselines`].
    pub collapse_baselines: BTreeMap<String, f64>,
    /// The full per-layer metrics for these languages and layers.
    pub layer_detail: LayerDetail,
    /// How many of the busiest languages get the JSD between every pair (0: none).
    pub pair_languages: usize,
    /// On which layers.
    pub pair_layers: LayerSelection,
}

impl LiveConfig {
    /// The default number of busiest languages compared pairwise.
    pub const DEFAULT_PAIR_LANGUAGES: usize = 6;

    /// Defaults with the given reference: the offline defaults, no layer detail, and the JSD
    /// between the 6 busiest languages on the deep layers.
    pub fn new(reference: impl Into<String>) -> LiveConfig {
        LiveConfig {
            reference: reference.into(),
            lsi_threshold: AnalysisConfig::DEFAULT_LSI_THRESHOLD,
            active_alpha: AnalysisConfig::DEFAULT_ACTIVE_ALPHA,
            top_k: None,
            collapse: CollapseConfig::DEFAULT,
            collapse_baselines: BTreeMap::new(),
            layer_detail: LayerDetail::default(),
            pair_languages: Self::DEFAULT_PAIR_LANGUAGES,
            pair_layers: LayerSelection::Deep,
        }
    }

    /// The offline settings that give the same figures.
    pub fn analysis_config(&self) -> AnalysisConfig {
        let mut a = AnalysisConfig::new(self.reference.clone());
        a.lsi_threshold = self.lsi_threshold;
        a.active_alpha = self.active_alpha;
        a.top_k = self.top_k;
        a.collapse = self.collapse;
        a.collapse_baselines = self.collapse_baselines.clone();
        a
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// [`AnalysisError::InvalidConfig`] naming the setting, as [`AnalysisConfig::validate`]
    /// (`lsi_threshold`, `active_alpha`, `top_k`, `collapse.*`), and `reference` when it is
    /// empty.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        if self.reference.is_empty() {
            return Err(AnalysisError::InvalidConfig {
                field: "reference",
                problem: "is empty".into(),
            });
        }
        self.analysis_config().validate()
    }
}

/// The JSD between two of the busiest languages in one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LanguagePairRow {
    /// The model's layer number.
    pub layer: u32,
    /// Depth index.
    pub depth: usize,
    /// The alphabetically first language.
    pub lang_a: String,
    /// The other.
    pub lang_b: String,
    /// Jensen–Shannon divergence of their usage, base 2 (symmetric).
    pub js_divergence_bits: f64,
}

/// What [`live_analysis`] computes. Row types and field names are those of the offline
/// [`Analysis`](crate::Analysis).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveAnalysis {
    /// The reference, when it has traffic in the window (the pair, LSI and collapse rows need
    /// it and are empty otherwise).
    pub reference: Option<String>,
    /// Per language, the usage entropy of each MoE layer in depth order (`None` where
    /// undefined).
    pub usage_entropy_bits: BTreeMap<String, Vec<Option<f64>>>,
    /// Deep and middle mean usage entropy per language.
    pub depth_means: Vec<DepthMeansRow>,
    /// Tokenization per language.
    pub tokenization: Vec<TokenizationRow>,
    /// Full per-layer metrics of the [`LayerDetail`] selection.
    pub layers: Vec<LayerRow>,
    /// Pair metrics against the reference of the selection.
    pub pairs: Vec<PairRow>,
    /// Split-half controls of the selection.
    pub split_half: Vec<SplitHalfRow>,
    /// Layer-averaged LSI class counts against the reference (without per-expert values).
    pub lsi: Vec<LsiRow>,
    /// Collapse of every other language against the reference.
    pub collapse: Vec<CollapseRow>,
    /// JSD between the busiest languages on the pair layers.
    pub language_pairs: Vec<LanguagePairRow>,
}

/// Computes the live figures of `snapshot` (its `buckets` are checked, not read).
///
/// `bucket_scores` holds, per language, its collapse score against the reference in each
/// bucket of the window that has one (closed buckets kept by the caller, plus the open
/// bucket); it gives the spread the collapse verdict compares with.
///
/// # Errors
/// [`AnalysisError::InvalidConfig`] for an out-of-range setting,
/// [`AnalysisError::InvalidSnapshot`] for counts that do not fit the model. An absent
/// reference is not an error: the rows that need it are empty. Never panics.
pub fn live_analysis(
    snapshot: &Snapshot,
    config: &LiveConfig,
    bucket_scores: &BTreeMap<String, Vec<f64>>,
) -> Result<LiveAnalysis, AnalysisError> {
    config.validate()?;
    // The window and the buckets read this round (a live reader's snapshot holds only the
    // new ones).
    check_snapshot(snapshot)?;
    let langs = &snapshot.languages;
    let m = &snapshot.model;
    let num_layers = m.moe_layers.len();
    let label = |d: usize| m.moe_layers.get(d).copied().unwrap_or(d as u32);
    let deep = deep_layers(num_layers);
    let k = config.top_k.unwrap_or(m.top_k as usize).max(1);
    let reference = langs
        .get_key_value(config.reference.as_str())
        .map(|(r, counts)| (r.as_str(), counts));
    let mut out = LiveAnalysis {
        reference: reference.map(|(r, _)| r.to_string()),
        ..LiveAnalysis::default()
    };

    let detail_depths = config.layer_detail.layers.depths(num_layers);
    for (name, lc) in langs {
        let h = layer_entropies(lc);
        out.depth_means.push(depth_means(name, &h));
        out.usage_entropy_bits.insert(name.clone(), h);
        out.tokenization.push(tokenization(name, lc));
        if !config.layer_detail.languages.contains(name) {
            continue;
        }
        for &d in &detail_depths {
            let Some(layer) = lc.layers.get(d) else {
                continue;
            };
            out.layers.push(LayerRow {
                layer: label(d),
                depth: d,
                deep: deep.contains(&d),
                lang: name.clone(),
                tokens: layer.tokens,
                metrics: layer_metrics(layer, config.active_alpha),
            });
            if let Some((r, rc)) = reference.filter(|(r, _)| *r != name) {
                if let Some(y) = rc.layers.get(d) {
                    out.pairs.push(PairRow {
                        layer: label(d),
                        depth: d,
                        deep: deep.contains(&d),
                        lang: name.clone(),
                        reference: r.to_string(),
                        metrics: pair_metrics(layer, y, k),
                    });
                }
            }
            if let Some([a, b]) = &lc.halves {
                if let (Some(x), Some(y)) = (a.layers.get(d), b.layers.get(d)) {
                    out.split_half.push(SplitHalfRow {
                        layer: label(d),
                        depth: d,
                        deep: deep.contains(&d),
                        lang: name.clone(),
                        metrics: pair_metrics(x, y, k),
                    });
                }
            }
        }
    }

    if let Some((r, rc)) = reference {
        // The reference's LSI inputs once per basis, not once per language.
        let ref_prob = lsi_inputs(rc, LsiBasis::Probability);
        let ref_usage = lsi_inputs(rc, LsiBasis::Usage);
        let has_all = |v: &[Option<Vec<f64>>]| !v.is_empty() && v.iter().all(Option::is_some);
        let ref_has_prob = has_all(&ref_prob);
        for (name, lc) in langs.iter().filter(|(n, _)| n.as_str() != r) {
            // As `lsi_basis`: probabilities when both languages have them in every layer.
            let prob = if ref_has_prob {
                Some(lsi_inputs(lc, LsiBasis::Probability)).filter(|p| has_all(p))
            } else {
                None
            };
            let (basis, avg) = match prob {
                Some(p) => (
                    LsiBasis::Probability,
                    lsi_layer_averaged_from(&p, &ref_prob),
                ),
                None => (
                    LsiBasis::Usage,
                    lsi_layer_averaged_from(&lsi_inputs(lc, LsiBasis::Usage), &ref_usage),
                ),
            };
            out.lsi.push(LsiRow::new(
                name,
                r,
                config.lsi_threshold,
                basis,
                avg.as_deref(),
            ));
            let scores = bucket_scores.get(name).map_or(&[][..], Vec::as_slice);
            let ev = collapse_evidence_with_bucket_scores(snapshot, name, Some(r), scores)
                .with_baseline(config.collapse_baselines.get(name).copied().unwrap_or(0.0));
            out.collapse
                .push(CollapseRow::new(name, r, &ev, &config.collapse));
        }
    }

    out.language_pairs = busiest_pairs(snapshot, config, &label);
    Ok(out)
}

/// JSD between every pair of the `pair_languages` busiest languages (most window tokens, ties
/// by tag) on the pair layers.
fn busiest_pairs(
    snapshot: &Snapshot,
    config: &LiveConfig,
    label: &dyn Fn(usize) -> u32,
) -> Vec<LanguagePairRow> {
    let mut busiest: Vec<(&String, f64)> = snapshot
        .languages
        .iter()
        .map(|(tag, l)| (tag, l.tokens))
        .collect();
    busiest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    busiest.truncate(config.pair_languages);
    busiest.sort_by(|a, b| a.0.cmp(b.0));
    let depths = config.pair_layers.depths(snapshot.model.moe_layers.len());
    let mut rows = Vec::new();
    for (i, &(a, _)) in busiest.iter().enumerate() {
        for &(b, _) in &busiest[i + 1..] {
            let (la, lb) = (&snapshot.languages[a].layers, &snapshot.languages[b].layers);
            for &d in &depths {
                let (Some(x), Some(y)) = (la.get(d), lb.get(d)) else {
                    continue;
                };
                if let Some(jsd) = js_divergence_bits(&x.expert_tokens, &y.expert_tokens) {
                    rows.push(LanguagePairRow {
                        layer: label(d),
                        depth: d,
                        lang_a: a.clone(),
                        lang_b: b.clone(),
                        js_divergence_bits: jsd,
                    });
                }
            }
        }
    }
    rows
}
