//! The environ dict (PEP 3333 §"environ Variables") built from a
//! [`wsgi_core::Environ`].
//!
//! Each executor thread keeps a template dict holding every key a request
//! always has, and copies it per request (`PyDict_Copy`, the bjoern/pyruvate
//! approach): the copy clones the template's hash table in one `memcpy`. The
//! template's values for those keys are the ones of the thread's previous
//! request, so a request only sets what changed (`SERVER_NAME`,
//! `REMOTE_ADDR`, the method and the protocol rarely do), and then in place,
//! with a string remembered from a recent request when the value was seen
//! lately (`REMOTE_PORT` takes turns among the keep-alive connections).
//! The template has more than 21 keys, so its table (and every copy's) has
//! room for about 20 `HTTP_*` keys before CPython resizes it. The template
//! never leaves this module: applications get copies.
//!
//! `HTTP_*` keys are in the template too: it holds the previous request's
//! headers, so a client that sends the same headers again (they mostly do,
//! with the same values) costs no insert per header; a header the request
//! lacks is taken out of the template first. Their keys and extra keys
//! come from a bounded per-thread cache, which also remembers each key's
//! last value string for reuse when the bytes repeat (`Host`, `User-Agent`,
//! `Accept`); a header the cache does not take, and extra keys, are set in
//! the copy. Values are latin-1 strings decoded from the raw bytes, so no
//! byte is lost. `os.environ` is never merged in.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use wsgi_core::{BodyReader, Environ, SERVER_SOFTWARE};

use crate::errors::PyErrorStream;
use crate::file_wrapper::PyFileWrapper;
use crate::input::PyInput;
use crate::pyutil::{latin1_interned, latin1_str, refcount, same};
use crate::serve::AppOptions;

/// How many distinct `HTTP_*`/extra keys a thread remembers. Requests with
/// other keys still work; their keys are built each time.
const MAX_CACHED_KEYS: usize = 512;
/// Longer keys are not cached (a client inventing long header names must not
/// fill the cache with them).
const MAX_CACHED_KEY_LEN: usize = 64;
/// Longer values are not remembered for reuse (bounds the cache's memory:
/// at most [`MAX_CACHED_KEYS`] values of this size per thread).
const MAX_CACHED_VALUE_LEN: usize = 256;

/// FNV-1a over eight-byte words: the key cache hashes short header-derived
/// names on every request; SipHash's flood resistance buys nothing for a
/// map capped at [`MAX_CACHED_KEYS`] entries that stops growing when full.
/// `finish` folds the high half into the low one, where the table's bucket
/// index comes from (a multiplication carries only upwards).
#[derive(Default)]
struct Fnv(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 { FNV_OFFSET } else { self.0 };
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buffer = [0u8; 8];
            buffer.copy_from_slice(word);
            hash = (hash ^ u64::from_le_bytes(buffer)).wrapping_mul(FNV_PRIME);
        }
        for &byte in words.remainder() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
        self.0 = hash;
    }
}

/// How many strings of fixed keys' recent values a thread remembers besides
/// the template's: values that take turns among a few (the clients' ports
/// at 16 keep-alive connections, a handful of routes) are decoded once.
const RECENT_STRINGS: usize = 64;
/// Longer values are not remembered there.
const MAX_RECENT_LEN: usize = 32;

/// A fixed key's value string, remembered by [`recent_string`].
struct Recent {
    /// The key's index in [`FIXED_KEYS`].
    slot: usize,
    len: usize,
    bytes: [u8; MAX_RECENT_LEN],
    string: Py<PyString>,
}

/// The string of `value` for the fixed key `slot`: one remembered from a
/// recent request, or a new one (then remembered in place of the entry
/// whose place it takes).
fn recent_string<'py>(
    py: Python<'py>,
    recent: &mut [Option<Recent>],
    slot: usize,
    value: &[u8],
) -> PyResult<Bound<'py, PyString>> {
    if value.len() > MAX_RECENT_LEN {
        return latin1_str(py, value);
    }
    let mut hash = Fnv::default();
    hash.write(value);
    hash.write_usize(slot);
    let place = &mut recent[hash.finish() as usize % RECENT_STRINGS];
    if let Some(entry) = place {
        if entry.slot == slot && same(&entry.bytes[..entry.len], value) {
            return Ok(entry.string.bind(py).clone());
        }
    }
    let string = latin1_str(py, value)?;
    let mut bytes = [0u8; MAX_RECENT_LEN];
    bytes[..value.len()].copy_from_slice(value);
    *place = Some(Recent {
        slot,
        len: value.len(),
        bytes,
        string: string.clone().unbind(),
    });
    Ok(string)
}

