//! One request's meeting point between its connection task (on the I/O
//! thread) and the application thread serving it.
//!
//! # Theory of operation
//! The connection pushes request-body bytes in, the application pushes the
//! response out, both through one mutex-guarded `State`. The application
//! side blocks only in `wait` (on a condvar), the connection side never
//! blocks: it polls with an `AtomicWaker`. Wake-ups are sent only on
//! transitions that matter (output queue became non-empty, the response
//! finished, the application started waiting for body bytes), so a small
//! response costs one wake-up of the I/O thread.
//!
//! A small response complete in one piece skips the I/O thread: when the
//! connection lent a [`DirectWrite`], the application thread writes it
//! itself (see [`crate::direct`]) and wakes the connection only if it asked
//! ([`Exchange::want_written_wake`]): a connection waiting for its client's
//! next request learns of the response when that request arrives.
//!
//! A `Content-Length` body whose rest is already in the socket's receive
//! queue when the request is queued may be left there
//! ([`Exchange::leave_in_socket`], decided by [`crate::buffering`]): the
//! application thread then receives it straight into its own object
//! ([`BodyReader::read_into`]), under this lock, until the connection
//! takes the socket back ([`Exchange::reclaim_socket`]) and discards what
//! was left unread.
//!
//! Budgets bound memory: the connection reads ahead at most
//! [`BODY_READ_AHEAD`] body bytes the application has not asked for, and the
//! application may queue [`OUTPUT_BUDGET`] bytes before `must_wait` says to
//! wait for the client.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::task::AtomicWaker;
use wsgi_core::{AppError, BodyReader, FileRegion, ResponseHead, ResponseSink, SinkError};

use crate::direct::{DirectWrite, Written};
use crate::linger::LentSlot;

/// Body bytes buffered ahead of the application's reads.
pub const BODY_READ_AHEAD: usize = 256 * 1024;
/// Response bytes an application may queue before it waits for the client.
pub const OUTPUT_BUDGET: usize = 512 * 1024;

/// A piece of response body.
#[derive(Debug)]
pub enum OutItem {
    /// Bytes.
    Data(Bytes),
    /// A file region (sendfile).
    File(FileRegion),
}

/// Response items in order. The first is held inline: most responses are
/// one chunk, and a queue's first push cost an allocation (a `VecDeque`
/// grow, ~250 instructions per request at 16 connections).
#[derive(Debug, Default)]
pub struct OutItems {
    /// Set whenever `rest` is not empty.
    first: Option<OutItem>,
    rest: VecDeque<OutItem>,
}

impl OutItems {
    /// One item.
    pub fn one(item: OutItem) -> Self {
        OutItems {
            first: Some(item),
            rest: VecDeque::new(),
        }
    }

    fn push_back(&mut self, item: OutItem) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.push_back(item);
        }
    }

    /// Drops every item, keeping the room.
    fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }

    /// No item.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = &OutItem> {
        self.first.iter().chain(self.rest.iter())
    }

    /// Takes the items out in order.
    pub fn drain(&mut self) -> impl Iterator<Item = OutItem> + '_ {
        self.first.take().into_iter().chain(self.rest.drain(..))
    }
}

/// How the request body stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyEnd {
    Open,
    Complete,
    Failed(io::ErrorKind, String),
}

#[derive(Debug)]
struct State {
    body: VecDeque<Bytes>,
    body_buffered: usize,
    body_end: BodyEnd,
    /// The application is blocked waiting for body bytes.
    body_wanted: bool,
    /// The application changed something the connection must re-examine
    /// (body room freed, body wanted) without producing output.
    kick: bool,

    head: Option<ResponseHead>,
    output: OutItems,
    output_bytes: usize,
    finished: bool,
    aborted: Option<String>,

    /// Lent by the connection: the application thread may write a response
    /// complete in one piece itself.
    direct: Option<DirectWrite>,
    /// A response the application thread wrote, for the connection.
    written: Option<Written>,
    /// The connection wants a wake-up when `written` is set (otherwise it
    /// learns of it when its client sends again).
    wake_when_written: bool,

    /// Body bytes after those in `body` still in the socket, for the
    /// application thread to receive itself (see the module docs).
    socket_left: u64,
    /// The connection is gone: every application call fails from now on.
    disconnected: bool,
    /// The application is blocked on the condvar. std's `Condvar::notify_*`
    /// always makes a system call, so we notify only when someone waits.
    app_waiting: bool,
}

