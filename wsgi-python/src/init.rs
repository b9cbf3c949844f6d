//! Starting the embedded interpreter (feature `embed`).
//!
//! The interpreter is configured with `PyConfig` (PEP 587) rather than left
//! to guess from our binary's path:
//! - `program_name`/`executable` is the virtualenv's `bin/python` when a
//!   virtualenv is given (or `VIRTUAL_ENV` is set), else the base Python this
//!   crate was built against. CPython's path calculation then finds
//!   `pyvenv.cfg`, so `sys.prefix` is the virtualenv and its site-packages and
//!   `.pth` files load, and `sys.executable` is a real Python, which
//!   `multiprocessing` (and Celery, ...) relaunch.
//! - the virtualenv's Python version must match the linked libpython's
//!   major.minor: another version's site-packages would half-work.
//! - `sys.argv` is ours to set, and CPython does not install signal
//!   handlers (the server owns signals).

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;
use thiserror::Error;

use crate::init_info::{interpreter_info, InterpreterInfo};

/// The base interpreter found at build time (for `sys.executable` without a
/// virtualenv).
const BASE_EXECUTABLE: &str = env!("WSGI_PYTHON_BASE_EXECUTABLE");

/// How to set up the interpreter.
#[derive(Debug, Clone, Default)]
pub struct PythonConfig {
    /// The virtualenv to use; `None` falls back to the `VIRTUAL_ENV`
    /// environment variable, then to the base Python.
    pub virtualenv: Option<PathBuf>,
    /// Change to this directory before anything is imported.
    pub chdir: Option<PathBuf>,
    /// Prepended to `sys.path` (after the working directory).
    pub pythonpath: Vec<PathBuf>,
    /// `sys.argv`; left as CPython's default (`['']`) when empty.
    pub argv: Vec<String>,
}

/// Why the interpreter could not be started.
#[derive(Debug, Error)]
pub enum InitError {
    /// [`initialize`] was already called (or someone else started Python).
    #[error("the Python interpreter is already initialized in this process")]
    AlreadyInitialized,
    /// The virtualenv is not one.
    #[error("{} is not a usable virtualenv: {reason}", path.display())]
    BadVirtualenv {
        /// The virtualenv path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The virtualenv was made with another Python version.
    #[error(
        "virtualenv {} was created with Python {venv_version}, but this server is linked \
         against Python {linked_version}; recreate the virtualenv with Python {linked_version} \
         (python{linked_version} -m venv ...) or use a server built for Python {venv_version}",
        path.display()
    )]
    VersionMismatch {
        /// The virtualenv path.
        path: PathBuf,
        /// Its Python version (from `pyvenv.cfg`).
        venv_version: String,
        /// The major.minor of the linked libpython.
        linked_version: String,
    },
    /// `chdir` failed.
    #[error("cannot change directory to {}: {source}", path.display())]
    Chdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// CPython refused the configuration or failed to start.
    #[error("Python initialization failed ({step}): {message}")]
    Config {
        /// What we were doing.
        step: &'static str,
        /// CPython's message.
        message: String,
    },
    /// Setting up `sys` after start-up failed.
    #[error("Python set-up failed: {0}")]
    Setup(String),
}

/// The major.minor of the libpython we run (from `Py_GetVersion`).
fn linked_version() -> String {
    // SAFETY: Py_GetVersion is safe before initialization: it returns a
    // pointer to a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) };
    let version = version.to_string_lossy();
    let number = version.split_whitespace().next().unwrap_or_default();
    major_minor(number).unwrap_or(number).to_owned()
}

/// "3.11.7" -> "3.11".
fn major_minor(version: &str) -> Option<&str> {
    let mut dots = version.match_indices('.').map(|(index, _)| index);
    let _first = dots.next()?;
    Some(match dots.next() {
        Some(second) => &version[..second],
        None => version,
    })
}

/// Reads the virtualenv's Python version from its `pyvenv.cfg`
/// (`version = 3.11.7` from `venv`, `version_info = 3.11.7.final.0` from
/// `virtualenv`).
fn venv_version(cfg: &str) -> Option<String> {
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        (key == "version" || key == "version_info").then(|| value.trim().to_owned())
    })
}

/// Finds and checks the virtualenv; returns (its path, its python).
fn resolve_virtualenv(path: &Path) -> Result<(PathBuf, PathBuf), InitError> {
    let bad = |reason: String| InitError::BadVirtualenv {
        path: path.to_owned(),
        reason,
    };
    let venv = std::path::absolute(path).map_err(|error| bad(error.to_string()))?;
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg"))
        .map_err(|error| bad(format!("cannot read pyvenv.cfg ({error})")))?;
    // A python that exists but cannot be reached (a symlink into another
    // user's home, after --user) is named with its error, not as missing.
    let mut unusable = None;
    let python = ["python", "python3"]
        .iter()
        .map(|name| venv.join("bin").join(name))
        .find(|candidate| match std::fs::metadata(candidate) {
            Ok(_) => true,
            Err(error) => {
                if error.kind() != std::io::ErrorKind::NotFound && unusable.is_none() {
                    unusable = Some(format!("{} is not usable ({error})", candidate.display()));
                }
                false
            }
        })
        .ok_or_else(|| bad(unusable.unwrap_or_else(|| "it has no bin/python".to_owned())))?;
    let linked = linked_version();
    match venv_version(&cfg) {
        Some(version) => {
            if major_minor(&version) != Some(linked.as_str()) {
                return Err(InitError::VersionMismatch {
                    path: venv,
                    venv_version: version,
                    linked_version: linked,
                });
            }
        }
        None => {
            if !venv.join("lib").join(format!("python{linked}")).is_dir() {
                return Err(bad(format!(
                    "pyvenv.cfg has no version and there is no lib/python{linked}"
                )));
            }
        }
    }
    Ok((venv, python))
}

