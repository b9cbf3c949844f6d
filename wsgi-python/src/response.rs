//! The response side of one request: `start_response` (PEP 3333
//! §"The start_response() Callable"), the `write()` callable it returns, and
//! the state they share with the serving loop (pending head, committed head,
//! the [`ResponseSink`]).
//!
//! PEP 3333 delays the head until the first non-empty body chunk, so
//! `start_response` only validates and stores it; [`ResponseState`] commits
//! it to the sink when the first bytes leave (or at the end for an empty
//! body). A head the sink refused is never the application's problem on the
//! wire: [`ResponseHead::new`] errors are raised in the application as
//! `ValueError`.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{
    PyAssertionError, PyConnectionAbortedError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use wsgi_core::{AppError, FileRegion, ResponseHead, ResponseSink, SinkError};

use crate::hooks::SeenResponse;
use crate::pyutil::{chunk_bytes, latin1_view, type_name};

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
    /// Whether any body byte was queued.
    body_sent: bool,
    /// The sink said the client went away.
    disconnected: bool,
    /// What `post_request` will be told; only kept when that hook exists.
    seen: Option<Box<SeenResponse>>,
}

/// The response state of one request, shared by `start_response`, `write`
/// and the serving loop.
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
        head.headers.push((
            Bytes::from_static(b"Content-Length"),
            Bytes::from(length.to_string()),
        ));
        head.content_length = Some(length);
    }
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
        if self.sink()?.is_started() {
            return Ok(());
        }
        let mut head = self.pending.take().ok_or(SendError::NotStarted)?;
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
    pub(crate) fn new(sink: Box<dyn ResponseSink>) -> Self {
        ResponseState {
            inner: Mutex::new(Inner {
                sink: Some(sink),
                pending: None,
                start_called: false,
                body_sent: false,
                disconnected: false,
                seen: None,
            }),
        }
    }

    /// A response whose head and size are recorded for `post_request`.
    pub(crate) fn recording(sink: Box<dyn ResponseSink>) -> Self {
        let state = ResponseState::new(sink);
        if let Ok(mut inner) = state.inner.lock() {
            inner.seen = Some(Box::default());
        }
        state
    }

    /// What was recorded (see [`ResponseState::recording`]).
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
    pub(crate) fn send_whole(
        &self,
        py: Python<'_>,
        body: &Bound<'_, PyBytes>,
    ) -> Result<(), SendError> {
        let mut inner = self.lock(py);
        inner.commit(Some(body.as_bytes().len() as u64))?;
        if body.as_bytes().is_empty() {
            return Ok(());
        }
        inner.send(py, chunk_bytes(body))
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

    /// `start_response` proper, after the arguments were converted.
    fn start_response(
        &self,
        py: Python<'_>,
        head: ResponseHead,
        with_exc_info: bool,
    ) -> PyResult<()> {
        let mut inner = self.lock(py);
        let Some(sink) = inner.sink.as_ref() else {
            return Err(PyRuntimeError::new_err(
                "start_response() called after the response finished",
            ));
        };
        if sink.is_started() {
            // Only reachable with exc_info when another thread committed the
            // head meanwhile; the caller re-raises in that case.
            return Err(PyAssertionError::new_err(
                "start_response() called after the response head was sent",
            ));
        }
        if inner.start_called && !with_exc_info {
            return Err(PyAssertionError::new_err(
                "start_response called twice without exc_info",
            ));
        }
        inner.start_called = true;
        inner.pending = Some(head);
        Ok(())
    }

    fn head_sent(&self, py: Python<'_>) -> bool {
        self.lock(py)
            .sink
            .as_ref()
            .is_some_and(|sink| sink.is_started())
    }

    fn start_called(&self, py: Python<'_>) -> bool {
        self.lock(py).start_called
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
/// status, a `list` of `(str, str)` tuples, latin-1 encodable.
fn convert_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<ResponseHead> {
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
    // Every name and value is copied into one buffer and handed out as
    // slices of it: one allocation per head rather than two per header.
    let mut block = BytesMut::with_capacity(HEAD_BLOCK_CAPACITY);
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
            let part = pair.get_item(index)?;
            let part = part.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "response header names and values must be str, got {} in {}",
                    type_name(&part),
                    pair.repr().map(|repr| repr.to_string()).unwrap_or_default()
                ))
            })?;
            block.extend_from_slice(&latin1_view(part)?);
            Ok(block.split().freeze())
        };
        let name = text(0)?;
        converted.push((name, text(1)?));
    }
    ResponseHead::new(&status, converted).map_err(|error| PyValueError::new_err(error.to_string()))
}

/// Bytes reserved for a head's names and values (a typical head fits; a
/// larger one grows the buffer).
const HEAD_BLOCK_CAPACITY: usize = 256;

/// The `start_response` callable of one request.
#[pyclass(frozen, module = "wsgi_python", name = "StartResponse")]
#[derive(Debug)]
pub struct PyStartResponse {
    response: Arc<ResponseState>,
}

impl PyStartResponse {
    pub(crate) fn new(response: Arc<ResponseState>) -> Self {
        PyStartResponse { response }
    }
}

#[pymethods]
impl PyStartResponse {
    /// `start_response(status, response_headers, exc_info=None)`; returns
    /// the `write(data)` callable.
    #[pyo3(signature = (status, response_headers, exc_info = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        response_headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyWrite> {
        let exc_info = exc_info.filter(|info| !info.is_none());
        if let Some(exc_info) = exc_info {
            // PEP 3333: "if exc_info is provided, and the HTTP headers have
            // already been sent, start_response must raise an error, and
            // should re-raise using the exc_info tuple".
            if self.response.head_sent(py) {
                return Err(reraise(exc_info));
            }
        } else if self.response.start_called(py) {
            return Err(PyAssertionError::new_err(
                "start_response called twice without exc_info",
            ));
        }
        let head = convert_head(status, response_headers)?;
        match self.response.start_response(py, head, exc_info.is_some()) {
            Err(_) if exc_info.is_some() && self.response.head_sent(py) => {
                Err(reraise(exc_info.expect("checked")))
            }
            Err(error) => Err(error),
            Ok(()) => Ok(PyWrite {
                response: Arc::clone(&self.response),
            }),
        }
    }
}

/// The `write(data)` callable `start_response` returns (PEP 3333
/// §"The write() Callable"): sends the bytes before returning, waiting while
/// the server's queue for this response is full.
#[pyclass(frozen, module = "wsgi_python", name = "Write")]
#[derive(Debug)]
pub struct PyWrite {
    response: Arc<ResponseState>,
}

#[pymethods]
impl PyWrite {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be bytes, not {}",
                type_name(data)
            ))
        })?;
        if data.as_bytes().is_empty() {
            return Ok(());
        }
        self.response
            .send(py, chunk_bytes(data))
            .map_err(SendError::into_pyerr)
    }
}