impl State {
    /// A request's state before either side has acted.
    fn new(body_complete: bool) -> State {
        State {
            body: VecDeque::new(),
            body_buffered: 0,
            body_end: if body_complete {
                BodyEnd::Complete
            } else {
                BodyEnd::Open
            },
            body_wanted: false,
            kick: false,
            head: None,
            output: OutItems::default(),
            output_bytes: 0,
            finished: false,
            aborted: None,
            direct: None,
            written: None,
            wake_when_written: false,
            socket_left: 0,
            disconnected: false,
            app_waiting: false,
        }
    }

    /// Back to [`State::new`], field by field: most are empty already, and
    /// a whole new state would be built and copied over (~170 instructions
    /// against ~60, callgrind).
    fn reset(&mut self, body_complete: bool) {
        self.body.clear();
        self.body_buffered = 0;
        self.body_end = if body_complete {
            BodyEnd::Complete
        } else {
            BodyEnd::Open
        };
        self.body_wanted = false;
        self.kick = false;
        self.head = None;
        self.output.clear();
        self.output_bytes = 0;
        self.finished = false;
        self.aborted = None;
        self.direct = None;
        self.written = None;
        self.wake_when_written = false;
        self.socket_left = 0;
        self.disconnected = false;
        self.app_waiting = false;
    }

    /// Wakes the application if it waits; call with the lock held.
    fn wake_app(&self, condvar: &Condvar) {
        if self.app_waiting {
            condvar.notify_all();
        }
    }
}

/// The shared half; both sides hold an `Arc`.
#[derive(Debug)]
pub struct Exchange {
    state: Mutex<State>,
    app_wakeup: Condvar,
    io_waker: AtomicWaker,
    body_timeout: Duration,
    /// The request was read by an application thread holding the
    /// connection (`crate::linger`): the first time the application (or
    /// the watchdog) needs the I/O thread, the connection in this slot
    /// goes home first.
    lent_inline: Mutex<Option<LentSlot>>,
    /// Whether `lent_inline` may hold a slot: every I/O wake-up asks, and
    /// almost always the answer is no, without taking a lock.
    maybe_lent: AtomicBool,
}

/// What the connection should do next.
#[derive(Debug, Default)]
pub struct IoBatch {
    /// The response head, the first time.
    pub head: Option<ResponseHead>,
    /// Body items to write.
    pub items: OutItems,
    /// The response is complete (after `items`).
    pub finished: bool,
    /// The application failed; the message is for the log.
    pub aborted: Option<String>,
    /// The application is waiting for body bytes.
    pub body_wanted: bool,
    /// The application thread wrote the whole response itself.
    pub written: Option<Written>,
}

impl Exchange {
    /// A new exchange; `body_complete` when the request has no body.
    pub fn new(body_complete: bool, body_timeout: Duration) -> Arc<Exchange> {
        Arc::new(Exchange {
            state: Mutex::new(State::new(body_complete)),
            app_wakeup: Condvar::new(),
            io_waker: AtomicWaker::new(),
            body_timeout,
            lent_inline: Mutex::new(None),
            maybe_lent: AtomicBool::new(false),
        })
    }

