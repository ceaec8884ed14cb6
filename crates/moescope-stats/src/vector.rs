//! Metrics over one layer's per-expert vectors.
//!
//! Every function here takes plain slices (one entry per routed expert: usage counts n_e, or mean
//! router probabilities a_e) and returns `None` where the figure is undefined: an empty vector, a
//! vector with no mass (no tokens), vectors of different lengths, or an entry that is negative, NaN
//! or infinite. A returned `f64` is always finite and clamped to the metric's documented range, so
//! rounding never pushes a value outside it. None of these functions panics, allocates more than
//! O(E), or has side effects.
//!
//! The definitions are the ones of `docs/METRICS.md` ("Definitions (exact)" in the design notes).

/// Sum of a vector of weights, or `None` when the vector is empty, holds a negative or non-finite
/// entry, or sums to zero (no tokens).
pub fn total_mass(v: &[f64]) -> Option<f64> {
    if v.is_empty() || v.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return None;
    }
    let s: f64 = v.iter().sum();
    (s > 0.0 && s.is_finite()).then_some(s)
}

/// Normalizes weights to a distribution p_e = n_e / Σ n.
///
/// `None` under the conditions of [`total_mass`].
pub fn normalize(v: &[f64]) -> Option<Vec<f64>> {
    let s = total_mass(v)?;
    Some(v.iter().map(|x| x / s).collect())
}

/// Usage entropy H = −Σ_{p_e>0} p_e log2 p_e of the distribution of `counts`, in bits.
///
/// Range [0, log2 E]. `None` when `counts` has no mass or an invalid entry (see the module docs).
pub fn usage_entropy_bits(counts: &[f64]) -> Option<f64> {
    let s = total_mass(counts)?;
    // Filter after dividing: a subnormal count over a huge total rounds to p = 0.
    let h: f64 = counts
        .iter()
        .map(|x| x / s)
        .filter(|p| *p > 0.0)
        .map(|p| -p * p.log2())
        .sum();
    // `+ 0.0` turns the −0.0 of a one-hot vector into 0.0.
    Some((h + 0.0).clamp(0.0, (counts.len() as f64).log2()))
}

/// Usage entropy divided by its maximum log2 E, in [0, 1].
///
/// `None` when the entropy is undefined or E < 2 (log2 1 = 0).
pub fn normalized_entropy(counts: &[f64]) -> Option<f64> {
    if counts.len() < 2 {
        return None;
    }
    let h = usage_entropy_bits(counts)?;
    Some((h / (counts.len() as f64).log2()).clamp(0.0, 1.0))
}

/// Gini coefficient of the load: with x_1 ≤ … ≤ x_E sorted,
/// G = 2 Σ_i i·x_i / (E Σ_i x_i) − (E+1)/E.
///
/// Range [0, 1 − 1/E]: 0 is equal load, 1 − 1/E all load on one expert. `None` when `counts` has
/// no mass or an invalid entry.
pub fn gini(counts: &[f64]) -> Option<f64> {
    let s = total_mass(counts)?;
    let e = counts.len() as f64;
    // Shares instead of counts keep the weighted sum in range for huge counts.
    let mut sorted: Vec<f64> = counts.iter().map(|x| x / s).collect();
    sorted.sort_by(f64::total_cmp);
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64 + 1.0) * p)
        .sum();
    let g = 2.0 * weighted / e - (e + 1.0) / e;
    Some((g + 0.0).clamp(0.0, 1.0 - 1.0 / e))
}

/// Number of experts whose share p_e is at least `alpha / E` (α = 0.1 in the paper's sense: a
/// tenth of a uniform share). Computed as n_e·E ≥ α·N to avoid dividing.
///
/// `None` when `counts` has no mass or an invalid entry, or `alpha` is negative or not finite.
pub fn active_experts(counts: &[f64], alpha: f64) -> Option<usize> {
    let s = total_mass(counts)?;
    if !alpha.is_finite() || alpha < 0.0 {
        return None;
    }
    let e = counts.len() as f64;
    Some(counts.iter().filter(|x| **x * e >= alpha * s).count())
}

