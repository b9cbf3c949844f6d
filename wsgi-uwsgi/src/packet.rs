//! The 4-byte packet header (`struct uwsgi_header` in uWSGI's `uwsgi.h`).
//!
//! ```text
//! +-----------+-------------------+-----------+
//! | modifier1 | datasize (u16 LE) | modifier2 |
//! +-----------+-------------------+-----------+
//! ```

/// Length of the packet header.
pub const HEADER_LEN: usize = 4;

/// `modifier1` of a WSGI request: what nginx's `uwsgi_modifier1` defaults to.
pub const MODIFIER1_WSGI: u8 = 0;

/// A parsed packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) modifier1: u8,
    pub(crate) datasize: u16,
    pub(crate) modifier2: u8,
}

impl Header {
    /// Reads a header from the start of `buf`, or `None` if fewer than
    /// [`HEADER_LEN`] bytes are there.
    pub(crate) fn parse(buf: &[u8]) -> Option<Header> {
        match *buf {
            [modifier1, lo, hi, modifier2, ..] => Some(Header {
                modifier1,
                // uwsgi.h: the size is little-endian whatever the host.
                datasize: u16::from_le_bytes([lo, hi]),
                modifier2,
            }),
            _ => None,
        }
    }

    /// Writes the header's 4 bytes.
    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [lo, hi] = self.datasize.to_le_bytes();
        [self.modifier1, lo, hi, self.modifier2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_little_endian() {
        let h = Header::parse(&[0, 0x34, 0x12, 7, 99]).unwrap();
        assert_eq!(
            h,
            Header {
                modifier1: 0,
                datasize: 0x1234,
                modifier2: 7
            }
        );
        assert_eq!(h.to_bytes(), [0, 0x34, 0x12, 7]);
    }

    #[test]
    fn short_input_is_none() {
        for n in 0..HEADER_LEN {
            assert_eq!(Header::parse(&[0; 3][..n.min(3)]), None);
        }
    }
}
