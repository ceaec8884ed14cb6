//! What the tests that run `moescope demo` share: starting it on a free port, reading its
//! address from the banner, stopping it when the test ends, and raw HTTP on loopback.

#![allow(dead_code)] // each test file uses its own part

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `moescope demo`, killed when dropped (the test passed or failed).
pub struct Demo {
    child: Child,
    /// `host:port` of its HTTP server.
    pub addr: String,
    /// The banner's first line.
    pub banner: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moescope demo --simulate` in which he (10 % of the traffic, with en 80 % and ja 10 %)
/// collapses from the start and never recovers: 50 steps a second, a round every 250 ms,
/// 1-second buckets, for at most 60 s.
pub fn start_collapsed_sim_demo() -> Demo {
    start_demo([
        "--simulate",
        "--collapse-at",
        "0",
        "--recover-at",
        "0",
        "--mix",
        "en=0.8,he=0.1,ja=0.1",
        "--steps-per-second",
        "50",
        "--interval-ms",
        "250",
        "--bucket-ms",
        "1000",
        "--duration",
        "60",
    ])
}

/// Starts `moescope demo --listen 127.0.0.1:0 --quiet ARGS...` and waits for its banner.
pub fn start_demo<I, S>(args: I) -> Demo
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args(["demo", "--listen", "127.0.0.1:0", "--quiet"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the moescope binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut banner = String::new();
    BufReader::new(stdout)
        .read_line(&mut banner)
        .expect("a banner line");
    let addr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();
    Demo {
        child,
        addr,
        banner,
    }
}

/// Sends raw `request` bytes and reads the whole response (the server closes after it).
pub fn send(addr: &str, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `GET path`, the whole response (status line, headers, body).
pub fn get(addr: &str, path: &str) -> std::io::Result<String> {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}
