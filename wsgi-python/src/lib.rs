//! wsgi-python: CPython behind the `wsgi-core` application contract.
//!
//! - [`initialize`] (feature `embed`) starts the interpreter the way a server
//!   must: the user's virtualenv, a real `sys.executable`, `sys.path` as
//!   gunicorn sets it.
//! - [`PyApplication::load`] imports an application from a gunicorn-style
//!   spec (`module:callable`, `module:factory('arg')`, `path/app.py:app`).
//! - [`conf::exec_config`] runs a gunicorn configuration file,
//!   [`hooks::ServerHooks`] calls its server hooks, and [`paste`] loads
//!   PasteDeploy applications and reads `[server:main]`.
//! - [`PyApplication`] implements [`wsgi_core::Application`]: each executor
//!   thread attaches to the interpreter once, for life, and serves requests
//!   with PEP 3333 semantics (`environ`, `start_response` with `exc_info` and
//!   `write`, `wsgi.input`, `wsgi.errors`, `wsgi.file_wrapper` with
//!   `sendfile`, and `close()` whatever happens).
//!
//! Built against pyo3 0.30, whose `Python::attach` / `Python::detach` were
//! called `with_gil` / `allow_threads` before 0.26. Everything except
//! [`initialize`] only needs a `Python<'py>` token, so the crate also works
//! inside an extension module whose interpreter someone else started.
//!
//! # The GIL
//! An executor thread holds the GIL while it serves a request and releases it
//! only where it has to wait: for the next request, for request body bytes
//! that have not arrived, and for a full response queue to drain.
#![deny(missing_docs)]

pub mod attached;
pub mod conf;
mod environ;
mod errors;
mod file_wrapper;
pub mod fork;
pub mod hooks;
pub mod image;
#[cfg(feature = "embed")]
mod init;
mod input;
mod interrupt;
mod load;
mod modules;
pub mod paste;
mod pyutil;
mod response;
mod serve;

pub use attached::GivenApp;
pub use errors::PyErrorStream;
pub use file_wrapper::PyFileWrapper;
#[cfg(feature = "embed")]
pub use init::{initialize, InitError, PythonConfig};
pub use init_info::{interpreter_info, InterpreterInfo};
pub use input::PyInput;
pub use interrupt::RequestTimeout;
pub use load::LoadError;
pub use modules::{is_initialized, module_files};
pub use response::PyResponse;
pub use serve::{AppOptions, PyApplication};

mod init_info;
