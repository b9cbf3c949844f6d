//! `wsgi.input`: the request body as a Python file-like object
//! (PEP 3333 §"Input and Error Streams": `read(size)`, `readline(size)`,
//! `readlines(hint)`, iteration).
//!
//! Reads look at what the server has buffered while the GIL is held, and
//! release the GIL only when nothing is buffered yet ([`BodyReader::wait`]).
//! When the request is over the object is detached from the body: it stays a
//! valid object (an application may keep the environ) and reads return `b""`.

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyBytes;
use wsgi_core::BodyReader;

/// The `wsgi.input` stream over one request's [`BodyReader`].
#[pyclass(frozen, module = "wsgi_python", name = "Input")]
#[derive(Debug)]
pub struct PyInput {
    reader: Mutex<Option<Box<dyn BodyReader>>>,
    failed: AtomicBool,
}

impl PyInput {
    /// A stream over `reader`.
    pub fn new(reader: Box<dyn BodyReader>) -> Self {
        PyInput {
            reader: Mutex::new(Some(reader)),
            failed: AtomicBool::new(false),
        }
    }

    /// Attaches the stream to the next request's body (the object is
    /// reused when nobody kept it).
    pub(crate) fn attach(&self, py: Python<'_>, reader: Box<dyn BodyReader>) {
        *self.lock(py) = Some(reader);
        self.failed.store(false, Ordering::Relaxed);
    }

    /// Detaches the stream from the body (the request is over); later reads
    /// return `b""`. Returns the reader, if it was still attached.
    pub fn detach(&self, py: Python<'_>) -> Option<Box<dyn BodyReader>> {
        self.lock(py).take()
    }

    /// Whether a read failed with an I/O error (the client went away or sent
    /// a bad body): the application's exception is then not its own fault.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, Option<Box<dyn BodyReader>>> {
        // Another Python thread may hold the lock while it waits for body
        // bytes with the GIL released: wait for it with the GIL released too.
        self.reader
            .lock_py_attached(py)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn io_error(&self, error: io::Error) -> PyErr {
        self.failed.store(true, Ordering::Relaxed);
        PyErr::from(error)
    }

    /// Runs `body` with the reader and the mapping of its I/O errors, or
    /// returns `b""` once detached.
    fn with_reader<'py>(
        &self,
        py: Python<'py>,
        body: impl FnOnce(&mut dyn BodyReader, &IoError<'_>) -> PyResult<Bound<'py, PyBytes>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut guard = self.lock(py);
        match guard.as_deref_mut() {
            None => Ok(PyBytes::new(py, b"")),
            Some(reader) => body(reader, &|error| self.io_error(error)),
        }
    }
}

/// Turns a body read error into the exception the application sees (and
/// notes that the client, not the application, is at fault).
type IoError<'a> = dyn Fn(io::Error) -> PyErr + 'a;

/// Makes `fill_buf` say something (data or the end), waiting with the GIL
/// released only if nothing is buffered; returns the buffered bytes, empty at
/// the end of the body.
fn fill<'r>(py: Python<'_>, reader: &'r mut dyn BodyReader) -> io::Result<&'r [u8]> {
    while reader.fill_buf()?.is_none() {
        py.detach(|| reader.wait())?;
    }
    Ok(reader.fill_buf()?.unwrap_or_default())
}

/// Reads up to `limit` bytes (`None`: to the end).
fn read<'py>(
    py: Python<'py>,
    reader: &mut dyn BodyReader,
    io_error: &IoError<'_>,
    limit: Option<usize>,
) -> PyResult<Bound<'py, PyBytes>> {
    let limit = limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(PyBytes::new(py, b""));
    }
    if let Some(remaining) = reader.remaining_hint().filter(|&remaining| remaining > 0) {
        // The length is known: the body goes straight into one `bytes`
        // object of the right size, copied once from the server's buffer,
        // or received into it from the socket (no copy at all).
        let capacity = limit.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let known = read_known(py, reader, io_error, capacity)?;
        if capacity == limit || known.as_bytes().len() < capacity {
            return Ok(known);
        }
        // Asked for more than the length said: only a reader whose hint was
        // short has more (not the server's), collected behind.
        if fill(py, reader).map_err(io_error)?.is_empty() {
            return Ok(known);
        }
        let more = read_collected(py, reader, io_error, limit - capacity)?;
        return Ok(PyBytes::new(
            py,
            &[known.as_bytes(), more.as_bytes()].concat(),
        ));
    }
    // One copy when the buffer already holds what was asked for.
    let buffer = fill(py, reader).map_err(io_error)?;
    if buffer.len() >= limit || buffer.is_empty() {
        let taken = buffer.len().min(limit);
        let bytes = PyBytes::new(py, &buffer[..taken]);
        reader.consume(taken);
        return Ok(bytes);
    }
    // Length unknown (chunked): collect, then one `bytes`. A `bytes`
    // object grows by a quarter at a time; a `Vec` doubles.
    read_collected(py, reader, io_error, limit)
}