/// The string a key had on the thread's previous request, reused while the
/// bytes repeat.
#[derive(Default)]
struct LastValue {
    bytes: Vec<u8>,
    string: Option<Py<PyString>>,
}

impl LastValue {
    /// Whether the remembered string is the one of `value`.
    fn holds(&self, value: &[u8]) -> bool {
        self.string.is_some() && same(&self.bytes, value)
    }

    fn get<'py>(&mut self, py: Python<'py>, value: &[u8]) -> PyResult<Bound<'py, PyString>> {
        if let Some(string) = &self.string {
            if same(&self.bytes, value) {
                return Ok(string.bind(py).clone());
            }
        }
        let string = latin1_str(py, value)?;
        if value.len() <= MAX_CACHED_VALUE_LEN {
            self.bytes.clear();
            self.bytes.extend_from_slice(value);
            self.string = Some(string.clone().unbind());
        } else {
            self.string = None;
        }
        Ok(string)
    }
}

/// A cached `HTTP_*`/extra key and its last value.
struct CachedKey {
    key: Py<PyString>,
    last: LastValue,
    /// The template holds this `HTTP_*` key, with `last`'s string.
    in_template: bool,
    /// The serial of the last request that had it.
    seen: u64,
}

/// A key every request sets, with the bytes of the value the template holds.
struct Slot {
    key: Py<PyString>,
    bytes: Vec<u8>,
}

/// The keys every request sets; [`EnvironBuilder`]'s slots and the values
/// `build` compares with them follow this order.
const FIXED_KEYS: [&str; 12] = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "wsgi.url_scheme",
];

/// Per-thread environ machinery. Holds Python objects: create and drop it
/// while attached.
pub(crate) struct EnvironBuilder {
    template: Py<PyDict>,
    slots: [Slot; FIXED_KEYS.len()],
    /// Strings of the fixed keys' recent values (see [`recent_string`]).
    recent: Box<[Option<Recent>]>,
    /// The cached `HTTP_*` keys the template holds: the previous request's
    /// headers (see [`EnvironBuilder::set_header`]).
    template_headers: Vec<Bytes>,
    /// Counts requests, for [`CachedKey::seen`].
    serial: u64,
    /// How many of `template_headers` the current request sent.
    headers_seen: usize,
    keys: HashMap<Bytes, CachedKey, BuildHasherDefault<Fnv>>,
    content_type: LastValue,
    content_length: LastValue,
    /// The `wsgi.input` object the template holds, reused from one request
    /// to the next while nobody else holds it (the environ copy of a
    /// request gone, nothing kept); a copy of the template carries it.
    input: Option<Py<PyInput>>,
}

impl EnvironBuilder {
    /// Builds the template dict for one executor thread.
    pub(crate) fn new(py: Python<'_>, options: &AppOptions) -> PyResult<Self> {
        let template = PyDict::new(py);
        template.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
        template.set_item(
            intern!(py, "wsgi.errors"),
            Bound::new(py, PyErrorStream::new(Arc::clone(&options.error_log)))?,
        )?;
        template.set_item(intern!(py, "wsgi.multithread"), options.multithread)?;
        template.set_item(intern!(py, "wsgi.multiprocess"), options.multiprocess)?;
        template.set_item(intern!(py, "wsgi.run_once"), false)?;
        template.set_item(
            intern!(py, "wsgi.file_wrapper"),
            py.get_type::<PyFileWrapper>(),
        )?;
        template.set_item(intern!(py, "wsgi.input_terminated"), true)?;
        template.set_item(intern!(py, "SERVER_SOFTWARE"), SERVER_SOFTWARE)?;
        // RFC 3875 §4.1.4 (CGI/1.1 requires it; mod_wsgi sets it too).
        template.set_item(intern!(py, "GATEWAY_INTERFACE"), "CGI/1.1")?;
        // Every request sets these: the template holds them with the
        // previous request's values, and `build` updates only what changed.
        let placeholder = PyString::new(py, "");
        let slots = FIXED_KEYS.map(|name| Slot {
            key: PyString::intern(py, name).unbind(),
            bytes: Vec::new(),
        });
        for slot in &slots {
            template.set_item(slot.key.bind(py), &placeholder)?;
        }
        template.set_item(intern!(py, "wsgi.input"), &placeholder)?;
        Ok(EnvironBuilder {
            template: template.unbind(),
            slots,
            recent: (0..RECENT_STRINGS).map(|_| None).collect(),
            template_headers: Vec::new(),
            serial: 0,
            headers_seen: 0,
            keys: HashMap::default(),
            content_type: LastValue::default(),
            content_length: LastValue::default(),
            input: None,
        })
    }

