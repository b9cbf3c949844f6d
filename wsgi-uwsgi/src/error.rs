//! Errors: the peer's garbage ([`ParseError`]) apart from the caller's misuse
//! ([`EncodeError`]).

use thiserror::Error;

/// The peer sent something that is not a valid uwsgi WSGI request.
///
/// Every kind is small and `Copy`; the decoder keeps returning the same error
/// once it has failed. The connection cannot be resynchronised after one: the
/// server should answer (see [`ParseError::status_hint`]) and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// `modifier1` is not 0 (WSGI), the only request type this codec speaks.
    #[error("unsupported uwsgi modifier1 {modifier1} (only 0, WSGI, is accepted)")]
    UnsupportedModifier {
        /// The `modifier1` byte that was sent.
        modifier1: u8,
    },
    /// The header's `datasize` exceeds [`Config::max_vars_size`](crate::Config::max_vars_size).
    #[error("uwsgi vars block of {size} bytes exceeds the limit of {limit} bytes")]
    VarsTooLarge {
        /// The announced block size.
        size: u16,
        /// The configured limit, clamped to 65535.
        limit: u16,
    },
    /// More vars than [`Config::max_vars`](crate::Config::max_vars).
    #[error("too many uwsgi vars (more than {limit})")]
    TooManyVars {
        /// The configured limit.
        limit: usize,
    },
    /// A var has a zero-length key, which uWSGI rejects too.
    #[error("uwsgi var with an empty key")]
    EmptyKey,
    /// A key or value length runs past the end of the vars block.
    #[error("uwsgi var length runs past the end of the vars block")]
    VarOverrun,
    /// The vars block ends partway through a length field (so the pairs do
    /// not exactly fill it).
    #[error("uwsgi vars block is not exactly filled by key/value pairs")]
    TruncatedVars,
    /// `CONTENT_LENGTH` is not a plain decimal number, overflows `u64`, or
    /// appears twice with different values.
    #[error("invalid CONTENT_LENGTH var")]
    InvalidContentLength,
    /// `CONTENT_LENGTH` exceeds [`Config::max_body_size`](crate::Config::max_body_size).
    #[error("request body of {content_length} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The announced body length.
        content_length: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The peer closed the connection partway through the packet header or
    /// vars block.
    #[error("connection closed in the middle of a uwsgi packet")]
    Incomplete,
    /// The peer closed the connection before `CONTENT_LENGTH` body bytes
    /// arrived.
    #[error("connection closed with {remaining} request body bytes missing")]
    IncompleteBody {
        /// Body bytes still expected.
        remaining: u64,
    },
}

impl ParseError {
    /// The HTTP status a server should answer with, if it still can.
    ///
    /// nginx relays it to the client. For the `Incomplete*` kinds the peer is
    /// gone and nobody will read the answer; 400 is returned for uniformity.
    pub fn status_hint(&self) -> u16 {
        match self {
            // RFC 6585 section 5: the vars block is the request's header section.
            ParseError::VarsTooLarge { .. } | ParseError::TooManyVars { .. } => 431,
            // RFC 9110 section 15.5.14.
            ParseError::BodyTooLarge { .. } => 413,
            _ => 400,
        }
    }
}

/// The caller asked the encoder for something the wire format cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A key is empty; decoders (ours and uWSGI's) reject such a var.
    #[error("uwsgi var key is empty")]
    EmptyKey,
    /// A key is longer than its 16-bit length field can say.
    #[error("uwsgi var key of {len} bytes exceeds 65535")]
    KeyTooLong {
        /// The key's length.
        len: usize,
    },
    /// A value is longer than its 16-bit length field can say.
    #[error("uwsgi var value of {len} bytes exceeds 65535")]
    ValueTooLong {
        /// The value's length.
        len: usize,
    },
    /// The whole vars block is longer than the header's 16-bit `datasize`.
    #[error("uwsgi vars block of {size} bytes exceeds 65535")]
    VarsTooLarge {
        /// The block's size so far (it may be larger still).
        size: usize,
    },
}
