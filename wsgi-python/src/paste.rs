//! PasteDeploy (`paster serve` / `pserve` INI files), with the real
//! `paste.deploy` library so `egg:`, `call:`, `[composite]`, `[filter]`,
//! `[filter-app]`, `[pipeline]`, `%(here)s`, `[DEFAULT]` and `set`/`get`
//! behave as they do under `pserve`.
//!
//! - [`load_app`] builds the application (`paste.deploy.loadapp`).
//! - [`read_server`] reads `[server:NAME]` with PasteDeploy's own parser
//!   and interpolation, without importing the server it names (`use =
//!   egg:Paste#http` works without Paste installed): the server is us.
//! - [`setup_logging`] configures `logging` from the file's `[loggers]`.

use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

use crate::load::LoadError;
use crate::pyutil::{format_traceback, type_name};

fn helper(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            let source = CString::new(include_str!("py/paste.py"))
                .map_err(|error| pyo3::exceptions::PyValueError::new_err(error.to_string()))?;
            PyModule::from_code(py, &source, c"<wsgi_python.paste>", c"_wsgi_python_paste")
                .map(Bound::unbind)
        })
        .map(|module| module.bind(py))
}

/// `sys.prefix` when `paste.deploy` cannot be imported.
fn missing_paste(helper: &Bound<'_, PyModule>) -> PyResult<Option<String>> {
    helper.call_method0("missing_paste")?.extract()
}

fn global_dict<'py>(
    py: Python<'py>,
    global_conf: &[(String, String)],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in global_conf {
        dict.set_item(key, value)?;
    }
    Ok(dict)
}

/// The file part of a config URI: `config:PATH`, `PATH` or `PATH#name`.
fn config_path(config_uri: &str) -> &str {
    let path = config_uri.strip_prefix("config:").unwrap_or(config_uri);
    path.split_once('#').map_or(path, |(path, _)| path)
}

/// Builds the WSGI application of a PasteDeploy file, as `pserve` does:
/// `paste.deploy.loadapp("config:PATH", name=name, relative_to=cwd,
/// global_conf=...)`. `config_uri` is a path or `config:PATH` (a `#name`
/// suffix names the app when `name` is `None`); `global_conf` are the
/// `var=value` overrides of the command line.
///
/// # Errors
/// [`LoadError::PasteNotInstalled`], [`LoadError::FileNotFound`], or
/// [`LoadError::Paste`] with the traceback (a missing section, a factory
/// that raised, ...).
pub fn load_app(
    py: Python<'_>,
    config_uri: &str,
    name: Option<&str>,
    global_conf: &[(String, String)],
) -> Result<Py<PyAny>, LoadError> {
    let internal = |error: PyErr| LoadError::Internal {
        traceback: format_traceback(py, &error),
    };
    let helper = helper(py).map_err(internal)?;
    if let Some(prefix) = missing_paste(helper).map_err(internal)? {
        return Err(LoadError::PasteNotInstalled { prefix });
    }
    let path = config_path(config_uri);
    let absolute = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
    if !absolute.is_file() {
        return Err(LoadError::FileNotFound { path: absolute });
    }
    let uri = if config_uri.starts_with("config:") {
        config_uri.to_owned()
    } else {
        format!("config:{config_uri}")
    };
    let global = global_dict(py, global_conf).map_err(internal)?;
    let app = helper
        .call_method1("load_app", (&uri, name, global))
        .map_err(|error| LoadError::Paste {
            uri: uri.clone(),
            traceback: format_traceback(py, &error),
        })?;
    if !app.is_callable() {
        return Err(LoadError::NotCallable {
            spec: uri,
            type_name: type_name(&app),
        });
    }
    Ok(app.unbind())
}

/// A `[server:NAME]` section, read but not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasteServer {
    /// The section's name as written (`server:main`).
    pub section: String,
    /// The raw `use` value (`egg:Paste#http`, `egg:gunicorn#main`, ...).
    pub use_: Option<String>,
    /// The other local settings (`[DEFAULT]` keys excluded, `get` keys
    /// resolved), interpolated, with the line of each key in the file.
    pub settings: Vec<(String, String, Option<u32>)>,
}

impl PasteServer {
    /// The value of setting `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(key, _, _)| key == name)
            .map(|(_, value, _)| value.as_str())
    }
}

/// Why a PasteDeploy file could not be read. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasteError {
    /// `paste.deploy` cannot be imported.
    NotInstalled {
        /// `sys.prefix` of the interpreter that lacks it.
        prefix: String,
    },
    /// The file does not exist.
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// There is no such server section.
    MissingSection {
        /// The file.
        path: PathBuf,
        /// The section looked for (`server:main`).
        section: String,
        /// The server sections that exist.
        available: Vec<String>,
    },
    /// The file does not parse, or a value does not interpolate.
    Invalid {
        /// The file.
        path: PathBuf,
        /// Python's message, on one line.
        message: String,
    },
}

impl fmt::Display for PasteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasteError::NotInstalled { prefix } => write!(
                f,
                "PasteDeploy is not installed in this Python (sys.prefix {prefix}): pip install PasteDeploy"
            ),
            PasteError::NotFound { path } => write!(f, "{}: no such file", path.display()),
            PasteError::MissingSection {
                path,
                section,
                available,
            } => {
                write!(f, "{}: there is no [{section}] section", path.display())?;
                if available.is_empty() {
                    write!(f, " (and no server section at all)")
                } else {
                    let list: Vec<String> =
                        available.iter().map(|name| format!("[{name}]")).collect();
                    write!(f, "; its server sections are {}", list.join(", "))
                }
            }
            PasteError::Invalid { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for PasteError {}

/// `Type: message` on one line.
fn one_line(py: Python<'_>, error: &PyErr) -> String {
    let kind = error
        .get_type(py)
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "Exception".to_owned());
    let message = error.value(py).to_string();
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{kind}: {message}")
}

