//! `wsgi_server._native`: the extension module of the Python package.
//!
//! It runs the same library entry as the reference binary
//! ([`wsgi_server::main_with`]) inside the user's own interpreter, which
//! becomes the master: the runtime is [`PythonRuntime::attached`], so the
//! interpreter is never initialized again and its virtualenv,
//! `sys.executable` and `site-packages` are right by construction.
//!
//! Around the run this module does what a Python process needs and a fresh
//! binary does not:
//! - refuses to start while other Python threads are alive (the master
//!   forks; a fork copies locks other threads hold, and the child deadlocks
//!   on them);
//! - releases the GIL for the whole run (`py.detach`), so the master does
//!   not hold it across `fork` and `waitpid`, and in `--no-master` mode the
//!   application threads can take it; every fork goes through CPython's
//!   fork protocol (`wsgi_python::fork`, called by the runtime's hooks);
//! - keeps Python's signal handlers away while the server owns the signals
//!   (the master and the workers install their own, as in the binary) and
//!   puts them back afterwards, so `serve()` returns to a normal Python
//!   (Ctrl-C raises `KeyboardInterrupt` again).
//!
//! The `#[pymodule]` lives in this crate, not in `wsgi-python` (which would
//! need `wsgi-server`, a dependency cycle) nor in `wsgi-server` (which
//! reaches CPython only through `wsgi-python`): see ARCHITECTURE.md.

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use wsgi_server::config::PasteServerSection;
use wsgi_server::process;
use wsgi_server::python_runtime::PythonRuntime;
use wsgi_server::signals::{MASTER_SIGNALS, WORKER_IGNORED};

/// A PasteDeploy server section from Python: its `use`, and its settings.
type GivenSection = (Option<String>, Vec<(String, String)>);

/// `wsgi-server ARGS...` in this interpreter: `argv` without the program
/// name. Returns the exit code (the console script and `python -m
/// wsgi_server` exit with it).
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> PyResult<i32> {
    run(py, argv, None, None)
}

/// The server with command-line `argv`; with `app`, that WSGI callable is
/// served instead of loading the configured application (forked into the
/// workers, never imported again); with `paste_server` (`use`, settings),
/// that is the PasteDeploy server section (from `pserve`).
#[pyfunction]
#[pyo3(signature = (argv, app=None, paste_server=None))]
fn run(
    py: Python<'_>,
    argv: Vec<String>,
    app: Option<Bound<'_, PyAny>>,
    paste_server: Option<GivenSection>,
) -> PyResult<i32> {
    refuse_threads(py)?;
    let mut runtime = PythonRuntime::attached();
    if let Some(app) = app {
        if !app.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "the application must be a WSGI callable (or an app spec string), not {}",
                app.get_type().name()?
            )));
        }
        runtime = runtime.with_app(wsgi_python::GivenApp::new(app.unbind()));
    }
    if let Some((use_, settings)) = paste_server {
        runtime = runtime.with_paste_server(PasteServerSection {
            use_,
            settings: settings
                .into_iter()
                .map(|(key, value)| (key, value, None))
                .collect(),
        });
    }
    // USR2 re-executes this process's command line (`python .../wsgi-server
    // ARGS` or the user's script), from the directory it started in.
    process::remember_start();
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    let saved = SavedSignals::save();
    let code = py.detach(move || wsgi_server::main_with(&argv, &vars, runtime));
    saved.restore();
    Ok(code)
}

/// Refuses to fork a process in which other Python threads run.
fn refuse_threads(py: Python<'_>) -> PyResult<()> {
    let threading = py.import("threading")?;
    let count: usize = threading.call_method0("active_count")?.extract()?;
    if count <= 1 {
        return Ok(());
    }
    let names: Vec<String> = threading
        .call_method0("enumerate")?
        .try_iter()?
        .filter_map(|thread| thread.ok()?.getattr("name").ok()?.extract().ok())
        .collect();
    Err(PyRuntimeError::new_err(format!(
        "wsgi_server: {} other Python thread(s) are running ({}); the server forks its \
         workers, and a fork while other threads hold locks can deadlock the workers. \
         Start the server before starting threads (start them in the application, which \
         each worker loads after the fork).",
        count - 1,
        names
            .into_iter()
            .filter(|name| name != "MainThread")
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The signal dispositions the server replaces, as they were before it ran
/// (Python's own handlers for INT, and its `SIG_IGN` for PIPE and XFSZ).
struct SavedSignals(Vec<(libc::c_int, libc::sigaction)>);

impl SavedSignals {
    fn signals() -> impl Iterator<Item = libc::c_int> {
        MASTER_SIGNALS
            .into_iter()
            .chain(WORKER_IGNORED)
            .chain([libc::SIGPIPE])
    }

    fn save() -> SavedSignals {
        SavedSignals(
            Self::signals()
                .filter_map(|signal| {
                    // SAFETY: sigaction with a NULL new action only reads the
                    // current one into a zeroed struct of the right type.
                    unsafe {
                        let mut old: libc::sigaction = std::mem::zeroed();
                        (libc::sigaction(signal, std::ptr::null(), &mut old) == 0)
                            .then_some((signal, old))
                    }
                })
                .collect(),
        )
    }

    fn restore(self) {
        for (signal, action) in self.0 {
            // SAFETY: puts back an action the kernel gave us for this signal.
            unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        }
    }
}

/// The module: `main`, `run`, and the exception the server raises in a
/// request past `--timeout` (the very type `wsgi-python` raises).
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(main, module)?)?;
    module.add_function(wrap_pyfunction!(run, module)?)?;
    module.add(
        "RequestTimeout",
        module.py().get_type::<wsgi_python::RequestTimeout>(),
    )?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
