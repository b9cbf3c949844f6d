//! Request heads: the incremental end-of-head scanner, httparse -> [`RequestHead`], and the framing decision.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{Method, Version};

use crate::ascii::{eq_lower, find_byte, is_field_text};
use crate::config::Config;
use crate::error::ParseError;
use crate::fields::{FieldRange, HeaderFields};

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body: neither `Content-Length` nor `Transfer-Encoding` was sent.
    Empty,
    /// `Content-Length: n` (`Known(0)` when the client sent `Content-Length: 0`).
    Known(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl BodyLength {
    /// The body's length when the head says it (`None` for a chunked body).
    pub fn known_length(&self) -> Option<u64> {
        match *self {
            BodyLength::Empty => Some(0),
            BodyLength::Known(length) => Some(length),
            BodyLength::Chunked => None,
        }
    }

    /// Whether the request carries at least one body byte (or may, if chunked).
    pub fn has_body(&self) -> bool {
        !matches!(self, BodyLength::Empty | BodyLength::Known(0))
    }
}

/// A decoded request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The raw request-target exactly as sent, sharing the read buffer:
    /// origin-form, absolute-form, or asterisk-form with `OPTIONS` (the
    /// authority-form belongs to `CONNECT`, which is refused with 501).
    pub target: Bytes,
    /// `HTTP_10` or `HTTP_11`.
    pub version: Version,
    /// All header fields in the order received, as sent (repeated names
    /// kept, names in their original case); [`HeaderFields::to_header_map`]
    /// gives an `http::HeaderMap`.
    pub headers: HeaderFields,
    /// How the body is delimited.
    pub body: BodyLength,
    /// Whether the request allows the connection to be reused (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body
    /// (RFC 9110 §10.1.1: ignored on HTTP/1.0).
    pub expect_continue: bool,
}

impl RequestHead {
    /// The path part of the target (before `?`): for origin-form the path as
    /// sent; for absolute-form the URL's path (`/` if empty); `*` for
    /// asterisk-form.
    pub fn path(&self) -> &[u8] {
        let target = strip_fragment(&self.target);
        let path_and_query = match split_absolute(target) {
            Some((_, rest)) if rest.is_empty() || rest[0] == b'?' => return b"/",
            Some((_, rest)) => rest,
            None => target,
        };
        match path_and_query.iter().position(|&b| b == b'?') {
            Some(q) => &path_and_query[..q],
            None => path_and_query,
        }
    }

    /// The query after the first `?`, without a `#` fragment; empty if none.
    pub fn query(&self) -> &[u8] {
        let target = strip_fragment(&self.target);
        match target.iter().position(|&b| b == b'?') {
            Some(q) => &target[q + 1..],
            None => b"",
        }
    }

    /// The authority: from an absolute-form target, else the `Host` header
    /// (RFC 9112 §3.2.2: the target's authority overrides `Host`).
    pub fn host(&self) -> Option<&[u8]> {
        if let Some((authority, _)) = split_absolute(strip_fragment(&self.target)) {
            return Some(authority);
        }
        self.headers.get(b"host")
    }
}

fn strip_fragment(target: &[u8]) -> &[u8] {
    match target.iter().position(|&b| b == b'#') {
        Some(f) => &target[..f],
        None => target,
    }
}

/// For an absolute-form target `scheme://authority[/path][?query]`, returns
/// the authority and the rest (path and query).
fn split_absolute(target: &[u8]) -> Option<(&[u8], &[u8])> {
    if target.first().map_or(true, |&b| b == b'/' || b == b'*') {
        return None;
    }
    let sep = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..sep];
    if scheme.is_empty()
        || !scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let after = &target[sep + 3..];
    let end = after
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after.len());
    Some((&after[..end], &after[end..]))
}

