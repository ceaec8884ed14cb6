//! Publishes rounds through the sink into an SDK pipeline with the in-memory exporter and
//! checks what comes out against the publication, through the public API only.

use std::collections::BTreeMap;

use moescope_otel::{otel_unit, OtelSink};
use moescope_publish::{Kind, Metric, Publication, Sample, Summary, CATALOGUE};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider, Temporality,
};

/// One exported metric, flattened: name, description, unit, kind, and its points keyed by
/// their attributes (as "key=value" pairs, sorted).
#[derive(Debug)]
struct Exported {
    description: String,
    unit: String,
    kind: Kind,
    monotonic_cumulative: bool,
    points: BTreeMap<Vec<(String, String)>, f64>,
}

const ACTIVE_EXPERTS: Metric = Metric::ActiveExperts;
const ENTROPY_GAP_BITS: Metric = Metric::EntropyGapBits;
const GINI: Metric = Metric::Gini;
const MONITOR_RECORD_SECONDS: Metric = Metric::MonitorRecordSeconds;
const TOKENS_TOTAL: Metric = Metric::TokensTotal;
const USAGE_ENTROPY_BITS: Metric = Metric::UsageEntropyBits;

fn sample(metric: Metric, labels: &[&str], value: f64) -> Sample {
    Sample {
        metric,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        value,
    }
}

fn pipeline() -> (SdkMeterProvider, InMemoryMetricExporter, OtelSink) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let sink = OtelSink::new(&moescope_otel::meter(&provider));
    (provider, exporter, sink)
}

/// Forces a collection and returns the metrics of that export only, by name (none when
/// nothing was observed: the reader then skips the export).
fn collect(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
) -> BTreeMap<String, Exported> {
    exporter.reset();
    provider.force_flush().expect("force_flush");
    let batches = exporter.get_finished_metrics().expect("exported metrics");
    assert!(batches.len() <= 1, "one collection, at most one export");
    batches.first().map(flatten).unwrap_or_default()
}

fn flatten(resource_metrics: &ResourceMetrics) -> BTreeMap<String, Exported> {
    let mut out = BTreeMap::new();
    for scope in resource_metrics.scope_metrics() {
        assert_eq!(scope.scope().name(), moescope_otel::SCOPE_NAME);
        for metric in scope.metrics() {
            let attrs = |it: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                let mut v: Vec<(String, String)> = it
                    .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect();
                v.sort();
                v
            };
            let (kind, monotonic_cumulative, points) = match metric.data() {
                AggregatedMetrics::F64(MetricData::Gauge(g)) => (
                    Kind::Gauge,
                    false,
                    g.data_points()
                        .map(|p| (attrs(&mut p.attributes()), p.value()))
                        .collect(),
                ),
                AggregatedMetrics::F64(MetricData::Sum(s)) => (
                    Kind::Counter,
                    s.is_monotonic() && s.temporality() == Temporality::Cumulative,
                    s.data_points()
                        .map(|p| (attrs(&mut p.attributes()), p.value()))
                        .collect(),
                ),
                other => panic!("{}: unexpected data {other:?}", metric.name()),
            };
            let previous = out.insert(
                metric.name().to_string(),
                Exported {
                    description: metric.description().to_string(),
                    unit: metric.unit().to_string(),
                    kind,
                    monotonic_cumulative,
                    points,
                },
            );
            assert!(previous.is_none(), "{} exported twice", metric.name());
        }
    }
    out
}

/// The publication's samples of each metric, keyed like `Exported::points`.
fn expected(p: &Publication) -> BTreeMap<String, BTreeMap<Vec<(String, String)>, f64>> {
    let mut out: BTreeMap<String, BTreeMap<_, _>> = BTreeMap::new();
    for s in &p.samples {
        let d = s.metric.descriptor();
        let mut key: Vec<(String, String)> = d
            .labels
            .iter()
            .zip(&s.labels)
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        key.sort();
        out.entry(d.name.to_string())
            .or_default()
            .insert(key, s.value);
    }
    for s in &p.summaries {
        let d = s.metric.descriptor();
        for &(q, v) in &s.quantiles {
            let mut key: Vec<(String, String)> = d
                .labels
                .iter()
                .zip(&s.labels)
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            key.push(("quantile".into(), q.to_string()));
            key.sort();
            out.entry(d.name.to_owned()).or_default().insert(key, v);
        }
    }
    out
}

