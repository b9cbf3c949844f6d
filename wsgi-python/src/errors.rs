//! `wsgi.errors`: a text stream that writes to the server's error log
//! (PEP 3333 §"environ Variables": `write`, `writelines`, `flush`).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyString;
use wsgi_core::ErrorLog;

/// The `wsgi.errors` stream: what the application writes goes to the
/// server's [`ErrorLog`] (which queues; writing never waits on I/O).
#[pyclass(frozen, module = "wsgi_python", name = "ErrorStream")]
#[derive(Debug)]
pub struct PyErrorStream {
    log: Arc<dyn ErrorLog>,
}

impl PyErrorStream {
    /// A stream writing to `log`.
    pub fn new(log: Arc<dyn ErrorLog>) -> Self {
        PyErrorStream { log }
    }
}

#[pymethods]
impl PyErrorStream {
    /// Writes a string; returns its length, as `io.TextIOBase.write` does.
    fn write(&self, text: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text = text.cast::<PyString>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "wsgi.errors.write() argument must be str, not {}",
                crate::pyutil::type_name(text)
            ))
        })?;
        let text = text.to_string_lossy();
        self.log.write(&text);
        Ok(text.chars().count())
    }

    /// Writes each string of an iterable.
    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    /// Nothing to do: the log queues and flushes itself.
    fn flush(&self) {}
}
