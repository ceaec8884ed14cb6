//! One connection: its phase (idle, reading a head, busy), the timeouts and eviction that
//! follow from the phase, and the service that turns a hyper request into a handler call.
//!
//! The phase protocol. Every connection has a [`ConnState`] shared between three parties that
//! all run on the server's one runtime thread (the atomics only make the state `Sync`):
//! - the I/O wrapper [`TrackedIo`]: bytes read while `IDLE` start a head (`HEAD`, `since` =
//!   now); bytes written while `IDLE` (a response still draining) refresh `since`;
//! - the service: a request handed over sets `BODY` (`since` = now) while its body is read,
//!   then `BUSY` while its handler runs; its response, once produced, sets `IDLE` with
//!   `since` = now;
//! - the watchdog in [`drive`]: `IDLE` longer than the idle timeout, or `HEAD` longer than the
//!   header-read timeout, closes the connection. `BODY` and `BUSY` are bounded by the request
//!   timeout in the service instead. Each change of phase wakes the watchdog (`signal`) so that it sleeps
//!   towards the current phase's deadline.
//!
//! The accept loop evicts connections that are not `BUSY`, by phase (idle, then reading a
//! head, then reading a body: a stalled upload yields before a handler's work) and oldest
//! `since` first, by setting `close` and waking the watchdog.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, RETRY_AFTER};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, Semaphore};

use crate::limits::Limits;
use crate::router::{Lookup, Mode, Request, Response, Router};
use crate::stats::{bump, Counters, Event, Observer};

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BODY: u8 = 2;
const BUSY: u8 = 3;

const KEEP: u8 = 0;
const EVICT: u8 = 1;
const GRACEFUL: u8 = 2;

/// What every connection task shares with the accept loop.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) limits: Limits,
    pub(crate) counters: Arc<Counters>,
    pub(crate) observer: Option<Observer>,
    slow: Arc<Semaphore>,
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Shared {
    pub(crate) fn new(
        router: Router,
        limits: Limits,
        counters: Arc<Counters>,
        observer: Option<Observer>,
    ) -> Self {
        Self {
            slow: Arc::new(Semaphore::new(limits.max_slow_in_flight)),
            router,
            limits,
            counters,
            observer,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection (counted open until its task ends).
    pub(crate) fn register(&self) -> Arc<ConnState> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let st = Arc::new(ConnState {
            id,
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(self.now_ms()),
            close: AtomicU8::new(KEEP),
            signal: Notify::new(),
        });
        self.conns().insert(id, Arc::clone(&st));
        self.counters.connections_open.fetch_add(1, Relaxed);
        st
    }

    fn unregister(&self, st: &ConnState) {
        self.conns().remove(&st.id);
        self.counters.connections_open.fetch_sub(1, Relaxed);
    }

    /// Asks up to `n` connections that are not busy to close, idle ones first, oldest first.
    /// Returns how many were asked.
    pub(crate) fn evict(&self, n: usize) -> usize {
        let conns = self.conns();
        let mut candidates: Vec<(u8, u64, &Arc<ConnState>)> = conns
            .values()
            .filter(|c| c.close.load(Relaxed) == KEEP)
            .filter_map(|c| {
                let phase = c.phase.load(Relaxed);
                (phase != BUSY).then(|| (phase, c.since_ms.load(Relaxed), c))
            })
            .collect();
        candidates.sort_unstable_by_key(|&(phase, since, _)| (phase, since));
        let chosen = candidates.len().min(n);
        for (_, _, c) in &candidates[..chosen] {
            c.close.store(EVICT, Relaxed);
            c.signal.notify_one();
        }
        self.counters
            .connections_evicted
            .fetch_add(chosen as u64, Relaxed);
        chosen
    }

    /// Asks every connection to finish its request in flight and close.
    pub(crate) fn shutdown_all(&self) {
        for c in self.conns().values() {
            c.close.store(GRACEFUL, Relaxed);
            c.signal.notify_one();
        }
    }

    pub(crate) fn report(&self, event: &Event) {
        if let Some(observer) = &self.observer {
            // An observer that panics must not take the server down.
            let _ = catch_unwind(AssertUnwindSafe(|| observer(event)));
        }
    }
}

/// One connection's phase and close request; see the module docs.
pub(crate) struct ConnState {
    id: u64,
    phase: AtomicU8,
    since_ms: AtomicU64,
    close: AtomicU8,
    signal: Notify,
}

impl ConnState {
    fn on_read(&self, now: u64) {
        if self
            .phase
            .compare_exchange(IDLE, HEAD, Relaxed, Relaxed)
            .is_ok()
        {
            self.since_ms.store(now, Relaxed);
            // The watchdog sleeps towards the idle deadline: wake it to follow the head's.
            self.signal.notify_one();
        }
    }

    fn on_write(&self, now: u64) {
        if self.phase.load(Relaxed) == IDLE {
            self.since_ms.store(now, Relaxed);
        }
    }

    /// How long the watchdog may sleep, and whether the connection has outlived its phase.
    fn check(&self, limits: &Limits, now: u64) -> Result<Duration, ()> {
        let timeout = match self.phase.load(Relaxed) {
            IDLE => limits.idle_timeout,
            HEAD => limits.header_read_timeout,
            _ => return Ok(Duration::from_secs(1)),
        };
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = self.since_ms.load(Relaxed).saturating_add(timeout_ms);
        if now >= deadline {
            Err(())
        } else {
            Ok(Duration::from_millis(deadline - now))
        }
    }
}

/// Marks a connection busy while a request is being served; idle again when dropped.
struct BusyGuard<'a> {
    st: &'a ConnState,
    shared: &'a Shared,
}

