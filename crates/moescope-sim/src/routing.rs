//! The routing model: one categorical usage distribution per (MoE layer, language), and a
//! sampler that draws k distinct experts per token with exactly that usage.
//!
//! # Usage distribution: a capped Zipf law over a ranking
//! Each (layer, language) ranks the E experts (see [`ranking`]) and gives rank r (0-based)
//! the weight (r + 1)^−s, a Zipf law with exponent s ≥ 0. Every token uses k distinct
//! experts, so no expert can take more than 1/k of a layer's assignments: the weights are
//! normalized and *capped* at 1/k by water-filling (the top m ranks get exactly 1/k, the
//! rest share 1 − m/k in proportion to their weights). The usage entropy of the result falls
//! continuously from log2 E (s = 0, uniform) to log2 k (s → ∞, the top k ranks at 1/k each),
//! and s is found by bisection so that it equals the target to about 1e−9 bits.
//!
//! Consequently the reachable targets are `[log2 k, log2 E]`: 3 to 7 bits for top-8 of 128
//! experts. That floor is not a limit of the simulator but of top-k routing itself — k
//! distinct experts per token make every usage share at most 1/k.
//!
//! # Drawing k distinct experts: systematic πps sampling
//! A token's experts are drawn without replacement by *systematic sampling with probability
//! proportional to size* (Madow, 1949): lay the inclusion probabilities π_e = k·p_e ≤ 1 end to
//! end on [0, k) in some order, draw u uniform in [0, 1), and select the experts whose interval
//! holds one of the points u, u + 1, …, u + k − 1. Each expert is then selected with
//! probability exactly π_e, and never twice (an interval of length ≤ 1 holds at most one of
//! points spaced 1 apart). So the expected usage distribution is exactly p and needs no
//! calibration, unlike successive (Plackett–Luce, "Gumbel top-k") draws, whose inclusion
//! probabilities are a flattened version of p with no closed form.
//!
//! Which experts are selected *together* depends on the order; each (layer, language) keeps
//! [`ORDERS`] fixed random orders and each token uses one of them at random. The marginals
//! (all that moescope's metrics read) are exact; the co-selection pattern is not a real
//! router's.

use moescope_core::rng::Rng;

/// Fixed random expert orders per (layer, language) for systematic sampling.
pub(crate) const ORDERS: usize = 8;

/// Logit given to an expert with usage probability 0 (a collapsed layer's unused experts):
/// finite, so the recorder accepts the row, and negligible after the softmax.
const ZERO_LOGIT: f32 = -30.0;

/// Shannon entropy of a distribution, in bits.
pub(crate) fn entropy_bits(p: &[f64]) -> f64 {
    p.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| -x * x.log2())
        .sum::<f64>()
        + 0.0
}

/// Zipf weights (r + 1)^−s for ranks 0..e, normalized and capped at 1/k by water-filling.
/// Entries are by rank, non-increasing, each at most 1/k, summing to 1.
///
/// With the top m ranks capped, rank r ≥ m gets (1 − m/k)·w_r / Σ_{q≥m} w_q; m is the smallest
/// count for which rank m itself stays under the cap. Weights are taken relative to w_m
/// (((m + 1)/(r + 1))^s ≤ 1) so that large exponents underflow harmlessly to 0 instead of
/// turning the normalization into 0/0.
pub(crate) fn capped_zipf(e: usize, k: usize, s: f64) -> Vec<f64> {
    let cap = 1.0 / k as f64;
    let mut p = vec![0.0; e];
    for m in 0..k.min(e) {
        let rest = 1.0 - m as f64 * cap;
        let base = (m + 1) as f64;
        for (r, x) in p.iter_mut().enumerate().skip(m) {
            *x = (base / (r + 1) as f64).powf(s);
        }
        let relative_sum: f64 = p[m..].iter().sum(); // ≥ 1: rank m contributes 1
        let top = rest / relative_sum;
        if top <= cap * (1.0 + 1e-12) {
            for (r, x) in p.iter_mut().enumerate() {
                *x = if r < m { cap } else { (*x * top).min(cap) };
            }
            return p;
        }
    }
    // Only reachable when e == k: the uniform distribution is the only feasible one.
    vec![1.0 / e as f64; e]
}