/// Incremental end-of-head scanner. Remembers how far the buffer was scanned
/// so a client sending one byte at a time costs O(n) in total, not O(n²)
/// (httparse is only called once, on a complete head).
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadScanner {
    /// Bytes of `src` already looked at.
    scanned: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Whether the request line has been seen (leading empty lines skipped).
    request_line_done: bool,
    /// Header lines seen so far.
    header_lines: usize,
}

impl HeadScanner {
    /// Whether nothing but (possibly) leading empty lines has been seen.
    pub(crate) fn is_idle(&self) -> bool {
        !self.request_line_done && self.line_start == self.scanned
    }

    /// Looks for the end of the head in `src`, applying the size limits as
    /// bytes arrive. Returns the head length once complete.
    pub(crate) fn scan(
        &mut self,
        src: &[u8],
        config: &Config,
    ) -> Result<Option<usize>, ParseError> {
        while let Some(offset) = find_byte(&src[self.scanned..], b'\n') {
            let line_end = self.scanned + offset;
            let mut line = &src[self.line_start..line_end];
            // RFC 9112 §2.2: CRLF ends a line; a recipient MAY accept a bare LF.
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            self.scanned = line_end + 1;
            let mut complete = false;
            if !self.request_line_done {
                // RFC 9112 §2.2: "a server that is expecting to receive and
                // parse a request-line SHOULD ignore at least one empty line
                // (CRLF) received prior to the request-line". We skip any
                // number; they count towards `max_head_size`.
                if line.len() > config.max_request_line {
                    return Err(ParseError::RequestLineTooLong);
                }
                self.request_line_done = !line.is_empty();
            } else if line.is_empty() {
                complete = true;
            } else {
                self.check_field_line(line, config)?;
            }
            if line_end + 1 > config.max_head_size {
                return Err(ParseError::HeadTooLarge);
            }
            if complete {
                return Ok(Some(line_end + 1));
            }
            self.line_start = line_end + 1;
        }
        self.scanned = src.len();
        // The partial line may already be over its limit: refuse early. One
        // extra byte is allowed for a CR whose LF has not arrived yet.
        let partial = &src[self.line_start..];
        if !self.request_line_done {
            if partial.len() > config.max_request_line.saturating_add(1) {
                return Err(ParseError::RequestLineTooLong);
            }
        } else {
            if matches!(partial.first(), Some(b' ' | b'\t')) {
                return Err(ParseError::ObsFold);
            }
            if partial.len() > config.max_field_size.saturating_add(1) {
                return Err(ParseError::HeaderFieldTooLong);
            }
        }
        if src.len() > config.max_head_size {
            return Err(ParseError::HeadTooLarge);
        }
        Ok(None)
    }

    fn check_field_line(&mut self, line: &[u8], config: &Config) -> Result<(), ParseError> {
        // RFC 9112 §5.2: a server MUST either reject obs-fold with 400 or
        // unfold it; we reject.
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(ParseError::ObsFold);
        }
        // "\r\r\n" would otherwise look like a field line still arriving.
        if line.first() == Some(&b'\r') {
            return Err(ParseError::NewLine);
        }
        if line.len() > config.max_field_size {
            return Err(ParseError::HeaderFieldTooLong);
        }
        self.header_lines += 1;
        if self.header_lines > config.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        Ok(())
    }
}

/// Header slots on the stack (4 KiB, uninitialised): enough for the default
/// limit of [`DEFAULT_MAX_HEADERS`](crate::DEFAULT_MAX_HEADERS) + 1, so only
/// servers configured for more headers allocate per request.
const STACK_HEADERS: usize = 128;

