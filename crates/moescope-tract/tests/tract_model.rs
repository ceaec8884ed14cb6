//! The bundled tiny Qwen3-MoE through tract: what is recorded is what the router chose.

use moescope_core::{Languages, Recorder};
use moescope_tract::{
    bundled_model_path, byte_tokens, Error, LoadOptions, MoeModel, PackedBatch, RouterSelector,
};

const TEXTS: [(&str, &str); 3] = [
    (
        "en",
        "Routing health is watched per language, layer by layer.",
    ),
    ("he", "בריאות הניתוב נמדדת לכל שפה, שכבה אחר שכבה."),
    ("ja", "ルーティングの健全性を言語ごと、層ごとに監視する。"),
];

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

/// Top-k by a full sort of the row (largest first, ties to the lower index): written
/// independently of the crate's selection.
fn sorted_top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[test]
fn recorded_counts_equal_the_top_k_of_the_router_logits_of_the_same_run() {
    let model = MoeModel::load(bundled_model_path(), &LoadOptions::default()).unwrap();
    let spec = model.spec().clone();
    assert_eq!((spec.num_experts, spec.top_k), (16, 4));
    assert_eq!(spec.moe_layers, [0, 1, 2, 3]);
    let recorder = Recorder::new(spec.clone()).unwrap();
    let mut batch = PackedBatch::new();
    for (i, (tag, text)) in TEXTS.iter().enumerate() {
        batch.push(&byte_tokens(text), recorder.language(tag), Some(i as u64));
    }
    let out = model.run(batch.inputs()).unwrap();
    let rec = model
        .record(
            &recorder,
            &out,
            Languages::Segments(batch.segments()),
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(
        rec.recorded as usize,
        batch.tokens() * spec.num_moe_layers()
    );
    assert_eq!(rec.dropped, 0);

    let snap = recorder.snapshot();
    let (e, k) = (spec.num_experts as usize, spec.top_k as usize);
    for layer in 0..spec.num_moe_layers() {
        let logits = model.router_logits(&out, layer).unwrap();
        assert_eq!(logits.len(), batch.tokens() * e);
        let model_ids = model
            .topk_ids(&out, layer)
            .expect("the graph's TopK is exposed");
        let mut start = 0;
        for (seg, (tag, _)) in batch.segments().iter().zip(TEXTS) {
            let mut want = vec![0.0; e];
            for t in start..start + seg.tokens as usize {
                let top = sorted_top_k(&logits[t * e..(t + 1) * e], k);
                // The model's own TopK (on the softmax) picked the same experts.
                let mine: Vec<usize> = model_ids[t * k..(t + 1) * k]
                    .iter()
                    .map(|&i| i as usize)
                    .collect();
                assert_eq!(mine, top, "layer {layer}, token {t}");
                for x in top {
                    want[x] += 1.0;
                }
            }
            start += seg.tokens as usize;
            let got = &snap.languages[tag].layers[layer];
            assert_eq!(got.expert_tokens, want, "layer {layer}, {tag}");
            assert_eq!(got.tokens, seg.tokens as f64);
        }
    }
    // Three scripts, three token counts per character.
    assert_eq!(snap.languages["en"].tokens, TEXTS[0].1.len() as f64);
    assert!(snap.languages["he"].tokens > 1.5 * TEXTS[1].1.chars().count() as f64);
    assert!(snap.languages["ja"].tokens == 3.0 * TEXTS[2].1.chars().count() as f64);
}

#[test]
fn tract_reproduces_the_numpy_reference_forward() {
    let text =
        std::fs::read_to_string(bundled_model_path().with_file_name("reference.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ints = |key: &str| -> Vec<i64> {
        r[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    let (ids, pos, seg) = (ints("input_ids"), ints("position_ids"), ints("segment_ids"));
    let t = ids.len();
    let tensor = |v: &[i64]| moescope_tract::Tensor::from_shape(&[t], v).unwrap().into();
    let model = MoeModel::load(bundled_model_path(), &LoadOptions::default()).unwrap();
    let out = model
        .run(moescope_tract::TVec::from_iter([
            tensor(&ids),
            tensor(&pos),
            tensor(&seg),
        ]))
        .unwrap();
    let mut worst = 0.0f64;
    for (layer, want) in r["router_logits"].as_array().unwrap().iter().enumerate() {
        let got = model.router_logits(&out, layer).unwrap();
        let want: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            worst = worst.max((f64::from(*g) - w).abs());
        }
    }
    assert!(worst < 2e-3, "router logits differ from NumPy by {worst}");
    let logits = out.model_outputs()[0].to_plain_array_view::<f32>().unwrap();
    let first: Vec<f64> = r["logits_first_row"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (j, w) in first.iter().enumerate() {
        assert!((f64::from(logits[[0, j]]) - w).abs() < 2e-3, "logit {j}");
    }
}

#[test]
fn graph_shape_name_pattern_and_explicit_names_find_the_same_routers() {
    let by_shape = MoeModel::load(bundled_model_path(), &LoadOptions::default()).unwrap();
    let by_pattern = MoeModel::load(
        bundled_model_path(),
        &LoadOptions {
            routers: RouterSelector::NamePatterns(vec!["*mlp.gate".into()]),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let names = (0..4)
        .map(|i| format!("model.layers.{i}.mlp.router_logits"))
        .collect();
    let by_name = MoeModel::load(
        bundled_model_path(),
        &LoadOptions {
            routers: RouterSelector::Names(names),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(by_shape.routers(), by_pattern.routers());
    assert_eq!(by_shape.routers(), by_name.routers());
    let r = &by_shape.routers()[2];
    assert_eq!(r.node, "model.layers.2.mlp.gate");
    assert_eq!(r.tensor, "model.layers.2.mlp.router_logits");
    assert_eq!(r.topk_ids.as_deref(), Some("model.layers.2.mlp.topk_ids"));
    assert_eq!(by_shape.name(), "tiny-qwen3-moe");
}

#[test]
fn spec_from_the_hugging_face_config_is_checked_against_the_graph() {
    let spec =
        moescope_core::ModelSpec::from_hf_config(moescope_tract::bundled_config_path()).unwrap();
    let model = MoeModel::load(
        bundled_model_path(),
        &LoadOptions {
            spec: Some(spec.clone()),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(model.spec().num_experts, spec.num_experts);
    let mut wrong = spec;
    wrong.num_experts = 32;
    let err = MoeModel::load(
        bundled_model_path(),
        &LoadOptions {
            spec: Some(wrong),
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::SpecMismatch { .. }), "{err}");
    assert!(err.to_string().contains("32 experts"), "{err}");
}

#[test]
fn errors_name_the_model_and_the_node() {
    let err = MoeModel::load(data("no_router.onnx"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NoRouter { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("model no_router: no router found"),
        "{err}"
    );

    let err = MoeModel::load(
        bundled_model_path(),
        &LoadOptions {
            routers: RouterSelector::Names(vec![
                "model.layers.0.mlp.router_logits".into(),
                "model.layers.9.mlp.gate".into(),
            ]),
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::RouterNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("tiny-qwen3-moe") && msg.contains("\"model.layers.9.mlp.gate\""),
        "{msg}"
    );

    let err = MoeModel::load(
        bundled_model_path(),
        &LoadOptions {
            routers: RouterSelector::NamePatterns(vec!["*no_such_router*".into()]),
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("*no_such_router*"), "{err}");

    // The TopK's indices are not logits.
    let err = MoeModel::load(
        bundled_model_path(),
        &LoadOptions {
            routers: RouterSelector::Names(vec!["model.layers.1.mlp.topk:1".into()]),
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadRouterName { .. }), "{err}");
    assert!(
        err.to_string().contains("\"model.layers.1.mlp.topk:1\"")
            && err.to_string().contains("RouterSelector::Tensors"),
        "{err}"
    );

    let err = MoeModel::load(data("unsupported_op.onnx"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedOperator { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("unsupported_op")
            && msg.contains("\"moe.dispatch\"")
            && msg.contains("FancyExpertDispatch"),
        "{msg}"
    );

    let err = MoeModel::load(data("missing.onnx"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err}");

    // Languages that do not cover the tokens: the recorder's error names the router node.
    let model = MoeModel::load(bundled_model_path(), &LoadOptions::default()).unwrap();
    let recorder = Recorder::new(model.spec().clone()).unwrap();
    let mut batch = PackedBatch::new();
    batch.push(&byte_tokens("abc"), recorder.language("en"), None);
    let out = model.run(batch.inputs()).unwrap();
    let langs = [recorder.language("en")];
    let err = model
        .record(
            &recorder,
            &out,
            Languages::PerToken(&langs),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("\"model.layers.0.mlp.gate\""),
        "{err}"
    );
}

#[test]
fn models_without_a_top_k_record_the_top_k_of_the_logits() {
    // Named routers with the TopK hidden: a top-k must be given, and is computed from logits.
    let names: Vec<String> = (0..4)
        .map(|i| format!("model.layers.{i}.mlp.router_logits"))
        .collect();
    let model = MoeModel::load(
        bundled_model_path(),
        &LoadOptions {
            routers: RouterSelector::Names(names),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let recorder = Recorder::new(model.spec().clone()).unwrap();
    let mut batch = PackedBatch::new();
    batch.push(&byte_tokens(TEXTS[2].1), recorder.language("ja"), None);
    let out = model.run(batch.inputs()).unwrap();
    let mut ids = Vec::new();
    moescope_tract::top_k_into(model.router_logits(&out, 3).unwrap(), 16, 4, &mut ids);
    let theirs: Vec<u32> = model
        .topk_ids(&out, 3)
        .unwrap()
        .iter()
        .map(|&i| i as u32)
        .collect();
    assert_eq!(ids, theirs);
}

#[test]
fn inputs_of_no_supported_layout_are_refused_at_load_naming_both_sides() {
    let err = MoeModel::load(data("float_input.onnx"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Inputs { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("x float [1, T, 8]")
            && msg.contains("no input named input_ids")
            && msg.contains("packed: input_ids, position_ids, segment_ids")
            && msg.contains("Hugging Face: input_ids [B, S]"),
        "{msg}"
    );
}

#[test]
fn routers_without_layer_numbers_are_numbered_by_depth_with_a_warning() {
    let model = MoeModel::load(data("two_routers.onnx"), &LoadOptions::default()).unwrap();
    assert_eq!(model.spec().moe_layers, [0, 1]);
    assert_eq!(
        model.layout(),
        moescope_tract::InputLayout::HuggingFace {
            attention_mask: false,
            position_ids: false
        }
    );
    let w = model.warnings().join("\n");
    assert!(
        w.contains("numbered 0..2 by depth") && w.contains("config.json"),
        "{w}"
    );

    // Named out of graph order: taken in graph order, with a warning.
    let named = MoeModel::load(
        data("two_routers.onnx"),
        &LoadOptions {
            routers: RouterSelector::Names(vec!["second_gate".into(), "first_probs".into()]),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(named.routers(), model.routers());
    assert_eq!(named.routers()[0].gate, "first_gate");
    assert!(
        named
            .warnings()
            .iter()
            .any(|w| w.contains("out of graph order")),
        "{:?}",
        named.warnings()
    );
    // The same router twice is refused.
    let err = MoeModel::load(
        data("two_routers.onnx"),
        &LoadOptions {
            routers: RouterSelector::Names(vec!["first_gate".into(), "first_probs".into()]),
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("same router"), "{err}");
}