/// Cosine similarity a·b / (|a| |b|) of two usage vectors; 1 means the same routing.
///
/// Range [0, 1] for the non-negative vectors accepted here. `None` when the lengths differ or
/// either vector has no mass or an invalid entry.
pub fn cosine_similarity(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    // Normalizing by the sums first keeps the products in range for very large counts.
    let pa = normalize(a)?;
    let pb = normalize(b)?;
    let dot: f64 = pa.iter().zip(&pb).map(|(x, y)| x * y).sum();
    let na: f64 = pa.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = pb.iter().map(|x| x * x).sum::<f64>().sqrt();
    let c = dot / (na * nb);
    c.is_finite().then(|| c.clamp(0.0, 1.0))
}

/// Jensen–Shannon divergence, base 2, of the distributions of `a` and `b`:
/// JSD = ½ KL(p‖m) + ½ KL(q‖m), m = ½ (p + q).
///
/// Range [0, 1]; 0 for identical distributions, 1 for disjoint supports. Exactly symmetric: each
/// expert contributes ½ (p+q)·(1 − h2(p/(p+q))), a non-negative term symmetric in p and q.
/// `None` when the lengths differ or either vector has no mass or an invalid entry.
pub fn js_divergence_bits(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let p = normalize(a)?;
    let q = normalize(b)?;
    let d: f64 = p
        .iter()
        .zip(&q)
        .map(|(&x, &y)| {
            let s = x + y;
            if s <= 0.0 {
                return 0.0;
            }
            let u = x / s;
            let v = y / s;
            let h2 = -(if u > 0.0 { u * u.log2() } else { 0.0 })
                - (if v > 0.0 { v * v.log2() } else { 0.0 });
            0.5 * s * (1.0 - h2)
        })
        .sum();
    Some((d + 0.0).clamp(0.0, 1.0))
}

/// Indices of the `k` largest entries of `v`, largest first; ties go to the lower index.
///
/// Returns fewer than `k` indices when `v` is shorter. NaN entries rank last.
pub fn topk_indices(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| {
        let (x, y) = (v[i], v[j]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => i.cmp(&j),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => y.total_cmp(&x).then(i.cmp(&j)),
        }
    });
    idx.truncate(k);
    idx
}

/// Top-K overlap |TopK(a) ∩ TopK(b)| / K, ties by lower expert index.
///
/// K is clamped to the vector length. Range [0, 1]. `None` when `k` is 0, the lengths differ, or
/// either vector has no mass or an invalid entry.
pub fn topk_overlap_ratio(a: &[f64], b: &[f64], k: usize) -> Option<f64> {
    if a.len() != b.len() || k == 0 {
        return None;
    }
    total_mass(a)?;
    total_mass(b)?;
    let k = k.min(a.len());
    let ta = topk_indices(a, k);
    let tb = topk_indices(b, k);
    let common = ta.iter().filter(|i| tb.contains(i)).count();
    Some(common as f64 / k as f64)
}

/// Ranks 1..=n of `v`, ties sharing the average of their ranks.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut ranks = vec![0.0; v.len()];
    let mut start = 0;
    while start < idx.len() {
        let mut end = start + 1;
        while end < idx.len() && v[idx[end]] == v[idx[start]] {
            end += 1;
        }
        // Positions start..end (0-based) hold ranks start+1..=end; their mean is (start+1+end)/2.
        let r = (start + 1 + end) as f64 / 2.0;
        for &i in &idx[start..end] {
            ranks[i] = r;
        }
        start = end;
    }
    ranks
}

/// Pearson correlation; `None` when a variance is zero or lengths differ or fewer than 2 points.
fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    let r = sxy / (sxx * syy).sqrt();
    (sxx > 0.0 && syy > 0.0 && r.is_finite()).then(|| r.clamp(-1.0, 1.0))
}