    /// An exchange for a connection's next request: the one in `cached`,
    /// made new in place, when nothing else holds it any more (the
    /// application thread let go of the last request), or else a new one,
    /// kept in `cached` for the request after. Saves an allocation, its
    /// free on the other thread, and the waker's clone per request.
    pub fn renew(
        cached: &mut Option<Arc<Exchange>>,
        body_complete: bool,
        body_timeout: Duration,
    ) -> Arc<Exchange> {
        if let Some(exchange) = cached.as_mut().and_then(Arc::get_mut) {
            if exchange.body_timeout == body_timeout {
                // Unique: no other thread can see these writes. The I/O
                // waker stays: it is this connection's task's, and
                // registering the same waker again clones nothing.
                exchange
                    .state
                    .get_mut()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .reset(body_complete);
                *exchange
                    .lent_inline
                    .get_mut()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                *exchange.maybe_lent.get_mut() = false;
                if let Some(exchange) = cached {
                    return Arc::clone(exchange);
                }
            }
        }
        let exchange = Exchange::new(body_complete, body_timeout);
        *cached = Some(Arc::clone(&exchange));
        exchange
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update
        // is a few field writes), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- the connection's side ----

    /// Adds body bytes.
    pub fn push_body(&self, data: Bytes) {
        let mut state = self.lock();
        state.body_buffered += data.len();
        state.body.push_back(data);
        if state.body_wanted {
            state.body_wanted = false;
            state.wake_app(&self.app_wakeup);
        }
    }

    /// A reference to the buffer the body's last chunk shares, for the
    /// connection to hold until the response is over: the application's
    /// thread then drops only references to it (it lets go of each chunk as
    /// soon as it is read), and the buffer is freed on the thread that
    /// allocated it. mimalloc defers a free from another thread to the
    /// owner's next collection of that page, and a 64 KiB body buffer
    /// freed so made its pages wait: mimalloc's arena at 16 uploads in
    /// flight 2.7-2.9 -> 1.7-2.2 MiB.
    pub fn body_buffer(&self) -> Option<Bytes> {
        self.lock().body.back().cloned()
    }

    /// Takes the body bytes buffered so far (to move them to a spool file).
    pub fn take_body(&self) -> Vec<Bytes> {
        let mut state = self.lock();
        state.body_buffered = 0;
        state.body.drain(..).collect()
    }

    /// Leaves the body's last `len` bytes, all in the socket's receive queue
    /// already, for the application thread to receive (see the module docs).
    pub fn leave_in_socket(&self, len: u64) {
        self.lock().socket_left = len;
    }

    /// Takes the socket back from the application thread (whose body reads
    /// fail from now on) once the request is over; returns how many body
    /// bytes it left in the socket, for the connection to discard.
    pub fn reclaim_socket(&self) -> u64 {
        let mut state = self.lock();
        state.disconnected = true;
        state.direct = None;
        state.wake_app(&self.app_wakeup);
        std::mem::take(&mut state.socket_left)
    }

    /// Marks the body complete (`None`) or failed.
    pub fn end_body(&self, failure: Option<(io::ErrorKind, String)>) {
        let mut state = self.lock();
        state.body_end = match failure {
            None => BodyEnd::Complete,
            Some((kind, message)) => BodyEnd::Failed(kind, message),
        };
        state.body_wanted = false;
        state.wake_app(&self.app_wakeup);
    }

    /// Lends the application thread what it needs to write a response
    /// complete in one piece itself; `wake` asks for a wake-up when it has.
    pub fn lend_direct(&self, direct: DirectWrite, wake: bool) {
        let mut state = self.lock();
        state.direct = Some(direct);
        state.wake_when_written = wake;
    }

    /// Asks for a wake-up once the application thread has written the
    /// response itself (at once, through `poll_batch`, if it already has).
    pub fn want_written_wake(&self) {
        self.lock().wake_when_written = true;
    }

    /// Whether the connection should read more body bytes now.
    pub fn wants_more_body(&self) -> bool {
        let state = self.lock();
        state.body_end == BodyEnd::Open && state.body_buffered < BODY_READ_AHEAD
    }

    /// Takes what the application produced into `batch` (whose items the
    /// caller has written); `Pending` (with the waker registered) when there
    /// is nothing new. Filled in place: the batch is a few hundred bytes,
    /// and returning it cost two copies of it per request.
    pub fn poll_batch(&self, context: &mut Context<'_>, batch: &mut IoBatch) -> Poll<()> {
        self.io_waker.register(context.waker());
        let mut state = self.lock();
        if let Some(written) = state.written.take() {
            batch.written = Some(written);
            return Poll::Ready(());
        }
        if state.head.is_none() && state.output.is_empty() && !state.finished && !state.kick {
            return Poll::Pending;
        }
        state.kick = false;
        batch.items = std::mem::take(&mut state.output);
        if state.output_bytes > 0 {
            state.output_bytes = 0;
            state.wake_app(&self.app_wakeup);
        }
        batch.finished = state.finished;
        batch.head = state.head.take();
        batch.aborted = if state.finished {
            state.aborted.take()
        } else {
            None
        };
        batch.body_wanted = state.body_wanted;
        Poll::Ready(())
    }

    /// The connection is gone (or done with this request): fail the
    /// application's calls from now on.
    pub fn disconnect(&self) {
        // Taking the lock waits out a direct write in progress, so the
        // socket outlives it; `direct` is gone afterwards.
        let mut state = self.lock();
        state.direct = None;
        state.disconnected = true;
        state.wake_app(&self.app_wakeup);
    }

    // ---- the application's side ----

    fn wake_io(&self) {
        if let Some(slot) = self.clear_lent_inline() {
            // Nobody polls this exchange on the I/O thread yet: send the
            // connection home (it will) before waking it.
            slot.send_home();
        }
        self.io_waker.wake();
    }

    /// Marks the request as read on an application thread that keeps its
    /// connection in `slot` (see `wake_io`).
    pub fn mark_lent_inline(&self, slot: LentSlot) {
        self.maybe_lent.store(true, Ordering::Release);
        *self
            .lent_inline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(slot);
    }

    /// Unmarks it; the slot, if it was marked.
    pub fn clear_lent_inline(&self) -> Option<LentSlot> {
        if !self.maybe_lent.load(Ordering::Acquire) {
            return None;
        }
        self.lent_inline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Takes the response the application thread wrote itself, if it has.
    pub fn take_written(&self) -> Option<Written> {
        self.lock().written.take()
    }

    /// Hands a direct write's result to the connection; wakes it if it
    /// asked, or if it has to finish the job (bytes left, an error).
    fn note_written(&self, mut state: MutexGuard<'_, State>, written: Written) {
        let wake =
            state.wake_when_written || !written.unwritten.is_empty() || written.error.is_some();
        state.head = None;
        state.written = Some(written);
        drop(state);
        if wake {
            self.wake_io();
        }
    }
}

/// Disconnects the exchange when the connection is done with it, however
/// it leaves (a dropped task too): see [`Exchange::disconnect`].
#[derive(Debug)]
pub struct DisconnectOnDrop(pub Arc<Exchange>);

impl Drop for DisconnectOnDrop {
    fn drop(&mut self) {
        self.0.disconnect();
    }
}

/// The application's view of the request body.
#[derive(Debug)]
pub struct AppBody {
    exchange: Arc<Exchange>,
    current: Bytes,
    /// Body bytes not consumed yet, when the framing says (`Content-Length`).
    remaining: Option<u64>,
    /// A body spooled to an unlinked temporary file ([`crate::buffering`]),
    /// read from its start; what the exchange holds comes after it.
    spool: Option<std::fs::File>,
    /// The connection's socket, when the body's end was left in it: read
    /// after what the exchange holds, under its lock, while `socket_left`.
    socket: Option<RawFd>,
}

/// Bytes read from a spooled body at a time.
const SPOOL_READ: usize = 64 * 1024;
/// Bytes received at a time from a body left in the socket, by a reader
/// that wants a buffer (`readline`, a chunk at a time).
const SOCKET_READ: usize = 64 * 1024;

impl AppBody {
    /// The body reader of an exchange; `length` is the body's length when
    /// the request gives it.
    pub fn new(exchange: Arc<Exchange>, length: Option<u64>) -> Self {
        AppBody {
            exchange,
            current: Bytes::new(),
            remaining: length,
            spool: None,
            socket: None,
        }
    }

    /// A reader whose body ends in the socket `fd` (see the module docs).
    pub fn in_socket(exchange: Arc<Exchange>, length: Option<u64>, fd: RawFd) -> Self {
        AppBody {
            socket: Some(fd),
            ..AppBody::new(exchange, length)
        }
    }

    /// Receives up to `len` bytes of the body's end when the exchange holds
    /// no more (`None` otherwise: read those first), into the room `dst`
    /// gives for the length it is called with.
    fn receive(
        &mut self,
        len: usize,
        dst: impl FnOnce(usize) -> *mut u8,
    ) -> Option<io::Result<usize>> {
        let fd = self.socket?;
        let mut state = self.exchange.lock();
        if !state.body.is_empty() || state.socket_left == 0 {
            return None;
        }
        if state.disconnected {
            return Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "client disconnected",
            )));
        }
        let len = len.min(usize::try_from(state.socket_left).unwrap_or(usize::MAX));
        let dst = dst(len);
        let received = loop {
            // SAFETY: `dst` has room for `len` bytes (its contract);
            // the socket is open while the lock is held and `disconnected`
            // is not set (the connection takes the lock to reclaim it).
            // The bytes are in the receive queue already: this does not wait.
            let received = unsafe { libc::recv(fd, dst.cast(), len, libc::MSG_DONTWAIT) };
            match usize::try_from(received) {
                Ok(received) => break received,
                Err(_) => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Some(Err(error));
                    }
                }
            }
        };
        if received == 0 {
            return Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before the end of the body",
            )));
        }
        state.socket_left -= received as u64;
        Some(Ok(received))
    }

    /// A reader whose body starts in `spool` (positioned at its start).
    pub fn spooled(exchange: Arc<Exchange>, length: Option<u64>, spool: std::fs::File) -> Self {
        AppBody {
            spool: Some(spool),
            ..AppBody::new(exchange, length)
        }
    }

    /// Reads the next piece of the spool file into `current`; at its end,
    /// drops the file (what follows is in the exchange).
    fn read_spool(&mut self) -> io::Result<()> {
        use std::io::Read;
        let Some(file) = &mut self.spool else {
            return Ok(());
        };
        let mut buffer = bytes::BytesMut::zeroed(SPOOL_READ);
        let read = loop {
            match file.read(&mut buffer) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if read == 0 {
            self.spool = None;
        } else {
            buffer.truncate(read);
            self.current = buffer.freeze();
        }
        Ok(())
    }
}

