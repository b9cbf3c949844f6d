//! [`ServerConn`]: one server-side HTTP/1.x connection's decode/encode state machine.
//!
//! # Theory of operation
//!
//! A connection carries a sequence of request/response cycles. Each side of
//! a cycle has its own explicit state:
//!
//! ```text
//!  Reading:  Head ──Event::Head──▶ Body ──Event::End──▶ Done (paused)
//!              ▲                                           │
//!              └─────────── start_next_cycle() ◀───────────┘
//!            any error ──▶ Failed(err) (returned again on every call)
//!
//!  Writing:  Idle ──encode_head──▶ Body ──encode_end──▶ Done
//!              ▲                                          │
//!              └─────────── start_next_cycle() ◀──────────┘
//! ```
//!
//! `decode` only ever moves `Reading`; the encode methods only move
//! `Writing`. While `Reading` is `Done`, `decode` returns `Ok(None)`
//! without looking at the buffer, so bytes of a pipelined next request stay
//! in it untouched until the response is finished and `start_next_cycle`
//! has checked that the connection may be reused (h11's `PAUSED`).
//!
//! Keep-alive is the conjunction of what the request allows
//! (RFC 9112 §9.3), what the response framing allows (a close-delimited
//! body ends the connection), what the server asked (`ResponseHead::close`),
//! and that nothing failed on either side.

use bytes::BytesMut;
use http::{HeaderMap, Method, Version};

use crate::body::{BodyDecoder, BodyEvent, ChunkedDecoder};
use crate::config::Config;
use crate::encode::{Frame, ResponseEncoder, ResponseHead};
use crate::error::{EncodeError, ParseError};
use crate::head::{parse_head, BodyLength, HeadScanner, RequestHead};

/// What `decode` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request head. Followed by zero or more `Data` and one `End`.
    Head(RequestHead),
    /// Body bytes, never empty, sharing the read buffer's allocation.
    Data(bytes::Bytes),
    /// The body is complete. Chunked trailers, if any, were validated and
    /// size-limited; get them with [`ServerConn::take_trailers`].
    End,
}

/// The request side of the cycle.
#[derive(Debug)]
enum Reading {
    /// Waiting for (the rest of) a head.
    Head(HeadScanner),
    /// Reading the body.
    Body(BodyDecoder),
    /// `End` was returned; paused until `start_next_cycle`.
    Done,
    /// A parse error happened; the connection is unusable.
    Failed(ParseError),
}

/// The response side of the cycle.
#[derive(Debug)]
enum Writing {
    /// No response head yet.
    Idle,
    /// Head sent (the encoder knows whether the body is done).
    Started(ResponseEncoder),
}

/// A server-side HTTP/1.x connection, without I/O.
///
/// The caller reads bytes into a `BytesMut` and calls [`decode`](Self::decode)
/// until it returns `Ok(None)`, encodes the response into its write buffer,
/// then calls [`start_next_cycle`](Self::start_next_cycle) to go on with the
/// next request, or closes when that fails. See the crate docs for a loop.
#[derive(Debug)]
pub struct ServerConn {
    config: Config,
    reading: Reading,
    writing: Writing,
    /// Version of the current request (HTTP/1.1 before one is parsed).
    version: Version,
    /// The current request is a HEAD request.
    is_head: bool,
    /// What the current request allows (RFC 9112 §9.3).
    request_keep_alive: bool,
    /// The client asked for 100-continue and has not been answered yet.
    expect_continue: bool,
    /// Trailers of the last chunked body, until taken.
    trailers: Option<HeaderMap>,
    /// The connection is over (an error, or a cycle that may not be reused).
    closed: bool,
    /// A request head was decoded in this cycle.
    request_seen: bool,
}

