//! Loading an application from a gunicorn-style spec.
//!
//! | spec | meaning |
//! |---|---|
//! | `module` | `module:application` |
//! | `pkg.mod:obj.app` | import `pkg.mod`, then `getattr` along `obj.app` |
//! | `module:factory()`, `module:factory('x', debug=True)` | call the factory; arguments must be Python literals (`ast.literal_eval`), never code |
//! | `app.py`, `dir/app.py:name` | import the file; its directory goes first on `sys.path` |
//!
//! The object part is parsed with Python's own `ast`, as gunicorn does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyTuple};
use thiserror::Error;

use crate::pyutil::{format_traceback, type_name};

/// Why an application could not be loaded. Each message is one paragraph for
/// the user; the server prints it and exits with status 4.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoadError {
    /// The spec does not have one of the accepted forms.
    #[error(
        "invalid application spec {spec:?}: {reason}. Expected \"module:callable\", \
         \"module\", \"module:factory(...)\" with literal arguments, or \"path/app.py[:callable]\""
    )]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The spec names a file that does not exist.
    #[error("application file {} does not exist", path.display())]
    FileNotFound {
        /// The path as resolved.
        path: PathBuf,
    },
    /// Importing the module raised (including `ModuleNotFoundError`).
    #[error("failed to import application module {module:?}:\n{traceback}")]
    Import {
        /// The module name or file.
        module: String,
        /// The Python traceback.
        traceback: String,
    },
    /// The module (or an object on the dotted path) lacks the attribute.
    #[error(
        "failed to find attribute {attribute:?} in {module:?}; {}",
        list_names(available)
    )]
    MissingAttribute {
        /// Where the lookup failed (`module`, or `module:obj` for dotted paths).
        module: String,
        /// The missing name.
        attribute: String,
        /// The public names that do exist there.
        available: Vec<String>,
    },
    /// The application factory raised.
    #[error("application factory {factory:?} raised:\n{traceback}")]
    Factory {
        /// `module:factory`.
        factory: String,
        /// The Python traceback.
        traceback: String,
    },
    /// The object found is not callable.
    #[error("application object {spec:?} is not callable (it is {type_name})")]
    NotCallable {
        /// The spec.
        spec: String,
        /// The object's type.
        type_name: String,
    },
    /// `paste.deploy` cannot be imported (for a PasteDeploy file).
    #[error("PasteDeploy is not installed in this Python (sys.prefix {prefix}): pip install PasteDeploy")]
    PasteNotInstalled {
        /// `sys.prefix` of the interpreter that lacks it.
        prefix: String,
    },
    /// PasteDeploy failed to build the application (a missing section, a
    /// factory that raised, an unknown `egg:`).
    #[error("failed to load the PasteDeploy application {uri:?}:\n{traceback}")]
    Paste {
        /// The config URI (`config:PATH`).
        uri: String,
        /// The Python traceback.
        traceback: String,
    },
    /// Python failed in our own loading code (should not happen).
    #[error("internal error while loading the application:\n{traceback}")]
    Internal {
        /// The Python traceback.
        traceback: String,
    },
}

fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 40;
    if names.is_empty() {
        return "it has no public names".to_owned();
    }
    let mut text = String::from("its public names are: ");
    text.push_str(
        &names
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
    );
    if names.len() > SHOWN {
        let _ = write!(text, ", ... ({} more)", names.len() - SHOWN);
    }
    text
}

/// The Python side of loading: the `ast` work and file imports. `ast` (with
/// `_ast`, ~0.5 MiB of a worker's memory) is imported only when the object
/// part is more than a plain dotted name (a factory call).
const LOADER: &std::ffi::CStr = cr#"
import os, sys
from keyword import iskeyword

def parse_object(text):
    """Returns (names, args, kwargs, is_call) for "name.attr" or "name.attr(literals)"."""
    names = text.strip().split(".")
    if all(name.isascii() and name.isidentifier() and not iskeyword(name) for name in names):
        return names, (), {}, False
    import ast
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"{text!r} is not a valid Python expression ({error.msg})") from None
    args, kwargs, is_call = (), {}, False
    if isinstance(node, ast.Call):
        is_call = True
        values = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise ValueError("*args are not allowed in a factory call")
            values.append(_literal(arg))
        args = tuple(values)
        for keyword in node.keywords:
            if keyword.arg is None:
                raise ValueError("**kwargs are not allowed in a factory call")
            kwargs[keyword.arg] = _literal(keyword.value)
        node = node.func
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ValueError(f"{text!r} must be a name, a dotted name, or a call of one")
    names.append(node.id)
    names.reverse()
    return names, args, kwargs, is_call