impl BodyReader for AppBody {
    fn fill_buf(&mut self) -> io::Result<Option<&[u8]>> {
        if self.current.is_empty() && self.spool.is_some() {
            // A file read may touch the disk: done in `wait`, where a
            // runtime with a global lock has released it.
            return Ok(None);
        }
        if self.current.is_empty() && self.socket.is_some() {
            // The body's end is in the socket: a piece of it, for a reader
            // that wants a buffer (`read_into` needs none).
            let mut buffer = bytes::BytesMut::new();
            let room = |len| {
                buffer.reserve(len);
                buffer.spare_capacity_mut().as_mut_ptr().cast()
            };
            if let Some(received) = self.receive(SOCKET_READ, room) {
                let received = received?;
                // SAFETY: `receive` wrote that many bytes.
                unsafe { buffer.set_len(received) };
                self.current = buffer.freeze();
                return Ok(Some(&self.current));
            }
        }
        if self.current.is_empty() {
            let mut state = self.exchange.lock();
            match state.body.pop_front() {
                Some(chunk) => {
                    state.body_buffered -= chunk.len();
                    let was_full = state.body_buffered + chunk.len() >= BODY_READ_AHEAD;
                    state.kick |= was_full;
                    drop(state);
                    if was_full {
                        // The connection stopped reading at the read-ahead
                        // limit; there is room again.
                        self.exchange.wake_io();
                    }
                    self.current = chunk;
                }
                None => match &state.body_end {
                    BodyEnd::Complete => return Ok(Some(&[])),
                    BodyEnd::Failed(kind, message) => {
                        return Err(io::Error::new(*kind, message.clone()))
                    }
                    BodyEnd::Open if state.disconnected => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "client disconnected",
                        ))
                    }
                    BodyEnd::Open => return Ok(None),
                },
            }
        }
        Ok(Some(&self.current))
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.current.len());
        self.current.advance(amount);
        if self.current.is_empty() {
            // Its buffer is freed by the connection, not by this thread
            // (`Exchange::body_buffer`): drop the reference now.
            self.current = Bytes::new();
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(amount as u64);
        }
    }

    fn remaining_hint(&self) -> Option<u64> {
        self.remaining
    }

    fn read_into(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<Option<usize>> {
        if self.current.is_empty() && !dst.is_empty() {
            if let Some(received) = self.receive(dst.len(), |_| dst.as_mut_ptr().cast()) {
                let received = received?;
                if let Some(remaining) = &mut self.remaining {
                    *remaining = remaining.saturating_sub(received as u64);
                }
                return Ok(Some(received));
            }
        }
        let Some(buffer) = self.fill_buf()? else {
            return Ok(None);
        };
        let taken = buffer.len().min(dst.len());
        // SAFETY: `dst` has room for `taken` bytes, and the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(buffer.as_ptr(), dst.as_mut_ptr().cast(), taken) };
        self.consume(taken);
        Ok(Some(taken))
    }

    fn wait(&mut self) -> io::Result<()> {
        if self.spool.is_some() {
            return self.read_spool();
        }
        let exchange = &*self.exchange;
        let mut state = exchange.lock();
        let ready = |state: &State| {
            !state.body.is_empty() || state.body_end != BodyEnd::Open || state.disconnected
        };
        if ready(&state) {
            return Ok(());
        }
        state.body_wanted = true;
        state.kick = true;
        drop(state);
        exchange.wake_io();
        let mut state = exchange.lock();
        state.app_waiting = true;
        let (mut state, timeout) = exchange
            .app_wakeup
            .wait_timeout_while(state, exchange.body_timeout, |state| !ready(state))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.app_waiting = false;
        if timeout.timed_out() && !ready(&state) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for the request body",
            ));
        }
        Ok(())
    }
}

