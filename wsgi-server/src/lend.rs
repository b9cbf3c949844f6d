//! The connection's side of a keep-alive connection lent to an application
//! thread (the theory is in [`crate::linger`]): what is lent
//! ([`LentHttp`]), what comes back to the connection task ([`Returned`]),
//! and the meeting point the task waits on ([`Home`]).
//!
//! The application thread serves only plain requests on the lent
//! connection: a whole head in hand, no body, no `Expect`, keep-alive, not
//! the health path or a static file, with a response it can write at once.
//! Anything else goes home at the point it is found, in a state the
//! task's own path takes up from there (a parsed head, an error to answer,
//! a request in flight whose response the I/O thread must write).
//!
//! A connection just accepted is lent the same way before it has a task
//! ([`serve_fresh`]): when its first request is already in and plain, and
//! asks to close after its response (`Connection: close`, HTTP/1.0), the
//! I/O thread queues it with the connection, and the application thread
//! that takes it writes the response and closes the socket. No task,
//! poller registration or I/O wake-up is spent on such a connection; one
//! that needs more gets its task then, from where it stands ([`Adoptee`]).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::BytesMut;
use futures::task::AtomicWaker;
use tokio::sync::mpsc;
use wsgi_core::{ConnInfo, EmptyBody, Request};
use wsgi_http::{Event, RequestHead, ServerConn};

use crate::direct::DirectWrite;
use crate::exchange::{AppOutput, Exchange};
use crate::linger::{LentSlot, Linger, Next};
use crate::request::{
    health_reply, static_reply, BodyDecoder, BodyEvent, Outcome, RecordStart, Served, Shared,
    IDLE_READ_BUF,
};

/// What the connection task gets back.
#[derive(Debug)]
pub struct Returned {
    /// The socket, out of any poller.
    pub fd: OwnedFd,
    /// The codec, where the thread left it.
    pub codec: ServerConn,
    /// Bytes read and not decoded.
    pub read_buf: BytesMut,
    /// When the last response went out.
    pub idle_since: std::time::Instant,
    /// Where the connection stands.
    pub back: Back,
}

/// Where a returned connection stands.
#[derive(Debug)]
pub enum Back {
    /// Between requests (`read_buf` may hold the start of the next).
    Idle,
    /// A head the thread parsed and left to the task (its body, if any,
    /// not read).
    Head(Box<RequestHead>),
    /// A malformed head: answer this status and close.
    Refused(u16),
    /// The client closed, or the response said `Connection: close`.
    Closed,
    /// A request read and handed to the application on the thread, whose
    /// response the I/O thread must write.
    InFlight(Arc<Exchange>, RecordStart),
}

/// Where the connection task waits while its connection is lent.
#[derive(Debug, Default)]
pub struct Home {
    returned: Mutex<Option<Returned>>,
    waker: AtomicWaker,
}

impl Home {
    /// Resolves when the connection comes back.
    pub async fn wait(&self) -> Returned {
        std::future::poll_fn(|context| {
            self.waker.register(context.waker());
            match self.lock().take() {
                Some(returned) => Poll::Ready(returned),
                None => Poll::Pending,
            }
        })
        .await
    }

