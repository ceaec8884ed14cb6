//! The Prometheus exposition: one socket-free render path ([`PrometheusRender`]) and a
//! `/metrics` endpoint serving it ([`PrometheusEndpoint`]).
//!
//! The render path keeps its own `metrics-exporter-prometheus` recorder (so a serving binary
//! that installed another `metrics` recorder keeps it). The endpoint serves its rendering with
//! `moescope-http` (HTTP/1.1 on its own thread and small runtime, every input bounded by
//! [`Limits`]: slow, idle or oversized clients cannot delay a scrape); it binds `127.0.0.1`
//! unless told otherwise. A server with its own HTTP stack uses [`PrometheusRender`] alone.
//!
//! The endpoint can serve routes of its caller's next to `/metrics`
//! ([`PrometheusEndpoint::start_with_routes`]): a health check, a status page, a snapshot
//! download. Each is a `moescope-http` route, fast (on the server thread) or slow (on the
//! bounded blocking pool), so a slow page never delays a scrape.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use moescope_http::{HttpError, HttpServer, ServerStats, StatsHandle};
pub use moescope_http::{Limits, Method, Request, Response, Router, StatusCode};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

use moescope_publish::{ConfigError, Summary};

use crate::sink::{render_summaries, MetricsSink};

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The address did not resolve.
    #[error("cannot resolve listen address {addr:?}: {source}")]
    Resolve {
        /// The address given.
        addr: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// Binding failed (for example, the port is taken).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server thread could not be spawned.
    #[error("cannot start the endpoint thread: {0}")]
    Thread(std::io::Error),
    /// The HTTP limits are out of range.
    #[error("{0}")]
    Http(HttpError),
    /// The publisher's configuration is out of range.
    #[error("{0}")]
    Config(moescope_publish::ConfigError),
}

/// The Prometheus exposition of what its sinks published, without a socket: a private
/// `metrics-exporter-prometheus` recorder, sinks into it, and [`render`](Self::render). Cheap
/// to clone (the clones share the recorder).
#[derive(Clone)]
pub struct PrometheusRender {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    summaries: Arc<Mutex<Vec<Summary>>>,
}

impl PrometheusRender {
    /// A render path whose series are dropped when not updated for `idle_timeout` (publishers
    /// update every live series each round; use a few publication intervals).
    ///
    /// # Errors
    /// [`ConfigError`] naming `idle_timeout` when it is zero (every series would vanish at
    /// once).
    pub fn new(idle_timeout: Duration) -> Result<PrometheusRender, ConfigError> {
        if idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "idle_timeout",
                "must be longer than zero (use a few publication intervals)",
            ));
        }
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(idle_timeout))
            .build_recorder();
        Ok(PrometheusRender {
            handle: recorder.handle(),
            recorder: Arc::new(recorder),
            summaries: Arc::default(),
        })
    }

    /// A sink that publishes into this render path.
    pub fn sink(&self) -> MetricsSink {
        MetricsSink::with_summaries(self.recorder.clone(), self.summaries.clone())
    }

    /// The exposition text (format 0.0.4) now, idle series dropped first; the summaries of
    /// the last round published follow the gauges and counters.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        let summaries = self
            .summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        render_summaries(&summaries, &mut text);
        text
    }

    /// The `Content-Type` of [`render`](Self::render)'s text.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

impl std::fmt::Debug for PrometheusRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusRender").finish_non_exhaustive()
    }
}

/// A running `/metrics` endpoint. Dropping it stops the server thread.
pub struct PrometheusEndpoint {
    render: PrometheusRender,
    server: HttpServer,
}

impl PrometheusEndpoint {
    /// Binds `addr` (e.g. [`DEFAULT_LISTEN`], or `127.0.0.1:0` for an ephemeral port) and
    /// serves `GET /metrics` within the default [`Limits`], without keep-alive (one scrape per
    /// connection, closed after the response, as a scraper expects). Series not updated for
    /// `idle_timeout` are dropped (publishers update every live series each round; use a few
    /// publication intervals).
    ///
    /// # Errors
    /// [`EndpointError::Config`] for a zero `idle_timeout`; another [`EndpointError`] if the
    /// address does not resolve, the port is taken, or the thread cannot start. Nothing
    /// panics; the serving process keeps running.
    pub fn start(addr: &str, idle_timeout: Duration) -> Result<PrometheusEndpoint, EndpointError> {
        let limits = Limits {
            keep_alive: false,
            ..Limits::default()
        };
        Self::start_with_limits(addr, idle_timeout, limits)
    }

