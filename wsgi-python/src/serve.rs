//! [`PyApplication`]: a loaded WSGI callable serving requests on the
//! server's executor threads (PEP 3333 §"The Server/Gateway Side").
//!
//! # Theory of operation
//! `serve_thread` attaches the thread to the interpreter once and keeps it
//! attached (so `threading.local` survives between requests), releasing the
//! GIL only to wait: for the next request (when none is queued already), for
//! body bytes, for a full response queue. Per request:
//!
//! 1. the environ dict is copied from the thread's template and filled in;
//! 2. `app(environ, start_response)` is called; `start_response` stores the
//!    head, which is committed at the first non-empty chunk;
//! 3. the result is sent: `[b"body"]` in one piece with a `Content-Length`,
//!    our `FileWrapper` over a regular file with `sendfile(2)`, anything else
//!    chunk by chunk;
//! 4. the response ends (`finish`, or `abort` after an application error);
//! 5. the result's `close()` is called whatever happened, and the request's
//!    body and sink are detached from the Python objects an application may
//!    have kept;
//! 6. the thread keeps its `start_response` (with `write`) and `wsgi.input`
//!    objects for the next request if the reference counts show that
//!    nothing else holds them; kept ones stay with their finished request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use wsgi_core::{AppError, Application, Environ, ErrorLog, Request, RequestSource, SinkError};

use crate::environ::EnvironBuilder;
use crate::file_wrapper::PyFileWrapper;
use crate::hooks::RequestHooks;
use crate::interrupt::Threads;
use crate::load::{self, LoadError};
use crate::pyutil::{chunk_bytes, format_traceback, refcount, type_name};
use crate::response::{PyResponse, ResponseState, SendError};

/// How the application is run: the constant environ keys, the error log,
/// and gunicorn's per-request hooks.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// `wsgi.multithread`: more than one executor thread per process.
    pub multithread: bool,
    /// `wsgi.multiprocess`: more than one worker process.
    pub multiprocess: bool,
    /// Where `wsgi.errors` and tracebacks go.
    pub error_log: Arc<dyn ErrorLog>,
    /// `pre_request` / `post_request` around each request; `None` (the
    /// default) costs a request nothing.
    pub request_hooks: Option<RequestHooks>,
}

impl AppOptions {
    /// Options without request hooks.
    pub fn new(multithread: bool, multiprocess: bool, error_log: Arc<dyn ErrorLog>) -> AppOptions {
        AppOptions {
            multithread,
            multiprocess,
            error_log,
            request_hooks: None,
        }
    }
}

/// A WSGI application loaded into the interpreter; implements
/// [`wsgi_core::Application`].
#[derive(Debug)]
pub struct PyApplication {
    app: Py<PyAny>,
    options: AppOptions,
    /// The application threads, for `interrupt_thread`.
    threads: Threads,
}

impl PyApplication {
    /// Loads an application from a gunicorn-style spec: `module:callable`
    /// (dotted attributes allowed, `pkg.mod:obj.app`), `module` alone
    /// (meaning `module:application`), `module:factory()` or
    /// `module:factory('literal', debug=True)` (literal arguments only), or a
    /// file path `app.py` / `dir/app.py:callable`.
    ///
    /// Call after the interpreter is initialized, from any thread.
    ///
    /// # Errors
    /// [`LoadError`] with a message meant for the user.
    pub fn load(spec: &str, options: AppOptions) -> Result<PyApplication, LoadError> {
        Python::attach(|py| PyApplication::load_with(py, spec, options))
    }

    /// [`PyApplication::load`] for a caller already attached to the interpreter.
    ///
    /// # Errors
    /// As [`PyApplication::load`].
    pub fn load_with(
        py: Python<'_>,
        spec: &str,
        options: AppOptions,
    ) -> Result<PyApplication, LoadError> {
        // Before the import: an application that does `from wsgi_server
        // import RequestTimeout` at import time gets the type we raise.
        register_timeout_module(py, &options);
        let app = load::load(py, spec)?;
        Ok(PyApplication::from_callable(app.unbind(), options))
    }

    /// Makes `wsgi_server.RequestTimeout` importable before an application
    /// is imported (see [`PyApplication::load_with`]).
    pub fn prepare_import(py: Python<'_>, options: &AppOptions) {
        register_timeout_module(py, options);
    }

    /// Wraps a WSGI callable the caller already has (an extension module's
    /// entry point).
    pub fn from_callable(app: Py<PyAny>, options: AppOptions) -> PyApplication {
        PyApplication {
            app,
            options,
            threads: Threads::default(),
        }
    }

