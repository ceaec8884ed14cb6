//! The simulator through its public API, measured with moescope's own recorder and statistics.

use moescope_core::{DropReason, ManualClock, ModelSpec, Recorder, Snapshot, WindowConfig};
use moescope_sim::{Collapse, LanguageProfile, SimError, Simulator};
use moescope_stats::{
    analyze, deep_layers, mean_router_probability, middle_layers, usage_entropy_bits,
    AnalysisConfig,
};

fn qwen() -> ModelSpec {
    ModelSpec::preset("qwen3-30b-a3b").unwrap()
}

fn entropy(snapshot: &Snapshot, tag: &str, depth: usize) -> f64 {
    usage_entropy_bits(&snapshot.languages[tag].layers[depth].expert_tokens).unwrap()
}

fn assert_no_drops(recorder: &Recorder) {
    for &reason in DropReason::ALL {
        assert_eq!(recorder.dropped(reason), 0, "dropped for {reason:?}");
    }
}

/// Records `steps` steps of `tokens` tokens into a fresh default recorder.
fn record(sim: &mut Simulator, steps: usize, tokens: usize) -> (Recorder, Snapshot) {
    let recorder = Recorder::new(sim.spec().clone()).unwrap();
    for _ in 0..steps {
        sim.drive(&recorder, tokens).unwrap();
    }
    assert_no_drops(&recorder);
    let snapshot = recorder.snapshot();
    (recorder, snapshot)
}

#[test]
fn usage_entropy_hits_6_and_4_bits_in_every_layer_of_qwen3() {
    let mut sim = Simulator::new(
        qwen(),
        vec![
            LanguageProfile::uniform_entropy("en", 0.5, 6.0),
            LanguageProfile::uniform_entropy("ja", 0.5, 4.0),
        ],
        1,
    )
    .unwrap();
    let (_, snapshot) = record(&mut sim, 8, 1000); // ≈ 4 000 tokens per language
    for (tag, target) in [("en", 6.0), ("ja", 4.0)] {
        assert!(snapshot.languages[tag].tokens > 3_500.0);
        // Unbiased but for the plug-in estimator's −0.003 bits: the mean over 48 layers is
        // far tighter than any single layer.
        let mean = (0..48).map(|d| entropy(&snapshot, tag, d)).sum::<f64>() / 48.0;
        assert!(
            (mean - target).abs() < 0.02,
            "{tag}: mean {mean:.4} bits, target {target}"
        );
        for depth in 0..48 {
            let h = entropy(&snapshot, tag, depth);
            assert!(
                (h - target).abs() < 0.1,
                "{tag} layer {depth}: {h:.3} bits, target {target}"
            );
            // The logits are ln p plus noise, so the mean router probability has the same
            // entropy as the usage.
            let a = mean_router_probability(&snapshot.languages[tag].layers[depth]).unwrap();
            let ha = usage_entropy_bits(&a).unwrap();
            assert!(
                (ha - target).abs() < 0.05,
                "{tag} layer {depth}: mean prob {ha:.3} bits"
            );
        }
    }
}

#[test]
fn a_per_layer_profile_is_followed_layer_by_layer() {
    let spec = ModelSpec::preset("olmoe-1b-7b").unwrap(); // 16 layers, 64 experts, top-8
                                                          // From 5.8 bits down to 3.55: the shape of the paper's low-resource languages.
    let he = LanguageProfile::profile("he", 1.0, 16, |d| 5.8 - 0.15 * d as f64);
    let mut sim = Simulator::new(spec, vec![he], 9).unwrap();
    let (_, snapshot) = record(&mut sim, 4, 1000);
    for depth in 0..16 {
        let target = 5.8 - 0.15 * depth as f64;
        assert!((sim.expected_entropy_bits("he", depth).unwrap() - target).abs() < 1e-6);
        let h = entropy(&snapshot, "he", depth);
        assert!(
            (h - target).abs() < 0.1,
            "layer {depth}: {h:.3}, target {target:.2}"
        );
    }
}

