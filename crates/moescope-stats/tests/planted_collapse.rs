//! A snapshot with a planted deep-layer collapse for Hebrew: Hebrew is flagged, its split-half
//! control and the healthy Japanese are not, and the live detector raises after `raise_after`
//! evaluations.

use moescope_core::Snapshot;
use moescope_stats::*;
use serde_json::{json, Value};

const E: usize = 16;
const K: f64 = 2.0;
const L: usize = 16; // deep set: d = max(2, floor(16/8 + 1/2)) = 2 → depths 14, 15; M = 4..12
const TOKENS: f64 = 4000.0;

/// Deterministic noise in [-1, 1) (a small LCG), so the test needs no RNG crate.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// Routing shape of a healthy language: mild skew over all experts.
fn healthy(l: usize, phase: f64) -> Vec<f64> {
    (0..E)
        .map(|e| 1.0 + 0.4 * ((e as f64) * 0.7 + l as f64 * 0.3 + phase).sin())
        .collect()
}

/// Collapsed deep layers: most tokens on two experts.
fn collapsed() -> Vec<f64> {
    let mut w = vec![0.02; E];
    w[3] = 0.6;
    w[11] = 0.3;
    w
}

/// Expert counts for `tokens` tokens from shape `w`, with ±2 % noise.
fn counts(w: &[f64], tokens: f64, noise: &mut Noise) -> Vec<f64> {
    let s: f64 = w.iter().sum();
    w.iter()
        .map(|x| (tokens * K * x / s * (1.0 + 0.02 * noise.next())).round())
        .collect()
}

fn layer(c: &[f64], tokens: f64) -> Value {
    json!({ "tokens": tokens, "expert_tokens": c, "prob_sum": null, "prob_tokens": 0 })
}

/// One language: `shape(l)` per layer, halves split about evenly, and per-bucket layers.
fn language(
    shape: &dyn Fn(usize) -> Vec<f64>,
    noise: &mut Noise,
    buckets: usize,
) -> (Value, Vec<Value>) {
    let mut layers = Vec::new();
    let mut half_a = Vec::new();
    let mut half_b = Vec::new();
    let mut per_bucket: Vec<Vec<Value>> = vec![Vec::new(); buckets];
    for l in 0..L {
        let w = shape(l);
        let c = counts(&w, TOKENS, noise);
        let a: Vec<f64> = c
            .iter()
            .map(|x| (x * 0.5 * (1.0 + 0.05 * noise.next())).round())
            .collect();
        let b: Vec<f64> = c.iter().zip(&a).map(|(x, y)| x - y).collect();
        layers.push(layer(&c, TOKENS));
        half_a.push(layer(&a, TOKENS / 2.0));
        half_b.push(layer(&b, TOKENS / 2.0));
        for pb in per_bucket.iter_mut() {
            let t = TOKENS / buckets as f64;
            pb.push(layer(&counts(&w, t, noise), t));
        }
    }
    let lang = json!({
        "tokens": TOKENS, "chars": TOKENS * 3.0, "words": TOKENS / 2.0,
        "layers": layers,
        "halves": [ { "layers": half_a }, { "layers": half_b } ],
    });
    let bucket_langs = per_bucket
        .into_iter()
        .map(|ls| json!({ "tokens": TOKENS / buckets as f64, "layers": ls }))
        .collect();
    (lang, bucket_langs)
}

fn planted_snapshot(buckets: usize) -> Snapshot {
    let mut noise = Noise(7);
    let (en, en_b) = language(&|l| healthy(l, 0.0), &mut noise, buckets);
    let (ja, ja_b) = language(&|l| healthy(l, 1.3), &mut noise, buckets);
    let (he, he_b) = language(
        &|l| {
            if l >= 14 {
                collapsed()
            } else {
                healthy(l, 2.1)
            }
        },
        &mut noise,
        buckets,
    );
    let buckets: Vec<Value> = (0..buckets)
        .map(|i| {
            json!({
                "window": { "start_unix_ms": 1000 * i as u64, "end_unix_ms": 1000 * (i as u64 + 1) },
                "languages": { "en": en_b[i], "ja": ja_b[i], "he": he_b[i] },
            })
        })
        .collect();
    let doc = json!({
        "format": "moescope.snapshot/v1",
        "model": { "name": "planted", "num_experts": E, "top_k": 2,
                   "layers": (0..L as u32).map(|l| 2 * l + 1).collect::<Vec<_>>() },
        "window": { "start_unix_ms": 0, "end_unix_ms": 1000 * buckets.len() as u64 },
        "languages": { "en": en, "ja": ja, "he": he },
        "buckets": buckets,
    });
    Snapshot::from_json_str(&doc.to_string()).expect("planted snapshot parses")
}

