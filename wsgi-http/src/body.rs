//! Request body decoders (Content-Length and chunked, with extensions and trailers) and the chunk-size prefix encoder.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::config::Config;
use crate::error::ParseError;

/// What the body decoder produced.
#[derive(Debug)]
pub(crate) enum BodyEvent {
    /// Body bytes (never empty).
    Data(Bytes),
    /// The body is complete; chunked trailers, if any, come along.
    End(Option<HeaderMap>),
}

/// Decodes one request body.
#[derive(Debug)]
pub(crate) enum BodyDecoder {
    /// `Content-Length` (or no body: `remaining == 0`).
    Length {
        /// Bytes still expected.
        remaining: u64,
    },
    /// `Transfer-Encoding: chunked` (RFC 9112 §7.1).
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    /// Decodes the next event from `src`; `Ok(None)` means more bytes are needed.
    pub(crate) fn decode(
        &mut self,
        src: &mut BytesMut,
        config: &Config,
    ) -> Result<Option<BodyEvent>, ParseError> {
        match self {
            BodyDecoder::Length { remaining: 0 } => Ok(Some(BodyEvent::End(None))),
            BodyDecoder::Length { remaining } => {
                if src.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(src.len());
                *remaining -= take as u64;
                // Zero-copy: the event shares the read buffer's allocation.
                Ok(Some(BodyEvent::Data(src.split_to(take).freeze())))
            }
            BodyDecoder::Chunked(chunked) => chunked.decode(src, config),
        }
    }

    /// Whether the decoder sits between messages parts such that EOF here
    /// would truncate the body.
    pub(crate) fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length { remaining } => *remaining == 0,
            BodyDecoder::Chunked(chunked) => matches!(chunked.state, ChunkedState::Done),
        }
    }
}

/// States of the chunked decoder, following RFC 9112 §7.1:
///
/// ```text
/// chunked-body   = *chunk last-chunk trailer-section CRLF
/// chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-size     = 1*HEXDIG
/// last-chunk     = 1*("0") [ chunk-ext ] CRLF
/// chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Reading hex digits of the chunk size.
    Size,
    /// Whitespace after the size; only `;` or CR may follow.
    SizeWhitespace,
    /// Inside chunk extensions, up to CR.
    Extension,
    /// Saw the CR ending the size line; expecting LF.
    SizeLf,
    /// Reading chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// After the last chunk: reading the trailer section up to an empty line.
    Trailers,
    /// The body is complete.
    Done,
}

/// Chunked body decoder.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: ChunkedState,
    /// Size of the current chunk (while reading it: the digits so far).
    size: u64,
    /// Hex digits read for the current size.
    digits: usize,
    /// Bytes of chunk data still to deliver.
    remaining: u64,
    /// Extension bytes seen on the current size line.
    extension_len: usize,
    /// Body bytes announced so far, for `max_body_size`.
    total: u64,
    /// Trailer bytes already scanned for the end of the section (not
    /// consumed from the buffer until the section is complete).
    trailer_scanned: usize,
    /// Start of the trailer line being scanned.
    trailer_line_start: usize,
    /// Trailer field lines seen so far.
    trailer_lines: usize,
}

