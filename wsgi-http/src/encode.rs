//! Response encoding: [`ResponseHead`] -> status line and headers, the framing decision, and body framing ([`ResponseEncoder`], [`Frame`]).

use bytes::{BufMut, BytesMut};
use http::Version;

use crate::ascii::{eq_lower, is_field_text, is_visible_name};
use crate::body::FramePrefix;
use crate::error::EncodeError;
use crate::head::parse_content_length;

/// A response head as the application gave it.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// Status code, 200..=999 (`"200 OK"` -> `200`).
    pub status: u16,
    /// Reason phrase (`"200 OK"` -> `b"OK"`); may be empty.
    pub reason: &'a [u8],
    /// Application headers in the application's order and case, already
    /// validated by the caller. `Transfer-Encoding` and `Connection` are
    /// hop-by-hop (PEP 3333 forbids them): they are never copied; a
    /// `close` token in `Connection` makes the response close the connection.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The `Date` value to send (the codec has no clock); written unless the
    /// application sent its own `Date`.
    pub date: Option<&'a [u8]>,
    /// Body length known to the server (e.g. a single-chunk body), used when
    /// the application sent no `Content-Length`.
    pub content_length: Option<u64>,
    /// The server wants to close the connection after this response.
    pub close: bool,
}

/// How the bytes of one body write are framed: write `prefix`, then exactly
/// `len` body bytes, then `suffix` (e.g. with `writev` or `sendfile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Bytes to write before the body bytes (a chunk-size line, or nothing).
    pub prefix: FramePrefix,
    /// How many of the offered body bytes to write; less than offered when
    /// `Content-Length` allows no more (extra bytes are dropped), 0 for
    /// bodiless responses.
    pub len: u64,
    /// Bytes to write after the body bytes (CRLF in chunked mode, or nothing).
    pub suffix: &'static [u8],
}

impl Frame {
    const NOTHING: Frame = Frame {
        prefix: FramePrefix::EMPTY,
        len: 0,
        suffix: b"",
    };
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// HEAD, 204, 304: no body bytes are sent whatever the app yields.
    NoBody,
    /// `Content-Length`: the bytes still allowed.
    Length { expected: u64, remaining: u64 },
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Body until the connection closes (HTTP/1.0 or no chunking allowed).
    CloseDelimited,
}

/// Where the encoder is in one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// Head not sent yet.
    Head,
    /// Head sent; body bytes may follow.
    Body(Framing),
    /// The response is complete.
    Done,
}

/// Encodes one HTTP/1.x response. [`ServerConn`](crate::ServerConn) uses
/// one per request; protocols without an HTTP request (uwsgi) use it alone,
/// with `allow_chunked = false` and the connection closed afterwards.
#[derive(Debug, Clone)]
pub struct ResponseEncoder {
    version: Version,
    is_head: bool,
    allow_chunked: bool,
    request_keep_alive: bool,
    keep_alive: bool,
    writing: Writing,
}

impl ResponseEncoder {
    /// An encoder for a response to a request of `version` (framing rules),
    /// `is_head` for HEAD requests, `allow_chunked` to permit chunked bodies
    /// (only honoured for HTTP/1.1). The request is taken as not allowing
    /// keep-alive (see [`with_keep_alive`](Self::with_keep_alive)).
    pub fn new(version: Version, is_head: bool, allow_chunked: bool) -> Self {
        ResponseEncoder {
            version,
            is_head,
            allow_chunked,
            request_keep_alive: false,
            keep_alive: false,
            writing: Writing::Head,
        }
    }

    /// Sets whether the request allows the connection to be reused.
    pub fn with_keep_alive(mut self, request_keep_alive: bool) -> Self {
        self.request_keep_alive = request_keep_alive;
        self
    }

    /// Whether the request allows the connection to be reused (see
    /// [`with_keep_alive`](Self::with_keep_alive)); when it does not, the
    /// response closes it whatever [`ResponseHead::close`] says.
    pub fn request_keep_alive(&self) -> bool {
        self.request_keep_alive
    }

