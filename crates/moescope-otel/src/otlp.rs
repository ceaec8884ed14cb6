//! OTLP/HTTP export (protobuf) without an async runtime, behind the `otlp` feature.
//!
//! Why a client of our own: opentelemetry-otlp's HTTP exporters need an `HttpClient`. Its
//! ready-made ones are reqwest (async, needs tokio), reqwest's blocking client (which runs a
//! hidden tokio runtime on its own thread: about 70 more crates, hyper and tokio among them)
//! and hyper (needs tokio). The SDK's `PeriodicReader` already exports from its own thread
//! and simply blocks on the export future, so a blocking HTTP/1.1 POST over
//! `std::net::TcpStream` is all the transport needs: the private `StdHttpClient` below,
//! plain `http://` only. A collector is normally a sidecar or a node agent reached over plain HTTP; for TLS or
//! gRPC, build opentelemetry-otlp's exporter with its `reqwest-rustls` or `grpc-tonic`
//! features yourself and give the sink a meter from that provider.
//!
//! Invariants of the client: one connection per export (`Connection: close`), every socket
//! operation bounded by one deadline ([`EXPORT_TIMEOUT`] from the start of the request), the
//! response read up to a 4 MiB cap; errors are returned to the exporter (which retries or
//! reports them through the SDK's internal logs), never panics.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, Protocol, WithExportConfig, WithHttpConfig,
};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

/// How long one export may take, connection to last response byte (the OTLP default).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body the client accepts (the limit opentelemetry-http's clients use).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Why an OTLP pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// The endpoint is not an `http://host[:port][/path]` URL.
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The export interval is zero.
    #[error("invalid OTLP export interval {interval:?}: must be longer than zero")]
    Interval {
        /// The interval as given.
        interval: Duration,
    },
    /// opentelemetry-otlp rejected the exporter configuration.
    #[error("building the OTLP metric exporter failed: {0}")]
    Build(#[from] ExporterBuildError),
}

/// A periodic reader that exports every `interval` over OTLP/HTTP (protobuf, cumulative
/// temporality) to `endpoint`, for `SdkMeterProvider::builder().with_reader(..)` when the
/// provider needs more (a resource, views such as [`cardinality_view`](crate::cardinality_view)).
///
/// `endpoint` is the collector's OTLP/HTTP address, `http://host:port` (the path
/// `/v1/metrics` is then appended) or a full URL with its path. The `OTEL_EXPORTER_OTLP_*`
/// variables for headers and compression are honoured as opentelemetry-otlp does; the
/// endpoint and the timeout given here win over theirs.
///
/// # Errors
/// [`OtlpError::Endpoint`] when the endpoint is not a plain-HTTP URL with a host (`https`
/// needs a TLS client, see the module docs); [`OtlpError::Interval`] for a zero interval;
/// [`OtlpError::Build`] when opentelemetry-otlp rejects the configuration. Never panics.
pub fn otlp_reader(
    endpoint: &str,
    interval: Duration,
) -> Result<PeriodicReader<MetricExporter>, OtlpError> {
    let url = metrics_url(endpoint)?;
    if interval.is_zero() {
        return Err(OtlpError::Interval { interval });
    }
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(StdHttpClient {
            timeout: EXPORT_TIMEOUT,
        })
        .build()?;
    Ok(PeriodicReader::builder(exporter)
        .with_interval(interval)
        .build())
}

/// A meter provider that exports every `interval` over OTLP/HTTP to `endpoint`, with the
/// SDK's default resource (`service.name` from `OTEL_SERVICE_NAME`, else `unknown_service`)
/// and no views: [`otlp_reader`] describes the endpoint; build the provider yourself around
/// it to add a resource or [`cardinality_view`](crate::cardinality_view).
///
/// The provider exports from a background thread; no async runtime is needed. Call
/// `shutdown()` on it before the process exits to send the last round.
///
/// # Errors
/// As [`otlp_reader`]. Never panics.
pub fn otlp_meter_provider(
    endpoint: &str,
    interval: Duration,
) -> Result<SdkMeterProvider, OtlpError> {
    Ok(SdkMeterProvider::builder()
        .with_reader(otlp_reader(endpoint, interval)?)
        .build())
}

/// Checks the endpoint and appends `/v1/metrics` when it has no path.
fn metrics_url(endpoint: &str) -> Result<String, OtlpError> {
    let invalid = |reason: &str| OtlpError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = endpoint
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                "https needs a TLS client, which this transport does not have (see moescope-otel's otlp docs)",
            ))
        }
        _ => return Err(invalid("expected http://host:port")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    let trimmed = endpoint.trim().trim_end_matches('/');
    Ok(match uri.path() {
        "" | "/" if uri.query().is_none() => format!("{trimmed}/v1/metrics"),
        _ => endpoint.trim().to_owned(),
    })
}