/// More hex digits than a u64 holds are refused.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub(crate) fn new() -> Self {
        ChunkedDecoder {
            state: ChunkedState::Size,
            size: 0,
            digits: 0,
            remaining: 0,
            extension_len: 0,
            total: 0,
            trailer_scanned: 0,
            trailer_line_start: 0,
            trailer_lines: 0,
        }
    }

    /// Decodes the next event; consumes framing bytes as it goes.
    pub(crate) fn decode(
        &mut self,
        src: &mut BytesMut,
        config: &Config,
    ) -> Result<Option<BodyEvent>, ParseError> {
        loop {
            match self.state {
                ChunkedState::Data => {
                    if src.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(src.len());
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = ChunkedState::DataCr;
                    }
                    return Ok(Some(BodyEvent::Data(src.split_to(take).freeze())));
                }
                ChunkedState::Trailers => return self.decode_trailers(src, config),
                ChunkedState::Done => return Ok(Some(BodyEvent::End(None))),
                _ => {}
            }
            if src.is_empty() {
                return Ok(None);
            }
            // Framing bytes: walk them with an index, consume once. This
            // either consumes everything, or stops at a Data/Trailers
            // transition, or fails.
            let mut consumed = 0;
            let result = self.step_framing(&src[..], &mut consumed, config);
            src.advance(consumed);
            result?;
        }
    }

    /// Processes size lines and data CRLFs until data, trailers, or the end
    /// of `bytes`.
    fn step_framing(
        &mut self,
        bytes: &[u8],
        consumed: &mut usize,
        config: &Config,
    ) -> Result<(), ParseError> {
        for &b in bytes {
            match self.state {
                ChunkedState::Size => match hex_value(b) {
                    Some(digit) => {
                        self.digits += 1;
                        if self.digits > MAX_CHUNK_SIZE_DIGITS {
                            return Err(ParseError::ChunkSize);
                        }
                        self.size = (self.size << 4) | u64::from(digit);
                    }
                    None if self.digits == 0 => return Err(ParseError::ChunkSize),
                    None => match b {
                        b'\r' => self.state = ChunkedState::SizeLf,
                        b';' => {
                            self.count_extension(config)?;
                            self.state = ChunkedState::Extension;
                        }
                        // RFC 9112 §7.1.1: BWS is allowed before ";".
                        b' ' | b'\t' => {
                            self.count_extension(config)?;
                            self.state = ChunkedState::SizeWhitespace;
                        }
                        _ => return Err(ParseError::ChunkSize),
                    },
                },
                ChunkedState::SizeWhitespace => match b {
                    b' ' | b'\t' => self.count_extension(config)?,
                    b';' => {
                        self.count_extension(config)?;
                        self.state = ChunkedState::Extension;
                    }
                    b'\r' => self.state = ChunkedState::SizeLf,
                    _ => return Err(ParseError::ChunkSize),
                },
                ChunkedState::Extension => match b {
                    b'\r' => self.state = ChunkedState::SizeLf,
                    // Extensions are ignored (RFC 9112 §7.1.1: "A recipient
                    // MUST ignore unrecognized chunk extensions"), but only
                    // visible bytes, SP, HTAB and obs-text are allowed: a bare
                    // LF here is a known smuggling vector.
                    b'\t' | b' '..=b'~' | 0x80..=0xff => self.count_extension(config)?,
                    _ => return Err(ParseError::ChunkExtension),
                },
                ChunkedState::SizeLf => {
                    if b != b'\n' {
                        return Err(ParseError::ChunkSize);
                    }
                    self.total = self
                        .total
                        .checked_add(self.size)
                        .ok_or(ParseError::PayloadTooLarge)?;
                    if config.max_body_size.is_some_and(|max| self.total > max) {
                        return Err(ParseError::PayloadTooLarge);
                    }
                    *consumed += 1;
                    if self.size == 0 {
                        self.state = ChunkedState::Trailers;
                        self.trailer_scanned = 0;
                        self.trailer_line_start = 0;
                        self.trailer_lines = 0;
                    } else {
                        self.state = ChunkedState::Data;
                        self.remaining = self.size;
                    }
                    self.size = 0;
                    self.digits = 0;
                    self.extension_len = 0;
                    return Ok(());
                }
                // RFC 9112 §7.1: chunk-data is followed by exactly CRLF.
                ChunkedState::DataCr if b == b'\r' => self.state = ChunkedState::DataLf,
                ChunkedState::DataLf if b == b'\n' => self.state = ChunkedState::Size,
                ChunkedState::DataCr | ChunkedState::DataLf => {
                    return Err(ParseError::ChunkDataEnd)
                }
                ChunkedState::Data | ChunkedState::Trailers | ChunkedState::Done => return Ok(()),
            }
            *consumed += 1;
        }
        Ok(())
    }

    fn count_extension(&mut self, config: &Config) -> Result<(), ParseError> {
        self.extension_len += 1;
        if self.extension_len > config.max_chunk_extension {
            return Err(ParseError::ChunkExtensionTooLong);
        }
        Ok(())
    }

    /// Scans for the end of the trailer section without consuming it, then
    /// parses and consumes it whole (RFC 9112 §7.1.2).
    fn decode_trailers(
        &mut self,
        src: &mut BytesMut,
        config: &Config,
    ) -> Result<Option<BodyEvent>, ParseError> {
        let mut end = None;
        while let Some(offset) = src[self.trailer_scanned..].iter().position(|&b| b == b'\n') {
            let line_end = self.trailer_scanned + offset;
            self.trailer_scanned = line_end + 1;
            // Strict CRLF in the body framing (no bare LF): a lenient reading
            // here is how front-ends and back-ends disagree on message ends.
            if line_end == 0 || src[line_end - 1] != b'\r' {
                return Err(ParseError::Trailers);
            }
            if line_end + 1 > config.max_trailer_size {
                return Err(ParseError::TrailersTooLarge);
            }
            if line_end - 1 == self.trailer_line_start {
                end = Some(line_end + 1);
                break;
            }
            self.trailer_lines += 1;
            if self.trailer_lines > config.max_headers {
                return Err(ParseError::TrailersTooLarge);
            }
            // RFC 9112 §5.2 applies to trailer fields too: no obs-fold.
            if matches!(src[self.trailer_line_start], b' ' | b'\t') {
                return Err(ParseError::ObsFold);
            }
            self.trailer_line_start = line_end + 1;
        }
        let Some(end) = end else {
            self.trailer_scanned = src.len();
            if src.len() > config.max_trailer_size {
                return Err(ParseError::TrailersTooLarge);
            }
            return Ok(None);
        };
        let section = src.split_to(end).freeze();
        self.state = ChunkedState::Done;
        if end == 2 {
            return Ok(Some(BodyEvent::End(None)));
        }
        Ok(Some(BodyEvent::End(Some(parse_trailers(
            &section,
            self.trailer_lines,
        )?))))
    }
}

