//! Request bodies read whole on the I/O thread before the application is
//! called, so a slow client costs a connection task and its bytes, never an
//! application thread (`--body-buffer-size`, `--body-buffer-memory`,
//! `--body-spool-size`, `--stream-request-body`).
//!
//! # Theory of operation
//! A body whose `Content-Length` is at most the bound, or a chunked one
//! while it stays below it, is decoded into the request's [`Exchange`]
//! before the request is queued; a larger one up to `--body-spool-size` is
//! written to an unlinked temporary file first (the application reads it
//! from there: [`crate::exchange::AppBody::spooled`]), and one larger
//! still is streamed as before (the application starts at the head and
//! reads as bytes arrive).
//!
//! A body kept in memory with a `Content-Length` first reserves its length
//! from the worker's [`BodyBudget`]: when the budget is spent, the
//! connection waits there, holding none and reading nothing (TCP pushes
//! back), until a finished request gives its share back. Reserving the
//! whole length at once is what keeps waiters from deadlocking: requests
//! that each held part of their body and waited for the rest could wait on
//! each other for ever (measured: 1,000 uploads of 60 of 100 kB against a
//! 64 KiB budget never finished). A chunked body reserves read by read and
//! never waits: past the bound, or when memory is short, it moves to a
//! file. Its reads start at `FIRST_READ` bytes and double while the
//! client keeps up, so a trickling client gets a small buffer and a fast
//! upload reads in `LAST_READ` steps. A reserved body is read into one
//! buffer of its remaining length, apart from the connection's read buffer
//! (`read_declared`). Bodies that came whole with the head cost one feed
//! and no reservation. A rest of at least `IN_SOCKET_MIN` bytes that is in
//! the socket's receive queue already (`FIONREAD`) is not read here at
//! all: the codec counts it as read, and the application thread receives
//! it from the socket straight into its own object (a Python `bytes`), so
//! the body is copied once, by the kernel; the connection takes the socket
//! back after the response and discards what the application left
//! (`Exchange::leave_in_socket`). The rule above still holds: those bytes
//! are here, so no client can make that thread wait for them.
//!
//! Like nginx, which answers `Expect: 100-continue` when it starts reading
//! the body it buffers, the `100 Continue` goes out before the first read;
//! a streamed body keeps the old rule (at the application's first read).
//! A body that stalls for `--body-timeout` while buffering is answered 408
//! (RFC 9110 §15.5.9); a malformed one with the codec's status (400, 413).

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::time::timeout;

use std::fs::File;
use std::io::{self, Seek, Write};

use crate::config::BodyBuffering;
use crate::exchange::Exchange;
use crate::request::{flush, read_some, BodyDecoder, BodyEvent, BodyState, Shared, Transport};

/// The first read of a buffered body: most of a small body came with the
/// head, and a trickling client should hold little budget.
const FIRST_READ: usize = 4 * 1024;
/// The largest read: the connection's body read size.
const LAST_READ: usize = 64 * 1024;

/// Body bytes a worker may hold buffered, all requests together.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: Semaphore,
}

impl BodyBudget {
    /// A budget of `bytes` (capped at what a semaphore can count).
    pub fn new(bytes: usize) -> Self {
        BodyBudget {
            bytes: Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)),
        }
    }
}

/// One request's share of the budget, given back when it is dropped (when
/// the request is over: the application may hold the bytes until then).
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a BodyBudget,
    held: usize,
}

impl<'a> Reservation<'a> {
    /// Holds nothing yet.
    pub fn new(budget: &'a BodyBudget) -> Self {
        Reservation { budget, held: 0 }
    }

    /// Whether any of the budget is held.
    pub fn holds_any(&self) -> bool {
        self.held > 0
    }

    async fn reserve(&mut self, bytes: usize) -> bool {
        let Ok(count) = u32::try_from(bytes) else {
            return false;
        };
        match self.budget.bytes.acquire_many(count).await {
            Ok(permit) => {
                permit.forget();
                self.held += bytes;
                true
            }
            Err(_closed) => false,
        }
    }

    fn try_reserve(&mut self, bytes: usize) -> bool {
        let Ok(count) = u32::try_from(bytes) else {
            return false;
        };
        match self.budget.bytes.try_acquire_many(count) {
            Ok(permit) => {
                permit.forget();
                self.held += bytes;
                true
            }
            Err(_) => false,
        }
    }