#[test]
fn collapse_is_flagged_only_for_its_language_and_clears_after_recovery() {
    let mut sim = Simulator::new(
        qwen(),
        vec![
            LanguageProfile::uniform_entropy("en", 0.6, 6.0),
            LanguageProfile::uniform_entropy("he", 0.2, 6.0),
            LanguageProfile::uniform_entropy("ja", 0.2, 6.0),
        ],
        7,
    )
    .unwrap();
    let funnel = Collapse {
        deep_layers: 6,
        experts: 10,
    };
    sim.set_collapse("he", Some(funnel)).unwrap();
    assert_eq!(sim.collapse("he"), Some(funnel));
    let (_, snapshot) = record(&mut sim, 6, 1000); // ≈ 1 200 tokens of he and of ja

    let ceiling = (funnel.experts as f64).log2() + 0.1;
    for depth in deep_layers(48) {
        let h = entropy(&snapshot, "he", depth);
        assert!(h < ceiling, "he deep layer {depth}: {h:.3} bits");
    }
    for depth in middle_layers(48) {
        let h = entropy(&snapshot, "he", depth);
        assert!(
            (h - 6.0).abs() < 0.1,
            "he middle layer {depth}: {h:.3} bits"
        );
    }
    for tag in ["en", "ja"] {
        for depth in 0..48 {
            let h = entropy(&snapshot, tag, depth);
            assert!((h - 6.0).abs() < 0.1, "{tag} layer {depth}: {h:.3} bits");
        }
    }
    let analysis = analyze(&snapshot, &AnalysisConfig::new("en")).unwrap();
    let he = analysis.collapse_for("he").unwrap();
    assert!(he.collapsed, "{he:?}");
    // Middle 6 bits, deep log2 10 ≈ 3.32: a score near 2.7 bits.
    assert!(
        (he.score_bits.unwrap() - (6.0 - 10f64.log2())).abs() < 0.15,
        "{he:?}"
    );
    let ja = analysis.collapse_for("ja").unwrap();
    assert!(ja.enough_tokens && !ja.collapsed, "{ja:?}");
    assert!(ja.score_bits.unwrap().abs() < 0.1, "{ja:?}");

    // Recovery, recorded afresh.
    sim.set_collapse("he", None).unwrap();
    assert_eq!(sim.collapse("he"), None);
    let (_, snapshot) = record(&mut sim, 6, 1000);
    for depth in 0..48 {
        let h = entropy(&snapshot, "he", depth);
        assert!(
            (h - 6.0).abs() < 0.1,
            "he layer {depth} after recovery: {h:.3} bits"
        );
    }
    let analysis = analyze(&snapshot, &AnalysisConfig::new("en")).unwrap();
    let he = analysis.collapse_for("he").unwrap();
    assert!(he.enough_tokens && !he.collapsed, "{he:?}");
}

#[test]
fn a_rotated_window_forgets_the_collapse() {
    let spec = ModelSpec::preset("olmoe-1b-7b").unwrap();
    let clock = ManualClock::new(1_000_000);
    let recorder = Recorder::builder(spec.clone())
        .clock(clock.clone())
        .window(WindowConfig {
            bucket_ms: 1_000,
            buckets: 3,
        })
        .build()
        .unwrap();
    let mut sim = Simulator::new(
        spec,
        vec![
            LanguageProfile::uniform_entropy("en", 0.5, 5.5),
            LanguageProfile::uniform_entropy("he", 0.5, 5.5),
        ],
        3,
    )
    .unwrap();
    let collapsed = Collapse {
        deep_layers: 2,
        experts: 8,
    };
    sim.set_collapse("he", Some(collapsed)).unwrap();
    for _ in 0..4 {
        sim.drive(&recorder, 500).unwrap();
    }
    recorder.upkeep();
    let config = AnalysisConfig::new("en");
    let flagged = |r: &Recorder| {
        analyze(&r.snapshot(), &config)
            .unwrap()
            .collapse_for("he")
            .unwrap()
            .collapsed
    };
    assert!(flagged(&recorder));

    sim.set_collapse("he", None).unwrap();
    clock.advance_ms(5_000); // past the 3-bucket window
    recorder.upkeep(); // rotate now, so the next counts land in a fresh bucket
    for _ in 0..4 {
        sim.drive(&recorder, 500).unwrap();
    }
    assert!(!flagged(&recorder));
    assert_no_drops(&recorder);
}

#[test]
fn a_scheduled_collapse_starts_and_ends_on_its_steps() {
    let spec = ModelSpec::preset("mixtral-8x7b").unwrap(); // 32 layers, 8 experts, top-2
    let mut sim = Simulator::new(
        spec,
        vec![
            LanguageProfile::uniform_entropy("en", 0.5, 2.5),
            LanguageProfile::uniform_entropy("he", 0.5, 2.5),
        ],
        5,
    )
    .unwrap();
    let c = Collapse {
        deep_layers: 4,
        experts: 2,
    };
    sim.schedule_collapse("he", c, 2..4).unwrap();
    let mut states = Vec::new();
    for _ in 0..6 {
        let step = sim.step(16);
        let index = step.index;
        states.push((index, sim.collapse("he").is_some()));
    }
    let expected: Vec<(u64, bool)> = (0..6).map(|i| (i, (2..4).contains(&i))).collect();
    assert_eq!(states, expected);
    // While collapsed, the deep layers route to exactly 2 experts (1 bit); before, 2.5 bits.
    assert!((sim.expected_entropy_bits("he", 31).unwrap() - 2.5).abs() < 1e-6);
    sim.set_collapse("he", Some(c)).unwrap();
    assert!((sim.expected_entropy_bits("he", 31).unwrap() - 1.0).abs() < 1e-12);
    assert!((sim.expected_entropy_bits("he", 27).unwrap() - 2.5).abs() < 1e-6);
    assert!((sim.expected_entropy_bits("en", 31).unwrap() - 2.5).abs() < 1e-6);
}