/// Parses the complete head in `src[..head_len]`, consuming it from `src`.
pub(crate) fn parse_head(
    src: &mut BytesMut,
    head_len: usize,
    config: &Config,
) -> Result<RequestHead, ParseError> {
    let head = src.split_to(head_len).freeze();
    let slots = config.max_headers.saturating_add(1);
    if slots <= STACK_HEADERS {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
        parse_with(&head, &mut headers[..slots], config)
    } else {
        let mut headers = vec![MaybeUninit::<httparse::Header<'_>>::uninit(); slots];
        parse_with(&head, &mut headers, config)
    }
}

fn parse_with<'b>(
    head: &'b Bytes,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    config: &Config,
) -> Result<RequestHead, ParseError> {
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, slots) {
        // The scanner and httparse must agree on where the head ends, or a
        // later parse would see different message boundaries.
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(ParseError::NewLine),
        Err(error) => return Err(map_httparse_error(error, head)),
    }
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| ParseError::Method)?;
    let target = request.path.unwrap_or_default();
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(ParseError::UnsupportedVersion),
    };
    check_target(&method, target.as_bytes())?;
    if request.headers.len() > config.max_headers {
        return Err(ParseError::TooManyHeaders);
    }
    let fields = check_fields(head, request.headers)?;
    let target = head.slice_ref(target.as_bytes());
    finish_head(method, target, version, fields, config)
}

/// RFC 9112 §3.2: the request-target's bytes, and which of its four forms
/// goes with which method. "Recipients of an invalid request-line SHOULD
/// respond with [...] a 400 (Bad Request) error" and "SHOULD NOT attempt to
/// autocorrect" it.
fn check_target(method: &Method, target: &[u8]) -> Result<(), ParseError> {
    // A URI is visible ASCII (RFC 3986 §2). httparse lets bytes 0x80-0xFF
    // through; spaces and controls it already refuses, checked again here
    // so the rule does not rest on it. Visible characters outside the URI
    // grammar (`"<>\^`{|}`) pass, as in h11: clients send `|` and `{}`
    // unescaped in queries, and Tomcat's refusal of them had to be relaxed.
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(ParseError::Target);
    }
    if *method == Method::CONNECT {
        // §3.2.3: CONNECT takes the authority-form, `uri-host ":" port`. A
        // WSGI application is an origin server, not a tunnel: RFC 9110 §9.1
        // says a method the origin server does not implement gets 501. 405
        // (RFC 9110 §15.5.6) would need an `Allow` header listing what the
        // resource supports, which only the application knows.
        return match target.iter().rposition(|&b| b == b':') {
            Some(colon)
                if colon > 0
                    && colon + 1 < target.len()
                    && target[colon + 1..].iter().all(u8::is_ascii_digit)
                    && is_valid_host(&target[..colon]) =>
            {
                Err(ParseError::ConnectNotSupported)
            }
            _ => Err(ParseError::Target),
        };
    }
    match target {
        // §3.2.1: origin-form = absolute-path [ "?" query ].
        [b'/', ..] => Ok(()),
        // §3.2.4: "The asterisk-form [...] is only used for a server-wide
        // OPTIONS request".
        b"*" if *method == Method::OPTIONS => Ok(()),
        // §3.2.2: absolute-form, which a server "MUST accept"; for us only
        // http(s) URIs with a host. RFC 9110 §4.2.1: an empty host "MUST
        // [be rejected] as invalid"; RFC 9110 §4.2.4: userinfo SHOULD be
        // treated as an error (`is_valid_host` refuses `@`).
        _ => match split_absolute(strip_fragment(target)) {
            Some((authority, _))
                if is_http_scheme(target)
                    && !authority.is_empty()
                    && authority[0] != b':'
                    && is_valid_host(authority) =>
            {
                Ok(())
            }
            _ => Err(ParseError::Target),
        },
    }
}

/// Whether an absolute-form target's scheme is `http` or `https` (schemes
/// compare ignoring case, RFC 3986 §3.1).
fn is_http_scheme(target: &[u8]) -> bool {
    let scheme = &target[..target.iter().position(|&b| b == b':').unwrap_or(0)];
    scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")
}

