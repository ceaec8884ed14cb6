//! OTLP/HTTP end to end: the sink on `otlp_meter_provider`, exporting to a minimal HTTP
//! receiver inside the test on 127.0.0.1. The receiver does not decode protobuf (that would
//! add opentelemetry-proto and prost to every test build): it checks the request line, the
//! content type, and that the body carries each name, label value and value (protobuf stores
//! strings as raw UTF-8 and doubles as 8 little-endian bytes). The exact data points are
//! checked through the in-memory exporter in `in_memory.rs`.
#![cfg(feature = "otlp")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use moescope_publish::{Metric, Publication, Sample};

const GINI: Metric = Metric::Gini;
const TOKENS_TOTAL: Metric = Metric::TokensTotal;
const USAGE_ENTROPY_BITS: Metric = Metric::UsageEntropyBits;
use moescope_otel::{otlp_meter_provider, OtelSink};

/// One request as received: request line, lower-cased headers, body.
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn contains(&self, needle: &[u8]) -> bool {
        self.body.windows(needle.len()).any(|w| w == needle)
    }
}

/// Starts a receiver answering every request with `status`; returns its base URL and the
/// channel the requests arrive on. The thread ends with the test process.
fn receiver(status: &'static str) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Some(received) = serve(stream, status) {
                if tx.send(received).is_err() {
                    return;
                }
            }
        }
    });
    (url, rx)
}

fn serve(mut stream: TcpStream, status: &str) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")?
        .1
        .parse()
        .ok()?;
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    // An empty body is a valid, empty ExportMetricsServiceResponse.
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).ok()?;
    Some(Received {
        request_line,
        headers,
        body,
    })
}

fn sample(metric: Metric, labels: &[&str], value: f64) -> Sample {
    Sample {
        metric,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        value,
    }
}

fn round() -> Publication {
    Publication {
        samples: vec![
            sample(USAGE_ENTROPY_BITS, &["qwen3-otlp", "47", "he"], 3.125),
            sample(
                USAGE_ENTROPY_BITS,
                &["qwen3-otlp", "47", "x-vanishing"],
                4.8125,
            ),
            sample(GINI, &["qwen3-otlp", "47", "he"], 0.6875),
            sample(TOKENS_TOTAL, &["qwen3-otlp", "he"], 4_096.0),
        ],
        summaries: Vec::new(),
    }
}

#[test]
fn otlp_http_export_reaches_a_receiver_and_tracks_rounds() {
    let (url, requests) = receiver("200 OK");
    // A long interval: only force_flush (and shutdown) export.
    let provider = otlp_meter_provider(&url, Duration::from_secs(3600)).expect("provider");
    let sink = OtelSink::new(&moescope_otel::meter(&provider));

    sink.publish(&round());
    provider.force_flush().expect("first export");
    let first = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("first request");
    assert_eq!(first.request_line, "POST /v1/metrics HTTP/1.1");
    assert_eq!(first.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(first.header("connection"), Some("close"));
    for name in [
        "moe_routing_usage_entropy_bits",
        "moe_routing_gini",
        "moe_routing_tokens_total",
    ] {
        assert!(first.contains(name.as_bytes()), "{name} missing");
    }
    for text in [
        "qwen3-otlp",
        "x-vanishing",
        "model",
        "layer",
        "lang",
        "{bit}",
        "{token}",
        "moescope",
    ] {
        assert!(first.contains(text.as_bytes()), "{text} missing");
    }
    for s in &round().samples {
        assert!(
            first.contains(&s.value.to_le_bytes()),
            "value {} missing",
            s.value
        );
    }
    assert!(!first.contains(&f64::NAN.to_le_bytes()));

    // Round two without the vanishing language: its series and value are gone.
    let mut second = round();
    second
        .samples
        .retain(|s| !s.labels.iter().any(|l| l == "x-vanishing"));
    second
        .samples
        .push(sample(GINI, &["qwen3-otlp", "47", "ja"], f64::NAN));
    sink.publish(&second);
    provider.force_flush().expect("second export");
    let next = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("second request");
    assert!(!next.contains(b"x-vanishing"));
    assert!(!next.contains(&4.8125f64.to_le_bytes()));
    assert!(next.contains(&3.125f64.to_le_bytes()));
    assert!(!next.contains(&f64::NAN.to_le_bytes()));

    provider.shutdown().expect("shutdown");
}

#[test]
fn a_rejecting_collector_fails_the_flush_without_panicking() {
    let (url, requests) = receiver("400 Bad Request");
    let provider = otlp_meter_provider(&url, Duration::from_secs(3600)).expect("provider");
    let sink = OtelSink::new(&moescope_otel::meter(&provider));
    sink.publish(&round());
    assert!(provider.force_flush().is_err());
    assert!(requests.recv_timeout(Duration::from_secs(10)).is_ok());
    let _ = provider.shutdown();
}

#[test]
fn an_unreachable_collector_fails_the_flush_without_panicking() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let provider = otlp_meter_provider(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(3600),
    )
    .expect("provider");
    let sink = OtelSink::new(&moescope_otel::meter(&provider));
    sink.publish(&round());
    assert!(provider.force_flush().is_err());
    let _ = provider.shutdown();
}

#[test]
fn https_and_garbage_endpoints_are_refused_up_front() {
    assert!(otlp_meter_provider("https://collector:4318", Duration::from_secs(5)).is_err());
    assert!(otlp_meter_provider("collector:4318", Duration::from_secs(5)).is_err());
    // A zero interval is refused where it is given, naming it.
    let err = otlp_meter_provider("http://collector:4318", Duration::ZERO)
        .expect_err("zero interval refused");
    assert!(err.to_string().contains("interval"), "{err}");
}
