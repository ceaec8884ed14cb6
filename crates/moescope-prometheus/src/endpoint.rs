//! The Prometheus exposition: one socket-free render path ([`PrometheusRender`]) and a
//! `/metrics` endpoint serving it ([`PrometheusEndpoint`]).
//!
//! The render path keeps its own `metrics-exporter-prometheus` recorder (so a serving binary
//! that installed another `metrics` recorder keeps it). The endpoint serves its rendering over
//! plain HTTP/1.1 from one small thread, without an async runtime; it binds `127.0.0.1`
//! unless told otherwise. A server with its own HTTP stack uses [`PrometheusRender`] alone.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

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
    addr: SocketAddr,
    render: PrometheusRender,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PrometheusEndpoint {
    /// Binds `addr` (e.g. [`DEFAULT_LISTEN`], or `127.0.0.1:0` for an ephemeral port) and
    /// serves `GET /metrics`. Series not updated for `idle_timeout` are dropped (publishers
    /// update every live series each round; use a few publication intervals).
    ///
    /// # Errors
    /// [`EndpointError::Config`] for a zero `idle_timeout`; another [`EndpointError`] if the
    /// address does not resolve, the port is taken, or the thread cannot start. Nothing
    /// panics; the serving process keeps running.
    pub fn start(addr: &str, idle_timeout: Duration) -> Result<PrometheusEndpoint, EndpointError> {
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| EndpointError::Resolve {
                addr: addr.to_owned(),
                source,
            })?
            .collect();
        let listener = TcpListener::bind(&resolved[..]).map_err(|source| EndpointError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let local = listener
            .local_addr()
            .map_err(|source| EndpointError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let render = PrometheusRender::new(idle_timeout).map_err(EndpointError::Config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (render, stop) = (render.clone(), stop.clone());
            std::thread::Builder::new()
                .name("moescope-metrics-http".into())
                .spawn(move || serve(listener, render, stop))
                .map_err(EndpointError::Thread)?
        };
        Ok(PrometheusEndpoint {
            addr: local,
            render,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
}

impl Drop for PrometheusEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, render: PrometheusRender, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        // One scrape at a time; a stuck client cannot hold the thread for long.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let _ = respond(stream, &render);
    }
}

fn respond(stream: TcpStream, render: &PrometheusRender) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers (bounded).
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", PrometheusRender::CONTENT_TYPE, render.render()),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "moescope: routing health at /metrics\n".to_owned(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
