//! The vars block: `[u16 LE key_len][key][u16 LE val_len][val]` repeated,
//! exactly filling the header's `datasize` (uWSGI `core/protocol.c`,
//! `uwsgi_parse_vars`).

use std::fmt;

use bytes::Bytes;

use crate::body::ContentLength;
use crate::ParseError;

/// Where one pair sits in the block. Offsets fit in `u16` because the block
/// is at most 65535 bytes (its size is a `u16` on the wire); this keeps the
/// index at 8 bytes per var.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key_start: u16,
    key_len: u16,
    value_start: u16,
    value_len: u16,
}

impl Entry {
    fn key(self) -> std::ops::Range<usize> {
        let start = usize::from(self.key_start);
        start..start + usize::from(self.key_len)
    }

    fn value(self) -> std::ops::Range<usize> {
        let start = usize::from(self.value_start);
        start..start + usize::from(self.value_len)
    }
}

/// The request's vars, in wire order: the vars block kept as one [`Bytes`]
/// plus an index of where each key and value sits. Nothing is copied; the
/// `*_bytes` accessors hand out slices that share the block's allocation.
///
/// Keys and values are raw bytes: nginx forwards client header values as they
/// came, so they need not be UTF-8 (WSGI decodes them as latin-1).
///
/// A key may appear more than once. [`Vars::get`] returns the **last**
/// occurrence, which is what a dict built by inserting [`Vars::iter`] in
/// order ends up holding (uWSGI's python plugin does exactly that).
#[derive(Clone, PartialEq, Eq)]
pub struct Vars {
    block: Bytes,
    entries: Vec<Entry>,
}

impl Vars {
    /// Wraps a block already validated by [`index`].
    pub(crate) fn from_parts(block: Bytes, entries: Index) -> Vars {
        Vars {
            block,
            entries: entries.0,
        }
    }

    /// The value of the last var named `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.find(key).map(|e| &self.block[e.value()])
    }

    /// Like [`Vars::get`], as a zero-copy [`Bytes`] slice of the block.
    pub fn get_bytes(&self, key: &[u8]) -> Option<Bytes> {
        self.find(key).map(|e| self.block.slice(e.value()))
    }

    /// Every value of the vars named `key`, in wire order.
    pub fn get_all<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Whether a var named `key` is present.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// All `(key, value)` pairs, in wire order, duplicates included.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.entries
            .iter()
            .map(|e| (&self.block[e.key()], &self.block[e.value()]))
    }

    /// All pairs as zero-copy [`Bytes`] slices of the block, in wire order.
    pub fn iter_bytes(&self) -> impl ExactSizeIterator<Item = (Bytes, Bytes)> + '_ {
        self.entries
            .iter()
            .map(|e| (self.block.slice(e.key()), self.block.slice(e.value())))
    }

    /// Number of vars, duplicates included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the block held no vars at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw vars block, without the packet header.
    pub fn as_bytes(&self) -> &Bytes {
        &self.block
    }

    fn find(&self, key: &[u8]) -> Option<Entry> {
        // Last wins; see the type's docs.
        self.entries
            .iter()
            .rev()
            .copied()
            .find(|e| &self.block[e.key()] == key)
    }
}

/// The validated layout of a vars block, before the block is split off the
/// caller's buffer (so a failing parse consumes nothing), and the body's
/// length the vars announce.
#[derive(Debug)]
pub(crate) struct Index(Vec<Entry>, ContentLength);

impl Index {
    /// `CONTENT_LENGTH` (see [`ContentLength`]).
    pub(crate) fn content_length(&self) -> Result<u64, ParseError> {
        self.1.result()
    }
}

/// Room for the index of a block of `len` bytes: a var of nginx's
/// `uwsgi_params` takes 20 to 40 bytes, so one allocation usually holds
/// them all (growing from empty took three).
fn entries_for(len: usize, max_vars: usize) -> usize {
    (len / 16 + 1).min(max_vars)
}