/// Spearman rank correlation ρ of `a` and `b` over experts: the Pearson correlation of their
/// average ranks (ties share the mean rank).
///
/// Range [−1, 1]. `None` when the lengths differ, E < 2, either vector has no mass or an invalid
/// entry, or either vector is constant (all ranks tied).
pub fn spearman_rho(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    total_mass(a)?;
    total_mass(b)?;
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Kendall rank correlation τ-b of `a` and `b`:
/// (n_c − n_d) / sqrt((n_0 − n_1)(n_0 − n_2)), n_0 = E(E−1)/2, n_1 and n_2 the pairs tied in a
/// and in b. Knight's algorithm with exact tie handling: sort by (a, b), count the pairs tied in
/// a and in both, then count the discordant pairs as the swaps of a merge sort on b. O(E log E)
/// time, O(E) memory.
///
/// Range [−1, 1]. `None` when the lengths differ, E < 2, either vector has no mass or an invalid
/// entry, or either vector is constant.
pub fn kendall_tau_b(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    total_mass(a)?;
    total_mass(b)?;
    let n = a.len();
    // `+ 0.0` turns −0.0 into 0.0, so total_cmp agrees with `==` on valid counts.
    let mut pairs: Vec<(f64, f64)> = a.iter().zip(b).map(|(x, y)| (x + 0.0, y + 0.0)).collect();
    pairs.sort_unstable_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
    let tied = |k: usize| (k * (k.saturating_sub(1)) / 2) as u64;
    // n_1 (tied in a) and n_3 (tied in a and b) from runs of the sorted order.
    let (mut ties_a, mut ties_ab) = (0u64, 0u64);
    let (mut run_a, mut run_ab) = (1usize, 1usize);
    for i in 1..n {
        if pairs[i].0 == pairs[i - 1].0 {
            run_a += 1;
            if pairs[i].1 == pairs[i - 1].1 {
                run_ab += 1;
            } else {
                ties_ab += tied(run_ab);
                run_ab = 1;
            }
        } else {
            ties_a += tied(run_a);
            ties_ab += tied(run_ab);
            run_a = 1;
            run_ab = 1;
        }
    }
    ties_a += tied(run_a);
    ties_ab += tied(run_ab);
    // Discordant pairs: inversions of b in this order (ties in a are already ordered by b,
    // ties in b are not inversions).
    let mut ys: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    let mut buf = vec![0.0; n];
    let swaps = merge_sort_inversions(&mut ys, &mut buf);
    let mut ties_b = 0u64;
    let mut run_b = 1usize;
    for i in 1..n {
        if ys[i] == ys[i - 1] {
            run_b += 1;
        } else {
            ties_b += tied(run_b);
            run_b = 1;
        }
    }
    ties_b += tied(run_b);
    let n0 = tied(n) as f64;
    let denom = ((n0 - ties_a as f64) * (n0 - ties_b as f64)).sqrt();
    if denom <= 0.0 || !denom.is_finite() {
        return None;
    }
    // n_c − n_d = (n_0 − n_1 − n_2 + n_3) − 2 n_d.
    let numer = n0 - ties_a as f64 - ties_b as f64 + ties_ab as f64 - 2.0 * swaps as f64;
    Some((numer / denom).clamp(-1.0, 1.0))
}

/// Sorts `v` ascending (bottom-up merge sort, stable) and returns the number of pairs i < j with
/// v[i] > v[j] (equal values are not counted). `buf` has `v.len()` entries.
fn merge_sort_inversions(v: &mut [f64], buf: &mut [f64]) -> u64 {
    let n = v.len();
    let mut inversions = 0u64;
    let mut width = 1;
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                if v[j] < v[i] {
                    buf[k] = v[j];
                    inversions += (mid - i) as u64;
                    j += 1;
                } else {
                    buf[k] = v[i];
                    i += 1;
                }
                k += 1;
            }
            buf[k..k + (mid - i)].copy_from_slice(&v[i..mid]);
            k += mid - i;
            buf[k..k + (hi - j)].copy_from_slice(&v[j..hi]);
            v[lo..hi].copy_from_slice(&buf[lo..hi]);
            lo = hi;
        }
        width *= 2;
    }
    inversions
}

