//! Drives the public API of `ModelSpec` (Hugging Face configs) and `Snapshot` (the
//! `moescope.snapshot/v1` format) from the outside.

use std::collections::BTreeMap;
use std::path::PathBuf;

use moescope_core::{
    BucketCounts, HalfCounts, LanguageCounts, LayerCounts, ModelSpec, Snapshot, SnapshotError,
    SpecError, WindowRange, SNAPSHOT_FORMAT,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn config(name: &str) -> ModelSpec {
    ModelSpec::from_hf_config(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn config_err(name: &str) -> SpecError {
    match ModelSpec::from_hf_config(data(name)) {
        Ok(spec) => panic!("{name} was accepted: {spec:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------- Hugging Face configs

#[test]
fn qwen3_moe_30b_a3b_config_matches_the_preset() {
    let spec = config("qwen3_moe_30b_a3b.json");
    assert_eq!(spec.name, "qwen3_moe");
    assert_eq!(spec.num_experts, 128);
    assert_eq!(spec.top_k, 8);
    assert_eq!(spec.moe_layers, (0..48).collect::<Vec<u32>>());
    assert_eq!(spec.shared_experts, 0);
    assert_eq!(spec.num_hidden_layers, Some(48));
    let preset = ModelSpec::preset("qwen3-30b-a3b").unwrap();
    assert_eq!(
        ModelSpec {
            name: preset.name.clone(),
            ..spec
        },
        preset,
        "config and preset disagree"
    );
}

#[test]
fn qwen2_moe_config_has_one_shared_expert() {
    let spec = config("qwen2_moe_a2_7b.json");
    assert_eq!(spec.name, "Qwen/Qwen1.5-MoE-A2.7B");
    assert_eq!((spec.num_experts, spec.top_k), (60, 4));
    assert_eq!(spec.moe_layers, (0..24).collect::<Vec<u32>>());
    assert_eq!(spec.shared_experts, 1);
}

#[test]
fn mixtral_config_reads_num_local_experts() {
    let spec = config("mixtral_8x7b.json");
    assert_eq!(
        (spec.num_experts, spec.top_k, spec.shared_experts),
        (8, 2, 0)
    );
    assert_eq!(spec.moe_layers, (0..32).collect::<Vec<u32>>());
    assert_eq!(spec.num_hidden_layers, Some(32));
}

#[test]
fn olmoe_config_has_all_layers_moe() {
    let spec = config("olmoe_1b_7b.json");
    assert_eq!(
        (spec.num_experts, spec.top_k, spec.shared_experts),
        (64, 8, 0)
    );
    assert_eq!(spec.moe_layers, (0..16).collect::<Vec<u32>>());
}

#[test]
fn deepseek_v3_config_skips_the_first_three_dense_layers() {
    let spec = config("deepseek_v3.json");
    assert_eq!(
        (spec.num_experts, spec.top_k, spec.shared_experts),
        (256, 8, 1)
    );
    assert_eq!(spec.moe_layers, (3..61).collect::<Vec<u32>>());
    assert_eq!(spec.num_moe_layers(), 58);
    assert_eq!(spec.depth_of(3), Some(0));
    assert_eq!(spec.depth_of(2), None);
    let preset = ModelSpec::preset("deepseek-v3").unwrap();
    assert_eq!(
        ModelSpec {
            name: preset.name.clone(),
            ..spec
        },
        preset
    );
}

#[test]
fn qwen_sparse_step_and_mlp_only_layers() {
    // Layers 1, 3, 5, 7, 9 are sparse with step 2; 3 and 7 are forced dense.
    let spec = config("qwen_sparse_step2.json");
    assert_eq!(spec.moe_layers, vec![1, 5, 9]);
    assert_eq!(
        (spec.num_experts, spec.top_k, spec.shared_experts),
        (16, 2, 0)
    );
    assert_eq!(spec.num_hidden_layers, Some(10));
}

#[test]
fn hybrid_pattern_marks_moe_layers_with_e() {
    let spec = config("nemotron_h_hybrid.json");
    assert_eq!(spec.moe_layers, vec![1, 3, 5, 7, 10, 12]);
    assert_eq!(
        (spec.num_experts, spec.top_k, spec.shared_experts),
        (32, 6, 1)
    );
}

#[test]
fn nested_text_config_with_interleaved_moe_layers() {
    let spec = config("llama4_nested.json");
    assert_eq!(spec.name, "llama4");
    assert_eq!(spec.moe_layers, vec![1, 3, 5, 7]);
    assert_eq!(
        (spec.num_experts, spec.top_k, spec.shared_experts),
        (128, 1, 1)
    );
}

#[test]
fn name_falls_back_to_the_directory() {
    let spec = config("Some-MoE-Model/config.json");
    assert_eq!(spec.name, "Some-MoE-Model");
    assert_eq!(spec.moe_layers, vec![0, 1]);
}

#[test]
fn from_str_uses_the_given_name() {
    let json = std::fs::read_to_string(data("mixtral_8x7b.json")).unwrap();
    let spec = ModelSpec::from_hf_config_str(&json, "my-mixtral").unwrap();
    assert_eq!(spec.name, "my-mixtral");
    assert_eq!(spec.num_experts, 8);
}

#[test]
fn missing_expert_count_lists_the_keys_looked_for() {
    let err = config_err("bad_missing_experts.json");
    assert_eq!(err.field(), Some("num_experts"));
    let msg = err.to_string();
    for key in ["num_experts", "num_local_experts", "n_routed_experts"] {
        assert!(msg.contains(key), "{msg}");
    }
    assert!(msg.contains("bad_missing_experts.json"), "{msg}");
}

#[test]
fn missing_top_k_is_named() {
    let err = config_err("bad_missing_topk.json");
    assert_eq!(err.field(), Some("num_experts_per_tok"));
    assert!(
        err.to_string().contains("num_experts_per_tok: missing"),
        "{err}"
    );
}

#[test]
fn missing_num_hidden_layers_is_named() {
    let err = config_err("bad_missing_layers.json");
    assert_eq!(err.field(), Some("num_hidden_layers"));
}

#[test]
fn top_k_above_the_expert_count_names_the_config_key() {
    let err = config_err("bad_topk_too_large.json");
    assert_eq!(err.field(), Some("num_experts_per_tok"));
    assert!(
        err.to_string()
            .contains("must be between 1 and num_experts (8), got 9"),
        "{err}"
    );
}

#[test]
fn pattern_of_the_wrong_length_is_rejected() {
    let err = config_err("bad_pattern_length.json");
    assert_eq!(err.field(), Some("hybrid_override_pattern"));
    assert!(
        err.to_string()
            .contains("has 6 characters but num_hidden_layers is 8"),
        "{err}"
    );
}

#[test]
fn config_without_moe_layers_is_rejected() {
    let err = config_err("bad_no_moe_layers.json");
    assert_eq!(err.field(), Some("hybrid_override_pattern"));
    assert!(err.to_string().contains("no layer"), "{err}");
}

#[test]
fn unreadable_and_non_json_configs() {
    let err = config_err("does_not_exist.json");
    assert!(matches!(err, SpecError::Io { .. }));
    assert!(err.to_string().contains("does_not_exist.json"), "{err}");
    let err = config_err("bad_not_json.json");
    assert!(matches!(err, SpecError::Json { .. }), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
}

// ---------------------------------------------------------------- snapshots

fn tiny_spec() -> ModelSpec {
    ModelSpec::new("tiny-moe", 4, 2, vec![2, 5, 9])
        .unwrap()
        .with_shared_experts(1)
        .with_num_hidden_layers(10)
}

fn layer(seed: f64, with_probs: bool) -> LayerCounts {
    let expert_tokens: Vec<f64> = (0..4).map(|e| seed * (e as f64 + 0.5) / 3.0).collect();
    LayerCounts {
        tokens: expert_tokens.iter().sum::<f64>() / 2.0,
        expert_tokens,
        prob_sum: with_probs.then(|| vec![0.1 * seed, 0.2 * seed, 0.3 * seed, 0.4 * seed]),
        prob_tokens: if with_probs { seed } else { 0.0 },
        selection_entropy_sum_bits: with_probs.then_some(1.37 * seed),
        topk_weight_sum: with_probs.then_some(0.71 * seed),
    }
}

fn language(seed: f64, with_halves: bool) -> LanguageCounts {
    LanguageCounts {
        tokens: 12.345 * seed,
        chars: Some(51.2 * seed),
        words: with_halves.then_some(9.75 * seed),
        layers: (0..3).map(|l| layer(seed + l as f64, l != 1)).collect(),
        halves: with_halves.then(|| {
            [
                HalfCounts {
                    layers: (0..3).map(|l| layer(seed / 3.0 + l as f64, true)).collect(),
                },
                HalfCounts {
                    layers: (0..3)
                        .map(|l| layer(seed / 7.0 + l as f64, false))
                        .collect(),
                },
            ]
        }),
    }
}

fn full_snapshot() -> Snapshot {
    let w = |a, b| WindowRange {
        start_unix_ms: a,
        end_unix_ms: b,
    };
    Snapshot {
        model: tiny_spec(),
        window: Some(w(1_700_000_000_000, 1_700_000_060_000)),
        languages: BTreeMap::from([
            ("en".to_string(), language(1.1, true)),
            ("he".to_string(), language(0.3, false)),
            ("zh-Hant".to_string(), language(2.9, true)),
        ]),
        buckets: vec![
            BucketCounts {
                window: w(1_700_000_000_000, 1_700_000_030_000),
                languages: BTreeMap::from([("en".to_string(), language(0.7, true))]),
            },
            BucketCounts {
                window: w(1_700_000_030_000, 1_700_000_060_000),
                languages: BTreeMap::from([
                    ("en".to_string(), language(0.4, false)),
                    ("he".to_string(), language(0.3, false)),
                ]),
            },
        ],
    }
}

#[test]
fn snapshot_round_trips_through_a_file() {
    let original = full_snapshot();
    original.validate().unwrap();
    let dir = std::env::temp_dir().join(format!("moescope-core-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("snap.json");
    original.write_json(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with(&format!("{{\n  \"format\": \"{SNAPSHOT_FORMAT}\",")),
        "{text}"
    );
    let back = Snapshot::read_json(&path).unwrap();
    assert_eq!(back, original);
    // No temporary file is left beside the snapshot.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("snap.json")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshot_round_trips_awkward_floats_exactly() {
    let mut s = Snapshot::new(tiny_spec());
    let mut lc = LanguageCounts::zeroed(&s.model);
    lc.tokens = 0.1 + 0.2;
    lc.layers[0].expert_tokens = vec![1e-300, 123_456_789.0 / 7.0, 2.0 / 3.0, 5e-324];
    lc.layers[0].tokens = 1.7976931348623157e308;
    s.languages.insert("ja".into(), lc);
    assert_eq!(Snapshot::from_json_str(&s.to_json_string()).unwrap(), s);
}

/// The minimal shape a hand-written snapshot has: no per-layer `tokens`, `prob_sum` null,
/// optional chars/words.
const MINIMAL_SNAPSHOT: &str = r#"{ "format": "moescope.snapshot/v1",
  "model": { "name": "tiny-moe", "num_experts": 4, "top_k": 2, "layers": [0, 1] },
  "window": { "start_unix_ms": 10, "end_unix_ms": 20 },
  "languages": { "he": { "tokens": 5, "chars": 20, "words": 4,
      "layers": [ { "expert_tokens": [6, 2, 1.5, 0.5], "prob_sum": null,
                    "prob_tokens": 0, "selection_entropy_sum_bits": null },
                  { "expert_tokens": [0, 0, 5, 5], "prob_sum": [1, 1, 2, 1],
                    "prob_tokens": 5, "selection_entropy_sum_bits": 7.25 } ],
      "halves": [ { "layers": [ { "expert_tokens": [3, 1, 1, 0] }, { "expert_tokens": [0, 0, 2, 2] } ] },
                  { "layers": [ { "expert_tokens": [3, 1, 0.5, 0.5] }, { "expert_tokens": [0, 0, 3, 3] } ] } ] } } }"#;

#[test]
fn design_shaped_json_parses_with_derived_layer_tokens() {
    let s = Snapshot::from_json_str(MINIMAL_SNAPSHOT).unwrap();
    assert_eq!(s.model.moe_layers, vec![0, 1]);
    assert_eq!(
        s.window,
        Some(WindowRange {
            start_unix_ms: 10,
            end_unix_ms: 20
        })
    );
    let he = &s.languages["he"];
    assert_eq!(
        (he.tokens, he.chars, he.words),
        (5.0, Some(20.0), Some(4.0))
    );
    assert_eq!(he.layers[0].tokens, 5.0); // (6 + 2 + 1.5 + 0.5) / 2
    assert_eq!(he.layers[0].prob_sum, None);
    assert_eq!(he.layers[0].selection_entropy_sum_bits, None);
    assert_eq!(he.layers[0].topk_weight_sum, None);
    assert_eq!(he.layers[1].tokens, 5.0);
    assert_eq!(he.layers[1].prob_sum, Some(vec![1.0, 1.0, 2.0, 1.0]));
    assert_eq!(he.layers[1].prob_tokens, 5.0);
    assert_eq!(he.layers[1].selection_entropy_sum_bits, Some(7.25));
    let halves = he.halves.as_ref().unwrap();
    assert_eq!(halves[0].layers[0].tokens, 2.5);
    assert_eq!(halves[1].layers[1].tokens, 3.0);
    assert!(s.buckets.is_empty());
}

#[test]
fn unknown_fields_are_tolerated() {
    let json = MINIMAL_SNAPSHOT.replacen(
        "\"window\"",
        "\"writer\": {\"name\": \"hook.py\"}, \"window\"",
        1,
    );
    assert!(Snapshot::from_json_str(&json).is_ok());
}

/// Applies `edit` to the minimal document and returns the reader's error message.
fn rejection(edit: impl FnOnce(&mut serde_json::Value)) -> (SnapshotError, String) {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL_SNAPSHOT).unwrap();
    edit(&mut v);
    let err = Snapshot::from_json_str(&v.to_string()).unwrap_err();
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn rejects_another_format_string() {
    let (err, msg) = rejection(|v| v["format"] = "moescope.snapshot/v2".into());
    assert_eq!(err.field(), Some("format"));
    assert!(msg.contains("found \"moescope.snapshot/v2\""), "{msg}");
}

#[test]
fn rejects_another_format_before_shape_errors() {
    let (err, msg) = rejection(|v| {
        v["format"] = "moescope.snapshot/v2".into();
        v["languages"] = "reshaped in v2".into();
    });
    assert_eq!(err.field(), Some("format"), "{msg}");
}

#[test]
fn rejects_missing_format() {
    let (err, msg) = rejection(|v| {
        v.as_object_mut().unwrap().remove("format");
    });
    assert_eq!(err.field(), Some("format"));
    assert!(msg.contains("missing"), "{msg}");
}

#[test]
fn rejects_wrong_expert_count() {
    let (err, msg) = rejection(|v| {
        v["languages"]["he"]["layers"][1]["expert_tokens"] = serde_json::json!([1, 2, 3]);
    });
    assert_eq!(err.field(), Some("languages.he.layers[1].expert_tokens"));
    assert!(
        msg.contains(
            "languages.he.layers[1].expert_tokens: expected 4 numbers (model.num_experts), found 3"
        ),
        "{msg}"
    );
}

#[test]
fn rejects_127_numbers_for_128_experts() {
    let model = ModelSpec::preset("qwen3-30b-a3b").unwrap();
    let mut s = Snapshot::new(model);
    let mut lc = LanguageCounts::zeroed(&s.model);
    lc.layers[3].expert_tokens.pop();
    s.languages.insert("he".into(), lc);
    let err = Snapshot::from_json_str(&s.to_json_string()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid snapshot: languages.he.layers[3].expert_tokens: expected 128 numbers \
         (model.num_experts), found 127"
    );
}

#[test]
fn rejects_wrong_prob_sum_length() {
    let (err, _) = rejection(|v| {
        v["languages"]["he"]["layers"][0]["prob_sum"] = serde_json::json!([1, 2, 3, 4, 5]);
    });
    assert_eq!(err.field(), Some("languages.he.layers[0].prob_sum"));
}

#[test]
fn rejects_negative_numbers() {
    let (err, msg) = rejection(|v| {
        v["languages"]["he"]["layers"][1]["expert_tokens"][2] = serde_json::json!(-0.5);
    });
    assert_eq!(err.field(), Some("languages.he.layers[1].expert_tokens[2]"));
    assert!(msg.contains("found -0.5"), "{msg}");
    let (err, _) = rejection(|v| v["languages"]["he"]["tokens"] = serde_json::json!(-1));
    assert_eq!(err.field(), Some("languages.he.tokens"));
    let (err, _) = rejection(|v| {
        v["languages"]["he"]["layers"][1]["selection_entropy_sum_bits"] = serde_json::json!(-2);
    });
    assert_eq!(
        err.field(),
        Some("languages.he.layers[1].selection_entropy_sum_bits")
    );
}

#[test]
fn rejects_non_finite_numbers_built_in_code() {
    let mut s = full_snapshot();
    s.languages.get_mut("en").unwrap().layers[2].prob_tokens = f64::NAN;
    let err = s.validate().unwrap_err();
    assert_eq!(err.field(), Some("languages.en.layers[2].prob_tokens"));
    let mut s = full_snapshot();
    s.buckets[1].languages.get_mut("he").unwrap().layers[0].expert_tokens[3] = f64::INFINITY;
    let err = s.validate().unwrap_err();
    assert_eq!(
        err.field(),
        Some("buckets[1].languages.he.layers[0].expert_tokens[3]")
    );
}

#[test]
fn rejects_one_half() {
    let (err, msg) = rejection(|v| {
        v["languages"]["he"]["halves"].as_array_mut().unwrap().pop();
    });
    assert!(matches!(err, SnapshotError::Json { .. }), "{msg}");
    assert_eq!(err.field(), Some("languages.he.halves"), "{msg}");
    assert!(msg.contains("length 1"), "{msg}");
}

#[test]
fn rejects_a_half_of_the_wrong_shape() {
    let (err, msg) = rejection(|v| {
        v["languages"]["he"]["halves"][1]["layers"]
            .as_array_mut()
            .unwrap()
            .pop();
    });
    assert_eq!(err.field(), Some("languages.he.halves[1].layers"), "{msg}");
}

#[test]
fn rejects_a_layer_count_mismatch() {
    let (err, msg) = rejection(|v| {
        v["languages"]["he"]["layers"].as_array_mut().unwrap().pop();
    });
    assert_eq!(err.field(), Some("languages.he.layers"));
    assert!(
        msg.contains("expected 2 entries (one per model.layers), found 1"),
        "{msg}"
    );
}

#[test]
fn rejects_bad_language_keys() {
    // One rule for live tags and snapshot keys: a tag the registry accepts, in the normalized
    // form the recorder writes.
    for key in [
        "he il",
        "",
        "x".repeat(36).as_str(),
        "fr_FR",
        "日本",
        "EN",
        "abcdefghi",
    ] {
        let (err, msg) = rejection(|v| {
            let he = v["languages"]["he"].take();
            v["languages"] = serde_json::json!({ key: he });
        });
        assert_eq!(err.field(), Some("languages"), "{msg}");
        assert!(msg.contains(&format!("{key:?}")), "{msg}");
    }
    let (_, msg) = rejection(|v| {
        let he = v["languages"]["he"].take();
        v["languages"] = serde_json::json!({ "zh_hant_tw": he });
    });
    assert!(msg.contains("write \"zh-Hant-TW\""), "{msg}");
    let longest = "en-abcdefgh-abcdefgh-abcdefgh-abcde";
    assert_eq!(longest.len(), 35);
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL_SNAPSHOT).unwrap();
    let he = v["languages"]["he"].take();
    v["languages"] =
        serde_json::json!({ longest: he.clone(), "und": he.clone(), "zh-Hant-TW": he });
    assert!(Snapshot::from_json_str(&v.to_string()).is_ok());
}

#[test]
fn rejects_a_window_that_ends_before_it_starts() {
    let (err, msg) = rejection(|v| v["window"]["start_unix_ms"] = 30.into());
    assert_eq!(err.field(), Some("window"));
    assert!(
        msg.contains("start_unix_ms (30) is after end_unix_ms (20)"),
        "{msg}"
    );
}

#[test]
fn rejects_bad_bucket_windows_and_order() {
    let mut s = full_snapshot();
    s.buckets[1].window.end_unix_ms = 0;
    let err = s.validate().unwrap_err();
    assert_eq!(err.field(), Some("buckets[1].window"));
    let mut s = full_snapshot();
    s.buckets.swap(0, 1);
    let err = Snapshot::from_json_str(&s.to_json_string()).unwrap_err();
    assert_eq!(err.field(), Some("buckets[1].window.start_unix_ms"));
    assert!(err.to_string().contains("oldest first"), "{err}");
}

#[test]
fn rejects_an_invalid_model_with_its_path() {
    let (err, msg) = rejection(|v| v["model"]["top_k"] = 0.into());
    assert_eq!(err.field(), Some("model.top_k"));
    assert!(
        msg.contains("must be between 1 and num_experts (4), got 0"),
        "{msg}"
    );
    let (err, _) = rejection(|v| v["model"]["layers"] = serde_json::json!([1, 0]));
    assert_eq!(err.field(), Some("model.layers"));
}

#[test]
fn type_errors_carry_the_json_path_and_position() {
    let (err, msg) = rejection(|v| {
        v["languages"]["he"]["layers"][0]["prob_tokens"] = "many".into();
    });
    assert!(matches!(err, SnapshotError::Json { .. }), "{msg}");
    assert_eq!(
        err.field(),
        Some("languages.he.layers[0].prob_tokens"),
        "{msg}"
    );
    assert!(msg.contains("line 1 column"), "{msg}");
    let err = Snapshot::from_json_str("{\"format\": ").unwrap_err();
    assert!(matches!(err, SnapshotError::Json { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("EOF while parsing a value at line 1 column 11"),
        "{err}"
    );
    let err = Snapshot::from_json_str(&format!("{MINIMAL_SNAPSHOT} trailing")).unwrap_err();
    assert!(matches!(err, SnapshotError::Json { .. }), "{err}");
}

#[test]
fn read_json_names_a_missing_file() {
    let err = Snapshot::read_json(data("no_such_snapshot.json")).unwrap_err();
    assert!(matches!(err, SnapshotError::Io { .. }));
    assert!(err.to_string().contains("no_such_snapshot.json"), "{err}");
}

#[test]
fn merging_bucket_counts_gives_the_window_counts() {
    // Two buckets merged with weight 1 equal the snapshot of the whole window.
    let s = full_snapshot();
    let mut merged = LanguageCounts::zeroed(&s.model);
    for bucket in &s.buckets {
        merged.add_scaled(&bucket.languages["en"], 1.0);
    }
    let (a, b) = (&s.buckets[0].languages["en"], &s.buckets[1].languages["en"]);
    assert!((merged.tokens - (a.tokens + b.tokens)).abs() < 1e-12);
    for l in 0..3 {
        for e in 0..4 {
            let want = a.layers[l].expert_tokens[e] + b.layers[l].expert_tokens[e];
            assert!((merged.layers[l].expert_tokens[e] - want).abs() < 1e-12);
        }
    }
    // Layer 1 has no probabilities in either bucket; layer 0 has them in both.
    assert_eq!(merged.layers[1].prob_sum, None);
    let want0 = 0.1 * 0.7 + 0.1 * 0.4;
    assert!((merged.layers[0].prob_sum.as_ref().unwrap()[0] - want0).abs() < 1e-12);
    // Only bucket 0 has halves; merging keeps them.
    assert_eq!(merged.halves, a.halves);
    assert_eq!(merged.words, a.words);
    // A merged, weighted result is still a valid snapshot.
    merged.add_scaled(&s.languages["he"], 2.5);
    let snap = Snapshot {
        languages: BTreeMap::from([("en".to_string(), merged)]),
        ..Snapshot::new(s.model.clone())
    };
    snap.validate().unwrap();
}

#[test]
fn too_many_languages_are_refused_while_reading() {
    let layer = r#"{"tokens": 1, "layers": [{"expert_tokens": [1, 0]}]}"#;
    let langs: Vec<String> = (0..=moescope_core::snapshot::MAX_SNAPSHOT_LANGUAGES)
        .map(|i| {
            // Distinct valid tags: "x-" followed by the number in letters.
            let word: String = format!("{i:06}")
                .bytes()
                .map(|d| (b'a' + (d - b'0')) as char)
                .collect();
            format!(r#""x-{word}": {layer}"#)
        })
        .collect();
    let json = format!(
        r#"{{"format": "moescope.snapshot/v1",
            "model": {{"name": "m", "num_experts": 2, "top_k": 1, "layers": [0]}},
            "languages": {{{}}}}}"#,
        langs.join(",")
    );
    let err = Snapshot::from_json_str(&json).unwrap_err();
    assert_eq!(err.field(), Some("languages"), "{err}");
    assert!(err.to_string().contains("at most 4096"), "{err}");
    // One fewer is fine.
    let json = json.replacen(&format!("{},", langs[0]), "", 1);
    assert_eq!(
        Snapshot::from_json_str(&json).unwrap().languages.len(),
        4096
    );
}

#[test]
fn a_truncated_file_of_another_version_names_the_version() {
    let json = r#"{"format": "moescope.snapshot/v2", "model": {"name": "m", "num_exp"#;
    let err = Snapshot::from_json_str(json).unwrap_err();
    // Truncated: a JSON error (the format of a file that does not parse cannot be trusted).
    assert!(
        matches!(err, moescope_core::SnapshotError::Json { .. }),
        "{err}"
    );
    let json = r#"{"format": "moescope.snapshot/v2", "model": 3}"#;
    let err = Snapshot::from_json_str(json).unwrap_err();
    assert_eq!(err.field(), Some("format"), "{err}");
}