#[test]
fn language_counts_follow_the_shares_within_binomial_tolerance() {
    let shares = [("en", 0.6), ("zh", 0.3), ("he", 0.1)];
    let languages = shares
        .iter()
        .map(|&(t, s)| LanguageProfile::uniform_entropy(t, s, 6.0))
        .collect();
    let mut sim = Simulator::new(qwen(), languages, 11)
        .unwrap()
        .with_router_logits(false);
    let (steps, tokens) = (40, 500);
    let mut counts = [0u64; 3];
    let mut sequence_ids = std::collections::HashSet::new();
    for _ in 0..steps {
        let step = sim.step(tokens);
        assert_eq!(
            step.segments
                .iter()
                .map(|s| s.tokens as usize)
                .sum::<usize>(),
            tokens
        );
        for seg in &step.segments {
            assert!(seg.tokens as usize <= moescope_sim::DEFAULT_SEGMENT_TOKENS && seg.tokens > 0);
            assert!(
                sequence_ids.insert(seg.sequence_id.unwrap()),
                "repeated sequence id"
            );
        }
        for (c, n) in counts.iter_mut().zip(step.language_tokens(3)) {
            *c += n;
        }
    }
    let n = (steps * tokens) as f64;
    for ((tag, share), &count) in shares.iter().zip(&counts) {
        let sd = (n * share * (1.0 - share)).sqrt();
        let z = (count as f64 - n * share) / sd;
        assert!(
            z.abs() < 4.0,
            "{tag}: {count} tokens of {n}, share {share}: z = {z:.2}"
        );
    }
    // The shares are really used: a language with a 10 % share is far from 1/3.
    assert!(counts[2] < 2_500 && counts[0] > 11_000, "{counts:?}");
}

#[test]
fn steps_are_well_formed_router_batches() {
    let mut sim = Simulator::new(
        qwen(),
        vec![
            LanguageProfile::uniform_entropy("en", 0.5, 5.0),
            LanguageProfile::uniform_entropy("de", 0.5, 3.0), // the floor: log2 8
        ],
        2,
    )
    .unwrap();
    let recorder = Recorder::new(qwen()).unwrap();
    sim.bind(&recorder);
    let step = sim.step(300).clone();
    assert_eq!(step.layers.len(), 48);
    for layer in &step.layers {
        assert_eq!(layer.expert_ids.len(), 300 * 8);
        assert_eq!(layer.logits.len(), 300 * 128);
        assert!(layer.logits.iter().all(|x| x.is_finite()));
        for (ids, w) in layer.expert_ids.chunks(8).zip(layer.topk_weights.chunks(8)) {
            let mut sorted = ids.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 8, "repeated expert in {ids:?}");
            assert!(ids.iter().all(|&id| id < 128));
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(
                w.windows(2).all(|p| p[0] >= p[1]),
                "weights not decreasing: {w:?}"
            );
        }
    }
    for depth in 0..48 {
        let done = recorder.record(&step.batch(depth).unwrap()).unwrap();
        assert_eq!(done.recorded, 300);
    }
    assert!(step.batch(48).is_none());
    let snapshot = recorder.snapshot();
    let tokens: f64 = ["en", "de"]
        .iter()
        .map(|t| snapshot.languages[*t].tokens)
        .sum();
    assert_eq!(tokens, 300.0);
    // At the floor every token uses the same 8 experts: exactly 3 bits.
    assert!((entropy(&snapshot, "de", 10) - 3.0).abs() < 1e-9);
}