fn first_round() -> Publication {
    Publication {
        samples: vec![
            sample(USAGE_ENTROPY_BITS, &["qwen3", "46", "en"], 6.25),
            sample(USAGE_ENTROPY_BITS, &["qwen3", "47", "en"], 6.5),
            sample(USAGE_ENTROPY_BITS, &["qwen3", "47", "he"], 3.125),
            sample(USAGE_ENTROPY_BITS, &["qwen3", "47", "ja"], 4.75),
            sample(ENTROPY_GAP_BITS, &["qwen3", "47", "he", "en"], 3.375),
            sample(GINI, &["qwen3", "47", "he"], 0.625),
            sample(ACTIVE_EXPERTS, &["qwen3", "47", "he"], 9.0),
            sample(TOKENS_TOTAL, &["qwen3", "en"], 120_000.0),
            sample(TOKENS_TOTAL, &["qwen3", "he"], 4_096.0),
        ],
        summaries: vec![Summary {
            metric: MONITOR_RECORD_SECONDS,
            labels: vec!["qwen3".into()],
            quantiles: vec![(0.5, 1.25e-7), (0.99, 2.5e-7)],
            count: 64,
            sum: 1e-5,
        }],
    }
}

#[test]
fn exported_points_equal_the_publication() {
    let (provider, exporter, sink) = pipeline();
    let round = first_round();
    sink.publish(&round);
    let exported = collect(&provider, &exporter);
    let want = expected(&round);

    // Exactly the published metrics come out (instruments without samples export nothing).
    assert_eq!(
        exported.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for d in CATALOGUE {
        let Some(got) = exported.get(d.name) else {
            continue;
        };
        assert_eq!(got.description, d.help, "{}", d.name);
        assert_eq!(got.unit, otel_unit(d.unit), "{}", d.name);
        // A summary's quantiles are a gauge with a `quantile` attribute.
        let kind = if d.kind == Kind::Summary {
            Kind::Gauge
        } else {
            d.kind
        };
        assert_eq!(got.kind, kind, "{}", d.name);
        if d.kind == Kind::Counter {
            assert!(
                got.monotonic_cumulative,
                "{}: a cumulative monotonic sum",
                d.name
            );
        }
        assert_eq!(got.points, want[d.name], "{}", d.name);
    }
    // Units as documented, spot-checked by hand.
    assert_eq!(exported["moe_routing_usage_entropy_bits"].unit, "{bit}");
    assert_eq!(exported["moe_routing_gini"].unit, "");
    assert_eq!(exported["moe_routing_active_experts"].unit, "{expert}");
    assert_eq!(exported["moe_routing_tokens_total"].unit, "{token}");
    assert_eq!(exported["moe_routing_monitor_record_seconds"].unit, "s");
    // One attribute set in full.
    let he47: Vec<(String, String)> = [("lang", "he"), ("layer", "47"), ("model", "qwen3")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    assert_eq!(
        exported["moe_routing_usage_entropy_bits"].points[&he47],
        3.125
    );
}

#[test]
fn a_label_set_missing_from_the_next_round_disappears() {
    let (provider, exporter, sink) = pipeline();
    sink.publish(&first_round());
    let before = collect(&provider, &exporter);
    assert_eq!(before["moe_routing_usage_entropy_bits"].points.len(), 4);

    // Round two: Japanese stopped coming, Hebrew's entropy and count moved, Hebrew's Gini is
    // undefined this round (left out), and English's token counter is left out too.
    let mut second = first_round();
    second.samples.retain(|s| {
        let ja = s.labels.iter().any(|l| l == "ja");
        let en_tokens = s.metric == TOKENS_TOTAL && s.labels[1] == "en";
        !(ja || en_tokens || s.metric == GINI)
    });
    for s in &mut second.samples {
        if s.metric == USAGE_ENTROPY_BITS && s.labels[2] == "he" {
            s.value = 2.875;
        }
        if s.metric == TOKENS_TOTAL && s.labels[1] == "he" {
            s.value = 5_000.0;
        }
    }
    sink.publish(&second);
    let after = collect(&provider, &exporter);
    let want = expected(&second);
    assert!(
        !after.contains_key("moe_routing_gini"),
        "gini had no sample: nothing exported"
    );
    for (name, points) in &want {
        assert_eq!(&after[name].points, points, "{name}");
    }
    let entropy = &after["moe_routing_usage_entropy_bits"].points;
    assert_eq!(entropy.len(), 3);
    assert!(entropy
        .keys()
        .all(|k| !k.contains(&("lang".into(), "ja".into()))));
    let tokens = &after["moe_routing_tokens_total"].points;
    assert_eq!(tokens.values().copied().collect::<Vec<_>>(), [5_000.0]);

    // The counter's series can disappear too, and an empty round exports nothing at all.
    sink.publish(&Publication::default());
    let empty = collect(&provider, &exporter);
    assert!(empty.values().all(|m| m.points.is_empty()), "{empty:?}");
}

#[test]
fn non_finite_values_are_never_observed() {
    let (provider, exporter, sink) = pipeline();
    let mut round = first_round();
    round
        .samples
        .push(sample(GINI, &["qwen3", "47", "ja"], f64::NAN));
    round
        .samples
        .push(sample(GINI, &["qwen3", "47", "en"], f64::INFINITY));
    round
        .samples
        .push(sample(TOKENS_TOTAL, &["qwen3", "ja"], f64::NEG_INFINITY));
    // Malformed samples are skipped too: a wrong label count.
    round.samples.push(sample(GINI, &["qwen3", "ja"], 0.5));
    sink.publish(&round);
    let exported = collect(&provider, &exporter);
    for (name, m) in &exported {
        assert!(
            m.points.values().all(|v| v.is_finite()),
            "{name}: {:?}",
            m.points
        );
    }
    assert_eq!(exported["moe_routing_gini"].points.len(), 1);
    assert_eq!(exported["moe_routing_tokens_total"].points.len(), 2);
    assert_eq!(
        exported["moe_routing_gini"].points,
        expected(&first_round())["moe_routing_gini"]
    );
}

#[test]
fn dropping_the_sink_stops_observation() {
    let (provider, exporter, sink) = pipeline();
    sink.publish(&first_round());
    assert!(!collect(&provider, &exporter).is_empty());
    drop(sink);
    let after = collect(&provider, &exporter);
    assert!(after.values().all(|m| m.points.is_empty()), "{after:?}");
}

#[test]
fn publishing_while_collecting_from_another_thread_is_consistent() {
    let (provider, exporter, sink) = pipeline();
    let round = first_round();
    let want = expected(&round);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..200 {
                if i % 2 == 0 {
                    sink.publish(&round);
                } else {
                    sink.publish(&Publication::default());
                }
            }
        });
        for _ in 0..20 {
            // Each collection sees one whole round or nothing per instrument, never a mix.
            for (name, m) in collect(&provider, &exporter) {
                assert!(m.points.is_empty() || m.points == want[&name], "{name}");
            }
        }
    });
}

#[test]
fn cardinality_view_lifts_the_default_limit() {
    // 3000 label sets of the opt-in per-expert counter: over the SDK's default of 2000.
    let round = Publication {
        samples: (0..3000)
            .map(|i| {
                let (layer, expert) = ((i / 128).to_string(), (i % 128).to_string());
                sample(
                    Metric::ExpertSelectionsTotal,
                    &["m", &layer, "he", &expert],
                    i as f64,
                )
            })
            .collect(),
        summaries: Vec::new(),
    };
    let count = |provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter| {
        collect(provider, exporter)["moe_routing_expert_selections_total"]
            .points
            .len()
    };

    let (provider, exporter, sink) = pipeline();
    sink.publish(&round);
    assert!(
        count(&provider, &exporter) < 3000,
        "the default limit folds the rest into overflow"
    );

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .with_view(moescope_otel::cardinality_view(4096))
        .build();
    let sink = OtelSink::new(&moescope_otel::meter(&provider));
    sink.publish(&round);
    assert_eq!(count(&provider, &exporter), 3000);
}
