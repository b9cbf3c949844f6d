//! The response side of a request: `start_response` (PEP 3333
//! §"The start_response() Callable"), the `write()` callable it returns, and
//! the state they share with the serving loop (pending head, committed head,
//! the [`ResponseSink`]). Both callables are bound methods of one
//! [`PyResponse`] per thread, reused from request to request while nothing
//! else holds it.
//!
//! PEP 3333 delays the head until the first non-empty body chunk, so
//! `start_response` only validates and stores it; [`ResponseState`] commits
//! it to the sink when the first bytes leave (or at the end for an empty
//! body). A head the sink refused is never the application's problem on the
//! wire: [`ResponseHead::from_shared`] errors are raised in the application
//! as `ValueError`.

use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{
    PyAssertionError, PyConnectionAbortedError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use wsgi_core::{AppError, FileRegion, ResponseHead, ResponseSink, SinkError};

use crate::hooks::SeenResponse;
use crate::pyutil::{chunk_bytes, latin1_view, same, type_name};

/// Why a response could not go on.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Body data, or the end, before `start_response` was called.
    NotStarted,
    /// The request is over (the sink was handed back).
    Over,
    /// The sink refused: usually the client went away.
    Sink(SinkError),
}

impl SendError {
    fn into_pyerr(self) -> PyErr {
        match self {
            SendError::NotStarted => {
                PyAssertionError::new_err("write() called before start_response()")
            }
            SendError::Over => PyRuntimeError::new_err("the response is already finished"),
            SendError::Sink(SinkError::Disconnected) => {
                PyConnectionAbortedError::new_err("client disconnected")
            }
            SendError::Sink(error) => PyRuntimeError::new_err(error.to_string()),
        }
    }
}

impl From<SinkError> for SendError {
    fn from(error: SinkError) -> Self {
        SendError::Sink(error)
    }
}

#[derive(Debug)]
struct Inner {
    /// `None` once the response ended.
    sink: Option<Box<dyn ResponseSink>>,
    /// The head `start_response` stored and that is not committed yet.
    pending: Option<ResponseHead>,
    /// `start_response` was called at least once.
    start_called: bool,
    /// The head was handed to the sink (whatever the sink answered): kept
    /// here rather than asked of the sink, a virtual call through the
    /// server's timeout guard each time.
    committed: bool,
    /// Whether any body byte was queued.
    body_sent: bool,
    /// The sink said the client went away.
    disconnected: bool,
    /// The body went to the sink whole, with the end (`send_last`):
    /// `finish` has nothing left to do.
    ended: bool,
    /// What `post_request` will be told; only kept when that hook exists.
    seen: Option<Box<SeenResponse>>,
    /// The `write` callable `start_response` returns (a bound method of the
    /// [`PyResponse`] holding this state); taken out when the object is not
    /// reused, which breaks the reference cycle.
    write: Option<Py<PyAny>>,
}

/// The response state of a request, shared by `start_response`, `write`
/// and the serving loop; reset for the next request when its
/// [`PyResponse`] is reused.
#[derive(Debug)]
pub(crate) struct ResponseState {
    inner: Mutex<Inner>,
}

