//! Deep-layer routing collapse: the score, the evidence for one evaluation, and a detector with
//! hysteresis for the live path.
//!
//! With L MoE layers in depth order (l = 0..L−1), two disjoint layer sets:
//! - the deep set D is the last d layers, d = max(2, floor(L/8 + 1/2)), but at most floor(L/2)
//!   (so d = 1 for L ≤ 3; D = {0} when L = 1);
//! - the middle set M is every l with L/4 ≤ l < 3L/4 (real division) that lies before D; when
//!   that leaves M empty (L = 2), M is the layer just before D. M is empty only for L = 1.
//!
//! | L | D | M |
//! |---|---|---|
//! | 1 | {0} | ∅ |
//! | 2 | {1} | {0} |
//! | 3 | {2} | {1} |
//! | 4 | {2, 3} | {1} |
//! | 5 | {3, 4} | {2} |
//! | 6 | {4, 5} | {2, 3} |
//! | 7 | {5, 6} | {2, 3, 4} |
//! | 8 | {6, 7} | {2, 3, 4, 5} |
//! | 48 | 42..=47 | 12..=35 |
//!
//! - drop_ℓ = mean_M H_ℓ − mean_D H_ℓ, and the score C = drop_ℓ − drop_r = mean_D Δ − mean_M Δ
//!   with Δ_l = H_r(l) − H_ℓ(l): how much the entropy gap to the reference widens at depth.
//!   Without a reference, C = drop_ℓ.
//!
//! A single evaluation calls a language collapsed when C > θ, every deep layer holds at least
//! `min_deep_tokens` tokens of both languages, and — when the window has at least two buckets with
//! a defined score — C exceeds the sample standard deviation of C across those buckets
//! ([`CollapseEvidence::is_collapsed`]). The live [`CollapseDetector`] adds hysteresis on top.

use std::ops::Range;

/// The deep set D: the last d = max(2, floor(L/8 + 1/2)) of `num_layers` MoE layers, at most
/// floor(L/2) of them and at least one (module docs: the table for small L). Empty only when
/// L = 0. Never panics.
pub fn deep_layers(num_layers: usize) -> Range<usize> {
    let d = ((num_layers + 4) / 8)
        .max(2)
        .min(num_layers / 2)
        .max(1)
        .min(num_layers);
    (num_layers - d)..num_layers
}

/// The middle set M: depth indices l with L/4 ≤ l < 3L/4 (computed exactly as 4l ≥ L and
/// 4l < 3L) that lie before the deep set; the layer just before D when that is empty. Disjoint
/// from [`deep_layers`]; empty only when L < 2. Never panics.
pub fn middle_layers(num_layers: usize) -> Range<usize> {
    let deep_start = deep_layers(num_layers).start;
    let start = num_layers.div_ceil(4);
    let end = (3 * num_layers).div_ceil(4).min(deep_start); // first l with 4l ≥ 3L, or D
    if start < end {
        start..end
    } else {
        deep_start.saturating_sub(1)..deep_start
    }
}

/// The collapse score of one language against a reference (or alone).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CollapseScore {
    /// drop_ℓ = mean over M of H_ℓ − mean over D of H_ℓ, in bits.
    pub drop_bits: f64,
    /// drop_r for the reference; `None` when scored without a reference.
    pub reference_drop_bits: Option<f64>,
    /// C = drop_ℓ − drop_r (or drop_ℓ without a reference), in bits.
    pub score_bits: f64,
}

fn mean_over(h: &[Option<f64>], range: Range<usize>) -> Option<f64> {
    if range.is_empty() {
        return None;
    }
    let n = range.len() as f64;
    let mut s = 0.0;
    for l in range {
        s += (*h.get(l)?)?;
    }
    Some(s / n)
}

fn drop_bits(h: &[Option<f64>]) -> Option<f64> {
    let l = h.len();
    let d = mean_over(h, middle_layers(l))? - mean_over(h, deep_layers(l))?;
    d.is_finite().then_some(d)
}