    /// Whether the connection may be reused after this response (valid once
    /// the head is encoded; false after a short body).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the response has been fully encoded.
    pub fn is_done(&self) -> bool {
        self.writing == Writing::Done
    }

    /// Whether the head has been encoded.
    pub fn is_head_sent(&self) -> bool {
        self.writing != Writing::Head
    }

    /// Writes the status line and headers into `dst` in one piece.
    ///
    /// The status line is always `HTTP/1.1`: RFC 9110 §6.2 says a server
    /// SHOULD send the highest version it conforms to whose major version is
    /// not above the request's; the request's version only governs framing
    /// (no chunked coding and `Connection: keep-alive` for HTTP/1.0).
    ///
    /// # Errors
    /// [`EncodeError::InvalidStatus`] for statuses outside 200..=999 (send
    /// 100 with `encode_continue`), [`EncodeError::InvalidHeader`] for CR, LF
    /// or NUL in the reason or headers, [`EncodeError::InvalidContentLength`],
    /// [`EncodeError::HeadAlreadySent`]. Nothing is written on error.
    pub fn encode_head(
        &mut self,
        head: &ResponseHead<'_>,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.writing != Writing::Head {
            return Err(EncodeError::HeadAlreadySent);
        }
        if !(200..=999).contains(&head.status) {
            return Err(EncodeError::InvalidStatus(head.status));
        }
        if !is_field_text(head.reason) {
            return Err(EncodeError::InvalidHeader);
        }
        let mut app_length: Option<u64> = None;
        let mut app_lengths = 0usize;
        let mut app_date = false;
        let mut app_close = false;
        // A `Connection` or `Transfer-Encoding` field, which is not copied.
        let mut hop_by_hop = false;
        let mut fields_size = 0usize;
        for &(name, value) in head.headers {
            if !is_visible_name(name) || !is_field_text(value) {
                return Err(EncodeError::InvalidHeader);
            }
            fields_size += name.len() + value.len() + 4;
            match field_kind(name) {
                FieldKind::ContentLength => {
                    let length = parse_content_length(trim(value))
                        .ok_or(EncodeError::InvalidContentLength)?;
                    if app_length.is_some_and(|previous| previous != length) {
                        return Err(EncodeError::InvalidContentLength);
                    }
                    app_length = Some(length);
                    app_lengths += 1;
                }
                FieldKind::Date => app_date = true,
                FieldKind::Connection => {
                    hop_by_hop = true;
                    app_close |= value
                        .split(|&b| b == b',')
                        .any(|token| trim(token).eq_ignore_ascii_case(b"close"));
                }
                FieldKind::TransferEncoding => hop_by_hop = true,
                FieldKind::Other => {}
            }
        }

        let framing = self.framing(head.status, app_length.or(head.content_length));
        // RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field
        // in any response with a status code of 1xx (Informational) or 204
        // (No Content)." A 304 or HEAD response may carry the length the
        // full response would have.
        let keep_app_length = head.status != 204;
        let server_length = match (app_length, framing) {
            (None, Framing::Length { expected, .. }) => Some(expected),
            (None, Framing::NoBody) if self.is_head => head.content_length,
            _ => None,
        };
        self.keep_alive = self.request_keep_alive
            && !head.close
            && !app_close
            && framing != Framing::CloseDelimited;