impl ServerConn {
    /// A connection waiting for its first request.
    pub fn new(config: Config) -> Self {
        ServerConn {
            config,
            reading: Reading::Head(HeadScanner::default()),
            writing: Writing::Idle,
            version: Version::HTTP_11,
            is_head: false,
            request_keep_alive: false,
            expect_continue: false,
            trailers: None,
            closed: false,
            request_seen: false,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decodes the next event from `src`.
    ///
    /// `Ok(None)` means more bytes are needed, or that the request is over
    /// and decoding is paused until the response is finished and
    /// [`start_next_cycle`](Self::start_next_cycle) is called. Consumed bytes
    /// are removed from `src`; bytes of a pipelined next request stay in it.
    /// Between calls the caller may only append to `src` (the head scanner
    /// remembers how far it looked).
    ///
    /// # Errors
    /// A [`ParseError`] whose `status()` the server should answer with,
    /// then close. The same error is returned by every later call.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ParseError> {
        let result = self.decode_inner(src);
        if let Err(error) = result {
            self.reading = Reading::Failed(error);
            self.closed = true;
        }
        result
    }

    fn decode_inner(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ParseError> {
        match &mut self.reading {
            Reading::Failed(error) => Err(*error),
            Reading::Done => Ok(None),
            Reading::Head(scanner) => {
                let Some(head_len) = scanner.scan(src, &self.config)? else {
                    return Ok(None);
                };
                let head = parse_head(src, head_len, &self.config)?;
                self.version = head.version;
                self.is_head = head.method == Method::HEAD;
                self.request_keep_alive = head.keep_alive;
                self.expect_continue = head.expect_continue;
                self.request_seen = true;
                self.reading = Reading::Body(match head.body {
                    BodyLength::Empty => BodyDecoder::Length { remaining: 0 },
                    BodyLength::Known(length) => BodyDecoder::Length { remaining: length },
                    BodyLength::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new()),
                });
                Ok(Some(Event::Head(head)))
            }
            Reading::Body(decoder) => match decoder.decode(src, &self.config)? {
                None => Ok(None),
                Some(BodyEvent::Data(data)) => {
                    // The client sent body bytes: it no longer waits for 100.
                    self.expect_continue = false;
                    Ok(Some(Event::Data(data)))
                }
                Some(BodyEvent::End(trailers)) => {
                    self.trailers = trailers;
                    self.expect_continue = false;
                    self.reading = Reading::Done;
                    Ok(Some(Event::End))
                }
            },
        }
    }

    /// Like [`decode`](Self::decode), after the peer closed its sending side.
    ///
    /// Returns events still complete in `src`, then `Ok(None)` if the
    /// connection is at a clean boundary: idle between requests with nothing
    /// but empty lines buffered (they are consumed), or paused after `End`.
    ///
    /// # Errors
    /// [`ParseError::Incomplete`] when a head or body was cut short.
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ParseError> {
        if let Some(event) = self.decode(src)? {
            return Ok(Some(event));
        }
        match &self.reading {
            Reading::Done | Reading::Failed(_) => Ok(None),
            Reading::Head(scanner)
                if scanner.is_idle() && src.iter().all(|&b| b == b'\r' || b == b'\n') =>
            {
                src.clear();
                Ok(None)
            }
            Reading::Body(decoder) if decoder.is_done() => Ok(None),
            _ => {
                self.reading = Reading::Failed(ParseError::Incomplete);
                self.closed = true;
                Err(ParseError::Incomplete)
            }
        }
    }

    /// Counts the next `len` bytes of a `Content-Length` body as read
    /// without their passing through [`decode`](Self::decode): the caller
    /// takes them from the connection into their final place itself, and
    /// must take exactly these bytes, since the next `decode` continues after
    /// them. Returns `false`, changing nothing, unless the current request's
    /// body has a known length with at least `len` (> 0) bytes still to come.
    pub fn skip_body(&mut self, len: u64) -> bool {
        match &mut self.reading {
            Reading::Body(BodyDecoder::Length { remaining }) if len > 0 && *remaining >= len => {
                *remaining -= len;
                // Body bytes came: the client no longer waits for 100.
                self.expect_continue = false;
                true
            }
            _ => false,
        }
    }

    /// Trailer fields of the last chunked request body, if it had any.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }

    /// Whether the current request asked for `100 Continue` and neither a
    /// response (100 or final) nor a body byte has gone by since. The codec
    /// never sends 100 by itself: the server decides (e.g. when the app
    /// first reads the body).
    pub fn wants_100_continue(&self) -> bool {
        self.expect_continue
    }

    /// Writes `HTTP/1.1 100 Continue` (RFC 9110 §15.2.1) if the client is
    /// waiting for it; does nothing otherwise.
    pub fn encode_continue(&mut self, dst: &mut BytesMut) {
        if self.expect_continue && matches!(self.writing, Writing::Idle) {
            dst.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        self.expect_continue = false;
    }

    /// Writes the response head. Before a request head was decoded (e.g. to
    /// answer a [`ParseError`]) the response is framed for an unknown
    /// HTTP/1.x client: no chunking, connection closed afterwards.
    ///
    /// # Errors
    /// See [`ResponseEncoder::encode_head`].
    pub fn encode_head(
        &mut self,
        head: &ResponseHead<'_>,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let mut encoder = self.prepare_encoder()?;
        encoder.encode_head(head, dst)?;
        self.adopt_encoder(encoder);
        Ok(())
    }

    /// The encoder [`encode_head`](Self::encode_head) would use for the
    /// current response, for a caller that encodes the response elsewhere
    /// (another thread) and hands the encoder back with
    /// [`adopt_encoder`](Self::adopt_encoder).
    ///
    /// # Errors
    /// [`EncodeError::HeadAlreadySent`].
    pub fn prepare_encoder(&self) -> Result<ResponseEncoder, EncodeError> {
        if let Writing::Started(_) = self.writing {
            return Err(EncodeError::HeadAlreadySent);
        }
        let mut encoder = if self.request_seen {
            ResponseEncoder::new(self.version, self.is_head, true)
                .with_keep_alive(self.request_keep_alive && !self.closed)
        } else {
            ResponseEncoder::new(Version::HTTP_10, false, false)
        };
        // RFC 9110 §10.1.1: a final response while the client still waits
        // for 100 (and may never send the body): close afterwards rather
        // than guess where the next request starts.
        if self.expect_continue {
            encoder = encoder.with_keep_alive(false);
        }
        Ok(encoder)
    }

    /// Takes over an encoder from [`prepare_encoder`](Self::prepare_encoder)
    /// after the head (and perhaps the whole response) was encoded with it:
    /// the connection goes on from the encoder's state.
    pub fn adopt_encoder(&mut self, encoder: ResponseEncoder) {
        self.expect_continue = false;
        self.writing = Writing::Started(encoder);
    }

    /// The framing for `len` body bytes; see [`Frame`].
    ///
    /// # Errors
    /// [`EncodeError::HeadNotSent`], [`EncodeError::AlreadyEnded`].
    pub fn frame_data(&mut self, len: u64) -> Result<Frame, EncodeError> {
        self.encoder()?.frame_data(len)
    }

    /// Frames `data` and copies it into `dst`.
    ///
    /// # Errors
    /// As [`frame_data`](Self::frame_data).
    pub fn encode_data(&mut self, data: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encoder()?.encode_data(data, dst)
    }

    /// Ends the response body.
    ///
    /// # Errors
    /// [`EncodeError::ShortBody`] when `Content-Length` was not reached: the
    /// server must close the connection (`keep_alive()` is then false).
    pub fn encode_end(&mut self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let result = self.encoder()?.encode_end(dst);
        if result.is_err() {
            self.closed = true;
        }
        result
    }

    fn encoder(&mut self) -> Result<&mut ResponseEncoder, EncodeError> {
        match &mut self.writing {
            Writing::Idle => Err(EncodeError::HeadNotSent),
            Writing::Started(encoder) => Ok(encoder),
        }
    }

    /// Whether the connection may be reused after the current response:
    /// the request allows it, the response framing allows it, the server did
    /// not ask to close, and nothing failed.
    pub fn keep_alive(&self) -> bool {
        let response_allows = match &self.writing {
            Writing::Idle => true,
            Writing::Started(encoder) => encoder.keep_alive(),
        };
        !self.closed && self.request_keep_alive && response_allows
    }

    /// Starts the next request/response cycle once the request's `End` was
    /// returned and the response ended; resumes decoding of pipelined bytes.
    ///
    /// # Errors
    /// [`EncodeError::NotFinished`] if the request body or the response is
    /// not complete (the server may drain the body with `decode` and retry,
    /// or close). [`EncodeError::ConnectionClosed`] if the connection must
    /// not be reused: the server closes it.
    pub fn start_next_cycle(&mut self) -> Result<(), EncodeError> {
        if !self.keep_alive() {
            self.closed = true;
            return Err(EncodeError::ConnectionClosed);
        }
        let response_done = matches!(&self.writing, Writing::Started(encoder) if encoder.is_done());
        if !matches!(self.reading, Reading::Done) || !response_done {
            return Err(EncodeError::NotFinished);
        }
        self.reading = Reading::Head(HeadScanner::default());
        self.writing = Writing::Idle;
        self.version = Version::HTTP_11;
        self.is_head = false;
        self.request_keep_alive = false;
        self.expect_continue = false;
        self.trailers = None;
        self.request_seen = false;
        Ok(())
    }

    /// Marks the connection as closing: the current response will carry
    /// `Connection: close` if its head is not sent yet, and
    /// `start_next_cycle` will fail.
    pub fn close(&mut self) {
        self.closed = true;
        if let Writing::Started(encoder) = &mut self.writing {
            encoder.force_close();
        }
    }
}