fn parse_trailers(section: &Bytes, lines: usize) -> Result<HeaderMap, ParseError> {
    let mut slots = vec![httparse::EMPTY_HEADER; lines];
    match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((n, fields))) if n == section.len() => {
            let mut trailers = HeaderMap::try_with_capacity(fields.len())
                .map_err(|_| ParseError::TrailersTooLarge)?;
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| ParseError::Trailers)?;
                let value = HeaderValue::from_maybe_shared(section.slice_ref(field.value))
                    .map_err(|_| ParseError::Trailers)?;
                trailers
                    .try_append(name, value)
                    .map_err(|_| ParseError::TrailersTooLarge)?;
            }
            Ok(trailers)
        }
        _ => Err(ParseError::Trailers),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A chunk-size line for the chunked encoder (RFC 9112 §7.1): up to 16 hex
/// digits and CRLF, kept inline so framing needs no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FramePrefix {
    buf: [u8; 18],
    len: u8,
}

impl FramePrefix {
    /// No prefix (Content-Length, close-delimited or bodiless responses).
    pub const EMPTY: FramePrefix = FramePrefix {
        buf: [0; 18],
        len: 0,
    };

    /// `{len:x}\r\n`.
    pub(crate) fn chunk_size(len: u64) -> FramePrefix {
        let mut prefix = FramePrefix::EMPTY;
        let digits = if len == 0 {
            1
        } else {
            (64 - len.leading_zeros()).div_ceil(4) as usize
        };
        for index in 0..digits {
            let nibble = (len >> (4 * (digits - 1 - index))) & 0xf;
            prefix.buf[index] = b"0123456789abcdef"[nibble as usize];
        }
        prefix.buf[digits] = b'\r';
        prefix.buf[digits + 1] = b'\n';
        prefix.len = (digits + 2) as u8;
        prefix
    }
}

impl AsRef<[u8]> for FramePrefix {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for FramePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FramePrefix({:?})",
            String::from_utf8_lossy(self.as_ref())
        )
    }
}