/// Maps httparse's error, telling a well-formed but unsupported version
/// (505) from garbage (400).
fn map_httparse_error(error: httparse::Error, head: &[u8]) -> ParseError {
    match error {
        httparse::Error::HeaderName => ParseError::HeaderName,
        httparse::Error::HeaderValue => ParseError::HeaderValue,
        httparse::Error::NewLine => ParseError::NewLine,
        httparse::Error::Status | httparse::Error::Token => {
            // httparse reports a bad method byte as `Token`; a bad target
            // byte (space, control) ends up as `Version` or `Token`.
            ParseError::RequestLine
        }
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::Version => {
            // RFC 9112 §2.3: HTTP-version = "HTTP" "/" DIGIT "." DIGIT.
            let line_start = head
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(0);
            let rest = &head[line_start..];
            let line_end = rest
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(rest.len());
            let line = &rest[..line_end];
            let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            match parts.as_slice() {
                [_, _, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]]
                    if major.is_ascii_digit() && minor.is_ascii_digit() =>
                {
                    ParseError::UnsupportedVersion
                }
                [_, _, _] => ParseError::Version,
                _ => ParseError::RequestLine,
            }
        }
    }
}

/// Which framing-relevant fields a head has, noted while the fields are
/// checked so that a head without them (most GETs) needs no lookups
/// afterwards.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    hosts: u8,
    /// The first `Host` field's value.
    host: (u32, u32),
    content_types: u8,
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
    expect: bool,
}

/// `http::HeaderMap`'s limit on entries: more fields than this are refused
/// so that [`HeaderFields::to_header_map`] can hold them all.
const MAX_MAP_FIELDS: usize = 1 << 15;

/// `http::HeaderName`'s limit on a name's length, kept for the same reason.
const MAX_NAME_LEN: usize = (1 << 16) - 1;

/// RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
/// "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        byte += 1;
    }
    table
};

/// Checks each field's name and value and notes the framing fields; keeps
/// each field as a range of `head` rather than copying it.
fn check_fields(
    head: &Bytes,
    fields: &[httparse::Header<'_>],
) -> Result<(HeaderFields, Seen), ParseError> {
    if fields.len() > MAX_MAP_FIELDS {
        return Err(ParseError::TooManyHeaders);
    }
    // Offsets are kept as u32; the head limit is far below, but a server
    // configured for a 4 GiB head gets a refusal rather than a wrong range.
    if u32::try_from(head.len()).is_err() {
        return Err(ParseError::HeadTooLarge);
    }
    let base = head.as_ptr() as usize;
    // httparse's slices lie within `head`, whose length fits in u32.
    // An empty slice that is not within the head (httparse could hand out
    // a static one) is taken as empty at 0; a non-empty one cannot be.
    let offset = |part: &[u8]| {
        let at = (part.as_ptr() as usize).wrapping_sub(base);
        match at.checked_add(part.len()) {
            Some(end) if end <= head.len() => Ok(at as u32),
            _ if part.is_empty() => Ok(0),
            _ => Err(ParseError::HeaderValue),
        }
    };
    let mut ranges = Vec::with_capacity(fields.len());
    let mut seen = Seen::default();
    for field in fields {
        let name = field.name.as_bytes();
        // httparse checks these bytes too; the rule is ours to keep.
        // No early return, so the loop has no branch per byte.
        let mut token = true;
        for &b in name {
            token &= TCHAR[usize::from(b)];
        }
        if !token || name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(ParseError::HeaderName);
        }
        if !is_field_text(field.value) {
            return Err(ParseError::HeaderValue);
        }
        let range = FieldRange {
            name: offset(name)?,
            name_len: name.len() as u32,
            value: offset(field.value)?,
            value_len: field.value.len() as u32,
        };
        // The length picks the one name to compare.
        let is = |known: &[u8]| eq_lower(name, known);
        match name.len() {
            4 if is(b"host") => {
                if seen.hosts == 0 {
                    seen.host = (range.value, range.value_len);
                }
                seen.hosts = seen.hosts.saturating_add(1);
            }
            12 if is(b"content-type") => {
                seen.content_types = seen.content_types.saturating_add(1);
            }
            17 if is(b"transfer-encoding") => seen.transfer_encoding = true,
            14 if is(b"content-length") => seen.content_length = true,
            10 if is(b"connection") => seen.connection = true,
            6 if is(b"expect") => seen.expect = true,
            _ => {}
        }
        ranges.push(range);
    }
    Ok((HeaderFields::new(head.clone(), ranges), seen))
}