    fn send(&self, returned: Returned) {
        *self.lock() = Some(returned);
        self.waker.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Returned>> {
        self.returned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads what the socket has into `read_buf`, without blocking: `Ok(false)`
/// when it had nothing after all, `Err` when the peer closed or it failed.
/// Room (`room` bytes) is made only when little is left (as `read_some`
/// does): the last head's bytes may still be shared (the environ template
/// keeps the last values), and then a reserve means a new buffer.
pub(crate) fn recv_now(fd: RawFd, read_buf: &mut BytesMut, room: usize) -> Result<bool, ()> {
    if read_buf.capacity() - read_buf.len() < room / 4 {
        read_buf.reserve(room);
    }
    let spare = read_buf.spare_capacity_mut();
    loop {
        // SAFETY: reads into the buffer's spare capacity, whose length is
        // passed; the descriptor is open.
        let read = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if read > 0 {
            // SAFETY: the kernel initialised `read` bytes of the spare
            // capacity.
            unsafe { read_buf.set_len(read_buf.len() + read as usize) };
            return Ok(true);
        }
        if read == 0 {
            return Err(());
        }
        match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => return Ok(false),
            _ => return Err(()),
        }
    }
}

/// A connection that has no task yet, going to get one: the I/O thread
/// spawns its task from here.
#[derive(Debug)]
pub struct Adoptee {
    /// Where it stands.
    pub returned: Returned,
    /// Its peer.
    pub conn: ConnInfo,
    /// Held by its task, as every connection task holds one (a graceful
    /// stop waits for them all).
    pub alive: mpsc::Sender<()>,
}

/// What a connection lent before it had a task needs to get one (`A`:
/// what its protocol's task starts from).
#[derive(Debug)]
pub struct Adoption<A = Adoptee> {
    /// Where it goes from an application thread: the accepting listener's
    /// adopter task, which spawns its task.
    pub adopter: mpsc::UnboundedSender<A>,
    /// See [`Adoptee::alive`].
    pub alive: mpsc::Sender<()>,
}

/// Where a lent connection goes back to.
#[derive(Debug)]
enum HomeRef {
    /// Its task, waiting.
    Task(Arc<Home>),
    /// No task yet ([`serve_fresh`]).
    Adopt(Adoption, OpenCount),
}

/// A connection lent before it had a task counts as open
/// ([`Shared::open_connections`]) until it closes or its task counts it.
#[derive(Debug)]
struct OpenCount(Arc<Shared>);

impl OpenCount {
    fn new(shared: &Arc<Shared>) -> Self {
        shared
            .open_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenCount(Arc::clone(shared))
    }
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0
            .open_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An HTTP connection lent to an application thread: a keep-alive one
/// between requests, or one just accepted ([`serve_fresh`]).
#[derive(Debug)]
pub struct LentHttp {
    fd: OwnedFd,
    codec: ServerConn,
    read_buf: BytesMut,
    conn: ConnInfo,
    shared: Arc<Shared>,
    home: HomeRef,
    idle_since: std::time::Instant,
    /// The request being served on the thread, and its record.
    in_flight: Option<(Arc<Exchange>, RecordStart)>,
}

/// A connection just accepted (`fd`, non-blocking, out of any poller):
/// when its first request is already here, plain, and closes the
/// connection after its response, the request is queued with the
/// connection lent along, and an application thread serves it and closes
/// the socket (see the module docs). Otherwise the state its task starts
/// from. Runs on the I/O thread (it queues).
///
/// # Errors
/// The connection needs a task: what to start it from.
pub fn serve_fresh(
    fd: OwnedFd,
    conn: ConnInfo,
    shared: &Arc<Shared>,
    adoption: Adoption,
) -> Result<(), Box<Adoptee>> {
    let open = OpenCount::new(shared);
    let mut lent = Box::new(LentHttp {
        fd,
        codec: ServerConn::new(shared.limits.clone()),
        read_buf: BytesMut::new(),
        conn,
        shared: Arc::clone(shared),
        home: HomeRef::Adopt(adoption, open),
        idle_since: std::time::Instant::now(),
        in_flight: None,
    });
    // A place in the queue first: without one, nothing is read here.
    let Some(reserved) = shared.queue.try_reserve() else {
        return Err(Box::new(lent.into_adoptee(Back::Idle)));
    };
    let request = match lent.read() {
        Ok(true) => match lent.take_request(None) {
            Ok(request) => request,
            Err(back) => return Err(Box::new(lent.into_adoptee(back))),
        },
        Ok(false) => return Err(Box::new(lent.into_adoptee(Back::Idle))),
        Err(()) => return Err(Box::new(lent.into_adoptee(Back::Closed))),
    };
    match reserved.submit(request, lent) {
        Ok(()) => Ok(()),
        Err((request, lent)) => {
            // A stop closed the queue meanwhile.
            drop(request);
            let mut lent = lent;
            let back = match lent.in_flight.take() {
                Some((exchange, start)) => {
                    exchange.disconnect();
                    lent.shared
                        .request_ended(start, &Served::refused(503), 0, None);
                    Back::Refused(503)
                }
                None => Back::Closed,
            };
            Err(Box::new(lent.into_adoptee(back)))
        }
    }
}

impl LentHttp {
    /// A connection between requests, to lend; it answers to `home`.
    pub fn new(
        fd: OwnedFd,
        codec: ServerConn,
        read_buf: BytesMut,
        conn: ConnInfo,
        shared: Arc<Shared>,
        home: Arc<Home>,
        idle_since: std::time::Instant,
    ) -> Self {
        LentHttp {
            fd,
            codec,
            read_buf,
            conn,
            shared,
            home: HomeRef::Task(home),
            idle_since,
            in_flight: None,
        }
    }

    /// A connection with no task yet, as its task will start.
    fn into_adoptee(self: Box<Self>, back: Back) -> Adoptee {
        let LentHttp {
            fd,
            codec,
            read_buf,
            conn,
            home,
            idle_since,
            ..
        } = *self;
        let HomeRef::Adopt(adoption, _open) = home else {
            unreachable!("only a connection with no task is adopted");
        };
        Adoptee {
            returned: Returned {
                fd,
                codec,
                read_buf,
                idle_since,
                back,
            },
            conn,
            alive: adoption.alive,
        }
    }

    fn send_back(self: Box<Self>, back: Back) -> Next {
        match &self.home {
            HomeRef::Task(_) => {}
            // Closed: nothing for a task to do; dropping it closes it.
            HomeRef::Adopt(..) if matches!(back, Back::Closed) => return Next::Home,
            HomeRef::Adopt(adoption, _) => {
                let adopter = adoption.adopter.clone();
                // Fails only when the I/O thread is gone (an immediate
                // stop): the connection closes.
                let _ = adopter.send(self.into_adoptee(back));
                return Next::Home;
            }
        }
        let LentHttp {
            fd,
            codec,
            read_buf,
            home,
            idle_since,
            ..
        } = *self;
        if let HomeRef::Task(home) = home {
            home.send(Returned {
                fd,
                codec,
                read_buf,
                idle_since,
                back,
            });
        }
        Next::Home
    }

    /// Reads what the socket has, without blocking (see [`recv_now`]).
    fn read(&mut self) -> Result<bool, ()> {
        recv_now(self.fd.as_raw_fd(), &mut self.read_buf, IDLE_READ_BUF)
    }

    /// Reads and parses the next request; serves it here when it is plain.
    /// Kept in its box throughout: the connection is a few hundred bytes,
    /// and moving it out and back cost two copies and an allocation.
    fn next_request(mut self: Box<Self>, slot: &LentSlot) -> Next {
        match self.read() {
            Ok(true) => {}
            Ok(false) => return Next::Wait(self),
            Err(()) => return self.send_back(Back::Closed),
        }
        match self.take_request(Some(slot)) {
            Ok(request) => Next::Serve(request, self),
            Err(back) => self.send_back(back),
        }
    }

    /// The request whose head was read, when it is plain: a whole head, no
    /// body, no `Expect`, no stop, not the health path or a static file,
    /// and keep-alive for a lent connection (which goes on after it) or
    /// close for a fresh one (which has no task to go on with). Otherwise
    /// where the connection stands, for its task.
    fn take_request(&mut self, slot: Option<&LentSlot>) -> Result<Request, Back> {
        let head = match self.codec.decode(&mut self.read_buf) {
            Ok(Some(Event::Head(head))) => head,
            // Part of a head: the task's header timeout takes it from here.
            Ok(None) => return Err(Back::Idle),
            Ok(Some(_)) => return Err(Back::Closed),
            Err(error) => {
                crate::log!(Debug, "bad request: {error}");
                return Err(Back::Refused(error.status().as_u16()));
            }
        };
        let shared = &*self.shared;
        let stopping = *shared.shutdown.borrow();
        let fresh = matches!(self.home, HomeRef::Adopt(..));
        if head.body.has_body()
            || head.expect_continue
            || self.codec.keep_alive() == fresh
            || stopping
        {
            return Err(Back::Head(Box::new(head)));
        }
        let environ = crate::connection::environ_of(&head, &self.conn, shared);
        if health_reply(shared, &environ).is_some() || static_reply(shared, &environ).is_some() {
            return Err(Back::Head(Box::new(head)));
        }
        let Some(encoder) = self.codec.prepare_encoder().ok() else {
            return Err(Back::Head(Box::new(head)));
        };
        let protocol_name = crate::connection::version_name(head.version);
        drop(head);
        // No body: the codec's `End` comes at once.
        if !matches!(
            self.codec.decode_body(&mut self.read_buf),
            Ok(Some(BodyEvent::End))
        ) {
            return Err(Back::Closed);
        }
        let start = shared.request_began(&environ, protocol_name);
        let exchange = Exchange::new(true, shared.timeouts.body);
        let direct = DirectWrite::new(self.fd.as_raw_fd(), encoder, shared.shutdown.clone())
            .keeping_headers(shared.wants_response_headers())
            // A fresh connection is closed by the thread that serves it.
            .closed_by_writer(fresh);
        exchange.lend_direct(direct, false);
        if let Some(slot) = slot {
            exchange.mark_lent_inline(slot.clone());
        }
        let request = Request {
            environ,
            // No body: a reader without state or allocation.
            input: Box::new(EmptyBody),
            output: Box::new(AppOutput::new(Arc::clone(&exchange))),
        };
        self.in_flight = Some((exchange, start));
        Ok(request)
    }
}

impl Linger for LentHttp {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn deadline(&self) -> std::time::Instant {
        self.idle_since + self.shared.timeouts.keep_alive
    }

    fn next(self: Box<Self>, slot: &LentSlot) -> Next {
        self.next_request(slot)
    }

    fn after_request(mut self: Box<Self>) -> Option<Box<dyn Linger>> {
        let Some((exchange, start)) = self.in_flight.take() else {
            return Some(self);
        };
        exchange.clear_lent_inline();
        let written = exchange.take_written();
        let Some(mut written) = written.filter(|w| w.unwritten.is_empty() && w.error.is_none())
        else {
            // Not written here after all: the task finishes it.
            self.send_back(Back::InFlight(exchange, start));
            return None;
        };
        let served = Served::written(&mut written, Outcome::Complete);
        self.codec.adopt_encoder(written.encoder);
        self.shared.request_ended(start, &served, 0, None);
        exchange.disconnect();
        self.idle_since = written.at;
        if !self.codec.keep_alive() || self.codec.start_next_cycle().is_err() {
            self.send_back(Back::Closed);
            return None;
        }
        if !self.read_buf.is_empty() || *self.shared.shutdown.borrow() {
            // Pipelined bytes (the socket will not say readable for them),
            // or a stop: the task takes over.
            self.send_back(Back::Idle);
            return None;
        }
        Some(self)
    }

    fn taken_by(&self, slot: &LentSlot) {
        if let Some((exchange, _)) = &self.in_flight {
            exchange.mark_lent_inline(slot.clone());
        }
    }

    fn go_home(mut self: Box<Self>) {
        let back = match self.in_flight.take() {
            Some((exchange, start)) => {
                exchange.clear_lent_inline();
                Back::InFlight(exchange, start)
            }
            None => Back::Idle,
        };
        self.send_back(back);
    }
}