def _literal(node):
    import ast
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(
            f"factory arguments must be Python literals, got {ast.unparse(node)!r}"
        ) from None

def import_path(path):
    import importlib.util
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module

def public_names(obj):
    return sorted(name for name in dir(obj) if not name.startswith("_"))
"#;

fn loader(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static LOADER_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    LOADER_MODULE
        .get_or_try_init(py, || {
            PyModule::from_code(py, LOADER, c"<wsgi_python.loader>", c"_wsgi_python_loader")
                .map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}

fn is_dotted_name(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|first| first.is_alphabetic() || first == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// Loads the application named by `spec` (see the module docs).
pub(crate) fn load<'py>(py: Python<'py>, spec: &str) -> Result<Bound<'py, PyAny>, LoadError> {
    let internal = |error: PyErr| LoadError::Internal {
        traceback: format_traceback(py, &error),
    };
    let bad = |reason: &str| LoadError::BadSpec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = spec.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let (module_part, object_part) = match trimmed.split_once(':') {
        Some((module, object)) => (module.trim(), object.trim()),
        None => (trimmed, "application"),
    };
    if object_part.is_empty() {
        return Err(bad("nothing follows the ':'"));
    }
    let loader = loader(py).map_err(internal)?;

    // The object part first: a bad spec should not cost an import.
    let parsed = match loader.call_method1("parse_object", (object_part,)) {
        Ok(parsed) => parsed,
        Err(error) if error.is_instance_of::<pyo3::exceptions::PyValueError>(py) => {
            return Err(bad(&error.value(py).to_string()));
        }
        Err(error) => return Err(internal(error)),
    };
    let (names, args, kwargs, is_call): (Vec<String>, Bound<'_, PyTuple>, Bound<'_, PyDict>, bool) =
        parsed.extract().map_err(internal)?;

    let is_path = module_part.ends_with(".py") || module_part.contains('/');
    let module = if is_path {
        let path = std::path::absolute(Path::new(module_part))
            .map_err(|error| bad(&format!("cannot resolve the path {module_part:?}: {error}")))?;
        if !path.is_file() {
            return Err(LoadError::FileNotFound { path });
        }
        loader
            .call_method1("import_path", (path.to_string_lossy().into_owned(),))
            .map_err(|error| LoadError::Import {
                module: path.display().to_string(),
                traceback: format_traceback(py, &error),
            })?
    } else {
        if !is_dotted_name(module_part) {
            return Err(bad(&format!(
                "{module_part:?} is not a module name (nor a path ending in .py)"
            )));
        }
        py.import(module_part)
            .map_err(|error| LoadError::Import {
                module: module_part.to_owned(),
                traceback: format_traceback(py, &error),
            })?
            .into_any()
    };

    let mut object = module;
    let mut location = module_part.to_owned();
    for (index, name) in names.iter().enumerate() {
        match object.getattr_opt(name.as_str()) {
            Ok(Some(next)) => object = next,
            Ok(None) => {
                let available = loader
                    .call_method1("public_names", (&object,))
                    .and_then(|names| names.extract())
                    .unwrap_or_default();
                return Err(LoadError::MissingAttribute {
                    module: location,
                    attribute: name.clone(),
                    available,
                });
            }
            Err(error) => {
                return Err(LoadError::Import {
                    module: location,
                    traceback: format_traceback(py, &error),
                })
            }
        }
        location.push(if index == 0 { ':' } else { '.' });
        location.push_str(name);
    }

    if is_call {
        object = object
            .call(args, Some(&kwargs))
            .map_err(|error| LoadError::Factory {
                factory: location.clone(),
                traceback: format_traceback(py, &error),
            })?;
    }
    if !object.is_callable() {
        return Err(LoadError::NotCallable {
            spec: spec.to_owned(),
            type_name: type_name(&object),
        });
    }
    Ok(object)
}
