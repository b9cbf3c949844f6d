//! A keep-alive connection lent to an application thread between its
//! requests, so that one client alone on a worker costs one context switch
//! per request instead of two.
//!
//! # Theory of operation
//! Normally the I/O thread reads a request and wakes an application thread,
//! which writes the response itself (the `direct` module): two wake-ups per
//! request when a single client talks to the worker (fastwsgi and bjoern,
//! which call Python on their event loop, pay one). When a worker has one
//! open connection and its application threads are idle, the connection
//! task lends the whole connection (socket taken out of the I/O thread's
//! poller, codec, buffer) to an idle application thread ([`Linger`]). That
//! thread waits in `poll(2)` on the socket and on its own eventfd (a `Bell`)
//! instead of its condvar, reads and parses the next request itself, serves
//! it, and writes the response directly; the I/O thread sleeps through it.
//!
//! The connection goes back to its task (its "home") as soon as anything
//! else needs the thread or the connection: another request is queued (the
//! queue rings the thread's bell), a graceful stop begins, the keep-alive
//! time runs out, the request is anything but plain (a body, `Expect`,
//! pipelined or partial heads, the health path, a static file, an error),
//! or the response needs the I/O thread (streamed, a file, an error, a
//! client too slow to take it at once). So a slow request never holds
//! other connections: they were never lent, and new ones are served by the
//! I/O thread and the other application threads as before.
//!
//! The pool holds no connection type: it sees a [`Linger`], implemented by
//! the connection room (the `lend` module). While a lent request runs, the
//! connection sits in its thread's [`LentSlot`], which the request's
//! exchange also holds: when the response turns out to need the I/O thread
//! (or the watchdog ends a stuck request, from its own thread), the
//! exchange sends the connection home from there.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wsgi_core::Request;

/// A connection lent to an application thread.
pub trait Linger: Send {
    /// The socket to wait on.
    fn fd(&self) -> RawFd;
    /// When the connection stops waiting for its next request (keep-alive).
    fn deadline(&self) -> Instant;
    /// The socket is readable: a request to serve on this thread now, more
    /// waiting, or the connection went home. `slot` is where the thread
    /// keeps the connection while the request runs.
    fn next(self: Box<Self>, slot: &LentSlot) -> Next;
    /// The request served on this thread is over (after the application's
    /// `close()`): account for it; `None` when the connection went home.
    fn after_request(self: Box<Self>) -> Option<Box<dyn Linger>>;
    /// Gives the connection back to its task, with whatever is in flight.
    fn go_home(self: Box<Self>);
    /// It came with a queued request (read on no task), and the thread
    /// taking that request keeps it in `slot` while the request runs.
    fn taken_by(&self, _slot: &LentSlot) {}
}

/// What a readable lent connection gave.
pub enum Next {
    /// A request to serve on this thread; the connection stays lent.
    Serve(Request, Box<dyn Linger>),
    /// Not a whole request yet: wait again.
    Wait(Box<dyn Linger>),
    /// The connection went home.
    Home,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Next::Serve(..) => "Serve",
            Next::Wait(_) => "Wait",
            Next::Home => "Home",
        })
    }
}

/// Where an application thread keeps the connection lent to it; shared
/// with the exchange of a request read on it.
#[derive(Clone, Default)]
pub struct LentSlot(Arc<Mutex<Option<Box<dyn Linger>>>>);

impl std::fmt::Debug for LentSlot {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(if self.has() {
            "LentSlot(lent)"
        } else {
            "LentSlot(-)"
        })
    }
}

impl LentSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn Linger>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a connection is in the slot.
    pub fn has(&self) -> bool {
        self.lock().is_some()
    }

    /// Puts a connection in the slot.
    pub fn keep(&self, lent: Box<dyn Linger>) {
        *self.lock() = Some(lent);
    }

    /// The socket and the deadline of the connection in the slot.
    pub(crate) fn waiting(&self) -> Option<(RawFd, Instant)> {
        self.lock()
            .as_ref()
            .map(|lent| (lent.fd(), lent.deadline()))
    }

    /// Takes the connection out of the slot.
    pub fn take(&self) -> Option<Box<dyn Linger>> {
        self.lock().take()
    }

    /// Sends the connection in the slot home, if there is one.
    pub fn send_home(&self) {
        // Taken out first: going home wakes the connection's task.
        let lent = self.take();
        if let Some(lent) = lent {
            lent.go_home();
        }
    }
}

/// An application thread's eventfd: rung when the thread is wanted while
/// it waits on a lent connection instead of its condvar.
#[derive(Debug)]
pub(crate) struct Bell(OwnedFd);

impl Bell {
    pub(crate) fn new() -> io::Result<Bell> {
        // SAFETY: a plain system call; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nothing else.
        Ok(Bell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full
        // counter (never, at 2^64 - 2) would only mean it is rung already.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn drain(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN when not rung.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// Why a lingering thread woke.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The socket has bytes (or the peer closed, or an error to read).
    Readable,
    /// The bell rang (drained).
    Bell,
    /// The deadline passed.
    Deadline,
}

/// Waits for `fd` to be readable, the bell, or `deadline`.
pub(crate) fn wait(fd: RawFd, bell: &Bell, deadline: Instant) -> Woke {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Woke::Deadline;
        }
        let millis = (deadline - now).as_millis().saturating_add(1);
        let timeout = i32::try_from(millis).unwrap_or(i32::MAX);
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: bell.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Unexpected: let the connection's task deal with the socket.
            return Woke::Bell;
        }
        if fds[1].revents != 0 {
            bell.drain();
            return Woke::Bell;
        }
        if fds[0].revents != 0 {
            return Woke::Readable;
        }
    }
}