    fn give_back(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        if bytes > 0 {
            self.budget.bytes.add_permits(bytes);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.give_back(self.held);
    }
}

/// How buffering ended.
#[derive(Debug)]
pub enum Buffered {
    /// The body is in the exchange (whole, or up to the bound and the rest
    /// streamed), or it is not buffered at all: call the application.
    Ready,
    /// The body is in this unlinked file, at its start (whole, or up to
    /// `--body-spool-size` and the rest streamed through the exchange).
    Spooled(File),
    /// Answer this status and close; the application is not called.
    Refused(u16),
    /// The client went away: close.
    Closed,
}

/// The largest body kept in memory: a body larger than the whole budget
/// could never be reserved.
fn memory_limit(settings: &BodyBuffering) -> u64 {
    settings.max_size.min(settings.memory as u64)
}

/// Whether this body is read whole before the application is called;
/// `path` is the request's `PATH_INFO`.
pub fn wanted(shared: &Shared, body: &BodyState, path: &[u8]) -> bool {
    let settings = &shared.body_buffering;
    !body.done
        && !settings.stream
        && !settings
            .stream_paths
            .iter()
            .any(|prefix| path.starts_with(prefix.as_bytes()))
        && body.length.map_or(true, |length| {
            length <= memory_limit(settings) || length <= settings.spool_max
        })
}

/// Reads the body into `exchange` until it ends, or (chunked) until it
/// passes the bound; see the module docs.
#[allow(clippy::too_many_arguments)]
pub async fn buffer_body<S: Transport, P: BodyDecoder>(
    stream: &mut S,
    protocol: &mut P,
    read_buf: &mut BytesMut,
    write_buf: &mut BytesMut,
    body: &mut BodyState,
    exchange: &Exchange,
    shared: &Shared,
    reservation: &mut Reservation<'_>,
) -> Buffered {
    let settings = &shared.body_buffering;
    let max_size = usize::try_from(memory_limit(settings)).unwrap_or(usize::MAX);
    let spool = body
        .length
        .is_some_and(|length| length > memory_limit(settings));
    if spool {
        if let Some(buffered) = flush_continue(stream, protocol, write_buf, body).await {
            return buffered;
        }
        // What came with the head is in the exchange: it goes first.
        let buffered = exchange.take_body();
        return spool_body(stream, protocol, read_buf, body, exchange, shared, buffered).await;
    }
    if let Some(length) = body.length {
        // The whole body at once: a request waiting for memory then holds
        // none, and requests holding part of what they need cannot wait on
        // each other for ever. Waiting is bounded like a stalled body: a
        // worker whose budget stays spent that long is overloaded (503).
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        match timeout(shared.timeouts.body, reservation.reserve(length)).await {
            Ok(true) => {}
            Ok(false) => return Buffered::Closed,
            Err(_elapsed) => return Buffered::Refused(503),
        }
    }
    // `100 Continue` goes once the memory for the body is ours.
    if let Some(buffered) = flush_continue(stream, protocol, write_buf, body).await {
        return buffered;
    }
    if body.length.is_some() {
        return read_declared(stream, protocol, read_buf, body, exchange, shared).await;
    }
    // Chunked: small first reads, doubled while the client keeps up.
    let mut step = FIRST_READ;
    loop {
        body.feed(protocol, read_buf, exchange);
        if body.done {
            break;
        }
        // Reserve read by read, without waiting (a wait while holding part
        // would risk the deadlock above). Past the bound, or when memory is
        // short, the body moves to a file (or, with no spooling, the rest
        // is streamed).
        if reservation.held >= max_size || !reservation.try_reserve(step) {
            if settings.spool_max == 0 {
                return Buffered::Ready;
            }
            // What memory holds goes first into the file.
            let buffered = exchange.take_body();
            reservation.give_back(reservation.held);
            return spool_body(stream, protocol, read_buf, body, exchange, shared, buffered).await;
        }
        read_buf.reserve(step);
        let read = timeout(
            shared.timeouts.body,
            (&mut *stream).take(step as u64).read_buf(read_buf),
        )
        .await;
        let read = match read {
            Ok(Ok(read)) => read,
            Ok(Err(_)) => return Buffered::Closed,
            Err(_elapsed) => return Buffered::Refused(408),
        };
        reservation.give_back(step - read);
        if read == 0 {
            body.feed_eof(protocol, read_buf, exchange);
            break;
        }
        if read == step {
            step = (step * 2).min(LAST_READ);
        }
    }
    outcome(body)
}

/// Reads the rest of a `Content-Length` body (its memory reserved) into a
/// buffer of exactly that size, not into the connection's read buffer:
/// every chunk handed to the application shares that one allocation, which
/// goes when the application is done with the body. Read into the read
/// buffer, a 64 KiB upload took a fresh 64 KiB step per read (the buffer
/// was shared with the chunks already handed over), and the step's unused
/// tail stayed with the connection to hold the next request's head, so
/// pinning the whole step for that request's life (mimalloc's arena at 16
/// uploads in flight: 4.5 -> 2.7 MiB).
async fn read_declared<S: Transport, P: BodyDecoder>(
    stream: &mut S,
    protocol: &mut P,
    read_buf: &mut BytesMut,
    body: &mut BodyState,
    exchange: &Exchange,
    shared: &Shared,
) -> Buffered {
    // What came with the head (a `Content-Length` body takes all of it
    // until it is whole: anything after the body stays in `read_buf`).
    body.feed(protocol, read_buf, exchange);
    let rest = body
        .length
        .map_or(0, |length| length.saturating_sub(body.received));
    // Asked only when the read that brought the head filled its room (the
    // body took the rest of the buffer: no spare capacity is left, a split
    // keeping it as it was). A read that did not found the socket drained,
    // and the rest of a body this large is then rarely in already.
    let filled = read_buf.is_empty() && read_buf.capacity() == 0;
    let queued = if P::SKIPS_BODY && rest >= IN_SOCKET_MIN && filled {
        queued(stream.as_raw_fd()).unwrap_or(0)
    } else {
        0
    };
    if queued >= rest && rest > 0 && protocol.skip_body(rest) {
        // The rest is in the socket's receive queue already: it stays
        // there, and the application thread receives it straight into its
        // own object (`Exchange::leave_in_socket`), one copy less; a slow
        // client cannot hold that thread, the bytes being here.
        if queued == rest {
            // Nothing behind it is ours: the next head is waited for, not
            // asked of the socket first (a `recvfrom` answering EAGAIN per
            // upload otherwise, as in 3820e55).
            stream.forget_readable();
        }
        body.received += rest;
        body.in_socket = true;
        exchange.leave_in_socket(rest);
        body.feed(protocol, read_buf, exchange);
        return outcome(body);
    }
    // One byte of room more than the body: the read that completes it is
    // then short, and tokio takes that as the socket drained, so the next
    // head is waited for rather than asked of the socket first (an exact
    // fit cost a `recvfrom` answering EAGAIN per upload). A byte of the
    // next request read that way goes back to `read_buf` below.
    let capacity = usize::try_from(rest).map_or(LAST_READ, |rest| rest.saturating_add(1));
    let mut buf = BytesMut::with_capacity(capacity);
    while !body.done {
        if buf.capacity() == buf.len() {
            // Not expected (the decoder ends the body at its length), but a
            // decoder holding bytes back must not make a zero-length read
            // look like the client's end.
            buf.reserve(LAST_READ);
        }
        let room = (buf.capacity() - buf.len()) as u64;
        let read = timeout(
            shared.timeouts.body,
            (&mut *stream).take(room).read_buf(&mut buf),
        )
        .await;
        match read {
            Ok(Ok(0)) => body.feed_eof(protocol, &mut buf, exchange),
            Ok(Ok(_)) => body.feed(protocol, &mut buf, exchange),
            Ok(Err(_)) => return Buffered::Closed,
            Err(_elapsed) => return Buffered::Refused(408),
        }
    }
    if !buf.is_empty() {
        // Past the body: the start of a pipelined request.
        read_buf.extend_from_slice(&buf);
    }
    outcome(body)
}

/// The smallest body rest left in the socket for the application thread:
/// below it the copy saved costs less than the `ioctl` asking.
const IN_SOCKET_MIN: u64 = 16 * 1024;

/// The bytes in the socket's receive queue (`FIONREAD`), if it says.
fn queued(fd: std::os::fd::RawFd) -> Option<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: `FIONREAD` writes one `int` to the address given.
    let result = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
    if result < 0 {
        return None;
    }
    u64::try_from(queued).ok()
}