        // One reservation for the whole head: the status line, the fields,
        // and the longest of what the codec adds.
        let date = head.date.filter(|_| !app_date);
        dst.reserve(
            fields_size
                + STATUS_LINE.len()
                + head.reason.len()
                + 2
                + date.map_or(0, |date| date.len() + 8)
                + MAX_LENGTH_FIELD
                + b"Transfer-Encoding: chunked\r\n".len()
                + b"Connection: keep-alive\r\n".len()
                + 2,
        );
        if head.status == 200 && head.reason == b"OK" {
            dst.put_slice(b"HTTP/1.1 200 OK\r\n");
        } else {
            // 200..=999 was checked: exactly three digits.
            let mut line = *STATUS_LINE;
            line[9] = b'0' + (head.status / 100) as u8;
            line[10] = b'0' + (head.status / 10 % 10) as u8;
            line[11] = b'0' + (head.status % 10) as u8;
            dst.put_slice(&line);
            dst.put_slice(head.reason);
            dst.put_slice(b"\r\n");
        }
        // Identical repeats were accepted above; only the first goes out, so
        // the wire never carries two Content-Length fields (RFC 9110 §8.6: a
        // recipient MAY refuse the list). Without such a field to leave out,
        // the fields are copied as they are.
        if hop_by_hop || app_lengths > 1 || (app_lengths == 1 && !keep_app_length) {
            let mut length_sent = !keep_app_length;
            for &(name, value) in head.headers {
                let skip = match field_kind(name) {
                    FieldKind::ContentLength => std::mem::replace(&mut length_sent, true),
                    FieldKind::TransferEncoding | FieldKind::Connection => true,
                    FieldKind::Date | FieldKind::Other => false,
                };
                if !skip {
                    put_field(dst, name, value);
                }
            }
        } else {
            for &(name, value) in head.headers {
                put_field(dst, name, value);
            }
        }
        if let Some(date) = date {
            dst.put_slice(b"Date: ");
            dst.put_slice(date);
            dst.put_slice(b"\r\n");
        }
        if let Some(length) = server_length {
            put_length_field(dst, length);
        }
        if framing == Framing::Chunked {
            dst.put_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if !self.keep_alive {
            // RFC 9112 §9.6: a server that is going to close the connection
            // SHOULD send "Connection: close".
            dst.put_slice(b"Connection: close\r\n\r\n");
        } else if self.version == Version::HTTP_10 {
            // RFC 9112 §C.2.2: HTTP/1.0 persistence must be confirmed.
            dst.put_slice(b"Connection: keep-alive\r\n\r\n");
        } else {
            dst.put_slice(b"\r\n");
        }
        self.writing = Writing::Body(framing);
        Ok(())
    }

    /// The body framing, decided in one place (RFC 9112 §6.3 rules 1-2 and
    /// §6.1 for what we send).
    fn framing(&self, status: u16, length: Option<u64>) -> Framing {
        // RFC 9112 §6.3 rule 1: responses to HEAD, and 1xx, 204 and 304
        // responses, end at the head whatever their header fields say.
        if self.is_head || status == 204 || status == 304 {
            return Framing::NoBody;
        }
        match length {
            Some(length) => Framing::Length {
                expected: length,
                remaining: length,
            },
            // RFC 9112 §6.1: chunked only to HTTP/1.1 recipients.
            None if self.allow_chunked && self.version == Version::HTTP_11 => Framing::Chunked,
            // RFC 9112 §6.3 rule 8: the body ends when the connection closes.
            None => Framing::CloseDelimited,
        }
    }

    /// The framing for `len` body bytes about to be written.
    ///
    /// # Errors
    /// [`EncodeError::HeadNotSent`] before `encode_head`,
    /// [`EncodeError::AlreadyEnded`] after `encode_end`.
    pub fn frame_data(&mut self, len: u64) -> Result<Frame, EncodeError> {
        let framing = match &mut self.writing {
            Writing::Head => return Err(EncodeError::HeadNotSent),
            Writing::Done => return Err(EncodeError::AlreadyEnded),
            Writing::Body(framing) => framing,
        };
        Ok(match framing {
            Framing::NoBody => Frame::NOTHING,
            Framing::Length { remaining, .. } => {
                let allowed = len.min(*remaining);
                *remaining -= allowed;
                Frame {
                    prefix: FramePrefix::EMPTY,
                    len: allowed,
                    suffix: b"",
                }
            }
            // A zero-size chunk would end the body: write nothing instead.
            Framing::Chunked if len == 0 => Frame::NOTHING,
            Framing::Chunked => Frame {
                prefix: FramePrefix::chunk_size(len),
                len,
                suffix: b"\r\n",
            },
            Framing::CloseDelimited => Frame {
                prefix: FramePrefix::EMPTY,
                len,
                suffix: b"",
            },
        })
    }