/// Reads `[server:NAME]` (`NAME` default `main`) of a PasteDeploy file with
/// `paste.deploy.loadwsgi.ConfigLoader`: `here` and `__file__` defaults,
/// `[DEFAULT]`, `set`/`get` keys as `ConfigLoader.get_context` treats them,
/// and `global_conf` as `pserve`'s `var=value` arguments. The server named
/// by `use` is not imported.
///
/// # Errors
/// [`PasteError`]: PasteDeploy missing, no such file or section, a parse
/// or interpolation error.
pub fn read_server(
    py: Python<'_>,
    path: &Path,
    name: Option<&str>,
    global_conf: &[(String, String)],
) -> Result<PasteServer, PasteError> {
    let invalid = |error: PyErr| PasteError::Invalid {
        path: path.to_owned(),
        message: one_line(py, &error),
    };
    let helper = helper(py).map_err(invalid)?;
    if let Some(prefix) = missing_paste(helper).map_err(invalid)? {
        return Err(PasteError::NotInstalled { prefix });
    }
    if !path.is_file() {
        return Err(PasteError::NotFound {
            path: path.to_owned(),
        });
    }
    let global = global_dict(py, global_conf).map_err(invalid)?;
    let result = helper
        .call_method1(
            "read_server",
            (path.to_string_lossy().into_owned(), name, global),
        )
        .map_err(invalid)?;
    let (status, rest): (String, Bound<'_, PyAny>) = (
        result
            .get_item(0)
            .and_then(|s| s.extract())
            .map_err(invalid)?,
        result.get_item(1).map_err(invalid)?,
    );
    if status == "missing" {
        return Err(PasteError::MissingSection {
            path: path.to_owned(),
            section: format!("server:{}", name.unwrap_or("main")),
            available: rest.extract().unwrap_or_default(),
        });
    }
    let section: String = rest.extract().map_err(invalid)?;
    let local: Vec<(String, String, String)> = result
        .get_item(2)
        .and_then(|local| local.extract())
        .map_err(invalid)?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut use_ = None;
    let mut settings = Vec::new();
    for (key, value, option) in local {
        if key == "use" {
            use_ = Some(value);
            continue;
        }
        let line = key_line(&text, &section, &option);
        settings.push((key, value, line));
    }
    Ok(PasteServer {
        section,
        use_,
        settings,
    })
}

/// The line of `key` in `[section]` of an INI text (ConfigParser's rules:
/// `key = value` or `key: value`, continuation lines indented, `#`/`;`
/// comments).
fn key_line(text: &str, section: &str, key: &str) -> Option<u32> {
    let mut inside = false;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') && trimmed.len() >= 2 {
            inside = &trimmed[1..trimmed.len() - 1] == section;
            continue;
        }
        if !inside
            || line.starts_with([' ', '\t'])
            || trimmed.is_empty()
            || trimmed.starts_with(['#', ';'])
        {
            continue;
        }
        let end = trimmed.find(['=', ':']).unwrap_or(trimmed.len());
        if trimmed[..end].trim() == key {
            return u32::try_from(index + 1).ok();
        }
    }
    None
}

/// What `pserve` does for logging (`plaster_pastedeploy`'s
/// `setup_logging`): when the file has a `[loggers]` section,
/// `logging.config.fileConfig(path, {"__file__": path, "here": dir},
/// disable_existing_loggers=False)`. Returns whether it did (`pserve` calls
/// `logging.basicConfig()` otherwise; that is the caller's choice).
///
/// # Errors
/// [`PasteError::NotFound`], or [`PasteError::Invalid`] when the file or
/// its logging sections are wrong.
pub fn setup_logging(py: Python<'_>, path: &Path) -> Result<bool, PasteError> {
    if !path.is_file() {
        return Err(PasteError::NotFound {
            path: path.to_owned(),
        });
    }
    let invalid = |error: PyErr| PasteError::Invalid {
        path: path.to_owned(),
        message: format!("logging configuration: {}", one_line(py, &error)),
    };
    helper(py)
        .map_err(invalid)?
        .call_method1("setup_logging", (path.to_string_lossy().into_owned(),))
        .and_then(|configured| configured.extract())
        .map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines() {
        let text = "[DEFAULT]\nport = 1\n\n[server:main]\nuse = egg:Paste#http\n  continued = no\n# port = 2\nhost: 0.0.0.0\nport=%(port)s\nget x = y\n[app:main]\nport = 3\n";
        assert_eq!(key_line(text, "server:main", "use"), Some(5));
        assert_eq!(key_line(text, "server:main", "host"), Some(8));
        assert_eq!(key_line(text, "server:main", "port"), Some(9));
        assert_eq!(key_line(text, "server:main", "get x"), Some(10));
        assert_eq!(key_line(text, "server:main", "continued"), None);
        assert_eq!(key_line(text, "server:other", "port"), None);
        assert_eq!(config_path("config:a/b.ini#main"), "a/b.ini");
        assert_eq!(config_path("b.ini"), "b.ini");
    }
}
