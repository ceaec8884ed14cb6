//! moescope-otel: moescope's routing-health metrics as OpenTelemetry instruments.
//!
//! The publisher computes one round of values every few seconds, a [`Publication`]; every
//! sink turns it into its own instruments. This sink registers one *observable* instrument
//! per [`CATALOGUE`] descriptor on an OpenTelemetry [`Meter`] (an `f64` observable gauge for
//! [`Kind::Gauge`], an `f64` observable counter for [`Kind::Counter`], whose values are the
//! cumulative totals the publication carries). [`OtelSink::publish`] stores the latest
//! round; when the SDK's reader collects (on its own interval, or on `force_flush`), each
//! instrument's callback observes that round's samples with their labels as attributes.
//! A label set missing from the latest round is not observed, so it disappears from the
//! export instead of freezing at its last value; non-finite values are never observed.
//! With the `otlp` feature, `otlp_meter_provider` exports over OTLP/HTTP to a collector, from
//! the SDK reader's own thread: no async runtime, plain `http://` (the `otlp` module says why and how).
//!
//! ```
//! use moescope_publish::{Metric, Publication, Sample};
//! use moescope_otel::OtelSink;
//! use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
//! use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
//!
//! // Any SDK pipeline works; the in-memory exporter lets us read the values back.
//! let exporter = InMemoryMetricExporter::default();
//! let provider = SdkMeterProvider::builder()
//!     .with_reader(PeriodicReader::builder(exporter.clone()).build())
//!     .build();
//! let sink = OtelSink::new(&moescope_otel::meter(&provider));
//!
//! let labels = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
//! sink.publish(&Publication {
//!     samples: vec![
//!         Sample { metric: Metric::Gini, labels: labels(&["qwen3", "47", "he"]), value: 0.62 },
//!         Sample { metric: Metric::TokensTotal, labels: labels(&["qwen3", "he"]), value: 1200.0 },
//!     ],
//!     summaries: Vec::new(),
//! });
//! provider.force_flush()?;
//!
//! let exported = exporter.get_finished_metrics()?;
//! let gini = exported[0]
//!     .scope_metrics()
//!     .flat_map(|s| s.metrics())
//!     .find(|m| m.name() == "moe_routing_gini")
//!     .expect("gini exported");
//! let AggregatedMetrics::F64(MetricData::Gauge(gauge)) = gini.data() else { panic!() };
//! let point = gauge.data_points().next().expect("one label set");
//! assert_eq!(point.value(), 0.62);
//! assert!(point.attributes().any(|kv| kv.key.as_str() == "lang" && kv.value.as_str() == "he"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Units: the catalogue's unit words map to UCUM as [`otel_unit`] documents. Cardinality:
//! the SDK keeps at most 2000 label sets per instrument unless a view raises the limit; see
//! [`cardinality_view`] (needed for the opt-in `moe_routing_expert_selections_total`).
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use moescope_publish::{Kind, Publication, CATALOGUE};
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::metrics::{Instrument, Stream};

#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "otlp")]
pub use otlp::{otlp_meter_provider, otlp_reader, OtlpError, EXPORT_TIMEOUT};

/// Name of the instrumentation scope [`meter`] creates (the crate version goes with it).
pub const SCOPE_NAME: &str = "moescope";

/// The observations of one round, per catalogue index: each label set's attributes and value.
type Round = Vec<Vec<(Vec<KeyValue>, f64)>>;

/// The OpenTelemetry sink: observable instruments for the whole [`CATALOGUE`], fed by
/// [`publish`](OtelSink::publish).
///
/// Concurrency: the publisher thread replaces the round under a write lock held only for a
/// pointer swap (the round is built before the lock is taken); the SDK's reader thread runs
/// the callbacks, each of which clones the `Arc` of the current round under a read lock and
/// observes outside it. Neither side waits on the other's work, and a poisoned lock is read
/// through (nothing panics while holding it, but a callback must never panic).
///
/// Register one sink per [`Meter`]: a second sink on the same meter registers the same
/// instrument names again, which the SDK reports as duplicates.
#[derive(Debug)]
pub struct OtelSink {
    /// The latest round. Written by `publish` and `Drop`, read by the instrument callbacks.
    latest: Arc<RwLock<Arc<Round>>>,
}

