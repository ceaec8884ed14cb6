//! The metrics of one layer, one language pair, the LSI, the collapse evidence and the
//! tokenization figures: the functions [`analyze`](super::analyze) and the live analysis
//! assemble into rows.

use std::collections::BTreeMap;

use crate::collapse::{
    collapse_score, deep_layers, middle_layers, CollapseEvidence, CollapseScore,
};
use crate::vector::{
    active_experts, cosine_similarity, gini, js_divergence_bits, kendall_tau_b, lsi,
    normalized_entropy, sample_std, spearman_rho, topk_overlap_ratio, usage_entropy_bits,
};
use moescope_core::{LanguageCounts, LayerCounts, Snapshot};
use serde::Serialize;

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
        baseline_bits: 0.0,
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
            baseline_bits: 0.0,
        },
        None => CollapseEvidence {
            score: None,
            min_deep_tokens: None,
            bucket_score_std_bits: None,
            baseline_bits: 0.0,
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
