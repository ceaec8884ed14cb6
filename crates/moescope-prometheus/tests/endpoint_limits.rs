//! `serve_prometheus` under the clients that once delayed or exhausted it: idle connections
//! opened before a scrape, a client sending one byte per second, a request line with no line
//! ending. Each scrape is answered within 1 s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch};
use moescope_prometheus::serve_prometheus;
use moescope_publish::PublisherConfig;

fn scrape(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let took = t.elapsed();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("moe_routing_usage_entropy_bits{"), "{out}");
    assert!(took < Duration::from_secs(1), "scrape took {took:?}");
    took
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn idle_dripping_and_endless_clients_do_not_delay_scrapes() {
    let rec =
        Arc::new(Recorder::new(ModelSpec::new("toy-moe", 4, 1, vec![0, 1]).unwrap()).unwrap());
    let en = rec.language("en");
    rec.record(&RouterBatch::at_depth(
        0,
        &[0u32, 1, 2, 3],
        Languages::All(en),
    ))
    .unwrap();
    let config = PublisherConfig {
        interval: Duration::from_millis(100),
        ..PublisherConfig::default()
    };
    let export = serve_prometheus(rec, "127.0.0.1:0", config).unwrap();
    let addr = export.endpoint.local_addr();
    std::thread::sleep(Duration::from_millis(300));

    // Five idle connections opened before the scrape (once: 2 s each, 9.8 s in all).
    let idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(scrape(addr) < Duration::from_millis(500));

    // One byte per second (once: scrapes blocked for as long as it kept sending).
    let dripper = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        for &b in b"GET /met".iter() {
            if s.write_all(&[b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1000));
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        scrape(addr);
    }

    // 4 x 64 MB request lines without a line ending (once: read without limit).
    let before = rss_kib();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let chunk = vec![b'A'; 1 << 20];
                let _ = s.write_all(b"GET /");
                let mut sent = 0usize;
                while sent < 64 << 20 {
                    match s.write(&chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sent += n,
                    }
                }
                sent
            })
        })
        .collect();
    for h in senders {
        let sent = h.join().unwrap();
        assert!(
            sent < 16 << 20,
            "the endpoint took {sent} bytes of one line"
        );
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "RSS grew {grown} KiB");
    scrape(addr);
    let stats = export.endpoint.http_stats();
    assert!(stats.connections_accepted >= 14, "{stats:?}");
    drop(idle);
    dripper.join().unwrap();
}