    /// The WSGI callable.
    pub fn callable(&self) -> &Py<PyAny> {
        &self.app
    }

    fn log(&self, text: &str) {
        self.options.error_log.error(text);
    }
}

/// `wsgi_server.RequestTimeout` for the applications: our module unless the
/// Python package (which exports this very type) is imported already.
fn register_timeout_module(py: Python<'_>, options: &AppOptions) {
    if let Err(error) = crate::interrupt::register_module(py) {
        options.error_log.error(&format!(
            "Cannot register the wsgi_server module:\n{}",
            format_traceback(py, &error)
        ));
    }
}

impl Application for PyApplication {
    fn serve_thread(&self, requests: &mut dyn RequestSource) {
        Python::attach(|py| {
            if let Err(error) = crate::interrupt::register_module(py) {
                self.log(&format!(
                    "Cannot register the wsgi_server module:\n{}",
                    format_traceback(py, &error)
                ));
            }
            let thread = self.threads.register(py, requests.thread_index());
            let mut builder = match EnvironBuilder::new(py, &self.options) {
                Ok(builder) => Some(builder),
                Err(error) => {
                    self.log(&format!(
                        "Cannot prepare the environ template:\n{}",
                        format_traceback(py, &error)
                    ));
                    None
                }
            };
            let mut reused = Reused::default();
            // The GIL is released only to wait: a request already queued is
            // taken without the detach/re-attach pair.
            while let Some(request) = requests
                .try_next_request()
                .or_else(|| py.detach(|| requests.next_request()))
            {
                thread.request_started();
                match builder.as_mut() {
                    Some(builder) => self.serve_request(py, builder, &mut reused, request),
                    None => {
                        let mut output = request.output;
                        output.abort(&AppError::new("the Python runtime is not usable"));
                    }
                }
                thread.request_ended(py);
                requests.request_done();
            }
            // The template, the key cache and the reused objects are dropped
            // here, attached.
            reused.clear(py);
            drop(builder);
        });
    }

    fn interrupt_thread(
        &self,
        thread_index: usize,
        request: &str,
        still_stuck: &dyn Fn() -> bool,
    ) -> bool {
        self.threads
            .interrupt(thread_index, request, still_stuck, &|text| self.log(text))
    }
}

/// The response object (and its `start_response` method) a thread's
/// requests share while nothing else holds them: one the application kept
/// (a `start_response` or `write` it may call after its request ended)
/// stays with its own request, and the next request gets a new one. Saves
/// creating and freeing Python objects per request.
#[derive(Default)]
struct Reused {
    response: Option<(Py<PyResponse>, Py<PyAny>)>,
}

impl Reused {
    /// The response object and its `start_response`, reused or new.
    fn response<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyResponse>, Bound<'py, PyAny>)> {
        match self.response.take() {
            Some((response, start)) => Ok((response.into_bound(py), start.into_bound(py))),
            None => PyResponse::create(py),
        }
    }

    /// Keeps a request's response object for the next one if nobody but
    /// us holds it or its methods: our reference and the two bound
    /// methods' to the object, ours to `start_response`, and the object's
    /// own to `write`.
    fn give_back(
        &mut self,
        py: Python<'_>,
        response: Bound<'_, PyResponse>,
        start: Bound<'_, PyAny>,
    ) {
        if refcount(&start) == 1
            && response.get().write_unshared(py)
            && refcount(response.as_any()) == 3
        {
            self.response = Some((response.unbind(), start.unbind()));
        } else {
            response.get().retire(py);
        }
    }

    fn clear(&mut self, py: Python<'_>) {
        if let Some((response, _start)) = self.response.take() {
            response.bind(py).get().retire(py);
        }
    }
}

/// How serving a request ended, before `close()`.
enum Outcome {
    /// The whole result was queued.
    Done,
    /// The application (or its iterable) raised.
    Failed(PyErr),
    /// The result had a chunk that is not bytes.
    NotBytes(String),
    /// The sink refused more.
    Send(SendError),
    /// `pre_request` raised: gunicorn answers 500 without calling the app.
    PreRequest(PyErr),
}

/// For `post_request`: gunicorn's `req`, and the environ (none when
/// `pre_request` failed).
type Hooked<'py> = (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyDict>>);

/// Identifies a request in log lines.
fn describe(environ: &Environ) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&environ.request_method),
        String::from_utf8_lossy(&environ.request_uri)
    )
}

