//! Request bodies read whole on the I/O thread before the application is
//! called, so a slow client costs a connection task and its bytes, never an
//! application thread (`--body-buffer-size`, `--body-buffer-memory`,
//! `--stream-request-body`).
//!
//! # Theory of operation
//! A body whose `Content-Length` is at most the bound, or a chunked one
//! while it stays below it, is decoded into the request's [`Exchange`]
//! before the request is queued; a larger one is streamed as before (the
//! application starts at the head and reads as bytes arrive). A buffered
//! body with a `Content-Length` first reserves its length from the
//! worker's [`BodyBudget`]: when the budget is spent, the connection waits
//! there, holding none and reading nothing (TCP pushes back), until a
//! finished request gives its share back. Reserving the whole length at
//! once is what keeps waiters from deadlocking: requests that each held
//! part of their body and waited for the rest could wait on each other for
//! ever (measured: 1,000 uploads of 60 of 100 kB against a 64 KiB budget
//! never finished). A chunked body reserves read by read and never waits:
//! when memory is short it is streamed; its reads start at [`FIRST_READ`]
//! bytes and double while the client keeps up, so a trickling client gets
//! a small buffer and a fast upload reads in [`LAST_READ`] steps, the size
//! every read of a reserved body has. Bodies that came whole with the head
//! cost one feed and no reservation.
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

use crate::connection::{flush, BodyDecoder, BodyState, Shared, Transport};
use crate::exchange::Exchange;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffered {
    /// The body is in the exchange (whole, or up to the bound and the rest
    /// streamed), or it is not buffered at all: call the application.
    Ready,
    /// Answer this status and close; the application is not called.
    Refused(u16),
    /// The client went away: close.
    Closed,
}

/// Whether this body is read whole before the application is called.
pub fn wanted(shared: &Shared, body: &BodyState) -> bool {
    let settings = &shared.body_buffering;
    !body.done
        && !settings.stream
        && body
            .length
            .map_or(true, |length| length <= settings.max_size)
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
    let max_size = usize::try_from(shared.body_buffering.max_size).unwrap_or(usize::MAX);
    // A reserved body reads in large steps (its memory is accounted for
    // already; small first reads cost the 64 KiB upload 4 system calls
    // instead of 1 and a quarter of its rate); a chunked one starts small.
    let mut step = if body.length.is_some() {
        LAST_READ
    } else {
        FIRST_READ
    };
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
    if !body.continue_sent {
        // RFC 9110 §10.1.1: the client waits for this before it sends;
        // it goes once the memory for the body is ours.
        protocol.encode_continue(write_buf);
        body.continue_sent = true;
        if flush(stream, write_buf).await.is_err() {
            return Buffered::Closed;
        }
    }
    loop {
        body.feed(protocol, read_buf, exchange);
        if body.done {
            break;
        }
        if body.length.is_none() {
            // Chunked: reserve read by read, without waiting (a wait while
            // holding part would risk the deadlock above). Past the bound,
            // or when memory is short, the rest is streamed.
            if reservation.held >= max_size || !reservation.try_reserve(step) {
                return Buffered::Ready;
            }
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
        if body.length.is_none() {
            reservation.give_back(step - read);
        }
        if read == 0 {
            body.feed_eof(protocol, read_buf, exchange);
            break;
        }
        if read == step {
            step = (step * 2).min(LAST_READ);
        }
    }
    match (body.failed, body.error_status) {
        (false, _) => Buffered::Ready,
        (true, Some(status)) => Buffered::Refused(status),
        (true, None) => Buffered::Closed,
    }
}