impl OtelSink {
    /// Registers one observable instrument per catalogue descriptor on `meter` and returns
    /// the sink that feeds them. Until the first [`publish`](Self::publish) nothing is
    /// observed. Never panics.
    #[must_use = "the instruments observe nothing once the sink is dropped"]
    pub fn new(meter: &Meter) -> Self {
        let latest: Arc<RwLock<Arc<Round>>> = Arc::default();
        for (index, descriptor) in CATALOGUE.iter().enumerate() {
            let state = Arc::clone(&latest);
            let callback = move |observer: &dyn AsyncInstrument<f64>| {
                let round = Arc::clone(&state.read().unwrap_or_else(PoisonError::into_inner));
                for (attributes, value) in round.get(index).into_iter().flatten() {
                    observer.observe(*value, attributes);
                }
            };
            let unit = otel_unit(descriptor.unit);
            // The returned handles need not be kept: the SDK holds the callbacks for as long
            // as the meter provider lives.
            // Gauges and counters differ only in the builder they start from.
            macro_rules! register {
                ($builder:ident) => {{
                    let builder = meter
                        .$builder(descriptor.name)
                        .with_description(descriptor.help)
                        .with_callback(callback);
                    let builder = if unit.is_empty() {
                        builder
                    } else {
                        builder.with_unit(unit)
                    };
                    builder.build();
                }};
            }
            match descriptor.kind {
                // A summary's quantiles become a gauge with a `quantile` attribute (OTel has
                // no summary instrument for new data).
                Kind::Gauge | Kind::Summary => register!(f64_observable_gauge),
                Kind::Counter => register!(f64_observable_counter),
            }
        }
        Self { latest }
    }

    /// Makes `publication` the round the instruments observe from the next collection on,
    /// replacing the previous round entirely: a label set it does not carry is no longer
    /// observed.
    ///
    /// Samples that cannot be shown are skipped: a non-finite value, or label values that do not match the descriptor's label names in number.
    /// Of two samples with the same metric and label values, the later one wins. Never panics.
    pub fn publish(&self, publication: &Publication) {
        let round = Arc::new(build_round(publication));
        *self.latest.write().unwrap_or_else(PoisonError::into_inner) = round;
    }
}

/// Lets a publisher thread ([`moescope_publish::spawn`]) feed the sink like any other.
impl moescope_publish::Sink for OtelSink {
    fn publish(&mut self, publication: &Publication) {
        OtelSink::publish(self, publication);
    }
}

impl Drop for OtelSink {
    /// Clears the round: once nobody can publish, the instruments stop observing rather than
    /// report the last values forever.
    fn drop(&mut self) {
        *self.latest.write().unwrap_or_else(PoisonError::into_inner) = Arc::default();
    }
}

/// Turns a publication into per-metric observations, validating and de-duplicating.
fn build_round(publication: &Publication) -> Round {
    let mut by_metric: Vec<BTreeMap<&[String], f64>> = vec![BTreeMap::new(); CATALOGUE.len()];
    for sample in &publication.samples {
        let descriptor = sample.metric.descriptor();
        if !sample.value.is_finite() || sample.labels.len() != descriptor.labels.len() {
            continue;
        }
        by_metric[sample.metric as usize].insert(&sample.labels, sample.value);
    }
    let mut round: Round = by_metric
        .into_iter()
        .zip(CATALOGUE)
        .map(|(samples, descriptor)| {
            samples
                .into_iter()
                .map(|(values, value)| {
                    let attributes = descriptor
                        .labels
                        .iter()
                        .zip(values)
                        .map(|(&name, v)| KeyValue::new(name, v.clone()))
                        .collect();
                    (attributes, value)
                })
                .collect()
        })
        .collect();
    for summary in &publication.summaries {
        let descriptor = summary.metric.descriptor();
        if summary.labels.len() != descriptor.labels.len() {
            continue;
        }
        for &(q, value) in &summary.quantiles {
            if !value.is_finite() {
                continue;
            }
            let mut attributes: Vec<KeyValue> = descriptor
                .labels
                .iter()
                .zip(&summary.labels)
                .map(|(&name, v)| KeyValue::new(name, v.clone()))
                .collect();
            attributes.push(KeyValue::new("quantile", q.to_string()));
            round[summary.metric as usize].push((attributes, value));
        }
    }
    round
}