/// Turns a failed `PyStatus` into an error.
fn check(status: ffi::PyStatus, step: &'static str) -> Result<(), InitError> {
    // SAFETY: PyStatus_Exception only reads the struct passed by value.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        return Ok(());
    }
    let message = if status.err_msg.is_null() {
        format!("exit code {}", status.exitcode)
    } else {
        // SAFETY: a non-NULL err_msg points to a static C string.
        unsafe { CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    };
    Err(InitError::Config { step, message })
}

/// Starts CPython for this process (see the module docs), then releases the
/// GIL so other threads can attach. Call once, before any thread runs Python.
///
/// # Errors
/// [`InitError`]: a bad or mismatched virtualenv, a failed `chdir`, or
/// CPython refusing to start.
pub fn initialize(config: &PythonConfig) -> Result<InterpreterInfo, InitError> {
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Err(InitError::AlreadyInitialized);
    }
    let virtualenv = config.virtualenv.clone().or_else(|| {
        std::env::var_os("VIRTUAL_ENV")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    });
    // Resolved before chdir, so a relative path means what the user meant.
    let (venv, program) = match &virtualenv {
        Some(path) => {
            let (venv, python) = resolve_virtualenv(path)?;
            (Some(venv), python)
        }
        None => (None, PathBuf::from(BASE_EXECUTABLE)),
    };
    let pythonpath: Vec<PathBuf> = config
        .pythonpath
        .iter()
        .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()))
        .collect();
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).map_err(|source| InitError::Chdir {
            path: dir.clone(),
            source,
        })?;
    }
    start(&program)?;

    let info = Python::attach(|py| -> PyResult<Result<InterpreterInfo, InitError>> {
        let sys = py.import("sys")?;
        let path = sys.getattr("path")?.cast_into::<PyList>()?;
        let cwd = std::env::current_dir()?;
        // gunicorn's order: the working directory first, then --pythonpath.
        for entry in pythonpath.iter().rev().chain(std::iter::once(&cwd)) {
            path.insert(0, entry.to_string_lossy().into_owned())?;
        }
        if !config.argv.is_empty() {
            sys.setattr("argv", config.argv.clone())?;
        }
        let info = interpreter_info(py)?;
        if let Some(venv) = &venv {
            if Path::new(&info.prefix) != venv.as_path() {
                return Ok(Err(InitError::BadVirtualenv {
                    path: venv.clone(),
                    reason: format!(
                        "Python did not pick it up (sys.prefix is {}, sys.executable is {})",
                        info.prefix, info.executable
                    ),
                }));
            }
        }
        Ok(Ok(info))
    })
    .map_err(|error| InitError::Setup(error.to_string()))
    .and_then(|info| info);

    // Released even when the set-up failed, so no other thread can hang on
    // the GIL while the caller reports the error.
    // SAFETY: this thread holds the GIL since Py_InitializeFromConfig; we
    // release it (keeping the thread state for later attaches of this thread)
    // so executor threads can attach.
    unsafe {
        ffi::PyEval_SaveThread();
    }
    info
}

/// `Py_InitializeFromConfig` with our `PyConfig`.
fn start(program: &Path) -> Result<(), InitError> {
    let program = CString::new(program.as_os_str().as_bytes()).map_err(|_| InitError::Config {
        step: "program name",
        message: "the path contains a NUL byte".to_owned(),
    })?;
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initializes the struct.
    let mut config = unsafe {
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        config.assume_init()
    };
    // Our argv is not Python's command line.
    config.parse_argv = 0;
    // The server handles SIGINT/SIGTERM/...; Python must not take them.
    config.install_signal_handlers = 0;
    let result = (|| {
        // SAFETY: `config` was initialized above; the fields are wide-string
        // slots of that struct, and `program` is a NUL-terminated string
        // that CPython copies (decoding it with the locale).
        unsafe {
            let config_ptr: *mut ffi::PyConfig = &mut config;
            check(
                ffi::PyConfig_SetBytesString(
                    config_ptr,
                    &mut (*config_ptr).program_name,
                    program.as_ptr(),
                ),
                "program_name",
            )?;
            check(
                ffi::PyConfig_SetBytesString(
                    config_ptr,
                    &mut (*config_ptr).executable,
                    program.as_ptr(),
                ),
                "executable",
            )?;
            check(ffi::Py_InitializeFromConfig(config_ptr), "start-up")
        }
    })();
    // SAFETY: frees the strings the config owns; `config` is not used again.
    unsafe { ffi::PyConfig_Clear(&mut config) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major_minor("3.11.7"), Some("3.11"));
        assert_eq!(major_minor("3.12"), Some("3.12"));
        assert_eq!(major_minor("3"), None);
        assert_eq!(
            venv_version("home = /usr/bin\nversion = 3.11.7\n").as_deref(),
            Some("3.11.7")
        );
        assert_eq!(
            venv_version("version_info = 3.12.1.final.0").as_deref(),
            Some("3.12.1.final.0")
        );
        assert_eq!(venv_version("home = /x"), None);
    }
}
