//! Pure-Rust applications for testing and measuring a server without Python.
//!
//! - `hello`: every request gets `200 OK`, `text/plain`, `Hello, World!`.
//! - `echo`: `GET /big` streams 1 MiB in 64 KiB chunks; `POST /upload` reads
//!   the body and answers its length (as the benchmark's `echo.py`); other
//!   requests with a body get it back; `/fail` fails before the response,
//!   `/fail-late` after its first chunk; `/environ` lists the CGI variables;
//!   `/slow?MS` answers `slow` after MS milliseconds (default 1000);
//!   `/rendezvous?N` waits until N requests are inside it at once and
//!   answers `met`, or `alone` if they are not within 10 s (so a test
//!   proves requests ran in parallel by their being inside together, not
//!   by a duration);
//!   `/blob?N` answers N bytes (default 1 MiB) in one piece;
//!   `/content-length?A,B,...` answers `x` times the first value with one
//!   `Content-Length` header per value, through [`ResponseHead::new`] (which
//!   refuses values that differ: the app fails); `/raw-head?A,B,...` does
//!   the same with a head built field by field, unchecked, so the server's
//!   own guard is what a bad head meets; `/calls` answers how many
//!   requests this app was called with before (so a test can show that a
//!   refused request never reached it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::app::{Application, Handler, HandlerApp, Request};
use crate::error::AppError;
use crate::response::ResponseHead;

/// The names [`app_by_name`] knows.
pub const APP_NAMES: [&str; 2] = ["hello", "echo"];

/// A built-in application by name (`hello`, `echo`).
pub fn app_by_name(name: &str) -> Option<Arc<dyn Application>> {
    match name {
        "hello" => Some(Arc::new(HandlerApp(Hello))),
        "echo" => Some(Arc::new(HandlerApp(Echo::default()))),
        _ => None,
    }
}

/// Answers `Hello, World!` to everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hello;

impl Handler for Hello {
    fn call(&self, request: &mut Request) -> Result<(), AppError> {
        const BODY: &[u8] = b"Hello, World!";
        let head = text_head(BODY.len());
        request.output.start(head)?;
        request.output.send(Bytes::from_static(BODY))?;
        request.output.finish()?;
        Ok(())
    }
}

/// Echoes bodies, streams, and fails on demand (see the module docs).
#[derive(Debug, Default)]
pub struct Echo {
    /// Requests this app was called with.
    calls: AtomicU64,
    /// `/rendezvous`: requests inside it (of the current group), and the
    /// groups that met so far.
    rendezvous: Mutex<(usize, u64)>,
    met: Condvar,
}

impl Echo {
    /// Waits until `size` requests are inside at once; whether they were
    /// within 10 s.
    fn rendezvous(&self, size: usize) -> bool {
        let mut state = self.rendezvous.lock().unwrap_or_else(|p| p.into_inner());
        let group = state.1;
        state.0 += 1;
        if state.0 >= size {
            *state = (0, group + 1);
            self.met.notify_all();
            return true;
        }
        let (mut state, _) = self
            .met
            .wait_timeout_while(state, Duration::from_secs(10), |state| state.1 == group)
            .unwrap_or_else(|p| p.into_inner());
        if state.1 == group {
            state.0 -= 1;
            return false;
        }
        true
    }
}