    /// The `wsgi.input` of the next request, reading `reader`: the
    /// template's, or a new one put in the template.
    pub(crate) fn input<'py>(
        &mut self,
        py: Python<'py>,
        reader: Box<dyn BodyReader>,
    ) -> PyResult<Bound<'py, PyInput>> {
        if let Some(input) = &self.input {
            let input = input.bind(py).clone();
            input.get().attach(py, reader);
            return Ok(input);
        }
        let input = Bound::new(py, PyInput::new(reader))?;
        self.template
            .bind(py)
            .set_item(intern!(py, "wsgi.input"), &input)?;
        self.input = Some(input.clone().unbind());
        Ok(input)
    }

    /// Detaches `input` from its request's body (which it returns), and
    /// keeps it for the next request only if nobody holds it but the
    /// template, this builder and the caller: one an application kept must
    /// not read the next request's body.
    pub(crate) fn give_back_input(
        &mut self,
        py: Python<'_>,
        input: Bound<'_, PyInput>,
    ) -> Option<Box<dyn BodyReader>> {
        let reader = input.get().detach(py);
        if refcount(input.as_any()) != 3 {
            self.input = None;
        }
        reader
    }

    /// Puts a header's `HTTP_*` variable in the template, where the
    /// previous request's headers are: a client sends the same headers
    /// request after request, mostly with the same values, and then the
    /// copy carries them at no cost (a dict insert each before). Returns
    /// `false` for a name the cache does not take (the caller sets it in
    /// the copy). Headers of the previous request that this one lacks are
    /// taken out by [`EnvironBuilder::drop_absent_headers`].
    fn set_header(
        &mut self,
        template: &Bound<'_, PyDict>,
        name: &Bytes,
        value: &[u8],
    ) -> PyResult<bool> {
        let py = template.py();
        let serial = self.serial;
        if let Some(cached) = self.keys.get_mut(name) {
            let repeated = cached.in_template && cached.last.holds(value);
            if !repeated {
                let string = cached.last.get(py, value)?;
                if let Err(error) = template.set_item(cached.key.bind(py), string) {
                    // The template may hold another value than `last` now.
                    cached.last = LastValue::default();
                    return Err(error);
                }
                if !cached.in_template {
                    cached.in_template = true;
                    self.template_headers.push(name.clone());
                }
            }
            if cached.seen != serial {
                cached.seen = serial;
                self.headers_seen += 1;
            }
            return Ok(true);
        }
        if self.keys.len() >= MAX_CACHED_KEYS || name.len() > MAX_CACHED_KEY_LEN {
            return Ok(false);
        }
        let key = latin1_interned(py, name)?;
        let mut last = LastValue::default();
        template.set_item(&key, last.get(py, value)?)?;
        self.keys.insert(
            name.clone(),
            CachedKey {
                key: key.unbind(),
                last,
                in_template: true,
                seen: serial,
            },
        );
        self.template_headers.push(name.clone());
        self.headers_seen += 1;
        Ok(true)
    }

    /// Takes out of the template the headers of earlier requests that the
    /// current one (`self.serial`) did not send.
    fn drop_absent_headers(&mut self, template: &Bound<'_, PyDict>) -> PyResult<()> {
        if self.headers_seen == self.template_headers.len() {
            // The same set of headers as before (the usual case).
            return Ok(());
        }
        let serial = self.serial;
        let keys = &mut self.keys;
        let mut result = Ok(());
        self.template_headers.retain(|name| {
            let Some(cached) = keys.get_mut(name) else {
                return false;
            };
            if cached.seen == serial {
                return true;
            }
            if let Err(error) = template.del_item(cached.key.bind(template.py())) {
                // Still there: taken out on a later request.
                result = Err(error);
                return true;
            }
            cached.in_template = false;
            false
        });
        result
    }

    /// Sets an extra variable (or a header the cache does not take) in the
    /// request's copy, with its key (and value, when it repeats) from the
    /// cache when possible.
    fn set_variable(
        &mut self,
        dict: &Bound<'_, PyDict>,
        name: &Bytes,
        value: &[u8],
    ) -> PyResult<()> {
        let py = dict.py();
        if let Some(cached) = self.keys.get_mut(name) {
            if cached.in_template {
                // A header's key: its value stays the template's.
                return dict.set_item(cached.key.bind(py), latin1_str(py, value)?);
            }
            return dict.set_item(cached.key.bind(py), cached.last.get(py, value)?);
        }
        let key = latin1_interned(py, name)?;
        if self.keys.len() < MAX_CACHED_KEYS && name.len() <= MAX_CACHED_KEY_LEN {
            let mut last = LastValue::default();
            let value = last.get(py, value)?;
            dict.set_item(&key, value)?;
            self.keys.insert(
                name.clone(),
                CachedKey {
                    key: key.unbind(),
                    last,
                    in_template: false,
                    seen: 0,
                },
            );
            return Ok(());
        }
        dict.set_item(key, latin1_str(py, value)?)
    }

    /// The environ dict of one request.
    pub(crate) fn build<'py>(
        &mut self,
        py: Python<'py>,
        environ: &Environ,
    ) -> PyResult<Bound<'py, PyDict>> {
        let template = &self.template.bind(py).clone();
        let scheme = environ.url_scheme.as_str().as_bytes();
        let values: [&[u8]; FIXED_KEYS.len()] = [
            &environ.request_method,
            &environ.script_name,
            &environ.path_info,
            &environ.query_string,
            &environ.request_uri,
            &environ.request_uri,
            &environ.server_protocol,
            &environ.server_name,
            &environ.server_port,
            &environ.remote_addr,
            &environ.remote_port,
            scheme,
        ];
        // Bring the template up to date first: the copy then carries every
        // fixed value, and a value that repeats costs one comparison.
        let mut previous: Option<(&[u8], Bound<'py, PyString>)> = None;
        for (index, (slot, value)) in self.slots.iter_mut().zip(values).enumerate() {
            if same(&slot.bytes, value) {
                continue;
            }
            // RAW_URI follows REQUEST_URI: one string for both.
            let string = match &previous {
                Some((bytes, string)) if same(bytes, value) => string.clone(),
                _ => recent_string(py, &mut self.recent, index, value)?,
            };
            template.set_item(slot.key.bind(py), &string)?;
            slot.bytes.clear();
            slot.bytes.extend_from_slice(value);
            previous = Some((value, string));
        }
        // The headers go into the template too (see `set_header`); any
        // the cache does not take go into the copy below.
        self.serial += 1;
        self.headers_seen = 0;
        let mut uncached = Vec::new();
        for (name, value) in &environ.headers {
            if !name.starts_with(b"HTTP_") || !self.set_header(template, name, value)? {
                uncached.push((name, value));
            }
        }
        self.drop_absent_headers(template)?;
        let dict = template.copy()?;
        if let Some(content_type) = &environ.content_type {
            let value = self.content_type.get(py, content_type)?;
            dict.set_item(intern!(py, "CONTENT_TYPE"), value)?;
        }
        if let Some(content_length) = &environ.content_length {
            let value = self.content_length.get(py, content_length)?;
            dict.set_item(intern!(py, "CONTENT_LENGTH"), value)?;
        }
        for (name, value) in uncached
            .into_iter()
            .chain(environ.extra.iter().map(|(n, v)| (n, v)))
        {
            self.set_variable(&dict, name, value)?;
        }
        Ok(dict)
    }
}