/// Reads up to `capacity` bytes (no more than the body holds) into a new
/// `bytes` object with [`BodyReader::read_into`]: one copy from the
/// server's buffer, none for bytes still in the socket (measured in
/// docs/performance.md).
fn read_known<'py>(
    py: Python<'py>,
    reader: &mut dyn BodyReader,
    io_error: &IoError<'_>,
    capacity: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = ffi::Py_ssize_t::try_from(capacity)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("read size too large"))?;
    // SAFETY: a new `bytes` object whose contents are left uninitialized;
    // it is filled below before anything else can see it (CPython allows
    // writing a `bytes` object until it is shared).
    let object = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromStringAndSize(std::ptr::null(), size))?
            .cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: the object holds `capacity` bytes at this address, and this
    // is the only reference to it; `MaybeUninit` makes no claim on them.
    let data = unsafe {
        std::slice::from_raw_parts_mut(
            ffi::PyBytes_AsString(object.as_ptr()).cast::<MaybeUninit<u8>>(),
            capacity,
        )
    };
    let mut filled = 0;
    while filled < capacity {
        match reader.read_into(&mut data[filled..]).map_err(io_error)? {
            Some(0) => break,
            Some(read) => filled += read,
            None => py.detach(|| reader.wait()).map_err(io_error)?,
        }
    }
    if filled == capacity {
        return Ok(object);
    }
    // The body ended early (not expected with a `Content-Length`): a
    // `bytes` object of what was read.
    // SAFETY: `read_into` initialized the first `filled` bytes.
    let read = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), filled) };
    Ok(PyBytes::new(py, read))
}

/// Reads up to `limit` bytes into a growing buffer, then makes one `bytes`.
fn read_collected<'py>(
    py: Python<'py>,
    reader: &mut dyn BodyReader,
    io_error: &IoError<'_>,
    limit: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut collected = Vec::with_capacity(limit.min(64 * 1024));
    while collected.len() < limit {
        let buffer = fill(py, reader).map_err(io_error)?;
        if buffer.is_empty() {
            break;
        }
        let taken = buffer.len().min(limit - collected.len());
        collected.extend_from_slice(&buffer[..taken]);
        reader.consume(taken);
    }
    Ok(PyBytes::new(py, &collected))
}

/// Reads one line (up to and including `\n`), at most `limit` bytes.
fn readline<'py>(
    py: Python<'py>,
    reader: &mut dyn BodyReader,
    io_error: &IoError<'_>,
    limit: Option<usize>,
) -> PyResult<Bound<'py, PyBytes>> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut collected: Vec<u8> = Vec::new();
    while collected.len() < limit {
        let buffer = fill(py, reader).map_err(io_error)?;
        if buffer.is_empty() {
            break;
        }
        let window = &buffer[..buffer.len().min(limit - collected.len())];
        let (taken, done) = match window.iter().position(|&byte| byte == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (window.len(), false),
        };
        if done && collected.is_empty() {
            // The whole line is in the buffer: one copy.
            let line = PyBytes::new(py, &window[..taken]);
            reader.consume(taken);
            return Ok(line);
        }
        collected.extend_from_slice(&window[..taken]);
        reader.consume(taken);
        if done {
            break;
        }
    }
    Ok(PyBytes::new(py, &collected))
}

/// `None` and negative sizes mean "no limit", as in `io`.
fn size_limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|size| usize::try_from(size).ok())
}

#[pymethods]
impl PyInput {
    /// `read(size=-1)`: up to `size` bytes, or everything left when `size`
    /// is negative or `None`. Returns fewer bytes only at the end of the body.
    #[pyo3(signature = (size = -1))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_reader(py, |reader, io_error| {
            read(py, reader, io_error, size_limit(size))
        })
    }

    /// `readline(size=-1)`: one line including its `\n`, at most `size` bytes.
    #[pyo3(signature = (size = -1))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_reader(py, |reader, io_error| {
            readline(py, reader, io_error, size_limit(size))
        })
    }

    /// `readlines(hint=-1)`: the remaining lines; stops once `hint` bytes
    /// were read when `hint` is positive.
    #[pyo3(signature = (hint = -1))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = size_limit(hint).filter(|&hint| hint > 0);
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            let len = line.as_bytes().len();
            if len == 0 {
                break;
            }
            lines.push(line);
            total += len;
            if hint.is_some_and(|hint| total >= hint) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