/// Statuses whose responses carry no body, so no `Content-Length` is added.
fn status_allows_body(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

fn add_content_length(head: &mut ResponseHead, length: u64) {
    if head.content_length.is_none() && status_allows_body(head.status) {
        head.headers
            .push((Bytes::from_static(b"Content-Length"), decimal(length)));
        head.content_length = Some(length);
    }
}

/// `n` in decimal digits, in one allocation.
fn decimal(mut n: u64) -> Bytes {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Bytes::copy_from_slice(&digits[start..])
}

impl Inner {
    fn sink(&mut self) -> Result<&mut Box<dyn ResponseSink>, SendError> {
        self.sink.as_mut().ok_or(SendError::Over)
    }

    fn note(&mut self, result: Result<(), SinkError>) -> Result<(), SendError> {
        if let Err(SinkError::Disconnected) = result {
            self.disconnected = true;
        }
        Ok(result?)
    }

    /// Commits the pending head, if not yet; `content_length` is added to it
    /// when the application gave none (a body whose size is known).
    fn commit(&mut self, content_length: Option<u64>) -> Result<(), SendError> {
        self.sink()?;
        if self.committed {
            return Ok(());
        }
        let mut head = self.pending.take().ok_or(SendError::NotStarted)?;
        self.committed = true;
        if let Some(length) = content_length {
            add_content_length(&mut head, length);
        }
        if let Some(seen) = &mut self.seen {
            seen.status = Some((head.status, head.reason.clone()));
            seen.headers.clone_from(&head.headers);
        }
        let result = self.sink()?.start(head);
        self.note(result)
    }

    /// Whether the head went to the sink, for `start_response`.
    fn head_sent(&self) -> bool {
        self.sink.is_some() && self.committed
    }

    /// Waits (GIL released) while the sink asks for it.
    fn wait_if_needed(&mut self, py: Python<'_>) -> Result<(), SendError> {
        let sink = self.sink()?;
        if sink.must_wait() {
            let result = py.detach(|| sink.wait());
            self.note(result)?;
        }
        Ok(())
    }

    fn send(&mut self, py: Python<'_>, chunk: Bytes) -> Result<(), SendError> {
        self.commit(None)?;
        self.body_sent = true;
        if let Some(seen) = &mut self.seen {
            seen.sent += chunk.len() as u64;
        }
        let result = self.sink()?.send(chunk);
        self.note(result)?;
        self.wait_if_needed(py)
    }
}

impl ResponseState {
    /// A state with no request (its `PyResponse` is created between two).
    fn idle() -> Self {
        ResponseState {
            inner: Mutex::new(Inner {
                sink: None,
                pending: None,
                start_called: false,
                committed: false,
                body_sent: false,
                disconnected: false,
                ended: false,
                seen: None,
                write: None,
            }),
        }
    }

    /// Starts a request on `sink`; `recording` keeps its head and size for
    /// `post_request`.
    fn begin(&self, py: Python<'_>, sink: Box<dyn ResponseSink>, recording: bool) {
        let mut inner = self.lock(py);
        inner.sink = Some(sink);
        inner.pending = None;
        inner.start_called = false;
        inner.committed = false;
        inner.body_sent = false;
        inner.disconnected = false;
        inner.ended = false;
        inner.seen = recording.then(Box::default);
    }

    /// What was recorded (see [`ResponseState::begin`]).
    pub(crate) fn take_seen(&self, py: Python<'_>) -> Option<Box<SeenResponse>> {
        self.lock(py).seen.take()
    }

    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, Inner> {
        // The holder may be waiting on the sink with the GIL released.
        self.inner
            .lock_py_attached(py)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the sink reported that the client went away.
    pub(crate) fn disconnected(&self, py: Python<'_>) -> bool {
        self.lock(py).disconnected
    }

    /// Queues a body chunk (committing the head first), then waits while the
    /// sink is full.
    pub(crate) fn send(&self, py: Python<'_>, chunk: Bytes) -> Result<(), SendError> {
        self.lock(py).send(py, chunk)
    }

    /// The whole body in one piece (`[b"..."]`): the head gets a
    /// `Content-Length` if it has none, so the server needs no chunking.
    /// `returning`: nothing of the request's runs after it (see
    /// `ResponseSink::send_last_and_return`).
    pub(crate) fn send_whole(
        &self,
        py: Python<'_>,
        body: &Bound<'_, PyBytes>,
        returning: bool,
    ) -> Result<(), SendError> {
        let mut inner = self.lock(py);
        inner.commit(Some(body.as_bytes().len() as u64))?;
        if body.as_bytes().is_empty() {
            return Ok(());
        }
        inner.body_sent = true;
        if let Some(seen) = &mut inner.seen {
            seen.sent += body.as_bytes().len() as u64;
        }
        // The body and the end in one call: one lock of the exchange and
        // one wake-up of the I/O thread instead of two of each.
        let sink = inner.sink()?;
        let result = if returning {
            sink.send_last_and_return(chunk_bytes(body))
        } else {
            sink.send_last(chunk_bytes(body))
        };
        inner.note(result)?;
        inner.ended = true;
        inner.wait_if_needed(py)
    }

    /// Queues a file region of `remaining` bytes (to the end of the file).
    pub(crate) fn send_file(
        &self,
        py: Python<'_>,
        region: FileRegion,
        remaining: u64,
    ) -> Result<(), SendError> {
        let mut inner = self.lock(py);
        let first = !inner.body_sent;
        inner.commit(first.then_some(remaining))?;
        inner.body_sent = true;
        if let Some(seen) = &mut inner.seen {
            seen.sent += remaining;
        }
        let result = inner.sink()?.send_file(region);
        inner.note(result)?;
        inner.wait_if_needed(py)
    }

    /// Ends the response successfully: commits the head of an empty body
    /// (with `Content-Length: 0`) and finishes the sink.
    pub(crate) fn finish(&self, py: Python<'_>) -> Result<(), SendError> {
        let mut inner = self.lock(py);
        if inner.ended {
            inner.sink = None;
            return Ok(());
        }
        let length = (!inner.body_sent).then_some(0);
        inner.commit(length)?;
        let result = inner.sink()?.finish();
        inner.sink = None;
        inner.note(result)
    }

    /// Ends the response after an error (a 500, or a cut connection).
    pub(crate) fn abort(&self, py: Python<'_>, error: &AppError) {
        let mut inner = self.lock(py);
        if let Some(mut sink) = inner.sink.take() {
            sink.abort(error);
        }
    }

    /// Takes the sink back if the response did not end (after a panic).
    pub(crate) fn take_sink(&self) -> Option<Box<dyn ResponseSink>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .sink
            .take()
    }
}

/// Re-raises the exception of an `exc_info` tuple, with its traceback
/// (`raise exc_info[1].with_traceback(exc_info[2])`).
fn reraise(exc_info: &Bound<'_, PyAny>) -> PyErr {
    let py = exc_info.py();
    let value = match exc_info.get_item(1) {
        Ok(value) => value,
        Err(error) => return error,
    };
    let value = match exc_info.get_item(2) {
        Ok(traceback) if !traceback.is_none() => value
            .call_method1(pyo3::intern!(py, "with_traceback"), (traceback,))
            .unwrap_or(value),
        _ => value,
    };
    PyErr::from_value(value)
}

/// Converts `start_response`'s arguments with PEP 3333's type rules: a `str`
/// status, a `list` of `(str, str)` tuples, latin-1 encodable. The bytes go
/// into `block`, which the heads of a thread's requests share (see
/// [`HEAD_BLOCK_CAPACITY`]).
/// Returns the status line (the cache's key) with the head.
fn convert_head(
    status: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
    block: &mut BytesMut,
) -> PyResult<(Bytes, ResponseHead)> {
    let status = status.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!("status must be a str, not {}", type_name(status)))
    })?;
    let status = latin1_view(status)?;
    let list = headers.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err(format!(
            "response_headers must be a list, not {}",
            type_name(headers)
        ))
    })?;
    // The status and every name and value are copied into one buffer and
    // handed out as slices of it. The buffer outlives the head: heads are
    // cut from it until it is full (then `reserve` starts over at its
    // beginning if no head cut from it is alive any more, or takes a new
    // one), so a head costs no allocation but its vector (each cost two
    // more before: the buffer and its shared count, freed on the I/O
    // thread).
    if block.capacity() < HEAD_BLOCK_CAPACITY / 8 || block.capacity() > HEAD_BLOCK_LIMIT {
        if block.capacity() > HEAD_BLOCK_LIMIT {
            *block = BytesMut::new();
        }
        block.reserve(HEAD_BLOCK_CAPACITY);
    }
    block.extend_from_slice(&status);
    let status = block.split().freeze();
    // Room for the Content-Length the server may add.
    let mut converted = Vec::with_capacity(list.len() + 1);
    for item in list.iter() {
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|pair| pair.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "each response header must be a (name, value) tuple, not {}",
                    item.repr().map(|repr| repr.to_string()).unwrap_or_default()
                ))
            })?;
        let mut text = |index: usize| -> PyResult<Bytes> {
            let part = pair.get_borrowed_item(index)?;
            let part = part.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "response header names and values must be str, got {} in {}",
                    type_name(&part),
                    pair.repr().map(|repr| repr.to_string()).unwrap_or_default()
                ))
            })?;
            block.extend_from_slice(&latin1_view(&part)?);
            Ok(block.split().freeze())
        };
        let name = text(0)?;
        converted.push((name, text(1)?));
    }
    let head = ResponseHead::from_shared(&status, converted)
        .map_err(|error| PyValueError::new_err(error.to_string()))?;
    Ok((status, head))
}

