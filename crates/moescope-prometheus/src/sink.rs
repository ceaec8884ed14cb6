//! The `metrics` facade sink: a [`Publication`] as `metrics` gauges and counters.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::Label;

use moescope_publish::{Kind, Publication, Sink, Summary, CATALOGUE};

/// Publishes through the `metrics` facade: into the process's installed recorder (whatever
/// the serving binary installed), or into a given one (the [`PrometheusEndpoint`]'s).
///
/// Gauges are set, counters set to their absolute value (rounded: the totals are sampling-
/// weighted estimates). The facade cannot delete a series: a label set absent from a round
/// is no longer updated, and recorders with an idle timeout (the endpoint sets one to a few
/// intervals) drop it; with another recorder, configure its idle timeout likewise.
///
/// Summaries ([`Kind::Summary`]: the record time) have no `metrics` facade equivalent: the
/// sinks of a [`PrometheusRender`] hand them to its render path, which writes them as real
/// Prometheus summaries; other sinks leave them out.
///
/// [`PrometheusEndpoint`]: crate::PrometheusEndpoint
/// [`PrometheusRender`]: crate::PrometheusRender
pub struct MetricsSink {
    target: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
    summaries: Option<Arc<Mutex<Vec<Summary>>>>,
    described: bool,
}

impl MetricsSink {
    /// Publishes into the globally installed `metrics` recorder.
    pub fn global() -> MetricsSink {
        MetricsSink {
            target: None,
            summaries: None,
            described: false,
        }
    }

    /// Publishes into `recorder` only.
    pub fn to_recorder(recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> MetricsSink {
        MetricsSink {
            target: Some(recorder),
            summaries: None,
            described: false,
        }
    }

    /// Publishes into `recorder`, and each round's summaries into `summaries`.
    pub(crate) fn with_summaries(
        recorder: Arc<dyn metrics::Recorder + Send + Sync>,
        summaries: Arc<Mutex<Vec<Summary>>>,
    ) -> MetricsSink {
        MetricsSink {
            target: Some(recorder),
            summaries: Some(summaries),
            described: false,
        }
    }

    fn emit(&mut self, publication: &Publication) {
        if !self.described {
            for d in CATALOGUE {
                match d.kind {
                    Kind::Gauge => metrics::describe_gauge!(d.name, d.help),
                    Kind::Counter => metrics::describe_counter!(d.name, d.help),
                    Kind::Summary => {}
                }
            }
            self.described = true;
        }
        for s in &publication.samples {
            let d = s.metric.descriptor();
            let labels: Vec<Label> = d
                .labels
                .iter()
                .zip(&s.labels)
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect();
            match d.kind {
                Kind::Gauge => metrics::gauge!(d.name, labels).set(s.value),
                Kind::Counter => {
                    metrics::counter!(d.name, labels).absolute(s.value.max(0.0).round() as u64)
                }
                Kind::Summary => {}
            }
        }
    }
}

impl Sink for MetricsSink {
    fn publish(&mut self, publication: &Publication) {
        if let Some(store) = &self.summaries {
            *store.lock().unwrap_or_else(PoisonError::into_inner) = publication.summaries.clone();
        }
        match self.target.clone() {
            Some(recorder) => metrics::with_local_recorder(&*recorder, || self.emit(publication)),
            None => self.emit(publication),
        }
    }
}

/// Escapes a label value for the text exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends `summaries` to `out` in the text exposition format (HELP and TYPE once per metric).
pub(crate) fn render_summaries(summaries: &[Summary], out: &mut String) {
    let mut described = Vec::new();
    for s in summaries {
        let d = s.metric.descriptor();
        if d.kind != Kind::Summary || s.labels.len() != d.labels.len() {
            continue;
        }
        if !described.contains(&d.name) {
            described.push(d.name);
            let _ = writeln!(out, "# HELP {} {}", d.name, d.help);
            let _ = writeln!(out, "# TYPE {} summary", d.name);
        }
        let labels: Vec<String> = d
            .labels
            .iter()
            .zip(&s.labels)
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let labels = labels.join(",");
        let sep = if labels.is_empty() { "" } else { "," };
        for (q, v) in &s.quantiles {
            if v.is_finite() {
                let _ = writeln!(out, "{}{{{labels}{sep}quantile=\"{q}\"}} {v}", d.name);
            }
        }
        let sum = if s.sum.is_finite() { s.sum } else { 0.0 };
        let _ = writeln!(out, "{}_sum{{{labels}}} {sum}", d.name);
        let _ = writeln!(out, "{}_count{{{labels}}} {}", d.name, s.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use moescope_publish::{Metric, Sample};

    #[test]
    fn gauges_and_counters_reach_the_recorder_with_their_labels() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let mut sink = MetricsSink::to_recorder(Arc::new(recorder));
        sink.publish(&Publication {
            samples: vec![
                Sample {
                    metric: Metric::DeepCollapse,
                    labels: vec!["m".into(), "he".into(), "en".into()],
                    value: 1.0,
                },
                Sample {
                    metric: Metric::TokensTotal,
                    labels: vec!["m".into(), "he".into()],
                    value: 41.6,
                },
            ],
            summaries: Vec::new(),
        });
        let mut seen = 0;
        for (key, _unit, help, value) in snapshotter.snapshot().into_vec() {
            let labels: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            match key.key().name() {
                "moe_routing_deep_collapse" => {
                    assert_eq!(value, DebugValue::Gauge(1.0.into()));
                    assert_eq!(labels[1], ("lang".to_owned(), "he".to_owned()));
                    assert_eq!(labels[2], ("reference".to_owned(), "en".to_owned()));
                    assert!(help.is_some());
                    seen += 1;
                }
                "moe_routing_tokens_total" => {
                    assert_eq!(value, DebugValue::Counter(42));
                    seen += 1;
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(seen, 2);
    }

    #[test]
    fn summaries_render_as_prometheus_summaries() {
        let mut out = String::new();
        render_summaries(
            &[Summary {
                metric: Metric::MonitorRecordSeconds,
                labels: vec!["q\"wen\\3".into()],
                quantiles: vec![(0.5, 1e-7), (1.0, f64::NAN)],
                count: 12,
                sum: 2.5e-6,
            }],
            &mut out,
        );
        let name = "moe_routing_monitor_record_seconds";
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with(&format!("# HELP {name} ")));
        assert_eq!(lines[1], format!("# TYPE {name} summary"));
        assert_eq!(
            lines[2..],
            [
                format!("{name}{{model=\"q\\\"wen\\\\3\",quantile=\"0.5\"}} 0.0000001"),
                format!("{name}_sum{{model=\"q\\\"wen\\\\3\"}} 0.0000025"),
                format!("{name}_count{{model=\"q\\\"wen\\\\3\"}} 12"),
            ]
        );
    }
}