/// The application's view of the response.
#[derive(Debug)]
pub struct AppOutput {
    exchange: Arc<Exchange>,
    started: bool,
    ended: bool,
    /// The response went out whole by a direct write; whatever the
    /// application does next cannot change it.
    written: bool,
    /// The queue was over budget at this side's last push. Only pushes
    /// raise the queued bytes, so a `false` stays true until the next one,
    /// and `wait` checks a stale `true` under the lock: `must_wait`, asked
    /// after every chunk, takes no lock.
    over_budget: bool,
}

impl AppOutput {
    /// The response sink of an exchange.
    pub fn new(exchange: Arc<Exchange>) -> Self {
        AppOutput {
            exchange,
            started: false,
            ended: false,
            written: false,
            over_budget: false,
        }
    }

    /// Queues `item`; with `last`, the response ends with it (`finish` in
    /// the same lock and wake-up); `returning`: see `send_last_and_return`.
    fn push(
        &mut self,
        item: OutItem,
        size: usize,
        last: bool,
        returning: bool,
    ) -> Result<(), SinkError> {
        if !self.started {
            return Err(SinkError::Misuse("body before the response head"));
        }
        if self.ended {
            return Err(SinkError::Misuse("body after the end of the response"));
        }
        if self.written {
            // Past the end of a complete response: nothing to send, as
            // the encoder would drop bytes past `Content-Length`.
            self.ended |= last;
            return Ok(());
        }
        let mut state = self.exchange.lock();
        if state.disconnected {
            return Err(SinkError::Disconnected);
        }
        if let Some(direct) = state.direct.take() {
            // A first chunk that completes the response: write it now.
            let written = match (&item, &state.head) {
                (OutItem::Data(chunk), Some(head))
                    if head
                        .content_length
                        .is_some_and(|length| chunk.len() as u64 >= length) =>
                {
                    direct.write(head, Some(chunk), None, returning)
                }
                _ => None,
            };
            if let Some(written) = written {
                self.written = true;
                self.ended |= last;
                self.exchange.note_written(state, written);
                return Ok(());
            }
        }
        let was_idle = state.output.is_empty();
        state.output.push_back(item);
        state.output_bytes += size;
        self.over_budget = state.output_bytes > OUTPUT_BUDGET;
        if last {
            state.finished = true;
            self.ended = true;
        }
        drop(state);
        if was_idle || last {
            self.exchange.wake_io();
        }
        Ok(())
    }
}

