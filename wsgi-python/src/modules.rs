//! Small questions about the running interpreter: is it started, and which
//! source files did it load (for a `--reload` file watcher).

use std::path::PathBuf;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Whether a Python interpreter runs in this process (`Py_IsInitialized`).
pub fn is_initialized() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time, from any thread.
    unsafe { ffi::Py_IsInitialized() != 0 }
}

/// The source files of every module in `sys.modules` whose `__file__`
/// exists (sorted, without duplicates): what a reloader should watch.
pub fn module_files(py: Python<'_>) -> Vec<PathBuf> {
    let Ok(modules) = py
        .import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .and_then(|modules| modules.cast_into::<PyDict>().map_err(PyErr::from))
    else {
        return Vec::new();
    };
    // A copy: importing while we iterate (a lazy __getattr__) must not
    // change the dict under us.
    let Ok(modules) = modules.copy() else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = modules
        .values()
        .iter()
        .filter_map(|module| {
            let file = module.getattr_opt("__file__").ok().flatten()?;
            let file = PathBuf::from(file.extract::<String>().ok()?);
            // A cached .pyc stands for its source when that exists.
            let file = match file.extension().and_then(|ext| ext.to_str()) {
                Some("pyc") => {
                    let source = file.with_extension("py");
                    if source.is_file() {
                        source
                    } else {
                        file
                    }
                }
                _ => file,
            };
            file.is_file().then_some(file)
        })
        .collect();
    files.sort();
    files.dedup();
    files
}
