//! Executing a gunicorn configuration file (`gunicorn.conf.py`, `-c FILE`,
//! `-c python:module`) the way gunicorn's `get_config_from_filename` /
//! `get_config_from_module_name` do, and reading back its settings.
//!
//! A file runs as a fresh module named `__config__` (registered in
//! `sys.modules`, `__file__` set to the path as given), so imports, f-strings
//! and functions work. Every public module-level name (not `_private`, not a
//! module) is returned with its value converted to a [`ConfValue`] and the
//! line where it was last assigned or defined (from Python's `ast`).

use std::ffi::CString;
use std::fmt;
use std::path::Path;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyModule, PyString, PyTuple};

use crate::pyutil::format_traceback;

/// A setting's value, converted from Python.
pub enum ConfValue {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` that fits in 64 bits (a larger one is [`ConfValue::Other`]).
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`, or `bytes` decoded as UTF-8 (invalid bytes replaced).
    Str(String),
    /// A `list` or `tuple`.
    List(Vec<ConfValue>),
    /// A `dict`, keys as `str()`, in the dict's order.
    Dict(Vec<(String, ConfValue)>),
    /// A function, class or other callable (a server hook, `worker_class`).
    Callable(Py<PyAny>),
    /// Anything else, as its `repr()` (also containers nested too deeply).
    Other(String),
}

impl fmt::Debug for ConfValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfValue::None => f.write_str("None"),
            ConfValue::Bool(value) => write!(f, "Bool({value})"),
            ConfValue::Int(value) => write!(f, "Int({value})"),
            ConfValue::Float(value) => write!(f, "Float({value})"),
            ConfValue::Str(value) => write!(f, "Str({value:?})"),
            ConfValue::List(items) => f.debug_tuple("List").field(items).finish(),
            ConfValue::Dict(items) => f.debug_tuple("Dict").field(items).finish(),
            ConfValue::Callable(object) => write!(f, "Callable({:p})", object.as_ptr()),
            ConfValue::Other(repr) => write!(f, "Other({repr:?})"),
        }
    }
}

impl Clone for ConfValue {
    fn clone(&self) -> Self {
        match self {
            ConfValue::None => ConfValue::None,
            ConfValue::Bool(value) => ConfValue::Bool(*value),
            ConfValue::Int(value) => ConfValue::Int(*value),
            ConfValue::Float(value) => ConfValue::Float(*value),
            ConfValue::Str(value) => ConfValue::Str(value.clone()),
            ConfValue::List(items) => ConfValue::List(items.clone()),
            ConfValue::Dict(items) => ConfValue::Dict(items.clone()),
            // A callable exists only while the interpreter does; taking a
            // new reference needs it attached.
            ConfValue::Callable(object) => {
                ConfValue::Callable(Python::attach(|py| object.clone_ref(py)))
            }
            ConfValue::Other(repr) => ConfValue::Other(repr.clone()),
        }
    }
}

impl PartialEq for ConfValue {
    /// Callables are equal when they are the same object.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ConfValue::None, ConfValue::None) => true,
            (ConfValue::Bool(a), ConfValue::Bool(b)) => a == b,
            (ConfValue::Int(a), ConfValue::Int(b)) => a == b,
            (ConfValue::Float(a), ConfValue::Float(b)) => a == b,
            (ConfValue::Str(a), ConfValue::Str(b)) | (ConfValue::Other(a), ConfValue::Other(b)) => {
                a == b
            }
            (ConfValue::List(a), ConfValue::List(b)) => a == b,
            (ConfValue::Dict(a), ConfValue::Dict(b)) => a == b,
            (ConfValue::Callable(a), ConfValue::Callable(b)) => a.as_ptr() == b.as_ptr(),
            _ => false,
        }
    }
}

/// Containers deeper than this are given as their `repr()`, so a list that
/// contains itself cannot exhaust the stack.
const MAX_DEPTH: usize = 32;

impl ConfValue {
    /// Converts a Python value (bool before int: `True` is an `int`).
    pub fn from_py(value: &Bound<'_, PyAny>) -> ConfValue {
        convert(value, 0)
    }

    /// The Python object for this value (a `str` for [`ConfValue::Other`]).
    ///
    /// # Errors
    /// A Python error creating an object (out of memory).
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            ConfValue::None => py.None().into_bound(py),
            ConfValue::Bool(value) => PyBool::new(py, *value).to_owned().into_any(),
            ConfValue::Int(value) => value.into_pyobject(py)?.into_any(),
            ConfValue::Float(value) => PyFloat::new(py, *value).into_any(),
            ConfValue::Str(value) | ConfValue::Other(value) => PyString::new(py, value).into_any(),
            ConfValue::List(items) => {
                let list = PyList::empty(py);
                for item in items {
                    list.append(item.to_py(py)?)?;
                }
                list.into_any()
            }
            ConfValue::Dict(items) => {
                let dict = PyDict::new(py);
                for (key, value) in items {
                    dict.set_item(key, value.to_py(py)?)?;
                }
                dict.into_any()
            }
            ConfValue::Callable(object) => object.bind(py).clone(),
        })
    }
}

