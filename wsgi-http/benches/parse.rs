//! Head parsing throughput: a small browser-like GET and a 30-header head, reported as ns/request and MB/s (no criterion: `harness = false`).

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use wsgi_http::{Config, Event, ServerConn};

const SMALL: &[u8] = b"GET /index.html?lang=en HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\r\n";

fn thirty_headers() -> Vec<u8> {
    let mut head =
        b"POST /api/v1/items/12345?expand=owner&fields=a,b,c HTTP/1.1\r\nHost: api.example.com\r\n"
            .to_vec();
    for i in 1..30 {
        head.extend_from_slice(
            format!("X-Custom-Header-{i}: value-{i}-abcdefghijklmnopqrstuvwxyz\r\n").as_bytes(),
        );
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// One full cycle: decode head + End from a fresh buffer.
fn parse_once(conn: &mut ServerConn, input: &[u8]) {
    let mut buf = BytesMut::from(input);
    match conn.decode(&mut buf) {
        Ok(Some(Event::Head(head))) => {
            black_box(&head);
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn bench(name: &str, input: &[u8]) {
    let iterations = 100_000;
    let mut samples = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        for _ in 0..iterations {
            // A fresh connection per request: measures scan + parse + HeaderMap.
            let mut conn = ServerConn::new(Config::default());
            parse_once(&mut conn, black_box(input));
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let megabytes_per_second = input.len() as f64 / median * 1e9 / 1e6;
    println!(
        "{name:<12} {len:>5} bytes  {median:>8.1} ns/request  {megabytes_per_second:>8.1} MB/s",
        len = input.len()
    );
}

fn main() {
    // `cargo test --benches` runs this binary with `--bench` absent; keep it short then.
    if std::env::args().any(|arg| arg == "--test") {
        let mut conn = ServerConn::new(Config::default());
        parse_once(&mut conn, SMALL);
        return;
    }
    bench("small GET", SMALL);
    bench("30 headers", &thirty_headers());
}