/// The capped Zipf distribution (by rank) whose entropy is `target_bits`, clamped to the
/// reachable range [log2 k, log2 E]. Bisection on the exponent: entropy falls as s grows.
pub(crate) fn distribution_for_entropy(e: usize, k: usize, target_bits: f64) -> Vec<f64> {
    let h_max = (e as f64).log2();
    if e <= k || target_bits >= h_max - 1e-12 {
        return vec![1.0 / e as f64; e];
    }
    let h = |s: f64| entropy_bits(&capped_zipf(e, k, s));
    let mut lo = 0.0;
    let mut hi = 1.0;
    while h(hi) > target_bits && hi < 4096.0 {
        lo = hi;
        hi *= 2.0;
    }
    if h(hi) > target_bits {
        return capped_zipf(e, k, hi); // within 1e-9 bits of log2 k
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if h(mid) > target_bits {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-12 * hi.max(1.0) {
            break;
        }
    }
    capped_zipf(e, k, 0.5 * (lo + hi))
}

/// The collapsed distribution (by rank): uniform over the top `experts` ranks, 0 elsewhere.
/// Entropy exactly log2 `experts`.
pub(crate) fn funnel(e: usize, experts: usize) -> Vec<f64> {
    let n = experts.clamp(1, e);
    (0..e)
        .map(|r| if r < n { 1.0 / n as f64 } else { 0.0 })
        .collect()
}

/// A ranking of the experts for one (layer, language): experts sorted by the score
/// √(1 − σ)·z_layer,e + √σ·z_lang,e, with z standard normal. `shared` holds the layer's
/// z_layer (the same for every language), `specificity` is σ ∈ [0, 1]: 0 gives every language
/// the layer's ranking, 1 an independent one (score correlation between two languages 1 − σ).
pub(crate) fn ranking(shared: &[f64], specificity: f64, rng: &mut Rng) -> Vec<u32> {
    let (a, b) = ((1.0 - specificity).sqrt(), specificity.sqrt());
    let scores: Vec<f64> = shared.iter().map(|z| a * z + b * rng.normal()).collect();
    let mut order: Vec<u32> = (0..shared.len() as u32).collect();
    order.sort_by(|&x, &y| scores[y as usize].total_cmp(&scores[x as usize]));
    order
}

/// Everything needed to route tokens of one (layer, language) with a given usage
/// distribution.
#[derive(Clone, Debug)]
pub(crate) struct Router {
    /// Usage probability per expert id.
    pub(crate) p: Vec<f64>,
    /// ln p per expert id (finite: [`ZERO_LOGIT`] where p = 0), the logits before noise.
    pub(crate) log_p: Vec<f32>,
    /// `ORDERS` expert orders (expert ids) for systematic sampling.
    orders: Vec<u32>,
    /// Per order, the E + 1 cumulative inclusion probabilities along that order
    /// (`cum[0] = 0`, `cum[E]` ≈ k).
    cum: Vec<f64>,
    /// Per order, `GRID_PER_EXPERT × E` cells splitting [0, cum[E]) evenly: cell g holds the
    /// position of the interval containing the cell's start, so a lookup starts there and
    /// walks forward a step or two instead of a binary search (whose unpredictable branches
    /// cost more than the rest of a token's routing).
    grid: Vec<u32>,
}

/// Lookup cells per expert in [`Router`]'s grid.
const GRID_PER_EXPERT: usize = 2;

impl Router {
    /// A router with usage `p` (per expert id) and the given `ORDERS × E` orders.
    pub(crate) fn new(p: Vec<f64>, k: usize, orders: Vec<u32>) -> Router {
        let e = p.len();
        let log_p = p
            .iter()
            .map(|&x| if x > 0.0 { x.ln() as f32 } else { ZERO_LOGIT })
            .collect();
        let mut cum = Vec::with_capacity(ORDERS * (e + 1));
        for o in orders.chunks_exact(e) {
            let mut c = 0.0;
            cum.push(c);
            for &id in o {
                c += (k as f64 * p[id as usize]).clamp(0.0, 1.0);
                cum.push(c);
            }
        }
        let cells = GRID_PER_EXPERT * e;
        let mut grid = Vec::with_capacity(ORDERS * cells);
        for c in cum.chunks_exact(e + 1) {
            let width = c[e] / cells as f64;
            let mut i = 0;
            for g in 0..cells {
                let start = g as f64 * width;
                while i + 1 < e && c[i + 1] <= start {
                    i += 1;
                }
                grid.push(i as u32);
            }
        }
        Router {
            p,
            log_p,
            orders,
            cum,
            grid,
        }
    }

    /// A router with usage `p` (per expert id) and this router's orders.
    pub(crate) fn with_usage(&self, p: Vec<f64>, k: usize) -> Router {
        Router::new(p, k, self.orders.clone())
    }

    /// Draws k distinct experts into `out` (length k), in the order's sequence.
    #[inline]
    pub(crate) fn draw(&self, rng: &mut Rng, out: &mut [u32]) {
        let e = self.p.len();
        let k = out.len();
        let which = rng.below(ORDERS);
        let order = &self.orders[which * e..(which + 1) * e];
        let cum = &self.cum[which * (e + 1)..(which + 1) * (e + 1)];
        let cells = GRID_PER_EXPERT * e;
        let grid = &self.grid[which * cells..(which + 1) * cells];
        // Scale the points, not the intervals, so every interval stays ≤ 1 long and the
        // last point stays below the total.
        let step = cum[e] / k as f64;
        let to_cell = cells as f64 / cum[e];
        let u = rng.next_f64();
        let mut last = usize::MAX;
        for (j, slot) in out.iter_mut().enumerate() {
            let x = (u + j as f64) * step;
            // The interval [cum[i], cum[i + 1]) holding x: the last i with cum[i] ≤ x. The
            // cell's interval starts at or before x; walk forward from it.
            let mut i = grid[((x * to_cell) as usize).min(cells - 1)] as usize;
            while i + 1 < e && cum[i + 1] <= x {
                i += 1;
            }
            while i > 0 && cum[i] > x {
                i -= 1; // a cell start rounded above x
            }
            if i == last {
                // Two points in one interval: only possible by rounding with an interval of
                // length exactly 1. Take the next expert so the k stay distinct.
                i = (i + 1) % e;
            }
            *slot = order[i];
            last = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_zipf_is_a_distribution_under_the_cap() {
        for &(e, k) in &[(128usize, 8usize), (64, 8), (8, 2), (10, 10)] {
            for &s in &[0.0, 0.3, 1.0, 3.0, 20.0] {
                let p = capped_zipf(e, k, s);
                let sum: f64 = p.iter().sum();
                assert!((sum - 1.0).abs() < 1e-12, "e={e} k={k} s={s} sum={sum}");
                assert!(p.iter().all(|&x| x <= 1.0 / k as f64 + 1e-15 && x > 0.0));
                assert!(p.windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }

    #[test]
    fn entropy_falls_with_the_exponent() {
        let mut prev = f64::INFINITY;
        for i in 0..200 {
            let h = entropy_bits(&capped_zipf(128, 8, i as f64 * 0.05));
            assert!(h <= prev + 1e-12, "not monotone at s = {}", i as f64 * 0.05);
            prev = h;
        }
        assert!((entropy_bits(&capped_zipf(128, 8, 0.0)) - 7.0).abs() < 1e-12);
        assert!((entropy_bits(&capped_zipf(128, 8, 500.0)) - 3.0).abs() < 1e-6);
    }

    #[test]
    fn bisection_hits_targets_across_the_range() {
        for &t in &[3.0, 3.001, 3.5, 4.0, 5.0, 6.0, 6.9, 7.0] {
            let p = distribution_for_entropy(128, 8, t);
            let h = entropy_bits(&p);
            assert!((h - t).abs() < 1e-6, "target {t}: got {h}");
        }
        // E = k: only the uniform distribution exists.
        assert_eq!(distribution_for_entropy(8, 8, 3.0), vec![0.125; 8]);
    }

    #[test]
    fn funnel_entropy_is_log2_experts() {
        assert!((entropy_bits(&funnel(128, 10)) - 10f64.log2()).abs() < 1e-12);
        assert_eq!(funnel(4, 9), vec![0.25; 4]);
    }

    #[test]
    fn systematic_draws_are_distinct_and_match_inclusion_probabilities() {
        let (e, k) = (32usize, 4usize);
        let by_rank = distribution_for_entropy(e, k, 3.5);
        let mut rng = Rng::new(3);
        let rank = ranking(&vec![0.0; e], 1.0, &mut rng);
        let mut p = vec![0.0; e];
        for (r, &id) in rank.iter().enumerate() {
            p[id as usize] = by_rank[r];
        }
        let mut orders = Vec::new();
        for _ in 0..ORDERS {
            let mut o: Vec<u32> = (0..e as u32).collect();
            rng.shuffle(&mut o);
            orders.extend(o);
        }
        let router = Router::new(p.clone(), k, orders);
        let n = 200_000;
        let mut counts = vec![0u64; e];
        let mut out = vec![0u32; k];
        for _ in 0..n {
            router.draw(&mut rng, &mut out);
            let mut sorted = out.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), k, "repeated expert in {out:?}");
            for &id in &out {
                counts[id as usize] += 1;
            }
        }
        for (id, &c) in counts.iter().enumerate() {
            let pi = k as f64 * p[id];
            let expected = n as f64 * pi;
            let sd = (n as f64 * pi * (1.0 - pi)).sqrt().max(1.0);
            assert!(
                (c as f64 - expected).abs() < 5.0 * sd,
                "expert {id}: {c} selections, expected {expected:.0} ± {sd:.0}"
            );
        }
    }

    #[test]
    fn funnel_router_uses_only_the_funnel() {
        let e = 16;
        let p = funnel(e, 4); // ranks 0..4 = ids 0..4 with this identity ranking
        let orders: Vec<u32> = (0..ORDERS).flat_map(|_| 0..e as u32).collect();
        let router = Router::new(p, 4, orders);
        let mut rng = Rng::new(1);
        let mut out = [0u32; 4];
        for _ in 0..1000 {
            router.draw(&mut rng, &mut out);
            let mut s = out;
            s.sort_unstable();
            assert_eq!(s, [0, 1, 2, 3]);
        }
        assert_eq!(router.log_p[5], ZERO_LOGIT);
    }
}
