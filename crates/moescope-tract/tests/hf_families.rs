//! Real exports of transformers' own MoE classes (tiny random weights, see
//! `models/hf/README.md`): what moescope records equals what transformers routed, token by
//! token, for every family.

use std::path::PathBuf;

use moescope_core::DropReason;
use moescope_core::{Languages, ModelSpec, Recorder};
use moescope_tract::{
    Error, LoadOptions, MoeModel, RouterSelector, RouterTensors, Scoring, TVec, TokenBatch,
};
use serde_json::Value;
use tract_onnx::prelude::Framework;

fn folder(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join("hf")
        .join(family)
}

fn expected(family: &str) -> Value {
    let text = std::fs::read_to_string(folder(family).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn config(family: &str) -> ModelSpec {
    ModelSpec::from_hf_config(folder(family).join("config.json")).unwrap()
}

fn load(family: &str, options: LoadOptions) -> MoeModel {
    MoeModel::load(folder(family).join("model.onnx"), &options)
        .unwrap_or_else(|e| panic!("{family}: {e}"))
}

/// One request at a time through `model`; returns the recorder.
fn record_all(model: &MoeModel, want: &Value) -> Recorder {
    let recorder = Recorder::new(model.spec().clone()).unwrap();
    let mut scratch = Vec::new();
    for (i, req) in want["requests"].as_array().unwrap().iter().enumerate() {
        let tokens: Vec<i64> = req["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let mut batch = TokenBatch::new();
        batch.push(
            &tokens,
            recorder.language(req["lang"].as_str().unwrap()),
            Some(i as u64),
        );
        let inputs = model.inputs(&batch).unwrap();
        let out = model.run(inputs.values).unwrap();
        let rec = model
            .record(
                &recorder,
                &out,
                Languages::Segments(&inputs.segments),
                &mut scratch,
            )
            .unwrap();
        assert_eq!(rec.recorded as usize, tokens.len() * model.routers().len());
        assert_eq!(rec.dropped, 0);
        check_scores(model, &out, req);
    }
    recorder
}

/// The recorded selection scores of the first tokens equal transformers' (softmax, or
/// sigmoid plus the correction bias).
/// Routers with no scoring function before their top-k (GPT-OSS) record their logits.
fn check_scores(model: &MoeModel, out: &moescope_tract::MoeOutputs, req: &Value) {
    let e = model.spec().num_experts as usize;
    for (layer, r) in model.routers().iter().enumerate() {
        let (key, got) = match r.scoring {
            Scoring::Logits => ("logits", model.router_logits(out, layer).unwrap()),
            _ => ("scores", model.router_scores(out, layer).unwrap()),
        };
        let rows = &req[key][layer];
        for (t, row) in rows.as_array().unwrap().iter().enumerate() {
            for (x, w) in row.as_array().unwrap().iter().enumerate() {
                let (g, w) = (f64::from(got[t * e + x]), w.as_f64().unwrap());
                assert!(
                    (g - w).abs() < 1e-4,
                    "layer {layer} token {t} expert {x}: {g} vs {w}"
                );
            }
        }
    }
}

/// Per language, per MoE layer, per expert: tokens routed there by transformers.
fn check_counts(family: &str, model: &MoeModel, recorder: &Recorder, want: &Value) {
    let e = model.spec().num_experts as usize;
    let snap = recorder.snapshot();
    for req in want["requests"].as_array().unwrap() {
        let lang = req["lang"].as_str().unwrap();
        for (layer, tokens) in req["routing"].as_array().unwrap().iter().enumerate() {
            let mut counts = vec![0.0; e];
            for ids in tokens.as_array().unwrap() {
                for id in ids.as_array().unwrap() {
                    counts[id.as_u64().unwrap() as usize] += 1.0;
                }
            }
            let got = &snap.languages[lang].layers[layer];
            assert_eq!(
                got.expert_tokens, counts,
                "{family}: {lang}, MoE layer {layer}"
            );
            assert_eq!(got.tokens as usize, tokens.as_array().unwrap().len());
        }
    }
}

fn numbers(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Graph shape alone finds the routers, with k and E and the layer numbers right, and the
/// counts match transformers exactly.
fn family_records_what_transformers_routes(family: &str, options: LoadOptions) -> MoeModel {
    let want = expected(family);
    let model = load(family, options);
    let spec = config(family);
    assert_eq!(model.spec().num_experts, spec.num_experts, "{family}: E");
    assert_eq!(
        model.spec().top_k as u64,
        want["top_k"].as_u64().unwrap(),
        "{family}: k"
    );
    assert_eq!(model.spec().top_k, spec.top_k, "{family}: k");
    assert_eq!(
        model.spec().moe_layers,
        numbers(&want["moe_layers"]),
        "{family}: layers"
    );
    assert_eq!(model.spec().moe_layers, spec.moe_layers, "{family}: layers");
    let recorder = record_all(&model, &want);
    check_counts(family, &model, &recorder, &want);
    model
}

#[test]
fn qwen3_moe_with_dense_layers() {
    let m = family_records_what_transformers_routes("qwen3_moe", LoadOptions::default());
    assert!(m.routers().iter().all(|r| r.scoring == Scoring::Softmax));
    assert!(m.warnings().is_empty(), "{:?}", m.warnings());
}

#[test]
fn qwen3_moe_exported_by_dynamo_is_numbered_from_node_metadata() {
    // The dynamo exporter names nodes `node_linear_N`: only the metadata has the layers.
    let m = family_records_what_transformers_routes("qwen3_moe_dynamo", LoadOptions::default());
    assert!(
        m.routers().iter().all(|r| !r.gate.contains("layers")),
        "{:?}",
        m.routers()
    );
    assert!(m.warnings().is_empty(), "{:?}", m.warnings());
}

#[test]
fn qwen2_moe_with_its_sigmoid_shared_expert_gate() {
    let m = family_records_what_transformers_routes("qwen2_moe", LoadOptions::default());
    assert_eq!(m.routers().len(), 3);
    assert!(m.routers().iter().all(|r| r.scoring == Scoring::Softmax));
}

#[test]
fn olmoe() {
    family_records_what_transformers_routes("olmoe", LoadOptions::default());
}

#[test]
fn mixtral() {
    family_records_what_transformers_routes("mixtral", LoadOptions::default());
}

#[test]
fn deepseek_v3_one_group_records_the_final_top_k() {
    let m = family_records_what_transformers_routes("deepseek_v3", LoadOptions::default());
    assert!(m
        .routers()
        .iter()
        .all(|r| r.scoring == Scoring::SigmoidWithBias));
}

#[test]
fn deepseek_v3_group_limited_routing_records_the_final_top_k() {
    let m = family_records_what_transformers_routes("deepseek_v3_grouped", LoadOptions::default());
    assert!(m
        .routers()
        .iter()
        .all(|r| r.scoring == Scoring::SigmoidWithBias));
    // The config's spec is accepted (top-4, not the per-group top-2).
    let spec = config("deepseek_v3_grouped");
    family_records_what_transformers_routes(
        "deepseek_v3_grouped",
        LoadOptions {
            spec: Some(spec),
            ..LoadOptions::default()
        },
    );
}

#[test]
fn glm4_moe_group_limited_routing() {
    let m = family_records_what_transformers_routes("glm4_moe", LoadOptions::default());
    assert!(m
        .routers()
        .iter()
        .all(|r| r.scoring == Scoring::SigmoidWithBias));
}

/// The input of the last `TopK` of each gate: the masked selection scores.
fn masked_scores(family: &str) -> Vec<String> {
    let proto = tract_onnx::onnx()
        .proto_model_for_path(folder(family).join("model.onnx"))
        .unwrap();
    let graph = proto.graph.unwrap();
    let topks: Vec<_> = graph.node.iter().filter(|n| n.op_type == "TopK").collect();
    // Three TopKs per group-limited router: per-group top-2, top groups, final.
    assert_eq!(topks.len() % 3, 0);
    topks.chunks(3).map(|c| c[2].input[0].clone()).collect()
}

#[test]
fn group_limited_routers_named_by_gate_by_masked_scores_or_by_tensors() {
    let family = "deepseek_v3_grouped";
    let want = expected(family);
    let by_shape = load(family, LoadOptions::default());
    let gates: Vec<String> = by_shape.routers().iter().map(|r| r.gate.clone()).collect();
    let masked = masked_scores(family);
    assert_eq!(masked.len(), gates.len());
    for names in [gates, masked.clone()] {
        let m = load(
            family,
            LoadOptions {
                routers: RouterSelector::Names(names),
                ..LoadOptions::default()
            },
        );
        assert_eq!(m.routers(), by_shape.routers());
        check_counts(family, &m, &record_all(&m, &want), &want);
    }
    // Ids and the masked (−inf) scores named separately: no token is dropped.
    let tensors = by_shape
        .routers()
        .iter()
        .zip(&masked)
        .map(|(r, s)| RouterTensors {
            ids: r.topk_ids.clone().unwrap(),
            scores: s.clone(),
            scores_are_logits: false,
        })
        .collect();
    let m = load(
        family,
        LoadOptions {
            routers: RouterSelector::Tensors(tensors),
            ..LoadOptions::default()
        },
    );
    assert!(m.routers().iter().all(|r| r.scoring == Scoring::Given));
    assert_eq!(m.spec().top_k, 4);
    let recorder = Recorder::new(m.spec().clone()).unwrap();
    let req = &want["requests"][1];
    let tokens: Vec<i64> = req["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let mut batch = TokenBatch::new();
    batch.push(&tokens, recorder.language("he"), None);
    let inputs = m.inputs(&batch).unwrap();
    let out = m.run(inputs.values).unwrap();
    assert!(m
        .router_scores(&out, 0)
        .unwrap()
        .contains(&f32::NEG_INFINITY));
    let rec = m
        .record(
            &recorder,
            &out,
            Languages::Segments(&inputs.segments),
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(rec.dropped, 0);
    assert_eq!(rec.recorded as usize, tokens.len() * 2);
    assert_eq!(recorder.dropped(DropReason::NonFinite), 0);
}

#[test]
fn fixed_token_count_pads_and_never_records_the_padding() {
    let family = "qwen3_moe";
    let want = expected(family);
    let m = load(
        family,
        LoadOptions {
            fixed_tokens: Some(64),
            ..LoadOptions::default()
        },
    );
    assert_eq!(m.fixed_tokens(), Some(64));
    let recorder = record_all(&m, &want);
    check_counts(family, &m, &recorder, &want);
    // Too long for the fixed length, or several requests at once: said plainly.
    let mut batch = TokenBatch::new();
    batch.push(&[7; 65], recorder.language("en"), None);
    let err = m.inputs(&batch).unwrap_err();
    assert!(
        err.to_string()
            .contains("65 tokens do not fit the model's fixed length of 64"),
        "{err}"
    );
}

#[test]
fn a_wrong_number_of_inputs_names_what_the_model_takes() {
    let m = load("mixtral", LoadOptions::default());
    let one = moescope_tract::Tensor::from_shape(&[1, 2], &[1i64, 2]).unwrap();
    let err = m.run(TVec::from_iter([one.into()])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("1 inputs given, the model takes 2 (input_ids, attention_mask"),
        "{msg}"
    );
}

#[test]
fn a_recording_failure_leaves_inference_alone_and_is_counted() {
    let m = load("olmoe", LoadOptions::default());
    let recorder = Recorder::new(m.spec().clone()).unwrap();
    let mut batch = TokenBatch::new();
    batch.push(&[72, 105, 33], recorder.language("en"), None);
    let inputs = m.inputs(&batch).unwrap();
    let out = m.run(inputs.values).unwrap();
    assert_eq!(out.model_outputs()[0].shape(), &[1, 3, 256]);
    // Languages for 2 tokens, not 3: every layer is tried, each one's tokens counted as dropped.
    let langs = [recorder.language("en"); 2];
    let err = m
        .record(
            &recorder,
            &out,
            Languages::PerToken(&langs),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Record { .. }), "{err}");
    assert_eq!(recorder.dropped(DropReason::ShapeMismatch), 3 * 3);
    // The outputs are still there, and the next good batch records.
    let rec = m
        .record(
            &recorder,
            &out,
            Languages::Segments(&inputs.segments),
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(rec.recorded, 9);
}

#[test]
fn a_broad_name_pattern_says_what_it_matched() {
    let m = load(
        "qwen2_moe",
        LoadOptions {
            routers: RouterSelector::NamePatterns(vec!["*mlp*".into()]),
            ..LoadOptions::default()
        },
    );
    assert_eq!(
        m.routers(),
        load("qwen2_moe", LoadOptions::default()).routers()
    );
    let w = m.warnings().join("\n");
    assert!(w.contains("3 routers (matches per router: ["), "{w}");
}

#[test]
fn gpt_oss_takes_its_top_k_on_the_logits() {
    let m = family_records_what_transformers_routes("gpt_oss", LoadOptions::default());
    assert!(m.routers().iter().all(|r| r.scoring == Scoring::Logits));
}

#[test]
fn granitemoe() {
    family_records_what_transformers_routes("granitemoe", LoadOptions::default());
}

#[test]
fn phimoe_routes_without_a_top_k_and_is_recorded_from_named_tensors() {
    // Its sparsemixer takes two ArgMax in turn: no TopK, so graph shape finds nothing and
    // says what to do.
    let err =
        MoeModel::load(folder("phimoe").join("model.onnx"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NoRouter { .. }), "{err}");
    assert!(err.to_string().contains("RouterSelector::Tensors"), "{err}");
    let tensors = (0..3)
        .map(|i| RouterTensors {
            ids: format!("/model/model/layers.{i}/mlp/router/Concat_1_output_0"),
            scores: format!("/model/model/layers.{i}/mlp/router/MatMul_output_0"),
            scores_are_logits: true,
        })
        .collect();
    let m = family_records_what_transformers_routes(
        "phimoe",
        LoadOptions {
            routers: RouterSelector::Tensors(tensors),
            ..LoadOptions::default()
        },
    );
    assert!(m.warnings().is_empty(), "{:?}", m.warnings());
}

#[test]
fn exaone_moe() {
    family_records_what_transformers_routes("exaone_moe", LoadOptions::default());
}

#[test]
fn minimax() {
    family_records_what_transformers_routes("minimax", LoadOptions::default());
}

#[test]
fn transformers_own_mask_needs_a_fixed_token_count_and_the_error_says_so() {
    let family = "qwen3_moe_hf_mask";
    // With symbolic shapes it loads, but tract's typing of the mask is wrong at run time.
    let m = load(family, LoadOptions::default());
    let want = expected(family);
    let tokens: Vec<i64> = want["requests"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let mut batch = TokenBatch::new();
    batch.push(&tokens, moescope_core::LangId::UND, None);
    let err = m.run(m.inputs(&batch).unwrap().values).unwrap_err();
    assert!(matches!(err, Error::Run { .. }), "{err}");
    assert!(
        err.to_string().contains("LoadOptions::fixed_tokens"),
        "{err}"
    );
    // Pinned to 64 tokens and padded, it records exactly what transformers routed.
    family_records_what_transformers_routes(
        family,
        LoadOptions {
            fixed_tokens: Some(64),
            ..LoadOptions::default()
        },
    );
}

/// Outputs handed to the wrong model (here Mixtral's, 8 experts, to GLM-4.5's routers, 16) cannot be
/// read as routing: `record` returns an error naming the router, counts the batch's tokens as
/// `shape_mismatch` drops for each layer, and never panics.
#[test]
fn unreadable_router_outputs_are_counted_not_panicked_on() {
    let mixtral = load("mixtral", LoadOptions::default());
    let glm = load("glm4_moe", LoadOptions::default());
    assert_ne!(mixtral.spec().num_experts, glm.spec().num_experts);
    let recorder = Recorder::new(glm.spec().clone()).unwrap();
    let mut batch = TokenBatch::new();
    batch.push(&[72, 101, 108, 108, 111], recorder.language("en"), Some(1));
    let inputs = mixtral.inputs(&batch).unwrap();
    let out = mixtral.run(inputs.values).unwrap();
    let err = glm
        .record(
            &recorder,
            &out,
            Languages::Segments(&inputs.segments),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let layers = glm.spec().num_moe_layers() as u64;
    assert_eq!(recorder.dropped(DropReason::ShapeMismatch), 5 * layers);
    assert!(recorder.snapshot().languages.is_empty());
}
