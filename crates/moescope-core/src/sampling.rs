//! Stratified sampling per language.
//!
//! English may be 90 % of traffic and Hebrew 1 %; the languages at risk of collapse are the
//! rare ones. A per-language policy keeps every token of a rare language and thins the
//! common ones: a fixed rate, or a target of sampled tokens per second that the window
//! turns into a rate at every bucket rotation (`rate = min(1, target / observed tokens/s)`
//! over the bucket that just closed).
//!
//! # Unbiased counts
//!
//! A token is kept when a 64-bit hash `h` (of its sequence id, so that a sequence is kept or
//! thinned as a whole, in every layer and every step; or a per-thread random stream without
//! sequence ids) is below a threshold `θ`. The probability of keeping it is exactly
//! `θ / 2^64`, and every kept token counts with weight `2^64 / θ`, so the snapshot's counts
//! are unbiased estimates of the full traffic (Horvitz–Thompson). The threshold is fixed for
//! a (bucket, language) pair: it changes only at rotation, so one weight per bucket and
//! language is exact.

use crate::lang::{Tag, TagError};

/// Smallest rate a policy may ask for (one token in a million).
pub const MIN_RATE: f64 = 1e-6;

/// How one language's tokens are sampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplingRate {
    /// Every token (the default).
    All,
    /// Keep this fraction of tokens, in `[MIN_RATE, 1]`.
    Fixed(f64),
    /// Keep about this many tokens per second; the rate adapts at each bucket rotation.
    TargetTokensPerSecond(f64),
}

impl SamplingRate {
    fn validate(self) -> Result<SamplingRate, SamplingError> {
        match self {
            SamplingRate::Fixed(r) if !(MIN_RATE..=1.0).contains(&r) => {
                Err(SamplingError::BadRate(r))
            }
            SamplingRate::TargetTokensPerSecond(t) if !(t.is_finite() && t > 0.0) => {
                Err(SamplingError::BadTarget(t))
            }
            ok => Ok(ok),
        }
    }

    /// The rate used before anything has been observed.
    pub(crate) fn initial_rate(self) -> f64 {
        match self {
            SamplingRate::Fixed(r) => r,
            SamplingRate::All | SamplingRate::TargetTokensPerSecond(_) => 1.0,
        }
    }

    /// The rate for the next bucket, given the estimated offered tokens per second of the
    /// bucket that just closed.
    pub(crate) fn next_rate(self, offered_tokens_per_second: f64) -> f64 {
        match self {
            SamplingRate::TargetTokensPerSecond(target) if offered_tokens_per_second > 0.0 => {
                (target / offered_tokens_per_second).clamp(MIN_RATE, 1.0)
            }
            other => other.initial_rate(),
        }
    }
}

/// A sampling policy: a default rate and per-language overrides.
///
/// ```
/// use moescope_core::{SamplingConfig, SamplingRate};
/// // Keep ~2000 tokens/s of every language, but all of Hebrew and 1 % of English.
/// let sampling = SamplingConfig::new(SamplingRate::TargetTokensPerSecond(2000.0))?
///     .with_language("he", SamplingRate::All)?
///     .with_language("en", SamplingRate::Fixed(0.01))?;
/// assert_eq!(sampling.rate_for("he"), SamplingRate::All);
/// assert_eq!(sampling.rate_for("fr"), SamplingRate::TargetTokensPerSecond(2000.0));
/// # Ok::<(), moescope_core::SamplingError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    default: SamplingRate,
    overrides: Vec<(Tag, SamplingRate)>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            default: SamplingRate::All,
            overrides: Vec::new(),
        }
    }
}

impl SamplingConfig {
    /// A policy applying `default` to every language.
    ///
    /// # Errors
    /// [`SamplingError`] for a rate outside `[MIN_RATE, 1]` or a target that is not positive.
    pub fn new(default: SamplingRate) -> Result<SamplingConfig, SamplingError> {
        Ok(SamplingConfig {
            default: default.validate()?,
            overrides: Vec::new(),
        })
    }

    /// Sets the rate of one language (tag normalized as the registry does).
    ///
    /// # Errors
    /// [`SamplingError`] for an invalid tag or rate.
    pub fn with_language(
        mut self,
        tag: &str,
        rate: SamplingRate,
    ) -> Result<SamplingConfig, SamplingError> {
        let tag = Tag::parse(tag).map_err(SamplingError::BadTag)?;
        let rate = rate.validate()?;
        self.overrides.retain(|(t, _)| *t != tag);
        self.overrides.push((tag, rate));
        Ok(self)
    }

