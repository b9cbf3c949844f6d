//! A sans-I/O HTTP/1.x server codec: bytes in, events out; response heads and bodies framed into bytes out.
//!
//! No sockets, no async runtime, no clock: the caller owns the buffers and
//! the I/O, so any server (blocking, tokio, io_uring) can drive it.
//!
//! # Contract
//!
//! - [`ServerConn::decode`] takes the read buffer and returns
//!   `Ok(Some(Event))`, `Ok(None)` ("need more bytes", or "paused" after
//!   [`Event::End`] until the response is done), or a [`ParseError`] whose
//!   [`status`](ParseError::status) the server sends before closing.
//!   Incomplete input is never an error. Consumed bytes are removed from the
//!   buffer; pipelined bytes stay.
//! - A request is `Head`, zero or more non-empty `Data`, then `End`.
//! - A [`RequestHead`]'s `headers` are [`HeaderFields`]: every field line
//!   as sent (order, repeats and the names' case kept), checked and kept as
//!   ranges of the head's bytes, with case-insensitive lookups and
//!   [`HeaderFields::to_header_map`] for an `http::HeaderMap`.
//! - The response is [`ServerConn::encode_head`], any number of
//!   [`ServerConn::encode_data`] / [`ServerConn::frame_data`], then
//!   [`ServerConn::encode_end`]. The codec picks `Content-Length`, chunked,
//!   or close-delimited framing and the `Connection` header.
//! - [`ServerConn::start_next_cycle`] resumes decoding once both sides are
//!   done, or fails when the connection must be closed.
//! - Limits live in [`Config`], with `DEFAULT_MAX_*` constants.
//! - [`ResponseEncoder`] encodes a response without a request (uwsgi).
//!
//! # Example: a blocking `std::net` loop
//!
//! ```
//! use std::io::{Read, Write};
//! use bytes::BytesMut;
//! use wsgi_http::{Config, Event, ResponseHead, ServerConn};
//!
//! fn serve(mut stream: impl Read + Write) -> std::io::Result<()> {
//!     let (mut conn, mut buf, mut out) = (ServerConn::new(Config::default()), BytesMut::new(), BytesMut::new());
//!     loop {
//!         match conn.decode(&mut buf) {
//!             Ok(Some(Event::End)) => {
//!                 let head = ResponseHead { status: 200, reason: b"OK", headers: &[], date: None, content_length: None, close: false };
//!                 conn.encode_head(&head, &mut out).unwrap();
//!                 conn.encode_data(b"hello", &mut out).unwrap();
//!                 conn.encode_end(&mut out).unwrap();
//!                 stream.write_all(&out.split())?;
//!                 if conn.start_next_cycle().is_err() { return Ok(()); }
//!             }
//!             Ok(Some(_)) => {} // head and body bytes: a real server hands them to the app
//!             Ok(None) => {
//!                 let mut chunk = [0u8; 4096];
//!                 let n = stream.read(&mut chunk)?;
//!                 if n == 0 { return conn.decode_eof(&mut buf).map(drop).map_err(std::io::Error::other); }
//!                 buf.extend_from_slice(&chunk[..n]);
//!             }
//!             Err(e) => return stream.write_all(format!("HTTP/1.1 {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", e.status()).as_bytes()),
//!         }
//!     }
//! }
//! # // With a real socket: `for s in std::net::TcpListener::bind("127.0.0.1:8000")?.incoming() { serve(s?)?; }`
//! # struct Duplex(std::io::Cursor<&'static [u8]>, Vec<u8>);
//! # impl Read for Duplex { fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> { self.0.read(b) } }
//! # impl Write for Duplex { fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.1.write(b) } fn flush(&mut self) -> std::io::Result<()> { Ok(()) } }
//! # let mut duplex = Duplex(std::io::Cursor::new(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Vec::new());
//! # serve(&mut duplex).unwrap();
//! # assert_eq!(duplex.1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod ascii;
mod body;
mod config;
mod conn;
mod encode;
mod error;
mod fields;
mod head;

pub use body::FramePrefix;
pub use config::{
    Config, DEFAULT_MAX_CHUNK_EXTENSION, DEFAULT_MAX_FIELD_SIZE, DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_HEAD_SIZE, DEFAULT_MAX_REQUEST_LINE, DEFAULT_MAX_TRAILER_SIZE,
};
pub use conn::{Event, ServerConn};
pub use encode::{Frame, ResponseEncoder, ResponseHead};
pub use error::{EncodeError, ParseError};
pub use fields::{HeaderFields, Iter as HeaderFieldsIter};
pub use head::{BodyLength, RequestHead};
