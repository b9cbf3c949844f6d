//! The crate's set-up calls for a server that holds no `Python<'py>` token
//! (and must not name pyo3 types): each attaches to the interpreter itself.

use std::path::{Path, PathBuf};

use pyo3::prelude::*;

use crate::conf::{ConfError, ConfFile};
use crate::paste::{PasteError, PasteServer};
use crate::serve::{AppOptions, PyApplication};
use crate::LoadError;

/// [`conf::exec_config`](crate::conf::exec_config), attached.
///
/// # Errors
/// As `exec_config`.
pub fn exec_config(spec: &str) -> Result<ConfFile, ConfError> {
    Python::attach(|py| crate::conf::exec_config(py, spec))
}

/// [`paste::read_server`](crate::paste::read_server), attached.
///
/// # Errors
/// As `read_server`.
pub fn read_paste_server(
    path: &Path,
    name: Option<&str>,
    global_conf: &[(String, String)],
) -> Result<PasteServer, PasteError> {
    Python::attach(|py| crate::paste::read_server(py, path, name, global_conf))
}

/// [`paste::setup_logging`](crate::paste::setup_logging), attached.
///
/// # Errors
/// As `setup_logging`.
pub fn setup_paste_logging(path: &Path) -> Result<bool, PasteError> {
    Python::attach(|py| crate::paste::setup_logging(py, path))
}

/// An application built by PasteDeploy ([`paste::load_app`](crate::paste::load_app)).
///
/// # Errors
/// As `load_app`.
pub fn load_paste_app(
    config_uri: &str,
    name: Option<&str>,
    global_conf: &[(String, String)],
    options: AppOptions,
) -> Result<PyApplication, LoadError> {
    Python::attach(|py| {
        PyApplication::prepare_import(py, &options);
        crate::paste::load_app(py, config_uri, name, global_conf)
    })
    .map(|app| PyApplication::from_callable(app, options))
}

/// [`module_files`](crate::module_files), attached.
pub fn module_files() -> Vec<PathBuf> {
    Python::attach(crate::module_files)
}

/// Sets the process's working directory and puts `pythonpath` (then the
/// new working directory) first on `sys.path`, as [`initialize`](crate::initialize)
/// does: for a worker whose interpreter was started by its master with
/// settings that the configuration files have since changed.
///
/// # Errors
/// The directory change or Python failed, as text.
pub fn apply_paths(chdir: Option<&Path>, pythonpath: &[PathBuf]) -> Result<(), String> {
    let pythonpath: Vec<PathBuf> = pythonpath
        .iter()
        .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
        .collect();
    if let Some(dir) = chdir {
        std::env::set_current_dir(dir)
            .map_err(|error| format!("cannot change directory to {}: {error}", dir.display()))?;
    }
    Python::attach(|py| -> PyResult<()> {
        let path = py.import("sys")?.getattr("path")?;
        let cwd = std::env::current_dir()?;
        for entry in pythonpath.iter().rev().chain(std::iter::once(&cwd)) {
            let text = entry.to_string_lossy().into_owned();
            if path.contains(&text)? {
                continue;
            }
            path.call_method1("insert", (0, text))?;
        }
        Ok(())
    })
    .map_err(|error| error.to_string())
}

/// Sets variables in `os.environ` (and so in the process environment): for
/// an interpreter started before the configuration that names them was
/// read, whose `os.environ` no longer follows the process's.
///
/// # Errors
/// Python failed, as text.
pub fn set_environ(vars: &[(String, String)]) -> Result<(), String> {
    if vars.is_empty() {
        return Ok(());
    }
    Python::attach(|py| -> PyResult<()> {
        let environ = py.import("os")?.getattr("environ")?;
        for (key, value) in vars {
            environ.set_item(key, value)?;
        }
        Ok(())
    })
    .map_err(|error| error.to_string())
}

/// Configures Python logging from a file, as gunicorn's `--log-config`
/// (`logging.config.fileConfig`, existing loggers kept) or
/// `--log-config-json` (`logging.config.dictConfig` of the JSON object).
///
/// # Errors
/// The file is missing or wrong, as one line.
pub fn configure_logging(path: &Path, json: bool) -> Result<(), String> {
    Python::attach(|py| -> PyResult<()> {
        let config = py.import("logging.config")?;
        let path = path.to_string_lossy().into_owned();
        if json {
            let loaded = py
                .import("json")?
                .call_method1("loads", (std::fs::read_to_string(&path)?,))?;
            config.call_method1("dictConfig", (loaded,))?;
        } else {
            let options = pyo3::types::PyDict::new(py);
            options.set_item("disable_existing_loggers", false)?;
            config.call_method("fileConfig", (path,), Some(&options))?;
        }
        Ok(())
    })
    .map_err(|error| format!("{}: {error}", path.display()))
}

/// A WSGI callable handed over by whoever runs the interpreter (the Python
/// package's `serve(app)`), for a server that must not name pyo3 types.
/// A forked worker holds its own copy of the object, so it is served there
/// without importing anything again.
#[derive(Debug)]
pub struct GivenApp(Py<PyAny>);

impl GivenApp {
    /// Wraps `app`.
    pub fn new(app: Py<PyAny>) -> GivenApp {
        GivenApp(app)
    }

    /// The callable as an application served with `options`.
    pub fn application(&self, options: AppOptions) -> PyApplication {
        Python::attach(|py| PyApplication::from_callable(self.0.clone_ref(py), options))
    }
}

/// [`interpreter_info`](crate::interpreter_info), attached.
///
/// # Errors
/// As `interpreter_info`, as text.
pub fn interpreter_info() -> Result<crate::InterpreterInfo, String> {
    Python::attach(crate::interpreter_info).map_err(|error| error.to_string())
}