    /// The policy of `tag`.
    pub fn rate_for(&self, tag: &str) -> SamplingRate {
        match Tag::parse(tag) {
            Ok(tag) => self.rate_for_tag(&tag),
            Err(_) => self.default,
        }
    }

    /// The policy of languages without an override.
    pub fn default_rate(&self) -> SamplingRate {
        self.default
    }

    pub(crate) fn rate_for_tag(&self, tag: &Tag) -> SamplingRate {
        self.overrides
            .iter()
            .find(|(t, _)| t == tag)
            .map_or(self.default, |&(_, r)| r)
    }
}

/// An invalid sampling policy.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// A fixed rate outside `[MIN_RATE, 1]`.
    #[error("sampling rate {0} is outside [{MIN_RATE}, 1]")]
    BadRate(f64),
    /// A target that is not a positive finite number.
    #[error("sampling target {0} tokens/s must be a positive number")]
    BadTarget(f64),
    /// A language tag that does not parse.
    #[error("sampling language tag: {0}")]
    BadTag(TagError),
}

/// The keep-threshold for `rate`: a hash `h` is kept when `h < threshold`, or always when
/// the threshold is `u64::MAX` (rate 1).
pub(crate) fn threshold_for_rate(rate: f64) -> u64 {
    // NaN and anything ≥ 1 keep every token.
    if rate.is_nan() || rate >= 1.0 {
        return u64::MAX;
    }
    let t = (rate.max(MIN_RATE) * 18_446_744_073_709_551_616.0) as u64;
    t.max(1)
}

/// The weight of a token kept under `threshold`: the inverse of its keep probability.
pub(crate) fn weight_for_threshold(threshold: u64) -> f64 {
    if threshold == u64::MAX {
        1.0
    } else {
        18_446_744_073_709_551_616.0 / threshold as f64
    }
}

pub(crate) use crate::rng::mix64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_weights_are_inverse() {
        assert_eq!(threshold_for_rate(1.0), u64::MAX);
        assert_eq!(threshold_for_rate(2.0), u64::MAX);
        assert_eq!(weight_for_threshold(u64::MAX), 1.0);
        for rate in [0.5, 0.1, 0.01, 1e-6] {
            let w = weight_for_threshold(threshold_for_rate(rate));
            assert!((w * rate - 1.0).abs() < 1e-12, "{rate}: {w}");
        }
        assert_eq!(threshold_for_rate(0.5), 1 << 63);
    }

    #[test]
    fn target_rate_follows_traffic() {
        let r = SamplingRate::TargetTokensPerSecond(1000.0);
        assert_eq!(r.initial_rate(), 1.0);
        assert_eq!(r.next_rate(500.0), 1.0);
        assert!((r.next_rate(50_000.0) - 0.02).abs() < 1e-15);
        assert_eq!(r.next_rate(0.0), 1.0);
        assert_eq!(r.next_rate(1e12), MIN_RATE);
        assert_eq!(SamplingRate::Fixed(0.25).next_rate(9.0), 0.25);
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert_eq!(
            SamplingConfig::new(SamplingRate::Fixed(0.0)),
            Err(SamplingError::BadRate(0.0))
        );
        assert_eq!(
            SamplingConfig::new(SamplingRate::Fixed(1.5)),
            Err(SamplingError::BadRate(1.5))
        );
        assert!(matches!(
            SamplingConfig::new(SamplingRate::TargetTokensPerSecond(f64::NAN)),
            Err(SamplingError::BadTarget(_))
        ));
        assert!(matches!(
            SamplingConfig::default().with_language("!!", SamplingRate::All),
            Err(SamplingError::BadTag(_))
        ));
    }

    #[test]
    fn hash_keeps_the_requested_fraction() {
        let thr = threshold_for_rate(0.1);
        let kept = (0..100_000u64).filter(|&s| mix64(s) < thr).count();
        // Binomial(100000, 0.1): sd ≈ 95; 5 sd either side.
        assert!((9_525..=10_475).contains(&kept), "{kept}");
    }
}
