//! A CPU model of the kernels: the same inputs, the same accumulator, the same rules.
//!
//! The GPU suite compares the device's accumulator with this one (exact for counts), and the
//! CPU tests check that merging this accumulator into a [`moescope_core::Recorder`] gives the
//! same snapshot as recording the tokens one by one. Rules, per token `t < valid`:
//!
//! 1. tag [`TAG_EXCLUDED`] is skipped ([`Stat::Excluded`]); a tag not below `G` is dropped
//!    ([`Stat::TagOutOfRange`]);
//! 2. top-k weights: any non-finite drops the token ([`Stat::NonFinite`]), else any negative
//!    ([`Stat::InvalidProbability`]); logits: any non-finite drops it ([`Stat::NonFinite`]);
//! 3. ids: any negative or `≥ E` drops it ([`Stat::IdOutOfRange`]);
//! 4. the token's half is `mix64(seq ^ salt) & 1` with sequence ids, else `t & 1`;
//! 5. logits: top-k by logit (ties to the lower expert index), softmax, entropy in bits.
//!
//! The order of the checks is the recorder's, so drop counts match `record`'s too.

use moescope_core::sequence_half;

use crate::layout::{Aggregates, Stat};

/// The tag value that skips a token ([`moescope_core::LangId::EXCLUDED`]'s index).
pub const TAG_EXCLUDED: u16 = u16::MAX;

/// Which tag each token has.
#[derive(Clone, Copy, Debug)]
pub enum TokenTags<'a> {
    /// Every token has this tag.
    All(u16),
    /// One tag per token.
    PerToken(&'a [u16]),
}

/// What one step of one layer shares besides its routing data.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// MoE layer.
    pub layer: usize,
    /// Tokens in the launch (`T`).
    pub tokens: usize,
    /// Tags.
    pub tags: TokenTags<'a>,
    /// One sequence id per token, for the split halves.
    pub sequence_ids: Option<&'a [u64]>,
    /// The recorder's [`split_salt`](moescope_core::Recorder::split_salt).
    pub salt: u64,
    /// Valid tokens (the rest is padding); `None`: all.
    pub valid: Option<usize>,
}

impl Step<'_> {
    fn valid(&self) -> usize {
        self.valid.map_or(self.tokens, |v| v.min(self.tokens))
    }
    fn tag(&self, t: usize) -> u16 {
        match self.tags {
            TokenTags::All(g) => g,
            TokenTags::PerToken(g) => g[t],
        }
    }
    fn half(&self, t: usize) -> usize {
        match self.sequence_ids {
            Some(q) => sequence_half(self.salt, q[t]),
            None => t & 1,
        }
    }
    /// Checks the tag; `Some(g)` to count.
    fn admit(&self, agg: &mut Aggregates, t: usize) -> Option<usize> {
        let l = agg.layout();
        let g = self.tag(t);
        if g == TAG_EXCLUDED {
            agg.add(l.stat(self.layer, Stat::Excluded), 1);
            return None;
        }
        if usize::from(g) >= l.tags {
            agg.add(l.stat(self.layer, Stat::TagOutOfRange), 1);
            return None;
        }
        Some(usize::from(g))
    }
}

