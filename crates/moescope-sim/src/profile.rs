//! What a simulation is made of: the languages with their shares and entropy profiles, the
//! collapse to inject, and the errors that name a bad field.

/// The target usage entropy of a language, per MoE layer.
#[derive(Clone, Debug, PartialEq)]
pub enum EntropyProfile {
    /// The same target in every MoE layer, in bits.
    Constant(f64),
    /// One target per MoE layer in depth order, in bits (length L).
    PerLayer(Vec<f64>),
}

impl EntropyProfile {
    /// The target at depth index `depth`, if the profile has one.
    pub fn at(&self, depth: usize) -> Option<f64> {
        match self {
            EntropyProfile::Constant(h) => Some(*h),
            EntropyProfile::PerLayer(v) => v.get(depth).copied(),
        }
    }
}

/// One simulated language: its tag, its fraction of the tokens and the usage entropy its
/// tokens' routing should have in each MoE layer.
///
/// ```
/// use moescope_sim::LanguageProfile;
/// // Hebrew: 10 % of tokens, 6 bits in the first half of 48 layers, sinking to 4.5 at the end.
/// let he = LanguageProfile::profile("he", 0.1, 48, |d| if d < 24 { 6.0 } else { 6.0 - (d - 23) as f64 / 16.0 });
/// assert_eq!(he.entropy_bits.at(47), Some(4.5));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LanguageProfile {
    /// The language tag (BCP 47-like, as a request would carry it; normalized like the
    /// recorder does: `pt_br` becomes `pt-BR`).
    pub tag: String,
    /// The fraction of tokens in this language, in [0, 1]; the shares of a simulation sum to 1.
    pub share: f64,
    /// Target usage entropy per MoE layer, in bits, within [log2 k, log2 E].
    pub entropy_bits: EntropyProfile,
    /// How differently this language ranks the experts from the layer's shared ranking, in
    /// [0, 1] (default 0.5): 0 uses the shared ranking (same favourite experts as every other
    /// language with specificity 0), 1 an independent one. Two languages with specificities
    /// σ₁, σ₂ rank by scores whose correlation is √((1 − σ₁)(1 − σ₂)).
    pub specificity: f64,
}

/// Default [`LanguageProfile::specificity`].
pub const DEFAULT_SPECIFICITY: f64 = 0.5;

impl LanguageProfile {
    /// A language with the same target entropy `bits` in every MoE layer.
    pub fn uniform_entropy(tag: impl Into<String>, share: f64, bits: f64) -> LanguageProfile {
        LanguageProfile {
            tag: tag.into(),
            share,
            entropy_bits: EntropyProfile::Constant(bits),
            specificity: DEFAULT_SPECIFICITY,
        }
    }

    /// A language with one target per MoE layer (`bits.len()` must be L).
    pub fn per_layer(tag: impl Into<String>, share: f64, bits: Vec<f64>) -> LanguageProfile {
        LanguageProfile {
            tag: tag.into(),
            share,
            entropy_bits: EntropyProfile::PerLayer(bits),
            specificity: DEFAULT_SPECIFICITY,
        }
    }

    /// A language whose target at depth `d` (0..`layers`) is `bits(d)`.
    pub fn profile(
        tag: impl Into<String>,
        share: f64,
        layers: usize,
        bits: impl FnMut(usize) -> f64,
    ) -> LanguageProfile {
        LanguageProfile::per_layer(tag, share, (0..layers).map(bits).collect())
    }

    /// Sets [`specificity`](Self::specificity).
    #[must_use]
    pub fn with_specificity(mut self, specificity: f64) -> LanguageProfile {
        self.specificity = specificity;
        self
    }
}

/// A deep-layer routing collapse to inject into one language: its last `deep_layers` MoE
/// layers route uniformly to its `experts` favourite experts of each layer (usage entropy
/// exactly log2 `experts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collapse {
    /// How many of the deepest MoE layers collapse, in 1..=L. moescope's detector compares
    /// the last max(2, round(L/8)) layers with the middle half (6 of 48 for Qwen3-30B-A3B).
    pub deep_layers: usize,
    /// How many experts those layers funnel into, in k..=E (k distinct experts per token
    /// need at least k).
    pub experts: usize,
}

/// A simulation that cannot be built or changed as asked. Messages name the field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SimError {
    /// A field breaks a rule: `field` is its path (`languages[1].share`,
    /// `languages[0].entropy_bits[47]`, `collapse.experts`, …).
    #[error("simulator: {field}: {reason}")]
    Invalid {
        /// The path of the offending field.
        field: String,
        /// What is wrong, with the offending value.
        reason: String,
    },
    /// A tag that is not one of the simulation's languages.
    #[error("simulator: language {tag:?} is not simulated (languages: {known})")]
    UnknownLanguage {
        /// The tag asked for.
        tag: String,
        /// The simulated tags, comma-separated.
        known: String,
    },
}

impl SimError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SimError {
        SimError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field this error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            SimError::Invalid { field, .. } => Some(field),
            SimError::UnknownLanguage { .. } => None,
        }
    }
}