impl ResponseSink for AppOutput {
    fn start(&mut self, head: ResponseHead) -> Result<(), SinkError> {
        if self.started {
            return Err(SinkError::Misuse("the response head was already sent"));
        }
        let mut state = self.exchange.lock();
        if state.disconnected {
            return Err(SinkError::Disconnected);
        }
        state.head = Some(head);
        self.started = true;
        // No wake-up: the head alone is not worth a trip; it leaves with the
        // first body chunk or the end, in one write.
        Ok(())
    }

    fn send(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let size = chunk.len();
        self.push(OutItem::Data(chunk), size, false, false)
    }

    fn send_last(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        if chunk.is_empty() {
            return self.finish();
        }
        let size = chunk.len();
        self.push(OutItem::Data(chunk), size, true, false)
    }

    fn send_last_and_return(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        if chunk.is_empty() {
            return self.finish();
        }
        let size = chunk.len();
        self.push(OutItem::Data(chunk), size, true, true)
    }

    fn send_file(&mut self, region: FileRegion) -> Result<(), SinkError> {
        // The region holds its own handle (a duplicate of the application's
        // descriptor) and its own offset, and costs no memory: the
        // application need not wait for the I/O thread to take it (one
        // wait and wake-up fewer per file; docs/performance.md).
        self.push(OutItem::File(region), 0, false, false)
    }