/// Counts top-k ids (`T × k`, as `i64`) and optional weights (`T × k`), as the top-k kernel.
pub fn count_topk(
    agg: &mut Aggregates,
    step: &Step<'_>,
    ids: &[i64],
    k: usize,
    weights: Option<&[f32]>,
) {
    let l = agg.layout();
    let layer = step.layer;
    for t in 0..step.valid() {
        let Some(g) = step.admit(agg, t) else {
            continue;
        };
        let mut wsum = 0.0f64;
        if let Some(w) = weights {
            let w = &w[t * k..(t + 1) * k];
            if !w.iter().all(|x| x.is_finite()) {
                agg.add(l.stat(layer, Stat::NonFinite), 1);
                continue;
            }
            if w.iter().any(|&x| x < 0.0) {
                agg.add(l.stat(layer, Stat::InvalidProbability), 1);
                continue;
            }
            wsum = w.iter().map(|&x| f64::from(x)).sum();
        }
        let row = &ids[t * k..(t + 1) * k];
        if row.iter().any(|&id| id < 0 || id >= l.experts as i64) {
            agg.add(l.stat(layer, Stat::IdOutOfRange), 1);
            continue;
        }
        let h = step.half(t);
        for &id in row {
            agg.add(l.counts(layer, g, h) + id as usize, 1);
        }
        agg.add(l.tokens(layer, g, h), 1);
        if weights.is_some() {
            agg.add_f64(l.weight(layer, g), wsum);
        }
    }
}

/// The top `k` experts of a logit row, highest first, ties to the lower index.
pub fn topk_by_logit(row: &[f32], k: usize) -> Vec<u32> {
    // NaN sorts last (such a row is dropped anyway); -0.0 ties with 0.0, as on the device.
    let key = |i: u32| {
        let x = row[i as usize];
        if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            x + 0.0
        }
    };
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// A row's softmax (in `f64`, as the recorder computes it) and its entropy in bits.
pub fn softmax_entropy(row: &[f32]) -> (Vec<f64>, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f64> = row.iter().map(|&x| f64::from(x - max).exp()).collect();
    let sum: f64 = p.iter().sum();
    let mut h = 0.0;
    for v in &mut p {
        *v /= sum;
        if *v > 0.0 {
            h -= *v * v.log2();
        }
    }
    (p, h)
}

/// Counts router logits (`T × E`), as the logits kernel: top-`k` selections, softmax sums
/// and selection entropy.
pub fn count_logits(agg: &mut Aggregates, step: &Step<'_>, logits: &[f32], k: usize) {
    let l = agg.layout();
    let (layer, e) = (step.layer, l.experts);
    for t in 0..step.valid() {
        let Some(g) = step.admit(agg, t) else {
            continue;
        };
        let row = &logits[t * e..(t + 1) * e];
        if !row.iter().all(|x| x.is_finite()) {
            agg.add(l.stat(layer, Stat::NonFinite), 1);
            continue;
        }
        let h = step.half(t);
        for id in topk_by_logit(row, k) {
            agg.add(l.counts(layer, g, h) + id as usize, 1);
        }
        agg.add(l.tokens(layer, g, h), 1);
        let (p, entropy) = softmax_entropy(row);
        for (j, v) in p.iter().enumerate() {
            agg.add_f64(l.prob_sum(layer, g) + j, *v);
        }
        agg.add(l.prob_tokens(layer, g), 1);
        agg.add_f64(l.entropy(layer, g), entropy);
    }
}