fn repr(value: &Bound<'_, PyAny>) -> String {
    value
        .repr()
        .map(|text| text.to_string())
        .unwrap_or_else(|_| "<unrepresentable object>".to_owned())
}

fn convert(value: &Bound<'_, PyAny>, depth: usize) -> ConfValue {
    if value.is_none() {
        return ConfValue::None;
    }
    if let Ok(flag) = value.cast::<PyBool>() {
        return ConfValue::Bool(flag.is_true());
    }
    if value.is_instance_of::<PyInt>() {
        return match value.extract::<i64>() {
            Ok(number) => ConfValue::Int(number),
            Err(_) => ConfValue::Other(repr(value)),
        };
    }
    if let Ok(number) = value.cast::<PyFloat>() {
        return ConfValue::Float(number.value());
    }
    if let Ok(text) = value.cast::<PyString>() {
        return match text.to_str() {
            Ok(text) => ConfValue::Str(text.to_owned()),
            // Lone surrogates: keep what can be shown.
            Err(_) => ConfValue::Str(text.to_string_lossy().into_owned()),
        };
    }
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return ConfValue::Str(String::from_utf8_lossy(bytes.as_bytes()).into_owned());
    }
    let is_list = value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>();
    let is_dict = value.is_instance_of::<PyDict>();
    if (is_list || is_dict) && depth >= MAX_DEPTH {
        return ConfValue::Other(repr(value));
    }
    if is_list {
        let items = value
            .try_iter()
            .map(|items| {
                items
                    .map(|item| match item {
                        Ok(item) => convert(&item, depth + 1),
                        Err(_) => ConfValue::Other("<error>".to_owned()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        return ConfValue::List(items);
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let items = dict
            .iter()
            .map(|(key, value)| {
                let key = match key.cast::<PyString>() {
                    Ok(key) => key.to_string_lossy().into_owned(),
                    Err(_) => key
                        .str()
                        .map(|key| key.to_string())
                        .unwrap_or_else(|_| repr(&key)),
                };
                (key, convert(&value, depth + 1))
            })
            .collect();
        return ConfValue::Dict(items);
    }
    if value.is_callable() {
        return ConfValue::Callable(value.clone().unbind());
    }
    ConfValue::Other(repr(value))
}

/// One module-level name of a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfEntry {
    /// The name as written (gunicorn's settings are lower-case).
    pub name: String,
    /// Its value.
    pub value: ConfValue,
    /// The line where it is last assigned or defined at module level, when
    /// known.
    pub line: Option<u32>,
}

/// What a configuration file defined.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfFile {
    /// The file as shown in messages: the path as given, or the module's file
    /// for `python:` (the spec when it has none).
    pub display: String,
    /// Every public module-level name, in definition order.
    pub entries: Vec<ConfEntry>,
}

impl ConfFile {
    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&ConfEntry> {
        self.entries.iter().find(|entry| entry.name == name)
    }

    /// `FILE:LINE` (or `FILE`) for messages about `entry`.
    pub fn location(&self, entry: &ConfEntry) -> String {
        match entry.line {
            Some(line) => format!("{}:{line}", self.display),
            None => self.display.clone(),
        }
    }
}

/// Why a configuration could not be read. `Display` is one line for the
/// user; [`ConfError::traceback`] has the details of an exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfError {
    /// The file does not exist.
    NotFound {
        /// The path as given.
        display: String,
    },
    /// The file exists but cannot be read.
    Unreadable {
        /// The path as given.
        display: String,
        /// The OS's reason.
        reason: String,
    },
    /// The file (or module) does not compile.
    Syntax {
        /// The file.
        display: String,
        /// The line, when Python knows it.
        line: Option<u32>,
        /// `SyntaxError`, `IndentationError`, ...
        kind: String,
        /// Python's message.
        message: String,
    },
    /// Running the file (importing the module) raised.
    Exception {
        /// The file (or `python:module` when its file is unknown).
        display: String,
        /// The line of the deepest traceback frame in that file.
        line: Option<u32>,
        /// The exception's type name.
        kind: String,
        /// The exception's message, on one line.
        message: String,
        /// The whole Python traceback.
        traceback: String,
    },
    /// Our own Python code failed (should not happen).
    Internal {
        /// The file.
        display: String,
        /// The Python traceback.
        traceback: String,
    },
}

impl ConfError {
    /// The Python traceback of an exception, for the log.
    pub fn traceback(&self) -> Option<&str> {
        match self {
            ConfError::Exception { traceback, .. } | ConfError::Internal { traceback, .. } => {
                Some(traceback)
            }
            _ => None,
        }
    }
}

fn at(display: &str, line: Option<u32>) -> String {
    match line {
        Some(line) => format!("{display}:{line}"),
        None => display.to_owned(),
    }
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfError::NotFound { display } => write!(f, "{display}: no such file"),
            ConfError::Unreadable { display, reason } => {
                write!(f, "{display}: cannot read the file: {reason}")
            }
            ConfError::Syntax {
                display,
                line,
                kind,
                message,
            }
            | ConfError::Exception {
                display,
                line,
                kind,
                message,
                ..
            } => {
                write!(f, "{}: {kind}", at(display, *line))?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            ConfError::Internal { display, traceback } => {
                let last = traceback
                    .trim_end()
                    .lines()
                    .last()
                    .unwrap_or("unknown error");
                write!(
                    f,
                    "{display}: internal error reading the configuration: {last}"
                )
            }
        }
    }
}

