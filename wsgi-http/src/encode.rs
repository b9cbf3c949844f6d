//! Response encoding: [`ResponseHead`] -> status line and headers, the framing decision, and body framing ([`ResponseEncoder`], [`Frame`]).

use bytes::{BufMut, BytesMut};
use http::Version;

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
        let mut app_date = false;
        let mut app_close = false;
        for &(name, value) in head.headers {
            if name.is_empty()
                || !name.iter().all(|&b| b.is_ascii_graphic() && b != b':')
                || !is_field_text(value)
            {
                return Err(EncodeError::InvalidHeader);
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                let length =
                    parse_content_length(trim(value)).ok_or(EncodeError::InvalidContentLength)?;
                if app_length.is_some_and(|previous| previous != length) {
                    return Err(EncodeError::InvalidContentLength);
                }
                app_length = Some(length);
            } else if name.eq_ignore_ascii_case(b"date") {
                app_date = true;
            } else if name.eq_ignore_ascii_case(b"connection") {
                app_close |= value
                    .split(|&b| b == b',')
                    .any(|token| trim(token).eq_ignore_ascii_case(b"close"));
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

        dst.reserve(
            64 + head.reason.len()
                + head
                    .headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 4)
                    .sum::<usize>(),
        );
        dst.put_slice(b"HTTP/1.1 ");
        put_status(dst, head.status);
        dst.put_u8(b' ');
        dst.put_slice(head.reason);
        dst.put_slice(b"\r\n");
        // Identical repeats were accepted above; only the first goes out, so
        // the wire never carries two Content-Length fields (RFC 9110 §8.6: a
        // recipient MAY refuse the list).
        let mut length_sent = !keep_app_length;
        for &(name, value) in head.headers {
            let is_length = name.eq_ignore_ascii_case(b"content-length");
            if (is_length && std::mem::replace(&mut length_sent, true))
                || name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"connection")
            {
                continue;
            }
            put_field(dst, name, value);
        }
        if let (Some(date), false) = (head.date, app_date) {
            put_field(dst, b"Date", date);
        }
        if let Some(length) = server_length {
            dst.put_slice(b"Content-Length: ");
            put_decimal(dst, length);
            dst.put_slice(b"\r\n");
        }
        if framing == Framing::Chunked {
            dst.put_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if !self.keep_alive {
            // RFC 9112 §9.6: a server that is going to close the connection
            // SHOULD send "Connection: close".
            dst.put_slice(b"Connection: close\r\n");
        } else if self.version == Version::HTTP_10 {
            // RFC 9112 §C.2.2: HTTP/1.0 persistence must be confirmed.
            dst.put_slice(b"Connection: keep-alive\r\n");
        }
        dst.put_slice(b"\r\n");
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

/// Reason phrases and field values: HTAB, SP, VCHAR, obs-text
/// (RFC 9110 §5.5, RFC 9112 §4); no CR, LF or other controls.
fn is_field_text(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
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

fn put_field(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.put_slice(name);
    dst.put_slice(b": ");
    dst.put_slice(value);
    dst.put_slice(b"\r\n");
}

fn put_status(dst: &mut BytesMut, status: u16) {
    // 200..=999 was checked: exactly three digits.
    dst.put_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
}

fn put_decimal(dst: &mut BytesMut, mut value: u64) {
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
    dst.put_slice(&digits[start..]);
}