/// The OpenTelemetry unit for a catalogue unit word (UCUM, case-sensitive).
///
/// | catalogue  | OpenTelemetry | why |
/// |------------|---------------|-----|
/// | `seconds`  | `s`           | UCUM second |
/// | `bits`     | `{bit}`       | see below |
/// | `ratio`    | `1`           | UCUM dimensionless |
/// | `tokens`   | `{token}`     | a count, annotated |
/// | `experts`  | `{expert}`    | a count, annotated |
/// | `""`       | no unit       | see below |
///
/// Other words pass through unchanged. The choices keep names stable where OTLP is turned
/// back into Prometheus (the Collector's Prometheus exporters, Prometheus' and Mimir's OTLP
/// ingestion): the translation appends a unit it knows (`s` → `_seconds`) or does not know
/// (`bit` → `_bit`) unless the name already holds it, drops `{annotations}`, and appends
/// `_ratio` to gauges in unit `1`. So the strict UCUM `bit` would turn
/// `moe_routing_usage_entropy_bits` into `..._bits_bit`, and `1` on a dimensionless gauge
/// would turn `moe_routing_gini` into `moe_routing_gini_ratio`; `{bit}` and no unit keep the
/// names the Prometheus sink uses, so dashboards and alerts work on either path.
pub fn otel_unit(catalogue_unit: &'static str) -> &'static str {
    match catalogue_unit {
        "seconds" => "s",
        "bits" => "{bit}",
        "ratio" => "1",
        "tokens" => "{token}",
        "experts" => "{expert}",
        "bytes" => "By",
        other => other,
    }
}

/// A [`Meter`] for the sink, in the instrumentation scope [`SCOPE_NAME`] with this crate's
/// version.
pub fn meter<P: MeterProvider + ?Sized>(provider: &P) -> Meter {
    provider.meter_with_scope(
        InstrumentationScope::builder(SCOPE_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    )
}

/// A view for `SdkMeterProvider::builder().with_view(..)` that sets the cardinality limit
/// (label sets kept per instrument per collection) of the catalogue's instruments to `limit`.
///
/// The SDK's default is 2000; label sets beyond it are merged into one series with the
/// attribute `otel.metric.overflow = true`. Most moescope metrics stay far below it (layers ×
/// tracked languages × references), but the opt-in `moe_routing_expert_selections_total` has
/// layers × experts × languages label sets (48 × 128 × 8 ≈ 49 000 for Qwen3-30B-A3B with 8
/// languages). The SDK reserves a hash table of about `limit` entries per instrument up
/// front, so size the limit to the model rather than to "infinity". A `limit` of 0 or one the
/// SDK rejects leaves the default in place. Never panics.
pub fn cardinality_view(limit: usize) -> impl Fn(&Instrument) -> Option<Stream> + Send + Sync {
    move |instrument: &Instrument| {
        if CATALOGUE.iter().any(|d| d.name == instrument.name()) {
            Stream::builder().with_cardinality_limit(limit).build().ok()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moescope_publish::{Metric, Sample};

    const GINI: Metric = Metric::Gini;
    const TOKENS_TOTAL: Metric = Metric::TokensTotal;

    fn sample(metric: Metric, labels: &[&str], value: f64) -> Sample {
        Sample {
            metric,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            value,
        }
    }

    #[test]
    fn round_skips_bad_samples_and_keeps_the_last_duplicate() {
        let p = Publication {
            samples: vec![
                sample(GINI, &["m", "3", "he"], 0.1),
                sample(GINI, &["m", "3", "he"], 0.2),
                sample(GINI, &["m", "3", "ja"], f64::NAN),
                sample(GINI, &["m", "3", "en"], f64::INFINITY),
                sample(GINI, &["m", "he"], 0.3),
                sample(TOKENS_TOTAL, &["m", "he"], 7.0),
            ],
            summaries: Vec::new(),
        };
        let round = build_round(&p);
        assert_eq!(round.len(), CATALOGUE.len());
        assert_eq!(round[GINI as usize].len(), 1);
        let (attrs, value) = &round[GINI as usize][0];
        assert_eq!(*value, 0.2);
        let pairs: Vec<(&str, String)> = attrs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.to_string()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("model", "m".into()),
                ("layer", "3".into()),
                ("lang", "he".into())
            ]
        );
        assert_eq!(round[TOKENS_TOTAL as usize].len(), 1);
        let total: usize = round.iter().map(Vec::len).sum();
        assert_eq!(total, 2);
    }

    #[test]
    fn every_catalogue_unit_has_a_deliberate_mapping() {
        for d in CATALOGUE {
            let unit = otel_unit(d.unit);
            assert!(
                ["", "1", "s", "By", "{bit}", "{token}", "{expert}"].contains(&unit),
                "{}: unit {:?} has no OpenTelemetry mapping yet",
                d.name,
                d.unit
            );
        }
    }

    /// The OTLP → Prometheus name translation (prometheus/otlptranslator, used by the
    /// Collector's Prometheus exporters and by Prometheus' and Mimir's OTLP ingestion), for
    /// the units we emit: the translated names must equal the Prometheus sink's names.
    #[test]
    fn units_keep_prometheus_names_through_otlp_translation() {
        fn translate(name: &str, unit: &str, kind: Kind) -> String {
            let mut tokens: Vec<&str> = name.split('_').filter(|t| !t.is_empty()).collect();
            let is_counter = kind == Kind::Counter;
            if is_counter {
                tokens.retain(|t| *t != "total");
            }
            let unit = if unit.starts_with('{') { "" } else { unit };
            let suffix = match unit {
                "s" => "seconds",
                "By" => "bytes",
                "1" => "",
                other => other,
            };
            if !suffix.is_empty() && !tokens.contains(&suffix) {
                tokens.push(suffix);
            }
            if unit == "1" && kind == Kind::Gauge && !tokens.contains(&"ratio") {
                tokens.push("ratio");
            }
            if is_counter {
                tokens.push("total");
            }
            tokens.join("_")
        }
        for d in CATALOGUE {
            assert_eq!(translate(d.name, otel_unit(d.unit), d.kind), d.name);
        }
        // The rejected alternatives would rename metrics.
        assert_eq!(
            translate("moe_routing_usage_entropy_bits", "bit", Kind::Gauge),
            "moe_routing_usage_entropy_bits_bit"
        );
        assert_eq!(
            translate("moe_routing_gini", "1", Kind::Gauge),
            "moe_routing_gini_ratio"
        );
    }
}
