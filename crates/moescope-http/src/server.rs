//! The server: its own thread and current-thread runtime, the accept loop, and shutdown.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::conn::{drive, Shared};
use crate::error::HttpError;
use crate::limits::Limits;
use crate::router::Router;
use crate::stats::{bump, Counters, Event, Observer, ServerStats, StatsHandle};

/// The listen backlog: connections the kernel completes before the server accepts them.
const BACKLOG: u32 = 1024;

/// Idle connections closed at once when `accept` runs out of file descriptors.
const EVICT_ON_EXHAUSTION: usize = 8;

/// What a connection refused for capacity receives before it is closed.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 21\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n";

/// A running HTTP/1.1 server on its own thread. Dropping it stops the server (see
/// [`HttpServer::stop`]).
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    stats: StatsHandle,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `addr` (for example `"127.0.0.1:9464"`, or port 0 for an ephemeral port) and
    /// serves `router` within `limits` on a new thread named `moescope-http`.
    ///
    /// # Errors
    /// [`HttpError::InvalidLimit`], [`HttpError::InvalidPath`] or
    /// [`HttpError::DuplicateRoute`] for a bad configuration; [`HttpError::Resolve`] or
    /// [`HttpError::Bind`] when the address cannot be listened on; [`HttpError::Thread`] when
    /// the thread or its runtime cannot be created.
    pub fn start<A>(addr: A, limits: Limits, router: Router) -> Result<HttpServer, HttpError>
    where
        A: ToSocketAddrs + std::fmt::Debug,
    {
        Self::start_with_observer(addr, limits, router, None)
    }

    /// [`HttpServer::start`], with an observer that receives rare [`Event`]s (for example to
    /// log that `accept` keeps failing). The library itself never prints.
    ///
    /// # Errors
    /// As [`HttpServer::start`].
    pub fn start_with_observer<A>(
        addr: A,
        limits: Limits,
        router: Router,
        observer: Option<Observer>,
    ) -> Result<HttpServer, HttpError>
    where
        A: ToSocketAddrs + std::fmt::Debug,
    {
        limits.validate()?;
        router.validate()?;
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| HttpError::Resolve {
                addr: format!("{addr:?}"),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(HttpError::Resolve {
                addr: format!("{addr:?}"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            });
        }
        let counters = Arc::new(Counters::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(limits.max_slow_in_flight)
            .thread_name("moescope-http-slow")
            .build()
            .map_err(HttpError::Thread)?;
        let shared = Arc::new(Shared::new(router, limits, Arc::clone(&counters), observer));
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("moescope-http".into())
            .spawn(move || {
                let bound = runtime.block_on(async { bind(&addrs) });
                let listener = match bound {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let local = listener.local_addr();
                let _ = ready_tx.send(Ok(local));
                let grace = shared.limits.shutdown_grace;
                runtime.block_on(serve(listener, Arc::clone(&shared), stop_rx));
                runtime.shutdown_timeout(grace.min(Duration::from_millis(100)));
            })
            .map_err(HttpError::Thread)?;
        let stats = StatsHandle(counters);
        match ready_rx.recv() {
            Ok(Ok(Ok(addr))) => Ok(HttpServer {
                addr,
                stop,
                thread: Some(thread),
                stats,
            }),
            Ok(Ok(Err(e))) => Err(HttpError::Thread(e)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(HttpError::Thread(std::io::Error::other(
                "the server thread ended before binding",
            ))),
        }
    }

    /// The bound address (with the actual port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters now.
    pub fn stats(&self) -> ServerStats {
        self.stats.read()
    }

    /// A handle that reads the counters from anywhere, also after the server stopped.
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Stops accepting, lets requests in flight finish for up to
    /// [`Limits::shutdown_grace`], closes every connection and joins the thread. A slow-route
    /// handler still running after that is left to finish on its own thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(addrs: &[SocketAddr]) -> Result<TcpListener, HttpError> {
    let mut last = None;
    for addr in addrs {
        let attempt = (|| {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(*addr)?;
            socket.listen(BACKLOG)
        })();
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(source) => {
                last = Some(HttpError::Bind {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| HttpError::Bind {
        addr: String::new(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
    }))
}

/// `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`: the process or the system is out of descriptors or
/// kernel memory. Accepting again at once would fail again.
fn is_exhaustion(e: &std::io::Error) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const CODES: [i32; 4] = [24, 23, 105, 12];
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const CODES: [i32; 4] = [24, 23, 55, 12];
    e.kind() == std::io::ErrorKind::OutOfMemory
        || e.raw_os_error().is_some_and(|c| CODES.contains(&c))
}

/// Errors about one half-open connection, not the listener: accept the next at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Rate-limits [`Event::AcceptFailing`].
struct FailureReport {
    failures: u64,
    last: Option<Instant>,
}

impl FailureReport {
    fn record(&mut self, shared: &Shared, e: &std::io::Error, exhausted: bool) {
        self.failures += 1;
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= shared.limits.event_interval);
        if due {
            shared.report(&Event::AcceptFailing {
                kind: e.kind(),
                os_error: e.raw_os_error(),
                failures: self.failures,
                exhausted,
            });
            self.failures = 0;
            self.last = Some(Instant::now());
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(1);
    let max_backoff = shared.limits.accept_backoff_max.max(FIRST_BACKOFF);
    let mut backoff = FIRST_BACKOFF;
    let mut report = FailureReport {
        failures: 0,
        last: None,
    };
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = FIRST_BACKOFF;
                on_accept(&shared, stream, peer);
            }
            Err(e) if !is_exhaustion(&e) && is_per_connection(&e) => {}
            Err(e) => {
                let exhausted = is_exhaustion(&e);
                if exhausted {
                    bump(&shared.counters.accept_errors_exhausted);
                    shared.evict(EVICT_ON_EXHAUSTION);
                } else {
                    bump(&shared.counters.accept_errors_other);
                }
                report.record(&shared, &e, exhausted);
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
    drop(listener);
    shared.shutdown_all();
    let deadline = tokio::time::Instant::now() + shared.limits.shutdown_grace;
    while shared
        .counters
        .connections_open
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn on_accept(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    bump(&shared.counters.connections_accepted);
    let open = shared
        .counters
        .connections_open
        .load(std::sync::atomic::Ordering::Relaxed);
    if open >= shared.limits.max_connections as u64 && shared.evict(1) == 0 {
        bump(&shared.counters.connections_refused_busy);
        // A fresh socket's send buffer is empty: this never blocks, and a partial write is
        // harmless (the client sees the connection close either way).
        let _ = stream.try_write(BUSY_RESPONSE);
        return;
    }
    let _ = stream.set_nodelay(true);
    let st = shared.register();
    tokio::spawn(drive(stream, Some(peer), Arc::clone(shared), st, false));
}

/// Serves one connection whose client sends `input` and then closes its sending side, and
/// returns everything the server wrote back (at most 1 MiB). Same router, limits and code
/// path as a listening server, without a socket: for tests and fuzzing.
///
/// Runs on a current-thread runtime kept per calling thread (so repeated calls are cheap);
/// do not call it from inside an async runtime.
///
/// # Errors
/// [`HttpError::InvalidLimit`] and the router's errors as [`HttpServer::start`];
/// [`HttpError::Thread`] when the runtime cannot be created.
pub fn serve_bytes(router: &Router, limits: &Limits, input: &[u8]) -> Result<Vec<u8>, HttpError> {
    thread_local! {
        static RUNTIME: std::cell::OnceCell<tokio::runtime::Runtime> =
            const { std::cell::OnceCell::new() };
    }
    limits.validate()?;
    router.validate()?;
    let shared = Arc::new(Shared::new(
        router.clone(),
        limits.clone(),
        Arc::new(Counters::default()),
        None,
    ));
    let serve = async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let st = shared.register();
        let driver = tokio::spawn(drive(server, None, Arc::clone(&shared), st, true));
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            let _ = wr.write_all(input).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = (&mut rd).take(1 << 20).read_to_end(&mut out).await;
            out
        };
        let ((), out) = tokio::join!(write, read);
        let _ = driver.await;
        out
    };
    RUNTIME.with(|cell| {
        if cell.get().is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(HttpError::Thread)?;
            let _ = cell.set(runtime);
        }
        match cell.get() {
            Some(runtime) => Ok(runtime.block_on(serve)),
            None => Err(HttpError::Thread(std::io::Error::other("no runtime"))),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_busy_response_declares_its_body_length() {
        let text = std::str::from_utf8(super::BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
    }
}
