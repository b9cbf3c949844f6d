//! [`HeaderFields`]: a request's header fields as received, kept as ranges of the head's bytes.
//!
//! The codec checks every field while parsing (RFC 9110 §5.1 token names,
//! §5.5 field values) and notes the framing fields on the way; building an
//! `http::HeaderMap` as well cost more than the rest of the head parse
//! (hashing, lower-casing and an allocation per custom name), and a WSGI
//! server turns the fields into environ keys anyway. Those who want a map
//! get one from [`HeaderFields::to_header_map`].

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Where one field's name and value lie in the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldRange {
    pub(crate) name: u32,
    pub(crate) name_len: u32,
    pub(crate) value: u32,
    pub(crate) value_len: u32,
}

/// The header fields of a request head in the order received, names in the
/// case they were sent, repeated names kept.
///
/// Names are RFC 9110 tokens and values contain no control bytes other
/// than HTAB: the codec refused the head otherwise. Lookups ignore ASCII
/// case, as field names do (RFC 9110 §5.1).
#[derive(Clone, Default)]
pub struct HeaderFields {
    /// The whole head the ranges point into (shared with the read buffer).
    head: Bytes,
    fields: Vec<FieldRange>,
}

impl HeaderFields {
    pub(crate) fn new(head: Bytes, fields: Vec<FieldRange>) -> Self {
        HeaderFields { head, fields }
    }

    /// How many field lines there are (repeats counted).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the head had no field lines.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The (name, value) pairs in the order received.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            head: &self.head,
            fields: self.fields.iter(),
        }
    }

    /// The first value of `name` (any case).
    pub fn get<'a, N: AsRef<[u8]> + ?Sized>(&'a self, name: &'a N) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// Every value of `name` (any case), in the order received.
    pub fn get_all<'a, N: AsRef<[u8]> + ?Sized>(
        &'a self,
        name: &'a N,
    ) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        let name = name.as_ref();
        self.iter()
            .filter(move |(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Whether a field named `name` (any case) was sent.
    pub fn contains<N: AsRef<[u8]> + ?Sized>(&self, name: &N) -> bool {
        let name = name.as_ref();
        self.iter()
            .any(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
    }

    /// The head's bytes, which every name and value of [`iter`](Self::iter)
    /// is a slice of: `raw().slice_ref(value)` shares a value without
    /// copying it.
    pub fn raw(&self) -> &Bytes {
        &self.head
    }

    /// The fields as an `http::HeaderMap` (names lower-cased, repeated names
    /// grouped at their first position, values sharing the head's buffer).
    pub fn to_header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len());
        for (name, value) in self.iter() {
            // Both were checked when the head was parsed, and their number
            // is below the map's limit, so nothing is skipped here.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(self.head.slice_ref(value)),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

impl From<&HeaderFields> for HeaderMap {
    fn from(fields: &HeaderFields) -> HeaderMap {
        fields.to_header_map()
    }
}

impl PartialEq for HeaderFields {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for HeaderFields {}

impl fmt::Debug for HeaderFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, value)| {
                (
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(value),
                )
            }))
            .finish()
    }
}

impl<'a> IntoIterator for &'a HeaderFields {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The (name, value) pairs of [`HeaderFields`], in the order received.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    head: &'a [u8],
    fields: std::slice::Iter<'a, FieldRange>,
}

impl<'a> Iter<'a> {
    fn pair(&self, field: &FieldRange) -> (&'a [u8], &'a [u8]) {
        let head: &'a [u8] = self.head;
        // The ranges were taken from this head; `get` keeps a wrong one
        // from panicking all the same.
        let slice = |start: u32, len: u32| {
            let start = start as usize;
            head.get(start..start + len as usize).unwrap_or_default()
        };
        (
            slice(field.name, field.name_len),
            slice(field.value, field.value_len),
        )
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let field = self.fields.next()?;
        Some(self.pair(field))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.fields.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let field = self.fields.next_back()?;
        Some(self.pair(field))
    }
}

impl ExactSizeIterator for Iter<'_> {}
