//! moescope-prometheus: moescope's statistics in the Prometheus exposition format.
//!
//! [`MetricsSink`] publishes each [`Publication`](moescope_publish::Publication) through the
//! `metrics` facade; [`PrometheusRender`] renders it without a socket (for a server with its
//! own HTTP stack); [`PrometheusEndpoint`] serves that at `/metrics`; [`serve_prometheus`]
//! starts the endpoint and the publisher thread in one call, and
//! [`serve_prometheus_with_routes`] also serves routes of the caller's (a status page, say).
//!
//! ```
//! use std::sync::Arc;
//! use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch};
//! use moescope_prometheus::PrometheusRender;
//! use moescope_publish::{Publisher, PublisherConfig, Sink};
//!
//! let recorder = Arc::new(Recorder::new(ModelSpec::new("tiny", 4, 1, vec![0, 1])?)?);
//! let en = recorder.language("en");
//! recorder.record(&RouterBatch::at_depth(1, &[0u32, 1, 2, 3], Languages::All(en)))?;
//!
//! let render = PrometheusRender::new(std::time::Duration::from_secs(15))?;
//! let mut sink = render.sink();
//! let mut publisher = Publisher::new(recorder, PublisherConfig::default())?;
//! sink.publish(&publisher.collect().publication);
//! let text = render.render();
//! assert!(text.contains(r#"moe_routing_usage_entropy_bits{model="tiny",layer="1",lang="en"} 2"#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod endpoint;
pub mod sink;

use std::sync::Arc;

pub use endpoint::{
    EndpointError, Limits, Method, PrometheusEndpoint, PrometheusRender, Request, Response, Router,
    StatusCode, DEFAULT_LISTEN,
};
pub use sink::MetricsSink;

use moescope_publish::{spawn, Publisher, PublisherConfig, PublisherThread};

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
/// [`EndpointError::Config`] for a setting out of range (naming it), another
/// [`EndpointError`] if the address cannot be bound (the port is taken, say); the serving
/// process keeps running and nothing panics.
pub fn serve_prometheus(
    recorder: Arc<moescope_core::Recorder>,
    addr: &str,
    config: PublisherConfig,
) -> Result<PrometheusExport, EndpointError> {
    serve_prometheus_with_routes(recorder, addr, config, Router::new())
}

/// [`serve_prometheus`], the endpoint also serving `routes` (see
/// [`PrometheusEndpoint::start_with_routes`]: `GET /metrics` stays the endpoint's own, a
/// `GET /` in `routes` replaces its one-line text). Same limits as [`serve_prometheus`]: no
/// keep-alive, at most [`Limits::max_slow_in_flight`] slow handlers at once.
///
/// ```
/// use std::sync::Arc;
/// use moescope_core::{ModelSpec, Recorder};
/// use moescope_prometheus::{serve_prometheus_with_routes, Method, Response, Router, StatusCode};
/// use moescope_publish::PublisherConfig;
///
/// let recorder = Arc::new(Recorder::new(ModelSpec::new("tiny", 4, 1, vec![0, 1])?)?);
/// let window = recorder.clone();
/// // The live window as a snapshot file, on the slow pool: scrapes never wait for it.
/// let routes = Router::new().slow(Method::GET, "/v1/snapshot", move |_| {
///     Response::new(StatusCode::OK, "application/json", window.snapshot().to_json_string())
/// });
/// let export =
///     serve_prometheus_with_routes(recorder, "127.0.0.1:0", PublisherConfig::default(), routes)?;
/// println!("http://{}/v1/snapshot", export.endpoint.local_addr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`serve_prometheus`]; [`EndpointError::Http`] naming the route for a `GET /metrics` in
/// `routes`, a duplicate, or a path without a leading `/`.
pub fn serve_prometheus_with_routes(
    recorder: Arc<moescope_core::Recorder>,
    addr: &str,
    config: PublisherConfig,
    routes: Router,
) -> Result<PrometheusExport, EndpointError> {
    let idle = config.interval * 3;
    let publisher = Publisher::new(recorder, config).map_err(EndpointError::Config)?;
    let limits = Limits {
        keep_alive: false,
        ..Limits::default()
    };
    let endpoint = PrometheusEndpoint::start_with_routes(addr, idle, limits, routes)?;
    let thread =
        spawn(publisher, vec![Box::new(endpoint.sink())]).map_err(EndpointError::Thread)?;
    Ok(PrometheusExport {
        endpoint,
        publisher: thread,
    })
}
