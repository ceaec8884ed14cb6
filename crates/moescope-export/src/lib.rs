//! moescope-export: publishes the routing-health statistics of a [`Recorder`] every few
//! seconds — to Prometheus (through the `metrics` facade, with a `/metrics` endpoint in one
//! call) and to any other [`Sink`].
//!
//! A [`Publisher`] turns the recorder's rolling window into a [`Publication`]: the metrics of
//! [`CATALOGUE`] (names, units and help texts defined once; docs/METRICS.md lists them) with
//! their label values, the collapse flag through per-language detectors with hysteresis, the
//! totals, drop counters and the monitor's own overhead. [`spawn`] runs it in a thread.
//!
//! ```
//! use std::sync::Arc;
//! use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch};
//! use moescope_export::{Publisher, PublisherConfig};
//!
//! let recorder = Arc::new(Recorder::new(ModelSpec::new("tiny", 4, 1, vec![0, 1])?)?);
//! let en = recorder.language("en");
//! recorder.record(&RouterBatch::at_depth(1, &[0u32, 1, 2, 3], Languages::All(en)))?;
//!
//! let mut publisher = Publisher::new(recorder.clone(), PublisherConfig::default());
//! let round = publisher.collect();
//! // Four tokens spread over four experts: 2 bits of usage entropy in layer 1.
//! let h = round.publication.value("moe_routing_usage_entropy_bits", &["tiny", "1", "en"]);
//! assert_eq!(h, Some(2.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For Prometheus in one call, see [`serve_prometheus`].
//!
//! [`Recorder`]: moescope_core::Recorder

pub mod endpoint;
pub mod publication;
pub mod publisher;
pub mod sink;

use std::sync::Arc;

pub use endpoint::{spawn, EndpointError, PrometheusEndpoint, PublisherThread, DEFAULT_LISTEN};
pub use publication::{Descriptor, Kind, Publication, Sample, CATALOGUE};
pub use publisher::{Publisher, PublisherConfig, Round};
pub use sink::{MetricsSink, Sink};

/// A running Prometheus export: the endpoint and the publisher thread feeding it.
pub struct PrometheusExport {
    /// The `/metrics` endpoint.
    pub endpoint: PrometheusEndpoint,
    /// The publisher thread (its latest round is readable).
    pub publisher: PublisherThread,
}

/// Serves `recorder`'s statistics at `http://ADDR/metrics`, published every
/// `config.interval` (series of languages that go quiet disappear after three intervals).
///
/// # Errors
/// [`EndpointError`] if the address cannot be bound (the port is taken, say); the serving
/// process keeps running and nothing panics.
pub fn serve_prometheus(
    recorder: Arc<moescope_core::Recorder>,
    addr: &str,
    config: PublisherConfig,
) -> Result<PrometheusExport, EndpointError> {
    let idle = config.interval * 3;
    let endpoint = PrometheusEndpoint::start(addr, idle)?;
    let publisher = Publisher::new(recorder, config);
    let thread =
        spawn(publisher, vec![Box::new(endpoint.sink())]).map_err(EndpointError::Thread)?;
    Ok(PrometheusExport {
        endpoint,
        publisher: thread,
    })
}