impl std::error::Error for ConfError {}

fn helper(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            let source = CString::new(include_str!("py/conf.py"))
                .map_err(|error| pyo3::exceptions::PyValueError::new_err(error.to_string()))?;
            PyModule::from_code(py, &source, c"<wsgi_python.conf>", c"_wsgi_python_conf")
                .map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}

/// Line numbers arrive as Python ints or None.
fn line_of(value: &Bound<'_, PyAny>) -> Option<u32> {
    value.extract::<Option<u32>>().ok().flatten()
}

/// Runs a gunicorn configuration: `spec` is a file path (`file:PATH` too),
/// or `python:dotted.module` (imported). See the module docs.
///
/// # Errors
/// [`ConfError`]: no such file, a syntax error, or an exception while it
/// ran, each with the file and line.
pub fn exec_config(py: Python<'_>, spec: &str) -> Result<ConfFile, ConfError> {
    let internal = |display: &str, error: PyErr| ConfError::Internal {
        display: display.to_owned(),
        traceback: format_traceback(py, &error),
    };
    let helper = helper(py).map_err(|error| internal(spec, error))?;
    let (result, display) = if let Some(module) = spec.strip_prefix("python:") {
        let result = helper
            .call_method1("import_config", (module,))
            .map_err(|error| internal(spec, error))?;
        (result, spec.to_owned())
    } else {
        let path = spec.strip_prefix("file:").unwrap_or(spec);
        // gunicorn: "%r doesn't exist".
        if !Path::new(path).exists() {
            return Err(ConfError::NotFound {
                display: path.to_owned(),
            });
        }
        let result = helper
            .call_method1("exec_file", (path,))
            .map_err(|error| internal(path, error))?;
        (result, path.to_owned())
    };
    let result = result
        .cast_into::<PyTuple>()
        .map_err(|error| internal(&display, error.into()))?;
    let item = |index: usize| result.get_item(index).ok();
    let text = |index: usize| {
        item(index)
            .and_then(|value| value.extract::<String>().ok())
            .unwrap_or_default()
    };
    // For `python:`, the module's file (when known) names the place.
    let file_of = |index: usize| {
        item(index)
            .and_then(|value| value.extract::<Option<String>>().ok().flatten())
            .unwrap_or_else(|| display.clone())
    };
    let is_module = spec.starts_with("python:");
    match text(0).as_str() {
        "ok" => {
            let display = if is_module {
                file_of(3)
            } else {
                display.clone()
            };
            let namespace = item(1).ok_or_else(|| internal(&display, missing()))?;
            let lines = item(2).ok_or_else(|| internal(&display, missing()))?;
            let namespace = namespace
                .cast_into::<PyDict>()
                .map_err(|error| internal(&display, error.into()))?;
            let lines = lines.cast_into::<PyDict>().ok();
            let mut entries = Vec::new();
            for (name, value) in namespace.iter() {
                let Ok(name) = name.extract::<String>() else {
                    continue;
                };
                if name.starts_with('_') || value.is_instance_of::<PyModule>() {
                    continue;
                }
                let line = lines
                    .as_ref()
                    .and_then(|lines| lines.get_item(&name).ok().flatten())
                    .and_then(|line| line_of(&line));
                entries.push(ConfEntry {
                    value: ConfValue::from_py(&value),
                    name,
                    line,
                });
            }
            Ok(ConfFile { display, entries })
        }
        "unreadable" => Err(ConfError::Unreadable {
            display,
            reason: text(1),
        }),
        "syntax" => Err(ConfError::Syntax {
            display,
            line: item(1).and_then(|line| line_of(&line)),
            kind: text(2),
            message: text(3),
        }),
        _ => {
            let line = item(1).and_then(|line| line_of(&line));
            let (kind, message, traceback) = (text(2), text(3), text(4));
            let display = if is_module { file_of(5) } else { display };
            if traceback.is_empty() {
                // A module's SyntaxError: its file and line are the error's.
                return Err(ConfError::Syntax {
                    display,
                    line,
                    kind,
                    message,
                });
            }
            Err(ConfError::Exception {
                display,
                line,
                kind,
                message,
                traceback,
            })
        }
    }
}

fn missing() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("the config helper returned a short tuple")
}