/// The head `start_response` last converted on a thread, for the next call
/// with the same bytes: an application answers most requests with a few
/// heads, and one rebuilt from the last skips the copies and the checks
/// (the conversion is a function of the bytes alone).
#[derive(Debug)]
struct LastHead {
    status_line: Bytes,
    head: ResponseHead,
}

impl LastHead {
    /// The last head again, if `status` and `headers` are of the types
    /// PEP 3333 asks for and have its very bytes; `None` sends the caller
    /// to the full conversion (which raises what is wrong).
    fn reuse(&self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> Option<ResponseHead> {
        let status = status.cast::<PyString>().ok()?;
        if !same(&latin1_view(status).ok()?, &self.status_line) {
            return None;
        }
        let list = headers.cast::<PyList>().ok()?;
        let cached = &self.head.headers;
        // A head whose duplicate Content-Length was dropped has fewer
        // headers than its list, and is never reused.
        if list.len() != cached.len() {
            return None;
        }
        for (item, (name, value)) in list.iter().zip(cached) {
            let pair = item.cast::<PyTuple>().ok().filter(|pair| pair.len() == 2)?;
            for (index, bytes) in [(0, name), (1, value)] {
                // SAFETY: `pair` is a tuple of two items (checked above).
                let part = unsafe { pair.get_borrowed_item_unchecked(index) };
                let part = part.cast::<PyString>().ok()?;
                if !same(&latin1_view(&part).ok()?, bytes) {
                    return None;
                }
            }
        }
        // Room for the Content-Length the server may add.
        let mut headers = Vec::with_capacity(cached.len() + 1);
        headers.extend(cached.iter().cloned());
        Some(ResponseHead {
            status: self.head.status,
            reason: self.head.reason.clone(),
            headers,
            content_length: self.head.content_length,
        })
    }

    /// Remembers `head`, in place of the last one (its vector reused).
    fn remember(last: &mut Option<LastHead>, status_line: Bytes, head: &ResponseHead) {
        match last {
            Some(last) => {
                last.status_line = status_line;
                last.head.status = head.status;
                last.head.reason = head.reason.clone();
                last.head.headers.clone_from(&head.headers);
                last.head.content_length = head.content_length;
            }
            None => {
                *last = Some(LastHead {
                    status_line,
                    head: head.clone(),
                })
            }
        }
    }
}

/// What a thread's `start_response` keeps between requests.
#[derive(Debug, Default)]
struct HeadCache {
    /// The buffer the heads' bytes are copied into (see [`convert_head`]).
    block: BytesMut,
    last: Option<LastHead>,
}

impl HeadCache {
    /// The head of `start_response`'s arguments.
    fn head(
        &mut self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
    ) -> PyResult<ResponseHead> {
        if let Some(head) = self
            .last
            .as_ref()
            .and_then(|last| last.reuse(status, headers))
        {
            return Ok(head);
        }
        let (status_line, head) = convert_head(status, headers, &mut self.block)?;
        LastHead::remember(&mut self.last, status_line, &head);
        Ok(head)
    }
}

/// Bytes of the buffer a thread's response heads are cut from (about 60
/// typical heads; a larger head grows it).
const HEAD_BLOCK_CAPACITY: usize = 4096;

/// A buffer left with more room than this after a head (one that grew for
/// a very large head) is let go rather than kept for the thread's life.
const HEAD_BLOCK_LIMIT: usize = 16 * 1024;

/// The response side of a thread's requests, reused from one request to
/// the next while nothing else holds it (see `serve::Reused`). The
/// application gets two bound methods of it: `start_response` and the
/// `write` callable that returns; both are builtin methods, so CPython
/// calls them without packing the arguments into a tuple.
#[pyclass(frozen, module = "wsgi_python", name = "Response")]
#[derive(Debug)]
pub struct PyResponse {
    state: ResponseState,
    /// Apart from the state, so the conversion runs outside its lock.
    heads: Mutex<HeadCache>,
}

impl PyResponse {
    /// A response object with its `start_response` method, between
    /// requests.
    pub(crate) fn create(py: Python<'_>) -> PyResult<(Bound<'_, PyResponse>, Bound<'_, PyAny>)> {
        let response = Bound::new(
            py,
            PyResponse {
                state: ResponseState::idle(),
                heads: Mutex::new(HeadCache::default()),
            },
        )?;
        let write = response.getattr(pyo3::intern!(py, "write"))?;
        response.get().state.lock(py).write = Some(write.unbind());
        let start = response.getattr(pyo3::intern!(py, "start_response"))?;
        Ok((response, start))
    }

