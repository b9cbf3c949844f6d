//! Error kinds of the WSGI model: bad response heads, a gone client, a failed application.

use thiserror::Error;

/// A response head that PEP 3333 (or HTTP) does not allow. The runtime raises
/// it to the application instead of writing anything to the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeadError {
    /// The status is not `"NNN Reason"` with a 3-digit code from 100 to 999.
    #[error("invalid status {0:?}: expected \"NNN Reason\", e.g. \"200 OK\"")]
    InvalidStatus(String),
    /// A header name is empty or holds a byte that is not an HTTP token character.
    #[error("invalid header name {0:?}: must be a non-empty HTTP token")]
    InvalidHeaderName(String),
    /// A header value holds CR, LF, NUL or another control character.
    #[error("invalid value for header {name:?}: control characters (CR, LF, NUL) are not allowed")]
    InvalidHeaderValue {
        /// The header's name.
        name: String,
    },
    /// PEP 3333: "it is a fatal error for an application to use hop-by-hop headers".
    #[error("hop-by-hop header {0:?} is not allowed from a WSGI application (PEP 3333)")]
    HopByHop(String),
    /// `Content-Length` that is not a decimal number.
    #[error("invalid Content-Length value {0:?}")]
    InvalidContentLength(String),
    /// Two `Content-Length` headers with different values (RFC 9110 §8.6).
    #[error("conflicting Content-Length values {0} and {1}")]
    ConflictingContentLength(u64, u64),
}

/// Why an environ could not be built from a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvironError {
    /// A required CGI variable is missing (uwsgi packets must carry `REQUEST_METHOD`).
    #[error("missing required variable {0}")]
    Missing(&'static str),
    /// A variable has a value the server cannot use.
    #[error("invalid value for {0}")]
    Invalid(&'static str),
}

/// Why a response sink refused more output.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SinkError {
    /// The client went away; stop producing the response (and call `close()`).
    #[error("client disconnected")]
    Disconnected,
    /// Body data before the head, a second head, or data after `finish`.
    #[error("response sink misuse: {0}")]
    Misuse(&'static str),
    /// Writing a file region failed.
    #[error("file error: {0}")]
    File(String),
}

/// An application failed while serving a request. The server answers 500 if
/// no byte of the response was sent yet, and cuts the connection otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct AppError {
    /// One line for the log; a runtime writes the full traceback itself.
    pub message: String,
}

impl AppError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        AppError {
            message: message.into(),
        }
    }
}

impl From<SinkError> for AppError {
    fn from(error: SinkError) -> Self {
        AppError::new(error.to_string())
    }
}
