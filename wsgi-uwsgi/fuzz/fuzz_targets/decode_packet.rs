//! Fuzz target: arbitrary bytes, split into two reads at a fuzzer-chosen
//! point, must never panic, and the decoder's events must stay consistent
//! with the bytes it consumed.
//!
//! Run from `wsgi-uwsgi/fuzz` (stable Rust needs `RUSTC_BOOTSTRAP=1` for the
//! sanitizer flags cargo-fuzz passes):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run decode_packet -- -max_total_time=10`
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wsgi_uwsgi::{Config, Decoder, Event, ParseError};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the split point and the limits, so the
    // fuzzer can steer both without a custom `Arbitrary` type.
    let &[split_lo, knobs, ref input @ ..] = data else {
        return;
    };
    let split = usize::from(split_lo).min(input.len());
    let config = if knobs & 1 == 0 {
        Config::default()
    } else {
        Config {
            max_vars_size: usize::from(knobs >> 1) * 64,
            max_vars: usize::from(knobs >> 4),
            max_body_size: Some(u64::from(knobs)),
        }
    };
    let mut decoder = Decoder::new(config);
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    let mut body = 0u64;
    let mut content_length = None;
    let mut ended = false;

    for (chunk, eof) in [(&input[..split], false), (&input[split..], true)] {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let result = if eof {
                decoder.decode_eof(&mut buf)
            } else {
                decoder.decode(&mut buf)
            };
            consumed += before - buf.len();
            match result {
                Ok(Some(Event::Head(head))) => {
                    assert!(content_length.is_none());
                    assert_eq!(head.modifier1, 0);
                    assert!(head.vars.iter().all(|(k, _)| !k.is_empty()));
                    content_length = Some(head.content_length);
                }
                Ok(Some(Event::Data(data))) => {
                    assert!(!data.is_empty());
                    body += data.len() as u64;
                    assert!(body <= content_length.unwrap_or(0));
                }
                Ok(Some(Event::End)) => {
                    assert_eq!(Some(body), content_length);
                    ended = true;
                }
                Ok(None) => break,
                Err(e) => {
                    // Sticky, and nothing consumed by the failing call.
                    assert_eq!(before, buf.len());
                    let again: Result<_, ParseError> = decoder.decode(&mut buf);
                    assert_eq!(again, Err(e));
                    return;
                }
            }
        }
    }
    assert_eq!(consumed + buf.len(), input.len());
    // A clean EOF either ended the request or came before any byte of it.
    assert!(ended || consumed == 0);
});