    /// The state the serving loop drives.
    pub(crate) fn state(&self) -> &ResponseState {
        &self.state
    }

    /// Starts a request (see [`ResponseState::begin`]).
    pub(crate) fn begin(&self, py: Python<'_>, sink: Box<dyn ResponseSink>, recording: bool) {
        self.state.begin(py, sink, recording);
    }

    /// Whether the `write` method is held by nobody but this object.
    pub(crate) fn write_unshared(&self, py: Python<'_>) -> bool {
        self.state
            .lock(py)
            .write
            .as_ref()
            .is_some_and(|write| crate::pyutil::refcount(write.bind(py)) == 1)
    }

    /// Lets go of the `write` method: the object is not reused, and the
    /// cycle through its `write` must not keep it alive.
    pub(crate) fn retire(&self, py: Python<'_>) {
        let write = self.state.lock(py).write.take();
        drop(write);
    }
}

#[pymethods]
impl PyResponse {
    /// `start_response(status, response_headers, exc_info=None)`; returns
    /// the `write(data)` callable.
    #[pyo3(signature = (status, response_headers, exc_info = None))]
    fn start_response(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        response_headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let exc_info = exc_info.filter(|info| !info.is_none());
        // Converted outside the lock (an error message may run Python
        // code); the state's errors below still come first, as PEP 3333
        // orders them, then the conversion's.
        let head = match self.heads.try_lock() {
            Ok(mut heads) => heads.head(status, response_headers),
            // Held: this call comes from Python code that an error message
            // of an outer conversion ran (a header's `repr`).
            Err(_) => {
                convert_head(status, response_headers, &mut BytesMut::new()).map(|(_, head)| head)
            }
        };
        let mut inner = self.state.lock(py);
        if let Some(exc_info) = exc_info {
            // PEP 3333: "if exc_info is provided, and the HTTP headers have
            // already been sent, start_response must raise an error, and
            // should re-raise using the exc_info tuple".
            if inner.head_sent() {
                drop(inner);
                return Err(reraise(exc_info));
            }
        } else if inner.start_called {
            return Err(PyAssertionError::new_err(
                "start_response called twice without exc_info",
            ));
        }
        let head = head?;
        if inner.sink.is_none() {
            return Err(PyRuntimeError::new_err(
                "start_response() called after the response finished",
            ));
        }
        inner.start_called = true;
        inner.pending = Some(head);
        inner
            .write
            .as_ref()
            .map(|write| write.clone_ref(py))
            .ok_or_else(|| PyRuntimeError::new_err("the response object was retired"))
    }

    /// The `write(data)` callable `start_response` returns (PEP 3333
    /// §"The write() Callable"): sends the bytes before returning, waiting
    /// while the server's queue for this response is full.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be bytes, not {}",
                type_name(data)
            ))
        })?;
        if data.as_bytes().is_empty() {
            return Ok(());
        }
        self.state
            .send(py, chunk_bytes(data))
            .map_err(SendError::into_pyerr)
    }
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_digits() {
        for n in [0, 7, 10, 13, 4096, 1_000_000, u64::MAX] {
            assert_eq!(decimal(n), n.to_string().as_bytes());
        }
    }
}
