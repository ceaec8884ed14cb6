//! `moescope demo` (the real model through tract) serves per-layer usage entropy for en, he
//! and ja at /metrics, from its own load generator, within seconds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the demo when the test ends, passed or failed.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn demo_serves_per_layer_entropy_for_en_he_ja_from_the_real_model() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "40",
            "--quiet",
            "--interval-ms",
            "500",
            "--rps",
            "40",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    assert!(first.contains("tiny-qwen3-moe"), "{first}");

    let deadline = Instant::now() + Duration::from_secs(35);
    let mut last = String::new();
    loop {
        if let Ok(body) = get(&addr, "/metrics") {
            let has = |lang: &str, layer: u32| {
                body.lines().any(|l| {
                    l.starts_with("moe_routing_usage_entropy_bits{")
                        && l.contains(&format!("layer=\"{layer}\""))
                        && l.contains(&format!("lang=\"{lang}\""))
                })
            };
            let all = ["en", "he", "ja"]
                .iter()
                .all(|lang| (0..4).all(|layer| has(lang, layer)));
            let tokenization = ["en", "he", "ja"].iter().all(|lang| {
                body.lines().any(|l| {
                    l.starts_with("moe_routing_tokens_per_char{")
                        && l.contains(&format!("lang=\"{lang}\""))
                })
            });
            if all && tokenization {
                // Byte-level tokens: one per English character, three per Japanese one.
                let per_char = |lang: &str| -> f64 {
                    body.lines()
                        .find(|l| {
                            l.starts_with("moe_routing_tokens_per_char{")
                                && l.contains(&format!("lang=\"{lang}\""))
                        })
                        .and_then(|l| l.rsplit(' ').next())
                        .and_then(|v| v.parse().ok())
                        .unwrap()
                };
                assert!((per_char("en") - 1.0).abs() < 1e-9, "{body}");
                assert!((per_char("ja") - 3.0).abs() < 0.05, "{body}");
                break;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "no entropy for en, he and ja in time; last scrape:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // A request without a tag is detected; with one, the tag is used.
    let mut s = TcpStream::connect(&addr).unwrap();
    let body = "השועל החום הזריז קופץ מעל הכלב העצלן.";
    write!(
        s,
        "POST /v1/route HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("\"lang\":\"he\"") && out.contains("\"lang_source\":\"detected\""),
        "{out}"
    );
    assert!(out.contains(&format!("\"tokens\":{}", body.len())), "{out}");
    drop(demo);
}