/// A blocking HTTP/1.1 client over `std::net`, for plain `http://` only. See the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StdHttpClient {
    /// Deadline of one request, from connecting to the end of the response.
    pub(crate) timeout: Duration,
}

#[async_trait]
impl HttpClient for StdHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        // Blocking inside the future is intended: the PeriodicReader's thread drives it with
        // `block_on` and has nothing else to do meanwhile.
        self.send_blocking(&request)
    }
}

impl StdHttpClient {
    fn send_blocking(&self, request: &Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let deadline = Instant::now() + self.timeout;
        let uri = request.uri();
        if uri.scheme_str() != Some("http") {
            return Err(
                format!("unsupported URL scheme in {uri} (only http:// is supported)").into(),
            );
        }
        let host = uri.host().ok_or_else(|| format!("no host in {uri}"))?;
        let port = uri.port_u16().unwrap_or(80);
        let mut stream = connect(host, port, deadline)?;

        let mut head = Vec::with_capacity(512);
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        write!(head, "{} {target} HTTP/1.1\r\n", request.method())?;
        let authority = uri.authority().map_or(host, |a| a.as_str());
        write!(head, "Host: {authority}\r\n")?;
        for (name, value) in request.headers() {
            let name = name.as_str();
            if ["host", "content-length", "connection", "transfer-encoding"].contains(&name) {
                continue;
            }
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        write!(
            head,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            request.body().len()
        )?;
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        stream.write_all(&head)?;
        stream.write_all(request.body())?;
        stream.flush()?;

        let raw = read_response(&mut stream, deadline)?;
        parse_response(&raw)
    }
}

/// Time left before `deadline`, or a timeout error.
fn remaining(deadline: Instant) -> Result<Duration, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "OTLP export timed out",
        )))
    } else {
        Ok(left)
    }
}

fn connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, HttpError> {
    // IPv6 literals arrive bracketed from the URI.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last_error: Option<std::io::Error> = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => Box::new(e),
        None => format!("{host}:{port} resolved to no address").into(),
    })
}

/// Reads until the server closes, or until a response with a `Content-Length` is complete.
fn read_response(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HttpError> {
    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Box::new(e)),
        };
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_RESPONSE_BYTES + 64 * 1024 {
            return Err(Box::new(opentelemetry_http::ResponseBodyTooLarge::new()));
        }
        if let Some((head_len, headers)) = split_head(&raw) {
            if let Some(len) =
                header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok())
            {
                if raw.len() >= head_len + len {
                    return Ok(raw);
                }
            }
        }
    }
}

/// The length of the response head (through the blank line) and its header lines.
fn split_head(raw: &[u8]) -> Option<(usize, Vec<(String, String)>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&raw[..end]);
    let headers = text
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((end + 4, headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Parses a complete HTTP/1.x response: status, headers and body (de-chunked if needed).
fn parse_response(raw: &[u8]) -> Result<Response<Bytes>, HttpError> {
    let (head_len, headers) = split_head(raw).ok_or("incomplete HTTP response head")?;
    let status_line = raw.split(|&b| b == b'\r').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}").into());
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;

    let rest = &raw[head_len..];
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) =
        header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok())
    {
        rest.get(..len)
            .ok_or("response body shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(Box::new(opentelemetry_http::ResponseBodyTooLarge::new()));
    }

    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        response = response.header(name.as_str(), value.as_str());
    }
    Ok(response.body(Bytes::from(body))?)
}

/// Decodes a chunked transfer-encoded body (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        body.extend_from_slice(chunk);
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(Box::new(opentelemetry_http::ResponseBodyTooLarge::new()));
        }
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_the_metrics_path_only_when_it_has_none() {
        assert_eq!(
            metrics_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/metrics"
        );
        assert_eq!(
            metrics_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/metrics"
        );
        assert_eq!(
            metrics_url("http://c:4318/otlp/v1/metrics").unwrap(),
            "http://c:4318/otlp/v1/metrics"
        );
        assert!(matches!(
            metrics_url("https://c:4318"),
            Err(OtlpError::Endpoint { .. })
        ));
        assert!(matches!(
            metrics_url("c:4318"),
            Err(OtlpError::Endpoint { .. })
        ));
        assert!(matches!(
            metrics_url("not a url"),
            Err(OtlpError::Endpoint { .. })
        ));
    }

    #[test]
    fn parses_content_length_and_chunked_responses() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nRetry-After: 5\r\n\r\nabcdef")
                .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.body().as_ref(), b"abc");
        assert_eq!(r.headers()["retry-after"], "5");

        let r = parse_response(
            b"HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.body().as_ref(), b"abcde");

        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn connection_refused_is_an_error_not_a_panic() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = StdHttpClient {
            timeout: Duration::from_secs(2),
        };
        let request = Request::post(format!("http://127.0.0.1:{port}/v1/metrics"))
            .body(Bytes::from_static(b"x"))
            .unwrap();
        assert!(client.send_blocking(&request).is_err());
    }
}