    fn must_wait(&self) -> bool {
        self.over_budget
    }

    fn wait(&mut self) -> Result<(), SinkError> {
        let exchange = &*self.exchange;
        let mut state = exchange.lock();
        state.app_waiting = true;
        let mut state = exchange
            .app_wakeup
            .wait_while(state, |state| {
                state.output_bytes > OUTPUT_BUDGET && !state.disconnected
            })
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.app_waiting = false;
        if state.disconnected {
            return Err(SinkError::Disconnected);
        }
        self.over_budget = false;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        if self.ended {
            return Ok(());
        }
        if !self.started {
            return Err(SinkError::Misuse("finish before the response head"));
        }
        self.ended = true;
        if self.written {
            return Ok(());
        }
        let mut state = self.exchange.lock();
        state.finished = true;
        if let Some(direct) = state.direct.take() {
            // An empty body: the head is the whole response.
            let written = match &state.head {
                Some(head) if state.output.is_empty() && !state.disconnected => {
                    let known_length = head.content_length.is_none().then_some(0);
                    direct.write(head, None, known_length, false)
                }
                _ => None,
            };
            if let Some(written) = written {
                self.written = true;
                self.exchange.note_written(state, written);
                return Ok(());
            }
        }
        let disconnected = state.disconnected;
        drop(state);
        self.exchange.wake_io();
        if disconnected {
            return Err(SinkError::Disconnected);
        }
        Ok(())
    }

    fn abort(&mut self, error: &AppError) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.written {
            // The whole response is out; the runtime logged the error.
            return;
        }
        let mut state = self.exchange.lock();
        state.direct = None;
        state.finished = true;
        state.aborted = Some(error.message.clone());
        drop(state);
        self.exchange.wake_io();
    }

    fn is_started(&self) -> bool {
        self.started
    }
}

