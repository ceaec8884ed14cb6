//! A minimal blocking HTTP/1.1 client for the tests, and a test server.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moescope_http::{HttpServer, Limits, Method, Response, Router, StatusCode};

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `s` (Content-Length bodies, or to EOF).
pub fn read_reply(s: &mut TcpStream) -> std::io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match len {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {
            s.read_to_end(&mut body)?;
        }
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Reply> {
    let mut s = connect(addr);
    s.write_all(request)?;
    read_reply(&mut s)
}

/// `GET path` on a new connection; returns the reply and how long it took.
pub fn get(addr: SocketAddr, path: &str) -> (Reply, Duration) {
    let t = Instant::now();
    let r = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r, t.elapsed())
}

/// Asserts that `/metrics` answers 200 within 1 s, and returns the time taken.
pub fn assert_scrape_fast(addr: SocketAddr) -> Duration {
    let (r, took) = get(addr, "/metrics");
    assert_eq!(r.status, 200, "scrape status");
    assert_eq!(r.text(), "moescope_up 1\n");
    assert!(took < Duration::from_secs(1), "scrape took {took:?}");
    took
}

/// The test server: fast `GET /metrics`, fast `POST /echo` (body length), slow `POST /slow`
/// (sleeps `slow_ms` then echoes the body length), fast `GET /panic`.
pub fn test_router(slow_ms: u64, slow_runs: Arc<AtomicU64>) -> Router {
    Router::new()
        .fast(Method::GET, "/metrics", |_| {
            Response::new(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                "moescope_up 1\n",
            )
        })
        .fast(Method::POST, "/echo", |req| {
            Response::text(StatusCode::OK, format!("{}", req.body().len()))
        })
        .slow(Method::POST, "/slow", move |req| {
            std::thread::sleep(Duration::from_millis(slow_ms));
            slow_runs.fetch_add(1, Ordering::Relaxed);
            Response::text(StatusCode::OK, format!("{}", req.body().len()))
        })
        .fast(Method::GET, "/panic", |_| panic!("handler bug"))
        .fast(Method::GET, "/work", |_| {
            Response::text(StatusCode::OK, "x".repeat(4096))
        })
}

pub fn start(limits: Limits) -> HttpServer {
    HttpServer::start("127.0.0.1:0", limits, test_router(0, Arc::default())).expect("start")
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}
