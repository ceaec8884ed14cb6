//! The server survives running out of file descriptors: a child process (this test binary,
//! re-run with `ulimit -n 64`) serves; the parent opens far more connections than it can hold
//! and then scrapes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use moescope_http::{Event, HttpServer, Limits, Method, Observer, Response, StatusCode};

const CHILD_ENV: &str = "MOESCOPE_HTTP_FD_CHILD";

/// Runs only inside the child: serves until stdin closes.
#[test]
fn fd_child_server() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let events = Arc::new(AtomicU64::new(0));
    let observer: Observer = {
        let events = Arc::clone(&events);
        Arc::new(move |e: &Event| {
            if matches!(
                e,
                Event::AcceptFailing {
                    exhausted: true,
                    os_error: Some(24),
                    ..
                }
            ) {
                events.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let stats = Arc::new(std::sync::OnceLock::<moescope_http::StatsHandle>::new());
    let router = test_router(0, Arc::default()).fast(Method::GET, "/stats", {
        let stats = Arc::clone(&stats);
        let events = Arc::clone(&events);
        move |_| {
            let s = stats.get().map(|h| h.read()).unwrap_or_default();
            Response::text(
                StatusCode::OK,
                format!(
                    "{} {} {}",
                    s.accept_errors_exhausted,
                    s.connections_evicted,
                    events.load(Ordering::Relaxed)
                ),
            )
        }
    });
    let limits = Limits {
        // Far above what 64 descriptors allow: only descriptor exhaustion limits the server.
        max_connections: 10_000,
        ..Limits::default()
    };
    let server =
        HttpServer::start_with_observer("127.0.0.1:0", limits, router, Some(observer)).unwrap();
    let _ = stats.set(server.stats_handle());
    // libtest may have printed "test fd_child_server ... " on this line already.
    println!("ADDR {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn the_server_keeps_accepting_after_running_out_of_file_descriptors() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" --exact fd_child_server --nocapture --test-threads 1")
        .arg(&exe)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("ADDR ").nth(1).map(|a| a.trim().parse().unwrap()))
        .expect("the child printed its address");
    // 300 idle connections against 64 descriptors.
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        worst = worst.max(assert_scrape_fast(addr));
    }
    let (r, _) = get(addr, "/stats");
    let nums: Vec<u64> = r.text().split(' ').map(|n| n.parse().unwrap()).collect();
    let (exhausted, evicted, events) = (nums[0], nums[1], nums[2]);
    eprintln!(
        "64 fds, 300 idle connections: worst scrape {worst:?}; accept EMFILE {exhausted}, \
         evicted {evicted}, EMFILE events reported {events}"
    );
    assert!(exhausted >= 1, "the test did not exhaust descriptors");
    assert!(evicted >= 200, "evicted {evicted}");
    // Reported once (the report interval is 10 s), however many failures.
    assert_eq!(events, 1);
    drop(idle);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "child: {status}");
}