/// An IEEE half-precision value as `f32` (what the kernels' `cvt.f32.f16` computes).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalize.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// A bfloat16 value as `f32`.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `x` rounded to bfloat16 (round to nearest even; NaN stays NaN).
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x40;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// `x` rounded to IEEE half (round to nearest even; overflow to infinity; NaN stays NaN).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    if x.is_nan() {
        return sign | 0x7e00;
    }
    let a = x.abs();
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 6.103_515_6e-5 {
        // Subnormal half: a multiple of 2^-24.
        let q = (a * 16_777_216.0).round_ties_even() as u16;
        return sign | q;
    }
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let man = b & 0x7f_ffff;
    let mut h = ((exp as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    #[test]
    fn half_conversions_round_trip_and_match_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15));
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if !x.is_nan() {
                assert_eq!(f32_to_f16(x), h, "{h:#06x}");
            }
            let y = bf16_to_f32(h);
            if !y.is_nan() {
                assert_eq!(f32_to_bf16(y), h, "{h:#06x}");
            }
        }
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80); // tie to even
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00); // tie to even
    }

    #[test]
    fn topk_prefers_higher_logits_then_lower_indices() {
        assert_eq!(topk_by_logit(&[0.5, 2.0, 2.0, -1.0, 3.0], 3), [4, 1, 2]);
        assert_eq!(topk_by_logit(&[1.0; 4], 2), [0, 1]);
        assert_eq!(topk_by_logit(&[-0.0, 0.0, f32::NAN, -1.0], 3), [0, 1, 3]);
    }

    #[test]
    fn drops_follow_the_recorders_order_and_halves_the_token_parity() {
        let l = Layout {
            layers: 2,
            tags: 3,
            experts: 4,
        };
        let mut agg = Aggregates::zeroed(l);
        // 6 tokens, k = 2: ok, bad id, NaN weight + bad id (non-finite wins), excluded,
        // tag out of range, negative weight; valid = 6 of 7.
        let ids = [0, 3, 4, 1, 9, 9, 0, 0, 1, 1, 2, -1, 2, 2];
        let w = [
            0.5,
            0.25,
            1.0,
            1.0,
            f32::NAN,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            -0.5,
            1.0,
            1.0,
            1.0,
        ];
        let tags = [2, 2, 2, TAG_EXCLUDED, 3, 1, 1];
        let step = Step {
            layer: 1,
            tokens: 7,
            tags: TokenTags::PerToken(&tags),
            sequence_ids: None,
            salt: 0,
            valid: Some(6),
        };
        count_topk(&mut agg, &step, &ids, 2, Some(&w));
        let stat = |s| agg.get(l.stat(1, s));
        assert_eq!(stat(Stat::IdOutOfRange), 1);
        assert_eq!(stat(Stat::NonFinite), 1);
        assert_eq!(stat(Stat::Excluded), 1);
        assert_eq!(stat(Stat::TagOutOfRange), 1);
        assert_eq!(stat(Stat::InvalidProbability), 1);
        assert_eq!(agg.get(l.tokens(1, 2, 0)), 1); // token 0: half 0
        assert_eq!(agg.get(l.counts(1, 2, 0)), 1);
        assert_eq!(agg.get(l.counts(1, 2, 0) + 3), 1);
        assert_eq!(agg.get_f64(l.weight(1, 2)), 0.75);
        assert_eq!(agg.tokens(1, 1), 0, "the 7th token is padding");
        assert_eq!(agg.words().iter().filter(|&&w| w != 0).count(), 9);
    }

    #[test]
    fn logits_count_the_top_k_and_sum_a_softmax() {
        let l = Layout {
            layers: 1,
            tags: 1,
            experts: 4,
        };
        let mut agg = Aggregates::zeroed(l);
        let ln2 = std::f32::consts::LN_2;
        // Token 0: probabilities 1/2, 1/4, 1/8, 1/8 → entropy 1.75 bits. Token 1: NaN.
        let logits = [3.0 * ln2, 2.0 * ln2, ln2, ln2, 0.0, f32::NAN, 0.0, 0.0];
        let step = Step {
            layer: 0,
            tokens: 2,
            tags: TokenTags::All(0),
            sequence_ids: Some(&[7, 7]),
            salt: 11,
            valid: None,
        };
        count_logits(&mut agg, &step, &logits, 2);
        let h = sequence_half(11, 7);
        assert_eq!(agg.get(l.tokens(0, 0, h)), 1);
        assert_eq!(&agg.words()[l.counts(0, 0, h)..][..4], [1, 1, 0, 0]);
        let p: Vec<f64> = (0..4).map(|j| agg.get_f64(l.prob_sum(0, 0) + j)).collect();
        for (got, want) in p.iter().zip([0.5, 0.25, 0.125, 0.125]) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        assert!((agg.get_f64(l.entropy(0, 0)) - 1.75).abs() < 1e-6);
        assert_eq!(agg.get(l.stat(0, Stat::NonFinite)), 1);
    }
}
