//! The live analysis against the offline one: the same figure under the same name, equal on
//! the same snapshot; and the per-bucket scores a live reader keeps give the offline spread.

use std::collections::BTreeMap;

use moescope_core::{BucketCounts, LanguageCounts, LayerCounts, ModelSpec, Snapshot, WindowRange};
use moescope_stats::*;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn language(rng: &mut Rng, layers: usize, experts: usize, skew: u64) -> LanguageCounts {
    let layer = |rng: &mut Rng| {
        let n: Vec<f64> = (0..experts)
            .map(|e| (rng.next() % 50 + if (e as u64) < skew { 200 } else { 0 }) as f64)
            .collect();
        let tokens = n.iter().sum::<f64>() / 2.0;
        // Router probabilities for every language but `ja` (whose LSI falls back to usage).
        let probs = skew != 2;
        let prob_sum = probs.then(|| n.iter().map(|x| (x + 1.0) / 10.0).collect());
        LayerCounts {
            tokens,
            expert_tokens: n,
            prob_sum,
            prob_tokens: if probs { tokens } else { 0.0 },
            selection_entropy_sum_bits: None,
            topk_weight_sum: None,
        }
    };
    let layers: Vec<LayerCounts> = (0..layers).map(|_| layer(rng)).collect();
    LanguageCounts {
        tokens: layers[0].tokens,
        chars: Some(layers[0].tokens * 3.0),
        words: None,
        layers,
        halves: None,
    }
}

fn snapshot() -> Snapshot {
    let spec = ModelSpec::new("toy", 16, 2, (0..6).collect()).unwrap();
    let mut rng = Rng(7);
    let mut snap = Snapshot::new(spec);
    for (i, tag) in ["en", "he", "ja", "sw"].iter().enumerate() {
        snap.languages
            .insert((*tag).to_string(), language(&mut rng, 6, 16, i as u64));
    }
    for b in 0..3u64 {
        let mut langs = BTreeMap::new();
        for (i, tag) in ["en", "he", "ja"].iter().enumerate() {
            langs.insert((*tag).to_string(), language(&mut rng, 6, 16, i as u64 + b));
        }
        snap.buckets.push(BucketCounts {
            window: WindowRange {
                start_unix_ms: b * 1000,
                end_unix_ms: (b + 1) * 1000,
            },
            languages: langs,
        });
    }
    snap
}

#[test]
fn live_figures_equal_the_offline_ones() {
    let snap = snapshot();
    let mut config = LiveConfig::new("en");
    config.layer_detail = LayerDetail {
        languages: LanguageSelection::Only(vec!["he".into()]),
        layers: LayerSelection::Deep,
    };
    config.pair_languages = 3;
    config.pair_layers = LayerSelection::All;
    // The scores a live reader keeps per bucket.
    let mut scores: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for b in &snap.buckets {
        for (lang, s) in bucket_collapse_scores(&b.languages, "en") {
            scores.entry(lang).or_default().push(s);
        }
    }
    let live = live_analysis(&snap, &config, &scores).unwrap();
    let mut offline_config = config.analysis_config();
    offline_config.all_pairs = true;
    let a = analyze(&snap, &offline_config).unwrap();

    assert_eq!(live.reference.as_deref(), Some("en"));
    // Usage entropy of every language and layer.
    let mut n = 0;
    for row in &a.layers {
        let h = live.usage_entropy_bits[&row.lang][row.depth];
        assert_eq!(h, row.metrics.usage_entropy_bits);
        n += 1;
    }
    assert_eq!(n, 4 * 6);
    assert_eq!(live.depth_means, a.depth_means);
    assert_eq!(live.tokenization, a.tokenization);
    // Detail: he, deep layers (L = 6: depths 4 and 5) only.
    assert_eq!(live.layers.len(), 2);
    for row in &live.layers {
        assert_eq!(Some(row), a.layer_row("he", row.depth));
    }
    assert_eq!(live.pairs.len(), 2);
    for row in &live.pairs {
        assert_eq!(Some(row), a.pair_row("he", "en", row.depth));
    }
    // LSI counts (the offline row also carries the per-expert values).
    assert_eq!(live.lsi.len(), 3);
    let basis = |lang: &str| live.lsi.iter().find(|r| r.lang == lang).unwrap().basis;
    assert_eq!(basis("he"), LsiBasis::Probability);
    assert_eq!(basis("ja"), LsiBasis::Usage);
    for row in &live.lsi {
        let off = a.lsi.iter().find(|r| r.lang == row.lang).unwrap();
        assert_eq!(row.basis, off.basis);
        assert_eq!(
            (row.lang_specific, row.reference_specific, row.shared),
            (off.lang_specific, off.reference_specific, off.shared)
        );
    }
    // Collapse, spread across buckets included: the kept scores give the offline spread.
    assert_eq!(live.collapse, a.collapse);
    assert!(a
        .collapse
        .iter()
        .filter(|c| c.lang != "sw")
        .all(|c| c.bucket_score_std_bits.is_some()));
    // Busiest-pair JSD: the three busiest languages' pairs, as in the all-pairs offline rows.
    assert_eq!(live.language_pairs.len(), 3 * 6);
    for p in &live.language_pairs {
        let off = a
            .pairs
            .iter()
            .find(|r| {
                r.depth == p.depth
                    && ((r.lang == p.lang_a && r.reference == p.lang_b)
                        || (r.lang == p.lang_b && r.reference == p.lang_a))
            })
            .unwrap();
        assert_eq!(Some(p.js_divergence_bits), off.metrics.js_divergence_bits);
    }
}

#[test]
fn without_the_reference_only_per_language_figures() {
    let mut snap = snapshot();
    snap.languages.remove("en");
    let live = live_analysis(&snap, &LiveConfig::new("en"), &BTreeMap::new()).unwrap();
    assert_eq!(live.reference, None);
    assert_eq!(live.usage_entropy_bits.len(), 3);
    assert!(live.collapse.is_empty() && live.lsi.is_empty() && live.pairs.is_empty());
    // Default detail: none.
    assert!(live.layers.is_empty());
}

#[test]
fn settings_are_checked_and_named() {
    let snap = snapshot();
    let mut config = LiveConfig::new("en");
    config.lsi_threshold = 1.0;
    let err = live_analysis(&snap, &config, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(
            err,
            AnalysisError::InvalidConfig {
                field: "lsi_threshold",
                ..
            }
        ),
        "{err}"
    );
    let mut config = LiveConfig::new("en");
    config.collapse.min_deep_tokens = -1.0;
    let err = config.validate().unwrap_err();
    assert!(
        err.to_string().contains("collapse.min_deep_tokens"),
        "{err}"
    );
}

#[test]
fn layer_selections() {
    assert_eq!(LayerSelection::All.depths(3), vec![0, 1, 2]);
    assert_eq!(
        LayerSelection::Deep.depths(48),
        (42..48).collect::<Vec<_>>()
    );
    let md = LayerSelection::MiddleAndDeep.depths(8);
    assert_eq!(md, vec![2, 3, 4, 5, 6, 7]);
    assert_eq!(
        LayerSelection::Depths(vec![5, 1, 1, 99]).depths(8),
        vec![1, 5]
    );
    assert!(LanguageSelection::All.contains("he"));
    assert!(!LanguageSelection::None.contains("he"));
    assert!(LanguageSelection::Only(vec!["he".into()]).contains("he"));
}