/// Scores deep-layer collapse from per-layer usage entropies in depth order (`None` where a
/// layer's entropy is undefined).
///
/// `None` when the middle set is empty (L < 2), an entropy in M or D is undefined, or the
/// reference has a different number of layers. Never panics.
pub fn collapse_score(
    lang_entropy_bits: &[Option<f64>],
    reference_entropy_bits: Option<&[Option<f64>]>,
) -> Option<CollapseScore> {
    let drop_l = drop_bits(lang_entropy_bits)?;
    match reference_entropy_bits {
        None => Some(CollapseScore {
            drop_bits: drop_l,
            reference_drop_bits: None,
            score_bits: drop_l,
        }),
        Some(r) => {
            if r.len() != lang_entropy_bits.len() {
                return None;
            }
            let drop_r = drop_bits(r)?;
            Some(CollapseScore {
                drop_bits: drop_l,
                reference_drop_bits: Some(drop_r),
                score_bits: drop_l - drop_r,
            })
        }
    }
}

/// Settings of the collapse verdict and of the detector's hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CollapseConfig {
    /// θ: the score above which a language counts as collapsed, in bits (default 0.3).
    pub theta_bits: f64,
    /// Minimum tokens in every deep layer, for the language and the reference, before a verdict
    /// is given (default 500: with 128 experts and top-8 that is 4 000 assignments, where the
    /// plug-in entropy's downward bias is about 0.02 bits).
    pub min_deep_tokens: f64,
    /// Raise the flag after this many consecutive evaluations that satisfy the collapse condition
    /// (default 3).
    pub raise_after: u32,
    /// Clear the flag after this many consecutive evaluations with enough tokens and a score
    /// below `theta_bits * clear_ratio` (default 3).
    pub clear_after: u32,
    /// The clearing level as a fraction of θ (default 0.5): between θ·clear_ratio and θ the flag
    /// keeps its state.
    pub clear_ratio: f64,
}

impl CollapseConfig {
    /// The defaults, the one place they are defined: θ = 0.3 bits, 500 tokens per deep layer,
    /// raise after 3, clear after 3 below θ·0.5.
    pub const DEFAULT: CollapseConfig = CollapseConfig {
        theta_bits: 0.3,
        min_deep_tokens: 500.0,
        raise_after: 3,
        clear_after: 3,
        clear_ratio: 0.5,
    };

    /// Checks every setting.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range: `theta_bits` and `clear_ratio`
    /// must be finite, `min_deep_tokens` finite and ≥ 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.theta_bits.is_finite() {
            return Err(ConfigError::new(
                "collapse.theta_bits",
                format!("{} is not finite", self.theta_bits),
            ));
        }
        if !(self.min_deep_tokens.is_finite() && self.min_deep_tokens >= 0.0) {
            return Err(ConfigError::new(
                "collapse.min_deep_tokens",
                format!("{} is not a finite number ≥ 0", self.min_deep_tokens),
            ));
        }
        if !self.clear_ratio.is_finite() {
            return Err(ConfigError::new(
                "collapse.clear_ratio",
                format!("{} is not finite", self.clear_ratio),
            ));
        }
        Ok(())
    }
}

impl Default for CollapseConfig {
    fn default() -> Self {
        CollapseConfig::DEFAULT
    }
}

/// A setting out of range: the field (as a path, e.g. `collapse.theta_bits`) and what is
/// wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting, e.g. `lsi_threshold` or `collapse.min_deep_tokens`.
    pub field: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            problem: problem.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid setting {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// What one evaluation of a window says about collapse of one language against a reference.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CollapseEvidence {
    /// The score over the whole window; `None` when undefined.
    pub score: Option<CollapseScore>,
    /// The smallest token count over the deep layers of the language and the reference; `None`
    /// when a deep layer is missing.
    pub min_deep_tokens: Option<f64>,
    /// Sample standard deviation of the score across the window's buckets; `None` with fewer than
    /// two buckets where the score is defined (the condition is then not applied).
    pub bucket_score_std_bits: Option<f64>,
    /// The language's healthy score, in bits (0 unless configured): the verdicts judge the
    /// excess C − baseline, not C. Unlike scripts differ at depth with no collapse at all (a
    /// few tenths of a bit either way), so a language whose healthy C sits near θ needs its
    /// baseline to keep the flag for real change ([`with_baseline`](Self::with_baseline)).
    pub baseline_bits: f64,
}

