//! What a server prints at start-up about the interpreter it runs: which
//! Python, which prefix, which virtualenv.

use pyo3::prelude::*;

/// The running interpreter, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpreterInfo {
    /// `sys.version` on one line.
    pub version: String,
    /// `sys.prefix` (the virtualenv when one is active).
    pub prefix: String,
    /// `sys.base_prefix` (the Python installation).
    pub base_prefix: String,
    /// `sys.executable`.
    pub executable: String,
    /// The virtualenv, when `sys.prefix != sys.base_prefix`.
    pub virtualenv: Option<String>,
}

/// Reads [`InterpreterInfo`] from `sys`.
///
/// # Errors
/// A `sys` attribute is missing or not a string (someone replaced it).
pub fn interpreter_info(py: Python<'_>) -> PyResult<InterpreterInfo> {
    let sys = py.import("sys")?;
    let text = |name: &str| -> PyResult<String> { sys.getattr(name)?.extract() };
    let version = text("version")?.replace('\n', " ");
    let prefix = text("prefix")?;
    let base_prefix = text("base_prefix")?;
    let virtualenv = (prefix != base_prefix).then(|| prefix.clone());
    Ok(InterpreterInfo {
        version,
        prefix,
        base_prefix,
        executable: text("executable")?,
        virtualenv,
    })
}
