//! A small HTTP/1.1 server that no client can stop: for a `/metrics` endpoint and a demo API
//! inside a serving binary.
//!
//! The server runs on its own thread with its own current-thread tokio runtime, so the binary's
//! threads (and its own async runtime, if any) are never touched. Parsing is hyper's. A
//! [`Router`] maps an exact method and path to a synchronous handler `Fn(&Request) -> Response`;
//! each route is [`Mode::Fast`] (run on the server thread: metrics, health) or [`Mode::Slow`]
//! (run on a bounded pool of blocking threads: model inference), so `/metrics` keeps answering
//! while inference is busy, and a saturated slow route answers `503` at once instead of
//! queueing.
//!
//! Every input is bounded by [`Limits`] (defaults in brackets): request head size [16 KiB, `431`],
//! header count [64, `431`], request target [4 KiB, `414`], body [64 KiB, `413`, refused from
//! `Content-Length` before reading; never allocated from it], header read time [10 s],
//! request time [30 s, `408`/`503`], keep-alive idle time [30 s], open connections [256; an
//! idle or stalled connection is closed to admit a new one, `503` when all run handlers], slow
//! handlers in flight [2, `503`]. When `accept` fails for lack of file descriptors the server
//! closes idle connections, backs off (1 ms doubling to 1 s) and keeps accepting; it counts the
//! failures in [`ServerStats`] and reports them to an optional [`Observer`] at most once per
//! [`Limits::event_interval`]. The library never prints.
//!
//! Text bodies can be cut at a character boundary with [`truncate_utf8`] (or
//! [`Request::body_text`]), which reports whether anything was cut.
//!
//! ```
//! use moescope_http::{HttpServer, Limits, Method, Response, Router, StatusCode};
//! use std::io::{Read, Write};
//!
//! let router = Router::new()
//!     .fast(Method::GET, "/metrics", |_req| {
//!         Response::new(StatusCode::OK, "text/plain; version=0.0.4", "up 1\n")
//!     })
//!     .slow(Method::POST, "/v1/echo", |req| {
//!         // Expensive work runs here, off the server thread.
//!         match req.body_text(4096) {
//!             Ok(t) => Response::text(StatusCode::OK, format!("{} (cut: {})", t.text, t.cut)),
//!             Err(e) => Response::text(StatusCode::BAD_REQUEST, e.to_string()),
//!         }
//!     });
//! let server = HttpServer::start("127.0.0.1:0", Limits::default(), router)?;
//!
//! let mut conn = std::net::TcpStream::connect(server.local_addr())?;
//! conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
//! let mut reply = String::new();
//! conn.read_to_string(&mut reply)?;
//! assert!(reply.starts_with("HTTP/1.1 200 OK"));
//! assert!(reply.ends_with("up 1\n"));
//! assert_eq!(server.stats().requests, 1);
//! server.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conn;
mod error;
mod limits;
mod router;
mod server;
mod stats;
mod text;

pub use error::HttpError;
pub use http::{header, HeaderMap, Method, StatusCode};
pub use limits::{Limits, MAX_CONFIGURABLE_BYTES};
pub use router::{Handler, Mode, Request, Response, Router};
pub use server::{serve_bytes, HttpServer};
pub use stats::{Event, Observer, ServerStats, StatsHandle};
pub use text::{truncate_str, truncate_utf8, InvalidUtf8, Truncated};
