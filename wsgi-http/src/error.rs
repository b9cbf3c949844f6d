//! Error kinds: [`ParseError`] for the peer's bad input, [`EncodeError`] for our own misuse.

use http::StatusCode;

/// Why a request could not be decoded. Each kind maps to the status the
/// server should answer with (see [`ParseError::status`]) before closing
/// the connection; the decoder accepts nothing more after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The request line is longer than `Config::max_request_line` (414).
    #[error("request line too long")]
    RequestLineTooLong,
    /// More header lines than `Config::max_headers` (431).
    #[error("too many header fields")]
    TooManyHeaders,
    /// A header line longer than `Config::max_field_size` (431).
    #[error("header field line too long")]
    HeaderFieldTooLong,
    /// The head is larger than `Config::max_head_size` (431).
    #[error("request head too large")]
    HeadTooLarge,
    /// The body is larger than `Config::max_body_size` (413).
    #[error("request body too large")]
    PayloadTooLarge,
    /// The request line is malformed (400).
    #[error("malformed request line")]
    RequestLine,
    /// The method is not a valid token (400).
    #[error("invalid method")]
    Method,
    /// The request-target holds a byte outside visible ASCII, or its form
    /// does not go with the method: origin-form must start with `/`,
    /// asterisk-form is only for `OPTIONS`, absolute-form must be an
    /// `http(s)` URI with a host (RFC 9112 §3.2) (400).
    #[error("invalid request target")]
    Target,
    /// A well-formed `CONNECT` request: an origin server does not tunnel
    /// (RFC 9110 §9.1, §9.3.6) (501).
    #[error("CONNECT is not supported")]
    ConnectNotSupported,
    /// An `HTTP/x.y` version this server does not speak, such as `HTTP/2.0` (505).
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// The version field is not of the form `HTTP/DIGIT.DIGIT` (400).
    #[error("malformed HTTP version")]
    Version,
    /// A header name is malformed, or has whitespace before the colon (400).
    #[error("invalid header name")]
    HeaderName,
    /// A header value holds a control byte (NUL, bare CR, ...) (400).
    #[error("invalid header value")]
    HeaderValue,
    /// A header line starts with whitespace: obsolete line folding,
    /// RFC 9112 §5.2 (400).
    #[error("obsolete line folding")]
    ObsFold,
    /// A line ending is malformed, e.g. a CR not followed by LF (400).
    #[error("invalid line ending")]
    NewLine,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2) (400).
    #[error("missing Host header")]
    MissingHost,
    /// More than one `Host` header line, or an invalid `Host` value (400).
    #[error("invalid or repeated Host header")]
    InvalidHost,
    /// More than one `Content-Type` field (RFC 9110 §5.3) (400).
    #[error("repeated Content-Type header")]
    RepeatedContentType,
    /// A malformed `Content-Length`, or repeated ones that differ (400).
    #[error("invalid Content-Length")]
    ContentLength,
    /// A `Transfer-Encoding` that does not end in `chunked`, or that is
    /// sent on HTTP/1.0 (400).
    #[error("invalid Transfer-Encoding")]
    TransferEncoding,
    /// Both `Transfer-Encoding` and `Content-Length` (400; see RFC 9112 §6.1).
    #[error("both Transfer-Encoding and Content-Length")]
    TransferEncodingAndContentLength,
    /// A transfer coding other than `chunked` is applied (501).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// A chunk size is not hex, is empty, or is too large (400).
    #[error("invalid chunk size")]
    ChunkSize,
    /// A chunk extension holds bad bytes (400).
    #[error("invalid chunk extension")]
    ChunkExtension,
    /// A chunk extension is longer than `Config::max_chunk_extension` (400).
    #[error("chunk extension too long")]
    ChunkExtensionTooLong,
    /// Chunk data is not followed by CRLF (400).
    #[error("missing CRLF after chunk data")]
    ChunkDataEnd,
    /// The trailer section is malformed (400).
    #[error("invalid trailer section")]
    Trailers,
    /// The trailer section is larger than `Config::max_trailer_size`, or has
    /// more than `Config::max_headers` fields (400).
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// The peer closed its side in the middle of a message (400).
    #[error("connection closed before the message was complete")]
    Incomplete,
}

impl ParseError {
    /// The status the server should answer with (then close the connection).
    pub fn status(&self) -> StatusCode {
        match self {
            // RFC 9112 §3: "A server that receives a request-target longer
            // than any URI it wishes to parse MUST respond with a 414".
            ParseError::RequestLineTooLong => StatusCode::URI_TOO_LONG,
            // RFC 6585 §5.
            ParseError::TooManyHeaders
            | ParseError::HeaderFieldTooLong
            | ParseError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            // RFC 9110 §15.5.14.
            ParseError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // RFC 9110 §15.6.6.
            ParseError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            // RFC 9112 §6.1: "A server that receives a request message with a
            // transfer coding it does not understand SHOULD respond with 501".
            ParseError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            // RFC 9110 §9.1: a method the origin server does not implement.
            ParseError::ConnectNotSupported => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Misuse of the response encoder by the caller (not the peer's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The status is outside 200..=999 (1xx go through `encode_continue`).
    #[error("invalid response status {0}")]
    InvalidStatus(u16),
    /// The reason phrase or a header holds CR, LF or another control byte,
    /// or a header name is empty.
    #[error("invalid byte in reason phrase or header")]
    InvalidHeader,
    /// The application's `Content-Length` is not a number, or repeated
    /// values differ.
    #[error("invalid Content-Length in response headers")]
    InvalidContentLength,
    /// `encode_head` was called twice for one response.
    #[error("response head already sent")]
    HeadAlreadySent,
    /// Body or end was encoded before the head.
    #[error("response head not sent yet")]
    HeadNotSent,
    /// Body was encoded after the end of the response.
    #[error("response already ended")]
    AlreadyEnded,
    /// The response ended before `Content-Length` bytes were sent; the
    /// server must close the connection.
    #[error("response body shorter than Content-Length ({sent} of {expected} bytes)")]
    ShortBody {
        /// The declared `Content-Length`.
        expected: u64,
        /// Bytes actually framed.
        sent: u64,
    },
    /// `start_next_cycle` was called before both the request and the
    /// response were complete.
    #[error("request or response not finished")]
    NotFinished,
    /// `start_next_cycle` was called but the connection cannot be reused;
    /// the server must close it.
    #[error("connection cannot be reused")]
    ConnectionClosed,
}