/// Parses and validates a whole vars block: every pair complete, no empty
/// key, no more than `max_vars` pairs, the pairs exactly filling the block.
pub(crate) fn index(buf: &[u8], max_vars: usize) -> Result<Index, ParseError> {
    // The block's length comes from a u16 `datasize`; refuse anything else
    // rather than truncating offsets below.
    if buf.len() > usize::from(u16::MAX) {
        return Err(ParseError::VarOverrun);
    }
    let mut entries = Vec::with_capacity(entries_for(buf.len(), max_vars));
    let mut content_length = ContentLength::default();
    let mut pos = 0;
    while pos < buf.len() {
        if entries.len() >= max_vars {
            return Err(ParseError::TooManyVars { limit: max_vars });
        }
        let (key_start, key_len) = field(buf, pos)?;
        if key_len == 0 {
            // uWSGI rejects it too: no environ key can be empty.
            return Err(ParseError::EmptyKey);
        }
        let (value_start, value_len) = field(buf, key_start + key_len)?;
        pos = value_start + value_len;
        if let (Some(key), Some(value)) = (
            buf.get(key_start..key_start + key_len),
            buf.get(value_start..pos),
        ) {
            content_length.see(key, value);
        }
        entries.push(Entry {
            // All four are <= buf.len() <= u16::MAX (checked above).
            key_start: key_start as u16,
            key_len: key_len as u16,
            value_start: value_start as u16,
            value_len: value_len as u16,
        });
    }
    Ok(Index(entries, content_length))
}

/// Reads the u16 LE length at `pos` and checks the bytes it announces are in
/// `buf`; returns where those bytes start and their length.
fn field(buf: &[u8], pos: usize) -> Result<(usize, usize), ParseError> {
    let len = match buf.get(pos..pos + 2) {
        Some(&[lo, hi]) => usize::from(u16::from_le_bytes([lo, hi])),
        // A length field cut by the end of the block: the pairs do not fill it.
        _ => return Err(ParseError::TruncatedVars),
    };
    let start = pos + 2;
    if buf.len() - start < len {
        return Err(ParseError::VarOverrun);
    }
    Ok((start, len))
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (Escaped(k), Escaped(v))))
            .finish()
    }
}

/// Shows bytes as an escaped string literal, so vars read like `uwsgi_params`.
struct Escaped<'a>(&'a [u8]);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(block: &[u8]) -> Result<Vars, ParseError> {
        let index = index(block, 10)?;
        Ok(Vars::from_parts(Bytes::copy_from_slice(block), index))
    }

    #[test]
    fn pairs_and_lookups() {
        let v = parse(b"\x01\x00A\x01\x00x\x01\x00B\x00\x00\x01\x00A\x02\x00yz").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v.get(b"A"), Some(&b"yz"[..]));
        assert_eq!(v.get(b"B"), Some(&b""[..]));
        assert_eq!(v.get(b"C"), None);
        assert_eq!(v.get_all(b"A").collect::<Vec<_>>(), [&b"x"[..], b"yz"]);
        assert_eq!(format!("{v:?}"), r#"{"A": "x", "B": "", "A": "yz"}"#);
    }

    #[test]
    fn malformed_blocks() {
        assert_eq!(parse(b"\x00"), Err(ParseError::TruncatedVars));
        assert_eq!(parse(b"\x01\x00A"), Err(ParseError::TruncatedVars));
        assert_eq!(parse(b"\x01\x00A\x00"), Err(ParseError::TruncatedVars));
        assert_eq!(parse(b"\x02\x00A"), Err(ParseError::VarOverrun));
        assert_eq!(parse(b"\x01\x00A\x02\x00x"), Err(ParseError::VarOverrun));
        assert_eq!(parse(b"\x00\x00\x00\x00"), Err(ParseError::EmptyKey));
        assert_eq!(parse(b"\xff\xff"), Err(ParseError::VarOverrun));
        assert_eq!(
            parse(&[1, 0, b'K', 0, 0].repeat(11)),
            Err(ParseError::TooManyVars { limit: 10 })
        );
    }
}