impl<'a> BusyGuard<'a> {
    /// Marks the connection as reading a request body.
    fn new(st: &'a ConnState, shared: &'a Shared) -> Self {
        st.since_ms.store(shared.now_ms(), Relaxed);
        st.phase.store(BODY, Relaxed);
        Self { st, shared }
    }

    /// Marks the body as read: the handler's work is not evicted.
    fn handling(&self) {
        self.st.phase.store(BUSY, Relaxed);
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.st.since_ms.store(self.shared.now_ms(), Relaxed);
        self.st.phase.store(IDLE, Relaxed);
        self.st.signal.notify_one();
    }
}

/// The socket, with reads and writes reported to the connection's phase.
struct TrackedIo<T> {
    inner: T,
    st: Arc<ConnState>,
    shared: Arc<Shared>,
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.st.on_read(self.shared.now_ms());
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.st.on_write(self.shared.now_ms());
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.st.on_write(self.shared.now_ms());
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one connection until the client closes it, a timeout passes, or it is evicted.
/// `st` must come from `shared.register()`; it is unregistered here.
pub(crate) async fn drive<T>(
    io: T,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
    st: Arc<ConnState>,
    half_close: bool,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &shared.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The watchdog enforces both timeouts; hyper's own header timer, which also runs while
        // a kept-alive connection waits, is a backstop set beyond them.
        .header_read_timeout(
            limits
                .idle_timeout
                .saturating_add(limits.header_read_timeout),
        )
        .max_buf_size(limits.read_buffer_bytes())
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .half_close(half_close)
        .keep_alive(true);
    let service = {
        let shared = Arc::clone(&shared);
        let st = Arc::clone(&st);
        service_fn(move |req| {
            let shared = Arc::clone(&shared);
            let st = Arc::clone(&st);
            async move { Ok::<_, Infallible>(serve(&shared, &st, peer, req).await) }
        })
    };
    let io = TokioIo::new(TrackedIo {
        inner: io,
        st: Arc::clone(&st),
        shared: Arc::clone(&shared),
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        let wait = match st.check(limits, shared.now_ms()) {
            Ok(wait) => wait,
            Err(()) => {
                bump(&shared.counters.connections_timed_out);
                break;
            }
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            () = st.signal.notified() => match st.close.load(Relaxed) {
                EVICT => break,
                GRACEFUL if !graceful => {
                    conn.as_mut().graceful_shutdown();
                    graceful = true;
                }
                _ => {}
            },
            () = tokio::time::sleep(wait) => {}
        }
    }
    shared.unregister(&st);
}

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut out = hyper::Response::new(Full::new(r.body));
    *out.status_mut() = r.status;
    *out.headers_mut() = r.headers;
    out
}

/// A short plain-text answer; `close` asks the client to open a new connection (used when the
/// request body was not read).
fn plain(status: StatusCode, msg: &str, close: bool) -> hyper::Response<Full<Bytes>> {
    let mut r = Response::text(status, format!("{msg}\n"));
    if close {
        r = r.with_header(CONNECTION, HeaderValue::from_static("close"));
    }
    to_hyper(r)
}

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(mut body: Incoming, max: usize) -> Result<Vec<u8>, BodyError> {
    // Grows with what arrives, never from a declared length.
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if data.len() > max - buf.len() {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

async fn serve(
    shared: &Shared,
    st: &ConnState,
    peer: Option<SocketAddr>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let busy = BusyGuard::new(st, shared);
    let counters = &shared.counters;
    let limits = &shared.limits;
    bump(&counters.requests);
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let (parts, body) = req.into_parts();
    let unread_body = !body.is_end_stream();

    let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri_bytes {
        bump(&counters.rejected_uri_too_long);
        return plain(StatusCode::URI_TOO_LONG, "request target too long", true);
    }
    let route = match shared.router.lookup(&parts.method, parts.uri.path()) {
        Lookup::Found(route) => route,
        Lookup::WrongMethod => {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                unread_body,
            )
        }
        Lookup::NotFound => return plain(StatusCode::NOT_FOUND, "not found", unread_body),
    };
    if body.size_hint().lower() > limits.max_body_bytes as u64 {
        bump(&counters.rejected_body_too_large);
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
            true,
        );
    }
    let body = match tokio::time::timeout_at(deadline, read_body(body, limits.max_body_bytes)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => {
            bump(&counters.rejected_body_too_large);
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                true,
            );
        }
        Ok(Err(BodyError::Broken)) => {
            return plain(StatusCode::BAD_REQUEST, "malformed request body", true)
        }
        Err(_) => {
            bump(&counters.request_timeouts);
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
                true,
            );
        }
    };
    busy.handling();
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: Bytes::from(body),
        peer,
    };
    let outcome = match route.mode {
        Mode::Fast => catch_unwind(AssertUnwindSafe(|| (route.handler)(&request))).ok(),
        Mode::Slow => {
            let Ok(permit) = Arc::clone(&shared.slow).try_acquire_owned() else {
                bump(&counters.rejected_slow_busy);
                return to_hyper(
                    Response::text(StatusCode::SERVICE_UNAVAILABLE, "busy: try again\n")
                        .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
                );
            };
            let handler = Arc::clone(&route.handler);
            let task = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                catch_unwind(AssertUnwindSafe(|| handler(&request))).ok()
            });
            match tokio::time::timeout_at(deadline, task).await {
                Ok(joined) => joined.ok().flatten(),
                Err(_) => {
                    bump(&counters.request_timeouts);
                    return plain(StatusCode::SERVICE_UNAVAILABLE, "handler timed out", false);
                }
            }
        }
    };
    match outcome {
        Some(response) => to_hyper(response),
        None => {
            bump(&counters.handler_panics);
            shared.report(&Event::HandlerPanicked {
                path: route.path.clone(),
            });
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error", false)
        }
    }
}
