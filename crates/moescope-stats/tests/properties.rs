//! Property tests of the metric invariants (proptest).

use moescope_stats::*;
use proptest::prelude::*;

/// Usage-like vectors: non-negative, often with unused experts, 1..=64 experts.
fn counts() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(prop_oneof![Just(0.0), 0.0f64..1e6, 1e-9f64..1e-3], 1..=64)
}

/// Two vectors of the same length.
fn pair() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1usize..=64).prop_flat_map(|e| {
        let v = || prop::collection::vec(prop_oneof![Just(0.0), 0.0f64..1e6], e);
        (v(), v())
    })
}

/// Anything at all, NaN and infinities included.
fn wild() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(any::<f64>(), 0..=16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn entropy_within_bounds(v in counts()) {
        let max = (v.len() as f64).log2();
        if let Some(h) = usage_entropy_bits(&v) {
            prop_assert!(h >= 0.0 && h <= max, "H = {h}, max = {max}");
        } else {
            prop_assert!(v.iter().all(|x| *x == 0.0));
        }
        if let Some(n) = normalized_entropy(&v) {
            prop_assert!((0.0..=1.0).contains(&n));
        }
    }

    #[test]
    fn gini_within_bounds(v in counts()) {
        let e = v.len() as f64;
        if let Some(g) = gini(&v) {
            prop_assert!(g >= 0.0 && g <= 1.0 - 1.0 / e, "G = {g}, E = {e}");
        }
    }

    #[test]
    fn jsd_symmetric_and_bounded((a, b) in pair()) {
        let ab = js_divergence_bits(&a, &b);
        let ba = js_divergence_bits(&b, &a);
        prop_assert_eq!(ab, ba);
        if let Some(d) = ab {
            prop_assert!((0.0..=1.0).contains(&d));
        }
        if let Some(d) = js_divergence_bits(&a, &a) {
            prop_assert!(d.abs() < 1e-9);
        }
    }

    #[test]
    fn cosine_with_itself_is_one(v in counts()) {
        match cosine_similarity(&v, &v) {
            Some(c) => prop_assert!((c - 1.0).abs() < 1e-12, "cos = {c}"),
            None => prop_assert!(v.iter().all(|x| *x == 0.0)),
        }
    }

    #[test]
    fn cosine_symmetric_and_bounded((a, b) in pair()) {
        prop_assert_eq!(cosine_similarity(&a, &b), cosine_similarity(&b, &a));
        if let Some(c) = cosine_similarity(&a, &b) {
            prop_assert!((0.0..=1.0).contains(&c));
        }
    }

    #[test]
    fn lsi_antisymmetric_and_bounded((a, b) in pair()) {
        match (lsi(&a, &b), lsi(&b, &a)) {
            (Some(x), Some(y)) => {
                for (p, q) in x.iter().zip(&y) {
                    prop_assert_eq!(*p, -*q);
                    prop_assert!((-1.0..=1.0).contains(p));
                }
                // The classes swap too.
                for tau in LSI_SWEEP {
                    let cx = classify_lsi(&x, tau);
                    let cy = classify_lsi(&y, tau);
                    prop_assert_eq!(cx.lang_specific, cy.reference_specific);
                    prop_assert_eq!(cx.shared, cy.shared);
                }
            }
            (None, None) => {}
            other => prop_assert!(false, "asymmetric definedness: {:?}", other),
        }
    }

    #[test]
    fn rank_correlations_bounded_and_symmetric((a, b) in pair()) {
        for f in [spearman_rho, kendall_tau_b] {
            let x = f(&a, &b);
            prop_assert_eq!(x, f(&b, &a));
            if let Some(r) = x {
                prop_assert!((-1.0..=1.0).contains(&r));
            }
        }
        if let Some(r) = spearman_rho(&a, &a) {
            prop_assert!((r - 1.0).abs() < 1e-9);
        }
        if let Some(t) = kendall_tau_b(&a, &a) {
            prop_assert!((t - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn topk_overlap_bounded((a, b) in pair(), k in 0usize..80) {
        if let Some(o) = topk_overlap_ratio(&a, &b, k) {
            prop_assert!((0.0..=1.0).contains(&o));
            prop_assert_eq!(Some(o), topk_overlap_ratio(&b, &a, k));
        }
        if let Some(o) = topk_overlap_ratio(&a, &a, k) {
            prop_assert_eq!(o, 1.0);
        }
    }

    #[test]
    fn no_panic_and_no_nan_on_wild_input(a in wild(), b in wild(), k in 0usize..20, alpha in any::<f64>()) {
        let finite = |x: Option<f64>| x.is_none_or(f64::is_finite);
        prop_assert!(finite(usage_entropy_bits(&a)));
        prop_assert!(finite(normalized_entropy(&a)));
        prop_assert!(finite(gini(&a)));
        let _ = active_experts(&a, alpha);
        prop_assert!(finite(cosine_similarity(&a, &b)));
        prop_assert!(finite(js_divergence_bits(&a, &b)));
        prop_assert!(finite(topk_overlap_ratio(&a, &b, k)));
        prop_assert!(finite(spearman_rho(&a, &b)));
        prop_assert!(finite(kendall_tau_b(&a, &b)));
        prop_assert!(finite(sample_std(&a)));
        if let Some(v) = lsi(&a, &b) {
            prop_assert!(v.iter().all(|x| x.is_finite()));
        }
        let _ = topk_indices(&a, k);
        let _ = average_ranks(&a);
    }

    #[test]
    fn collapse_score_never_panics(h in prop::collection::vec(prop::option::of(0.0f64..7.0), 0..50),
                                   r in prop::collection::vec(prop::option::of(0.0f64..7.0), 0..50)) {
        if let Some(s) = collapse_score(&h, Some(&r)) {
            prop_assert!(s.score_bits.is_finite());
        }
        let _ = collapse_score(&h, None);
        let l = h.len();
        prop_assert!(deep_layers(l).end <= l);
        prop_assert!(middle_layers(l).end <= l);
    }
}
