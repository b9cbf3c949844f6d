//! Property tests: encode → decode round trips, split-independence, and
//! "arbitrary bytes never panic".

use bytes::BytesMut;
use proptest::prelude::*;
use wsgi_uwsgi::{encode_packet, encode_vars, Config, Decoder, Event, ParseError};

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What a run produced, with body pieces merged so differently split runs
/// compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    head: Option<(u8, u8, Pairs, u64)>,
    body: Vec<u8>,
    ended: bool,
    error: Option<ParseError>,
    left: Vec<u8>,
}

/// Feeds `input` cut at `cuts` (any values; clamped and sorted), then EOF,
/// checking the decoder's invariants along the way.
fn run(config: Config, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut decoder = Decoder::new(config);
    let mut buf = BytesMut::new();
    let mut out = Outcome {
        head: None,
        body: Vec::new(),
        ended: false,
        error: None,
        left: Vec::new(),
    };
    let mut consumed = 0;
    let mut fed = 0;
    for (i, &cut) in cuts.iter().enumerate() {
        buf.extend_from_slice(&input[fed..cut]);
        fed = cut;
        let eof = i + 1 == cuts.len();
        loop {
            let before = buf.len();
            let result = if eof {
                decoder.decode_eof(&mut buf)
            } else {
                decoder.decode(&mut buf)
            };
            consumed += before - buf.len();
            match result {
                Ok(Some(Event::Head(h))) => {
                    assert!(out.head.is_none(), "two heads");
                    assert_eq!(h.modifier1, 0);
                    let pairs = h.vars.iter().map(|(k, v)| (k.to_vec(), v.to_vec()));
                    out.head = Some((h.modifier1, h.modifier2, pairs.collect(), h.content_length));
                }
                Ok(Some(Event::Data(d))) => {
                    assert!(!d.is_empty());
                    out.body.extend_from_slice(&d);
                    let cl = out.head.as_ref().map_or(0, |h| h.3);
                    assert!(out.body.len() as u64 <= cl, "body past CONTENT_LENGTH");
                }
                Ok(Some(Event::End)) => {
                    assert!(!out.ended);
                    assert_eq!(Some(out.body.len() as u64), out.head.as_ref().map(|h| h.3));
                    out.ended = true;
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(before, buf.len(), "a failing call consumed bytes");
                    assert_eq!(decoder.decode(&mut buf), Err(e));
                    out.error = Some(e);
                    break;
                }
            }
        }
        if out.error.is_some() {
            break;
        }
    }
    buf.extend_from_slice(&input[fed..]);
    assert_eq!(consumed + buf.len(), input.len(), "bytes lost or invented");
    out.left = buf.to_vec();
    out
}

fn pairs() -> impl Strategy<Value = Pairs> {
    let key = prop::collection::vec(any::<u8>(), 1..24)
        .prop_filter("framing is tested separately", |k| k != b"CONTENT_LENGTH");
    let value = prop::collection::vec(any::<u8>(), 0..64);
    prop::collection::vec((key, value), 0..40)
}

fn small_config() -> impl Strategy<Value = Config> {
    prop_oneof![
        Just(Config::default()),
        (0usize..300, 0usize..8, prop::option::of(0u64..300)).prop_map(
            |(max_vars_size, max_vars, max_body_size)| Config {
                max_vars_size,
                max_vars,
                max_body_size,
            }
        ),
    ]
}

proptest! {
    #[test]
    fn round_trip(
        vars in pairs(),
        body in prop::collection::vec(any::<u8>(), 0..300),
        cl_at in any::<prop::sample::Index>(),
        m2 in any::<u8>(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        trailing in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut vars = vars;
        let cl = body.len().to_string().into_bytes();
        vars.insert(cl_at.index(vars.len() + 1), (b"CONTENT_LENGTH".to_vec(), cl));

        let mut wire = BytesMut::new();
        encode_packet(0, m2, vars.iter().map(|(k, v)| (k, v)), &mut wire).unwrap();
        wire.extend_from_slice(&body);
        let request_len = wire.len();
        wire.extend_from_slice(&trailing);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();

        let out = run(Config::default(), &wire, &cuts);
        prop_assert_eq!(out.error, None);
        prop_assert_eq!(out.head, Some((0, m2, vars, body.len() as u64)));
        prop_assert_eq!(out.body, body);
        prop_assert!(out.ended);
        prop_assert_eq!(out.left, trailing);

        // Cut anywhere inside the request, EOF is an error, never a request.
        let cut = cuts.first().copied().unwrap_or(0).min(request_len.saturating_sub(1));
        if request_len > 0 && cut > 0 {
            let out = run(Config::default(), &wire[..cut], &[]);
            prop_assert!(matches!(
                out.error,
                Some(ParseError::Incomplete | ParseError::IncompleteBody { .. })
            ), "{:?}", out);
        }
    }

    #[test]
    fn encode_vars_is_modifier_zero(vars in pairs()) {
        let mut a = BytesMut::new();
        let mut b = BytesMut::new();
        encode_vars(vars.iter().map(|(k, v)| (k, v)), &mut a).unwrap();
        encode_packet(0, 0, vars.iter().map(|(k, v)| (k, v)), &mut b).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        config in small_config(),
    ) {
        let whole = run(config, &input, &[]);
        let split = run(config, &input, &cuts);
        // However the bytes arrive, the decoder reaches the same verdict.
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn header_shaped_garbage_never_panics(
        block in prop::collection::vec(any::<u8>(), 0..400),
        size_delta in -3i32..3,
        m2 in any::<u8>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        config in small_config(),
    ) {
        // A valid header around a random block, so the vars parser itself
        // gets exercised rather than the modifier check.
        let size = (block.len() as i32 + size_delta).clamp(0, 65535) as u16;
        let mut input = vec![0];
        input.extend_from_slice(&size.to_le_bytes());
        input.push(m2);
        input.extend_from_slice(&block);
        input.extend_from_slice(&tail);
        let whole = run(config, &input, &[]);
        let split = run(config, &input, &cuts);
        prop_assert_eq!(whole, split);
    }
}
