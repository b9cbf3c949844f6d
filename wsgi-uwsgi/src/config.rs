//! Decoder limits: what the peer may send before the decoder refuses it.

/// Default for [`Config::max_vars_size`]: 65535 bytes, the largest vars block
/// the 16-bit `datasize` field can describe.
///
/// uWSGI's own default (`buffer-size = 4096`) is its most common production
/// failure: a big cookie or JWT pushes the block past 4 KiB and nginx answers
/// 502. nginx itself refuses to send more than 65535 bytes, so with this
/// default every packet nginx can produce is accepted.
///
/// Exceeding the limit gives [`ParseError::VarsTooLarge`] as soon as the
/// header is read, before the block's bytes are awaited.
///
/// [`ParseError::VarsTooLarge`]: crate::ParseError::VarsTooLarge
pub const DEFAULT_MAX_VARS_SIZE: usize = u16::MAX as usize;

/// Default for [`Config::max_vars`]: 1000 vars per request, gunicorn's cap.
///
/// nginx sends about 15 fixed vars plus one per client header. Exceeding the
/// limit gives [`ParseError::TooManyVars`].
///
/// [`ParseError::TooManyVars`]: crate::ParseError::TooManyVars
pub const DEFAULT_MAX_VARS: usize = 1000;

/// Limits applied by the [`Decoder`](crate::Decoder).
///
/// `Config::default()` accepts everything nginx's `uwsgi_pass` can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest accepted vars block, in bytes (the header's `datasize`).
    /// Default [`DEFAULT_MAX_VARS_SIZE`]. Values above 65535 act as 65535.
    pub max_vars_size: usize,
    /// Largest accepted number of vars. Default [`DEFAULT_MAX_VARS`].
    pub max_vars: usize,
    /// Largest accepted `CONTENT_LENGTH`, or `None` for no limit (the
    /// default, like uWSGI's `--limit-post 0`). Exceeding it gives
    /// [`ParseError::BodyTooLarge`](crate::ParseError::BodyTooLarge) before
    /// the head is handed out, so the server can answer 413 without reading
    /// the body.
    pub max_body_size: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_vars_size: DEFAULT_MAX_VARS_SIZE,
            max_vars: DEFAULT_MAX_VARS,
            max_body_size: None,
        }
    }
}
