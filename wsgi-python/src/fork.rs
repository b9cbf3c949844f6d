//! CPython around `fork(2)` (for servers that import the application before
//! forking their workers) and an all-threads stack dump on a signal (for
//! request timeouts).

use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The `PyGILState_STATE` taken in [`before_fork`], released after it.
static FORK_GIL_STATE: AtomicI32 = AtomicI32::new(-1);

/// In the parent, just before `fork()`: takes the GIL and lets CPython
/// prepare (`os.register_at_fork` hooks, import lock). The forking thread
/// must be the one that initialized the interpreter, and no other thread may
/// run Python.
pub fn before_fork() {
    // SAFETY: the interpreter is initialized; PyGILState_Ensure attaches
    // this thread, then PyOS_BeforeFork runs with the GIL held as required.
    unsafe {
        let state = ffi::PyGILState_Ensure();
        FORK_GIL_STATE.store(state as i32, Ordering::Relaxed);
        ffi::PyOS_BeforeFork();
    }
}

fn release_fork_gil() {
    let state = FORK_GIL_STATE.swap(-1, Ordering::Relaxed);
    let state = if state == ffi::PyGILState_STATE::PyGILState_LOCKED as i32 {
        ffi::PyGILState_STATE::PyGILState_LOCKED
    } else {
        ffi::PyGILState_STATE::PyGILState_UNLOCKED
    };
    // SAFETY: pairs the PyGILState_Ensure of before_fork on this thread.
    unsafe { ffi::PyGILState_Release(state) };
}

/// In the parent, just after `fork()`.
pub fn after_fork_parent() {
    // SAFETY: called after before_fork on the same thread, GIL held.
    unsafe { ffi::PyOS_AfterFork_Parent() };
    release_fork_gil();
}

/// In the child, first thing after `fork()`: CPython forgets the parent's
/// other threads and re-initializes its locks.
pub fn after_fork_child() {
    // SAFETY: called in the child on the thread that forked, GIL held
    // (inherited from before_fork).
    unsafe { ffi::PyOS_AfterFork_Child() };
    release_fork_gil();
}

/// Makes `signal` write every Python thread's stack to standard error
/// (`faulthandler.register(signal, all_threads=True)`): it works even while
/// a thread holds the GIL in a stuck request.
///
/// # Errors
/// The Python error, as text.
pub fn dump_stacks_on_signal(signal: i32) -> Result<(), String> {
    Python::attach(|py| {
        let faulthandler = py.import("faulthandler")?;
        let options = PyDict::new(py);
        options.set_item("all_threads", true)?;
        options.set_item("chain", false)?;
        faulthandler.call_method("register", (signal,), Some(&options))?;
        Ok::<(), PyErr>(())
    })
    .map_err(|error| error.to_string())
}

/// The Python threads alive in this process (`threading.active_count()`),
/// for a server about to fork: any but the forking one will be missing in
/// the child, with whatever locks it held.
pub fn python_threads() -> usize {
    Python::attach(|py| {
        py.import("threading")
            .and_then(|threading| threading.call_method0("active_count"))
            .and_then(|count| count.extract::<usize>())
            .unwrap_or(1)
    })
}