impl PyApplication {
    fn serve_request(
        &self,
        py: Python<'_>,
        builder: &mut EnvironBuilder,
        reused: &mut Reused,
        request: Request,
    ) {
        let Request {
            environ,
            input,
            output,
        } = request;
        let hooks = self.options.request_hooks.as_ref();
        let (responder, start_response) = match reused.response(py) {
            Ok(objects) => objects,
            Err(error) => {
                self.log(&format!(
                    "Error handling request {} (creating start_response):\n{}",
                    describe(&environ),
                    format_traceback(py, &error)
                ));
                let mut output = output;
                output.abort(&AppError::new(error.to_string()));
                return;
            }
        };
        let post_request = hooks.is_some_and(RequestHooks::has_post);
        responder.get().begin(py, output, post_request);
        let response = responder.get().state();
        let input = match builder.input(py, input) {
            Ok(input) => input,
            Err(error) => {
                self.fail(py, &environ, response, "creating wsgi.input", &error);
                reused.give_back(py, responder, start_response);
                return;
            }
        };
        let mut result: Option<Bound<'_, PyAny>> = None;
        // For post_request: gunicorn's `req`, and the environ unless
        // pre_request failed (then gunicorn passes `{}`).
        let mut hooked: Option<Hooked<'_>> = None;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let dict = match builder.build(py, &environ) {
                Ok(dict) => dict,
                Err(error) => return Outcome::Failed(error),
            };
            if let Some(hooks) = hooks {
                let (request, raised) = hooks.pre_request(py, &dict);
                if let Some(error) = raised {
                    hooked = Some((request, None));
                    return Outcome::PreRequest(error);
                }
                hooked = Some((request, Some(dict.clone())));
            }
            match self.app.bind(py).call1((dict, &start_response)) {
                Ok(iterable) => send_result(py, result.insert(iterable), response, !post_request),
                Err(error) => Outcome::Failed(error),
            }
        }));
        match outcome {
            Ok(Outcome::Done) => match response.finish(py) {
                Ok(()) | Err(SendError::Sink(SinkError::Disconnected)) => {}
                Err(SendError::NotStarted) => {
                    let message = "the application returned without calling start_response()";
                    self.log(&format!(
                        "Error handling request {}: {message}\n",
                        describe(&environ)
                    ));
                    response.abort(py, &AppError::new(message));
                }
                Err(error) => self.end_after_send_error(py, &environ, response, error),
            },
            Ok(Outcome::Failed(error)) => {
                let input_failed = input.get().failed();
                if response.disconnected(py) || input_failed {
                    // The client went away and the application saw it as an
                    // exception from write() or wsgi.input: not its fault.
                    response.abort(py, &AppError::new("client disconnected"));
                } else {
                    self.fail(py, &environ, response, "in the application", &error);
                }
            }
            Ok(Outcome::NotBytes(kind)) => {
                let message =
                    format!("the application's response must yield bytes, but it yielded {kind}");
                self.log(&format!(
                    "Error handling request {}: TypeError: {message}\n",
                    describe(&environ)
                ));
                response.abort(py, &AppError::new(message));
            }
            Ok(Outcome::Send(error)) => self.end_after_send_error(py, &environ, response, error),
            Ok(Outcome::PreRequest(error)) => {
                self.fail(py, &environ, response, "in the pre_request hook", &error)
            }
            Err(panic) => {
                let message = panic_message(&*panic);
                self.log(&format!(
                    "Panic while handling request {}: {message}\n",
                    describe(&environ)
                ));
                response.abort(py, &AppError::new(format!("panic: {message}")));
            }
        }
        if let Some(result) = result {
            self.close(py, &environ, &result);
        }
        if let Some(hooks) = hooks {
            self.post_request(py, hooks, &environ, response, hooked);
        }
        // The application may keep environ or start_response: detach them
        // from this request's body and sink, which go back to the server.
        drop(builder.give_back_input(py, input));
        if let Some(mut sink) = response.take_sink() {
            sink.abort(&AppError::new("response not finished"));
        }
        reused.give_back(py, responder, start_response);
    }

    /// Ends the response after the sink refused output.
    fn end_after_send_error(
        &self,
        py: Python<'_>,
        environ: &Environ,
        response: &ResponseState,
        error: SendError,
    ) {
        let message = match error {
            // The client went away: stop quietly.
            SendError::Sink(SinkError::Disconnected) | SendError::Over => {
                response.abort(py, &AppError::new("client disconnected"));
                return;
            }
            SendError::NotStarted => {
                "the application sent body data before calling start_response()".to_owned()
            }
            SendError::Sink(error) => error.to_string(),
        };
        self.log(&format!(
            "Error handling request {}: {message}\n",
            describe(environ)
        ));
        response.abort(py, &AppError::new(message));
    }

    /// Logs an application exception with its traceback, and aborts.
    fn fail(
        &self,
        py: Python<'_>,
        environ: &Environ,
        response: &ResponseState,
        context: &str,
        error: &PyErr,
    ) {
        self.log(&format!(
            "Error handling request {} ({context}):\n{}",
            describe(environ),
            format_traceback(py, error)
        ));
        response.abort(py, &AppError::new(error.to_string()));
    }

    /// gunicorn's `post_request(worker, req, environ, resp)`, after the
    /// response and `close()`; an exception is logged, not propagated.
    fn post_request<'py>(
        &self,
        py: Python<'py>,
        hooks: &RequestHooks,
        environ: &Environ,
        response: &ResponseState,
        hooked: Option<Hooked<'py>>,
    ) {
        if !hooks.has_post() {
            return;
        }
        let seen = response.take_seen(py);
        let (request, dict) = hooked.unwrap_or((None, None));
        // As gunicorn: no environ and no resp when pre_request failed.
        let seen = dict.as_ref().and(seen.as_deref());
        let called = catch_unwind(AssertUnwindSafe(|| {
            hooks.post_request(py, request.as_ref(), dict.as_ref(), seen)
        }));
        match called {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.log(&format!(
                "Exception in post_request hook ({}):\n{}",
                describe(environ),
                format_traceback(py, &error)
            )),
            Err(panic) => self.log(&format!(
                "Panic in post_request hook ({}): {}\n",
                describe(environ),
                panic_message(&*panic)
            )),
        }
    }

    /// Calls the result's `close()` if it has one (PEP 3333: always, whatever
    /// happened); its exception is logged, not propagated.
    fn close(&self, py: Python<'_>, environ: &Environ, result: &Bound<'_, PyAny>) {
        // Lists and tuples (most responses) have no close(); before Python
        // 3.13 a missing attribute costs a raised and caught AttributeError.
        if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
            return;
        }
        let closed = catch_unwind(AssertUnwindSafe(|| {
            let close = pyo3::intern!(py, "close");
            match result.getattr_opt(close) {
                Ok(Some(close)) => close.call0().map(drop),
                Ok(None) => Ok(()),
                Err(error) => Err(error),
            }
        }));
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.log(&format!(
                "Error in close() of the response to {}:\n{}",
                describe(environ),
                format_traceback(py, &error)
            )),
            Err(panic) => self.log(&format!(
                "Panic in close() of the response to {}: {}\n",
                describe(environ),
                panic_message(&*panic)
            )),
        }
    }
}

