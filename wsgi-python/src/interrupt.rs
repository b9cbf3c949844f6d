//! Stopping a request that ran past the server's timeout: log the stack of
//! its thread, then raise [`RequestTimeout`] in it with
//! `PyThreadState_SetAsyncExc`.
//!
//! The exception is checked by the evaluation loop, so it reaches Python
//! code (a loop, a slow computation) within a few bytecodes. It does not
//! reach a thread blocked in C: `time.sleep` and `os.read` go back to sleep
//! after a signal (PEP 475) and look at no pending exception until they
//! return; for those the server replaces the worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyModule;
use pyo3::{ffi, PyTypeInfo};

pyo3::create_exception!(
    wsgi_server,
    RequestTimeout,
    pyo3::exceptions::PyBaseException,
    "Raised in a request's thread when it runs past the server's --timeout. A BaseException, as KeyboardInterrupt: `except Exception` in the application does not swallow it, `finally` blocks and the response's close() still run."
);

/// One application thread, as the interrupter sees it.
#[derive(Debug, Default)]
pub(crate) struct ThreadEntry {
    /// `threading.get_ident()` of the thread.
    ident: AtomicU64,
    /// Between the start and the end of a request (both under the GIL).
    in_request: AtomicBool,
    /// An exception was raised in the current request.
    interrupted: AtomicBool,
}

impl ThreadEntry {
    /// A request starts (GIL held).
    pub(crate) fn request_started(&self) {
        self.in_request.store(true, Ordering::Relaxed);
    }

    /// A request ended (GIL held): an exception raised too late for it
    /// must not hit the next one.
    pub(crate) fn request_ended(&self, _py: Python<'_>) {
        self.in_request.store(false, Ordering::Relaxed);
        if self.interrupted.swap(false, Ordering::Relaxed) {
            // SAFETY: GIL held; a null exception clears a pending one.
            unsafe {
                ffi::PyThreadState_SetAsyncExc(
                    self.ident.load(Ordering::Relaxed) as _,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

/// The application threads of a process, by the server's thread index.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    entries: Mutex<Vec<Option<Arc<ThreadEntry>>>>,
}

impl Threads {
    /// Registers the calling thread (GIL held) as `index`.
    pub(crate) fn register(&self, py: Python<'_>, index: usize) -> Arc<ThreadEntry> {
        let entry = Arc::new(ThreadEntry::default());
        // `_thread` (built in, always loaded) rather than `threading`, the
        // same function: `threading` costs ~0.2 MiB to import.
        let ident = py
            .import("_thread")
            .and_then(|thread| thread.call_method0("get_ident"))
            .and_then(|ident| ident.extract::<u64>())
            .unwrap_or(0);
        entry.ident.store(ident, Ordering::Relaxed);
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() <= index {
            entries.resize(index + 1, None);
        }
        entries[index] = Some(Arc::clone(&entry));
        entry
    }

    /// See `wsgi_core::Application::interrupt_thread`; `log` takes the
    /// stack report.
    pub(crate) fn interrupt(
        &self,
        index: usize,
        request: &str,
        still_stuck: &dyn Fn() -> bool,
        log: &dyn Fn(&str),
    ) -> bool {
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(index)
            .cloned()
            .flatten();
        let Some(entry) = entry else {
            return false;
        };
        Python::attach(|py| {
            // Under the GIL the thread cannot end its request meanwhile.
            if !entry.in_request.load(Ordering::Relaxed) || !still_stuck() {
                return false;
            }
            let ident = entry.ident.load(Ordering::Relaxed);
            let stack = thread_stack(py, ident)
                .unwrap_or_else(|error| format!("(stack not available: {error})\n"));
            log(&format!(
                "Request timeout: {request} on application thread {index} (Python thread 0x{ident:x}); its stack (most recent call last):\n{stack}Raising wsgi_server.RequestTimeout in it\n"
            ));
            // SAFETY: GIL held; the exception type is a valid, immortal
            // type object for this interpreter.
            let set = unsafe {
                ffi::PyThreadState_SetAsyncExc(ident as _, RequestTimeout::type_object(py).as_ptr())
            };
            if set == 1 {
                entry.interrupted.store(true, Ordering::Relaxed);
            }
            set == 1
        })
    }
}

/// The formatted Python stack of thread `ident`.
fn thread_stack(py: Python<'_>, ident: u64) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let frame = frames.get_item(ident)?;
    let lines = py
        .import("traceback")?
        .call_method1("format_stack", (frame,))?;
    Ok(lines.extract::<Vec<String>>()?.concat())
}

/// Makes `wsgi_server.RequestTimeout` importable (a module of that name in
/// `sys.modules`, unless one exists), so an application can catch it.
pub(crate) fn register_module(py: Python<'_>) -> PyResult<()> {
    let modules = py.import("sys")?.getattr("modules")?;
    if modules.contains("wsgi_server")? {
        return Ok(());
    }
    let module = PyModule::new(py, "wsgi_server")?;
    module.add("RequestTimeout", RequestTimeout::type_object(py))?;
    modules.set_item("wsgi_server", module)?;
    Ok(())
}
