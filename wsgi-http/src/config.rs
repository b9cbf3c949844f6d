//! Decoder limits: [`Config`] and the `DEFAULT_MAX_*` constants it starts from.

/// Longest accepted request line (method, target, version; without the line
/// ending). Exceeding it fails with [`ParseError::RequestLineTooLong`]
/// (414 URI Too Long), detected as soon as the line outgrows the limit, even
/// before the head is complete. gunicorn's `limit_request_line` default
/// (4094), so that its documentation holds for us.
///
/// [`ParseError::RequestLineTooLong`]: crate::ParseError::RequestLineTooLong
pub const DEFAULT_MAX_REQUEST_LINE: usize = 4094;

/// Most header field lines accepted in one head (and in one trailer section).
/// Exceeding it fails with [`ParseError::TooManyHeaders`]
/// (431 Request Header Fields Too Large). gunicorn's `limit_request_fields`
/// default.
///
/// [`ParseError::TooManyHeaders`]: crate::ParseError::TooManyHeaders
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Longest accepted header field line (name, colon, value; without the line
/// ending). Exceeding it fails with [`ParseError::HeaderFieldTooLong`] (431).
/// gunicorn's `limit_request_field_size` default.
///
/// [`ParseError::HeaderFieldTooLong`]: crate::ParseError::HeaderFieldTooLong
pub const DEFAULT_MAX_FIELD_SIZE: usize = 8190;

/// Largest accepted head in bytes (leading empty lines, request line, header
/// lines and the final empty line). Exceeding it fails with
/// [`ParseError::HeadTooLarge`] (431), detected while the head is still
/// arriving.
///
/// [`ParseError::HeadTooLarge`]: crate::ParseError::HeadTooLarge
pub const DEFAULT_MAX_HEAD_SIZE: usize = 65536;

/// Longest accepted chunk extension, per chunk-size line (the bytes after the
/// chunk size up to the CRLF). Exceeding it fails with
/// [`ParseError::ChunkExtensionTooLong`] (400 Bad Request).
///
/// [`ParseError::ChunkExtensionTooLong`]: crate::ParseError::ChunkExtensionTooLong
pub const DEFAULT_MAX_CHUNK_EXTENSION: usize = 4096;

/// Largest accepted trailer section in bytes, including its final empty line.
/// Exceeding it fails with [`ParseError::TrailersTooLarge`] (400 Bad Request).
///
/// [`ParseError::TrailersTooLarge`]: crate::ParseError::TrailersTooLarge
pub const DEFAULT_MAX_TRAILER_SIZE: usize = 8190;

/// Limits applied while decoding requests.
///
/// Every limit, once exceeded, fails decoding with a [`ParseError`] whose
/// [`status`](crate::ParseError::status) the server sends before closing.
///
/// [`ParseError`]: crate::ParseError
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// See [`DEFAULT_MAX_REQUEST_LINE`] (414 when exceeded).
    pub max_request_line: usize,
    /// See [`DEFAULT_MAX_HEADERS`] (431 when exceeded).
    pub max_headers: usize,
    /// See [`DEFAULT_MAX_FIELD_SIZE`] (431 when exceeded).
    pub max_field_size: usize,
    /// See [`DEFAULT_MAX_HEAD_SIZE`] (431 when exceeded).
    pub max_head_size: usize,
    /// Largest accepted request body; `None` (the default) means unlimited.
    /// A larger `Content-Length` fails with [`ParseError::PayloadTooLarge`]
    /// (413 Content Too Large) as soon as the head is parsed; a chunked body
    /// fails with the same error when a chunk-size line would cross it.
    ///
    /// [`ParseError::PayloadTooLarge`]: crate::ParseError::PayloadTooLarge
    pub max_body_size: Option<u64>,
    /// See [`DEFAULT_MAX_CHUNK_EXTENSION`] (400 when exceeded).
    pub max_chunk_extension: usize,
    /// See [`DEFAULT_MAX_TRAILER_SIZE`] (400 when exceeded).
    pub max_trailer_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_headers: DEFAULT_MAX_HEADERS,
            max_field_size: DEFAULT_MAX_FIELD_SIZE,
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            max_body_size: None,
            max_chunk_extension: DEFAULT_MAX_CHUNK_EXTENSION,
            max_trailer_size: DEFAULT_MAX_TRAILER_SIZE,
        }
    }
}
