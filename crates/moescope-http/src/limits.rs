//! Every bound the server enforces, with its default and what a client sees when it is crossed.

use std::time::Duration;

use crate::error::HttpError;

/// The bounds on what one client, or all clients together, can make the server hold or wait for.
///
/// Every field has a default chosen for a `/metrics` endpoint and a small demo API on loopback;
/// [`Limits::default`] lists them. Each limit says what a client sees when it crosses it.
/// [`HttpServer::start`](crate::HttpServer::start) checks the values with [`Limits::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of request line plus headers. Beyond: `431 Request Header Fields Too Large`
    /// and the connection closes. This also bounds a request line with no line ending: the
    /// server never buffers more than `max(max_header_bytes, 8192)` bytes of a request head
    /// (8,192 is the smallest read buffer hyper allows). Default 16 KiB.
    pub max_header_bytes: usize,
    /// The most header fields in one request. Beyond: `431`. Default 64.
    pub max_headers: usize,
    /// The most bytes of the request target (path and query). Beyond: `414 URI Too Long`.
    /// Default 4 KiB.
    pub max_uri_bytes: usize,
    /// The most bytes of a request body. A larger `Content-Length` is refused with `413 Content
    /// Too Large` before any of the body is read; a chunked body is read incrementally and
    /// refused with `413` as soon as it passes the limit. Nothing is ever allocated from a
    /// declared length. Default 64 KiB.
    pub max_body_bytes: usize,
    /// The longest a client may take to send a request head, from its first byte. Beyond: the
    /// connection closes. Default 10 s.
    pub header_read_timeout: Duration,
    /// The longest from a complete request head to the response: reading the body and running
    /// the handler. A body not received in time gets `408 Request Timeout`; a handler that has
    /// not answered in time gets `503 Service Unavailable` (a blocking handler keeps its slot
    /// until it returns). Default 30 s.
    pub request_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request. Beyond: the connection
    /// closes. Default 30 s.
    pub idle_timeout: Duration,
    /// The most connections open at once. A new connection beyond it closes one that is not
    /// running a handler: the longest idle first, then the oldest still sending its head, then
    /// the oldest still sending its body. When every connection is running a handler, the new
    /// one gets `503` and is closed. Default 256.
    pub max_connections: usize,
    /// The most slow-route handlers running at once (each on its own blocking thread). Beyond:
    /// `503 Service Unavailable` with `Retry-After: 1`, at once. Default 2.
    pub max_slow_in_flight: usize,
    /// The longest pause of the accept loop after the process ran out of file descriptors
    /// (`EMFILE`, `ENFILE`) or kernel memory (`ENOBUFS`, `ENOMEM`). Pauses start at 1 ms and
    /// double while accepting keeps failing; the loop never stops. Default 1 s.
    pub accept_backoff_max: Duration,
    /// The least time between two [`Event::AcceptFailing`](crate::Event::AcceptFailing) reports
    /// to the observer; failures in between are counted. Default 10 s.
    pub event_interval: Duration,
    /// How long [`HttpServer::stop`](crate::HttpServer::stop) (and dropping the server) waits
    /// for requests in flight before closing everything. Default 2 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// `max_header_bytes` 16 KiB, `max_headers` 64, `max_uri_bytes` 4 KiB, `max_body_bytes`
    /// 64 KiB, `header_read_timeout` 10 s, `request_timeout` 30 s, `idle_timeout` 30 s,
    /// `max_connections` 256, `max_slow_in_flight` 2, `accept_backoff_max` 1 s,
    /// `event_interval` 10 s, `shutdown_grace` 2 s.
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_uri_bytes: 4 * 1024,
            max_body_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_slow_in_flight: 2,
            accept_backoff_max: Duration::from_secs(1),
            event_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Hyper's smallest read buffer: the server's buffer for a request head is at least this large.
pub(crate) const MIN_READ_BUFFER: usize = 8192;

/// The largest header or body limit accepted (1 GiB): a bound on what a misconfiguration can
/// make one request hold.
pub const MAX_CONFIGURABLE_BYTES: usize = 1 << 30;

impl Limits {
    /// Checks that every limit is usable: sizes and counts at least 1 (and at most
    /// [`MAX_CONFIGURABLE_BYTES`] for byte sizes), durations at least 1 ms.
    ///
    /// # Errors
    /// [`HttpError::InvalidLimit`] naming the first field out of range and its value.
    pub fn validate(&self) -> Result<(), HttpError> {
        let sizes = [
            ("max_header_bytes", self.max_header_bytes),
            ("max_uri_bytes", self.max_uri_bytes),
            ("max_body_bytes", self.max_body_bytes),
        ];
        for (field, value) in sizes {
            if value == 0 || value > MAX_CONFIGURABLE_BYTES {
                return Err(HttpError::InvalidLimit {
                    field,
                    value: value.to_string(),
                    expected: "between 1 and 1 GiB",
                });
            }
        }
        let counts = [
            ("max_headers", self.max_headers),
            ("max_connections", self.max_connections),
            ("max_slow_in_flight", self.max_slow_in_flight),
        ];
        for (field, value) in counts {
            if value == 0 || value > 1 << 20 {
                return Err(HttpError::InvalidLimit {
                    field,
                    value: value.to_string(),
                    expected: "between 1 and 1048576",
                });
            }
        }
        let durations = [
            ("header_read_timeout", self.header_read_timeout),
            ("request_timeout", self.request_timeout),
            ("idle_timeout", self.idle_timeout),
            ("accept_backoff_max", self.accept_backoff_max),
            ("event_interval", self.event_interval),
            ("shutdown_grace", self.shutdown_grace),
        ];
        for (field, value) in durations {
            if value < Duration::from_millis(1) || value > Duration::from_secs(86_400 * 365) {
                return Err(HttpError::InvalidLimit {
                    field,
                    value: format!("{value:?}"),
                    expected: "between 1 ms and one year",
                });
            }
        }
        Ok(())
    }

    /// The read buffer hyper may grow to while reading a request head.
    pub(crate) fn read_buffer_bytes(&self) -> usize {
        self.max_header_bytes.max(MIN_READ_BUFFER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let l = Limits::default();
        l.validate().unwrap();
        assert_eq!(l.max_header_bytes, 16_384);
        assert_eq!(l.max_body_bytes, 65_536);
        assert_eq!(l.max_connections, 256);
        assert_eq!(l.read_buffer_bytes(), 16_384);
        let small = Limits {
            max_header_bytes: 100,
            ..Limits::default()
        };
        assert_eq!(small.read_buffer_bytes(), 8192);
    }

    #[test]
    fn validate_names_the_field() {
        let l = Limits {
            max_body_bytes: 0,
            ..Limits::default()
        };
        let e = l.validate().unwrap_err().to_string();
        assert!(e.contains("max_body_bytes") && e.contains('0'), "{e}");
        let l = Limits {
            idle_timeout: Duration::ZERO,
            ..Limits::default()
        };
        let e = l.validate().unwrap_err().to_string();
        assert!(e.contains("idle_timeout"), "{e}");
        let l = Limits {
            max_header_bytes: MAX_CONFIGURABLE_BYTES + 1,
            ..Limits::default()
        };
        assert!(l.validate().is_err());
    }
}
