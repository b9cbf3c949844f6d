//! The environ dict (PEP 3333 §"environ Variables") built from a
//! [`wsgi_core::Environ`].
//!
//! Each executor thread keeps a template dict with the keys that never change
//! (`wsgi.version`, `wsgi.errors`, `SERVER_SOFTWARE`, ...) and copies it per
//! request (`PyDict_Copy`, the bjoern/pyruvate approach). The CGI keys are
//! interned once (`pyo3::intern!`); `HTTP_*` and extra keys come from a
//! bounded per-thread cache. Values are latin-1 strings decoded from the raw
//! bytes, so no byte is lost. `os.environ` is never merged in.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use wsgi_core::{Environ, UrlScheme, SERVER_SOFTWARE};

use crate::errors::PyErrorStream;
use crate::file_wrapper::PyFileWrapper;
use crate::input::PyInput;
use crate::pyutil::{latin1_interned, latin1_str};
use crate::serve::AppOptions;

/// How many distinct `HTTP_*`/extra keys a thread remembers. Requests with
/// other keys still work; their keys are built each time.
const MAX_CACHED_KEYS: usize = 512;
/// Longer keys are not cached (a client inventing long header names must not
/// fill the cache with them).
const MAX_CACHED_KEY_LEN: usize = 64;

/// Per-thread environ machinery. Holds Python objects: create and drop it
/// while attached.
pub(crate) struct EnvironBuilder {
    template: Py<PyDict>,
    keys: HashMap<Bytes, Py<PyString>>,
}

impl EnvironBuilder {
    /// Builds the template dict for one executor thread.
    pub(crate) fn new(py: Python<'_>, options: &AppOptions) -> PyResult<Self> {
        let template = PyDict::new(py);
        template.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
        template.set_item(
            intern!(py, "wsgi.errors"),
            Bound::new(py, PyErrorStream::new(Arc::clone(&options.error_log)))?,
        )?;
        template.set_item(intern!(py, "wsgi.multithread"), options.multithread)?;
        template.set_item(intern!(py, "wsgi.multiprocess"), options.multiprocess)?;
        template.set_item(intern!(py, "wsgi.run_once"), false)?;
        template.set_item(
            intern!(py, "wsgi.file_wrapper"),
            py.get_type::<PyFileWrapper>(),
        )?;
        template.set_item(intern!(py, "wsgi.input_terminated"), true)?;
        template.set_item(intern!(py, "SERVER_SOFTWARE"), SERVER_SOFTWARE)?;
        Ok(EnvironBuilder {
            template: template.unbind(),
            keys: HashMap::new(),
        })
    }

    /// The key string for a variable name, from the cache when possible.
    fn key<'py>(&mut self, py: Python<'py>, name: &Bytes) -> PyResult<Bound<'py, PyString>> {
        if let Some(key) = self.keys.get(name) {
            return Ok(key.bind(py).clone());
        }
        let key = latin1_interned(py, name)?;
        if self.keys.len() < MAX_CACHED_KEYS && name.len() <= MAX_CACHED_KEY_LEN {
            self.keys.insert(name.clone(), key.clone().unbind());
        }
        Ok(key)
    }

    /// The environ dict of one request.
    pub(crate) fn build<'py>(
        &mut self,
        py: Python<'py>,
        environ: &Environ,
        input: &Bound<'py, PyInput>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = self.template.bind(py).copy()?;
        let set = |key: &Bound<'py, PyString>, value: &[u8]| -> PyResult<()> {
            dict.set_item(key, latin1_str(py, value)?)
        };
        let method = &environ.request_method[..];
        match method {
            b"GET" => dict.set_item(intern!(py, "REQUEST_METHOD"), intern!(py, "GET"))?,
            b"POST" => dict.set_item(intern!(py, "REQUEST_METHOD"), intern!(py, "POST"))?,
            _ => set(intern!(py, "REQUEST_METHOD"), method)?,
        }
        set(intern!(py, "SCRIPT_NAME"), &environ.script_name)?;
        set(intern!(py, "PATH_INFO"), &environ.path_info)?;
        set(intern!(py, "QUERY_STRING"), &environ.query_string)?;
        let uri = latin1_str(py, &environ.request_uri)?;
        dict.set_item(intern!(py, "REQUEST_URI"), &uri)?;
        dict.set_item(intern!(py, "RAW_URI"), &uri)?;
        match &environ.server_protocol[..] {
            b"HTTP/1.1" => {
                dict.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.1"))?
            }
            protocol => set(intern!(py, "SERVER_PROTOCOL"), protocol)?,
        }
        set(intern!(py, "SERVER_NAME"), &environ.server_name)?;
        set(intern!(py, "SERVER_PORT"), &environ.server_port)?;
        set(intern!(py, "REMOTE_ADDR"), &environ.remote_addr)?;
        set(intern!(py, "REMOTE_PORT"), &environ.remote_port)?;
        if let Some(content_type) = &environ.content_type {
            set(intern!(py, "CONTENT_TYPE"), content_type)?;
        }
        if let Some(content_length) = &environ.content_length {
            set(intern!(py, "CONTENT_LENGTH"), content_length)?;
        }
        for (name, value) in environ.headers.iter().chain(environ.extra.iter()) {
            let key = self.key(py, name)?;
            set(&key, value)?;
        }
        let scheme = match environ.url_scheme {
            UrlScheme::Http => intern!(py, "http"),
            UrlScheme::Https => intern!(py, "https"),
        };
        dict.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
        dict.set_item(intern!(py, "wsgi.input"), input)?;
        Ok(dict)
    }
}