impl Drop for AppOutput {
    fn drop(&mut self) {
        // A runtime that forgets to end its response must not hang the
        // connection.
        if !self.ended {
            self.abort(&AppError::new(
                "the application did not finish its response",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(items: impl Iterator<Item = OutItem>) -> Vec<Bytes> {
        items
            .map(|item| match item {
                OutItem::Data(data) => data,
                OutItem::File(_) => panic!("a file region"),
            })
            .collect()
    }

    /// The inline first item stays first, whatever follows it, and a
    /// drained queue takes new items from the start again.
    #[test]
    fn out_items_keep_their_order() {
        let mut items = OutItems::default();
        assert!(items.is_empty());
        for chunk in ["a", "b", "c"] {
            items.push_back(OutItem::Data(Bytes::from(chunk)));
        }
        assert_eq!(items.iter().count(), 3);
        assert_eq!(data(items.drain()), ["a", "b", "c"]);
        assert!(items.is_empty());
        items.push_back(OutItem::Data(Bytes::from("d")));
        items.push_back(OutItem::Data(Bytes::from("e")));
        assert_eq!(data(items.drain()), ["d", "e"]);
    }

    /// An exchange, and its application side with the head given.
    fn started() -> (Arc<Exchange>, AppOutput) {
        let exchange = Exchange::new(true, Duration::from_secs(1));
        let mut output = AppOutput::new(Arc::clone(&exchange));
        output
            .start(ResponseHead::new(b"200 OK", Vec::new()).unwrap())
            .unwrap();
        (exchange, output)
    }

    /// `must_wait` says yes once the queue passes the budget, and no again
    /// once a wait saw the I/O side take the queue.
    #[test]
    fn must_wait_follows_the_budget_without_a_lock() {
        let (exchange, mut output) = started();
        let chunk = Bytes::from(vec![b'x'; OUTPUT_BUDGET / 2]);
        output.send(chunk.clone()).unwrap();
        assert!(!output.must_wait());
        output.send(chunk.clone()).unwrap();
        output.send(chunk).unwrap();
        assert!(output.must_wait());
        let mut context = Context::from_waker(std::task::Waker::noop());
        let mut batch = IoBatch::default();
        assert!(exchange.poll_batch(&mut context, &mut batch).is_ready());
        assert_eq!(batch.items.iter().count(), 3);
        output.wait().unwrap();
        assert!(!output.must_wait());
    }

    /// `send_last` queues the chunk and ends the response in one step:
    /// the I/O side sees both in one batch, and a `finish` after it adds
    /// nothing.
    #[test]
    fn send_last_queues_and_ends_at_once() {
        let (exchange, mut output) = started();
        output.send_last(Bytes::from_static(b"whole")).unwrap();
        let mut context = Context::from_waker(std::task::Waker::noop());
        let mut batch = IoBatch::default();
        assert!(exchange.poll_batch(&mut context, &mut batch).is_ready());
        assert!(batch.head.is_some() && batch.finished);
        assert_eq!(data(batch.items.drain()), ["whole"]);
        output.finish().unwrap();
        let _ = exchange.poll_batch(&mut context, &mut batch);
        assert!(batch.head.is_none() && batch.items.is_empty());
    }

    /// A connection's next request reuses its exchange only once nothing
    /// else holds it, and then as new: nothing of the last request (its
    /// output, its end, its disconnection, a body left in the socket)
    /// shows.
    #[test]
    fn renew_reuses_only_a_released_exchange_and_as_new() {
        let timeout = Duration::from_secs(1);
        let mut cached = None;
        let first = Exchange::renew(&mut cached, false, timeout);
        let mut output = AppOutput::new(Arc::clone(&first));
        output
            .start(ResponseHead::new(b"200 OK", Vec::new()).unwrap())
            .unwrap();
        output.send(Bytes::from_static(b"left over")).unwrap();
        first.leave_in_socket(5);
        first.end_body(Some((io::ErrorKind::UnexpectedEof, "cut".into())));
        first.disconnect();
        // The application side still holds it: a new one.
        let second = Exchange::renew(&mut cached, true, timeout);
        assert!(!Arc::ptr_eq(&first, &second));
        drop(second);
        // Nothing but the cache holds the second one now.
        drop((output, first));
        // Reused, and as new: a request whose body is open, nothing left
        // in the socket.
        let ptr = Arc::as_ptr(cached.as_ref().unwrap());
        let third = Exchange::renew(&mut cached, false, timeout);
        assert_eq!(Arc::as_ptr(&third), ptr);
        assert!(third.wants_more_body());
        assert_eq!(third.reclaim_socket(), 0);
        // A different body timeout is a different exchange.
        let mut cached = Some(Exchange::new(true, timeout));
        let other = Exchange::renew(&mut cached, true, Duration::from_secs(2));
        assert_eq!(other.body_timeout, Duration::from_secs(2));
    }

    /// A renewed exchange carries nothing of the last response to the
    /// connection (no head, no items, not finished) and takes the next
    /// one although the last was disconnected.
    #[test]
    fn a_renewed_exchange_has_no_output() {
        let mut cached = None;
        let first = Exchange::renew(&mut cached, true, Duration::from_secs(1));
        let mut output = AppOutput::new(Arc::clone(&first));
        output
            .start(ResponseHead::new(b"200 OK", Vec::new()).unwrap())
            .unwrap();
        output.send(Bytes::from_static(b"one")).unwrap();
        output.send(Bytes::from_static(b"two")).unwrap();
        first.disconnect();
        drop((output, first));
        let renewed = Exchange::renew(&mut cached, true, Duration::from_secs(1));
        let mut context = Context::from_waker(std::task::Waker::noop());
        let mut batch = IoBatch::default();
        assert!(renewed.poll_batch(&mut context, &mut batch).is_pending());
        let mut output = AppOutput::new(Arc::clone(&renewed));
        output
            .start(ResponseHead::new(b"204 No Content", Vec::new()).unwrap())
            .unwrap();
        output.finish().unwrap();
        assert!(renewed.poll_batch(&mut context, &mut batch).is_ready());
        assert!(batch.head.is_some() && batch.finished && batch.items.is_empty());
    }
}
