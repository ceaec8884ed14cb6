//! Snapshot-level metrics against hand-computed values, through the public API.

use moescope_core::Snapshot;
use moescope_stats::*;
use serde_json::{json, Value};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Parses a test snapshot; layers written without `prob_tokens` get an explicit 0, so the tests
/// do not depend on that field having a serde default.
fn parse(mut v: Value) -> Snapshot {
    fn fill(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("expert_tokens") && !m.contains_key("prob_tokens") {
                    m.insert("prob_tokens".into(), json!(0));
                }
                m.values_mut().for_each(fill);
            }
            Value::Array(a) => a.iter_mut().for_each(fill),
            _ => {}
        }
    }
    fill(&mut v);
    Snapshot::from_json_str(&v.to_string()).expect("test snapshot parses")
}

/// A snapshot deserialized without the reader's validation (as code could build one), so
/// that the statistics' own checks are exercised.
fn unchecked(v: Value) -> Snapshot {
    serde_json::from_value(v).expect("test snapshot deserializes")
}

/// E = 3, K = 1, two MoE layers (model layers 10 and 20), probabilities recorded.
fn lsi_snapshot(en_probs_everywhere: bool) -> Snapshot {
    let en_l1_prob = if en_probs_everywhere {
        json!([0.8, 2.4, 0.8])
    } else {
        Value::Null
    };
    parse(json!({
        "format": "moescope.snapshot/v1",
        "model": { "name": "toy", "num_experts": 3, "top_k": 1, "layers": [10, 20] },
        "languages": {
            "he": { "tokens": 4, "chars": 16, "words": 2, "layers": [
                { "tokens": 4, "expert_tokens": [2, 2, 0], "prob_sum": [2, 2, 0], "prob_tokens": 4,
                  "selection_entropy_sum_bits": 2.0 },
                { "tokens": 4, "expert_tokens": [1, 1, 2], "prob_sum": [0.8, 0.8, 2.4], "prob_tokens": 4 } ] },
            "en": { "tokens": 4, "chars": 0, "layers": [
                { "tokens": 4, "expert_tokens": [1, 3, 0], "prob_sum": [1, 3, 0], "prob_tokens": 4 },
                { "tokens": 4, "expert_tokens": [1, 2, 1], "prob_sum": en_l1_prob, "prob_tokens": 4 } ] }
        }
    }))
}

#[test]
fn mean_probability_and_selection_entropy() {
    let s = lsi_snapshot(true);
    let he0 = &s.languages["he"].layers[0];
    assert_eq!(mean_router_probability(he0), Some(vec![0.5, 0.5, 0.0]));
    // 2.0 bits summed over 4 tokens → 0.5 bits per token.
    assert_eq!(selection_entropy_bits(he0), Some(0.5));
    assert_eq!(selection_entropy_bits(&s.languages["he"].layers[1]), None);
}