#[test]
fn planted_collapse_is_flagged_controls_are_not() {
    for buckets in [0, 4] {
        let snap = planted_snapshot(buckets);
        let a = analyze(&snap, &AnalysisConfig::new("en")).unwrap();
        assert_eq!(a.deep_layers, vec![29, 31]); // model layer numbers 2l+1 of depths 14, 15
        let he = a.collapse_for("he").unwrap();
        let ja = a.collapse_for("ja").unwrap();
        // Hebrew: middle H ≈ 3.94 bits, deep H ≈ 2.39 bits (p ≈ 0.51, 0.25, 14 × 0.017) → C ≈ 1.5 bits.
        let c = he.score_bits.unwrap();
        assert!(c > 1.2, "he score {c}");
        assert!(he.collapsed, "{he:?}");
        assert!(he.enough_tokens);
        assert!(!ja.collapsed, "{ja:?}");
        assert!(ja.score_bits.unwrap().abs() < 0.3, "{ja:?}");
        if buckets > 0 {
            let sd = he.bucket_score_std_bits.unwrap();
            assert!(sd < 0.2, "bucket std {sd}");
            assert_eq!(he.above_bucket_std, Some(true));
            assert!(!a.spread.is_empty());
        } else {
            assert_eq!(he.bucket_score_std_bits, None);
            assert!(a.spread.is_empty());
        }
        // Split-half controls: every language's halves agree, Hebrew's included.
        for row in &a.split_half_collapse {
            assert!(!row.collapsed, "{row:?}");
            assert!(row.score_bits.unwrap().abs() < 0.1, "{row:?}");
        }
        assert_eq!(a.split_half_collapse.len(), 3);
        // The entropy gap widens only at depth for Hebrew.
        let gap_deep = a
            .pair_row("he", "en", 15)
            .unwrap()
            .metrics
            .entropy_gap_bits
            .unwrap();
        let gap_mid = a
            .pair_row("he", "en", 8)
            .unwrap()
            .metrics
            .entropy_gap_bits
            .unwrap();
        assert!(
            gap_deep > 1.2 && gap_mid.abs() < 0.2,
            "{gap_deep} {gap_mid}"
        );
        // Cosine to English drops in the deep layers.
        let cos_deep = a
            .pair_row("he", "en", 15)
            .unwrap()
            .metrics
            .cosine_similarity
            .unwrap();
        assert!(cos_deep < 0.75, "{cos_deep}");
    }
}

#[test]
fn too_few_deep_tokens_withholds_the_verdict() {
    let snap = planted_snapshot(0);
    let mut cfg = AnalysisConfig::new("en");
    cfg.collapse.min_deep_tokens = TOKENS + 1.0;
    let a = analyze(&snap, &cfg).unwrap();
    let he = a.collapse_for("he").unwrap();
    assert!(he.score_bits.unwrap() > 1.2);
    assert!(!he.enough_tokens);
    assert!(!he.collapsed);
}

#[test]
fn detector_raises_after_consecutive_evaluations() {
    let snap = planted_snapshot(4);
    let cfg = CollapseConfig::default();
    let mut he = CollapseDetector::new(cfg);
    let mut ja = CollapseDetector::new(cfg);
    let ev_he = collapse_evidence(&snap, "he", Some("en"));
    let ev_ja = collapse_evidence(&snap, "ja", Some("en"));
    let flags: Vec<bool> = (0..3).map(|_| he.observe(&ev_he)).collect();
    assert_eq!(flags, vec![false, false, true]);
    for _ in 0..5 {
        assert!(!ja.observe(&ev_ja));
    }
    // Without a reference the score is Hebrew's own drop.
    let alone = collapse_evidence(&snap, "he", None);
    let s = alone.score.unwrap();
    assert_eq!(s.reference_drop_bits, None);
    assert!(s.score_bits > 1.2);
}
