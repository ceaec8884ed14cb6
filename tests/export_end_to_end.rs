//! The export path end to end: simulated routing → recorder → publisher → `/metrics` over
//! HTTP, checked against the offline analysis (`moescope analyze`) on the very snapshot the
//! round was computed from,
//! and the collapse flag through a collapse and a recovery, hysteresis included.

use std::time::Duration;

use moescope_core::{ModelSpec, WindowConfig};
use moescope_prometheus::PrometheusEndpoint;
use moescope_publish::{
    LanguageSelection, LayerDetail, LayerSelection, Metric, Publisher, PublisherConfig, Sink,
};
use moescope_sim::{Collapse, LanguageProfile, Simulator};

mod common;

use common::{
    analysis_json, close, http_get, parse_exposition, recorder_with_clock, series, Exposition,
};

const MODEL: &str = "olmoe-1b-7b";

#[test]
fn metrics_endpoint_matches_analyze_and_tracks_collapse_with_hysteresis() {
    let spec = ModelSpec::preset(MODEL).unwrap(); // 16 MoE layers, 64 experts, top-8
    let (recorder, clock) = recorder_with_clock(
        spec.clone(),
        WindowConfig {
            bucket_ms: 1_000,
            buckets: 3,
        },
    );
    let mut sim = Simulator::new(
        spec,
        vec![
            LanguageProfile::uniform_entropy("en", 0.7, 5.0),
            LanguageProfile::uniform_entropy("he", 0.15, 4.8),
            LanguageProfile::uniform_entropy("ja", 0.15, 4.9),
        ],
        7,
    )
    .unwrap();
    let endpoint = PrometheusEndpoint::start("127.0.0.1:0", Duration::from_secs(60)).unwrap();
    let mut sink = endpoint.sink();
    // Every per-layer metric of every language, to compare all of them with analyze.
    let config = PublisherConfig {
        layer_detail: LayerDetail {
            languages: LanguageSelection::All,
            layers: LayerSelection::All,
        },
        ..PublisherConfig::default()
    };
    let mut publisher = Publisher::new(recorder.clone(), config).unwrap();
    // One round: 30 steps of 128 tokens (≈ 580 Hebrew tokens per layer), publish, scrape.
    let mut round = |sim: &mut Simulator| {
        for _ in 0..30 {
            sim.drive(&recorder, 128).unwrap();
        }
        let round = publisher.collect();
        sink.publish(&round.publication);
        {
            let (head, body) = http_get(endpoint.local_addr(), "/metrics");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            (round, parse_exposition(&body))
        }
    };

    // Healthy routing: every published value is on the endpoint and equals analyze's.
    let (r, e) = round(&mut sim);
    for &m in Metric::ALL {
        let d = m.descriptor();
        let present = r.publication.samples_of(m).next().is_some();
        if present {
            assert!(e.help.contains(d.name), "no HELP for {}", d.name);
            let ty = format!("{:?}", d.kind).to_lowercase();
            assert_eq!(e.types.get(d.name), Some(&ty), "TYPE of {}", d.name);
        }
    }
    // The snapshot through its JSON form, as `moescope analyze` would read it.
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("export_round.json");
    r.snapshot.write_json(&path).unwrap();
    let a = analysis_json(&moescope_core::Snapshot::read_json(&path).unwrap(), "en");
    let mut compared = 0;
    for row in a["layers"].as_array().unwrap() {
        let (layer, lang) = (row["layer"].to_string(), row["lang"].as_str().unwrap());
        for (metric, field) in [
            ("moe_routing_usage_entropy_bits", "usage_entropy_bits"),
            ("moe_routing_gini", "gini"),
            ("moe_routing_active_experts", "active_experts"),
            (
                "moe_routing_selection_entropy_bits",
                "selection_entropy_bits",
            ),
        ] {
            let key = series(
                metric,
                &[("model", MODEL), ("layer", &layer), ("lang", lang)],
            );
            let got = e.samples[&key];
            let want = row[field].as_f64().unwrap();
            assert!(close(got, want), "{key:?}: endpoint {got}, analyze {want}");
            compared += 1;
        }
    }
    for row in a["pairs"].as_array().unwrap() {
        let (layer, lang) = (row["layer"].to_string(), row["lang"].as_str().unwrap());
        for (metric, field) in [
            ("moe_routing_entropy_gap_bits", "entropy_gap_bits"),
            ("moe_routing_cosine_similarity", "cosine_similarity"),
            ("moe_routing_js_divergence_bits", "js_divergence_bits"),
            ("moe_routing_topk_overlap_ratio", "topk_overlap_ratio"),
            ("moe_routing_spearman_rho", "spearman_rho"),
            ("moe_routing_kendall_tau_b", "kendall_tau_b"),
        ] {
            let labels = [
                ("model", MODEL),
                ("layer", layer.as_str()),
                ("lang", lang),
                ("reference", "en"),
            ];
            let got = e.samples[&series(metric, &labels)];
            let want = row[field].as_f64().unwrap();
            assert!(close(got, want), "{metric} {labels:?}: {got} vs {want}");
            compared += 1;
        }
    }
    for row in a["collapse"].as_array().unwrap() {
        let lang = row["lang"].as_str().unwrap();
        let key = series(
            "moe_routing_deep_collapse_score_bits",
            &[("model", MODEL), ("lang", lang), ("reference", "en")],
        );
        assert!(close(e.samples[&key], row["score_bits"].as_f64().unwrap()));
        compared += 1;
    }
    for row in a["depth_means"].as_array().unwrap() {
        let lang = row["lang"].as_str().unwrap();
        for field in ["deep_usage_entropy_bits", "middle_usage_entropy_bits"] {
            let key = series(
                &format!("moe_routing_{field}"),
                &[("model", MODEL), ("lang", lang)],
            );
            assert!(
                close(e.samples[&key], row[field].as_f64().unwrap()),
                "{key:?}"
            );
            compared += 1;
        }
    }
    // 3 languages × 16 layers × 4 + 2 × 16 × 6 + 2 collapse scores + 3 × 2 depth means.
    assert_eq!(compared, 3 * 16 * 4 + 2 * 16 * 6 + 2 + 3 * 2);
    let flag = |e: &Exposition, lang: &str| {
        e.samples[&series(
            "moe_routing_deep_collapse",
            &[("model", MODEL), ("lang", lang), ("reference", "en")],
        )]
    };
    assert_eq!(flag(&e, "he"), 0.0);

    // Hebrew collapses in its deep layers (OLMoE: the last 2 of 16) onto 10 experts. The
    // window forgets the healthy buckets first.
    clock.advance_ms(10_000);
    sim.set_collapse(
        "he",
        Some(Collapse {
            deep_layers: 2,
            experts: 10,
        }),
    )
    .unwrap();
    let mut he_flags = Vec::new();
    for _ in 0..4 {
        let (_, e) = round(&mut sim);
        he_flags.push(flag(&e, "he"));
        assert_eq!(flag(&e, "ja"), 0.0, "ja never collapses");
    }
    // Raised on the third consecutive round above θ, not before.
    assert_eq!(he_flags, [0.0, 0.0, 1.0, 1.0]);

    // Recovery: once the collapsed buckets have left the window, cleared on the third round.
    sim.set_collapse("he", None).unwrap();
    clock.advance_ms(10_000);
    let mut he_flags = Vec::new();
    for _ in 0..4 {
        let (_, e) = round(&mut sim);
        he_flags.push(flag(&e, "he"));
    }
    assert_eq!(he_flags, [1.0, 1.0, 0.0, 0.0]);
}
