//! The contract between the server and a runtime: an [`Application`] serves
//! [`Request`]s on threads the server gives it, reading the body through a
//! [`BodyReader`] and answering through a [`ResponseSink`].

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;

use bytes::Bytes;

use crate::environ::Environ;
use crate::error::{AppError, SinkError};
use crate::response::ResponseHead;

/// One request handed to an application.
#[derive(Debug)]
pub struct Request {
    /// The CGI variables.
    pub environ: Box<Environ>,
    /// The request body (`wsgi.input`).
    pub input: Box<dyn BodyReader>,
    /// Where the response goes.
    pub output: Box<dyn ResponseSink>,
}

/// Where an executor thread gets its requests from.
pub trait RequestSource: Send {
    /// Blocks until the next request; `None` when the thread must stop.
    /// A runtime with a global lock releases it around this call.
    fn next_request(&mut self) -> Option<Request>;

    /// The next request if one is already waiting, without blocking: a
    /// runtime with a global lock calls it first and releases the lock only
    /// when it has to wait (`next_request`).
    fn try_next_request(&mut self) -> Option<Request> {
        None
    }

    /// Called by the runtime when a request is finished (successfully or not),
    /// after the application's `close()`; the server uses it for accounting
    /// (timeouts, max-requests).
    fn request_done(&mut self) {}

    /// Which of the server's application threads this is (0, 1, ...): the
    /// number [`Application::interrupt_thread`] is later called with.
    fn thread_index(&self) -> usize {
        0
    }
}

/// A runtime that serves requests: CPython, or a Rust application.
pub trait Application: Send + Sync + 'static {
    /// Serves requests from `requests` on the calling thread until it returns
    /// `None`. The server calls this once on each executor thread, for the
    /// thread's whole life, so per-thread state survives between requests.
    fn serve_thread(&self, requests: &mut dyn RequestSource);

    /// The request on thread `thread_index` ran past the server's timeout
    /// (`request` names it, for the log): log that thread's stack and make
    /// the request stop (CPython: an exception raised in the thread), if
    /// the runtime can. Called from another thread; it may block while the
    /// runtime's lock is busy. `still_stuck` is asked once the runtime
    /// holds its lock, just before it acts: the request may have ended
    /// meanwhile. Returns whether the runtime acted; the default can do
    /// nothing, and the server then replaces the worker.
    fn interrupt_thread(
        &self,
        thread_index: usize,
        request: &str,
        still_stuck: &dyn Fn() -> bool,
    ) -> bool {
        let _ = (thread_index, request, still_stuck);
        false
    }
}

/// A simple per-request handler; [`HandlerApp`] turns it into an [`Application`].
pub trait Handler: Send + Sync + 'static {
    /// Serves one request.
    ///
    /// # Errors
    /// [`AppError`] makes the server answer 500 (or cut the connection if the
    /// response had started).
    fn call(&self, request: &mut Request) -> Result<(), AppError>;
}

/// An [`Application`] that calls a [`Handler`] for each request.
#[derive(Debug)]
pub struct HandlerApp<H>(pub H);

impl<H: Handler> Application for HandlerApp<H> {
    fn serve_thread(&self, requests: &mut dyn RequestSource) {
        while let Some(mut request) = requests.next_request() {
            match self.0.call(&mut request) {
                Ok(()) => {
                    // A handler that forgot to finish still ends its response.
                    let _ = request.output.finish();
                }
                Err(error) => request.output.abort(&error),
            }
            drop(request);
            requests.request_done();
        }
    }
}

/// The request body. Reads never wait; [`BodyReader::wait`] does.
pub trait BodyReader: Send + std::fmt::Debug {
    /// The buffered body bytes: `Ok(Some(bytes))` with at least one byte,
    /// `Ok(Some(empty))` at the end of the body, `Ok(None)` when nothing is
    /// buffered yet (call [`BodyReader::wait`]).
    ///
    /// # Errors
    /// The client went away or sent a malformed body.
    fn fill_buf(&mut self) -> io::Result<Option<&[u8]>>;

