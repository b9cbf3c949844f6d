//! The client side: writing a request packet, as nginx's `uwsgi_pass` does.
//!
//! For tests and Rust uwsgi clients. The body is not framed: append exactly
//! `CONTENT_LENGTH` bytes after the packet. Responses are not encoded here
//! at all; see the crate docs.

use bytes::{BufMut, BytesMut};

use crate::packet::{Header, HEADER_LEN, MODIFIER1_WSGI};
use crate::EncodeError;

/// Writes a WSGI request packet (modifier1 0, modifier2 0): the header, then
/// the vars block.
///
/// # Errors
///
/// An [`EncodeError`] if a key is empty, a key or value is longer than 65535
/// bytes, or the whole block is; `dst` is then left as it was.
pub fn encode_vars<K, V>(
    vars: impl IntoIterator<Item = (K, V)>,
    dst: &mut BytesMut,
) -> Result<(), EncodeError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    encode_packet(MODIFIER1_WSGI, 0, vars, dst)
}

/// Writes a packet with the given modifiers: the header, then the vars block.
///
/// # Errors
///
/// As [`encode_vars`]; `dst` is left as it was on error.
pub fn encode_packet<K, V>(
    modifier1: u8,
    modifier2: u8,
    vars: impl IntoIterator<Item = (K, V)>,
    dst: &mut BytesMut,
) -> Result<(), EncodeError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let start = dst.len();
    let result = write_packet(modifier1, modifier2, vars, start, dst);
    if result.is_err() {
        // All or nothing: a half-written packet would desynchronise the
        // stream for whoever sends `dst`.
        dst.truncate(start);
    }
    result
}

fn write_packet<K, V>(
    modifier1: u8,
    modifier2: u8,
    vars: impl IntoIterator<Item = (K, V)>,
    start: usize,
    dst: &mut BytesMut,
) -> Result<(), EncodeError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    // Write the header last, once the block's size is known.
    dst.put_bytes(0, HEADER_LEN);
    for (key, value) in vars {
        let (key, value) = (key.as_ref(), value.as_ref());
        if key.is_empty() {
            return Err(EncodeError::EmptyKey);
        }
        let key_len =
            u16::try_from(key.len()).map_err(|_| EncodeError::KeyTooLong { len: key.len() })?;
        let value_len = u16::try_from(value.len())
            .map_err(|_| EncodeError::ValueTooLong { len: value.len() })?;
        let size = dst.len() - start - HEADER_LEN + 4 + key.len() + value.len();
        if size > usize::from(u16::MAX) {
            return Err(EncodeError::VarsTooLarge { size });
        }
        dst.put_u16_le(key_len);
        dst.put_slice(key);
        dst.put_u16_le(value_len);
        dst.put_slice(value);
    }
    let size = dst.len() - start - HEADER_LEN;
    let datasize = u16::try_from(size).map_err(|_| EncodeError::VarsTooLarge { size })?;
    let header = Header {
        modifier1,
        datasize,
        modifier2,
    };
    if let Some(slot) = dst.get_mut(start..start + HEADER_LEN) {
        slot.copy_from_slice(&header.to_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut dst = BytesMut::from(&b"xx"[..]);
        encode_packet(5, 7, [("AB", "c")], &mut dst).unwrap();
        assert_eq!(&dst[..], b"xx\x05\x07\x00\x07\x02\x00AB\x01\x00c");
    }

    #[test]
    fn errors_leave_dst_alone() {
        let mut dst = BytesMut::from(&b"xx"[..]);
        let big = vec![b'v'; 65536];
        assert_eq!(
            encode_vars([(&b"K"[..], &big[..])], &mut dst),
            Err(EncodeError::ValueTooLong { len: 65536 })
        );
        assert_eq!(
            encode_vars([(&big[..], &b""[..])], &mut dst),
            Err(EncodeError::KeyTooLong { len: 65536 })
        );
        assert_eq!(
            encode_vars([("A", "x"), ("", "v")], &mut dst),
            Err(EncodeError::EmptyKey)
        );
        // 65531 + 4 fills the block exactly; one more byte does not fit.
        let fits = vec![b'v'; 65530];
        assert!(encode_vars([(&b"K"[..], &fits[..])], &mut BytesMut::new()).is_ok());
        assert_eq!(
            encode_vars([(&b"K"[..], &fits[..]), (b"L", b"")], &mut dst),
            Err(EncodeError::VarsTooLarge { size: 65535 + 5 })
        );
        assert_eq!(&dst[..], b"xx");
    }
}