/// Sends what the application returned. `no_hook_after`: no
/// `post_request` hook runs after the response.
fn send_result(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    response: &ResponseState,
    no_hook_after: bool,
) -> Outcome {
    let sent = if let Some(body) = single_bytes(result) {
        // An exact list or tuple: no close() to call (see `close`).
        response.send_whole(py, &body, no_hook_after)
    } else if let Some(region) = result
        .cast::<PyFileWrapper>()
        .ok()
        .and_then(|wrapper| wrapper.get().file_region(py))
    {
        let (region, remaining) = region;
        response.send_file(py, region, remaining)
    } else {
        return iterate(py, result, response);
    };
    match sent {
        Ok(()) => Outcome::Done,
        Err(error) => Outcome::Send(error),
    }
}

/// `[b"..."]` or `(b"...",)`: the common "whole body at once" result.
fn single_bytes<'py>(result: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
    let item = if let Ok(list) = result.cast_exact::<PyList>() {
        (list.len() == 1).then(|| list.get_item(0).ok())??
    } else if let Ok(tuple) = result.cast_exact::<PyTuple>() {
        (tuple.len() == 1).then(|| tuple.get_item(0).ok())??
    } else {
        return None;
    };
    item.cast_into::<PyBytes>().ok()
}

/// Pulls the iterable, sending each non-empty chunk as it comes.
fn iterate(py: Python<'_>, result: &Bound<'_, PyAny>, response: &ResponseState) -> Outcome {
    let iterator = match result.try_iter() {
        Ok(iterator) => iterator,
        Err(error) => return Outcome::Failed(error),
    };
    for item in iterator {
        let item = match item {
            Ok(item) => item,
            Err(error) => return Outcome::Failed(error),
        };
        let Ok(chunk) = item.cast::<PyBytes>() else {
            return Outcome::NotBytes(type_name(&item));
        };
        if chunk.as_bytes().is_empty() {
            continue;
        }
        if let Err(error) = response.send(py, chunk_bytes(chunk)) {
            return Outcome::Send(error);
        }
    }
    Outcome::Done
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "unknown panic".to_owned()
    }
}
