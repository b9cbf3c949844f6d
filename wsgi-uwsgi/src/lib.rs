//! A sans-I/O codec for the uwsgi binary protocol, as nginx's `uwsgi_pass`
//! speaks it: packets in, request head and body events out.
//!
//! # Scope
//!
//! The crate owns no sockets, no runtime and no clock, and depends only on
//! `bytes` and `thiserror`, so any Rust server can use it alone. The caller
//! reads bytes into a [`BytesMut`](bytes::BytesMut) and calls
//! [`Decoder::decode`]; `Ok(None)` means "need more bytes".
//!
//! # Wire format
//!
//! Per uWSGI's `Protocol` document and `uwsgi.h`, a request is:
//!
//! ```text
//! modifier1: u8 | datasize: u16 LE | modifier2: u8     4-byte header
//! ( key_len: u16 LE | key | val_len: u16 LE | val )*   exactly `datasize` bytes
//! body                                                 exactly CONTENT_LENGTH bytes
//! ```
//!
//! Only `modifier1` 0 (WSGI) is accepted; `modifier2` is passed through and
//! otherwise ignored, as uWSGI does for modifier1 0. Vars blocks up to the
//! protocol's 65535 bytes are accepted by default, not uWSGI's 4096
//! ([`DEFAULT_MAX_VARS_SIZE`]).
//!
//! # Responses
//!
//! The reply to a uwsgi request is a plain HTTP/1.x response (status line,
//! headers, body) with no uwsgi framing, so this crate does not encode
//! responses: `wsgi-http`'s encoder frames them. It must not use chunked
//! encoding (nginx reads the uwsgi response body raw), and the connection is
//! closed after it (nginx never reuses uwsgi upstream connections).
//!
//! # Security
//!
//! Whoever can write to a uwsgi socket chooses `REMOTE_ADDR`, `HTTPS` and
//! every other var, so the socket must only be reachable by the trusted
//! proxy (a unix socket or loopback, with a peer allow-list). This codec
//! never acts on uWSGI's "magic" vars (`UWSGI_SETENV`, `UWSGI_FILE`,
//! `UWSGI_POSTFILE`, ...); it hands them out like any other.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use wsgi_uwsgi::{encode_vars, Decoder, Event};
//!
//! let mut wire = BytesMut::new();
//! encode_vars([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/")], &mut wire).unwrap();
//!
//! let mut decoder = Decoder::default();
//! match decoder.decode(&mut wire) {
//!     Ok(Some(Event::Head(head))) => assert_eq!(head.path_info(), Some(&b"/"[..])),
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(decoder.decode(&mut wire), Ok(Some(Event::End)));
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod config;
mod decoder;
mod encode;
mod error;
mod head;
mod packet;
mod vars;

pub use config::{Config, DEFAULT_MAX_VARS, DEFAULT_MAX_VARS_SIZE};
pub use decoder::{Decoder, Event};
pub use encode::{encode_packet, encode_vars};
pub use error::{EncodeError, ParseError};
pub use head::{names, RequestHead};
pub use packet::{HEADER_LEN, MODIFIER1_WSGI};
pub use vars::Vars;
