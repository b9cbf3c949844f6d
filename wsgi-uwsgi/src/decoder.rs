//! The request decoder: bytes in, [`Event`]s out.
//!
//! # Theory of operation
//!
//! A uwsgi connection from nginx carries exactly one request: a 4-byte
//! header, the vars block, then `CONTENT_LENGTH` body bytes. The decoder is a
//! three-state machine driven by [`Decoder::decode`]:
//!
//! ```text
//!   Head ──(header + whole vars block buffered)──▶ Body { remaining }
//!   Body ──(bytes arrive)──▶ Data events, remaining shrinks
//!   Body { remaining: 0 } ──▶ End event ──▶ Done
//!   any state ──(error)──▶ Failed (the same error every time after)
//! ```
//!
//! The head is decoded only once the whole vars block is buffered, so the
//! `Head` event can hand out one zero-copy [`Bytes`] block; the block is at
//! most 64 KiB. Limits that the header alone decides (`modifier1`,
//! `datasize`) are checked as soon as their bytes arrive, before waiting for
//! the rest. Body bytes are handed out as soon as they arrive, without
//! copying. Nothing past the body is ever consumed.
//!
//! [`Bytes`]: bytes::Bytes

use bytes::{Buf, Bytes, BytesMut};

use crate::packet::{Header, HEADER_LEN, MODIFIER1_WSGI};
use crate::vars::{self, Vars};
use crate::{Config, ParseError, RequestHead};

/// What [`Decoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The packet header and vars. Always the first event.
    Head(RequestHead),
    /// Some body bytes (never empty), in order.
    Data(Bytes),
    /// The whole body has arrived. Always the last event.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the header and the whole vars block.
    Head,
    /// Head handed out; this many body bytes still to come (0: `End` next).
    Body { remaining: u64 },
    /// `End` handed out; the request is complete.
    Done,
    /// An error was returned; it is returned again on every call.
    Failed(ParseError),
}

/// A sans-I/O decoder for one uwsgi request.
///
/// Feed it the bytes read from the connection, in a [`BytesMut`] the caller
/// owns; it removes what it consumes and yields `Head`, then zero or more
/// `Data`, then `End`.
///
/// ```
/// use bytes::BytesMut;
/// use wsgi_uwsgi::{encode_vars, Config, Decoder, Event};
///
/// let mut buf = BytesMut::new();
/// encode_vars([(&b"REQUEST_METHOD"[..], &b"POST"[..]), (b"CONTENT_LENGTH", b"2")], &mut buf)
///     .unwrap();
/// buf.extend_from_slice(b"hi");
///
/// let mut decoder = Decoder::new(Config::default());
/// let Some(Event::Head(head)) = decoder.decode(&mut buf).unwrap() else { panic!() };
/// assert_eq!(head.method(), Some(&b"POST"[..]));
/// assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Event::Data("hi".into())));
/// assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Event::End));
/// assert_eq!(decoder.decode(&mut buf).unwrap(), None);
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    config: Config,
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(Config::default())
    }
}

impl Decoder {
    /// A decoder waiting for a request's header.
    pub fn new(config: Config) -> Self {
        Decoder {
            config,
            state: State::Head,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decodes the next event from `src`, removing the bytes it consumes.
    ///
    /// `Ok(None)` means either "need more bytes" or, once `End` has been
    /// returned, "request complete": the uwsgi connection carries one
    /// request, so nothing more is decoded and bytes left in `src` stay
    /// there untouched. It is never an error.
    ///
    /// While waiting for the vars block it reserves room in `src` for the
    /// rest of the packet, so the caller's next read can fill it at once.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] if the peer's bytes are not a valid request or break
    /// a [`Config`] limit. Nothing is consumed from `src` by a failing call,
    /// and every later call returns the same error.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ParseError> {
        let result = self.step(src);
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    /// Like [`Decoder::decode`], for when the peer has closed its side and no
    /// more bytes will come.
    ///
    /// # Errors
    ///
    /// As [`Decoder::decode`], plus [`ParseError::Incomplete`] if the close
    /// cut a packet short and [`ParseError::IncompleteBody`] if it cut the
    /// body short. A close before any byte of a request is `Ok(None)`, not
    /// an error.
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ParseError> {
        if let Some(event) = self.decode(src)? {
            return Ok(Some(event));
        }
        let err = match self.state {
            State::Head if src.is_empty() => return Ok(None),
            State::Head => ParseError::Incomplete,
            State::Body { remaining } => ParseError::IncompleteBody { remaining },
            State::Done => return Ok(None),
            State::Failed(e) => e,
        };
        self.state = State::Failed(err);
        Err(err)
    }

    /// Whether `End` has been returned: the request is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the head has been returned but not yet the whole body.
    pub fn is_reading_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// Body bytes still expected, once the head has been decoded.
    pub fn remaining_body(&self) -> Option<u64> {
        match self.state {
            State::Body { remaining } => Some(remaining),
            _ => None,
        }
    }

    fn step(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ParseError> {
        match self.state {
            State::Head => self.decode_head(src),
            State::Body { remaining: 0 } => {
                self.state = State::Done;
                Ok(Some(Event::End))
            }
            State::Body { remaining } => {
                if src.is_empty() {
                    return Ok(None);
                }
                // Take what is there, up to the body's end; anything after
                // the body is not ours.
                let n = usize::try_from(remaining).map_or(src.len(), |r| r.min(src.len()));
                self.state = State::Body {
                    remaining: remaining - n as u64,
                };
                Ok(Some(Event::Data(src.split_to(n).freeze())))
            }
            State::Done => Ok(None),
            State::Failed(e) => Err(e),
        }
    }

    fn decode_head(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ParseError> {
        // Refuse on the first byte that decides it, not only once the
        // header is complete: a wrong modifier1 is usually a client speaking
        // HTTP to the uwsgi socket.
        if let Some(&modifier1) = src.first() {
            if modifier1 != MODIFIER1_WSGI {
                return Err(ParseError::UnsupportedModifier { modifier1 });
            }
        }
        let limit = u16::try_from(self.config.max_vars_size).unwrap_or(u16::MAX);
        if let Some(&[lo, hi]) = src.get(1..3) {
            let size = u16::from_le_bytes([lo, hi]);
            if size > limit {
                return Err(ParseError::VarsTooLarge { size, limit });
            }
        }
        let Some(header) = Header::parse(src) else {
            return Ok(None);
        };
        let packet_len = HEADER_LEN + usize::from(header.datasize);
        if src.len() < packet_len {
            src.reserve(packet_len - src.len());
            return Ok(None);
        }

        // Validate in place before consuming anything, so a failing call
        // leaves `src` as it was.
        let block = &src[HEADER_LEN..packet_len];
        let index = vars::index(block, self.config.max_vars)?;
        let content_length = index.content_length()?;
        if let Some(limit) = self.config.max_body_size {
            if content_length > limit {
                return Err(ParseError::BodyTooLarge {
                    content_length,
                    limit,
                });
            }
        }

        let mut packet = src.split_to(packet_len);
        packet.advance(HEADER_LEN);
        let vars = Vars::from_parts(packet.freeze(), index);
        self.state = State::Body {
            remaining: content_length,
        };
        Ok(Some(Event::Head(RequestHead {
            modifier1: header.modifier1,
            modifier2: header.modifier2,
            vars,
            content_length,
        })))
    }
}