    /// Marks `amount` bytes of what `fill_buf` returned as read.
    fn consume(&mut self, amount: usize);

    /// Blocks until `fill_buf` has something to say. The first wait also
    /// tells the server the application wants the body (`100 Continue`).
    ///
    /// # Errors
    /// The client went away, or the body timed out.
    fn wait(&mut self) -> io::Result<()>;

    /// How many body bytes are still to be read, when the request says so
    /// (a `Content-Length`); `None` when unknown (a chunked body). A reader
    /// that knows lets the caller size its buffer once, and copy once.
    fn remaining_hint(&self) -> Option<u64> {
        None
    }

    /// Reads body bytes straight into `dst`, without waiting: `Ok(Some(n))`
    /// when the first `n` bytes of `dst` were written (at least one if `dst`
    /// is not empty), `Ok(Some(0))` at the end of the body, `Ok(None)` when
    /// nothing is at hand (call [`BodyReader::wait`]). The default copies
    /// from [`BodyReader::fill_buf`]; a reader whose bytes are still in a
    /// socket can receive them into `dst` without a buffer in between, so
    /// a caller reading into its own object (a Python `bytes`) saves a copy.
    ///
    /// # Errors
    /// As [`BodyReader::fill_buf`].
    fn read_into(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<Option<usize>> {
        let Some(buffer) = self.fill_buf()? else {
            return Ok(None);
        };
        let taken = buffer.len().min(dst.len());
        for (slot, &byte) in dst.iter_mut().zip(&buffer[..taken]) {
            slot.write(byte);
        }
        self.consume(taken);
        Ok(Some(taken))
    }

    /// Reads up to `max` bytes, waiting if needed; empty at the end.
    ///
    /// # Errors
    /// As [`BodyReader::fill_buf`] and [`BodyReader::wait`].
    fn read_blocking(&mut self, max: usize) -> io::Result<Bytes> {
        loop {
            if let Some(buffer) = self.fill_buf()? {
                let taken = Bytes::copy_from_slice(&buffer[..buffer.len().min(max)]);
                self.consume(taken.len());
                return Ok(taken);
            }
            self.wait()?;
        }
    }

    /// Reads the whole remaining body (up to `limit` bytes), waiting as needed.
    ///
    /// # Errors
    /// As [`BodyReader::read_blocking`].
    fn read_to_end_blocking(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while body.len() < limit {
            let chunk = self.read_blocking(limit - body.len())?;
            if chunk.is_empty() {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A region of an open file to send as (part of) a response body.
#[derive(Debug)]
pub struct FileRegion {
    /// The file (the runtime passes its own handle, e.g. a `dup` of the app's fd).
    pub file: File,
    /// Where to start.
    pub offset: u64,
    /// How many bytes; `None` means to the end of the file.
    pub len: Option<u64>,
}

/// The body of a request that has none: at its end from the start. A
/// zero-sized reader, so its box costs no allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyBody;

impl BodyReader for EmptyBody {
    fn fill_buf(&mut self) -> io::Result<Option<&[u8]>> {
        Ok(Some(&[]))
    }

    fn consume(&mut self, _amount: usize) {}

    fn wait(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn remaining_hint(&self) -> Option<u64> {
        Some(0)
    }
}

/// Where a response goes. Nothing here waits but [`ResponseSink::wait`].
///
/// PEP 3333 delays the head until the first non-empty body chunk; the
/// runtime calls [`ResponseSink::start`] then, or at the end for an empty body.
pub trait ResponseSink: Send + std::fmt::Debug {
    /// Commits the response head.
    ///
    /// # Errors
    /// [`SinkError::Disconnected`] if the client went away, or misuse.
    fn start(&mut self, head: ResponseHead) -> Result<(), SinkError>;

    /// Queues a body chunk.
    ///
    /// # Errors
    /// [`SinkError::Disconnected`] if the client went away.
    fn send(&mut self, chunk: Bytes) -> Result<(), SinkError>;

    /// Queues a file region (sent with `sendfile(2)` where the transport allows).
    ///
    /// # Errors
    /// [`SinkError::Disconnected`], or a file error.
    fn send_file(&mut self, region: FileRegion) -> Result<(), SinkError>;

    /// Whether enough is queued that the runtime should [`ResponseSink::wait`]
    /// before producing more (the backpressure point of a response).
    fn must_wait(&self) -> bool;

    /// Blocks until the queued output drains below the budget.
    ///
    /// # Errors
    /// [`SinkError::Disconnected`] if the client went away.
    fn wait(&mut self) -> Result<(), SinkError>;

    /// Ends the response successfully.
    ///
    /// # Errors
    /// [`SinkError::Disconnected`] if the client went away.
    fn finish(&mut self) -> Result<(), SinkError>;

    /// The body's last chunk: [`send`](Self::send), then
    /// [`finish`](Self::finish), which a sink may do in one step (a body
    /// returned whole, as most are). The runtime still asks
    /// [`must_wait`](Self::must_wait) afterwards.
    ///
    /// # Errors
    /// As `send` and `finish`.
    fn send_last(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.send(chunk)?;
        self.finish()
    }

    /// [`send_last`](Self::send_last) from a runtime that has nothing left
    /// to run for the request (no `close()` on the application's result,
    /// no hook after the response): the request ends as soon as this
    /// returns. A connection that closes after its response may then leave
    /// its end to the socket's close, which follows at once, instead of
    /// signalling it separately (one system call less).
    ///
    /// # Errors
    /// As `send_last`.
    fn send_last_and_return(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        self.send_last(chunk)
    }

    /// Ends the response after an application error: a 500 if the head was
    /// not sent yet, otherwise the connection is cut.
    fn abort(&mut self, error: &AppError);

    /// Whether the head was committed by [`ResponseSink::start`].
    fn is_started(&self) -> bool;
}

/// The server's error log as a runtime sees it (`wsgi.errors`, tracebacks).
/// Implementations must not block on I/O for long: they queue.
pub trait ErrorLog: Send + Sync + std::fmt::Debug {
    /// Writes text to the error log as it is (`wsgi.errors`).
    fn write(&self, text: &str);

    /// Logs an error of the runtime's own (a failed request and its
    /// traceback): the server adds its time, pid and level prefix.
    fn error(&self, message: &str) {
        self.write(message);
    }
}

/// An [`ErrorLog`] on standard error, for tests and simple embeddings.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrLog;

impl ErrorLog for StderrLog {
    fn write(&self, text: &str) {
        use std::io::Write;
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }
}

impl<T: ErrorLog + ?Sized> ErrorLog for Arc<T> {
    fn write(&self, text: &str) {
        (**self).write(text);
    }

    fn error(&self, message: &str) {
        (**self).error(message);
    }
}

#[cfg(test)]
mod tests {
    use super::{BodyReader, EmptyBody};

    /// At its end at once, however it is read, and boxed without an
    /// allocation (zero-sized).
    #[test]
    fn empty_body_is_at_its_end() {
        assert_eq!(std::mem::size_of::<EmptyBody>(), 0);
        let mut body: Box<dyn BodyReader> = Box::new(EmptyBody);
        assert_eq!(body.remaining_hint(), Some(0));
        assert_eq!(body.fill_buf().unwrap(), Some(&[][..]));
        body.wait().unwrap();
        assert!(body.read_blocking(10).unwrap().is_empty());
        let mut buffer = [std::mem::MaybeUninit::new(0u8); 4];
        assert_eq!(body.read_into(&mut buffer).unwrap(), Some(0));
    }
}