#[test]
fn the_same_seed_gives_identical_steps_and_drive_records_exactly_them() {
    let languages = || {
        vec![
            LanguageProfile::uniform_entropy("en", 0.7, 6.0),
            LanguageProfile::uniform_entropy("ko", 0.3, 4.5),
        ]
    };
    let spec = ModelSpec::preset("olmoe-1b-7b").unwrap();
    let mut a = Simulator::new(spec.clone(), languages(), 99).unwrap();
    let mut b = Simulator::new(spec.clone(), languages(), 99).unwrap();
    let mut c = Simulator::new(spec.clone(), languages(), 100).unwrap();
    for _ in 0..3 {
        let sa = a.step(200).clone();
        assert_eq!(&sa, b.step(200));
        assert_ne!(&sa.layers, &c.step(200).layers);
    }

    // drive == step + record, for the same seed.
    let mut driven = Simulator::new(spec.clone(), languages(), 5).unwrap();
    let mut stepped = Simulator::new(spec.clone(), languages(), 5).unwrap();
    let r1 = Recorder::new(spec.clone()).unwrap();
    let r2 = Recorder::new(spec).unwrap();
    stepped.bind(&r2);
    for _ in 0..3 {
        driven.drive(&r1, 150).unwrap();
        let step = stepped.step(150);
        for depth in 0..16 {
            r2.record(&step.batch(depth).unwrap()).unwrap();
        }
    }
    let (s1, s2) = (r1.snapshot(), r2.snapshot());
    for tag in ["en", "ko"] {
        for depth in 0..16 {
            assert_eq!(
                s1.languages[tag].layers[depth].expert_tokens,
                s2.languages[tag].layers[depth].expert_tokens
            );
        }
    }
}

#[test]
fn invalid_settings_are_refused_naming_the_field() {
    let field = |r: Result<Simulator, SimError>| r.unwrap_err().field().map(str::to_string);
    let u = LanguageProfile::uniform_entropy;
    assert_eq!(
        field(Simulator::new(
            qwen(),
            vec![u("en", 0.5, 6.0), u("he", 0.4, 6.0)],
            0
        ))
        .as_deref(),
        Some("languages[].share")
    );
    assert_eq!(
        field(Simulator::new(qwen(), vec![u("en", 1.5, 6.0)], 0)).as_deref(),
        Some("languages[0].share")
    );
    // Below log2 k = 3 bits and above log2 E = 7 bits.
    for bits in [2.9, 7.01, f64::NAN] {
        assert_eq!(
            field(Simulator::new(qwen(), vec![u("en", 1.0, bits)], 0)).as_deref(),
            Some("languages[0].entropy_bits")
        );
    }
    let short = LanguageProfile::per_layer("en", 1.0, vec![6.0; 47]);
    assert_eq!(
        field(Simulator::new(qwen(), vec![short], 0)).as_deref(),
        Some("languages[0].entropy_bits")
    );
    let mut bad_layer = vec![6.0; 48];
    bad_layer[40] = 1.0;
    let bad = LanguageProfile::per_layer("en", 1.0, bad_layer);
    assert_eq!(
        field(Simulator::new(qwen(), vec![bad], 0)).as_deref(),
        Some("languages[0].entropy_bits[40]")
    );
    assert_eq!(
        field(Simulator::new(
            qwen(),
            vec![u("en", 0.5, 6.0), u("EN", 0.5, 6.0)],
            0
        ))
        .as_deref(),
        Some("languages[1].tag")
    );
    assert_eq!(
        field(Simulator::new(qwen(), vec![u("e n", 1.0, 6.0)], 0)).as_deref(),
        Some("languages[0].tag")
    );
    assert_eq!(
        field(Simulator::new(
            qwen(),
            vec![u("en", 1.0, 6.0).with_specificity(2.0)],
            0
        ))
        .as_deref(),
        Some("languages[0].specificity")
    );
    assert_eq!(
        field(Simulator::new(qwen(), vec![], 0)).as_deref(),
        Some("languages")
    );

    let mut sim = Simulator::new(qwen(), vec![u("pt_br", 1.0, 6.0)], 0).unwrap();
    assert_eq!(sim.languages()[0].tag, "pt-BR");
    sim.set_collapse("PT-br", None).unwrap(); // normalized like the recorder does
    let err = sim
        .set_collapse(
            "fr",
            Some(Collapse {
                deep_layers: 2,
                experts: 8,
            }),
        )
        .unwrap_err();
    assert!(matches!(err, SimError::UnknownLanguage { .. }), "{err}");
    let bad = |c| {
        sim.clone()
            .set_collapse("pt-BR", Some(c))
            .unwrap_err()
            .field()
            .map(str::to_string)
    };
    assert_eq!(
        bad(Collapse {
            deep_layers: 2,
            experts: 7
        })
        .as_deref(),
        Some("collapse.experts")
    );
    assert_eq!(
        bad(Collapse {
            deep_layers: 2,
            experts: 129
        })
        .as_deref(),
        Some("collapse.experts")
    );
    assert_eq!(
        bad(Collapse {
            deep_layers: 0,
            experts: 8
        })
        .as_deref(),
        Some("collapse.deep_layers")
    );
    assert_eq!(
        bad(Collapse {
            deep_layers: 49,
            experts: 8
        })
        .as_deref(),
        Some("collapse.deep_layers")
    );
    assert_eq!(sim.collapse("pt-BR"), None);
}