/// Checks and decisions made once the head's syntax is known to be good.
fn finish_head(
    method: Method,
    target: Bytes,
    version: Version,
    (headers, seen): (HeaderFields, Seen),
    config: &Config,
) -> Result<RequestHead, ParseError> {
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    // code to any HTTP/1.1 request message that lacks a Host header field and
    // to any request message that contains more than one Host header field
    // line or a Host header field with an invalid field value."
    match seen.hosts {
        0 if version == Version::HTTP_11 => return Err(ParseError::MissingHost),
        0 => {}
        1 => {
            let (start, len) = (seen.host.0 as usize, seen.host.1 as usize);
            let host = headers.raw().get(start..start + len);
            if !host.is_some_and(is_valid_host) {
                return Err(ParseError::InvalidHost);
            }
        }
        _ => return Err(ParseError::InvalidHost),
    }
    // RFC 9110 §5.3: a field that is not a list (Content-Type is a single
    // media type, §8.3) must not be repeated. Two of them are how a cache
    // and an application are made to read different types (gunicorn and
    // waitress refuse them too).
    if seen.content_types > 1 {
        return Err(ParseError::RepeatedContentType);
    }
    let body = if seen.transfer_encoding || seen.content_length {
        body_length(version, &headers)?
    } else {
        BodyLength::Empty
    };
    if let (BodyLength::Known(length), Some(max)) = (body, config.max_body_size) {
        if length > max {
            return Err(ParseError::PayloadTooLarge);
        }
    }
    let keep_alive = if seen.connection {
        request_keep_alive(version, &headers)
    } else {
        version == Version::HTTP_11
    };
    // RFC 9110 §10.1.1: "A server that receives a 100-continue expectation in
    // an HTTP/1.0 request MUST ignore that expectation." Other expectations
    // are ignored as well (417 is a MAY).
    let expect_continue = seen.expect
        && version == Version::HTTP_11
        && body.has_body()
        && headers
            .get_all("expect")
            .any(|value| value.eq_ignore_ascii_case(b"100-continue"));
    Ok(RequestHead {
        method,
        target,
        version,
        headers,
        body,
        keep_alive,
        expect_continue,
    })
}

/// RFC 9110 §4.2 / RFC 3986 §3.2.2: uri-host [ ":" port ], possibly empty.
fn is_valid_host(host: &[u8]) -> bool {
    // No early return, so the loop has no branch per byte.
    let mut valid = true;
    for &b in host {
        valid &= HOST_CHAR[usize::from(b)];
    }
    valid
}

/// The bytes of [`is_valid_host`]: ALPHA, DIGIT and `-._~!$&'()*+,;=:[]%`.
const HOST_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            );
        byte += 1;
    }
    table
};

