//! What the server counts, and the events it reports to an optional observer.
//!
//! The library never prints. A caller reads [`ServerStats`] (for example, to publish them as
//! metrics) and may pass an [`Observer`] that receives rare [`Event`]s, rate-limited.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Counters since the server started. Read with [`HttpServer::stats`](crate::HttpServer::stats)
/// or a [`StatsHandle`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted (including those then refused for capacity).
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections refused with `503` because every open connection was running a handler.
    pub connections_refused_busy: u64,
    /// Connections not running a handler (idle, or still sending a head or body) closed to
    /// make room for a new one (at `max_connections`, or after running out of file
    /// descriptors).
    pub connections_evicted: u64,
    /// Connections closed for exceeding the header-read or idle timeout.
    pub connections_timed_out: u64,
    /// `accept` failures for lack of file descriptors or kernel memory (`EMFILE`, `ENFILE`,
    /// `ENOBUFS`, `ENOMEM`).
    pub accept_errors_exhausted: u64,
    /// Other `accept` failures.
    pub accept_errors_other: u64,
    /// Requests whose head was read and handed to the router.
    pub requests: u64,
    /// `413` answers (body over the limit).
    pub rejected_body_too_large: u64,
    /// `414` answers (request target over the limit).
    pub rejected_uri_too_long: u64,
    /// `503` answers because every slow-route slot was taken.
    pub rejected_slow_busy: u64,
    /// `408` and `503` answers because the request timeout passed.
    pub request_timeouts: u64,
    /// Handler panics (answered `500`).
    pub handler_panics: u64,
}

impl ServerStats {
    /// The counters in the Prometheus text exposition format (version 0.0.4), as
    /// `moescope_http_*` series, for a `/metrics` handler to append to its own output.
    ///
    /// ```
    /// let text = moescope_http::ServerStats::default().to_prometheus_text();
    /// assert!(text.contains("moescope_http_connections_open 0\n"));
    /// ```
    pub fn to_prometheus_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP moescope_http_{name} {help}");
            let _ = writeln!(out, "# TYPE moescope_http_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "moescope_http_{name}{labels} {value}");
            }
        };
        metric(
            "connections_open",
            "gauge",
            "HTTP connections open now.",
            &[("", self.connections_open)],
        );
        metric(
            "connections_accepted_total",
            "counter",
            "HTTP connections accepted.",
            &[("", self.connections_accepted)],
        );
        metric(
            "connections_closed_total",
            "counter",
            "HTTP connections closed by the server before the client was done, by reason.",
            &[
                ("{reason=\"refused_busy\"}", self.connections_refused_busy),
                ("{reason=\"evicted\"}", self.connections_evicted),
                ("{reason=\"timed_out\"}", self.connections_timed_out),
            ],
        );
        metric(
            "accept_errors_total",
            "counter",
            "Failed accepts; exhausted = out of file descriptors or kernel memory.",
            &[
                ("{kind=\"exhausted\"}", self.accept_errors_exhausted),
                ("{kind=\"other\"}", self.accept_errors_other),
            ],
        );
        metric(
            "requests_total",
            "counter",
            "HTTP requests read.",
            &[("", self.requests)],
        );
        metric(
            "requests_refused_total",
            "counter",
            "HTTP requests answered with an error by the server's limits, by reason.",
            &[
                ("{reason=\"body_too_large\"}", self.rejected_body_too_large),
                ("{reason=\"uri_too_long\"}", self.rejected_uri_too_long),
                ("{reason=\"slow_busy\"}", self.rejected_slow_busy),
                ("{reason=\"timeout\"}", self.request_timeouts),
                ("{reason=\"handler_panic\"}", self.handler_panics),
            ],
        );
        out
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_refused_busy: AtomicU64,
    pub(crate) connections_evicted: AtomicU64,
    pub(crate) connections_timed_out: AtomicU64,
    pub(crate) accept_errors_exhausted: AtomicU64,
    pub(crate) accept_errors_other: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) rejected_body_too_large: AtomicU64,
    pub(crate) rejected_uri_too_long: AtomicU64,
    pub(crate) rejected_slow_busy: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn read(&self) -> ServerStats {
        ServerStats {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_refused_busy: self.connections_refused_busy.load(Relaxed),
            connections_evicted: self.connections_evicted.load(Relaxed),
            connections_timed_out: self.connections_timed_out.load(Relaxed),
            accept_errors_exhausted: self.accept_errors_exhausted.load(Relaxed),
            accept_errors_other: self.accept_errors_other.load(Relaxed),
            requests: self.requests.load(Relaxed),
            rejected_body_too_large: self.rejected_body_too_large.load(Relaxed),
            rejected_uri_too_long: self.rejected_uri_too_long.load(Relaxed),
            rejected_slow_busy: self.rejected_slow_busy.load(Relaxed),
            request_timeouts: self.request_timeouts.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
        }
    }
}

/// A cloneable reader of a server's [`ServerStats`], usable from handlers and other threads,
/// and after the server stopped.
#[derive(Clone)]
pub struct StatsHandle(pub(crate) Arc<Counters>);

impl StatsHandle {
    /// The counters now.
    pub fn read(&self) -> ServerStats {
        self.0.read()
    }
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.read().fmt(f)
    }
}

/// A rare event worth a log line, passed to the [`Observer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `accept` keeps failing; the server backs off and keeps accepting. Reported at most once
    /// per [`Limits::event_interval`](crate::Limits::event_interval).
    AcceptFailing {
        /// The last error's kind.
        kind: std::io::ErrorKind,
        /// The last error's OS code (for example 24 for `EMFILE` on Linux).
        os_error: Option<i32>,
        /// Failures since the previous report (or since the start).
        failures: u64,
        /// Whether the cause is lack of file descriptors or kernel memory.
        exhausted: bool,
    },
    /// A handler panicked; the client got `500`.
    HandlerPanicked {
        /// The route's path.
        path: String,
    },
}

/// Receives [`Event`]s on the server's thread: it must be cheap and must not block.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync + 'static>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_counter_once() {
        let stats = ServerStats {
            connections_accepted: 1,
            connections_open: 2,
            connections_refused_busy: 3,
            connections_evicted: 4,
            connections_timed_out: 5,
            accept_errors_exhausted: 6,
            accept_errors_other: 7,
            requests: 8,
            rejected_body_too_large: 9,
            rejected_uri_too_long: 10,
            rejected_slow_busy: 11,
            request_timeouts: 12,
            handler_panics: 13,
        };
        let text = stats.to_prometheus_text();
        let samples: Vec<(&str, u64)> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, v) = l.rsplit_once(' ').unwrap();
                (name, v.parse().unwrap())
            })
            .collect();
        // 13 counters, each value once: 1 + 2 + ... + 13.
        assert_eq!(samples.len(), 13);
        assert_eq!(samples.iter().map(|s| s.1).sum::<u64>(), 91);
        assert!(text.contains("moescope_http_accept_errors_total{kind=\"exhausted\"} 6\n"));
        assert!(text.contains("moescope_http_connections_open 2\n"));
        assert_eq!(text.matches("# TYPE ").count(), 6);
    }
}
