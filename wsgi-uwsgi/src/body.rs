//! Body framing: the body follows the vars block on the same stream and is
//! exactly `CONTENT_LENGTH` bytes long.
//!
//! nginx always frames the body this way: a chunked client body is buffered
//! by nginx and re-sent with a length (`ngx_http_uwsgi_module.c`), and the
//! uwsgi connection carries a single request, so there is no other framing
//! to support.

use crate::{names, ParseError};

/// The body length announced by the vars, gathered var by var while the
/// vars block is indexed (one pass over the block, not two).
///
/// Absent or empty means 0 (nginx sends `CONTENT_LENGTH` empty for bodiless
/// requests). Otherwise it must be `1*DIGIT` (RFC 9110 section 8.6) fitting
/// in `u64`; signs, spaces and hex are refused rather than guessed at. If the
/// var is repeated, every occurrence must agree: framing differently from a
/// later reader of the environ is how requests get smuggled.
#[derive(Debug, Default)]
pub(crate) struct ContentLength {
    found: Option<u64>,
    invalid: bool,
}

impl ContentLength {
    /// Takes in one var (only `CONTENT_LENGTH` counts).
    pub(crate) fn see(&mut self, key: &[u8], value: &[u8]) {
        if key != names::CONTENT_LENGTH || self.invalid {
            return;
        }
        match (parse_decimal(value), self.found) {
            (Ok(n), Some(found)) if n != found => self.invalid = true,
            (Ok(n), _) => self.found = Some(n),
            (Err(_), _) => self.invalid = true,
        }
    }

    /// The length, once every var was seen.
    pub(crate) fn result(&self) -> Result<u64, ParseError> {
        if self.invalid {
            return Err(ParseError::InvalidContentLength);
        }
        Ok(self.found.unwrap_or(0))
    }
}

fn parse_decimal(value: &[u8]) -> Result<u64, ParseError> {
    value.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(ParseError::InvalidContentLength);
        }
        acc.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(ParseError::InvalidContentLength)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b""), Ok(0));
        assert_eq!(parse_decimal(b"0"), Ok(0));
        assert_eq!(parse_decimal(b"0012"), Ok(12));
        assert_eq!(parse_decimal(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b"18446744073709551616"[..],
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"0x10",
            b"1,1",
        ] {
            assert_eq!(parse_decimal(bad), Err(ParseError::InvalidContentLength));
        }
    }
}