#[test]
fn lsi_layer_averaged_by_hand() {
    let s = lsi_snapshot(true);
    let (he, en) = (&s.languages["he"], &s.languages["en"]);
    assert_eq!(lsi_basis(he, en), LsiBasis::Probability);
    // Layer 0: a_he = (0.5, 0.5, 0), a_en = (0.25, 0.75, 0):
    //   LSI = (0.25/0.75, −0.25/1.25, 0 [unused by both]) = (1/3, −0.2, 0).
    // Layer 1: a_he = (0.2, 0.2, 0.6), a_en = (0.2, 0.6, 0.2): LSI = (0, −0.5, 0.5).
    // Average: (1/6, −0.35, 0.25).
    let avg = lsi_layer_averaged(he, en, LsiBasis::Probability).unwrap();
    for (x, y) in avg.iter().zip([1.0 / 6.0, -0.35, 0.25]) {
        assert!(close(*x, y), "{avg:?}");
    }
    let a = analyze(&s, &AnalysisConfig::new("en")).unwrap();
    let row = &a.lsi[0];
    assert_eq!((row.lang.as_str(), row.reference.as_str()), ("he", "en"));
    assert_eq!(row.basis, LsiBasis::Probability);
    // τ = 0.2: 0.25 → he; −0.35 → en; 1/6 → shared.
    assert_eq!(
        (row.lang_specific, row.reference_specific, row.shared),
        (Some(1), Some(1), Some(1))
    );
    let sweep: Vec<_> = a
        .lsi_sweep
        .iter()
        .map(|r| {
            (
                r.threshold,
                r.lang_specific.unwrap(),
                r.reference_specific.unwrap(),
                r.shared.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sweep,
        vec![
            (0.1, 2, 1, 0),
            (0.2, 1, 1, 1),
            (0.3, 0, 1, 2),
            (0.4, 0, 0, 3),
            (0.5, 0, 0, 3)
        ]
    );
    // Per-layer view at τ = 0.2: layer 10: (1/3 → he, −0.2 → shared, 0 → shared);
    // layer 20: (0 shared, −0.5 en, 0.5 he).
    let per: Vec<_> = a
        .lsi_layers
        .iter()
        .map(|r| {
            (
                r.layer,
                r.lang_specific.unwrap(),
                r.reference_specific.unwrap(),
                r.shared.unwrap(),
            )
        })
        .collect();
    assert_eq!(per, vec![(10, 1, 0, 2), (20, 1, 1, 1)]);
}

#[test]
fn lsi_falls_back_to_usage() {
    let s = lsi_snapshot(false);
    let (he, en) = (&s.languages["he"], &s.languages["en"]);
    assert_eq!(lsi_basis(he, en), LsiBasis::Usage);
    // Usage shares: layer 0 as before; layer 1: p_he = (0.25, 0.25, 0.5), p_en = (0.25, 0.5, 0.25):
    //   LSI = (0, −1/3, 1/3). Average: (1/6, −(0.2 + 1/3)/2 = −0.266667, 1/6).
    let avg = lsi_layer_averaged(he, en, LsiBasis::Usage).unwrap();
    for (x, y) in avg.iter().zip([1.0 / 6.0, -0.266_666_667, 1.0 / 6.0]) {
        assert!(close(*x, y), "{avg:?}");
    }
    let a = analyze(&s, &AnalysisConfig::new("en")).unwrap();
    let j = serde_json::to_value(&a).unwrap();
    assert_eq!(j["lsi"][0]["basis"], "usage");
}

#[test]
fn per_layer_rows_and_pairs_by_hand() {
    let s = lsi_snapshot(true);
    let a = analyze(&s, &AnalysisConfig::new("en")).unwrap();
    let he0 = a.layer_row("he", 0).unwrap();
    assert_eq!(he0.layer, 10);
    // he layer 10: p = (0.5, 0.5, 0): H = 1 bit, normalized 1/log2 3 = 0.630930,
    // Gini: sorted (0, 2, 2): 2(0 + 4 + 6)/(3·4) − 4/3 = 20/12 − 16/12 = 1/3; active 2.
    let m = he0.metrics;
    assert!(close(m.usage_entropy_bits.unwrap(), 1.0));
    assert!(close(m.normalized_entropy.unwrap(), 0.630_930));
    assert!(close(m.gini.unwrap(), 1.0 / 3.0));
    assert_eq!(m.active_experts, Some(2));
    assert_eq!(m.selection_entropy_bits, Some(0.5));
    // Pair at layer 10: en p = (0.25, 0.75, 0): H_en = 0.811278, gap = 0.811278 − 1 = −0.188722.
    // cosine_similarity((2,2,0),(1,3,0)) = 8/(√8·√10) = 0.894427.
    // JSD: m = (0.375, 0.625, 0): H(m) = 0.954434; JSD = 0.954434 − (1 + 0.811278)/2 = 0.048795.
    // top-1: he → expert 0 (tie to lower index), en → expert 1: overlap 0.
    // Spearman: ranks he (2.5, 2.5, 1), en (2, 3, 1): ρ = 0.866025.
    // Kendall: pairs (0,1): tied in he; (0,2), (1,2): concordant: 2/√(2·3) = 0.816497.
    let p = a.pair_row("he", "en", 0).unwrap().metrics;
    assert!(close(p.entropy_gap_bits.unwrap(), -0.188_722));
    assert!(close(p.cosine_similarity.unwrap(), 0.894_427));
    assert!(close(p.js_divergence_bits.unwrap(), 0.048_795));
    assert_eq!(p.topk_overlap_ratio, Some(0.0));
    assert!(close(p.spearman_rho.unwrap(), 0.866_025));
    assert!(close(p.kendall_tau_b.unwrap(), 0.816_497));
}

#[test]
fn tokenization_ratios() {
    let s = lsi_snapshot(true);
    let he = tokenization("he", &s.languages["he"]);
    // 4 tokens over 16 chars and 2 words.
    assert_eq!(he.tokens_per_char, Some(0.25));
    assert_eq!(he.tokens_per_word, Some(2.0));
    let en = tokenization("en", &s.languages["en"]);
    assert_eq!(en.tokens_per_char, None); // zero chars
    assert_eq!(en.tokens_per_word, None); // not recorded
}

#[test]
fn empty_language_gives_nulls_not_nan() {
    let s = parse(json!({
        "format": "moescope.snapshot/v1",
        "model": { "name": "toy", "num_experts": 2, "top_k": 1, "layers": [0, 1] },
        "languages": {
            "en": { "tokens": 2, "layers": [
                { "tokens": 2, "expert_tokens": [1, 1] }, { "tokens": 2, "expert_tokens": [1, 1] } ] },
            "xx": { "tokens": 0, "chars": 0, "words": 0, "layers": [
                { "tokens": 0, "expert_tokens": [0, 0], "prob_sum": [0, 0], "prob_tokens": 0 },
                { "tokens": 0, "expert_tokens": [0, 0] } ],
                "halves": [ { "layers": [ { "tokens": 0, "expert_tokens": [0, 0] }, { "tokens": 0, "expert_tokens": [0, 0] } ] },
                            { "layers": [ { "tokens": 0, "expert_tokens": [0, 0] }, { "tokens": 0, "expert_tokens": [0, 0] } ] } ] }
        }
    }));
    let mut cfg = AnalysisConfig::new("en");
    cfg.all_pairs = true;
    let a = analyze(&s, &cfg).unwrap();
    let text = serde_json::to_string(&a).unwrap();
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    let j: Value = serde_json::from_str(&text).unwrap();
    let row = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["lang"] == "xx")
        .unwrap();
    assert!(row["usage_entropy_bits"].is_null());
    assert!(row["gini"].is_null());
    assert!(row["active_experts"].is_null());
    let c = &j["collapse"][0];
    assert!(c["score_bits"].is_null());
    assert_eq!(c["collapsed"], false);
    assert!(j["lsi"][0]["lang_specific"].is_null());
    assert!(j["pairs"][0]["cosine_similarity"].is_null());
}

#[test]
fn invalid_snapshots_name_the_field() {
    let mut v = json!({
        "format": "moescope.snapshot/v1",
        "model": { "name": "toy", "num_experts": 2, "top_k": 1, "layers": [0, 1] },
        "languages": {
            "en": { "tokens": 2, "layers": [
                { "tokens": 2, "expert_tokens": [1, 1] }, { "tokens": 2, "expert_tokens": [1, 1, 3] } ] }
        }
    });
    let err = analyze(&unchecked(v.clone()), &AnalysisConfig::new("en")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid snapshot: languages.en.layers[1].expert_tokens: expected 2 numbers (model.num_experts), found 3"
    );
    v["languages"]["en"]["layers"][1]["expert_tokens"] = json!([1, -1]);
    let err = analyze(&unchecked(v.clone()), &AnalysisConfig::new("en")).unwrap_err();
    assert!(
        err.to_string()
            .contains("languages.en.layers[1].expert_tokens[1]: "),
        "{err}"
    );
    v["languages"]["en"]["layers"] = json!([{ "tokens": 2, "expert_tokens": [1, 1] }]);
    let err = analyze(&unchecked(v.clone()), &AnalysisConfig::new("en")).unwrap_err();
    assert!(err.to_string().contains("languages.en.layers: "), "{err}");
    v["languages"]["en"]["layers"] =
        json!([{ "tokens": 2, "expert_tokens": [1, 1] }, { "tokens": 2, "expert_tokens": [1, 1] }]);
    let err = analyze(&unchecked(v.clone()), &AnalysisConfig::new("he")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "reference language \"he\" is not in the snapshot (languages: en)"
    );
    v["model"]["top_k"] = json!(3);
    let err = analyze(&unchecked(v), &AnalysisConfig::new("en")).unwrap_err();
    assert!(err.to_string().contains("model.top_k"), "{err}");
    let mut cfg = AnalysisConfig::new("en");
    cfg.lsi_threshold = 1.5;
    let s = lsi_snapshot(true);
    assert!(matches!(
        analyze(&s, &cfg),
        Err(AnalysisError::InvalidConfig {
            field: "lsi_threshold",
            ..
        })
    ));
}

#[test]
fn spread_across_buckets() {
    // Two buckets: he layer 0 uniform (H = 2) then on two experts (H = 1): sample std of (2, 1)
    // = √0.5 = 0.707107. en identical in both buckets: std 0.
    let layer = |c: Value| json!({ "expert_tokens": c });
    let lang = |a: Value, b: Value| json!({ "tokens": 4, "layers": [layer(a), layer(b)] });
    let s = parse(json!({
        "format": "moescope.snapshot/v1",
        "model": { "name": "toy", "num_experts": 4, "top_k": 1, "layers": [0, 1] },
        "languages": { "en": lang(json!([2, 2, 2, 2]), json!([2, 2, 2, 2])),
                       "he": lang(json!([3, 3, 1, 1]), json!([2, 2, 2, 2])) },
        "buckets": [
            { "window": { "start_unix_ms": 0, "end_unix_ms": 1 },
              "languages": { "en": lang(json!([1, 1, 1, 1]), json!([1, 1, 1, 1])),
                             "he": lang(json!([1, 1, 1, 1]), json!([1, 1, 1, 1])) } },
            { "window": { "start_unix_ms": 1, "end_unix_ms": 2 },
              "languages": { "en": lang(json!([1, 1, 1, 1]), json!([1, 1, 1, 1])),
                             "he": lang(json!([2, 2, 0, 0]), json!([1, 1, 1, 1])) } } ]
    }));
    // Missing layer tokens are filled with Σ expert_tokens / top_k.
    assert_eq!(s.languages["he"].layers[0].tokens, 8.0);
    let a = analyze(&s, &AnalysisConfig::new("en")).unwrap();
    let he0 = a
        .spread
        .iter()
        .find(|r| r.lang == "he" && r.depth == 0)
        .unwrap();
    assert_eq!(he0.buckets, 2);
    assert!(close(
        he0.usage_entropy_bits.unwrap(),
        std::f64::consts::FRAC_1_SQRT_2
    ));
    // The gap to English moves by the same amount.
    assert!(close(
        he0.entropy_gap_bits.unwrap(),
        std::f64::consts::FRAC_1_SQRT_2
    ));
    let en0 = a
        .spread
        .iter()
        .find(|r| r.lang == "en" && r.depth == 0)
        .unwrap();
    assert_eq!(en0.usage_entropy_bits, Some(0.0));
    assert_eq!(en0.cosine_similarity, None); // no pair metrics for the reference itself
}

/// E = 4, K = 1, L = 8 (M = depths 2..6, D = depths 6, 7); `he_deep` is Hebrew's deep layers.
fn diff_snapshot(name: &str, he_deep: Value) -> Snapshot {
    let uniform = json!({ "tokens": 1000, "expert_tokens": [250, 250, 250, 250] });
    let deep = json!({ "tokens": 1000, "expert_tokens": he_deep });
    let mut he_layers = vec![uniform.clone(); 6];
    he_layers.push(deep.clone());
    he_layers.push(deep);
    parse(json!({
        "format": "moescope.snapshot/v1",
        "model": { "name": name, "num_experts": 4, "top_k": 1, "layers": [0, 1, 2, 3, 4, 5, 6, 7] },
        "languages": {
            "en": { "tokens": 1000, "layers": vec![uniform; 8] },
            "he": { "tokens": 1000, "layers": he_layers }
        }
    }))
}

#[test]
fn diff_repaired_and_introduced() {
    let cfg = AnalysisConfig::new("en");
    // Collapsed: deep H = 0 vs middle 2 → C = 2 bits. Repaired: uniform, C = 0.
    let base = analyze(&diff_snapshot("base", json!([1000, 0, 0, 0])), &cfg).unwrap();
    let cpt = analyze(&diff_snapshot("cpt", json!([250, 250, 250, 250])), &cfg).unwrap();
    assert_eq!(base.collapse_for("he").unwrap().score_bits, Some(2.0));
    assert!(base.collapse_for("he").unwrap().collapsed);

    let d = diff(&base, &cpt, &DiffConfig::default()).unwrap();
    assert!(!d.regression);
    let c = &d.collapse[0];
    assert_eq!(c.status, CollapseStatus::Repaired);
    assert_eq!(c.score_bits.delta, Some(-2.0));
    let deep = d
        .layers
        .iter()
        .find(|r| r.lang == "he" && r.depth == 7)
        .unwrap();
    assert_eq!(deep.usage_entropy_bits.delta, Some(2.0));
    // Gini one-hot over 4 = 0.75 → 0.
    assert!(close(deep.gini.delta.unwrap(), -0.75));
    // Cosine (1,0,0,0)·uniform = 0.5 → 1.
    assert!(close(deep.cosine_similarity.delta.unwrap(), 0.5));

    let d = diff(&cpt, &base, &DiffConfig::default()).unwrap();
    assert!(d.regression);
    assert_eq!(d.collapse[0].status, CollapseStatus::Introduced);
    assert!(
        d.reasons[0].starts_with("he: deep-layer collapse introduced"),
        "{:?}",
        d.reasons
    );

    // Persisting collapse is a regression only when strict.
    let sft = analyze(&diff_snapshot("sft", json!([900, 100, 0, 0])), &cfg).unwrap();
    let d = diff(&base, &sft, &DiffConfig::default()).unwrap();
    assert_eq!(d.collapse[0].status, CollapseStatus::Persisting);
    assert!(!d.regression);
    let strict = DiffConfig {
        strict: true,
        ..DiffConfig::default()
    };
    assert!(diff(&base, &sft, &strict).unwrap().regression);
    // Worse by more than the tolerance: sft (C = 2 − 0.468996 = 1.531004) → base (C = 2).
    let d = diff(&sft, &base, &DiffConfig::default()).unwrap();
    assert_eq!(d.collapse[0].status, CollapseStatus::Worsened);
    assert!(d.regression);
}

#[test]
fn diff_rejects_different_shapes() {
    let cfg = AnalysisConfig::new("en");
    let base = analyze(&diff_snapshot("base", json!([1000, 0, 0, 0])), &cfg).unwrap();
    let mut other = base.clone();
    other.model.num_experts = 8;
    let err = diff(&base, &other, &DiffConfig::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("model.num_experts is 4 in the base and 8"),
        "{err}"
    );
}