    /// Frames `data` and copies the result into `dst`.
    ///
    /// # Errors
    /// As [`frame_data`](Self::frame_data).
    pub fn encode_data(&mut self, data: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError> {
        let frame = self.frame_data(data.len() as u64)?;
        let len = usize::try_from(frame.len)
            .unwrap_or(data.len())
            .min(data.len());
        dst.reserve(frame.prefix.as_ref().len() + len + frame.suffix.len());
        dst.put_slice(frame.prefix.as_ref());
        dst.put_slice(&data[..len]);
        dst.put_slice(frame.suffix);
        Ok(())
    }

    /// Ends the body: `0\r\n\r\n` when chunked, nothing otherwise.
    ///
    /// # Errors
    /// [`EncodeError::ShortBody`] when fewer than `Content-Length` bytes
    /// were framed: the response is marked done and the connection must be
    /// closed (`keep_alive()` turns false). [`EncodeError::HeadNotSent`],
    /// [`EncodeError::AlreadyEnded`].
    pub fn encode_end(&mut self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let framing = match self.writing {
            Writing::Head => return Err(EncodeError::HeadNotSent),
            Writing::Done => return Err(EncodeError::AlreadyEnded),
            Writing::Body(framing) => framing,
        };
        self.writing = Writing::Done;
        match framing {
            Framing::Chunked => {
                // RFC 9112 §7.1: last-chunk, empty trailer section, CRLF.
                dst.put_slice(b"0\r\n\r\n");
                Ok(())
            }
            Framing::Length {
                expected,
                remaining,
            } if remaining > 0 => {
                self.keep_alive = false;
                Err(EncodeError::ShortBody {
                    expected,
                    sent: expected - remaining,
                })
            }
            Framing::CloseDelimited => {
                self.keep_alive = false;
                Ok(())
            }
            Framing::Length { .. } | Framing::NoBody => Ok(()),
        }
    }

    /// Forces the connection to close after this response.
    pub(crate) fn force_close(&mut self) {
        self.keep_alive = false;
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The status line up to the reason phrase; the digits are filled in.
const STATUS_LINE: &[u8; 13] = b"HTTP/1.1 000 ";

/// `Content-Length: ` + up to 20 digits + CRLF.
const MAX_LENGTH_FIELD: usize = 16 + 20 + 2;

/// The response fields the encoder acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    ContentLength,
    Date,
    Connection,
    TransferEncoding,
    Other,
}

/// Which of the fields the encoder acts on `name` is (any case); the length
/// picks the one name to compare, so most names cost one comparison.
fn field_kind(name: &[u8]) -> FieldKind {
    match name.len() {
        14 if eq_lower(name, b"content-length") => FieldKind::ContentLength,
        4 if eq_lower(name, b"date") => FieldKind::Date,
        10 if eq_lower(name, b"connection") => FieldKind::Connection,
        17 if eq_lower(name, b"transfer-encoding") => FieldKind::TransferEncoding,
        _ => FieldKind::Other,
    }
}

fn put_field(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.put_slice(name);
    dst.put_slice(b": ");
    dst.put_slice(value);
    dst.put_slice(b"\r\n");
}

/// `Content-Length: n\r\n`, rendered on the stack and written at once.
fn put_length_field(dst: &mut BytesMut, mut value: u64) {
    let mut field = [0u8; MAX_LENGTH_FIELD];
    field[..16].copy_from_slice(b"Content-Length: ");
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let end = 16 + digits.len() - start;
    field[16..end].copy_from_slice(&digits[start..]);
    field[end..end + 2].copy_from_slice(b"\r\n");
    dst.put_slice(&field[..end + 2]);
}
