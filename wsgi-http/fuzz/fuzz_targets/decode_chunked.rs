//! Fuzz target: arbitrary bytes as a chunked request body (after a fixed head), split at a fuzzer-chosen point, never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wsgi_http::{Config, Event, ServerConn};

const HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let split = usize::from(split).min(rest.len());
    let config = Config { max_chunk_extension: 64, max_trailer_size: 256, max_body_size: Some(1 << 20), ..Config::default() };
    let mut conn = ServerConn::new(config);
    let mut buf = BytesMut::from(HEAD);
    let mut body_len = 0usize;
    for piece in [&rest[..split], &rest[split..]] {
        buf.extend_from_slice(piece);
        loop {
            match conn.decode(&mut buf) {
                Ok(Some(Event::Data(bytes))) => {
                    assert!(!bytes.is_empty());
                    body_len += bytes.len();
                    // Body bytes are always fewer than the wire bytes.
                    assert!(body_len <= rest.len());
                }
                Ok(Some(Event::End)) => {
                    let _ = conn.take_trailers();
                    return;
                }
                Ok(Some(Event::Head(_))) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = conn.decode_eof(&mut buf);
});
