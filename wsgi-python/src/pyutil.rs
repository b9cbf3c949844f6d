//! Small bridges between Rust bytes and Python objects: latin-1 strings
//! (PEP 3333 "bytes-as-unicode") and traceback formatting.

use std::borrow::Cow;
use std::os::raw::c_char;

use bytes::Bytes;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// Decodes raw bytes as latin-1 into a Python `str`: every byte maps to the
/// code point of the same value, so nothing is lost or replaced
/// (PEP 3333 §"Unicode Issues").
pub(crate) fn latin1_str<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too long"))?;
    // SAFETY: the pointer and length describe `bytes`, which outlives the
    // call; `errors` may be NULL (strict). The GIL is held (`py`).
    // PyUnicode_DecodeLatin1 returns a new reference or NULL with an
    // exception set, which `from_owned_ptr_or_err` turns into a `PyErr`.
    unsafe {
        let object =
            ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast::<c_char>(), len, std::ptr::null());
        Ok(Bound::from_owned_ptr_or_err(py, object)?.cast_into_unchecked())
    }
}

/// Decodes as [`latin1_str`] and interns the result (for dict keys).
pub(crate) fn latin1_interned<'py>(
    py: Python<'py>,
    bytes: &[u8],
) -> PyResult<Bound<'py, PyString>> {
    let string = latin1_str(py, bytes)?;
    let mut pointer = string.into_ptr();
    // SAFETY: `pointer` is an owned reference to an exact `str` (we just
    // created it); PyUnicode_InternInPlace replaces it with the interned
    // string, consuming our reference and giving us one to the result.
    unsafe {
        ffi::PyUnicode_InternInPlace(&mut pointer);
        Ok(Bound::from_owned_ptr(py, pointer).cast_into_unchecked())
    }
}

/// The latin-1 encoding of a `str`, borrowed from the string itself when
/// CPython stores it one byte per code point (every `str` whose code points
/// are all below U+0100, i.e. every latin-1-encodable one), so headers and
/// statuses are read without a copy.
///
/// # Errors
/// `UnicodeEncodeError` (a `ValueError`) for code points above U+00FF.
#[inline]
pub(crate) fn latin1_view<'a>(string: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, [u8]>> {
    #[cfg(not(any(Py_LIMITED_API, PyPy, GraalPy, Py_3_14)))]
    // SAFETY: `string` is a live exact-or-subclass `str` and the GIL is held.
    // A compact string is always ready and keeps its characters inline, one
    // byte each for kind 1; they live (unchanged: `str` is immutable) as
    // long as the borrowed object, which `'a` ties the slice to.
    unsafe {
        let object = string.as_ptr();
        if ffi::PyUnicode_IS_COMPACT(object) != 0
            && ffi::PyUnicode_KIND(object) == ffi::PyUnicode_1BYTE_KIND
        {
            let data = ffi::PyUnicode_DATA(object).cast::<u8>();
            let len = usize::try_from(ffi::PyUnicode_GET_LENGTH(object)).unwrap_or(0);
            return Ok(Cow::Borrowed(std::slice::from_raw_parts(data, len)));
        }
    }
    latin1_encoded(string).map(Cow::Owned)
}

/// The general path: CPython's own codec (also raises the right error).
fn latin1_encoded(string: &Bound<'_, PyString>) -> PyResult<Vec<u8>> {
    let py = string.py();
    // SAFETY: `string` is a live `str` and the GIL is held; the function
    // returns a new reference to a `bytes` object, or NULL with an exception.
    let encoded = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyUnicode_AsLatin1String(string.as_ptr()))?
            .cast_into_unchecked::<PyBytes>()
    };
    Ok(encoded.as_bytes().to_vec())
}

/// The full traceback of `error`, as Python prints it.
pub(crate) fn format_traceback(py: Python<'_>, error: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|traceback| {
        // The three-argument form: on 3.11 the value's `__traceback__` may not
        // be set yet, the error carries the traceback separately.
        let lines = traceback.call_method1(
            "format_exception",
            (error.get_type(py), error.value(py), error.traceback(py)),
        )?;
        PyString::new(py, "")
            .call_method1("join", (lines,))?
            .extract::<String>()
    });
    match formatted {
        Ok(text) => text,
        Err(_) => format!("{error}\n"),
    }
}

/// How many references `object` has (ours included): an object the
/// serving loop reuses must have none but its own when a request ends.
pub(crate) fn refcount(object: &Bound<'_, PyAny>) -> isize {
    // SAFETY: `object` is a live object and the GIL is held.
    unsafe { ffi::Py_REFCNT(object.as_ptr()) }
}

/// The type name of an object, for error messages.
pub(crate) fn type_name(object: &Bound<'_, PyAny>) -> String {
    object
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Chunks at least this large are lent to the server without a copy; smaller
/// ones are copied (cheaper than the deferred reference drop a loan costs).
const LEND_THRESHOLD: usize = 16 * 1024;

/// A Python `bytes` object lent to the server: its buffer is immutable and
/// does not move while the object lives, and the owner keeps it alive.
struct LentBytes {
    _object: Py<PyBytes>,
    data: *const u8,
    len: usize,
}

// SAFETY: the pointed-to buffer belongs to an immutable `bytes` object kept
// alive by `_object` (`Py<T>` is Send + Sync; dropping it without the GIL
// defers the decref to pyo3's pool), so reading it from any thread is sound.
unsafe impl Send for LentBytes {}
// SAFETY: as above: shared reads of an immutable buffer.
unsafe impl Sync for LentBytes {}

impl AsRef<[u8]> for LentBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `data`/`len` describe the buffer of the `bytes` object
        // held by `_object`, valid and unchanged for its whole life.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

/// The contents of a `bytes` chunk as `Bytes`: large ones without a copy.
pub(crate) fn chunk_bytes(chunk: &Bound<'_, PyBytes>) -> Bytes {
    let data = chunk.as_bytes();
    if data.len() < LEND_THRESHOLD {
        return Bytes::copy_from_slice(data);
    }
    Bytes::from_owner(LentBytes {
        data: data.as_ptr(),
        len: data.len(),
        _object: chunk.clone().unbind(),
    })
}

/// Whether two byte strings are equal, without a call to `memcmp` for the
/// short values a request's fixed keys and repeated headers mostly have.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    let word = |bytes: &[u8], at: usize| {
        let mut buffer = [0u8; 8];
        buffer.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(buffer)
    };
    let half = |bytes: &[u8], at: usize| {
        let mut buffer = [0u8; 4];
        buffer.copy_from_slice(&bytes[at..at + 4]);
        u32::from_ne_bytes(buffer)
    };
    match len {
        0 => true,
        // Bytes 0, len/2 and len-1 cover every byte of 1 to 3.
        1..=3 => a[0] == b[0] && a[len / 2] == b[len / 2] && a[len - 1] == b[len - 1],
        // Two overlapping loads cover the whole string.
        4..=7 => half(a, 0) == half(b, 0) && half(a, len - 4) == half(b, len - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, len - 8) == word(b, len - 8),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    /// Every length up to 20, equal or differing in any one byte.
    #[test]
    fn same_compares_every_byte() {
        for len in 0..=20usize {
            let a: Vec<u8> = (0..len as u8).map(|byte| byte.wrapping_mul(37)).collect();
            assert!(same(&a, &a.clone()));
            for position in 0..len {
                let mut b = a.clone();
                b[position] ^= 0x40;
                assert!(!same(&a, &b), "{len} {position}");
            }
            let longer = [a.as_slice(), b"x"].concat();
            assert!(!same(&a, &longer));
        }
    }
}
