//! Fuzz target: arbitrary bytes as a request stream, split at a fuzzer-chosen point, never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wsgi_http::{Config, Event, ResponseHead, ServerConn};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the rest is split in two reads.
    let Some((&split, rest)) = data.split_first() else { return };
    let split = usize::from(split).min(rest.len());
    let mut conn = ServerConn::new(Config::default());
    let mut buf = BytesMut::new();
    for piece in [&rest[..split], &rest[split..]] {
        buf.extend_from_slice(piece);
        loop {
            match conn.decode(&mut buf) {
                Ok(Some(Event::End)) => {
                    let mut out = BytesMut::new();
                    let head = ResponseHead { status: 200, reason: b"OK", headers: &[], date: None, content_length: None, close: false };
                    conn.encode_head(&head, &mut out).unwrap();
                    conn.encode_data(b"ok", &mut out).unwrap();
                    conn.encode_end(&mut out).unwrap();
                    if conn.start_next_cycle().is_err() {
                        return;
                    }
                }
                Ok(Some(Event::Head(head))) => {
                    let _ = (head.path(), head.query(), head.host());
                    // Every field the codec let through fits a HeaderMap.
                    assert_eq!(head.headers.to_header_map().len(), head.headers.len());
                    let _ = head.headers.get("content-type");
                }
                Ok(Some(Event::Data(bytes))) => assert!(!bytes.is_empty()),
                Ok(None) => break,
                Err(error) => {
                    let _ = error.status();
                    return;
                }
            }
        }
    }
    let _ = conn.decode_eof(&mut buf);
});