impl CollapseEvidence {
    /// The same evidence judged against `baseline_bits` (a language's healthy score).
    #[must_use]
    pub fn with_baseline(mut self, baseline_bits: f64) -> Self {
        self.baseline_bits = baseline_bits;
        self
    }

    /// C − baseline, in bits; `None` when the score is undefined.
    pub fn excess_bits(&self) -> Option<f64> {
        self.score.map(|s| s.score_bits - self.baseline_bits)
    }

    /// Whether every deep layer has at least `config.min_deep_tokens` tokens of both languages.
    pub fn enough_tokens(&self, config: &CollapseConfig) -> bool {
        self.min_deep_tokens
            .is_some_and(|t| t >= config.min_deep_tokens)
    }

    /// Whether the excess over the baseline exceeds the bucket standard deviation (`None` when
    /// there is no bucket spread to compare with).
    pub fn above_bucket_std(&self) -> Option<bool> {
        let x = self.excess_bits()?;
        self.bucket_score_std_bits.map(|sd| x > sd)
    }

    /// The single-evaluation verdict: C − baseline > θ, enough tokens in every deep layer, and
    /// the excess above the bucket standard deviation when there is one. `false` when the score
    /// is undefined.
    pub fn is_collapsed(&self, config: &CollapseConfig) -> bool {
        match self.excess_bits() {
            Some(x) => {
                x > config.theta_bits
                    && self.enough_tokens(config)
                    && self.above_bucket_std().unwrap_or(true)
            }
            None => false,
        }
    }

    /// Whether this evaluation counts toward clearing a raised flag: enough tokens and
    /// C − baseline < θ·clear_ratio.
    pub fn is_clear(&self, config: &CollapseConfig) -> bool {
        match self.excess_bits() {
            Some(x) => self.enough_tokens(config) && x < config.theta_bits * config.clear_ratio,
            None => false,
        }
    }
}

/// Stateful deep-layer collapse flag for one (language, reference) series, with hysteresis.
///
/// Call [`observe`](Self::observe) once per evaluation (for example every upkeep tick of the
/// rolling window). The flag rises after `raise_after` consecutive evaluations for which
/// [`CollapseEvidence::is_collapsed`] holds, and clears after `clear_after` consecutive
/// evaluations for which [`CollapseEvidence::is_clear`] holds. Any other evaluation (score between
/// θ·clear_ratio and θ, too few tokens, an undefined score) resets both streaks and keeps the flag
/// as it is, so the flag neither flaps around θ nor changes on missing data. A `raise_after` or
/// `clear_after` of 0 acts as 1. Never panics.
#[derive(Debug, Clone, PartialEq)]
pub struct CollapseDetector {
    config: CollapseConfig,
    collapsed: bool,
    above_streak: u32,
    below_streak: u32,
}

impl CollapseDetector {
    /// A detector in the "not collapsed" state.
    pub fn new(config: CollapseConfig) -> Self {
        CollapseDetector {
            config,
            collapsed: false,
            above_streak: 0,
            below_streak: 0,
        }
    }

    /// The detector's settings.
    pub fn config(&self) -> &CollapseConfig {
        &self.config
    }

    /// Feeds one evaluation and returns the flag after it.
    pub fn observe(&mut self, evidence: &CollapseEvidence) -> bool {
        if evidence.is_collapsed(&self.config) {
            self.above_streak = self.above_streak.saturating_add(1);
            self.below_streak = 0;
        } else if evidence.is_clear(&self.config) {
            self.below_streak = self.below_streak.saturating_add(1);
            self.above_streak = 0;
        } else {
            self.above_streak = 0;
            self.below_streak = 0;
        }
        if !self.collapsed && self.above_streak >= self.config.raise_after.max(1) {
            self.collapsed = true;
        } else if self.collapsed && self.below_streak >= self.config.clear_after.max(1) {
            self.collapsed = false;
        }
        self.collapsed
    }