    /// [`start`](Self::start) with other HTTP [`Limits`] (connections, timeouts, sizes).
    ///
    /// # Errors
    /// As [`start`](Self::start); [`EndpointError::Http`] for a limit out of range.
    pub fn start_with_limits(
        addr: &str,
        idle_timeout: Duration,
        limits: Limits,
    ) -> Result<PrometheusEndpoint, EndpointError> {
        Self::start_with_routes(addr, idle_timeout, limits, Router::new())
    }

    /// [`start_with_limits`](Self::start_with_limits), also serving the caller's `routes`
    /// (fast or slow `moescope-http` routes; slow ones share the pool of
    /// [`Limits::max_slow_in_flight`] threads). `GET /metrics` is the endpoint's own; a
    /// `GET /` in `routes` replaces the endpoint's one-line text at `/`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use moescope_prometheus::{Limits, Method, PrometheusEndpoint, Response, Router, StatusCode};
    ///
    /// let routes = Router::new().fast(Method::GET, "/healthz", |_| {
    ///     Response::text(StatusCode::OK, "ok\n")
    /// });
    /// let endpoint = PrometheusEndpoint::start_with_routes(
    ///     "127.0.0.1:0",
    ///     Duration::from_secs(15),
    ///     Limits::default(),
    ///     routes,
    /// )?;
    /// println!("/metrics and /healthz at http://{}", endpoint.local_addr());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`start_with_limits`](Self::start_with_limits); [`EndpointError::Http`] naming the
    /// route when `routes` has a `GET /metrics`, the same method and path twice, or a path
    /// that does not start with `/`.
    pub fn start_with_routes(
        addr: &str,
        idle_timeout: Duration,
        limits: Limits,
        routes: Router,
    ) -> Result<PrometheusEndpoint, EndpointError> {
        let render = PrometheusRender::new(idle_timeout).map_err(EndpointError::Config)?;
        // `/metrics` ends with the server's own counters (`moescope_http_*`), once it runs.
        let server_stats: Arc<OnceLock<StatsHandle>> = Arc::new(OnceLock::new());
        let router = {
            let (render, server_stats) = (render.clone(), server_stats.clone());
            let has_index = routes.contains(&Method::GET, "/");
            let router = routes.fast(Method::GET, "/metrics", move |_| {
                let mut body = render.render();
                if let Some(stats) = server_stats.get() {
                    body.push_str(&stats.read().to_prometheus_text());
                }
                Response::new(StatusCode::OK, PrometheusRender::CONTENT_TYPE, body)
            });
            if has_index {
                router
            } else {
                router.fast(Method::GET, "/", |_| {
                    Response::text(StatusCode::OK, "moescope: routing health at /metrics\n")
                })
            }
        };
        let server = HttpServer::start(addr, limits, router).map_err(|e| match e {
            HttpError::Resolve { addr, source } => EndpointError::Resolve { addr, source },
            HttpError::Bind { addr, source } => EndpointError::Bind { addr, source },
            HttpError::Thread(e) => EndpointError::Thread(e),
            other => EndpointError::Http(other),
        })?;
        let _ = server_stats.set(server.stats_handle());
        Ok(PrometheusEndpoint { render, server })
    }

    /// The address it listens on (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A sink that publishes into this endpoint.
    pub fn sink(&self) -> MetricsSink {
        self.render.sink()
    }

    /// The exposition text `/metrics` serves now.
    pub fn render(&self) -> String {
        self.render.render()
    }

    /// The render path the endpoint serves.
    pub fn render_path(&self) -> &PrometheusRender {
        &self.render
    }

    /// The HTTP server's counters: connections, refusals, accept failures (for example when
    /// the process ran out of file descriptors). [`ServerStats::to_prometheus_text`] renders
    /// them as `moescope_http_*` series.
    pub fn http_stats(&self) -> ServerStats {
        self.server.stats()
    }
}
