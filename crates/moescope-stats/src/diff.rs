//! Comparing two analyses of the same architecture: a base checkpoint and a candidate (CPT or
//! SFT), the paper's central comparison, with a verdict a rollout can be gated on.
//!
//! The candidate **regresses** when, for a language present in both:
//! - deep-layer collapse is flagged in the candidate but not in the base (`introduced`), or
//! - collapse is flagged in both and the candidate's score is higher than the base's by more than
//!   [`DiffConfig::tolerance_bits`] (`worsened`), or
//! - with [`DiffConfig::strict`], collapse is flagged in both at all (`persisting`: the candidate
//!   did not repair it).

use std::fmt;

use serde::Serialize;

use crate::analysis::{Analysis, LsiBasis};

/// The `format` key of a diff document.
pub const DIFF_FORMAT: &str = "moescope.diff/v1";

/// Settings of [`diff`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DiffConfig {
    /// How much a persisting collapse score may grow before it counts as worse (default 0.1 bits).
    pub tolerance_bits: f64,
    /// Count a collapse that persists (not repaired) as a regression too (default false).
    pub strict: bool,
}

impl DiffConfig {
    /// The defaults: 0.1 bits of tolerance, not strict.
    pub const DEFAULT: DiffConfig = DiffConfig {
        tolerance_bits: 0.1,
        strict: false,
    };
}

impl Default for DiffConfig {
    fn default() -> Self {
        DiffConfig::DEFAULT
    }
}

/// Why two analyses cannot be compared.
#[derive(Debug, Clone, PartialEq)]
pub enum DiffError {
    /// The models differ in shape (experts or MoE layer count).
    ModelMismatch {
        /// The field that differs.
        field: &'static str,
        /// Its value in the base.
        base: String,
        /// Its value in the candidate.
        candidate: String,
    },
    /// The analyses use different reference languages.
    ReferenceMismatch {
        /// Base reference.
        base: String,
        /// Candidate reference.
        candidate: String,
    },
}

impl fmt::Display for DiffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiffError::ModelMismatch {
                field,
                base,
                candidate,
            } => write!(
                f,
                "the snapshots are of different model shapes: model.{field} is {base} in the base and {candidate} in the candidate"
            ),
            DiffError::ReferenceMismatch { base, candidate } => write!(
                f,
                "the analyses use different references: {base:?} and {candidate:?}"
            ),
        }
    }
}

impl std::error::Error for DiffError {}

/// A metric before and after.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    /// Value in the base.
    pub base: Option<f64>,
    /// Value in the candidate.
    pub candidate: Option<f64>,
    /// candidate − base.
    pub delta: Option<f64>,
}

impl Change {
    fn new(base: Option<f64>, candidate: Option<f64>) -> Self {
        Change {
            base,
            candidate,
            delta: match (base, candidate) {
                (Some(b), Some(c)) => Some(c - b),
                _ => None,
            },
        }
    }
}

/// Per language and layer: the change in entropy, Gini and cosine_similarity (to the reference).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerChange {
    /// The model's layer number.
    pub layer: u32,
    /// Depth index.
    pub depth: usize,
    /// In the deep set D.
    pub deep: bool,
    /// Language.
    pub lang: String,
    /// Usage entropy in bits.
    pub usage_entropy_bits: Change,
    /// Gini coefficient.
    pub gini: Change,
    /// Cosine similarity to the reference (`null` for the reference itself).
    pub cosine_similarity: Change,
}

/// LSI class counts at the analysis threshold, before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LsiChange {
    /// Language.
    pub lang: String,
    /// Reference.
    pub reference: String,
    /// τ.
    pub threshold: f64,
    /// Basis in the base.
    pub base_basis: LsiBasis,
    /// Basis in the candidate.
    pub candidate_basis: LsiBasis,
    /// (language-specific, reference-specific, shared) in the base.
    pub base: LsiCounts,
    /// The same in the candidate.
    pub candidate: LsiCounts,
}

/// LSI class counts (`None` where undefined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LsiCounts {
    /// Experts with LSI > τ.
    pub lang_specific: Option<usize>,
    /// Experts with LSI < −τ.
    pub reference_specific: Option<usize>,
    /// Experts with |LSI| ≤ τ.
    pub shared: Option<usize>,
}

/// How deep-layer collapse changed between base and candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CollapseStatus {
    /// Flagged in neither.
    Absent,
    /// Flagged in the base, not in the candidate.
    Repaired,
    /// Flagged in both, the score not worse by more than the tolerance.
    Persisting,
    /// Flagged in both, the score worse by more than the tolerance (a regression).
    Worsened,
    /// Flagged in the candidate only (a regression).
    Introduced,
}

/// Collapse of one language in base and candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollapseChange {
    /// Language.
    pub lang: String,
    /// Reference.
    pub reference: String,
    /// Flag in the base.
    pub base_collapsed: bool,
    /// Flag in the candidate.
    pub candidate_collapsed: bool,
    /// Score C before and after, in bits.
    pub score_bits: Change,
    /// The change.
    pub status: CollapseStatus,
    /// Whether this language makes the candidate a regression.
    pub regression: bool,
}

