//! OpenTelemetry end to end: simulated routing → recorder → publisher → observable
//! instruments → the SDK's in-memory exporter, checked against the offline analysis
//! (`moescope analyze`) on the round's own snapshot.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use moescope_core::{ModelSpec, Recorder};
use moescope_otel::OtelSink;
use moescope_publish::{
    LanguageSelection, LayerDetail, LayerSelection, Publisher, PublisherConfig, Sink,
};
use moescope_sim::{Collapse, LanguageProfile, Simulator};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

type Points = BTreeMap<(String, Vec<(String, String)>), f64>;

fn collect(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> Points {
    exporter.reset();
    provider.force_flush().unwrap();
    let mut out = Points::new();
    for rm in exporter.get_finished_metrics().unwrap() {
        for scope in rm.scope_metrics() {
            for metric in scope.metrics() {
                let name = metric.name().to_owned();
                let mut add = |attrs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>,
                               v: f64| {
                    let mut a: Vec<(String, String)> = attrs
                        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                        .collect();
                    a.sort();
                    out.insert((name.clone(), a), v);
                };
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => g
                        .data_points()
                        .for_each(|p| add(&mut p.attributes(), p.value())),
                    AggregatedMetrics::F64(MetricData::Sum(s)) => s
                        .data_points()
                        .for_each(|p| add(&mut p.attributes(), p.value())),
                    _ => {}
                }
            }
        }
    }
    out
}

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let mut a: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    a.sort();
    (name.to_owned(), a)
}

#[test]
fn otel_instruments_carry_what_analyze_computes() {
    const MODEL: &str = "olmoe-1b-7b";
    let spec = ModelSpec::preset(MODEL).unwrap();
    let recorder = Arc::new(Recorder::new(spec.clone()).unwrap());
    let mut sim = Simulator::new(
        spec,
        vec![
            LanguageProfile::uniform_entropy("en", 0.8, 5.0),
            LanguageProfile::uniform_entropy("he", 0.2, 4.8),
        ],
        3,
    )
    .unwrap();
    sim.set_collapse(
        "he",
        Some(Collapse {
            deep_layers: 2,
            experts: 10,
        }),
    )
    .unwrap();
    for _ in 0..40 {
        sim.drive(&recorder, 128).unwrap();
    }
    // The default figures, plus every per-layer metric for Hebrew.
    let config = PublisherConfig {
        layer_detail: LayerDetail {
            languages: LanguageSelection::Only(vec!["he".into()]),
            layers: LayerSelection::All,
        },
        ..PublisherConfig::default()
    };
    let round = Publisher::new(recorder, config).unwrap().collect();

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let mut sink = OtelSink::new(&moescope_otel::meter(&provider));
    Sink::publish(&mut sink, &round.publication);
    let points = collect(&provider, &exporter);

    // The snapshot through its JSON form, as `moescope analyze` would read it.
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("otel_round.json");
    round.snapshot.write_json(&path).unwrap();
    let snapshot = moescope_core::Snapshot::read_json(&path).unwrap();
    let a = common::analysis_json(&snapshot, "en");

    let mut compared = 0;
    for row in a["layers"].as_array().unwrap() {
        let (layer, lang) = (row["layer"].to_string(), row["lang"].as_str().unwrap());
        let labels = [("model", MODEL), ("layer", layer.as_str()), ("lang", lang)];
        for (metric, field) in [
            ("moe_routing_usage_entropy_bits", "usage_entropy_bits"),
            ("moe_routing_gini", "gini"),
        ] {
            let Some(&got) = points.get(&key(metric, &labels)) else {
                // Gini is layer detail: Hebrew only.
                assert!(
                    metric == "moe_routing_gini" && lang == "en",
                    "{metric} {labels:?}"
                );
                continue;
            };
            assert_eq!(got, row[field].as_f64().unwrap(), "{metric} {labels:?}");
            compared += 1;
        }
    }
    for row in a["pairs"].as_array().unwrap() {
        let (layer, lang) = (row["layer"].to_string(), row["lang"].as_str().unwrap());
        let labels = [
            ("model", MODEL),
            ("layer", layer.as_str()),
            ("lang", lang),
            ("reference", "en"),
        ];
        let got = points[&key("moe_routing_js_divergence_bits", &labels)];
        assert_eq!(got, row["js_divergence_bits"].as_f64().unwrap());
        compared += 1;
    }
    let he = a["collapse"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["lang"] == "he")
        .unwrap();
    let got = points[&key(
        "moe_routing_deep_collapse_score_bits",
        &[("model", MODEL), ("lang", "he"), ("reference", "en")],
    )];
    assert_eq!(got, he["score_bits"].as_f64().unwrap());
    assert!(got > 1.0, "the planted collapse shows: {got}");
    // Usage entropy of both languages, Gini of Hebrew, JSD of Hebrew against English.
    assert_eq!(compared, 2 * 16 + 16 + 16);
    // The counter of Hebrew tokens equals the window's estimate (nothing has left the window).
    let tokens = points[&key(
        "moe_routing_tokens_total",
        &[("model", MODEL), ("lang", "he")],
    )];
    assert_eq!(tokens, round.snapshot.languages["he"].tokens.round());
}