impl Handler for Echo {
    fn call(&self, request: &mut Request) -> Result<(), AppError> {
        let before = self.calls.fetch_add(1, Ordering::Relaxed);
        let path = request.environ.path_info.clone();
        let output = &mut request.output;
        match &path[..] {
            b"/calls" => {
                let count = before.to_string();
                output.start(text_head(count.len()))?;
                output.send(Bytes::from(count))?;
            }
            b"/big" => {
                let head = ResponseHead::new(
                    b"200 OK",
                    vec![(
                        Bytes::from_static(b"Content-Type"),
                        Bytes::from_static(b"application/octet-stream"),
                    )],
                )
                .map_err(|error| AppError::new(error.to_string()))?;
                output.start(head)?;
                let block = Bytes::from(vec![b'x'; 64 * 1024]);
                for _ in 0..16 {
                    output.send(block.clone())?;
                    if output.must_wait() {
                        output.wait()?;
                    }
                }
            }
            b"/slow" => {
                let millis = std::str::from_utf8(&request.environ.query_string)
                    .ok()
                    .and_then(|query| query.parse::<u64>().ok())
                    .unwrap_or(1000);
                std::thread::sleep(std::time::Duration::from_millis(millis));
                output.start(text_head(4))?;
                output.send(Bytes::from_static(b"slow"))?;
            }
            b"/rendezvous" => {
                let size = std::str::from_utf8(&request.environ.query_string)
                    .ok()
                    .and_then(|query| query.parse::<usize>().ok())
                    .unwrap_or(2);
                let answer: &'static [u8] = if self.rendezvous(size) {
                    b"met"
                } else {
                    b"alone"
                };
                output.start(text_head(answer.len()))?;
                output.send(Bytes::from_static(answer))?;
            }
            b"/blob" => {
                let size = std::str::from_utf8(&request.environ.query_string)
                    .ok()
                    .and_then(|query| query.parse::<usize>().ok())
                    .unwrap_or(1024 * 1024);
                output.start(text_head(size))?;
                output.send(Bytes::from(
                    (0..size)
                        .map(|at| b'a' + (at % 26) as u8)
                        .collect::<Vec<u8>>(),
                ))?;
            }
            b"/content-length" | b"/raw-head" => {
                let values: Vec<Bytes> = request
                    .environ
                    .query_string
                    .split(|&b| b == b',')
                    .map(Bytes::copy_from_slice)
                    .collect();
                let length = std::str::from_utf8(&values[0])
                    .ok()
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let headers = values
                    .into_iter()
                    .map(|value| (Bytes::from_static(b"Content-Length"), value))
                    .collect();
                let head = if &path[..] == b"/raw-head" {
                    ResponseHead {
                        status: 200,
                        reason: Bytes::from_static(b"OK"),
                        headers,
                        content_length: Some(length as u64),
                    }
                } else {
                    ResponseHead::new(b"200 OK", headers)
                        .map_err(|error| AppError::new(error.to_string()))?
                };
                output.start(head)?;
                output.send(Bytes::from(vec![b'x'; length]))?;
            }
            b"/fail" => return Err(AppError::new("failure requested by /fail")),
            b"/fail-late" => {
                let head = ResponseHead::new(b"200 OK", Vec::new())
                    .map_err(|error| AppError::new(error.to_string()))?;
                output.start(head)?;
                output.send(Bytes::from_static(b"partial"))?;
                return Err(AppError::new("failure requested by /fail-late"));
            }
            b"/environ" => {
                let mut listing = Vec::new();
                for (key, value) in request.environ.cgi_vars() {
                    listing.extend_from_slice(key);
                    listing.push(b'=');
                    listing.extend_from_slice(value);
                    listing.push(b'\n');
                }
                output.start(text_head(listing.len()))?;
                output.send(Bytes::from(listing))?;
            }
            _ => {
                let body = request
                    .input
                    .read_to_end_blocking(usize::MAX)
                    .map_err(|error| AppError::new(format!("reading the body: {error}")))?;
                let body = if &path[..] == b"/upload" {
                    body.len().to_string().into_bytes()
                } else {
                    body
                };
                request.output.start(text_head(body.len()))?;
                request.output.send(Bytes::from(body))?;
            }
        }
        request.output.finish()?;
        Ok(())
    }
}

fn text_head(length: usize) -> ResponseHead {
    ResponseHead {
        status: 200,
        reason: Bytes::from_static(b"OK"),
        headers: vec![
            (
                Bytes::from_static(b"Content-Type"),
                Bytes::from_static(b"text/plain"),
            ),
            (
                Bytes::from_static(b"Content-Length"),
                Bytes::from(length.to_string()),
            ),
        ],
        content_length: Some(length as u64),
    }
}