/// The comparison of two analyses; serializes to `moescope.diff/v1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisDiff {
    /// Always [`DIFF_FORMAT`].
    pub format: String,
    /// Reference language.
    pub reference: String,
    /// Base model name.
    pub base_model: String,
    /// Candidate model name.
    pub candidate_model: String,
    /// Languages present in both.
    pub languages: Vec<String>,
    /// Languages only in the base (not compared).
    pub only_in_base: Vec<String>,
    /// Languages only in the candidate (not compared).
    pub only_in_candidate: Vec<String>,
    /// Per language and layer.
    pub layers: Vec<LayerChange>,
    /// LSI class counts before and after.
    pub lsi: Vec<LsiChange>,
    /// Collapse before and after.
    pub collapse: Vec<CollapseChange>,
    /// Whether the candidate regresses (see the module docs).
    pub regression: bool,
    /// One line per regressing language.
    pub reasons: Vec<String>,
}

fn check_same(field: &'static str, b: String, c: String) -> Result<(), DiffError> {
    if b == c {
        Ok(())
    } else {
        Err(DiffError::ModelMismatch {
            field,
            base: b,
            candidate: c,
        })
    }
}

/// Compares a base analysis with a candidate analysis of the same model shape.
///
/// # Errors
/// [`DiffError::ModelMismatch`] when the number of experts or of MoE layers differs,
/// [`DiffError::ReferenceMismatch`] when the references differ. Never panics.
pub fn diff(
    base: &Analysis,
    candidate: &Analysis,
    config: &DiffConfig,
) -> Result<AnalysisDiff, DiffError> {
    check_same(
        "num_experts",
        base.model.num_experts.to_string(),
        candidate.model.num_experts.to_string(),
    )?;
    check_same(
        "layers (MoE layer count)",
        base.model.layers.len().to_string(),
        candidate.model.layers.len().to_string(),
    )?;
    if base.reference != candidate.reference {
        return Err(DiffError::ReferenceMismatch {
            base: base.reference.clone(),
            candidate: candidate.reference.clone(),
        });
    }
    let reference = base.reference.clone();
    let languages: Vec<String> = base
        .languages
        .iter()
        .filter(|l| candidate.languages.contains(l))
        .cloned()
        .collect();
    let only = |a: &Analysis, b: &Analysis| -> Vec<String> {
        a.languages
            .iter()
            .filter(|l| !b.languages.contains(l))
            .cloned()
            .collect()
    };

    let mut layers = Vec::new();
    for lang in &languages {
        for row in base.layers.iter().filter(|r| &r.lang == lang) {
            let c = candidate.layer_row(lang, row.depth);
            let cos_b = base
                .pair_row(lang, &reference, row.depth)
                .and_then(|p| p.metrics.cosine_similarity);
            let cos_c = candidate
                .pair_row(lang, &reference, row.depth)
                .and_then(|p| p.metrics.cosine_similarity);
            layers.push(LayerChange {
                layer: row.layer,
                depth: row.depth,
                deep: row.deep,
                lang: lang.clone(),
                usage_entropy_bits: Change::new(
                    row.metrics.usage_entropy_bits,
                    c.and_then(|c| c.metrics.usage_entropy_bits),
                ),
                gini: Change::new(row.metrics.gini, c.and_then(|c| c.metrics.gini)),
                cosine_similarity: Change::new(cos_b, cos_c),
            });
        }
    }

    let mut lsi = Vec::new();
    for b in &base.lsi {
        if let Some(c) = candidate.lsi.iter().find(|c| c.lang == b.lang) {
            lsi.push(LsiChange {
                lang: b.lang.clone(),
                reference: b.reference.clone(),
                threshold: b.threshold,
                base_basis: b.basis,
                candidate_basis: c.basis,
                base: LsiCounts {
                    lang_specific: b.lang_specific,
                    reference_specific: b.reference_specific,
                    shared: b.shared,
                },
                candidate: LsiCounts {
                    lang_specific: c.lang_specific,
                    reference_specific: c.reference_specific,
                    shared: c.shared,
                },
            });
        }
    }

    let mut collapse = Vec::new();
    let mut reasons = Vec::new();
    for b in &base.collapse {
        let Some(c) = candidate.collapse_for(&b.lang) else {
            continue;
        };
        let score = Change::new(b.score_bits, c.score_bits);
        let status = match (b.collapsed, c.collapsed) {
            (false, false) => CollapseStatus::Absent,
            (true, false) => CollapseStatus::Repaired,
            (false, true) => CollapseStatus::Introduced,
            (true, true) => {
                if score.delta.is_some_and(|d| d > config.tolerance_bits) {
                    CollapseStatus::Worsened
                } else {
                    CollapseStatus::Persisting
                }
            }
        };
        let regression = match status {
            CollapseStatus::Introduced | CollapseStatus::Worsened => true,
            CollapseStatus::Persisting => config.strict,
            _ => false,
        };
        if regression {
            let fmt = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.3}"));
            reasons.push(format!(
                "{}: deep-layer collapse {} (score {} -> {} bits, theta {:.3})",
                b.lang,
                match status {
                    CollapseStatus::Introduced => "introduced",
                    CollapseStatus::Worsened => "worsened",
                    _ => "not repaired",
                },
                fmt(score.base),
                fmt(score.candidate),
                c.theta_bits
            ));
        }
        collapse.push(CollapseChange {
            lang: b.lang.clone(),
            reference: b.reference.clone(),
            base_collapsed: b.collapsed,
            candidate_collapsed: c.collapsed,
            score_bits: score,
            status,
            regression,
        });
    }

    Ok(AnalysisDiff {
        format: DIFF_FORMAT.to_string(),
        reference,
        base_model: base.model.name.clone(),
        candidate_model: candidate.model.name.clone(),
        only_in_base: only(base, candidate),
        only_in_candidate: only(candidate, base),
        languages,
        layers,
        lsi,
        regression: !reasons.is_empty(),
        collapse,
        reasons,
    })
}
