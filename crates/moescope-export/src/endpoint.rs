//! A Prometheus `/metrics` endpoint in one call, and the publisher thread.
//!
//! The endpoint keeps its own `metrics-exporter-prometheus` recorder (so a serving binary that
//! installed another `metrics` recorder keeps it) and serves its rendering over plain HTTP/1.1
//! from one small thread, without an async runtime. It binds `127.0.0.1` unless told otherwise.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

use crate::publisher::{Publisher, Round};
use crate::sink::{MetricsSink, Sink};

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
}

/// A running `/metrics` endpoint. Dropping it stops the server thread.
pub struct PrometheusEndpoint {
    addr: SocketAddr,
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PrometheusEndpoint {
    /// Binds `addr` (e.g. [`DEFAULT_LISTEN`], or `127.0.0.1:0` for an ephemeral port) and
    /// serves `GET /metrics`. Series not updated for `idle_timeout` are dropped (publishers
    /// update every live series each round; use a few publication intervals).
    ///
    /// # Errors
    /// [`EndpointError`] if the address does not resolve, the port is taken, or the thread
    /// cannot start. Nothing panics; the serving process keeps running.
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
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(idle_timeout))
            .build_recorder();
        let handle = recorder.handle();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (handle, stop) = (handle.clone(), stop.clone());
            std::thread::Builder::new()
                .name("moescope-metrics-http".into())
                .spawn(move || serve(listener, handle, stop))
                .map_err(EndpointError::Thread)?
        };
        Ok(PrometheusEndpoint {
            addr: local,
            recorder: Arc::new(recorder),
            handle,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A sink that publishes into this endpoint's recorder.
    pub fn sink(&self) -> MetricsSink {
        MetricsSink::to_recorder(self.recorder.clone())
    }

    /// The exposition text `/metrics` serves now.
    pub fn render(&self) -> String {
        self.handle.render()
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

fn serve(listener: TcpListener, handle: PrometheusHandle, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        // One scrape at a time; a stuck client cannot hold the thread for long.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let _ = respond(stream, &handle);
    }
}

fn respond(stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
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
        ("GET", "/metrics") => {
            handle.run_upkeep();
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
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

/// The publisher running in its own thread, feeding its sinks every interval. Dropping it
/// stops the thread (within one interval at most... in practice at once).
pub struct PublisherThread {
    latest: Arc<Mutex<Option<Arc<Round>>>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PublisherThread {
    /// The last round published, if any.
    pub fn latest(&self) -> Option<Arc<Round>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for PublisherThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `publisher` every [`Publisher::interval`] (first round at once), handing each round to
/// every sink.
///
/// # Errors
/// The OS error if the thread cannot be spawned.
pub fn spawn(
    mut publisher: Publisher,
    mut sinks: Vec<Box<dyn Sink>>,
) -> std::io::Result<PublisherThread> {
    let latest = Arc::new(Mutex::new(None));
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let interval = publisher.interval();
    let thread = {
        let latest = latest.clone();
        std::thread::Builder::new()
            .name("moescope-publisher".into())
            .spawn(move || loop {
                let round = Arc::new(publisher.collect());
                for sink in &mut sinks {
                    sink.publish(&round.publication);
                }
                *latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(round);
                match stopped.recv_timeout(interval) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            })?
    };
    Ok(PublisherThread {
        latest,
        stop: Some(stop),
        thread: Some(thread),
    })
}