fn outcome(body: &BodyState) -> Buffered {
    match (body.failed, body.error_status) {
        (false, _) => Buffered::Ready,
        (true, Some(status)) => Buffered::Refused(status),
        (true, None) => Buffered::Closed,
    }
}

/// Sends `100 Continue` if the client waits for it (RFC 9110 §10.1.1:
/// it sends the body only then); `Some` when the connection is gone.
async fn flush_continue<S: Transport, P: BodyDecoder>(
    stream: &mut S,
    protocol: &mut P,
    write_buf: &mut BytesMut,
    body: &mut BodyState,
) -> Option<Buffered> {
    if body.continue_sent {
        return None;
    }
    protocol.encode_continue(write_buf);
    body.continue_sent = true;
    flush(stream, write_buf)
        .await
        .err()
        .map(|_| Buffered::Closed)
}

/// Reads the body into an unlinked temporary file, after `first` (what
/// memory held of it), until it ends or passes `--body-spool-size` (then
/// the rest streams through the exchange). The writes block the I/O thread
/// as nginx's do: they go to the page cache.
async fn spool_body<S: Transport, P: BodyDecoder>(
    stream: &mut S,
    protocol: &mut P,
    read_buf: &mut BytesMut,
    body: &mut BodyState,
    exchange: &Exchange,
    shared: &Shared,
    first: Vec<bytes::Bytes>,
) -> Buffered {
    let spool_max = shared.body_buffering.spool_max;
    let mut file = match temp_file() {
        Ok(file) => file,
        Err(error) => {
            crate::log!(
                Warning,
                "cannot create a file to spool a request body ({error}); streaming it"
            );
            for chunk in first {
                exchange.push_body(chunk);
            }
            return Buffered::Ready;
        }
    };
    let mut written = 0u64;
    for chunk in first {
        if let Err(refused) = spool_write(&mut file, &chunk, &mut written) {
            return refused;
        }
    }
    let mut at_eof = false;
    loop {
        while written <= spool_max {
            let decoded = if at_eof {
                protocol.decode_body_eof(read_buf)
            } else {
                protocol.decode_body(read_buf)
            };
            match decoded {
                Ok(Some(BodyEvent::Data(data))) => {
                    // Counted like a body fed to the exchange (`bytes_in`).
                    body.received += data.len() as u64;
                    if let Err(refused) = spool_write(&mut file, &data, &mut written) {
                        return refused;
                    }
                }
                Ok(Some(BodyEvent::End)) => {
                    body.done = true;
                    exchange.end_body(None);
                    return rewound(file);
                }
                Ok(None) if at_eof => {
                    body.fail(
                        exchange,
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection before the end of the body".into(),
                    );
                    return Buffered::Closed;
                }
                Ok(None) => break,
                Err((status, message)) => {
                    body.error_status = Some(status);
                    body.fail(exchange, io::ErrorKind::InvalidData, message);
                    return Buffered::Refused(status);
                }
            }
        }
        if written > spool_max {
            // A chunked body past the spool's bound: the rest streams.
            return rewound(file);
        }
        match timeout(shared.timeouts.body, read_some(stream, read_buf, LAST_READ)).await {
            Ok(Ok(0)) => at_eof = true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Buffered::Closed,
            Err(_elapsed) => return Buffered::Refused(408),
        }
    }
}

fn spool_write(file: &mut File, data: &[u8], written: &mut u64) -> Result<(), Buffered> {
    *written += data.len() as u64;
    file.write_all(data).map_err(|error| {
        // A full disk is ours, not the client's: 500, the app is not called.
        crate::log!(Error, "spooling a request body: {error}");
        Buffered::Refused(500)
    })
}

fn rewound(mut file: File) -> Buffered {
    match file.rewind() {
        Ok(()) => Buffered::Spooled(file),
        Err(error) => {
            crate::log!(Error, "spooling a request body: {error}");
            Buffered::Refused(500)
        }
    }
}

/// A new file in `$TMPDIR` (or `/tmp`) that has no name: `O_TMPFILE`, or,
/// where the file system lacks it, a name removed at once. Either way it
/// disappears with its last descriptor, whatever happens to the process.
fn temp_file() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir);
    if let Ok(file) = unnamed {
        return Ok(file);
    }
    let path = dir.join(format!(
        "wsgi-server-body-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