/// Kendall τ-b by comparing every pair of experts: O(E²). The definition [`kendall_tau_b`] is
/// checked against (same results, same `None` cases); not for large E.
pub fn kendall_tau_b_pairwise(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    total_mass(a)?;
    total_mass(b)?;
    let n = a.len();
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        for j in (i + 1)..n {
            let da = a[i].total_cmp(&a[j]);
            let db = b[i].total_cmp(&b[j]);
            use std::cmp::Ordering::Equal;
            let ta = a[i] == a[j] || da == Equal;
            let tb = b[i] == b[j] || db == Equal;
            if ta {
                ties_a += 1;
            }
            if tb {
                ties_b += 1;
            }
            if !ta && !tb {
                if da == db {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
    }
    let n0 = (n * (n - 1) / 2) as f64;
    let denom = ((n0 - ties_a as f64) * (n0 - ties_b as f64)).sqrt();
    if denom <= 0.0 || !denom.is_finite() {
        return None;
    }
    let t = (concordant as f64 - discordant as f64) / denom;
    Some(t.clamp(-1.0, 1.0))
}

/// Language Specificity Index of each expert in one layer:
/// LSI_e = (a_{ℓ,e} − a_{r,e}) / (a_{ℓ,e} + a_{r,e}), in [−1, 1].
///
/// `lang` and `reference` are mean router probabilities a_e (or usage shares p_e on the "usage"
/// basis). An expert with zero weight in both contributes 0 (neither language uses it).
/// `None` when the lengths differ, either vector has no mass or an invalid entry.
/// Antisymmetric: `lsi(a, b)[e] == -lsi(b, a)[e]`.
pub fn lsi(lang: &[f64], reference: &[f64]) -> Option<Vec<f64>> {
    if lang.len() != reference.len() {
        return None;
    }
    total_mass(lang)?;
    total_mass(reference)?;
    Some(
        lang.iter()
            .zip(reference)
            .map(|(&x, &y)| {
                let s = x + y;
                if s > 0.0 {
                    ((x - y) / s).clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect(),
    )
}

/// Counts of experts per LSI class at one threshold τ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LsiClasses {
    /// Experts with LSI > τ (specific to the language).
    pub lang_specific: usize,
    /// Experts with LSI < −τ (specific to the reference).
    pub reference_specific: usize,
    /// Experts with −τ ≤ LSI ≤ τ.
    pub shared: usize,
}

/// Classifies LSI values at threshold `tau`: > τ language-specific, < −τ reference-specific,
/// otherwise shared. NaN values (which [`lsi`] never produces) count as shared.
pub fn classify_lsi(values: &[f64], tau: f64) -> LsiClasses {
    let mut c = LsiClasses::default();
    for &v in values {
        if v > tau {
            c.lang_specific += 1;
        } else if v < -tau {
            c.reference_specific += 1;
        } else {
            c.shared += 1;
        }
    }
    c
}

/// Mean and sample standard deviation (divisor n − 1) of the finite values in `xs`.
///
/// `None` with fewer than two finite values.
pub fn sample_std(xs: &[f64]) -> Option<f64> {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    let s = var.max(0.0).sqrt();
    s.is_finite().then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn entropy_uniform_one_hot_two_expert() {
        // Uniform over 4: H = log2 4 = 2 bits; normalized 1.
        assert!(close(usage_entropy_bits(&[5.0; 4]).unwrap(), 2.0));
        assert!(close(normalized_entropy(&[5.0; 4]).unwrap(), 1.0));
        // Uniform over 128: 7 bits.
        assert!(close(usage_entropy_bits(&[3.0; 128]).unwrap(), 7.0));
        // One-hot: 0 bits.
        let h = usage_entropy_bits(&[0.0, 9.0, 0.0, 0.0]).unwrap();
        assert!(h == 0.0 && h.is_sign_positive()); // never prints as -0.000
                                                   // p = (0.75, 0.25): H = −0.75 log2 0.75 − 0.25 log2 0.25 = 0.311278 + 0.5 = 0.811278.
        assert!(close(usage_entropy_bits(&[3.0, 1.0]).unwrap(), 0.811_278));
        // Same over E = 4 with two unused: normalized 0.811278 / 2 = 0.405639.
        assert!(close(
            normalized_entropy(&[3.0, 1.0, 0.0, 0.0]).unwrap(),
            0.405_639
        ));
        // p = (0.5, 0.25, 0.25): 0.5 + 0.5 + 0.5 = 1.5 bits.
        assert!(close(usage_entropy_bits(&[2.0, 1.0, 1.0]).unwrap(), 1.5));
    }

    #[test]
    fn undefined_entropy_is_none() {
        assert_eq!(usage_entropy_bits(&[]), None);
        assert_eq!(usage_entropy_bits(&[0.0, 0.0]), None);
        assert_eq!(usage_entropy_bits(&[1.0, f64::NAN]), None);
        assert_eq!(usage_entropy_bits(&[1.0, -1.0, 3.0]), None);
        assert_eq!(usage_entropy_bits(&[1.0, f64::INFINITY]), None);
        assert_eq!(normalized_entropy(&[4.0]), None);
    }

    #[test]
    fn gini_values() {
        // Uniform: 0.
        assert!(close(gini(&[2.0; 8]).unwrap(), 0.0));
        // One-hot over 4: sorted (0,0,0,1): 2·4·1/(4·1) − 5/4 = 0.75 = 1 − 1/4.
        assert!(close(gini(&[0.0, 0.0, 7.0, 0.0]).unwrap(), 0.75));
        // Two experts (3, 1): sorted (1, 3): 2(1·1 + 2·3)/(2·4) − 3/2 = 14/8 − 1.5 = 0.25.
        assert!(close(gini(&[3.0, 1.0]).unwrap(), 0.25));
        // (1, 2, 3, 4): 2(1+4+9+16)/(4·10) − 5/4 = 60/40 − 1.25 = 0.25.
        assert!(close(gini(&[4.0, 1.0, 3.0, 2.0]).unwrap(), 0.25));
        assert_eq!(gini(&[0.0; 3]), None);
    }

    #[test]
    fn active_expert_counts() {
        assert_eq!(active_experts(&[1.0; 16], 0.1), Some(16));
        assert_eq!(active_experts(&[0.0, 0.0, 5.0, 0.0], 0.1), Some(1));
        // E = 4, N = 100, α/E = 0.025: shares 0.97, 0.02, 0.01, 0 → only the first is ≥ 0.025.
        assert_eq!(active_experts(&[97.0, 2.0, 1.0, 0.0], 0.1), Some(1));
        // Exactly at the threshold counts: share 0.025 = 0.1/4.
        assert_eq!(active_experts(&[97.5, 2.5, 0.0, 0.0], 0.1), Some(2));
        assert_eq!(active_experts(&[0.0, 0.0], 0.1), None);
    }

    #[test]
    fn cosine_values() {
        assert!(close(
            cosine_similarity(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap(),
            1.0
        ));
        assert!(close(
            cosine_similarity(&[1.0, 0.0], &[0.0, 5.0]).unwrap(),
            0.0
        ));
        // (3,1)·(1,1) / (√10 √2) = 4/√20 = 0.894427.
        assert!(close(
            cosine_similarity(&[3.0, 1.0], &[1.0, 1.0]).unwrap(),
            0.894_427
        ));
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 1.0]), None);
        assert_eq!(cosine_similarity(&[1.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn jsd_values() {
        assert!(close(
            js_divergence_bits(&[1.0, 1.0], &[3.0, 3.0]).unwrap(),
            0.0
        ));
        // Disjoint supports: 1 bit.
        assert!(close(
            js_divergence_bits(&[1.0, 0.0], &[0.0, 1.0]).unwrap(),
            1.0
        ));
        // p = (1, 0), q = (0.5, 0.5): m = (0.75, 0.25), H(m) = 0.811278,
        // JSD = H(m) − (H(p) + H(q))/2 = 0.811278 − 0.5 = 0.311278.
        assert!(close(
            js_divergence_bits(&[2.0, 0.0], &[1.0, 1.0]).unwrap(),
            0.311_278
        ));
        assert_eq!(js_divergence_bits(&[0.0, 0.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn topk_ties_and_overlap() {
        // Ties go to the lower index.
        assert_eq!(topk_indices(&[1.0, 3.0, 3.0, 2.0], 2), vec![1, 2]);
        assert_eq!(topk_indices(&[1.0, 1.0, 1.0, 1.0], 2), vec![0, 1]);
        // top-2 of a = {0, 1}, of b = {1, 3}: overlap 1/2.
        assert!(close(
            topk_overlap_ratio(&[5.0, 4.0, 1.0, 0.0], &[0.0, 4.0, 1.0, 5.0], 2).unwrap(),
            0.5
        ));
        // All tied in both: both pick {0, 1} → 1.
        assert!(close(
            topk_overlap_ratio(&[1.0; 4], &[2.0; 4], 2).unwrap(),
            1.0
        ));
        // K larger than E is clamped to E.
        assert!(close(
            topk_overlap_ratio(&[1.0, 2.0], &[2.0, 1.0], 8).unwrap(),
            1.0
        ));
        assert_eq!(topk_overlap_ratio(&[1.0, 2.0], &[2.0, 1.0], 0), None);
        assert_eq!(topk_overlap_ratio(&[0.0, 0.0], &[2.0, 1.0], 1), None);
    }

    #[test]
    fn ranks_with_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0]),
            vec![2.0, 3.5, 3.5, 1.0]
        );
    }

    #[test]
    fn spearman_values() {
        assert!(close(
            spearman_rho(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]).unwrap(),
            1.0
        ));
        assert!(close(
            spearman_rho(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(),
            -1.0
        ));
        // a ranks (1,2,3,4), b = (1,3,2,4) ranks (1,3,2,4): Σd² = 2, ρ = 1 − 6·2/(4·15) = 0.8.
        assert!(close(
            spearman_rho(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(),
            0.8
        ));
        // Ties: a ranks (1, 2.5, 2.5, 4), b ranks (1,2,3,4). Pearson of ranks:
        // mean 2.5; cov = (−1.5·−1.5 + 0·−0.5 + 0·0.5 + 1.5·1.5) = 4.5; var_a = 4.5, var_b = 5;
        // ρ = 4.5 / √(4.5·5) = 0.948683.
        assert!(close(
            spearman_rho(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
            0.948_683
        ));
        // A constant vector has no rank variance.
        assert_eq!(spearman_rho(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn kendall_values() {
        assert!(close(
            kendall_tau_b(&[1.0, 2.0, 3.0], &[1.0, 5.0, 9.0]).unwrap(),
            1.0
        ));
        assert!(close(
            kendall_tau_b(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(),
            -1.0
        ));
        // (1,2,3,4) vs (1,3,2,4): 6 pairs, one discordant (2,3): (5 − 1)/6 = 0.666667.
        assert!(close(
            kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(),
            0.666_667
        ));
        // Ties: a = (1,2,2,3), b = (1,2,3,4): n0 = 6, n1 = 1 (pair 1-2 tied in a), n2 = 0;
        // concordant 5, discordant 0: τ-b = 5 / √(5·6) = 0.912871.
        assert!(close(
            kendall_tau_b(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
            0.912_871
        ));
        assert_eq!(kendall_tau_b(&[2.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn lsi_values_and_classes() {
        // a = (0.6, 0.2, 0.2, 0), r = (0.2, 0.2, 0.3, 0.3):
        // LSI = (0.4/0.8, 0, −0.1/0.5, −1) = (0.5, 0, −0.2, −1).
        let v = lsi(&[0.6, 0.2, 0.2, 0.0], &[0.2, 0.2, 0.3, 0.3]).unwrap();
        let want = [0.5, 0.0, -0.2, -1.0];
        for (x, y) in v.iter().zip(want) {
            assert!(close(*x, y));
        }
        // τ = 0.2: 0.5 → lang; 0 → shared; −0.2 is not < −0.2 → shared; −1 → reference.
        let c = classify_lsi(&v, 0.2);
        assert_eq!((c.lang_specific, c.reference_specific, c.shared), (1, 1, 2));
        // τ = 0.1: −0.2 now reference-specific.
        let c = classify_lsi(&v, 0.1);
        assert_eq!((c.lang_specific, c.reference_specific, c.shared), (1, 2, 1));
        // Unused by both: contributes 0.
        assert_eq!(lsi(&[1.0, 0.0], &[1.0, 0.0]).unwrap(), vec![0.0, 0.0]);
        assert_eq!(lsi(&[0.0, 0.0], &[1.0, 0.0]), None);
    }

    #[test]
    fn std_values() {
        // (1, 2, 3, 4): mean 2.5, Σ(x−m)² = 5, sample var 5/3, std 1.290994.
        assert!(close(sample_std(&[1.0, 2.0, 3.0, 4.0]).unwrap(), 1.290_994));
        assert_eq!(sample_std(&[1.0]), None);
        assert_eq!(sample_std(&[1.0, f64::NAN]), None);
    }
}
