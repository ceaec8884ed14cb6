//! A request line with no line ending is cut off after a bounded number of bytes. In its own
//! test binary so that no other test's allocations move the resident set size.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use moescope_http::Limits;

#[test]
fn a_128_mb_request_line_without_line_ending_is_cut_off() {
    const LINE: usize = 128 << 20;
    let server = start(Limits::default());
    let addr = server.local_addr();
    let rss_before = rss_kib();
    let started = Instant::now();
    // Four at once, as in the original report (4 x 128 MB gave 540 MB there).
    let senders: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let chunk = vec![b'A'; 1 << 20];
                s.write_all(b"GET /").unwrap();
                let mut sent = 0usize;
                while sent < LINE {
                    match s.write(&chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sent += n,
                    }
                }
                let reply = read_reply(&mut s).ok().map(|r| r.status);
                (sent, reply)
            })
        })
        .collect();
    for h in senders {
        let (sent, reply) = h.join().unwrap();
        // The server stops reading at its 16 KiB head limit: what the kernel buffers on both
        // sides is all a client can push before its writes fail.
        assert!(
            sent < 16 << 20,
            "the server accepted {sent} bytes of one line"
        );
        // Usually a 431 reaches the client before the reset; a reset first is fine too.
        assert!(matches!(reply, None | Some(431)), "{reply:?}");
    }
    let took = started.elapsed();
    let grown = rss_kib().saturating_sub(rss_before);
    eprintln!("4 x 128 MB lines: cut off in {took:?}; RSS grew {grown} KiB");
    assert!(grown < 32 * 1024, "RSS grew {grown} KiB");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_scrape_fast(addr);
}
