//! `wsgi.file_wrapper` (PEP 3333 §"Optional Platform-Specific File Handling").
//!
//! An application returns `environ['wsgi.file_wrapper'](filelike, blksize)`.
//! When that object reaches the server unwrapped and `filelike` is a regular
//! file with a working `fileno()`, the response body goes out with
//! `sendfile(2)` from the file's current position; otherwise the wrapper is a
//! plain iterable of `blksize` blocks.

use std::fs::File;
use std::os::fd::FromRawFd;

use pyo3::prelude::*;
use wsgi_core::FileRegion;

/// The `wsgi.file_wrapper` type.
#[pyclass(frozen, module = "wsgi_python", name = "FileWrapper")]
#[derive(Debug)]
pub struct PyFileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl PyFileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> PyResult<Self> {
        if blksize == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "blksize must be positive",
            ));
        }
        Ok(PyFileWrapper { filelike, blksize })
    }

    /// The wrapped file-like object.
    #[getter]
    fn filelike(&self, py: Python<'_>) -> Py<PyAny> {
        self.filelike.clone_ref(py)
    }

    /// The block size used when iterating.
    #[getter]
    fn blksize(&self) -> usize {
        self.blksize
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1(pyo3::intern!(py, "read"), (self.blksize,))?;
        Ok((block.len()? > 0).then_some(block))
    }

    /// Closes the file-like object, if it has a `close()`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr(pyo3::intern!(py, "close"))? {
            filelike.call_method0(pyo3::intern!(py, "close"))?;
        }
        Ok(())
    }
}

impl PyFileWrapper {
    /// The region to `sendfile`, when the wrapped object is a regular file
    /// with a file descriptor: (a duplicate of its fd from its current
    /// position, the number of bytes from there to the end). `None` means
    /// "iterate blocks instead".
    pub(crate) fn file_region(&self, py: Python<'_>) -> Option<(FileRegion, u64)> {
        let filelike = self.filelike.bind(py);
        let fd: libc::c_int = filelike
            .call_method0(pyo3::intern!(py, "fileno"))
            .and_then(|fd| fd.extract())
            .ok()?;
        // SAFETY: fstat only writes to the zeroed struct we own; an invalid
        // fd makes it fail with EBADF, which we check.
        let stat = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut stat) != 0 {
                return None;
            }
            stat
        };
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        // The logical position: a buffered reader's OS offset may be ahead
        // of what the application has read, so ask the file object first.
        let offset = match filelike
            .call_method0(pyo3::intern!(py, "tell"))
            .and_then(|position| position.extract::<u64>())
        {
            Ok(offset) => offset,
            Err(_) => {
                // SAFETY: lseek on an fd we checked is open; no memory involved.
                let offset = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
                u64::try_from(offset).ok()?
            }
        };
        // SAFETY: `fd` is open (fstat succeeded); F_DUPFD_CLOEXEC returns a new
        // descriptor that nobody else owns, or -1.
        let duplicate = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if duplicate < 0 {
            return None;
        }
        // SAFETY: `duplicate` is a fresh descriptor owned by no one else; the
        // `File` takes ownership and closes it.
        let file = unsafe { File::from_raw_fd(duplicate) };
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let region = FileRegion {
            file,
            offset,
            len: None,
        };
        Some((region, size.saturating_sub(offset)))
    }
}