    /// The current flag.
    pub fn is_collapsed(&self) -> bool {
        self.collapsed
    }

    /// Back to "not collapsed" with empty streaks.
    pub fn reset(&mut self) {
        self.collapsed = false;
        self.above_streak = 0;
        self.below_streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_and_middle_sets() {
        // Qwen3-30B-A3B: L = 48: d = floor(6.5) = 6 → 42..48; M = 12..36.
        assert_eq!(deep_layers(48), 42..48);
        assert_eq!(middle_layers(48), 12..36);
        // Nemotron: L = 23: d = floor(3.375) = 3 → 20..23; M: 5.75 ≤ l < 17.25 → 6..18.
        assert_eq!(deep_layers(23), 20..23);
        assert_eq!(middle_layers(23), 6..18);
        // L = 8: d = max(2, floor(1.5)) = 2 → 6..8; M = 2..6.
        assert_eq!(deep_layers(8), 6..8);
        assert_eq!(middle_layers(8), 2..6);
        // L = 12: d = max(2, floor(2.0)) = 2; M: 3 ≤ l < 9.
        assert_eq!(deep_layers(12), 10..12);
        assert_eq!(middle_layers(12), 3..9);
        // L = 28: d = floor(4.0) = 4; L = 27: floor(3.875) = 3.
        assert_eq!(deep_layers(28), 24..28);
        assert_eq!(deep_layers(27), 24..27);
        // Degenerate sizes never panic.
        assert_eq!(deep_layers(0), 0..0);
        assert_eq!(deep_layers(1), 0..1);
        assert!(middle_layers(1).is_empty());
        assert!(middle_layers(0).is_empty());
    }

    #[test]
    fn small_models_get_disjoint_nonempty_sets() {
        // (L, D, M) for L = 1..8, as tabulated in the module docs.
        let table: [(usize, Range<usize>, Range<usize>); 8] = [
            (1, 0..1, 0..0),
            (2, 1..2, 0..1),
            (3, 2..3, 1..2),
            (4, 2..4, 1..2),
            (5, 3..5, 2..3),
            (6, 4..6, 2..4),
            (7, 5..7, 2..5),
            (8, 6..8, 2..6),
        ];
        for (l, d, m) in table {
            assert_eq!(deep_layers(l), d, "D for L = {l}");
            assert_eq!(middle_layers(l), m, "M for L = {l}");
        }
        for l in 2..=256 {
            let (d, m) = (deep_layers(l), middle_layers(l));
            assert!(!d.is_empty() && !m.is_empty(), "L = {l}");
            assert!(m.end <= d.start, "L = {l}: M {m:?} overlaps D {d:?}");
            assert_eq!(d.end, l);
        }
    }

    #[test]
    fn two_layer_model_is_scored() {
        // L = 2: M = {0}, D = {1}. ℓ: 3.0 → 1.0 (drop 2.0); r: 3.0 → 2.8 (drop 0.2).
        let s = collapse_score(&[Some(3.0), Some(1.0)], Some(&[Some(3.0), Some(2.8)])).unwrap();
        assert!((s.score_bits - 1.8).abs() < 1e-12);
    }

    #[test]
    fn score_by_hand() {
        // L = 8: M = 2..6, D = 6..8.
        // ℓ: middle 3.0, deep 1.0 → drop 2.0. r: middle 3.5, deep 3.3 → drop 0.2. C = 1.8.
        let l: Vec<Option<f64>> = [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 1.0].map(Some).to_vec();
        let r: Vec<Option<f64>> = [3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.3, 3.3].map(Some).to_vec();
        let s = collapse_score(&l, Some(&r)).unwrap();
        assert!((s.drop_bits - 2.0).abs() < 1e-12);
        assert!((s.reference_drop_bits.unwrap() - 0.2).abs() < 1e-12);
        assert!((s.score_bits - 1.8).abs() < 1e-12);
        let alone = collapse_score(&l, None).unwrap();
        assert!((alone.score_bits - 2.0).abs() < 1e-12);
        // An undefined deep layer leaves the score undefined.
        let mut holes = l.clone();
        holes[7] = None;
        assert_eq!(collapse_score(&holes, Some(&r)), None);
        // Layers 0 and 1 are in neither set: a hole there does not matter.
        holes = l.clone();
        holes[0] = None;
        assert!(collapse_score(&holes, Some(&r)).is_some());
        assert_eq!(collapse_score(&l, Some(&r[..7])), None);
    }

    fn evidence(score: f64, tokens: f64) -> CollapseEvidence {
        CollapseEvidence {
            score: Some(CollapseScore {
                drop_bits: score,
                reference_drop_bits: Some(0.0),
                score_bits: score,
            }),
            min_deep_tokens: Some(tokens),
            bucket_score_std_bits: None,
            baseline_bits: 0.0,
        }
    }

    #[test]
    fn verdict_conditions() {
        let c = CollapseConfig::default();
        assert!(evidence(0.5, 1000.0).is_collapsed(&c));
        assert!(!evidence(0.3, 1000.0).is_collapsed(&c)); // not strictly above θ
        assert!(!evidence(0.5, 10.0).is_collapsed(&c)); // too few tokens
        let mut e = evidence(0.5, 1000.0);
        e.bucket_score_std_bits = Some(0.6);
        assert!(!e.is_collapsed(&c)); // inside the bucket noise
        e.bucket_score_std_bits = Some(0.1);
        assert!(e.is_collapsed(&c));
        e.score = None;
        assert!(!e.is_collapsed(&c));
    }

    #[test]
    fn a_baseline_moves_every_verdict_by_its_size() {
        let c = CollapseConfig::default(); // θ 0.3, clearing below 0.15
                                           // A healthy score of 0.25: at 0.5 the excess is 0.25, not a collapse; at 0.6 it is.
        let e = evidence(0.5, 1000.0).with_baseline(0.25);
        assert_eq!(e.excess_bits(), Some(0.25));
        assert!(!e.is_collapsed(&c));
        assert!(evidence(0.56, 1000.0).with_baseline(0.25).is_collapsed(&c));
        // Clearing: excess below 0.15, i.e. a score below 0.40.
        assert!(evidence(0.39, 1000.0).with_baseline(0.25).is_clear(&c));
        assert!(!evidence(0.41, 1000.0).with_baseline(0.25).is_clear(&c));
        // A negative baseline (a language whose deep layers are healthier than the
        // reference's): 0.1 is an excess of 0.4.
        assert!(evidence(0.1, 1000.0).with_baseline(-0.3).is_collapsed(&c));
        // The bucket spread is compared with the excess.
        let mut e = evidence(0.8, 1000.0).with_baseline(0.25);
        e.bucket_score_std_bits = Some(0.6);
        assert_eq!(e.above_bucket_std(), Some(false)); // 0.55 < 0.6
        assert!(!e.is_collapsed(&c));
    }

    #[test]
    fn hysteresis() {
        let cfg = CollapseConfig::default(); // raise after 3, clear after 3 below 0.15
        let mut d = CollapseDetector::new(cfg);
        let hi = evidence(0.6, 1000.0);
        let mid = evidence(0.2, 1000.0);
        let lo = evidence(0.05, 1000.0);
        assert!(!d.observe(&hi));
        assert!(!d.observe(&hi));
        assert!(!d.observe(&mid)); // streak broken
        assert!(!d.observe(&hi));
        assert!(!d.observe(&hi));
        assert!(d.observe(&hi)); // third in a row: raised
        assert!(d.observe(&mid)); // between the levels: held
        assert!(d.observe(&lo));
        assert!(d.observe(&lo));
        assert!(d.observe(&evidence(0.05, 1.0))); // too few tokens: held, streak reset
        assert!(d.observe(&lo));
        assert!(d.observe(&lo));
        assert!(!d.observe(&lo)); // third clear in a row: cleared
        d.reset();
        assert!(!d.is_collapsed());
    }
}