/// Decides how the request body is delimited; the one place that does.
///
/// RFC 9112 §6.3, for requests (rules 1, 2 and 7 concern responses only):
///
/// > 3. If a message is received with both a Transfer-Encoding and a
/// >    Content-Length header field, the Transfer-Encoding overrides the
/// >    Content-Length. Such a message might indicate an attempt to perform
/// >    request smuggling or response splitting and ought to be handled as
/// >    an error. [...]
/// > 4. If a Transfer-Encoding header field is present in a request and the
/// >    chunked transfer coding is not the final encoding, the message body
/// >    length cannot be determined reliably; the server MUST respond with
/// >    the 400 (Bad Request) status code and then close the connection.
/// > 5. If a message is received without Transfer-Encoding and with an
/// >    invalid Content-Length header field, then the message framing is
/// >    invalid and the recipient MUST treat it as an unrecoverable error,
/// >    unless the field value can be successfully parsed as a
/// >    comma-separated list, all values in the list are valid, and all
/// >    values in the list are the same [...]. If this is a request message,
/// >    the server MUST respond with a 400 (Bad Request) status code and
/// >    then close the connection.
/// > 6. If a valid Content-Length header field is present without
/// >    Transfer-Encoding, its decimal value defines the expected message
/// >    body length in octets. [...]
/// > 7. [...] If this is a request message and none of the above are true,
/// >    then the message body length is zero (no message body is present).
pub(crate) fn body_length(
    version: Version,
    headers: &HeaderFields,
) -> Result<BodyLength, ParseError> {
    let mut codings = headers.get_all("transfer-encoding").peekable();
    if codings.peek().is_some() {
        // RFC 9112 §6.1: "A server or client that receives an HTTP/1.0 message
        // containing a Transfer-Encoding header field MUST treat the message
        // as if the framing is faulty" -- we refuse it.
        if version == Version::HTTP_10 {
            return Err(ParseError::TransferEncoding);
        }
        // Rule 3: we take the "handled as an error" branch (400) rather than
        // letting TE win, because the pair is the classic smuggling vector.
        if headers.contains("content-length") {
            return Err(ParseError::TransferEncodingAndContentLength);
        }
        let mut count = 0usize;
        let mut chunked_last = false;
        for coding in codings.flat_map(list_items) {
            if chunked_last {
                // Rule 4: chunked must be the final coding, and RFC 9112 §6.1
                // forbids applying it twice.
                return Err(ParseError::TransferEncoding);
            }
            chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            count += 1;
        }
        return match (chunked_last, count) {
            (true, 1) => Ok(BodyLength::Chunked),
            // Well framed (e.g. "gzip, chunked"), but we cannot undo the
            // other codings: RFC 9112 §6.1 says a server SHOULD respond 501.
            (true, _) => Err(ParseError::UnsupportedTransferCoding),
            // Rule 4: chunked is not the final coding (or the list is empty).
            (false, _) => Err(ParseError::TransferEncoding),
        };
    }
    let mut length: Option<u64> = None;
    for item in headers
        .get_all("content-length")
        .flat_map(list_items_keep_empty)
    {
        let value = parse_content_length(item).ok_or(ParseError::ContentLength)?;
        // Rule 5: repeated values are accepted only when identical.
        if length.is_some_and(|previous| previous != value) {
            return Err(ParseError::ContentLength);
        }
        length = Some(value);
    }
    Ok(match length {
        Some(length) => BodyLength::Known(length),
        None => BodyLength::Empty,
    })
}

/// RFC 9110 §8.6: Content-Length = 1*DIGIT, as a u64.
pub(crate) fn parse_content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

fn trim_ows(mut item: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = item {
        item = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = item {
        item = rest;
    }
    item
}

/// RFC 9110 §5.6.1: `#element` lists; empty elements are ignored.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// Like [`list_items`] but keeps empty elements, so that `Content-Length: ,`
/// or `Content-Length:` (empty) is refused.
fn list_items_keep_empty(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// RFC 9112 §9.3: HTTP/1.1 defaults to persistent unless `close` is listed;
/// HTTP/1.0 is persistent only with `keep-alive` (RFC 9112 §9.3, C.2.2).
pub(crate) fn request_keep_alive(version: Version, headers: &HeaderFields) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for token in headers.get_all("connection").flat_map(list_items) {
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            keep_alive = true;
        }
    }
    !close && (version == Version::HTTP_11 || keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tables_match_their_rules() {
        for b in 0..=255u8 {
            let host = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b);
            assert_eq!(HOST_CHAR[usize::from(b)], host, "host byte {b:#x}");
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(TCHAR[usize::from(b)], tchar, "token byte {b:#x}");
            let value = b == b'\t' || (b >= b' ' && b != 0x7f);
            assert_eq!(is_field_text(&[b]), value, "value byte {b:#x}");
        }
    }
}
