//! The real-model demo's server under the attacks that once stopped it: a huge declared body,
//! stalled uploads, idle connections, and text whose 1,024-byte cut falls inside a character.
//! After each, `/metrics` still answers within 1 s.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;
use common::send;

fn assert_scrape_fast(addr: &str) {
    let t = Instant::now();
    let out = send(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .expect("scrape");
    let took = t.elapsed();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(took < Duration::from_secs(1), "scrape took {took:?}");
}

fn post(addr: &str, path: &str, body: &[u8]) -> String {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    send(addr, &req).expect("post")
}

#[test]
fn the_demo_server_survives_oversized_stalled_and_idle_clients() {
    let demo = common::start_demo(["--duration", "60", "--no-load", "--interval-ms", "500"]);
    let addr = demo.addr.clone();
    assert_scrape_fast(&addr);

    // 1. Declared bodies of 2^40 bytes and 2^64 - 1 bytes: refused, nothing allocated.
    for len in [(1u64 << 40).to_string(), u64::MAX.to_string()] {
        for _ in 0..2 {
            let out = send(
                &addr,
                format!("POST /v1/route HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            assert!(
                out.starts_with("HTTP/1.1 413") || out.starts_with("HTTP/1.1 431"),
                "{len}: {out}"
            );
        }
        assert_scrape_fast(&addr);
    }

    // 3. Two stalled uploads do not hang anything.
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /v1/route HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // 2./7. Idle connections do not delay scrapes.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_scrape_fast(&addr);

    // 5. Valid UTF-8 over the limit, the cut inside a character: answered, the cut reported.
    let text = format!("a{}", "ש".repeat(1000)); // 2,001 bytes; byte 1,024 is mid-letter
    let out = post(&addr, "/v1/route?lang=he", text.as_bytes());
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(json["cut"], true, "{json}");
    assert_eq!(json["tokens"], 1023, "{json}");
    assert_eq!(json["chars"], 512, "{json}");
    assert_eq!(json["received_bytes"], 2001, "{json}");
    assert_eq!(json["lang"], "he", "{json}");
    assert_scrape_fast(&addr);
    // The server's own counters are on /metrics: the refused bodies and evicted connections.
    let metrics = send(
        &addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    };
    assert_eq!(
        value("moescope_http_requests_refused_total{reason=\"body_too_large\"}"),
        2
    );
    assert!(value("moescope_http_connections_accepted_total") >= 300);
    drop((stalled, idle));
}
